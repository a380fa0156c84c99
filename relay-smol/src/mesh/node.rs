//! The mesh node: links, probing, routing, interest and forwarding, as the
//! [`Handler`] of the QUIC [`Driver`] (same task, no locks).
//!
//! - Links: which relays to link is [`Neighbours`]' choice (full mesh while the known
//!   relays fit in `max_neighbours`, else the nearest by measured RTT plus a few
//!   others; the limit holds for incoming links too); seeds are known at once, relays
//!   learned by gossip after `discover_delay`; a lost link is
//!   redialled with exponential backoff (1 s … 30 s) by the side that dialled it. The
//!   first control frame each way is a [`Hello`]; its name must be one the peer's
//!   certificate is valid for. A second link to the same relay is closed.
//! - Probing: a [`Probe`] datagram per link every `probe.interval`; answers feed
//!   [`LinkProbe`], whose measurement feeds the [`RouteTable`].
//! - Interest: local changes are numbered and flooded; remote ones applied in order
//!   and flooded on; gaps ask for a snapshot; a new link gets snapshots of everything.
//! - Forwarding: a publish goes to every relay with matching interest (or one, for the
//!   deliver-one modes), grouped by next hop: one copy per next hop listing its
//!   destinations; each relay delivers if it is a destination (once: [`Dedup`]) and
//!   re-splits the rest, while the hop limit lasts.
//! - Announcements: this relay's summary is flooded periodically and on link changes;
//!   others' are judged by [`AnnounceTable`] (newest per origin, rate, bounds), handed to
//!   the [`AnnounceHook`] and flooded on; a new link gets every held one.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastpubsub_core::mesh::{
    self, Data, DeliveryMode, Hello, InterestChange, InterestEntry, InterestSnapshot,
    InterestSnapshotRequest, InterestUpdate, MAX_DESTINATIONS, MAX_GOSSIP, MAX_ROUTE_MESSAGES,
    MAX_SNAPSHOT_ENTRIES, Message, PROTOCOL_VERSION, PeerInfo, Peers, Probe, ProbeAck, RouteBatch,
};
use fastpubsub_core::route::{self, Metric, RelayId, RouteEvent, RouteTable, Seqno};
use quinn_proto::{ConnectionHandle, Side};
use rustls_pki_types::CertificateDer;
use serde::Serialize;

use super::announce::{AnnounceApplied, AnnounceHook, AnnounceTable, Verdict};
use super::config::MeshConfig;
use super::dedup::Dedup;
use super::interest::{Applied, InterestTable};
use super::neighbours::{CLOSE_NEIGHBOUR_LIMIT, CLOSE_REASON, Neighbours, PeerView};
use super::probe::{LinkProbe, LinkState};
use super::ticket_sync::TicketSync;
use crate::quic::driver::{self, Driver, Handler, QuicEvent, SendError};
use crate::quic::tls::cert_is_valid_for;

/// Destinations the routing table holds (its memory grows with the relays known).
pub const ROUTE_DESTS: usize = 1024;
/// Neighbours the routing table holds.
pub const ROUTE_NEIGHBOURS: usize = 32;
/// Largest `--max-neighbours`: the policy may hold a few links over its limit (exploration,
/// incoming links in their grace period, up to [`ROUTE_NEIGHBOURS`]` - 1`), so the limit
/// leaves room for them in the route table's neighbour slots.
pub const MAX_NEIGHBOURS_LIMIT: usize = 24;
/// Relays known (linked or not).
pub const MAX_PEERS: usize = 256;
/// Route events kept for the status page.
pub const MAX_EVENTS: usize = 64;
/// Gossip interval.
const GOSSIP_EVERY: Duration = Duration::from_secs(30);
/// Backoff bounds for redialling.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How often the neighbour policy runs.
const PLAN_EVERY: Duration = Duration::from_millis(250);
/// A relay that dialled us and went away is only redialled by us after this long.
const INBOUND_GRACE: Duration = Duration::from_secs(30);

type RT = RouteTable;

/// Where mesh messages for this relay's own subscribers go (the broker).
pub trait LocalSink {
    /// Deliver to local subscribers by `mode`; returns how many connections got it.
    fn deliver(&mut self, tenant: &str, channel: &str, payload: &[u8], mode: DeliveryMode)
    -> usize;
}

/// What the tickets layer did with a status record from the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketApplied {
    /// New information: flood it on.
    New,
    /// Already known: stop here.
    Known,
    /// Bad signature or garbage: stop here and count.
    Bad,
}

/// The tickets layer's side of status-record flooding (refresh, revoke).
pub trait TicketHook {
    /// Encoded records made on this relay since the last call (at most `max`).
    fn drain_outgoing(&mut self, max: usize) -> Vec<Vec<u8>>;
    /// Verify and apply a record received from the mesh.
    fn apply_remote(&mut self, record: &[u8]) -> TicketApplied;
    /// Encoded records still in force (at most `max`), for a neighbour whose link just
    /// came up (see [`super::ticket_sync`]). None by default.
    fn snapshot(&mut self, max: usize) -> Vec<Vec<u8>> {
        let _ = max;
        Vec::new()
    }
}

/// Work for the mesh from other tasks.
#[derive(Debug)]
#[non_exhaustive]
pub enum MeshCommand {
    /// A client of this relay published.
    Publish {
        /// Tenant.
        tenant: String,
        /// Channel (concrete).
        channel: String,
        /// Payload.
        payload: Bytes,
        /// Delivery mode.
        mode: DeliveryMode,
        /// Whether this relay has a matching subscriber (and, for the deliver-one modes,
        /// is a candidate: broadcast always delivers here separately).
        local_match: bool,
    },
    /// This relay gained its first / lost its last subscriber for (tenant, pattern).
    Interest {
        /// Tenant.
        tenant: String,
        /// Pattern.
        pattern: String,
        /// Gained (true) or lost (false).
        present: bool,
    },
    /// Reply with the status JSON.
    Status(smol::channel::Sender<String>),
}

/// Counters of the mesh layer.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct MeshStats {
    /// Publishes offered by the local edge.
    pub published: u64,
    /// Data copies sent (one per next hop).
    pub data_sent: u64,
    /// Data messages received.
    pub data_received: u64,
    /// Messages delivered to local subscribers.
    pub delivered_local: u64,
    /// Duplicates suppressed.
    pub duplicates: u64,
    /// Dropped: hop limit reached.
    pub dropped_hop_limit: u64,
    /// Dropped: no route to a destination.
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
    /// Links refused at the handshake: first message not a Hello, or another protocol version.
    pub refused_malformed: u64,
    /// Links refused at the handshake: the peer table was full.
    pub refused_full: u64,
    /// Learned peers dropped: unlinked and not heard of for [`PEER_TTL`], or the
    /// oldest such one when the table was full.
    pub peers_evicted: u64,
    /// Relay names dropped: not a peer and no route, when the name table was half full.
    pub names_evicted: u64,
}

/// A learned (non-seed) peer not linked and not heard of for this long is dropped.
pub const PEER_TTL: Duration = Duration::from_secs(600);

