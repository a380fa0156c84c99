//! The QUIC driver: one task owns a quinn-proto [`Endpoint`] and all its
//! [`Connection`]s, on an `async_io::Async<UdpSocket>` and one `async_io::Timer`.
//!
//! The shape copies quinn's own async glue: [`run`] feeds every received datagram to the
//! endpoint (and on to its connection), drains transmits into the socket (a transmit the
//! socket refuses with `WouldBlock` is kept and sent first once the socket is writable),
//! and re-arms one timer at the earliest `poll_timeout()` of the connections and the
//! [`Handler`]. The layer above (the mesh) is a [`Handler`] running in the same task: it
//! receives [`QuicEvent`]s and calls the `Driver`'s send methods, so no lock and no channel
//! sits between a link and its connection.
//!
//! Per connection, three kinds of traffic:
//! - one bidirectional *control* stream (opened by the connecting side) carrying
//!   length-prefixed frames, in order;
//! - one unidirectional stream per *message*, so a lost packet delays only the message
//!   it carried; at most [`MAX_OPEN_OUT_STREAMS`] in flight, then a bounded queue
//!   ([`MAX_QUEUED_MESSAGES`], [`MAX_QUEUED_BYTES`]) whose overflow is dropped and counted;
//! - unreliable QUIC *datagrams* (probes), which may be lost: that is what probing measures.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::{Bytes, BytesMut};
use futures_lite::FutureExt;
use quinn_proto::{
    ClientConfig, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    Event, ServerConfig, Side, StreamEvent, StreamId, TransportErrorCode, VarInt,
};
use rustls_pki_types::CertificateDer;

/// Largest control frame accepted from a peer (length prefix excluded).
pub const MAX_CONTROL_FRAME: usize = 128 * 1024;
/// Unsent control bytes allowed per connection before the peer is considered stuck and
/// the connection is closed.
pub const MAX_CONTROL_BACKLOG: usize = 4 * 1024 * 1024;
/// Largest message (one unidirectional stream) accepted from a peer.
pub const MAX_MESSAGE: usize = 80 * 1024;
/// Unidirectional streams we keep open for sending, per connection.
pub const MAX_OPEN_OUT_STREAMS: usize = 128;
/// Messages waiting for a stream, per connection.
pub const MAX_QUEUED_MESSAGES: usize = 1024;
/// Bytes of messages waiting for a stream, per connection.
pub const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;
/// Inbound unidirectional streams being reassembled, per connection.
pub const MAX_IN_STREAMS: usize = 512;
/// Connections (in and out) one driver holds.
pub const MAX_CONNECTIONS: usize = 128;
/// Datagrams read from the socket per wake-up before other work gets a turn.
const RECV_BATCH: usize = 64;
/// Application close code: normal shutdown.
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: the peer broke the mesh protocol.
pub const CLOSE_PROTOCOL: u32 = 1;
/// Application close code: the peer does not read its control stream.
pub const CLOSE_STUCK: u32 = 2;
/// Application close code: duplicate link to the same relay.
pub const CLOSE_DUPLICATE: u32 = 3;

/// What happened on the QUIC layer, for the [`Handler`].
#[derive(Debug)]
#[non_exhaustive]
pub enum QuicEvent {
    /// The handshake completed: the peer presented a certificate from the mesh CA.
    Connected {
        /// The connection.
        conn: ConnectionHandle,
        /// Which side we are.
        side: Side,
        /// The peer's address.
        remote: SocketAddr,
        /// The peer's leaf certificate (verified against the mesh CA).
        peer_cert: Option<CertificateDer<'static>>,
    },
    /// The connection is gone (closed by either side, timed out, or refused).
    Lost {
        /// The connection.
        conn: ConnectionHandle,
        /// Whether the handshake had completed.
        was_connected: bool,
        /// Why, for logs.
        reason: String,
    },
    /// One frame from the peer's control stream.
    Control {
        /// The connection.
        conn: ConnectionHandle,
        /// The frame, without its length prefix.
        frame: Vec<u8>,
    },
    /// One complete message (a whole unidirectional stream).
    Message {
        /// The connection.
        conn: ConnectionHandle,
        /// The stream's bytes.
        bytes: Vec<u8>,
    },
    /// One unreliable datagram.
    Datagram {
        /// The connection.
        conn: ConnectionHandle,
        /// Its bytes.
        bytes: Bytes,
    },
}

