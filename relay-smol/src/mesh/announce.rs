//! Mesh-wide relay announcements (issue 6 item 1): the flooding rules, sans-IO.
//!
//! Every relay floods a [`mesh::Announce`] of itself every [`AnnounceConfig::interval_us`], and
//! sooner (but at most once per [`AnnounceConfig::min_interval_us`]) when one of its links goes
//! up or down. The body is opaque here: an [`AnnounceHook`](super::hooks::AnnounceHook) (the
//! dashboard side) builds the local one and takes in the others'. A node without a hook still floods the others' announcements,
//! so a mixed mesh works.
//!
//! [`AnnounceTable`] decides, per received announcement, whether it is news:
//! - newest `seq` per origin wins; an older or equal `seq` is [`Verdict::Stale`] /
//!   [`Verdict::Duplicate`] and goes no further;
//! - newer ones of one origin are accepted at most one per half `min_interval` on average,
//!   with bursts of up to [`RATE_BURST`] (a cell-rate rule per origin); more are
//!   [`Verdict::RateLimited`]. Half, and the burst, because arrival times are not send times:
//!   an honest relay's announcements can arrive bunched (one replayed by a new neighbour,
//!   the next one fresh, or after a slow path) and must not be dropped;
//! - at most [`MAX_ORIGINS`] origins are kept; a new origin when full is
//!   [`Verdict::TableFull`] (after expiring the silent ones);
//! - origins silent for [`EXPIRE_INTERVALS`] intervals are forgotten.
//!
//! Each [`Verdict::New`] is forwarded on every link but the one it came from, so a link
//! carries at most one copy of each origin's announcement per direction and interval: with
//! `R` relays, `R × body / interval` bytes/s at rest. A new link gets every held announcement
//! at once ([`AnnounceTable::held`]), so a joining relay sees the whole mesh after one round
//! trip.
//!
//! # Call order
//!
//! The shape of every mesh sub-machine (time is µs on the node's clock):
//! 1. inputs: [`AnnounceTable::handle_remote`] per received announcement,
//!    [`AnnounceTable::handle_link_change`] when a link goes up or down;
//! 2. outputs: [`AnnounceTable::poll_transmit`] says when this relay's own announcement is
//!    due (with its `seq`); flood it and report it with [`AnnounceTable::handle_sent_own`],
//!    or [`AnnounceTable::handle_skipped`] when there is nothing to announce;
//! 3. re-arm at [`AnnounceTable::poll_timeout`].
//!
//! Every call is `O(1)` but the expiry in [`AnnounceTable::handle_sent_own`] (`O(origins)`,
//! once per interval).

use std::collections::BTreeMap;

use fastpubsub_core::mesh::{self, MAX_ANNOUNCE_BODY};
use serde::Serialize;

pub use super::limits::{
    ANNOUNCE_EXPIRE_INTERVALS as EXPIRE_INTERVALS, ANNOUNCE_ORIGINS as MAX_ORIGINS,
    ANNOUNCE_RATE_BURST as RATE_BURST,
};
use super::limits::{ANNOUNCE_INTERVAL_US, ANNOUNCE_MIN_INTERVAL_US};
use super::time::MS;

/// Timing of the announcements, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Regular period ([`ANNOUNCE_INTERVAL_US`]; lower it only in tests and demos).
    pub interval_us: u64,
    /// Shortest gap between two of this relay's announcements ([`ANNOUNCE_MIN_INTERVAL_US`]).
    pub min_interval_us: u64,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            interval_us: ANNOUNCE_INTERVAL_US,
            min_interval_us: ANNOUNCE_MIN_INTERVAL_US,
        }
    }
}

impl AnnounceConfig {
    /// A configuration with an interval of `interval_ms` and a min interval of a tenth of it
    /// (at most [`ANNOUNCE_MIN_INTERVAL_US`], at least 10 ms).
    pub fn with_interval_ms(interval_ms: u64) -> Self {
        let interval_us = interval_ms.saturating_mul(MS);
        let min_interval_us = (interval_us / 10).clamp(10 * MS, ANNOUNCE_MIN_INTERVAL_US);
        Self {
            interval_us,
            min_interval_us,
        }
    }
}

