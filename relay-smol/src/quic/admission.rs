//! Who gets a QUIC handshake: the admission policy for incoming connection attempts.
//!
//! An Initial packet is the cheapest thing an Internet host can send us, and a TLS handshake
//! is among the most expensive things we do for one (measured 0.5–1.2 ms of CPU for the
//! server's first flight, and a connection slot until the handshake completes or times out).
//! [`Admission`] looks at every new attempt before any cryptography runs and answers with a
//! [`Decision`]: accept, answer with a stateless Retry (address validation: the source must
//! prove it receives at its address, so spoofed floods cost nothing), or refuse, counted by
//! [`Refusal`] reason. The endpoint ([`super::endpoint::QuicEndpoint`]) tells it when an
//! admitted connection authenticates or goes away, and enforces the handshake timeout.
//!
//! The budgets ([`AdmissionLimits`]):
//! - **table**: incoming connections never take the last `reserved_outgoing` slots, so the
//!   relay can always dial out, however many peers knock;
//! - **handshakes**: at most `max_handshakes` incoming connections unauthenticated at once
//!   (established links do not count). When the budget is full, a validated attempt from a
//!   source with fewer handshakes in progress than the heaviest source (by two or more)
//!   displaces that source's oldest handshake: a few hostile addresses holding the whole
//!   budget cannot keep a real peer out;
//! - **Retry**: an attempt without a validated address is answered with Retry once
//!   `retry_above` incoming handshakes are in progress, or whenever a per-source limit below
//!   would refuse it (so a spoofer cannot use up a real peer's quota: the real peer passes
//!   Retry and is counted under its validated quota);
//! - **per source** (an IPv4 address, or an IPv6 /64), validated and unvalidated counted
//!   apart: at most `max_handshakes_per_source` in progress, and a token bucket of
//!   `source_rate` accepted handshakes per second (burst `source_burst`), which bounds the
//!   CPU one source can make us spend on handshakes that fail fast;
//! - the source table itself holds at most `max_sources` entries; an idle entry (nothing in
//!   progress, bucket full) is evicted to make room, else the attempt is refused.
//!
//! Sans-IO and clock-free: every call takes `now`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The admission budgets. [`AdmissionLimits::default`] is what the mesh uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdmissionLimits {
    /// Connections in the table (in and out, handshaking, established and closing).
    pub max_connections: usize,
    /// Slots only outgoing dials may use.
    pub reserved_outgoing: usize,
    /// Incoming connections still in their handshake, at once.
    pub max_handshakes: usize,
    /// Incoming handshakes in progress at or above which unvalidated attempts get a Retry
    /// (`0`: always; `usize::MAX`: never, except when a per-source limit is reached).
    pub retry_above: usize,
    /// Handshakes in progress per source (validated and unvalidated each).
    pub max_handshakes_per_source: usize,
    /// Handshakes accepted per source and second, long-run (validated and unvalidated each).
    pub source_rate: f64,
    /// Handshakes a source may start at once after being quiet.
    pub source_burst: f64,
    /// Sources tracked at once.
    pub max_sources: usize,
    /// A handshake (in or out) not complete after this long is closed.
    pub handshake_timeout: Duration,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_connections: 128,
            // Twice the mesh's default neighbour limit (16): dials in flight plus links.
            reserved_outgoing: 32,
            max_handshakes: 32,
            retry_above: 8,
            max_handshakes_per_source: 4,
            // A relay dials a peer about once per backoff period; 8/s leaves room for a few
            // relays behind one address and bounds a hostile source to ~1 % of a core.
            source_rate: 8.0,
            source_burst: 8.0,
            max_sources: 1024,
            // Intercontinental RTTs are up to ~0.3 s; Retry and TLS take 3 round trips, with
            // room for lost packets.
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

impl AdmissionLimits {
    /// Slots incoming connections may use.
    pub fn incoming_slots(&self) -> usize {
        self.max_connections.saturating_sub(self.reserved_outgoing)
    }
}

/// Why an incoming attempt was refused (a `CONNECTION_REFUSED` goes back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// All slots open to incoming connections are taken.
    TableFull,
    /// [`AdmissionLimits::max_handshakes`] incoming handshakes are in progress.
    HandshakeBudget,
    /// The source has [`AdmissionLimits::max_handshakes_per_source`] handshakes in progress.
    SourceHandshakes,
    /// The source started handshakes faster than [`AdmissionLimits::source_rate`].
    SourceRate,
    /// The source table is full of sources with handshakes in progress.
    SourceTable,
}

