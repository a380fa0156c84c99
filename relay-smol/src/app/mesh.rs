//! The mesh, wired: the sans-IO [`MeshNode`] driven by the QUIC driver on its own thread,
//! with bounded, counted queues to and from the edge.
//!
//! - [`MeshTask`] is the driver's [`Handler`]: it turns QUIC events into the node's
//!   `handle_*` calls (mesh time is µs since the node's start), hands the node's transmits
//!   to the driver and reports the ones a link refuses, acts on its events (dial, close,
//!   deliver) and re-arms the driver's timer at the node's `poll_timeout`.
//! - [`attach`] runs it on the `mesh` thread, so probes, routing and keep-alives are
//!   answered on time however busy the edge is (issue #10: a saturated edge thread used to
//!   starve them). The edge's publishes and interest changes reach it through a bounded
//!   queue ([`COMMAND_QUEUE`], full: dropped and counted in `edge_to_mesh_dropped`); its
//!   deliveries for local subscribers go back through another ([`DELIVERY_QUEUE`], full:
//!   `mesh_to_edge_dropped`), drained by a task on the edge thread (the broker lives there).
//! - Every [`STATUS_EVERY`] it hands the typed [`RelayStatus`] to the admin side.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastpubsub_core::frame::Mode;
use quinn_proto::{ConnectionHandle, Side};
use smol::LocalExecutor;
use smol::channel::Receiver;

use super::admin::AdminHandle;
pub use super::command::{COMMAND_QUEUE, MeshCommand};
use super::hooks::{EdgeHook, MeshFeed, TicketServiceHook};
use super::status::RelayStatus;
use crate::mesh::config::MeshConfig;
use crate::mesh::limits;
use crate::mesh::link::{LinkId, LinkSide};
use crate::mesh::node::{
    MeshEvent, MeshNode, MeshTransmit, NodeEnv, NodeError, Publish, Refused, TransmitKind,
};
use crate::quic::driver::{self, Driver, Handler, QuicEvent, SendError};
use crate::quic::tls::{self, MeshIdentity};
use crate::tickets::TicketService;
use crate::ws::Relay;

/// Deliveries queued from the mesh thread to the edge; more are dropped and counted.
pub const DELIVERY_QUEUE: usize = 16_384;
/// Locally made ticket status records kept for the mesh to flood.
pub const TICKET_OUTBOX: usize = 4096;
/// How often the status served at `/v1/status` (admin listener) is refreshed.
pub const STATUS_EVERY: Duration = Duration::from_millis(100);
/// Deliveries handed to the broker per turn of the edge's drain task.
const DELIVERY_BATCH: usize = 64;

// The node tracks every link the QUIC layer can hold, and a ticket snapshot every record
// the tickets layer can hold (a refresh and a revocation per ticket id).
const _: () = assert!(driver::MAX_CONNECTIONS <= limits::MAX_LINKS);
const _: () = assert!(2 * crate::tickets::MAX_STATUS_CAPACITY <= limits::TICKET_SYNC_RECORDS);

/// A message from the mesh for this relay's own subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Tenant.
    pub tenant: String,
    /// Channel.
    pub channel: String,
    /// Payload.
    pub payload: Bytes,
    /// Delivery mode.
    pub mode: Mode,
}

/// Where deliveries go (called on the mesh thread; must not block).
pub type DeliverFn = Box<dyn FnMut(Delivery) + Send>;
/// Where the periodic status goes (called on the mesh thread).
pub type StatusSink = Box<dyn FnMut(Arc<RelayStatus>) + Send>;

