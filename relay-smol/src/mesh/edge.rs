//! Plugs the mesh into the WebSocket edge: the broker's [`MeshHook`] feeds the mesh task,
//! the mesh delivers through `Broker::deliver_from_mesh`, and `GET /v1/status` serves the
//! mesh status. Everything runs on the edge's `LocalExecutor` thread.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use fastpubsub_core::frame::Mode;
use fastpubsub_core::mesh::{DeliveryMode, GeoPos};
use smol::LocalExecutor;
use smol::channel::{Sender, TrySendError};

use super::announce::AnnounceConfig;
use super::config::{MeshConfig, Seed};
use super::node::{LocalSink, MeshCommand, TicketApplied, TicketHook};
use crate::broker::Broker;
use crate::broker::mesh::{LocalPlan, MeshHook};
use crate::dashboard::announce::MeshFeed;
use crate::dashboard::edge::AdminHandle;
use crate::quic::driver;
use crate::quic::tls::MeshIdentity;
use crate::quic::transport::BacklogSignal;
use crate::tickets::cli::unix;
use crate::tickets::{RemoteRecordError, TicketService};
use crate::ws::Relay;
use fastpubsub_core::ticket::Applied;
use std::sync::Arc;

/// Commands queued from the edge to the mesh task; more are dropped and counted.
pub const COMMAND_QUEUE: usize = 16_384;
/// Locally made ticket status records kept for the mesh to flood.
pub const TICKET_OUTBOX: usize = 4096;

/// How often the status served at `/v1/status` (admin listener) is refreshed.
pub const STATUS_EVERY: Duration = Duration::from_millis(100);

/// Mesh options of `fastpubsub-relay run` (the run command copies its flags in here).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MeshArgs {
    /// UDP address for relay-to-relay QUIC (enables the mesh), e.g. 0.0.0.0:7000
    pub mesh_listen: Option<SocketAddr>,
    /// this relay's name (must match its mesh certificate)
    pub name: Option<String>,
    /// region label shown to other relays
    pub region: Option<String>,
    /// latitude in degrees
    pub lat: Option<f64>,
    /// longitude in degrees
    pub lon: Option<f64>,
    /// public URL of this relay's WebSocket edge
    pub edge_url: Option<String>,
    /// relay certificate chain (PEM), from `mesh-cert`
    pub mesh_cert: Option<PathBuf>,
    /// relay private key (PEM), from `mesh-cert`
    pub mesh_key: Option<PathBuf>,
    /// mesh CA certificate (PEM), from `mesh-ca`
    pub mesh_ca: Option<PathBuf>,
    /// a seed relay, NAME@HOST:PORT (repeatable)
    pub peer: Vec<Seed>,
    /// address other relays should dial (default: --mesh-listen)
    pub mesh_advertise: Option<SocketAddr>,
    /// most mesh links kept (default 16)
    pub max_neighbours: Option<usize>,
    /// milliseconds between link probes (default 250)
    pub probe_interval_ms: Option<u64>,
    /// milliseconds between this relay's announcements (default 10000)
    pub announce_interval_ms: Option<u64>,
}

impl MeshArgs {
    /// The mesh configuration and identity, or `None` when `--mesh-listen` is absent.
    pub fn build(&self) -> Result<Option<(MeshConfig, MeshIdentity)>, String> {
        let Some(listen) = self.mesh_listen else {
            return Ok(None);
        };
        let name = self
            .name
            .clone()
            .ok_or("--mesh-listen needs --name (the relay name in its mesh certificate)")?;
        let (Some(cert), Some(key), Some(ca)) = (&self.mesh_cert, &self.mesh_key, &self.mesh_ca)
        else {
            return Err("--mesh-listen needs --mesh-cert, --mesh-key and --mesh-ca \
                        (create them with `fastpubsub-relay mesh-ca` and `mesh-cert --name NAME`)"
                .into());
        };
        let identity = MeshIdentity::load(cert, key, ca).map_err(|e| e.to_string())?;
        let mut cfg = MeshConfig::new(&name, listen);
        cfg.region = self.region.clone().unwrap_or_default();
        cfg.edge_url = self.edge_url.clone().unwrap_or_default();
        cfg.seeds = self.peer.clone();
        cfg.advertise = self.mesh_advertise;
        if let Some(m) = self.max_neighbours {
            let top = super::node::MAX_NEIGHBOURS_LIMIT;
            if !(1..=top).contains(&m) {
                return Err(format!(
                    "--max-neighbours {m}: use 1..={top} (the route table has {} neighbour \
                     slots and keeps room for exploration and incoming links)",
                    super::node::ROUTE_NEIGHBOURS
                ));
            }
            cfg.max_neighbours = m;
        }
        if let Some(ms) = self.probe_interval_ms {
            use super::probe::{INTERVAL_WHY, MAX_INTERVAL_MS, MIN_INTERVAL_MS};
            if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) {
                return Err(format!(
                    "--probe-interval-ms {ms}: use {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS} \
                     ({INTERVAL_WHY})"
                ));
            }
            cfg.probe.interval_us = ms * 1000;
        }
        if let Some(ms) = self.announce_interval_ms {
            use super::announce::{MAX_CONFIG_INTERVAL_MS, MIN_CONFIG_INTERVAL_MS};
            if !(MIN_CONFIG_INTERVAL_MS..=MAX_CONFIG_INTERVAL_MS).contains(&ms) {
                return Err(format!(
                    "--announce-interval-ms {ms}: use {MIN_CONFIG_INTERVAL_MS}..={MAX_CONFIG_INTERVAL_MS} \
                     (other relays show a relay as stale after 15 s without an announcement)"
                ));
            }
            cfg.announce = AnnounceConfig::with_interval(Duration::from_millis(ms));
        }
        cfg.position = match (self.lat, self.lon) {
            (Some(lat), Some(lon))
                if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
            {
                Some(GeoPos {
                    lat_udeg: (lat * 1e6) as i32,
                    lon_udeg: (lon * 1e6) as i32,
                })
            }
            (None, None) => None,
            _ => return Err("--lat and --lon go together (degrees, -90..90 and -180..180)".into()),
        };
        if self
            .edge_url
            .as_ref()
            .is_some_and(|u| u.len() > fastpubsub_core::mesh::MAX_URL)
        {
            return Err("--edge-url is too long (256 bytes at most)".into());
        }
        if cfg.region.len() > fastpubsub_core::mesh::MAX_REGION {
            return Err("--region is too long (32 bytes at most)".into());
        }
        Ok(Some((cfg, identity)))
    }
}