/// The fate of one received announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Newer than anything held: keep, apply and forward.
    New,
    /// This relay's own announcement, come back.
    Own,
    /// The same `seq` as held (arrived over another path).
    Duplicate,
    /// Older than the one held.
    Stale,
    /// Newer, but the origin announced again too soon.
    RateLimited,
    /// A new origin while [`MAX_ORIGINS`] are held.
    TableFull,
    /// The body breaks the size rule (`1..=MAX_ANNOUNCE_BODY` bytes).
    Invalid,
}

/// Counters of the announcement flooding.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct AnnounceStats {
    /// This relay's own announcements flooded.
    pub sent_own: u64,
    /// Announcements received.
    pub received: u64,
    /// New ones (applied and forwarded).
    pub new: u64,
    /// Duplicates dropped (same seq over another path).
    pub duplicates: u64,
    /// Stale ones dropped (older seq).
    pub stale: u64,
    /// Own announcements come back, dropped.
    pub own: u64,
    /// Dropped: the origin announced faster than the min interval allows.
    pub rate_limited: u64,
    /// Dropped: the origin table was full.
    pub table_full: u64,
    /// Dropped: body empty or too long.
    pub invalid: u64,
    /// New ones the hook could not use (still forwarded).
    pub hook_refused: u64,
    /// Origins forgotten after staying silent.
    pub expired: u64,
    /// Held announcements sent to newly linked relays.
    pub replayed: u64,
}

#[derive(Debug, Clone)]
struct Origin {
    seq: u64,
    accepted_us: u64,
    /// Rate rule: the theoretical arrival time of the next announcement (GCRA).
    tat_us: u64,
    body: Vec<u8>,
}

/// See the module docs.
#[derive(Debug)]
pub struct AnnounceTable {
    cfg: AnnounceConfig,
    me: String,
    origins: BTreeMap<String, Origin>,
    next_due_us: u64,
    last_own_us: Option<u64>,
    epoch: u32,
    counter: u32,
    stats: AnnounceStats,
}

impl AnnounceTable {
    /// A table for relay `me`; `epoch` (e.g. Unix seconds at start) keeps `seq` increasing
    /// across restarts. The first own announcement is due at `first_due_us`.
    pub fn new(me: &str, cfg: AnnounceConfig, epoch: u32, first_due_us: u64) -> Self {
        Self {
            cfg,
            me: me.to_owned(),
            origins: BTreeMap::new(),
            next_due_us: first_due_us,
            last_own_us: None,
            epoch,
            counter: 0,
            stats: AnnounceStats::default(),
        }
    }

    /// The timing in use.
    pub fn config(&self) -> AnnounceConfig {
        self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> AnnounceStats {
        self.stats
    }

    /// Origins held (this relay included once it announced).
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// Judges an announcement of `origin` received at `now_us`; a [`Verdict::New`] one is kept.
    pub fn handle_remote(&mut self, origin: &str, seq: u64, body: &[u8], now_us: u64) -> Verdict {
        self.stats.received += 1;
        let v = self.judge(origin, seq, body, now_us);
        match v {
            Verdict::New => {
                self.stats.new += 1;
                let step = self.rate_step();
                let tat_us = self
                    .origins
                    .get(origin)
                    .map_or(now_us, |o| o.tat_us.max(now_us))
                    .saturating_add(step);
                let rec = Origin {
                    seq,
                    accepted_us: now_us,
                    tat_us,
                    body: body.to_vec(),
                };
                self.origins.insert(origin.to_owned(), rec);
            }
            Verdict::Own => self.stats.own += 1,
            Verdict::Duplicate => self.stats.duplicates += 1,
            Verdict::Stale => self.stats.stale += 1,
            Verdict::RateLimited => self.stats.rate_limited += 1,
            Verdict::TableFull => self.stats.table_full += 1,
            Verdict::Invalid => self.stats.invalid += 1,
        }
        v
    }

    /// Average gap the rate rule allows between two announcements of one origin.
    fn rate_step(&self) -> u64 {
        (self.cfg.min_interval_us / 2).max(1)
    }

    fn judge(&mut self, origin: &str, seq: u64, body: &[u8], now_us: u64) -> Verdict {
        let tolerance = self.rate_step().saturating_mul(RATE_BURST - 1);
        if body.is_empty() || body.len() > MAX_ANNOUNCE_BODY || !mesh::valid_relay_name(origin) {
            return Verdict::Invalid;
        }
        if origin == self.me {
            return Verdict::Own;
        }
        match self.origins.get(origin) {
            Some(o) if seq == o.seq => Verdict::Duplicate,
            Some(o) if seq < o.seq => Verdict::Stale,
            Some(o) if o.tat_us.saturating_sub(tolerance) > now_us => Verdict::RateLimited,
            Some(_) => Verdict::New,
            None => {
                if self.origins.len() >= MAX_ORIGINS {
                    self.expire(now_us);
                }
                if self.origins.len() >= MAX_ORIGINS {
                    Verdict::TableFull
                } else {
                    Verdict::New
                }
            }
        }
    }

    /// Counts a new announcement the hook refused.
    pub fn note_hook_refused(&mut self) {
        self.stats.hook_refused += 1;
    }

    /// Counts held announcements replayed to a new link.
    pub fn note_replayed(&mut self, n: usize) {
        self.stats.replayed += n as u64;
    }

    /// A link went up or down: announce soon (at most once per min interval).
    pub fn handle_link_change(&mut self, now_us: u64) {
        let earliest = match self.last_own_us {
            Some(t) => t.saturating_add(self.cfg.min_interval_us).max(now_us),
            None => now_us,
        };
        self.next_due_us = self.next_due_us.min(earliest);
    }

    /// The `seq` of this relay's own announcement when it is due at `now_us` (then flood
    /// it and call [`Self::handle_sent_own`] or [`Self::handle_skipped`]).
    pub fn poll_transmit(&self, now_us: u64) -> Option<u64> {
        (now_us >= self.next_due_us).then(|| self.next_seq())
    }

    /// When [`Self::poll_transmit`] next has something.
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(self.next_due_us)
    }

