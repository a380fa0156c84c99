//! The mesh node: links, probing, routing, interest, forwarding, ticket status and
//! announcements of one relay, as a sans-IO state machine ([`MeshNode`]).
//!
//! It holds no socket, no driver, no clock and no entropy of its own: the caller passes
//! time in (µs, [`crate::mesh::time`]), a seed at creation, and drains what it wants sent.
//! The QUIC wiring (`crate::app::mesh`) and the virtual-time harness
//! ([`crate::sim`]) drive the same code.
//!
//! By responsibility:
//! - [`peers`]: links and membership: the Hello, dials and redials with backoff, the
//!   neighbour policy ([`crate::mesh::neighbours`]), gossip, eviction of forgotten relays;
//! - [`routing`]: probes ([`crate::mesh::probe`]) feeding the route table
//!   (`core::route::RouteTable`), route messages and route events;
//! - [`flooding`]: what is flooded on every link: interest (changes numbered and applied
//!   in order, snapshots after a gap and on link-up), ticket status records (and the
//!   snapshot a new link gets), announcements ([`crate::mesh::announce`]);
//! - [`data`]: publishes and forwarded data, split by [`crate::mesh::forward::plan`],
//!   delivered once ([`crate::mesh::dedup`]);
//! - [`report`]: the typed status ([`crate::mesh::status::MeshStatus`]).

mod data;
mod flooding;
mod output;
mod peers;
mod report;
mod routing;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use fastpubsub_core::frame::Mode;
use fastpubsub_core::mesh::{self, KIND_NAMES, Message};
use fastpubsub_core::route::{self, RelayId, RouteTable, Seqno};
use rustls_pki_types::CertificateDer;

pub use output::{MeshEvent, MeshTransmit, Refused, TransmitKind};

use super::announce::AnnounceTable;
use super::config::MeshConfig;
use super::dedup::Dedup;
use super::hooks::{AnnounceHook, TicketHook};
use super::interest::InterestTable;
use super::limits::{GOSSIP_EVERY_US, ROUTE_DESTS, ROUTE_NEIGHBOURS};
use super::link::{LinkId, LinkSide};
use super::neighbours::Neighbours;
use super::status::{MeshStats, RouteEventStatus};
use super::ticket_sync::TicketSync;
use super::time::MS;
use output::Outputs;
use peers::{Link, PeerRec};

type RT = RouteTable;

/// Checks that a peer's certificate is valid for a relay name (the QUIC wiring passes
/// `crate::quic::tls::cert_is_valid_for`; the harness its own stand-in).
pub type IdentityCheck = fn(&CertificateDer<'_>, &str) -> bool;

/// How often the node wakes up when nothing else is due: to take the tickets layer's new
/// records and do its housekeeping.
const HOUSEKEEPING_EVERY_US: u64 = 100 * MS;

/// What a node starts from besides its configuration: the caller's clock and randomness.
#[derive(Debug, Clone, Copy)]
pub struct NodeEnv {
    /// Mesh time now, µs.
    pub now_us: u64,
    /// Wall-clock time now, ms since the Unix epoch (epochs that survive restarts, and the
    /// time of route events).
    pub unix_ms: u64,
    /// Seed of the node's random choices (long-range neighbours, jitter, random delivery).
    pub seed: u64,
    /// How a peer's certificate is checked against the name in its Hello.
    pub identity_check: IdentityCheck,
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
            Self::BadName(n) => write!(
                f,
                "invalid relay name {n:?}: use 1-32 of a-z, 0-9 and '-', not starting or ending with '-'"
            ),
            Self::Route(e) => write!(f, "routing configuration: {e}"),
        }
    }
}

impl std::error::Error for NodeError {}

/// A publish made by a client of this relay.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Channel (concrete).
    pub channel: &'a str,
    /// Payload.
    pub payload: &'a [u8],
    /// Delivery mode.
    pub mode: Mode,
    /// Whether this relay has a matching subscriber (and, for the deliver-one modes, is a
    /// candidate: broadcast always delivers here separately).
    pub local_match: bool,
}