struct Link {
    side: Side,
    remote: SocketAddr,
    cert: Option<CertificateDer<'static>>,
    peer: Option<(String, RelayId)>,
    probe: LinkProbe,
    since: Instant,
    /// The routing table knows this neighbour once a first measurement came in; route
    /// messages that arrive before are kept (bounded) and replayed then.
    measured: bool,
    pending_route: Vec<route::Message>,
}

/// Route messages kept per link until its first measurement.
const MAX_PENDING_ROUTE: usize = 1024;

#[derive(Debug, Clone)]
struct PeerRec {
    id: RelayId,
    dial: Option<SocketAddr>,
    advertised: Option<SocketAddr>,
    region: String,
    edge_url: String,
    position: Option<mesh::GeoPos>,
    seed: bool,
    link: Option<ConnectionHandle>,
    dialing: Option<ConnectionHandle>,
    /// We dialled the current / last link.
    we_dialled: bool,
    backoff: Duration,
    next_dial: Instant,
    last_error: Option<String>,
    /// Last linked, or last named in a neighbour's gossip.
    heard: Instant,
}

#[derive(Debug, Clone, Serialize)]
struct EventRec {
    unix_ms: u64,
    text: String,
    kind: &'static str,
    dest: String,
    next_hop: Option<String>,
    old_next_hop: Option<String>,
    metric_us: Option<u32>,
    old_metric_us: Option<u32>,
}

/// Receives the status JSON periodically (see [`MeshNode::set_status_sink`]).
pub type StatusSink = Box<dyn FnMut(&str)>;

/// The mesh node. Create with [`MeshNode::new`], run with [`crate::quic::driver::run`].
pub struct MeshNode {
    cfg: MeshConfig,
    me: RelayId,
    start: Instant,
    epoch: u32,
    links: HashMap<ConnectionHandle, Link>,
    peers: HashMap<String, PeerRec>,
    names: HashMap<RelayId, String>,
    route: Box<RT>,
    interest: InterestTable,
    dedup: Dedup,
    sink: Box<dyn LocalSink>,
    next_msg: u64,
    events: VecDeque<EventRec>,
    stats: MeshStats,
    next_gossip: Instant,
    buf: Vec<u8>,
    status_sink: Option<(StatusSink, Duration, Instant)>,
    ticket_hook: Option<Box<dyn TicketHook>>,
    ticket_seq: u64,
    ticket_dedup: Dedup,
    ticket_sync: TicketSync,
    neighbours: Neighbours,
    next_plan: Instant,
    announce: AnnounceTable,
    announce_hook: Option<Box<dyn AnnounceHook>>,
}

fn unix_ms() -> u64 {
    crate::clock::unix_ms(crate::clock::wall_now())
}

/// Why a node could not be created.
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeError {
    /// The relay name is invalid.
    BadName(String),
    /// The routing configuration is invalid.
    Route(route::ConfigError),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadName(n) => write!(f, "invalid relay name {n:?}"),
            Self::Route(e) => write!(f, "routing configuration: {e}"),
        }
    }
}

impl std::error::Error for NodeError {}

impl MeshNode {
    /// A node for `cfg` delivering to `sink`.
    pub fn new(cfg: MeshConfig, sink: Box<dyn LocalSink>, now: Instant) -> Result<Self, NodeError> {
        if !mesh::valid_relay_name(&cfg.name) {
            return Err(NodeError::BadName(cfg.name.clone()));
        }
        let me = RelayId::from_name(&cfg.name);
        let secs = crate::clock::unix_secs(crate::clock::wall_now());
        let epoch = secs as u32;
        let route_cfg = route::RouteConfig {
            max_destinations: ROUTE_DESTS,
            max_neighbours: ROUTE_NEIGHBOURS,
            ..cfg.route
        };
        let route =
            Box::new(RT::new(me, Seqno(secs as u16), route_cfg, 0).map_err(NodeError::Route)?);
        let mut peers = HashMap::new();
        let mut names = HashMap::new();
        names.insert(me, cfg.name.clone());
        for s in &cfg.seeds {
            if s.name == cfg.name {
                continue;
            }
            names.insert(RelayId::from_name(&s.name), s.name.clone());
            peers.insert(
                s.name.clone(),
                PeerRec {
                    id: RelayId::from_name(&s.name),
                    dial: Some(s.addr),
                    advertised: None,
                    region: String::new(),
                    edge_url: String::new(),
                    position: None,
                    seed: true,
                    link: None,
                    dialing: None,
                    we_dialled: true,
                    backoff: BACKOFF_MIN,
                    next_dial: now,
                    last_error: None,
                    heard: now,
                },
            );
        }
        Ok(Self {
            interest: InterestTable::new(&cfg.name, epoch),
            me,
            start: now,
            epoch,
            links: HashMap::new(),
            peers,
            names,
            route,
            dedup: Dedup::default(),
            sink,
            next_msg: 0,
            events: VecDeque::new(),
            stats: MeshStats::default(),
            next_gossip: now + GOSSIP_EVERY,
            buf: vec![0; Message::MAX_LEN],
            status_sink: None,
            ticket_hook: None,
            ticket_seq: 0,
            ticket_dedup: Dedup::default(),
            ticket_sync: TicketSync::new(),
            neighbours: Neighbours::new(
                cfg.neighbour_policy
                    .unwrap_or(route::NeighbourConfig::with_max(cfg.max_neighbours)),
            ),
            next_plan: now,
            announce: AnnounceTable::new(&cfg.name, cfg.announce, epoch, 0),
            announce_hook: None,
            cfg,
        })
    }

    /// This relay's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// Flood ticket status records made here and apply those from other relays.
    pub fn set_ticket_hook(&mut self, hook: Box<dyn TicketHook>) {
        self.ticket_hook = Some(hook);
    }

    fn flood_tickets(&mut self, quic: &mut Driver, now: Instant) {
        let Some(hook) = self.ticket_hook.as_mut() else {
            return;
        };
        let records = hook.drain_outgoing(64);
        for r in records {
            self.flood_record(quic, now, &r, None);
        }
    }

    /// Flood `record` from here (a new `TicketStatus` of ours) to every link but `except`.
    fn flood_record(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        record: &[u8],
        except: Option<ConnectionHandle>,
    ) {
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
        self.flood_interest(quic, now, &msg, except);
    }

    /// Send due ticket snapshot parts to links that came up (see [`super::ticket_sync`]).
    fn sync_tickets(&mut self, quic: &mut Driver, now: Instant) {
        let Some(hook) = self.ticket_hook.as_mut() else {
            return;
        };
        self.ticket_sync
            .poll(now, &mut |max| hook.snapshot(max), &mut |conn, frame| {
                quic.send_control(now, conn, frame).is_ok()
            });
    }

