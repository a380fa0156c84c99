//! Admission before the handshake: caps on connections that have not finished their HTTP
//! request or WebSocket upgrade, in total and per source address, and the per-source budget
//! of failed ticket checks.
//!
//! Sans-IO (time is passed in): the accept loop asks [`Admission::admit`] for every accepted
//! socket (and holds the returned [`Pending`] place until the handshake is over), and the
//! handshake asks [`Admission::check_failures`] before it calls the `Authorizer` and
//! [`Admission::note_failure`] after a `401`. Both tables are bounded; every refusal and
//! eviction is counted in [`AdmissionStats`].
//!
//! When the relay-wide cap is reached, the oldest handshake still in progress is evicted to
//! make room if it has been waiting for at least [`EVICT_AFTER`] (a slow or held request:
//! a real client finishes in about one round trip); otherwise the new connection is refused.
//! So a flood of held half-sent requests keeps new clients out only while it opens more than
//! `max_pending` connections per [`EVICT_AFTER`]; a source at its own cap is refused.
//!
//! Sources are keyed by [`SourceKey`]: an IPv4 address, or the /64 prefix of an IPv6 address
//! (one host usually holds a whole /64, so keying by full address would give it 2^64 budgets).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::limits::Rate;

/// A source of connections: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// IPv4 (IPv4-mapped IPv6 addresses included).
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl SourceKey {
    /// The key of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => SourceKey::V4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(u32::from(v4)),
                None => SourceKey::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

/// Limits of the admission tables (from [`crate::limits::Limits`]).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    /// Connections in their handshake, in total.
    pub max_pending: usize,
    /// Connections in their handshake from one source.
    pub max_pending_per_source: usize,
    /// Failed ticket checks one source may make: a burst, then a rate.
    pub ticket_failures: Rate,
    /// Sources whose failures are remembered (oldest-fullest evicted beyond it).
    pub failure_sources: usize,
}

/// How long a handshake must have been waiting before a new connection may evict it.
pub const EVICT_AFTER: Duration = Duration::from_secs(1);

/// Counters of the admission tables (monotonic).
#[derive(Debug, Clone, Copy, Default)]
pub struct AdmissionStats {
    /// Connections refused because [`AdmissionLimits::max_pending`] were in their handshake
    /// and none had waited [`EVICT_AFTER`].
    pub refused_pending_full: u64,
    /// Handshakes closed to make room for a new connection (they had waited at least
    /// [`EVICT_AFTER`] with the relay-wide cap reached).
    pub pending_evicted: u64,
    /// Connections refused because their source had
    /// [`AdmissionLimits::max_pending_per_source`] in their handshake.
    pub refused_pending_source: u64,
    /// Handshakes answered `429` because their source used up its failed-ticket budget.
    pub refused_ticket_failures: u64,
    /// Failed ticket checks recorded.
    pub ticket_failures: u64,
    /// Sources forgotten from the failure table to make room for a new one.
    pub failure_sources_evicted: u64,
}

/// Why a connection is not admitted to its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingRefused {
    /// The relay-wide cap is reached.
    Full(usize),
    /// This source's cap is reached.
    Source(usize),
}

impl PendingRefused {
    /// The reason for the `503` body.
    pub fn why(&self) -> String {
        match self {
            PendingRefused::Full(n) => format!(
                "this relay has {n} connections waiting in their handshake, its maximum; retry shortly"
            ),
            PendingRefused::Source(n) => format!(
                "your address has {n} connections waiting in their handshake, the maximum per address; finish or close them first"
            ),
        }
    }
}

