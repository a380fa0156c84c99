//! Convergence of `core::route` to shortest paths on small graphs, in virtual time,
//! compared with Dijkstra over the same link costs.
#![allow(clippy::needless_range_loop, missing_docs)]

mod route_harness;

use fastpubsub_core::route::{RelayId, RouteConfig};
use route_harness::{Rng, Sim, within_tolerance};

const S: u64 = 1_000_000;

/// Builds a sim from an edge list (a, b, rtt_ms) with symmetric RTTs.
fn build(n: usize, edges: &[(usize, usize, u32)], cfg: RouteConfig, seed: u64) -> Sim {
    let mut sim = Sim::new(n, cfg, seed);
    for &(a, b, ms) in edges {
        sim.set_link(a, b, ms * 1000, ms * 1000);
    }
    sim
}

/// Every pair's installed path realizes its advertised metric and is optimal
/// (exactly with `exact`, else within tolerance).
fn assert_optimal(sim: &Sim, exact: bool) {
    let opt = sim.all_pairs();
    for a in 0..sim.len() {
        for d in 0..sim.len() {
            if a == d {
                continue;
            }
            let want = opt[a][d];
            let got = sim.path_cost(a, d);
            match (want, got) {
                (Some(w), Some(g)) => {
                    if exact {
                        assert_eq!(
                            g,
                            w,
                            "{a}->{d}: path {:?} costs {g}, optimum {w}",
                            sim.path(a, d)
                        );
                    } else {
                        assert!(
                            within_tolerance(g, w),
                            "{a}->{d}: path {:?} costs {g}, optimum {w}",
                            sim.path(a, d)
                        );
                    }
                    let m = sim.metric(a, d).as_us();
                    assert_eq!(
                        u64::from(m),
                        g,
                        "{a}->{d}: installed metric differs from the path's cost"
                    );
                }
                (None, None) => {}
                other => panic!("{a}->{d}: reachability differs (optimum, installed) = {other:?}"),
            }
        }
    }
}

#[test]
fn detour_beats_slow_direct_path() {
    // Tokyo(0)–Frankfurt(2) 221.8 ms direct; Tokyo–Novosibirsk(1)–Frankfurt 180 ms.
    let mut sim: Sim = Sim::new(3, RouteConfig::default(), 1);
    sim.set_link(0, 2, 221_800, 221_800);
    sim.set_link(0, 1, 100_000, 100_000);
    sim.set_link(1, 2, 80_000, 80_000);
    sim.run_until(5 * S);
    assert_eq!(sim.next_hop(0, 2), Some(1));
    assert_eq!(sim.next_hop(2, 0), Some(1));
    let r = sim.table(0).route(RelayId(2)).expect("route to Frankfurt");
    assert_eq!(r.direct_metric.map(|m| m.as_us()), Some(110_900 + 100));
    assert_eq!(r.metric.as_us(), 90_000 + 200);
    assert_eq!(r.saving_us(), 111_000 - 90_200);
    assert_optimal(&sim, true);
}

#[test]
fn line_ring_and_grid_converge_exactly_without_hysteresis() {
    let cfg = RouteConfig::without_hysteresis();
    let line: Vec<_> = (0..7).map(|i| (i, i + 1, 10 + i as u32)).collect();
    let mut sim = build(8, &line, cfg, 2);
    sim.run_until(10 * S);
    assert_optimal(&sim, true);

    let mut ring: Vec<_> = (0..9)
        .map(|i| (i, (i + 1) % 10, 5 + 3 * i as u32))
        .collect();
    ring.push((9, 0, 50));
    let mut sim = build(10, &ring, cfg, 3);
    sim.run_until(10 * S);
    assert_optimal(&sim, true);

    let mut grid = Vec::new();
    for r in 0..4 {
        for c in 0..4 {
            let i = r * 4 + c;
            if c < 3 {
                grid.push((i, i + 1, 7 + ((i * 13) % 11) as u32));
            }
            if r < 3 {
                grid.push((i, i + 4, 7 + ((i * 7) % 9) as u32));
            }
        }
    }
    let mut sim = build(16, &grid, cfg, 4);
    sim.run_until(10 * S);
    assert_optimal(&sim, true);
}

#[test]
fn random_graphs_converge_with_default_hysteresis() {
    let mut rng = Rng::new(42);
    for seed in 0..6 {
        let n = 12;
        let mut edges = Vec::new();
        // A spanning path keeps it connected, plus random chords.
        for i in 1..n {
            edges.push((rng.below(i as u64) as usize, i, 5 + rng.below(120) as u32));
        }
        for _ in 0..14 {
            let a = rng.below(n as u64) as usize;
            let b = rng.below(n as u64) as usize;
            if a != b
                && !edges
                    .iter()
                    .any(|&(x, y, _)| (x, y) == (a, b) || (x, y) == (b, a))
            {
                edges.push((a, b, 5 + rng.below(120) as u32));
            }
        }
        let mut sim = build(n, &edges, RouteConfig::default(), seed);
        // Settle time (10 s) lets small improvements in; 40 s is plenty.
        sim.run_until(40 * S);
        assert_optimal(&sim, false);
        let mut sim = build(n, &edges, RouteConfig::without_hysteresis(), seed);
        sim.run_until(20 * S);
        assert_optimal(&sim, true);
    }
}

#[test]
fn reroutes_when_the_detour_degrades_and_when_its_relay_dies() {
    let mut sim: Sim = Sim::new(3, RouteConfig::default(), 5);
    sim.keep_events = true;
    sim.set_link(0, 2, 221_800, 221_800);
    sim.set_link(0, 1, 100_000, 100_000);
    sim.set_link(1, 2, 80_000, 80_000);
    sim.run_until(5 * S);
    assert_eq!(sim.next_hop(0, 2), Some(1));
    // Raise T–N: the detour now costs 100 + 80 + 60 ms > 221.8 ms.
    sim.set_rtt(0, 1, 160_000, 160_000);
    let t0 = sim.now;
    while sim.next_hop(0, 2) != Some(2) && sim.now < t0 + 10 * S {
        let t = sim.now + 10_000;
        sim.run_until(t);
    }
    assert_eq!(
        sim.next_hop(0, 2),
        Some(2),
        "direct path after the detour degraded"
    );
    let took = sim.now - t0;
    // One measurement interval (1 s) + one-way propagation.
    assert!(took <= 2 * S, "rerouting took {took} µs");
    // Back to fast detour, then kill N.
    sim.set_rtt(0, 1, 100_000, 100_000);
    sim.run_until(sim.now + 5 * S);
    assert_eq!(sim.next_hop(0, 2), Some(1));
    sim.link_down(0, 1);
    sim.link_down(1, 2);
    assert_eq!(
        sim.next_hop(0, 2),
        Some(2),
        "moved to the direct path at once on link down"
    );
    sim.run_until(sim.now + 5 * S);
    assert_optimal(&sim, true);
    assert!(
        sim.events
            .iter()
            .any(|(n, e)| *n == 0 && e.dest() == RelayId(2))
    );
}
