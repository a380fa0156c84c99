//! What a subscription pattern may cost: the limits that bound the subscription index's
//! work per publish, checked when a pattern is subscribed.
//!
//! Why these limits, and not a cleverer walk: the index is a trie, and the trie nodes a
//! lookup must visit are exactly the stored pattern prefixes that are compatible with the
//! channel's prefix. Such a prefix of depth `d` is fixed by the set of its positions that
//! hold `*` (every other position must equal the channel's segment), so at most
//! `Σ_{k ≤ stars} C(d, k)` of them exist, whatever the number of stored patterns.
//! Merging states per level (an NFA walk with dedup) cannot do better on a trie: two trie
//! paths never reach the same node. Without a limit on `*` an attacker fills the trie with
//! distinct star placements (issue #10: 10,240 patterns of 124 segments, 1.15 M nodes,
//! every one visited by each publish); with [`MAX_PATTERN_SEGMENTS`] and
//! [`MAX_PATTERN_STARS`] no lookup visits more than [`MAX_NODES_VISITED`] nodes.

use core::fmt;

/// Most segments a subscription pattern may have, a final `#` included. Deeper channels
/// (up to [`MAX_SEGMENTS`](super::MAX_SEGMENTS)) are still reached with `#`.
pub const MAX_PATTERN_SEGMENTS: usize = 16;

/// Most `*` wildcards one subscription pattern may hold (a final `#` is not counted: it
/// adds no branch to a lookup).
pub const MAX_PATTERN_STARS: usize = 3;

/// Most `*` wildcards the subscriptions of one connection may hold together. It bounds
/// how many of one connection's patterns can match the same channel, i.e. the pattern
/// list of one deliver frame: at most one pattern without wildcards,
/// [`MAX_PATTERN_SEGMENTS`] ending in `#` without `*` (they are prefixes of the channel),
/// and one per `*`-holding pattern.
pub const MAX_STARS_PER_CONNECTION: usize = 64;

/// Upper bound on the trie nodes one lookup of a `SubIndex` visits (the root included),
/// when every stored pattern has at most `segments` segments and `stars` `*`:
/// `Σ_{d=0..=segments} Σ_{k=0..=stars} C(d, k) = Σ_{k=0..=stars} C(segments + 1, k + 1)`.
/// The bound is reached (the `worst_case_set_reaches_the_bound` test builds the set).
pub const fn max_nodes_visited(segments: usize, stars: usize) -> usize {
    let mut total = 0usize;
    let mut k = 0;
    while k <= stars {
        total = total.saturating_add(binomial(segments + 1, k + 1));
        k += 1;
    }
    total
}

/// `C(n, k)`, saturating (exact for the small arguments used here).
const fn binomial(n: usize, k: usize) -> usize {
    if k > n {
        return 0;
    }
    let mut acc = 1usize;
    let mut i = 0;
    while i < k {
        // acc * (n - i) / (i + 1) stays an integer at every step.
        acc = acc.saturating_mul(n - i) / (i + 1);
        i += 1;
    }
    acc
}

/// [`max_nodes_visited`] for the limits in force: 3,213 nodes.
pub const MAX_NODES_VISITED: usize = max_nodes_visited(MAX_PATTERN_SEGMENTS, MAX_PATTERN_STARS);

/// The cost of one pattern in the terms of the limits above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternCost {
    /// Segments, a final `#` included.
    pub segments: usize,
    /// `*` wildcards.
    pub stars: usize,
}

impl PatternCost {
    /// Counts segments and `*` of `pattern` (any text: no validation, no allocation).
    pub fn of(pattern: &str) -> Self {
        let mut cost = PatternCost {
            segments: 0,
            stars: 0,
        };
        for seg in pattern.split('.') {
            cost.segments += 1;
            cost.stars += usize::from(seg == "*");
        }
        cost
    }
}

/// Checks `pattern` against [`MAX_PATTERN_SEGMENTS`] and [`MAX_PATTERN_STARS`] and returns
/// its cost. Validity is [`validate_pattern`](super::validate_pattern)'s job; this only
/// counts.
pub fn check_pattern_cost(pattern: &str) -> Result<PatternCost, PatternTooComplex> {
    let cost = PatternCost::of(pattern);
    if cost.segments > MAX_PATTERN_SEGMENTS {
        return Err(PatternTooComplex::Segments {
            segments: cost.segments,
        });
    }
    if cost.stars > MAX_PATTERN_STARS {
        return Err(PatternTooComplex::Stars { stars: cost.stars });
    }
    Ok(cost)
}

