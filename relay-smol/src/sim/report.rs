//! What a run measured: route quality against the optimum, convergence, control bytes.

use std::collections::HashMap;
use std::fmt;

use fastpubsub_core::mesh::{KIND_NAMES, kind_index};

use super::Sim;

/// Control bytes (frames with their 4-byte prefix, and datagrams) per directed link.
#[derive(Debug, Default)]
pub(super) struct ByLink {
    since: u64,
    sent: HashMap<(usize, usize), [u64; KIND_NAMES.len()]>,
    frames: [u64; KIND_NAMES.len()],
}

impl ByLink {
    pub(super) fn add(&mut self, from: usize, to: usize, bytes: &[u8], extra: usize, _now: u64) {
        if let Some(f) = kind_index(bytes).and_then(|k| self.frames.get_mut(k)) {
            *f += 1;
        }
        if let Some(c) = kind_index(bytes).and_then(|k| {
            self.sent
                .entry((from, to))
                .or_insert([0; KIND_NAMES.len()])
                .get_mut(k)
        }) {
            *c += (bytes.len() + extra) as u64;
        }
    }
}

/// Control traffic per link over a window ([`Sim::control_bytes`]).
#[derive(Debug, Clone)]
pub struct ControlBytes {
    /// The window, s.
    pub window_s: f64,
    /// Directed links that carried control traffic.
    pub links: usize,
    /// Mean bytes/s per directed link.
    pub mean_per_link: f64,
    /// Busiest directed link, bytes/s.
    pub max_per_link: f64,
    /// Mean bytes/s per directed link, by message kind (kinds with traffic).
    pub by_kind: Vec<(&'static str, f64)>,
    /// Frames (and datagrams) sent in the window, by message kind (kinds with traffic).
    pub frames: Vec<(&'static str, u64)>,
}

impl fmt::Display for ControlBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "control bytes over {:.0} s: {} directed links, mean {:.0} B/s, max {:.0} B/s per link;",
            self.window_s, self.links, self.mean_per_link, self.max_per_link
        )?;
        for (k, v) in &self.by_kind {
            write!(f, " {k} {v:.0}")?;
        }
        Ok(())
    }
}

/// Installed routes against the full-mesh optimum ([`Sim::route_quality`]). RTTs are the
/// link model's (what a message would take), not the nodes' measurements.
#[derive(Debug, Clone, Default)]
pub struct RouteQuality {
    /// Ordered pairs of running relays looked at.
    pub pairs: usize,
    /// Pairs whose next hops reach the destination.
    pub routed: usize,
    /// Pairs with no route at some hop.
    pub unrouted: usize,
    /// Pairs whose next hops loop.
    pub loops: usize,
    /// Mean path RTT / optimum RTT over the routed pairs.
    pub mean_ratio: f64,
    /// 90th percentile of that ratio.
    pub p90_ratio: f64,
    /// Largest ratio.
    pub max_ratio: f64,
    /// Mean path RTT, ms.
    pub mean_path_ms: f64,
    /// Mean optimum RTT, ms.
    pub mean_optimum_ms: f64,
    /// Mean direct RTT, ms.
    pub mean_direct_ms: f64,
    /// Routed pairs whose path is at least 5 ms (RTT) slower than their direct RTT.
    pub slower_than_direct_5ms: usize,
    /// Routed pairs whose path is at least 5 ms faster than their direct RTT.
    pub faster_than_direct_5ms: usize,
    /// Mean and largest hop count.
    pub mean_hops: f64,
    /// Largest hop count.
    pub max_hops: usize,
}

impl fmt::Display for RouteQuality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |n: usize| 100.0 * n as f64 / self.pairs.max(1) as f64;
        write!(
            f,
            "routes: {} of {} pairs routed ({} unrouted, {} loops); path/optimum mean {:.3}, p90 {:.3}, max {:.3}; \
             mean RTT path {:.1} ms, optimum {:.1} ms, direct {:.1} ms; \
             >= 5 ms slower than direct: {} ({:.1} %), >= 5 ms faster: {} ({:.1} %); hops mean {:.2}, max {}",
            self.routed,
            self.pairs,
            self.unrouted,
            self.loops,
            self.mean_ratio,
            self.p90_ratio,
            self.max_ratio,
            self.mean_path_ms,
            self.mean_optimum_ms,
            self.mean_direct_ms,
            self.slower_than_direct_5ms,
            pct(self.slower_than_direct_5ms),
            self.faster_than_direct_5ms,
            pct(self.faster_than_direct_5ms),
            self.mean_hops,
            self.max_hops
        )
    }
}

/// When every running relay had a route to every other ([`Sim::run_until_converged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Convergence {
    /// Virtual time it happened, µs (`None`: not by the deadline).
    pub at_us: Option<u64>,
    /// Routed ordered pairs at the end, and all of them.
    pub routed: usize,
    /// All ordered pairs of running relays.
    pub pairs: usize,
}

impl Sim {
    /// RTT of the pair as the link model has it now, µs (`None`: cut or not measured).
    fn model_rtt(&self, a: usize, b: usize) -> Option<u64> {
        let p = self.pair(a, b);
        (p.up && p.rtt_us != u32::MAX).then_some(u64::from(p.rtt_us))
    }

