//! A virtual-time harness for the mesh: N real [`MeshNode`]s (neighbour selection,
//! routing, interest, forwarding, dedup, ticket sync, announcements: everything but QUIC and
//! sockets) over modelled links, deterministic for a seed. What `core/tests/route_harness`
//! is for the route table, this is for the whole node.
//!
//! ```text
//! let m = Matrix::load("data/latency/matrix.csv")?;
//! let mut sim = Sim::from_matrix(&m, SimConfig::default(), |cfg| cfg.max_neighbours = 16);
//! sim.run_until(60 * SEC);
//! let q = sim.route_quality(None);           // realized paths vs the full-mesh optimum
//! let s = sim.subscribe(3, "acme", "chat.#"); // a subscriber on relay 3
//! sim.run_for(5 * SEC);
//! let p = sim.publish(7, "acme", "chat.x", Mode::Broadcast, 100);
//! sim.run_for(2 * SEC);
//! assert_eq!(sim.delivered(s), 1);
//! ```
//!
//! # The model
//! - Relay `i` listens at `10.x.y.z:7000` ([`Sim::addr`]); a dial reaches the relay at that
//!   address. Certificates are the relay's name (the nodes check them with a stand-in).
//! - A dial completes after one RTT at the dialler and 1.5 RTT at the other side (QUIC's
//!   1-RTT handshake); a dial to a dead or unreachable relay is lost after the idle
//!   timeout ([`SimConfig::idle_timeout_us`], 10 s as the relay's QUIC).
//! - Every transmit takes half the pair's RTT ± jitter. Datagrams (probes) are lost with the
//!   pair's loss rate; control frames arrive in order and a lost one is retransmitted one RTT
//!   later (QUIC's reliable stream); data messages likewise but unordered. At most
//!   [`SimConfig::max_in_flight`] data messages per link direction: more are refused
//!   (`Refused::QueueFull`, counted by the node).
//! - A pair can be cut ([`Sim::set_pair`]): nothing gets through; after the idle timeout
//!   both ends lose the link. A killed relay ([`Sim::kill`]) processes nothing; its peers
//!   lose their links after the idle timeout. A close reaches the peer after the one-way
//!   delay, as "closed by peer: CODE: REASON".
//! - Local subscribers are modelled per relay ([`Sim::subscribe`]): interest changes go to
//!   the node as the broker would send them, and every [`MeshEvent::Deliver`] is counted
//!   per subscriber (and per publish, so duplicates and losses show).
//!
//! # Cost
//! One event (a transmit arriving, a timer, a link change) is one node input and the
//! outputs it makes; the event queue is a binary heap: `O(log events)` per step. Nothing
//! is `O(relays)` per step; the reports ([`Sim::route_quality`]) are `O(relays²)`.

mod matrix;
mod report;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};

use bytes::Bytes;
use fastpubsub_core::frame::Mode;
use fastpubsub_core::mesh::{self, close};
use fastpubsub_core::pattern;
use fastpubsub_core::route::RelayId;
use rustls_pki_types::CertificateDer;

pub use matrix::{Matrix, MatrixError};
pub use report::{ControlBytes, Convergence, RouteQuality};

use crate::mesh::config::{MeshConfig, Seed};
use crate::mesh::link::{LinkId, LinkSide};
use crate::mesh::node::{MeshEvent, MeshNode, NodeEnv, Publish, Refused, TransmitKind};
use crate::mesh::time::SEC;

/// The link model and the harness's own settings.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    /// Seed of everything random (node seeds, jitter, loss).
    pub seed: u64,
    /// Jitter of every one-way delay: uniform in ± this share of it, parts per million.
    pub jitter_ppm: u32,
    /// Default loss rate of every pair, parts per million.
    pub loss_ppm: u32,
    /// A link with nothing getting through is lost after this long (QUIC's idle timeout).
    pub idle_timeout_us: u64,
    /// Data messages in flight per link direction before sends are refused.
    pub max_in_flight: usize,
    /// Wall-clock ms at virtual time 0 (the nodes' epochs).
    pub unix_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            jitter_ppm: 20_000,
            loss_ppm: 0,
            idle_timeout_us: 10 * SEC,
            max_in_flight: 1024,
            unix_ms: 1_750_000_000_000,
        }
    }
}

