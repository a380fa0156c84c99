//! Validation of channels and patterns (LLPS v0.1 sections 4 and 5).

use core::fmt;

pub use crate::limits::MAX_NAME_LEN;

/// Maximum number of segments in a valid channel or pattern: every segment is at least
/// one byte and segments are separated by one `.`, so 255 bytes hold at most 128.
pub const MAX_SEGMENTS: usize = MAX_NAME_LEN.div_ceil(2);

/// Why a channel or a pattern is not valid. Segment numbers count from 1.
///
/// All variants blame the input (the peer sent it); none is a capacity or misuse error.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternError {
    /// The name is the empty string.
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    TooLong {
        /// Length of the name in bytes.
        len: usize,
    },
    /// A segment is empty (a leading, trailing or doubled `.`).
    EmptySegment {
        /// Which segment, from 1.
        segment: usize,
    },
    /// A segment contains a control character or whitespace.
    ForbiddenChar {
        /// Which segment, from 1.
        segment: usize,
        /// The offending character.
        ch: char,
    },
    /// A channel contains `*` or `#`: channels are concrete.
    WildcardInChannel {
        /// Which segment, from 1.
        segment: usize,
    },
    /// A pattern segment mixes `*` or `#` with other characters (e.g. `a*`).
    PartialWildcard {
        /// Which segment, from 1.
        segment: usize,
    },
    /// A pattern has `#` before its last segment.
    HashNotLast {
        /// Which segment, from 1.
        segment: usize,
    },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => f.write_str("name is empty"),
            Self::TooLong { len } => {
                write!(f, "name is {len} bytes long, the maximum is {MAX_NAME_LEN}")
            }
            Self::EmptySegment { segment } => write!(
                f,
                "segment {segment} is empty (no leading, trailing or doubled '.')"
            ),
            Self::ForbiddenChar { segment, ch } => write!(
                f,
                "segment {segment} contains {:?} (U+{:04X}): control characters and whitespace are not allowed",
                ch, ch as u32
            ),
            Self::WildcardInChannel { segment } => write!(
                f,
                "segment {segment} contains '*' or '#': a channel is concrete, wildcards belong in patterns"
            ),
            Self::PartialWildcard { segment } => write!(
                f,
                "segment {segment} mixes '*' or '#' with other characters: a wildcard must be a whole segment"
            ),
            Self::HashNotLast { segment } => write!(
                f,
                "segment {segment} is '#' but is not the last segment: '#' is only allowed at the end"
            ),
        }
    }
}

impl core::error::Error for PatternError {}

/// Checks that `channel` is a valid concrete channel.
///
/// Valid: 1..=[`MAX_NAME_LEN`] bytes, one or more non-empty `.`-separated segments, no
/// control characters or whitespace (Unicode definitions, which include all ASCII ones),
/// and no `*` or `#` anywhere. Every valid channel is also a valid pattern that matches
/// exactly itself.
pub fn validate_channel(channel: &str) -> Result<(), PatternError> {
    check(channel, false)
}

/// Checks that `pattern` is a valid pattern.
///
/// The rules of [`validate_channel`], except that a segment may be exactly `*` (one
/// segment) or, as the last segment only, exactly `#` (zero or more segments). `*` or `#`
/// inside a longer segment (`a*`, `#b`) is refused.
pub fn validate_pattern(pattern: &str) -> Result<(), PatternError> {
    check(pattern, true)
}

