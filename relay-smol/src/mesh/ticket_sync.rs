//! Ticket status snapshot on link-up: a relay that joins (or reconnects) late learns the
//! refreshes and revocations made before, instead of accepting a revoked ticket until it
//! expires.
//!
//! When a link's Hello arrives, the node calls [`TicketSync::link_up`]; each side then
//! sends the other its table of still-valid status records as [`TicketSnapshot`] parts
//! of at most [`MAX_TICKET_SNAPSHOT_RECORDS`] records, one part per link every
//! [`PART_EVERY`] (the first at once), from [`TicketSync::poll`]. Bounds:
//! - at most [`MAX_ACTIVE`] snapshots are in progress; further links wait in a FIFO
//!   (at most [`MAX_WAITING`]; beyond, the link is counted in `dropped` and learns only
//!   the records flooded from then on) and take their snapshot when their turn comes —
//!   records made meanwhile reach them by the normal flood, as their link is up;
//! - a snapshot holds at most [`MAX_SNAPSHOT_RECORDS`] records (twice the largest status
//!   table: a refresh and a revocation per ticket id).
//!
//! The receiver applies every record through the tickets layer's normal verification
//! (see `MeshNode`): bad signatures are refused and counted, known records stop there,
//! new ones are flooded on as `TicketStatus`.
//!
//! # Call order
//!
//! The shape of every mesh sub-machine (time is µs on the node's clock):
//! 1. inputs: [`TicketSync::handle_link_up`], [`TicketSync::handle_link_down`],
//!    [`TicketSync::handle_refused`] when a link did not take a part;
//! 2. outputs: drain [`TicketSync::poll_transmit`] (one encoded part at a time, each link at
//!    most once per [`PART_EVERY`]);
//! 3. re-arm at [`TicketSync::poll_timeout`].

use std::collections::VecDeque;

use fastpubsub_core::mesh::{self, MAX_TICKET_SNAPSHOT_RECORDS, Message, TicketSnapshot};
use serde::Serialize;

pub use super::limits::{
    TICKET_PART_EVERY_US as PART_EVERY, TICKET_SYNC_ACTIVE as MAX_ACTIVE,
    TICKET_SYNC_RECORDS as MAX_SNAPSHOT_RECORDS, TICKET_SYNC_WAITING as MAX_WAITING,
};
use super::link::LinkId;

/// Counters (in the status page under `counters.ticket_sync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncStats {
    /// Snapshots started (one per link-up, on a relay with a tickets layer).
    pub snapshots_started: u64,
    /// Snapshots whose last part was sent.
    pub snapshots_completed: u64,
    /// Snapshots not sent: too many links waiting.
    pub snapshots_dropped: u64,
    /// Parts handed to links (those a link refused included: see `parts_refused`).
    pub parts_sent: u64,
    /// Parts a link refused (it was going away, or its control backlog was full); that
    /// snapshot ends there.
    pub parts_refused: u64,
    /// Records sent in snapshots.
    pub records_sent: u64,
    /// Records received in snapshots.
    pub records_received: u64,
    /// Records received in snapshots that were new here (flooded on).
    pub records_new: u64,
    /// Records received in snapshots that the tickets layer refused.
    pub records_bad: u64,
    /// Snapshot parts received by a relay without a tickets layer (ignored).
    pub parts_ignored: u64,
}

struct Active {
    link: LinkId,
    records: VecDeque<Vec<u8>>,
    part: u16,
    next_at: u64,
}

/// The sending side of ticket snapshots, for all links. See the module docs.
pub struct TicketSync {
    waiting: VecDeque<LinkId>,
    active: Vec<Active>,
    buf: Vec<u8>,
    /// Counters; the node adds the receiving side's.
    pub stats: SyncStats,
}

impl Default for TicketSync {
    fn default() -> Self {
        Self::new()
    }
}

impl TicketSync {
    /// Nothing to send yet.
    pub fn new() -> Self {
        Self {
            waiting: VecDeque::new(),
            active: Vec::new(),
            buf: Vec::new(),
            stats: SyncStats::default(),
        }
    }

