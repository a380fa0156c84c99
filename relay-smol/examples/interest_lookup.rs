//! Interest lookup at publish: which relays want a channel, with the per-tenant
//! `SubIndex` (`InterestTable::remote_matches`) against the linear scan it replaced
//! (`remote_matches_by_scan`: every pair of every relay through `pattern::matches`).
//!
//! 100 relays × 1000 patterns in one tenant (plus 4 other tenants with 100 each), then
//! lookups of channels that match 0, a few, or many relays.
//!
//! `cargo run --release -p fastpubsub-relay --example interest_lookup [-- <relays> <patterns>]`
// A benchmark measures time.
#![allow(clippy::disallowed_methods)]

use std::hint::black_box;
use std::time::Instant;

use fastpubsub_relay::mesh::interest::InterestTable;

fn main() {
    let mut args = std::env::args().skip(1);
    let relays: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let patterns: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let mut t = InterestTable::new("me", 1);
    let build = Instant::now();
    for r in 0..relays {
        // Per relay: its rooms, its sensors' wildcards, a few subtrees, and what every
        // relay shares (a popular channel).
        let mut entries: Vec<(String, String)> = (0..patterns)
            .map(|i| {
                let p = match i % 4 {
                    0 => format!("room.{}.chat", r * patterns + i),
                    1 => format!("sensor.*.temp.{}", r * patterns + i),
                    2 => format!("user.{}.#", r * patterns + i),
                    _ => format!("feed.{}.{}", r % 10, i),
                };
                ("acme".to_owned(), p)
            })
            .collect();
        entries.push(("acme".to_owned(), "news.#".to_owned()));
        for other in 0..4 {
            entries.extend((0..patterns / 10).map(|i| (format!("t{other}"), format!("x.{i}.#"))));
        }
        t.handle_snapshot(0, &format!("r{r}"), 1, 1, 0, true, entries.into_iter());
    }
    println!(
        "{relays} relays × {patterns} patterns (+ {} in other tenants each): {} pairs indexed in {:.2} s",
        4 * (patterns / 10),
        t.indexed(),
        build.elapsed().as_secs_f64()
    );
    let cases: [(&str, String); 5] = [
        ("no match", "room.none.chat".to_owned()),
        (
            "1 relay (exact)",
            format!("room.{}.chat", 42 * patterns + 8),
        ),
        (
            "1 relay (`*`)",
            format!("sensor.x9.temp.{}", 7 * patterns + 1),
        ),
        ("10 relays", "feed.3.7".to_owned()),
        ("every relay (`#`)", "news.world.today".to_owned()),
    ];
    println!("| channel | relays | index (µs/lookup) | scan (µs/lookup) | speed-up |");
    println!("|---|---|---|---|---|");
    for (what, channel) in &cases {
        let a = t.remote_matches("acme", channel).count();
        let b = t.remote_matches_by_scan("acme", channel).count();
        assert_eq!(a, b, "{channel}");
        let n_index = 20_000;
        let t0 = Instant::now();
        for _ in 0..n_index {
            black_box(
                t.remote_matches(black_box("acme"), black_box(channel))
                    .count(),
            );
        }
        let index_us = t0.elapsed().as_secs_f64() * 1e6 / f64::from(n_index);
        let n_scan = 20;
        let t0 = Instant::now();
        for _ in 0..n_scan {
            black_box(
                t.remote_matches_by_scan(black_box("acme"), black_box(channel))
                    .count(),
            );
        }
        let scan_us = t0.elapsed().as_secs_f64() * 1e6 / f64::from(n_scan);
        println!(
            "| {what}: `{channel}` | {a} | {index_us:.2} | {scan_us:.0} | {:.0}× |",
            scan_us / index_us
        );
    }
}
