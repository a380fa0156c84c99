//! Edge → client binary deliver frames:
//! `0x01 | str16 tenant | str16 channel | u32 payload_len | payload | u16 count | count × str16 pattern`.

use super::limits::{
    DELIVER_TAG, MAX_DELIVER_PATTERNS, MAX_NAME_LEN, MAX_PAYLOAD_LEN, MAX_TENANT_LEN,
};
use super::str16::{check_name, put, read_str16};
use super::{EncodeError, FrameError};

/// The fixed part of a deliver frame: tenant, channel and payload. The patterns are passed
/// to the encoders because they differ per receiving connection.
///
/// Encoding never allocates. Typical use by a relay: [`Deliver::encoded_len`] to size the
/// slot, then [`Deliver::encode_with`] to append the pieces to an outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deliver<'a> {
    tenant: &'a str,
    channel: &'a str,
    payload: &'a [u8],
}

impl<'a> Deliver<'a> {
    /// Checks the fields against the contract's limits.
    pub fn new(tenant: &'a str, channel: &'a str, payload: &'a [u8]) -> Result<Self, EncodeError> {
        check_name("tenant", tenant, MAX_TENANT_LEN)?;
        check_name("channel", channel, MAX_NAME_LEN)?;
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(EncodeError::FieldTooLong {
                field: "payload",
                len: payload.len(),
            });
        }
        Ok(Deliver {
            tenant,
            channel,
            payload,
        })
    }

    /// The encoded length with these patterns, after checking each pattern (1..=255 bytes)
    /// and their count (1..=65,535).
    pub fn encoded_len<'p>(
        &self,
        patterns: impl IntoIterator<Item = &'p str>,
    ) -> Result<usize, EncodeError> {
        Ok(self.head_len() + Self::patterns_len(patterns)?)
    }

    /// Hands the frame to `sink` as consecutive byte pieces (so a caller can append it to
    /// any buffer without an intermediate copy). Validates first; on error nothing is
    /// emitted. Returns the total length emitted.
    pub fn encode_with<'p, I>(
        &self,
        patterns: I,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<usize, EncodeError>
    where
        I: IntoIterator<Item = &'p str> + Clone,
    {
        Self::patterns_len(patterns.clone())?;
        self.encode_head(&mut sink);
        Ok(self.head_len() + Self::encode_patterns(patterns, sink)?)
    }

    /// Bytes before the pattern list (`0x01 | tenant | channel | payload_len | payload`).
    /// They are the same for every receiver of a message, so a relay can encode them once
    /// ([`Deliver::encode_head`]) and follow them with each receiver's own pattern list
    /// ([`Deliver::encode_patterns`]); together that is [`Deliver::encode_with`].
    pub fn head_len(&self) -> usize {
        1 + 2 + self.tenant.len() + 2 + self.channel.len() + 4 + self.payload.len()
    }

    /// Hands the bytes before the pattern list to `sink` (see [`Deliver::head_len`]).
    pub fn encode_head(&self, mut sink: impl FnMut(&[u8])) {
        // Lengths were checked by `new`; the casts cannot truncate.
        sink(&[DELIVER_TAG]);
        sink(&(self.tenant.len() as u16).to_be_bytes());
        sink(self.tenant.as_bytes());
        sink(&(self.channel.len() as u16).to_be_bytes());
        sink(self.channel.as_bytes());
        sink(&(self.payload.len() as u32).to_be_bytes());
        sink(self.payload);
    }

    /// The encoded length of a pattern list (`u16 count | count × str16 pattern`), after
    /// checking each pattern (1..=255 bytes) and their count (1..=65,535).
    pub fn patterns_len<'p>(
        patterns: impl IntoIterator<Item = &'p str>,
    ) -> Result<usize, EncodeError> {
        let mut count = 0usize;
        let mut len = 2;
        for p in patterns {
            check_name("pattern", p, MAX_NAME_LEN)?;
            count += 1;
            len += 2 + p.len();
        }
        if count == 0 || count > MAX_DELIVER_PATTERNS {
            return Err(EncodeError::PatternCount { count });
        }
        Ok(len)
    }

    /// Checks a pattern list (as [`Deliver::patterns_len`]) and hands it to `sink`; on error
    /// nothing is emitted. Returns its length.
    pub fn encode_patterns<'p, I>(
        patterns: I,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<usize, EncodeError>
    where
        I: IntoIterator<Item = &'p str> + Clone,
    {
        let len = Self::patterns_len(patterns.clone())?;
        // Checked above: 1..=65,535 patterns of 1..=255 bytes.
        let count = patterns.clone().into_iter().count();
        sink(&(count as u16).to_be_bytes());
        for p in patterns {
            sink(&(p.len() as u16).to_be_bytes());
            sink(p.as_bytes());
        }
        Ok(len)
    }

    /// Writes the frame into `out`. Returns the bytes written.
    pub fn encode<'p, I>(&self, patterns: I, out: &mut [u8]) -> Result<usize, EncodeError>
    where
        I: IntoIterator<Item = &'p str> + Clone,
    {
        let needed = self.encoded_len(patterns.clone())?;
        if out.len() < needed {
            return Err(EncodeError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        let mut pos = 0;
        self.encode_with(patterns, |piece| put(out, &mut pos, piece))
    }
}

/// A validated, zero-copy view of a deliver frame (the client side of the contract; used
/// by the CLI `sub` tool and by tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliverView<'a> {
    tenant: &'a str,
    channel: &'a str,
    payload: &'a [u8],
    count: u16,
    patterns: &'a [u8],
}

