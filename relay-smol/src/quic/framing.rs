//! How mesh bytes sit in QUIC streams (pure functions, no QUIC types).
//!
//! - **Control stream** (one bidirectional stream per link): frames, each a 4-byte big-endian
//!   length then that many bytes, at most [`MAX_CONTROL_FRAME`]. [`split_control`] cuts
//!   complete frames off a receive buffer.
//! - **Message streams** (unidirectional, one per message or per batch): a stream that does
//!   not start with [`BATCH_TAG`] is one whole message (every mesh message starts with its
//!   kind tag, below [`BATCH_TAG`]). A stream that does is a *batch*: the tag, then messages,
//!   each a LEB128 length then its bytes. Batches are only sent on links that negotiated
//!   [`super::tls::MESH_ALPN_BATCH`]; [`BatchWriter`] builds them, [`split_batch`] reads them.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest control frame (length prefix excluded).
pub const MAX_CONTROL_FRAME: usize = 128 * 1024;
/// Bytes of the control frame length prefix.
pub const CONTROL_PREFIX: usize = 4;
/// First byte of a batch stream (mesh message kinds are small numbers, never this).
pub const BATCH_TAG: u8 = 0xff;
/// Largest LEB128 length prefix written by [`BatchWriter`] (lengths below 2^21).
pub const MAX_LEN_PREFIX: usize = 3;

/// A control frame length the peer sent was out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge(pub usize);

impl std::fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "control frame of {} bytes (at most {MAX_CONTROL_FRAME})",
            self.0
        )
    }
}

impl std::error::Error for FrameTooLarge {}

/// Appends one control frame (prefix and bytes) to `out`. `frame` must not be longer than
/// [`MAX_CONTROL_FRAME`] (the caller checks; longer frames are a caller bug).
pub fn put_control(out: &mut impl Extend<u8>, frame: &[u8]) {
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    out.extend(len.to_be_bytes());
    out.extend(frame.iter().copied());
}

/// Cuts every complete frame off the front of `buf`, handing each to `f` (zero-copy: the
/// frames share `buf`'s memory). Stops at the first incomplete frame.
pub fn split_control(buf: &mut BytesMut, mut f: impl FnMut(Bytes)) -> Result<(), FrameTooLarge> {
    loop {
        let Some(hdr) = buf.get(..CONTROL_PREFIX) else {
            return Ok(());
        };
        let mut len4 = [0u8; CONTROL_PREFIX];
        len4.copy_from_slice(hdr);
        let len = u32::from_be_bytes(len4) as usize;
        if len > MAX_CONTROL_FRAME {
            return Err(FrameTooLarge(len));
        }
        if buf.len() < CONTROL_PREFIX + len {
            return Ok(());
        }
        let _ = buf.split_to(CONTROL_PREFIX);
        f(buf.split_to(len).freeze());
    }
}

/// A batch stream's content was malformed (a length beyond the end or an overlong prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadBatch;

impl std::fmt::Display for BadBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed message batch")
    }
}

impl std::error::Error for BadBatch {}

/// Whether a complete message stream holds a batch.
pub fn is_batch(stream: &[u8]) -> bool {
    stream.first() == Some(&BATCH_TAG)
}

/// Hands every message of a complete batch stream (tag included) to `f`, zero-copy. On
/// error the messages before the bad one have been handed out.
pub fn split_batch(mut stream: Bytes, mut f: impl FnMut(Bytes)) -> Result<usize, BadBatch> {
    if !is_batch(&stream) {
        return Err(BadBatch);
    }
    let _ = stream.split_to(1);
    let mut n = 0;
    while !stream.is_empty() {
        let (len, used) = read_len(&stream).ok_or(BadBatch)?;
        let _ = stream.split_to(used);
        if len == 0 || len > stream.len() {
            return Err(BadBatch);
        }
        f(stream.split_to(len));
        n += 1;
    }
    Ok(n)
}

