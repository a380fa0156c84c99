//! Property tests of `fastpubsub_core::pattern` against brute force.
//!
//! The index properties need the `alloc` feature:
//! `cargo test -p fastpubsub-core --features std --test pattern_props`.

use fastpubsub_core::pattern::{
    MAX_NAME_LEN, contains, matches, validate_channel, validate_pattern,
};
use proptest::prelude::*;

/// Literal segments used by the generated patterns. `z` is never one of them: in the
/// brute-force channels it stands for "any segment that no pattern names".
const LITERALS: &[&str] = &["a", "b"];
const FRESH: &str = "z";
/// Generated patterns have at most this many segments, `#` included.
const MAX_PATTERN_SEGMENTS: usize = 4;
/// Brute-force channels have 1..=MAX_CHANNEL_SEGMENTS segments. Why this is enough for
/// `contains` to be exact: if `inner ⊄ outer`, a counterexample channel exists of length
/// `k_in` (the number of `inner` segments before any `#`) or `k_in + 1` (when `inner` ends
/// in `#` and `outer` needs exactly `k_in` segments), or 1 (when `inner` is `#`): fill
/// `inner`'s literals as themselves and its `*`/`#` positions with the fresh segment,
/// which no `outer` literal equals. `k_in + 1 ≤ MAX_PATTERN_SEGMENTS`, so
/// `MAX_PATTERN_SEGMENTS + 1` leaves a margin of one segment.
const MAX_CHANNEL_SEGMENTS: usize = MAX_PATTERN_SEGMENTS + 1;

/// A valid pattern over {a, b, *} with an optional final `#`.
fn pattern() -> impl Strategy<Value = String> {
    let token = prop_oneof![Just("a"), Just("b"), Just("*")];
    (
        prop::collection::vec(token, 0..=MAX_PATTERN_SEGMENTS),
        any::<bool>(),
    )
        .prop_filter_map("pattern needs a segment", |(tokens, hash)| {
            let mut segs: Vec<&str> = tokens;
            if hash || segs.is_empty() {
                segs.push("#");
            }
            (segs.len() <= MAX_PATTERN_SEGMENTS).then(|| segs.join("."))
        })
}

/// Every channel of 1..=max segments over the literals plus the fresh segment.
fn all_channels(max: usize) -> Vec<String> {
    let alphabet: Vec<&str> = LITERALS.iter().copied().chain([FRESH]).collect();
    let mut out = Vec::new();
    let mut layer: Vec<String> = alphabet.iter().map(|s| s.to_string()).collect();
    for _ in 0..max {
        out.extend(layer.iter().cloned());
        layer = layer
            .iter()
            .flat_map(|c| alphabet.iter().map(move |s| format!("{c}.{s}")))
            .collect();
    }
    out
}

/// `inner ⊆ outer` by brute force over `channels`.
fn contains_brute(outer: &str, inner: &str, channels: &[String]) -> bool {
    channels
        .iter()
        .all(|c| !matches(inner, c) || matches(outer, c))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn generated_patterns_are_valid(p in pattern()) {
        prop_assert_eq!(validate_pattern(&p), Ok(()));
    }

    #[test]
    fn contains_agrees_with_brute_force(outer in pattern(), inner in pattern()) {
        let channels = all_channels(MAX_CHANNEL_SEGMENTS);
        prop_assert_eq!(
            contains(&outer, &inner),
            contains_brute(&outer, &inner, &channels),
            "{} ⊇ {}", outer, inner
        );
    }

    #[test]
    fn contains_is_reflexive_and_transitive(a in pattern(), b in pattern(), c in pattern()) {
        prop_assert!(contains(&a, &a));
        if contains(&a, &b) && contains(&b, &c) {
            prop_assert!(contains(&a, &c), "{} ⊇ {} ⊇ {}", a, b, c);
        }
    }

    #[test]
    fn a_concrete_inner_is_contained_iff_matched(
        outer in pattern(),
        segs in prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("z")], 1..6),
    ) {
        let channel = segs.join(".");
        prop_assert_eq!(contains(&outer, &channel), matches(&outer, &channel));
    }

    /// Any Unicode text: no panic anywhere, and the validators stay consistent.
    #[test]
    fn arbitrary_text_never_panics(a in any::<String>(), b in any::<String>()) {
        let _ = validate_channel(&a);
        let _ = matches(&a, &b);
        let _ = contains(&a, &b);
        if validate_pattern(&a).is_ok() {
            prop_assert!(contains(&a, &a));
        }
    }

    /// Arbitrary text never panics, and the validators agree with each other.
    #[test]
    fn validators_never_panic_and_agree(s in "[ab.*#\\t \u{e9}\u{7f}]{0,12}") {
        let channel_ok = validate_channel(&s).is_ok();
        let pattern_ok = validate_pattern(&s).is_ok();
        if channel_ok {
            // A valid channel is a valid pattern matching exactly itself.
            prop_assert!(pattern_ok);
            prop_assert!(matches(&s, &s));
            prop_assert!(contains(&s, &s));
        }
        if pattern_ok {
            prop_assert!(contains("#", &s));
            prop_assert!(s.len() <= MAX_NAME_LEN);
            prop_assert!(!s.split('.').any(|seg| seg.is_empty()));
        } else {
            prop_assert!(!contains(&s, "a"));
            prop_assert!(!contains("#", &s));
        }
    }
}

