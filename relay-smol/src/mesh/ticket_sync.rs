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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fastpubsub_core::mesh::{self, MAX_TICKET_SNAPSHOT_RECORDS, Message, TicketSnapshot};
use quinn_proto::ConnectionHandle;
use serde::Serialize;

use crate::quic::driver::MAX_CONNECTIONS;
use crate::tickets::MAX_STATUS_CAPACITY;

/// Snapshots sent at the same time.
pub const MAX_ACTIVE: usize = 4;
/// Links waiting for their snapshot.
pub const MAX_WAITING: usize = MAX_CONNECTIONS;
/// Records in one snapshot.
pub const MAX_SNAPSHOT_RECORDS: usize = 2 * MAX_STATUS_CAPACITY;
/// Pace: one part per link this often (32 records / 10 ms: the largest table, 16 384
/// records of ~110 bytes, goes in ~5 s at ~350 KB/s).
pub const PART_EVERY: Duration = Duration::from_millis(10);

/// Counters (in the status page under `counters.ticket_sync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SyncStats {
    /// Snapshots started (one per link-up, on a relay with a tickets layer).
    pub snapshots_started: u64,
    /// Snapshots whose last part was sent.
    pub snapshots_completed: u64,
    /// Snapshots not sent: too many links waiting.
    pub snapshots_dropped: u64,
    /// Parts sent.
    pub parts_sent: u64,
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
    conn: ConnectionHandle,
    records: VecDeque<Vec<u8>>,
    part: u16,
    next_at: Instant,
}

/// The sending side of ticket snapshots, for all links. See the module docs.
pub struct TicketSync {
    waiting: VecDeque<ConnectionHandle>,
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

    /// The link `conn` came up: send it a snapshot (from the next [`Self::poll`]).
    pub fn link_up(&mut self, conn: ConnectionHandle) {
        if self.waiting.contains(&conn) || self.active.iter().any(|a| a.conn == conn) {
            return;
        }
        if self.waiting.len() >= MAX_WAITING {
            self.stats.snapshots_dropped += 1;
            log::warn!("mesh: too many links waiting for a ticket snapshot; one gets none");
            return;
        }
        self.waiting.push_back(conn);
    }

    /// The link `conn` is gone: forget what it was still to get.
    pub fn link_down(&mut self, conn: ConnectionHandle) {
        self.waiting.retain(|c| *c != conn);
        self.active.retain(|a| a.conn != conn);
    }

    /// Links with a snapshot in progress or waiting.
    pub fn pending(&self) -> usize {
        self.waiting.len() + self.active.len()
    }

    /// When [`Self::poll`] has a part to send.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.active.iter().map(|a| a.next_at).min()
    }

    /// Start waiting snapshots (taking each from `snapshot(max)` now) and send every part
    /// that is due through `send(conn, frame)`, which says whether the link took it. At
    /// most one part per link per call.
    pub fn poll(
        &mut self,
        now: Instant,
        snapshot: &mut dyn FnMut(usize) -> Vec<Vec<u8>>,
        send: &mut dyn FnMut(ConnectionHandle, &[u8]) -> bool,
    ) {
        self.activate(now, snapshot);
        if self.buf.len() < TicketSnapshot::MAX_LEN {
            self.buf = vec![0; TicketSnapshot::MAX_LEN];
        }
        let mut i = 0;
        while let Some(a) = self.active.get_mut(i) {
            if a.next_at > now {
                i += 1;
                continue;
            }
            let n = a.records.len().min(MAX_TICKET_SNAPSHOT_RECORDS);
            let chunk: Vec<Vec<u8>> = a.records.drain(..n).collect();
            let mut records = heapless::Vec::new();
            for r in &chunk {
                let _ = records.push(r.as_slice());
            }
            let last = a.records.is_empty();
            let msg = Message::TicketSnapshot(TicketSnapshot {
                part: a.part,
                last,
                records,
            });
            let sent = match mesh::encode(&msg, &mut self.buf) {
                Ok(frame) => send(a.conn, frame),
                Err(e) => {
                    // Records come from our own verified table: cannot happen; drop the part.
                    log::error!("mesh: cannot encode a ticket snapshot part: {e}");
                    true
                }
            };
            if sent {
                self.stats.parts_sent += 1;
                self.stats.records_sent += n as u64;
            }
            if !sent || last {
                if sent {
                    self.stats.snapshots_completed += 1;
                }
                self.active.swap_remove(i);
                continue;
            }
            a.part = a.part.saturating_add(1);
            a.next_at = now + PART_EVERY;
            i += 1;
        }
        self.activate(now, snapshot);
    }

    fn activate(&mut self, now: Instant, snapshot: &mut dyn FnMut(usize) -> Vec<Vec<u8>>) {
        while self.active.len() < MAX_ACTIVE {
            let Some(conn) = self.waiting.pop_front() else {
                break;
            };
            let mut records = snapshot(MAX_SNAPSHOT_RECORDS);
            records.truncate(MAX_SNAPSHOT_RECORDS);
            self.stats.snapshots_started += 1;
            self.active.push(Active {
                conn,
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

    fn conn(i: usize) -> ConnectionHandle {
        ConnectionHandle(i)
    }

    /// Decoded parts per connection.
    fn run(
        sync: &mut TicketSync,
        now: Instant,
        table: &[Vec<u8>],
        out: &mut Vec<(usize, u16, bool, Vec<Vec<u8>>)>,
    ) {
        let mut snap = |max: usize| table.iter().take(max).cloned().collect::<Vec<_>>();
        let mut send = |c: ConnectionHandle, frame: &[u8]| {
            match mesh::decode(frame) {
                Ok(Message::TicketSnapshot(s)) => out.push((
                    c.0,
                    s.part,
                    s.last,
                    s.records.iter().map(|r| r.to_vec()).collect(),
                )),
                other => panic!("not a snapshot: {other:?}"),
            }
            true
        };
        sync.poll(now, &mut snap, &mut send);
    }

    #[test]
    fn parts_are_paced_bounded_and_complete() {
        let table: Vec<Vec<u8>> = (0..70u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut s = TicketSync::new();
        let t0 = crate::clock::now();
        s.link_up(conn(1));
        s.link_up(conn(1)); // once per link
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
        s.link_up(conn(3));
        let mut out = Vec::new();
        run(&mut s, crate::clock::now(), &[], &mut out);
        assert_eq!(out, vec![(3, 0, true, vec![])]);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn at_most_max_active_then_the_waiting_follow() {
        let table: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut s = TicketSync::new();
        for i in 0..MAX_ACTIVE + 2 {
            s.link_up(conn(i));
        }
        let t0 = crate::clock::now();
        let mut out = Vec::new();
        run(&mut s, t0, &table, &mut out);
        assert_eq!(out.len(), MAX_ACTIVE, "one part for each active link");
        assert_eq!(s.stats.snapshots_started, MAX_ACTIVE as u64);
        // A link that goes away is dropped from the work.
        s.link_down(conn(0));
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
    fn a_refused_send_ends_that_snapshot() {
        let table: Vec<Vec<u8>> = (0..40u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut s = TicketSync::new();
        s.link_up(conn(1));
        let mut snap = |max: usize| table.iter().take(max).cloned().collect::<Vec<_>>();
        let mut sent = 0;
        s.poll(crate::clock::now(), &mut snap, &mut |_, _| {
            sent += 1;
            false
        });
        assert_eq!((sent, s.pending(), s.stats.parts_sent), (1, 0, 0));
    }
}
