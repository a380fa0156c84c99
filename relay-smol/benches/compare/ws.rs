//! WebSocket framing for the load generator: the HTTP upgrade request, masked client frames,
//! and a streaming parser of server frames that hands payload pieces on without copying them.

/// The HTTP/1.1 upgrade request for `path`, naming `subprotocol` when given.
pub fn upgrade_request(path: &str, subprotocol: Option<&str>) -> String {
    let proto = subprotocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{proto}\r\n"
    )
}

/// One final client frame. The mask key is 0: valid (clients must mask) and the payload
/// bytes stay as they are, so a template can be stamped in place.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x80 | opcode];
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
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(payload);
    v
}

/// An unmasked server frame (used by the self-check to play the server's part).
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = client_frame(opcode, payload);
    let hlen = v.len() - payload.len() - 4;
    v[1] &= 0x7f;
    v.drain(hlen..hlen + 4);
    v
}

/// A piece of one server frame's payload, in stream order.
pub struct Piece<'a> {
    /// The frame's opcode (a continuation frame reports its message's opcode).
    pub opcode: u8,
    /// Payload bytes (may be empty for an empty frame).
    pub data: &'a [u8],
    /// The first piece of this frame.
    pub first: bool,
    /// The last piece of this frame.
    pub last: bool,
}

/// Splits a server byte stream into frame payload pieces. State between reads is a few
/// header bytes; payload bytes are never copied.
#[derive(Default)]
pub struct Deframer {
    hdr: [u8; 14],
    hlen: usize,
    /// Payload bytes of the current frame still to come (`in_frame`).
    left: u64,
    in_frame: bool,
    first: bool,
    opcode: u8,
    /// Opcode of the message a continuation frame belongs to.
    msg_opcode: u8,
}

impl Deframer {
    /// Feeds bytes read from the socket; calls `on` for each payload piece.
    pub fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(Piece<'_>)) {
        while !data.is_empty() {
            if self.in_frame {
                let k = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                let (piece, rest) = data.split_at(k);
                self.left -= k as u64;
                let last = self.left == 0;
                on(Piece {
                    opcode: self.opcode,
                    data: piece,
                    first: self.first,
                    last,
                });
                self.first = false;
                self.in_frame = !last;
                data = rest;
                continue;
            }
            self.hdr[self.hlen] = data[0];
            self.hlen += 1;
            data = &data[1..];
            if self.hlen < 2 {
                continue;
            }
            let h = &self.hdr;
            let mask = if h[1] & 0x80 != 0 { 4 } else { 0 };
            let need = match h[1] & 0x7f {
                126 => 4,
                127 => 10,
                _ => 2,
            } + mask;
            if self.hlen < need {
                continue;
            }
            let len = match h[1] & 0x7f {
                126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                n => u64::from(n),
            };
            let raw_op = h[0] & 0x0f;
            let op = if raw_op == 0 { self.msg_opcode } else { raw_op };
            if raw_op != 0 && raw_op < 8 {
                self.msg_opcode = raw_op;
            }
            self.hlen = 0;
            self.opcode = op;
            if len == 0 {
                on(Piece {
                    opcode: op,
                    data: &[],
                    first: true,
                    last: true,
                });
            } else {
                self.left = len;
                self.in_frame = true;
                self.first = true;
            }
        }
    }
}
