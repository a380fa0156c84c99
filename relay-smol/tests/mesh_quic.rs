//! The QUIC driver over loopback: mutual TLS under the mesh CA, control frames, one
//! message per unidirectional stream, datagrams; a relay with a certificate from another
//! CA is refused and counted.

#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastpubsub_relay::quic::certs::{generate_ca, issue_relay_cert};
use fastpubsub_relay::quic::driver::{self, Driver, DriverStats, Handler, QuicEvent};
use fastpubsub_relay::quic::tls::{self, MeshIdentity, cert_is_valid_for};
use quinn_proto::Side;
use smol::channel::{Receiver, Sender, unbounded};

/// What the test sees from one driver.
#[derive(Debug)]
enum Seen {
    Connected { side: Side, cert_names_peer: bool },
    Lost { was_connected: bool },
    Control(Vec<u8>),
    Message(Vec<u8>),
    Datagram(Vec<u8>),
    Stats(Box<DriverStats>),
}

enum Cmd {
    Connect(SocketAddr, String),
}

struct TestHandler {
    out: Sender<Seen>,
    peer_name: String,
    big: Vec<u8>,
    next_stats: Instant,
}

impl Handler for TestHandler {
    type Command = Cmd;
    fn on_event(&mut self, quic: &mut Driver, _now: Instant, event: QuicEvent) {
        let seen = match event {
            QuicEvent::Connected {
                conn,
                side,
                peer_cert,
                ..
            } => {
                if side == Side::Client {
                    quic.send_control(Instant::now(), conn, b"hello")
                        .expect("control");
                    quic.send_control(Instant::now(), conn, b"second")
                        .expect("control");
                    quic.send_message(conn, Bytes::from(self.big.clone()))
                        .expect("message");
                    quic.send_datagram(conn, Bytes::from_static(b"dg"))
                        .expect("datagram");
                }
                let cert_names_peer = peer_cert
                    .as_ref()
                    .is_some_and(|c| cert_is_valid_for(c, &self.peer_name));
                Seen::Connected {
                    side,
                    cert_names_peer,
                }
            }
            QuicEvent::Lost { was_connected, .. } => Seen::Lost { was_connected },
            QuicEvent::Control { frame, .. } => Seen::Control(frame.to_vec()),
            QuicEvent::Message { bytes, .. } => Seen::Message(bytes.to_vec()),
            QuicEvent::Datagram { bytes, .. } => Seen::Datagram(bytes.to_vec()),
            _ => return,
        };
        let _ = self.out.try_send(seen);
    }
    fn on_command(&mut self, quic: &mut Driver, now: Instant, command: Cmd) {
        match command {
            Cmd::Connect(addr, name) => {
                quic.connect(now, addr, &name).expect("connect");
            }
        }
    }
    fn on_tick(&mut self, quic: &mut Driver, now: Instant) {
        if now >= self.next_stats {
            self.next_stats = now + Duration::from_millis(50);
            let _ = self.out.try_send(Seen::Stats(Box::new(quic.stats())));
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next_stats)
    }
}

struct Node {
    addr: SocketAddr,
    seen: Receiver<Seen>,
    cmd: Sender<Cmd>,
}

fn start(id: &MeshIdentity, peer_name: &str) -> Node {
    let quic = Driver::bind(
        "127.0.0.1:0".parse().expect("addr"),
        tls::server_config(id).expect("server config"),
        tls::client_config(id).expect("client config"),
    )
    .expect("bind");
    let addr = quic.local_addr();
    let (out, seen) = unbounded();
    let (cmd, cmd_rx) = unbounded();
    let mut h = TestHandler {
        out,
        peer_name: peer_name.into(),
        big: (0..70_000u32).map(|i| (i % 251) as u8).collect(),
        next_stats: Instant::now(),
    };
    std::thread::spawn(move || {
        let _ = smol::block_on(driver::run(quic, &mut h, cmd_rx));
    });
    Node { addr, seen, cmd }
}

