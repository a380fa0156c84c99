//! [`SubIndex`]: which subscriptions match a channel, without scanning them all.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;
use core::ops::ControlFlow;
use core::str::Split;

use super::cost::{MAX_PATTERN_SEGMENTS, PatternTooComplex, check_pattern_cost};
use super::validate::{MAX_NAME_LEN, PatternError, validate_pattern};

/// A literal-children list switches from a sorted `Vec` to a `BTreeMap` above this many
/// entries (a sorted `Vec` is smallest, but inserting into a long one moves every later
/// entry), and back at or below [`SMALL_MIN`]. The gap keeps a node from flapping.
const SMALL_MAX: usize = 32;
const SMALL_MIN: usize = 16;

/// The index is full: storing the entry would pass its entry limit or its trie-node
/// limit (see [`SubIndex::with_limits`]). Nothing was changed.
///
/// A capacity error, not the peer's fault and not misuse: the caller refuses the
/// subscription (and counts it) or raises the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexFull {
    limit: usize,
    nodes: bool,
}

impl IndexFull {
    /// The limit that was reached: a number of entries, or of trie nodes when
    /// [`Self::is_node_limit`].
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// True when the trie-node limit was reached rather than the entry limit.
    pub fn is_node_limit(&self) -> bool {
        self.nodes
    }
}

impl fmt::Display for IndexFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes {
            write!(
                f,
                "subscription index is full ({} trie nodes: too many long, distinct patterns)",
                self.limit
            )
        } else {
            write!(f, "subscription index is full ({} entries)", self.limit)
        }
    }
}

impl core::error::Error for IndexFull {}

/// Why [`SubIndex::try_insert`] stored nothing.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The pattern is not valid (the peer's fault).
    Invalid(PatternError),
    /// The pattern is valid but over the cost limits (the peer's fault): see
    /// [`check_pattern_cost`].
    TooComplex(PatternTooComplex),
    /// The index is at capacity.
    Full(IndexFull),
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(e) => write!(f, "invalid pattern: {e}"),
            Self::TooComplex(e) => write!(f, "pattern too complex: {e}"),
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
/// the channel (the literal child equal to the next segment and the `*` child). Only
/// patterns within the cost limits are stored
/// ([`MAX_PATTERN_SEGMENTS`](super::MAX_PATTERN_SEGMENTS),
/// [`MAX_PATTERN_STARS`](super::MAX_PATTERN_STARS)), so a lookup visits at most
/// [`MAX_NODES_VISITED`](super::MAX_NODES_VISITED) nodes whatever was stored, plus its matches; it does not
/// allocate, and its recursion depth is at most `MAX_PATTERN_SEGMENTS`.
///
/// Removing the last value of a node frees the node and every ancestor left empty, so
/// memory follows the live entries, not the history. The number of entries is bounded
/// by `max_entries` and the number of trie nodes by `max_nodes`; an insert that would
/// pass either is refused with [`IndexFull`] and changes nothing.
///
/// Values of one pattern are kept in a plain list: insert and remove scan the values of
/// that one pattern to find duplicates (`V` is only `Eq`).
pub struct SubIndex<V> {
    root: Node<V>,
    len: usize,
    max_entries: usize,
    max_nodes: usize,
    nodes: usize,
}

/// Trie nodes allowed per entry by [`SubIndex::new`]: enough for every pattern of up to
/// 8 segments to share no prefix at all. Typical relay subscriptions use 1 to 2.
pub const DEFAULT_NODES_PER_ENTRY: usize = 8;

/// One trie node: 48 bytes for `V = u32` on 64-bit targets (see `sizes` test).
struct Node<V> {
    children: Children<V>,
    star: Option<Box<Node<V>>>,
    values: Values<V>,
}

/// The values whose pattern ends at a node ("exact") and those whose pattern ends with
/// `#` right after it ("hash"). Most nodes hold none or one, which need no heap block.
enum Values<V> {
    Empty,
    One { value: V, hash: bool },
    Many(Box<ValueList<V>>),
}

/// `values[..split]` are the exact values, `values[split..]` the `#` ones: one list
/// instead of two saves a `Vec` header.
struct ValueList<V> {
    values: Vec<V>,
    split: usize,
}

/// Literal children. Nodes live inline in their parent's list (no box per node).
enum Children<V> {
    /// Sorted by segment, capacity kept exact: most nodes have 0 or 1 child.
    Small(Vec<Child<V>>),
    /// Boxed so that this enum is no larger than the `Vec` (24 bytes, not 32).
    #[expect(
        clippy::box_collection,
        reason = "an unboxed BTreeMap would make every node 8 bytes larger"
    )]
    Large(Box<BTreeMap<Seg, Node<V>>>),
}

