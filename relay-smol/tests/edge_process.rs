//! The relay as a process: SIGTERM drains with RECONNECT and exits 0; 10,000 idle
//! subscribed connections are held.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use rustix::process::Signal;

#[test]
fn sigterm_sends_reconnect_and_exits_zero() {
    let mut relay = RelayProcess::start(&["--shutdown-grace-ms", "5000"]);
    let url = format!("ws://{}/ws", relay.addr);
    let mut a = connect_with(&url, Some("llps.v1"), None).unwrap();
    let mut b = connect_with(&url, Some("llps.v1"), None).unwrap();
    barrier(&mut a);
    barrier(&mut b);
    relay.signal(Signal::TERM);
    assert_eq!(next_text(&mut a), "RECONNECT");
    assert_eq!(next_text(&mut b), "RECONNECT");
    // Clients move away: the relay exits as soon as the last one is gone.
    drop(a);
    drop(b);
    assert_eq!(relay.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn sigint_closes_clients_that_stay_after_the_grace() {
    let mut relay = RelayProcess::start(&["--shutdown-grace-ms", "200"]);
    let mut raw = RawWs::connect(relay.addr);
    raw.send_frame(true, 0x1, b"PING");
    assert_eq!(raw.read_text(), "PONG");
    relay.signal(Signal::INT);
    assert_eq!(raw.read_text(), "RECONNECT");
    let (op, payload) = raw.read_frame().expect("close frame after the grace");
    assert_eq!(op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    assert_eq!(relay.wait_exit(Duration::from_secs(10)), Some(0));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_idle_subscribed_connections() {
    const N: usize = 10_000;
    let limit = raise_nofile();
    assert!(
        limit >= (N + 100) as u64,
        "open-files limit {limit} too low for this test"
    );
    let relay = RelayProcess::start(&[]);
    let started = Instant::now();
    let before = rss_kib(relay.child.id());
    let mut conns = Vec::with_capacity(N);
    // Pipelined in batches: send handshakes + SUB, then read the answers.
    for batch in 0..(N / 100) {
        let mut pending = Vec::with_capacity(100);
        for _ in 0..100 {
            pending.push(RawWs::start(relay.addr).unwrap());
        }
        for mut c in pending {
            let head = c.finish();
            assert!(head.starts_with("HTTP/1.1 101"), "batch {batch}: {head}");
            c.send_frame(true, 0x1, b"SUB:t1:idle.#");
            conns.push(c);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "too slow to connect"
        );
    }
    for c in conns.iter_mut() {
        assert_eq!(c.read_text(), "OK:SUB:t1:idle.#");
    }
    let (status, body) = http_get_admin(relay.addr, "/stats");
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["connections"], N);
    assert_eq!(stats["subscriptions"], N);
    let after = rss_kib(relay.child.id());
    eprintln!(
        "{N} idle subscribed connections: relay RSS {before} KiB -> {after} KiB ({:.0} bytes/connection)",
        (after.saturating_sub(before) * 1024) as f64 / N as f64
    );
    // Every connection is alive: one publish reaches all of them.
    let mut publ = RawWs::connect(relay.addr);
    publ.send_frame(true, 0x2, &publish_v1_frame("t1", "idle.ping", b"hi"));
    for c in conns.iter_mut() {
        let (op, payload) = c.read_frame().expect("delivery");
        assert_eq!(op, 0x2);
        assert_eq!(decode_deliver(&payload).payload, b"hi");
    }
}
