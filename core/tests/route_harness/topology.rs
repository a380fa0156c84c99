//! Neighbour selection in virtual time: which links a mesh of relays ends up with
//! when each relay may keep at most `cap` links, under `core::route::NeighbourPolicy`
//! (the relay's policy) or the naive rule it replaces (dial the lowest route metric up
//! to `cap`, never close, accept every incoming link). Then the routing tables run
//! on the resulting links and the installed routes are compared with the full-mesh
//! optimum.
//!
//! The model, in 1 s ticks: every relay starts with one seed (relay 0) and learns the
//! others after 5 s (gossip); a dial completes in the next tick and the dialled side
//! accepts it (closing it later under the policy is its right); a link is measured
//! (RTT with ±3 % noise, each tick) while up and the measurement is remembered after it
//! closes; a relay whose link the peer closed waits 300 s before dialling that peer
//! again; route metrics for peers not measured are the shortest path RTT over the
//! current links (what routing converges to), recomputed every 5 ticks.
#![allow(dead_code, clippy::needless_range_loop)]

use fastpubsub_core::route::{
    Candidate, Decision, LinkMeasurement, NeighbourConfig, NeighbourPolicy, RelayId, RouteConfig,
};

use super::{Rng, Savings, Sim, within_tolerance};

/// How relays choose links.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Today's rule: dial the lowest route metric while links (in and out) < cap;
    /// incoming links are never refused, nothing is closed.
    Naive(usize),
    /// `NeighbourPolicy` with this configuration.
    Policy(NeighbourConfig),
}

/// Wait before redialling a peer that closed our link: 300 s, doubling each time it
/// does it again, up to an hour (as the relay does).
pub const CLOSED_BACKOFF_S: u64 = 300;
pub const CLOSED_BACKOFF_MAX_S: u64 = 3600;

/// The outcome of [`evolve`].
#[derive(Clone, Debug)]
pub struct Topology {
    pub links: Vec<(usize, usize)>,
    pub max_degree: usize,
    pub mean_degree: f64,
    /// Links opened and closed during the whole run.
    pub opened: u64,
    pub closed: u64,
    /// Link changes (opened + closed) in the last `tail_s` seconds.
    pub tail_changes: u64,
    /// Exploratory dials in the last `tail_s` seconds (each opens and later closes a link).
    pub tail_explore: u64,
    pub tail_s: u64,
    pub seconds: u64,
}

fn dijkstra_rtt(rtt: &[Vec<u32>], up: &[Vec<bool>], src: usize) -> Vec<Option<u32>> {
    let n = rtt.len();
    let mut dist = vec![u64::MAX; n];
    let mut done = vec![false; n];
    dist[src] = 0;
    for _ in 0..n {
        let Some(u) = (0..n)
            .filter(|&v| !done[v] && dist[v] != u64::MAX)
            .min_by_key(|&v| dist[v])
        else {
            break;
        };
        done[u] = true;
        for v in 0..n {
            if up[u][v] {
                let nd = dist[u] + u64::from(rtt[u][v]);
                if nd < dist[v] {
                    dist[v] = nd;
                }
            }
        }
    }
    dist.into_iter()
        .map(|d| (d != u64::MAX).then(|| d.min(u64::from(u32::MAX)) as u32))
        .collect()
}

