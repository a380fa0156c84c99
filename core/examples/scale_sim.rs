//! The mesh at scale, in virtual time: traffic-aware neighbour selection
//! (`route::NeighbourPolicy` with demand and light links) on 100 to 1,000 relays, then
//! the routing tables on the links it chose, judged on the pairs of relays that carry
//! traffic.
//!
//! ```text
//! cargo run --release -p fastpubsub-core --example scale_sim -- [options]
//!   --matrix FILE      src,dst,rtt_ms (default: data/latency/matrix.csv, 100 cities)
//!   --locations FILE   name,lat,lon,... (default: data/latency/locations.csv with the
//!                      default matrix; none otherwise): geographic estimates for
//!                      relays never measured
//!   --per-city N       N relays per city of the matrix, with small local RTTs (1)
//!   --limit L[,L...]   --max-neighbours values to run (16)
//!   --traffic KIND     uniform (every relay sends to 8 others), skewed (pub/sub: 5 hot
//!                      channels with subscribers on 10 % of the relays, one cold channel
//!                      per relay with 1-3) or both (both)
//!   --policy KIND      demand (demand + light links), plain (neither) or both (demand)
//!   --seconds S        simulated time of link choices (3600; 1800 from 300 relays)
//!   --seed N           seed of the synthetic matrix and the traffic (1)
//!   --noise-ppm N      RTT noise on every measurement while routing at rest, ± parts
//!                      per million (20000 = ±2 %)
//! ```
//!
//! Prints one table row per run and, for each, the line
//! `traffic pairs >= 5 ms slower than direct: N of M (X %)`.
#![allow(clippy::disallowed_methods)] // reports the wall time the simulation took
#![allow(clippy::needless_range_loop, missing_docs)]

#[path = "../tests/route_harness/mod.rs"]
mod route_harness;

use std::path::PathBuf;

use fastpubsub_core::route::NeighbourConfig;
use route_harness::scale::{
    EvalConfig, EvolveConfig, Matrix, ScaleReport, Traffic, evaluate, evolve,
};

struct Args {
    matrix: Option<PathBuf>,
    locations: Option<PathBuf>,
    per_city: usize,
    limits: Vec<usize>,
    traffic: Vec<String>,
    policies: Vec<String>,
    seconds: Option<u64>,
    seed: u64,
    noise_ppm: u32,
}

const USAGE: &str = "usage: scale_sim [--matrix FILE] [--locations FILE] [--per-city N] [--limit L[,L...]] [--traffic uniform|skewed|both] [--policy demand|plain|both] [--seconds S] [--seed N] [--noise-ppm N]";

fn parse() -> Result<Args, String> {
    let mut a = Args {
        matrix: None,
        locations: None,
        per_city: 1,
        limits: vec![16],
        traffic: vec!["uniform".into(), "skewed".into()],
        policies: vec!["demand".into()],
        seconds: None,
        seed: 1,
        noise_ppm: 20_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        let num = |v: String| -> Result<u64, String> {
            v.parse()
                .map_err(|e| format!("{v:?} is not a number ({e})\n{USAGE}"))
        };
        match arg.as_str() {
            "--matrix" => a.matrix = Some(value()?.into()),
            "--locations" => a.locations = Some(value()?.into()),
            "--per-city" => a.per_city = num(value()?)?.max(1) as usize,
            "--limit" => {
                a.limits = value()?
                    .split(',')
                    .map(|v| num(v.to_string()).map(|x| x as usize))
                    .collect::<Result<_, _>>()?
            }
            "--traffic" => {
                a.traffic = match value()?.as_str() {
                    "both" => vec!["uniform".into(), "skewed".into()],
                    t @ ("uniform" | "skewed") => vec![t.into()],
                    t => return Err(format!("--traffic {t}: uniform, skewed or both")),
                }
            }
            "--policy" => {
                a.policies = match value()?.as_str() {
                    "both" => vec!["plain".into(), "demand".into()],
                    p @ ("demand" | "plain") => vec![p.into()],
                    p => return Err(format!("--policy {p}: demand, plain or both")),
                }
            }
            "--seconds" => a.seconds = Some(num(value()?)?),
            "--seed" => a.seed = num(value()?)?,
            "--noise-ppm" => {
                a.noise_ppm = u32::try_from(num(value()?)?)
                    .map_err(|e| format!("--noise-ppm: {e}\n{USAGE}"))?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let data = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/latency"));
    let (mpath, lpath) = match (&args.matrix, &args.locations) {
        (None, l) => (
            data.join("matrix.csv"),
            Some(l.clone().unwrap_or(data.join("locations.csv"))),
        ),
        (Some(m), l) => (m.clone(), l.clone()),
    };
    let base = Matrix::load(&mpath).and_then(|m| match &lpath {
        Some(l) => m.with_locations(l),
        None => Ok(m),
    });
    let base = match base {
        Ok(m) => m,
        Err(e) => {
            eprintln!("scale_sim: {e}");
            std::process::exit(2);
        }
    };
    let m = if args.per_city > 1 {
        base.synthetic(args.per_city, args.seed)
    } else {
        base
    };
    let n = m.len();
    let seconds = args.seconds.unwrap_or(if n >= 300 { 1800 } else { 3600 });
    println!(
        "== {} relays ({} × {} per city, {}), {seconds} s of link choices, then routing",
        n,
        n / args.per_city,
        args.per_city,
        mpath.display()
    );
    println!("{}", ScaleReport::header());
    let mut lines = Vec::new();
    for kind in &args.traffic {
        let traffic = if kind == "uniform" {
            Traffic::uniform(n, 8, args.seed)
        } else {
            Traffic::skewed(n, args.seed)
        };
        for &limit in &args.limits {
            for policy in &args.policies {
                let mut p = NeighbourConfig::with_max(limit);
                if policy == "plain" {
                    p = p.without_demand();
                }
                let cfg = EvolveConfig::new(p, seconds, n);
                let links = evolve(&m, &traffic, &cfg);
                let label = format!(
                    "{n} relays, {kind} ({} pairs), limit {limit}, {}",
                    traffic.pairs.len(),
                    if policy == "plain" {
                        "no demand/light links".to_string()
                    } else {
                        format!("+ {} demand + {} light", p.demand, p.light)
                    }
                );
                if std::env::var_os("SCALE_DEBUG").is_some() {
                    eprintln!(
                        "tail: {} changes, closes by role {:?}, kind changes {}",
                        links.tail_changes, links.tail_closes_by_role, links.tail_kind_changes
                    );
                }
                let ec = EvalConfig {
                    noise_ppm: args.noise_ppm,
                    ..EvalConfig::full()
                };
                let r = evaluate(&label, &m, &traffic, &links, ec);
                println!("{}", r.row());
                lines.push(format!(
                    "{label}: {} (longest traffic path {} hops; dead relay {}; wall {:.0} s + {:.0} s)",
                    r.slow_line(),
                    r.max_hops,
                    r.dead_relay,
                    r.evolve_wall_s,
                    r.routing_wall_s
                ));
            }
        }
    }
    for l in lines {
        println!("{l}");
    }
}