    /// The `seq` for this relay's next announcement.
    pub fn next_seq(&self) -> u64 {
        (u64::from(self.epoch) << 32) | u64::from(self.counter.wrapping_add(1))
    }

    /// This relay's own announcement (`seq` from [`Self::poll_transmit`]) was flooded at
    /// `now_us`; the next one is due `next_in_us` later (the interval, jittered by the
    /// caller). Also forgets silent origins.
    pub fn handle_sent_own(&mut self, seq: u64, body: &[u8], now_us: u64, next_in_us: u64) {
        self.counter = self.counter.wrapping_add(1);
        self.last_own_us = Some(now_us);
        self.next_due_us = now_us.saturating_add(next_in_us.max(self.cfg.min_interval_us));
        self.stats.sent_own += 1;
        self.origins.insert(
            self.me.clone(),
            Origin {
                seq,
                accepted_us: now_us,
                tat_us: now_us,
                body: body.to_vec(),
            },
        );
        self.expire(now_us);
    }

    /// Nothing to announce this round: due again one interval later.
    pub fn handle_skipped(&mut self, now_us: u64) {
        self.next_due_us = now_us.saturating_add(self.cfg.interval_us);
    }

    /// Forgets origins silent for [`EXPIRE_INTERVALS`] intervals (never this relay).
    pub fn expire(&mut self, now_us: u64) {
        let limit = self
            .cfg
            .interval_us
            .saturating_mul(u64::from(EXPIRE_INTERVALS));
        let me = &self.me;
        let before = self.origins.len();
        self.origins
            .retain(|n, o| n == me || now_us.saturating_sub(o.accepted_us) < limit);
        self.stats.expired += (before - self.origins.len()) as u64;
    }

