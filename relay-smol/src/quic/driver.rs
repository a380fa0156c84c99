//! The socket loop: moves datagrams and time between an `async_io::Async<UdpSocket>` (plus
//! one `async_io::Timer`) and a socket-free [`Machine`] — the same shape as quinn's own
//! runtime glue, and all the I/O there is.
//!
//! Each wake-up: read up to [`RECV_BATCH`] datagrams into one reused buffer (zero-copy
//! slices of it go to the machine), take up to [`COMMAND_BATCH`] commands, let the machine
//! handle what is due, then send up to [`TX_PER_WAKE`] datagrams from one reused buffer (a
//! transmit the socket refuses with `WouldBlock` is kept and sent first once the socket is
//! writable). The socket is quinn-udp's: where the kernel offers segmentation offload, up to
//! [`MAX_GSO_DATAGRAMS`] datagrams of one connection leave with one send call (GSO) and
//! arrive with one receive call (GRO), if the machine takes them
//! ([`Machine::set_max_datagrams`]). When a cap was hit the loop yields to the executor and goes on; otherwise it
//! sleeps until a datagram, a command, writability (if a transmit waits) or the machine's
//! `poll_timeout`.
//!
//! [`run_machine`] drives any [`Machine`] (the WebTransport edge can bring its own).
//! [`run`] drives the mesh: a [`MeshTransport`] and a [`Handler`] above it (the mesh node)
//! in the same task, so no lock and no channel sits between a link and its connection.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::BytesMut;
use futures_lite::FutureExt;
use quinn_proto::{ClientConfig, ServerConfig};

use super::admission::AdmissionLimits;
pub use super::endpoint::Transmit;
pub use super::framing::MAX_CONTROL_FRAME;
pub use super::ratelog::RateLimitedLog;
pub use super::transport::{
    CLOSE_DUPLICATE, CLOSE_NORMAL, CLOSE_PROTOCOL, CLOSE_STUCK, ControlByKind, DialError,
    DriverStats, KINDS, MAX_CONNECTIONS, MAX_CONTROL_BACKLOG, MAX_IN_STREAMS, MAX_MESSAGE,
    MAX_OPEN_OUT_STREAMS, MAX_QUEUED_BYTES, MAX_QUEUED_MESSAGES, MeshTransport, QuicEvent,
    SendError,
};

/// Datagrams read from the socket per wake-up before other work gets a turn.
pub const RECV_BATCH: usize = 64;
/// Commands handled per wake-up before I/O gets a turn again.
pub const COMMAND_BATCH: usize = 256;
/// Datagrams sent per wake-up before receiving gets a turn again (quinn sends at most 20
/// per connection and wake; ours are spread over every connection).
pub const TX_PER_WAKE: usize = 64;
/// Most datagrams handed to the kernel in one send call (GSO), where it supports that.
pub const MAX_GSO_DATAGRAMS: usize = 16;
/// Receive buffer block: datagrams are read into it one after another and handed on as
/// slices of it, so receiving allocates once per block, not per datagram.
const RECV_BLOCK: usize = 256 * 1024;
/// Room kept for one datagram (more than any peer may send: quinn-proto's default
/// `max_udp_payload_size` is 1472; a larger datagram is cut short and fails decryption).
const RECV_SLOT: usize = 2048;
/// Room kept for one receive call when the kernel may coalesce datagrams (GRO).
const RECV_SLOT_GRO: usize = 64 * 1024;

/// Counters of the socket loop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoStats {
    /// Sends the socket refused with `WouldBlock` (retried when writable).
    pub would_block: u64,
    /// Sends that failed otherwise. Always 0 now: quinn-udp absorbs those errors (the
    /// datagrams are lost and QUIC recovers them, counted as lost packets).
    pub send_errors: u64,
    /// Receive errors (ICMP errors surface here on Linux).
    pub recv_errors: u64,
}