impl Refusal {
    /// Every reason, in the order of [`AdmissionStats::refused`].
    pub const ALL: [Refusal; 5] = [
        Self::TableFull,
        Self::HandshakeBudget,
        Self::SourceHandshakes,
        Self::SourceRate,
        Self::SourceTable,
    ];

    /// A stable name (metrics label, status JSON key).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TableFull => "table_full",
            Self::HandshakeBudget => "handshake_budget",
            Self::SourceHandshakes => "source_handshakes",
            Self::SourceRate => "source_rate",
            Self::SourceTable => "source_table",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What to do with an incoming attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the handshake; then call [`Admission::admitted`].
    Accept,
    /// Answer with a stateless Retry (costs us no state; the source must echo the token).
    Retry,
    /// Close the oldest handshake in progress from this source (it holds more than its
    /// share of the full budget), then accept as for [`Decision::Accept`].
    Displace(SourceKey),
    /// Answer `CONNECTION_REFUSED`.
    Refuse(Refusal),
}

/// Counters of the admission policy, all monotonic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Attempts accepted into a handshake.
    pub accepted: u64,
    /// Retries sent.
    pub retries: u64,
    /// Refusals by reason, indexed like [`Refusal::ALL`].
    pub refused: [u64; 5],
    /// Source entries evicted to make room.
    pub sources_evicted: u64,
    /// Handshakes closed to make room for a source with fewer in progress.
    pub displaced: u64,
}

impl AdmissionStats {
    /// Refusals for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused.get(reason.index()).copied().unwrap_or(0)
    }
}

/// The admission state of one connection slot; kept by the endpoint with the connection and
/// handed back on every change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    incoming: Option<(SourceKey, bool)>,
    handshaking: bool,
}

impl Admitted {
    /// Whether this is an incoming connection.
    pub fn is_incoming(&self) -> bool {
        self.incoming.is_some()
    }
    /// Whether the handshake is still counted as in progress.
    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }
    /// The source of an incoming connection.
    pub fn source(&self) -> Option<SourceKey> {
        self.incoming.map(|(k, _)| k)
    }
}

/// Sources are IPv4 addresses, or IPv6 /64 networks (one host usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    /// The key of `addr`'s source.
    pub fn of(addr: SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let mut seg = v6.segments();
                    seg[4..].fill(0);
                    Self(IpAddr::V6(seg.into()))
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Source {
    /// Handshakes in progress: `[unvalidated, validated]`.
    in_progress: [usize; 2],
    /// Token buckets: `[unvalidated, validated]`.
    tokens: [f64; 2],
    refilled: Instant,
}

impl Source {
    fn refill(&mut self, now: Instant, l: &AdmissionLimits) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        for t in &mut self.tokens {
            *t = (*t + dt * l.source_rate).min(l.source_burst);
        }
    }

    fn idle(&self, l: &AdmissionLimits) -> bool {
        self.in_progress == [0, 0] && self.tokens.iter().all(|t| *t >= l.source_burst)
    }
}

/// The admission policy and its bookkeeping. See the module docs.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    sources: HashMap<SourceKey, Source>,
    incoming: usize,
    outgoing: usize,
    handshakes: usize,
    stats: AdmissionStats,
}

impl Admission {
    /// A policy with `limits`.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            sources: HashMap::new(),
            incoming: 0,
            outgoing: 0,
            handshakes: 0,
            stats: AdmissionStats::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    /// The counters.
    pub fn stats(&self) -> AdmissionStats {
        self.stats
    }

    /// Incoming connections still in their handshake.
    pub fn handshakes(&self) -> usize {
        self.handshakes
    }

    /// Slots in use, `(incoming, outgoing)`.
    pub fn slots(&self) -> (usize, usize) {
        (self.incoming, self.outgoing)
    }

