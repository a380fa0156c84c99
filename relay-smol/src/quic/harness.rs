//! A virtual-time network for the socket-free QUIC layers (tests only): hosts exchange
//! datagrams through an in-memory wire with a one-way delay and a loss filter, and time
//! jumps from one event to the next — a handshake takes microseconds of wall time.
//!
//! Hosts: [`MeshHost`] (a [`MeshTransport`] whose events are collected for the test to look
//! at and act on) and [`Attacker`] (a quinn-proto client that opens connections and never
//! completes them, optionally from spoofed or many source addresses).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto as proto;
use quinn_proto::crypto::rustls::QuicClientConfig;

use super::admission::AdmissionLimits;
use super::certs::{CaPem, generate_ca, issue_relay_cert};
use super::endpoint::Transmit;
use super::tls::{self, MeshIdentity};
use super::transport::{MeshTransport, QuicEvent};

/// One host on the virtual wire.
pub trait Host {
    /// Whether datagrams to `addr` reach this host.
    fn owns(&self, addr: SocketAddr) -> bool;
    /// One datagram arrived.
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: BytesMut);
    /// Time is `now`: fire timers, collect events.
    fn wake(&mut self, now: Instant);
    /// The next datagram to send and its source address.
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(SocketAddr, Transmit)>;
    /// When the host next needs a wake without input.
    fn poll_timeout(&mut self) -> Option<Instant>;
    /// For downcasting in tests.
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

/// A datagram on the wire.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Source.
    pub from: SocketAddr,
    /// Destination.
    pub to: SocketAddr,
    /// Bytes.
    pub bytes: Vec<u8>,
}

type Filter = Box<dyn FnMut(&Packet) -> bool>;

/// The virtual network.
pub struct Net {
    /// Virtual now.
    pub now: Instant,
    /// When the run started.
    pub start: Instant,
    hosts: Vec<Box<dyn Host>>,
    wire: BinaryHeap<Reverse<(Instant, u64)>>,
    in_flight: HashMap<u64, Packet>,
    seq: u64,
    /// One-way delay of every datagram.
    pub delay: Duration,
    filter: Option<Filter>,
    buf: Vec<u8>,
    /// Datagrams put on the wire.
    pub sent: u64,
    /// Datagrams the filter dropped.
    pub dropped: u64,
    /// Transmits that carried more than one datagram (segmentation offload).
    pub segmented: u64,
    /// Datagrams to an address nobody owns.
    pub undeliverable: u64,
}