/// Why the mesh could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// TLS configuration.
    Tls(tls::TlsConfigError),
    /// Binding the UDP socket.
    Bind(SocketAddr, io::Error),
    /// The node configuration.
    Node(NodeError),
    /// The mesh thread could not be started.
    Thread(io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tls(e) => write!(f, "mesh TLS: {e}"),
            Self::Bind(a, e) => write!(f, "mesh: cannot bind UDP {a}: {e}"),
            Self::Node(e) => write!(f, "mesh: {e}"),
            Self::Thread(e) => write!(f, "mesh: cannot start its thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Binds the mesh socket and builds the node (its clock starts now).
pub fn bind(
    mut cfg: MeshConfig,
    identity: &MeshIdentity,
) -> Result<(Driver, MeshNode), StartError> {
    let server = tls::server_config(identity).map_err(StartError::Tls)?;
    let client = tls::client_config(identity).map_err(StartError::Tls)?;
    let driver =
        Driver::bind(cfg.listen, server, client).map_err(|e| StartError::Bind(cfg.listen, e))?;
    cfg.listen = driver.local_addr();
    let env = NodeEnv {
        now_us: 0,
        unix_ms: unix_ms(),
        seed: seed(),
        identity_check: tls::cert_is_valid_for,
    };
    let node = MeshNode::new(cfg, env).map_err(StartError::Node)?;
    Ok((driver, node))
}

fn unix_ms() -> u64 {
    crate::clock::unix_ms(crate::clock::wall_now())
}

/// The node's random seed: from the OS (a fixed fallback is harmless: the draws only spread
/// choices between relays).
fn seed() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => unix_ms(),
    }
}

/// `now` as mesh time: µs since `origin` (0 before it).
fn since(origin: Instant, now: Instant) -> u64 {
    crate::mesh::time::us(now.saturating_duration_since(origin))
}

/// The `Instant` of mesh time `t_us` on a clock whose origin is `origin`.
fn at(origin: Instant, t_us: u64) -> Instant {
    origin + Duration::from_micros(t_us)
}

fn link(h: ConnectionHandle) -> LinkId {
    LinkId(h.0)
}

fn conn(l: LinkId) -> ConnectionHandle {
    ConnectionHandle(l.0)
}

/// The mesh node as the QUIC driver's [`Handler`]. See the module docs.
pub struct MeshTask {
    node: MeshNode,
    /// Mesh time 0.
    origin: Instant,
    deliver: DeliverFn,
    status_sink: Option<(StatusSink, Instant)>,
    edge_dropped: Arc<AtomicU64>,
    delivery_dropped: Arc<AtomicU64>,
}

impl MeshTask {
    /// Drives `node` (made by [`bind`] with mesh time 0 at `origin`), handing deliveries
    /// to `deliver`.
    pub fn new(node: MeshNode, origin: Instant, deliver: DeliverFn) -> Self {
        Self {
            node,
            origin,
            deliver,
            status_sink: None,
            edge_dropped: Arc::default(),
            delivery_dropped: Arc::default(),
        }
    }

    /// The node (to install hooks before it runs).
    pub fn node_mut(&mut self) -> &mut MeshNode {
        &mut self.node
    }

    /// Hands the status to `sink` every [`STATUS_EVERY`].
    pub fn set_status_sink(&mut self, sink: StatusSink) {
        self.status_sink = Some((sink, self.origin));
    }

    /// Shows `edge` (edge→mesh commands dropped) and `delivery` (mesh→edge deliveries
    /// dropped) in the status.
    pub fn set_drop_counters(&mut self, edge: Arc<AtomicU64>, delivery: Arc<AtomicU64>) {
        self.edge_dropped = edge;
        self.delivery_dropped = delivery;
    }

    fn us(&self, now: Instant) -> u64 {
        since(self.origin, now)
    }

    /// The status now, with what only the driver knows.
    pub fn status(&self, quic: &Driver, now: Instant) -> RelayStatus {
        let mut mesh = self.node.status(self.us(now)).with_transport(quic.stats());
        mesh.identity.mesh_addr = quic.local_addr().to_string();
        for l in &mut mesh.links {
            l.quic_rtt_ms = quic.rtt(conn(l.link)).map(|d| d.as_secs_f64() * 1000.0);
            l.queued_messages = quic.queued_messages(conn(l.link));
        }
        RelayStatus {
            mesh,
            edge_to_mesh_dropped: self.edge_dropped.load(Ordering::Relaxed),
            mesh_to_edge_dropped: self.delivery_dropped.load(Ordering::Relaxed),
        }
    }