/// What the loop drives: a socket-free state machine with datagrams and commands in,
/// transmits out (a [`MeshTransport`] with its handler, or any other QUIC user).
pub trait Machine {
    /// Commands from other tasks.
    type Command;
    /// One received datagram.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut);
    /// One command.
    fn handle_command(&mut self, now: Instant, command: Self::Command);
    /// Called after each round of input: fire what is due at `now` and let the layers
    /// above react to what happened.
    fn handle_wake(&mut self, now: Instant);
    /// The next datagram to send, written into `buf`.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit>;
    /// When `handle_wake` is next needed without input.
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// How many datagrams of one connection one [`Transmit`] may hold (the socket's GSO,
    /// at most [`MAX_GSO_DATAGRAMS`]); called at start and when it changes. Machines that
    /// ignore it hand out one datagram per transmit, which is always fine.
    fn set_max_datagrams(&mut self, _n: usize) {}
    /// The loop's counters, after every wake-up.
    fn io_stats(&mut self, _stats: &IoStats) {}
}

/// A bound UDP socket and the loop's reused buffers.
#[derive(Debug)]
pub struct UdpIo {
    socket: Async<UdpSocket>,
    state: quinn_udp::UdpSocketState,
    local: SocketAddr,
    recv: BytesMut,
    tx: Vec<u8>,
    pending: Option<Transmit>,
    stats: IoStats,
}

enum Flush {
    /// Nothing more to send.
    Done,
    /// The socket is full; a transmit waits.
    Blocked,
    /// [`TX_PER_WAKE`] sent; there may be more.
    Capped,
}

