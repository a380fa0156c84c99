//! [`SubIndex`]: which subscriptions match a channel, without scanning them all.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::ops::ControlFlow;
use core::str::Split;

use super::validate::{MAX_NAME_LEN, PatternError, validate_pattern};

/// A literal-children list switches from a sorted `Vec` to a `BTreeMap` above this many
/// entries (a sorted `Vec` is smallest, but inserting into a long one moves every later
/// entry), and back at or below [`SMALL_MIN`]. The gap keeps a node from flapping.
const SMALL_MAX: usize = 32;
const SMALL_MIN: usize = 16;

/// The index is full: it already holds its maximum number of (pattern, value) entries.
///
/// A capacity error, not the peer's fault and not misuse: the caller refuses the
/// subscription (and counts it) or raises the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFull {
    /// The capacity that was reached.
    pub max_entries: usize,
}

impl fmt::Display for IndexFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subscription index is full ({} entries)",
            self.max_entries
        )
    }
}

impl core::error::Error for IndexFull {}

/// Why [`SubIndex::try_insert`] stored nothing.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The pattern is not valid (the peer's fault).
    Invalid(PatternError),
    /// The index is at capacity.
    Full(IndexFull),
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(e) => write!(f, "invalid pattern: {e}"),
            Self::Full(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl core::error::Error for InsertError {}

/// A subscription index: a set of (pattern, value) entries, answering "which entries
/// match this channel".
///
/// It is a trie over segments: each node keeps its literal children (keyed by segment),
/// one child for `*`, the values whose pattern ends at the node, and the values whose
/// pattern ends with `#` at the node. A lookup follows only the trie paths compatible with
/// the channel (the literal child equal to the next segment and the `*` child), so its
/// cost depends on the channel and on the matches, not on the number of entries; it does
/// not allocate, and its recursion depth is bounded by the trie depth (at most
/// [`MAX_SEGMENTS`](super::MAX_SEGMENTS) levels, since only valid patterns are stored).
///
/// Removing the last value of a node frees the node and every ancestor left empty, so
/// memory follows the live entries, not the history. The number of entries is bounded
/// by `max_entries`; inserting beyond it is refused with [`IndexFull`].
///
/// Values of one pattern are kept in a plain list: insert and remove scan the values of
/// that one pattern to find duplicates (`V` is only `Eq`).
pub struct SubIndex<V> {
    root: Node<V>,
    len: usize,
    max_entries: usize,
    nodes: usize,
}

struct Node<V> {
    children: Children<V>,
    star: Option<Box<Node<V>>>,
    /// Values whose pattern ends at this node.
    exact: Vec<V>,
    /// Values whose pattern ends with `#` right after this node.
    hash: Vec<V>,
}

enum Children<V> {
    /// Sorted by segment.
    Small(Vec<(Box<str>, Box<Node<V>>)>),
    Large(BTreeMap<Box<str>, Box<Node<V>>>),
}

impl<V> Node<V> {
    const fn new() -> Self {
        Node {
            children: Children::Small(Vec::new()),
            star: None,
            exact: Vec::new(),
            hash: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty()
            && self.hash.is_empty()
            && self.star.is_none()
            && self.children.is_empty()
    }
}

impl<V> Children<V> {
    fn is_empty(&self) -> bool {
        match self {
            Children::Small(v) => v.is_empty(),
            Children::Large(m) => m.is_empty(),
        }
    }

    fn get(&self, seg: &str) -> Option<&Node<V>> {
        match self {
            Children::Small(v) => v
                .binary_search_by(|(k, _)| (**k).cmp(seg))
                .ok()
                .and_then(|i| v.get(i))
                .map(|(_, n)| &**n),
            Children::Large(m) => m.get(seg).map(|n| &**n),
        }
    }

    fn get_mut(&mut self, seg: &str) -> Option<&mut Node<V>> {
        match self {
            Children::Small(v) => match v.binary_search_by(|(k, _)| (**k).cmp(seg)) {
                Ok(i) => v.get_mut(i).map(|(_, n)| &mut **n),
                Err(_) => None,
            },
            Children::Large(m) => m.get_mut(seg).map(|n| &mut **n),
        }
    }

    /// Returns the child for `seg`, creating it (and counting it in `nodes`) if absent.
    fn get_or_insert(&mut self, seg: &str, nodes: &mut usize) -> &mut Node<V> {
        if let Children::Small(v) = self
            && v.len() >= SMALL_MAX
            && v.binary_search_by(|(k, _)| (**k).cmp(seg)).is_err()
        {
            let map: BTreeMap<_, _> = core::mem::take(v).into_iter().collect();
            *self = Children::Large(map);
        }
        match self {
            Children::Small(v) => match v.binary_search_by(|(k, _)| (**k).cmp(seg)) {
                Ok(i) => match v.get_mut(i) {
                    Some((_, n)) => n,
                    // `binary_search` returned an index in bounds.
                    None => unreachable_child(),
                },
                Err(i) => {
                    *nodes += 1;
                    &mut v.insert_mut(i, (Box::from(seg), Box::new(Node::new()))).1
                }
            },
            Children::Large(m) => m.entry(Box::from(seg)).or_insert_with(|| {
                *nodes += 1;
                Box::new(Node::new())
            }),
        }
    }

    fn remove(&mut self, seg: &str) {
        match self {
            Children::Small(v) => {
                if let Ok(i) = v.binary_search_by(|(k, _)| (**k).cmp(seg)) {
                    v.remove(i);
                    if v.is_empty() {
                        // Give the buffer back: memory follows live entries.
                        *v = Vec::new();
                    }
                }
            }
            Children::Large(m) => {
                m.remove(seg);
                if m.len() <= SMALL_MIN {
                    let v: Vec<_> = core::mem::take(m).into_iter().collect();
                    *self = Children::Small(v);
                }
            }
        }
    }
}

#[cold]
fn unreachable_child() -> ! {
    // Only reachable if `binary_search` broke its contract.
    panic!("SubIndex: child vanished after insert")
}

impl<V: Copy + Eq> SubIndex<V> {
    /// Creates an empty index that holds at most `max_entries` (pattern, value) entries.
    /// Allocates nothing until the first insert.
    pub const fn new(max_entries: usize) -> Self {
        SubIndex {
            root: Node::new(),
            len: 0,
            max_entries,
            nodes: 0,
        }
    }

    /// Adds the entry (`pattern`, `value`).
    ///
    /// `Ok(true)`: stored. `Ok(false)`: nothing new stored — the entry was already there,
    /// or `pattern` is not valid (validate with
    /// [`validate_pattern`](super::validate_pattern) first, or use [`Self::try_insert`]
    /// to tell the two apart). `Err(IndexFull)`: the entry is new but the index holds
    /// `max_entries` already; nothing changed.
    pub fn insert(&mut self, pattern: &str, value: V) -> Result<bool, IndexFull> {
        match self.try_insert(pattern, value) {
            Ok(stored) => Ok(stored),
            Err(InsertError::Full(full)) => Err(full),
            Err(InsertError::Invalid(_)) => Ok(false),
        }
    }

    /// Like [`Self::insert`] but says why nothing was stored: `Ok(false)` only means the
    /// entry was already there.
    pub fn try_insert(&mut self, pattern: &str, value: V) -> Result<bool, InsertError> {
        validate_pattern(pattern).map_err(InsertError::Invalid)?;
        if self
            .values(pattern)
            .is_some_and(|vals| vals.contains(&value))
        {
            return Ok(false);
        }
        if self.len >= self.max_entries {
            return Err(InsertError::Full(IndexFull {
                max_entries: self.max_entries,
            }));
        }
        let mut node = &mut self.root;
        let mut segs = pattern.split('.').peekable();
        while let Some(seg) = segs.next() {
            node = match seg {
                "#" if segs.peek().is_none() => {
                    node.hash.push(value);
                    self.len += 1;
                    return Ok(true);
                }
                "*" => {
                    if node.star.is_none() {
                        self.nodes += 1;
                    }
                    node.star.get_or_insert_with(|| Box::new(Node::new()))
                }
                literal => node.children.get_or_insert(literal, &mut self.nodes),
            };
        }
        node.exact.push(value);
        self.len += 1;
        Ok(true)
    }

    /// The values stored for exactly `pattern`, if its node exists.
    fn values(&self, pattern: &str) -> Option<&[V]> {
        let mut node = &self.root;
        let mut segs = pattern.split('.').peekable();
        while let Some(seg) = segs.next() {
            node = match seg {
                "#" if segs.peek().is_none() => return Some(&node.hash),
                "*" => node.star.as_deref()?,
                literal => node.children.get(literal)?,
            };
        }
        Some(&node.exact)
    }

    /// Removes the entry (`pattern`, `value`); returns true when it was there. Nodes left
    /// empty are freed.
    pub fn remove(&mut self, pattern: &str, value: V) -> bool {
        let mut segs = pattern.split('.');
        let first = segs.next();
        let removed = remove_in(&mut self.root, first, segs, value, &mut self.nodes);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f(pattern, value)` once for each entry whose pattern matches `channel`;
    /// `pattern` is the text as inserted. The order is unspecified. Does not allocate.
    ///
    /// Agrees with [`matches`](super::matches) for any `channel`; callers pass channels
    /// that passed [`validate_channel`](super::validate_channel).
    pub fn for_each_match(&self, channel: &str, mut f: impl FnMut(&str, V)) {
        let mut path = Path::new();
        let _ = walk(&self.root, channel.split('.'), &mut path, &mut |p, v| {
            f(p, v);
            ControlFlow::Continue(())
        });
    }

    /// Returns true when at least one entry matches `channel`; stops at the first.
    pub fn has_match(&self, channel: &str) -> bool {
        any_match(&self.root, channel.split('.'))
    }

    /// Number of (pattern, value) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity given to [`Self::new`].
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Number of trie nodes besides the root (0 when empty): a view of memory use.
    pub fn node_count(&self) -> usize {
        self.nodes
    }
}

impl<V: Copy + Eq> fmt::Debug for SubIndex<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubIndex")
            .field("len", &self.len)
            .field("max_entries", &self.max_entries)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// Removes `value` under the pattern whose current segment is `seg` and whose remaining
/// segments are `rest`, below `node`; prunes children left empty. Returns true when
/// removed. Recursion depth is bounded by the trie depth.
fn remove_in<V: Copy + Eq>(
    node: &mut Node<V>,
    seg: Option<&str>,
    mut rest: Split<'_, char>,
    value: V,
    nodes: &mut usize,
) -> bool {
    let Some(seg) = seg else {
        return remove_value(&mut node.exact, value);
    };
    let next = rest.next();
    if seg == "#" && next.is_none() {
        return remove_value(&mut node.hash, value);
    }
    if seg == "*" {
        let Some(star) = node.star.as_deref_mut() else {
            return false;
        };
        let removed = remove_in(star, next, rest, value, nodes);
        if removed && star.is_empty() {
            node.star = None;
            *nodes -= 1;
        }
        return removed;
    }
    let Some(child) = node.children.get_mut(seg) else {
        return false;
    };
    let removed = remove_in(child, next, rest, value, nodes);
    if removed && child.is_empty() {
        node.children.remove(seg);
        *nodes -= 1;
    }
    removed
}

fn remove_value<V: Copy + Eq>(values: &mut Vec<V>, value: V) -> bool {
    match values.iter().position(|v| *v == value) {
        Some(i) => {
            values.swap_remove(i);
            if values.is_empty() {
                *values = Vec::new();
            } else if values.len() * 4 <= values.capacity() {
                values.shrink_to(values.len() * 2);
            }
            true
        }
        None => false,
    }
}

/// The pattern text of the trie path being walked; never longer than a valid pattern.
struct Path(heapless::String<MAX_NAME_LEN>);

impl Path {
    fn new() -> Self {
        Path(heapless::String::new())
    }

    /// Appends a segment; returns the length to truncate back to, or `None` if it does
    /// not fit (cannot happen for stored patterns, which are valid).
    fn push(&mut self, seg: &str) -> Option<usize> {
        let mark = self.0.len();
        if mark > 0 {
            self.0.push('.').ok()?;
        }
        if self.0.push_str(seg).is_err() {
            self.0.truncate(mark);
            return None;
        }
        Some(mark)
    }
}

fn walk<V: Copy>(
    node: &Node<V>,
    mut segs: Split<'_, char>,
    path: &mut Path,
    f: &mut impl FnMut(&str, V) -> ControlFlow<()>,
) -> ControlFlow<()> {
    if !node.hash.is_empty()
        && let Some(mark) = path.push("#")
    {
        for &v in &node.hash {
            f(path.0.as_str(), v)?;
        }
        path.0.truncate(mark);
    }
    let Some(seg) = segs.next() else {
        for &v in &node.exact {
            f(path.0.as_str(), v)?;
        }
        return ControlFlow::Continue(());
    };
    if let Some(child) = node.children.get(seg)
        && let Some(mark) = path.push(seg)
    {
        walk(child, segs.clone(), path, f)?;
        path.0.truncate(mark);
    }
    if let Some(star) = node.star.as_deref()
        && let Some(mark) = path.push("*")
    {
        walk(star, segs, path, f)?;
        path.0.truncate(mark);
    }
    ControlFlow::Continue(())
}

fn any_match<V>(node: &Node<V>, mut segs: Split<'_, char>) -> bool {
    if !node.hash.is_empty() {
        return true;
    }
    let Some(seg) = segs.next() else {
        return !node.exact.is_empty();
    };
    if let Some(child) = node.children.get(seg)
        && any_match(child, segs.clone())
    {
        return true;
    }
    node.star
        .as_deref()
        .is_some_and(|star| any_match(star, segs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec;

    fn matches_of(index: &SubIndex<u32>, channel: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        index.for_each_match(channel, |p, v| out.push((String::from(p), v)));
        out.sort();
        out
    }

    fn owned(items: &[(&str, u32)]) -> Vec<(String, u32)> {
        let mut v: Vec<_> = items.iter().map(|&(p, v)| (String::from(p), v)).collect();
        v.sort();
        v
    }

    #[test]
    fn finds_every_matching_pattern_with_its_text() {
        let mut index = SubIndex::new(100);
        for (p, v) in [
            ("public.#", 1),
            ("public.*", 2),
            ("public.chat.room1", 3),
            ("public.chat.*", 4),
            ("#", 5),
            ("*.chat.#", 6),
            ("private.#", 7),
            ("public", 8),
            ("public.#", 9),
        ] {
            assert_eq!(index.insert(p, v), Ok(true), "{p}");
        }
        assert_eq!(index.len(), 9);
        assert_eq!(
            matches_of(&index, "public.chat.room1"),
            owned(&[
                ("public.#", 1),
                ("public.#", 9),
                ("public.chat.room1", 3),
                ("public.chat.*", 4),
                ("#", 5),
                ("*.chat.#", 6)
            ])
        );
        assert_eq!(
            matches_of(&index, "public"),
            owned(&[("public.#", 1), ("public.#", 9), ("#", 5), ("public", 8)])
        );
        assert_eq!(
            matches_of(&index, "public.demo"),
            owned(&[("public.#", 1), ("public.#", 9), ("public.*", 2), ("#", 5)])
        );
        assert_eq!(matches_of(&index, "other.x"), owned(&[("#", 5)]));
        assert!(index.has_match("x"));
        assert!(index.remove("#", 5));
        assert!(!index.has_match("x"));
        assert!(index.has_match("a.chat"));
        assert!(!index.has_match("a.chatter"));
    }

    #[test]
    fn duplicates_and_invalid_patterns_store_nothing() {
        let mut index = SubIndex::new(10);
        assert_eq!(index.insert("a.*", 1u32), Ok(true));
        assert_eq!(index.insert("a.*", 1), Ok(false));
        assert_eq!(index.insert("a.*", 2), Ok(true));
        assert_eq!(index.insert("a.#.b", 1), Ok(false));
        assert_eq!(
            index.try_insert("a.#.b", 1),
            Err(InsertError::Invalid(PatternError::HashNotLast {
                segment: 2
            }))
        );
        assert_eq!(index.try_insert("a.*", 2), Ok(false));
        assert_eq!(index.len(), 2);
        assert!(!index.remove("a.*", 3));
        assert!(!index.remove("a.b", 1));
        assert!(!index.remove("a.#.b", 1));
        assert!(index.remove("a.*", 1));
        assert!(!index.remove("a.*", 1));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn capacity_is_enforced() {
        let mut index = SubIndex::new(3);
        assert_eq!(index.insert("a", 1u32), Ok(true));
        assert_eq!(index.insert("b.#", 1), Ok(true));
        assert_eq!(index.insert("c.*", 1), Ok(true));
        let nodes = index.node_count();
        assert_eq!(index.insert("d.e.f", 1), Err(IndexFull { max_entries: 3 }));
        assert_eq!(index.insert("a", 2), Err(IndexFull { max_entries: 3 }));
        // A refused insert leaves no trace.
        assert_eq!(index.node_count(), nodes);
        assert!(!index.has_match("d.e.f"));
        // An entry already there is still reported as such when full.
        assert_eq!(index.insert("a", 1), Ok(false));
        assert!(index.remove("a", 1));
        assert_eq!(index.insert("d.e.f", 1), Ok(true));
        assert_eq!(index.len(), 3);
        let mut text = String::new();
        use core::fmt::Write;
        assert!(write!(text, "{}", IndexFull { max_entries: 3 }).is_ok());
        assert_eq!(text, "subscription index is full (3 entries)");
        assert_eq!(
            SubIndex::<u32>::new(0).insert("a", 1),
            Err(IndexFull { max_entries: 0 })
        );
    }

    #[test]
    fn removing_everything_prunes_every_node() {
        let mut index = SubIndex::new(10_000);
        let mut patterns = Vec::new();
        for i in 0..300u32 {
            let mut p = String::new();
            use core::fmt::Write;
            let tail = match i % 4 {
                0 => "#",
                1 => "*",
                2 => "x",
                _ => "*.y",
            };
            assert!(write!(p, "t{}.room{}.{}", i % 3, i % 50, tail).is_ok());
            patterns.push(p);
        }
        // Enough siblings under one node to cross the Vec → BTreeMap threshold and back.
        for round in 0..3u32 {
            for (i, p) in patterns.iter().enumerate() {
                assert_eq!(index.insert(p, round * 1000 + i as u32), Ok(true));
            }
            assert!(index.node_count() > 0);
            assert_eq!(index.len(), patterns.len());
            for (i, p) in patterns.iter().enumerate().rev() {
                assert!(index.remove(p, round * 1000 + i as u32), "{p}");
            }
            assert_eq!(index.len(), 0);
            assert_eq!(index.node_count(), 0);
            assert!(index.root.is_empty());
            assert!(index.is_empty());
        }
    }

    #[test]
    fn many_siblings_switch_representation_and_still_match() {
        let mut index = SubIndex::new(1000);
        let names: Vec<String> = (0..100).map(|i| alloc::format!("room.r{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(index.insert(n, i as u32), Ok(true));
        }
        assert!(matches!(
            index.root.children.get("room").map(|n| &n.children),
            Some(Children::Large(_))
        ));
        for (i, n) in names.iter().enumerate() {
            assert_eq!(matches_of(&index, n), vec![(n.clone(), i as u32)]);
        }
        for (i, n) in names.iter().enumerate().skip(10) {
            assert!(index.remove(n, i as u32));
        }
        assert!(matches!(
            index.root.children.get("room").map(|n| &n.children),
            Some(Children::Small(_))
        ));
        for (i, n) in names.iter().enumerate() {
            let expected = if i < 10 {
                vec![(n.clone(), i as u32)]
            } else {
                vec![]
            };
            assert_eq!(matches_of(&index, n), expected);
        }
    }

    #[test]
    fn deepest_pattern_and_long_channels() {
        let deep: String = "a.".repeat(127) + "#";
        assert_eq!(deep.len(), MAX_NAME_LEN);
        let mut index = SubIndex::new(2);
        assert_eq!(index.insert(&deep, 1u32), Ok(true));
        let channel = "a.".repeat(1000) + "a";
        assert_eq!(matches_of(&index, &channel), vec![(deep.clone(), 1)]);
        assert!(index.has_match(&channel));
        assert!(!index.has_match("a.a"));
        assert!(index.remove(&deep, 1));
        assert_eq!(index.node_count(), 0);
    }
}