/// A pair of relays as the network connects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// RTT, µs.
    pub rtt_us: u32,
    /// Loss, parts per million (datagrams lost; reliable frames retransmitted).
    pub loss_ppm: u32,
    /// Whether anything gets through.
    pub up: bool,
}

/// A subscriber made with [`Sim::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubId(pub usize);

/// A publish made with [`Sim::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PubId(pub u64);

struct Sub {
    relay: usize,
    tenant: String,
    pattern: String,
    delivered: u64,
    live: bool,
}

/// What happened to one publish.
#[derive(Debug, Clone, Default)]
pub struct PubRecord {
    /// Origin relay.
    pub origin: usize,
    /// When it was published, µs.
    pub at_us: u64,
    /// (subscriber, latency µs) of every delivery, in order.
    pub deliveries: Vec<(SubId, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Connecting,
    Up,
    Closed,
}

struct SimLink {
    a: usize,
    b: usize,
    la: LinkId,
    lb: LinkId,
    state: LinkState,
    /// Data messages in flight, a→b and b→a.
    in_flight: [usize; 2],
    /// Arrival of the last control frame, a→b and b→a (in-order delivery).
    last_control: [u64; 2],
    /// Lost at each end already reported.
    lost: [bool; 2],
    /// Since when nothing got through (cut pair or dead end), if so.
    silent_since: Option<u64>,
}

struct Relay {
    node: MeshNode,
    cfg: MeshConfig,
    alive: bool,
    /// The timer deadline last pushed.
    armed: u64,
    links: HashMap<LinkId, usize>,
    next_link: usize,
    /// Interest refcount per (tenant, pattern).
    interest: HashMap<(String, String), usize>,
    subs: Vec<usize>,
}

enum Ev {
    Timer(usize),
    Frame {
        link: usize,
        to_b: bool,
        kind: TransmitKind,
        bytes: Bytes,
    },
    Up {
        link: usize,
        at_b: bool,
    },
    Lost {
        link: usize,
        at_b: bool,
        reason: String,
    },
    /// Is the (silent) link still silent? Then it is lost at both ends.
    IdleCheck {
        link: usize,
    },
}

/// A queued event: its time, its push order, and where its payload waits (the heap moves
/// only these 24 bytes).
struct Item {
    at: u64,
    seq: u64,
    slot: usize,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    // Reversed: BinaryHeap is a max-heap, the earliest comes first (ties in push order).
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Counters of the harness itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Events processed.
    pub events: u64,
    /// Transmits handed to links.
    pub transmits: u64,
    /// Datagrams lost by the link model.
    pub datagrams_lost: u64,
    /// Reliable frames retransmitted by the link model.
    pub retransmits: u64,
    /// Data messages refused (in-flight bound).
    pub refused: u64,
    /// Frames dropped because their link was gone.
    pub dropped_dead_link: u64,
    /// Data messages among them, or refused because the sending end's link was gone.
    pub data_lost_dead_link: u64,
    /// Dials made.
    pub dials: u64,
    /// Links that came up (both ends).
    pub links_up: u64,
    /// Link ends lost.
    pub links_lost: u64,
    /// Deliveries to local subscribers.
    pub deliveries: u64,
    /// Node timeouts handled.
    pub timeouts: u64,
    /// Frames delivered, by kind (control, datagram, message).
    pub frames: [u64; 3],
}

/// The harness. See the module docs.
pub struct Sim {
    cfg: SimConfig,
    now: u64,
    relays: Vec<Relay>,
    by_addr: HashMap<SocketAddr, usize>,
    by_id: HashMap<RelayId, usize>,
    /// Relay ids shared by more than one relay (such relays cannot link).
    pub id_collisions: usize,
    /// Default RTT per ordered pair, µs (`u32::MAX`: unreachable).
    rtt_us: Vec<u32>,
    /// Pairs changed from the default.
    pairs: HashMap<(usize, usize), Pair>,
    links: Vec<SimLink>,
    heap: BinaryHeap<Item>,
    /// Event payloads by slot, and the free slots.
    slab: Vec<Option<Ev>>,
    free: Vec<usize>,
    seq: u64,
    rng: fastrand::Rng,
    subs: Vec<Sub>,
    pubs: Vec<PubRecord>,
    next_pub: u64,
    control: report::ByLink,
    stats: SimStats,
    /// Why link ends were lost, with how often (the reason text, cut at 40 characters).
    pub lost_reasons: std::collections::BTreeMap<String, u64>,
    /// Data copies lost on a link that was gone (closed by its far end while the copy was
    /// in flight): (publish, destination relay) for every destination a lost copy listed.
    pub data_losses: Vec<(PubId, usize)>,
}

/// The stand-in certificate check: a relay's "certificate" is its name.
fn same_name(cert: &CertificateDer<'_>, name: &str) -> bool {
    cert.as_ref() == name.as_bytes()
}

fn addr_of(i: usize) -> SocketAddr {
    let i = i as u32 + 1;
    SocketAddr::from((
        Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8),
        7000,
    ))
}

