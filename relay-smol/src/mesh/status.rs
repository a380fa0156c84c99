//! The mesh status as typed data: [`MeshStatus`], made by `MeshNode::status`.
//!
//! It is the one source of `GET /v1/status` (serialized as is, docs/api.md), of the mesh
//! families on `/metrics` and of this relay's summary on the dashboard; nothing is parsed
//! back from text. What only the QUIC layer knows (its counters, QUIC's RTT, queued
//! messages) is filled in by the wiring: the transport counters are the type parameter `Q`
//! (`()` when there is none, e.g. in the virtual-time harness).

use std::collections::BTreeMap;

use serde::Serialize;

use super::announce::AnnounceStats;
use super::interest::InterestStats;
use super::link::LinkId;
use super::neighbours::NeighbourStats;
use super::ticket_sync::SyncStats;

/// Everything `/v1/status` shows about the mesh (see docs/api.md and docs/mesh.md).
#[derive(Debug, Clone, Serialize)]
pub struct MeshStatus<Q = ()> {
    /// Who this relay is.
    pub identity: Identity,
    /// Every link, up or not.
    pub links: Vec<LinkStatus>,
    /// Every destination the route table knows.
    pub routes: Vec<RouteStatus>,
    /// Every relay known.
    pub peers: Vec<PeerStatus>,
    /// Interest per relay (this one included), by name.
    pub interest: BTreeMap<String, InterestStatus>,
    /// Counters; every drop is counted here.
    pub counters: Counters<Q>,
    /// The last route changes, oldest first.
    pub route_events: Vec<RouteEventStatus>,
    /// The neighbour limit and each linked or wanted relay's role.
    pub neighbours: NeighboursStatus,
}

impl<Q> MeshStatus<Q> {
    /// The same status with the transport's counters `quic` in place of these.
    pub fn with_transport<R>(self, quic: R) -> MeshStatus<R> {
        let c = self.counters;
        MeshStatus {
            identity: self.identity,
            links: self.links,
            routes: self.routes,
            peers: self.peers,
            interest: self.interest,
            counters: Counters {
                mesh: c.mesh,
                quic,
                interest: c.interest,
                dedup_duplicates: c.dedup_duplicates,
                dedup_too_old: c.dedup_too_old,
                ticket_sync: c.ticket_sync,
                neighbours: c.neighbours,
                announce: c.announce,
                control_by_kind: c.control_by_kind,
                route: c.route,
            },
            route_events: self.route_events,
            neighbours: self.neighbours,
        }
    }
}

/// This relay.
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    /// Relay name.
    pub name: String,
    /// The routing id derived from the name.
    pub relay_id: u64,
    /// Region label.
    pub region: String,
    /// Position, degrees.
    pub position: Option<Position>,
    /// Public URL of the WebSocket edge.
    pub edge_url: String,
    /// Mesh address (bound).
    pub mesh_addr: String,
    /// Mesh protocol version spoken.
    pub protocol_version: u16,
    /// Seconds since the node started.
    pub uptime_s: u64,
}

/// A position in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Position {
    /// Latitude.
    pub lat: f64,
    /// Longitude.
    pub lon: f64,
}

/// One link.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    /// The link (for the wiring to add what the QUIC layer knows; not shown).
    #[serde(skip)]
    pub link: LinkId,
    /// The peer, once its Hello arrived.
    pub peer: Option<String>,
    /// The peer's address.
    pub remote: String,
    /// `"out"` (dialled) or `"in"`.
    pub side: &'static str,
    /// Whether probes are answered.
    pub up: bool,
    /// Smoothed RTT, ms.
    pub rtt_ms: Option<f64>,
    /// Window-minimum RTT, ms.
    pub min_rtt_ms: f64,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Loss, percent.
    pub loss_pct: f64,
    /// Probes sent.
    pub probes_sent: u64,
    /// Probes answered.
    pub probes_answered: u64,
    /// QUIC's own RTT estimate, ms (filled by the wiring).
    pub quic_rtt_ms: Option<f64>,
    /// Messages waiting for a stream (filled by the wiring).
    pub queued_messages: usize,
    /// Seconds since the link came up.
    pub age_s: u64,
}

/// One destination.
#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    /// Destination relay.
    pub dest: String,
    /// Next hop, if reachable.
    pub next_hop: Option<String>,
    /// Metric, ms.
    pub metric_ms: Option<f64>,
    /// Smoothed metric used for selection, ms.
    pub smoothed_metric_ms: Option<f64>,
    /// The direct link's metric, when the destination is a neighbour, ms.
    pub direct_metric_ms: Option<f64>,
    /// How much the route saves over the direct link, ms.
    pub saving_ms: f64,
    /// The route's seqno.
    pub seqno: Option<u16>,
}

