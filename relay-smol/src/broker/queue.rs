//! A connection's outbound byte queue: complete WebSocket frames, written by the fan-out and
//! drained by the connection's task in as few `write` calls as possible (coalescing).
//!
//! The buffer is allocated lazily when the first frame is queued and handed back to a small
//! shared [`BufPool`] as soon as it drains, so an idle connection holds no buffer at all and
//! steady traffic allocates nothing. A buffer grows by doubling only up to the pool's
//! `limits::queue_grow_cap`; beyond it, to exactly what is needed (so its capacity stays within the
//! connection's budget plus one frame, as `docs/edge.md` states).

use crate::wsframe::{self, MAX_HEADER_LEN};

/// Spare queue buffers shared by all connections (bounded in count and per-buffer size).
#[derive(Debug)]
pub struct BufPool {
    bufs: Vec<Vec<u8>>,
    max_count: usize,
    max_capacity: usize,
}

impl BufPool {
    /// A pool keeping at most `max_count` buffers of at most `max_capacity` bytes each.
    pub fn new(max_count: usize, max_capacity: usize) -> Self {
        BufPool {
            bufs: Vec::new(),
            max_count,
            max_capacity,
        }
    }

    fn take(&mut self) -> Vec<u8> {
        self.bufs.pop().unwrap_or_default()
    }

    fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > 0
            && buf.capacity() <= self.max_capacity
            && self.bufs.len() < self.max_count
        {
            buf.clear();
            self.bufs.push(buf);
        }
    }

    /// Bytes held by spare buffers.
    pub fn held_bytes(&self) -> usize {
        self.bufs.iter().map(Vec::capacity).sum()
    }
}

/// Outbound WebSocket frames of one connection. Holds only whole frames; `off` marks how
/// far the socket has taken them.
#[derive(Debug, Default)]
pub struct OutQueue {
    buf: Vec<u8>,
    off: usize,
    /// Start of the frame that contains `off` (so a close can cut after it).
    frame_start: usize,
}

impl OutQueue {
    /// Bytes not yet written to the socket.
    pub fn queued(&self) -> usize {
        self.buf.len() - self.off
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.off == self.buf.len()
    }

    /// The bytes to write next.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.off..).unwrap_or(&[])
    }

    /// Bytes of heap the queue holds.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// The socket took `n` bytes. When the queue drains, its buffer goes back to `pool`.
    pub fn consume(&mut self, n: usize, pool: &mut BufPool) {
        self.off = self.off.saturating_add(n).min(self.buf.len());
        if self.off == self.buf.len() {
            pool.give(std::mem::take(&mut self.buf));
            self.off = 0;
            self.frame_start = 0;
            return;
        }
        while self.frame_start < self.off {
            match self
                .buf
                .get(self.frame_start..)
                .and_then(wsframe::server_frame_len)
            {
                Some(len) if self.frame_start + len <= self.off => self.frame_start += len,
                _ => break,
            }
        }
    }

    /// Makes room for `n` more bytes, taking a buffer from `pool` if none is held and
    /// compacting already-written bytes away when that avoids a reallocation.
    fn reserve(&mut self, n: usize, pool: &mut BufPool) {
        if self.buf.capacity() == 0 {
            self.buf = pool.take();
        }
        if self.buf.len() + n > self.buf.capacity() && self.frame_start > 0 {
            self.buf.drain(..self.frame_start);
            self.off -= self.frame_start;
            self.frame_start = 0;
        }
        let len = self.buf.len();
        let cap = self.buf.capacity();
        if len + n > cap {
            let target = cap
                .saturating_mul(2)
                .max(256)
                .min(pool.max_capacity)
                .max(len + n);
            self.buf.reserve_exact(target - len);
        }
    }

    /// Appends one unmasked final frame whose payload is produced by `fill` (which must
    /// push exactly `payload_len` bytes through the sink it is given).
    pub fn push_frame(
        &mut self,
        opcode: u8,
        payload_len: usize,
        pool: &mut BufPool,
        fill: impl FnOnce(&mut dyn FnMut(&[u8])),
    ) {
        let (hdr, hlen) = wsframe::server_header(opcode, payload_len);
        self.reserve(hlen + payload_len, pool);
        self.buf.extend_from_slice(hdr.get(..hlen).unwrap_or(&[]));
        let start = self.buf.len();
        let buf = &mut self.buf;
        fill(&mut |piece: &[u8]| buf.extend_from_slice(piece));
        debug_assert_eq!(self.buf.len() - start, payload_len);
    }

    /// Appends one unmasked final frame whose payload is `head` followed by what `tail`
    /// pushes (exactly `payload_len` bytes in all). The fan-out's path: the part of a deliver
    /// frame shared by every receiver is copied once per receiver, and `tail` (that
    /// receiver's pattern list) is inlined, not called through a `dyn` sink.
    pub fn push_frame_head(
        &mut self,
        opcode: u8,
        payload_len: usize,
        pool: &mut BufPool,
        head: &[u8],
        tail: impl FnOnce(&mut Vec<u8>),
    ) {
        let (hdr, hlen) = wsframe::server_header(opcode, payload_len);
        self.reserve(hlen + payload_len, pool);
        self.buf.extend_from_slice(hdr.get(..hlen).unwrap_or(&[]));
        let start = self.buf.len();
        self.buf.extend_from_slice(head);
        tail(&mut self.buf);
        debug_assert_eq!(self.buf.len() - start, payload_len);
    }

    /// Appends a frame with a ready payload.
    pub fn push_simple(&mut self, opcode: u8, payload: &[u8], pool: &mut BufPool) {
        self.push_frame(opcode, payload.len(), pool, |sink| sink(payload));
    }

    /// Drops every queued frame the socket has not started to write (used when closing a
    /// connection: what a slow consumer could not take is discarded). The frame being
    /// written stays, so the stream remains valid.
    pub fn discard_unstarted(&mut self) {
        if self.is_empty() {
            return;
        }
        let cut = if self.off == self.frame_start {
            self.off
        } else {
            match self
                .buf
                .get(self.frame_start..)
                .and_then(wsframe::server_frame_len)
            {
                Some(len) => self.frame_start + len,
                None => self.buf.len(),
            }
        };
        self.buf.truncate(cut.max(self.off));
    }
}

