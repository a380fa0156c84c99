//! Who wants what: the (tenant, pattern) pairs each relay has local subscribers for.
//!
//! This relay numbers its own changes `(epoch, seq)`; other relays' changes arrive as
//! flooded [`InterestUpdate`](fastpubsub_core::mesh::InterestUpdate)s and are applied in
//! order. A gap (a change missed) asks for a snapshot. Bounded: [`MAX_ORIGINS`] relays,
//! [`MAX_ENTRIES`] pairs each, [`MAX_TOTAL_ENTRIES`] in all; what does not fit is dropped
//! and counted, and so are patterns that are not valid.
//!
//! At publish, [`InterestTable::remote_matches`] finds the interested relays without
//! scanning: the remote pairs are also kept in one [`SubIndex`] trie per tenant whose
//! values are the origins' slots (a small number per relay), so a lookup walks only
//! the trie paths compatible with the channel.
//!
//! # Call order
//!
//! The shape of every mesh sub-machine (time is µs on the node's clock):
//! 1. inputs: [`InterestTable::handle_local_change`] for this relay's own changes,
//!    [`InterestTable::handle_update`], [`InterestTable::handle_snapshot_request`] and
//!    [`InterestTable::handle_snapshot`] for what a link brought,
//!    [`InterestTable::handle_timeout`] when [`InterestTable::poll_timeout`] has come;
//! 2. outputs: drain [`InterestTable::poll_transmit`] after each input: the snapshot
//!    requests (after a gap) and answers the pacing allows ([`InterestTransmit`]);
//! 3. re-arm at [`InterestTable::poll_timeout`] (the housekeeping, once a second).
//!
//! Work per call: an update or a snapshot part is `O(changes)` trie operations; the
//! housekeeping is `O(origins)`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::Hash;

use fastpubsub_core::mesh::InterestChange;
use fastpubsub_core::pattern::{self, SubIndex};

use super::limits::{
    ANSWER_EVERY_US as ANSWER_EVERY, INTEREST_ENTRIES as MAX_ENTRIES,
    INTEREST_EXPIRE_EVERY_US as EXPIRE_EVERY, INTEREST_ORIGINS as MAX_ORIGINS,
    INTEREST_PARTIAL_ENTRIES as MAX_PARTIAL_ENTRIES, INTEREST_TOTAL_ENTRIES as MAX_TOTAL_ENTRIES,
    MAX_PACED, PARTIAL_TTL_US as PARTIAL_TTL, REQUEST_TIMEOUT_US as REQUEST_TIMEOUT,
    UNROUTED_TTL_US as UNROUTED_TTL,
};
use super::link::LinkId;

/// Slot of a remote origin in the index (< [`MAX_ORIGINS`]).
type Slot = u16;

type Entry = (String, String);

/// One relay's interest.
#[derive(Debug, Clone, Default)]
pub struct OriginInterest {
    /// The origin's epoch.
    pub epoch: u32,
    /// The last applied change number.
    pub seq: u32,
    /// Its pairs.
    pub entries: BTreeSet<Entry>,
}

/// What applying an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// New changes applied: flood the update on.
    New,
    /// Already known (or older): drop it.
    Duplicate,
    /// Changes are missing before this one: ask for a snapshot.
    Gap,
    /// No room for another origin.
    Full,
}

/// What the interest table wants sent (see the call order).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InterestTransmit {
    /// Ask `link` for a snapshot of `origin` (a change was missed).
    Request {
        /// The link the gap was seen on.
        link: LinkId,
        /// Whose interest.
        origin: String,
    },
    /// Send `link` the snapshot of `origin` it asked for.
    Snapshot {
        /// The link that asked.
        link: LinkId,
        /// Whose interest.
        origin: String,
    },
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct InterestStats {
    /// Pairs dropped because an origin had [`MAX_ENTRIES`].
    pub entries_dropped: u64,
    /// Updates dropped because [`MAX_ORIGINS`] was reached.
    pub origins_dropped: u64,
    /// Gaps detected (snapshot requests).
    pub gaps: u64,
    /// Remote pairs dropped because [`MAX_TOTAL_ENTRIES`] was reached.
    pub total_dropped: u64,
    /// Remote pairs refused: the pattern is not valid.
    pub invalid_patterns: u64,
    /// Snapshot requests not sent: one for that origin was already outstanding.
    pub requests_suppressed: u64,
    /// Snapshot requests not answered: that (link, origin) was answered within
    /// [`ANSWER_EVERY`] (or the pacing table was full).
    pub snapshots_refused: u64,
    /// Snapshot pairs dropped because [`MAX_PARTIAL_ENTRIES`] were held in partials.
    pub partial_dropped: u64,
    /// Partial snapshots dropped after [`PARTIAL_TTL`] without their last part.
    pub partials_expired: u64,
    /// Relays forgotten after [`UNROUTED_TTL`] without a route.
    pub origins_forgotten: u64,
}

