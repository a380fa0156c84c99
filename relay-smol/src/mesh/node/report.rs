//! The node's status as typed data ([`MeshStatus`]).

use std::collections::BTreeMap;

use fastpubsub_core::mesh::{KIND_NAMES, PROTOCOL_VERSION};
use fastpubsub_core::route::Metric;

use super::MeshNode;
use crate::mesh::status::{
    Counters, Identity, InterestStatus, LinkStatus, MeshStatus, NeighboursStatus, PeerStatus,
    Position, RouteCounters, RouteStatus,
};
use crate::mesh::time::SEC;

impl MeshNode {
    /// Identity, links, routes, peers, interest, counters and recent route events, as of
    /// `now`. The transport's part (`counters.quic`, QUIC's RTT and queue per link) is left
    /// for the wiring to fill in.
    pub fn status(&self, now: u64) -> MeshStatus {
        let ms = |m: Metric| m.is_finite().then(|| f64::from(m.as_us()) / 1000.0);
        let links = self
            .links
            .iter()
            .map(|(c, l)| {
                let m = l.probe.measurement(now);
                LinkStatus {
                    link: *c,
                    peer: l.peer.as_ref().map(|p| p.0.clone()),
                    remote: l.remote.to_string(),
                    side: l.side.as_str(),
                    up: l.probe.is_up(),
                    rtt_ms: l.probe.srtt_us().map(|v| f64::from(v) / 1000.0),
                    min_rtt_ms: f64::from(m.min_rtt_us) / 1000.0,
                    jitter_ms: f64::from(m.jitter_us) / 1000.0,
                    loss_pct: f64::from(m.loss_ppm) / 10_000.0,
                    probes_sent: l.probe.sent,
                    probes_answered: l.probe.answered,
                    quic_rtt_ms: None,
                    queued_messages: 0,
                    age_s: now.saturating_sub(l.since) / SEC,
                }
            })
            .collect();
        let routes = self
            .route
            .routes()
            .map(|r| RouteStatus {
                dest: self.name_of(r.dest),
                next_hop: r.next_hop.map(|h| self.name_of(h)),
                metric_ms: ms(r.metric),
                smoothed_metric_ms: ms(r.smoothed_metric),
                direct_metric_ms: r.direct_metric.and_then(ms),
                saving_ms: f64::from(r.saving_us()) / 1000.0,
                seqno: r.seqno.map(|s| s.0),
            })
            .collect();
        let peers = self
            .peers
            .iter()
            .map(|(n, p)| PeerStatus {
                name: n.clone(),
                region: p.region.clone(),
                edge_url: p.edge_url.clone(),
                dial: p.dial.map(|a| a.to_string()),
                linked: p.link.is_some(),
                seed: p.seed,
                last_error: p.last_error.clone(),
            })
            .collect();
        let interest = self
            .interest
            .origins()
            .map(|(n, o)| {
                (
                    n.to_owned(),
                    InterestStatus {
                        epoch: o.epoch,
                        seq: o.seq,
                        patterns: o.entries.len(),
                    },
                )
            })
            .collect();
        let rs = self.route.stats();
        let mut mesh = self.stats;
        mesh.data_sent = self.data_copies.saturating_sub(self.data_refused);
        mesh.outputs_dropped = self.out.dropped;
        MeshStatus {
            identity: Identity {
                name: self.cfg.name.clone(),
                relay_id: self.me.0,
                region: self.cfg.region.clone(),
                position: self.cfg.position.map(|p| Position {
                    lat: f64::from(p.lat_udeg) / 1e6,
                    lon: f64::from(p.lon_udeg) / 1e6,
                }),
                edge_url: self.cfg.edge_url.clone(),
                mesh_addr: self.cfg.listen.to_string(),
                protocol_version: PROTOCOL_VERSION,
                uptime_s: self.us_since_start(now) / SEC,
            },
            links,
            routes,
            peers,
            interest,
            counters: Counters {
                mesh,
                quic: (),
                interest: self.interest.stats(),
                dedup_duplicates: self.dedup.duplicates,
                dedup_too_old: self.dedup.too_old,
                ticket_sync: self.ticket_sync.stats,
                neighbours: self.neighbours.stats,
                announce: self.announce.stats(),
                control_by_kind: KIND_NAMES
                    .iter()
                    .copied()
                    .zip(self.control_by_kind)
                    .collect::<BTreeMap<_, _>>(),
                route: RouteCounters {
                    updates_received: rs.updates_received,
                    updates_sent: rs.updates_sent,
                    route_changes: rs.route_changes,
                    seqno_requests_sent: rs.seqno_requests_sent,
                    events_dropped: rs.events_dropped,
                    neighbour_table_full: rs.neighbour_table_full,
                    dest_table_full: rs.dest_table_full,
                },
            },
            route_events: self.route_log.iter().cloned().collect(),
            neighbours: NeighboursStatus {
                max: self.neighbours.max(),
                roles: self.neighbours.roles.iter().cloned().collect(),
            },
        }
    }
}