impl Net {
    /// An empty network with `delay` one way.
    pub fn new(delay: Duration) -> Self {
        let now = crate::clock::now();
        Self {
            now,
            start: now,
            hosts: Vec::new(),
            wire: BinaryHeap::new(),
            in_flight: HashMap::new(),
            seq: 0,
            delay,
            filter: None,
            buf: Vec::new(),
            sent: 0,
            dropped: 0,
            segmented: 0,
            undeliverable: 0,
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Adds a host; returns its index.
    pub fn add(&mut self, h: Box<dyn Host>) -> usize {
        self.hosts.push(h);
        self.hosts.len() - 1
    }

    /// Replaces host `i` (a restart at the same address).
    pub fn replace(&mut self, i: usize, h: Box<dyn Host>) {
        self.hosts[i] = h;
    }

    /// Drops datagrams for which `f` returns false (`None`: deliver everything).
    pub fn set_filter(&mut self, f: Option<Filter>) {
        self.filter = f;
    }

    /// The mesh host at `i`.
    pub fn mesh(&mut self, i: usize) -> &mut MeshHost {
        self.hosts[i]
            .as_any()
            .downcast_mut::<MeshHost>()
            .expect("a mesh host")
    }

    /// The attacker at `i`.
    pub fn attacker(&mut self, i: usize) -> &mut Attacker {
        self.hosts[i]
            .as_any()
            .downcast_mut::<Attacker>()
            .expect("an attacker")
    }

    /// One round: every host wakes and sends; then time jumps to the next delivery or
    /// timer, and what is due is delivered. False when nothing will ever happen again.
    pub fn step(&mut self) -> bool {
        self.step_until(None)
    }

    /// [`Net::step`], but time stops at `limit` (nothing due later is delivered).
    fn step_until(&mut self, limit: Option<Instant>) -> bool {
        let now = self.now;
        for h in &mut self.hosts {
            h.wake(now);
            while let Some((from, t)) = h.poll_transmit(now, &mut self.buf) {
                // A GSO transmit is several datagrams, as the kernel would cut them.
                let seg = t.segment_size.unwrap_or(t.size).max(1);
                self.segmented += u64::from(t.datagrams() > 1);
                for bytes in self.buf[..t.size].chunks(seg) {
                    let p = Packet {
                        from,
                        to: t.destination,
                        bytes: bytes.to_vec(),
                    };
                    self.sent += 1;
                    if let Some(f) = &mut self.filter
                        && !f(&p)
                    {
                        self.dropped += 1;
                        continue;
                    }
                    self.seq += 1;
                    self.wire.push(Reverse((now + self.delay, self.seq)));
                    self.in_flight.insert(self.seq, p);
                }
            }
        }
        let next_wire = self.wire.peek().map(|Reverse((t, _))| *t);
        let next_timer = self.hosts.iter_mut().filter_map(|h| h.poll_timeout()).min();
        let Some(next) = [next_wire, next_timer].into_iter().flatten().min() else {
            return false;
        };
        // Never stand still: a timer due now has just been handled by `wake`.
        self.now = next.max(now + Duration::from_micros(1));
        if let Some(l) = limit
            && self.now > l
        {
            self.now = l.max(now);
            return true;
        }
        while let Some(Reverse((t, seq))) = self.wire.peek().copied() {
            if t > self.now {
                break;
            }
            self.wire.pop();
            let Some(p) = self.in_flight.remove(&seq) else {
                continue;
            };
            match self.hosts.iter_mut().find(|h| h.owns(p.to)) {
                Some(h) => h.handle_datagram(self.now, p.from, p.to, BytesMut::from(&p.bytes[..])),
                None => self.undeliverable += 1,
            }
        }
        true
    }

    /// Steps until `done` holds or `limit` of virtual time passed; whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Net) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            if !self.step_until(Some(end)) {
                break;
            }
        }
        done(self)
    }

    /// Steps for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let _ = self.run_until(d, |_| false);
    }
}

/// Test identities under one CA.
pub struct Pki {
    /// The CA.
    pub ca: CaPem,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// A fresh CA.
    pub fn new() -> Self {
        Self {
            ca: generate_ca().expect("ca"),
        }
    }

    /// An identity for relay `name`.
    pub fn identity(&self, name: &str) -> MeshIdentity {
        let r = issue_relay_cert(name, &self.ca.cert, &self.ca.key).expect("issue");
        MeshIdentity::from_pem(&r.chain, &r.key, &self.ca.cert).expect("identity")
    }
}

/// A mesh transport on the wire, with its events kept for the test.
pub struct MeshHost {
    /// The transport under test.
    pub t: MeshTransport,
    /// Every event so far, in order.
    pub events: Vec<QuicEvent>,
    /// When each event was polled.
    pub times: Vec<Instant>,
}

impl MeshHost {
    /// A transport for relay `name` at `addr`.
    pub fn new(pki: &Pki, name: &str, addr: SocketAddr, limits: AdmissionLimits) -> Box<Self> {
        let id = pki.identity(name);
        let t = MeshTransport::new(
            addr,
            tls::server_config(&id).expect("server config"),
            tls::client_config(&id).expect("client config"),
            limits,
            Some([7; 32]),
        );
        Box::new(Self {
            t,
            events: Vec::new(),
            times: Vec::new(),
        })
    }

