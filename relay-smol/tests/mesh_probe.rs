//! Probing on a fresh link: two nodes over a lossless `fastpubsub-linkemu` link (45 ms each
//! way), so after a few dozen probes both sides must show 0 % loss. The accepting side's
//! first probe used to arrive (in the same read as the peer's Hello, and handed up before
//! it) before the dialling side knew the link, went unanswered, and every new link started
//! at 1/n loss.

#![allow(clippy::disallowed_methods)]

mod mesh_common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fastpubsub_core::mesh::{self, Message, Probe};
use fastpubsub_relay::quic::certs::generate_ca;
use fastpubsub_relay::quic::driver::{self, Driver, Handler, QuicEvent};
use fastpubsub_relay::quic::tls;
use mesh_common::{Emu, Node, identity, seed, start_node, wait_until};
use serde_json::Value;
use smol::channel::{Sender, unbounded};

/// Probes each side sends before looking (at 20 ms: 1.6 s, past the 1 s + RTT after which
/// an unanswered probe counts as lost).
const PROBES: u64 = 80;

fn links(n: &Node) -> Vec<Value> {
    n.status()
        .get("links")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn first_probe_on_a_new_link_is_answered() {
    let ca = generate_ca().expect("ca");
    let fast = |cfg: &mut fastpubsub_relay::mesh::config::MeshConfig| {
        cfg.region = "test".into();
        cfg.probe.interval_us = 20_000;
    };
    let mut b = start_node("b", &ca, vec![], fast);
    let emu = Emu::delay(b.addr, "45ms");
    let mut a = start_node("a", &ca, vec![seed("b", emu.listen)], fast);
    for n in [&a, &b] {
        let (ls, _) = wait_until(
            &format!("{}: {PROBES} probes on its link", n.name),
            Duration::from_secs(30),
            || {
                let ls = links(n);
                let ready = ls.len() == 1
                    && ls.iter().all(|l| {
                        l["peer"].is_string() && l["probes_sent"].as_u64().unwrap_or(0) >= PROBES
                    });
                ready.then_some(ls)
            },
        );
        for l in &ls {
            // None counted as lost (those still in flight are not counted either way).
            assert_eq!(l["loss_pct"].as_f64(), Some(0.0), "{}: {l}", n.name);
        }
    }
    a.kill();
    b.kill();
    drop(emu);
}

/// A bare QUIC peer (not a mesh node): on connecting it sends a probe datagram before any
/// Hello, then reports the datagrams it gets back.
struct EarlyProber {
    out: Sender<Vec<u8>>,
}

impl Handler for EarlyProber {
    type Command = SocketAddr;
    fn on_event(&mut self, quic: &mut Driver, _now: Instant, event: QuicEvent) {
        match event {
            QuicEvent::Connected { conn, .. } => {
                let probe = Message::Probe(Probe {
                    seq: 7,
                    sent_us: 1234,
                });
                let b = mesh::encode(&probe, &mut [0u8; Probe::MAX_LEN])
                    .map(|b| Bytes::copy_from_slice(b))
                    .expect("encode probe");
                quic.send_datagram(conn, b).expect("send probe");
            }
            QuicEvent::Datagram { bytes, .. } => {
                let _ = self.out.try_send(bytes.to_vec());
            }
            _ => {}
        }
    }
    fn on_command(&mut self, quic: &mut Driver, now: Instant, to: SocketAddr) {
        quic.connect(now, to, "b").expect("connect");
    }
    fn on_tick(&mut self, _quic: &mut Driver, _now: Instant) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// The race behind the lost first probe, made certain: a probe that arrives on an
/// authenticated link before the sender's Hello is answered all the same.
#[test]
fn probe_before_hello_is_answered() {
    let ca = generate_ca().expect("ca");
    let mut b = start_node("b", &ca, vec![], |cfg| cfg.region = "test".into());
    let id = identity("a", &ca);
    let quic = Driver::bind(
        "127.0.0.1:0".parse().expect("addr"),
        tls::server_config(&id).expect("server config"),
        tls::client_config(&id).expect("client config"),
    )
    .expect("bind");
    let (out, got) = unbounded();
    let (cmd, cmd_rx) = unbounded();
    std::thread::spawn(move || {
        let mut h = EarlyProber { out };
        let _ = smol::block_on(driver::run(quic, &mut h, cmd_rx));
    });
    smol::block_on(cmd.send(b.addr)).expect("connect command");
    let reply = smol::block_on(futures_lite::future::or(
        async { got.recv().await.ok() },
        async {
            async_io::Timer::after(Duration::from_secs(10)).await;
            None
        },
    ))
    .expect("an answer to the probe within 10 s");
    match mesh::decode(&reply) {
        Ok(Message::ProbeAck(a)) => assert_eq!((a.seq, a.echo_us), (7, 1234)),
        other => panic!("expected a ProbeAck, got {other:?}"),
    }
    drop(cmd);
    b.kill();
}
