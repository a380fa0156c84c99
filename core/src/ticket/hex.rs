//! Lowercase hex, the only spelling a ticket accepts (so every token string has exactly one
//! meaning and any altered character is caught).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes the lowercase hex of `bytes` into `out`; returns the written part, or `None`
/// when `out` is shorter than `2 * bytes.len()`.
pub(crate) fn encode<'o>(bytes: &[u8], out: &'o mut [u8]) -> Option<&'o mut [u8]> {
    let out = out.get_mut(..bytes.len().checked_mul(2)?)?;
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        if let [hi, lo] = pair {
            *hi = DIGITS[usize::from(b >> 4)];
            *lo = DIGITS[usize::from(b & 0x0f)];
        }
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decodes lowercase hex `text` into `out`; returns the decoded part, or `None` when the
/// text has odd length, a character outside `[0-9a-f]`, or does not fit.
pub(crate) fn decode<'o>(text: &[u8], out: &'o mut [u8]) -> Option<&'o [u8]> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let out = out.get_mut(..text.len() / 2)?;
    for (o, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *o = (nibble(*hi)? << 4) | nibble(*lo)?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let mut buf = [0u8; 8];
        let text = encode(&[0x00, 0xab, 0xff], &mut buf).map(|s| s.to_owned_array());
        assert_eq!(text, Some(*b"00abff"));
        let mut out = [0u8; 3];
        assert_eq!(decode(b"00abff", &mut out), Some(&[0x00, 0xab, 0xff][..]));
        assert_eq!(decode(b"00ABff", &mut out), None, "uppercase refused");
        assert_eq!(decode(b"0ab", &mut out), None, "odd length refused");
        assert_eq!(decode(b"00abff00", &mut out), None, "too long for out");
        assert_eq!(decode(b"0g", &mut out), None);
        assert!(encode(&[1, 2, 3], &mut [0u8; 5]).is_none());
    }

    trait ToArray {
        fn to_owned_array(&self) -> [u8; 6];
    }
    impl ToArray for [u8] {
        fn to_owned_array(&self) -> [u8; 6] {
            let mut a = [0u8; 6];
            a.copy_from_slice(self);
            a
        }
    }
}