fn to_frame_mode(m: DeliveryMode) -> Mode {
    match m {
        DeliveryMode::LowLatency => Mode::LowLatency,
        DeliveryMode::Random => Mode::Random,
        _ => Mode::Broadcast,
    }
}

fn to_mesh_mode(m: Mode) -> DeliveryMode {
    match m {
        Mode::LowLatency => DeliveryMode::LowLatency,
        Mode::Random => DeliveryMode::Random,
        _ => DeliveryMode::Broadcast,
    }
}

/// Delivers mesh messages to the broker's local subscribers.
struct BrokerSink(Rc<RefCell<Broker>>);

impl LocalSink for BrokerSink {
    fn deliver(
        &mut self,
        tenant: &str,
        channel: &str,
        payload: &[u8],
        mode: DeliveryMode,
    ) -> usize {
        match self.0.try_borrow_mut() {
            Ok(mut b) => b.deliver_from_mesh(tenant, channel, payload, to_frame_mode(mode)),
            Err(_) => {
                log::error!("mesh: broker busy, message for {tenant}:{channel} dropped");
                0
            }
        }
    }
}

/// The broker's hook: queues work for the mesh task.
struct Hook {
    tx: Sender<MeshCommand>,
    dropped: Rc<Cell<u64>>,
    /// Set by the QUIC transport while a next hop's link that is not slow is backed up.
    links: BacklogSignal,
}

impl Hook {
    fn queue(&self, c: MeshCommand) -> bool {
        match self.tx.try_send(c) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {
                self.dropped.set(self.dropped.get() + 1);
                false
            }
        }
    }
}

impl MeshHook for Hook {
    fn local_publish(
        &self,
        tenant: &str,
        channel: &str,
        payload: &[u8],
        mode: Mode,
        has_local_match: bool,
    ) -> LocalPlan {
        let mode = to_mesh_mode(mode);
        let cmd = MeshCommand::Publish {
            tenant: tenant.to_owned(),
            channel: channel.to_owned(),
            payload: Bytes::copy_from_slice(payload),
            mode,
            local_match: has_local_match,
        };
        match mode {
            DeliveryMode::LowLatency if has_local_match => LocalPlan::DeliverHere,
            DeliveryMode::Broadcast => {
                self.queue(cmd);
                LocalPlan::DeliverHere
            }
            _ => {
                // The mesh picks the relay (possibly this one, through the sink).
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
        // Half the queue: the publishes of the frames being handled still fit while the
        // pause takes effect, so a healthy mesh drops nothing.
        self.links.is_set() || self.tx.len() >= COMMAND_QUEUE / 2
    }
}

/// Floods the ticket service's status records and applies those of other relays.
struct TicketServiceHook(Arc<TicketService>);

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

/// Start the mesh for `relay` on `ex`: hook into the broker, and keep the admin side's
/// `/v1/status` (and the dashboard's local summary) fed with the mesh status.
pub fn attach(
    relay: &mut Relay,
    ex: &Rc<LocalExecutor<'static>>,
    cfg: MeshConfig,
    identity: &MeshIdentity,
    admin: AdminHandle,
    tickets: Option<Arc<TicketService>>,
) -> Result<SocketAddr, super::StartError> {
    let broker = relay.broker();
    let (quic, mut node) = super::start(cfg, identity, Box::new(BrokerSink(broker.clone())))?;
    let addr = quic.local_addr();
    let (tx, rx) = smol::channel::bounded(COMMAND_QUEUE);
    let dropped = Rc::new(Cell::new(0));
    broker.borrow_mut().set_mesh(Rc::new(Hook {
        tx,
        dropped: dropped.clone(),
        links: quic.backlog_signal(),
    }));
    if let Some(service) = tickets {
        node.set_ticket_hook(Box::new(TicketServiceHook(service)));
    }
    node.set_announce_hook(Box::new(MeshFeed::new(admin.clone())));
    node.set_status_sink(
        Box::new(move |json: &str| {
            // Splice in the edge-side drop counter.
            let doc = match json.strip_suffix('}') {
                Some(head) => format!("{head},\"edge_to_mesh_dropped\":{}}}", dropped.get()),
                None => json.to_owned(),
            };
            admin.set_status(doc);
        }),
        STATUS_EVERY,
    );
    ex.spawn(async move {
        if let Err(e) = driver::run(quic, &mut node, rx).await {
            log::error!("mesh stopped: {e}");
        }
    })
    .detach();
    Ok(addr)
}