struct Child<V> {
    seg: Seg,
    node: Node<V>,
}

/// A literal segment; short ones (the common case) live inline without a heap block.
/// 24 bytes.
enum Seg {
    Inline(heapless::String<INLINE_SEG, u8>),
    Heap(Box<str>),
}

/// Longest segment stored inline in a [`Seg`].
const INLINE_SEG: usize = 22;

impl Seg {
    fn new(seg: &str) -> Self {
        match heapless::String::try_from(seg) {
            Ok(s) => Seg::Inline(s),
            Err(_) => Seg::Heap(Box::from(seg)),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Seg::Inline(s) => s.as_str(),
            Seg::Heap(s) => s,
        }
    }
}

// Equality and order are exactly `str`'s (whatever the variant), as `Borrow<str>`
// requires, so a `BTreeMap<Seg, _>` can be searched by `&str`. A derived `Ord` would
// order by variant first and break that.
impl core::borrow::Borrow<str> for Seg {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Seg {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Seg {}

impl PartialOrd for Seg {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Seg {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl<V> Node<V> {
    const fn new() -> Self {
        Node {
            children: Children::Small(Vec::new()),
            star: None,
            values: Values::Empty,
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self.values, Values::Empty) && self.star.is_none() && self.children.is_empty()
    }

    fn exact(&self) -> &[V] {
        match &self.values {
            Values::One { value, hash: false } => core::slice::from_ref(value),
            Values::Many(l) => l.values.get(..l.split).unwrap_or_default(),
            Values::Empty | Values::One { hash: true, .. } => &[],
        }
    }

    fn hash(&self) -> &[V] {
        match &self.values {
            Values::One { value, hash: true } => core::slice::from_ref(value),
            Values::Many(l) => l.values.get(l.split..).unwrap_or_default(),
            Values::Empty | Values::One { hash: false, .. } => &[],
        }
    }
}

impl<V: Copy + Eq> Node<V> {
    /// Adds a value (exact or `#`); the caller has checked it is not there yet.
    fn push(&mut self, value: V, hash: bool) {
        let list = match &mut self.values {
            Values::Empty => {
                self.values = Values::One { value, hash };
                return;
            }
            Values::One {
                value: old,
                hash: old_hash,
            } => {
                let (old, old_hash) = (*old, *old_hash);
                let mut values = Vec::with_capacity(2);
                values.push(old);
                self.values = Values::Many(Box::new(ValueList {
                    values,
                    split: usize::from(!old_hash),
                }));
                match &mut self.values {
                    Values::Many(l) => l,
                    // Just set above.
                    Values::Empty | Values::One { .. } => return,
                }
            }
            Values::Many(l) => l,
        };
        grow(&mut list.values);
        list.values.push(value);
        if !hash {
            let last = list.values.len() - 1;
            // Move the first `#` value (if any) to the end to make room in the exact part.
            list.values.swap(list.split, last);
            list.split += 1;
        }
    }

    /// Removes a value (exact or `#`); returns true when it was there.
    fn remove(&mut self, value: V, hash: bool) -> bool {
        let list = match &mut self.values {
            Values::Empty => return false,
            Values::One { value: v, hash: h } => {
                if *v != value || *h != hash {
                    return false;
                }
                self.values = Values::Empty;
                return true;
            }
            Values::Many(l) => l,
        };
        let last = list.values.len() - 1;
        if hash {
            let hashes = list.values.get(list.split..).unwrap_or_default();
            let Some(i) = hashes.iter().position(|v| *v == value) else {
                return false;
            };
            list.values.swap_remove(list.split + i);
        } else {
            let exacts = list.values.get(..list.split).unwrap_or_default();
            let Some(i) = exacts.iter().position(|v| *v == value) else {
                return false;
            };
            list.split -= 1;
            // Move it to the end of the exact part, then swap that slot with the very end.
            list.values.swap(i, list.split);
            list.values.swap(list.split, last);
            list.values.pop();
        }
        match list.values.as_slice() {
            [] => self.values = Values::Empty,
            [only] => {
                self.values = Values::One {
                    value: *only,
                    hash: list.split == 0,
                }
            }
            _ => shrink(&mut list.values),
        }
        true
    }
}

/// Short lists grow one slot at a time (most patterns have a few subscribers); long ones
/// grow geometrically so a popular pattern stays amortised O(1) per insert.
fn grow<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() && v.len() < 8 {
        v.reserve_exact(1);
    }
}

/// Gives memory back as a list empties, so memory follows live entries.
fn shrink<T>(v: &mut Vec<T>) {
    if v.len() * 4 <= v.capacity() {
        v.shrink_to(v.len() * 2);
    }
}

impl<V> Children<V> {
    fn is_empty(&self) -> bool {
        match self {
            Children::Small(v) => v.is_empty(),
            Children::Large(m) => m.is_empty(),
        }
    }

