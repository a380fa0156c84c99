//! The mesh's streams over QUIC, socket-free: [`MeshTransport`] wraps a [`QuicEndpoint`] and
//! gives each connection (a mesh *link*) three kinds of traffic:
//!
//! - one bidirectional **control** stream, opened by the dialling side, carrying
//!   length-prefixed frames in order ([`super::framing`]); a peer that does not read it is
//!   closed once [`MAX_CONTROL_BACKLOG`] bytes wait;
//! - unidirectional **message** streams, so a lost packet delays only the messages it
//!   carried: one message per stream when messages come one at a time; when several wait
//!   for the same link (the relay is busy), a *batch* of them per stream, at most
//!   [`BATCH_MAX_BYTES`] (about one packet), on links that negotiated
//!   [`super::tls::MESH_ALPN_BATCH`]. At most [`MAX_OPEN_OUT_STREAMS`] streams in flight,
//!   then a bounded queue ([`MAX_QUEUED_MESSAGES`], [`MAX_QUEUED_BYTES`]) whose overflow is
//!   refused with [`SendError::QueueFull`] and counted;
//! - unreliable QUIC **datagrams** (probes), which may be lost: that is what probing
//!   measures.
//!
//! **Backlog policy** (the mesh's side of "loss only where someone is slow"): a link with
//! [`BACKLOG_HIGH_MESSAGES`] messages in its queue, or [`BACKLOG_HIGH_BYTES`] waiting to be
//! sent (queued, plus written to QUIC but unacknowledged beyond what the congestion window
//! has in flight) is *backed up*; while any link is backed up and not slow, [`BacklogSignal`] is set, so the
//! edge can stop reading publishers until the relay catches up instead of dropping. A link
//! backed up for [`LINK_SLOW_AFTER`] without a break is *slow* (the peer or the path cannot
//! keep up): it no longer holds the signal (a slow link must not slow intake for everyone),
//! and what its full queue refuses is dropped and counted for that link only
//! (`messages_dropped_slow_link`). Other links and local delivery never wait for it.
//!
//! It counts control bytes by mesh message kind. It does not read clocks or sockets.
//!
//! # Call order
//!
//! The same as [`QuicEndpoint`]'s: feed input ([`MeshTransport::handle_datagram`],
//! [`MeshTransport::handle_timeout`], and the `connect`/`close`/`send_*` calls), drain
//! [`MeshTransport::poll_event`], drain [`MeshTransport::poll_transmit`], sleep until
//! [`MeshTransport::poll_timeout`]. Messages handed to `send_message` are written to streams
//! when `poll_transmit` is next called, so every message queued in one round goes out in
//! the same round.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ClientConfig, ConnectionHandle, Dir, ServerConfig, Side, StreamEvent, StreamId, VarInt,
};
use rustls_pki_types::CertificateDer;

use super::admission::{AdmissionLimits, Refusal};
use super::endpoint::{self, Closed, QuicEndpoint, Transmit};
use super::framing::{self, CONTROL_PREFIX, MAX_CONTROL_FRAME};
use super::ratelog::RateLimitedLog;

pub use super::endpoint::DialError;

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
/// Queued messages from which a link counts as backed up (a quarter of the bound).
pub const BACKLOG_HIGH_MESSAGES: usize = MAX_QUEUED_MESSAGES / 4;
/// Bytes waiting to be sent from which a link counts as backed up (at 50 Mbit/s, 40 ms).
pub const BACKLOG_HIGH_BYTES: usize = 256 * 1024;
/// A link backed up this long without a break is slow: it drops (counted) instead of
/// holding back the relay's intake.
pub const LINK_SLOW_AFTER: Duration = Duration::from_secs(1);

/// Set while a link that is not slow is backed up: the relay produces faster than its links
/// send, and its intake should pause. Cheap to clone and read from any thread.
#[derive(Debug, Clone, Default)]
pub struct BacklogSignal(Arc<AtomicBool>);

impl BacklogSignal {
    /// Whether intake should pause now.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where a link's queue stands (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BacklogState {
    /// Below the high mark.
    Clear,
    /// At or above the high mark, for less than [`LINK_SLOW_AFTER`].
    BackedUp,
    /// Backed up for [`LINK_SLOW_AFTER`] or more.
    Slow,
}

/// A link's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkBacklog {
    /// Messages waiting for a stream.
    pub queued_messages: usize,
    /// Bytes waiting to be sent (queued, or unacknowledged beyond the congestion window).
    pub waiting_bytes: usize,
    /// The state.
    pub state: BacklogState,
}

