//! The WebTransport listener: a [`Machine`] over quic's socket-free [`QuicEndpoint`]
//! (admission: Retry above a handshake load, handshake budgets, per-source limits,
//! handshake timeouts) with one [`Session`] per connection, run by quic's socket loop
//! ([`run_machine`]) on the edge's executor (the broker is shared without locks).
//!
//! Per wake-up: sessions the broker woke (a delivery queued for them) are written out
//! first, then the endpoint's events go to their sessions, and a session that had more
//! input than its turn allowed is queued to run again after the others (so a publisher's
//! burst cannot fill its subscribers' queues before they are written). A generated
//! certificate is replaced every `cert::ROTATE_AFTER` (new handshakes use the new one;
//! sessions keep theirs).
//!
//! Bounds: `Limits::max_connections` sessions (the broker refuses more with 503) plus
//! [`MAX_HANDSHAKING`] connections in their handshake, admitted per source
//! ([`client_admission`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{ConnectionHandle, Event as ProtoEvent};

use super::cert::{SharedHash, WtCert};
use super::session::Session;
use crate::auth::Authorizer;
use crate::broker::Broker;
use crate::clock;
use crate::quic::admission::AdmissionLimits;
use crate::quic::driver::{Machine, UdpIo, run_machine};
use crate::quic::endpoint::{Event, QuicEndpoint, Transmit};

/// Connections beyond the session limit allowed to be in their handshake.
pub const MAX_HANDSHAKING: usize = 1024;

/// Admission limits of a client edge (not the mesh's): many clients, several behind one NAT
/// address, no outgoing dials.
pub fn client_admission(max_sessions: usize) -> AdmissionLimits {
    AdmissionLimits {
        max_connections: max_sessions + MAX_HANDSHAKING,
        reserved_outgoing: 0,
        max_handshakes: MAX_HANDSHAKING,
        // Address validation (Retry, one more round trip) only under handshake load.
        retry_above: 64,
        max_handshakes_per_source: 64,
        source_rate: 100.0,
        source_burst: 200.0,
        max_sources: 16_384,
        handshake_timeout: Duration::from_secs(10),
    }
}

/// Counters of the WebTransport listener (`GET /v1/wt-stats`).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct WtStats {
    /// Connections whose handshake completed.
    pub connected: u64,
    /// Sessions ended (any reason).
    pub ended: u64,
    /// Certificates generated after the first.
    pub rotations: u64,
    /// QUIC connections open now (handshaking, sessions, closing).
    pub connections: usize,
    /// Handshakes in progress now.
    pub handshakes_in_progress: usize,
    /// Incoming connections admitted to a handshake.
    pub admitted: u64,
    /// Retry packets sent (address validation under handshake load).
    pub retries: u64,
    /// Incoming connections refused by the admission limits (all reasons).
    pub refused: u64,
    /// Handshakes that failed or timed out.
    pub handshake_failures: u64,
    /// UDP datagrams in and out.
    pub datagrams_in: u64,
    /// UDP datagrams out.
    pub datagrams_out: u64,
}

/// Serves `GET /v1/wt-stats`: the listener's counters as JSON.
pub struct StatsRest(pub Rc<RefCell<WtStats>>);

impl crate::rest::RestHandler for StatsRest {
    fn handle(
        &self,
        req: &crate::rest::HttpRequest,
        _now: std::time::SystemTime,
    ) -> Option<crate::rest::HttpResponse> {
        (req.path == "/v1/wt-stats").then(|| {
            let body = serde_json::to_string(&*self.0.borrow()).unwrap_or_default();
            crate::rest::HttpResponse::json(200, body)
        })
    }
}

/// Connections woken by the broker since the last turn, and how to wake the loop.
struct Wakes {
    list: Mutex<Vec<ConnectionHandle>>,
    tx: smol::channel::Sender<()>,
}

struct SessionWake {
    h: ConnectionHandle,
    wakes: Arc<Wakes>,
}

impl Wake for SessionWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if let Ok(mut l) = self.wakes.list.lock() {
            l.push(self.h);
        }
        // Full means a wake-up is pending already.
        let _ = self.wakes.tx.try_send(());
    }
}

/// A bound, not yet running WebTransport listener.
pub struct WtEdge {
    io: UdpIo,
    machine: WtMachine,
    rx: smol::channel::Receiver<()>,
}

struct WtMachine {
    ep: QuicEndpoint,
    sessions: HashMap<ConnectionHandle, Session>,
    broker: Rc<RefCell<Broker>>,
    auth: Rc<dyn Authorizer>,
    cert: WtCert,
    names: Vec<String>,
    hash: SharedHash,
    wakes: Arc<Wakes>,
    stats: Rc<RefCell<WtStats>>,
    next_rotation_check: Instant,
    again: Vec<ConnectionHandle>,
    seen: HashSet<ConnectionHandle>,
}

