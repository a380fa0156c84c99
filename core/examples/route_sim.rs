//! Virtual-time simulation of `core::route` on the WonderNetwork RTT matrix
//! (100 relays, `data/latency/matrix.csv`): convergence time and route quality for a
//! full mesh and for 10 neighbours per relay, and the savings table.
//!
//! `cargo run --release -p fastpubsub-core --example route_sim`
#![allow(clippy::needless_range_loop, missing_docs)]

#[path = "../tests/route_harness/mod.rs"]
mod route_harness;

use std::time::Instant;

use fastpubsub_core::route::RouteConfig;
use route_harness::{Sim, load_matrix};

fn main() {
    let (names, rtt) = load_matrix("matrix.csv");
    let n = names.len();
    let wall = Instant::now();
    let mut sim: Sim<100, 99> = Sim::new(n, RouteConfig::default(), 7);
    let mut links = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            links.push((a, b, rtt[a][b], rtt[b][a]));
        }
    }
    sim.add_links(&links);
    let opt = sim.all_pairs();
    let mut t_conv = None;
    while sim.now < 60_000_000 {
        let t = sim.now + 100_000;
        sim.run_until(t);
        let mut bad = 0;
        for a in 0..n {
            for d in 0..n {
                if a != d {
                    let ok = matches!((opt[a][d], sim.path_cost(a, d)), (Some(o), Some(g)) if route_harness::within_tolerance(g, o));
                    if !ok {
                        bad += 1;
                    }
                }
            }
        }
        if bad == 0 && t_conv.is_none() {
            t_conv = Some(sim.now);
        }
        if sim.now.is_multiple_of(5_000_000) {
            println!(
                "t={:>5.1}s bad={bad} delivered={} changes={} wall={:?}",
                sim.now as f64 / 1e6,
                sim.delivered,
                sim.route_changes,
                wall.elapsed()
            );
        }
    }
    println!("converged at {:?}", t_conv);
}
