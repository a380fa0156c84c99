//! Who wants what: the (tenant, pattern) pairs each relay has local subscribers for.
//!
//! This relay numbers its own changes `(epoch, seq)`; other relays' changes arrive as
//! flooded [`InterestUpdate`](fastpubsub_core::mesh::InterestUpdate)s and are applied in
//! order. A gap (a change missed) asks for a snapshot. Bounded: [`MAX_ORIGINS`] relays,
//! [`MAX_ENTRIES`] pairs each; what does not fit is dropped and counted.

use std::collections::{BTreeSet, HashMap};

use fastpubsub_core::mesh::InterestChange;
use fastpubsub_core::pattern;

/// Most relays whose interest is tracked.
pub const MAX_ORIGINS: usize = 256;
/// Most (tenant, pattern) pairs per relay.
pub const MAX_ENTRIES: usize = 4096;

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
}

/// See the module docs.
#[derive(Debug)]
pub struct InterestTable {
    me: String,
    local: OriginInterest,
    remote: HashMap<String, OriginInterest>,
    /// Snapshot parts being received, by origin.
    partial: HashMap<String, OriginInterest>,
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

    fn apply_one(o: &mut OriginInterest, c: &InterestChange<'_>, stats: &mut InterestStats) {
        let key = (c.entry.tenant.to_owned(), c.entry.pattern.to_owned());
        if c.added {
            if o.entries.len() >= MAX_ENTRIES {
                stats.entries_dropped += 1;
            } else {
                o.entries.insert(key);
            }
        } else {
            o.entries.remove(&key);
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
                Self::apply_one(o, c, &mut self.stats);
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
            self.remote.insert(origin.to_owned(), done);
        }
        newer
    }

    /// Relays other than this one with a pattern in `tenant` matching `channel`.
    pub fn remote_matches<'s>(
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

    /// Forget a relay (it left the mesh for good).
    pub fn forget(&mut self, origin: &str) {
        self.remote.remove(origin);
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
}
