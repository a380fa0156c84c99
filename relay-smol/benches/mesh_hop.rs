//! Mesh data-plane numbers on loopback (no emulated delay): three relays in a line
//! A – B – C (A and C are not linked: only seeds are dialled).
//!
//! - latency A→B (one link) and A→C (through B): p50/p99; the difference is what one
//!   relay hop adds;
//! - forwarded messages per second through B (A→C, 100-byte payloads, at most 256 in
//!   flight);
//! - control-plane bytes per second per link at rest (probes, route updates, keep-alives).
//!
//! Run: `cargo bench -p fastpubsub-relay --bench mesh_hop`.

#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/mesh_common/mod.rs"]
mod mesh_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fastpubsub_core::frame::Mode;
use fastpubsub_relay::app::mesh::MeshCommand;
use fastpubsub_relay::quic::certs::generate_ca;
use mesh_common::{Node, line3, start_node};

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "timeout: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn publish(n: &Node, i: u32) {
    n.send(MeshCommand::Publish {
        tenant: "bench".into(),
        channel: "c".into(),
        payload: Bytes::from([i.to_be_bytes().as_slice(), &[0u8; 96]].concat()),
        mode: Mode::Broadcast,
        local_match: false,
    });
}

fn latency(from: &Node, to: &Node, count: u32) -> (f64, f64) {
    while to.got.try_recv().is_ok() {}
    let mut lat = Vec::new();
    for i in 0..count {
        let t0 = Instant::now();
        publish(from, i);
        let (_, at) = smol::block_on(to.got.recv()).expect("delivered");
        lat.push(at.duration_since(t0).as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    (p(0.5), p(0.99))
}

fn udp_bytes(n: &Node) -> u64 {
    let s = n.status();
    s.pointer("/counters/quic/udp_tx_bytes")
        .and_then(|v| v.as_u64())
        .unwrap()
        + s.pointer("/counters/quic/udp_rx_bytes")
            .and_then(|v| v.as_u64())
            .unwrap()
}

fn main() {
    let ca = generate_ca().unwrap();
    // A – B – C: A and C are not linked (only seeds are dialled).
    let (a, b, c) = line3(
        |name, seeds| start_node(name, &ca, seeds, |cfg| cfg.dial_learned = false),
        |n| n.addr,
    );
    let route = |n: &Node, dest: &str| {
        n.status()["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dest"] == dest && r["next_hop"].is_string())
    };
    let t0 = Instant::now();
    while !route(&a, "c") {
        if t0.elapsed() > Duration::from_secs(20) {
            for n in [&a, &b, &c] {
                eprintln!("{}", n.status());
            }
            panic!("timeout: A routes to C");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for n in [&b, &c] {
        n.send(MeshCommand::Interest {
            tenant: "bench".into(),
            pattern: "c".into(),
            present: true,
        });
    }
    wait_for("A knows interest", || {
        let s = a.status();
        s.pointer("/interest/b/patterns").and_then(|v| v.as_u64()) == Some(1)
            && s.pointer("/interest/c/patterns").and_then(|v| v.as_u64()) == Some(1)
    });
    // B's own subscription must not count in the A→C numbers: drop B's interest, then
    // measure A→B with B's alone, A→C with C's alone.
    b.send(MeshCommand::Interest {
        tenant: "bench".into(),
        pattern: "c".into(),
        present: false,
    });
    wait_for("B's interest gone", || {
        a.status()
            .pointer("/interest/b/patterns")
            .and_then(|v| v.as_u64())
            == Some(0)
    });
    let (c50, c99) = latency(&a, &c, 2000);
    c.send(MeshCommand::Interest {
        tenant: "bench".into(),
        pattern: "c".into(),
        present: false,
    });
    b.send(MeshCommand::Interest {
        tenant: "bench".into(),
        pattern: "c".into(),
        present: true,
    });
    wait_for("interest swapped", || {
        let s = a.status();
        s.pointer("/interest/b/patterns").and_then(|v| v.as_u64()) == Some(1)
            && s.pointer("/interest/c/patterns").and_then(|v| v.as_u64()) == Some(0)
    });
    let (b50, b99) = latency(&a, &b, 2000);
    println!("latency A→B (1 link):        p50 {b50:7.1} us  p99 {b99:7.1} us");
    println!("latency A→C (via B, 2 links): p50 {c50:7.1} us  p99 {c99:7.1} us");
    println!(
        "added by one relay hop:       p50 {:7.1} us  p99 {:7.1} us",
        c50 - b50,
        c99 - b99
    );

    // Throughput through B: A→C with at most 256 in flight.
    b.send(MeshCommand::Interest {
        tenant: "bench".into(),
        pattern: "c".into(),
        present: false,
    });
    c.send(MeshCommand::Interest {
        tenant: "bench".into(),
        pattern: "c".into(),
        present: true,
    });
    wait_for("interest back on C", || {
        a.status()
            .pointer("/interest/c/patterns")
            .and_then(|v| v.as_u64())
            == Some(1)
    });
    while c.got.try_recv().is_ok() {}
    let total = 100_000u32;
    let t0 = Instant::now();
    let (mut sent, mut got) = (0u32, 0u32);
    while got < total && t0.elapsed() < Duration::from_secs(60) {
        while sent < total && sent - got < 256 {
            publish(&a, sent);
            sent += 1;
        }
        match smol::block_on(async {
            futures_lite::future::or(async { c.got.recv().await.ok() }, async {
                async_io::Timer::after(Duration::from_millis(200)).await;
                None
            })
            .await
        }) {
            Some(_) => got += 1,
            None => sent = got, // a drop: let the window refill
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let dropped = b.status()["counters"]["mesh"]["dropped_queue_full"]
        .as_u64()
        .unwrap_or(0);
    println!(
        "forwarded through B: {got} msgs in {secs:.2} s = {:.0} msgs/s (100-byte payloads, queue drops at B: {dropped})",
        f64::from(got) / secs
    );

    // Control plane at rest: B has two links.
    std::thread::sleep(Duration::from_secs(2));
    let (x0, t0) = (udp_bytes(&b), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let bytes = udp_bytes(&b) - x0;
    let per_link = bytes as f64 / t0.elapsed().as_secs_f64() / 2.0;
    println!(
        "control plane at rest: {per_link:.0} bytes/s per link (both directions, UDP payload)"
    );
}