impl Sim {
    /// An empty mesh; add relays with [`Self::add_relay`] (or use [`Self::from_matrix`]).
    pub fn new(cfg: SimConfig) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(cfg.seed),
            cfg,
            now: 0,
            relays: Vec::new(),
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            id_collisions: 0,
            rtt_us: Vec::new(),
            pairs: HashMap::new(),
            links: Vec::new(),
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
            subs: Vec::new(),
            pubs: Vec::new(),
            next_pub: 0,
            control: report::ByLink::default(),
            stats: SimStats::default(),
            lost_reasons: Default::default(),
            data_losses: Vec::new(),
        }
    }

    /// One relay per place of `m`, named by [`Matrix::relay_names`], with the matrix's RTTs;
    /// every relay but the first is seeded with the first one and learns the others by
    /// gossip. `tweak` adjusts each relay's configuration (its name and seeds are set).
    pub fn from_matrix(m: &Matrix, cfg: SimConfig, mut tweak: impl FnMut(&mut MeshConfig)) -> Self {
        let mut sim = Self::new(cfg);
        let names = m.relay_names();
        let n = names.len();
        sim.rtt_us = m.rtt_us.clone();
        for (i, name) in names.iter().enumerate() {
            let mut c = MeshConfig::new(name, addr_of(i));
            if i > 0 {
                c.seeds = vec![Seed {
                    name: names[0].clone(),
                    addr: addr_of(0),
                }];
            }
            tweak(&mut c);
            sim.add_relay_at(c, n);
        }
        sim
    }

    /// Adds a relay running `cfg` (its `listen` is replaced by [`Self::addr`]); returns
    /// its index. RTTs to relays added this way default to 100 ms ([`Self::set_rtt`]).
    pub fn add_relay(&mut self, cfg: MeshConfig) -> usize {
        let n = self.relays.len() + 1;
        // Grow the dense RTT table to hold the new relay.
        let old = self.relays.len();
        if self.rtt_us.len() < n * n {
            let mut t = vec![100_000u32; n * n];
            for a in 0..old {
                for b in 0..old {
                    t[a * n + b] = self.rtt_us.get(a * old + b).copied().unwrap_or(100_000);
                }
            }
            t[old * n + old] = 0;
            self.rtt_us = t;
        }
        self.add_relay_at(cfg, n)
    }

    fn add_relay_at(&mut self, mut cfg: MeshConfig, stride: usize) -> usize {
        let i = self.relays.len();
        debug_assert!(self.rtt_us.len() >= stride * stride);
        cfg.listen = addr_of(i);
        let env = NodeEnv {
            now_us: self.now,
            unix_ms: self.cfg.unix_ms + self.now / 1000,
            seed: self.rng.u64(..),
            identity_check: same_name,
        };
        let node = match MeshNode::new(cfg.clone(), env) {
            Ok(n) => n,
            Err(e) => panic!("relay {}: {e}", cfg.name),
        };
        let id = node.id();
        if self.by_id.insert(id, i).is_some() {
            self.id_collisions += 1;
        }
        self.by_addr.insert(addr_of(i), i);
        self.relays.push(Relay {
            node,
            cfg,
            alive: true,
            armed: u64::MAX,
            links: HashMap::new(),
            next_link: 1,
            interest: HashMap::new(),
            subs: Vec::new(),
        });
        self.after_input(i);
        i
    }

    /// The harness's settings.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Virtual time now, µs.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Number of relays.
    pub fn len(&self) -> usize {
        self.relays.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// The address relay `i` listens at.
    pub fn addr(&self, i: usize) -> SocketAddr {
        addr_of(i)
    }

    /// Relay `i`'s node (read it: routes, status).
    pub fn node(&self, i: usize) -> &MeshNode {
        &self.relays[i].node
    }

    /// Relay `i`'s node, to install hooks or feed it directly (then call
    /// [`Self::after_input`]).
    pub fn node_mut(&mut self, i: usize) -> &mut MeshNode {
        &mut self.relays[i].node
    }

    /// The relay named `name`.
    pub fn index_by_name(&self, name: &str) -> Option<usize> {
        self.relays.iter().position(|r| r.cfg.name == name)
    }

    /// The relay whose node has routing id `id`.
    pub fn index_of(&self, id: RelayId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// Whether relay `i` runs.
    pub fn is_alive(&self, i: usize) -> bool {
        self.relays[i].alive
    }

    /// The harness's counters.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// The model of the pair `a`–`b` now.
    pub fn pair(&self, a: usize, b: usize) -> Pair {
        let key = (a.min(b), a.max(b));
        self.pairs.get(&key).copied().unwrap_or(Pair {
            rtt_us: self.default_rtt(a, b),
            loss_ppm: self.cfg.loss_ppm,
            up: true,
        })
    }

    fn default_rtt(&self, a: usize, b: usize) -> u32 {
        let n = self.relays.len();
        let (x, y) = (a.min(b), a.max(b));
        self.rtt_us.get(x * n + y).copied().unwrap_or(u32::MAX)
    }

    /// Sets the RTT of the pair `a`–`b` (both ways).
    pub fn set_rtt(&mut self, a: usize, b: usize, rtt_us: u32) {
        let p = Pair {
            rtt_us,
            ..self.pair(a, b)
        };
        self.set_pair(a, b, p);
    }

    /// Sets the model of the pair `a`–`b`. Cutting it (`up: false`) starts the idle timer
    /// of every link between them; healing it lets retransmissions through.
    pub fn set_pair(&mut self, a: usize, b: usize, p: Pair) {
        let key = (a.min(b), a.max(b));
        let was_up = self.pair(a, b).up;
        self.pairs.insert(key, p);
        if was_up != p.up {
            let now = self.now;
            let ids: Vec<usize> = (0..self.links.len())
                .filter(|&l| {
                    let k = &self.links[l];
                    (k.a.min(k.b), k.a.max(k.b)) == key && k.state != LinkState::Closed
                })
                .collect();
            for l in ids {
                if p.up {
                    self.links[l].silent_since = None;
                } else {
                    self.go_silent(l, now);
                }
            }
        }
    }

    // ----- the local broker model ------------------------------------------------

    /// A subscriber to `pattern` in `tenant` on relay `i` (the first one for the pair
    /// tells the node).
    pub fn subscribe(&mut self, i: usize, tenant: &str, pattern: &str) -> SubId {
        let id = SubId(self.subs.len());
        self.subs.push(Sub {
            relay: i,
            tenant: tenant.to_owned(),
            pattern: pattern.to_owned(),
            delivered: 0,
            live: true,
        });
        self.relays[i].subs.push(id.0);
        let key = (tenant.to_owned(), pattern.to_owned());
        let n = self.relays[i].interest.entry(key).or_insert(0);
        *n += 1;
        if *n == 1 && self.relays[i].alive {
            let now = self.now;
            self.relays[i]
                .node
                .handle_interest(tenant, pattern, true, now);
            self.after_input(i);
        }
        id
    }

    /// The subscriber leaves (the last one for the pair tells the node).
    pub fn unsubscribe(&mut self, s: SubId) {
        let Some(sub) = self.subs.get_mut(s.0) else {
            return;
        };
        if !sub.live {
            return;
        }
        sub.live = false;
        let (i, key) = (sub.relay, (sub.tenant.clone(), sub.pattern.clone()));
        self.relays[i].subs.retain(|x| *x != s.0);
        let left = match self.relays[i].interest.get_mut(&key) {
            Some(n) => {
                *n -= 1;
                *n
            }
            None => return,
        };
        if left == 0 {
            self.relays[i].interest.remove(&key);
            if self.relays[i].alive {
                let now = self.now;
                self.relays[i]
                    .node
                    .handle_interest(&key.0, &key.1, false, now);
                self.after_input(i);
            }
        }
    }

    /// Deliveries subscriber `s` got.
    pub fn delivered(&self, s: SubId) -> u64 {
        self.subs.get(s.0).map_or(0, |x| x.delivered)
    }

    /// What happened to publish `p`.
    pub fn publish_record(&self, p: PubId) -> Option<&PubRecord> {
        self.pubs.get(p.0 as usize)
    }

    /// Every publish, by [`PubId`] order.
    pub fn publishes(&self) -> &[PubRecord] {
        &self.pubs
    }

    fn matching_subs(&self, i: usize, tenant: &str, channel: &str) -> Vec<usize> {
        self.relays[i]
            .subs
            .iter()
            .copied()
            .filter(|&s| {
                let x = &self.subs[s];
                x.tenant == tenant && pattern::matches(&x.pattern, channel)
            })
            .collect()
    }

    /// Deliver to relay `i`'s local subscribers as the broker would: every match for
    /// broadcast, one (the first) for the deliver-one modes.
    fn deliver_local(&mut self, i: usize, tenant: &str, channel: &str, payload: &[u8], mode: Mode) {
        let mut m = self.matching_subs(i, tenant, channel);
        if mode != Mode::Broadcast {
            m.truncate(1);
        }
        let pid = payload
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes);
        for s in m {
            self.subs[s].delivered += 1;
            self.stats.deliveries += 1;
            if let Some(rec) = pid.and_then(|p| self.pubs.get_mut(p as usize)) {
                rec.deliveries
                    .push((SubId(s), self.now.saturating_sub(rec.at_us)));
            }
        }
    }

    /// A client of relay `i` publishes `len` bytes (at least 8: the publish id) on
    /// `channel`. The edge's part is modelled: a broadcast, or a low-latency publish with
    /// a local match, is delivered to local subscribers at once; the mesh gets the rest.
    pub fn publish(
        &mut self,
        i: usize,
        tenant: &str,
        channel: &str,
        mode: Mode,
        len: usize,
    ) -> PubId {
        let id = PubId(self.next_pub);
        self.next_pub += 1;
        self.pubs.push(PubRecord {
            origin: i,
            at_us: self.now,
            deliveries: Vec::new(),
        });
        let mut payload = vec![0u8; len.max(8)];
        payload[..8].copy_from_slice(&id.0.to_be_bytes());
        if !self.relays[i].alive {
            return id;
        }
        let local_match = !self.matching_subs(i, tenant, channel).is_empty();
        if mode == Mode::Broadcast || (mode == Mode::LowLatency && local_match) {
            self.deliver_local(i, tenant, channel, &payload, mode);
        }
        let now = self.now;
        self.relays[i].node.handle_publish(
            Publish {
                tenant,
                channel,
                payload: &payload,
                mode,
                local_match,
            },
            now,
        );
        self.after_input(i);
        id
    }

    // ----- relays coming and going -----------------------------------------------

    /// Relay `i` stops: it processes nothing more; its peers lose their links after the
    /// idle timeout.
    pub fn kill(&mut self, i: usize) {
        if !self.relays[i].alive {
            return;
        }
        self.relays[i].alive = false;
        let now = self.now;
        let ids: Vec<usize> = self.relays[i].links.values().copied().collect();
        for l in ids {
            let end = usize::from(self.links[l].b == i);
            self.links[l].lost[end] = true;
            self.go_silent(l, now);
        }
        self.relays[i].links.clear();
    }

    /// Relay `i` starts again with its configuration and a new epoch (its subscribers
    /// are gone with the old process).
    pub fn restart(&mut self, i: usize) {
        if self.relays[i].alive {
            return;
        }
        let env = NodeEnv {
            now_us: self.now,
            unix_ms: self.cfg.unix_ms + self.now / 1000 + 1_000,
            seed: self.rng.u64(..),
            identity_check: same_name,
        };
        let cfg = self.relays[i].cfg.clone();
        match MeshNode::new(cfg, env) {
            Ok(n) => self.relays[i].node = n,
            Err(e) => panic!("relay {i}: {e}"),
        }
        for s in std::mem::take(&mut self.relays[i].subs) {
            self.subs[s].live = false;
        }
        self.relays[i].interest.clear();
        self.relays[i].alive = true;
        self.relays[i].armed = u64::MAX;
        self.after_input(i);
    }

    // ----- running -----------------------------------------------------------------

    /// Processes every event up to `t_us` (virtual time ends at `t_us`).
    pub fn run_until(&mut self, t_us: u64) {
        while self.heap.peek().is_some_and(|it| it.at <= t_us) {
            self.step();
        }
        self.now = self.now.max(t_us);
    }

    /// Runs for `d_us` more.
    pub fn run_for(&mut self, d_us: u64) {
        self.run_until(self.now + d_us);
    }

    /// Processes the next event; false when there is none.
    pub fn step(&mut self) -> bool {
        let Some(Item { at, slot, .. }) = self.heap.pop() else {
            return false;
        };
        let Some(ev) = self.slab.get_mut(slot).and_then(Option::take) else {
            return true;
        };
        self.free.push(slot);
        self.now = self.now.max(at);
        self.stats.events += 1;
        match ev {
            Ev::Timer(i) => {
                let r = &mut self.relays[i];
                if r.alive && r.armed == at {
                    r.armed = u64::MAX;
                    self.stats.timeouts += 1;
                    r.node.handle_timeout(self.now);
                    self.after_input(i);
                }
            }
            Ev::Frame {
                link,
                to_b,
                kind,
                bytes,
            } => self.arrive(link, to_b, kind, bytes),
            Ev::Up { link, at_b } => self.link_up(link, at_b),
            Ev::Lost { link, at_b, reason } => self.lose(link, at_b, &reason),
            Ev::IdleCheck { link } => {
                let l = &self.links[link];
                if l.state != LinkState::Closed
                    && l.silent_since
                        .is_some_and(|t| self.now >= t + self.cfg.idle_timeout_us)
                {
                    self.links[link].state = LinkState::Closed;
                    for at_b in [false, true] {
                        self.lose(link, at_b, "timed out");
                    }
                }
            }
        }
        true
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(i) => {
                if let Some(x) = self.slab.get_mut(i) {
                    *x = Some(ev);
                }
                i
            }
            None => {
                self.slab.push(Some(ev));
                self.slab.len() - 1
            }
        };
        self.heap.push(Item {
            at,
            seq: self.seq,
            slot,
        });
    }

    /// Drains relay `i`'s outputs and re-arms its timer. Call after feeding a node
    /// directly through [`Self::node_mut`].
    pub fn after_input(&mut self, i: usize) {
        loop {
            let mut any = false;
            while let Some(t) = self.relays[i].node.poll_transmit() {
                any = true;
                self.transmit(i, t);
            }
            while let Some(e) = self.relays[i].node.poll_event() {
                any = true;
                self.event(i, e);
            }
            if !any {
                break;
            }
        }
        if !self.relays[i].alive {
            return;
        }
        let Some(t) = self.relays[i].node.poll_timeout() else {
            return;
        };
        // Never in the past, and never "now" again for the same instant (no spinning).
        let t = t.max(self.now + 1);
        if t != self.relays[i].armed {
            self.relays[i].armed = t;
            self.push(t, Ev::Timer(i));
        }
    }

    fn one_way(&mut self, a: usize, b: usize) -> (u64, Pair) {
        let p = self.pair(a, b);
        let base = u64::from(p.rtt_us / 2);
        let j = u64::from(self.cfg.jitter_ppm);
        let jitter = if j == 0 {
            0
        } else {
            // ± jitter_ppm of the delay.
            let span = base * j / 1_000_000;
            self.rng.u64(..=2 * span)
        };
        let d = (base + jitter).saturating_sub(base * j / 1_000_000).max(1);
        (d, p)
    }

    fn transmit(&mut self, from: usize, t: crate::mesh::node::MeshTransmit) {
        let Some(&l) = self.relays[from].links.get(&t.link) else {
            if t.kind == TransmitKind::Message {
                self.lost_data(&t.bytes);
            }
            // The link is gone here: as QUIC answers for a closed connection.
            self.relays[from]
                .node
                .handle_refused(&t, Refused::NoLink, self.now);
            return;
        };
        let to_b = self.links[l].a == from;
        let dir = usize::from(!to_b);
        let to = if to_b {
            self.links[l].b
        } else {
            self.links[l].a
        };
        if t.kind == TransmitKind::Message {
            if self.links[l].in_flight[dir] >= self.cfg.max_in_flight {
                self.stats.refused += 1;
                self.relays[from]
                    .node
                    .handle_refused(&t, Refused::QueueFull, self.now);
                return;
            }
            self.links[l].in_flight[dir] += 1;
        }
        self.stats.transmits += 1;
        if t.kind != TransmitKind::Message {
            let extra = if t.kind == TransmitKind::Control {
                4
            } else {
                0
            };
            self.control.add(from, to, &t.bytes, extra, self.now);
        }
        let (d, p) = self.one_way(from, to);
        let lost = p.loss_ppm > 0 && self.rng.u32(..1_000_000) < p.loss_ppm;
        let mut at = self.now + d;
        match t.kind {
            TransmitKind::Datagram if lost || !p.up => {
                self.stats.datagrams_lost += 1;
                return;
            }
            TransmitKind::Datagram => {}
            _ if !p.up => {
                // Held until the link heals (or is lost): delivered at the idle timeout's
                // end at the latest, and dropped then if the link is gone.
                at += self.cfg.idle_timeout_us;
            }
            _ if lost => {
                self.stats.retransmits += 1;
                at += u64::from(p.rtt_us);
            }
            _ => {}
        }
        if t.kind == TransmitKind::Control {
            let last = &mut self.links[l].last_control[dir];
            at = at.max(*last);
            *last = at;
        }
        self.push(
            at,
            Ev::Frame {
                link: l,
                to_b,
                kind: t.kind,
                bytes: t.bytes,
            },
        );
    }

    fn event(&mut self, from: usize, e: MeshEvent) {
        match e {
            MeshEvent::Dial { peer, addr } => self.dial(from, &peer, addr),
            MeshEvent::Close { link, code, reason } => {
                let Some(l) = self.relays[from].links.remove(&link) else {
                    return;
                };
                let at_b = self.links[l].b == from;
                self.links[l].state = LinkState::Closed;
                // This end: lost once the close is sent (3 PTO in QUIC; one RTT here).
                let (d, _) = self.one_way(self.links[l].a, self.links[l].b);
                self.push(
                    self.now + 2 * d,
                    Ev::Lost {
                        link: l,
                        at_b,
                        reason: "closed".into(),
                    },
                );
                self.push(
                    self.now + d,
                    Ev::Lost {
                        link: l,
                        at_b: !at_b,
                        reason: format!("closed by peer: {code}: {reason}"),
                    },
                );
            }
            MeshEvent::Deliver {
                tenant,
                channel,
                payload,
                mode,
            } => self.deliver_local(from, &tenant, &channel, &payload, mode),
            // A variant added later: nothing modelled.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }

    fn dial(&mut self, from: usize, peer: &str, addr: SocketAddr) {
        self.stats.dials += 1;
        let la = LinkId(self.relays[from].next_link);
        self.relays[from].next_link += 1;
        let now = self.now;
        self.relays[from].node.handle_dialled(peer, Ok(la), now);
        let target = self.by_addr.get(&addr).copied();
        let l = self.links.len();
        let b = target.unwrap_or(from);
        let mut link = SimLink {
            a: from,
            b,
            la,
            lb: LinkId(0),
            state: LinkState::Connecting,
            in_flight: [0; 2],
            last_control: [0; 2],
            lost: [false, target.is_none()],
            silent_since: None,
        };
        self.relays[from].links.insert(la, l);
        let reachable = target.is_some_and(|b| {
            b != from
                && self.relays[b].alive
                && self.pair(from, b).up
                && self.pair(from, b).rtt_us != u32::MAX
        });
        if !reachable {
            link.silent_since = Some(now);
            link.lost[1] = true;
            self.links.push(link);
            self.push(
                now + self.cfg.idle_timeout_us,
                Ev::Lost {
                    link: l,
                    at_b: false,
                    reason: "timed out".into(),
                },
            );
            return;
        }
        let lb = LinkId(self.relays[b].next_link);
        self.relays[b].next_link += 1;
        link.lb = lb;
        self.relays[b].links.insert(lb, l);
        self.links.push(link);
        let rtt = u64::from(self.pair(from, b).rtt_us).max(2);
        self.push(
            now + rtt,
            Ev::Up {
                link: l,
                at_b: false,
            },
        );
        // The accepting side completes before anything the dialler sends after its own
        // completion can arrive (QUIC hands the stream data up after the handshake).
        let earliest = (rtt / 2) - (rtt / 2) * u64::from(self.cfg.jitter_ppm) / 1_000_000;
        self.push(
            now + rtt + earliest.saturating_sub(1),
            Ev::Up {
                link: l,
                at_b: true,
            },
        );
    }

    fn link_up(&mut self, l: usize, at_b: bool) {
        let (a, b, la, lb, state) = {
            let k = &self.links[l];
            (k.a, k.b, k.la, k.lb, k.state)
        };
        if state == LinkState::Closed || self.links[l].lost[usize::from(at_b)] {
            return;
        }
        let (me, other, link, side) = if at_b {
            (b, a, lb, LinkSide::Accepted)
        } else {
            (a, b, la, LinkSide::Dialled)
        };
        if !self.relays[me].alive {
            return;
        }
        self.links[l].state = LinkState::Up;
        self.stats.links_up += 1;
        let cert = CertificateDer::from(self.relays[other].cfg.name.as_bytes().to_vec());
        let now = self.now;
        self.relays[me]
            .node
            .handle_link_up(link, side, addr_of(other), Some(cert), now);
        self.after_input(me);
    }

    fn arrive(&mut self, l: usize, to_b: bool, kind: TransmitKind, bytes: Bytes) {
        let dir = usize::from(!to_b);
        if kind == TransmitKind::Message {
            let f = &mut self.links[l].in_flight[dir];
            *f = f.saturating_sub(1);
        }
        let k = &self.links[l];
        let (to, link) = if to_b { (k.b, k.lb) } else { (k.a, k.la) };
        if k.lost[usize::from(to_b)]
            || !self.relays[to].alive
            || !self.relays[to].links.contains_key(&link)
        {
            self.stats.dropped_dead_link += 1;
            if kind == TransmitKind::Message {
                self.lost_data(&bytes);
            }
            return;
        }
        if !self.pair(k.a, k.b).up && kind != TransmitKind::Datagram {
            // Held back while the pair is cut (its idle check decides).
            self.stats.dropped_dead_link += 1;
            return;
        }
        self.stats.frames[match kind {
            TransmitKind::Control => 0,
            TransmitKind::Datagram => 1,
            TransmitKind::Message => 2,
        }] += 1;
        let now = self.now;
        let node = &mut self.relays[to].node;
        match kind {
            TransmitKind::Control => node.handle_control(link, &bytes, now),
            TransmitKind::Datagram => node.handle_datagram(link, &bytes, now),
            TransmitKind::Message => node.handle_message(link, bytes, now),
        }
        self.after_input(to);
    }

    /// Records the destinations of a data copy the link model lost.
    fn lost_data(&mut self, bytes: &[u8]) {
        self.stats.data_lost_dead_link += 1;
        if let Ok(mesh::Message::Data(d)) = mesh::decode(bytes) {
            let pid = d
                .payload
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            for id in &d.destinations {
                if let (Some(p), Some(i)) = (pid, self.index_of(*id)) {
                    self.data_losses.push((PubId(p), i));
                }
            }
        }
    }

    fn go_silent(&mut self, l: usize, now: u64) {
        if self.links[l].silent_since.is_none() {
            self.links[l].silent_since = Some(now);
        }
        let at = self.links[l].silent_since.unwrap_or(now) + self.cfg.idle_timeout_us;
        self.push(at, Ev::IdleCheck { link: l });
    }

    fn lose(&mut self, l: usize, at_b: bool, reason: &str) {
        let end = usize::from(at_b);
        if self.links[l].lost[end] {
            return;
        }
        self.links[l].lost[end] = true;
        self.links[l].state = LinkState::Closed;
        let k = &self.links[l];
        let (me, link) = if at_b { (k.b, k.lb) } else { (k.a, k.la) };
        if !self.relays[me].alive {
            return;
        }
        self.relays[me].links.remove(&link);
        self.stats.links_lost += 1;
        let key: String = reason.chars().take(40).collect();
        *self.lost_reasons.entry(key).or_default() += 1;
        let now = self.now;
        self.relays[me].node.handle_link_lost(link, reason, now);
        self.after_input(me);
    }

    // ----- reports -------------------------------------------------------------------

    /// Relay `i`'s next hop towards relay `d`, as an index.
    pub fn next_hop(&self, i: usize, d: usize) -> Option<usize> {
        let id = self.relays[d].node.id();
        let nh = self.relays[i].node.routes().next_hop(id)?;
        self.index_of(nh)
    }

    /// Message kinds' names, for [`ControlBytes`] rows.
    pub fn kind_names() -> &'static [&'static str] {
        &mesh::KIND_NAMES
    }

    /// Close codes the harness reports in "closed by peer" reasons.
    pub fn neighbour_limit_reason() -> &'static str {
        close::NEIGHBOUR_LIMIT_REASON
    }
}