/// Bytes a frame with `payload_len` bytes takes in the queue.
pub fn framed_len(payload_len: usize) -> usize {
    wsframe::server_header(wsframe::OP_BINARY, payload_len).1 + payload_len
}

const _: () = assert!(MAX_HEADER_LEN == 10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wsframe::OP_BINARY;

    #[test]
    fn drain_releases_and_discard_keeps_started_frame() {
        let mut pool = BufPool::new(4, 1 << 20);
        let mut q = OutQueue::default();
        assert_eq!(q.capacity(), 0);
        q.push_simple(OP_BINARY, &[1; 300], &mut pool);
        q.push_simple(OP_BINARY, &[2; 10], &mut pool);
        assert_eq!(q.queued(), 304 + 12);
        q.consume(100, &mut pool); // inside frame 1
        q.discard_unstarted();
        assert_eq!(q.queued(), 204);
        q.consume(204, &mut pool);
        assert!(q.is_empty());
        assert_eq!(q.capacity(), 0);
        assert!(pool.held_bytes() > 0);
    }

    #[test]
    fn growth_stops_doubling_at_the_cap() {
        let mut pool = BufPool::new(4, 10_000);
        let mut q = OutQueue::default();
        for _ in 0..9 {
            q.push_simple(OP_BINARY, &[1; 1000], &mut pool);
        }
        // Doubling would have given 16 KiB; the cap keeps it at 10,000.
        assert_eq!(q.queued(), 9 * 1004);
        assert!(q.capacity() <= 10_000, "{}", q.capacity());
        // Past the cap a buffer grows to exactly what is needed.
        q.push_simple(OP_BINARY, &[1; 1000], &mut pool);
        q.push_simple(OP_BINARY, &[1; 1000], &mut pool);
        assert!(q.capacity() < 11 * 1004 + 1004, "{}", q.capacity());
    }

    #[test]
    fn consume_tracks_boundaries_and_compacts() {
        let mut pool = BufPool::new(4, 1 << 20);
        let mut q = OutQueue::default();
        for i in 0..10u8 {
            q.push_simple(OP_BINARY, &[i; 50], &mut pool);
        }
        q.consume(52 * 3, &mut pool); // exactly three frames
        q.discard_unstarted();
        assert_eq!(q.queued(), 0);
        assert!(q.is_empty());
        for i in 0..3u8 {
            q.push_simple(OP_BINARY, &[i; 50], &mut pool);
        }
        q.consume(60, &mut pool);
        q.push_simple(OP_BINARY, &[9; 5000], &mut pool); // forces a compaction
        let p = q.pending();
        assert_eq!(p.len(), 52 * 3 - 60 + 5004);
        assert_eq!(p[p.len() - 1], 9);
    }
}