    /// A part of a neighbour's ticket snapshot: apply each record through the normal
    /// verification; flood on (as our own `TicketStatus`) those that were new here.
    fn on_ticket_snapshot(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        conn: ConnectionHandle,
        snap: &mesh::TicketSnapshot<'_>,
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
            self.flood_record(quic, now, r, Some(conn));
        }
    }

    fn on_ticket_status(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        conn: ConnectionHandle,
        t: &mesh::TicketStatus<'_>,
        msg: &Message<'_>,
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
                self.flood_interest(quic, now, msg, Some(conn));
            }
            TicketApplied::Bad => self.stats.ticket_records_bad += 1,
            _ => {}
        }
    }

    /// Build this relay's announcements and take in the others' (the dashboard side).
    pub fn set_announce_hook(&mut self, hook: Box<dyn AnnounceHook>) {
        self.announce_hook = Some(hook);
    }

    /// Flood this relay's own announcement when due.
    fn announce_due(&mut self, quic: &mut Driver, now: Instant) {
        let us = self.us(now);
        if !self.announce.poll_due(us) {
            return;
        }
        let seq = self.announce.next_seq();
        // Without a hook (no dashboard) there is nothing to announce: only forward others'.
        let body = if self.announce_hook.is_some() {
            let json = self.status_json(quic, now);
            self.announce_hook
                .as_mut()
                .and_then(|h| h.local_body(&json, seq))
        } else {
            None
        };
        let Some(body) = body.filter(|b| !b.is_empty() && b.len() <= mesh::MAX_ANNOUNCE_BODY)
        else {
            self.announce.skip(us);
            return;
        };
        let name = self.cfg.name.clone();
        let msg = Message::Announce(mesh::Announce {
            origin: &name,
            seq,
            body: &body,
        });
        self.flood_interest(quic, now, &msg, None);
        let next = jittered(self.announce.config().interval);
        self.announce.record_own(seq, &body, us, next);
    }

    fn on_announce(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        conn: ConnectionHandle,
        a: &mesh::Announce<'_>,
        frame: &[u8],
    ) {
        let us = self.us(now);
        if self.announce.handle_remote(a.origin, a.seq, a.body, us) != Verdict::New {
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
        for (c, _) in self.up_links() {
            if c != conn {
                let _ = quic.send_control(now, c, frame);
            }
        }
    }

    /// A new link gets every held announcement, so a joining relay sees the whole mesh.
    fn replay_announcements(&mut self, quic: &mut Driver, now: Instant, conn: ConnectionHandle) {
        let mut n = 0;
        for (origin, seq, body) in self.announce.held() {
            let msg = Message::Announce(mesh::Announce { origin, seq, body });
            if let Ok(b) = mesh::encode(&msg, &mut self.buf) {
                let _ = quic.send_control(now, conn, b);
                n += 1;
            }
        }
        self.announce.note_replayed(n);
    }

    /// Hand the status JSON to `sink` every `every`.
    pub fn set_status_sink(&mut self, sink: StatusSink, every: Duration) {
        self.status_sink = Some((sink, every, self.start));
    }

    fn us(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_micros() as u64
    }

    fn at(&self, us: u64) -> Instant {
        self.start + Duration::from_micros(us)
    }

    fn name_of(&self, id: RelayId) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("#{}", id.0))
    }

    fn encode(&mut self, msg: &Message<'_>) -> Option<Bytes> {
        match mesh::encode(msg, &mut self.buf) {
            Ok(b) => Some(Bytes::copy_from_slice(b)),
            Err(e) => {
                log::error!("mesh: cannot encode {msg:?}: {e}");
                None
            }
        }
    }

    fn send_control(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        conn: ConnectionHandle,
        msg: &Message<'_>,
    ) {
        if let Some(b) = self.encode(msg) {
            let _ = quic.send_control(now, conn, &b);
        }
    }

    /// Links whose Hello arrived, with the peer's id.
    fn up_links(&self) -> Vec<(ConnectionHandle, RelayId)> {
        self.links
            .iter()
            .filter_map(|(c, l)| l.peer.as_ref().map(|(_, id)| (*c, *id)))
            .collect()
    }

    fn conn_of(&self, id: RelayId) -> Option<ConnectionHandle> {
        let name = self.names.get(&id)?;
        let c = self.peers.get(name)?.link?;
        self.links.get(&c)?.probe.is_up().then_some(c)
    }

    // ----- links ---------------------------------------------------------------------

    fn hello(&self) -> Hello<'_> {
        Hello {
            version: PROTOCOL_VERSION,
            name: &self.cfg.name,
            region: &self.cfg.region,
            position: self.cfg.position,
            edge_url: &self.cfg.edge_url,
            mesh_addr: "",
        }
    }

    fn on_connected(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        conn: ConnectionHandle,
        side: Side,
        remote: SocketAddr,
        cert: Option<CertificateDer<'static>>,
    ) {
        let us = self.us(now);
        self.links.insert(
            conn,
            Link {
                side,
                remote,
                cert,
                peer: None,
                probe: LinkProbe::new(self.cfg.probe, us),
                since: now,
                measured: false,
                pending_route: Vec::new(),
            },
        );
        let advertise = self.cfg.advertise.unwrap_or(self.cfg.listen).to_string();
        let mut hello = self.hello();
        hello.mesh_addr = &advertise;
        let msg = Message::Hello(hello);
        if let Ok(b) = mesh::encode(&msg, &mut vec![0; mesh::Hello::MAX_LEN]).map(|b| b.to_vec()) {
            let _ = quic.send_control(now, conn, &b);
        }
    }

    fn on_hello(&mut self, quic: &mut Driver, now: Instant, conn: ConnectionHandle, h: &Hello<'_>) {
        let Some(link) = self.links.get(&conn) else {
            return;
        };
        if link.peer.is_some() {
            self.stats.bad_messages += 1;
            return;
        }
        let valid = link
            .cert
            .as_ref()
            .is_some_and(|c| cert_is_valid_for(c, h.name));
        if !valid || h.name == self.cfg.name {
            self.stats.refused_identity += 1;
            log::warn!(
                "mesh: {} says it is {:?} but its certificate does not name it; closing",
                link.remote,
                h.name
            );
            quic.close(
                now,
                conn,
                driver::CLOSE_PROTOCOL,
                "certificate does not name this relay",
            );
            return;
        }
        if h.version != PROTOCOL_VERSION {
            self.stats.refused_malformed += 1;
            log::warn!(
                "mesh: {} speaks mesh protocol {} (we speak {PROTOCOL_VERSION})",
                h.name,
                h.version
            );
            quic.close(
                now,
                conn,
                driver::CLOSE_PROTOCOL,
                "unsupported mesh protocol version",
            );
            return;
        }
        let id = RelayId::from_name(h.name);
        if let Some(other) = self.names.get(&id)
            && other != h.name
        {
            self.stats.refused_identity += 1;
            log::error!(
                "mesh: relay ids of {other:?} and {:?} collide; rename one",
                h.name
            );
            quic.close(now, conn, driver::CLOSE_PROTOCOL, "relay id collision");
            return;
        }
        let side = link.side;
        let remote = link.remote;
        if !self.peer_room(h.name) {
            self.stats.refused_full += 1;
            quic.close(now, conn, driver::CLOSE_PROTOCOL, "peer table full");
            return;
        }
        // Far over the limit: take the link only long enough for the newcomer to learn
        // the other relays (our gossip below), then close it.
        let refuse = side == Side::Server
            && self.peers.get(h.name).is_none_or(|p| p.link.is_none())
            && self.peers.values().filter(|p| p.link.is_some()).count()
                >= self.neighbours.hard_limit();
        let advertised = h.mesh_addr.parse::<SocketAddr>().ok();
        let p = self
            .peers
            .entry(h.name.to_owned())
            .or_insert_with(|| PeerRec {
                id,
                dial: None,
                advertised: None,
                region: String::new(),
                edge_url: String::new(),
                position: None,
                seed: false,
                link: None,
                dialing: None,
                we_dialled: false,
                backoff: BACKOFF_MIN,
                next_dial: now,
                last_error: None,
                heard: now,
            });
        if let Some(existing) = p.link
            && existing != conn
        {
            self.stats.duplicate_links += 1;
            log::info!(
                "mesh: second link to {} ({remote}) closed, keeping the first",
                h.name
            );
            quic.close(now, conn, driver::CLOSE_DUPLICATE, "already linked");
            return;
        }
        p.link = Some(conn);
        if p.dialing == Some(conn) {
            p.dialing = None;
        }
        p.we_dialled = side == Side::Client;
        p.backoff = BACKOFF_MIN;
        p.last_error = None;
        p.region = h.region.to_owned();
        p.edge_url = h.edge_url.to_owned();
        p.position = h.position;
        if advertised.is_some() {
            p.advertised = advertised;
        }
        if p.dial.is_none() {
            p.dial = advertised;
        }
        self.names.insert(id, h.name.to_owned());
        if let Some(l) = self.links.get_mut(&conn) {
            l.peer = Some((h.name.to_owned(), id));
        }
        log::info!("mesh: link to {} ({remote}) up", h.name);
        // Everyone learns the new relay's name and address at once.
        self.send_gossip(quic, now, None);
        self.send_all_snapshots(quic, now, conn);
        if refuse {
            log::info!("mesh: refusing {} ({remote}): {CLOSE_REASON}", h.name);
            self.neighbours.refuse_later(conn, now);
            return;
        }
        if self.ticket_hook.is_some() {
            self.ticket_sync.link_up(conn);
            self.sync_tickets(quic, now);
        }
        self.replay_announcements(quic, now, conn);
        self.announce.trigger(self.us(now));
    }

    fn on_lost(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        conn: ConnectionHandle,
        was_connected: bool,
        reason: &str,
    ) {
        let link = self.links.remove(&conn);
        self.ticket_sync.link_down(conn);
        let us = self.us(now);
        for (name, p) in self.peers.iter_mut() {
            if p.dialing == Some(conn) || p.link == Some(conn) {
                self.neighbours.link_lost(name, conn, reason, now);
            }
            if p.dialing == Some(conn) {
                p.dialing = None;
                p.last_error = Some(reason.to_owned());
                p.next_dial = now + jittered(p.backoff);
                p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
                log::debug!("mesh: dial {name} failed: {reason}");
            }
            if p.link == Some(conn) {
                p.link = None;
                p.last_error = Some(reason.to_owned());
                p.next_dial = if p.we_dialled || p.seed {
                    now + jittered(p.backoff)
                } else {
                    now + INBOUND_GRACE
                };
                p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
                log::info!("mesh: link to {name} lost: {reason}");
                if self.route.handle_link_down(p.id, us).is_err() {
                    self.stats.route_errors += 1;
                }
                self.announce.trigger(us);
            }
        }
        let _ = (was_connected, link);
        self.drain_route(quic, now);
    }

    fn dial_due(&mut self, quic: &mut Driver, now: Instant) {
        // The policy looks at every known relay: a few times a second is plenty.
        if now < self.next_plan {
            return;
        }
        self.next_plan = now + PLAN_EVERY;
        for conn in self.neighbours.due_refusals(now) {
            quic.close(now, conn, CLOSE_NEIGHBOUR_LIMIT, CLOSE_REASON);
        }
        let views: Vec<PeerView<'_>> = self
            .peers
            .iter()
            .map(|(name, p)| {
                let link = p.link.and_then(|c| self.links.get(&c).map(|l| (c, l)));
                PeerView {
                    name,
                    id: p.id,
                    link: link.map(|(c, l)| (c, l.since)),
                    dialing: p.dialing.is_some(),
                    rtt_us: link.and_then(|(_, l)| l.probe.srtt_us()),
                    route_metric_us: self
                        .route
                        .route(p.id)
                        .map(|r| r.metric)
                        .filter(|m| m.is_finite())
                        .map(Metric::as_us),
                    position: p.position,
                    dialable: p.dial.is_some()
                        && p.next_dial <= now
                        && (p.seed || self.cfg.dial_learned),
                }
            })
            .collect();
        let plan = self
            .neighbours
            .plan(now, self.us(now), self.start, self.cfg.position, &views);
        for (name, conn) in plan.close {
            log::info!("mesh: closing the link to {name}: {CLOSE_REASON}");
            quic.close(now, conn, CLOSE_NEIGHBOUR_LIMIT, CLOSE_REASON);
        }
        for name in plan.dial {
            let Some(p) = self.peers.get_mut(&name) else {
                continue;
            };
            let Some(addr) = p.dial else { continue };
            match quic.connect(now, addr, &name) {
                Ok(c) => {
                    p.dialing = Some(c);
                    p.we_dialled = true;
                }
                Err(e) => {
                    p.last_error = Some(e.to_string());
                    p.next_dial = now + jittered(p.backoff);
                    p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Whether `name` is in the peer table or fits; when full, the learned peer not
    /// heard of for longest (unlinked, not a seed, not being dialled) makes room.
    fn peer_room(&mut self, name: &str) -> bool {
        if self.peers.len() < MAX_PEERS || self.peers.contains_key(name) {
            return true;
        }
        let oldest = self
            .peers
            .iter()
            .filter(|(_, p)| Self::evictable(p))
            .min_by_key(|(_, p)| p.heard)
            .map(|(n, _)| n.clone());
        match oldest {
            Some(n) => {
                self.peers.remove(&n);
                self.stats.peers_evicted += 1;
                true
            }
            None => false,
        }
    }

    fn evictable(p: &PeerRec) -> bool {
        !p.seed && p.link.is_none() && p.dialing.is_none()
    }

    /// Drop learned peers unlinked and not heard of for [`PEER_TTL`]; when the name
    /// table is half full, drop names that are neither a peer nor routed.
    fn evict_peers(&mut self, now: Instant) {
        let before = self.peers.len();
        self.peers.retain(|_, p| {
            if p.link.is_some() {
                p.heard = now;
            }
            !Self::evictable(p) || now.saturating_duration_since(p.heard) < PEER_TTL
        });
        self.stats.peers_evicted += (before - self.peers.len()) as u64;
        if self.names.len() >= MAX_PEERS {
            let before = self.names.len();
            let ids: std::collections::HashSet<RelayId> =
                self.peers.values().map(|p| p.id).collect();
            let (me, route) = (self.me, &self.route);
            self.names
                .retain(|id, _| *id == me || ids.contains(id) || route.next_hop(*id).is_some());
            self.stats.names_evicted += (before - self.names.len()) as u64;
        }
    }

    fn send_gossip(&mut self, quic: &mut Driver, now: Instant, only: Option<ConnectionHandle>) {
        let mut list: Vec<(String, String, String)> = Vec::new();
        for (n, p) in &self.peers {
            if list.len() >= MAX_GOSSIP {
                break;
            }
            if let Some(a) = p.advertised.or(p.dial)
                && p.link.is_some()
            {
                list.push((n.clone(), a.to_string(), p.region.clone()));
            }
        }
        let mut peers = heapless::Vec::new();
        for (n, a, r) in &list {
            let _ = peers.push(PeerInfo {
                name: n,
                addr: a,
                region: r,
            });
        }
        let msg = Message::Peers(Peers { peers });
        let Ok(bytes) = mesh::encode(&msg, &mut vec![0; Peers::MAX_LEN]).map(|b| b.to_vec()) else {
            return;
        };
        let targets: Vec<ConnectionHandle> = match only {
            Some(c) => vec![c],
            None => self.up_links().into_iter().map(|(c, _)| c).collect(),
        };
        for c in targets {
            let _ = quic.send_control(now, c, &bytes);
        }
    }

    fn on_peers(&mut self, now: Instant, peers: &Peers<'_>) {
        for pi in &peers.peers {
            if let Some(p) = self.peers.get_mut(pi.name) {
                p.heard = now;
                continue;
            }
            if pi.name == self.cfg.name || !self.peer_room(pi.name) {
                continue;
            }
            let Ok(addr) = pi.addr.parse::<SocketAddr>() else {
                continue;
            };
            let id = RelayId::from_name(pi.name);
            if self.names.get(&id).is_some_and(|n| n != pi.name) {
                continue;
            }
            self.names.insert(id, pi.name.to_owned());
            self.peers.insert(
                pi.name.to_owned(),
                PeerRec {
                    id,
                    dial: Some(addr),
                    advertised: Some(addr),
                    region: pi.region.to_owned(),
                    edge_url: String::new(),
                    position: None,
                    seed: false,
                    link: None,
                    dialing: None,
                    we_dialled: false,
                    backoff: BACKOFF_MIN,
                    next_dial: now + self.cfg.discover_delay,
                    last_error: None,
                    heard: now,
                },
            );
        }
    }

    // ----- probing and routing ------------------------------------------------------

    fn probe_due(&mut self, quic: &mut Driver, now: Instant) {
        let us = self.us(now);
        let conns: Vec<ConnectionHandle> = self
            .links
            .iter()
            .filter(|(_, l)| l.peer.is_some())
            .map(|(c, _)| *c)
            .collect();
        for c in conns {
            let Some(l) = self.links.get_mut(&c) else {
                continue;
            };
            if let Some(p) = l.probe.poll_probe(us) {
                let msg = Message::Probe(p);
                let sent = mesh::encode(&msg, &mut [0u8; Probe::MAX_LEN])
                    .map(|b| Bytes::copy_from_slice(b))
                    .is_ok_and(|b| quic.send_datagram(c, b).is_ok());
                if !sent {
                    // Never left this relay (QUIC's datagram queue full): not the link's loss.
                    l.probe.unsend(p);
                }
            }
            let change = l.probe.check(us);
            let peer = l.peer.clone();
            if let (Some(LinkState::Down), Some((name, id))) = (change, peer) {
                log::warn!("mesh: link to {name} down (no probe answer)");
                if self.route.handle_link_down(id, us).is_err() {
                    self.stats.route_errors += 1;
                }
                self.announce.trigger(us);
            }
        }
    }

    fn on_probe_ack(&mut self, now: Instant, conn: ConnectionHandle, ack: ProbeAck) {
        let us = self.us(now);
        let Some(l) = self.links.get_mut(&conn) else {
            return;
        };
        if l.probe.on_ack(ack, us).is_none() {
            return;
        }
        let _ = l.probe.check(us);
        let Some((_, id)) = l.peer.clone() else {
            return;
        };
        let m = l.probe.measurement(us);
        if self.route.handle_link_metric(id, m, us).is_err() {
            self.stats.route_errors += 1;
            return;
        }
        if !l.measured {
            l.measured = true;
            // The link has an RTT now: worth announcing.
            self.announce.trigger(us);
            let pending = std::mem::take(&mut l.pending_route);
            for msg in pending {
                self.apply_route_message(id, msg, us);
            }
        }
    }

    fn apply_route_message(&mut self, from: RelayId, m: route::Message, us: u64) {
        if self.route.handle_message(from, m, us).is_err() {
            self.stats.route_errors += 1;
        }
    }

    /// Remember a relay name seen in a flooded message (for the status page).
    fn learn_name(&mut self, name: &str) {
        let id = RelayId::from_name(name);
        if !self.names.contains_key(&id) && self.names.len() < MAX_PEERS * 2 {
            self.names.insert(id, name.to_owned());
        }
    }

    fn drain_route(&mut self, quic: &mut Driver, now: Instant) {
        let mut per_conn: HashMap<
            ConnectionHandle,
            heapless::Vec<route::Message, MAX_ROUTE_MESSAGES>,
        > = HashMap::new();
        let up = self.up_links();
        // Bounded per call; the rest stays queued in the table for the next tick (checked
        // before polling, so no transmit is taken and then dropped).
        for _ in 0..4 * ROUTE_DESTS {
            let Some(t) = self.route.poll_transmit() else {
                break;
            };
            let targets: Vec<ConnectionHandle> = match t.to {
                route::Recipient::Neighbour(id) => up
                    .iter()
                    .filter(|(_, i)| *i == id)
                    .map(|(c, _)| *c)
                    .collect(),
                _ => up.iter().map(|(c, _)| *c).collect(),
            };
            for c in targets {
                let batch = per_conn.entry(c).or_default();
                if batch.push(t.message).is_err() {
                    let full = std::mem::take(batch);
                    self.send_control(quic, now, c, &Message::Route(RouteBatch { messages: full }));
                    let batch = per_conn.entry(c).or_default();
                    let _ = batch.push(t.message);
                }
            }
        }
        for (c, messages) in per_conn {
            if !messages.is_empty() {
                self.send_control(quic, now, c, &Message::Route(RouteBatch { messages }));
            }
        }
        while let Some(ev) = self.route.poll_event() {
            self.record_event(ev);
        }
    }

    fn record_event(&mut self, ev: RouteEvent) {
        let wall = unix_ms();
        let ago_ms = self.us(crate::clock::now()).saturating_sub(ev.at_us()) / 1000;
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
        let rec = EventRec {
            unix_ms: wall.saturating_sub(ago_ms),
            text: format!("{ev}"),
            kind,
            dest: self.name_of(ev.dest()),
            next_hop: next_hop.map(|h| self.name_of(h)),
            old_next_hop: old_next_hop.map(|h| self.name_of(h)),
            metric_us: metric.map(Metric::as_us),
            old_metric_us: old_metric.map(Metric::as_us),
        };
        log::info!(
            "mesh: route to {} {kind}: via {} ({} us), was via {} ({} us)",
            rec.dest,
            rec.next_hop.as_deref().unwrap_or("-"),
            rec.metric_us.map_or(-1, i64::from),
            rec.old_next_hop.as_deref().unwrap_or("-"),
            rec.old_metric_us.map_or(-1, i64::from)
        );
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(rec);
    }

    fn on_route(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        conn: ConnectionHandle,
        batch: &RouteBatch,
    ) {
        let Some(link) = self.links.get_mut(&conn) else {
            return;
        };
        let Some((_, from)) = link.peer.clone() else {
            self.stats.bad_messages += 1;
            return;
        };
        if !link.measured {
            for m in &batch.messages {
                if link.pending_route.len() < MAX_PENDING_ROUTE {
                    link.pending_route.push(*m);
                } else {
                    self.stats.route_errors += 1;
                }
            }
            return;
        }
        let us = self.us(now);
        for m in &batch.messages {
            self.apply_route_message(from, *m, us);
        }
        self.drain_route(quic, now);
    }

    // ----- interest -----------------------------------------------------------------

    fn flood_interest(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        msg: &Message<'_>,
        except: Option<ConnectionHandle>,
    ) {
        let Some(bytes) = self.encode(msg) else {
            return;
        };
        for (c, _) in self.up_links() {
            if Some(c) != except {
                let _ = quic.send_control(now, c, &bytes);
            }
        }
    }

    fn send_snapshot(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        conn: ConnectionHandle,
        origin: &str,
    ) {
        let Some(o) = self.interest.get(origin) else {
            return;
        };
        let (epoch, seq) = (o.epoch, o.seq);
        let entries: Vec<(String, String)> = o.entries.iter().cloned().collect();
        let mut frames = Vec::new();
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
            if let Ok(b) = mesh::encode(&msg, &mut self.buf) {
                frames.push(b.to_vec());
            }
        }
        for f in frames {
            let _ = quic.send_control(now, conn, &f);
        }
    }

    fn send_all_snapshots(&mut self, quic: &mut Driver, now: Instant, conn: ConnectionHandle) {
        let origins: Vec<String> = self.interest.origins().map(|(n, _)| n.to_owned()).collect();
        for o in origins {
            self.send_snapshot(quic, now, conn, &o);
        }
    }

    fn on_local_interest(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        tenant: &str,
        pattern: &str,
        present: bool,
    ) {
        let Some(seq) = self.interest.local_change(tenant, pattern, present) else {
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
        self.flood_interest(quic, now, &msg, None);
    }

    // ----- forwarding ---------------------------------------------------------------

    /// Send `data` (with `dests`) towards its destinations, one copy per next hop.
    fn forward(&mut self, quic: &mut Driver, data: &Data<'_>, dests: &[RelayId]) {
        let mut groups: Vec<(RelayId, heapless::Vec<RelayId, MAX_DESTINATIONS>)> = Vec::new();
        for &d in dests {
            if d == self.me {
                continue;
            }
            let Some(nh) = self.route.next_hop(d) else {
                self.stats.dropped_no_route += 1;
                continue;
            };
            match groups.iter_mut().find(|(h, v)| *h == nh && !v.is_full()) {
                Some((_, v)) => {
                    let _ = v.push(d);
                }
                None => {
                    let mut v = heapless::Vec::new();
                    let _ = v.push(d);
                    groups.push((nh, v));
                }
            }
        }
        for (nh, destinations) in groups {
            let Some(conn) = self.conn_of(nh) else {
                self.stats.dropped_no_route += destinations.len() as u64;
                continue;
            };
            let copy = Data {
                destinations,
                ..data.clone()
            };
            let Some(bytes) = self.encode(&Message::Data(copy)) else {
                continue;
            };
            match quic.send_message(conn, bytes) {
                Ok(()) => self.stats.data_sent += 1,
                Err(SendError::QueueFull) => self.stats.dropped_queue_full += 1,
                Err(_) => self.stats.dropped_no_route += 1,
            }
        }
    }

    fn metric_to(&self, id: RelayId) -> u32 {
        self.route.route(id).map_or(u32::MAX, |r| r.metric.as_us())
    }

    fn on_publish(
        &mut self,
        quic: &mut Driver,
        tenant: &str,
        channel: &str,
        payload: &[u8],
        mode: DeliveryMode,
        local_match: bool,
    ) {
        self.stats.published += 1;
        let mut remote: Vec<RelayId> = self
            .interest
            .remote_matches(tenant, channel)
            .map(RelayId::from_name)
            .filter(|id| self.route.next_hop(*id).is_some())
            .collect();
        let dests: Vec<RelayId> = match mode {
            DeliveryMode::Broadcast => remote,
            DeliveryMode::LowLatency => {
                if local_match {
                    Vec::new()
                } else {
                    remote.sort_by_key(|id| (self.metric_to(*id), id.0));
                    remote.into_iter().take(1).collect()
                }
            }
            _ => {
                let n = remote.len() + usize::from(local_match);
                if n == 0 {
                    return;
                }
                let pick = fastrand::usize(..n);
                match remote.get(pick) {
                    Some(id) => vec![*id],
                    None => {
                        // This relay won the draw.
                        self.stats.delivered_local += 1;
                        self.sink.deliver(tenant, channel, payload, mode);
                        return;
                    }
                }
            }
        };
        if dests.is_empty() {
            return;
        }
        self.next_msg += 1;
        let msg_id = (u64::from(self.epoch) << 32) | (self.next_msg & 0xffff_ffff);
        let name = self.cfg.name.clone();
        let data = Data {
            origin: &name,
            msg_id,
            hop_limit: self.cfg.hop_limit,
            mode,
            destinations: heapless::Vec::new(),
            tenant,
            channel,
            payload,
        };
        self.forward(quic, &data, &dests);
    }

    fn on_data(&mut self, quic: &mut Driver, bytes: &[u8]) {
        let data = match mesh::decode(bytes) {
            Ok(Message::Data(d)) => d,
            Ok(_) | Err(_) => {
                self.stats.bad_messages += 1;
                return;
            }
        };
        self.stats.data_received += 1;
        if data.destinations.contains(&self.me) {
            if self.dedup.first_time(data.origin, data.msg_id) {
                self.stats.delivered_local += 1;
                self.sink
                    .deliver(data.tenant, data.channel, data.payload, data.mode);
            } else {
                self.stats.duplicates += 1;
            }
        }
        let rest: Vec<RelayId> = data
            .destinations
            .iter()
            .copied()
            .filter(|d| *d != self.me)
            .collect();
        if rest.is_empty() {
            return;
        }
        if data.hop_limit == 0 {
            self.stats.dropped_hop_limit += rest.len() as u64;
            return;
        }
        let next = Data {
            hop_limit: data.hop_limit - 1,
            ..data.clone()
        };
        self.forward(quic, &next, &rest);
    }

    // ----- control dispatch ---------------------------------------------------------

    fn on_control(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        conn: ConnectionHandle,
        frame: &[u8],
    ) {
        let msg = match mesh::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                self.stats.bad_messages += 1;
                log::debug!("mesh: bad control frame: {e}");
                return;
            }
        };
        let has_peer = self.links.get(&conn).is_some_and(|l| l.peer.is_some());
        match (&msg, has_peer) {
            (Message::Hello(h), _) => self.on_hello(quic, now, conn, h),
            (_, false) => {
                self.stats.bad_messages += 1;
                self.stats.refused_malformed += 1;
                quic.close(
                    now,
                    conn,
                    driver::CLOSE_PROTOCOL,
                    "first message must be Hello",
                );
            }
            (Message::Peers(p), true) => self.on_peers(now, p),
            (Message::Route(b), true) => self.on_route(quic, now, conn, b),
            (Message::InterestUpdate(u), true) => {
                self.learn_name(u.origin);
                match self
                    .interest
                    .apply_update(u.origin, u.epoch, u.seq, &u.changes)
                {
                    Applied::New => self.flood_interest(quic, now, &msg, Some(conn)),
                    Applied::Gap if self.interest.want_snapshot(u.origin, now) => {
                        let req = Message::InterestSnapshotRequest(InterestSnapshotRequest {
                            origin: u.origin,
                        });
                        self.send_control(quic, now, conn, &req);
                    }
                    _ => {}
                }
            }
            (Message::InterestSnapshotRequest(r), true) => {
                let origin = r.origin.to_owned();
                if self.interest.may_answer(conn.0, &origin, now) {
                    self.send_snapshot(quic, now, conn, &origin);
                }
            }
            (Message::InterestSnapshot(s), true) => {
                self.learn_name(s.origin);
                let replaced = self.interest.apply_snapshot(
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
                        if c != conn {
                            self.send_snapshot(quic, now, c, &origin);
                        }
                    }
                }
            }
            (Message::Data(_), true) => self.on_data(quic, frame),
            (Message::TicketStatus(t), true) => self.on_ticket_status(quic, now, conn, t, &msg),
            (Message::TicketSnapshot(t), true) => self.on_ticket_snapshot(quic, now, conn, t),
            (Message::Announce(a), true) => self.on_announce(quic, now, conn, a, frame),
            _ => self.stats.bad_messages += 1,
        }
    }

    fn on_datagram(
        &mut self,
        quic: &mut Driver,
        now: Instant,
        conn: ConnectionHandle,
        bytes: &[u8],
    ) {
        match mesh::decode(bytes) {
            Ok(Message::Probe(p)) => {
                let ack = Message::ProbeAck(ProbeAck {
                    seq: p.seq,
                    echo_us: p.sent_us,
                });
                if let Ok(b) = mesh::encode(&ack, &mut [0u8; ProbeAck::MAX_LEN])
                    .map(|b| Bytes::copy_from_slice(b))
                {
                    let _ = quic.send_datagram(conn, b);
                }
            }
            // We only probe links whose Hello arrived.
            Ok(Message::ProbeAck(a)) if self.links.get(&conn).is_some_and(|l| l.peer.is_some()) => {
                self.on_probe_ack(now, conn, a);
            }
            _ => self.stats.bad_messages += 1,
        }
        let _ = now;
    }

    // ----- status -------------------------------------------------------------------

    /// The status JSON (identity, links, routes, interest, counters, recent events).
    pub fn status_json(&self, quic: &Driver, now: Instant) -> String {
        let us = self.us(now);
        #[derive(Serialize)]
        struct LinkJ {
            peer: Option<String>,
            remote: String,
            side: &'static str,
            up: bool,
            rtt_ms: Option<f64>,
            min_rtt_ms: f64,
            jitter_ms: f64,
            loss_pct: f64,
            probes_sent: u64,
            probes_answered: u64,
            quic_rtt_ms: Option<f64>,
            queued_messages: usize,
            age_s: u64,
        }
        #[derive(Serialize)]
        struct RouteJ {
            dest: String,
            next_hop: Option<String>,
            metric_ms: Option<f64>,
            smoothed_metric_ms: Option<f64>,
            direct_metric_ms: Option<f64>,
            saving_ms: f64,
            seqno: Option<u16>,
        }
        #[derive(Serialize)]
        struct PeerJ {
            name: String,
            region: String,
            edge_url: String,
            dial: Option<String>,
            linked: bool,
            seed: bool,
            last_error: Option<String>,
        }
        let ms = |m: Metric| m.is_finite().then(|| f64::from(m.as_us()) / 1000.0);
        let links: Vec<LinkJ> = self
            .links
            .iter()
            .map(|(c, l)| {
                let m = l.probe.measurement(us);
                LinkJ {
                    peer: l.peer.as_ref().map(|p| p.0.clone()),
                    remote: l.remote.to_string(),
                    side: if l.side == Side::Client { "out" } else { "in" },
                    up: l.probe.is_up(),
                    rtt_ms: l.probe.srtt_us().map(|v| f64::from(v) / 1000.0),
                    min_rtt_ms: f64::from(m.min_rtt_us) / 1000.0,
                    jitter_ms: f64::from(m.jitter_us) / 1000.0,
                    loss_pct: f64::from(m.loss_ppm) / 10_000.0,
                    probes_sent: l.probe.sent,
                    probes_answered: l.probe.answered,
                    quic_rtt_ms: quic.rtt(*c).map(|d| d.as_secs_f64() * 1000.0),
                    queued_messages: quic.queued_messages(*c),
                    age_s: now.saturating_duration_since(l.since).as_secs(),
                }
            })
            .collect();
        let routes: Vec<RouteJ> = self
            .route
            .routes()
            .map(|r| RouteJ {
                dest: self.name_of(r.dest),
                next_hop: r.next_hop.map(|h| self.name_of(h)),
                metric_ms: ms(r.metric),
                smoothed_metric_ms: ms(r.smoothed_metric),
                direct_metric_ms: r.direct_metric.and_then(ms),
                saving_ms: f64::from(r.saving_us()) / 1000.0,
                seqno: r.seqno.map(|s| s.0),
            })
            .collect();
        let peers: Vec<PeerJ> = self
            .peers
            .iter()
            .map(|(n, p)| PeerJ {
                name: n.clone(),
                region: p.region.clone(),
                edge_url: p.edge_url.clone(),
                dial: p.dial.map(|a| a.to_string()),
                linked: p.link.is_some(),
                seed: p.seed,
                last_error: p.last_error.clone(),
            })
            .collect();
        let interest: serde_json::Map<String, serde_json::Value> = self
            .interest
            .origins()
            .map(|(n, o)| {
                (
                    n.to_owned(),
                    serde_json::json!({"epoch": o.epoch, "seq": o.seq, "patterns": o.entries.len()}),
                )
            })
            .collect();
        let rs = self.route.stats();
        let j = serde_json::json!({
            "identity": {
                "name": self.cfg.name,
                "relay_id": self.me.0,
                "region": self.cfg.region,
                "position": self.cfg.position.map(|p| serde_json::json!({
                    "lat": f64::from(p.lat_udeg) / 1e6, "lon": f64::from(p.lon_udeg) / 1e6})),
                "edge_url": self.cfg.edge_url,
                "mesh_addr": quic.local_addr().to_string(),
                "protocol_version": PROTOCOL_VERSION,
                "uptime_s": now.saturating_duration_since(self.start).as_secs(),
            },
            "links": links,
            "routes": routes,
            "peers": peers,
            "interest": interest,
            "counters": {
                "mesh": self.stats,
                "quic": quic.stats(),
                "interest": self.interest.stats(),
                "dedup_duplicates": self.dedup.duplicates,
                "dedup_too_old": self.dedup.too_old,
                "ticket_sync": self.ticket_sync.stats,
                "neighbours": self.neighbours.stats,
                "announce": self.announce.stats(),
                "control_by_kind": mesh::KIND_NAMES
                    .iter()
                    .zip(quic.control_by_kind())
                    .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
                    .collect::<serde_json::Map<String, serde_json::Value>>(),
                "route": {
                    "updates_received": rs.updates_received,
                    "updates_sent": rs.updates_sent,
                    "route_changes": rs.route_changes,
                    "seqno_requests_sent": rs.seqno_requests_sent,
                    "events_dropped": rs.events_dropped,
                    "neighbour_table_full": rs.neighbour_table_full,
                    "dest_table_full": rs.dest_table_full,
                },
            },
            "route_events": self.events,
            "neighbours": {
                "max": self.neighbours.max(),
                "roles": self.neighbours.roles.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            },
        });
        j.to_string()
    }
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.75 + fastrand::f64() * 0.5)
}

