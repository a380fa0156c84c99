//! Traffic-aware links at a CI-friendly size: the 100 cities of `data/latency`, every
//! relay sending to 8 others, `--max-neighbours` 16, 20 simulated minutes of link choices
//! by every relay's `NeighbourPolicy`, then the routing tables (`RouteTable`) on the links
//! chosen, from a cold start. With demand and light links no traffic pair is 5 ms or more
//! slower than its direct RTT and their mean RTT is within 3 % of the full-mesh optimum;
//! without them about half the pairs are (the test would fail if the policy did nothing).
//! `cargo run --release -p fastpubsub-core --example scale_sim` runs the full version (an
//! hour, skewed traffic too, 500 and 1,000 relays, control bytes, relay death).
#![allow(clippy::needless_range_loop, missing_docs)]

mod route_harness;

use std::path::Path;

use fastpubsub_core::route::NeighbourConfig;
use route_harness::scale::{
    EvalConfig, EvolveConfig, Matrix, ScaleReport, Traffic, evaluate, evolve,
};

fn run(policy: NeighbourConfig, m: &Matrix, traffic: &Traffic) -> ScaleReport {
    let mut cfg = EvolveConfig::new(policy, 1200, m.len());
    cfg.plan_every_s = 10;
    let links = evolve(m, traffic, &cfg);
    let r = evaluate("ci", m, traffic, &links, EvalConfig::quick());
    eprintln!("{}\n{}", ScaleReport::header(), r.row());
    eprintln!("{}", r.slow_line());
    r
}

#[test]
fn demand_and_light_links_make_every_traffic_pair_at_least_as_fast_as_direct() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/latency");
    let m = Matrix::load(&data.join("matrix.csv"))
        .and_then(|m| m.with_locations(&data.join("locations.csv")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.len(), 100);
    let traffic = Traffic::uniform(m.len(), 8, 1);
    let with = run(NeighbourConfig::with_max(16), &m, &traffic);
    assert_eq!(with.slow, 0, "{}", with.slow_line());
    assert!(
        with.stretch <= 1.03,
        "mean RTT {:.3} × the optimum",
        with.stretch
    );
    assert!(with.cold_start.all_s.is_some(), "routes did not settle");
    // Room of their own, bounded: the routed links stay near 16 + 8 (+ other relays'
    // demand links), connections near that + 8 light ones.
    assert!(
        with.routed_degree.1 <= 16 + 8 + 16,
        "{:?}",
        with.routed_degree
    );
    assert!(
        with.conn_degree.0 <= 16.0 + 8.0 + 8.0,
        "{:?}",
        with.conn_degree
    );
    let without = run(NeighbourConfig::with_max(16).without_demand(), &m, &traffic);
    assert!(
        without.slow * 3 > without.traffic_pairs,
        "baseline: {}",
        without.slow_line()
    );
    assert!(
        without.stretch > 1.1,
        "baseline stretch {:.3}",
        without.stretch
    );
}