/// Most bytes of one batch stream: about one packet's payload, so a lost packet delays
/// only the messages it carried, as with one stream per message.
pub const BATCH_MAX_BYTES: usize = 1100;
/// Inbound unidirectional streams being reassembled, per connection.
pub const MAX_IN_STREAMS: usize = 512;
/// Connections (in and out) one endpoint holds ([`AdmissionLimits::max_connections`]).
pub const MAX_CONNECTIONS: usize = 128;
/// Control bytes buffered from a peer before complete frames are split off (a frame can
/// span several reads).
const MAX_CONTROL_IN: usize = MAX_CONTROL_FRAME + CONTROL_PREFIX + 64 * 1024;
/// Application close code: normal shutdown.
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: the peer broke the mesh protocol.
pub const CLOSE_PROTOCOL: u32 = 1;
/// Application close code: the peer does not read its control stream.
pub const CLOSE_STUCK: u32 = 2;
/// Application close code: duplicate link to the same relay.
pub const CLOSE_DUPLICATE: u32 = 3;

/// What happened on a mesh link.
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
    /// The connection is gone (closed by either side, timed out, or refused). Sent once
    /// per connection; the handle is dead afterwards.
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
        frame: Bytes,
    },
    /// One complete message.
    Message {
        /// The connection.
        conn: ConnectionHandle,
        /// The message.
        bytes: Bytes,
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

/// Counters of the mesh's QUIC layer (monotonic unless marked as a gauge), as the status
/// document's `counters.quic` shows them.
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
    /// Incoming attempts refused because every slot open to incoming connections was taken.
    pub refused_full: u64,
    /// Incoming attempts refused because too many handshakes were in progress.
    pub refused_handshakes: u64,
    /// Incoming attempts refused because their source had too many handshakes in progress.
    pub refused_source_handshakes: u64,
    /// Incoming attempts refused because their source started handshakes too fast.
    pub refused_source_rate: u64,
    /// Incoming attempts refused because the table of sources was full.
    pub refused_source_table: u64,
    /// Retry packets sent (address validation of unvalidated attempts).
    pub retries: u64,
    /// Handshakes closed to make room for a source with fewer in progress.
    pub handshakes_displaced: u64,
    /// Handshakes that failed (bad or missing certificate, wrong CA, wrong ALPN, peer gave
    /// up).
    pub handshake_failures: u64,
    /// Handshakes closed for not completing in time.
    pub handshake_timeouts: u64,
    /// Dials refused because the connection table was full.
    pub dials_refused: u64,
    /// Endpoint answers (Retry, refusals) dropped because too many were waiting.
    pub responses_dropped: u64,
    /// Gauge: incoming handshakes in progress.
    pub handshakes_in_progress: u64,
    /// Gauge: connections in the table.
    pub connections: u64,
    /// Messages written to message streams.
    pub messages_sent: u64,
    /// Message streams opened for them (fewer than messages when batches went out).
    pub message_streams: u64,
    /// Messages dropped because a link's queue was full.
    pub messages_dropped_queue: u64,
    /// Of those, dropped on links that were slow (backed up for [`LINK_SLOW_AFTER`]).
    pub messages_dropped_slow_link: u64,
    /// Gauge: links backed up now.
    pub links_backed_up: u64,
    /// Gauge: links slow now.
    pub links_slow: u64,
    /// Times the [`BacklogSignal`] went on.
    pub backpressure_episodes: u64,
    /// Milliseconds the [`BacklogSignal`] was on in all.
    pub backpressure_ms: u64,
    /// Messages dropped on receive because they were larger than [`MAX_MESSAGE`], too many
    /// streams were open, or a batch was malformed.
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

/// Message kinds counted in [`MeshTransport::control_by_kind`].
pub const KINDS: usize = fastpubsub_core::mesh::KIND_NAMES.len();

/// Control bytes by message kind, `[sent, received]` (see [`MeshTransport::control_by_kind`]).
pub type ControlByKind = [[u64; 2]; KINDS];

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    messages_dropped_slow_link: u64,
    backpressure_episodes: u64,
    backpressure_us: u64,
    messages_sent: u64,
    message_streams: u64,
    messages_dropped_queue: u64,
    messages_dropped_rx: u64,
    datagrams_dropped: u64,
    control_closed: u64,
    control_bytes_sent: u64,
    control_bytes_received: u64,
}

