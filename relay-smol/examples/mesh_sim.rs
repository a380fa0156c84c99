//! The mesh in virtual time: every relay of an RTT matrix runs the real mesh node
//! (`fastpubsub_relay::sim`), seeded with the first relay; reports when every pair is
//! routed, the routes against the full-mesh optimum, control bytes per link at rest, and
//! delivery counts of a publish from every relay to subscribers on every relay.
//!
//! ```sh
//! cargo run --release -p fastpubsub-relay --example mesh_sim -- \
//!     --matrix data/latency/matrix.csv [--relays N] [--max-neighbours 16] \
//!     [--seconds 120] [--seed 1] [--loss-ppm 0]
//! ```
#![allow(clippy::disallowed_methods)] // reports the wall time the simulation took
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Instant;

use fastpubsub_core::frame::Mode;
use fastpubsub_relay::mesh::time::SEC;
use fastpubsub_relay::sim::{Matrix, Sim, SimConfig};

struct Args {
    matrix: PathBuf,
    relays: Option<usize>,
    max_neighbours: usize,
    seconds: u64,
    seed: u64,
    loss_ppm: u32,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        matrix: PathBuf::from("data/latency/matrix.csv"),
        relays: None,
        max_neighbours: 16,
        seconds: 120,
        seed: 1,
        loss_ppm: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or(format!("{k} needs a value"));
        let num = |s: String| s.parse::<u64>().map_err(|e| format!("{k} {s}: {e}"));
        match k.as_str() {
            "--matrix" => a.matrix = PathBuf::from(v()?),
            "--relays" => a.relays = Some(num(v()?)? as usize),
            "--max-neighbours" => a.max_neighbours = num(v()?)? as usize,
            "--seconds" => a.seconds = num(v()?)?,
            "--seed" => a.seed = num(v()?)?,
            "--loss-ppm" => a.loss_ppm = num(v()?)? as u32,
            _ => {
                return Err(format!(
                    "unknown argument {k}: use --matrix FILE --relays N --max-neighbours N \
                     --seconds S --seed N --loss-ppm N"
                ));
            }
        }
    }
    Ok(a)
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let m = match Matrix::load(&a.matrix) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {}: {e}", a.matrix.display());
            std::process::exit(2);
        }
    };
    let m = match a.relays {
        Some(n) => m.truncated(n),
        None => m,
    };
    let cfg = SimConfig {
        seed: a.seed,
        loss_ppm: a.loss_ppm,
        ..SimConfig::default()
    };
    let wall = Instant::now();
    let max = a.max_neighbours;
    let mut sim = Sim::from_matrix(&m, cfg, |c| c.max_neighbours = max);
    println!(
        "{} relays, max {} neighbours, seed {}, {} relay-id collisions",
        sim.len(),
        max,
        a.seed,
        sim.id_collisions
    );
    let conv = sim.run_until_converged(a.seconds * SEC, SEC);
    println!(
        "cold start, frames by kind: {:?}",
        sim.control_bytes().frames
    );
    match conv.at_us {
        Some(t) => println!("every pair routed after {:.1} s", t as f64 / 1e6),
        None => println!(
            "not every pair routed within {} s: {} of {}",
            a.seconds, conv.routed, conv.pairs
        ),
    }
    // Then the rest of the time at rest.
    let half = sim.now().max(a.seconds * SEC / 2);
    sim.run_until(half);
    sim.reset_control_bytes();
    sim.run_until(a.seconds * SEC);
    println!("{}", sim.route_quality(None));
    println!("{}", sim.control_bytes());
    // A subscriber on every relay, a broadcast publish from every relay.
    let n = sim.len();
    let subs: Vec<_> = (0..n).map(|i| sim.subscribe(i, "acme", "chat.#")).collect();
    sim.run_for(10 * SEC);
    let pubs: Vec<_> = (0..n)
        .map(|i| sim.publish(i, "acme", "chat.x", Mode::Broadcast, 64))
        .collect();
    sim.run_for(5 * SEC);
    let got: u64 = subs.iter().map(|s| sim.delivered(*s)).sum();
    let mut lat: Vec<u64> = pubs
        .iter()
        .filter_map(|p| sim.publish_record(*p))
        .flat_map(|r| r.deliveries.iter().map(|d| d.1))
        .collect();
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)));
    println!(
        "deliveries: {got} of {} (every subscriber gets every publish once); latency p50 {:.1} ms, p99 {:.1} ms",
        n * n,
        pct(0.5).copied().unwrap_or(0) as f64 / 1000.0,
        pct(0.99).copied().unwrap_or(0) as f64 / 1000.0
    );
    let st = sim.stats();
    println!("{st:?}");
    println!(
        "data copies lost on closing links: {}",
        sim.data_losses.len()
    );
    let (mut dup, mut nb, mut refused) = (0, Default::default(), 0);
    let add = |a: &mut fastpubsub_relay::mesh::neighbours::NeighbourStats,
               b: fastpubsub_relay::mesh::neighbours::NeighbourStats| {
        a.closed_over_limit += b.closed_over_limit;
        a.closed_explored += b.closed_explored;
        a.refused_full += b.refused_full;
        a.closed_by_peer_full += b.closed_by_peer_full;
        a.dials += b.dials;
        a.explored += b.explored;
    };
    for i in 0..sim.len() {
        let s = sim.node(i).status(sim.now());
        dup += s.counters.mesh.duplicate_links;
        refused += s.counters.mesh.refused_full;
        add(&mut nb, s.counters.neighbours);
    }
    println!("link ends lost, by reason: {:?}", sim.lost_reasons);
    println!("all nodes: duplicate links {dup}, refused (table full) {refused}, {nb:?}");
    println!(
        "{} events in {:.2} s of wall time ({:.0} events/s); {} virtual s",
        st.events,
        wall.elapsed().as_secs_f64(),
        st.events as f64 / wall.elapsed().as_secs_f64(),
        sim.now() / SEC
    );
}