/// Why a send was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// No such connection (it was lost).
    NoConnection,
    /// The connection's queue is full; the message was dropped and counted.
    QueueFull,
    /// The message is larger than allowed.
    TooLarge,
    /// The peer does not accept datagrams (or the handshake has not finished).
    DatagramsUnsupported,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NoConnection => "no such connection",
            Self::QueueFull => "link send queue full, message dropped",
            Self::TooLarge => "message too large",
            Self::DatagramsUnsupported => "datagrams not available on this connection",
        })
    }
}

impl std::error::Error for SendError {}

/// Why a connection could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum DialError {
    /// [`MAX_CONNECTIONS`] reached.
    TooManyConnections,
    /// quinn-proto refused (bad address, bad server name).
    Quic(quinn_proto::ConnectError),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooManyConnections => write!(f, "connection limit ({MAX_CONNECTIONS}) reached"),
            Self::Quic(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DialError {}

/// Counters of the driver, all monotonic.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct DriverStats {
    /// UDP datagrams received.
    pub udp_rx: u64,
    /// UDP datagrams sent.
    pub udp_tx: u64,
    /// UDP bytes received.
    pub udp_rx_bytes: u64,
    /// UDP bytes sent.
    pub udp_tx_bytes: u64,
    /// Sends the socket refused with `WouldBlock` (retried later).
    pub udp_would_block: u64,
    /// Incoming connections accepted for a handshake.
    pub accepted: u64,
    /// Incoming connections refused because [`MAX_CONNECTIONS`] was reached.
    pub refused_full: u64,
    /// Handshakes that failed (bad or missing certificate, wrong CA, wrong ALPN, timeout).
    pub handshake_failures: u64,
    /// Messages dropped because a link's queue was full.
    pub messages_dropped_queue: u64,
    /// Messages dropped on receive because they were larger than [`MAX_MESSAGE`] or too
    /// many streams were open.
    pub messages_dropped_rx: u64,
    /// Datagrams the connection could not queue.
    pub datagrams_dropped: u64,
    /// Connections closed because the control backlog exceeded [`MAX_CONTROL_BACKLOG`] or
    /// the peer sent a bad control frame.
    pub control_closed: u64,
    /// Mesh control bytes queued to send: control-stream frames with their 4-byte length
    /// prefix, and datagrams (probes); QUIC and UDP headers not included.
    pub control_bytes_sent: u64,
    /// Mesh control bytes received (counted as for `control_bytes_sent`).
    pub control_bytes_received: u64,
}

/// Message kinds counted in [`Driver::control_by_kind`].
pub const KINDS: usize = fastpubsub_core::mesh::KIND_NAMES.len();

/// Control bytes by message kind, `[sent, received]` (see [`Driver::control_by_kind`]).
pub type ControlByKind = [[u64; 2]; KINDS];

/// Counts one control frame or datagram (`extra`: framing bytes around it).
fn count_control(
    stats: &mut DriverStats,
    by_kind: &mut ControlByKind,
    bytes: &[u8],
    extra: usize,
    sent: bool,
) {
    let n = (bytes.len() + extra) as u64;
    if sent {
        stats.control_bytes_sent += n;
    } else {
        stats.control_bytes_received += n;
    }
    if let Some(k) = fastpubsub_core::mesh::kind_index(bytes)
        .and_then(|k| by_kind.get_mut(k))
        .and_then(|d| d.get_mut(usize::from(!sent)))
    {
        *k += n;
    }
}

struct OutStream {
    id: StreamId,
    data: Bytes,
}

struct Conn {
    conn: quinn_proto::Connection,
    connected: bool,
    ctrl: Option<StreamId>,
    ctrl_out: VecDeque<u8>,
    ctrl_in: Vec<u8>,
    out: Vec<OutStream>,
    queue: VecDeque<Bytes>,
    queue_bytes: usize,
    inbound: HashMap<StreamId, Vec<u8>>,
    lost_reported: bool,
}

