//! Scale experiments: traffic-aware neighbour selection (`route::NeighbourPolicy` with
//! demand and light links) on meshes of 100 to 1,000 relays, then the routing tables
//! (`route::RouteTable`, through [`Sim`]) on the links it chose, judged on the pairs of
//! relays that carry traffic.
//!
//! - [`Matrix`]: RTTs from a `src,dst,rtt_ms` file (the format of
//!   `data/latency/matrix.csv`) with optional positions from a `name,lat,lon,…` file, or
//!   [`Matrix::synthetic`]: several relays per city of a base matrix with small local
//!   RTTs.
//! - [`Traffic`]: which relays send to which: uniform (every relay sends to `k` others)
//!   or skewed pub/sub (a few hot channels with many subscribers, many with few).
//! - [`evolve`]: link choices in rounds of `plan_every_s` seconds (every relay plans with
//!   its own policy; a dial completes in the next round; a link is measured while up and
//!   the measurement is remembered; route metrics are the shortest paths over the routed
//!   links, recomputed every `estimate_every_s`).
//! - [`evaluate`]: the routing tables on the routed links from a cold start, the traffic
//!   pairs' delivered RTT (the installed route, or a light link when that is faster)
//!   against the direct RTT and the full-mesh optimum, control bytes at rest, and the
//!   convergence after the busiest relay dies.
#![allow(dead_code, clippy::needless_range_loop)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::path::Path;

use fastpubsub_core::route::{
    Candidate, Decision, NeighbourConfig, NeighbourPolicy, PeerIntent, RelayId, Role, RouteConfig,
};

use super::topology::{CLOSED_BACKOFF_MAX_S, CLOSED_BACKOFF_S};
use super::{Rng, Sim, within_tolerance};

/// RTTs (µs, `rtt[a][b]` as measured by `a`) and, when known, positions (lat, lon).
#[derive(Clone, Debug)]
pub struct Matrix {
    pub names: Vec<String>,
    pub rtt: Vec<Vec<u32>>,
    pub pos: Option<Vec<(f64, f64)>>,
}

