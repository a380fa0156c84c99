//! Links and membership: which relays are known, which are linked, the Hello, dials and
//! redials, the neighbour policy, gossip and eviction.
//!
//! - Which relays to link is [`Neighbours`](crate::mesh::neighbours::Neighbours)' choice
//!   (full mesh while the known relays fit in `max_neighbours`, else the nearest by
//!   measured RTT plus a few others; the limit holds for incoming links too); seeds are
//!   known at once, relays learned by gossip after `discover_delay_us`; a lost link is
//!   redialled with exponential backoff (1 s … 30 s) by the side that dialled it.
//! - The first control frame each way is a `Hello`; its name must be one the peer's
//!   certificate is valid for. A second link to the same relay is closed.

use std::collections::HashSet;
use std::net::SocketAddr;

use bytes::Bytes;
use fastpubsub_core::mesh::{
    self, Hello, MAX_GOSSIP, Message, PROTOCOL_VERSION, PeerInfo, Peers, close,
};
use fastpubsub_core::route::{Metric, RelayId};
use rustls_pki_types::CertificateDer;

use super::{MeshEvent, MeshNode, TransmitKind};
use crate::mesh::limits::{
    BACKOFF_MAX_US, BACKOFF_MIN_US, INBOUND_GRACE_US, MAX_LINKS, MAX_PEERS, PEER_TTL_US,
};
use crate::mesh::link::{LinkId, LinkSide};
use crate::mesh::neighbours::{NeighbourAction, PeerView};
use crate::mesh::probe::LinkProbe;
use crate::mesh::time::jittered;

/// One link (one QUIC connection), from its handshake on.
pub(super) struct Link {
    pub(super) side: LinkSide,
    /// This relay closed it: it carries nothing more and is down for routing.
    pub(super) closing: bool,
    pub(super) remote: SocketAddr,
    pub(super) cert: Option<CertificateDer<'static>>,
    /// Name and id from the peer's Hello.
    pub(super) peer: Option<(String, RelayId)>,
    pub(super) probe: LinkProbe,
    pub(super) since: u64,
    /// The routing table knows this neighbour once a first measurement came in; route
    /// messages that arrive before are kept (bounded) and replayed then.
    pub(super) measured: bool,
    pub(super) pending_route: Vec<fastpubsub_core::route::Message>,
}

/// One known relay.
#[derive(Debug, Clone)]
pub(super) struct PeerRec {
    pub(super) id: RelayId,
    pub(super) dial: Option<SocketAddr>,
    pub(super) advertised: Option<SocketAddr>,
    pub(super) region: String,
    pub(super) edge_url: String,
    pub(super) position: Option<mesh::GeoPos>,
    pub(super) seed: bool,
    pub(super) link: Option<LinkId>,
    /// A dial was asked for and not answered yet (see `MeshNode::handle_dialled`), or is in
    /// progress on this link.
    pub(super) dialing: Option<Dialing>,
    /// We dialled the current / last link.
    pub(super) we_dialled: bool,
    pub(super) backoff: u64,
    pub(super) next_dial: u64,
    pub(super) last_error: Option<String>,
    /// Last linked, or last named in a neighbour's gossip.
    pub(super) heard: u64,
}

/// A dial in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialing {
    /// Asked for; the driver has not answered.
    Asked,
    /// Handshaking on this link.
    On(LinkId),
}

impl PeerRec {
    pub(super) fn seed(id: RelayId, addr: SocketAddr, now: u64) -> Self {
        Self {
            dial: Some(addr),
            seed: true,
            we_dialled: true,
            ..Self::learned(id, now)
        }
    }

    fn learned(id: RelayId, now: u64) -> Self {
        Self {
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
            backoff: BACKOFF_MIN_US,
            next_dial: now,
            last_error: None,
            heard: now,
        }
    }

    fn dialing_on(&self, link: LinkId) -> bool {
        self.dialing == Some(Dialing::On(link))
    }