/// One relay's mesh node. See the module docs.
///
/// # Call order
///
/// Like `core::route::RouteTable` (and quinn-proto's `Connection`):
///
/// 1. Feed inputs as they happen, each with the current time:
///    - from the links: [`handle_link_up`](Self::handle_link_up) once a QUIC handshake
///      completed (mutual TLS), [`handle_control`](Self::handle_control) per control-stream
///      frame, [`handle_datagram`](Self::handle_datagram) per datagram,
///      [`handle_message`](Self::handle_message) per data message,
///      [`handle_link_lost`](Self::handle_link_lost) when a link ends;
///    - answers to this node's own outputs: [`handle_dialled`](Self::handle_dialled) for
///      each [`MeshEvent::Dial`], [`handle_refused`](Self::handle_refused) for a transmit a
///      link did not take;
///    - from this relay's edge: [`handle_publish`](Self::handle_publish),
///      [`handle_interest`](Self::handle_interest);
///    - [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout)
///      has come.
/// 2. After any `handle_*` call, drain [`poll_transmit`](Self::poll_transmit) (hand each
///    to its link, reporting refusals) and [`poll_event`](Self::poll_event) (dial, close,
///    deliver locally) until `None`.
/// 3. Re-arm one timer at [`poll_timeout`](Self::poll_timeout).
///
/// [`status`](Self::status) may be read at any time.
///
/// Work per call is bounded by the tables' capacities: a control message is `O(1)` to
/// `O(links)` (floods) or `O(ROUTE_DESTS × ROUTE_NEIGHBOURS)` (a route change), a timeout
/// `O(links + peers)` (the neighbour plan runs at most every 250 ms).
pub struct MeshNode {
    cfg: MeshConfig,
    me: RelayId,
    started_us: u64,
    /// Wall-clock ms at mesh time 0.
    unix_ms_at_zero: u64,
    epoch: u32,
    // Ordered maps: iteration order (and so output order) is the same on every run, and
    // names a peer chose cannot be made to collide.
    links: BTreeMap<LinkId, Link>,
    peers: BTreeMap<String, PeerRec>,
    names: BTreeMap<RelayId, String>,
    route: Box<RT>,
    interest: InterestTable,
    dedup: Dedup,
    next_msg: u64,
    route_log: VecDeque<RouteEventStatus>,
    stats: MeshStats,
    /// Data copies handed out and how many a link refused (`data_sent` is the difference).
    data_copies: u64,
    data_refused: u64,
    next_gossip: u64,
    /// Route messages are waiting to be batched out by then.
    route_due: Option<u64>,
    next_housekeeping: u64,
    next_eviction: u64,
    buf: Vec<u8>,
    ticket_hook: Option<Box<dyn TicketHook>>,
    ticket_seq: u64,
    ticket_dedup: Dedup,
    ticket_sync: TicketSync,
    neighbours: Neighbours,
    announce: AnnounceTable,
    announce_hook: Option<Box<dyn AnnounceHook>>,
    rng: fastrand::Rng,
    identity_check: IdentityCheck,
    out: Outputs,
    control_by_kind: [[u64; 2]; KIND_NAMES.len()],
}

