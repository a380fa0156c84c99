//! What is flooded on every link:
//! - interest: local changes are numbered and flooded; remote ones applied in order and
//!   flooded on; gaps ask for a snapshot; a new link gets snapshots of everything;
//! - ticket status records: made here (from the tickets layer) or new here, flooded on;
//!   a new link gets this relay's records in force ([`crate::mesh::ticket_sync`]);
//! - announcements: this relay's summary periodically and on link changes; others' are
//!   judged by [`AnnounceTable`](crate::mesh::announce::AnnounceTable) (newest per origin,
//!   rate, bounds), handed to the hook and flooded on; a new link gets every held one.

use bytes::Bytes;
use fastpubsub_core::mesh::{
    self, InterestChange, InterestEntry, InterestSnapshot, InterestSnapshotRequest, InterestUpdate,
    MAX_SNAPSHOT_ENTRIES, Message,
};

use super::{MeshNode, TransmitKind};
use crate::mesh::announce::Verdict;
use crate::mesh::hooks::{AnnounceApplied, TicketApplied};
use crate::mesh::interest::{Applied, InterestTransmit};
use crate::mesh::link::LinkId;
use crate::mesh::time::jittered;

impl MeshNode {
    // ----- interest ----------------------------------------------------------------

    pub(super) fn on_local_interest(
        &mut self,
        tenant: &str,
        pattern: &str,
        present: bool,
        _now: u64,
    ) {
        let Some(seq) = self.interest.handle_local_change(tenant, pattern, present) else {
            return;
        };
        let mut changes = heapless::Vec::new();
        let _ = changes.push(InterestChange {
            added: present,
            entry: InterestEntry { tenant, pattern },
        });
        let name = self.cfg.name.clone();
        let msg = Message::InterestUpdate(InterestUpdate {
            origin: &name,
            epoch: self.epoch,
            seq,
            changes,
        });
        if let Some(b) = self.encode(&msg) {
            self.flood(&b, None);
        }
    }

    pub(super) fn on_interest_update(
        &mut self,
        link: LinkId,
        u: &InterestUpdate<'_>,
        frame: &[u8],
        now: u64,
    ) {
        self.learn_name(u.origin);
        if self
            .interest
            .handle_update(link, u.origin, u.epoch, u.seq, &u.changes, now)
            == Applied::New
        {
            self.flood(&Bytes::copy_from_slice(frame), Some(link));
        }
        self.drain_interest();
    }

    pub(super) fn on_interest_snapshot(
        &mut self,
        link: LinkId,
        s: &InterestSnapshot<'_>,
        now: u64,
    ) {
        self.learn_name(s.origin);
        let replaced = self.interest.handle_snapshot(
            now,
            s.origin,
            s.epoch,
            s.seq,
            s.part,
            s.last,
            s.entries
                .iter()
                .map(|e| (e.tenant.to_owned(), e.pattern.to_owned())),
        );
        if replaced {
            // Neighbours may have missed the same changes: pass the news on.
            let origin = s.origin.to_owned();
            for (c, _) in self.up_links() {
                if c != link {
                    self.send_snapshot(c, &origin);
                }
            }
        }
    }

    /// Send what the interest table asked for (snapshot requests and answers).
    pub(super) fn drain_interest(&mut self) {
        while let Some(t) = self.interest.poll_transmit() {
            match t {
                InterestTransmit::Request { link, origin } => {
                    let req = Message::InterestSnapshotRequest(InterestSnapshotRequest {
                        origin: &origin,
                    });
                    self.send_control(link, &req);
                }
                InterestTransmit::Snapshot { link, origin } => self.send_snapshot(link, &origin),
            }
        }
    }