    /// Hands everything the node wants done to the driver, until it wants nothing more.
    fn pump(&mut self, quic: &mut Driver, now: Instant) {
        let us = self.us(now);
        loop {
            let mut any = false;
            while let Some(t) = self.node.poll_transmit() {
                any = true;
                if let Err(e) = send(quic, now, &t) {
                    let why = match e {
                        SendError::NoConnection => Refused::NoLink,
                        SendError::QueueFull => Refused::QueueFull,
                        SendError::TooLarge => Refused::TooLarge,
                        _ => Refused::Unsupported,
                    };
                    self.node.handle_refused(&t, why, us);
                }
            }
            while let Some(e) = self.node.poll_event() {
                any = true;
                match e {
                    MeshEvent::Dial { peer, addr } => {
                        let r = quic
                            .connect(now, addr, &peer)
                            .map(link)
                            .map_err(|e| e.to_string());
                        self.node.handle_dialled(&peer, r, us);
                    }
                    MeshEvent::Close { link, code, reason } => {
                        quic.close(now, conn(link), code, reason);
                    }
                    MeshEvent::Deliver {
                        tenant,
                        channel,
                        payload,
                        mode,
                    } => (self.deliver)(Delivery {
                        tenant,
                        channel,
                        payload,
                        mode,
                    }),
                }
            }
            if !any {
                break;
            }
        }
    }
}

/// Gives one transmit to the driver.
fn send(quic: &mut Driver, now: Instant, t: &MeshTransmit) -> Result<(), SendError> {
    let c = conn(t.link);
    match t.kind {
        TransmitKind::Control => quic.send_control(now, c, &t.bytes),
        TransmitKind::Datagram => quic.send_datagram(c, t.bytes.clone()),
        TransmitKind::Message => quic.send_message(c, t.bytes.clone()),
    }
}

impl Handler for MeshTask {
    type Command = MeshCommand;

    fn on_event(&mut self, quic: &mut Driver, now: Instant, event: QuicEvent) {
        let us = self.us(now);
        match event {
            QuicEvent::Connected {
                conn,
                side,
                remote,
                peer_cert,
            } => {
                let side = if side == Side::Client {
                    LinkSide::Dialled
                } else {
                    LinkSide::Accepted
                };
                self.node
                    .handle_link_up(link(conn), side, remote, peer_cert, us);
            }
            QuicEvent::Lost { conn, reason, .. } => {
                self.node.handle_link_lost(link(conn), &reason, us)
            }
            QuicEvent::Control { conn, frame } => self.node.handle_control(link(conn), &frame, us),
            QuicEvent::Message { conn, bytes } => self.node.handle_message(link(conn), bytes, us),
            QuicEvent::Datagram { conn, bytes } => {
                self.node.handle_datagram(link(conn), &bytes, us)
            }
        }
        self.pump(quic, now);
    }

    fn on_command(&mut self, quic: &mut Driver, now: Instant, command: MeshCommand) {
        let us = self.us(now);
        match command {
            MeshCommand::Publish {
                tenant,
                channel,
                payload,
                mode,
                local_match,
            } => self.node.handle_publish(
                Publish {
                    tenant: &tenant,
                    channel: &channel,
                    payload: &payload,
                    mode,
                    local_match,
                },
                us,
            ),
            MeshCommand::Interest {
                tenant,
                pattern,
                present,
            } => self.node.handle_interest(&tenant, &pattern, present, us),
            MeshCommand::Status(reply) => {
                // A caller that went away does not need it.
                let _ = reply.try_send(Arc::new(self.status(quic, now)));
            }
        }
        self.pump(quic, now);
    }

