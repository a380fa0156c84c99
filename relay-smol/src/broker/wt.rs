//! What a WebTransport session needs from the broker beyond a WebSocket connection: where
//! each subscription's deliveries go ([`Target`]), one queue per line and one for
//! datagrams ([`WtQueues`]).
//!
//! Every queue holds WebSocket-framed bytes exactly like the control queue (`OutQueue`), so
//! the fan-out encodes one way for both edges; the WebTransport session re-frames them as it
//! writes (`kind | len` on the control stream, `len` on a line, one datagram per frame).
//! All of a session's queues share the connection's one byte budget (`Limits::queue_bytes`),
//! and one line (or the datagram queue) may fill at most half of it: a stuck line drops
//! (counted) while the control stream and the other lines go on.

use super::limiter::TokenBucket;
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
    /// Per subscription slot (the broker's index into the connection's subscriptions): its
    /// target and its own egress limit.
    opts: Vec<(Target, Option<TokenBucket>)>,
}

impl WtQueues {
    /// Queue `i` (0..=7 lines, [`DATAGRAM_QUEUE`]).
    pub fn queue(&self, i: usize) -> Option<&OutQueue> {
        self.queues.get(i)
    }

    pub(super) fn queue_mut(&mut self, i: usize) -> Option<&mut OutQueue> {
        self.queues.get_mut(i)
    }

