//! Mesh data-plane numbers on loopback (no emulated delay): three relays in a line
//! A – B – C (A and C are not linked: only seeds are dialled).
//!
//! - latency A→B (one link) and A→C (through B): p50/p99; the difference is what one
//!   relay hop adds;
//! - forwarded messages per second through B (A→C, 100-byte payloads, at most
//!   `MESH_HOP_WINDOW` (1024) in flight), and B's own CPU time for them: messages per
//!   CPU-second of B's thread is what one core running only B would forward, and moves
//!   little with the machine's load (wall-clock msgs/s does);
//! - control-plane bytes per second per link at rest (probes, route updates, keep-alives).
//!
//! Run: `cargo bench -p fastpubsub-relay --bench mesh_hop`. `MESH_HOP_PHASES` picks phases
//! (`latency,throughput,control`, default all), `MESH_HOP_COUNT` the throughput messages
//! (100000) — e.g. for `valgrind --tool=callgrind --separate-threads=yes` on
//! `MESH_HOP_PHASES=throughput MESH_HOP_COUNT=20000`.

#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/mesh_common/mod.rs"]
mod mesh_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fastpubsub_core::frame::Mode;
use fastpubsub_relay::app::mesh::MeshCommand;
use fastpubsub_relay::quic::certs::generate_ca;
use mesh_common::{Node, line3, recv_timeout, start_node};

/// Linux thread ids of this process.
fn tids() -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time a thread used so far (`/proc/self/task/TID/schedstat`, first field, ns).
fn thread_cpu(tid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Whether a thread is named `async-io` (the reactor, not a node).
fn is_reactor(tid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .is_ok_and(|n| n.trim() == "async-io")
}

fn env_num(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

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
    let phases =
        std::env::var("MESH_HOP_PHASES").unwrap_or_else(|_| "latency,throughput,control".into());
    let ca = generate_ca().unwrap();
    // A – B – C: A and C are not linked (only seeds are dialled). B's thread is the one its
    // start adds (besides the reactor).
    let mut b_tids = Vec::new();
    let (a, b, c) = line3(
        |name, seeds| {
            let before = tids();
            let n = start_node(name, &ca, seeds, |cfg| cfg.dial_learned = false);
            if name == "b" {
                b_tids = tids()
                    .into_iter()
                    .filter(|t| !before.contains(t) && !is_reactor(*t))
                    .collect();
            }
            n
        },
        |n| n.addr,
    );
    assert_eq!(b_tids.len(), 1, "B runs on one thread: {b_tids:?}");
    let b_tid = b_tids[0];
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
    let lat = phases.contains("latency");
    let (c50, c99) = if lat {
        latency(&a, &c, 2000)
    } else {
        (0.0, 0.0)
    };
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
    if lat {
        let (b50, b99) = latency(&a, &b, 2000);
        println!("latency A→B (1 link):        p50 {b50:7.1} us  p99 {b99:7.1} us");
        println!("latency A→C (via B, 2 links): p50 {c50:7.1} us  p99 {c99:7.1} us");
        println!(
            "added by one relay hop:       p50 {:7.1} us  p99 {:7.1} us",
            c50 - b50,
            c99 - b99
        );
    }

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
    if phases.contains("throughput") {
        throughput(&a, &b, &c, b_tid);
    }

    if !phases.contains("control") {
        return;
    }
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

/// A→C through B as fast as C takes them, at most `MESH_HOP_WINDOW` in flight.
fn throughput(a: &Node, b: &Node, c: &Node, b_tid: u32) {
    while c.got.try_recv().is_ok() {}
    let total = env_num("MESH_HOP_COUNT", 100_000);
    let window = env_num("MESH_HOP_WINDOW", 1024);
    let quic = |n: &Node, k: &str| n.status()["counters"]["quic"][k].as_u64().unwrap_or(0);
    let (rx0, tx0) = (quic(b, "udp_rx"), quic(b, "udp_tx"));
    let (cpu0, t0) = (thread_cpu(b_tid), Instant::now());
    let (mut sent, mut got) = (0u32, 0u32);
    while got < total && t0.elapsed() < Duration::from_secs(60) {
        while sent < total && sent - got < window {
            publish(a, sent);
            sent += 1;
        }
        // Take what arrived without a timer; wait (bounded) only when nothing did.
        let mut n = 0;
        while c.got.try_recv().is_ok() {
            n += 1;
        }
        if n == 0 {
            match recv_timeout(&c.got, Duration::from_millis(200)) {
                Some(_) => n = 1,
                None => sent = got, // a drop: let the window refill
            }
        }
        got += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (thread_cpu(b_tid) - cpu0).as_secs_f64();
    let (rx, tx) = (quic(b, "udp_rx") - rx0, quic(b, "udp_tx") - tx0);
    let counter = |n: &Node, k: &str| n.status()["counters"]["mesh"][k].as_u64().unwrap_or(0);
    println!(
        "forwarded through B: {got} msgs in {secs:.2} s = {:.0} msgs/s (100-byte payloads, window {window}, queue drops at A {} B {})",
        f64::from(got) / secs,
        counter(a, "dropped_queue_full"),
        counter(b, "dropped_queue_full"),
    );
    println!(
        "B's thread: {cpu:.3} s CPU = {:.2} us per message = {:.0} msgs per CPU-second; B's UDP datagrams per 100 messages: {:.1} in, {:.1} out",
        cpu * 1e6 / f64::from(got.max(1)),
        f64::from(got) / cpu.max(1e-9),
        rx as f64 * 100.0 / f64::from(got.max(1)),
        tx as f64 * 100.0 / f64::from(got.max(1)),
    );
}