/// Counts one control frame or datagram whose first byte is `kind` (`len`: framing
/// included).
fn count_control(
    c: &mut Counters,
    by_kind: &mut ControlByKind,
    kind: Option<u8>,
    len: usize,
    sent: bool,
) {
    let n = len as u64;
    if sent {
        c.control_bytes_sent += n;
    } else {
        c.control_bytes_received += n;
    }
    if let Some(k) = kind
        .and_then(|k| fastpubsub_core::mesh::kind_index(&[k]))
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

/// A message stream being received.
#[derive(Default)]
enum Partial {
    #[default]
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Partial {
    fn len(&self) -> usize {
        match self {
            Self::Empty => 0,
            Self::One(b) => b.len(),
            Self::Many(b) => b.len(),
        }
    }

    fn push(&mut self, chunk: Bytes) {
        *self = match std::mem::take(self) {
            Self::Empty => Self::One(chunk),
            Self::One(a) => {
                let mut m = BytesMut::with_capacity(a.len() + chunk.len());
                m.extend_from_slice(&a);
                m.extend_from_slice(&chunk);
                Self::Many(m)
            }
            Self::Many(mut m) => {
                m.extend_from_slice(&chunk);
                Self::Many(m)
            }
        }
    }

    fn finish(self) -> Bytes {
        match self {
            Self::Empty => Bytes::new(),
            Self::One(b) => b,
            Self::Many(m) => m.freeze(),
        }
    }
}

/// The mesh state of one connection.
struct Link {
    ctrl: Option<StreamId>,
    ctrl_out: VecDeque<u8>,
    ctrl_in: BytesMut,
    out: Vec<OutStream>,
    queue: VecDeque<Bytes>,
    queue_bytes: usize,
    inbound: HashMap<StreamId, Partial>,
    pump_queued: bool,
    /// The peer reads batches (negotiated by ALPN).
    batch: bool,
    /// Backed up since (continuously).
    backed_up_since: Option<Instant>,
    slow: bool,
    /// Message streams written and not yet acknowledged.
    unacked: Unacked,
}

/// Our message streams not yet acknowledged, in the order they were opened (uni stream
/// indexes are consecutive): `(index, bytes, acknowledged)`.
#[derive(Default)]
struct Unacked {
    ring: VecDeque<(u64, usize, bool)>,
    bytes: usize,
}

impl Unacked {
    fn opened(&mut self, id: StreamId, bytes: usize) {
        self.ring.push_back((id.index(), bytes, false));
        self.bytes += bytes;
    }

    /// `id` was acknowledged, stopped or failed.
    fn done(&mut self, id: StreamId) {
        let Some(&(first, ..)) = self.ring.front() else {
            return;
        };
        let Some(e) = id
            .index()
            .checked_sub(first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.ring.get_mut(i))
        else {
            return;
        };
        e.2 = true;
        while let Some(&(_, b, true)) = self.ring.front() {
            self.bytes -= b;
            self.ring.pop_front();
        }
    }
}

impl Link {
    fn new() -> Self {
        Self {
            ctrl: None,
            ctrl_out: VecDeque::new(),
            ctrl_in: BytesMut::new(),
            out: Vec::new(),
            queue: VecDeque::new(),
            queue_bytes: 0,
            inbound: HashMap::new(),
            pump_queued: false,
            batch: false,
            backed_up_since: None,
            slow: false,
            unacked: Unacked::default(),
        }
    }
}

enum ReadOutcome {
    Pending,
    Finished(Bytes),
    TooLarge,
    Failed,
}

/// The mesh's QUIC layer without a socket. See the module docs.
pub struct MeshTransport {
    ep: QuicEndpoint,
    links: Vec<Option<Link>>,
    events: VecDeque<QuicEvent>,
    pumps: VecDeque<ConnectionHandle>,
    counters: Counters,
    by_kind: ControlByKind,
    refused_log: RateLimitedLog,
    /// Capacity reused for batch after batch.
    batch_buf: BytesMut,
    signal: BacklogSignal,
    /// A link's queue changed: review the backlog states.
    review: bool,
    backed_up: usize,
    slow: usize,
    signal_since: Option<Instant>,
}

impl std::fmt::Debug for MeshTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTransport")
            .field("endpoint", &self.ep)
            .finish_non_exhaustive()
    }
}

impl MeshTransport {
    /// A transport for the socket bound at `local`, accepting (under `limits`) and dialling
    /// with the mesh's TLS configurations. `rng_seed`: see [`QuicEndpoint::new`].
    pub fn new(
        local: SocketAddr,
        server: ServerConfig,
        client: ClientConfig,
        limits: AdmissionLimits,
        rng_seed: Option<[u8; 32]>,
    ) -> Self {
        Self {
            ep: QuicEndpoint::new(local, Some(server), Some(client), limits, rng_seed),
            links: Vec::new(),
            events: VecDeque::new(),
            pumps: VecDeque::new(),
            counters: Counters::default(),
            by_kind: [[0; 2]; KINDS],
            refused_log: RateLimitedLog::new(Duration::from_secs(1)),
            batch_buf: BytesMut::new(),
            signal: BacklogSignal::default(),
            review: false,
            backed_up: 0,
            slow: 0,
            signal_since: None,
        }
    }