impl Conn {
    fn new(conn: quinn_proto::Connection) -> Self {
        Self {
            conn,
            connected: false,
            ctrl: None,
            ctrl_out: VecDeque::new(),
            ctrl_in: Vec::new(),
            out: Vec::new(),
            queue: VecDeque::new(),
            queue_bytes: 0,
            inbound: HashMap::new(),
            lost_reported: false,
        }
    }
}

/// Limits noisy warnings to one per interval, counting what it suppressed.
#[derive(Debug)]
pub struct RateLimitedLog {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    /// A limiter allowing one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed_since_last)` when a line may be logged now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// The QUIC endpoint, its connections and its socket. See the module docs.
pub struct Driver {
    endpoint: Endpoint,
    client_config: ClientConfig,
    socket: Async<UdpSocket>,
    local: SocketAddr,
    conns: HashMap<ConnectionHandle, Conn>,
    pending_tx: Option<(SocketAddr, Vec<u8>)>,
    events: VecDeque<QuicEvent>,
    stats: DriverStats,
    control_by_kind: ControlByKind,
    refused_log: RateLimitedLog,
    recv_buf: Vec<u8>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("local", &self.local)
            .field("conns", &self.conns.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Driver {
    /// Bind `addr` and create the endpoint (server and client side).
    pub fn bind(addr: SocketAddr, server: ServerConfig, client: ClientConfig) -> io::Result<Self> {
        let socket = Async::<UdpSocket>::bind(addr)?;
        let local = socket.get_ref().local_addr()?;
        let endpoint = Endpoint::new(
            Arc::new(EndpointConfig::default()),
            Some(Arc::new(server)),
            false,
            None,
        );
        Ok(Self {
            endpoint,
            client_config: client,
            socket,
            local,
            conns: HashMap::new(),
            pending_tx: None,
            events: VecDeque::new(),
            stats: DriverStats::default(),
            control_by_kind: [[0; 2]; KINDS],
            refused_log: RateLimitedLog::new(Duration::from_secs(1)),
            recv_buf: vec![0; 65_536],
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Mesh control bytes by message kind (index into `fastpubsub_core::mesh::KIND_NAMES`):
    /// `[sent, received]`, counted as [`DriverStats::control_bytes_sent`].
    pub fn control_by_kind(&self) -> &ControlByKind {
        &self.control_by_kind
    }

    /// The driver's counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Number of connections (including handshaking and closing ones).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// QUIC's own RTT estimate of a connection.
    pub fn rtt(&self, conn: ConnectionHandle) -> Option<Duration> {
        self.conns.get(&conn).map(|c| c.conn.rtt())
    }

    /// Messages waiting for a stream on `conn` (queue length).
    pub fn queued_messages(&self, conn: ConnectionHandle) -> usize {
        self.conns.get(&conn).map_or(0, |c| c.queue.len())
    }

    /// Start a connection to `remote`, expecting its certificate to name `server_name`.
    /// The control stream is opened at once; frames sent before the handshake completes
    /// go out right after it.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<ConnectionHandle, DialError> {
        if self.conns.len() >= MAX_CONNECTIONS {
            return Err(DialError::TooManyConnections);
        }
        let (h, conn) = self
            .endpoint
            .connect(now, self.client_config.clone(), remote, server_name)
            .map_err(DialError::Quic)?;
        let mut c = Conn::new(conn);
        c.ctrl = c.conn.streams().open(Dir::Bi);
        self.conns.insert(h, c);
        Ok(h)
    }

    /// Close a connection (the peer sees `code` and `reason`).
    pub fn close(&mut self, now: Instant, conn: ConnectionHandle, code: u32, reason: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.conn.close(
                now,
                VarInt::from_u32(code),
                Bytes::copy_from_slice(reason.as_bytes()),
            );
        }
    }

    /// Queue one control frame (in order, reliable). Closing a connection whose peer
    /// does not read is the bound.
    pub fn send_control(
        &mut self,
        now: Instant,
        conn: ConnectionHandle,
        frame: &[u8],
    ) -> Result<(), SendError> {
        if frame.len() > MAX_CONTROL_FRAME {
            return Err(SendError::TooLarge);
        }
        let c = self.conns.get_mut(&conn).ok_or(SendError::NoConnection)?;
        if c.ctrl_out.len() + frame.len() + 4 > MAX_CONTROL_BACKLOG {
            self.stats.control_closed += 1;
            c.conn.close(
                now,
                VarInt::from_u32(CLOSE_STUCK),
                Bytes::from_static(b"control stream backlog"),
            );
            return Err(SendError::QueueFull);
        }
        let len = u32::try_from(frame.len()).map_err(|_| SendError::TooLarge)?;
        c.ctrl_out.extend(len.to_be_bytes());
        c.ctrl_out.extend(frame);
        Self::write_control(c);
        count_control(&mut self.stats, &mut self.control_by_kind, frame, 4, true);
        Ok(())
    }

    /// Send one message on its own unidirectional stream, or queue it (bounded).
    pub fn send_message(&mut self, conn: ConnectionHandle, data: Bytes) -> Result<(), SendError> {
        if data.len() > MAX_MESSAGE {
            return Err(SendError::TooLarge);
        }
        let c = self.conns.get_mut(&conn).ok_or(SendError::NoConnection)?;
        if c.queue.len() >= MAX_QUEUED_MESSAGES || c.queue_bytes + data.len() > MAX_QUEUED_BYTES {
            self.stats.messages_dropped_queue += 1;
            return Err(SendError::QueueFull);
        }
        c.queue_bytes += data.len();
        c.queue.push_back(data);
        Self::pump_messages(c);
        Ok(())
    }

    /// Send one unreliable datagram (dropped by QUIC if it cannot go out soon).
    pub fn send_datagram(&mut self, conn: ConnectionHandle, data: Bytes) -> Result<(), SendError> {
        let c = self.conns.get_mut(&conn).ok_or(SendError::NoConnection)?;
        let (len, kind) = (data.len(), data.first().copied());
        match c.conn.datagrams().send(data, true) {
            Ok(()) => {
                let first = [kind.unwrap_or(u8::MAX)];
                let extra = len.saturating_sub(1);
                count_control(
                    &mut self.stats,
                    &mut self.control_by_kind,
                    &first,
                    extra,
                    true,
                );
                Ok(())
            }
            Err(quinn_proto::SendDatagramError::TooLarge) => Err(SendError::TooLarge),
            Err(quinn_proto::SendDatagramError::Blocked(_)) => {
                self.stats.datagrams_dropped += 1;
                Err(SendError::QueueFull)
            }
            Err(_) => Err(SendError::DatagramsUnsupported),
        }
    }

    fn write_control(c: &mut Conn) {
        if c.ctrl.is_none() && c.conn.side() == Side::Client {
            // Before the handshake the peer's stream limit is unknown: open when allowed.
            c.ctrl = c.conn.streams().open(Dir::Bi);
        }
        let Some(id) = c.ctrl else { return };
        while !c.ctrl_out.is_empty() {
            let (a, _) = c.ctrl_out.as_slices();
            match c.conn.send_stream(id).write(a) {
                Ok(0) => break,
                Ok(n) => {
                    c.ctrl_out.drain(..n);
                }
                Err(_) => break, // blocked (wait for Writable) or stopped (connection will end)
            }
        }
    }

    fn pump_messages(c: &mut Conn) {
        // Continue partly written streams first.
        c.out.retain_mut(|s| {
            let mut st = c.conn.send_stream(s.id);
            while !s.data.is_empty() {
                match st.write(&s.data) {
                    Ok(0) => return true,
                    Ok(n) => {
                        let _ = s.data.split_to(n);
                    }
                    Err(quinn_proto::WriteError::Blocked) => return true,
                    Err(_) => return false,
                }
            }
            let _ = st.finish();
            false
        });
        while c.out.len() < MAX_OPEN_OUT_STREAMS {
            let Some(data) = c.queue.front() else { break };
            let Some(id) = c.conn.streams().open(Dir::Uni) else {
                break; // the peer's stream limit; `Available` wakes us
            };
            let mut data = data.clone();
            c.queue_bytes -= data.len();
            c.queue.pop_front();
            let mut st = c.conn.send_stream(id);
            let mut done = false;
            loop {
                if data.is_empty() {
                    let _ = st.finish();
                    done = true;
                    break;
                }
                match st.write(&data) {
                    Ok(0) | Err(quinn_proto::WriteError::Blocked) => break,
                    Ok(n) => {
                        let _ = data.split_to(n);
                    }
                    Err(_) => {
                        done = true;
                        break;
                    }
                }
            }
            if !done {
                c.out.push(OutStream { id, data });
            }
        }
    }

    /// Read a stream into its buffer; returns `Some(bytes)` when it finished.
    fn read_stream(c: &mut Conn, id: StreamId, limit: usize) -> ReadOutcome {
        let Some(buf) = c.inbound.get_mut(&id) else {
            return ReadOutcome::Pending;
        };
        let mut rs = c.conn.recv_stream(id);
        let mut chunks = match rs.read(true) {
            Ok(ch) => ch,
            Err(_) => return ReadOutcome::Failed,
        };
        let out = loop {
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.bytes.len() > limit {
                        break ReadOutcome::TooLarge;
                    }
                    buf.extend_from_slice(&chunk.bytes);
                }
                Ok(None) => break ReadOutcome::Finished,
                Err(quinn_proto::ReadError::Blocked) => break ReadOutcome::Pending,
                Err(_) => break ReadOutcome::Failed,
            }
        };
        let _ = chunks.finalize();
        if matches!(out, ReadOutcome::TooLarge) {
            let _ = c
                .conn
                .recv_stream(id)
                .stop(VarInt::from_u32(CLOSE_PROTOCOL));
        }
        out
    }

    fn read_control(&mut self, h: ConnectionHandle, now: Instant) {
        let Some(c) = self.conns.get_mut(&h) else {
            return;
        };
        let Some(id) = c.ctrl else { return };
        let mut rs = c.conn.recv_stream(id);
        let Ok(mut chunks) = rs.read(true) else {
            return;
        };
        let mut bad = false;
        while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
            c.ctrl_in.extend_from_slice(&chunk.bytes);
            // Parse as we go so a fast peer cannot grow this unbounded.
            if c.ctrl_in.len() > MAX_CONTROL_FRAME + 4 + 64 * 1024
                && !Self::split_control(
                    &mut c.ctrl_in,
                    &mut self.events,
                    h,
                    &mut self.stats,
                    &mut self.control_by_kind,
                )
            {
                bad = true;
                break;
            }
        }
        let _ = chunks.finalize();
        if !bad
            && !Self::split_control(
                &mut c.ctrl_in,
                &mut self.events,
                h,
                &mut self.stats,
                &mut self.control_by_kind,
            )
        {
            bad = true;
        }
        if bad {
            self.stats.control_closed += 1;
            c.conn.close(
                now,
                VarInt::from_u32(CLOSE_PROTOCOL),
                Bytes::from_static(b"control frame too large"),
            );
        }
    }