    /// Bytes queued on the extra queues, not yet taken by the session.
    pub fn queued(&self) -> usize {
        self.queues.iter().map(OutQueue::queued).sum()
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

    /// Records the options of subscription `slot`: resolves `Line(0)` to the least used
    /// line and counts the subscription on its line. Returns the target in use.
    pub(super) fn add_sub(
        &mut self,
        slot: usize,
        target: Target,
        rate: Option<TokenBucket>,
    ) -> Target {
        let target = match target {
            Target::Line(asked) => {
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
            t => t,
        };
        if self.opts.len() <= slot {
            self.opts.resize(slot + 1, (Target::Control, None));
        }
        if let Some(o) = self.opts.get_mut(slot) {
            *o = (target, rate);
        }
        target
    }

    /// Applies new options to subscription `slot` (a `SUB` again): `Line(0)` keeps the line
    /// it is on; anything else moves it. Frames already queued stay where they are.
    pub(super) fn retarget(
        &mut self,
        slot: usize,
        target: Target,
        rate: Option<TokenBucket>,
    ) -> Target {
        let target = match (target, self.target_of(slot)) {
            (Target::Line(0), Target::Line(l)) => Target::Line(l),
            (t, _) => t,
        };
        self.remove_sub(slot);
        self.add_sub(slot, target, rate)
    }

    /// Forgets the options of subscription `slot`.
    pub(super) fn remove_sub(&mut self, slot: usize) {
        let Some(o) = self.opts.get_mut(slot) else {
            return;
        };
        if let Target::Line(l) = o.0
            && let Some(n) = self.subs_per_line.get_mut(usize::from(l).saturating_sub(1))
        {
            *n = n.saturating_sub(1);
        }
        *o = (Target::Control, None);
        while self
            .opts
            .last()
            .is_some_and(|o| o.0 == Target::Control && o.1.is_none())
        {
            self.opts.pop();
        }
    }

    /// The target of subscription `slot`.
    pub(super) fn target_of(&self, slot: usize) -> Target {
        self.opts.get(slot).map_or(Target::Control, |o| o.0)
    }

    /// The own egress limit of subscription `slot`, if it has one.
    pub(super) fn rate_of(&mut self, slot: usize) -> Option<&mut TokenBucket> {
        self.opts.get_mut(slot).and_then(|o| o.1.as_mut())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fastpubsub_core::frame::Mode;

    use super::super::{Broker, Target};
    use super::*;
    use crate::auth::AllowAll;
    use crate::limits::Limits;

    fn broker(queue_bytes: usize) -> Broker {
        let limits = Limits {
            queue_bytes,
            slow_consumer_grace: Duration::from_secs(3600),
            ..Limits::default()
        };
        Broker::new(limits, crate::clock::now())
    }

    #[test]
    fn one_frame_per_target_and_lines_picked_by_load() {
        let mut b = broker(1 << 20);
        let s = b.register_wt(Box::new(AllowAll)).unwrap();
        let ws = b.register(Box::new(AllowAll)).unwrap();
        assert_eq!(
            b.subscribe_to(s, "t", "a.#", Target::Control, 0).unwrap(),
            (true, Target::Control)
        );
        assert_eq!(
            b.subscribe_to(s, "t", "a.*", Target::Line(0), 0).unwrap(),
            (true, Target::Line(1))
        );
        assert_eq!(
            b.subscribe_to(s, "t", "a.b", Target::Line(0), 0).unwrap(),
            (true, Target::Line(2))
        );
        assert_eq!(
            b.subscribe_to(s, "t", "*.b", Target::Line(2), 0).unwrap(),
            (true, Target::Line(2))
        );
        assert_eq!(
            b.subscribe_to(s, "t", "#", Target::Datagram, 0).unwrap(),
            (true, Target::Datagram)
        );
        // Asking again with `:U:0` keeps the line; other options move the subscription.
        assert_eq!(
            b.subscribe_to(s, "t", "a.*", Target::Line(0), 0).unwrap(),
            (false, Target::Line(1))
        );
        assert_eq!(
            b.subscribe_to(s, "t", "a.*", Target::Line(7), 0).unwrap(),
            (false, Target::Line(7))
        );
        assert_eq!(
            b.subscribe_to(s, "t", "a.*", Target::Line(0), 0).unwrap(),
            (false, Target::Line(7))
        );
        assert_eq!(
            b.subscribe_to(s, "t", "a.*", Target::Line(1), 0).unwrap(),
            (false, Target::Line(1))
        );
        // The moves kept the per-line counts: lines 1 and 2 are in use, 3 is the least used.
        assert_eq!(
            b.subscribe_to(s, "t", "x.y", Target::Line(0), 0).unwrap(),
            (true, Target::Line(3))
        );
        b.unsubscribe(s, "t", "x.y");
        // A WebSocket connection ignores targets.
        assert_eq!(
            b.subscribe_to(ws, "t", "a.b", Target::Line(3), 0).unwrap(),
            (true, Target::Control)
        );
        if let Some(w) = b.conn_mut(s).and_then(|c| c.wt_mut()) {
            w.set_datagram_max(1200);
        }
        // Two connections; five frames (four targets of the session, one WebSocket frame).
        assert_eq!(b.publish(ws, "t", "a.b", b"x", Mode::Broadcast), Ok(2));
        // control: a.#; line 1: a.*; line 2: a.b + *.b in one frame; datagram: #.
        let frames = |bytes: &[u8]| {
            let mut n = 0;
            let mut rest = bytes;
            while let Some(len) = crate::wsframe::server_frame_len(rest) {
                n += 1;
                rest = &rest[len..];
            }
            n
        };
        assert_eq!(frames(b.conn_mut(s).unwrap().pending()), 1);
        assert_eq!(frames(b.wt_pending(s, 0)), 1);
        assert_eq!(frames(b.wt_pending(s, 1)), 1);
        let line2 = b.wt_pending(s, 1).to_vec();
        let (_, hlen) = crate::wsframe::server_header(crate::wsframe::OP_BINARY, 0);
        let d = fastpubsub_core::frame::DeliverView::new_checked(&line2[hlen..]).unwrap();
        let mut pats: Vec<&str> = d.patterns().collect();
        pats.sort();
        assert_eq!(pats, ["*.b", "a.b"]);
        assert_eq!(frames(b.wt_pending(s, DATAGRAM_QUEUE)), 1);
        assert_eq!(b.stats().delivered, 5);
    }

    #[test]
    fn each_queue_is_bounded_on_its_own() {
        let mut b = broker(3000);
        let s = b.register_wt(Box::new(AllowAll)).unwrap();
        b.subscribe_to(s, "t", "stuck", Target::Line(3), 0).unwrap();
        b.subscribe_to(s, "t", "fine", Target::Control, 0).unwrap();
        let p = [0u8; 1000];
        let mut stuck = 0;
        for _ in 0..10 {
            stuck += b.publish(s, "t", "stuck", &p, Mode::Broadcast).unwrap();
            // The control stream drains; the line does not.
            assert_eq!(b.publish(s, "t", "fine", &p, Mode::Broadcast), Ok(1));
            let n = b.conn_mut(s).unwrap().pending().len();
            b.consumed(s, n);
        }
        assert_eq!(
            stuck, 1,
            "line 3 may fill half of the 3000-byte budget: one 1 KB frame"
        );
        assert_eq!(b.stats().dropped_queue_full, 9);
        assert_eq!(b.stats().dropped_wt_line_full, 9);
        assert_eq!(b.stats().dropped_wt_control_full, 0);
        assert_eq!(b.conn_mut(s).unwrap().dropped(), 9);
        // Draining the line clears the slow state; it takes deliveries again.
        let n = b.wt_pending(s, 2).len();
        b.wt_consumed(s, 2, n);
        assert_eq!(b.publish(s, "t", "stuck", &p, Mode::Broadcast), Ok(1));
    }

    #[test]
    fn oversize_frames_are_skipped_for_webtransport_only() {
        let mut b = broker(1 << 20);
        let s = b.register_wt(Box::new(AllowAll)).unwrap();
        let ws = b.register(Box::new(AllowAll)).unwrap();
        b.subscribe_to(s, "t", "big", Target::Control, 0).unwrap();
        b.subscribe(ws, "t", "big").unwrap();
        let p = vec![0u8; 65_536];
        assert_eq!(b.publish(ws, "t", "big", &p, Mode::Broadcast), Ok(1));
        assert_eq!(b.stats().dropped_wt_oversize, 1);
        // 65,523 − |t| − |ch| − |pattern| fits exactly.
        let p = vec![0u8; 65_523 - 1 - 3 - 3];
        assert_eq!(b.publish(ws, "t", "big", &p, Mode::Broadcast), Ok(2));
    }

    #[test]
    fn per_subscription_rate_limits() {
        let mut b = broker(1 << 20);
        let s = b.register_wt(Box::new(AllowAll)).unwrap();
        b.subscribe_to(s, "t", "r", Target::Line(1), 8).unwrap(); // 8 KB/s
        let p = [0u8; 1000];
        let sent: usize = (0..20)
            .map(|_| b.publish(s, "t", "r", &p, Mode::Broadcast).unwrap())
            .sum();
        assert!(
            (7..=8).contains(&sent),
            "{sent} of 20 within one second's burst"
        );
        assert_eq!(b.stats().dropped_egress_rate, 20 - sent as u64);
    }
}
