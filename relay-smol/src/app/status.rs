//! The relay's status as typed data ([`RelayStatus`]): the mesh node's
//! [`MeshStatus`](crate::mesh::status::MeshStatus) with the QUIC layer's counters and the
//! edge↔mesh queue drops. From it, and from nothing else, come the `GET /v1/status`
//! document ([`RelayStatus::to_json`]), the mesh families on `/metrics`
//! ([`RelayStatus::mirror_metrics`]) and this relay's summary on the dashboard
//! ([`summary_parts`]). A renamed field is a compile error, not a silent zero.

use serde::Serialize;

use crate::dashboard::view::{LinkSummary, MAX_LINKS_PER_RELAY, MAX_RELAYS, RouteSummary};
use crate::mesh::status::MeshStatus;
use crate::metrics::{
    Direction, DropReason, LinkSample, QuicRefusal, RefusalReason, RelayMetrics, Source,
};
use crate::quic::driver::DriverStats;

/// Everything `GET /v1/status` shows (docs/api.md).
#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    /// The mesh node's status, with the QUIC driver's counters as `counters.quic`.
    #[serde(flatten)]
    pub mesh: MeshStatus<DriverStats>,
    /// Edge→mesh commands (publishes, interest changes) dropped: the queue was full.
    pub edge_to_mesh_dropped: u64,
    /// Mesh→edge deliveries dropped: the edge had not taken the queued ones yet.
    pub mesh_to_edge_dropped: u64,
}

/// Who this relay is, as the dashboard shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalIdentity {
    /// Relay name (unique in the mesh).
    pub name: String,
    /// Region label.
    pub region: String,
    /// Latitude and longitude in degrees, if known.
    pub position: Option<(f64, f64)>,
    /// Public URL of the WebSocket edge.
    pub url: String,
}

/// Identity, links and routes of a mesh status, as the dashboard's relay summary takes them:
/// links without a known peer and unreachable destinations are left out; a link without a
/// smoothed RTT shows its minimum.
pub fn summary_parts<Q>(s: &MeshStatus<Q>) -> (LocalIdentity, Vec<LinkSummary>, Vec<RouteSummary>) {
    let id = &s.identity;
    let identity = LocalIdentity {
        name: id.name.clone(),
        region: if id.region.is_empty() {
            "unknown".into()
        } else {
            id.region.clone()
        },
        position: id.position.map(|p| (p.lat, p.lon)),
        url: id.edge_url.clone(),
    };
    let links = s
        .links
        .iter()
        .filter_map(|l| {
            Some(LinkSummary {
                peer: l.peer.clone()?,
                up: l.up,
                rtt_ms: l.rtt_ms.unwrap_or(l.min_rtt_ms),
                rtt_min_ms: l.min_rtt_ms,
                jitter_ms: l.jitter_ms,
                loss: (l.loss_pct / 100.0).clamp(0.0, 1.0),
            })
        })
        .take(MAX_LINKS_PER_RELAY)
        .collect();
    let routes = s
        .routes
        .iter()
        .filter_map(|r| {
            Some(RouteSummary {
                dst: r.dest.clone(),
                next_hop: r.next_hop.clone()?,
                metric_ms: r.metric_ms?,
            })
        })
        .take(MAX_RELAYS)
        .collect();
    (identity, links, routes)
}