    /// Split complete frames off `buf`; false when a length prefix is out of bounds.
    fn split_control(
        buf: &mut Vec<u8>,
        events: &mut VecDeque<QuicEvent>,
        h: ConnectionHandle,
        stats: &mut DriverStats,
        by_kind: &mut ControlByKind,
    ) -> bool {
        let mut pos = 0;
        while let Some(hdr) = buf.get(pos..pos + 4) {
            let mut len4 = [0u8; 4];
            len4.copy_from_slice(hdr);
            let len = u32::from_be_bytes(len4) as usize;
            if len > MAX_CONTROL_FRAME {
                return false;
            }
            let Some(frame) = buf.get(pos + 4..pos + 4 + len) else {
                break;
            };
            count_control(stats, by_kind, frame, 4, false);
            events.push_back(QuicEvent::Control {
                conn: h,
                frame: frame.to_vec(),
            });
            pos += 4 + len;
        }
        buf.drain(..pos);
        true
    }

    fn handle_conn_events(&mut self, h: ConnectionHandle, now: Instant) {
        loop {
            let Some(c) = self.conns.get_mut(&h) else {
                return;
            };
            let Some(ev) = c.conn.poll() else { break };
            match ev {
                Event::HandshakeDataReady | Event::DatagramsUnblocked => {}
                Event::Connected => {
                    c.connected = true;
                    let peer_cert = c
                        .conn
                        .crypto_session()
                        .peer_identity()
                        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
                        .and_then(|v| v.into_iter().next());
                    self.events.push_back(QuicEvent::Connected {
                        conn: h,
                        side: c.conn.side(),
                        remote: c.conn.remote_address(),
                        peer_cert,
                    });
                    Self::write_control(c);
                    Self::pump_messages(c);
                }
                Event::ConnectionLost { reason } => {
                    let was = c.connected;
                    c.lost_reported = true;
                    if !was {
                        self.stats.handshake_failures += 1;
                        let remote = c.conn.remote_address();
                        if let Some(supp) = self.refused_log.allow(now) {
                            log::warn!(
                                "mesh: handshake with {remote} failed ({}){}",
                                describe(&reason),
                                if supp > 0 {
                                    format!(" [{supp} similar suppressed]")
                                } else {
                                    String::new()
                                }
                            );
                        }
                    }
                    self.events.push_back(QuicEvent::Lost {
                        conn: h,
                        was_connected: was,
                        reason: describe(&reason),
                    });
                }
                Event::DatagramReceived => {
                    while let Some(bytes) = c.conn.datagrams().recv() {
                        count_control(&mut self.stats, &mut self.control_by_kind, &bytes, 0, false);
                        self.events
                            .push_back(QuicEvent::Datagram { conn: h, bytes });
                    }
                }
                Event::Stream(se) => self.handle_stream_event(h, se, now),
            }
        }
    }