/// A valid pattern that costs more than the relay allows (the edge answers
/// `ERR:pattern_too_complex:SUB:<tenant>:<pattern>:<why>`).
///
/// Every variant blames the subscriber's request; none is a capacity of the relay.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternTooComplex {
    /// More than [`MAX_PATTERN_SEGMENTS`] segments.
    Segments {
        /// Segments of the pattern.
        segments: usize,
    },
    /// More than [`MAX_PATTERN_STARS`] `*` wildcards.
    Stars {
        /// `*` in the pattern.
        stars: usize,
    },
    /// The connection's subscriptions would hold more than [`MAX_STARS_PER_CONNECTION`]
    /// `*` wildcards together.
    ConnectionStars {
        /// `*` the connection's subscriptions hold already.
        held: usize,
        /// `*` in the refused pattern.
        stars: usize,
    },
}

impl fmt::Display for PatternTooComplex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Segments { segments } => write!(
                f,
                "the pattern has {segments} segments, the maximum is {MAX_PATTERN_SEGMENTS} (end it with '#' to match deeper channels)"
            ),
            Self::Stars { stars } => write!(
                f,
                "the pattern has {stars} '*' wildcards, the maximum is {MAX_PATTERN_STARS} (use '#' at the end, or several subscriptions)"
            ),
            Self::ConnectionStars { held, stars } => write!(
                f,
                "this connection's subscriptions hold {held} '*' wildcards and this pattern adds {stars}, the maximum per connection is {MAX_STARS_PER_CONNECTION} (unsubscribe some, or use '#')"
            ),
        }
    }
}

impl core::error::Error for PatternTooComplex {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_limits() {
        assert_eq!(
            PatternCost::of("a.*.b.*.#"),
            PatternCost {
                segments: 5,
                stars: 2
            }
        );
        assert_eq!(PatternCost::of("#").stars, 0);
        let deepest = ["x"; MAX_PATTERN_SEGMENTS].join(".");
        assert!(check_pattern_cost(&deepest).is_ok());
        assert_eq!(
            check_pattern_cost(&(deepest.clone() + ".#")),
            Err(PatternTooComplex::Segments {
                segments: MAX_PATTERN_SEGMENTS + 1
            })
        );
        assert!(check_pattern_cost("*.*.*.#").is_ok());
        assert_eq!(
            check_pattern_cost("*.*.*.*"),
            Err(PatternTooComplex::Stars { stars: 4 })
        );
    }

    #[test]
    fn the_bound_is_the_sum_of_binomials() {
        // Brute force: count the strings over {literal, *} of length 0..=16 with ≤ 3 stars.
        let mut brute = 0usize;
        for d in 0..=MAX_PATTERN_SEGMENTS {
            for mask in 0u32..(1 << d) {
                if mask.count_ones() as usize <= MAX_PATTERN_STARS {
                    brute += 1;
                }
            }
        }
        assert_eq!(MAX_NODES_VISITED, brute);
        assert_eq!(MAX_NODES_VISITED, 3213);
        assert_eq!(max_nodes_visited(0, 0), 1);
        assert_eq!(max_nodes_visited(2, 5), 7);
        assert_eq!(binomial(3, 5), 0);
    }

    #[test]
    fn errors_say_what_to_do() {
        let text = alloc_free_display(PatternTooComplex::ConnectionStars { held: 63, stars: 2 });
        assert!(text.contains("hold 63 '*'"), "{text}");
        assert!(!text.contains(':'), "no ':' in an ERR reason text: {text}");
        for e in [
            PatternTooComplex::Segments { segments: 17 },
            PatternTooComplex::Stars { stars: 4 },
        ] {
            let text = alloc_free_display(e);
            assert!(text.contains("maximum"), "{text}");
            assert!(!text.contains(':'), "{text}");
        }
    }

    fn alloc_free_display(e: PatternTooComplex) -> heapless::String<256> {
        use core::fmt::Write;
        let mut s = heapless::String::new();
        assert!(write!(s, "{e}").is_ok());
        s
    }
}
