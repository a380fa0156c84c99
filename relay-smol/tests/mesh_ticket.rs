//! Ticket status records flood through the mesh: made at A, applied at B and C (A – B – C
//! in a line) exactly once; a record B's tickets layer refuses goes no further.

#![allow(clippy::disallowed_methods)]

mod mesh_common;

use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use fastpubsub_relay::quic::certs::generate_ca;
use mesh_common::{FakeTickets, Node, line3, start_node_with_hook};

/// A node whose ticket hook takes records from `outgoing` and reports applied ones.
struct TicketNode {
    node: Node,
    outgoing: Arc<Mutex<Vec<Vec<u8>>>>,
    applied: mpsc::Receiver<Vec<u8>>,
}

impl TicketNode {
    fn status(&self) -> serde_json::Value {
        self.node.status()
    }
}

fn start(
    name: &str,
    ca: &fastpubsub_relay::quic::certs::CaPem,
    seeds: Vec<fastpubsub_relay::mesh::config::Seed>,
) -> TicketNode {
    let outgoing = Arc::new(Mutex::new(Vec::new()));
    let (applied_tx, applied) = mpsc::channel();
    let hook = FakeTickets {
        outgoing: outgoing.clone(),
        table: Vec::new(),
        snapshots: false,
        applied: applied_tx,
    };
    let node = start_node_with_hook(
        name,
        ca,
        seeds,
        |cfg| cfg.dial_learned = false, // a line: only seeds are dialled
        Box::new(hook),
    );
    TicketNode {
        node,
        outgoing,
        applied,
    }
}

#[test]
fn status_records_flood_once_and_bad_ones_stop() {
    let ca = generate_ca().expect("ca");
    let (a, b, c) = line3(|name, seeds| start(name, &ca, seeds), |n| n.node.addr);
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