    fn handle_stream_event(&mut self, h: ConnectionHandle, se: StreamEvent, now: Instant) {
        let Some(c) = self.conns.get_mut(&h) else {
            return;
        };
        match se {
            StreamEvent::Opened { dir: Dir::Bi } => {
                while let Some(id) = c.conn.streams().accept(Dir::Bi) {
                    if c.ctrl.is_none() && c.conn.side() == Side::Server {
                        c.ctrl = Some(id);
                    } else {
                        let _ = c
                            .conn
                            .recv_stream(id)
                            .stop(VarInt::from_u32(CLOSE_PROTOCOL));
                    }
                }
                Self::write_control(c);
                self.read_control(h, now);
            }
            StreamEvent::Opened { dir: Dir::Uni } => {
                let mut ids = Vec::new();
                while let Some(id) = c.conn.streams().accept(Dir::Uni) {
                    ids.push(id);
                }
                let mut accepted = Vec::new();
                for id in ids {
                    if c.inbound.len() >= MAX_IN_STREAMS {
                        self.stats.messages_dropped_rx += 1;
                        let _ = c
                            .conn
                            .recv_stream(id)
                            .stop(VarInt::from_u32(CLOSE_PROTOCOL));
                        continue;
                    }
                    c.inbound.insert(id, Vec::new());
                    accepted.push(id);
                }
                for id in accepted {
                    self.read_uni(h, id);
                }
            }
            StreamEvent::Readable { id } => {
                if Some(id) == c.ctrl {
                    self.read_control(h, now);
                } else {
                    self.read_uni(h, id);
                }
            }
            StreamEvent::Writable { id } => {
                if Some(id) == c.ctrl {
                    Self::write_control(c);
                } else {
                    Self::pump_messages(c);
                }
            }
            StreamEvent::Available { dir: Dir::Uni } => Self::pump_messages(c),
            StreamEvent::Available { dir: Dir::Bi } => Self::write_control(c),
            StreamEvent::Stopped { id, .. } => {
                c.out.retain(|s| s.id != id);
                Self::pump_messages(c);
            }
            StreamEvent::Finished { .. } => {}
        }
    }

