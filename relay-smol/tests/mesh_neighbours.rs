//! Neighbour limit with real QUIC links on 127.0.0.1 (in-process nodes): every relay is
//! seeded only with a hub; the hub refuses incoming links far over the limit (after
//! telling the newcomer about the others), closes the excess after the grace time, and
//! the relays end with at most `max_neighbours` links each past the grace time, still
//! reaching everyone.

#![allow(clippy::disallowed_methods)]

mod mesh_common;

use std::time::{Duration, Instant};

use fastpubsub_core::route::NeighbourConfig;
use fastpubsub_relay::quic::certs::{CaPem, generate_ca};
use mesh_common::{Node, seed, start_node};
use serde_json::Value;

/// Links with a peer: (all, past the 2 s grace). A relay may hold a link over its
/// limit during the grace (another relay's dial), then closes the worst.
fn up_links(s: &Value) -> (usize, usize) {
    let l: Vec<&Value> = s["links"]
        .as_array()
        .map(|l| l.iter().filter(|x| x["peer"].is_string()).collect())
        .unwrap_or_default();
    let settled = l
        .iter()
        .filter(|x| x["age_s"].as_u64().is_some_and(|a| a >= 3))
        .count();
    (l.len(), settled)
}

fn routes(s: &Value) -> usize {
    s["routes"].as_array().map_or(0, |r| {
        r.iter().filter(|x| x["metric_ms"].is_number()).count()
    })
}

fn count(s: &Value, what: &str) -> u64 {
    s["counters"]["neighbours"][what].as_u64().unwrap_or(0)
}

/// Limit 3 (2 nearest + 1 long range, no exploration at this size), 2 s grace.
fn policy() -> NeighbourConfig {
    let mut p = NeighbourConfig::with_max(3);
    p.long_range = 1;
    p.grace_us = 2_000_000;
    p
}

fn start(name: &str, ca: &CaPem, seeds: Vec<fastpubsub_relay::mesh::config::Seed>) -> Node {
    start_node(name, ca, seeds, |cfg| {
        cfg.max_neighbours = 3;
        cfg.neighbour_policy = Some(policy());
        cfg.discover_delay_us = 500_000;
    })
}

#[test]
fn the_limit_holds_for_incoming_links_and_the_mesh_stays_connected() {
    let ca = generate_ca().expect("ca");
    let hub = start("hub", &ca, vec![]);
    let seeds = vec![seed("hub", hub.addr)];
    // Nine relays dial the hub at once; its hard limit is max(2 × 3, 8) = 8.
    let mut nodes: Vec<Node> = (0..9)
        .map(|i| start(&format!("r{i}"), &ca, seeds.clone()))
        .collect();
    let t0 = Instant::now();
    loop {
        let s = hub.status();
        if count(&s, "refused_full") >= 1 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the hub did not refuse a link far over its limit: {}",
            s["counters"]["neighbours"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes.push(hub);

    // Then: everyone within the limit, and everyone reaches everyone (all 9 others), on
    // two looks a second apart.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut settled = 0;
    let stats = loop {
        let stats: Vec<Value> = nodes.iter().map(|n| n.status()).collect();
        let all: Vec<((usize, usize), usize)> =
            stats.iter().map(|s| (up_links(s), routes(s))).collect();
        if all.iter().all(|&((links, settled), routes)| {
            (1..=8).contains(&links) && settled <= 3 && routes == 9
        }) {
            settled += 1;
            if settled == 2 {
                break stats;
            }
        } else {
            settled = 0;
        }
        assert!(
            Instant::now() < deadline,
            "(links, routes) per relay never settled within the limit: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(1000));
    };
    let closed: u64 = stats.iter().map(|s| count(s, "closed_over_limit")).sum();
    let by_peer: u64 = stats.iter().map(|s| count(s, "closed_by_peer_full")).sum();
    let hub_s = stats.last().expect("hub");
    eprintln!(
        "settled after {:?}: closed over the limit {closed}, closed by a full peer {by_peer}, hub {}",
        t0.elapsed(),
        hub_s["counters"]["neighbours"]
    );
    // The hub had 8 links and a limit of 3: at least 5 were closed (by the hub, or by
    // the other end for its own limit), and the relays whose link a full peer closed
    // saw why.
    assert!(
        count(hub_s, "closed_over_limit") >= 1,
        "{}",
        hub_s["counters"]
    );
    assert!(closed >= 5, "{closed}");
    assert!(
        by_peer >= 2,
        "closed by full peers (a close + the refusal): {by_peer}"
    );
    // Roles are on the status page (as of the last plan, ≤ 250 ms old).
    let with_roles = stats
        .iter()
        .filter(|s| {
            s["neighbours"]["roles"]
                .as_object()
                .is_some_and(|r| !r.is_empty())
        })
        .count();
    assert!(with_roles >= 9, "{with_roles} of 10 relays show roles");
    assert!(stats.iter().all(|s| s["neighbours"]["max"] == 3));
}
