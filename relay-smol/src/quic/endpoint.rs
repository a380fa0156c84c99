//! A socket-free QUIC endpoint: a quinn-proto [`Endpoint`](proto::Endpoint), its
//! [`Connection`](proto::Connection)s and the admission policy that guards them
//! ([`super::admission`]). It knows nothing of what runs over the connections: the mesh
//! ([`super::transport::MeshTransport`]) and the WebTransport edge each build their streams
//! on top of it, and [`super::driver`] moves its datagrams to and from a UDP socket.
//!
//! # Call order
//!
//! Like quinn-proto's `Connection` (and `core::route::RouteTable`), the caller owns time, I/O
//! and buffers:
//!
//! 1. Feed input, any number of times, in any order:
//!    [`QuicEndpoint::handle_datagram`] for every received UDP datagram,
//!    [`QuicEndpoint::handle_timeout`] once `now` reaches [`QuicEndpoint::poll_timeout`],
//!    and the application's own calls ([`QuicEndpoint::connect`], [`QuicEndpoint::close`],
//!    stream and datagram I/O through [`QuicEndpoint::connection_mut`]).
//! 2. Drain [`QuicEndpoint::poll_event`] until `None`; handling an event may do more
//!    application I/O (step 1).
//! 3. Drain [`QuicEndpoint::poll_transmit`] into the socket until `None` (or until the socket
//!    is full, or a per-wake cap: whatever is not polled now stays queued).
//! 4. Sleep until [`QuicEndpoint::poll_timeout`] or the next datagram; repeat.
//!
//! Every call does bounded work: one datagram in, one event or one transmit out; timeouts
//! walk the connection table once (at most [`AdmissionLimits::max_connections`] entries).
//!
//! # Hardening
//!
//! New connection attempts go through [`Admission`] before any cryptography (Retry, handshake
//! budgets, per-source limits, reserved outgoing slots); handshakes that do not complete
//! within [`AdmissionLimits::handshake_timeout`] are closed. Endpoint-level answers (Retry,
//! refusals, stateless resets, version negotiation) wait in a queue of at most
//! [`MAX_RESPONSES`]; beyond that they are dropped and counted (the peer retransmits, like
//! after any loss).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto as proto;
use quinn_proto::{
    ClientConfig, ConnectionError, ConnectionHandle, DatagramEvent, EndpointConfig, ServerConfig,
    StreamEvent, VarInt,
};

use super::admission::{Admission, AdmissionLimits, AdmissionStats, Admitted, Decision};

/// Endpoint-level answers (Retry, refusals, resets) waiting to be sent.
pub const MAX_RESPONSES: usize = 64;
/// Transmits one connection may hand out in a row before the others get a turn.
const TX_BURST: usize = 16;

/// What happened, for the layer above. Each connection gets at most one `Connected` and
/// exactly one `Lost`; after `Lost` its handle is dead (a later connection may reuse it).
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed (the peer's certificate was verified).
    Connected(ConnectionHandle),
    /// The connection is gone or going (closed by either side, timed out, refused).
    Lost {
        /// The connection.
        conn: ConnectionHandle,
        /// Whether the handshake had completed.
        was_connected: bool,
        /// Why.
        reason: Closed,
    },
    /// A stream became readable, writable, opened, finished, stopped or available.
    Stream(ConnectionHandle, StreamEvent),
    /// Datagrams can be read with `connection_mut(conn)?.datagrams().recv()`.
    DatagramReceived(ConnectionHandle),
}

/// Why a connection ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Closed {
    /// quinn-proto's reason (peer closed, idle timeout, TLS failure, reset, …).
    Error(ConnectionError),
    /// The handshake did not complete within [`AdmissionLimits::handshake_timeout`].
    HandshakeTimeout,
    /// The handshake was closed to make room for one from a source with fewer in progress.
    Displaced,
    /// Closed by us ([`QuicEndpoint::close`]) and now drained.
    Local,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Error(e) => write!(f, "{}", describe(e)),
            Self::HandshakeTimeout => f.write_str("handshake did not complete in time"),
            Self::Displaced => f.write_str("handshake displaced by one from a quieter source"),
            Self::Local => f.write_str("closed"),
        }
    }
}

