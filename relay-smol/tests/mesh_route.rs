//! Three mesh nodes (Tokyo, Novosibirsk, Frankfurt) on 127.0.0.1, each link through a
//! `fastpubsub-linkemu` with the data set's delays: T–F 221.8 ms RTT direct, T–N + N–F
//! = 180 ms. A publish at T reaches a subscriber at F through N (≈ 90 ms), moves to the
//! direct path when T–N gets slow, and when N dies.

#![allow(clippy::disallowed_methods)]

mod mesh_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fastpubsub_core::frame::Mode;
use fastpubsub_relay::app::mesh::MeshCommand;
use fastpubsub_relay::quic::certs::{CaPem, generate_ca};
use mesh_common::{
    Emu, Node, Run, assert_route_moves, collect, index_of, recv_timeout, seed, settled_via,
    start_node, wait_until,
};

/// One-way delay of the relay path T–N–F and of the direct link T–F (ms).
const VIA_N_MS: f64 = 90.0;
const DIRECT_MS: f64 = 110.9;
/// Generous limits for what the machine's load may slow (convergence, status replies).
const CONVERGE: Duration = Duration::from_secs(30);
const LEARN: Duration = Duration::from_secs(20);

fn start(name: &str, ca: &CaPem, seeds: Vec<fastpubsub_relay::mesh::config::Seed>) -> Node {
    start_node(name, ca, seeds, |cfg| cfg.region = "test".into())
}

fn publish(t: &Node, i: u32, mode: Mode) {
    t.send(MeshCommand::Publish {
        tenant: "acme".into(),
        channel: "chat.room1".into(),
        payload: Bytes::from(i.to_be_bytes().to_vec()),
        mode,
        local_match: false,
    });
}

/// Publish `count` messages at T `gap` apart; F's deliveries (every one, or 10 s passed).
fn publish_and_measure(t: &Node, f: &Node, count: u32, gap: Duration) -> Run {
    while f.got.try_recv().is_ok() {}
    let mut sent = Vec::new();
    for i in 0..count {
        sent.push(Instant::now());
        publish(t, i, Mode::Broadcast);
        std::thread::sleep(gap); // pacing, not waiting
    }
    collect(&sent, Duration::from_secs(10), |left| {
        let (p, at) = recv_timeout(&f.got, left)?;
        Some((index_of(&p).unwrap_or(u32::MAX), at))
    })
}

fn interest(n: &Node, pattern: &str, present: bool) {
    n.send(MeshCommand::Interest {
        tenant: "acme".into(),
        pattern: pattern.into(),
        present,
    });
}

fn knows_interest(t: &Node, of: &str, patterns: u64) {
    wait_until(&format!("T knows {of}'s interest"), LEARN, || {
        let st = t.status();
        (st.pointer(&format!("/interest/{of}/patterns"))?.as_u64()? == patterns).then_some(())
    });
}

fn via(t: &Node, hop: &str) -> bool {
    t.route_to("f").is_some_and(|(h, _)| h == hop)
}