impl MeshNode {
    /// A node for `cfg`, starting at `env.now_us`.
    pub fn new(cfg: MeshConfig, env: NodeEnv) -> Result<Self, NodeError> {
        if !mesh::valid_relay_name(&cfg.name) {
            return Err(NodeError::BadName(cfg.name.clone()));
        }
        let me = RelayId::from_name(&cfg.name);
        let secs = env.unix_ms / 1000;
        let epoch = secs as u32;
        let now = env.now_us;
        let route_cfg = route::RouteConfig {
            max_destinations: ROUTE_DESTS,
            max_neighbours: ROUTE_NEIGHBOURS,
            ..cfg.route
        };
        let route =
            Box::new(RT::new(me, Seqno(secs as u16), route_cfg, now).map_err(NodeError::Route)?);
        let mut rng = fastrand::Rng::with_seed(env.seed);
        let mut peers = BTreeMap::new();
        let mut names = BTreeMap::new();
        names.insert(me, cfg.name.clone());
        for s in &cfg.seeds {
            if s.name == cfg.name {
                continue;
            }
            let id = RelayId::from_name(&s.name);
            names.insert(id, s.name.clone());
            peers.insert(s.name.clone(), PeerRec::seed(id, s.addr, now));
        }
        let policy = cfg
            .neighbour_policy
            .unwrap_or(route::NeighbourConfig::with_max(cfg.max_neighbours));
        Ok(Self {
            interest: InterestTable::new(&cfg.name, epoch),
            me,
            started_us: now,
            unix_ms_at_zero: env.unix_ms.saturating_sub(now / 1000),
            epoch,
            links: BTreeMap::new(),
            peers,
            names,
            route,
            dedup: Dedup::default(),
            next_msg: 0,
            route_log: VecDeque::new(),
            stats: MeshStats::default(),
            data_copies: 0,
            data_refused: 0,
            next_gossip: now + GOSSIP_EVERY_US,
            route_due: None,
            next_housekeeping: now,
            next_eviction: now,
            buf: vec![0; Message::MAX_LEN],
            ticket_hook: None,
            ticket_seq: 0,
            ticket_dedup: Dedup::default(),
            ticket_sync: TicketSync::new(),
            neighbours: Neighbours::new(policy, rng.u64(..), now),
            announce: AnnounceTable::new(&cfg.name, cfg.announce, epoch, now),
            announce_hook: None,
            rng,
            identity_check: env.identity_check,
            out: Outputs::default(),
            control_by_kind: [[0; 2]; KIND_NAMES.len()],
            cfg,
        })
    }

    /// This relay's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// This relay's routing id.
    pub fn id(&self) -> RelayId {
        self.me
    }

    /// The route table (read-only: next hops and metrics, for tests and the harness).
    pub fn routes(&self) -> &RouteTable {
        &self.route
    }