    fn on_tick(&mut self, quic: &mut Driver, now: Instant) {
        let us = self.us(now);
        if self.node.poll_timeout().is_some_and(|t| t <= us) {
            self.node.handle_timeout(us);
        }
        self.pump(quic, now);
        if self
            .status_sink
            .as_ref()
            .is_some_and(|(_, due)| now >= *due)
        {
            let status = Arc::new(self.status(quic, now));
            if let Some((sink, due)) = &mut self.status_sink {
                sink(status);
                *due = now + STATUS_EVERY;
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let node = self.node.poll_timeout().map(|t| at(self.origin, t));
        let status = self.status_sink.as_ref().map(|(_, due)| *due);
        match (node, status) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Runs `task` on `quic` until `commands` closes.
pub async fn run(
    quic: Driver,
    mut task: MeshTask,
    commands: Receiver<MeshCommand>,
) -> io::Result<()> {
    driver::run(quic, &mut task, commands).await
}

/// Runs `task` on `quic` on a thread of its own named `name`, until `commands` closes.
pub fn spawn(
    name: &str,
    quic: Driver,
    task: MeshTask,
    commands: Receiver<MeshCommand>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Err(e) = smol::block_on(run(quic, task, commands)) {
                log::error!("mesh stopped: {e}");
            }
        })
}

/// Starts the mesh for `relay`: the node on the `mesh` thread, the broker's hook feeding it,
/// its deliveries drained into the broker on `ex` (the edge thread), its status and
/// announcements going to `admin`, ticket records flooded for `tickets`.
pub fn attach(
    relay: &mut Relay,
    ex: &Rc<LocalExecutor<'static>>,
    cfg: MeshConfig,
    identity: &MeshIdentity,
    admin: AdminHandle,
    tickets: Option<Arc<TicketService>>,
) -> Result<SocketAddr, StartError> {
    let origin = crate::clock::now();
    let (quic, mut node) = bind(cfg, identity)?;
    let addr = quic.local_addr();
    let (cmd_tx, cmd_rx) = smol::channel::bounded(COMMAND_QUEUE);
    let (del_tx, del_rx) = smol::channel::bounded::<Delivery>(DELIVERY_QUEUE);
    let edge_dropped = Arc::new(AtomicU64::new(0));
    let delivery_dropped = Arc::new(AtomicU64::new(0));
    let broker = relay.broker();
    broker.borrow_mut().set_mesh(Rc::new(EdgeHook::new(
        cmd_tx,
        edge_dropped.clone(),
        quic.backlog_signal(),
    )));
    if let Some(service) = tickets {
        node.set_ticket_hook(Box::new(TicketServiceHook(service)));
    }
    node.set_announce_hook(Box::new(MeshFeed::new(admin.clone())));
    let dropped = delivery_dropped.clone();
    let busy = delivery_dropped.clone();
    let mut task = MeshTask::new(
        node,
        origin,
        Box::new(move |d| {
            if del_tx.try_send(d).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        }),
    );
    task.set_drop_counters(edge_dropped, delivery_dropped);
    // /v1/status answers from the start, not only after the mesh thread's first turn.
    admin.set_status(Arc::new(task.status(&quic, origin)));
    task.set_status_sink(Box::new(move |s| admin.set_status(s)));
    ex.spawn(async move {
        while let Ok(first) = del_rx.recv().await {
            let batch = std::iter::once(first)
                .chain(std::iter::from_fn(|| del_rx.try_recv().ok()).take(DELIVERY_BATCH - 1));
            match broker.try_borrow_mut() {
                Ok(mut b) => {
                    for d in batch {
                        b.deliver_from_mesh(&d.tenant, &d.channel, &d.payload, d.mode);
                    }
                }
                Err(_) => {
                    // Nothing else holds the broker across an await; counted if it ever does.
                    let n = batch.count() as u64;
                    busy.fetch_add(n, Ordering::Relaxed);
                    log::error!("mesh: broker busy, {n} deliveries dropped");
                }
            }
            // Let the connections write what was queued before the next batch.
            smol::future::yield_now().await;
        }
    })
    .detach();
    spawn("mesh", quic, task, cmd_rx).map_err(StartError::Thread)?;
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_time_round_trips() {
        let t0 = crate::clock::now();
        let t = t0 + Duration::from_millis(1500);
        assert_eq!(since(t0, t), 1_500_000);
        assert_eq!(since(t, t0), 0, "before the origin is 0");
        assert_eq!(at(t0, 1_500_000), t);
    }
}