/// At most one event per key per interval; remembers at most [`MAX_PACED`] keys
/// (when full, expired keys are dropped; if none, the event is refused).
#[derive(Debug)]
pub struct Pacer<K> {
    every: u64,
    last: HashMap<K, u64>,
}

impl<K: Hash + Eq> Pacer<K> {
    /// At most one event per `every` µs per key.
    pub fn new(every: u64) -> Self {
        Self {
            every,
            last: HashMap::new(),
        }
    }

    /// True (and remembered) if an event for `key` may happen at `now` (µs).
    pub fn allow(&mut self, key: K, now: u64) -> bool {
        let every = self.every;
        let live = |t: &u64| now.saturating_sub(*t) < every;
        if let Some(t) = self.last.get(&key) {
            if live(t) {
                return false;
            }
        } else if self.last.len() >= MAX_PACED {
            self.last.retain(|_, t| live(t));
            if self.last.len() >= MAX_PACED {
                return false;
            }
        }
        self.last.insert(key, now);
        true
    }

    /// Forget `key` (its next event is allowed at once).
    pub fn clear(&mut self, key: &K) {
        self.last.remove(key);
    }
}

/// The remote pairs by tenant, pattern → origin slots; one bit per slot for the
/// dedup at lookup.
#[derive(Debug, Default)]
struct Index {
    tenants: HashMap<String, SubIndex<Slot>>,
    slots: Vec<Option<String>>,
    slot_of: HashMap<String, Slot>,
    total: usize,
}

/// What [`Index::insert`] did.
enum Inserted {
    Stored,
    Known,
    Invalid,
    Full,
}