    /// Sources tracked.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Decide about an attempt from `remote`. `validated`: it carries a valid Retry token;
    /// `may_retry`: it carries none yet (quinn-proto's `Incoming` says both). On
    /// [`Decision::Accept`] a handshake token of the source is spent: call
    /// [`Admission::admitted`] once the connection exists (or [`Admission::not_admitted`]
    /// if it could not be created).
    pub fn decide(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        validated: bool,
        may_retry: bool,
    ) -> Decision {
        let d = self.decide_inner(now, remote, validated, may_retry);
        match d {
            Decision::Accept => self.stats.accepted += 1,
            Decision::Displace(_) => {
                self.stats.accepted += 1;
                self.stats.displaced += 1;
            }
            Decision::Retry => self.stats.retries += 1,
            Decision::Refuse(r) => {
                if let Some(n) = self.stats.refused.get_mut(r.index()) {
                    *n += 1;
                }
            }
        }
        d
    }

    fn decide_inner(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        validated: bool,
        may_retry: bool,
    ) -> Decision {
        let l = self.limits;
        if self.incoming >= l.incoming_slots() || self.incoming + self.outgoing >= l.max_connections
        {
            return Decision::Refuse(Refusal::TableFull);
        }
        let can_retry = !validated && may_retry;
        if can_retry && self.handshakes >= l.retry_above {
            return Decision::Retry;
        }
        let key = SourceKey::of(remote);
        let Some(src) = self.source(now, key) else {
            return Decision::Refuse(Refusal::SourceTable);
        };
        let v = usize::from(validated);
        src.refill(now, &l);
        let (busy, rate) = (
            src.in_progress[v] >= l.max_handshakes_per_source,
            src.tokens[v] < 1.0,
        );
        if (busy || rate) && can_retry {
            return Decision::Retry;
        }
        if busy {
            return Decision::Refuse(Refusal::SourceHandshakes);
        }
        if rate {
            return Decision::Refuse(Refusal::SourceRate);
        }
        let mine: usize = src.in_progress.iter().sum();
        let decision = if self.handshakes < l.max_handshakes {
            Decision::Accept
        } else {
            // Full: only a validated source may displace, and only one holding at least
            // two more than itself (so equal holders never take turns evicting each other).
            let heaviest = self
                .sources
                .iter()
                .map(|(k, s)| (s.in_progress.iter().sum::<usize>(), *k))
                .max_by_key(|(n, _)| *n);
            match heaviest {
                Some((n, k)) if validated && n >= mine + 2 => Decision::Displace(k),
                _ => return Decision::Refuse(Refusal::HandshakeBudget),
            }
        };
        if let Some(src) = self.sources.get_mut(&key)
            && let Some(t) = src.tokens.get_mut(v)
        {
            *t -= 1.0;
        }
        decision
    }

    /// The source entry of `key`, created if there is room (evicting an idle one if needed).
    fn source(&mut self, now: Instant, key: SourceKey) -> Option<&mut Source> {
        if !self.sources.contains_key(&key) {
            if self.sources.len() >= self.limits.max_sources {
                let l = self.limits;
                let idle = self.sources.iter_mut().find_map(|(k, s)| {
                    s.refill(now, &l);
                    s.idle(&l).then_some(*k)
                })?;
                self.sources.remove(&idle);
                self.stats.sources_evicted += 1;
            }
            self.sources.insert(
                key,
                Source {
                    in_progress: [0, 0],
                    tokens: [self.limits.source_burst; 2],
                    refilled: now,
                },
            );
        }
        self.sources.get_mut(&key)
    }

    /// An accepted attempt became a connection: it now holds a slot and a handshake.
    pub fn admitted(&mut self, remote: SocketAddr, validated: bool) -> Admitted {
        let key = SourceKey::of(remote);
        if let Some(s) = self.sources.get_mut(&key)
            && let Some(n) = s.in_progress.get_mut(usize::from(validated))
        {
            *n += 1;
        }
        self.incoming += 1;
        self.handshakes += 1;
        Admitted {
            incoming: Some((key, validated)),
            handshaking: true,
        }
    }

    /// Whether an outgoing dial may take a slot now.
    pub fn can_dial(&self) -> bool {
        self.incoming + self.outgoing < self.limits.max_connections
    }

    /// An outgoing dial took a slot ([`Admission::can_dial`] was true).
    pub fn dialled(&mut self) -> Admitted {
        self.outgoing += 1;
        Admitted {
            incoming: None,
            handshaking: true,
        }
    }