impl Handler for MeshNode {
    type Command = MeshCommand;

    fn on_event(&mut self, quic: &mut Driver, now: Instant, event: QuicEvent) {
        match event {
            QuicEvent::Connected {
                conn,
                side,
                remote,
                peer_cert,
            } => self.on_connected(quic, now, conn, side, remote, peer_cert),
            QuicEvent::Lost {
                conn,
                was_connected,
                reason,
            } => self.on_lost(quic, now, conn, was_connected, &reason),
            QuicEvent::Control { conn, frame } => self.on_control(quic, now, conn, &frame),
            QuicEvent::Message { conn, bytes } => {
                if self.links.get(&conn).is_some_and(|l| l.peer.is_some()) {
                    self.on_data(quic, &bytes);
                } else {
                    self.stats.bad_messages += 1;
                }
            }
            // Any link that passed mutual TLS: the peer's first probe can arrive before its
            // Hello has been processed (the datagram and the Hello often share a packet, and
            // datagrams are handed up first), and must be answered all the same.
            QuicEvent::Datagram { conn, bytes } => {
                if self.links.contains_key(&conn) {
                    self.on_datagram(quic, now, conn, &bytes);
                }
            }
        }
    }

    fn on_command(&mut self, quic: &mut Driver, now: Instant, command: MeshCommand) {
        match command {
            MeshCommand::Publish {
                tenant,
                channel,
                payload,
                mode,
                local_match,
            } => self.on_publish(quic, &tenant, &channel, &payload, mode, local_match),
            MeshCommand::Interest {
                tenant,
                pattern,
                present,
            } => self.on_local_interest(quic, now, &tenant, &pattern, present),
            MeshCommand::Status(reply) => {
                let _ = reply.try_send(self.status_json(quic, now));
            }
        }
    }