    /// The link `link` came up: send it a snapshot (from [`Self::poll_transmit`]).
    pub fn handle_link_up(&mut self, link: LinkId) {
        if self.waiting.contains(&link) || self.active.iter().any(|a| a.link == link) {
            return;
        }
        if self.waiting.len() >= MAX_WAITING {
            self.stats.snapshots_dropped += 1;
            log::warn!("mesh: too many links waiting for a ticket snapshot; one gets none");
            return;
        }
        self.waiting.push_back(link);
    }

    /// The link `link` is gone: forget what it was still to get.
    pub fn handle_link_down(&mut self, link: LinkId) {
        self.waiting.retain(|c| *c != link);
        self.active.retain(|a| a.link != link);
    }

    /// The link `link` did not take a part: its snapshot ends (counted).
    pub fn handle_refused(&mut self, link: LinkId) {
        self.stats.parts_refused += 1;
        self.active.retain(|a| a.link != link);
    }

    /// Links with a snapshot in progress or waiting.
    pub fn pending(&self) -> usize {
        self.waiting.len() + self.active.len()
    }

    /// When [`Self::poll_transmit`] has a part to send.
    pub fn poll_timeout(&self) -> Option<u64> {
        if !self.waiting.is_empty() && self.active.len() < MAX_ACTIVE {
            return Some(0); // a waiting snapshot can start now
        }
        self.active.iter().map(|a| a.next_at).min()
    }

    /// The next part due at `now`, encoded, for its link; starts waiting snapshots (taking
    /// each from `snapshot(max)` then). Each link gets at most one part per [`PART_EVERY`].
    pub fn poll_transmit(
        &mut self,
        now: u64,
        snapshot: &mut dyn FnMut(usize) -> Vec<Vec<u8>>,
    ) -> Option<(LinkId, Vec<u8>)> {
        self.activate(now, snapshot);
        if self.buf.len() < TicketSnapshot::MAX_LEN {
            self.buf = vec![0; TicketSnapshot::MAX_LEN];
        }
        loop {
            let i = self.active.iter().position(|a| a.next_at <= now)?;
            let a = self.active.get_mut(i)?;
            let n = a.records.len().min(MAX_TICKET_SNAPSHOT_RECORDS);
            let chunk: Vec<Vec<u8>> = a.records.drain(..n).collect();
            let mut records = heapless::Vec::new();
            for r in &chunk {
                let _ = records.push(r.as_slice());
            }
            let last = a.records.is_empty();
            let link = a.link;
            let msg = Message::TicketSnapshot(TicketSnapshot {
                part: a.part,
                last,
                records,
            });
            let frame = match mesh::encode(&msg, &mut self.buf) {
                Ok(frame) => Some(frame.to_vec()),
                Err(e) => {
                    // Records come from our own verified table: cannot happen; drop the part.
                    log::error!("mesh: cannot encode a ticket snapshot part: {e}");
                    None
                }
            };
            if frame.is_some() {
                self.stats.parts_sent += 1;
                self.stats.records_sent += n as u64;
            }
            if last {
                if frame.is_some() {
                    self.stats.snapshots_completed += 1;
                }
                self.active.swap_remove(i);
                self.activate(now, snapshot);
            } else if let Some(a) = self.active.get_mut(i) {
                a.part = a.part.saturating_add(1);
                a.next_at = now + PART_EVERY;
            }
            if let Some(frame) = frame {
                return Some((link, frame));
            }
        }
    }

