//! Loop freedom and no count-to-infinity: the installed next-hop graph is checked
//! for cycles after EVERY step of the simulation (each delivery, timer or
//! measurement) during long random sequences of metric changes and link failures.
#![allow(clippy::needless_range_loop, missing_docs)]

mod route_harness;

use fastpubsub_core::route::RouteConfig;
use route_harness::{Rng, Sim};

const S: u64 = 1_000_000;

fn random_graph(sim: &mut Sim, rng: &mut Rng, extra: usize) -> Vec<(usize, usize)> {
    let n = sim.len();
    let mut edges = Vec::new();
    for i in 1..n {
        edges.push((rng.below(i as u64) as usize, i));
    }
    while edges.len() < n - 1 + extra {
        let (a, b) = (rng.below(n as u64) as usize, rng.below(n as u64) as usize);
        if a != b
            && !edges
                .iter()
                .any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
        {
            edges.push((a, b));
        }
    }
    for &(a, b) in &edges {
        let ms = 5_000 + rng.below(100_000) as u32;
        sim.set_link(a, b, ms, ms + rng.below(2_000) as u32);
    }
    edges
}

fn churn(cfg: RouteConfig, seed: u64) -> (u64, u64) {
    let mut rng = Rng::new(seed);
    let mut sim: Sim = Sim::new(12, cfg, seed);
    sim.noise_ppm = 20_000;
    let edges = random_graph(&mut sim, &mut rng, 10);
    let mut no_loop = |s: &Sim| {
        if let Some((d, at)) = s.find_loop() {
            panic!("forwarding loop toward {d} through {at} at t={} µs", s.now);
        }
    };
    sim.run_until_checked(10 * S, &mut no_loop);
    for _ in 0..250 {
        let (a, b) = edges[rng.below(edges.len() as u64) as usize];
        match rng.below(4) {
            0 | 1 => {
                // Metric change: anything from a third to three times the RTT.
                let ms = 3_000 + rng.below(200_000) as u32;
                if sim.is_up(a, b) {
                    sim.set_rtt(a, b, ms, ms);
                }
            }
            2 => sim.link_down(a, b),
            _ => {
                if !sim.is_up(a, b) {
                    let ms = 5_000 + rng.below(100_000) as u32;
                    sim.set_link(a, b, ms, ms);
                }
            }
        }
        no_loop(&sim);
        let t = sim.now + rng.below(3 * S);
        sim.run_until_checked(t, &mut no_loop);
    }
    (sim.steps, sim.route_changes)
}

#[test]
fn no_loop_under_random_changes_and_failures() {
    for seed in 1..=3 {
        let (steps, changes) = churn(RouteConfig::default(), seed);
        let (steps_nh, changes_nh) = churn(RouteConfig::without_hysteresis(), seed + 100);
        eprintln!(
            "seed {seed}: {steps} steps / {changes} route changes checked (default); {steps_nh} / {changes_nh} (no hysteresis)"
        );
        assert!(
            changes > 100 && changes_nh > 100,
            "too little churn to prove anything"
        );
    }
}

/// Two clusters joined by two bridge links; cutting both must retract every route
/// across in bounded time, with metrics never counting up in between.
#[test]
fn partition_retracts_without_counting_to_infinity() {
    for cfg in [RouteConfig::default(), RouteConfig::without_hysteresis()] {
        let mut sim: Sim = Sim::new(12, cfg, 9);
        let mut rng = Rng::new(3);
        // Cluster A: 0..6, cluster B: 6..12, each a ring with chords.
        for base in [0, 6] {
            for i in 0..6 {
                let ms = 10_000 + rng.below(40_000) as u32;
                sim.set_link(base + i, base + (i + 1) % 6, ms, ms);
            }
            sim.set_link(base, base + 3, 30_000, 30_000);
            sim.set_link(base + 1, base + 4, 35_000, 35_000);
        }
        sim.set_link(2, 8, 40_000, 40_000);
        sim.set_link(5, 11, 60_000, 60_000);
        sim.run_until(20 * S);
        for a in 0..12 {
            for d in 0..12 {
                assert!(
                    a == d || sim.next_hop(a, d).is_some(),
                    "{a}->{d} unreachable before the cut"
                );
            }
        }
        let t0 = sim.now;
        sim.link_down(2, 8);
        sim.link_down(5, 11);
        let across = |a: usize, d: usize| (a < 6) != (d < 6);
        let mut retracted_at = None;
        let mut max_metric = vec![vec![0u32; 12]; 12];
        sim.run_until_checked(t0 + 60 * S, |s| {
            assert!(s.find_loop().is_none(), "loop at {}", s.now);
            let mut all_gone = true;
            for a in 0..12 {
                for d in 0..12 {
                    if across(a, d) && s.next_hop(a, d).is_some() {
                        all_gone = false;
                        let m = s.metric(a, d).as_us();
                        max_metric[a][d] = max_metric[a][d].max(m);
                    }
                }
            }
            if all_gone && retracted_at.is_none() {
                retracted_at = Some(s.now - t0);
            }
            if !all_gone {
                assert!(
                    retracted_at.is_none(),
                    "a route across the partition came back at {}",
                    s.now
                );
            }
        });
        let took = retracted_at.expect("routes across the partition retracted");
        let worst = max_metric.iter().flatten().max().copied().unwrap_or(0);
        eprintln!(
            "partition: every route across retracted {took} µs after the cut; highest metric seen meanwhile {worst} µs"
        );
        // Retractions travel hop by hop: bounded by a few one-way delays, far below
        // the route expiry a count-to-infinity would need.
        assert!(took < 2 * S, "retraction took {took} µs");
        // No counting up: no route across was ever seen above the cluster diameter
        // plus the bridge (< 400 ms here).
        assert!(worst < 400_000, "metric climbed to {worst} µs");
    }
}
