//! What a WebTransport session needs from the broker beyond a WebSocket connection: where
//! each subscription's deliveries go ([`Target`]), one queue per line and one for
//! datagrams ([`WtQueues`]).
//!
//! Every queue holds WebSocket-framed bytes exactly like the control queue (`OutQueue`), so
//! the fan-out encodes one way for both edges; the WebTransport session re-frames them as it
//! writes (`kind | len` on the control stream, `len` on a line, one datagram per frame).
//! Each queue is bounded by `Limits::queue_bytes` on its own: a stuck line drops (counted)
//! without holding up the control stream or the other lines.

use super::queue::{BufPool, OutQueue};

/// Lines per session (`:U:1` ..= `:U:8`).
pub const LINES: usize = 8;
/// Index of the datagram queue in [`WtQueues::queue`].
pub const DATAGRAM_QUEUE: usize = LINES;
/// Largest deliver frame written to a WebTransport session (the SDK's `WT_MAX_PAYLOAD`);
/// larger ones are skipped for that session and counted (`Stats::dropped_wt_oversize`).
pub const MAX_WT_FRAME: usize = 65_536;

/// Where a subscription's deliveries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// The connection's own stream (WebSocket, or the WebTransport control stream).
    #[default]
    Control,
    /// A WebTransport line, 1..=8 (0 when asking: the relay picks).
    Line(u8),
    /// WebTransport datagrams; a frame too large for one goes on the control stream.
    Datagram,
}

/// The extra queues of a WebTransport session.
#[derive(Debug, Default)]
pub struct WtQueues {
    /// Lines 1..=8 at index 0..=7, then datagrams.
    queues: [OutQueue; LINES + 1],
    /// Subscriptions per line (the relay picks the least used one for `:U:0`).
    subs_per_line: [u16; LINES],
    /// Largest deliver frame that fits one datagram (set by the session from QUIC).
    datagram_max: usize,
}

impl WtQueues {
    /// Queue `i` (0..=7 lines, [`DATAGRAM_QUEUE`]).
    pub fn queue(&self, i: usize) -> Option<&OutQueue> {
        self.queues.get(i)
    }

    pub(super) fn queue_mut(&mut self, i: usize) -> Option<&mut OutQueue> {
        self.queues.get_mut(i)
    }

    /// Is every extra queue empty?
    pub fn all_empty(&self) -> bool {
        self.queues.iter().all(OutQueue::is_empty)
    }

    /// Bytes of heap the queues hold.
    pub fn capacity(&self) -> usize {
        self.queues.iter().map(OutQueue::capacity).sum()
    }

    /// Sets the largest deliver frame that fits a datagram (0: datagrams unavailable).
    pub fn set_datagram_max(&mut self, n: usize) {
        self.datagram_max = n;
    }

    pub(super) fn datagram_max(&self) -> usize {
        self.datagram_max
    }

    /// Resolves `Line(0)` to the least used line and counts the subscription on its line.
    pub(super) fn add_sub(&mut self, target: Target) -> Target {
        let Target::Line(asked) = target else {
            return target;
        };
        let line = if asked == 0 {
            let (i, _) = self
                .subs_per_line
                .iter()
                .enumerate()
                .min_by_key(|(_, n)| **n)
                .unwrap_or((0, &0));
            i as u8 + 1
        } else {
            asked.min(LINES as u8)
        };
        if let Some(n) = self.subs_per_line.get_mut(usize::from(line - 1)) {
            *n = n.saturating_add(1);
        }
        Target::Line(line)
    }

    pub(super) fn remove_sub(&mut self, target: Target) {
        if let Target::Line(l) = target
            && let Some(n) = self.subs_per_line.get_mut(usize::from(l).saturating_sub(1))
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Drops everything queued and not started (closing), and hands drained buffers back.
    pub(super) fn discard(&mut self, pool: &mut BufPool) {
        for q in &mut self.queues {
            q.discard_unstarted();
            if q.is_empty() {
                q.consume(0, pool);
            }
        }
    }

    /// Hands every buffer back (the session is gone).
    pub(super) fn release(&mut self, pool: &mut BufPool) {
        for q in &mut self.queues {
            q.consume(usize::MAX, pool);
        }
    }
}