impl UdpIo {
    /// Bind `addr`. quinn-udp sets the socket up: datagrams leave with "don't fragment" and
    /// the kernel's path-MTU cache ignored (`IP_PMTUDISC_PROBE`), so QUIC's own path-MTU
    /// discovery (which [`super::endpoint::QuicEndpoint`] turns on) finds what really gets
    /// through (1,452 bytes where the path allows, instead of 1,200 everywhere), and GRO on
    /// where the kernel has it.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = Async::<UdpSocket>::bind(addr)?;
        let local = socket.get_ref().local_addr()?;
        let state = quinn_udp::UdpSocketState::new(socket.get_ref().into())?;
        Ok(Self {
            socket,
            state,
            local,
            recv: BytesMut::new(),
            tx: Vec::with_capacity(RECV_SLOT),
            pending: None,
            stats: IoStats::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Datagrams one send call may carry now (1 without GSO; quinn-udp lowers it to 1 if
    /// the kernel refuses a GSO send).
    pub fn max_datagrams(&self) -> usize {
        self.state.max_gso_segments().clamp(1, MAX_GSO_DATAGRAMS)
    }

    /// Reads up to [`RECV_BATCH`] datagrams without blocking, handing each to `f`;
    /// returns how many arrived.
    fn recv(&mut self, mut f: impl FnMut(SocketAddr, BytesMut)) -> usize {
        let slot = if self.state.gro_segments() > 1 {
            RECV_SLOT_GRO
        } else {
            RECV_SLOT
        };
        let mut n = 0;
        while n < RECV_BATCH {
            if self.recv.len() < slot {
                // The datagrams handed out keep the old block alive as long as they need it.
                self.recv = BytesMut::zeroed(RECV_BLOCK);
            }
            let mut meta = [quinn_udp::RecvMeta::default()];
            let got = self.state.recv(
                self.socket.get_ref().into(),
                &mut [io::IoSliceMut::new(&mut self.recv[..slot])],
                &mut meta,
            );
            match got {
                Ok(_) => {
                    let [m] = meta;
                    let mut data = self.recv.split_to(m.len.min(slot));
                    // GRO: datagrams of `stride` bytes one after another, the last shorter.
                    let stride = m.stride.max(1);
                    while data.len() > stride {
                        n += 1;
                        f(m.addr, data.split_to(stride));
                    }
                    n += 1;
                    f(m.addr, data);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.stats.recv_errors += 1;
                    log::debug!("quic: recv failed: {e}");
                }
            }
        }
        n
    }

    /// Sends what `poll` hands out, the waiting transmit first; at most [`TX_PER_WAKE`]
    /// datagrams.
    fn flush(&mut self, mut poll: impl FnMut(&mut Vec<u8>) -> Option<Transmit>) -> Flush {
        let mut sent = 0;
        while sent < TX_PER_WAKE {
            let t = match self.pending.take() {
                Some(t) => t,
                None => match poll(&mut self.tx) {
                    Some(t) => t,
                    None => return Flush::Done,
                },
            };
            let transmit = quinn_udp::Transmit {
                destination: t.destination,
                ecn: None,
                contents: self.tx.get(..t.size).unwrap_or(&[]),
                segment_size: t.segment_size.filter(|_| t.datagrams() > 1),
                src_ip: None,
            };
            // Errors other than WouldBlock (e.g. ECONNREFUSED from an earlier send on
            // loopback) are absorbed: the datagrams are lost and QUIC retransmits.
            match self.state.send(self.socket.get_ref().into(), &transmit) {
                Ok(()) => sent += t.datagrams(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.would_block += 1;
                    self.pending = Some(t);
                    return Flush::Blocked;
                }
                Err(e) => {
                    self.stats.send_errors += 1;
                    log::debug!("quic: send to {} failed: {e}", t.destination);
                    sent += t.datagrams();
                }
            }
        }
        Flush::Capped
    }
}

enum Wake<C> {
    Io,
    Timer,
    Command(Option<C>),
}

/// Drive `m` on `io` until the command channel closes.
pub async fn run_machine<M: Machine>(
    mut io: UdpIo,
    m: &mut M,
    commands: smol::channel::Receiver<M::Command>,
) -> io::Result<()> {
    let mut timer = Timer::never();
    let mut max_datagrams = io.max_datagrams();
    m.set_max_datagrams(max_datagrams);
    loop {
        let now = crate::clock::now();
        let received = io.recv(|from, data| m.handle_datagram(now, from, data));
        let mut n = 0;
        while n < COMMAND_BATCH {
            match commands.try_recv() {
                Ok(cmd) => m.handle_command(now, cmd),
                Err(smol::channel::TryRecvError::Empty) => break,
                Err(smol::channel::TryRecvError::Closed) => return Ok(()),
            }
            n += 1;
        }
        m.handle_wake(now);
        let flush = io.flush(|buf| m.poll_transmit(now, buf));
        m.io_stats(&io.stats);
        if io.max_datagrams() != max_datagrams {
            max_datagrams = io.max_datagrams();
            m.set_max_datagrams(max_datagrams);
        }
        let busy = received == RECV_BATCH || n == COMMAND_BATCH;
        if matches!(flush, Flush::Capped) || (busy && !matches!(flush, Flush::Blocked)) {
            // More work is waiting: let the executor's other tasks run, then go on.
            futures_lite::future::yield_now().await;
            continue;
        }
        match m.poll_timeout() {
            Some(t) => timer.set_at(t.max(now)),
            None => timer.set_after(Duration::from_secs(3600)),
        }
        let waiting = io.pending.is_some();
        let socket = &io.socket;
        let readable = async {
            socket.readable().await?;
            Ok::<Wake<M::Command>, io::Error>(Wake::Io)
        };
        let writable = async {
            if waiting {
                socket.writable().await?;
                Ok(Wake::Io)
            } else {
                std::future::pending().await
            }
        };
        let tick = async {
            (&mut timer).await;
            Ok(Wake::Timer)
        };
        let cmd = async {
            // `recv` is cancel-safe: when another branch wins, no command is lost.
            Ok(Wake::Command(commands.recv().await.ok()))
        };
        match readable.or(writable).or(tick).or(cmd).await? {
            Wake::Command(Some(cmd)) => m.handle_command(crate::clock::now(), cmd),
            Wake::Command(None) => return Ok(()),
            Wake::Io | Wake::Timer => {}
        }
    }
}

/// The mesh's QUIC transport bound to its UDP socket, as the [`Handler`] sees it: every
/// [`MeshTransport`] method (`connect`, `close`, `send_*`, `stats`, …) through `Deref`.
#[derive(Debug)]
pub struct Driver {
    transport: MeshTransport,
    io: Option<UdpIo>,
    io_stats: IoStats,
}

impl Driver {
    /// Bind `addr` and create the endpoint (server and client side) with the default
    /// admission limits.
    pub fn bind(addr: SocketAddr, server: ServerConfig, client: ClientConfig) -> io::Result<Self> {
        Self::bind_with(addr, server, client, AdmissionLimits::default())
    }

    /// [`Driver::bind`] with explicit admission limits.
    pub fn bind_with(
        addr: SocketAddr,
        server: ServerConfig,
        client: ClientConfig,
        limits: AdmissionLimits,
    ) -> io::Result<Self> {
        let io = UdpIo::bind(addr)?;
        let transport = MeshTransport::new(io.local_addr(), server, client, limits, None);
        Ok(Self {
            transport,
            io: Some(io),
            io_stats: IoStats::default(),
        })
    }

    /// The counters, the socket loop's included.
    pub fn stats(&self) -> DriverStats {
        DriverStats {
            udp_would_block: self.io_stats.would_block,
            ..self.transport.stats()
        }
    }
}

impl Deref for Driver {
    type Target = MeshTransport;
    fn deref(&self) -> &MeshTransport {
        &self.transport
    }
}

impl DerefMut for Driver {
    fn deref_mut(&mut self) -> &mut MeshTransport {
        &mut self.transport
    }
}

/// The layer above the mesh transport (the mesh node), running in the driver's task.
pub trait Handler {
    /// Commands from other tasks (e.g. the edge offering a local publish).
    type Command;
    /// A QUIC event happened.
    fn on_event(&mut self, quic: &mut Driver, now: Instant, event: QuicEvent);
    /// A command arrived.
    fn on_command(&mut self, quic: &mut Driver, now: Instant, command: Self::Command);
    /// Called on every wake-up after events and commands; do timed work due at `now`.
    fn on_tick(&mut self, quic: &mut Driver, now: Instant);
    /// When the handler next needs [`Handler::on_tick`].
    fn poll_timeout(&self) -> Option<Instant>;
}

struct WithHandler<'a, H> {
    quic: Driver,
    handler: &'a mut H,
}

impl<H: Handler> WithHandler<'_, H> {
    fn events(&mut self, now: Instant) {
        // Bounded by the input of this round: events come from datagrams and timers.
        while let Some(ev) = self.quic.transport.poll_event(now) {
            self.handler.on_event(&mut self.quic, now, ev);
        }
    }
}

impl<H: Handler> Machine for WithHandler<'_, H> {
    type Command = H::Command;

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        self.quic.transport.handle_datagram(now, from, data);
    }

    fn handle_command(&mut self, now: Instant, command: H::Command) {
        self.handler.on_command(&mut self.quic, now, command);
    }

    fn handle_wake(&mut self, now: Instant) {
        if self.quic.transport.poll_timeout().is_some_and(|t| t <= now) {
            self.quic.transport.handle_timeout(now);
        }
        self.events(now);
        self.handler.on_tick(&mut self.quic, now);
        self.events(now);
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.quic.transport.poll_transmit(now, buf)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        match (
            self.quic.transport.poll_timeout(),
            self.handler.poll_timeout(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn io_stats(&mut self, stats: &IoStats) {
        self.quic.io_stats = *stats;
    }

    fn set_max_datagrams(&mut self, n: usize) {
        self.quic.transport.set_max_datagrams(n);
    }
}

/// Run the mesh transport and its handler until the command channel closes.
pub async fn run<H: Handler>(
    mut quic: Driver,
    handler: &mut H,
    commands: smol::channel::Receiver<H::Command>,
) -> io::Result<()> {
    let io = quic
        .io
        .take()
        .ok_or_else(|| io::Error::other("driver already ran"))?;
    let mut m = WithHandler { quic, handler };
    run_machine(io, &mut m, commands).await
}
