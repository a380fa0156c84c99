//! Three mesh nodes (Tokyo, Novosibirsk, Frankfurt) on 127.0.0.1, each link through a
//! `fastpubsub-linkemu` with the data set's delays: T–F 221.8 ms RTT direct, T–N + N–F
//! = 180 ms. A publish at T reaches a subscriber at F through N (≈ 90 ms), moves to the
//! direct path when T–N gets slow, and when N dies.

#![allow(clippy::disallowed_methods)]

mod mesh_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use fastpubsub_core::mesh::DeliveryMode;
use fastpubsub_relay::mesh::node::MeshCommand;
use fastpubsub_relay::quic::certs::{CaPem, generate_ca};
use mesh_common::{Emu, Node, seed, start_node, wait_until};

fn start(name: &str, ca: &CaPem, seeds: Vec<fastpubsub_relay::mesh::config::Seed>) -> Node {
    start_node(name, ca, seeds, |cfg| cfg.region = "test".into())
}

/// Publish `count` messages at T `gap` apart; return F's latencies (ms) and whether every
/// message arrived exactly once.
fn publish_and_measure(t: &Node, f: &Node, count: u32, gap: Duration) -> (Vec<f64>, usize, usize) {
    while f.got.try_recv().is_ok() {}
    let mut sent = Vec::new();
    for i in 0..count {
        sent.push(Instant::now());
        t.send(MeshCommand::Publish {
            tenant: "acme".into(),
            channel: "chat.room1".into(),
            payload: Bytes::from(i.to_be_bytes().to_vec()),
            mode: DeliveryMode::Broadcast,
            local_match: false,
        });
        std::thread::sleep(gap);
    }
    let mut lat = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut dups = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match f.got.try_recv() {
            Ok((p, at)) => {
                let i = u32::from_be_bytes(
                    p.get(..4)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or([0xff; 4]),
                );
                if !seen.insert(i) {
                    dups += 1;
                }
                if let Some(s) = sent.get(i as usize) {
                    lat.push(at.duration_since(*s).as_secs_f64() * 1000.0);
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    (lat, seen.len(), dups)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
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

    // The route T→F goes through N.
    let ((hop, metric), took) = wait_until("T→F via N", Duration::from_secs(20), || {
        t.route_to("f").filter(|(h, _)| h == "n")
    });
    eprintln!("T→F via {hop}, metric {metric:.1} ms, after {took:?}");

    // F subscribes; T learns it.
    f.send(MeshCommand::Interest {
        tenant: "acme".into(),
        pattern: "chat.#".into(),
        present: true,
    });
    wait_until("T knows F's interest", Duration::from_secs(5), || {
        let st = t.status();
        (st.pointer("/interest/f/patterns")?.as_u64()? == 1).then_some(())
    });

    let (mut lat, got, dups) = publish_and_measure(&t, &f, 40, Duration::from_millis(25));
    let m = median(&mut lat);
    eprintln!("via N: {got}/40 delivered, {dups} duplicates, median latency {m:.1} ms");
    assert_eq!(
        (got, dups),
        (40, 0),
        "steady routing: nothing lost or duplicated"
    );
    assert!(
        (88.0..105.0).contains(&m),
        "median {m:.1} ms should be ≈ 90 ms, not 111"
    );

    // N subscribes too: T sends ONE copy to N listing both N and F; N delivers and
    // forwards to F. And deliver-one-low-latency picks N (the nearest).
    n.send(MeshCommand::Interest {
        tenant: "acme".into(),
        pattern: "chat.*".into(),
        present: true,
    });
    wait_until("T knows N's interest", Duration::from_secs(5), || {
        let st = t.status();
        (st.pointer("/interest/n/patterns")?.as_u64()? == 1).then_some(())
    });
    let via_n = |t: &Node| t.route_to("f").is_some_and(|(h, _)| h == "n");
    wait_until("T→F via N", Duration::from_secs(20), || {
        via_n(&t).then_some(())
    });
    let sent_before = t.counter("data_sent");
    let n_sent_before = n.counter("data_sent");
    let (_, got_f, _) = publish_and_measure(&t, &f, 10, Duration::from_millis(20));
    let stayed_via_n = via_n(&t);
    let mut got_n = 0;
    while n.got.try_recv().is_ok() {
        got_n += 1;
    }
    assert_eq!((got_f, got_n), (10, 10));
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
        t.send(MeshCommand::Publish {
            tenant: "acme".into(),
            channel: "chat.room1".into(),
            payload: Bytes::from(i.to_be_bytes().to_vec()),
            mode: DeliveryMode::LowLatency,
            local_match: false,
        });
    }
    let mut low_n = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && low_n < 10 {
        if n.got.try_recv().is_ok() {
            low_n += 1;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(low_n, 10, "low-latency goes to the nearest relay (N)");
    assert!(f.got.try_recv().is_err(), "and only there");
    n.send(MeshCommand::Interest {
        tenant: "acme".into(),
        pattern: "chat.*".into(),
        present: false,
    });

    // T–N gets slow: traffic moves to the direct path within 2 s.
    e_tn.set("delay 150ms");
    let ((hop, metric), took) = wait_until("T→F direct", Duration::from_secs(5), || {
        t.route_to("f").filter(|(h, _)| h == "f")
    });
    eprintln!("T–N slowed: T→F via {hop} ({metric:.1} ms) after {took:?}");
    assert!(took < Duration::from_secs(2), "route moved after {took:?}");
    let (mut lat, got, _) = publish_and_measure(&t, &f, 20, Duration::from_millis(25));
    let m = median(&mut lat);
    eprintln!("direct: {got}/20 delivered, median latency {m:.1} ms");
    assert_eq!(got, 20);
    assert!(
        (110.0..125.0).contains(&m),
        "median {m:.1} ms should be ≈ 111 ms"
    );

    // T–N recovers: back through N.
    e_tn.set("delay 45ms");
    let (_, took) = wait_until("T→F via N again", Duration::from_secs(20), || {
        t.route_to("f").filter(|(h, _)| h == "n")
    });
    eprintln!("T–N recovered: back via n after {took:?}");

    // N dies: traffic moves to the direct path within 2 s.
    n.kill();
    let killed = Instant::now();
    let (_, _) = wait_until("T→F direct after N died", Duration::from_secs(5), || {
        t.route_to("f").filter(|(h, _)| h == "f")
    });
    let took = killed.elapsed();
    eprintln!("N killed: T→F direct after {took:?}");
    assert!(took < Duration::from_secs(2), "route moved after {took:?}");
    let (_, got, _) = publish_and_measure(&t, &f, 10, Duration::from_millis(25));
    assert_eq!(got, 10);

    t.kill();
    f.kill();
}
