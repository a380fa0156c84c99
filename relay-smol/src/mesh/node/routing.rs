//! Probing and routing: a probe datagram per link every `probe.interval_us`, answers
//! feeding each link's [`LinkProbe`](crate::mesh::probe::LinkProbe), whose measurement feeds
//! the route table; the table's messages batched per link; its events kept for the status.

use std::collections::BTreeMap;

use bytes::Bytes;
use fastpubsub_core::mesh::{self, MAX_ROUTE_MESSAGES, Message, Probe, ProbeAck, RouteBatch};
use fastpubsub_core::route::{self, Metric, RelayId, RouteEvent};

use super::{MeshNode, TransmitKind};
use crate::mesh::limits::{MAX_EVENTS, MAX_PENDING_ROUTE, ROUTE_BATCH_US, ROUTE_DESTS};
use crate::mesh::link::LinkId;
use crate::mesh::probe::LinkState;
use crate::mesh::status::RouteEventStatus;

impl MeshNode {
    /// Probes due on every link whose Hello arrived, and links gone silent.
    pub(super) fn probe_due(&mut self, now: u64) {
        let links: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, l)| l.peer.is_some() && !l.closing)
            .map(|(c, _)| *c)
            .collect();
        for c in links {
            let Some(l) = self.links.get_mut(&c) else {
                continue;
            };
            let probe = l.probe.poll_transmit(now);
            l.probe.handle_timeout(now);
            let change = l.probe.poll_event();
            let peer = l.peer.clone();
            if let Some(p) = probe
                && let Ok(b) = mesh::encode(&Message::Probe(p), &mut [0u8; Probe::MAX_LEN])
            {
                let b = Bytes::copy_from_slice(b);
                self.transmit(c, TransmitKind::Datagram, b);
            }
            if let (Some(LinkState::Down), Some((name, id))) = (change, peer) {
                log::warn!("mesh: link to {name} down (no probe answer)");
                if self.route.handle_link_down(id, now).is_err() {
                    self.stats.route_errors += 1;
                }
                self.route_changed(now);
                self.announce.handle_link_change(now);
            }
        }
    }

    /// A datagram: a probe to answer, or the answer to one of ours.
    pub(super) fn on_datagram(&mut self, link: LinkId, bytes: &[u8], now: u64) {
        match mesh::decode(bytes) {
            Ok(Message::Probe(p)) => {
                let ack = Message::ProbeAck(ProbeAck {
                    seq: p.seq,
                    echo_us: p.sent_us,
                });
                if let Ok(b) = mesh::encode(&ack, &mut [0u8; ProbeAck::MAX_LEN]) {
                    let b = Bytes::copy_from_slice(b);
                    self.transmit(link, TransmitKind::Datagram, b);
                }
            }
            // We only probe links whose Hello arrived.
            Ok(Message::ProbeAck(a)) if self.links.get(&link).is_some_and(|l| l.peer.is_some()) => {
                self.on_probe_ack(link, a, now);
            }
            _ => self.stats.bad_messages += 1,
        }
    }

    fn on_probe_ack(&mut self, link: LinkId, ack: ProbeAck, now: u64) {
        let Some(l) = self.links.get_mut(&link).filter(|l| !l.closing) else {
            return;
        };
        if l.probe.handle_ack(ack, now).is_none() {
            return;
        }
        // An answer only ever brings a link up; "up" needs no action.
        let _ = l.probe.poll_event();
        let Some((_, id)) = l.peer.clone() else {
            return;
        };
        let m = l.probe.measurement(now);
        if self.route.handle_link_metric(id, m, now).is_err() {
            self.stats.route_errors += 1;
            return;
        }
        if !l.measured {
            l.measured = true;
            // The link has an RTT now: worth announcing.
            self.announce.handle_link_change(now);
            let pending = std::mem::take(&mut l.pending_route);
            for msg in pending {
                self.apply_route_message(id, msg, now);
            }
        }
        self.route_changed(now);
    }

    fn apply_route_message(&mut self, from: RelayId, m: route::Message, now: u64) {
        if self.route.handle_message(from, m, now).is_err() {
            self.stats.route_errors += 1;
        }
    }

    /// The route table's messages, batched per link; then its events.
    pub(super) fn drain_route(&mut self, now: u64) {
        let mut per_link: BTreeMap<LinkId, heapless::Vec<route::Message, MAX_ROUTE_MESSAGES>> =
            BTreeMap::new();
        let mut up = Vec::new();
        // Bounded per call; the rest stays queued in the table for the next tick (checked
        // before polling, so no transmit is taken and then dropped).
        for _ in 0..4 * ROUTE_DESTS {
            let Some(t) = self.route.poll_transmit() else {
                break;
            };
            if up.is_empty() {
                up = self.up_links();
            }
            let targets: Vec<LinkId> = match t.to {
                route::Recipient::Neighbour(id) => up
                    .iter()
                    .filter(|(_, i)| *i == id)
                    .map(|(c, _)| *c)
                    .collect(),
                _ => up.iter().map(|(c, _)| *c).collect(),
            };
            for c in targets {
                let batch = per_link.entry(c).or_default();
                if batch.push(t.message).is_err() {
                    let full = std::mem::take(batch);
                    self.send_control(c, &Message::Route(RouteBatch { messages: full }));
                    let batch = per_link.entry(c).or_default();
                    let _ = batch.push(t.message);
                }
            }
        }
        for (c, messages) in per_link {
            if !messages.is_empty() {
                self.send_control(c, &Message::Route(RouteBatch { messages }));
            }
        }
        while let Some(ev) = self.route.poll_event() {
            self.record_event(ev, now);
        }
    }

    fn record_event(&mut self, ev: RouteEvent, now: u64) {
        let (kind, next_hop, old_next_hop, metric, old_metric) = match ev {
            RouteEvent::Installed {
                next_hop, metric, ..
            } => ("installed", Some(next_hop), None, Some(metric), None),
            RouteEvent::Changed {
                old_next_hop,
                old_metric,
                new_next_hop,
                new_metric,
                ..
            } => (
                "changed",
                Some(new_next_hop),
                Some(old_next_hop),
                Some(new_metric),
                Some(old_metric),
            ),
            RouteEvent::Retracted {
                old_next_hop,
                old_metric,
                ..
            } => (
                "retracted",
                None,
                Some(old_next_hop),
                None,
                Some(old_metric),
            ),
            _ => ("other", None, None, None, None),
        };
        let _ = now;
        let rec = RouteEventStatus {
            unix_ms: self.unix_ms_at_zero + ev.at_us() / 1000,
            text: format!("{ev}"),
            kind,
            dest: self.name_of(ev.dest()),
            next_hop: next_hop.map(|h| self.name_of(h)),
            old_next_hop: old_next_hop.map(|h| self.name_of(h)),
            metric_us: metric.map(Metric::as_us),
            old_metric_us: old_metric.map(Metric::as_us),
        };
        log::info!(
            "mesh: {} route to {} {kind}: via {} ({} us), was via {} ({} us)",
            self.cfg.name,
            rec.dest,
            rec.next_hop.as_deref().unwrap_or("-"),
            rec.metric_us.map_or(-1, i64::from),
            rec.old_next_hop.as_deref().unwrap_or("-"),
            rec.old_metric_us.map_or(-1, i64::from)
        );
        if self.route_log.len() >= MAX_EVENTS {
            self.route_log.pop_front();
        }
        self.route_log.push_back(rec);
    }

    pub(super) fn on_route(&mut self, link: LinkId, batch: &RouteBatch, now: u64) {
        let Some(l) = self.links.get_mut(&link).filter(|l| !l.closing) else {
            return;
        };
        let Some((_, from)) = l.peer.clone() else {
            self.stats.bad_messages += 1;
            return;
        };
        if !l.measured {
            for m in &batch.messages {
                if l.pending_route.len() < MAX_PENDING_ROUTE {
                    l.pending_route.push(*m);
                } else {
                    self.stats.route_errors += 1;
                }
            }
            return;
        }
        for m in &batch.messages {
            self.apply_route_message(from, *m, now);
        }
        self.route_changed(now);
    }

    /// The route table may have messages to send: batch them out within
    /// [`ROUTE_BATCH_US`] (see `handle_timeout`).
    pub(super) fn route_changed(&mut self, now: u64) {
        let due = now + ROUTE_BATCH_US;
        self.route_due = Some(self.route_due.map_or(due, |t| t.min(due)));
    }
}