    fn evictable(&self) -> bool {
        !self.seed && self.link.is_none() && self.dialing.is_none()
    }

    /// The link or dial ended: wait before the next dial, doubling.
    fn back_off(&mut self, now: u64, rng: &mut fastrand::Rng) {
        self.next_dial = now + jittered(self.backoff, rng);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX_US);
    }
}

impl MeshNode {
    /// Links whose Hello arrived, with the peer's id.
    pub(super) fn up_links(&self) -> Vec<(LinkId, RelayId)> {
        self.links
            .iter()
            .filter(|(_, l)| !l.closing)
            .filter_map(|(c, l)| l.peer.as_ref().map(|(_, id)| (*c, *id)))
            .collect()
    }

    /// Sends `bytes` on the control stream of every up link but `except`.
    pub(super) fn flood(&mut self, bytes: &Bytes, except: Option<LinkId>) {
        for (c, _) in self.up_links() {
            if Some(c) != except {
                self.transmit(c, TransmitKind::Control, bytes.clone());
            }
        }
    }

    /// The link to relay `id`, if it is up.
    pub(super) fn link_of(&self, id: RelayId) -> Option<LinkId> {
        let name = self.names.get(&id)?;
        let c = self.peers.get(name)?.link?;
        let l = self.links.get(&c)?;
        (l.probe.is_up() && !l.closing).then_some(c)
    }

    fn hello<'a>(&'a self, mesh_addr: &'a str) -> Hello<'a> {
        Hello {
            version: PROTOCOL_VERSION,
            name: &self.cfg.name,
            region: &self.cfg.region,
            position: self.cfg.position,
            edge_url: &self.cfg.edge_url,
            mesh_addr,
        }
    }

    pub(super) fn on_link_up(
        &mut self,
        link: LinkId,
        side: LinkSide,
        remote: SocketAddr,
        cert: Option<CertificateDer<'static>>,
        now: u64,
    ) {
        if self.links.len() >= MAX_LINKS && !self.links.contains_key(&link) {
            // The QUIC layer holds no more (checked where they are wired); a harness could.
            self.stats.refused_full += 1;
            self.close(link, close::PROTOCOL, "peer table full", now);
            return;
        }
        self.links.insert(
            link,
            Link {
                side,
                closing: false,
                remote,
                cert,
                peer: None,
                probe: LinkProbe::new(self.cfg.probe, now),
                since: now,
                measured: false,
                pending_route: Vec::new(),
            },
        );
        let advertise = self.cfg.advertise.unwrap_or(self.cfg.listen).to_string();
        let hello = mesh::encode(
            &Message::Hello(self.hello(&advertise)),
            &mut [0u8; Hello::MAX_LEN],
        )
        .map(|b| Bytes::copy_from_slice(b));
        if let Ok(b) = hello {
            self.transmit(link, TransmitKind::Control, b);
        }
    }