/// A short description of a connection error, naming certificate problems plainly.
pub fn describe(e: &ConnectionError) -> String {
    let crypto = |code: proto::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        ConnectionError::TransportError(te) if crypto(te.code) => {
            format!("TLS handshake refused: {te}")
        }
        ConnectionError::ConnectionClosed(cc) if crypto(cc.error_code) => {
            format!("peer refused our handshake: {cc}")
        }
        ConnectionError::ConnectionClosed(cc) => format!("closed by peer: {cc}"),
        other => other.to_string(),
    }
}

/// Why a connection could not be started.
#[derive(Debug)]
#[non_exhaustive]
pub enum DialError {
    /// The connection table is full (every slot, reserved ones included).
    TooManyConnections,
    /// No client configuration (a server-only endpoint).
    NoClientConfig,
    /// quinn-proto refused (bad address, bad server name).
    Quic(proto::ConnectError),
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooManyConnections => f.write_str("connection limit reached"),
            Self::NoClientConfig => f.write_str("this endpoint does not dial out"),
            Self::Quic(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DialError {}

/// Datagrams to send: their bytes are the first `size` bytes of the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// Bytes written to the buffer.
    pub size: usize,
    /// `Some(s)`: the buffer holds several datagrams of `s` bytes each (the last may be
    /// shorter), to be sent with one segmentation-offload call (GSO). Only when
    /// [`QuicEndpoint::set_max_datagrams`] allowed more than one.
    pub segment_size: Option<usize>,
}

impl Transmit {
    /// How many datagrams it holds.
    pub fn datagrams(&self) -> usize {
        match self.segment_size {
            Some(s) if s > 0 => self.size.div_ceil(s),
            _ => 1,
        }
    }
}

/// Counters of the endpoint, all monotonic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams handed in.
    pub datagrams_in: u64,
    /// Bytes handed in.
    pub bytes_in: u64,
    /// Datagrams handed out by `poll_transmit`.
    pub datagrams_out: u64,
    /// Bytes handed out.
    pub bytes_out: u64,
    /// Handshakes that failed (bad or missing certificate, wrong CA or ALPN, peer gave up).
    pub handshake_failures: u64,
    /// Handshakes closed by [`AdmissionLimits::handshake_timeout`].
    pub handshake_timeouts: u64,
    /// Dials refused because every slot was taken.
    pub dials_refused: u64,
    /// Endpoint answers dropped because [`MAX_RESPONSES`] were waiting.
    pub responses_dropped: u64,
}

struct Slot {
    conn: proto::Connection,
    admitted: Admitted,
    handshake_deadline: Option<Instant>,
    connected: bool,
    lost_reported: bool,
    /// In `service` (has events or endpoint events to look at).
    queued_service: bool,
    /// In `tx` (may have something to send).
    queued_tx: bool,
}

