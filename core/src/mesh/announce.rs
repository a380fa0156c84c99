//! Relay announcements: each relay floods a small opaque summary of itself (the dashboard's
//! wire form, decoded by the relay, not here) so every relay can show the whole mesh.
//!
//! Newest `seq` per origin wins; receivers forward new ones and drop stale or duplicate
//! ones. The body is opaque to the mesh so a relay built without the dashboard still
//! forwards the announcements of the others.

use serde::{Deserialize, Serialize};

use super::{MAX_NAME, TAG_LEN, U64_LEN, bytes_len, check_name};

/// Largest announcement body, in bytes.
pub const MAX_ANNOUNCE_BODY: usize = 8 * 1024;

/// One relay's announcement of itself, flooded through the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce<'a> {
    /// The announcing relay.
    pub origin: &'a str,
    /// Increases with every announcement of `origin` (also across restarts): newer wins.
    pub seq: u64,
    /// The announcement itself (at most [`MAX_ANNOUNCE_BODY`] bytes, not empty).
    pub body: &'a [u8],
}

impl Announce<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize =
        TAG_LEN + bytes_len(MAX_NAME) + U64_LEN + bytes_len(MAX_ANNOUNCE_BODY);

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        check_name(self.origin, "announce: bad origin name")?;
        if self.body.is_empty() {
            return Err("announce: empty body");
        }
        if self.body.len() > MAX_ANNOUNCE_BODY {
            return Err("announce: body too long");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{roundtrip, s};
    use super::super::{DecodeError, EncodeError, Message, decode, encode};
    use super::*;

    #[test]
    fn worst_case() {
        let n = roundtrip(&Message::Announce(Announce {
            origin: s(MAX_NAME, b'a'),
            seq: u64::MAX,
            body: s(MAX_ANNOUNCE_BODY, b'z').as_bytes(),
        }));
        assert_eq!(n, Announce::MAX_LEN);
        const { assert!(Announce::MAX_LEN <= Message::MAX_LEN) };
    }

    #[test]
    fn refuses_oversize_empty_and_bad_origin() {
        let mut buf = [0u8; Announce::MAX_LEN + 64];
        let big = Message::Announce(Announce {
            origin: "tokyo",
            seq: 1,
            body: s(MAX_ANNOUNCE_BODY + 1, b'z').as_bytes(),
        });
        assert_eq!(
            encode(&big, &mut buf).err(),
            Some(EncodeError::Invalid("announce: body too long"))
        );
        // Hand-made oversize encoding (encode refuses to make one): tag, origin, seq, body.
        let mut raw = heapless::Vec::<u8, { Announce::MAX_LEN + 64 }>::new();
        // The tag of `Announce` (its position in `Message`), from a valid encoding.
        let mut one = [0u8; 16];
        let tag = encode(
            &Message::Announce(Announce {
                origin: "t",
                seq: 0,
                body: b"b",
            }),
            &mut one,
        )
        .ok()
        .and_then(|b| b.first().copied())
        .unwrap_or(0);
        assert_eq!(
            usize::from(tag),
            super::super::KIND_NAMES.len() - 1,
            "appended last"
        );
        let _ = raw.extend_from_slice(&[tag, 5]);
        let _ = raw.extend_from_slice(b"tokyo");
        let _ = raw.push(1);
        let len = MAX_ANNOUNCE_BODY + 1;
        let _ = raw.extend_from_slice(&[(len as u8 & 0x7f) | 0x80, (len >> 7) as u8]);
        for _ in 0..len {
            let _ = raw.push(b'z');
        }
        assert_eq!(
            decode(&raw),
            Err(DecodeError::Invalid("announce: body too long"))
        );
        // The same frame with a body of the largest size decodes.
        let ok_len = MAX_ANNOUNCE_BODY;
        raw.truncate(8);
        let _ = raw.extend_from_slice(&[(ok_len as u8 & 0x7f) | 0x80, (ok_len >> 7) as u8]);
        for _ in 0..ok_len {
            let _ = raw.push(b'z');
        }
        assert!(matches!(decode(&raw), Ok(Message::Announce(a)) if a.body.len() == ok_len));

        let empty = [tag, 5, b't', b'o', b'k', b'y', b'o', 1, 0];
        assert_eq!(
            decode(&empty),
            Err(DecodeError::Invalid("announce: empty body"))
        );
        let bad_origin = [tag, 5, b'T', b'o', b'k', b'y', b'o', 1, 1, 0];
        assert_eq!(
            decode(&bad_origin),
            Err(DecodeError::Invalid("announce: bad origin name"))
        );
        // Truncated: body length says 3, one byte present.
        let short = [tag, 5, b't', b'o', b'k', b'y', b'o', 1, 3, 0];
        assert_eq!(decode(&short), Err(DecodeError::Malformed));
    }
}