    fn read_uni(&mut self, h: ConnectionHandle, id: StreamId) {
        let Some(c) = self.conns.get_mut(&h) else {
            return;
        };
        match Self::read_stream(c, id, MAX_MESSAGE) {
            ReadOutcome::Pending => {}
            ReadOutcome::Finished => {
                if let Some(bytes) = c.inbound.remove(&id) {
                    self.events.push_back(QuicEvent::Message { conn: h, bytes });
                }
            }
            ReadOutcome::TooLarge => {
                c.inbound.remove(&id);
                self.stats.messages_dropped_rx += 1;
            }
            ReadOutcome::Failed => {
                c.inbound.remove(&id);
            }
        }
    }

    /// Feed one received UDP datagram to the endpoint.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        self.stats.udp_rx += 1;
        self.stats.udp_rx_bytes += data.len() as u64;
        let mut buf = Vec::new();
        match self.endpoint.handle(now, from, None, None, data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                if let Some(c) = self.conns.get_mut(&h) {
                    c.conn.handle_event(ev);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                if self.conns.len() >= MAX_CONNECTIONS {
                    self.stats.refused_full += 1;
                    let t = self.endpoint.refuse(incoming, &mut buf);
                    self.queue_transmit(t.destination, buf.get(..t.size).unwrap_or(&[]).to_vec());
                    return;
                }
                match self.endpoint.accept(incoming, now, &mut buf, None) {
                    Ok((h, conn)) => {
                        self.stats.accepted += 1;
                        self.conns.insert(h, Conn::new(conn));
                    }
                    Err(e) => {
                        self.stats.handshake_failures += 1;
                        if let Some(t) = e.response {
                            self.queue_transmit(
                                t.destination,
                                buf.get(..t.size).unwrap_or(&[]).to_vec(),
                            );
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                self.queue_transmit(t.destination, buf.get(..t.size).unwrap_or(&[]).to_vec());
            }
            None => {}
        }
    }

    /// Try to send now; keep the datagram if the socket is full (only one is kept: QUIC
    /// recovers from the rest like from any loss).
    fn queue_transmit(&mut self, to: SocketAddr, data: Vec<u8>) {
        if self.pending_tx.is_some() {
            return;
        }
        self.try_send(to, data);
    }

    fn try_send(&mut self, to: SocketAddr, data: Vec<u8>) -> bool {
        match self.socket.get_ref().send_to(&data, to) {
            Ok(n) => {
                self.stats.udp_tx += 1;
                self.stats.udp_tx_bytes += n as u64;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stats.udp_would_block += 1;
                self.pending_tx = Some((to, data));
                false
            }
            Err(e) => {
                // E.g. ECONNREFUSED from an earlier send on loopback: the datagram is lost,
                // QUIC retransmits.
                log::debug!("mesh: send to {to} failed: {e}");
                true
            }
        }
    }

    /// Drive every connection: timers, endpoint events, stream work and transmits.
    fn drive(&mut self, now: Instant) {
        if let Some((to, data)) = self.pending_tx.take()
            && !self.try_send(to, data)
        {
            return;
        }
        let handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for h in handles {
            if let Some(c) = self.conns.get_mut(&h)
                && c.conn.poll_timeout().is_some_and(|t| t <= now)
            {
                c.conn.handle_timeout(now);
            }
            self.handle_conn_events(h, now);
            // Endpoint events (CID changes, drained).
            while let Some(c) = self.conns.get_mut(&h) {
                let Some(ev) = c.conn.poll_endpoint_events() else {
                    break;
                };
                if let Some(back) = self.endpoint.handle_event(h, ev) {
                    c.conn.handle_event(back);
                }
            }
            self.handle_conn_events(h, now);
            // Transmits.
            let mut buf = Vec::with_capacity(1500);
            loop {
                if self.pending_tx.is_some() {
                    return;
                }
                let Some(c) = self.conns.get_mut(&h) else {
                    break;
                };
                buf.clear();
                let Some(t) = c.conn.poll_transmit(now, 1, &mut buf) else {
                    break;
                };
                let data = buf.get(..t.size).unwrap_or(&[]).to_vec();
                self.try_send(t.destination, data);
            }
            if self.conns.get(&h).is_some_and(|c| c.conn.is_drained())
                && let Some(c) = self.conns.remove(&h)
                && !c.lost_reported
            {
                self.events.push_back(QuicEvent::Lost {
                    conn: h,
                    was_connected: c.connected,
                    reason: "drained".into(),
                });
            }
        }
    }

    fn next_timeout(&mut self) -> Option<Instant> {
        self.conns
            .values_mut()
            .filter_map(|c| c.conn.poll_timeout())
            .min()
    }

    /// Read up to one batch of datagrams without blocking; true if any arrived.
    fn recv_batch(&mut self, now: Instant) -> bool {
        let mut any = false;
        for _ in 0..RECV_BATCH {
            match self.socket.get_ref().recv_from(&mut self.recv_buf) {
                Ok((n, from)) => {
                    any = true;
                    let data = BytesMut::from(self.recv_buf.get(..n).unwrap_or(&[]));
                    self.handle_datagram(now, from, data);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors surface here on Linux; nothing to do but go on.
                    log::debug!("mesh: recv failed: {e}");
                }
            }
        }
        any
    }
}

enum ReadOutcome {
    Pending,
    Finished,
    TooLarge,
    Failed,
}

/// A short description of a connection error, naming certificate problems plainly.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::TransportError(te) => te_to_string(te),
        ConnectionError::ConnectionClosed(cc) => {
            if is_crypto(cc.error_code) {
                format!("peer refused our handshake: {cc}")
            } else {
                format!("closed by peer: {cc}")
            }
        }
        other => other.to_string(),
    }
}

fn te_to_string(te: &quinn_proto::TransportError) -> String {
    if is_crypto(te.code) {
        format!("TLS handshake refused: {te}")
    } else {
        te.to_string()
    }
}

fn is_crypto(code: TransportErrorCode) -> bool {
    let v = u64::from(code);
    (0x100..0x200).contains(&v)
}

/// The layer above the driver (the mesh), running in the driver's task.
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

/// Commands handled per wake-up before I/O gets a turn again.
const COMMAND_BATCH: usize = 256;

/// Run the driver and its handler until the command channel closes.
pub async fn run<H: Handler>(
    mut quic: Driver,
    handler: &mut H,
    commands: smol::channel::Receiver<H::Command>,
) -> io::Result<()> {
    let mut timer = Timer::never();
    loop {
        let now = crate::clock::now();
        quic.recv_batch(now);
        let mut n = 0;
        while n < COMMAND_BATCH {
            match commands.try_recv() {
                Ok(cmd) => handler.on_command(&mut quic, now, cmd),
                Err(smol::channel::TryRecvError::Empty) => break,
                Err(smol::channel::TryRecvError::Closed) => return Ok(()),
            }
            n += 1;
        }
        // Drive until no new events come out (bounded).
        for _ in 0..8 {
            quic.drive(now);
            if quic.events.is_empty() {
                break;
            }
            while let Some(ev) = quic.events.pop_front() {
                handler.on_event(&mut quic, now, ev);
            }
        }
        handler.on_tick(&mut quic, now);
        quic.drive(now);
        while let Some(ev) = quic.events.pop_front() {
            handler.on_event(&mut quic, now, ev);
        }
        quic.drive(now);

        let deadline = match (quic.next_timeout(), handler.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match deadline {
            Some(t) => timer.set_at(t.max(now)),
            None => timer.set_after(Duration::from_secs(3600)),
        }
        let readable = async {
            quic.socket.readable().await?;
            Ok::<Wake<H::Command>, io::Error>(Wake::Io)
        };
        let writable = async {
            if quic.pending_tx.is_some() {
                quic.socket.writable().await?;
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
            Wake::Command(Some(cmd)) => handler.on_command(&mut quic, crate::clock::now(), cmd),
            Wake::Command(None) => return Ok(()),
            Wake::Io | Wake::Timer => {}
        }
    }
}

enum Wake<C> {
    Io,
    Timer,
    Command(Option<C>),
}