    fn activate(&mut self, now: u64, snapshot: &mut dyn FnMut(usize) -> Vec<Vec<u8>>) {
        while self.active.len() < MAX_ACTIVE {
            let Some(link) = self.waiting.pop_front() else {
                break;
            };
            let mut records = snapshot(MAX_SNAPSHOT_RECORDS);
            records.truncate(MAX_SNAPSHOT_RECORDS);
            self.stats.snapshots_started += 1;
            self.active.push(Active {
                link,
                records: records.into(),
                part: 0,
                next_at: now,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(i: usize) -> LinkId {
        LinkId(i)
    }

    /// Every part due at `now`, decoded: (link, part, last, records).
    fn run(
        sync: &mut TicketSync,
        now: u64,
        table: &[Vec<u8>],
        out: &mut Vec<(usize, u16, bool, Vec<Vec<u8>>)>,
    ) {
        let mut snap = |max: usize| table.iter().take(max).cloned().collect::<Vec<_>>();
        while let Some((l, frame)) = sync.poll_transmit(now, &mut snap) {
            match mesh::decode(&frame) {
                Ok(Message::TicketSnapshot(s)) => out.push((
                    l.0,
                    s.part,
                    s.last,
                    s.records.iter().map(|r| r.to_vec()).collect(),
                )),
                other => panic!("not a snapshot: {other:?}"),
            }
        }
    }

    #[test]
    fn parts_are_paced_bounded_and_complete() {
        let table: Vec<Vec<u8>> = (0..70u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut s = TicketSync::new();
        let t0: u64 = 1_000_000;
        s.handle_link_up(link(1));
        s.handle_link_up(link(1)); // once per link
        assert_eq!(s.poll_timeout(), Some(0), "starts as soon as asked");
        let mut out = Vec::new();
        run(&mut s, t0, &table, &mut out);
        assert_eq!(out.len(), 1, "the first part goes at once");
        assert_eq!(s.poll_timeout(), Some(t0 + PART_EVERY));
        run(&mut s, t0 + PART_EVERY / 2, &table, &mut out);
        assert_eq!(out.len(), 1, "paced");
        run(&mut s, t0 + PART_EVERY, &table, &mut out);
        run(&mut s, t0 + PART_EVERY * 2, &table, &mut out);
        assert_eq!(s.poll_timeout(), None);
        let parts: Vec<(usize, u16, bool, usize)> = out
            .iter()
            .map(|(c, p, l, r)| (*c, *p, *l, r.len()))
            .collect();
        assert_eq!(
            parts,
            vec![(1, 0, false, 32), (1, 1, false, 32), (1, 2, true, 6)]
        );
        let all: Vec<Vec<u8>> = out.into_iter().flat_map(|x| x.3).collect();
        assert_eq!(all, table);
        assert_eq!(s.stats.snapshots_completed, 1);
        assert_eq!(s.stats.records_sent, 70);
    }

    #[test]
    fn empty_table_sends_one_empty_last_part() {
        let mut s = TicketSync::new();
        s.handle_link_up(link(3));
        let mut out = Vec::new();
        run(&mut s, 0, &[], &mut out);
        assert_eq!(out, vec![(3, 0, true, vec![])]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn at_most_max_active_then_the_waiting_follow() {
        let table: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut s = TicketSync::new();
        for i in 0..MAX_ACTIVE + 2 {
            s.handle_link_up(link(i));
        }
        let t0: u64 = 0;
        let mut out = Vec::new();
        run(&mut s, t0, &table, &mut out);
        assert_eq!(out.len(), MAX_ACTIVE, "one part for each active link");
        assert_eq!(s.stats.snapshots_started, MAX_ACTIVE as u64);
        // A link that goes away is dropped from the work.
        s.handle_link_down(link(0));
        let mut t = t0;
        for _ in 0..10 {
            t += PART_EVERY;
            run(&mut s, t, &table, &mut out);
        }
        assert_eq!(s.pending(), 0);
        let mut done: Vec<usize> = out.iter().filter(|x| x.2).map(|x| x.0).collect();
        done.sort_unstable();
        assert_eq!(done, (1..MAX_ACTIVE + 2).collect::<Vec<_>>());
        assert_eq!(s.stats.snapshots_started, (MAX_ACTIVE + 2) as u64);
    }

    #[test]
    fn a_refused_part_ends_that_snapshot() {
        let table: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut s = TicketSync::new();
        s.handle_link_up(link(1));
        let mut snap = |max: usize| table.iter().take(max).cloned().collect::<Vec<_>>();
        let (l, _) = s.poll_transmit(0, &mut snap).expect("first part");
        s.handle_refused(l);
        assert_eq!((s.pending(), s.stats.parts_refused), (0, 1));
        assert!(s.poll_transmit(PART_EVERY, &mut snap).is_none());
    }
}