impl WtEdge {
    /// Binds `listen` (UDP) with `cert`; `names` are the names a rotated certificate is
    /// generated for.
    pub fn bind(
        listen: SocketAddr,
        cert: WtCert,
        names: Vec<String>,
        broker: Rc<RefCell<Broker>>,
        auth: Rc<dyn Authorizer>,
    ) -> Result<WtEdge, String> {
        let server = cert.server_config()?;
        let io = UdpIo::bind(listen)
            .map_err(|e| format!("cannot listen for WebTransport on udp {listen}: {e}"))?;
        let max_sessions = broker.borrow().limits().max_connections;
        let ep = QuicEndpoint::new(
            io.local_addr(),
            Some(server),
            None,
            client_admission(max_sessions),
            None,
        );
        let hash = Rc::new(RefCell::new(cert.hash_json()));
        let (tx, rx) = smol::channel::bounded(1);
        Ok(WtEdge {
            io,
            rx,
            machine: WtMachine {
                ep,
                sessions: HashMap::new(),
                broker,
                auth,
                cert,
                names,
                hash,
                wakes: Arc::new(Wakes {
                    list: Mutex::new(Vec::new()),
                    tx,
                }),
                stats: Rc::new(RefCell::new(WtStats::default())),
                next_rotation_check: clock::now(),
                again: Vec::new(),
                seen: HashSet::new(),
            },
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.io.local_addr()
    }

    /// The certificate hash document served at `/v1/wt-cert-hash` (updated on rotation).
    pub fn hash(&self) -> SharedHash {
        self.machine.hash.clone()
    }

    /// SHA-256 of the certificate in use, hex.
    pub fn cert_sha256_hex(&self) -> String {
        super::cert::hex(&self.machine.cert.sha256)
    }

    /// Counters, shared.
    pub fn stats(&self) -> Rc<RefCell<WtStats>> {
        self.machine.stats.clone()
    }

    /// Serves until the task is dropped.
    pub async fn run(self) {
        let WtEdge {
            io,
            mut machine,
            rx,
        } = self;
        if let Err(e) = run_machine(io, &mut machine, rx).await {
            log::error!("wt: listener stopped: {e}");
        }
    }
}

impl WtMachine {
    /// Writes out (and reads more for) one session.
    fn pump(&mut self, h: ConnectionHandle, now: Instant) {
        let (Some(s), Some(conn)) = (self.sessions.get_mut(&h), self.ep.connection_mut(h)) else {
            return;
        };
        s.pump(conn, &self.broker, now);
        if s.wants_turn() {
            self.again.push(h);
        }
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        let (h, pev) = match ev {
            Event::Connected(h) => {
                self.stats.borrow_mut().connected += 1;
                let Some(conn) = self.ep.connection_mut(h) else {
                    return;
                };
                let waker = Waker::from(Arc::new(SessionWake {
                    h,
                    wakes: self.wakes.clone(),
                }));
                let mut s = Session::new(conn.remote_address(), waker);
                s.begin_turn();
                s.on_connected(conn);
                self.sessions.insert(h, s);
                return;
            }
            Event::Lost { conn, .. } => {
                if let Some(mut s) = self.sessions.remove(&conn) {
                    s.on_lost(&self.broker);
                    self.stats.borrow_mut().ended += 1;
                }
                return;
            }
            Event::Stream(h, se) => (h, ProtoEvent::Stream(se)),
            Event::DatagramReceived(h) => (h, ProtoEvent::DatagramReceived),
        };
        let (Some(s), Some(conn)) = (self.sessions.get_mut(&h), self.ep.connection_mut(h)) else {
            return;
        };
        if self.seen.insert(h) {
            s.begin_turn();
        }
        s.handle_event(conn, &pev, &self.broker, &*self.auth, now);
        self.pump(h, now);
    }

    fn rotate(&mut self, wall: std::time::SystemTime) {
        if !self.cert.due(wall) {
            return;
        }
        match WtCert::generate(&self.names, wall).and_then(|c| c.server_config().map(|s| (c, s))) {
            Ok((c, server)) => {
                self.ep.set_server_config(Some(server));
                log::info!(
                    "wt: new certificate, sha-256 {} (the previous one stays with open sessions)",
                    super::cert::hex(&c.sha256)
                );
                *self.hash.borrow_mut() = c.hash_json();
                self.cert = c;
                self.stats.borrow_mut().rotations += 1;
            }
            Err(e) => log::error!("wt: certificate rotation failed, keeping the old one: {e}"),
        }
    }
}

impl Machine for WtMachine {
    type Command = ();

    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: BytesMut) {
        self.ep.handle_datagram(now, from, data);
    }

    fn handle_command(&mut self, _now: Instant, _command: ()) {}

    fn handle_wake(&mut self, now: Instant) {
        self.seen.clear();
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
        }
        // Sessions the broker woke (and those with input left) go first: a publisher with
        // more to read must not overtake the subscribers it delivered to.
        let mut woken = match self.wakes.list.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(_) => Vec::new(),
        };
        woken.append(&mut self.again);
        for h in woken {
            if self.seen.insert(h) {
                if let Some(s) = self.sessions.get_mut(&h) {
                    s.begin_turn();
                }
                self.pump(h, now);
            }
        }
        while let Some(ev) = self.ep.poll_event() {
            self.on_event(ev, now);
        }
        // Sessions with timers of their own (a refusal's linger, a close waiting for its
        // acknowledgement) are pumped on every wake-up; there are few.
        let lingering: Vec<ConnectionHandle> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.is_lingering())
            .map(|(h, _)| *h)
            .collect();
        for h in lingering {
            self.pump(h, now);
        }
        if !self.again.is_empty() {
            let _ = self.wakes.tx.try_send(());
        }
        {
            let (e, a) = (self.ep.stats(), self.ep.admission_stats());
            let mut st = self.stats.borrow_mut();
            st.connections = self.ep.connection_count();
            st.handshakes_in_progress = self.ep.handshakes_in_progress();
            st.admitted = a.accepted;
            st.retries = a.retries;
            st.refused = a.refused.iter().sum();
            st.handshake_failures = e.handshake_failures + e.handshake_timeouts;
            st.datagrams_in = e.datagrams_in;
            st.datagrams_out = e.datagrams_out;
        }
        if now >= self.next_rotation_check {
            self.rotate(clock::wall_now());
            self.next_rotation_check = now + Duration::from_secs(60);
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        self.ep.poll_transmit(now, buf)
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        let linger = self
            .sessions
            .values()
            .filter_map(Session::linger_deadline)
            .min();
        [
            self.ep.poll_timeout(),
            Some(self.next_rotation_check),
            linger,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