    /// The intake signal (see the module docs); clones share the state.
    pub fn backlog_signal(&self) -> BacklogSignal {
        self.signal.clone()
    }

    /// Bytes of `l` waiting to be sent: queued, plus unacknowledged beyond what the
    /// congestion window lets be in flight.
    fn waiting_bytes(l: &Link, c: Option<&quinn_proto::Connection>) -> usize {
        let window = c.map_or(0, |c| c.congestion_state().window());
        let window = usize::try_from(window).unwrap_or(usize::MAX);
        l.queue_bytes + l.unacked.bytes.saturating_sub(window)
    }

    /// Where `conn`'s queue stands.
    pub fn backlog(&self, conn: ConnectionHandle) -> Option<LinkBacklog> {
        let l = self.link(conn)?;
        let state = match (l.backed_up_since, l.slow) {
            (None, _) => BacklogState::Clear,
            (Some(_), false) => BacklogState::BackedUp,
            (Some(_), true) => BacklogState::Slow,
        };
        Some(LinkBacklog {
            queued_messages: l.queue.len(),
            waiting_bytes: Self::waiting_bytes(l, self.ep.connection(conn)),
            state,
        })
    }

    /// Re-derives every link's backlog state at `now` and the signal from them.
    fn review_backlog(&mut self, now: Instant) {
        if !std::mem::take(&mut self.review) && self.backed_up == 0 {
            return;
        }
        let (mut backed, mut slow) = (0, 0);
        for (i, l) in self.links.iter_mut().enumerate() {
            let Some(l) = l else { continue };
            let high = l.queue.len() >= BACKLOG_HIGH_MESSAGES
                || Self::waiting_bytes(l, self.ep.connection(ConnectionHandle(i)))
                    >= BACKLOG_HIGH_BYTES;
            if high {
                let since = *l.backed_up_since.get_or_insert(now);
                l.slow = now.saturating_duration_since(since) >= LINK_SLOW_AFTER;
                backed += 1;
                slow += usize::from(l.slow);
            } else {
                l.backed_up_since = None;
                l.slow = false;
            }
        }
        (self.backed_up, self.slow) = (backed, slow);
        let on = backed > slow;
        match (on, self.signal_since) {
            (true, None) => {
                self.signal_since = Some(now);
                self.counters.backpressure_episodes += 1;
            }
            (false, Some(t)) => {
                self.signal_since = None;
                self.counters.backpressure_us +=
                    now.saturating_duration_since(t).as_micros() as u64;
            }
            _ => {}
        }
        self.signal.0.store(on, Ordering::Relaxed);
    }

    /// Up to `n` datagrams of one link per [`Transmit`] (see
    /// [`QuicEndpoint::set_max_datagrams`]; the socket loop sets what its socket's GSO takes).
    pub fn set_max_datagrams(&mut self, n: usize) {
        self.ep.set_max_datagrams(n);
    }

    /// The endpoint underneath (connection state, admission counters).
    pub fn endpoint(&self) -> &QuicEndpoint {
        &self.ep
    }

