//! The seams between the mesh and the layers beside it, implemented for the relay:
//! - [`EdgeHook`]: the broker's [`MeshHook`]: local publishes and interest changes go to the
//!   mesh thread through a bounded queue (full: dropped and counted);
//! - [`TicketServiceHook`]: the mesh's [`TicketHook`] on the ticket service;
//! - [`MeshFeed`]: the mesh's [`AnnounceHook`]: this relay's announcement from its status,
//!   others' into the dashboard's picture.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use fastpubsub_core::frame::Mode;
use fastpubsub_core::route::RelayId;
use fastpubsub_core::ticket::Applied;
use smol::channel::{Sender, TrySendError};

use super::admin::{AdminHandle, unix_ms};
use super::command::MeshCommand;
use super::status::summary_parts;
use crate::broker::mesh::{LocalPlan, MeshHook};
use crate::dashboard::announce::{Announcement, MAX_ANNOUNCED_LINKS, MAX_LEN};
use crate::dashboard::view::{MAX_NAME_LEN, MAX_RELAYS, MAX_URL_LEN};
use crate::dashboard::view::{RelayCounters, RelaySummary};
use crate::mesh::hooks::{AnnounceApplied, AnnounceHook, TicketApplied, TicketHook};
use crate::mesh::status::MeshStatus;
use crate::quic::transport::{BACKLOG_HIGH_MESSAGES, BacklogSignal, MAX_QUEUED_MESSAGES};
use crate::tickets::cli::unix;
use crate::tickets::{RemoteRecordError, TicketService};

/// Commands waiting for the mesh thread from which the edge pauses its intake.
pub const MESH_BEHIND: usize = BACKLOG_HIGH_MESSAGES;
// Queued commands plus a backed-up link's messages leave room in the link's queue.
const _: () = assert!(MESH_BEHIND + BACKLOG_HIGH_MESSAGES <= MAX_QUEUED_MESSAGES / 2);

/// The broker's hook: queues work for the mesh thread.
pub struct EdgeHook {
    tx: Sender<MeshCommand>,
    dropped: Arc<AtomicU64>,
    /// Set by the QUIC transport while a next hop's link that is not slow is backed up.
    links: BacklogSignal,
}

impl EdgeHook {
    /// A hook feeding `tx`; refused commands are counted in `dropped`; `links` is the QUIC
    /// transport's backlog signal.
    pub fn new(tx: Sender<MeshCommand>, dropped: Arc<AtomicU64>, links: BacklogSignal) -> Self {
        Self { tx, dropped, links }
    }