fn identity(name: &str, ca: &fastpubsub_relay::quic::certs::CaPem) -> MeshIdentity {
    let r = issue_relay_cert(name, &ca.cert, &ca.key).expect("issue");
    MeshIdentity::from_pem(&r.chain, &r.key, &ca.cert).expect("identity")
}

/// Wait (bounded) until `pred` matches an event; returns it.
fn wait_for(node: &Node, what: &str, mut pred: impl FnMut(&Seen) -> bool) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}");
        let got = smol::block_on(async {
            futures_lite::future::or(async { node.seen.recv().await.ok() }, async {
                async_io::Timer::after(left).await;
                None
            })
            .await
        });
        match got {
            Some(s) if pred(&s) => return s,
            Some(_) => {}
            None => panic!("timed out waiting for {what}"),
        }
    }
}

#[test]
fn mutual_tls_streams_and_datagrams() {
    let ca = generate_ca().expect("ca");
    let a = start(&identity("alpha", &ca), "beta");
    let b = start(&identity("beta", &ca), "alpha");
    smol::block_on(a.cmd.send(Cmd::Connect(b.addr, "beta".into()))).expect("send");

    for (n, side) in [(&a, Side::Client), (&b, Side::Server)] {
        match wait_for(n, "connected", |s| matches!(s, Seen::Connected { .. })) {
            Seen::Connected {
                side: got,
                cert_names_peer,
            } => {
                assert_eq!(got, side);
                assert!(cert_names_peer, "peer certificate must name the peer");
            }
            other => panic!("{other:?}"),
        }
    }
    // Control frames arrive whole and in order.
    let mut frames = Vec::new();
    let mut message = None;
    let mut datagram = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while (frames.len() < 2 || message.is_none() || datagram.is_none()) && Instant::now() < deadline
    {
        match wait_for(&b, "traffic", |s| !matches!(s, Seen::Stats(_))) {
            Seen::Control(f) => frames.push(f),
            Seen::Message(m) => message = Some(m),
            Seen::Datagram(d) => datagram = Some(d),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(frames, vec![b"hello".to_vec(), b"second".to_vec()]);
    let m = message.expect("message");
    assert_eq!(m.len(), 70_000);
    assert!(m.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8));
    assert_eq!(datagram.as_deref(), Some(&b"dg"[..]));
}

#[test]
fn certificate_from_another_ca_is_refused_and_counted() {
    let ca = generate_ca().expect("ca");
    let rogue_ca = generate_ca().expect("rogue ca");
    let server = start(&identity("beta", &ca), "rogue");
    // The rogue relay trusts the real CA (so it would accept the server) but its own
    // certificate comes from another CA: the server must refuse it.
    let rogue_cert = issue_relay_cert("rogue", &rogue_ca.cert, &rogue_ca.key).expect("issue");
    let rogue_id =
        MeshIdentity::from_pem(&rogue_cert.chain, &rogue_cert.key, &ca.cert).expect("id");
    let rogue = start(&rogue_id, "beta");
    smol::block_on(rogue.cmd.send(Cmd::Connect(server.addr, "beta".into()))).expect("send");
    // In TLS 1.3 the client may finish its side before the server checks its
    // certificate, so the rogue sees either a failed handshake or an immediate close.
    wait_for(&rogue, "rogue lost", |s| matches!(s, Seen::Lost { .. }));
    wait_for(
        &server,
        "refusal counted",
        |s| matches!(s, Seen::Stats(st) if st.handshake_failures >= 1),
    );
    // And the server never reported a connection.
    while let Ok(s) = server.seen.try_recv() {
        assert!(
            !matches!(s, Seen::Connected { .. }),
            "server accepted a rogue relay"
        );
    }

    // A client that expects another name than the server's certificate is refused too.
    let good = start(&identity("gamma", &ca), "beta");
    smol::block_on(good.cmd.send(Cmd::Connect(server.addr, "delta".into()))).expect("send");
    match wait_for(&good, "name mismatch", |s| {
        matches!(s, Seen::Lost { .. } | Seen::Connected { .. })
    }) {
        Seen::Lost { was_connected } => assert!(!was_connected),
        other => panic!("wrong server name must not connect: {other:?}"),
    }
}
