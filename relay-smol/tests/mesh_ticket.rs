//! Ticket status records flood through the mesh: made at A, applied at B and C (A – B – C
//! in a line) exactly once; a record B's tickets layer refuses goes no further.

#![allow(clippy::disallowed_methods)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use fastpubsub_core::mesh::DeliveryMode;
use fastpubsub_relay::mesh::config::{MeshConfig, Seed};
use fastpubsub_relay::mesh::node::{LocalSink, MeshCommand, TicketApplied, TicketHook};
use fastpubsub_relay::quic::certs::{CaPem, generate_ca, issue_relay_cert};
use fastpubsub_relay::quic::driver;
use fastpubsub_relay::quic::tls::MeshIdentity;
use smol::channel::{Sender, unbounded};

struct NoSink;

impl LocalSink for NoSink {
    fn deliver(&mut self, _: &str, _: &str, _: &[u8], _: DeliveryMode) -> usize {
        0
    }
}

/// Records starting with `ok` are valid; the rest are "bad signatures".
struct Hook {
    outgoing: Arc<Mutex<Vec<Vec<u8>>>>,
    applied: mpsc::Sender<Vec<u8>>,
    seen: Vec<Vec<u8>>,
}

impl TicketHook for Hook {
    fn drain_outgoing(&mut self, max: usize) -> Vec<Vec<u8>> {
        let mut q = self.outgoing.lock().expect("lock");
        let n = max.min(q.len());
        q.drain(..n).collect()
    }
    fn apply_remote(&mut self, record: &[u8]) -> TicketApplied {
        if !record.starts_with(b"ok") {
            return TicketApplied::Bad;
        }
        if self.seen.iter().any(|r| r == record) {
            return TicketApplied::Known;
        }
        self.seen.push(record.to_vec());
        let _ = self.applied.send(record.to_vec());
        TicketApplied::New
    }
}

struct Node {
    addr: SocketAddr,
    cmd: Sender<MeshCommand>,
    outgoing: Arc<Mutex<Vec<Vec<u8>>>>,
    applied: mpsc::Receiver<Vec<u8>>,
}

impl Node {
    fn status(&self) -> serde_json::Value {
        let (tx, rx) = unbounded();
        smol::block_on(self.cmd.send(MeshCommand::Status(tx))).expect("alive");
        serde_json::from_str(&smol::block_on(rx.recv()).expect("status")).expect("json")
    }
}

fn start(name: &str, ca: &CaPem, seeds: Vec<Seed>) -> Node {
    let mut cfg = MeshConfig::new(name, "127.0.0.1:0".parse().expect("addr"));
    cfg.seeds = seeds;
    cfg.max_neighbours = 1;
    let r = issue_relay_cert(name, &ca.cert, &ca.key).expect("issue");
    let id = MeshIdentity::from_pem(&r.chain, &r.key, &ca.cert).expect("identity");
    let outgoing = Arc::new(Mutex::new(Vec::new()));
    let (applied_tx, applied) = mpsc::channel();
    let (cmd, rx) = unbounded();
    let (atx, arx) = mpsc::channel();
    let out2 = outgoing.clone();
    std::thread::spawn(move || {
        let (d, mut n) = fastpubsub_relay::mesh::start(cfg, &id, Box::new(NoSink)).expect("start");
        n.set_ticket_hook(Box::new(Hook {
            outgoing: out2,
            applied: applied_tx,
            seen: Vec::new(),
        }));
        let _ = atx.send(d.local_addr());
        let _ = smol::block_on(driver::run(d, &mut n, rx));
    });
    Node {
        addr: arx.recv_timeout(Duration::from_secs(5)).expect("started"),
        cmd,
        outgoing,
        applied,
    }
}

#[test]
fn status_records_flood_once_and_bad_ones_stop() {
    let ca = generate_ca().expect("ca");
    let c = start("c", &ca, vec![]);
    let b = start(
        "b",
        &ca,
        vec![Seed {
            name: "c".into(),
            addr: c.addr,
        }],
    );
    let a = start(
        "a",
        &ca,
        vec![Seed {
            name: "b".into(),
            addr: b.addr,
        }],
    );
    let t0 = Instant::now();
    while b.status()["links"]
        .as_array()
        .map_or(0, |l| l.iter().filter(|x| x["peer"].is_string()).count())
        < 2
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "links did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    a.outgoing
        .lock()
        .expect("lock")
        .push(b"ok revoke 1".to_vec());
    let t0 = Instant::now();
    let got = c
        .applied
        .recv_timeout(Duration::from_secs(3))
        .expect("C applied the record");
    eprintln!("record A→C (2 hops) applied after {:?}", t0.elapsed());
    assert_eq!(got, b"ok revoke 1");
    assert_eq!(
        b.applied
            .recv_timeout(Duration::from_secs(1))
            .expect("B applied"),
        got
    );
    assert!(
        a.applied.recv_timeout(Duration::from_millis(300)).is_err(),
        "A made it, does not re-apply"
    );

    a.outgoing.lock().expect("lock").push(b"forged".to_vec());
    let t0 = Instant::now();
    while b.status()["counters"]["mesh"]["ticket_records_bad"].as_u64() != Some(1) {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "B did not refuse the forged record"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        c.applied.try_recv().is_err(),
        "a refused record must not reach C"
    );
    assert!(b.applied.try_recv().is_err(), "and is applied nowhere");
    assert_eq!(
        c.status()["counters"]["mesh"]["ticket_records_bad"].as_u64(),
        Some(0)
    );
    assert_eq!(
        a.status()["counters"]["mesh"]["ticket_records_sent"].as_u64(),
        Some(2)
    );
}