fn read_len(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, byte) in b.iter().take(MAX_LEN_PREFIX).enumerate() {
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Bytes a message of `len` bytes takes in a batch.
pub fn batched_len(len: usize) -> usize {
    len + match len {
        0..0x80 => 1,
        0x80..0x4000 => 2,
        _ => 3,
    }
}

/// Builds one batch stream's content.
#[derive(Debug)]
pub struct BatchWriter {
    buf: BytesMut,
    count: usize,
}

impl BatchWriter {
    /// An empty batch with room for `capacity` bytes (more grows the buffer).
    pub fn with_capacity(capacity: usize) -> Self {
        Self::in_buffer(BytesMut::with_capacity(capacity.max(1)))
    }

    /// An empty batch written into `buf` (cleared first), so one buffer's capacity serves
    /// batch after batch (see [`BatchWriter::finish_keep`]).
    pub fn in_buffer(mut buf: BytesMut) -> Self {
        buf.clear();
        buf.put_u8(BATCH_TAG);
        Self { buf, count: 0 }
    }

    /// Appends one message (1 ..= 2^21 - 1 bytes; others are a caller bug and skipped).
    pub fn push(&mut self, msg: &[u8]) {
        let len = msg.len();
        if len == 0 || len >= 1 << (7 * MAX_LEN_PREFIX) {
            return;
        }
        let mut v = len;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.put_u8(b);
                break;
            }
            self.buf.put_u8(b | 0x80);
        }
        self.buf.extend_from_slice(msg);
        self.count += 1;
    }

    /// Messages so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Bytes so far (tag included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no message was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The stream content.
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }

    /// The stream content, and the rest of the buffer's capacity for the next batch (no
    /// allocation while it lasts).
    pub fn finish_keep(mut self) -> (Bytes, BytesMut) {
        let batch = self.buf.split().freeze();
        (batch, self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_split_across_reads() {
        let mut wire = Vec::new();
        put_control(&mut wire, b"hello");
        put_control(&mut wire, b"");
        put_control(&mut wire, &[7u8; 300]);
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        // One byte at a time: frames come out only when complete.
        for b in &wire {
            buf.put_u8(*b);
            split_control(&mut buf, |f| got.push(f)).expect("valid");
        }
        assert_eq!(got.len(), 3);
        assert_eq!(&got[0][..], b"hello");
        assert!(got[1].is_empty());
        assert_eq!(got[2].len(), 300);
        assert!(buf.is_empty());
    }

    #[test]
    fn control_frame_too_large_is_an_error() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&((MAX_CONTROL_FRAME as u32) + 1).to_be_bytes());
        assert_eq!(
            split_control(&mut buf, |_| panic!("no frame")),
            Err(FrameTooLarge(MAX_CONTROL_FRAME + 1))
        );
    }

    #[test]
    fn batches_round_trip() {
        let msgs: Vec<Vec<u8>> = [1usize, 127, 128, 16_383, 16_384, 80 * 1024]
            .iter()
            .enumerate()
            .map(|(i, n)| vec![i as u8 + 1; *n])
            .collect();
        let mut w = BatchWriter::with_capacity(64);
        for m in &msgs {
            w.push(m);
        }
        assert_eq!(w.count(), msgs.len());
        let expect: usize = 1 + msgs.iter().map(|m| batched_len(m.len())).sum::<usize>();
        assert_eq!(w.len(), expect);
        let stream = w.finish();
        assert!(is_batch(&stream));
        let mut got = Vec::new();
        assert_eq!(
            split_batch(stream, |m| got.push(m.to_vec())),
            Ok(msgs.len())
        );
        assert_eq!(got, msgs);
    }

    #[test]
    fn bad_batches_are_refused() {
        for bad in [
            &[][..],
            &[8, 1, 2][..],                     // a single message, not a batch
            &[BATCH_TAG, 5, 1, 2][..],          // length beyond the end
            &[BATCH_TAG, 0][..],                // empty message
            &[BATCH_TAG, 0x80, 0x80, 0x80][..], // overlong prefix
            &[BATCH_TAG, 0x81][..],             // truncated prefix
        ] {
            assert_eq!(
                split_batch(Bytes::copy_from_slice(bad), |_| {}),
                Err(BadBatch),
                "{bad:?}"
            );
        }
        // An empty batch is valid (and carries nothing).
        assert_eq!(split_batch(Bytes::from_static(&[BATCH_TAG]), |_| {}), Ok(0));
    }
}