    fn search(v: &[Child<V>], seg: &str) -> Result<usize, usize> {
        v.binary_search_by(|c| c.seg.as_str().cmp(seg))
    }

    fn get(&self, seg: &str) -> Option<&Node<V>> {
        match self {
            Children::Small(v) => Self::search(v, seg)
                .ok()
                .and_then(|i| v.get(i))
                .map(|c| &c.node),
            Children::Large(m) => m.get(seg),
        }
    }

    /// The child for `seg` with its stored segment (borrowed from the trie, so a walk can
    /// keep it as part of its path).
    fn get_entry(&self, seg: &str) -> Option<(&str, &Node<V>)> {
        match self {
            Children::Small(v) => Self::search(v, seg)
                .ok()
                .and_then(|i| v.get(i))
                .map(|c| (c.seg.as_str(), &c.node)),
            Children::Large(m) => m.get_key_value(seg).map(|(k, n)| (k.as_str(), n)),
        }
    }

    fn get_mut(&mut self, seg: &str) -> Option<&mut Node<V>> {
        match self {
            Children::Small(v) => match Self::search(v, seg) {
                Ok(i) => v.get_mut(i).map(|c| &mut c.node),
                Err(_) => None,
            },
            Children::Large(m) => m.get_mut(seg),
        }
    }

    /// Returns the child for `seg`, creating it (and counting it in `nodes`) if absent.
    fn get_or_insert(&mut self, seg: &str, nodes: &mut usize) -> &mut Node<V> {
        if let Children::Small(v) = self
            && v.len() >= SMALL_MAX
            && Self::search(v, seg).is_err()
        {
            let map: BTreeMap<_, _> = core::mem::take(v)
                .into_iter()
                .map(|c| (c.seg, c.node))
                .collect();
            *self = Children::Large(Box::new(map));
        }
        match self {
            Children::Small(v) => match Self::search(v, seg) {
                Ok(i) => match v.get_mut(i) {
                    Some(c) => &mut c.node,
                    // `binary_search` returned an index in bounds.
                    None => unreachable_child(),
                },
                Err(i) => {
                    *nodes += 1;
                    v.reserve_exact(1);
                    let child = Child {
                        seg: Seg::new(seg),
                        node: Node::new(),
                    };
                    &mut v.insert_mut(i, child).node
                }
            },
            Children::Large(m) => {
                if !m.contains_key(seg) {
                    *nodes += 1;
                }
                m.entry(Seg::new(seg)).or_insert_with(Node::new)
            }
        }
    }

    fn remove(&mut self, seg: &str) {
        match self {
            Children::Small(v) => {
                if let Ok(i) = Self::search(v, seg) {
                    v.remove(i);
                    v.shrink_to_fit();
                }
            }
            Children::Large(m) => {
                m.remove(seg);
                if m.len() <= SMALL_MIN {
                    let v: Vec<_> = core::mem::take(&mut **m)
                        .into_iter()
                        .map(|(seg, node)| Child { seg, node })
                        .collect();
                    *self = Children::Small(v);
                }
            }
        }
    }
}

#[cold]
fn unreachable_child() -> ! {
    // Only reachable if `binary_search` broke its contract.
    panic!("SubIndex: binary_search returned an index out of bounds")
}

impl<V: Copy + Eq> SubIndex<V> {
    /// Creates an empty index that holds at most `max_entries` (pattern, value) entries
    /// and at most [`DEFAULT_NODES_PER_ENTRY`] × `max_entries` trie nodes. Allocates
    /// nothing until the first insert.
    pub const fn new(max_entries: usize) -> Self {
        Self::with_limits(
            max_entries,
            max_entries.saturating_mul(DEFAULT_NODES_PER_ENTRY),
        )
    }

    /// Creates an empty index with explicit limits: at most `max_entries` (pattern, value)
    /// entries and at most `max_nodes` trie nodes (the root not counted). The node limit
    /// bounds memory even when every pattern is long and distinct (a 255-byte pattern can
    /// need up to 128 nodes); each node costs about 72 bytes plus its segment's bytes
    /// beyond 22.
    pub const fn with_limits(max_entries: usize, max_nodes: usize) -> Self {
        SubIndex {
            root: Node::new(),
            len: 0,
            max_entries,
            max_nodes,
            nodes: 0,
        }
    }