    fn queue(&self, c: MeshCommand) -> bool {
        match self.tx.try_send(c) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl MeshHook for EdgeHook {
    fn local_publish(
        &self,
        tenant: &str,
        channel: &str,
        payload: &[u8],
        mode: Mode,
        has_local_match: bool,
    ) -> LocalPlan {
        let cmd = MeshCommand::Publish {
            tenant: tenant.to_owned(),
            channel: channel.to_owned(),
            payload: Bytes::copy_from_slice(payload),
            mode,
            local_match: has_local_match,
        };
        match mode {
            Mode::LowLatency if has_local_match => LocalPlan::DeliverHere,
            Mode::Broadcast => {
                self.queue(cmd);
                LocalPlan::DeliverHere
            }
            _ => {
                // The mesh picks the relay (possibly this one, through a delivery back).
                if self.queue(cmd) {
                    LocalPlan::NotHere
                } else if has_local_match {
                    LocalPlan::DeliverHere
                } else {
                    LocalPlan::NotHere
                }
            }
        }
    }

    fn interest_changed(&self, tenant: &str, pattern: &str, present: bool) {
        if !self.queue(MeshCommand::Interest {
            tenant: tenant.to_owned(),
            pattern: pattern.to_owned(),
            present,
        }) {
            log::error!("mesh: command queue full, interest change {tenant}:{pattern} lost");
        }
    }

    fn backed_up(&self) -> bool {
        // The mesh runs on its own thread: what waits in this queue goes into the links at
        // once when it gets its turn, after the link signal was last reviewed. So the edge
        // pauses while the mesh thread is behind by as many publishes as a link may hold
        // before it counts as backed up; with those, and the frames of the read being
        // handled, a link's queue stays inside its bound (MAX_QUEUED_MESSAGES).
        self.links.is_set() || self.tx.len() >= MESH_BEHIND
    }
}

/// Floods the ticket service's status records and applies those of other relays.
pub struct TicketServiceHook(pub Arc<TicketService>);

impl TicketHook for TicketServiceHook {
    fn drain_outgoing(&mut self, max: usize) -> Vec<Vec<u8>> {
        self.0.drain_outgoing(max)
    }

    fn apply_remote(&mut self, record: &[u8]) -> TicketApplied {
        match self.0.apply_remote(record, unix(crate::clock::wall_now())) {
            Ok(Applied::Added | Applied::Updated) => TicketApplied::New,
            Ok(_) => TicketApplied::Known,
            Err(RemoteRecordError::Bad(e)) => {
                log::warn!("mesh: ticket status record refused: {e}");
                TicketApplied::Bad
            }
            Err(RemoteRecordError::Full(e)) => {
                log::error!("mesh: ticket status table full: {e}");
                TicketApplied::Known
            }
        }
    }

    fn snapshot(&mut self, max: usize) -> Vec<Vec<u8>> {
        self.0.snapshot(unix(crate::clock::wall_now()), max)
    }
}

/// Feeds the mesh picture of an [`AdminHandle`] from the mesh's announcements and builds this
/// relay's own (the mesh node's [`AnnounceHook`]; `super::mesh::attach` installs it).
pub struct MeshFeed {
    handle: AdminHandle,
    /// Relay ids seen as announcement origins (bounded by the mesh picture's size).
    names: HashMap<RelayId, String>,
}

impl MeshFeed {
    /// A feed into `handle.mesh`.
    pub fn new(handle: AdminHandle) -> Self {
        Self {
            handle,
            names: HashMap::new(),
        }
    }

    /// This relay's summary from the node's status and the relay's metrics.
    fn local_summary(&self, status: &MeshStatus) -> RelaySummary {
        let (mut id, links, routes) = summary_parts(status);
        if id.url.is_empty() {
            id.url = self.handle.local_identity().url;
        }
        RelaySummary {
            name: id.name,
            region: id.region,
            lat: id.position.map(|p| p.0),
            lon: id.position.map(|p| p.1),
            url: id.url,
            counters: RelayCounters::from_metrics(&self.handle.metrics),
            links,
            routes,
        }
    }
}

fn announce_text(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl AnnounceHook for MeshFeed {
    fn local_body(&mut self, status: &MeshStatus, seq: u64) -> Option<Vec<u8>> {
        let mut s = self.local_summary(status);
        s.url = announce_text(&s.url, MAX_URL_LEN).to_owned();
        s.region = announce_text(&s.region, MAX_NAME_LEN).to_owned();
        s.links.truncate(MAX_ANNOUNCED_LINKS);
        s.routes.truncate(MAX_RELAYS);
        let origin = RelayId::from_name(&s.name);
        let a = Announcement::from_summary(&s, origin, seq as u32, |n| Some(RelayId::from_name(n)));
        let mut buf = vec![0u8; MAX_LEN];
        match a.encode(&mut buf) {
            Ok(b) => Some(b.to_vec()),
            Err(e) => {
                log::warn!("mesh: cannot announce this relay: {e}");
                None
            }
        }
    }

    fn apply_remote(
        &mut self,
        origin: &str,
        body: &[u8],
        name_of: &dyn Fn(RelayId) -> Option<String>,
    ) -> AnnounceApplied {
        let mut a = match Announcement::decode(body) {
            Ok(a) => a,
            Err(e) => {
                log::debug!("mesh: announcement of {origin} refused: {e}");
                return AnnounceApplied::Bad;
            }
        };
        if a.name != origin || a.origin != RelayId::from_name(origin) {
            log::debug!(
                "mesh: announcement of {origin} names {:?} (id {}); refused",
                a.name,
                a.origin
            );
            return AnnounceApplied::Bad;
        }
        if !self.names.contains_key(&a.origin) && self.names.len() < 2 * MAX_RELAYS {
            self.names.insert(a.origin, origin.to_owned());
        }
        let names = &self.names;
        let lookup = |id: RelayId| names.get(&id).cloned().or_else(|| name_of(id));
        // Links and routes to relays not known here yet are left out until they are.
        a.links.retain(|l| lookup(l.peer).is_some());
        a.routes
            .retain(|r| lookup(r.dst).is_some() && lookup(r.next_hop).is_some());
        let summary = match a.to_summary(lookup) {
            Ok(s) => s,
            Err(_) => return AnnounceApplied::Bad,
        };
        let mut mesh = self.handle.mesh.lock().unwrap_or_else(|p| p.into_inner());
        match mesh.update(summary, unix_ms()) {
            Ok(()) => AnnounceApplied::Applied,
            Err(e) => {
                log::debug!("mesh: announcement of {origin} not taken: {e}");
                AnnounceApplied::Bad
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::view::RelaySummary;

    fn handle(name: &str) -> AdminHandle {
        use crate::auth::AllowAll;
        use crate::config::Config;
        use std::rc::Rc;
        let config = Config::new("127.0.0.1:0".parse().expect("addr"));
        let mut relay = crate::ws::Relay::bind(&config, Rc::new(AllowAll)).expect("bind edge");
        let ex = Rc::new(smol::LocalExecutor::new());
        let mut opts =
            super::super::admin::options_from_cli("off", None, relay.local_addr(), false)
                .expect("options");
        opts.identity.name = name.into();
        super::super::admin::install(&mut relay, opts, &ex).expect("install")
    }

    /// tokyo with links to nsk and fra, a route to fra via nsk; no --edge-url.
    fn status() -> MeshStatus {
        let mut s = super::super::status::tests::sample()
            .mesh
            .with_transport(());
        s.identity.edge_url.clear();
        s.links.truncate(1);
        let mut fra = s.links[0].clone();
        fra.peer = Some("fra".into());
        fra.rtt_ms = Some(221.8);
        fra.min_rtt_ms = 221.0;
        fra.loss_pct = 0.0;
        s.links.push(fra);
        s.routes.truncate(1);
        let mut nsk = s.routes[0].clone();
        nsk.dest = "nsk".into();
        nsk.metric_ms = Some(47.6);
        s.routes.push(nsk);
        s
    }

    #[test]
    fn feed_announces_the_local_relay_and_takes_in_others() {
        let tokyo = handle("tokyo");
        let mut feed = MeshFeed::new(tokyo.clone());
        let body = feed
            .local_body(&status(), (7 << 32) | 3)
            .expect("an announcement");
        assert!(body.len() < 200, "{} B", body.len());
        let a = Announcement::decode(&body).expect("decodes");
        assert_eq!((a.name.as_str(), a.seq, a.links.len()), ("tokyo", 3, 2));
        assert!(
            a.url.starts_with("ws://127.0.0.1:"),
            "no --edge-url: the edge address ({})",
            a.url
        );

        let fra = handle("fra");
        let mut other = MeshFeed::new(fra.clone());
        // The node knows fra (itself) but not nsk yet.
        let known = |id: RelayId| (id == RelayId::from_name("fra")).then(|| "fra".to_string());
        assert_eq!(
            other.apply_remote("osaka", &body, &known),
            AnnounceApplied::Bad,
            "origin must be the announced relay"
        );
        assert_eq!(
            other.apply_remote("tokyo", &body[..body.len() - 1], &known),
            AnnounceApplied::Bad
        );
        assert_eq!(
            other.apply_remote("tokyo", &body, &known),
            AnnounceApplied::Applied
        );
        // fra's own summary (the refresher task would add it every second).
        let me = RelaySummary {
            name: "fra".into(),
            region: "Europe".into(),
            lat: Some(50.11),
            lon: Some(8.68),
            url: "wss://fra.example/ws".into(),
            counters: RelayCounters::default(),
            links: vec![],
            routes: vec![],
        };
        fra.mesh
            .lock()
            .expect("lock")
            .update(me, unix_ms())
            .expect("own summary");
        let view = fra.mesh.lock().expect("lock").view(unix_ms());
        let t = view
            .relays
            .iter()
            .find(|r| r.name == "tokyo")
            .expect("tokyo");
        assert_eq!((t.lat, t.region.as_str()), (Some(35.68), "asia"));
        // Only the link to a known relay is kept; the route through unknown nsk waits.
        let links: Vec<(usize, usize)> = view.links.iter().map(|l| (l.0, l.1)).collect();
        let id = |n: &str| view.relays.iter().position(|r| r.name == n);
        assert_eq!(
            links,
            vec![(id("tokyo").unwrap_or(99), id("fra").unwrap_or(99))]
        );
    }
}
