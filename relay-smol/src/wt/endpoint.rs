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
use super::status::{ListenerStats, StatusSource};
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
    stats: Rc<RefCell<ListenerStats>>,
    next_rotation_check: Instant,
    again: Vec<ConnectionHandle>,
    seen: HashSet<ConnectionHandle>,
    /// Sessions waiting out a refusal's answer or a close's last frames: they have timers of
    /// their own (few; kept apart so a wake-up never walks every session).
    lingering: HashSet<ConnectionHandle>,
    /// Reused lists of the wake-up.
    woken: Vec<ConnectionHandle>,
    due: Vec<ConnectionHandle>,
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
                stats: Rc::new(RefCell::new(ListenerStats::default())),
                next_rotation_check: clock::now(),
                again: Vec::new(),
                seen: HashSet::new(),
                lingering: HashSet::new(),
                woken: Vec::new(),
                due: Vec::new(),
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

    /// Where `GET /v1/wt-stats` and the metrics read the listener's status.
    pub fn status_source(&self) -> StatusSource {
        StatusSource {
            listener: self.machine.stats.clone(),
            broker: self.machine.broker.clone(),
        }
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
        self.count_outcome(h);
        self.track_linger(h);
    }

    /// Counts a CONNECT answered since the session was last driven.
    fn count_outcome(&mut self, h: ConnectionHandle) {
        let Some(outcome) = self.sessions.get_mut(&h).and_then(Session::take_outcome) else {
            return;
        };
        let mut st = self.stats.borrow_mut();
        match outcome {
            200 => {
                st.sessions_accepted += 1;
                st.sessions += 1;
            }
            401 => st.refused_unauthorized += 1,
            403 => st.refused_forbidden += 1,
            _ => st.refused_unavailable += 1,
        }
    }

    fn track_linger(&mut self, h: ConnectionHandle) {
        if self.sessions.get(&h).is_some_and(Session::is_lingering) {
            self.lingering.insert(h);
        } else {
            self.lingering.remove(&h);
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
                    let mut st = self.stats.borrow_mut();
                    st.ended += 1;
                    if s.was_accepted() {
                        st.sessions = st.sessions.saturating_sub(1);
                    }
                }
                self.lingering.remove(&conn);
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
        let mut woken = std::mem::take(&mut self.woken);
        if let Ok(mut l) = self.wakes.list.lock() {
            std::mem::swap(&mut *l, &mut woken);
        }
        woken.append(&mut self.again);
        for h in woken.drain(..) {
            if self.seen.insert(h) {
                if let Some(s) = self.sessions.get_mut(&h) {
                    s.begin_turn();
                }
                self.pump(h, now);
            }
        }
        self.woken = woken;
        while let Some(ev) = self.ep.poll_event() {
            self.on_event(ev, now);
        }
        // Sessions with timers of their own (a refusal's linger, a close waiting for its
        // acknowledgement) whose time has come.
        let mut due = std::mem::take(&mut self.due);
        due.extend(self.lingering.iter().copied().filter(|h| {
            self.sessions
                .get(h)
                .and_then(Session::linger_deadline)
                .is_none_or(|t| t <= now)
        }));
        for h in due.drain(..) {
            self.pump(h, now);
        }
        self.due = due;
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
            [
                st.refused_full,
                st.refused_handshakes,
                st.refused_source_handshakes,
                st.refused_source_rate,
                st.refused_source_table,
            ] = a.refused;
            st.handshake_timeouts = e.handshake_timeouts;
            st.handshakes_displaced = a.displaced;
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
            .lingering
            .iter()
            .filter_map(|h| self.sessions.get(h).and_then(Session::linger_deadline))
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
