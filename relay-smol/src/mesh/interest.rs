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

use std::collections::{BTreeSet, HashMap};

use fastpubsub_core::mesh::InterestChange;
use fastpubsub_core::pattern::{self, SubIndex};

/// Most relays whose interest is tracked.
pub const MAX_ORIGINS: usize = 256;
/// Most (tenant, pattern) pairs per relay.
pub const MAX_ENTRIES: usize = 4096;
/// Most remote (tenant, pattern) pairs in all (the index's bound).
pub const MAX_TOTAL_ENTRIES: usize = 256 * 1024;

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
        if pattern::validate_pattern(pat).is_err() {
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
    remote: HashMap<String, OriginInterest>,
    /// Snapshot parts being received, by origin.
    partial: HashMap<String, OriginInterest>,
    index: Index,
    stats: InterestStats,
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
            remote: HashMap::new(),
            partial: HashMap::new(),
            index: Index::default(),
            stats: InterestStats::default(),
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

    /// A local change; returns its number if it changed anything.
    pub fn local_change(&mut self, tenant: &str, pattern: &str, added: bool) -> Option<u32> {
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

    /// Apply changes `seq, seq+1, …` of `origin` in `epoch`.
    pub fn apply_update(
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
    /// newer than what was known (and it replaced it).
    pub fn apply_snapshot(
        &mut self,
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
            if self.partial.len() >= MAX_ORIGINS && !self.partial.contains_key(origin) {
                self.stats.origins_dropped += 1;
                return false;
            }
            self.partial.insert(
                origin.to_owned(),
                OriginInterest {
                    epoch,
                    seq,
                    entries: BTreeSet::new(),
                },
            );
        }
        let Some(p) = self.partial.get_mut(origin) else {
            return false;
        };
        if p.epoch != epoch || p.seq != seq {
            self.partial.remove(origin);
            return false;
        }
        for e in entries {
            if p.entries.len() >= MAX_ENTRIES {
                self.stats.entries_dropped += 1;
                break;
            }
            p.entries.insert(e);
        }
        if !last {
            return false;
        }
        let Some(done) = self.partial.remove(origin) else {
            return false;
        };
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
        self.partial.remove(origin);
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
        assert_eq!(t.local_change("acme", "a.#", true), Some(1));
        assert_eq!(t.local_change("acme", "a.#", true), None);
        assert_eq!(t.local_change("acme", "b", true), Some(2));
        assert_eq!(t.local_change("acme", "a.#", false), Some(3));
        assert_eq!(t.local_change("acme", "a.#", false), None);
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
        assert!(!t.apply_snapshot("f", 3, 7, 0, false, [e("a")].into_iter()));
        assert!(t.apply_snapshot("f", 3, 7, 1, true, [e("b")].into_iter()));
        assert_eq!(t.get("f").map(|o| (o.seq, o.entries.len())), Some((7, 2)));
        // Older snapshot ignored.
        assert!(!t.apply_snapshot("f", 3, 6, 0, true, [e("c")].into_iter()));
        // Updates continue from the snapshot's seq.
        assert_eq!(
            t.apply_update("f", 3, 8, &[ch(false, "x", "a")]),
            Applied::New
        );
        assert_eq!(t.get("f").map(|o| o.entries.len()), Some(1));
        // A part out of sequence discards the partial snapshot.
        assert!(!t.apply_snapshot("g", 1, 1, 1, true, [e("a")].into_iter()));
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
            t.local_change("x", &format!("p{i}"), true);
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
                    if t.apply_snapshot(origin, epoch, seq + 5, 0, true, entries.into_iter()) {
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
            assert!(t.apply_snapshot(&name, 1, 1, 0, true, entries));
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
}