    /// The local UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.ep.local_addr()
    }

    /// Mesh control bytes by message kind (index into `fastpubsub_core::mesh::KIND_NAMES`):
    /// `[sent, received]`, counted as [`DriverStats::control_bytes_sent`].
    pub fn control_by_kind(&self) -> &ControlByKind {
        &self.by_kind
    }

    /// The counters (`udp_would_block` is the socket loop's and stays 0 here).
    pub fn stats(&self) -> DriverStats {
        let e = self.ep.stats();
        let a = self.ep.admission_stats();
        let c = self.counters;
        DriverStats {
            udp_rx: e.datagrams_in,
            udp_tx: e.datagrams_out,
            udp_rx_bytes: e.bytes_in,
            udp_tx_bytes: e.bytes_out,
            udp_would_block: 0,
            accepted: a.accepted,
            refused_full: a.refused(Refusal::TableFull),
            refused_handshakes: a.refused(Refusal::HandshakeBudget),
            refused_source_handshakes: a.refused(Refusal::SourceHandshakes),
            refused_source_rate: a.refused(Refusal::SourceRate),
            refused_source_table: a.refused(Refusal::SourceTable),
            retries: a.retries,
            handshakes_displaced: a.displaced,
            handshake_failures: e.handshake_failures,
            handshake_timeouts: e.handshake_timeouts,
            dials_refused: e.dials_refused,
            responses_dropped: e.responses_dropped,
            handshakes_in_progress: self.ep.handshakes_in_progress() as u64,
            connections: self.ep.connection_count() as u64,
            messages_sent: c.messages_sent,
            message_streams: c.message_streams,
            messages_dropped_queue: c.messages_dropped_queue,
            messages_dropped_slow_link: c.messages_dropped_slow_link,
            links_backed_up: self.backed_up as u64,
            links_slow: self.slow as u64,
            backpressure_episodes: c.backpressure_episodes,
            backpressure_ms: c.backpressure_us / 1000,
            messages_dropped_rx: c.messages_dropped_rx,
            datagrams_dropped: c.datagrams_dropped,
            control_closed: c.control_closed,
            control_bytes_sent: c.control_bytes_sent,
            control_bytes_received: c.control_bytes_received,
        }
    }

    /// Connections in the table (including handshaking and closing ones).
    pub fn connection_count(&self) -> usize {
        self.ep.connection_count()
    }

    /// QUIC's own RTT estimate of a connection.
    pub fn rtt(&self, conn: ConnectionHandle) -> Option<Duration> {
        self.ep.connection(conn).map(|c| c.rtt())
    }

    /// Messages waiting for a stream on `conn`.
    pub fn queued_messages(&self, conn: ConnectionHandle) -> usize {
        self.link(conn).map_or(0, |l| l.queue.len())
    }

    fn link(&self, h: ConnectionHandle) -> Option<&Link> {
        self.links.get(h.0)?.as_ref()
    }

    fn link_mut(links: &mut [Option<Link>], h: ConnectionHandle) -> Option<&mut Link> {
        links.get_mut(h.0)?.as_mut()
    }

    fn insert_link(&mut self, h: ConnectionHandle, link: Link) {
        if self.links.len() <= h.0 {
            self.links.resize_with(h.0 + 1, || None);
        }
        if let Some(l) = self.links.get_mut(h.0) {
            *l = Some(link);
        }
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
        let h = self.ep.connect(now, remote, server_name)?;
        let mut link = Link::new();
        link.ctrl = self
            .ep
            .connection_mut(h)
            .and_then(|c| c.streams().open(Dir::Bi));
        self.insert_link(h, link);
        Ok(h)
    }

    /// Close a connection (the peer sees `code` and `reason`).
    pub fn close(&mut self, now: Instant, conn: ConnectionHandle, code: u32, reason: &str) {
        self.ep
            .close(now, conn, VarInt::from_u32(code), reason.as_bytes());
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
        let link = Self::link_mut(&mut self.links, conn).ok_or(SendError::NoConnection)?;
        let c = self
            .ep
            .connection_mut(conn)
            .ok_or(SendError::NoConnection)?;
        if link.ctrl_out.len() + frame.len() + CONTROL_PREFIX > MAX_CONTROL_BACKLOG {
            self.counters.control_closed += 1;
            c.close(
                now,
                VarInt::from_u32(CLOSE_STUCK),
                Bytes::from_static(b"control stream backlog"),
            );
            return Err(SendError::QueueFull);
        }
        framing::put_control(&mut link.ctrl_out, frame);
        Self::write_control(link, c);
        count_control(
            &mut self.counters,
            &mut self.by_kind,
            frame.first().copied(),
            frame.len() + CONTROL_PREFIX,
            true,
        );
        Ok(())
    }

    /// Send one message on its own unidirectional stream, or queue it (bounded). It is
    /// written to QUIC at the next [`MeshTransport::poll_transmit`].
    pub fn send_message(&mut self, conn: ConnectionHandle, data: Bytes) -> Result<(), SendError> {
        if data.len() > MAX_MESSAGE {
            return Err(SendError::TooLarge);
        }
        let link = Self::link_mut(&mut self.links, conn).ok_or(SendError::NoConnection)?;
        if link.queue.len() >= MAX_QUEUED_MESSAGES
            || link.queue_bytes + data.len() > MAX_QUEUED_BYTES
        {
            self.counters.messages_dropped_queue += 1;
            if link.slow {
                self.counters.messages_dropped_slow_link += 1;
            }
            return Err(SendError::QueueFull);
        }
        link.queue_bytes += data.len();
        link.queue.push_back(data);
        if !link.pump_queued {
            link.pump_queued = true;
            self.pumps.push_back(conn);
        }
        Ok(())
    }

    /// Send one unreliable datagram (dropped by QUIC if it cannot go out soon).
    pub fn send_datagram(&mut self, conn: ConnectionHandle, data: Bytes) -> Result<(), SendError> {
        let c = self
            .ep
            .connection_mut(conn)
            .ok_or(SendError::NoConnection)?;
        let (len, kind) = (data.len(), data.first().copied());
        match c.datagrams().send(data, true) {
            Ok(()) => {
                count_control(&mut self.counters, &mut self.by_kind, kind, len, true);
                Ok(())
            }
            Err(quinn_proto::SendDatagramError::TooLarge) => Err(SendError::TooLarge),
            Err(quinn_proto::SendDatagramError::Blocked(_)) => {
                self.counters.datagrams_dropped += 1;
                Err(SendError::QueueFull)
            }
            Err(_) => Err(SendError::DatagramsUnsupported),
        }
    }

    /// Feed one received UDP datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        self.ep.handle_datagram(now, from, data);
    }

    /// Let time pass (see [`QuicEndpoint::handle_timeout`]); backed-up links turn slow.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ep.handle_timeout(now);
        self.review_backlog(now);
    }

    /// When [`MeshTransport::handle_timeout`] should next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let slow_at = if self.backed_up > self.slow {
            self.links
                .iter()
                .flatten()
                .filter(|l| !l.slow)
                .filter_map(|l| l.backed_up_since)
                .min()
                .map(|t| t + LINK_SLOW_AFTER)
        } else {
            None
        };
        match (self.ep.poll_timeout(), slow_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next event, or `None` when nothing more happened.
    pub fn poll_event(&mut self, now: Instant) -> Option<QuicEvent> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            let e = self.ep.poll_event()?;
            self.on_endpoint_event(now, e);
        }
    }

    /// The next datagram to send, in `buf` (see [`QuicEndpoint::poll_transmit`]). Writes
    /// queued messages to streams first.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        while let Some(h) = self.pumps.pop_front() {
            if let Some(link) = Self::link_mut(&mut self.links, h) {
                link.pump_queued = false;
                if let Some(c) = self.ep.connection_mut(h) {
                    Self::pump_messages(link, c, &mut self.batch_buf, &mut self.counters);
                }
                self.review = true;
            }
        }
        self.review_backlog(now);
        self.ep.poll_transmit(now, buf)
    }

    fn on_endpoint_event(&mut self, now: Instant, e: endpoint::Event) {
        match e {
            endpoint::Event::Connected(h) => {
                let Some(c) = self.ep.connection(h) else {
                    return;
                };
                let (side, remote) = (c.side(), c.remote_address());
                let batch = c
                    .crypto_session()
                    .handshake_data()
                    .and_then(|d| {
                        d.downcast::<quinn_proto::crypto::rustls::HandshakeData>()
                            .ok()
                    })
                    .and_then(|d| d.protocol)
                    .is_some_and(|p| p == super::tls::MESH_ALPN_BATCH);
                let peer_cert = c
                    .crypto_session()
                    .peer_identity()
                    .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
                    .and_then(|v| v.into_iter().next());
                if self.link(h).is_none() {
                    self.insert_link(h, Link::new());
                }
                if let Some(l) = Self::link_mut(&mut self.links, h) {
                    l.batch = batch;
                }
                self.events.push_back(QuicEvent::Connected {
                    conn: h,
                    side,
                    remote,
                    peer_cert,
                });
                if let (Some(link), Some(c)) = (
                    Self::link_mut(&mut self.links, h),
                    self.ep.connection_mut(h),
                ) {
                    Self::write_control(link, c);
                    Self::pump_messages(link, c, &mut self.batch_buf, &mut self.counters);
                }
            }
            endpoint::Event::Lost {
                conn,
                was_connected,
                reason,
            } => {
                if !was_connected {
                    self.log_failed(now, conn, &reason);
                }
                if let Some(l) = self.links.get_mut(conn.0) {
                    *l = None;
                }
                self.review = true;
                self.events.push_back(QuicEvent::Lost {
                    conn,
                    was_connected,
                    reason: reason.to_string(),
                });
            }
            endpoint::Event::DatagramReceived(h) => {
                let Some(c) = self.ep.connection_mut(h) else {
                    return;
                };
                while let Some(bytes) = c.datagrams().recv() {
                    count_control(
                        &mut self.counters,
                        &mut self.by_kind,
                        bytes.first().copied(),
                        bytes.len(),
                        false,
                    );
                    self.events
                        .push_back(QuicEvent::Datagram { conn: h, bytes });
                }
            }
            endpoint::Event::Stream(h, se) => self.on_stream_event(now, h, se),
        }
    }

    fn log_failed(&mut self, now: Instant, conn: ConnectionHandle, reason: &Closed) {
        let Some(supp) = self.refused_log.allow(now) else {
            return;
        };
        let remote = self
            .ep
            .connection(conn)
            .map_or_else(|| "?".to_owned(), |c| c.remote_address().to_string());
        let more = if supp > 0 {
            format!(" [{supp} similar suppressed]")
        } else {
            String::new()
        };
        log::warn!("mesh: handshake with {remote} failed ({reason}){more}");
    }

    fn on_stream_event(&mut self, now: Instant, h: ConnectionHandle, se: StreamEvent) {
        let (Some(link), Some(c)) = (
            Self::link_mut(&mut self.links, h),
            self.ep.connection_mut(h),
        ) else {
            return;
        };
        match se {
            StreamEvent::Opened { dir: Dir::Bi } => {
                while let Some(id) = c.streams().accept(Dir::Bi) {
                    if link.ctrl.is_none() && c.side() == Side::Server {
                        link.ctrl = Some(id);
                    } else {
                        let _ = c.recv_stream(id).stop(VarInt::from_u32(CLOSE_PROTOCOL));
                    }
                }
                Self::write_control(link, c);
                self.read_control(now, h);
            }
            StreamEvent::Opened { dir: Dir::Uni } => {
                while let Some(id) = c.streams().accept(Dir::Uni) {
                    if link.inbound.len() >= MAX_IN_STREAMS {
                        self.counters.messages_dropped_rx += 1;
                        let _ = c.recv_stream(id).stop(VarInt::from_u32(CLOSE_PROTOCOL));
                        continue;
                    }
                    link.inbound.insert(id, Partial::Empty);
                    Self::read_uni(link, c, id, &mut self.counters, &mut self.events, h);
                }
            }
            StreamEvent::Readable { id } => {
                if Some(id) == link.ctrl {
                    self.read_control(now, h);
                } else {
                    Self::read_uni(link, c, id, &mut self.counters, &mut self.events, h);
                }
            }
            StreamEvent::Writable { id } => {
                if Some(id) == link.ctrl {
                    Self::write_control(link, c);
                } else {
                    Self::pump_messages(link, c, &mut self.batch_buf, &mut self.counters);
                }
            }
            StreamEvent::Available { dir: Dir::Uni } => {
                Self::pump_messages(link, c, &mut self.batch_buf, &mut self.counters)
            }
            StreamEvent::Available { dir: Dir::Bi } => Self::write_control(link, c),
            StreamEvent::Stopped { id, .. } => {
                link.out.retain(|s| s.id != id);
                link.unacked.done(id);
                Self::pump_messages(link, c, &mut self.batch_buf, &mut self.counters);
            }
            StreamEvent::Finished { id } => link.unacked.done(id),
        }
        self.review = true;
    }

    fn write_control(link: &mut Link, c: &mut quinn_proto::Connection) {
        if link.ctrl.is_none() && c.side() == Side::Client {
            // Before the handshake the peer's stream limit is unknown: open when allowed.
            link.ctrl = c.streams().open(Dir::Bi);
        }
        let Some(id) = link.ctrl else { return };
        while !link.ctrl_out.is_empty() {
            let (a, _) = link.ctrl_out.as_slices();
            match c.send_stream(id).write(a) {
                Ok(0) => break,
                Ok(n) => {
                    link.ctrl_out.drain(..n);
                }
                Err(_) => break, // blocked (wait for Writable) or stopped (connection will end)
            }
        }
    }

    /// Writes queued messages to new streams while the peer's stream limit allows: one
    /// message per stream, or batches of what waits when the peer reads batches.
    fn pump_messages(
        link: &mut Link,
        c: &mut quinn_proto::Connection,
        buf: &mut BytesMut,
        counters: &mut Counters,
    ) {
        // Continue partly written streams first.
        let unacked = &mut link.unacked;
        link.out.retain_mut(|s| {
            let mut st = c.send_stream(s.id);
            match st.write_chunks(std::slice::from_mut(&mut s.data)) {
                Ok(_) if s.data.is_empty() => {
                    if st.finish().is_err() {
                        unacked.done(s.id);
                    }
                    false
                }
                Ok(_) | Err(quinn_proto::WriteError::Blocked) => true,
                Err(_) => {
                    unacked.done(s.id);
                    false
                }
            }
        });
        while link.out.len() < MAX_OPEN_OUT_STREAMS {
            let Some(first) = link.queue.front().map(Bytes::len) else {
                break;
            };
            let Some(id) = c.streams().open(Dir::Uni) else {
                break; // the peer's stream limit; `Available` wakes us
            };
            let batch =
                link.batch && link.queue.len() > 1 && framing::batched_len(first) < BATCH_MAX_BYTES; // room for the tag
            let mut data = if batch {
                if buf.capacity() < BATCH_MAX_BYTES {
                    *buf = BytesMut::with_capacity(64 * BATCH_MAX_BYTES);
                }
                let mut w = framing::BatchWriter::in_buffer(std::mem::take(buf));
                while let Some(m) = link.queue.front() {
                    if w.len() + framing::batched_len(m.len()) > BATCH_MAX_BYTES {
                        break;
                    }
                    w.push(m);
                    link.queue_bytes -= m.len();
                    link.queue.pop_front();
                }
                counters.messages_sent += w.count() as u64;
                let (data, rest) = w.finish_keep();
                *buf = rest;
                data
            } else {
                let Some(m) = link.queue.pop_front() else {
                    break;
                };
                link.queue_bytes -= m.len();
                counters.messages_sent += 1;
                m
            };
            counters.message_streams += 1;
            link.unacked.opened(id, data.len());
            let mut st = c.send_stream(id);
            match st.write_chunks(std::slice::from_mut(&mut data)) {
                Ok(_) if data.is_empty() => {
                    if st.finish().is_err() {
                        link.unacked.done(id);
                    }
                }
                Ok(_) | Err(quinn_proto::WriteError::Blocked) => {
                    link.out.push(OutStream { id, data });
                }
                Err(_) => link.unacked.done(id),
            }
        }
    }

    /// Reads what arrived on a message stream; hands the message up when it finished.
    fn read_uni(
        link: &mut Link,
        c: &mut quinn_proto::Connection,
        id: StreamId,
        counters: &mut Counters,
        events: &mut VecDeque<QuicEvent>,
        h: ConnectionHandle,
    ) {
        match Self::read_stream(link, c, id) {
            ReadOutcome::Pending => {}
            ReadOutcome::Finished(bytes) => {
                if framing::is_batch(&bytes) {
                    let r = framing::split_batch(bytes, |m| {
                        events.push_back(QuicEvent::Message { conn: h, bytes: m });
                    });
                    if r.is_err() {
                        counters.messages_dropped_rx += 1;
                    }
                } else {
                    events.push_back(QuicEvent::Message { conn: h, bytes });
                }
            }
            ReadOutcome::TooLarge => counters.messages_dropped_rx += 1,
            ReadOutcome::Failed => {}
        }
    }

    fn read_stream(link: &mut Link, c: &mut quinn_proto::Connection, id: StreamId) -> ReadOutcome {
        let Some(part) = link.inbound.get_mut(&id) else {
            return ReadOutcome::Pending;
        };
        let mut rs = c.recv_stream(id);
        let Ok(mut chunks) = rs.read(true) else {
            link.inbound.remove(&id);
            return ReadOutcome::Failed;
        };
        let out = loop {
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => {
                    if part.len() + chunk.bytes.len() > MAX_MESSAGE {
                        break ReadOutcome::TooLarge;
                    }
                    part.push(chunk.bytes);
                }
                Ok(None) => break ReadOutcome::Finished(Bytes::new()),
                Err(quinn_proto::ReadError::Blocked) => break ReadOutcome::Pending,
                Err(_) => break ReadOutcome::Failed,
            }
        };
        let _ = chunks.finalize();
        match out {
            ReadOutcome::Pending => ReadOutcome::Pending,
            ReadOutcome::Finished(_) => {
                ReadOutcome::Finished(link.inbound.remove(&id).unwrap_or_default().finish())
            }
            other => {
                link.inbound.remove(&id);
                if matches!(other, ReadOutcome::TooLarge) {
                    let _ = c.recv_stream(id).stop(VarInt::from_u32(CLOSE_PROTOCOL));
                }
                other
            }
        }
    }

    fn read_control(&mut self, now: Instant, h: ConnectionHandle) {
        let (Some(link), Some(c)) = (
            Self::link_mut(&mut self.links, h),
            self.ep.connection_mut(h),
        ) else {
            return;
        };
        let Some(id) = link.ctrl else { return };
        let mut rs = c.recv_stream(id);
        let Ok(mut chunks) = rs.read(true) else {
            return;
        };
        let (counters, by_kind, events) = (&mut self.counters, &mut self.by_kind, &mut self.events);
        let mut split = |buf: &mut BytesMut| {
            framing::split_control(buf, |frame| {
                count_control(
                    counters,
                    by_kind,
                    frame.first().copied(),
                    frame.len() + CONTROL_PREFIX,
                    false,
                );
                events.push_back(QuicEvent::Control { conn: h, frame });
            })
        };
        let mut bad = false;
        while let Ok(Some(chunk)) = chunks.next(usize::MAX) {
            link.ctrl_in.extend_from_slice(&chunk.bytes);
            // Split as we go so a fast peer cannot grow this unbounded.
            if link.ctrl_in.len() > MAX_CONTROL_IN && split(&mut link.ctrl_in).is_err() {
                bad = true;
                break;
            }
        }
        let _ = chunks.finalize();
        if bad || split(&mut link.ctrl_in).is_err() {
            self.counters.control_closed += 1;
            c.close(
                now,
                VarInt::from_u32(CLOSE_PROTOCOL),
                Bytes::from_static(b"control frame too large"),
            );
        }
    }
}