    /// Shortest RTT from `src` to every relay over all pairs (the full-mesh optimum),
    /// running relays only. Dense Dijkstra: `O(relays²)`.
    pub fn optimum_from(&self, src: usize) -> Vec<Option<u64>> {
        let n = self.len();
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
                if done[v] || !self.is_alive(v) {
                    continue;
                }
                if let Some(r) = self.model_rtt(u, v) {
                    dist[v] = dist[v].min(dist[u] + r);
                }
            }
        }
        dist.into_iter()
            .map(|d| (d != u64::MAX).then_some(d))
            .collect()
    }

    /// The path relay `s`'s routes take to `d`: `Ok((rtt µs, hops))`, or `Err(true)` for a
    /// loop, `Err(false)` for no route.
    pub fn path(&self, s: usize, d: usize) -> Result<(u64, usize), bool> {
        let mut at = s;
        let mut rtt = 0;
        for hops in 1..=self.len() {
            let nh = self.next_hop(at, d).ok_or(false)?;
            if !self.is_alive(nh) {
                return Err(false);
            }
            rtt += self.model_rtt(at, nh).ok_or(false)?;
            if nh == d {
                return Ok((rtt, hops));
            }
            at = nh;
        }
        Err(true)
    }

    /// Installed routes from `sources` (every running relay when `None`) to every running
    /// relay, against the full-mesh optimum and the direct RTT.
    pub fn route_quality(&self, sources: Option<&[usize]>) -> RouteQuality {
        let all: Vec<usize> = (0..self.len()).filter(|&i| self.is_alive(i)).collect();
        let sources = sources.map_or_else(|| all.clone(), <[usize]>::to_vec);
        let mut q = RouteQuality::default();
        let (mut ratios, mut path_sum, mut opt_sum, mut direct_sum, mut hop_sum) =
            (Vec::new(), 0u64, 0u64, 0u64, 0usize);
        let mut direct_n = 0usize;
        for &s in &sources {
            let opt = self.optimum_from(s);
            for &d in &all {
                if d == s {
                    continue;
                }
                q.pairs += 1;
                match self.path(s, d) {
                    Ok((rtt, hops)) => {
                        q.routed += 1;
                        let o = opt[d].unwrap_or(rtt).max(1);
                        ratios.push(rtt as f64 / o as f64);
                        path_sum += rtt;
                        opt_sum += o;
                        hop_sum += hops;
                        q.max_hops = q.max_hops.max(hops);
                        if let Some(direct) = self.model_rtt(s, d) {
                            direct_sum += direct;
                            direct_n += 1;
                            if rtt >= direct + 5_000 {
                                q.slower_than_direct_5ms += 1;
                            } else if rtt + 5_000 <= direct {
                                q.faster_than_direct_5ms += 1;
                            }
                        }
                    }
                    Err(true) => q.loops += 1,
                    Err(false) => q.unrouted += 1,
                }
            }
        }
        if !ratios.is_empty() {
            let n = ratios.len() as f64;
            q.mean_ratio = ratios.iter().sum::<f64>() / n;
            ratios.sort_by(f64::total_cmp);
            q.p90_ratio = ratios[(ratios.len() * 9 / 10).min(ratios.len() - 1)];
            q.max_ratio = ratios[ratios.len() - 1];
            q.mean_path_ms = path_sum as f64 / n / 1000.0;
            q.mean_optimum_ms = opt_sum as f64 / n / 1000.0;
            q.mean_hops = hop_sum as f64 / n;
        }
        if direct_n > 0 {
            q.mean_direct_ms = direct_sum as f64 / direct_n as f64 / 1000.0;
        }
        q
    }

    /// Ordered pairs of running relays with a route, and all such pairs.
    pub fn routed_pairs(&self) -> (usize, usize) {
        let alive: Vec<usize> = (0..self.len()).filter(|&i| self.is_alive(i)).collect();
        let mut routed = 0;
        for &s in &alive {
            let r = self.node(s).routes();
            routed += alive
                .iter()
                .filter(|&&d| d != s && r.next_hop(self.node(d).id()).is_some())
                .count();
        }
        (routed, alive.len() * alive.len().saturating_sub(1))
    }

    /// Runs until every running relay has a route to every other (checked every
    /// `check_us`), or until `deadline_us`.
    pub fn run_until_converged(&mut self, deadline_us: u64, check_us: u64) -> Convergence {
        loop {
            let (routed, pairs) = self.routed_pairs();
            if routed == pairs {
                return Convergence {
                    at_us: Some(self.now()),
                    routed,
                    pairs,
                };
            }
            if self.now() >= deadline_us {
                return Convergence {
                    at_us: None,
                    routed,
                    pairs,
                };
            }
            let next = (self.now() + check_us).min(deadline_us);
            self.run_until(next);
        }
    }

    /// Starts a new window for [`Self::control_bytes`].
    pub fn reset_control_bytes(&mut self) {
        self.control = ByLink {
            since: self.now(),
            ..ByLink::default()
        };
    }

    /// Control bytes per directed link since the last [`Self::reset_control_bytes`].
    pub fn control_bytes(&self) -> ControlBytes {
        let window_s = (self.now().saturating_sub(self.control.since) as f64 / 1e6).max(1e-6);
        let links = self.control.sent.len();
        let mut by_kind = [0u64; KIND_NAMES.len()];
        let mut max = 0u64;
        let mut total = 0u64;
        for v in self.control.sent.values() {
            let sum: u64 = v.iter().sum();
            max = max.max(sum);
            total += sum;
            for (k, b) in by_kind.iter_mut().zip(v) {
                *k += b;
            }
        }
        let per = |x: u64| x as f64 / window_s / links.max(1) as f64;
        ControlBytes {
            window_s,
            links,
            mean_per_link: per(total),
            max_per_link: max as f64 / window_s,
            by_kind: KIND_NAMES
                .iter()
                .zip(by_kind)
                .filter(|(_, b)| *b > 0)
                .map(|(k, b)| (*k, per(b)))
                .collect(),
            frames: KIND_NAMES
                .iter()
                .zip(self.control.frames)
                .filter(|(_, f)| *f > 0)
                .map(|(k, f)| (*k, f))
                .collect(),
        }
    }
}