#[cfg(feature = "alloc")]
mod index {
    use super::*;
    use fastpubsub_core::pattern::{SubIndex, check_pattern_cost};
    use std::collections::BTreeSet;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, u8),
        Remove(String, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (pattern(), 0..3u8).prop_map(|(p, v)| Op::Insert(p, v)),
            2 => (pattern(), 0..3u8).prop_map(|(p, v)| Op::Remove(p, v)),
        ]
    }

    /// The trie nodes a set of patterns needs: one per distinct prefix of segments,
    /// a final `#` excluded (it lives in its parent node).
    fn prefixes(patterns: impl Iterator<Item = String>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for p in patterns {
            let segs: Vec<&str> = p.split('.').collect();
            let fixed = if segs.last() == Some(&"#") {
                segs.len() - 1
            } else {
                segs.len()
            };
            for n in 1..=fixed {
                out.insert(segs[..n].join("."));
            }
        }
        out
    }

    fn sorted_matches(index: &SubIndex<u8>, channel: &str) -> Vec<(String, u8)> {
        let mut out = Vec::new();
        index.for_each_match(channel, |p, v| out.push((p.to_string(), v)));
        out.sort();
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// The index returns exactly (each once) what a scan of all entries with `matches`
        /// returns, for every short channel, through inserts, removes and a capacity.
        #[test]
        fn index_agrees_with_brute_force(
            ops in prop::collection::vec(op(), 0..80),
            max_entries in 0..40usize,
            max_nodes in 0..60usize,
        ) {
            let mut index = SubIndex::with_limits(max_entries, max_nodes);
            let mut model: BTreeSet<(String, u8)> = BTreeSet::new();
            for op in &ops {
                match op {
                    Op::Insert(p, v) => {
                        let key = (p.clone(), *v);
                        let nodes_now = prefixes(model.iter().map(|(p, _)| p.clone())).len();
                        let nodes_after = prefixes(
                            model.iter().map(|(p, _)| p.clone()).chain([p.clone()]),
                        )
                        .len();
                        let expected = if model.contains(&key) || check_pattern_cost(p).is_err() {
                            // Known, or over the cost limits (`*.*.*.*`): nothing stored.
                            Ok(false)
                        } else if model.len() >= max_entries {
                            Err((max_entries, false))
                        } else if nodes_after > max_nodes {
                            Err((max_nodes, true))
                        } else {
                            model.insert(key);
                            Ok(true)
                        };
                        let got = index.insert(p, *v).map_err(|e| (e.limit(), e.is_node_limit()));
                        prop_assert_eq!(got, expected);
                        prop_assert!(index.node_count() <= max_nodes.max(nodes_now));
                    }
                    Op::Remove(p, v) => {
                        prop_assert_eq!(index.remove(p, *v), model.remove(&(p.clone(), *v)));
                    }
                }
                prop_assert_eq!(index.len(), model.len());
                // Exactly the nodes the live patterns need: removal prunes the rest.
                prop_assert_eq!(
                    index.node_count(),
                    prefixes(model.iter().map(|(p, _)| p.clone())).len()
                );
            }
            for channel in all_channels(MAX_CHANNEL_SEGMENTS) {
                let expected: Vec<(String, u8)> =
                    model.iter().filter(|(p, _)| matches(p, &channel)).cloned().collect();
                prop_assert_eq!(index.has_match(&channel), !expected.is_empty());
                prop_assert_eq!(sorted_matches(&index, &channel), expected, "channel {}", channel);
            }
            // Removing what is left frees every node.
            for (p, v) in &model {
                prop_assert!(index.remove(p, *v));
            }
            prop_assert!(index.is_empty());
            prop_assert_eq!(index.node_count(), 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// The rustdoc promises agreement with `matches` for any channel text, not only
        /// valid channels (empty segments, `*` or `#` segments, other characters).
        #[test]
        fn index_agrees_with_matches_on_unvalidated_channels(
            patterns in prop::collection::vec(pattern(), 0..30),
            channels in prop::collection::vec("[ab.*# ]{0,9}", 1..40),
        ) {
            let mut index = SubIndex::new(100);
            let mut model = BTreeSet::new();
            for p in &patterns {
                let fresh = check_pattern_cost(p).is_ok() && model.insert(p.clone());
                prop_assert_eq!(index.insert(p, 0u8), Ok(fresh));
            }
            for channel in &channels {
                let expected: Vec<(String, u8)> = model
                    .iter()
                    .filter(|p| matches(p, channel))
                    .map(|p| (p.clone(), 0))
                    .collect();
                prop_assert_eq!(sorted_matches(&index, channel), expected, "channel {:?}", channel);
            }
        }
    }

    /// 60 sibling names, short (stored inline) and long (stored on the heap), so that a
    /// node switches between its small and large children lists.
    fn sibling(i: usize) -> String {
        let len = if i.is_multiple_of(3) {
            23 + i % 9
        } else {
            1 + i % 6
        };
        let c = char::from(b'a' + (i % 26) as u8);
        format!("{}{}", c.to_string().repeat(len), i)
    }

    fn wide_pattern() -> impl Strategy<Value = String> {
        let first = prop_oneof![9 => (0..60usize).prop_map(sibling), 1 => Just("*".to_string())];
        let second = prop_oneof![Just(""), Just(".x"), Just(".*"), Just(".#")];
        (first, second).prop_map(|(a, b)| format!("{a}{b}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn index_with_many_siblings_agrees_with_brute_force(
            ops in prop::collection::vec((any::<bool>(), wide_pattern(), 0..2u8), 0..300),
        ) {
            let mut index = SubIndex::new(1000);
            let mut model: BTreeSet<(String, u8)> = BTreeSet::new();
            for (insert, p, v) in &ops {
                if *insert {
                    let fresh = model.insert((p.clone(), *v));
                    prop_assert_eq!(index.insert(p, *v), Ok(fresh));
                } else {
                    let had = model.remove(&(p.clone(), *v));
                    prop_assert_eq!(index.remove(p, *v), had);
                }
            }
            for i in 0..60 {
                for tail in ["", ".x", ".y", ".x.y"] {
                    let channel = format!("{}{tail}", sibling(i));
                    let expected: Vec<(String, u8)> =
                        model.iter().filter(|(p, _)| matches(p, &channel)).cloned().collect();
                    prop_assert_eq!(sorted_matches(&index, &channel), expected, "channel {}", channel);
                }
            }
            prop_assert_eq!(
                index.node_count(),
                prefixes(model.iter().map(|(p, _)| p.clone())).len()
            );
        }
    }
}

/// The work bound of the index (`MAX_NODES_VISITED`), checked against brute force: a
/// lookup visits exactly the root plus every distinct stored prefix (a final `#` not
/// counted) that is compatible with the channel's segments, which is never more than the
/// bound, for long patterns full of `*` and channels of any length.
#[cfg(feature = "alloc")]
mod work {
    use super::*;
    use fastpubsub_core::pattern::{
        MAX_NODES_VISITED, MAX_PATTERN_SEGMENTS as LIMIT_SEGMENTS, MAX_PATTERN_STARS, SubIndex,
        check_pattern_cost,
    };
    use std::collections::BTreeSet;

    /// Up to 16 segments over {a, b, *} (about one in three a `*`), optional final `#`.
    fn deep_pattern() -> impl Strategy<Value = String> {
        let token = prop_oneof![2 => Just("a"), 1 => Just("b"), 2 => Just("*")];
        (
            prop::collection::vec(token, 1..=LIMIT_SEGMENTS),
            any::<bool>(),
        )
            .prop_map(|(mut segs, hash)| {
                if hash && let Some(last) = segs.last_mut() {
                    *last = "#";
                }
                segs.join(".")
            })
    }

    fn compatible(prefix: &[&str], channel: &[&str]) -> bool {
        prefix.len() <= channel.len()
            && prefix.iter().zip(channel).all(|(p, c)| *p == "*" || p == c)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn nodes_visited_is_the_compatible_prefixes_and_within_the_bound(
            patterns in prop::collection::vec(deep_pattern(), 1..400),
            channels in prop::collection::vec(
                prop::collection::vec(prop_oneof![3 => Just("a"), 1 => Just("b")], 1..24),
                1..12,
            ),
        ) {
            let mut index = SubIndex::new(1000);
            let mut stored = BTreeSet::new();
            for p in &patterns {
                let cost_ok = check_pattern_cost(p).is_ok();
                let fresh = cost_ok && stored.insert(p.clone());
                prop_assert_eq!(index.insert(p, 0u8), Ok(fresh), "{}", p);
            }
            // Trie nodes: distinct prefixes of the stored patterns, a final `#` excluded.
            let mut nodes: BTreeSet<Vec<&str>> = BTreeSet::new();
            for p in &stored {
                let segs: Vec<&str> = p.split('.').collect();
                let fixed = segs.len() - usize::from(segs.last() == Some(&"#"));
                prop_assert!(segs.iter().filter(|s| **s == "*").count() <= MAX_PATTERN_STARS);
                for n in 1..=fixed {
                    nodes.insert(segs[..n].to_vec());
                }
            }
            for segs in &channels {
                let channel = segs.join(".");
                let work = index.for_each_match(&channel, |_, _| {});
                let expected = 1 + nodes.iter().filter(|n| compatible(n, segs)).count();
                prop_assert_eq!(work.nodes_visited, expected, "channel {}", channel);
                prop_assert!(work.nodes_visited <= MAX_NODES_VISITED);
                let matching = stored.iter().filter(|p| matches(p, &channel)).count();
                prop_assert_eq!(work.matches, matching);
            }
        }
    }
}