    fn on_tick(&mut self, quic: &mut Driver, now: Instant) {
        self.dial_due(quic, now);
        self.flood_tickets(quic, now);
        self.sync_tickets(quic, now);
        self.probe_due(quic, now);
        self.announce_due(quic, now);
        let us = self.us(now);
        if self.route.poll_timeout().is_some_and(|t| t <= us) {
            self.route.handle_timeout(us);
        }
        if now >= self.next_gossip {
            self.next_gossip = now + GOSSIP_EVERY;
            self.send_gossip(quic, now, None);
        }
        self.drain_route(quic, now);
        let route = &self.route;
        self.interest
            .expire(now, |o| route.next_hop(RelayId::from_name(o)).is_some());
        self.evict_peers(now);
        if let Some((_, every, due)) = &self.status_sink
            && now >= *due
        {
            let next = now + *every;
            let json = self.status_json(quic, now);
            if let Some((sink, _, due)) = &mut self.status_sink {
                sink(&json);
                *due = next;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_gossip;
        if let Some((_, _, due)) = &self.status_sink {
            t = t.min(*due);
        }
        for l in self.links.values().filter(|l| l.peer.is_some()) {
            t = t.min(self.at(l.probe.next_probe_at()));
        }
        for p in self.peers.values() {
            if p.link.is_none() && p.dialing.is_none() && p.dial.is_some() {
                t = t.min(p.next_dial);
            }
        }
        if let Some(r) = self.route.poll_timeout() {
            t = t.min(self.at(r));
        }
        if let Some(s) = self.ticket_sync.poll_timeout() {
            t = t.min(s);
        }
        if self.announce_hook.is_some() {
            t = t.min(self.at(self.announce.poll_timeout()));
        }
        // Down detection needs a look even when nothing else is due.
        Some(t.min(crate::clock::now() + Duration::from_millis(100)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_is_small_enough_to_move() {
        // The routing table is boxed; the node itself stays small.
        assert!(
            std::mem::size_of::<MeshNode>() < 4096,
            "{}",
            std::mem::size_of::<MeshNode>()
        );
        assert!(
            std::mem::size_of::<RT>() < 256 * 1024,
            "{}",
            std::mem::size_of::<RT>()
        );
    }

    struct NoSink;
    impl LocalSink for NoSink {
        fn deliver(&mut self, _: &str, _: &str, _: &[u8], _: DeliveryMode) -> usize {
            0
        }
    }

    fn gossip(node: &mut MeshNode, now: Instant, names: &[String]) {
        for batch in names.chunks(MAX_GOSSIP) {
            let mut peers = heapless::Vec::new();
            for n in batch {
                let _ = peers.push(PeerInfo {
                    name: n,
                    addr: "127.0.0.1:9",
                    region: "",
                });
            }
            node.on_peers(now, &Peers { peers });
        }
    }

    #[test]
    fn learned_peers_and_names_are_evicted() {
        let t0 = crate::clock::now();
        let mut cfg = MeshConfig::new("me", "127.0.0.1:0".parse().expect("addr"));
        cfg.seeds = vec!["seed@127.0.0.1:7000".parse().expect("seed")];
        let mut node = MeshNode::new(cfg, Box::new(NoSink), t0).expect("node");
        let s = Duration::from_secs(1);
        gossip(&mut node, t0, &["first".to_owned()]);
        // One at a time (a name whose relay id collides is skipped) up to the bound.
        for i in 0..2 * MAX_PEERS {
            if node.peers.len() >= MAX_PEERS {
                break;
            }
            gossip(&mut node, t0 + s, &[format!("r{i}")]);
        }
        assert_eq!(node.peers.len(), MAX_PEERS);
        assert_eq!(node.stats.peers_evicted, 0);
        // Full: a newcomer takes the place of the one not heard of for longest.
        let late = "late".to_owned();
        gossip(&mut node, t0 + 2 * s, std::slice::from_ref(&late));
        assert!(node.peers.contains_key("late"));
        assert!(!node.peers.contains_key("first"));
        assert_eq!(node.peers.len(), MAX_PEERS);
        assert_eq!(node.stats.peers_evicted, 1);
        // Named again in gossip: heard of. The others go after PEER_TTL; the seed stays.
        let kept = node
            .peers
            .keys()
            .find(|n| n.starts_with('r'))
            .cloned()
            .expect("a learned peer");
        gossip(&mut node, t0 + PEER_TTL, std::slice::from_ref(&kept));
        node.evict_peers(t0 + s + PEER_TTL - Duration::from_millis(1));
        assert_eq!(node.peers.len(), MAX_PEERS);
        node.evict_peers(t0 + s + PEER_TTL);
        let mut left: Vec<&str> = node.peers.keys().map(String::as_str).collect();
        left.sort_unstable();
        let mut want = vec!["late", "seed", kept.as_str()];
        want.sort_unstable();
        assert_eq!(left, want);
        assert_eq!(node.stats.peers_evicted as usize, MAX_PEERS - 2);
        // The names of the dropped peers went with them (no route to any).
        assert!(node.stats.names_evicted > 0);
        assert_eq!(node.names.len(), node.peers.len() + 1);
    }
}