    /// The interest of `origin` as snapshot parts on `link`.
    fn send_snapshot(&mut self, link: LinkId, origin: &str) {
        let Some(o) = self.interest.get(origin) else {
            return;
        };
        let (epoch, seq) = (o.epoch, o.seq);
        let entries: Vec<(String, String)> = o.entries.iter().cloned().collect();
        let chunks: Vec<&[(String, String)]> = if entries.is_empty() {
            vec![&[]]
        } else {
            entries.chunks(MAX_SNAPSHOT_ENTRIES).collect()
        };
        let last_i = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut list = heapless::Vec::new();
            for (t, p) in chunk {
                let _ = list.push(InterestEntry {
                    tenant: t,
                    pattern: p,
                });
            }
            let msg = Message::InterestSnapshot(InterestSnapshot {
                origin,
                epoch,
                seq,
                part: u16::try_from(i).unwrap_or(u16::MAX),
                last: i == last_i,
                entries: list,
            });
            self.send_control(link, &msg);
        }
    }

    /// A new link gets the interest of every relay known here: this relay's own always (a
    /// restarted relay's empty snapshot clears what its neighbours held of its old epoch),
    /// others' unless they never had any (seq 0: nothing to learn; the first change of
    /// such a relay, seq 1, applies without a snapshot).
    pub(super) fn send_all_snapshots(&mut self, link: LinkId) {
        let me = self.cfg.name.as_str();
        let origins: Vec<String> = self
            .interest
            .origins()
            .filter(|(n, o)| *n == me || o.seq > 0 || !o.entries.is_empty())
            .map(|(n, _)| n.to_owned())
            .collect();
        for o in origins {
            self.send_snapshot(link, &o);
        }
    }

    // ----- ticket status -----------------------------------------------------------

    /// Flood the records the tickets layer made since the last call.
    pub(super) fn flood_tickets(&mut self, _now: u64) {
        let Some(hook) = self.ticket_hook.as_mut() else {
            return;
        };
        let records = hook.drain_outgoing(64);
        for r in records {
            self.flood_record(&r, None);
        }
    }

    /// Flood `record` from here (a new `TicketStatus` of ours) to every link but `except`.
    fn flood_record(&mut self, record: &[u8], except: Option<LinkId>) {
        self.ticket_seq += 1;
        let seq = (u64::from(self.epoch) << 32) | (self.ticket_seq & 0xffff_ffff);
        let name = self.cfg.name.clone();
        self.ticket_dedup.first_time(&name, seq);
        let msg = Message::TicketStatus(mesh::TicketStatus {
            origin: &name,
            seq,
            record,
        });
        self.stats.ticket_records_sent += 1;
        if let Some(b) = self.encode(&msg) {
            self.flood(&b, except);
        }
    }

    /// Send due ticket snapshot parts to links that came up.
    pub(super) fn sync_tickets(&mut self, now: u64) {
        let Some(hook) = self.ticket_hook.as_mut() else {
            return;
        };
        let mut parts = Vec::new();
        while let Some(p) = self
            .ticket_sync
            .poll_transmit(now, &mut |max| hook.snapshot(max))
        {
            parts.push(p);
        }
        for (link, frame) in parts {
            self.transmit(link, TransmitKind::Control, Bytes::from(frame));
        }
    }

    /// A part of a neighbour's ticket snapshot: apply each record through the normal
    /// verification; flood on (as our own `TicketStatus`) those that were new here.
    pub(super) fn on_ticket_snapshot(
        &mut self,
        link: LinkId,
        snap: &mesh::TicketSnapshot<'_>,
        _now: u64,
    ) {
        let Some(hook) = self.ticket_hook.as_mut() else {
            // Nothing to check the records against: relays behind us get their own
            // snapshots from their neighbours that have a tickets layer.
            self.ticket_sync.stats.parts_ignored += 1;
            return;
        };
        let mut new = Vec::new();
        for r in &snap.records {
            self.ticket_sync.stats.records_received += 1;
            match hook.apply_remote(r) {
                TicketApplied::New => new.push(*r),
                TicketApplied::Bad => {
                    self.stats.ticket_records_bad += 1;
                    self.ticket_sync.stats.records_bad += 1;
                }
                _ => {}
            }
        }
        for r in new {
            self.stats.ticket_records_new += 1;
            self.ticket_sync.stats.records_new += 1;
            self.flood_record(r, Some(link));
        }
    }

    pub(super) fn on_ticket_status(
        &mut self,
        link: LinkId,
        t: &mesh::TicketStatus<'_>,
        frame: &[u8],
        _now: u64,
    ) {
        if !self.ticket_dedup.first_time(t.origin, t.seq) {
            return;
        }
        let applied = match self.ticket_hook.as_mut() {
            Some(h) => h.apply_remote(t.record),
            // No tickets layer here: pass it on for the relays behind us.
            None => TicketApplied::New,
        };
        match applied {
            TicketApplied::New => {
                self.stats.ticket_records_new += 1;
                self.flood(&Bytes::copy_from_slice(frame), Some(link));
            }
            TicketApplied::Bad => self.stats.ticket_records_bad += 1,
            _ => {}
        }
    }

    // ----- announcements -----------------------------------------------------------

    /// Flood this relay's own announcement when due.
    pub(super) fn announce_due(&mut self, now: u64) {
        let Some(seq) = self.announce.poll_transmit(now) else {
            return;
        };
        // Without a hook (no dashboard) there is nothing to announce: only forward others'.
        let body = if self.announce_hook.is_some() {
            let status = self.status(now);
            self.announce_hook
                .as_mut()
                .and_then(|h| h.local_body(&status, seq))
        } else {
            None
        };
        let Some(body) = body.filter(|b| !b.is_empty() && b.len() <= mesh::MAX_ANNOUNCE_BODY)
        else {
            self.announce.handle_skipped(now);
            return;
        };
        let name = self.cfg.name.clone();
        let msg = Message::Announce(mesh::Announce {
            origin: &name,
            seq,
            body: &body,
        });
        if let Some(b) = self.encode(&msg) {
            self.flood(&b, None);
        }
        let next = jittered(self.announce.config().interval_us, &mut self.rng);
        self.announce.handle_sent_own(seq, &body, now, next);
    }

    pub(super) fn on_announce(
        &mut self,
        link: LinkId,
        a: &mesh::Announce<'_>,
        frame: &[u8],
        now: u64,
    ) {
        if self.announce.handle_remote(a.origin, a.seq, a.body, now) != Verdict::New {
            return;
        }
        self.learn_name(a.origin);
        let names = &self.names;
        let applied = self
            .announce_hook
            .as_mut()
            .map(|h| h.apply_remote(a.origin, a.body, &|id| names.get(&id).cloned()));
        if applied == Some(AnnounceApplied::Bad) {
            self.announce.note_hook_refused();
        }
        // Forward the frame as received: the body is opaque to the mesh.
        self.flood(&Bytes::copy_from_slice(frame), Some(link));
    }

    /// A new link gets every held announcement, so a joining relay sees the whole mesh.
    pub(super) fn replay_announcements(&mut self, link: LinkId) {
        let mut frames = Vec::new();
        for (origin, seq, body) in self.announce.held() {
            let msg = Message::Announce(mesh::Announce { origin, seq, body });
            if let Ok(b) = mesh::encode(&msg, &mut self.buf) {
                frames.push(Bytes::copy_from_slice(b));
            }
        }
        self.announce.note_replayed(frames.len());
        for f in frames {
            self.transmit(link, TransmitKind::Control, f);
        }
    }
}