/// One known relay.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Edge URL.
    pub edge_url: String,
    /// Where it is dialled.
    pub dial: Option<String>,
    /// Whether a link is up.
    pub linked: bool,
    /// Configured as a seed.
    pub seed: bool,
    /// Why the last link or dial ended.
    pub last_error: Option<String>,
}

/// One relay's interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InterestStatus {
    /// Its epoch.
    pub epoch: u32,
    /// Its last applied change.
    pub seq: u32,
    /// (tenant, pattern) pairs.
    pub patterns: usize,
}

/// Counters of the mesh node and, as `quic`, of the transport under it.
#[derive(Debug, Clone, Serialize)]
pub struct Counters<Q = ()> {
    /// The node's own.
    pub mesh: MeshStats,
    /// The transport's (filled by the wiring).
    pub quic: Q,
    /// Interest table.
    pub interest: InterestStats,
    /// Duplicates suppressed.
    pub dedup_duplicates: u64,
    /// Ids older than the dedup window.
    pub dedup_too_old: u64,
    /// Ticket snapshots on link-up.
    pub ticket_sync: SyncStats,
    /// Neighbour selection.
    pub neighbours: NeighbourStats,
    /// Announcement flooding.
    pub announce: AnnounceStats,
    /// Control bytes by message kind: `[sent, received]` (control frames with their 4-byte
    /// length prefix, and datagrams).
    pub control_by_kind: BTreeMap<&'static str, [u64; 2]>,
    /// The route table's.
    pub route: RouteCounters,
}

/// The route table's counters shown in the status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RouteCounters {
    /// Updates received and accepted.
    pub updates_received: u64,
    /// Updates sent.
    pub updates_sent: u64,
    /// Next-hop changes.
    pub route_changes: u64,
    /// Seqno requests originated.
    pub seqno_requests_sent: u64,
    /// Route events dropped (queue full).
    pub events_dropped: u64,
    /// Links refused: the neighbour table was full.
    pub neighbour_table_full: u64,
    /// Destinations refused: the destination table was full.
    pub dest_table_full: u64,
}

/// One route change.
#[derive(Debug, Clone, Serialize)]
pub struct RouteEventStatus {
    /// When, ms since the Unix epoch.
    pub unix_ms: u64,
    /// The event as text.
    pub text: String,
    /// `installed`, `changed` or `retracted`.
    pub kind: &'static str,
    /// Destination.
    pub dest: String,
    /// New next hop.
    pub next_hop: Option<String>,
    /// Old next hop.
    pub old_next_hop: Option<String>,
    /// New metric, µs.
    pub metric_us: Option<u32>,
    /// Old metric, µs.
    pub old_metric_us: Option<u32>,
}

/// Neighbour selection, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct NeighboursStatus {
    /// The limit.
    pub max: usize,
    /// Role of each linked or wanted relay.
    pub roles: BTreeMap<String, &'static str>,
}

/// Counters of the mesh node (`counters.mesh`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MeshStats {
    /// Publishes offered by the local edge.
    pub published: u64,
    /// Data copies a link took (one per next hop).
    pub data_sent: u64,
    /// Data messages received.
    pub data_received: u64,
    /// Messages delivered to local subscribers.
    pub delivered_local: u64,
    /// Duplicates suppressed.
    pub duplicates: u64,
    /// Dropped: hop limit reached.
    pub dropped_hop_limit: u64,
    /// Dropped: no route to a destination (or its link went away).
    pub dropped_no_route: u64,
    /// Dropped: link queue full.
    pub dropped_queue_full: u64,
    /// Bad messages from peers (undecodable, invalid, wrong order).
    pub bad_messages: u64,
    /// Links refused: certificate does not name the relay of the Hello, or a name clash.
    pub refused_identity: u64,
    /// Links closed because another link to the same relay existed.
    pub duplicate_links: u64,
    /// Route messages the table refused (unknown neighbour, table full).
    pub route_errors: u64,
    /// Ticket status records flooded from here.
    pub ticket_records_sent: u64,
    /// Ticket status records received that were new here.
    pub ticket_records_new: u64,
    /// Ticket status records refused by the tickets layer (bad signature, garbage).
    pub ticket_records_bad: u64,
    /// Links refused at the handshake: first message not a Hello, or another protocol
    /// version.
    pub refused_malformed: u64,
    /// Links refused at the handshake: the peer table was full.
    pub refused_full: u64,
    /// Learned peers dropped: unlinked and not heard of for `PEER_TTL_US`, or the oldest
    /// such one when the table was full.
    pub peers_evicted: u64,
    /// Relay names dropped: not a peer and no route, when the name table was half full.
    pub names_evicted: u64,
    /// Control frames a link refused (it was going away, or its control backlog was full).
    pub control_refused: u64,
    /// Datagrams (probes, answers) a link refused (its datagram queue was full).
    pub datagrams_refused: u64,
    /// Outputs dropped because the driver had not drained `MAX_OUTPUTS` of them.
    pub outputs_dropped: u64,
}