fn check(name: &str, wildcards: bool) -> Result<(), PatternError> {
    if name.is_empty() {
        return Err(PatternError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(PatternError::TooLong { len: name.len() });
    }
    let mut segments = name.split('.').enumerate().peekable();
    while let Some((i, seg)) = segments.next() {
        let segment = i + 1;
        if seg.is_empty() {
            return Err(PatternError::EmptySegment { segment });
        }
        if let Some(ch) = seg.chars().find(|c| c.is_control() || c.is_whitespace()) {
            return Err(PatternError::ForbiddenChar { segment, ch });
        }
        let has_wildcard = seg.bytes().any(|b| b == b'*' || b == b'#');
        if !has_wildcard {
            continue;
        }
        if !wildcards {
            return Err(PatternError::WildcardInChannel { segment });
        }
        match seg {
            "*" => {}
            "#" if segments.peek().is_none() => {}
            "#" => return Err(PatternError::HashNotLast { segment }),
            _ => return Err(PatternError::PartialWildcard { segment }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONGEST_BYTES: [u8; MAX_NAME_LEN] = [b'a'; MAX_NAME_LEN];
    const LONGEST: &str = match core::str::from_utf8(&LONGEST_BYTES) {
        Ok(s) => s,
        Err(_) => "",
    };

    #[test]
    fn longest_constant_is_255() {
        assert_eq!(LONGEST.len(), MAX_NAME_LEN);
        assert_eq!(MAX_SEGMENTS, 128);
    }

    /// (input, channel result, pattern result)
    #[allow(clippy::type_complexity)]
    const VECTORS: &[(&str, Result<(), PatternError>, Result<(), PatternError>)] = {
        use PatternError::*;
        &[
            ("public", Ok(()), Ok(())),
            ("public.chat.room1", Ok(()), Ok(())),
            ("a", Ok(()), Ok(())),
            ("tenant:x.ü.日本", Ok(()), Ok(())),
            ("a-b_c.1/2", Ok(()), Ok(())),
            ("", Err(Empty), Err(Empty)),
            (
                ".",
                Err(EmptySegment { segment: 1 }),
                Err(EmptySegment { segment: 1 }),
            ),
            (
                ".a",
                Err(EmptySegment { segment: 1 }),
                Err(EmptySegment { segment: 1 }),
            ),
            (
                "a.",
                Err(EmptySegment { segment: 2 }),
                Err(EmptySegment { segment: 2 }),
            ),
            (
                "a..b",
                Err(EmptySegment { segment: 2 }),
                Err(EmptySegment { segment: 2 }),
            ),
            (
                "a.b c",
                Err(ForbiddenChar {
                    segment: 2,
                    ch: ' ',
                }),
                Err(ForbiddenChar {
                    segment: 2,
                    ch: ' ',
                }),
            ),
            (
                "a\tb",
                Err(ForbiddenChar {
                    segment: 1,
                    ch: '\t',
                }),
                Err(ForbiddenChar {
                    segment: 1,
                    ch: '\t',
                }),
            ),
            (
                "a.b\n",
                Err(ForbiddenChar {
                    segment: 2,
                    ch: '\n',
                }),
                Err(ForbiddenChar {
                    segment: 2,
                    ch: '\n',
                }),
            ),
            (
                "a\u{0}",
                Err(ForbiddenChar {
                    segment: 1,
                    ch: '\u{0}',
                }),
                Err(ForbiddenChar {
                    segment: 1,
                    ch: '\u{0}',
                }),
            ),
            (
                "a\u{7f}",
                Err(ForbiddenChar {
                    segment: 1,
                    ch: '\u{7f}',
                }),
                Err(ForbiddenChar {
                    segment: 1,
                    ch: '\u{7f}',
                }),
            ),
            (
                "a\u{a0}b",
                Err(ForbiddenChar {
                    segment: 1,
                    ch: '\u{a0}',
                }),
                Err(ForbiddenChar {
                    segment: 1,
                    ch: '\u{a0}',
                }),
            ),
            ("*", Err(WildcardInChannel { segment: 1 }), Ok(())),
            ("#", Err(WildcardInChannel { segment: 1 }), Ok(())),
            ("public.#", Err(WildcardInChannel { segment: 2 }), Ok(())),
            ("public.*", Err(WildcardInChannel { segment: 2 }), Ok(())),
            ("*.*.#", Err(WildcardInChannel { segment: 1 }), Ok(())),
            ("a.*.b", Err(WildcardInChannel { segment: 2 }), Ok(())),
            (
                "a*",
                Err(WildcardInChannel { segment: 1 }),
                Err(PartialWildcard { segment: 1 }),
            ),
            (
                "a.b#",
                Err(WildcardInChannel { segment: 2 }),
                Err(PartialWildcard { segment: 2 }),
            ),
            (
                "a.**",
                Err(WildcardInChannel { segment: 2 }),
                Err(PartialWildcard { segment: 2 }),
            ),
            (
                "a.##",
                Err(WildcardInChannel { segment: 2 }),
                Err(PartialWildcard { segment: 2 }),
            ),
            (
                "a.*#",
                Err(WildcardInChannel { segment: 2 }),
                Err(PartialWildcard { segment: 2 }),
            ),
            (
                "#.a",
                Err(WildcardInChannel { segment: 1 }),
                Err(HashNotLast { segment: 1 }),
            ),
            (
                "a.#.#",
                Err(WildcardInChannel { segment: 2 }),
                Err(HashNotLast { segment: 2 }),
            ),
            (
                "a.#.",
                Err(WildcardInChannel { segment: 2 }),
                Err(HashNotLast { segment: 2 }),
            ),
            (
                "a..#",
                Err(EmptySegment { segment: 2 }),
                Err(EmptySegment { segment: 2 }),
            ),
        ]
    };

    #[test]
    fn spec_vectors() {
        for &(input, channel, pattern) in VECTORS {
            assert_eq!(validate_channel(input), channel, "channel {input:?}");
            assert_eq!(validate_pattern(input), pattern, "pattern {input:?}");
        }
    }

    #[test]
    fn length_limit_is_in_bytes() {
        assert_eq!(validate_channel(LONGEST), Ok(()));
        let mut long = heapless::String::<300>::new();
        for _ in 0..128 {
            assert!(long.push_str("a.").is_ok());
        }
        // 255 bytes: 128 segments, the maximum.
        let max = &long[..255];
        assert_eq!(validate_pattern(max), Ok(()));
        assert_eq!(max.split('.').count(), MAX_SEGMENTS);
        assert_eq!(
            validate_channel(&long[..256]),
            Err(PatternError::TooLong { len: 256 })
        );
        // Multi-byte characters count in bytes: 128 × 'ü' (2 bytes) = 256 bytes.
        let mut wide = heapless::String::<300>::new();
        for _ in 0..128 {
            assert!(wide.push('ü').is_ok());
        }
        assert_eq!(
            validate_pattern(&wide),
            Err(PatternError::TooLong { len: 256 })
        );
    }

    #[test]
    fn display_says_what_and_where() {
        let mut buf = heapless::String::<200>::new();
        use core::fmt::Write;
        assert!(write!(buf, "{}", PatternError::EmptySegment { segment: 2 }).is_ok());
        assert!(buf.starts_with("segment 2 is empty"), "{buf}");
        buf.clear();
        assert!(write!(buf, "{}", PatternError::TooLong { len: 300 }).is_ok());
        assert_eq!(buf, "name is 300 bytes long, the maximum is 255");
        buf.clear();
        assert!(
            write!(
                buf,
                "{}",
                PatternError::ForbiddenChar {
                    segment: 1,
                    ch: ' '
                }
            )
            .is_ok()
        );
        assert!(buf.contains("U+0020"), "{buf}");
    }
}