    /// The name of relay `id`, if known.
    pub fn name_of_id(&self, id: RelayId) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }

    /// Flood ticket status records made here and apply those from other relays.
    pub fn set_ticket_hook(&mut self, hook: Box<dyn TicketHook>) {
        self.ticket_hook = Some(hook);
    }

    /// Build this relay's announcements and take in the others' (the dashboard side).
    pub fn set_announce_hook(&mut self, hook: Box<dyn AnnounceHook>) {
        self.announce_hook = Some(hook);
    }

    // ----- inputs ------------------------------------------------------------------

    /// A link's handshake completed (the peer presented a certificate from the mesh CA:
    /// `cert`, its leaf). The node sends its Hello; the peer's identifies it.
    pub fn handle_link_up(
        &mut self,
        link: LinkId,
        side: LinkSide,
        remote: std::net::SocketAddr,
        cert: Option<CertificateDer<'static>>,
        now: u64,
    ) {
        self.on_link_up(link, side, remote, cert, now);
    }

    /// A link ended (closed by either side, timed out, or its dial failed) for `reason`.
    pub fn handle_link_lost(&mut self, link: LinkId, reason: &str, now: u64) {
        self.on_lost(link, reason, now);
    }

    /// The answer to a [`MeshEvent::Dial`] for `peer`: the new link's id, or why it could
    /// not be started.
    pub fn handle_dialled(&mut self, peer: &str, result: Result<LinkId, String>, now: u64) {
        self.on_dialled(peer, result, now);
    }

    /// One frame from a link's control stream.
    pub fn handle_control(&mut self, link: LinkId, frame: &[u8], now: u64) {
        self.count_kind(frame, 4, 1);
        self.on_control(link, frame, now);
    }

    /// One datagram from a link.
    pub fn handle_datagram(&mut self, link: LinkId, bytes: &[u8], now: u64) {
        self.count_kind(bytes, 0, 1);
        // Any link that passed mutual TLS: the peer's first probe can arrive before its
        // Hello has been processed (the datagram and the Hello often share a packet, and
        // datagrams are handed up first), and must be answered all the same.
        if self.links.contains_key(&link) {
            self.on_datagram(link, bytes, now);
        }
    }

    /// One data message (a whole stream) from a link. Taken as [`Bytes`] so a local
    /// delivery shares it instead of copying the payload.
    pub fn handle_message(&mut self, link: LinkId, bytes: Bytes, now: u64) {
        if self.links.get(&link).is_some_and(|l| l.peer.is_some()) {
            self.on_data(&bytes, now);
        } else {
            self.stats.bad_messages += 1;
        }
    }

    /// A link did not take `t` (from [`Self::poll_transmit`]): counted, and the probe or
    /// ticket snapshot it carried is given up.
    pub fn handle_refused(&mut self, t: &MeshTransmit, why: Refused, _now: u64) {
        match t.kind {
            TransmitKind::Control => self.uncount_kind(&t.bytes, 4),
            TransmitKind::Datagram => self.uncount_kind(&t.bytes, 0),
            TransmitKind::Message => {}
        }
        match t.kind {
            TransmitKind::Message => {
                self.data_refused += 1;
                match why {
                    Refused::QueueFull => self.stats.dropped_queue_full += 1,
                    _ => self.stats.dropped_no_route += 1,
                }
            }
            TransmitKind::Datagram => {
                self.stats.datagrams_refused += 1;
                if let Ok(Message::Probe(p)) = mesh::decode(&t.bytes)
                    && let Some(l) = self.links.get_mut(&t.link)
                {
                    // Never left this relay: not the link's loss.
                    l.probe.handle_unsent(p);
                }
            }
            TransmitKind::Control => {
                self.stats.control_refused += 1;
                if mesh::kind_index(&t.bytes) == Some(TICKET_SNAPSHOT_KIND) {
                    self.ticket_sync.handle_refused(t.link);
                }
            }
        }
    }

    /// A client of this relay published.
    pub fn handle_publish(&mut self, p: Publish<'_>, now: u64) {
        self.on_publish(p, now);
    }

    /// This relay gained its first (`present`) or lost its last subscriber for
    /// (`tenant`, `pattern`).
    pub fn handle_interest(&mut self, tenant: &str, pattern: &str, present: bool, now: u64) {
        self.on_local_interest(tenant, pattern, present, now);
    }

    /// Timed work due at `now`: dials and closes, probes and link state, routing timers,
    /// gossip, announcements, ticket records and snapshots, housekeeping.
    pub fn handle_timeout(&mut self, now: u64) {
        if self.neighbours.poll_timeout().is_some_and(|t| t <= now) {
            self.plan_neighbours(now);
        }
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_EVERY_US;
            self.flood_tickets(now);
        }
        self.sync_tickets(now);
        self.probe_due(now);
        self.announce_due(now);
        if self.route.poll_timeout().is_some_and(|t| t <= now) {
            self.route.handle_timeout(now);
            self.route_changed(now);
        }
        if now >= self.next_gossip {
            self.next_gossip = now + GOSSIP_EVERY_US;
            self.send_gossip(now, None);
        }
        if self.route_due.is_some_and(|t| t <= now) {
            self.route_due = None;
            self.drain_route(now);
        }
        if self.interest.poll_timeout().is_some_and(|t| t <= now) {
            let route = &self.route;
            self.interest
                .handle_timeout(now, |o| route.next_hop(RelayId::from_name(o)).is_some());
        }
        if now >= self.next_eviction {
            self.next_eviction = now + super::time::SEC;
            self.evict_peers(now);
        }
    }

    // ----- outputs -----------------------------------------------------------------

    /// The next transmit for a link (see the call order).
    pub fn poll_transmit(&mut self) -> Option<MeshTransmit> {
        self.out.transmits.pop_front()
    }

    /// The next event for the driver (see the call order).
    pub fn poll_event(&mut self) -> Option<MeshEvent> {
        self.out.events.pop_front()
    }

    /// When [`Self::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<u64> {
        let mut t = self.next_gossip.min(self.next_housekeeping);
        if let Some(r) = self.route_due {
            t = t.min(r);
        }
        let mut add = |x: Option<u64>| {
            if let Some(x) = x {
                t = t.min(x);
            }
        };
        add(self.neighbours.poll_timeout());
        add(self.route.poll_timeout());
        add(self.ticket_sync.poll_timeout());
        add(self.interest.poll_timeout());
        if self.announce_hook.is_some() {
            add(self.announce.poll_timeout());
        }
        for l in self
            .links
            .values()
            .filter(|l| l.peer.is_some() && !l.closing)
        {
            add(l.probe.poll_timeout());
        }
        Some(t)
    }

    // ----- shared helpers ----------------------------------------------------------

    fn us_since_start(&self, now: u64) -> u64 {
        now.saturating_sub(self.started_us)
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

    /// Queue encoded bytes for `link`; control frames and datagrams are counted by kind.
    fn transmit(&mut self, link: LinkId, kind: TransmitKind, bytes: Bytes) {
        let counted = match kind {
            TransmitKind::Control => Some(4),
            TransmitKind::Datagram => Some(0),
            TransmitKind::Message => None,
        };
        if let Some(extra) = counted {
            self.count_kind(&bytes, extra, 0);
        }
        if !self.out.transmit(link, kind, bytes.clone()) {
            self.stats.outputs_dropped = self.out.dropped;
            if let Some(extra) = counted {
                self.uncount_kind(&bytes, extra);
            } else {
                self.data_refused += 1;
            }
        }
    }

    fn send_control(&mut self, link: LinkId, msg: &Message<'_>) {
        if let Some(b) = self.encode(msg) {
            self.transmit(link, TransmitKind::Control, b);
        }
    }

    /// Closes `link`. A link in use stops carrying anything at once and its routes move
    /// (data sent on a closing link would be lost: the far end drops it).
    fn close(&mut self, link: LinkId, code: u32, reason: &'static str, now: u64) {
        if let Some(l) = self.links.get_mut(&link)
            && !l.closing
        {
            l.closing = true;
            if let (true, Some((_, id))) = (l.measured, l.peer.clone()) {
                if self.route.handle_link_down(id, now).is_err() {
                    self.stats.route_errors += 1;
                }
                self.route_changed(now);
            }
        }
        self.out.event(MeshEvent::Close { link, code, reason });
    }

    /// Counts `bytes` (+ `extra` framing) under its kind, `dir` 0 sent, 1 received.
    fn count_kind(&mut self, bytes: &[u8], extra: usize, dir: usize) {
        if let Some(c) = mesh::kind_index(bytes)
            .and_then(|k| self.control_by_kind.get_mut(k))
            .and_then(|d| d.get_mut(dir))
        {
            *c += (bytes.len() + extra) as u64;
        }
    }

    fn uncount_kind(&mut self, bytes: &[u8], extra: usize) {
        if let Some(c) = mesh::kind_index(bytes)
            .and_then(|k| self.control_by_kind.get_mut(k))
            .and_then(|d| d.get_mut(0))
        {
            *c = c.saturating_sub((bytes.len() + extra) as u64);
        }
    }

    // ----- dispatch ----------------------------------------------------------------

    fn on_control(&mut self, link: LinkId, frame: &[u8], now: u64) {
        let msg = match mesh::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                self.stats.bad_messages += 1;
                log::debug!("mesh: bad control frame: {e}");
                return;
            }
        };
        let has_peer = self.links.get(&link).is_some_and(|l| l.peer.is_some());
        match (&msg, has_peer) {
            (Message::Hello(h), _) => self.on_hello(link, h, now),
            (_, false) => {
                self.stats.bad_messages += 1;
                self.stats.refused_malformed += 1;
                self.close(
                    link,
                    mesh::close::PROTOCOL,
                    "first message must be Hello",
                    now,
                );
            }
            (Message::Peers(p), true) => self.on_peers(p, now),
            (Message::Route(b), true) => self.on_route(link, b, now),
            (Message::InterestUpdate(u), true) => self.on_interest_update(link, u, frame, now),
            (Message::InterestSnapshotRequest(r), true) => {
                self.interest.handle_snapshot_request(link, r.origin, now);
                self.drain_interest();
            }
            (Message::InterestSnapshot(s), true) => self.on_interest_snapshot(link, s, now),
            (Message::Data(_), true) => self.on_data(&Bytes::copy_from_slice(frame), now),
            (Message::TicketStatus(t), true) => self.on_ticket_status(link, t, frame, now),
            (Message::TicketSnapshot(t), true) => self.on_ticket_snapshot(link, t, now),
            (Message::Announce(a), true) => self.on_announce(link, a, frame, now),
            _ => self.stats.bad_messages += 1,
        }
    }
}

/// The kind index of `TicketSnapshot` (see `fastpubsub_core::mesh::KIND_NAMES`).
const TICKET_SNAPSHOT_KIND: usize = 10;

#[cfg(test)]
mod tests;