    /// A transport that speaks only the first mesh ALPN (no message batches).
    pub fn without_batches(pki: &Pki, name: &str, addr: SocketAddr) -> Box<Self> {
        let id = pki.identity(name);
        let (server, client) = tls::configs_without_batches(&id).expect("configs");
        Box::new(Self {
            t: MeshTransport::new(addr, server, client, AdmissionLimits::default(), None),
            events: Vec::new(),
            times: Vec::new(),
        })
    }

    /// Messages received so far with the time each was handed up.
    pub fn timed_messages(&self) -> Vec<(Instant, Vec<u8>)> {
        self.events
            .iter()
            .zip(&self.times)
            .filter_map(|(e, t)| match e {
                QuicEvent::Message { bytes, .. } => Some((*t, bytes.to_vec())),
                _ => None,
            })
            .collect()
    }

    /// The handle of the first connection that completed its handshake.
    pub fn connected(&self) -> Option<proto::ConnectionHandle> {
        self.events.iter().find_map(|e| match e {
            QuicEvent::Connected { conn, .. } => Some(*conn),
            _ => None,
        })
    }

    /// Connections that completed their handshake so far.
    pub fn connected_count(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, QuicEvent::Connected { .. }))
            .count()
    }

    /// Control frames received so far.
    pub fn control(&self) -> Vec<Vec<u8>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                QuicEvent::Control { frame, .. } => Some(frame.to_vec()),
                _ => None,
            })
            .collect()
    }

    /// Messages received so far.
    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                QuicEvent::Message { bytes, .. } => Some(bytes.to_vec()),
                _ => None,
            })
            .collect()
    }

    /// Datagrams received so far.
    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.events
            .iter()
            .filter_map(|e| match e {
                QuicEvent::Datagram { bytes, .. } => Some(bytes.to_vec()),
                _ => None,
            })
            .collect()
    }

    /// `(was_connected, reason)` of every lost connection.
    pub fn lost(&self) -> Vec<(bool, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                QuicEvent::Lost {
                    was_connected,
                    reason,
                    ..
                } => Some((*was_connected, reason.clone())),
                _ => None,
            })
            .collect()
    }
}

impl Host for MeshHost {
    fn owns(&self, addr: SocketAddr) -> bool {
        addr == self.t.local_addr()
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, _to: SocketAddr, data: BytesMut) {
        self.t.handle_datagram(now, from, data);
    }
    fn wake(&mut self, now: Instant) {
        if self.t.poll_timeout().is_some_and(|t| t <= now) {
            self.t.handle_timeout(now);
        }
        while let Some(e) = self.t.poll_event(now) {
            self.events.push(e);
            self.times.push(now);
        }
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(SocketAddr, Transmit)> {
        let t = self.t.poll_transmit(now, buf)?;
        Some((self.t.local_addr(), t))
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        self.t.poll_timeout()
    }
    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// How an [`Attacker`] picks source addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// Always its own address.
    One,
    /// A new address per connection, answers to which never come back (spoofed).
    Spoofed,
    /// Round robin over this many addresses it really owns (several hosts).
    Many(u8),
}

/// Opens connections with the mesh ALPN at a fixed rate and never completes one: it sends
/// each connection's first Initial and, when `follow_retry`, the Initial after a Retry;
/// nothing else.
pub struct Attacker {
    ep: proto::Endpoint,
    client: proto::ClientConfig,
    base: SocketAddr,
    target: SocketAddr,
    every: Duration,
    next: Option<Instant>,
    /// Connections still to open.
    pub remaining: usize,
    follow_retry: bool,
    sources: Sources,
    conns: HashMap<proto::ConnectionHandle, Half>,
    ready: Vec<proto::ConnectionHandle>,
    srcs: std::collections::HashSet<SocketAddr>,
    opened: u64,
    /// Retry packets received.
    pub retries_seen: u64,
}

struct Half {
    conn: proto::Connection,
    src: SocketAddr,
    sent: u8,
    retried: bool,
}

impl Attacker {
    /// `count` connections to `target`, one per `every`, starting now.
    pub fn new(
        pki: &Pki,
        base: SocketAddr,
        target: SocketAddr,
        every: Duration,
        count: usize,
        follow_retry: bool,
        sources: Sources,
    ) -> Box<Self> {
        // Trusts the mesh CA but has no certificate of its own: the handshake could never
        // complete anyway; it does not even try.
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls_pki_types::CertificateDer::from_pem_slice(pki.ca.cert.as_bytes());
        roots.add(ca.expect("ca pem")).expect("root");
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![tls::MESH_ALPN.to_vec()];
        let client =
            proto::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).expect("quic")));
        let mut cfg = proto::EndpointConfig::default();
        cfg.rng_seed(Some([9; 32]));
        Box::new(Self {
            ep: proto::Endpoint::new(Arc::new(cfg), None, false, None),
            client,
            base,
            target,
            every,
            next: None,
            remaining: count,
            follow_retry,
            sources,
            conns: HashMap::new(),
            ready: Vec::new(),
            srcs: std::collections::HashSet::new(),
            opened: 0,
            retries_seen: 0,
        })
    }

    fn source(&self, n: u64) -> SocketAddr {
        let ip = |k: u64| std::net::Ipv4Addr::new(10, 200, (k >> 8) as u8, (k & 0xff) as u8).into();
        match self.sources {
            Sources::One => self.base,
            Sources::Spoofed => SocketAddr::new(ip(n), 40_000),
            Sources::Many(k) => SocketAddr::new(ip(n % u64::from(k.max(1))), self.base.port()),
        }
    }
}