    /// Adds the entry (`pattern`, `value`).
    ///
    /// `Ok(true)`: stored. `Ok(false)`: nothing new stored — the entry was already there,
    /// or `pattern` is not valid or over the cost limits (check with
    /// [`validate_pattern`](super::validate_pattern) and
    /// [`check_pattern_cost`] first, or use [`Self::try_insert`] to tell these apart). `Err(IndexFull)`: the entry is new but the index holds
    /// `max_entries` already, or storing it would pass the node limit; nothing changed.
    pub fn insert(&mut self, pattern: &str, value: V) -> Result<bool, IndexFull> {
        match self.try_insert(pattern, value) {
            Ok(stored) => Ok(stored),
            Err(InsertError::Full(full)) => Err(full),
            Err(InsertError::Invalid(_) | InsertError::TooComplex(_)) => Ok(false),
        }
    }

    /// Like [`Self::insert`] but says why nothing was stored: `Ok(false)` only means the
    /// entry was already there.
    pub fn try_insert(&mut self, pattern: &str, value: V) -> Result<bool, InsertError> {
        validate_pattern(pattern).map_err(InsertError::Invalid)?;
        check_pattern_cost(pattern).map_err(InsertError::TooComplex)?;
        let new_nodes = match self.locate(pattern) {
            Ok(values) if values.contains(&value) => return Ok(false),
            Ok(_) => 0,
            Err(missing) => missing,
        };
        if self.len >= self.max_entries {
            return Err(InsertError::Full(IndexFull {
                limit: self.max_entries,
                nodes: false,
            }));
        }
        if new_nodes > self.max_nodes.saturating_sub(self.nodes) {
            return Err(InsertError::Full(IndexFull {
                limit: self.max_nodes,
                nodes: true,
            }));
        }
        let mut node = &mut self.root;
        let mut segs = pattern.split('.').peekable();
        while let Some(seg) = segs.next() {
            node = match seg {
                "#" if segs.peek().is_none() => {
                    node.push(value, true);
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
        node.push(value, false);
        self.len += 1;
        Ok(true)
    }

    /// The values stored for exactly `pattern` if its node exists, otherwise how many
    /// nodes inserting it would create.
    fn locate(&self, pattern: &str) -> Result<&[V], usize> {
        let mut node = &self.root;
        let mut segs = pattern.split('.').peekable();
        while let Some(seg) = segs.next() {
            let next = match seg {
                "#" if segs.peek().is_none() => return Ok(node.hash()),
                "*" => node.star.as_deref(),
                literal => node.children.get(literal),
            };
            match next {
                Some(next) => node = next,
                // This segment and every later one but a final `#` need a node.
                None => return Err(1 + segs.filter(|s| *s != "#").count()),
            }
        }
        Ok(node.exact())
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
    /// Returns the work done: trie nodes visited (at most [`MAX_NODES_VISITED`](super::MAX_NODES_VISITED)) and
    /// matches reported.
    ///
    /// Agrees with [`matches()`](super::matches()) for any `channel`; callers pass channels
    /// that passed [`validate_channel`](super::validate_channel).
    pub fn for_each_match(&self, channel: &str, mut f: impl FnMut(&str, V)) -> MatchWork {
        let mut path = Path::new();
        let mut nodes_visited = 0;
        let mut matches = 0;
        let _ = walk(
            &self.root,
            0,
            &mut Channel::new(channel),
            &mut path,
            &mut nodes_visited,
            &mut |p, v| {
                matches += 1;
                f(p, v);
                ControlFlow::Continue(())
            },
        );
        MatchWork {
            nodes_visited,
            matches,
        }
    }

    /// Returns true when at least one entry matches `channel`; stops at the first. Visits
    /// no more nodes than [`Self::for_each_match`] (at most [`MAX_NODES_VISITED`](super::MAX_NODES_VISITED)).
    pub fn has_match(&self, channel: &str) -> bool {
        any_match(&self.root, 0, &mut Channel::new(channel), &mut 0)
    }

    /// Number of (pattern, value) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry limit given to [`Self::new`] or [`Self::with_limits`].
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The trie-node limit: given to [`Self::with_limits`], or
    /// [`DEFAULT_NODES_PER_ENTRY`] × `max_entries` by [`Self::new`].
    pub fn max_nodes(&self) -> usize {
        self.max_nodes
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
            .field("max_nodes", &self.max_nodes)
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
        return node.remove(value, false);
    };
    let next = rest.next();
    if seg == "#" && next.is_none() {
        return node.remove(value, true);
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

/// The work of one [`SubIndex::for_each_match`]: what the lookup cost, to check it
/// against [`MAX_NODES_VISITED`](super::MAX_NODES_VISITED) (tests) or to count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchWork {
    /// Trie nodes entered, the root included.
    pub nodes_visited: usize,
    /// `(pattern, value)` matches reported.
    pub matches: usize,
}

/// The first segments of the channel being looked up, each split once and only when a
/// walk gets that deep (a lookup that stops early splits no further): a stored pattern
/// has at most [`MAX_PATTERN_SEGMENTS`] segments, so one more tells "longer than any trie
/// path".
struct Channel<'c> {
    /// Segments split so far (no zeroing of unused slots: lookups are the hot path).
    segs: heapless::Vec<&'c str, { MAX_PATTERN_SEGMENTS + 1 }>,
    /// The segments not split yet.
    rest: core::str::Split<'c, char>,
    done: bool,
}

impl<'c> Channel<'c> {
    fn new(channel: &'c str) -> Self {
        Channel {
            segs: heapless::Vec::new(),
            rest: channel.split('.'),
            done: false,
        }
    }

    /// The segment after `depth` segments, if the channel has one.
    fn next(&mut self, depth: usize) -> Option<&'c str> {
        while self.segs.len() <= depth && !self.done {
            match self.rest.next() {
                Some(seg) if self.segs.push(seg).is_ok() => {}
                _ => self.done = true,
            }
        }
        self.segs.get(depth).copied()
    }
}

/// The trie path being walked, as segment references; its text (never longer than a valid
/// pattern) is rendered only when a match is reported, and only from the first segment
/// that changed since the last rendering.
struct Path<'i> {
    /// The segments of the path (no zeroing of unused slots: lookups are the hot path).
    segs: heapless::Vec<&'i str, MAX_PATTERN_SEGMENTS>,
    /// Text length after each rendered segment: `ends.len()` segments are in `text`.
    ends: heapless::Vec<u8, MAX_PATTERN_SEGMENTS>,
    text: heapless::String<MAX_NAME_LEN>,
}

impl<'i> Path<'i> {
    fn new() -> Self {
        Path {
            segs: heapless::Vec::new(),
            ends: heapless::Vec::new(),
            text: heapless::String::new(),
        }
    }

    /// Sets the segment at `depth` (the trie depth, from 0), dropping any deeper ones.
    fn set(&mut self, depth: usize, seg: &'i str) {
        self.segs.truncate(depth);
        // Trie depth ≤ MAX_PATTERN_SEGMENTS - 1 here, so the push fits.
        let _ = self.segs.push(seg);
        self.ends.truncate(depth);
    }

    /// The text of the first `depth` segments, with `.#` after them when `hash` (just `#`
    /// at the root). Stored patterns are valid, so the text always fits.
    fn text(&mut self, depth: usize, hash: bool) -> &str {
        self.ends.truncate(depth);
        let start = self.ends.last().map_or(0, |&e| usize::from(e));
        self.text.truncate(start);
        while self.ends.len() < depth {
            let i = self.ends.len();
            if i > 0 {
                let _ = self.text.push('.');
            }
            let _ = self
                .text
                .push_str(self.segs.get(i).copied().unwrap_or_default());
            let _ = self
                .ends
                .push(u8::try_from(self.text.len()).unwrap_or(u8::MAX));
        }
        if hash {
            let _ = self.text.push_str(if depth == 0 { "#" } else { ".#" });
        }
        &self.text
    }
}

/// Reports the matches at and below `node`, which is reached after `depth` segments of
/// `channel`. Each call enters one node (counted in `visited`); recursion depth ≤ the trie
/// depth ≤ [`MAX_PATTERN_SEGMENTS`].
fn walk<'i, V: Copy>(
    node: &'i Node<V>,
    depth: usize,
    channel: &mut Channel<'_>,
    path: &mut Path<'i>,
    visited: &mut usize,
    f: &mut impl FnMut(&str, V) -> ControlFlow<()>,
) -> ControlFlow<()> {
    *visited += 1;
    let hash = node.hash();
    if !hash.is_empty() {
        let text = path.text(depth, true);
        for &v in hash {
            f(text, v)?;
        }
    }
    let Some(seg) = channel.next(depth) else {
        let exact = node.exact();
        if !exact.is_empty() {
            let text = path.text(depth, false);
            for &v in exact {
                f(text, v)?;
            }
        }
        return ControlFlow::Continue(());
    };
    if let Some((stored, child)) = node.children.get_entry(seg) {
        path.set(depth, stored);
        walk(child, depth + 1, channel, path, visited, f)?;
    }
    if let Some(star) = node.star.as_deref() {
        path.set(depth, "*");
        walk(star, depth + 1, channel, path, visited, f)?;
    }
    ControlFlow::Continue(())
}

fn any_match<V>(
    node: &Node<V>,
    depth: usize,
    channel: &mut Channel<'_>,
    visited: &mut usize,
) -> bool {
    *visited += 1;
    if !node.hash().is_empty() {
        return true;
    }
    let Some(seg) = channel.next(depth) else {
        return !node.exact().is_empty();
    };
    if let Some(child) = node.children.get(seg)
        && any_match(child, depth + 1, channel, visited)
    {
        return true;
    }
    node.star
        .as_deref()
        .is_some_and(|star| any_match(star, depth + 1, channel, visited))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{
        MAX_NODES_VISITED, MAX_PATTERN_SEGMENTS, MAX_PATTERN_STARS, MAX_SEGMENTS, max_nodes_visited,
    };
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
        assert_eq!(
            index.insert("d.e.f", 1),
            Err(IndexFull {
                limit: 3,
                nodes: false
            })
        );
        assert_eq!(
            index.insert("a", 2),
            Err(IndexFull {
                limit: 3,
                nodes: false
            })
        );
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
        assert!(
            write!(
                text,
                "{}",
                IndexFull {
                    limit: 3,
                    nodes: false
                }
            )
            .is_ok()
        );
        assert_eq!(text, "subscription index is full (3 entries)");
        assert_eq!(
            SubIndex::<u32>::new(0).insert("a", 1),
            Err(IndexFull {
                limit: 0,
                nodes: false
            })
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
        let deep: String = "a.".repeat(MAX_PATTERN_SEGMENTS - 1) + "#";
        let mut index = SubIndex::with_limits(2, MAX_PATTERN_SEGMENTS);
        assert_eq!(index.insert(&deep, 1u32), Ok(true));
        let channel = "a.".repeat(1000) + "a";
        assert_eq!(matches_of(&index, &channel), vec![(deep.clone(), 1)]);
        assert!(index.has_match(&channel));
        assert!(!index.has_match("a.a"));
        assert!(index.remove(&deep, 1));
        assert_eq!(index.node_count(), 0);
        // Valid, but deeper than the cost limit: refused, nothing stored.
        let deepest_valid: String = "a.".repeat(MAX_SEGMENTS - 1) + "#";
        assert_eq!(deepest_valid.len(), MAX_NAME_LEN);
        assert_eq!(
            index.try_insert(&deepest_valid, 1),
            Err(InsertError::TooComplex(PatternTooComplex::Segments {
                segments: MAX_SEGMENTS
            }))
        );
        assert_eq!(index.insert(&deepest_valid, 1), Ok(false));
        assert_eq!(
            index.try_insert("*.*.*.*", 1),
            Err(InsertError::TooComplex(PatternTooComplex::Stars {
                stars: 4
            }))
        );
        assert!(index.is_empty());
        assert_eq!(index.node_count(), 0);
    }

    /// Every pattern over {`a`, `*`} of 1..=`len` segments with at most
    /// [`MAX_PATTERN_STARS`] `*`, each followed by `tail` (when given).
    fn all_star_placements(len: usize, tail: Option<&str>) -> Vec<String> {
        let mut out = Vec::new();
        for d in 1..=len {
            for mask in 0u32..(1 << d) {
                if mask.count_ones() as usize > MAX_PATTERN_STARS {
                    continue;
                }
                let mut segs: Vec<&str> = (0..d)
                    .map(|j| if mask >> j & 1 == 1 { "*" } else { "a" })
                    .collect();
                segs.extend(tail);
                out.push(segs.join("."));
            }
        }
        out
    }

    fn nodes_visited(index: &SubIndex<u32>, channel: &str) -> (MatchWork, usize) {
        let work = index.for_each_match(channel, |_, _| {});
        let mut any = 0;
        let found = any_match(&index.root, 0, &mut Channel::new(channel), &mut any);
        assert_eq!(found, work.matches > 0);
        assert!(any <= work.nodes_visited, "has_match visits no more");
        (work, any)
    }

    /// The bound of `cost.rs` is reached, and not passed, by the worst possible set: a
    /// trie node for every star placement within the limits, all compatible with the
    /// channel `a.a.…` (16 segments).
    #[test]
    fn worst_case_set_reaches_the_bound() {
        let channel = ["a"; MAX_PATTERN_SEGMENTS].join(".");
        let mut index = SubIndex::with_limits(10_000, 10_000);
        // With a last segment `z` that no channel segment equals: every node compatible,
        // no match (the most work for nothing).
        for (i, p) in (0u32..).zip(all_star_placements(MAX_PATTERN_SEGMENTS - 1, Some("z"))) {
            assert_eq!(index.insert(&p, i), Ok(true), "{p}");
        }
        let (work, _) = nodes_visited(&index, &channel);
        assert_eq!(work.matches, 0);
        assert_eq!(
            work.nodes_visited,
            max_nodes_visited(MAX_PATTERN_SEGMENTS - 1, MAX_PATTERN_STARS)
        );
        // Every placement of every length 1..=16 stored: the full bound is reached.
        let mut index = SubIndex::with_limits(10_000, 10_000);
        let all = all_star_placements(MAX_PATTERN_SEGMENTS, None);
        for (i, p) in (0u32..).zip(&all) {
            assert_eq!(index.insert(p, i), Ok(true), "{p}");
        }
        let (work, _) = nodes_visited(&index, &channel);
        assert_eq!(work.nodes_visited, MAX_NODES_VISITED);
        let full_length = all
            .iter()
            .filter(|p| p.split('.').count() == MAX_PATTERN_SEGMENTS)
            .count();
        assert_eq!(work.matches, full_length);
        // Any channel, any length: never more.
        for len in 1..=40 {
            for seg in ["a", "b"] {
                let c = [seg; 40][..len].join(".");
                assert!(nodes_visited(&index, &c).0.nodes_visited <= MAX_NODES_VISITED);
            }
        }
    }

    /// The issue #10 attack (40 connections × 256 patterns of 124 segments alternating a
    /// literal and `*`) stores nothing; its best imitation within the limits (10,240
    /// distinct 16-segment patterns, star placements varied) stays within the bound.
    #[test]
    fn adversarial_sets_stay_within_the_bound() {
        let mut index = SubIndex::new(1_000_000);
        let alternating: String = (0..124)
            .map(|j| if j % 2 == 0 { "a" } else { "*" })
            .collect::<Vec<_>>()
            .join(".");
        assert!(matches!(
            index.try_insert(&alternating, 1),
            Err(InsertError::TooComplex(_))
        ));
        // 10,240 patterns: the first 14 positions take `*` by the bits of the number
        // (at most 3 of them), the rest `a`, the last a distinct or a matching literal.
        let mut stored = 0u32;
        let mut i = 0u32;
        while stored < 40 * 256 {
            let mask = i % (1 << 14);
            i += 1;
            if mask.count_ones() as usize > MAX_PATTERN_STARS {
                continue;
            }
            let last = alloc::format!("v{}", stored % 7);
            let mut segs: Vec<&str> = (0..MAX_PATTERN_SEGMENTS - 1)
                .map(|j| {
                    if j < 14 && mask >> j & 1 == 1 {
                        "*"
                    } else {
                        "a"
                    }
                })
                .collect();
            segs.push(if stored.is_multiple_of(2) { "a" } else { &last });
            let p = segs.join(".");
            if index.insert(&p, stored) == Ok(true) {
                stored += 1;
            }
        }
        for channel in [
            ["a"; MAX_PATTERN_SEGMENTS].join("."),
            ["a"; MAX_PATTERN_SEGMENTS - 1].join(".") + ".v3",
            ["a"; 100].join("."),
        ] {
            let (work, _) = nodes_visited(&index, &channel);
            assert!(
                work.nodes_visited <= MAX_NODES_VISITED,
                "{} nodes for {channel}",
                work.nodes_visited
            );
        }
    }

    /// Memory budget of the trie's building blocks (64-bit targets).
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn sizes() {
        use core::mem::size_of;
        assert!(size_of::<Seg>() <= 24, "Seg is {} bytes", size_of::<Seg>());
        assert!(
            size_of::<Node<u32>>() <= 48,
            "Node is {} bytes",
            size_of::<Node<u32>>()
        );
        assert!(
            size_of::<Child<u32>>() <= 72,
            "Child is {} bytes",
            size_of::<Child<u32>>()
        );
    }

    #[test]
    fn long_segments_are_stored_on_the_heap_and_still_match() {
        let long = "s".repeat(INLINE_SEG + 1);
        let short = "s".repeat(INLINE_SEG);
        let mut index = SubIndex::new(10);
        for (i, seg) in [&long, &short].into_iter().enumerate() {
            assert!(matches!(Seg::new(seg), Seg::Heap(_)) == (seg.len() > INLINE_SEG));
            let p = alloc::format!("x.{seg}.*");
            assert_eq!(index.insert(&p, i as u32), Ok(true));
            assert_eq!(
                matches_of(&index, &alloc::format!("x.{seg}.y")),
                vec![(p, i as u32)]
            );
        }
        assert!(index.remove(&alloc::format!("x.{long}.*"), 0));
        assert!(index.remove(&alloc::format!("x.{short}.*"), 1));
        assert_eq!(index.node_count(), 0);
    }

    #[test]
    fn exact_and_hash_values_share_one_list_correctly() {
        let mut index = SubIndex::new(100);
        // Interleave inserts and removes of `a` and `a.#` values on the same node.
        for v in 0..10u32 {
            assert_eq!(index.insert("a", v), Ok(true));
            assert_eq!(index.insert("a.#", v + 100), Ok(true));
        }
        for v in (0..10u32).step_by(3) {
            assert!(index.remove("a", v));
            assert!(index.remove("a.#", v + 101 - 1));
        }
        let got = matches_of(&index, "a");
        let mut expected: Vec<(String, u32)> = Vec::new();
        for v in (0..10u32).filter(|v| v % 3 != 0) {
            expected.push((String::from("a"), v));
            expected.push((String::from("a.#"), v + 100));
        }
        expected.sort();
        assert_eq!(got, expected);
        let mut deeper = matches_of(&index, "a.b");
        deeper.retain(|(p, _)| p != "a.#");
        assert!(deeper.is_empty());
    }

    #[test]
    fn node_limit_is_enforced_without_a_trace() {
        let mut index = SubIndex::with_limits(100, 5);
        assert_eq!(index.insert("a.b.c", 1u32), Ok(true));
        assert_eq!(index.node_count(), 3);
        // Shares `a.b`: one new node, and `#` needs none.
        assert_eq!(index.insert("a.b.d.#", 1), Ok(true));
        assert_eq!(index.insert("a.b.#", 1), Ok(true));
        assert_eq!(index.node_count(), 4);
        let full = IndexFull {
            limit: 5,
            nodes: true,
        };
        assert_eq!(index.insert("x.y", 1), Err(full));
        assert_eq!(index.insert("a.*.c", 1), Err(full));
        assert_eq!(index.node_count(), 4);
        assert_eq!(index.len(), 3);
        assert!(!index.has_match("x.y"));
        assert_eq!(index.insert("a.b.c", 2), Ok(true));
        assert_eq!(index.insert("a.*", 2), Ok(true));
        assert_eq!(index.node_count(), 5);
        assert!(full.is_node_limit());
        assert_eq!(full.limit(), 5);
        let mut text = String::new();
        use core::fmt::Write;
        assert!(write!(text, "{full}").is_ok());
        assert!(
            text.starts_with("subscription index is full (5 trie nodes"),
            "{text}"
        );
        // The default allows 8 nodes per entry.
        let index = SubIndex::<u32>::new(10);
        assert_eq!(index.max_nodes(), 80);
        assert_eq!(SubIndex::<u32>::new(usize::MAX).max_nodes(), usize::MAX);
    }

    /// Inline (short) and heap (long) segments under one large node: lookups by `&str`
    /// must find both, in both representations of the children list.
    #[test]
    fn mixed_segment_lengths_in_a_large_node() {
        let mut index = SubIndex::new(1000);
        let names: Vec<String> = (0..80usize)
            .map(|i| {
                let len = if i.is_multiple_of(2) {
                    1 + i % 5
                } else {
                    INLINE_SEG + 1 + i % 7
                };
                let c = char::from(b'a' + (i % 26) as u8);
                alloc::format!(
                    "r.{}{}",
                    core::iter::repeat_n(c, len).collect::<String>(),
                    i
                )
            })
            .collect();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(index.insert(n, i as u32), Ok(true));
        }
        assert!(matches!(
            index.root.children.get("r").map(|n| &n.children),
            Some(Children::Large(_))
        ));
        for (i, n) in names.iter().enumerate() {
            assert_eq!(matches_of(&index, n), vec![(n.clone(), i as u32)], "{n}");
        }
        for (i, n) in names.iter().enumerate().skip(10) {
            assert!(index.remove(n, i as u32), "{n}");
        }
        assert!(matches!(
            index.root.children.get("r").map(|n| &n.children),
            Some(Children::Small(_))
        ));
        for (i, n) in names.iter().enumerate() {
            let expected = if i < 10 {
                vec![(n.clone(), i as u32)]
            } else {
                vec![]
            };
            assert_eq!(matches_of(&index, n), expected, "{n}");
        }
    }
}
