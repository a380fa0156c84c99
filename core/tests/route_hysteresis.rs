//! Hysteresis: under ±5 % random noise on every link measurement, routes must not
//! flap. Counts next-hop changes over 10 virtual minutes with the default
//! configuration and with a no-hysteresis baseline (lowest metric at once).
#![allow(clippy::needless_range_loop, missing_docs)]

mod route_harness;

use fastpubsub_core::route::RouteConfig;
use route_harness::{Rng, Sim};

const S: u64 = 1_000_000;

/// A 4×4 grid with equal RTTs (many exact ties: the worst case for flapping) or
/// with random RTTs (near-ties), under ±5 % noise. Returns the route changes
/// counted after a 30 s warm-up, over 600 s, and the routing messages per link
/// direction per second over that time.
fn changes(cfg: RouteConfig, equal: bool, seed: u64) -> (u64, f64) {
    let mut rng = Rng::new(seed);
    let mut sim: Sim = Sim::new(16, cfg, seed);
    sim.noise_ppm = 50_000;
    for r in 0..4 {
        for c in 0..4 {
            let i = r * 4 + c;
            let mut rtt = || {
                if equal {
                    20_000
                } else {
                    10_000 + rng.below(30_000) as u32
                }
            };
            if c < 3 {
                let x = rtt();
                sim.set_link(i, i + 1, x, x);
            }
            if r < 3 {
                let x = rtt();
                sim.set_link(i, i + 4, x, x);
            }
        }
    }
    sim.run_until(30 * S);
    let before = sim.route_changes;
    let sent = sim.delivered;
    sim.run_until(630 * S);
    assert!(sim.find_loop().is_none());
    // 24 links, both directions.
    let rate = (sim.delivered - sent) as f64 / 48.0 / 600.0;
    (sim.route_changes - before, rate)
}

#[test]
fn noise_does_not_flap_routes() {
    for (equal, seed) in [(true, 1), (false, 2), (false, 3)] {
        let (ours, rate) = changes(RouteConfig::default(), equal, seed);
        let (base, base_rate) = changes(RouteConfig::without_hysteresis(), equal, seed);
        eprintln!(
            "grid 4x4, {} RTTs, ±5 % noise, 600 s: {ours} route changes with hysteresis, {base} without; \
             {rate:.1} vs {base_rate:.1} routing messages per link direction per second",
            if equal { "equal" } else { "random" }
        );
        // The baseline must flap, or the test proves nothing.
        assert!(base > 200, "baseline too quiet: {base}");
        assert!(
            ours * 50 <= base,
            "{ours} changes with hysteresis vs {base} without"
        );
    }
}
