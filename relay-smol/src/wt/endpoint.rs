//! The WebTransport listener: one task owns a quinn-proto server [`Endpoint`], its
//! connections (each with a [`Session`]) and an `async_io` UDP socket, on the edge's
//! executor (the broker is shared without locks).
//!
//! The loop copies the mesh driver's shape (`quic::driver`): read a bounded batch of
//! datagrams, drive only the connections that got packets, timed out or were woken by the
//! broker (a delivery queued for them), send their transmits (a send the socket refuses is
//! kept and retried when writable), re-arm one timer. A generated certificate is replaced
//! every `cert::ROTATE_AFTER` (new handshakes use the new one; sessions keep theirs).
//!
//! Bounds: at most `Limits::max_connections` sessions (the broker refuses more with 503)
//! plus [`MAX_HANDSHAKING`] connections still handshaking; more are refused by QUIC.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use bytes::BytesMut;
use futures_lite::FutureExt;
use quinn_proto::{ConnectionHandle, DatagramEvent, Endpoint, EndpointConfig, Event};

use super::cert::{SharedHash, WtCert};
use super::session::Session;
use crate::auth::Authorizer;
use crate::broker::Broker;
use crate::clock;

/// Connections beyond the session limit allowed to be in their handshake.
pub const MAX_HANDSHAKING: usize = 1024;
/// Datagrams read per wake-up before other work gets a turn.
const RECV_BATCH: usize = 64;

/// Counters of the WebTransport listener.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct WtStats {
    /// QUIC connections accepted for a handshake.
    pub accepted: u64,
    /// Connections refused because too many were open or handshaking.
    pub refused_full: u64,
    /// Sessions ended (any reason).
    pub ended: u64,
    /// Certificates generated after the first.
    pub rotations: u64,
    /// UDP datagrams received / sent.
    pub udp_rx: u64,
    /// UDP datagrams sent.
    pub udp_tx: u64,
}

/// Connections woken by the broker since the last turn, and the task to wake.
#[derive(Default)]
struct Wakes {
    list: Mutex<Vec<ConnectionHandle>>,
    task: Mutex<Option<Waker>>,
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
        if let Ok(t) = self.wakes.task.lock()
            && let Some(w) = t.as_ref()
        {
            w.wake_by_ref();
        }
    }
}

struct Entry {
    conn: quinn_proto::Connection,
    session: Session,
}

/// A bound, not yet running WebTransport listener.
pub struct WtEdge {
    endpoint: Endpoint,
    socket: Async<UdpSocket>,
    local: SocketAddr,
    conns: HashMap<ConnectionHandle, Entry>,
    broker: Rc<RefCell<Broker>>,
    auth: Rc<dyn Authorizer>,
    cert: WtCert,
    names: Vec<String>,
    hash: SharedHash,
    wakes: Arc<Wakes>,
    pending_tx: Option<(SocketAddr, Vec<u8>)>,
    stats: Rc<RefCell<WtStats>>,
    recv_buf: Vec<u8>,
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
        let socket = Async::<UdpSocket>::bind(listen)
            .map_err(|e| format!("cannot listen for WebTransport on udp {listen}: {e}"))?;
        let local = socket
            .get_ref()
            .local_addr()
            .map_err(|e| format!("udp {listen}: {e}"))?;
        let endpoint = Endpoint::new(
            Arc::new(EndpointConfig::default()),
            Some(Arc::new(server)),
            true,
            None,
        );
        let hash = Rc::new(RefCell::new(cert.hash_json()));
        Ok(WtEdge {
            endpoint,
            socket,
            local,
            conns: HashMap::new(),
            broker,
            auth,
            cert,
            names,
            hash,
            wakes: Arc::new(Wakes::default()),
            pending_tx: None,
            stats: Rc::new(RefCell::new(WtStats::default())),
            recv_buf: vec![0; 65_536],
        })
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The certificate hash document served at `/v1/wt-cert-hash` (updated on rotation).
    pub fn hash(&self) -> SharedHash {
        self.hash.clone()
    }

    /// SHA-256 of the certificate in use, hex.
    pub fn cert_sha256_hex(&self) -> String {
        super::cert::hex(&self.cert.sha256)
    }

    /// Counters, shared.
    pub fn stats(&self) -> Rc<RefCell<WtStats>> {
        self.stats.clone()
    }

    fn send(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        match self.socket.get_ref().send_to(data, to) {
            Ok(_) => {
                self.stats.borrow_mut().udp_tx += 1;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.pending_tx = Some((to, data.to_vec()));
                false
            }
            Err(e) => {
                log::debug!("wt: send to {to} failed: {e}");
                true
            }
        }
    }

    fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        data: BytesMut,
        touched: &mut Vec<ConnectionHandle>,
    ) {
        self.stats.borrow_mut().udp_rx += 1;
        let mut buf = Vec::new();
        match self.endpoint.handle(now, from, None, None, data, &mut buf) {
            Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                if let Some(e) = self.conns.get_mut(&h) {
                    e.conn.handle_event(ev);
                    touched.push(h);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                let cap = self.broker.borrow().limits().max_connections + MAX_HANDSHAKING;
                if self.conns.len() >= cap {
                    self.stats.borrow_mut().refused_full += 1;
                    let t = self.endpoint.refuse(incoming, &mut buf);
                    let d = buf.get(..t.size).unwrap_or(&[]).to_vec();
                    self.send(t.destination, &d);
                    return;
                }
                match self.endpoint.accept(incoming, now, &mut buf, None) {
                    Ok((h, conn)) => {
                        self.stats.borrow_mut().accepted += 1;
                        let waker = Waker::from(Arc::new(SessionWake {
                            h,
                            wakes: self.wakes.clone(),
                        }));
                        let session = Session::new(conn.remote_address(), waker);
                        self.conns.insert(h, Entry { conn, session });
                        touched.push(h);
                    }
                    Err(e) => {
                        if let Some(t) = e.response {
                            let d = buf.get(..t.size).unwrap_or(&[]).to_vec();
                            self.send(t.destination, &d);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                let d = buf.get(..t.size).unwrap_or(&[]).to_vec();
                self.send(t.destination, &d);
            }
            None => {}
        }
    }

    /// Drives one connection: its events, the session's writes, endpoint events,
    /// transmits; forgets it once drained.
    fn drive(&mut self, h: ConnectionHandle, now: Instant, buf: &mut Vec<u8>) {
        let Some(e) = self.conns.get_mut(&h) else {
            return;
        };
        if e.conn.poll_timeout().is_some_and(|t| t <= now) {
            e.conn.handle_timeout(now);
        }
        e.session.begin_turn();
        // Bounded: events come from what this connection received in this turn.
        for _ in 0..2 {
            while let Some(ev) = e.conn.poll() {
                if let Event::ConnectionLost { .. } = ev {
                    e.session.on_lost(&self.broker);
                    continue;
                }
                e.session
                    .handle_event(&mut e.conn, &ev, &self.broker, &*self.auth, now);
            }
            e.session.pump(&mut e.conn, &self.broker, now);
            while let Some(ev) = e.conn.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(h, ev) {
                    e.conn.handle_event(back);
                }
            }
        }
        loop {
            if self.pending_tx.is_some() {
                break;
            }
            let Some(e) = self.conns.get_mut(&h) else {
                break;
            };
            buf.clear();
            let Some(t) = e.conn.poll_transmit(now, 1, buf) else {
                break;
            };
            let d = buf.get(..t.size).unwrap_or(&[]).to_vec();
            let to = t.destination;
            self.send(to, &d);
        }
        if self.conns.get(&h).is_some_and(|e| e.session.wants_turn())
            && let Ok(mut l) = self.wakes.list.lock()
        {
            l.push(h); // more input left: again next turn, after the sessions woken now
        }
        if self.conns.get(&h).is_some_and(|e| e.conn.is_drained())
            && let Some(mut e) = self.conns.remove(&h)
        {
            e.session.on_lost(&self.broker);
            self.stats.borrow_mut().ended += 1;
        }
    }

    fn rotate(&mut self, wall: std::time::SystemTime) {
        if !self.cert.due(wall) {
            return;
        }
        match WtCert::generate(&self.names, wall).and_then(|c| c.server_config().map(|s| (c, s))) {
            Ok((c, server)) => {
                self.endpoint.set_server_config(Some(Arc::new(server)));
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

    /// Serves until the task is dropped.
    pub async fn run(mut self) {
        let mut timer = Timer::never();
        let mut buf = Vec::with_capacity(1500);
        let mut touched: Vec<ConnectionHandle> = Vec::new();
        let mut seen: HashSet<ConnectionHandle> = HashSet::new();
        let mut next_rotation_check = clock::now();
        loop {
            let now = clock::now();
            if let Some((to, d)) = self.pending_tx.take() {
                self.send(to, &d);
            }
            // Sessions woken by the broker go first: a publisher with more to read was queued
            // behind the subscribers it delivered to, and must not overtake them here.
            if let Ok(mut l) = self.wakes.list.lock() {
                touched.append(&mut l);
            }
            for _ in 0..RECV_BATCH {
                match self.socket.get_ref().recv_from(&mut self.recv_buf) {
                    Ok((n, from)) => {
                        let data = BytesMut::from(self.recv_buf.get(..n).unwrap_or(&[]));
                        self.handle_datagram(now, from, data, &mut touched);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => log::debug!("wt: recv failed: {e}"),
                }
            }
            if let Ok(mut l) = self.wakes.list.lock() {
                touched.append(&mut l);
            }
            for (h, e) in self.conns.iter_mut() {
                if e.conn.poll_timeout().is_some_and(|t| t <= now) {
                    touched.push(*h);
                }
            }
            seen.clear();
            for h in std::mem::take(&mut touched) {
                if seen.insert(h) {
                    self.drive(h, now, &mut buf);
                }
            }
            if now >= next_rotation_check {
                self.rotate(clock::wall_now());
                next_rotation_check = now + Duration::from_secs(60);
            }
            let deadline = self
                .conns
                .values_mut()
                .filter_map(|e| e.conn.poll_timeout())
                .min()
                .unwrap_or(next_rotation_check)
                .min(next_rotation_check);
            timer.set_at(deadline.max(now));
            let readable = async {
                let _ = self.socket.readable().await;
            };
            let writable = async {
                if self.pending_tx.is_some() {
                    let _ = self.socket.writable().await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let tick = async {
                (&mut timer).await;
            };
            let wakes = self.wakes.clone();
            let woken = std::future::poll_fn(|cx| {
                if let Ok(mut t) = wakes.task.lock() {
                    *t = Some(cx.waker().clone());
                }
                match wakes.list.lock() {
                    Ok(l) if !l.is_empty() => Poll::Ready(()),
                    _ => Poll::Pending,
                }
            });
            readable.or(writable).or(tick).or(woken).await;
        }
    }
}