/// The endpoint and its connections. See the module docs for the call order.
pub struct QuicEndpoint {
    inner: proto::Endpoint,
    client: Option<ClientConfig>,
    slots: Vec<Option<Slot>>,
    live: usize,
    admission: Admission,
    responses: VecDeque<(SocketAddr, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    events: VecDeque<Event>,
    service: VecDeque<ConnectionHandle>,
    tx: VecDeque<ConnectionHandle>,
    tx_burst: usize,
    max_datagrams: usize,
    stats: EndpointStats,
    local: SocketAddr,
}

impl std::fmt::Debug for QuicEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicEndpoint")
            .field("local", &self.local)
            .field("connections", &self.live)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl QuicEndpoint {
    /// An endpoint for the socket bound at `local`: it accepts connections if `server` is
    /// given (admitted under `limits`) and dials if `client` is. `rng_seed` makes
    /// connection ids and tokens reproducible (tests); `None` seeds from the OS. Path-MTU
    /// discovery is on: the socket must not fragment (`driver::UdpIo` sees to it).
    pub fn new(
        local: SocketAddr,
        server: Option<ServerConfig>,
        client: Option<ClientConfig>,
        limits: AdmissionLimits,
        rng_seed: Option<[u8; 32]>,
    ) -> Self {
        let mut cfg = EndpointConfig::default();
        cfg.rng_seed(rng_seed);
        Self {
            inner: proto::Endpoint::new(Arc::new(cfg), server.map(Arc::new), true, None),
            client,
            slots: Vec::new(),
            live: 0,
            admission: Admission::new(limits),
            responses: VecDeque::new(),
            spare: Vec::new(),
            events: VecDeque::new(),
            service: VecDeque::new(),
            tx: VecDeque::new(),
            tx_burst: 0,
            max_datagrams: 1,
            stats: EndpointStats::default(),
            local,
        }
    }

    /// Replaces the server configuration for new connections (e.g. a rotated certificate);
    /// open connections keep theirs.
    pub fn set_server_config(&mut self, server: Option<ServerConfig>) {
        self.inner.set_server_config(server.map(Arc::new));
    }

    /// The local address this endpoint speaks from.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The endpoint's counters.
    pub fn stats(&self) -> EndpointStats {
        self.stats
    }

    /// The admission policy's counters (accepted, Retry, refusals by reason).
    pub fn admission_stats(&self) -> AdmissionStats {
        self.admission.stats()
    }

    /// The admission limits in force.
    pub fn limits(&self) -> &AdmissionLimits {
        self.admission.limits()
    }

    /// Incoming connections still in their handshake.
    pub fn handshakes_in_progress(&self) -> usize {
        self.admission.handshakes()
    }

    /// Connections in the table (handshaking, established and closing).
    pub fn connection_count(&self) -> usize {
        self.live
    }

    /// A connection, for reading its state.
    pub fn connection(&self, h: ConnectionHandle) -> Option<&proto::Connection> {
        self.slots.get(h.0)?.as_ref().map(|s| &s.conn)
    }

    /// A connection, for stream and datagram I/O. Marks it for event and transmit polling,
    /// so whatever the caller queues goes out on the next `poll_transmit`.
    pub fn connection_mut(&mut self, h: ConnectionHandle) -> Option<&mut proto::Connection> {
        let slot = self.slots.get_mut(h.0)?.as_mut()?;
        if !slot.queued_service {
            slot.queued_service = true;
            self.service.push_back(h);
        }
        if !slot.queued_tx {
            slot.queued_tx = true;
            self.tx.push_back(h);
        }
        Some(&mut slot.conn)
    }

    /// Whether `h` has completed its handshake and not been lost.
    pub fn is_connected(&self, h: ConnectionHandle) -> bool {
        self.slots
            .get(h.0)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.connected && !s.lost_reported)
    }

    /// Start a connection to `remote`, expecting its certificate to name `server_name`.
    /// Dials may use the slots reserved for them; only a completely full table refuses.
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<ConnectionHandle, DialError> {
        let client = self.client.clone().ok_or(DialError::NoClientConfig)?;
        if !self.admission.can_dial() {
            self.stats.dials_refused += 1;
            return Err(DialError::TooManyConnections);
        }
        let (h, conn) = self
            .inner
            .connect(now, client, remote, server_name)
            .map_err(DialError::Quic)?;
        let admitted = self.admission.dialled();
        self.insert(h, conn, admitted, now);
        Ok(h)
    }

    /// Close a connection: the peer sees `code` and `reason`. Its `Lost` event follows once
    /// it has drained (or at once if the handshake had not completed).
    pub fn close(&mut self, now: Instant, h: ConnectionHandle, code: VarInt, reason: &[u8]) {
        if let Some(c) = self.connection_mut(h) {
            c.close(now, code, Bytes::copy_from_slice(reason));
        }
    }

    fn insert(&mut self, h: ConnectionHandle, conn: proto::Connection, a: Admitted, now: Instant) {
        if self.slots.len() <= h.0 {
            self.slots.resize_with(h.0 + 1, || None);
        }
        let deadline = now + self.admission.limits().handshake_timeout;
        if let Some(s) = self.slots.get_mut(h.0) {
            *s = Some(Slot {
                conn,
                admitted: a,
                handshake_deadline: Some(deadline),
                connected: false,
                lost_reported: false,
                queued_service: false,
                queued_tx: false,
            });
            self.live += 1;
        }
        self.wake(h);
    }

    /// Marks `h` for event and transmit polling.
    fn wake(&mut self, h: ConnectionHandle) {
        let _ = self.connection_mut(h);
    }

