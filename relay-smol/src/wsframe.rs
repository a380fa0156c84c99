//! WebSocket framing (RFC 6455) as the edge needs it: parsing masked client frames in place
//! and writing unmasked server frame headers. No allocation.
//!
//! A leaf module: it depends on nothing in the crate. The connection task (`ws::conn`) parses
//! client frames with it and the broker (`broker::queue`) writes server frames with it.

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Largest server frame header: 2 bytes + 8-byte length.
pub const MAX_HEADER_LEN: usize = 10;

/// Writes the header of an unmasked, final server frame carrying `len` payload bytes.
/// Returns the header bytes and their count.
pub fn server_header(opcode: u8, len: usize) -> ([u8; MAX_HEADER_LEN], usize) {
    let mut h = [0u8; MAX_HEADER_LEN];
    h[0] = 0x80 | (opcode & 0x0f);
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= usize::from(u16::MAX) {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// Total length (header + payload) of the server frame that starts `buf`, if its header is
/// complete. Used on our own outbound queue to find frame boundaries.
pub fn server_frame_len(buf: &[u8]) -> Option<usize> {
    let b1 = *buf.get(1)?;
    match b1 & 0x7f {
        126 => {
            let l = buf.get(2..4)?;
            Some(4 + usize::from(u16::from_be_bytes([l[0], l[1]])))
        }
        127 => {
            let l: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            // Checked: a length near u64::MAX must not wrap (found by cargo-fuzz).
            10usize.checked_add(usize::try_from(u64::from_be_bytes(l)).ok()?)
        }
        n => Some(2 + usize::from(n)),
    }
}

/// A parsed client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN bit: last fragment of a message.
    pub fin: bool,
    /// Opcode.
    pub opcode: u8,
    /// Header length in bytes (including the masking key).
    pub header_len: usize,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Masking key.
    pub mask: [u8; 4],
}

/// A client frame that breaks RFC 6455; the connection is closed with code 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// RSV bits set without a negotiated extension.
    ReservedBits,
    /// Client frames must be masked.
    Unmasked,
    /// Opcode 3–7 or 0xB–0xF.
    UnknownOpcode(u8),
    /// A control frame is fragmented or longer than 125 bytes.
    BadControlFrame,
    /// A 64-bit payload length with its most significant bit set (RFC 6455 5.2: it must be 0).
    LengthTopBit,
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::ReservedBits => f.write_str("reserved bits set"),
            ProtocolError::Unmasked => f.write_str("client frame not masked"),
            ProtocolError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            ProtocolError::BadControlFrame => f.write_str("fragmented or oversize control frame"),
            ProtocolError::LengthTopBit => {
                f.write_str("64-bit payload length with the most significant bit set")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Parses a client frame header at the start of `buf`. `Ok(None)` = need more bytes.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    if b1 & 0x80 == 0 {
        return Err(ProtocolError::Unmasked);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || b1 & 0x7f > 125 {
                return Err(ProtocolError::BadControlFrame);
            }
        }
        other => return Err(ProtocolError::UnknownOpcode(other)),
    }
    let (payload_len, len_bytes) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(l) => (u64::from(u16::from_be_bytes([l[0], l[1]])), 2),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|l| <[u8; 8]>::try_from(l).ok()) {
            Some(l) if l[0] & 0x80 != 0 => return Err(ProtocolError::LengthTopBit),
            Some(l) => (u64::from_be_bytes(l), 8),
            None => return Ok(None),
        },
        n => (u64::from(n), 0),
    };
    let mask_at = 2 + len_bytes;
    let Some(mask) = buf
        .get(mask_at..mask_at + 4)
        .and_then(|m| <[u8; 4]>::try_from(m).ok())
    else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        opcode,
        header_len: mask_at + 4,
        payload_len,
        mask,
    }))
}

/// Unmasks `data` in place; `offset` is the position of `data[0]` within the frame payload.
pub fn unmask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut m = mask;
    m.rotate_left(offset % 4);
    let mut chunks = data.chunks_exact_mut(4);
    let word = u32::from_ne_bytes(m);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, op: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut v = vec![(if fin { 0x80 } else { 0 }) | op];
        let n = payload.len();
        if n < 126 {
            v.push(0x80 | n as u8);
        } else if n <= 65535 {
            v.push(0x80 | 126);
            v.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            v.push(0x80 | 127);
            v.extend_from_slice(&(n as u64).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        v
    }

    /// Found by cargo-fuzz: a 64-bit length near `u64::MAX` overflowed `10 + len`.
    #[test]
    fn server_frame_len_does_not_overflow() {
        assert_eq!(server_frame_len(&[0xff; 10]), None);
        let mut b = vec![0x82, 127];
        b.extend_from_slice(&(u64::MAX - 5).to_be_bytes());
        assert_eq!(server_frame_len(&b), None);
        let mut b = vec![0x82, 127];
        b.extend_from_slice(&70_000u64.to_be_bytes());
        assert_eq!(server_frame_len(&b), Some(70_010));
    }

    #[test]
    fn parse_and_unmask_all_length_forms() {
        for n in [0usize, 1, 5, 125, 126, 1000, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let mut f = client_frame(true, OP_BINARY, &payload, [1, 2, 3, 4]);
            let h = parse_header(&f).unwrap().unwrap();
            assert_eq!(h.payload_len, n as u64);
            assert!(h.fin);
            assert_eq!(h.header_len + n, f.len());
            // Unmask in two uneven pieces to check the offset handling.
            let split = n / 3;
            let (a, b) = f[h.header_len..].split_at_mut(split);
            unmask(a, h.mask, 0);
            unmask(b, h.mask, split);
            assert_eq!(&f[h.header_len..], &payload[..]);
            // Every strict prefix of the header is "need more".
            for cut in 0..h.header_len {
                assert_eq!(parse_header(&f[..cut]), Ok(None));
            }
        }
    }

    #[test]
    fn protocol_errors() {
        assert_eq!(parse_header(&[0x82, 0x00]), Err(ProtocolError::Unmasked));
        assert_eq!(
            parse_header(&[0xC2, 0x80]),
            Err(ProtocolError::ReservedBits)
        );
        assert_eq!(
            parse_header(&[0x83, 0x80]),
            Err(ProtocolError::UnknownOpcode(3))
        );
        assert_eq!(
            parse_header(&[0x09, 0x80]),
            Err(ProtocolError::BadControlFrame)
        );
        assert_eq!(
            parse_header(&[0x89, 0xFE]),
            Err(ProtocolError::BadControlFrame)
        );
        // RFC 6455 5.2: the most significant bit of a 64-bit length must be 0; with it set
        // the length used to wrap when the header length was added.
        let mut top = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse_header(&top), Err(ProtocolError::LengthTopBit));
        top[2] = 0x7F;
        top.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            parse_header(&top).map(|h| h.map(|h| h.payload_len)),
            Ok(Some(0x7F00_0000_0000_0001))
        );
    }

    #[test]
    fn server_headers() {
        for n in [0usize, 125, 126, 65535, 65536, 66000] {
            let (h, len) = server_header(OP_BINARY, n);
            assert_eq!(h[0], 0x82);
            assert_eq!(server_frame_len(&h[..len]), Some(len + n));
        }
    }
}