use rustls_pki_types::pem::PemObject;

impl Host for Attacker {
    fn owns(&self, addr: SocketAddr) -> bool {
        match self.sources {
            Sources::One => addr == self.base,
            Sources::Spoofed => false,
            Sources::Many(_) => self.srcs.contains(&addr),
        }
    }
    fn handle_datagram(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: BytesMut) {
        if !self.follow_retry {
            return;
        }
        let is_retry = data.first().is_some_and(|b| b & 0xf0 == 0xf0);
        if !is_retry {
            return; // The server's flight: ignored, the handshake never goes on.
        }
        self.retries_seen += 1;
        let _ = to;
        let mut buf = Vec::new();
        if let Some(proto::DatagramEvent::ConnectionEvent(ch, ev)) =
            self.ep.handle(now, from, None, None, data, &mut buf)
            && let Some(half) = self.conns.get_mut(&ch)
            && !half.retried
        {
            half.retried = true;
            half.conn.handle_event(ev);
            self.ready.push(ch);
        }
    }
    fn wake(&mut self, now: Instant) {
        let next = *self.next.get_or_insert(now);
        if self.remaining == 0 || now < next {
            return;
        }
        self.next = Some(next + self.every);
        self.remaining -= 1;
        self.opened += 1;
        let src = self.source(self.opened);
        if let Ok((h, conn)) = self
            .ep
            .connect(now, self.client.clone(), self.target, "victim")
        {
            self.srcs.insert(src);
            self.ready.push(h);
            self.conns.insert(
                h,
                Half {
                    conn,
                    src,
                    sent: 0,
                    retried: false,
                },
            );
        }
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<(SocketAddr, Transmit)> {
        while let Some(h) = self.ready.pop() {
            let Some(half) = self.conns.get_mut(&h) else {
                continue;
            };
            let allowed = if half.retried { 2 } else { 1 };
            if half.sent >= allowed {
                continue;
            }
            buf.clear();
            if let Some(t) = half.conn.poll_transmit(now, 1, buf) {
                half.sent += 1;
                return Some((
                    half.src,
                    Transmit {
                        destination: t.destination,
                        size: t.size,
                        segment_size: None,
                    },
                ));
            }
        }
        None
    }
    fn poll_timeout(&mut self) -> Option<Instant> {
        if self.remaining > 0 { self.next } else { None }
    }
    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