/// A str16 channel or pattern of at most [`MAX_NAME_LEN`] bytes.
fn read_name<'a>(
    buf: &'a [u8],
    pos: &mut usize,
    field: &'static str,
) -> Result<&'a str, FrameError> {
    let s = read_str16(buf, pos, field)?;
    if s.len() > MAX_NAME_LEN {
        return Err(FrameError::NameTooLong {
            field,
            len: s.len(),
        });
    }
    Ok(s)
}

impl<'a> DeliverView<'a> {
    /// Parses a deliver frame, rejecting trailing bytes as the SDKs do.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self, FrameError> {
        match buf.first() {
            Some(&DELIVER_TAG) => {}
            Some(_) => return Err(FrameError::UnknownCommand),
            None => return Err(FrameError::Truncated { field: "tag" }),
        }
        let mut pos = 1;
        // The contract's limits, as the encoder applies them: what this accepts re-encodes
        // (a 300-byte channel was accepted before; found by cargo-fuzz).
        let tenant = read_str16(buf, &mut pos, "tenant")?;
        if tenant.len() > MAX_TENANT_LEN {
            return Err(FrameError::TenantTooLong { len: tenant.len() });
        }
        let channel = read_name(buf, &mut pos, "channel")?;
        let len_bytes = buf.get(pos..pos + 4).ok_or(FrameError::Truncated {
            field: "payload length",
        })?;
        let mut len4 = [0u8; 4];
        len4.copy_from_slice(len_bytes);
        let plen = u32::from_be_bytes(len4) as usize;
        if plen > MAX_PAYLOAD_LEN {
            return Err(FrameError::PayloadTooLarge { len: plen });
        }
        pos += 4;
        let payload = buf
            .get(pos..pos + plen)
            .ok_or(FrameError::Truncated { field: "payload" })?;
        pos += plen;
        let count_bytes =
            buf.get(pos..)
                .and_then(|r| r.first_chunk::<2>())
                .ok_or(FrameError::Truncated {
                    field: "pattern count",
                })?;
        let count = u16::from_be_bytes(*count_bytes);
        pos += 2;
        let patterns_start = pos;
        if count == 0 {
            return Err(FrameError::EmptyField {
                field: "pattern list",
            });
        }
        for _ in 0..count {
            read_name(buf, &mut pos, "pattern")?;
        }
        if pos != buf.len() {
            return Err(FrameError::Trailing {
                extra: buf.len() - pos,
            });
        }
        let patterns = buf.get(patterns_start..pos).unwrap_or(&[]);
        Ok(DeliverView {
            tenant,
            channel,
            payload,
            count,
            patterns,
        })
    }

    /// The tenant.
    pub fn tenant(&self) -> &'a str {
        self.tenant
    }
    /// The channel.
    pub fn channel(&self) -> &'a str {
        self.channel
    }
    /// The payload.
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// The number of patterns listed (≥ 1).
    pub fn pattern_count(&self) -> u16 {
        self.count
    }
    /// The listed patterns, in frame order.
    pub fn patterns(&self) -> impl Iterator<Item = &'a str> + 'a {
        let buf = self.patterns;
        let mut pos = 0;
        core::iter::from_fn(move || read_str16(buf, &mut pos, "pattern").ok())
    }
}
