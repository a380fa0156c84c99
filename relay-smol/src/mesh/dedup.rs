//! Per-origin duplicate suppression for messages delivered on this relay.
//!
//! Message ids of one origin increase (`epoch << 32 | counter`). For each origin the
//! window remembers the highest id and which of the [`WINDOW`] ids below it were seen;
//! an id older than the window is treated as seen (dropped). Bounded to [`MAX_ORIGINS`]
//! origins (the least recently active one is evicted).

use std::collections::BTreeMap;

pub use super::limits::{DEDUP_ORIGINS as MAX_ORIGINS, DEDUP_WINDOW as WINDOW};

const WORDS: usize = (WINDOW / 64) as usize;

#[derive(Debug, Clone)]
struct Window {
    max: u64,
    bits: [u64; WORDS],
    touched: u64,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Dedup {
    origins: BTreeMap<String, Window>,
    clock: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Ids dropped because they were older than the window.
    pub too_old: u64,
}

impl Window {
    fn bit(&mut self, id: u64) -> Option<(&mut u64, u64)> {
        let off = self.max.checked_sub(id)?;
        if off >= WINDOW {
            return None;
        }
        let pos = id % WINDOW;
        let word = self.bits.get_mut((pos / 64) as usize)?;
        Some((word, 1u64 << (pos % 64)))
    }
}

impl Dedup {
    /// True the first time `(origin, id)` is seen; false for a duplicate.
    pub fn first_time(&mut self, origin: &str, id: u64) -> bool {
        self.clock += 1;
        let clock = self.clock;
        if !self.origins.contains_key(origin) {
            if self.origins.len() >= MAX_ORIGINS
                && let Some(oldest) = self
                    .origins
                    .iter()
                    .min_by_key(|(_, w)| w.touched)
                    .map(|(k, _)| k.clone())
            {
                self.origins.remove(&oldest);
            }
            let mut w = Window {
                max: id,
                bits: [0; WORDS],
                touched: clock,
            };
            if let Some((word, mask)) = w.bit(id) {
                *word |= mask;
            }
            self.origins.insert(origin.to_owned(), w);
            return true;
        }
        let Some(w) = self.origins.get_mut(origin) else {
            return true;
        };
        w.touched = clock;
        if id > w.max {
            // Slide: clear the ids that leave the window.
            let shift = id - w.max;
            if shift >= WINDOW {
                w.bits = [0; WORDS];
            } else {
                for old in (w.max + 1)..=id {
                    let pos = old % WINDOW;
                    if let Some(word) = w.bits.get_mut((pos / 64) as usize) {
                        *word &= !(1u64 << (pos % 64));
                    }
                }
            }
            w.max = id;
        }
        match w.bit(id) {
            Some((word, mask)) => {
                if *word & mask != 0 {
                    self.duplicates += 1;
                    false
                } else {
                    *word |= mask;
                    true
                }
            }
            None => {
                self.too_old += 1;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window() {
        let mut d = Dedup::default();
        assert!(d.first_time("t", 10));
        assert!(!d.first_time("t", 10));
        assert!(d.first_time("t", 12));
        assert!(d.first_time("t", 11), "reordered but new");
        assert!(!d.first_time("t", 11));
        assert!(d.first_time("f", 10), "origins are separate");
        assert!(d.first_time("t", 10 + WINDOW + 5));
        assert!(!d.first_time("t", 11), "older than the window");
        assert!(d.first_time("t", 10 + WINDOW + 4));
        assert_eq!(d.duplicates, 2);
        assert_eq!(d.too_old, 1);
    }

    #[test]
    fn every_id_once_under_reordering() {
        let mut d = Dedup::default();
        let mut rng = 12345u64;
        let mut ids: Vec<u64> = (0..20_000).collect();
        // Local shuffles within 100 positions, then every id twice.
        for i in 0..ids.len() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let j = (i + (rng >> 33) as usize % 100).min(ids.len() - 1);
            ids.swap(i, j);
        }
        let mut firsts = 0;
        for &id in &ids {
            if d.first_time("o", id) {
                firsts += 1;
            }
            assert!(!d.first_time("o", id));
        }
        assert_eq!(firsts, 20_000);
    }

    #[test]
    fn bounded_origins() {
        let mut d = Dedup::default();
        for i in 0..MAX_ORIGINS + 10 {
            d.first_time(&format!("o{i}"), 1);
        }
        assert_eq!(d.origins.len(), MAX_ORIGINS);
    }
}