    /// Every held announcement as `(origin, seq, body)`, for a newly linked relay (at most
    /// [`MAX_ORIGINS`]).
    pub fn held(&self) -> impl Iterator<Item = (&str, u64, &[u8])> {
        self.origins
            .iter()
            .map(|(n, o)| (n.as_str(), o.seq, o.body.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn table() -> AnnounceTable {
        AnnounceTable::new("me", AnnounceConfig::default(), 7, 0)
    }

    #[test]
    fn newest_wins_and_repeats_are_dropped() {
        let mut t = table();
        assert_eq!(t.handle_remote("a", 5, b"x", 0), Verdict::New);
        assert_eq!(t.handle_remote("a", 5, b"x", 10), Verdict::Duplicate);
        assert_eq!(t.handle_remote("a", 4, b"x", 20 * S), Verdict::Stale);
        assert_eq!(t.handle_remote("a", 6, b"y", 10 * S), Verdict::New);
        assert_eq!(t.handle_remote("me", 9, b"z", 10 * S), Verdict::Own);
        assert_eq!(t.handle_remote("a", 9, b"", 30 * S), Verdict::Invalid);
        let big = vec![0u8; MAX_ANNOUNCE_BODY + 1];
        assert_eq!(t.handle_remote("a", 9, &big, 30 * S), Verdict::Invalid);
        assert_eq!(t.handle_remote("A", 9, b"x", 30 * S), Verdict::Invalid);
        let held: Vec<_> = t.held().collect();
        assert_eq!(held, vec![("a", 6, &b"y"[..])]);
        let s = t.stats();
        assert_eq!(
            (s.received, s.new, s.duplicates, s.stale, s.own, s.invalid),
            (8, 2, 1, 1, 1, 3)
        );
    }

    #[test]
    fn too_fast_is_rate_limited() {
        let mut t = table();
        // min interval 1 s: one per 0.5 s on average, three back to back.
        assert_eq!(t.handle_remote("a", 1, b"x", 0), Verdict::New);
        assert_eq!(t.handle_remote("a", 2, b"x", 10_000), Verdict::New);
        assert_eq!(t.handle_remote("a", 3, b"x", 20_000), Verdict::New);
        assert_eq!(t.handle_remote("a", 4, b"x", 30_000), Verdict::RateLimited);
        assert_eq!(t.handle_remote("a", 5, b"x", 400_000), Verdict::RateLimited);
        assert_eq!(t.handle_remote("a", 6, b"x", 500_000), Verdict::New);
        assert_eq!(t.handle_remote("a", 7, b"x", 600_000), Verdict::RateLimited);
        assert_eq!(t.stats().rate_limited, 3);
        assert_eq!(t.held().next().map(|h| h.1), Some(6));
        // A chatty origin gets one through per 0.5 s in the long run.
        let mut accepted = 0;
        for k in 0..200u64 {
            if t.handle_remote("a", 10 + k, b"x", S + k * 50_000) == Verdict::New {
                accepted += 1;
            }
        }
        assert!((20..=23).contains(&accepted), "{accepted} in 10 s");
        // An honest relay at one per min interval, arriving with ±0.3 s jitter: never dropped.
        let mut t = table();
        for k in 0..100u64 {
            let jitter = [0, 300_000, 0, 150_000, 299_000][(k % 5) as usize];
            let at = 10 * S + k * S + jitter;
            assert_eq!(t.handle_remote("b", k + 1, b"x", at), Verdict::New, "{k}");
        }
    }

    #[test]
    fn table_is_bounded_and_silent_origins_expire() {
        let mut t = table();
        for i in 0..MAX_ORIGINS {
            assert_eq!(t.handle_remote(&format!("r{i}"), 1, b"x", 0), Verdict::New);
        }
        assert_eq!(t.handle_remote("late", 1, b"x", S), Verdict::TableFull);
        assert_eq!(t.len(), MAX_ORIGINS);
        // One origin keeps announcing; after 12 intervals the rest are gone.
        let later = u64::from(EXPIRE_INTERVALS) * 10 * S;
        assert_eq!(t.handle_remote("r0", 2, b"x", later - S), Verdict::New);
        assert_eq!(t.handle_remote("late", 1, b"x", later), Verdict::New);
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().expired, MAX_ORIGINS as u64 - 1);
    }

    #[test]
    fn own_schedule_regular_and_triggered() {
        let mut t = table();
        let seq = t.poll_transmit(0).expect("due at once");
        assert_eq!(seq, (7 << 32) | 1);
        t.handle_sent_own(seq, b"me", 0, ANNOUNCE_INTERVAL_US);
        assert!(t.next_seq() > seq);
        assert_eq!(t.poll_transmit(S), None);
        assert_eq!(t.poll_timeout(), Some(10 * S));
        // A link change 200 ms later: due at the min interval, not before.
        t.handle_link_change(200_000);
        assert_eq!(t.poll_timeout(), Some(S));
        // A second change does not move it later or earlier.
        t.handle_link_change(300_000);
        assert_eq!(t.poll_timeout(), Some(S));
        t.handle_sent_own(t.next_seq(), b"me", S, ANNOUNCE_INTERVAL_US);
        // Long after: a trigger makes it due at once.
        t.handle_link_change(5 * S);
        assert!(t.poll_transmit(5 * S).is_some());
        assert_eq!(
            t.held().count(),
            1,
            "own announcement is held for new links"
        );
    }
}