    /// The handshake ended (completed, failed, timed out or closed): it no longer counts
    /// against the handshake budgets; the slot stays taken. Idempotent.
    pub fn handshake_done(&mut self, a: &mut Admitted) {
        if !std::mem::replace(&mut a.handshaking, false) {
            return;
        }
        if let Some((key, validated)) = a.incoming {
            self.handshakes = self.handshakes.saturating_sub(1);
            if let Some(s) = self.sources.get_mut(&key)
                && let Some(n) = s.in_progress.get_mut(usize::from(validated))
            {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The connection is gone: its slot is free.
    pub fn released(&mut self, mut a: Admitted) {
        self.handshake_done(&mut a);
        if a.incoming.is_some() {
            self.incoming = self.incoming.saturating_sub(1);
        } else {
            self.outgoing = self.outgoing.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    fn t0() -> Instant {
        crate::clock::now()
    }

    #[test]
    fn ipv6_sources_are_slash_64() {
        assert_eq!(
            SourceKey::of(addr("[2001:db8:1:2:aaaa::1]:5")),
            SourceKey::of(addr("[2001:db8:1:2:bbbb::9]:7"))
        );
        assert_ne!(
            SourceKey::of(addr("[2001:db8:1:2::1]:5")),
            SourceKey::of(addr("[2001:db8:1:3::1]:5"))
        );
        assert_eq!(
            SourceKey::of(addr("[::ffff:10.0.0.1]:5")),
            SourceKey::of(addr("10.0.0.1:9"))
        );
    }

    /// Unvalidated attempts get Retry once `retry_above` handshakes are in progress;
    /// validated ones are accepted up to the handshake budget, then refused.
    #[test]
    fn retry_then_budget() {
        let l = AdmissionLimits {
            retry_above: 2,
            max_handshakes: 4,
            ..AdmissionLimits::default()
        };
        let mut a = Admission::new(l);
        let now = t0();
        let mut held = Vec::new();
        for i in 0..2 {
            let r = addr(&format!("10.0.0.{i}:1000"));
            assert_eq!(a.decide(now, r, false, true), Decision::Accept);
            held.push(a.admitted(r, false));
        }
        let r = addr("10.0.1.1:1");
        assert_eq!(a.decide(now, r, false, true), Decision::Retry);
        for i in 0..2 {
            let r = addr(&format!("10.0.2.{i}:1"));
            assert_eq!(a.decide(now, r, true, false), Decision::Accept);
            held.push(a.admitted(r, true));
        }
        assert_eq!(
            a.decide(now, addr("10.0.3.1:1"), true, false),
            Decision::Refuse(Refusal::HandshakeBudget)
        );
        assert_eq!(a.handshakes(), 4);
        // Authenticated connections stop counting against the budget.
        for h in &mut held {
            a.handshake_done(h);
        }
        assert_eq!(a.handshakes(), 0);
        assert_eq!(
            a.decide(now, addr("10.0.3.1:1"), true, false),
            Decision::Accept
        );
        let s = a.stats();
        assert_eq!((s.accepted, s.retries), (5, 1));
        assert_eq!(s.refused(Refusal::HandshakeBudget), 1);
    }

    /// Per-source limits: an unvalidated attempt over its source's limit is sent through
    /// Retry (it may be a spoofer using a real peer's address); once validated it has its
    /// own quota, which a validated hostile source then exhausts and is refused.
    #[test]
    fn per_source_quota_apart_by_validation() {
        let l = AdmissionLimits {
            retry_above: usize::MAX,
            max_handshakes_per_source: 2,
            ..AdmissionLimits::default()
        };
        let mut a = Admission::new(l);
        let now = t0();
        let peer = addr("192.0.2.7:4433");
        for _ in 0..2 {
            assert_eq!(a.decide(now, peer, false, true), Decision::Accept);
            a.admitted(peer, false);
        }
        assert_eq!(a.decide(now, peer, false, true), Decision::Retry);
        for _ in 0..2 {
            assert_eq!(a.decide(now, peer, true, false), Decision::Accept);
            a.admitted(peer, true);
        }
        assert_eq!(
            a.decide(now, peer, true, false),
            Decision::Refuse(Refusal::SourceHandshakes)
        );
        // Another source is not affected.
        assert_eq!(
            a.decide(now, addr("192.0.2.8:4433"), false, true),
            Decision::Accept
        );
    }

    /// The token bucket bounds handshakes per source over time, and refills.
    #[test]
    fn source_rate() {
        let l = AdmissionLimits {
            retry_above: usize::MAX,
            source_rate: 2.0,
            source_burst: 3.0,
            ..AdmissionLimits::default()
        };
        let mut a = Admission::new(l);
        let now = t0();
        let src = addr("198.51.100.1:1");
        for _ in 0..3 {
            assert_eq!(a.decide(now, src, true, false), Decision::Accept);
            let mut h = a.admitted(src, true);
            a.handshake_done(&mut h); // failed fast: frees the in-progress count
            a.released(h);
        }
        assert_eq!(
            a.decide(now, src, true, false),
            Decision::Refuse(Refusal::SourceRate)
        );
        // Unvalidated attempts from the same address have their own bucket (a spoofer
        // cannot drain a real source's), and are sent through Retry when theirs is empty.
        for _ in 0..3 {
            assert_eq!(a.decide(now, src, false, true), Decision::Accept);
        }
        assert_eq!(a.decide(now, src, false, true), Decision::Retry);
        let later = now + Duration::from_millis(500);
        assert_eq!(a.decide(later, src, true, false), Decision::Accept);
        assert_eq!(
            a.decide(later, src, true, false),
            Decision::Refuse(Refusal::SourceRate)
        );
    }

    /// Incoming connections never take the reserved outgoing slots; dials can use them.
    #[test]
    fn reserved_outgoing_slots() {
        let l = AdmissionLimits {
            max_connections: 6,
            reserved_outgoing: 2,
            max_handshakes: 100,
            retry_above: usize::MAX,
            max_handshakes_per_source: 100,
            source_burst: 100.0,
            ..AdmissionLimits::default()
        };
        let mut a = Admission::new(l);
        let now = t0();
        let src = addr("10.1.1.1:1");
        let mut held = Vec::new();
        for _ in 0..4 {
            assert_eq!(a.decide(now, src, true, false), Decision::Accept);
            held.push(a.admitted(src, true));
        }
        assert_eq!(
            a.decide(now, src, true, false),
            Decision::Refuse(Refusal::TableFull)
        );
        assert!(a.can_dial());
        let d1 = a.dialled();
        let _d2 = a.dialled();
        assert!(!a.can_dial());
        a.released(d1);
        assert!(a.can_dial());
        let h = held.pop().expect("held");
        a.released(h);
        assert_eq!(a.slots(), (3, 1));
        assert_eq!(a.decide(now, src, true, false), Decision::Accept);
    }

    /// With the budget full, a validated newcomer displaces the oldest handshake of a
    /// source holding two or more; a source holding as many as the others does not.
    #[test]
    fn displacement_when_the_budget_is_full() {
        let l = AdmissionLimits {
            max_handshakes: 4,
            retry_above: usize::MAX,
            ..AdmissionLimits::default()
        };
        let mut a = Admission::new(l);
        let now = t0();
        let hog = addr("203.0.113.1:1");
        for _ in 0..4 {
            assert_eq!(a.decide(now, hog, true, false), Decision::Accept);
            a.admitted(hog, true);
        }
        let peer = addr("198.51.100.9:1");
        assert_eq!(
            a.decide(now, peer, true, false),
            Decision::Displace(SourceKey::of(hog))
        );
        // Unvalidated attempts never displace.
        assert_eq!(
            a.decide(now, addr("198.51.100.10:1"), false, true),
            Decision::Refuse(Refusal::HandshakeBudget)
        );
        assert_eq!(a.stats().displaced, 1);
    }

    /// The source table is bounded: idle entries are evicted, busy ones are not.
    #[test]
    fn source_table_bounded() {
        let l = AdmissionLimits {
            max_sources: 2,
            retry_above: usize::MAX,
            ..AdmissionLimits::default()
        };
        let mut a = Admission::new(l);
        let now = t0();
        let (x, y, z) = (addr("10.0.0.1:1"), addr("10.0.0.2:1"), addr("10.0.0.3:1"));
        assert_eq!(a.decide(now, x, true, false), Decision::Accept);
        let _hx = a.admitted(x, true);
        assert_eq!(a.decide(now, y, true, false), Decision::Accept);
        let mut hy = a.admitted(y, true);
        assert_eq!(
            a.decide(now, z, true, false),
            Decision::Refuse(Refusal::SourceTable)
        );
        a.handshake_done(&mut hy);
        // y is idle once its bucket has refilled.
        let later = now + Duration::from_secs(2);
        assert_eq!(a.decide(later, z, true, false), Decision::Accept);
        assert_eq!(a.sources(), 2);
        assert_eq!(a.stats().sources_evicted, 1);
    }
}