/// One connection's place in the handshake count.
#[derive(Debug)]
pub struct Slot {
    source: SourceKey,
    since: Instant,
    /// Released (handshake over, or evicted): no longer counted.
    released: Cell<bool>,
    /// Evicted: its task must close the connection.
    evicted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    /// Ready once the slot was evicted to make room (the task then drops the connection).
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.evicted.get() {
            return Poll::Ready(());
        }
        let mut w = self.waker.borrow_mut();
        match &*w {
            Some(old) if old.will_wake(cx.waker()) => {}
            _ => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The failure budget of one source.
#[derive(Debug, Clone, Copy)]
struct Failures {
    key: SourceKey,
    tokens: f64,
    last: Instant,
}

/// The admission state of one edge.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    pending: usize,
    pending_by_source: HashMap<SourceKey, usize>,
    /// Slots in admission order (released ones are skipped and compacted away).
    order: VecDeque<Rc<Slot>>,
    failures: Vec<Failures>,
    failure_index: HashMap<SourceKey, usize>,
    stats: AdmissionStats,
    rng: fastrand::Rng,
}

/// Sources compared when the failure table must evict one.
const EVICTION_SAMPLE: usize = 8;

impl Admission {
    /// Empty tables. `seed` drives the eviction sampling (tests pass a fixed one).
    pub fn new(limits: AdmissionLimits, seed: u64) -> Self {
        Admission {
            limits,
            pending: 0,
            pending_by_source: HashMap::new(),
            order: VecDeque::new(),
            failures: Vec::new(),
            failure_index: HashMap::new(),
            stats: AdmissionStats::default(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Counters.
    pub fn stats(&self) -> AdmissionStats {
        self.stats
    }

    /// Connections in their handshake now.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Sources remembered in the failure table now.
    pub fn failure_sources(&self) -> usize {
        self.failures.len()
    }

    /// A connection from `ip` was accepted at `now`: may it start its handshake? When the
    /// relay-wide cap is reached, the oldest handshake waiting at least [`EVICT_AFTER`] is
    /// evicted to make room (its [`Slot::poll_evicted`] becomes ready).
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<Rc<Slot>, PendingRefused> {
        let source = SourceKey::of(ip);
        let held = self.pending_by_source.get(&source).copied().unwrap_or(0);
        if held >= self.limits.max_pending_per_source {
            self.stats.refused_pending_source += 1;
            return Err(PendingRefused::Source(self.limits.max_pending_per_source));
        }
        if self.pending >= self.limits.max_pending && !self.evict_oldest(now) {
            self.stats.refused_pending_full += 1;
            return Err(PendingRefused::Full(self.limits.max_pending));
        }
        *self.pending_by_source.entry(source).or_insert(0) += 1;
        self.pending += 1;
        let slot = Rc::new(Slot {
            source,
            since: now,
            released: Cell::new(false),
            evicted: Cell::new(false),
            waker: RefCell::new(None),
        });
        self.order.push_back(slot.clone());
        // Released slots wait in `order` until they reach the front; keep it compact.
        if self.order.len() > 2 * self.limits.max_pending.max(8) {
            self.order.retain(|s| !s.released.get());
        }
        Ok(slot)
    }

    /// Evicts the oldest live slot if it has waited [`EVICT_AFTER`]; `false` if none has.
    fn evict_oldest(&mut self, now: Instant) -> bool {
        while let Some(front) = self.order.front() {
            if front.released.get() {
                self.order.pop_front();
                continue;
            }
            if now.saturating_duration_since(front.since) < EVICT_AFTER {
                return false;
            }
            let Some(slot) = self.order.pop_front() else {
                return false;
            };
            self.release(&slot);
            slot.evicted.set(true);
            if let Some(w) = slot.waker.borrow_mut().take() {
                w.wake();
            }
            self.stats.pending_evicted += 1;
            return true;
        }
        false
    }

    /// The handshake of `slot` is over (upgraded, answered, gone or evicted).
    pub fn release(&mut self, slot: &Slot) {
        if slot.released.replace(true) {
            return;
        }
        if let Some(n) = self.pending_by_source.get_mut(&slot.source) {
            *n -= 1;
            if *n == 0 {
                self.pending_by_source.remove(&slot.source);
            }
        }
        self.pending -= 1;
    }

    fn refill(&self, f: &mut Failures, now: Instant) {
        let r = self.limits.ticket_failures;
        let dt = now.saturating_duration_since(f.last).as_secs_f64();
        f.tokens = (f.tokens + dt * f64::from(r.per_sec)).min(f64::from(r.burst));
        f.last = now;
    }

    /// Before a ticket check from `ip`: `Err(retry_after)` when the source has used up its
    /// failure budget (answer `429`; the ticket is not looked at).
    pub fn check_failures(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let Some(&i) = self.failure_index.get(&SourceKey::of(ip)) else {
            return Ok(());
        };
        let Some(mut f) = self.failures.get(i).copied() else {
            return Ok(());
        };
        self.refill(&mut f, now);
        if let Some(slot) = self.failures.get_mut(i) {
            *slot = f;
        }
        if f.tokens >= 1.0 {
            return Ok(());
        }
        self.stats.refused_ticket_failures += 1;
        let rate = f64::from(self.limits.ticket_failures.per_sec.max(1));
        Err(Duration::from_secs_f64(((1.0 - f.tokens) / rate).max(0.0)).max(Duration::from_secs(1)))
    }

    /// A ticket check from `ip` failed (the `Authorizer` answered `401`).
    pub fn note_failure(&mut self, ip: IpAddr, now: Instant) {
        self.stats.ticket_failures += 1;
        let key = SourceKey::of(ip);
        let i = match self.failure_index.get(&key) {
            Some(&i) => i,
            None => {
                if self.limits.failure_sources == 0 {
                    return;
                }
                if self.failures.len() >= self.limits.failure_sources {
                    self.evict(now);
                }
                self.failures.push(Failures {
                    key,
                    tokens: f64::from(self.limits.ticket_failures.burst),
                    last: now,
                });
                let i = self.failures.len() - 1;
                self.failure_index.insert(key, i);
                i
            }
        };
        let Some(mut f) = self.failures.get(i).copied() else {
            return;
        };
        self.refill(&mut f, now);
        f.tokens = (f.tokens - 1.0).max(0.0);
        if let Some(slot) = self.failures.get_mut(i) {
            *slot = f;
        }
    }

    /// Forgets one source: of a few sampled at random, the one with the most budget left (the
    /// least suspicious). O(1) however large the table.
    fn evict(&mut self, now: Instant) {
        let len = self.failures.len();
        if len == 0 {
            return;
        }
        let mut victim = self.rng.usize(..len);
        let mut best = -1.0;
        for _ in 0..EVICTION_SAMPLE {
            let i = self.rng.usize(..len);
            if let Some(mut f) = self.failures.get(i).copied() {
                self.refill(&mut f, now);
                if f.tokens > best {
                    best = f.tokens;
                    victim = i;
                }
            }
        }
        let gone = self.failures.swap_remove(victim);
        self.failure_index.remove(&gone.key);
        if let Some(moved) = self.failures.get(victim) {
            self.failure_index.insert(moved.key, victim);
        }
        self.stats.failure_sources_evicted += 1;
    }
}

/// A connection's place in the handshake count; dropping it releases the place.
pub struct Pending {
    admission: Rc<RefCell<Admission>>,
    slot: Rc<Slot>,
}

impl Pending {
    /// Admits a connection from `ip` into `admission` at `now`, or says why not.
    pub fn admit(
        admission: &Rc<RefCell<Admission>>,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Pending, PendingRefused> {
        let slot = admission.borrow_mut().admit(ip, now)?;
        Ok(Pending {
            admission: admission.clone(),
            slot,
        })
    }

    /// Completes when this place was evicted to make room for a newer connection.
    pub async fn evicted(&self) {
        std::future::poll_fn(|cx| self.slot.poll_evicted(cx)).await;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.admission.borrow_mut().release(&self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> AdmissionLimits {
        AdmissionLimits {
            max_pending: 4,
            max_pending_per_source: 2,
            ticket_failures: Rate {
                per_sec: 1,
                burst: 3,
            },
            failure_sources: 16,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn pending_caps_in_total_and_per_source() {
        let t0 = crate::clock::now();
        let mut a = Admission::new(limits(), 1);
        let mut held = Vec::new();
        let mut admit = |a: &mut Admission, x: &str| a.admit(ip(x), t0).map(|s| held.push(s));
        let results = [
            admit(&mut a, "10.0.0.1"),
            admit(&mut a, "10.0.0.1"),
            admit(&mut a, "10.0.0.1"),
            // The same host over IPv4-mapped IPv6 is the same source.
            admit(&mut a, "::ffff:10.0.0.1"),
            admit(&mut a, "10.0.0.2"),
            // Two addresses of one IPv6 /64 are one source.
            admit(&mut a, "2001:db8::1"),
            // Full, and nobody has waited a second: refused.
            admit(&mut a, "2001:db8::2"),
        ];
        use PendingRefused::{Full, Source};
        assert_eq!(
            results,
            [
                Ok(()),
                Ok(()),
                Err(Source(2)),
                Err(Source(2)),
                Ok(()),
                Ok(()),
                Err(Full(4))
            ]
        );
        let s = a.stats();
        assert_eq!((s.refused_pending_full, s.refused_pending_source), (1, 2));
        let third = held.remove(2);
        a.release(&third);
        a.release(&third);
        assert_eq!(a.pending(), 3, "a second release changes nothing");
        for s in held.drain(..) {
            a.release(&s);
        }
        assert_eq!(a.pending(), 0);
        assert!(
            a.pending_by_source.is_empty(),
            "no entry without a pending connection"
        );
    }

    #[test]
    fn a_full_table_evicts_the_oldest_handshake_after_a_second() {
        let t0 = crate::clock::now();
        let mut a = Admission::new(limits(), 1);
        let slots: Vec<Rc<Slot>> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .map(|x| a.admit(ip(x), t0).unwrap_or_else(|_| panic!("{x}")))
            .collect();
        let t1 = t0 + EVICT_AFTER;
        let newer = a.admit(ip("10.0.0.5"), t1);
        assert!(newer.is_ok(), "the oldest made room");
        assert!(slots[0].evicted.get() && slots[0].released.get());
        assert!(!slots[1].evicted.get());
        assert_eq!(a.pending(), 4);
        assert_eq!(a.stats().pending_evicted, 1);
        // Its task still drops it later: no double count.
        a.release(&slots[0]);
        assert_eq!(a.pending(), 4);
        // A released slot is skipped, not evicted.
        a.release(&slots[1]);
        let again = a.admit(ip("10.0.0.6"), t1);
        assert!(again.is_ok());
        assert!(!slots[1].evicted.get());
        assert_eq!(a.stats().pending_evicted, 1);
        let late = a.admit(ip("10.0.0.7"), t1);
        assert!(late.is_ok());
        assert!(slots[2].evicted.get(), "the next oldest");
        // The order queue stays bounded however many come and go.
        for i in 0..1000u32 {
            let x = IpAddr::from((0x0b00_0000u32 + i).to_be_bytes());
            if let Ok(s) = a.admit(x, t1 + EVICT_AFTER * (i + 1)) {
                a.release(&s);
            }
            assert!(a.order.len() <= 2 * 8 + 1);
        }
    }

    #[test]
    fn failures_use_up_a_budget_that_refills() {
        let t0 = crate::clock::now();
        let mut a = Admission::new(limits(), 1);
        let bad = ip("198.51.100.7");
        for _ in 0..3 {
            assert_eq!(a.check_failures(bad, t0), Ok(()));
            a.note_failure(bad, t0);
        }
        let retry = a.check_failures(bad, t0);
        assert_eq!(retry, Err(Duration::from_secs(1)));
        assert_eq!(
            a.check_failures(ip("198.51.100.8"), t0),
            Ok(()),
            "others unaffected"
        );
        // One second later one more try is allowed.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(a.check_failures(bad, t1), Ok(()));
        a.note_failure(bad, t1);
        assert!(a.check_failures(bad, t1).is_err());
        let s = a.stats();
        assert_eq!((s.ticket_failures, s.refused_ticket_failures), (4, 2));
    }

    #[test]
    fn the_failure_table_is_bounded_and_keeps_the_suspicious() {
        let t0 = crate::clock::now();
        let mut a = Admission::new(limits(), 7);
        // One source that failed a lot, then 1,000 sources that failed once each.
        let bad = ip("203.0.113.1");
        for _ in 0..3 {
            a.note_failure(bad, t0);
        }
        for i in 0..1000u32 {
            let x = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            a.note_failure(x, t0);
            assert!(a.failure_sources() <= 16);
        }
        assert_eq!(a.stats().failure_sources_evicted, 1000 + 1 - 16);
        // The exhausted source is never the fullest of a sample, so it stays refused.
        assert!(a.check_failures(bad, t0).is_err());
        assert_eq!(a.failure_index.len(), a.failures.len());
        for (i, f) in a.failures.iter().enumerate() {
            assert_eq!(a.failure_index.get(&f.key), Some(&i));
        }
    }
}