    pub(super) fn on_hello(&mut self, link: LinkId, h: &Hello<'_>, now: u64) {
        let Some(l) = self.links.get(&link) else {
            return;
        };
        if l.peer.is_some() {
            self.stats.bad_messages += 1;
            return;
        }
        let check = self.identity_check;
        let valid = l.cert.as_ref().is_some_and(|c| check(c, h.name));
        if !valid || h.name == self.cfg.name {
            self.stats.refused_identity += 1;
            log::warn!(
                "mesh: {} says it is {:?} but its certificate does not name it; closing",
                l.remote,
                h.name
            );
            self.close(
                link,
                close::PROTOCOL,
                "certificate does not name this relay",
                now,
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
            self.close(
                link,
                close::PROTOCOL,
                "unsupported mesh protocol version",
                now,
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
            self.close(link, close::PROTOCOL, "relay id collision", now);
            return;
        }
        let (side, remote) = (l.side, l.remote);
        if !self.peer_room(h.name) {
            self.stats.refused_full += 1;
            self.close(link, close::PROTOCOL, "peer table full", now);
            return;
        }
        // Far over the limit: take the link only long enough for the newcomer to learn
        // the other relays (our gossip below), then close it.
        let refuse = side == LinkSide::Accepted
            && self.peers.get(h.name).is_none_or(|p| p.link.is_none())
            && self.peers.values().filter(|p| p.link.is_some()).count()
                >= self.neighbours.hard_limit();
        let advertised = h.mesh_addr.parse::<SocketAddr>().ok();
        let p = self
            .peers
            .entry(h.name.to_owned())
            .or_insert_with(|| PeerRec::learned(id, now));
        if let Some(existing) = p.link
            && existing != link
        {
            self.stats.duplicate_links += 1;
            log::info!(
                "mesh: second link to {} ({remote}) closed, keeping the first",
                h.name
            );
            self.close(link, close::DUPLICATE, "already linked", now);
            return;
        }
        p.link = Some(link);
        if p.dialing_on(link) {
            p.dialing = None;
        }
        p.we_dialled = side == LinkSide::Dialled;
        p.backoff = BACKOFF_MIN_US;
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
        if let Some(l) = self.links.get_mut(&link) {
            l.peer = Some((h.name.to_owned(), id));
        }
        log::info!("mesh: link to {} ({remote}) up", h.name);
        // Everyone learns the new relay's name and address at once.
        self.send_gossip(now, None);
        self.send_all_snapshots(link);
        if refuse {
            log::info!(
                "mesh: refusing {} ({remote}): {}",
                h.name,
                close::NEIGHBOUR_LIMIT_REASON
            );
            self.neighbours.handle_refuse(link, now);
            return;
        }
        if self.ticket_hook.is_some() {
            self.ticket_sync.handle_link_up(link);
            self.sync_tickets(now);
        }
        self.replay_announcements(link);
        self.announce.handle_link_change(now);
    }

    pub(super) fn on_lost(&mut self, link: LinkId, reason: &str, now: u64) {
        // A link this relay closed is down for routing already.
        let routed = self.links.remove(&link).is_some_and(|l| !l.closing);
        self.ticket_sync.handle_link_down(link);
        let mut down = Vec::new();
        for (name, p) in self.peers.iter_mut() {
            if p.dialing_on(link) || p.link == Some(link) {
                self.neighbours.handle_link_lost(name, link, reason, now);
            }
            if p.dialing_on(link) {
                p.dialing = None;
                p.last_error = Some(reason.to_owned());
                p.back_off(now, &mut self.rng);
                log::debug!("mesh: dial {name} failed: {reason}");
            }
            if p.link == Some(link) {
                p.link = None;
                p.last_error = Some(reason.to_owned());
                if p.we_dialled || p.seed {
                    p.back_off(now, &mut self.rng);
                } else {
                    p.next_dial = now + INBOUND_GRACE_US;
                    p.backoff = (p.backoff * 2).min(BACKOFF_MAX_US);
                }
                log::info!("mesh: link to {name} lost: {reason}");
                down.push(p.id);
            }
        }
        for id in down {
            if routed && self.route.handle_link_down(id, now).is_err() {
                self.stats.route_errors += 1;
            }
            self.announce.handle_link_change(now);
        }
        self.route_changed(now);
    }

    pub(super) fn on_dialled(&mut self, peer: &str, result: Result<LinkId, String>, now: u64) {
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        match result {
            Ok(link) => {
                p.dialing = Some(Dialing::On(link));
                p.we_dialled = true;
            }
            Err(e) => {
                p.dialing = None;
                p.last_error = Some(e);
                p.back_off(now, &mut self.rng);
            }
        }
    }

    /// The neighbour policy's turn: describe every known relay, then dial and close.
    pub(super) fn plan_neighbours(&mut self, now: u64) {
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
        self.neighbours
            .handle_timeout(now, self.cfg.position, &views);
        while let Some(a) = self.neighbours.poll_event() {
            match a {
                NeighbourAction::Close { link, name } => {
                    if let Some(name) = name {
                        log::info!(
                            "mesh: closing the link to {name}: {}",
                            close::NEIGHBOUR_LIMIT_REASON
                        );
                    }
                    self.close(
                        link,
                        close::NEIGHBOUR_LIMIT,
                        close::NEIGHBOUR_LIMIT_REASON,
                        now,
                    );
                }
                NeighbourAction::Dial(name) => {
                    let Some(p) = self.peers.get_mut(&name) else {
                        continue;
                    };
                    let Some(addr) = p.dial else { continue };
                    p.dialing = Some(Dialing::Asked);
                    self.out.event(MeshEvent::Dial { peer: name, addr });
                }
            }
        }
    }

    /// Whether `name` is in the peer table or fits; when full, the learned peer not
    /// heard of for longest (unlinked, not a seed, not being dialled) makes room.
    pub(super) fn peer_room(&mut self, name: &str) -> bool {
        if self.peers.len() < MAX_PEERS || self.peers.contains_key(name) {
            return true;
        }
        let oldest = self
            .peers
            .iter()
            .filter(|(_, p)| p.evictable())
            .min_by_key(|(_, p)| p.heard)
            .map(|(n, _)| n.clone());
        match oldest {
            Some(n) => {
                self.peers.remove(&n);
                self.neighbours.handle_forget(&n);
                self.stats.peers_evicted += 1;
                true
            }
            None => false,
        }
    }

    /// Drop learned peers unlinked and not heard of for [`PEER_TTL_US`]; when the name
    /// table is half full, drop names that are neither a peer nor routed.
    pub(super) fn evict_peers(&mut self, now: u64) {
        let mut gone = Vec::new();
        self.peers.retain(|name, p| {
            if p.link.is_some() {
                p.heard = now;
            }
            let keep = !p.evictable() || now.saturating_sub(p.heard) < PEER_TTL_US;
            if !keep {
                gone.push(name.clone());
            }
            keep
        });
        self.stats.peers_evicted += gone.len() as u64;
        for name in gone {
            self.neighbours.handle_forget(&name);
        }
        if self.names.len() >= MAX_PEERS {
            let before = self.names.len();
            let ids: HashSet<RelayId> = self.peers.values().map(|p| p.id).collect();
            let (me, route) = (self.me, &self.route);
            self.names
                .retain(|id, _| *id == me || ids.contains(id) || route.next_hop(*id).is_some());
            self.stats.names_evicted += (before - self.names.len()) as u64;
        }
    }

    /// Gossip the linked relays (at most [`MAX_GOSSIP`]) to `only`, or to every up link.
    pub(super) fn send_gossip(&mut self, _now: u64, only: Option<LinkId>) {
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
        let Ok(bytes) =
            mesh::encode(&msg, &mut vec![0; Peers::MAX_LEN]).map(|b| Bytes::copy_from_slice(b))
        else {
            return;
        };
        match only {
            Some(c) => self.transmit(c, TransmitKind::Control, bytes),
            None => self.flood(&bytes, None),
        }
    }

    pub(super) fn on_peers(&mut self, peers: &Peers<'_>, now: u64) {
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
            let mut p = PeerRec::learned(id, now);
            p.dial = Some(addr);
            p.advertised = Some(addr);
            p.region = pi.region.to_owned();
            p.next_dial = now + self.cfg.discover_delay_us;
            self.peers.insert(pi.name.to_owned(), p);
        }
    }

    /// Remember a relay name seen in a flooded message (for the status page).
    pub(super) fn learn_name(&mut self, name: &str) {
        let id = RelayId::from_name(name);
        if !self.names.contains_key(&id) && self.names.len() < MAX_PEERS * 2 {
            self.names.insert(id, name.to_owned());
        }
    }

    /// Names of the known peers (tests).
    #[cfg(test)]
    pub(super) fn peer_names(&self) -> std::collections::BTreeMap<String, bool> {
        self.peers
            .iter()
            .map(|(n, p)| (n.clone(), p.seed))
            .collect()
    }
}
