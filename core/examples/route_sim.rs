//! Virtual-time simulation of `core::route` on the WonderNetwork RTT matrix
//! (100 relays, `data/latency/matrix.csv`) with the default timers: convergence time
//! from cold start and after the busiest link's RTT doubles, route quality, and the
//! savings table, for a full mesh and for 10 neighbours per relay; then neighbour
//! selection (`route::NeighbourPolicy` against the naive cap) with caps 10 and 16,
//! compared with the full-mesh optimum.
//!
//! `cargo run --release -p fastpubsub-core --example route_sim`
//! (`-- neighbours` runs only the neighbour-selection part.)
#![allow(clippy::disallowed_methods)] // reports the wall time the simulation took
#![allow(clippy::needless_range_loop, missing_docs)]

#[path = "../tests/route_harness/mod.rs"]
mod route_harness;

use std::time::Instant;

use fastpubsub_core::route::{NeighbourConfig, RouteConfig};
use route_harness::topology::{Eval, Mode, Topology, evaluate, evolve};
use route_harness::{limited_neighbours, load_matrix, load_regions, regional_neighbours, scenario};

fn main() {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(run)
        .expect("spawn")
        .join()
        .expect("simulation thread");
}

fn run() {
    if std::env::args().any(|a| a == "neighbours") {
        neighbours();
        return;
    }
    let (names, rtt) = load_matrix("matrix.csv");
    let n = names.len();
    let mut full = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            full.push((a, b));
        }
    }
    let wall = Instant::now();
    let cfg = RouteConfig::default();
    let r = scenario(
        "full mesh, default config",
        &names,
        &rtt,
        &full,
        cfg,
        120_000_000,
    );
    r.print(&names);
    let limited = limited_neighbours(&rtt, 7, 10, 11);
    let r = scenario(
        "10 neighbours (7 nearest + 3 random), default config",
        &names,
        &rtt,
        &limited,
        cfg,
        120_000_000,
    );
    r.print(&names);
    let regions = load_regions(&names);
    let regional = regional_neighbours(&rtt, &regions, 5, 10);
    let r = scenario(
        "10 neighbours (5 nearest + nearest per other region), default config",
        &names,
        &rtt,
        &regional,
        cfg,
        120_000_000,
    );
    r.print(&names);
    println!(
        "(simulated in {:.1} s of wall time)",
        wall.elapsed().as_secs_f64()
    );

    neighbours();
}

/// Neighbour selection on the 100-city matrix: an hour of link choices (simulated),
/// then the routing tables on the resulting links, against the full-mesh optimum.
fn neighbours() {
    let (_, rtt) = load_matrix("matrix.csv");
    let wall = Instant::now();
    let cfg = RouteConfig::default();
    const SECONDS: u64 = 3600;
    println!(
        "== neighbour selection, 100 relays, {SECONDS} s of link choices (seed relay 0), then routing"
    );
    println!("{}", Eval::header());
    for cap in [10usize, 16] {
        let naive = evolve(&rtt, Mode::Naive(cap), SECONDS, 3);
        let e = evaluate(
            &format!("naive cap {cap} (before)"),
            &rtt,
            naive,
            cfg,
            120_000_000,
        );
        println!("{}", e.row());
        let policy = evolve(
            &rtt,
            Mode::Policy(NeighbourConfig::with_max(cap)),
            SECONDS,
            3,
        );
        let (near, long, explore) = NeighbourConfig::with_max(cap).slots();
        let e = evaluate(
            &format!("policy cap {cap} ({near} nearest + {long} long range + {explore} explored)"),
            &rtt,
            policy,
            cfg,
            120_000_000,
        );
        println!("{}", e.row());
        if cap == 10 {
            let offline = Topology {
                links: limited_neighbours(&rtt, 7, 10, 11),
                max_degree: 10,
                mean_degree: 0.0,
                opened: 0,
                closed: 0,
                tail_changes: 0,
                tail_explore: 0,
                tail_s: 0,
                seconds: 0,
            };
            let mut e = evaluate(
                "offline reference: 7 nearest by true RTT + 3 random",
                &rtt,
                offline,
                cfg,
                120_000_000,
            );
            e.topology.mean_degree = 2.0 * e.topology.links.len() as f64 / 100.0;
            println!("{}", e.row());
        }
    }
    println!(
        "(neighbour selection simulated in {:.1} s of wall time)",
        wall.elapsed().as_secs_f64()
    );
}