/// Runs `seconds` of link choices on the RTT matrix (µs) under `mode`.
pub fn evolve(rtt: &[Vec<u32>], mode: Mode, seconds: u64, seed: u64) -> Topology {
    let n = rtt.len();
    let mut rng = Rng::new(seed);
    let mut up = vec![vec![false; n]; n];
    let mut since = vec![vec![0u64; n]; n];
    let mut dialing: Vec<(usize, usize)> = Vec::new();
    let mut meas: Vec<Vec<Option<u32>>> = vec![vec![None; n]; n];
    let mut est: Vec<Vec<Option<u32>>> = vec![vec![None; n]; n];
    let mut backoff = vec![vec![0u64; n]; n];
    let mut closed_us = vec![vec![0u32; n]; n];
    let mut tail_explore = 0u64;
    let pick: Vec<Vec<u32>> = (0..n)
        .map(|_| (0..n).map(|_| rng.next_u64() as u32).collect())
        .collect();
    let mut policies: Vec<NeighbourPolicy> = match mode {
        Mode::Policy(cfg) => (0..n).map(|_| NeighbourPolicy::new(cfg)).collect(),
        Mode::Naive(_) => Vec::new(),
    };
    let tail_s = 600.min(seconds / 2);
    let (mut opened, mut closed, mut tail_changes) = (0u64, 0u64, 0u64);
    let mut order: Vec<usize> = (0..n).collect();
    let mut out = vec![Decision::Idle; n];
    // Every relay dials its seed (relay 0) at once.
    for a in 1..n {
        dialing.push((a, 0));
    }
    for t in 0..seconds {
        let in_tail = t >= seconds - tail_s;
        for (a, b) in std::mem::take(&mut dialing) {
            if !up[a][b] {
                up[a][b] = true;
                up[b][a] = true;
                since[a][b] = t;
                since[b][a] = t;
                opened += 1;
                tail_changes += u64::from(in_tail);
            }
        }
        for a in 0..n {
            for b in 0..n {
                if up[a][b] {
                    let f = 0.97 + 0.06 * rng.unit();
                    meas[a][b] = Some((f64::from(rtt[a][b]) * f) as u32);
                }
            }
        }
        if t % 5 == 0 {
            for a in 0..n {
                est[a] = dijkstra_rtt(rtt, &up, a);
            }
        }
        // Relays act in a random order each tick.
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        for &a in &order {
            let known: Vec<usize> = if t < 5 {
                (0..n).filter(|&b| b != a && (b == 0 || up[a][b])).collect()
            } else {
                (0..n).filter(|&b| b != a).collect()
            };
            let is_dialing = |a: usize, b: usize, d: &[(usize, usize)]| {
                d.iter().any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
            };
            match mode {
                Mode::Naive(cap) => {
                    if t < 5 {
                        continue;
                    }
                    let deg = (0..n).filter(|&b| up[a][b]).count()
                        + dialing.iter().filter(|&&(x, _)| x == a).count();
                    let mut c: Vec<(u32, usize)> = known
                        .iter()
                        .filter(|&&b| !up[a][b] && !is_dialing(a, b, &dialing))
                        .map(|&b| (est[a][b].unwrap_or(u32::MAX), b))
                        .collect();
                    c.sort();
                    for (_, b) in c.into_iter().take(cap.saturating_sub(deg)) {
                        dialing.push((a, b));
                    }
                }
                Mode::Policy(_) => {
                    let cands: Vec<Candidate> = known
                        .iter()
                        .map(|&b| Candidate {
                            up_since_us: up[a][b].then(|| since[a][b] * 1_000_000),
                            dialing: is_dialing(a, b, &dialing),
                            rtt_us: meas[a][b],
                            estimate_us: est[a][b],
                            dialable: backoff[a][b] <= t,
                            pick: pick[a][b],
                            ..Candidate::new(RelayId(b as u64))
                        })
                        .collect();
                    let o = &mut out[..cands.len()];
                    policies[a]
                        .plan(t * 1_000_000, &cands, o)
                        .expect("one slot per candidate");
                    for (c, d) in cands.iter().zip(o.iter()) {
                        let b = c.id.0 as usize;
                        match d {
                            Decision::Dial(role) => {
                                dialing.push((a, b));
                                tail_explore += u64::from(
                                    in_tail && *role == fastpubsub_core::route::Role::Explore,
                                );
                            }
                            Decision::Close => {
                                up[a][b] = false;
                                up[b][a] = false;
                                let k = closed_us[b][a].min(4);
                                closed_us[b][a] += 1;
                                backoff[b][a] =
                                    t + (CLOSED_BACKOFF_S << k).min(CLOSED_BACKOFF_MAX_S);
                                closed += 1;
                                tail_changes += u64::from(in_tail);
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    let mut links = Vec::new();
    let mut deg = vec![0usize; n];
    for a in 0..n {
        for b in a + 1..n {
            if up[a][b] {
                links.push((a, b));
                deg[a] += 1;
                deg[b] += 1;
            }
        }
    }
    Topology {
        max_degree: deg.iter().copied().max().unwrap_or(0),
        mean_degree: deg.iter().sum::<usize>() as f64 / n as f64,
        links,
        opened,
        closed,
        tail_changes,
        tail_explore,
        tail_s,
        seconds,
    }
}

/// Installed routes on a topology against the full-mesh optimum.
#[derive(Clone, Debug)]
pub struct Eval {
    pub label: String,
    pub topology: Topology,
    pub converged_us: Option<u64>,
    /// Ordered pairs.
    pub pairs: usize,
    /// Pairs whose installed route costs within max(1 ms, 1 %) of the full-mesh optimum.
    pub within_full: usize,
    /// Σ max(0, direct − installed) / Σ (direct − full-mesh optimum), link-cost terms.
    pub savings_realized: f64,
    /// Pairs ≥ 5 ms (RTT) worse than the direct path.
    pub savings: Savings,
    /// Mean installed RTT / mean full-mesh optimal RTT.
    pub stretch: f64,
}

/// Runs the routing tables on `topo` until they match the optimum over its links (or
/// `limit_us`), then compares every installed route with the full-mesh optimum.
pub fn evaluate(
    label: &str,
    rtt: &[Vec<u32>],
    topo: Topology,
    cfg: RouteConfig,
    limit_us: u64,
) -> Eval {
    let n = rtt.len();
    let mut sim = Sim::new(n, cfg, 7);
    let all: Vec<_> = topo
        .links
        .iter()
        .map(|&(a, b)| (a, b, rtt[a][b], rtt[b][a]))
        .collect();
    sim.add_links(&all);
    let opt_same = sim.all_pairs();
    let (_, converged_us) = sim.converge(&opt_same, limit_us);
    // The full-mesh optimum in the table's own cost terms.
    let cost = |a: usize, b: usize| LinkMeasurement::from_rtt_us(rtt[a][b]).cost(&cfg).as_us();
    let cost_m: Vec<Vec<u32>> = (0..n)
        .map(|a| (0..n).map(|b| cost(a, b)).collect())
        .collect();
    let full_up: Vec<Vec<bool>> = (0..n).map(|a| (0..n).map(|b| a != b).collect()).collect();
    let (mut pairs, mut within_full) = (0, 0);
    let (mut possible, mut realized) = (0u64, 0u64);
    let (mut sum_path, mut sum_opt) = (0.0, 0.0);
    let mut rtt_pairs = Vec::new();
    for a in 0..n {
        let opt_cost = dijkstra_rtt(&cost_m, &full_up, a);
        let opt_rtt = dijkstra_rtt(rtt, &full_up, a);
        for d in 0..n {
            if a == d {
                continue;
            }
            pairs += 1;
            let (Some(o), Some(orr)) = (opt_cost[d], opt_rtt[d]) else {
                continue;
            };
            let got = sim.path_cost(a, d);
            if got.is_some_and(|g| within_tolerance(g, u64::from(o))) {
                within_full += 1;
            }
            let direct = u64::from(cost_m[a][d]);
            possible += direct.saturating_sub(u64::from(o));
            realized += got.map_or(0, |g| direct.saturating_sub(g));
            let path_rtt = sim.path_rtt_ms(a, d).unwrap_or(f64::INFINITY);
            sum_path += path_rtt;
            sum_opt += f64::from(orr) / 1000.0;
            rtt_pairs.push((f64::from(rtt[a][d]) / 1000.0, path_rtt));
        }
    }
    Eval {
        label: label.to_string(),
        topology: topo,
        converged_us,
        pairs,
        within_full,
        savings_realized: if possible == 0 {
            1.0
        } else {
            realized as f64 / possible as f64
        },
        savings: Savings::from_pairs(&rtt_pairs),
        stretch: sum_path / sum_opt,
    }
}

impl Eval {
    /// One Markdown table row (see [`Eval::header`]).
    pub fn row(&self) -> String {
        let t = &self.topology;
        format!(
            "| {} | {} | {} / {:.1} | {:.1} % | {:.1} % | {:.1} % ({:.1} ms) | {} | {:.3} | {} | {:.1} ({:.1}) |",
            self.label,
            t.links.len(),
            t.max_degree,
            t.mean_degree,
            100.0 * self.within_full as f64 / self.pairs.max(1) as f64,
            100.0 * self.savings_realized,
            100.0 * self.savings.share(),
            self.savings.median_saving_ms,
            self.savings.worse,
            self.stretch,
            self.converged_us
                .map_or("no".to_string(), |u| format!("{:.1} s", u as f64 / 1e6)),
            (t.tail_changes as f64) * 3600.0 / (t.tail_s.max(1) as f64) / 100.0,
            (2.0 * t.tail_explore as f64) * 3600.0 / (t.tail_s.max(1) as f64) / 100.0,
        )
    }

    /// The header of [`Eval::row`].
    pub fn header() -> &'static str {
        "| links chosen by | links | max / mean degree | pairs within max(1 ms, 1 %) of the full-mesh optimum | possible savings realized | pairs improved ≥ 5 ms & ≥ 10 % (median) | pairs ≥ 5 ms worse than direct | mean RTT / full-mesh optimum | routes converged | link changes per relay per hour, last 10 min (of which exploration) |\n|---|---|---|---|---|---|---|---|---|---|"
    }
}