#[test]
fn tokyo_novosibirsk_frankfurt() {
    let ca = generate_ca().expect("ca");
    // One-way delays: T–F 110.9 ms; T–N 45 ms, N–F 45 ms (relay path RTT 180 ms).
    let mut f = start("f", &ca, vec![]);
    let e_nf = Emu::delay(f.addr, "45ms");
    let mut n = start("n", &ca, vec![seed("f", e_nf.listen)]);
    let e_tn = Emu::delay(n.addr, "45ms");
    let e_tf = Emu::delay(f.addr, "110.9ms");
    let mut t = start(
        "t",
        &ca,
        vec![seed("n", e_tn.listen), seed("f", e_tf.listen)],
    );

    // The route T→F goes through N, measured better than the direct link.
    let ((hop, metric), took) = wait_until("T→F via N, settled", CONVERGE, || {
        t.route_to("f").filter(|(h, m)| h == "n" && *m < DIRECT_MS)
    });
    eprintln!("T→F via {hop}, metric {metric:.1} ms, after {took:?}");

    // F subscribes; T learns it.
    interest(&f, "chat.#", true);
    knows_interest(&t, "f", 1);

    let r = publish_and_measure(&t, &f, 40, Duration::from_millis(25));
    let m = r.pct(0.5);
    eprintln!(
        "via N: {}/40 delivered, {} duplicates, median latency {m:.1} ms",
        r.delivered, r.duplicates
    );
    assert_eq!(
        (r.delivered, r.duplicates),
        (40, 0),
        "steady routing: nothing lost or duplicated"
    );
    // At least the emulated 90 ms; below 108 ms is only possible through N (direct ≥ 110.9).
    assert!(
        (VIA_N_MS - 0.5..DIRECT_MS - 3.0).contains(&m),
        "median {m:.1} ms should be ≈ 90 ms, not 111"
    );

    // N subscribes too: T sends ONE copy to N listing both N and F; N delivers and
    // forwards to F. And deliver-one-low-latency picks N (the nearest).
    interest(&n, "chat.*", true);
    knows_interest(&t, "n", 1);
    wait_until("T→F via N, settled", CONVERGE, || {
        settled_via(&t.status(), "f", "n", DIRECT_MS).then_some(())
    });
    let sent_before = t.counter("data_sent");
    let n_sent_before = n.counter("data_sent");
    let r = publish_and_measure(&t, &f, 10, Duration::from_millis(20));
    let stayed_via_n = via(&t, "n");
    let mut got_n = 0;
    while got_n < 10 && recv_timeout(&n.got, Duration::from_secs(5)).is_some() {
        got_n += 1;
    }
    assert_eq!((r.delivered, got_n), (10, 10));
    if stayed_via_n {
        assert_eq!(
            t.counter("data_sent") - sent_before,
            10,
            "one copy per publish from T"
        );
        assert_eq!(
            n.counter("data_sent") - n_sent_before,
            10,
            "N re-splits towards F"
        );
    } else {
        eprintln!("route T→F moved during the one-copy check; copies not compared");
    }
    while f.got.try_recv().is_ok() {}
    for i in 0..10u32 {
        publish(&t, i, Mode::LowLatency);
    }
    let mut low_n = 0;
    while low_n < 10 && recv_timeout(&n.got, Duration::from_secs(10)).is_some() {
        low_n += 1;
    }
    assert_eq!(low_n, 10, "low-latency goes to the nearest relay (N)");
    // F would have had them ≈ 111 ms after N; listen that long and more.
    assert!(
        recv_timeout(&f.got, Duration::from_millis(300)).is_none(),
        "and only there"
    );
    interest(&n, "chat.*", false);
    knows_interest(&t, "n", 0);

    // T–N gets slow: traffic moves to the direct path within 2 s of the change.
    assert_route_moves(
        "T–N slowed: T→F direct",
        || {
            e_tn.set("delay 150ms");
        },
        "f",
        "f",
        || t.status(),
    );
    let r = publish_and_measure(&t, &f, 20, Duration::from_millis(25));
    let m = r.pct(0.5);
    eprintln!(
        "direct: {}/20 delivered, median latency {m:.1} ms",
        r.delivered
    );
    assert_eq!(r.delivered, 20);
    // Direct ≥ 110.9 ms; through the slowed N it would be ≥ 195 ms.
    assert!(
        (DIRECT_MS - 0.5..DIRECT_MS + 20.0).contains(&m),
        "median {m:.1} ms should be ≈ 111 ms"
    );

    // T–N recovers: back through N.
    e_tn.set("delay 45ms");
    let (_, took) = wait_until("T→F via N again, settled", CONVERGE, || {
        settled_via(&t.status(), "f", "n", DIRECT_MS).then_some(())
    });
    eprintln!("T–N recovered: back via n after {took:?}");

    // N dies: traffic moves to the direct path within 2 s of the kill.
    assert_route_moves("N killed: T→F direct", || n.kill(), "f", "f", || t.status());
    let r = publish_and_measure(&t, &f, 10, Duration::from_millis(25));
    assert_eq!(r.delivered, 10);

    t.kill();
    f.kill();
}