    /// Feed one received UDP datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += data.len() as u64;
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        match self.inner.handle(now, from, None, None, data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                if let Some(c) = self.connection_mut(h) {
                    c.handle_event(ev);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                self.incoming(now, incoming, &mut buf);
            }
            Some(DatagramEvent::Response(t)) => {
                buf.truncate(t.size);
                self.respond(t.destination, buf);
                return;
            }
            None => {}
        }
        self.spare.push(buf);
    }

    fn incoming(&mut self, now: Instant, incoming: proto::Incoming, buf: &mut Vec<u8>) {
        let remote = incoming.remote_address();
        let validated = incoming.remote_address_validated();
        let may_retry = incoming.may_retry();
        let mut decision = self.admission.decide(now, remote, validated, may_retry);
        if let Decision::Displace(source) = decision {
            decision = match self.displace(now, source) {
                true => Decision::Accept,
                false => Decision::Refuse(super::admission::Refusal::HandshakeBudget),
            };
        }
        match decision {
            Decision::Accept | Decision::Displace(_) => {
                match self.inner.accept(incoming, now, buf, None) {
                    Ok((h, conn)) => {
                        let a = self.admission.admitted(remote, validated);
                        self.insert(h, conn, a, now);
                    }
                    Err(e) => {
                        self.stats.handshake_failures += 1;
                        if let Some(t) = e.response {
                            self.respond_copy(t.destination, buf.get(..t.size).unwrap_or(&[]));
                        }
                    }
                }
            }
            Decision::Retry => match self.inner.retry(incoming, buf) {
                Ok(t) => self.respond_copy(t.destination, buf.get(..t.size).unwrap_or(&[])),
                // Not reachable (the policy only retries when `may_retry`): refuse instead.
                Err(e) => {
                    let t = self.inner.refuse(e.into_incoming(), buf);
                    self.respond_copy(t.destination, buf.get(..t.size).unwrap_or(&[]));
                }
            },
            Decision::Refuse(_) => {
                let t = self.inner.refuse(incoming, buf);
                self.respond_copy(t.destination, buf.get(..t.size).unwrap_or(&[]));
            }
        }
    }

    /// Closes the oldest incoming handshake from `source`; false if there is none.
    fn displace(&mut self, now: Instant, source: super::admission::SourceKey) -> bool {
        let victim = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.as_ref()?)))
            .filter(|(_, s)| s.admitted.is_handshaking() && s.admitted.source() == Some(source))
            .min_by_key(|(_, s)| s.handshake_deadline)
            .map(|(i, _)| i);
        let Some(i) = victim else {
            return false;
        };
        self.end_handshake(now, i, Closed::Displaced);
        true
    }

    /// Closes slot `i`'s handshake for `why` and reports it lost at once.
    fn end_handshake(&mut self, now: Instant, i: usize, why: Closed) {
        let Some(Some(s)) = self.slots.get_mut(i) else {
            return;
        };
        s.handshake_deadline = None;
        if s.connected || s.lost_reported {
            return;
        }
        s.conn.close(
            now,
            VarInt::from_u32(0),
            Bytes::from_static(b"handshake refused"),
        );
        s.lost_reported = true;
        self.admission.handshake_done(&mut s.admitted);
        self.events.push_back(Event::Lost {
            conn: ConnectionHandle(i),
            was_connected: false,
            reason: why,
        });
        self.wake(ConnectionHandle(i));
    }

    fn respond_copy(&mut self, to: SocketAddr, bytes: &[u8]) {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b.extend_from_slice(bytes);
        self.respond(to, b);
    }

    fn respond(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        if self.responses.len() >= MAX_RESPONSES {
            self.stats.responses_dropped += 1;
            self.spare.push(bytes);
            return;
        }
        self.responses.push_back((to, bytes));
    }

    /// Let time pass: connection timers (loss detection, idle, keep-alive, pacing, drain)
    /// and handshake deadlines due at `now` fire.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let Some(Some(s)) = self.slots.get_mut(i) else {
                continue;
            };
            let mut woke = false;
            if s.conn.poll_timeout().is_some_and(|t| t <= now) {
                s.conn.handle_timeout(now);
                woke = true;
            }
            if s.handshake_deadline.is_some_and(|t| t <= now) {
                if !s.connected && !s.lost_reported {
                    self.stats.handshake_timeouts += 1;
                }
                self.end_handshake(now, i, Closed::HandshakeTimeout);
            }
            if woke {
                self.wake(ConnectionHandle(i));
            }
        }
    }

    /// When [`QuicEndpoint::handle_timeout`] should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.slots
            .iter_mut()
            .flatten()
            .flat_map(|s| [s.conn.poll_timeout(), s.handshake_deadline])
            .flatten()
            .min()
    }

    /// The next event, or `None` when nothing more happened. Bounded work per call: it
    /// looks at one connection at a time.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let h = self.service.pop_front()?;
            self.service_one(h);
        }
    }

    fn service_one(&mut self, h: ConnectionHandle) {
        let Some(Some(s)) = self.slots.get_mut(h.0) else {
            return;
        };
        s.queued_service = false;
        while let Some(ev) = s.conn.poll_endpoint_events() {
            if let Some(back) = self.inner.handle_event(h, ev) {
                s.conn.handle_event(back);
            }
        }
        while let Some(ev) = s.conn.poll() {
            match ev {
                proto::Event::Connected => {
                    s.connected = true;
                    s.handshake_deadline = None;
                    self.admission.handshake_done(&mut s.admitted);
                    if !s.lost_reported {
                        self.events.push_back(Event::Connected(h));
                    }
                }
                proto::Event::ConnectionLost { reason } => {
                    self.admission.handshake_done(&mut s.admitted);
                    if !std::mem::replace(&mut s.lost_reported, true) {
                        if !s.connected {
                            self.stats.handshake_failures += 1;
                        }
                        self.events.push_back(Event::Lost {
                            conn: h,
                            was_connected: s.connected,
                            reason: Closed::Error(reason),
                        });
                    }
                }
                proto::Event::Stream(se) => {
                    if !s.lost_reported {
                        self.events.push_back(Event::Stream(h, se));
                    }
                }
                proto::Event::DatagramReceived => {
                    if !s.lost_reported {
                        self.events.push_back(Event::DatagramReceived(h));
                    }
                }
                proto::Event::HandshakeDataReady | proto::Event::DatagramsUnblocked => {}
            }
        }
        if s.conn.is_drained() {
            let was_connected = s.connected;
            let reported = s.lost_reported;
            if let Some(Some(s)) = self.slots.get_mut(h.0).map(Option::take) {
                self.live -= 1;
                self.admission.released(s.admitted);
            }
            if !reported {
                self.events.push_back(Event::Lost {
                    conn: h,
                    was_connected,
                    reason: Closed::Local,
                });
            }
        }
    }

    /// Lets [`QuicEndpoint::poll_transmit`] hand out up to `n` datagrams of one connection
    /// in one [`Transmit`] (the socket's segmentation offload, GSO, sends them with one
    /// call). 1 (the default) gives one datagram per transmit.
    pub fn set_max_datagrams(&mut self, n: usize) {
        self.max_datagrams = n.max(1);
    }

    /// The next datagram (or, see [`QuicEndpoint::set_max_datagrams`], datagrams of one
    /// size to one destination) to send, written into `buf` (cleared first; its capacity
    /// is reused). Endpoint answers first, then connections in turn, at most a burst of
    /// transmits from one connection before the next gets its turn.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        if let Some((to, bytes)) = self.responses.pop_front() {
            buf.extend_from_slice(&bytes);
            self.spare.push(bytes);
            return Some(self.sent(Transmit {
                destination: to,
                size: buf.len(),
                segment_size: None,
            }));
        }
        while let Some(&h) = self.tx.front() {
            let Some(Some(s)) = self.slots.get_mut(h.0) else {
                self.tx.pop_front();
                self.tx_burst = 0;
                continue;
            };
            match s.conn.poll_transmit(now, self.max_datagrams, buf) {
                Some(t) => {
                    self.tx_burst += 1;
                    if self.tx_burst >= TX_BURST {
                        self.tx_burst = 0;
                        self.tx.rotate_left(1);
                    }
                    // Sending may have queued endpoint events (e.g. a drained close).
                    if !s.queued_service {
                        s.queued_service = true;
                        self.service.push_back(h);
                    }
                    return Some(self.sent(Transmit {
                        destination: t.destination,
                        size: t.size,
                        segment_size: t.segment_size,
                    }));
                }
                None => {
                    s.queued_tx = false;
                    self.tx.pop_front();
                    self.tx_burst = 0;
                }
            }
        }
        None
    }

    fn sent(&mut self, t: Transmit) -> Transmit {
        self.stats.datagrams_out += t.datagrams() as u64;
        self.stats.bytes_out += t.size as u64;
        t
    }
}