impl Index {
    fn slot(&mut self, origin: &str) -> Option<Slot> {
        if let Some(s) = self.slot_of.get(origin) {
            return Some(*s);
        }
        let i = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.slots.len() < MAX_ORIGINS => {
                self.slots.push(None);
                self.slots.len() - 1
            }
            None => return None,
        };
        let s = Slot::try_from(i).ok()?;
        if let Some(x) = self.slots.get_mut(i) {
            *x = Some(origin.to_owned());
        }
        self.slot_of.insert(origin.to_owned(), s);
        Some(s)
    }

    fn insert(&mut self, origin: &str, tenant: &str, pat: &str) -> Inserted {
        if pattern::validate_pattern(pat).is_err() || pattern::check_pattern_cost(pat).is_err() {
            // Over the cost limits counts as invalid: no edge of this version accepts it.
            return Inserted::Invalid;
        }
        if self.total >= MAX_TOTAL_ENTRIES {
            return Inserted::Full;
        }
        let Some(slot) = self.slot(origin) else {
            return Inserted::Full;
        };
        let idx = self
            .tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| SubIndex::new(MAX_TOTAL_ENTRIES));
        match idx.insert(pat, slot) {
            Ok(true) => {
                self.total += 1;
                Inserted::Stored
            }
            Ok(false) => Inserted::Known,
            Err(_) => Inserted::Full,
        }
    }

    fn remove(&mut self, origin: &str, tenant: &str, pat: &str) {
        let Some(&slot) = self.slot_of.get(origin) else {
            return;
        };
        let Some(idx) = self.tenants.get_mut(tenant) else {
            return;
        };
        if idx.remove(pat, slot) {
            self.total -= 1;
        }
        if idx.is_empty() {
            self.tenants.remove(tenant);
        }
    }

    /// Drop every pair of `origin` (listed in `entries`) and free its slot.
    fn remove_origin(&mut self, origin: &str, entries: &BTreeSet<Entry>) {
        for (t, p) in entries {
            self.remove(origin, t, p);
        }
        if let Some(s) = self.slot_of.remove(origin)
            && let Some(x) = self.slots.get_mut(usize::from(s))
        {
            *x = None;
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct InterestTable {
    me: String,
    local: OriginInterest,
    remote: BTreeMap<String, OriginInterest>,
    /// Snapshot parts being received, by origin, with when the first part came.
    partial: BTreeMap<String, (u64, OriginInterest)>,
    /// Pairs in `partial`, all origins together.
    partial_total: usize,
    /// Outstanding snapshot requests, by origin.
    requests: Pacer<String>,
    /// Snapshots answered, by (link, origin).
    answers: Pacer<(LinkId, String)>,
    /// Remote origins without a route, since when.
    unrouted: BTreeMap<String, u64>,
    next_expire: Option<u64>,
    index: Index,
    stats: InterestStats,
    /// Outputs not drained yet (each input adds at most one).
    out: VecDeque<InterestTransmit>,
}

impl InterestTable {
    /// A table for relay `me`, starting at `epoch`.
    pub fn new(me: &str, epoch: u32) -> Self {
        Self {
            me: me.to_owned(),
            local: OriginInterest {
                epoch,
                seq: 0,
                entries: BTreeSet::new(),
            },
            remote: BTreeMap::new(),
            partial: BTreeMap::new(),
            partial_total: 0,
            requests: Pacer::new(REQUEST_TIMEOUT),
            answers: Pacer::new(ANSWER_EVERY),
            unrouted: BTreeMap::new(),
            next_expire: None,
            index: Index::default(),
            stats: InterestStats::default(),
            out: VecDeque::new(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> InterestStats {
        self.stats
    }

    /// This relay's own interest.
    pub fn local(&self) -> &OriginInterest {
        &self.local
    }

    /// Every origin (this relay included) and its interest.
    pub fn origins(&self) -> impl Iterator<Item = (&str, &OriginInterest)> {
        std::iter::once((self.me.as_str(), &self.local))
            .chain(self.remote.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// The interest of `origin` (this relay included).
    pub fn get(&self, origin: &str) -> Option<&OriginInterest> {
        if origin == self.me {
            Some(&self.local)
        } else {
            self.remote.get(origin)
        }
    }

    /// A local change; returns its number if it changed anything (flood it then).
    pub fn handle_local_change(&mut self, tenant: &str, pattern: &str, added: bool) -> Option<u32> {
        let key = (tenant.to_owned(), pattern.to_owned());
        let changed = if added {
            if self.local.entries.len() >= MAX_ENTRIES {
                self.stats.entries_dropped += 1;
                return None;
            }
            self.local.entries.insert(key)
        } else {
            self.local.entries.remove(&key)
        };
        if !changed {
            return None;
        }
        self.local.seq += 1;
        Some(self.local.seq)
    }

    /// Add a remote pair to `o` and the index (both or neither).
    fn add_remote(
        origin: &str,
        o: &mut OriginInterest,
        index: &mut Index,
        stats: &mut InterestStats,
        key: Entry,
    ) {
        if o.entries.contains(&key) {
            return;
        }
        if o.entries.len() >= MAX_ENTRIES {
            stats.entries_dropped += 1;
            return;
        }
        match index.insert(origin, &key.0, &key.1) {
            Inserted::Stored | Inserted::Known => {
                o.entries.insert(key);
            }
            Inserted::Invalid => stats.invalid_patterns += 1,
            Inserted::Full => stats.total_dropped += 1,
        }
    }

    fn apply_one(
        origin: &str,
        o: &mut OriginInterest,
        index: &mut Index,
        c: &InterestChange<'_>,
        stats: &mut InterestStats,
    ) {
        let key = (c.entry.tenant.to_owned(), c.entry.pattern.to_owned());
        if c.added {
            Self::add_remote(origin, o, index, stats, key);
        } else if o.entries.remove(&key) {
            index.remove(origin, &key.0, &key.1);
        }
    }

    /// Changes `seq, seq+1, …` of `origin` in `epoch`, received on `link`: applied in
    /// order ([`Applied::New`]: flood them on). A gap queues a snapshot request to `link`
    /// unless one for `origin` is outstanding (counted in `requests_suppressed`).
    pub fn handle_update(
        &mut self,
        link: LinkId,
        origin: &str,
        epoch: u32,
        seq: u32,
        changes: &[InterestChange<'_>],
        now: u64,
    ) -> Applied {
        let applied = self.apply_update(origin, epoch, seq, changes);
        if applied == Applied::Gap {
            if self.requests.allow(origin.to_owned(), now) {
                self.out.push_back(InterestTransmit::Request {
                    link,
                    origin: origin.to_owned(),
                });
            } else {
                self.stats.requests_suppressed += 1;
            }
        }
        applied
    }

    /// A snapshot request for `origin` from `link`: the answer is queued unless that
    /// (link, origin) was answered within [`ANSWER_EVERY`] (counted in `snapshots_refused`).
    pub fn handle_snapshot_request(&mut self, link: LinkId, origin: &str, now: u64) {
        if self.answers.allow((link, origin.to_owned()), now) {
            self.out.push_back(InterestTransmit::Snapshot {
                link,
                origin: origin.to_owned(),
            });
        } else {
            self.stats.snapshots_refused += 1;
        }
    }

    /// What to send, one at a time (see the call order).
    pub fn poll_transmit(&mut self) -> Option<InterestTransmit> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(self.next_expire.unwrap_or(0))
    }

    fn apply_update(
        &mut self,
        origin: &str,
        epoch: u32,
        seq: u32,
        changes: &[InterestChange<'_>],
    ) -> Applied {
        if origin == self.me {
            return Applied::Duplicate;
        }
        if !self.remote.contains_key(origin) {
            if self.remote.len() >= MAX_ORIGINS {
                self.stats.origins_dropped += 1;
                return Applied::Full;
            }
            if seq != 1 {
                self.stats.gaps += 1;
                return Applied::Gap;
            }
            self.remote.insert(
                origin.to_owned(),
                OriginInterest {
                    epoch,
                    seq: 0,
                    entries: BTreeSet::new(),
                },
            );
        }
        let Some(o) = self.remote.get_mut(origin) else {
            return Applied::Full;
        };
        if epoch < o.epoch {
            return Applied::Duplicate;
        }
        if epoch > o.epoch {
            if seq != 1 {
                self.stats.gaps += 1;
                return Applied::Gap;
            }
            // A restart: its old interest is gone.
            for (t, p) in std::mem::take(&mut o.entries) {
                self.index.remove(origin, &t, &p);
            }
            *o = OriginInterest {
                epoch,
                seq: 0,
                entries: BTreeSet::new(),
            };
        }
        if seq > o.seq.saturating_add(1) {
            self.stats.gaps += 1;
            return Applied::Gap;
        }
        let mut any = false;
        for (i, c) in changes.iter().enumerate() {
            let n = seq.saturating_add(i as u32);
            if n == o.seq.saturating_add(1) {
                Self::apply_one(origin, o, &mut self.index, c, &mut self.stats);
                o.seq = n;
                any = true;
            }
        }
        if any {
            Applied::New
        } else {
            Applied::Duplicate
        }
    }

    /// One part of a snapshot of `origin`; true when the last part completed a snapshot
    /// newer than what was known (and it replaced it: pass the news on).
    #[allow(clippy::too_many_arguments)]
    pub fn handle_snapshot(
        &mut self,
        now: u64,
        origin: &str,
        epoch: u32,
        seq: u32,
        part: u16,
        last: bool,
        entries: impl Iterator<Item = (String, String)>,
    ) -> bool {
        if origin == self.me {
            return false;
        }
        if part == 0 {
            self.take_partial(origin);
            if self.partial.len() >= MAX_ORIGINS {
                self.stats.origins_dropped += 1;
                return false;
            }
            self.partial.insert(
                origin.to_owned(),
                (
                    now,
                    OriginInterest {
                        epoch,
                        seq,
                        entries: BTreeSet::new(),
                    },
                ),
            );
        }
        let Some((_, p)) = self.partial.get_mut(origin) else {
            return false;
        };
        if p.epoch != epoch || p.seq != seq {
            self.take_partial(origin);
            return false;
        }
        for e in entries {
            if p.entries.len() >= MAX_ENTRIES {
                self.stats.entries_dropped += 1;
                break;
            }
            if self.partial_total >= MAX_PARTIAL_ENTRIES {
                self.stats.partial_dropped += 1;
                break;
            }
            if p.entries.insert(e) {
                self.partial_total += 1;
            }
        }
        if !last {
            return false;
        }
        let Some(done) = self.take_partial(origin) else {
            return false;
        };
        // The snapshot asked for (if any) has come.
        self.requests.clear(&origin.to_owned());
        let newer = match self.remote.get(origin) {
            Some(o) => (done.epoch, done.seq) > (o.epoch, o.seq),
            None => {
                if self.remote.len() >= MAX_ORIGINS {
                    self.stats.origins_dropped += 1;
                    return false;
                }
                true
            }
        };
        if newer {
            // Swap the origin's pairs in the index: out with the old, in with the new
            // (a pair the index refuses is left out of the entries too).
            if let Some(old) = self.remote.remove(origin) {
                for (t, p) in &old.entries {
                    self.index.remove(origin, t, p);
                }
            }
            let mut o = OriginInterest {
                epoch: done.epoch,
                seq: done.seq,
                entries: BTreeSet::new(),
            };
            for key in done.entries {
                Self::add_remote(origin, &mut o, &mut self.index, &mut self.stats, key);
            }
            self.remote.insert(origin.to_owned(), o);
        }
        newer
    }

    /// Relays other than this one with a pattern in `tenant` matching `channel`, each
    /// once. One trie walk in the tenant's index; no allocation.
    pub fn remote_matches<'s>(
        &'s self,
        tenant: &str,
        channel: &str,
    ) -> impl Iterator<Item = &'s str> {
        let mut seen = [0u64; MAX_ORIGINS / 64];
        if let Some(idx) = self.index.tenants.get(tenant) {
            idx.for_each_match(channel, |_, slot| {
                if let Some(w) = seen.get_mut(usize::from(slot) / 64) {
                    *w |= 1 << (slot % 64);
                }
            });
        }
        (0..MAX_ORIGINS)
            .filter(move |i| seen.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0))
            .filter_map(|i| self.index.slots.get(i).and_then(|s| s.as_deref()))
    }

    /// The same answer as [`Self::remote_matches`] by scanning every pair with
    /// [`pattern::matches`] (what it replaced): for tests and the measurement.
    pub fn remote_matches_by_scan<'s>(
        &'s self,
        tenant: &'s str,
        channel: &'s str,
    ) -> impl Iterator<Item = &'s str> {
        self.remote.iter().filter_map(move |(name, o)| {
            o.entries
                .iter()
                .any(|(t, p)| t == tenant && pattern::matches(p, channel))
                .then_some(name.as_str())
        })
    }

    /// Remote pairs in the index.
    pub fn indexed(&self) -> usize {
        self.index.total
    }

    /// Forget a relay (it left the mesh for good).
    pub fn forget(&mut self, origin: &str) {
        if let Some(o) = self.remote.remove(origin) {
            self.index.remove_origin(origin, &o.entries);
        }
        self.take_partial(origin);
        self.unrouted.remove(origin);
    }

    /// Remove the partial snapshot of `origin`, keeping the partial count.
    fn take_partial(&mut self, origin: &str) -> Option<OriginInterest> {
        let (_, p) = self.partial.remove(origin)?;
        self.partial_total = self.partial_total.saturating_sub(p.entries.len());
        Some(p)
    }

    /// Housekeeping, at most once per second: drop partial snapshots older than
    /// [`PARTIAL_TTL`], and forget relays that `has_route` said had no route for
    /// [`UNROUTED_TTL`] (both counted).
    pub fn handle_timeout(&mut self, now: u64, has_route: impl Fn(&str) -> bool) {
        if self.next_expire.is_some_and(|t| now < t) {
            return;
        }
        self.next_expire = Some(now + EXPIRE_EVERY);
        let old: Vec<String> = self
            .partial
            .iter()
            .filter(|(_, (t, _))| now.saturating_sub(*t) >= PARTIAL_TTL)
            .map(|(k, _)| k.clone())
            .collect();
        for o in old {
            self.take_partial(&o);
            self.stats.partials_expired += 1;
        }
        let remote = &self.remote;
        self.unrouted.retain(|o, _| remote.contains_key(o));
        let mut gone = Vec::new();
        for o in self.remote.keys() {
            if has_route(o) {
                self.unrouted.remove(o);
                continue;
            }
            let since = *self.unrouted.entry(o.clone()).or_insert(now);
            if now.saturating_sub(since) >= UNROUTED_TTL {
                gone.push(o.clone());
            }
        }
        for o in gone {
            self.forget(&o);
            self.stats.origins_forgotten += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastpubsub_core::mesh::InterestEntry;

    fn ch(added: bool, tenant: &'static str, pattern: &'static str) -> InterestChange<'static> {
        InterestChange {
            added,
            entry: InterestEntry { tenant, pattern },
        }
    }

    #[test]
    fn local_changes_are_numbered_once() {
        let mut t = InterestTable::new("t", 5);
        assert_eq!(t.handle_local_change("acme", "a.#", true), Some(1));
        assert_eq!(t.handle_local_change("acme", "a.#", true), None);
        assert_eq!(t.handle_local_change("acme", "b", true), Some(2));
        assert_eq!(t.handle_local_change("acme", "a.#", false), Some(3));
        assert_eq!(t.handle_local_change("acme", "a.#", false), None);
        assert_eq!(t.local().entries.len(), 1);
    }

    #[test]
    fn in_order_duplicates_gaps_and_epochs() {
        let mut t = InterestTable::new("me", 1);
        assert_eq!(
            t.apply_update("f", 10, 2, &[ch(true, "x", "a")]),
            Applied::Gap
        );
        assert_eq!(
            t.apply_update("f", 10, 1, &[ch(true, "x", "a.#")]),
            Applied::New
        );
        assert_eq!(
            t.apply_update("f", 10, 1, &[ch(true, "x", "a.#")]),
            Applied::Duplicate
        );
        // Overlapping batch: change 1 known, change 2 new.
        assert_eq!(
            t.apply_update("f", 10, 1, &[ch(true, "x", "a.#"), ch(true, "y", "b.*")]),
            Applied::New
        );
        assert_eq!(
            t.apply_update("f", 10, 4, &[ch(true, "x", "z")]),
            Applied::Gap
        );
        let got: Vec<&str> = t.remote_matches("x", "a.b.c").collect();
        assert_eq!(got, vec!["f"]);
        assert_eq!(t.remote_matches("y", "b.c").count(), 1);
        assert_eq!(t.remote_matches("y", "b.c.d").count(), 0);
        assert_eq!(t.remote_matches("x", "zzz").count(), 0);
        // An older epoch is stale; a newer one restarts at 1.
        assert_eq!(
            t.apply_update("f", 9, 3, &[ch(true, "x", "q")]),
            Applied::Duplicate
        );
        assert_eq!(
            t.apply_update("f", 11, 1, &[ch(true, "x", "q")]),
            Applied::New
        );
        assert_eq!(
            t.remote_matches("x", "a.b").count(),
            0,
            "restart cleared old interest"
        );
        assert_eq!(
            t.apply_update("me", 1, 1, &[ch(true, "x", "q")]),
            Applied::Duplicate
        );
    }

    #[test]
    fn snapshots_replace_only_when_newer() {
        let mut t = InterestTable::new("me", 1);
        let e = |p: &str| ("x".to_owned(), p.to_owned());
        assert!(!t.handle_snapshot(0, "f", 3, 7, 0, false, [e("a")].into_iter()));
        assert!(t.handle_snapshot(0, "f", 3, 7, 1, true, [e("b")].into_iter()));
        assert_eq!(t.get("f").map(|o| (o.seq, o.entries.len())), Some((7, 2)));
        // Older snapshot ignored.
        assert!(!t.handle_snapshot(0, "f", 3, 6, 0, true, [e("c")].into_iter()));
        // Updates continue from the snapshot's seq.
        assert_eq!(
            t.apply_update("f", 3, 8, &[ch(false, "x", "a")]),
            Applied::New
        );
        assert_eq!(t.get("f").map(|o| o.entries.len()), Some(1));
        // A part out of sequence discards the partial snapshot.
        assert!(!t.handle_snapshot(0, "g", 1, 1, 1, true, [e("a")].into_iter()));
        assert!(t.get("g").is_none());
    }

    #[test]
    fn bounded() {
        let mut t = InterestTable::new("me", 1);
        for i in 0..MAX_ORIGINS {
            assert_eq!(
                t.apply_update(&format!("r{i}"), 1, 1, &[]),
                Applied::Duplicate
            );
        }
        assert_eq!(t.apply_update("one-more", 1, 1, &[]), Applied::Full);
        assert_eq!(t.stats().origins_dropped, 1);
        for i in 0..MAX_ENTRIES + 3 {
            t.handle_local_change("x", &format!("p{i}"), true);
        }
        assert_eq!(t.local().entries.len(), MAX_ENTRIES);
        assert_eq!(t.stats().entries_dropped, 3);
    }

    /// Random changes, restarts, snapshots and forgets on a few relays; after each step
    /// the index answers every lookup exactly as a scan of the pairs with
    /// `pattern::matches` does, and holds exactly the pairs.
    #[test]
    fn index_agrees_with_a_scan_under_random_changes() {
        let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let segs = ["a", "b", "c", "*"];
        let mut t = InterestTable::new("me", 1);
        let origins = ["r0", "r1", "r2", "r3", "r4", "r5"];
        let mut state: HashMap<&str, (u32, u32)> = HashMap::new();
        let mut lookups = 0;
        let mut matched = 0;
        for step in 0..3_000 {
            let mut pat = String::new();
            for i in 0..1 + next(4) {
                if i > 0 {
                    pat.push('.');
                }
                pat.push_str(segs[next(4) as usize]);
            }
            if next(4) == 0 {
                pat.push_str(".#");
            }
            if next(40) == 0 {
                pat = ["a..b", "#.a", "a*", ""][next(4) as usize].to_owned();
            }
            let tenant = ["t1", "t2"][next(2) as usize];
            let origin = origins[next(6) as usize];
            let (epoch, seq) = state.get(origin).copied().unwrap_or((1, 0));
            match next(50) {
                0 => {
                    // Restart: a new epoch starting at 1.
                    let c = [ch(true, "t1", "a.#")];
                    let c: Vec<InterestChange<'_>> = c.to_vec();
                    t.apply_update(origin, epoch + 1, 1, &c);
                    state.insert(origin, (epoch + 1, 1));
                }
                1 => {
                    let n = next(6);
                    let entries: Vec<(String, String)> = (0..n)
                        .map(|i| ("t1".to_owned(), format!("{}.{}", segs[i as usize % 4], "#")))
                        .chain([(tenant.to_owned(), pat.clone())])
                        .collect();
                    if t.handle_snapshot(0, origin, epoch, seq + 5, 0, true, entries.into_iter()) {
                        state.insert(origin, (epoch, seq + 5));
                    }
                }
                2 => {
                    t.forget(origin);
                    state.remove(origin);
                }
                _ => {
                    let c = InterestChange {
                        added: next(3) != 0,
                        entry: InterestEntry {
                            tenant,
                            pattern: &pat,
                        },
                    };
                    let got = t.apply_update(origin, epoch, seq + 1, &[c]);
                    if got == Applied::New {
                        state.insert(origin, (epoch, seq + 1));
                    }
                }
            }
            let pairs: usize = t.remote.values().map(|o| o.entries.len()).sum();
            assert_eq!(t.indexed(), pairs, "step {step}");
            for _ in 0..4 {
                let mut channel = String::new();
                for i in 0..1 + next(5) {
                    if i > 0 {
                        channel.push('.');
                    }
                    channel.push_str(segs[next(3) as usize]);
                }
                let tenant = ["t1", "t2", "t3"][next(3) as usize];
                let mut a: Vec<&str> = t.remote_matches(tenant, &channel).collect();
                let mut b: Vec<&str> = t.remote_matches_by_scan(tenant, &channel).collect();
                a.sort_unstable();
                b.sort_unstable();
                assert_eq!(a, b, "step {step}: {tenant} {channel}");
                lookups += 1;
                matched += usize::from(!a.is_empty());
            }
        }
        // The test looked at both outcomes, and refused the invalid patterns.
        assert!(
            matched > lookups / 10 && matched < lookups,
            "{matched} of {lookups}"
        );
        assert!(t.stats().invalid_patterns > 0);
    }

    #[test]
    fn the_total_is_bounded_and_counted() {
        let mut t = InterestTable::new("me", 1);
        let per = MAX_ENTRIES;
        let origins = MAX_TOTAL_ENTRIES / per + 1;
        let mut made = 0;
        for o in 0..origins {
            let name = format!("r{o}");
            let entries = (0..per).map(|i| ("t".to_owned(), format!("p{i}.x")));
            assert!(t.handle_snapshot(0, &name, 1, 1, 0, true, entries));
            made += per;
        }
        assert_eq!(t.indexed(), MAX_TOTAL_ENTRIES);
        assert_eq!(t.stats().total_dropped as usize, made - MAX_TOTAL_ENTRIES);
        // The last relay's pairs that did not fit are not half-known either.
        assert_eq!(
            t.get(&format!("r{}", origins - 1)).map(|o| o.entries.len()),
            Some(0)
        );
        // Forgetting a relay makes room.
        t.forget("r0");
        assert_eq!(t.indexed(), MAX_TOTAL_ENTRIES - per);
        assert_eq!(t.remote_matches("t", "p1.x").count(), origins - 2);
    }
    #[test]
    fn one_outstanding_request_per_origin_until_timeout_or_answer() {
        let mut t = InterestTable::new("me", 1);
        let t0: u64 = 0;
        let (l1, l2) = (LinkId(1), LinkId(2));
        let gap = |t: &mut InterestTable, o: &str, at: u64| {
            assert_eq!(t.handle_update(l1, o, 1, 3, &[], at), Applied::Gap);
            t.poll_transmit()
        };
        let req = |o: &str| {
            Some(InterestTransmit::Request {
                link: LinkId(1),
                origin: o.to_owned(),
            })
        };
        assert_eq!(gap(&mut t, "f", t0), req("f"));
        // Gaps keep coming: no second request while one is outstanding.
        assert_eq!(gap(&mut t, "f", t0 + 500_000), None);
        assert_eq!(gap(&mut t, "f", t0 + REQUEST_TIMEOUT - 1_000), None);
        assert_eq!(t.stats().requests_suppressed, 2);
        // Another origin is independent.
        assert_eq!(gap(&mut t, "g", t0), req("g"));
        // After the timeout it may be asked again.
        let t1 = t0 + REQUEST_TIMEOUT;
        assert_eq!(gap(&mut t, "f", t1), req("f"));
        // A completed snapshot ends the request: the next gap may ask at once.
        assert!(t.handle_snapshot(t1, "f", 1, 4, 0, true, std::iter::empty()));
        assert_eq!(
            t.handle_update(l2, "f", 1, 9, &[], t1),
            Applied::Gap,
            "a gap after the snapshot"
        );
        assert_eq!(
            t.poll_transmit(),
            Some(InterestTransmit::Request {
                link: l2,
                origin: "f".into()
            })
        );
        assert_eq!(t.poll_transmit(), None);
    }

    #[test]
    fn snapshot_answers_are_paced_per_link_and_origin() {
        let mut t = InterestTable::new("me", 1);
        let t0: u64 = 0;
        let mut answer = |l: usize, o: &str, at: u64| {
            t.handle_snapshot_request(LinkId(l), o, at);
            let got = t.poll_transmit();
            (got.is_some(), t.stats().snapshots_refused)
        };
        assert_eq!(answer(1, "f", t0), (true, 0));
        assert_eq!(answer(1, "f", t0 + 10_000), (false, 1));
        assert_eq!(answer(1, "f", t0 + ANSWER_EVERY - 1_000), (false, 2));
        assert_eq!(answer(2, "f", t0), (true, 2), "another link");
        assert_eq!(answer(1, "g", t0), (true, 2), "another origin");
        assert_eq!(answer(1, "f", t0 + ANSWER_EVERY), (true, 2));
    }

    #[test]
    fn pacer_is_bounded() {
        let mut p = Pacer::new(1_000_000);
        let t0: u64 = 0;
        for i in 0..MAX_PACED {
            assert!(p.allow(i, t0));
        }
        assert!(!p.allow(MAX_PACED, t0), "full of live keys: refused");
        assert!(p.allow(MAX_PACED, t0 + 1_000_000), "expired make room");
        assert!(p.last.len() <= MAX_PACED);
    }

    #[test]
    fn partial_snapshots_are_bounded_in_total_and_expire() {
        let mut t = InterestTable::new("me", 1);
        let t0: u64 = 0;
        let per = MAX_ENTRIES;
        let n = MAX_PARTIAL_ENTRIES / per;
        // Partials that never finish fill the partial bound…
        for o in 0..n {
            let entries = (0..per).map(|i| ("t".to_owned(), format!("p{i}")));
            assert!(!t.handle_snapshot(t0, &format!("r{o}"), 1, 1, 0, false, entries));
        }
        assert_eq!(t.partial_total, MAX_PARTIAL_ENTRIES);
        // …and one more pair is refused and counted.
        let more = std::iter::once(("t".to_owned(), "x".to_owned()));
        assert!(!t.handle_snapshot(t0, "extra", 1, 1, 0, false, more));
        assert_eq!(t.stats().partial_dropped, 1);
        assert_eq!(t.partial_total, MAX_PARTIAL_ENTRIES);
        // Not yet old: kept (housekeeping runs at most every EXPIRE_EVERY).
        t.handle_timeout(t0 + PARTIAL_TTL - EXPIRE_EVERY, |_| true);
        assert_eq!(t.partial.len(), n + 1);
        // Old: dropped and counted, and the room is back.
        t.handle_timeout(t0 + PARTIAL_TTL, |_| true);
        assert_eq!(t.partial.len(), 0);
        assert_eq!(t.partial_total, 0);
        assert_eq!(t.stats().partials_expired as usize, n + 1);
        let one = std::iter::once(("t".to_owned(), "x".to_owned()));
        assert!(t.handle_snapshot(t0, "late", 1, 1, 0, true, one));
        assert_eq!(t.get("late").map(|o| o.entries.len()), Some(1));
    }

    #[test]
    fn relays_without_a_route_are_forgotten() {
        let mut t = InterestTable::new("me", 1);
        let t0: u64 = 0;
        for o in ["gone", "here", "back"] {
            assert_eq!(
                t.apply_update(o, 1, 1, &[ch(true, "x", "a.#")]),
                Applied::New
            );
        }
        let routed = |set: &'static [&'static str]| move |o: &str| set.contains(&o);
        t.handle_timeout(t0, routed(&["here"]));
        // "back" regains its route before the timeout: its clock restarts.
        t.handle_timeout(t0 + UNROUTED_TTL / 2, routed(&["here", "back"]));
        t.handle_timeout(t0 + UNROUTED_TTL - EXPIRE_EVERY, routed(&["here"]));
        assert_eq!(t.remote_matches("x", "a.b").count(), 3);
        t.handle_timeout(t0 + UNROUTED_TTL, routed(&["here"]));
        let mut left: Vec<&str> = t.remote_matches("x", "a.b").collect();
        left.sort_unstable();
        assert_eq!(left, vec!["back", "here"]);
        assert!(t.get("gone").is_none());
        assert_eq!(t.stats().origins_forgotten, 1);
        assert_eq!(t.indexed(), 2);
        // Its slot is free again.
        assert_eq!(t.index.slots.iter().flatten().count(), 2);
    }
}
