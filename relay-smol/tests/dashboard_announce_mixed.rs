//! A mixed mesh: in-process mesh nodes a – b – c in a line (QUIC with mutual TLS on
//! 127.0.0.1), where a and c feed a dashboard picture (`MeshFeed` on an `AdminHandle`) and b
//! has no announcement hook at all (as a relay built without the dashboard side would). b
//! still floods the others' announcements, so c's picture shows a (and a's shows c), and b's
//! counters show it forwarded what it did not keep for itself.

#![allow(clippy::disallowed_methods)]

mod mesh_common;

use std::rc::Rc;
use std::time::{Duration, Instant};

use fastpubsub_core::mesh::GeoPos;
use fastpubsub_relay::app::admin::{AdminHandle, install, options_from_cli, unix_ms};
use fastpubsub_relay::app::hooks::MeshFeed;
use fastpubsub_relay::auth::AllowAll;
use fastpubsub_relay::config::Config;
use fastpubsub_relay::mesh::announce::AnnounceConfig;
use fastpubsub_relay::mesh::config::Seed;
use fastpubsub_relay::quic::certs::{CaPem, generate_ca};
use fastpubsub_relay::ws::Relay;
use mesh_common::{Node, seed, start_node_with};

/// An admin handle as `run` makes one (its tasks never run here: only the picture is used).
fn admin(name: &str) -> AdminHandle {
    let config = Config::new("127.0.0.1:0".parse().expect("addr"));
    let mut relay = Relay::bind(&config, Rc::new(AllowAll)).expect("bind edge");
    let ex = Rc::new(smol::LocalExecutor::new());
    let mut opts = options_from_cli("off", None, relay.local_addr(), false).expect("options");
    opts.identity.name = name.into();
    install(&mut relay, opts, &ex).expect("install")
}

fn start(name: &str, ca: &CaPem, seeds: Vec<Seed>, feed: Option<AdminHandle>) -> Node {
    let tweak = |cfg: &mut fastpubsub_relay::mesh::config::MeshConfig| {
        cfg.region = "test".into();
        cfg.position = Some(GeoPos {
            lat_udeg: 10_000_000,
            lon_udeg: 20_000_000,
        });
        // A line: relays learned by gossip are not dialled during the test.
        cfg.discover_delay_us = 600_000_000;
        cfg.announce = AnnounceConfig::with_interval_ms(300);
    };
    start_node_with(name, ca, seeds, tweak, move |node| {
        if let Some(h) = feed {
            node.set_announce_hook(Box::new(MeshFeed::new(h)));
        }
    })
}

fn names(h: &AdminHandle) -> Vec<String> {
    let view = h
        .mesh
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .view(unix_ms());
    view.relays.into_iter().map(|r| r.name).collect()
}

#[test]
fn a_relay_without_the_hook_still_floods() {
    let ca = generate_ca().expect("ca");
    let (ha, hc) = (admin("a"), admin("c"));
    let a = start("a", &ca, vec![], Some(ha.clone()));
    let b = start("b", &ca, vec![seed("a", a.addr)], None);
    let c = start("c", &ca, vec![seed("b", b.addr)], Some(hc.clone()));
    let t0 = Instant::now();
    loop {
        let (na, nc) = (names(&ha), names(&hc));
        if na.contains(&"c".to_string()) && nc.contains(&"a".to_string()) {
            eprintln!("a sees {na:?}, c sees {nc:?} after {:?}", t0.elapsed());
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "a sees {na:?}, c sees {nc:?}; b: {}",
            b.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // b kept nothing of its own to announce, but forwarded both.
    let s = b.status();
    let ann = s.pointer("/counters/announce").cloned().expect("counters");
    assert_eq!(
        ann.get("sent_own").and_then(|v| v.as_u64()),
        Some(0),
        "{ann}"
    );
    assert!(
        ann.get("new").and_then(|v| v.as_u64()).unwrap_or(0) >= 2,
        "{ann}"
    );
    // The line is a line: a and c have no link to each other.
    for n in [&a, &c] {
        let links = n
            .status()
            .get("links")
            .and_then(|l| l.as_array())
            .map_or(0, Vec::len);
        assert_eq!(links, 1);
    }
    // b is not a relay in the pictures (it announces nothing), only a link peer.
    assert!(!names(&hc).contains(&"b".to_string()));
    let view = hc
        .mesh
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .view(unix_ms());
    let ar = view.relays.iter().find(|r| r.name == "a").expect("a");
    assert_eq!((ar.lat, ar.lon), (Some(10.0), Some(20.0)));
}