impl Matrix {
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Reads a `src,dst,rtt_ms` file (header line first). A pair given in one direction
    /// only is used for both; a pair missing in both is an error that names it.
    pub fn load(path: &Path) -> Result<Matrix, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read matrix {}: {e}", path.display()))?;
        let mut names: Vec<String> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let mut rows = Vec::new();
        for (no, line) in text.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let [s, d, r] = f[..] else {
                return Err(format!(
                    "{}:{}: expected src,dst,rtt_ms, got {line:?}",
                    path.display(),
                    no + 1
                ));
            };
            let ms: f64 = r.parse().map_err(|e| {
                format!(
                    "{}:{}: rtt_ms {r:?} is not a number: {e}",
                    path.display(),
                    no + 1
                )
            })?;
            if !(ms.is_finite() && ms > 0.0 && ms < 4_000_000.0) {
                return Err(format!(
                    "{}:{}: rtt_ms {ms} out of range (0, 4e6)",
                    path.display(),
                    no + 1
                ));
            }
            let mut id = |n: &str| {
                *index.entry(n.to_string()).or_insert_with(|| {
                    names.push(n.to_string());
                    names.len() - 1
                })
            };
            let (a, b) = (id(s), id(d));
            rows.push((a, b, (ms * 1000.0).round() as u32));
        }
        let n = names.len();
        let mut rtt = vec![vec![0u32; n]; n];
        for (a, b, r) in rows {
            rtt[a][b] = r;
        }
        for a in 0..n {
            for b in 0..n {
                if a != b && rtt[a][b] == 0 {
                    rtt[a][b] = rtt[b][a];
                    if rtt[a][b] == 0 {
                        return Err(format!(
                            "{}: no RTT between {} and {} (either direction)",
                            path.display(),
                            names[a],
                            names[b]
                        ));
                    }
                }
            }
        }
        Ok(Matrix {
            names,
            rtt,
            pos: None,
        })
    }

    /// Adds positions from a `name,lat,lon,…` file (header first); every relay of the
    /// matrix must be in it.
    pub fn with_locations(mut self, path: &Path) -> Result<Matrix, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read locations {}: {e}", path.display()))?;
        let mut at = std::collections::HashMap::new();
        for (no, line) in text.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() < 3 {
                continue;
            }
            let (lat, lon) = match (f[1].parse::<f64>(), f[2].parse::<f64>()) {
                (Ok(a), Ok(b)) if a.abs() <= 90.0 && b.abs() <= 180.0 => (a, b),
                _ => {
                    return Err(format!(
                        "{}:{}: lat,lon {:?},{:?} are not a position",
                        path.display(),
                        no + 1,
                        f[1],
                        f[2]
                    ));
                }
            };
            at.insert(f[0].to_string(), (lat, lon));
        }
        let pos = self
            .names
            .iter()
            .map(|n| {
                at.get(n)
                    .copied()
                    .ok_or_else(|| format!("{}: no location for {n}", path.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.pos = Some(pos);
        Ok(self)
    }

    /// `per_city` relays in every city of `self`: across cities the city RTT ±3 % (per
    /// pair) plus both relays' access RTT (0.2–2 ms each); within a city the access RTTs
    /// plus 0.2 ms.
    pub fn synthetic(&self, per_city: usize, seed: u64) -> Matrix {
        let mut rng = Rng::new(seed);
        let cities = self.len();
        let n = cities * per_city;
        let city = |r: usize| r / per_city;
        let access: Vec<f64> = (0..n)
            .map(|_| 200.0 + 1800.0 * (rng.unit() + 1.0) / 2.0)
            .collect();
        let mut rtt = vec![vec![0u32; n]; n];
        for a in 0..n {
            for b in a + 1..n {
                let (ca, cb) = (city(a), city(b));
                let local = access[a] + access[b];
                let (ab, ba) = if ca == cb {
                    (local + 200.0, local + 200.0)
                } else {
                    let f = 1.0 + 0.03 * rng.unit();
                    (
                        f64::from(self.rtt[ca][cb]) * f + local,
                        f64::from(self.rtt[cb][ca]) * f + local,
                    )
                };
                rtt[a][b] = ab.round() as u32;
                rtt[b][a] = ba.round() as u32;
            }
        }
        Matrix {
            names: (0..n)
                .map(|r| format!("{}-{}", self.names[city(r)], r % per_city))
                .collect(),
            rtt,
            pos: self
                .pos
                .as_ref()
                .map(|p| (0..n).map(|r| p[city(r)]).collect()),
        }
    }

    /// Geography's estimate of the RTT a→b: great circle, fibre at 200 km/ms, paths
    /// 1.5 × longer (as the relay estimates a peer never measured), µs.
    pub fn geo_estimate_us(&self, a: usize, b: usize) -> Option<u32> {
        let p = self.pos.as_ref()?;
        let ((la, oa), (lb, ob)) = (p[a], p[b]);
        let (la, lb) = (la.to_radians(), lb.to_radians());
        let dl = (ob - oa).to_radians();
        let c = (la.sin() * lb.sin() + la.cos() * lb.cos() * dl.cos()).clamp(-1.0, 1.0);
        let km = 6371.0 * c.acos();
        Some((2.0 * 1.5 * km / 200.0 * 1000.0) as u32 + 500)
    }
}

/// Pub/sub traffic: `pairs` (publisher relay, subscriber relay), each once.
#[derive(Clone, Debug)]
pub struct Traffic {
    pub label: String,
    pub pairs: Vec<(usize, usize)>,
    /// `sends[a][b]`: a sends to b.
    pub sends: Vec<Vec<bool>>,
}

impl Traffic {
    fn from_pairs(label: String, n: usize, mut pairs: Vec<(usize, usize)>) -> Traffic {
        pairs.sort_unstable();
        pairs.dedup();
        pairs.retain(|(a, b)| a != b);
        let mut sends = vec![vec![false; n]; n];
        for &(a, b) in &pairs {
            sends[a][b] = true;
        }
        Traffic {
            label,
            pairs,
            sends,
        }
    }

    /// Every relay publishes to subscribers on `k` random other relays.
    pub fn uniform(n: usize, k: usize, seed: u64) -> Traffic {
        let mut rng = Rng::new(seed);
        let mut pairs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for a in 0..n {
            let mut got = 0;
            while got < k.min(n - 1) {
                let b = rng.below(n as u64) as usize;
                if b != a && seen.insert((a, b)) {
                    pairs.push((a, b));
                    got += 1;
                }
            }
        }
        Traffic::from_pairs(format!("uniform, {k} per relay"), n, pairs)
    }

    /// Skewed pub/sub: 5 hot channels, each with subscribers on 10 % of the relays and
    /// publishers on 3; one cold channel per relay, with subscribers on 1–3 relays and
    /// one publisher.
    pub fn skewed(n: usize, seed: u64) -> Traffic {
        let mut rng = Rng::new(seed);
        let mut pairs = Vec::new();
        let pick = |rng: &mut Rng, k: usize| -> Vec<usize> {
            let mut v: Vec<usize> = Vec::new();
            while v.len() < k.min(n) {
                let x = rng.below(n as u64) as usize;
                if !v.contains(&x) {
                    v.push(x);
                }
            }
            v
        };
        for _ in 0..5 {
            let subs = pick(&mut rng, (n / 10).max(2));
            for p in pick(&mut rng, 3) {
                pairs.extend(subs.iter().map(|&s| (p, s)));
            }
        }
        for _ in 0..n {
            let k = 1 + rng.below(3) as usize;
            let subs = pick(&mut rng, k);
            let p = rng.below(n as u64) as usize;
            pairs.extend(subs.iter().map(|&s| (p, s)));
        }
        Traffic::from_pairs(
            "skewed: 5 hot channels (subscribers on 10 % of relays, 3 publishers), one cold channel per relay (1-3 subscriber relays)".into(),
            n,
            pairs,
        )
    }
}

/// How relays choose links in [`evolve`].
#[derive(Clone, Copy, Debug)]
pub struct EvolveConfig {
    pub policy: NeighbourConfig,
    /// Simulated time, s.
    pub seconds: u64,
    /// Every relay plans once per round of this many seconds (the relay plans every
    /// 250 ms; decisions only change when their inputs do).
    pub plan_every_s: u64,
    /// Route metrics (shortest paths over the routed links) are recomputed this often.
    pub estimate_every_s: u64,
    /// Every relay knows relay 0 at once and the others after this long (gossip).
    pub discover_s: u64,
    pub seed: u64,
}

impl EvolveConfig {
    pub fn new(policy: NeighbourConfig, seconds: u64, n: usize) -> Self {
        Self {
            policy,
            seconds,
            plan_every_s: if n > 300 { 10 } else { 5 },
            estimate_every_s: if n > 300 { 120 } else { 20 },
            discover_s: 5,
            seed: 3,
        }
    }
}

const NONE: u8 = 0;
const ROUTED: u8 = 1;
const LIGHT: u8 = 2;

/// The links [`evolve`] ended with, and how much they changed.
#[derive(Clone, Debug)]
pub struct Links {
    /// `kind[a][b]`: NONE, ROUTED or LIGHT (symmetric).
    pub kind: Vec<Vec<u8>>,
    /// Each end's last role for the link (`role[a][b]`: a's), as `Role` codes.
    pub role: Vec<Vec<u8>>,
    pub opened: u64,
    pub closed: u64,
    /// Opened + closed + kind changes in the last `tail_s` seconds.
    pub tail_changes: u64,
    pub tail_s: u64,
    /// Of `tail_changes`: closes of links by their role at the closing end (role code
    /// index), and kind changes (routed ⇄ light).
    pub tail_closes_by_role: [u64; 11],
    pub tail_kind_changes: u64,
    /// Unserved traffic destinations summed over relays in the last round.
    pub unserved: usize,
    pub peer_refused: u64,
    /// Wall time of the run, s.
    pub wall_s: f64,
}

impl Links {
    pub fn routed(&self) -> Vec<(usize, usize)> {
        self.pairs(ROUTED)
    }

    pub fn light(&self) -> Vec<(usize, usize)> {
        self.pairs(LIGHT)
    }

    fn pairs(&self, k: u8) -> Vec<(usize, usize)> {
        let n = self.kind.len();
        let mut v = Vec::new();
        for a in 0..n {
            for b in a + 1..n {
                if self.kind[a][b] == k {
                    v.push((a, b));
                }
            }
        }
        v
    }

    /// Links per relay of one kind (ROUTED, LIGHT) or all (NONE): (mean, max).
    pub fn degree(&self, k: u8) -> (f64, usize) {
        let n = self.kind.len();
        let deg: Vec<usize> = (0..n)
            .map(|a| {
                (0..n)
                    .filter(|&b| {
                        let x = self.kind[a][b];
                        if k == NONE { x != NONE } else { x == k }
                    })
                    .count()
            })
            .collect();
        (
            deg.iter().sum::<usize>() as f64 / n.max(1) as f64,
            deg.iter().copied().max().unwrap_or(0),
        )
    }
}

fn role_code(r: Role) -> u8 {
    match r {
        Role::Full => 1,
        Role::Near => 2,
        Role::LongRange => 3,
        Role::Explore => 4,
        Role::Spare => 5,
        Role::Demand => 6,
        Role::Light => 7,
        Role::PeerDemand => 8,
        Role::PeerLight => 9,
        _ => 10,
    }
}

/// What the far end sees of a role.
fn intent_of(code: u8) -> PeerIntent {
    match code {
        6 => PeerIntent::Demand,
        7 => PeerIntent::Light,
        _ => PeerIntent::None,
    }
}

/// Whether an end with this role needs the link routed (Some(true)), light
/// (Some(false)), or does not mind (None: spare, or no role).
fn wants_routed(code: u8) -> Option<bool> {
    match code {
        1 | 2 | 3 | 4 | 6 | 8 => Some(true),
        7 | 9 => Some(false),
        _ => None,
    }
}

/// Shortest RTT paths (µs) from `src` over the routed links (`adj`), without the link
/// `cut` when given, stopping once `target` is settled when given.
fn dijkstra(
    rtt: &[Vec<u32>],
    adj: &[Vec<usize>],
    src: usize,
    dist: &mut [u32],
    cut: Option<(usize, usize)>,
    target: Option<usize>,
) {
    dist.fill(u32::MAX);
    dist[src] = 0;
    let mut heap = BinaryHeap::new();
    heap.push(Reverse((0u32, src)));
    while let Some(Reverse((du, u))) = heap.pop() {
        if du > dist[u] {
            continue;
        }
        if Some(u) == target {
            return;
        }
        for &v in &adj[u] {
            if cut.is_some_and(|(x, y)| (u, v) == (x, y) || (u, v) == (y, x)) {
                continue;
            }
            let nd = du.saturating_add(rtt[u][v]);
            if nd < dist[v] {
                dist[v] = nd;
                heap.push(Reverse((nd, v)));
            }
        }
    }
}

/// Link choices for `cfg.seconds` under every relay's `NeighbourPolicy`.
pub fn evolve(m: &Matrix, traffic: &Traffic, cfg: &EvolveConfig) -> Links {
    #[allow(clippy::disallowed_methods)] // reports the wall time the simulation took
    let wall = std::time::Instant::now();
    let n = m.len();
    let rtt = &m.rtt;
    let mut rng = Rng::new(cfg.seed);
    let mut kind = vec![vec![NONE; n]; n];
    let mut role = vec![vec![0u8; n]; n];
    let mut since = vec![vec![0u32; n]; n];
    let mut meas = vec![vec![0u32; n]; n];
    // Until when a may not dial b: for an ordinary link (b closed ours as a spare), for a
    // demand or light link (b closed one of those: its caps were full).
    let mut backoff = vec![vec![0u32; n]; n];
    let mut backoff_traffic = vec![vec![0u32; n]; n];
    let mut closed_by = vec![vec![0u8; n]; n];
    let mut dialing: Vec<(usize, usize, u8)> = Vec::new();
    let mut pending = vec![vec![false; n]; n];
    let mut dist = vec![vec![u32::MAX; n]; n];
    let mut via_others: Vec<Vec<(usize, u32)>> = vec![Vec::new(); n];
    let mut scratch = vec![u32::MAX; n];
    let mut dirty = vec![false; n];
    let mut relay_gain = vec![0u32; n];
    let pick: Vec<Vec<u32>> = (0..n)
        .map(|_| (0..n).map(|_| rng.next_u64() as u32).collect())
        .collect();
    let mut policies: Vec<NeighbourPolicy> =
        (0..n).map(|_| NeighbourPolicy::new(cfg.policy)).collect();
    let tail_s = 600.min(cfg.seconds / 2);
    let mut links = Links {
        kind: Vec::new(),
        role: Vec::new(),
        opened: 0,
        closed: 0,
        tail_changes: 0,
        tail_s,
        tail_closes_by_role: [0; 11],
        tail_kind_changes: 0,
        unserved: 0,
        peer_refused: 0,
        wall_s: 0.0,
    };
    let mut order: Vec<usize> = (0..n).collect();
    let mut cands: Vec<Candidate> = Vec::with_capacity(n);
    let mut ids: Vec<usize> = Vec::with_capacity(n);
    let mut out = vec![Decision::Idle; n];
    for a in 1..n {
        dialing.push((a, 0, ROUTED));
        pending[a][0] = true;
        pending[0][a] = true;
    }
    let mut t = 0u64;
    let mut next_estimate = 0u64;
    while t < cfg.seconds {
        let in_tail = t >= cfg.seconds - tail_s;
        for (a, b, k) in std::mem::take(&mut dialing) {
            pending[a][b] = false;
            pending[b][a] = false;
            if kind[a][b] == NONE {
                kind[a][b] = k;
                kind[b][a] = k;
                dirty[a] |= k == ROUTED;
                dirty[b] |= k == ROUTED;
                since[a][b] = t as u32;
                since[b][a] = t as u32;
                role[b][a] = 0;
                links.opened += 1;
                links.tail_changes += u64::from(in_tail);
            }
        }
        // The prober's smoothed RTT: ±3 % per probe, four probes a second, so about ±1 %
        // over a round of 5-10 s, smoothed with gain 1/4 per round.
        for a in 0..n {
            for b in 0..n {
                if kind[a][b] != NONE {
                    let f = 1.0 + 0.01 * rng.unit();
                    let sample = ((f64::from(rtt[a][b]) * f) as u32).max(1);
                    meas[a][b] = if meas[a][b] == 0 {
                        sample
                    } else {
                        ((3 * u64::from(meas[a][b]) + u64::from(sample)) / 4) as u32
                    };
                }
            }
        }
        // Route metrics: every `estimate_every_s` for everyone, at once for the ends of a
        // routed link that changed (the relay's routes follow within a second or two).
        // For a routed link to a traffic destination, the best path avoiding it (what
        // `RouteInfo::via_others` gives the relay).
        let full = t >= next_estimate;
        if full || dirty.iter().any(|d| *d) {
            let adj: Vec<Vec<usize>> = (0..n)
                .map(|a| (0..n).filter(|&b| kind[a][b] == ROUTED).collect())
                .collect();
            for a in 0..n {
                if !(full || dirty[a]) {
                    continue;
                }
                dirty[a] = false;
                dijkstra(rtt, &adj, a, &mut dist[a], None, None);
                // The paths avoiding a routed link to a traffic destination: with the
                // full estimates only (they cost a search each).
                if full {
                    via_others[a].clear();
                    for &b in &adj[a] {
                        if traffic.sends[a][b] {
                            dijkstra(rtt, &adj, a, &mut scratch, Some((a, b)), Some(b));
                            via_others[a].push((b, scratch[b]));
                        }
                    }
                }
            }
            if full {
                next_estimate = t + cfg.estimate_every_s;
            }
        }
        for i in (1..n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        links.unserved = 0;
        let nbrs: Vec<Vec<usize>> = (0..n)
            .map(|x| (0..n).filter(|&y| kind[x][y] == ROUTED).collect())
            .collect();
        for &a in &order {
            cands.clear();
            ids.clear();
            // One-hop detours through a relay next to a traffic destination (what the
            // relay learns from the destination's announced links): the RTT to it
            // (measured, else estimated) plus its measured link to the destination,
            // against the faster of the overlay and a light link to the destination.
            relay_gain.iter_mut().for_each(|g| *g = 0);
            for d in 0..n {
                if !traffic.sends[a][d] || dist[a][d] == u32::MAX {
                    continue;
                }
                let mut base = dist[a][d];
                if kind[a][d] == LIGHT && meas[a][d] != 0 {
                    base = base.min(meas[a][d]);
                }
                for &x in &nbrs[d] {
                    let to_x = if meas[a][x] != 0 {
                        meas[a][x]
                    } else {
                        dist[a][x]
                    };
                    if x == a || to_x == u32::MAX || meas[x][d] == 0 {
                        continue;
                    }
                    let via = to_x.saturating_add(meas[x][d]);
                    relay_gain[x] = relay_gain[x].max(base.saturating_sub(via));
                }
            }
            let known = |b: usize| t >= cfg.discover_s || b == 0 || kind[a][b] != NONE;
            for b in 0..n {
                if b == a || !known(b) {
                    continue;
                }
                let linked = kind[a][b] != NONE;
                let overlay = if kind[a][b] == ROUTED {
                    via_others[a]
                        .iter()
                        .find(|(x, _)| *x == b)
                        .map(|(_, d)| *d)
                        .filter(|d| *d != u32::MAX)
                } else if dist[a][b] == u32::MAX {
                    None
                } else {
                    Some(dist[a][b])
                };
                let estimate = if dist[a][b] == u32::MAX {
                    m.geo_estimate_us(a, b)
                } else {
                    Some(dist[a][b])
                };
                cands.push(Candidate {
                    up_since_us: linked.then(|| u64::from(since[a][b]) * 1_000_000),
                    dialing: pending[a][b],
                    rtt_us: (meas[a][b] != 0).then_some(meas[a][b]),
                    estimate_us: estimate,
                    dialable: u64::from(backoff_traffic[a][b]) <= t,
                    spare_closed: u64::from(backoff[a][b]) > t,
                    pick: pick[a][b],
                    traffic: traffic.sends[a][b],
                    overlay_rtt_us: overlay,
                    relay_gain_us: (relay_gain[b] > 0).then_some(relay_gain[b]),
                    light: kind[a][b] == LIGHT,
                    peer: if linked {
                        intent_of(role[b][a])
                    } else {
                        PeerIntent::None
                    },
                    ..Candidate::new(RelayId(b as u64))
                });
                ids.push(b);
            }
            let o = &mut out[..cands.len()];
            let sum = policies[a]
                .plan(t * 1_000_000, &cands, o)
                .expect("one slot per candidate");
            links.unserved += sum.unserved;
            links.peer_refused += sum.peer_refused as u64;
            for (k, d) in o.iter().enumerate() {
                let b = ids[k];
                match *d {
                    Decision::Dial(r) if !pending[a][b] && kind[a][b] == NONE => {
                        role[a][b] = role_code(r);
                        dialing.push((a, b, if r.is_light() { LIGHT } else { ROUTED }));
                        pending[a][b] = true;
                        pending[b][a] = true;
                    }
                    Decision::Keep(r) if kind[a][b] != NONE => {
                        role[a][b] = role_code(r);
                        // Routed when either end needs it routed; light when one end
                        // wants it light and the other does not mind.
                        let want = match (wants_routed(role[a][b]), wants_routed(role[b][a])) {
                            (Some(true), _) | (_, Some(true)) => ROUTED,
                            (Some(false), _) | (_, Some(false)) => LIGHT,
                            _ => kind[a][b],
                        };
                        if want != kind[a][b] {
                            kind[a][b] = want;
                            kind[b][a] = want;
                            dirty[a] = true;
                            dirty[b] = true;
                            links.tail_kind_changes += u64::from(in_tail);
                            links.tail_changes += u64::from(in_tail);
                        }
                    }
                    Decision::Close if kind[a][b] != NONE => {
                        if in_tail {
                            links.tail_closes_by_role[usize::from(role[a][b]).min(10)] += 1;
                        }
                        dirty[a] |= kind[a][b] == ROUTED;
                        dirty[b] |= kind[a][b] == ROUTED;
                        // b waits before dialling a again: for an ordinary link when a
                        // closed one as its spare, for a demand or light one when a closed
                        // one of those (its caps were full).
                        let k = closed_by[b][a].min(4);
                        closed_by[b][a] = closed_by[b][a].saturating_add(1);
                        let until = (t + (CLOSED_BACKOFF_S << k).min(CLOSED_BACKOFF_MAX_S)) as u32;
                        if intent_of(role[b][a]) == PeerIntent::None {
                            backoff[b][a] = until;
                        } else {
                            backoff_traffic[b][a] = until;
                        }
                        kind[a][b] = NONE;
                        kind[b][a] = NONE;
                        role[a][b] = 0;
                        role[b][a] = 0;
                        links.closed += 1;
                        links.tail_changes += u64::from(in_tail);
                    }
                    _ => {}
                }
            }
        }
        t += cfg.plan_every_s;
    }
    links.kind = kind;
    links.role = role;
    links.wall_s = wall.elapsed().as_secs_f64();
    links
}

/// The outcome of [`evaluate`], one row of the scale table.
#[derive(Clone, Debug, Default)]
pub struct ScaleReport {
    pub label: String,
    pub relays: usize,
    pub traffic_pairs: usize,
    /// Traffic pairs whose delivered RTT is ≥ 5 ms above the direct RTT.
    pub slow: usize,
    /// Median excess over direct of those, ms.
    pub slow_median_ms: f64,
    /// Σ delivered RTT / Σ full-mesh optimal RTT, over the traffic pairs.
    pub stretch: f64,
    /// Traffic pairs that go over a light link (faster than the overlay).
    pub via_light: usize,
    /// Traffic pairs whose installed route is their direct routed link.
    pub direct_routed: usize,
    /// All ordered pairs ≥ 5 ms slower than direct (routes only, no light links).
    pub all_slow: usize,
    pub all_pairs: usize,
    pub routed_links: usize,
    pub light_links: usize,
    /// Routed links per relay (mean, max), connections (routed + light) per relay.
    pub routed_degree: (f64, usize),
    pub conn_degree: (f64, usize),
    /// Routing bytes per link and direction per second at rest (with `EvalConfig::noise_ppm` RTT noise).
    pub control_bps: f64,
    /// Cold start: traffic pairs within max(1 ms, 1 %) of the optimum over the links.
    pub cold_start: Convergence,
    /// After the relay on most traffic paths died: again within.
    pub relay_death: Convergence,
    pub dead_relay: String,
    /// Link changes per relay per hour, in the last `tail_s` (≤ 600) s of the link choices.
    pub churn_per_hour: f64,
    pub unserved: usize,
    pub peer_refused: u64,
    /// Longest installed path of a traffic pair, hops.
    pub max_hops: usize,
    pub evolve_wall_s: f64,
    pub routing_wall_s: f64,
}

/// Full-mesh optimal RTT from `src` (dense Dijkstra on the matrix), µs.
fn full_mesh_from(rtt: &[Vec<u32>], src: usize) -> Vec<u64> {
    let n = rtt.len();
    let mut dist = vec![u64::MAX; n];
    let mut done = vec![false; n];
    dist[src] = 0;
    for _ in 0..n {
        let mut u = usize::MAX;
        let mut best = u64::MAX;
        for v in 0..n {
            if !done[v] && dist[v] < best {
                best = dist[v];
                u = v;
            }
        }
        if u == usize::MAX {
            break;
        }
        done[u] = true;
        for v in 0..n {
            let nd = best + u64::from(rtt[u][v]);
            if v != u && nd < dist[v] {
                dist[v] = nd;
            }
        }
    }
    dist
}

/// How fast routes settled: 99 % of the pairs within max(1 ms, 1 %) of the optimum over
/// the links, then all of them; or, at the limit, how many were still off and by how much.
#[derive(Clone, Copy, Debug, Default)]
pub struct Convergence {
    pub t99_s: Option<f64>,
    pub all_s: Option<f64>,
    pub left: usize,
    pub worst_excess_us: u64,
}

impl Convergence {
    fn text(&self) -> String {
        let t99 = self.t99_s.map_or("-".into(), |t| format!("{t:.0} s"));
        match self.all_s {
            Some(t) => format!("{t99} / {t:.0} s"),
            None => format!(
                "{t99} / {} off by ≤ {:.1} ms at 120 s",
                self.left,
                self.worst_excess_us as f64 / 1000.0
            ),
        }
    }
}

/// Runs the tables, checking every second, until every pair in `pairs` is within
/// tolerance of the optimum over the links or `limit_us` passed.
fn converge_pairs(sim: &mut Sim, pairs: &[(usize, usize)], limit_us: u64) -> Convergence {
    let t0 = sim.now;
    let mut opt_from: std::collections::HashMap<usize, Vec<Option<u64>>> =
        std::collections::HashMap::new();
    for &(a, _) in pairs {
        opt_from.entry(a).or_insert_with(|| sim.dijkstra(a));
    }
    let mut c = Convergence::default();
    loop {
        let mut off = 0;
        let mut worst = 0;
        for &(a, d) in pairs {
            if let Some(o) = opt_from[&a][d] {
                match sim.path_cost(a, d) {
                    Some(g) if within_tolerance(g, o) => {}
                    g => {
                        off += 1;
                        worst = worst.max(g.map_or(u64::MAX, |g| g - o));
                    }
                }
            }
        }
        let secs = (sim.now - t0) as f64 / 1e6;
        if c.t99_s.is_none() && off * 100 <= pairs.len() {
            c.t99_s = Some(secs);
        }
        if off == 0 {
            c.all_s = Some(secs);
            return c;
        }
        if sim.now >= t0 + limit_us {
            c.left = off;
            c.worst_excess_us = worst;
            if std::env::var_os("SCALE_DEBUG").is_some() {
                for &(a, d) in pairs.iter().take(10_000) {
                    let Some(o) = opt_from[&a][d] else { continue };
                    if !sim.path_cost(a, d).is_some_and(|g| within_tolerance(g, o)) {
                        eprintln!(
                            "not converged {a}->{d}: path {:?} cost {:?} opt {o} route {:?}",
                            sim.path(a, d),
                            sim.path_cost(a, d),
                            sim.table(a).route(RelayId(d as u64))
                        );
                    }
                }
            }
            return c;
        }
        let t = sim.now + 1_000_000;
        sim.run_until(t);
    }
}

/// The routing tables on `links`' routed links; the traffic pairs judged against the
/// direct RTT and the full-mesh optimum (see [`ScaleReport`]).
/// What [`evaluate`] measures besides the traffic pairs' routes after a cold start.
#[derive(Clone, Copy, Debug)]
pub struct EvalConfig {
    pub route: RouteConfig,
    /// Seconds of routing at rest (with `noise_ppm` RTT noise) to count control bytes; 0
    /// skips it.
    pub at_rest_s: u64,
    /// Kill the relay on most traffic paths and time the routes' recovery.
    pub kill_busiest: bool,
    /// RTT noise on every measurement at rest, parts per million (±).
    pub noise_ppm: u32,
}

impl EvalConfig {
    /// Everything, with the default routing configuration.
    pub fn full() -> Self {
        Self {
            route: RouteConfig::default(),
            at_rest_s: 60,
            kill_busiest: true,
            noise_ppm: 20_000,
        }
    }

    /// Only the routes after a cold start (for tests).
    pub fn quick() -> Self {
        Self {
            at_rest_s: 0,
            kill_busiest: false,
            ..Self::full()
        }
    }
}

pub fn evaluate(
    label: &str,
    m: &Matrix,
    traffic: &Traffic,
    links: &Links,
    ec: EvalConfig,
) -> ScaleReport {
    #[allow(clippy::disallowed_methods)] // reports the wall time the simulation took
    let wall = std::time::Instant::now();
    let n = m.len();
    let rtt = &m.rtt;
    let mut sim = Sim::new(n, ec.route, 7);
    sim.check_every_us = 1_000_000;
    let routed = links.routed();
    let all: Vec<_> = routed
        .iter()
        .map(|&(a, b)| (a, b, rtt[a][b], rtt[b][a]))
        .collect();
    sim.add_links(&all);
    let cold_start = converge_pairs(&mut sim, &traffic.pairs, 120_000_000);
    // At rest, with `noise_ppm` noise on every measurement: the routing bytes on the links.
    let mut control_bps = 0.0;
    if ec.at_rest_s > 0 {
        sim.noise_ppm = ec.noise_ppm;
        sim.run_until(sim.now + 20_000_000);
        let bytes0 = sim.bytes_sent;
        sim.run_until(sim.now + ec.at_rest_s * 1_000_000);
        control_bps = (sim.bytes_sent - bytes0) as f64
            / (2 * routed.len()).max(1) as f64
            / ec.at_rest_s as f64;
        sim.noise_ppm = 0;
        sim.run_until(sim.now + 10_000_000);
    }

    // Delivered RTT of each traffic pair: the installed route, or a light link between
    // the two when that is faster.
    let mut rep = ScaleReport {
        label: label.to_string(),
        relays: n,
        traffic_pairs: traffic.pairs.len(),
        routed_links: routed.len(),
        light_links: links.light().len(),
        routed_degree: links.degree(ROUTED),
        conn_degree: links.degree(NONE),
        control_bps,
        cold_start,
        churn_per_hour: links.tail_changes as f64 * 3600.0 / links.tail_s.max(1) as f64 / n as f64,
        unserved: links.unserved,
        peer_refused: links.peer_refused,
        evolve_wall_s: links.wall_s,
        ..ScaleReport::default()
    };
    let mut opt_cache: std::collections::HashMap<usize, Vec<u64>> =
        std::collections::HashMap::new();
    let (mut sum_got, mut sum_opt) = (0.0, 0.0);
    let mut excess = Vec::new();
    for &(a, d) in &traffic.pairs {
        let direct = f64::from(rtt[a][d]) / 1000.0;
        let overlay = sim.path_rtt_ms(a, d).unwrap_or(f64::INFINITY);
        let light = (links.kind[a][d] == LIGHT).then_some(direct);
        // Light links of a: to d, or to a relay whose route then takes it to d.
        let mut best_light = light.unwrap_or(f64::INFINITY);
        for x in 0..n {
            if x != d
                && links.kind[a][x] == LIGHT
                && let Some(p) = sim.path_rtt_ms(x, d)
            {
                best_light = best_light.min(f64::from(rtt[a][x]) / 1000.0 + p);
            }
        }
        let got = if best_light < overlay {
            rep.via_light += 1;
            best_light
        } else {
            overlay
        };
        if sim.next_hop(a, d) == Some(d) && light.is_none() {
            rep.direct_routed += 1;
        }
        rep.max_hops = rep.max_hops.max(sim.path(a, d).len());
        let opt = opt_cache.entry(a).or_insert_with(|| full_mesh_from(rtt, a));
        sum_got += got;
        sum_opt += opt[d] as f64 / 1000.0;
        if got - direct >= 5.0 {
            rep.slow += 1;
            excess.push(got - direct);
            if std::env::var_os("SCALE_DEBUG").is_some() && rep.slow <= 10 {
                eprintln!(
                    "slow {a}->{d}: direct {direct:.1} got {got:.1} kind {} roles {}/{} path {:?}",
                    links.kind[a][d],
                    links.role[a][d],
                    links.role[d][a],
                    sim.path(a, d)
                );
            }
        }
    }
    excess.sort_by(f64::total_cmp);
    rep.slow_median_ms = excess.get(excess.len() / 2).copied().unwrap_or(0.0);
    rep.stretch = sum_got / sum_opt.max(1e-9);
    // All pairs (routes only) on meshes small enough to walk them all.
    if n <= 200 {
        for a in 0..n {
            for d in 0..n {
                if a != d {
                    rep.all_pairs += 1;
                    let p = sim.path_rtt_ms(a, d).unwrap_or(f64::INFINITY);
                    if p - f64::from(rtt[a][d]) / 1000.0 >= 5.0 {
                        rep.all_slow += 1;
                    }
                }
            }
        }
    }
    if !ec.kill_busiest {
        rep.routing_wall_s = wall.elapsed().as_secs_f64();
        return rep;
    }
    // The relay on most traffic paths dies: its links go down; the other traffic pairs
    // must come back within tolerance of the new optimum.
    let mut through = vec![0usize; n];
    for &(a, d) in &traffic.pairs {
        let p = sim.path(a, d);
        for &h in p.iter().take(p.len().saturating_sub(1)) {
            through[h] += 1;
        }
    }
    let dead = (0..n).max_by_key(|&r| through[r]).unwrap_or(0);
    rep.dead_relay = m.names[dead].clone();
    for b in sim.links_of(dead).to_vec() {
        sim.link_down(dead, b);
    }
    let rest: Vec<(usize, usize)> = traffic
        .pairs
        .iter()
        .copied()
        .filter(|&(a, d)| a != dead && d != dead)
        .collect();
    rep.relay_death = converge_pairs(&mut sim, &rest, 120_000_000);
    rep.routing_wall_s = wall.elapsed().as_secs_f64();
    rep
}

impl ScaleReport {
    /// The line the issue asks for.
    pub fn slow_line(&self) -> String {
        format!(
            "traffic pairs >= 5 ms slower than direct: {} of {} ({:.1} %)",
            self.slow,
            self.traffic_pairs,
            100.0 * self.slow as f64 / self.traffic_pairs.max(1) as f64
        )
    }

    pub fn header() -> &'static str {
        "| run | traffic pairs ≥ 5 ms slower than direct (median excess) | traffic pairs' mean RTT / full-mesh optimum | traffic pairs direct (routed link / light link) | routed links per relay (mean / max) | connections per relay (mean / max) | route control B/s per link and direction at rest | cold start: traffic routes within max(1 ms, 1 %) of the optimum over the links (99 % / all) | busiest relay dies: again within (99 % / all) | link changes per relay per hour (last 10 min) | unserved gains (last round) | all pairs ≥ 5 ms slower (routes only) |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    }

    pub fn row(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "| {} | {} / {} = {:.1} % ({:.1} ms) | {:.3} | {} / {} | {:.1} / {} | {:.1} / {} | {:.1} | {} | {} | {:.1} | {} | {} |",
            self.label,
            self.slow,
            self.traffic_pairs,
            100.0 * self.slow as f64 / self.traffic_pairs.max(1) as f64,
            self.slow_median_ms,
            self.stretch,
            self.direct_routed,
            self.via_light,
            self.routed_degree.0,
            self.routed_degree.1,
            self.conn_degree.0,
            self.conn_degree.1,
            self.control_bps,
            self.cold_start.text(),
            self.relay_death.text(),
            self.churn_per_hour,
            self.unserved,
            if self.all_pairs > 0 {
                format!(
                    "{:.1} %",
                    100.0 * self.all_slow as f64 / self.all_pairs as f64
                )
            } else {
                "-".into()
            },
        );
        s
    }
}