impl RelayStatus {
    /// The `GET /v1/status` document.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Plain data with string keys: cannot fail; say so if it ever does.
            log::error!("status does not serialize: {e}");
            String::from("{}")
        })
    }

    /// Mirrors the mesh's links and counters into `m`; returns the mesh's handshake refusals
    /// `(malformed, over capacity)`, which the caller adds to the edge's.
    pub fn mirror_metrics(&self, m: &RelayMetrics) -> (u64, u64) {
        let samples: Vec<LinkSample> = summary_parts(&self.mesh)
            .1
            .iter()
            .map(|l| LinkSample {
                peer: l.peer.clone(),
                up: l.up,
                // µs resolution, so the exposition shows 0.000729, not 0.0007289999…
                rtt_seconds: (l.rtt_ms * 1000.0).round() / 1e6,
                rtt_min_seconds: (l.rtt_min_ms * 1000.0).round() / 1e6,
                jitter_seconds: (l.jitter_ms * 1000.0).round() / 1e6,
                loss_ratio: l.loss,
            })
            .collect();
        m.set_links(&samples);
        let c = &self.mesh.counters;
        let (mesh, quic) = (&c.mesh, &c.quic);
        m.messages_received.mirror(Source::Mesh, mesh.data_received);
        m.messages_forwarded.mirror(mesh.data_sent);
        for (n, reason) in [
            (mesh.dropped_hop_limit, DropReason::HopLimit),
            (mesh.dropped_no_route, DropReason::NoRoute),
            (mesh.dropped_queue_full, DropReason::LinkQueueFull),
            (mesh.duplicates, DropReason::Duplicate),
        ] {
            m.drops.mirror(reason, n);
        }
        m.route_changes.mirror(c.route.route_changes);
        m.mesh_control_bytes
            .mirror(Direction::Sent, quic.control_bytes_sent);
        m.mesh_control_bytes
            .mirror(Direction::Received, quic.control_bytes_received);
        for (k, name) in fastpubsub_core::mesh::KIND_NAMES.iter().enumerate() {
            let pair = c.control_by_kind.get(name).copied().unwrap_or_default();
            m.mesh_control_kind_bytes
                .mirror(k, Direction::Sent, pair[0]);
            m.mesh_control_kind_bytes
                .mirror(k, Direction::Received, pair[1]);
        }
        // Plus links whose certificate does not name the relay their Hello claims.
        m.handshake_refusals.mirror(
            RefusalReason::MeshCertificate,
            quic.handshake_failures
                .saturating_add(mesh.refused_identity),
        );
        for (n, reason) in [
            (quic.refused_full, QuicRefusal::TableFull),
            (quic.refused_handshakes, QuicRefusal::HandshakeBudget),
            (
                quic.refused_source_handshakes,
                QuicRefusal::SourceHandshakes,
            ),
            (quic.refused_source_rate, QuicRefusal::SourceRate),
            (quic.refused_source_table, QuicRefusal::SourceTable),
            (quic.handshake_timeouts, QuicRefusal::Timeout),
            (quic.handshakes_displaced, QuicRefusal::Displaced),
        ] {
            m.mesh_handshakes_refused.mirror(reason, n);
        }
        m.mesh_retries.mirror(quic.retries);
        m.mesh_handshakes_in_progress
            .set(i64::try_from(quic.handshakes_in_progress).unwrap_or(i64::MAX));
        // The link backlog policy (docs/mesh.md).
        m.mesh_links_backed_up
            .set(i64::try_from(quic.links_backed_up).unwrap_or(i64::MAX));
        m.mesh_links_slow
            .set(i64::try_from(quic.links_slow).unwrap_or(i64::MAX));
        m.mesh_messages_dropped_slow_link
            .mirror(quic.messages_dropped_slow_link);
        m.mesh_backpressure_episodes
            .mirror(quic.backpressure_episodes);
        m.mesh_backpressure_ms.mirror(quic.backpressure_ms);
        (
            mesh.refused_malformed,
            quic.refused_full.saturating_add(mesh.refused_full),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mesh::link::LinkId;
    use crate::mesh::status::{
        Counters, Identity, LinkStatus, MeshStats, NeighboursStatus, Position, RouteCounters,
        RouteStatus,
    };

    fn link(peer: Option<&str>, up: bool, rtt: Option<f64>, min: f64, loss_pct: f64) -> LinkStatus {
        LinkStatus {
            link: LinkId(0),
            peer: peer.map(str::to_owned),
            remote: "127.0.0.1:5000".into(),
            side: "out",
            up,
            rtt_ms: rtt,
            min_rtt_ms: min,
            jitter_ms: 0.4,
            loss_pct,
            probes_sent: 40,
            probes_answered: 39,
            quic_rtt_ms: None,
            queued_messages: 0,
            age_s: 10,
        }
    }

    /// Shaped like the status of the old JSON-text tests: tokyo with a link to nsk (up),
    /// one to fra (down, no smoothed RTT), one without a known peer; a route to fra via
    /// nsk and an unreachable one to lon.
    pub(crate) fn sample() -> RelayStatus {
        let mut mesh = MeshStats {
            data_sent: 11,
            data_received: 7,
            dropped_no_route: 2,
            duplicates: 1,
            ..MeshStats::default()
        };
        mesh.refused_identity = 0;
        let quic = DriverStats {
            handshake_failures: 3,
            ..DriverStats::default()
        };
        RelayStatus {
            mesh: MeshStatus {
                identity: Identity {
                    name: "tokyo".into(),
                    relay_id: 7,
                    region: "asia".into(),
                    position: Some(Position {
                        lat: 35.68,
                        lon: 139.69,
                    }),
                    edge_url: "wss://tokyo.example/ws".into(),
                    mesh_addr: "127.0.0.1:4433".into(),
                    protocol_version: 1,
                    uptime_s: 12,
                },
                links: vec![
                    link(Some("nsk"), true, Some(95.2), 94.8, 2.5),
                    link(Some("fra"), false, None, 221.0, 100.0),
                    link(None, false, None, 0.0, 0.0),
                ],
                routes: vec![
                    RouteStatus {
                        dest: "fra".into(),
                        next_hop: Some("nsk".into()),
                        metric_ms: Some(90.1),
                        smoothed_metric_ms: Some(90.0),
                        direct_metric_ms: Some(110.9),
                        saving_ms: 20.8,
                        seqno: Some(3),
                    },
                    RouteStatus {
                        dest: "lon".into(),
                        next_hop: None,
                        metric_ms: None,
                        smoothed_metric_ms: None,
                        direct_metric_ms: None,
                        saving_ms: 0.0,
                        seqno: None,
                    },
                ],
                peers: vec![],
                interest: Default::default(),
                counters: Counters {
                    mesh,
                    quic,
                    interest: Default::default(),
                    dedup_duplicates: 0,
                    dedup_too_old: 0,
                    ticket_sync: Default::default(),
                    neighbours: Default::default(),
                    announce: Default::default(),
                    control_by_kind: Default::default(),
                    route: RouteCounters {
                        route_changes: 4,
                        ..RouteCounters::default()
                    },
                },
                route_events: vec![],
                neighbours: NeighboursStatus {
                    max: 16,
                    roles: Default::default(),
                },
            },
            edge_to_mesh_dropped: 0,
            mesh_to_edge_dropped: 0,
        }
    }

    #[test]
    fn status_becomes_the_local_summary() {
        let (id, links, routes) = summary_parts(&sample().mesh);
        assert_eq!((id.name.as_str(), id.region.as_str()), ("tokyo", "asia"));
        assert_eq!(id.position, Some((35.68, 139.69)));
        assert_eq!(id.url, "wss://tokyo.example/ws");
        assert_eq!(links.len(), 2, "the link without a known peer is skipped");
        assert_eq!(
            links[0],
            LinkSummary {
                peer: "nsk".into(),
                up: true,
                rtt_ms: 95.2,
                rtt_min_ms: 94.8,
                jitter_ms: 0.4,
                loss: 0.025,
            }
        );
        assert!(!links[1].up);
        assert_eq!(
            links[1].rtt_ms, 221.0,
            "no smoothed RTT: falls back to the minimum"
        );
        assert_eq!(links[1].loss, 1.0);
        assert_eq!(
            routes,
            vec![RouteSummary {
                dst: "fra".into(),
                next_hop: "nsk".into(),
                metric_ms: 90.1
            }],
            "unreachable destinations are not routes"
        );
    }

    #[test]
    fn status_feeds_the_metrics() {
        let m = RelayMetrics::default();
        sample().mirror_metrics(&m);
        assert_eq!(m.messages_forwarded.get(), 11);
        assert_eq!(m.messages_received.get(Source::Mesh), 7);
        assert_eq!(m.drops.get(DropReason::NoRoute), 2);
        assert_eq!(m.drops.get(DropReason::Duplicate), 1);
        assert_eq!(m.drops.get(DropReason::HopLimit), 0);
        assert_eq!(m.route_changes.get(), 4);
        assert_eq!(m.handshake_refusals.get(RefusalReason::MeshCertificate), 3);
        let text = m.render();
        assert!(
            text.contains("fastpubsub_link_rtt_seconds{peer=\"nsk\"} 0.0952"),
            "{text}"
        );
    }

    #[test]
    fn mesh_refusals_and_control_bytes_reach_the_metrics() {
        let mut s = sample();
        let c = &mut s.mesh.counters;
        c.mesh.refused_malformed = 2;
        c.mesh.refused_full = 1;
        c.mesh.refused_identity = 5;
        c.quic.refused_full = 4;
        c.quic.refused_source_rate = 6;
        c.quic.handshake_timeouts = 7;
        c.quic.retries = 8;
        c.quic.handshakes_in_progress = 9;
        c.quic.links_backed_up = 2;
        c.quic.links_slow = 1;
        c.quic.messages_dropped_slow_link = 11;
        c.quic.backpressure_episodes = 3;
        c.quic.backpressure_ms = 1500;
        c.quic.control_bytes_sent = 700;
        c.quic.control_bytes_received = 900;
        c.control_by_kind.insert("announce", [100, 200]);
        c.control_by_kind.insert("probe", [30, 40]);
        let m = RelayMetrics::default();
        assert_eq!(s.mirror_metrics(&m), (2, 5));
        assert_eq!(m.handshake_refusals.get(RefusalReason::MeshCertificate), 8);
        assert_eq!(m.mesh_control_bytes.get(Direction::Sent), 700);
        assert_eq!(m.mesh_control_bytes.get(Direction::Received), 900);
        let announce = fastpubsub_core::mesh::KIND_NAMES
            .iter()
            .position(|k| *k == "announce")
            .expect("kind");
        assert_eq!(
            m.mesh_control_kind_bytes.get(announce, Direction::Sent),
            100
        );
        assert_eq!(
            m.mesh_control_kind_bytes.get(announce, Direction::Received),
            200
        );
        let text = m.render();
        assert!(
            text.contains(
                "fastpubsub_mesh_control_kind_bytes_total{kind=\"announce\",direction=\"received\"} 200"
            ),
            "{text}"
        );
        assert_eq!(m.mesh_handshakes_refused.get(QuicRefusal::TableFull), 4);
        assert_eq!(m.mesh_handshakes_refused.get(QuicRefusal::SourceRate), 6);
        assert_eq!(m.mesh_handshakes_refused.get(QuicRefusal::Timeout), 7);
        assert_eq!(m.mesh_retries.get(), 8);
        assert!(
            text.contains("fastpubsub_mesh_handshakes_refused_total{reason=\"source_rate\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("fastpubsub_mesh_handshakes_in_progress 9"),
            "{text}"
        );
        for line in [
            "fastpubsub_mesh_links_backed_up 2\n",
            "fastpubsub_mesh_links_slow 1\n",
            "fastpubsub_mesh_messages_dropped_slow_link_total 11\n",
            "fastpubsub_mesh_backpressure_episodes_total 3\n",
            "fastpubsub_mesh_backpressure_seconds_total 1.5\n",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
    }

    #[test]
    fn the_document_has_the_documented_fields() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).expect("json");
        for path in [
            "/identity/name",
            "/identity/relay_id",
            "/identity/mesh_addr",
            "/links/0/rtt_ms",
            "/links/0/quic_rtt_ms",
            "/routes/0/saving_ms",
            "/counters/mesh/data_sent",
            "/counters/quic/handshake_failures",
            "/counters/route/neighbour_table_full",
            "/counters/control_by_kind",
            "/neighbours/max",
            "/edge_to_mesh_dropped",
            "/mesh_to_edge_dropped",
        ] {
            assert!(v.pointer(path).is_some(), "{path} missing in {v}");
        }
        assert!(v.pointer("/links/0/link").is_none(), "link ids stay inside");
    }
}
