//! Channels and patterns: validation, matching, containment and the subscription index.
//!
//! A *channel* is a concrete name such as `public.chat.room1`: 1 to [`MAX_NAME_LEN`] bytes
//! of one or more non-empty segments separated by `.`. A *pattern* may also use two
//! wildcard segments: `*` matches exactly one segment, and `#` — allowed only as the last
//! segment — matches zero or more segments (`public.#` matches `public`, `public.demo` and
//! `public.chat.room1`).
//!
//! How it is called:
//! - at the edge, [`validate_channel`] every publish channel and [`validate_pattern`] every
//!   `SUB` pattern (the errors say what is wrong and where), then [`check_pattern_cost`]
//!   (the limits that bound the index's work per publish; see [`MAX_NODES_VISITED`]);
//! - [`matches()`] answers "does this grant or subscription cover this channel";
//! - [`contains`] answers "is every channel of this pattern covered by that grant";
//! - `SubIndex` (feature `alloc`) answers "which subscriptions match this channel"
//!   without scanning them all.
//!
//! Validation, matching and containment never allocate and never panic, on any input.

mod contain;
mod cost;
#[cfg(feature = "alloc")]
mod index;
mod matching;
mod validate;

pub use contain::contains;
pub use cost::{
    MAX_NODES_VISITED, MAX_PATTERN_SEGMENTS, MAX_PATTERN_STARS, MAX_STARS_PER_CONNECTION,
    PatternCost, PatternTooComplex, check_pattern_cost, max_nodes_visited,
};
#[cfg(feature = "alloc")]
pub use index::{DEFAULT_NODES_PER_ENTRY, IndexFull, InsertError, MatchWork, SubIndex};
pub use matching::matches;
pub use validate::{MAX_NAME_LEN, MAX_SEGMENTS, PatternError, validate_channel, validate_pattern};
