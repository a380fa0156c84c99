//! Virtual-time simulation of `core::route` on the WonderNetwork RTT matrix
//! (100 relays, `data/latency/matrix.csv`) with the default timers: convergence time
//! from cold start and after the busiest link's RTT doubles, route quality, and the
//! savings table, for a full mesh and for 10 neighbours per relay.
//!
//! `cargo run --release -p fastpubsub-core --example route_sim`
#![allow(clippy::disallowed_methods)] // reports the wall time the simulation took
#![allow(clippy::needless_range_loop, missing_docs)]

#[path = "../tests/route_harness/mod.rs"]
mod route_harness;

use std::time::Instant;

use fastpubsub_core::route::{RouteConfig, RouteTable};
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
    let r = scenario::<100, 99>(
        "full mesh, default config",
        &names,
        &rtt,
        &full,
        cfg,
        120_000_000,
    );
    r.print(&names);
    let limited = limited_neighbours(&rtt, 7, 10, 11);
    let r = scenario::<100, 10>(
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
    let r = scenario::<100, 10>(
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
    println!(
        "size_of RouteTable<100, 99> = {} bytes, RouteTable<100, 10> = {} bytes, RouteTable<32, 8> = {} bytes",
        std::mem::size_of::<RouteTable<100, 99>>(),
        std::mem::size_of::<RouteTable<100, 10>>(),
        std::mem::size_of::<RouteTable<32, 8>>()
    );
}
