//! Matching a pattern against a concrete channel.

/// Returns true when `pattern` matches `channel`.
///
/// `*` matches exactly one segment; a final `#` matches zero or more segments; any other
/// segment matches only an equal segment. Meant for inputs that passed
/// [`validate_pattern`](super::validate_pattern) and
/// [`validate_channel`](super::validate_channel); on any other input it still never
/// panics nor allocates, and errs towards not matching: a `#` that is not the last
/// segment is compared literally (no valid channel contains `#`).
///
/// Runs in one pass over both strings.
pub fn matches(pattern: &str, channel: &str) -> bool {
    let mut pat = pattern.split('.');
    let mut chan = channel.split('.');
    loop {
        match pat.next() {
            None => return chan.next().is_none(),
            Some("#") if pat.clone().next().is_none() => return true,
            Some("*") => {
                if chan.next().is_none() {
                    return false;
                }
            }
            Some(literal) => {
                if chan.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (pattern, channel, matches)
    const VECTORS: &[(&str, &str, bool)] = &[
        // From the spec: `public.#` matches `public`, `public.demo` and `public.chat.room1`.
        ("public.#", "public", true),
        ("public.#", "public.demo", true),
        ("public.#", "public.chat.room1", true),
        ("public.#", "publicx", false),
        ("public.#", "private.demo", false),
        ("public.#", "pub", false),
        ("#", "a", true),
        ("#", "a.b.c", true),
        ("*", "a", true),
        ("*", "a.b", false),
        ("a.*", "a", false),
        ("a.*", "a.b", true),
        ("a.*", "a.b.c", false),
        ("*.b", "a.b", true),
        ("*.b", "a.c", false),
        ("a.*.c", "a.b.c", true),
        ("a.*.c", "a.c", false),
        ("a.*.#", "a", false),
        ("a.*.#", "a.b", true),
        ("a.*.#", "a.b.c.d", true),
        ("*.#", "a", true),
        ("a.b", "a.b", true),
        ("a.b", "a.b.c", false),
        ("a.b.c", "a.b", false),
        ("a.b", "a.bc", false),
        ("ab", "a.b", false),
        ("public.chat.room1", "public.chat.room1", true),
        ("Public", "public", false),
        ("ü.*", "ü.日本", true),
        // Invalid input: no panic, and a non-final `#` is literal.
        ("#.a", "x.a", false),
        ("", "", true),
        ("a", "", false),
        ("", "a", false),
        ("a..b", "a..b", true),
    ];

    #[test]
    fn vectors() {
        for &(pattern, channel, expected) in VECTORS {
            assert_eq!(
                matches(pattern, channel),
                expected,
                "{pattern:?} vs {channel:?}"
            );
        }
    }
}
