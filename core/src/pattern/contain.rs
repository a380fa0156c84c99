//! Pattern containment: is every channel of one pattern matched by another?

use super::validate::validate_pattern;

/// Returns true when every channel that `inner` matches is also matched by `outer`.
///
/// This is the grant check for subscriptions: a client may subscribe to `inner` when
/// some granted `outer` contains it. Exact for all wildcard cases, e.g. `public.#` ⊇
/// `public.*`, `public.*` ⊉ `public.#`, `#` ⊇ everything, `a.#` ⊇ `a`, `*` ⊉ `a.b`,
/// `a.#` ⊇ `a.*.#` but not the reverse. Returns false when either argument is not a
/// valid pattern (deny by default). No allocation; linear in the input length.
///
/// Why a single zip over the segments is exact: write a pattern as a prefix of `k`
/// fixed-length tokens (a literal or `*`) and an optional final `#`. It matches the
/// channels whose first `k` segments fit the tokens, position by position, and whose
/// length is exactly `k` (no `#`) or any length ≥ `k` (with `#`). The channel sets are
/// products of independent per-position sets, so `inner ⊆ outer` holds iff
/// - the lengths fit: if `outer` has no `#`, `inner` has no `#` and the same `k`; if
///   `outer` has `#`, `outer`'s `k` is at most `inner`'s `k`;
/// - and at every position `outer` covers: `outer`'s token is `*`, or both tokens are
///   the same literal (an `inner` `*` ranges over infinitely many segments, so no
///   `outer` literal covers it).
///
/// Positions of `inner` beyond `outer`'s prefix are absorbed by `outer`'s `#`.
///
/// One correction to that model: a channel has at least one segment, so the zero-length
/// case of an `inner` `#` at position 0 does not exist. It only matters when `inner` is
/// exactly `#`: then `*.#` contains it as well as `#` does (both match every channel).
pub fn contains(outer: &str, inner: &str) -> bool {
    if validate_pattern(outer).is_err() || validate_pattern(inner).is_err() {
        return false;
    }
    if inner == "#" {
        return outer == "#" || outer == "*.#";
    }
    let mut out = outer.split('.');
    let mut inn = inner.split('.');
    loop {
        match (out.next(), inn.next()) {
            // Both ended together with the same length and every position covered.
            (None, None) => return true,
            // `outer` ends in `#`: it absorbs the rest of `inner` (zero or more segments,
            // including `inner`'s own `#`).
            (Some("#"), _) => return true,
            // `inner`'s `#` reaches lengths that a `#`-less or longer `outer` misses:
            // `outer` still has a fixed token here while `inner` may stop.
            (_, Some("#")) => return false,
            // Different fixed lengths.
            (None, Some(_)) | (Some(_), None) => return false,
            (Some("*"), Some(_)) => {}
            (Some(o), Some(i)) => {
                // `i` is a literal or `*`; an `inner` `*` is not covered by a literal.
                if i == "*" || o != i {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (outer, inner, outer ⊇ inner)
    const VECTORS: &[(&str, &str, bool)] = &[
        ("public.#", "public.*", true),
        ("public.*", "public.#", false),
        ("public.#", "public", true),
        ("public.#", "public.#", true),
        ("public.#", "public.a.b.#", true),
        ("public.#", "#", false),
        ("public.#", "private.#", false),
        ("public.#", "*.a", false),
        ("#", "a", true),
        ("#", "*", true),
        ("#", "#", true),
        ("#", "a.*.#", true),
        ("a.#", "a", true),
        ("a", "a.#", false),
        ("*", "a", true),
        ("*", "*", true),
        ("*", "a.b", false),
        ("*", "#", false),
        ("a", "*", false),
        ("a.*.#", "a.#", false),
        ("a.#", "a.*.#", true),
        ("a.*.#", "a.b", true),
        ("a.*.#", "a.b.#", true),
        ("a.*.#", "a", false),
        // Channels have at least one segment, so `*.#` matches everything `#` does.
        ("*.#", "#", true),
        ("*.*.#", "#", false),
        ("a.#", "#", false),
        ("*.#", "a", true),
        ("*.#", "*.*", true),
        ("*.*", "*.#", false),
        ("a.b", "a.b", true),
        ("a.b", "a.c", false),
        ("a.*", "a.b", true),
        ("a.b", "a.*", false),
        ("a.*.c", "a.b.c", true),
        ("a.*.c", "a.*.d", false),
        // Invalid patterns are never contained nor containing.
        ("#", "a..b", false),
        ("#", "", false),
        ("#.a", "x.a", false),
        ("a*", "a*", false),
    ];

    #[test]
    fn vectors() {
        for &(outer, inner, expected) in VECTORS {
            assert_eq!(contains(outer, inner), expected, "{outer:?} ⊇ {inner:?}");
        }
    }

    #[test]
    fn every_valid_pattern_contains_itself() {
        for &(outer, inner, _) in VECTORS {
            for p in [outer, inner] {
                assert_eq!(contains(p, p), validate_pattern(p).is_ok(), "{p:?}");
            }
        }
    }
}
