//! Virtual-time harness for `core::route`: N routing tables, a link model with
//! per-direction delays, a seeded PRNG, `step`/`run_until`. Drives only the public API.
//!
//! Shared by the `route_*` integration tests and `examples/route_sim.rs`.
#![allow(dead_code, clippy::needless_range_loop)]

pub mod scale;
pub mod topology;

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};

use fastpubsub_core::route::{
    LinkMeasurement, Message, Metric, Recipient, RelayId, RouteConfig, RouteEvent, RouteTable,
    Seqno,
};

/// xorshift64* — small, seeded, good enough for simulations.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in `[-1, 1]`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

enum Kind {
    /// The head of the FIFO queue of link from→to is due.
    Link {
        from: usize,
        to: usize,
    },
    Timer {
        node: usize,
    },
    Measure,
}

struct Item {
    at: u64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    // Reversed: BinaryHeap is a max-heap, we want the earliest first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// A mesh of `n` routing tables in virtual time. Node `i` is `RelayId(i)`.
pub struct Sim {
    pub now: u64,
    pub cfg: RouteConfig,
    nodes: Vec<RouteTable>,
    /// Nominal RTT a→b in µs as measured by a (0 = no link).
    rtt: Vec<Vec<u32>>,
    up: Vec<Vec<bool>>,
    /// Up links of each node (the same as `up`, as lists).
    adj: Vec<Vec<usize>>,
    /// Relative noise on each reported RTT, ± this many ppm.
    pub noise_ppm: u32,
    /// Share of routing messages lost on the way, ppm (the digests repair it).
    pub loss_ppm: u32,
    /// How often every link's measurement is reported.
    pub measure_interval_us: u64,
    /// How often [`Sim::converge`] checks the routes (checks cost O(n² × hops)).
    pub check_every_us: u64,
    heap: BinaryHeap<Item>,
    /// Per directed link, messages in flight in FIFO order (arrival time, message).
    queues: HashMap<(usize, usize), VecDeque<(u64, Message)>>,
    seq: u64,
    armed: Vec<u64>,
    pub rng: Rng,
    /// Next-hop changes reported through `poll_event`.
    pub route_changes: u64,
    /// Route events kept when `keep_events` is set.
    pub events: Vec<(usize, RouteEvent)>,
    pub keep_events: bool,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost (`loss_ppm`).
    pub lost: u64,
    /// Encoded bytes of every routing message put on a link (postcard, no framing).
    pub bytes_sent: u64,
    pub steps: u64,
}

impl Sim {
    /// `n` tables with `cfg` (capacities raised to `n` when lower: the harness models
    /// links, not the table's limits), seeded PRNG.
    pub fn new(n: usize, cfg: RouteConfig, seed: u64) -> Self {
        let mut cfg = cfg;
        cfg.max_destinations = cfg.max_destinations.max(n);
        cfg.max_neighbours = cfg.max_neighbours.max(n);
        let mut nodes = Vec::with_capacity(n);
        let mut rng = Rng::new(seed);
        for i in 0..n {
            let seqno = Seqno(rng.below(65_536) as u16);
            let t = RouteTable::new(RelayId(i as u64), seqno, cfg, 0).expect("valid config");
            nodes.push(t);
        }
        let mut sim = Sim {
            now: 0,
            cfg,
            nodes,
            rtt: vec![vec![0; n]; n],
            up: vec![vec![false; n]; n],
            adj: vec![Vec::new(); n],
            noise_ppm: 0,
            loss_ppm: 0,
            measure_interval_us: 1_000_000,
            check_every_us: 100_000,
            heap: BinaryHeap::new(),
            queues: HashMap::new(),
            seq: 0,
            armed: vec![u64::MAX; n],
            rng,
            route_changes: 0,
            events: Vec::new(),
            keep_events: false,
            delivered: 0,
            lost: 0,
            bytes_sent: 0,
            steps: 0,
        };
        for i in 0..n {
            sim.after_input(i);
        }
        sim.push(sim.measure_interval_us, Kind::Measure);
        sim
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn table(&self, i: usize) -> &RouteTable {
        &self.nodes[i]
    }

    fn push(&mut self, at: u64, kind: Kind) {
        self.seq += 1;
        self.heap.push(Item {
            at,
            seq: self.seq,
            kind,
        });
    }

    fn measurement(&mut self, a: usize, b: usize) -> LinkMeasurement {
        let nominal = f64::from(self.rtt[a][b]);
        let f = 1.0 + self.rng.unit() * f64::from(self.noise_ppm) / 1e6;
        LinkMeasurement::from_rtt_us((nominal * f).round() as u32)
    }

    /// Brings the link a–b up (or changes its RTTs), reported to both ends now.
    pub fn set_link(&mut self, a: usize, b: usize, rtt_ab_us: u32, rtt_ba_us: u32) {
        self.rtt[a][b] = rtt_ab_us;
        self.rtt[b][a] = rtt_ba_us;
        self.mark_up(a, b);
        for (x, y) in [(a, b), (b, a)] {
            let m = self.measurement(x, y);
            self.nodes[x]
                .handle_link_metric(RelayId(y as u64), m, self.now)
                .expect("neighbour capacity");
            self.after_input(x);
        }
    }

    /// Brings many links up at once `(a, b, rtt_ab_us, rtt_ba_us)`; outputs are
    /// drained after all of them (what a relay does when it starts with its peers).
    pub fn add_links(&mut self, links: &[(usize, usize, u32, u32)]) {
        for &(a, b, ab, ba) in links {
            self.rtt[a][b] = ab;
            self.rtt[b][a] = ba;
            self.mark_up(a, b);
            for (x, y) in [(a, b), (b, a)] {
                let m = self.measurement(x, y);
                self.nodes[x]
                    .handle_link_metric(RelayId(y as u64), m, self.now)
                    .expect("neighbour capacity");
            }
        }
        for i in 0..self.nodes.len() {
            self.after_input(i);
        }
    }

    fn mark_up(&mut self, a: usize, b: usize) {
        if !self.up[a][b] {
            self.up[a][b] = true;
            self.up[b][a] = true;
            self.adj[a].push(b);
            self.adj[b].push(a);
        }
    }

    /// Up links of node `a`.
    pub fn links_of(&self, a: usize) -> &[usize] {
        &self.adj[a]
    }

    /// Changes the RTT of an up link; the ends learn it at the next measurement.
    pub fn set_rtt(&mut self, a: usize, b: usize, rtt_ab_us: u32, rtt_ba_us: u32) {
        self.rtt[a][b] = rtt_ab_us;
        self.rtt[b][a] = rtt_ba_us;
    }

    /// Takes the link a–b down; both ends are told now, messages in flight are lost.
    pub fn link_down(&mut self, a: usize, b: usize) {
        if !self.up[a][b] {
            return;
        }
        self.up[a][b] = false;
        self.up[b][a] = false;
        self.adj[a].retain(|&x| x != b);
        self.adj[b].retain(|&x| x != a);
        self.queues.remove(&(a, b));
        self.queues.remove(&(b, a));
        for (x, y) in [(a, b), (b, a)] {
            self.nodes[x]
                .handle_link_down(RelayId(y as u64), self.now)
                .expect("was a neighbour");
            self.after_input(x);
        }
    }

    pub fn is_up(&self, a: usize, b: usize) -> bool {
        self.up[a][b]
    }

    pub fn rtt(&self, a: usize, b: usize) -> u32 {
        self.rtt[a][b]
    }

    /// The nominal (noise-free) link cost a→b, as the table computes it.
    pub fn link_cost(&self, a: usize, b: usize) -> u64 {
        u64::from(
            LinkMeasurement::from_rtt_us(self.rtt[a][b])
                .cost(&self.cfg)
                .as_us(),
        )
    }

    /// Queues a message on link i→j (FIFO, like a QUIC stream); `loss_ppm` of them are
    /// lost.
    fn send(&mut self, i: usize, j: usize, msg: Message) {
        if !self.up[i][j] {
            return;
        }
        let mut buf = [0u8; Message::MAX_ENCODED_LEN];
        self.bytes_sent += postcard::to_slice(&msg, &mut buf).map_or(0, |b| b.len() as u64);
        if self.loss_ppm > 0 && self.rng.below(1_000_000) < u64::from(self.loss_ppm) {
            self.lost += 1;
            return;
        }
        let q = self.queues.entry((i, j)).or_default();
        let mut at = self.now + u64::from(self.rtt[i][j] / 2);
        if let Some(&(last, _)) = q.back() {
            at = at.max(last);
        }
        let was_empty = q.is_empty();
        q.push_back((at, msg));
        if was_empty {
            self.push(at, Kind::Link { from: i, to: j });
        }
    }

    /// Drains a node's outputs into the link queues and re-arms its timer.
    fn after_input(&mut self, i: usize) {
        while let Some(tx) = self.nodes[i].poll_transmit() {
            match tx.to {
                Recipient::AllNeighbours => {
                    for k in 0..self.adj[i].len() {
                        let j = self.adj[i][k];
                        self.send(i, j, tx.message);
                    }
                }
                Recipient::Neighbour(id) => self.send(i, id.0 as usize, tx.message),
                _ => panic!("unknown recipient"),
            }
        }
        while let Some(e) = self.nodes[i].poll_event() {
            self.route_changes += 1;
            if self.keep_events {
                self.events.push((i, e));
            }
        }
        if let Some(t) = self.nodes[i].poll_timeout()
            && t != self.armed[i]
        {
            self.armed[i] = t;
            self.push(t.max(self.now), Kind::Timer { node: i });
        }
    }

    /// Processes the next queued item. False when nothing is left before `limit`.
    pub fn step(&mut self, limit: u64) -> bool {
        let Some(top) = self.heap.peek() else {
            return false;
        };
        if top.at > limit {
            return false;
        }
        let Some(item) = self.heap.pop() else {
            return false;
        };
        self.now = self.now.max(item.at);
        self.steps += 1;
        match item.kind {
            Kind::Link { from, to } => {
                // Everything due on this link arrives together (one packet), then
                // the receiver's outputs are drained once.
                let from_id = RelayId(from as u64);
                while let Some(&(at, msg)) = self.queues.get(&(from, to)).and_then(|q| q.front()) {
                    if at > self.now {
                        self.push(at, Kind::Link { from, to });
                        break;
                    }
                    if let Some(q) = self.queues.get_mut(&(from, to)) {
                        q.pop_front();
                    }
                    self.delivered += 1;
                    self.nodes[to]
                        .handle_message(from_id, msg, self.now)
                        .expect("message from a neighbour accepted");
                }
                self.after_input(to);
            }
            Kind::Timer { node } => {
                if self.armed[node] != item.at {
                    return true; // stale
                }
                self.armed[node] = u64::MAX;
                self.nodes[node].handle_timeout(self.now);
                self.after_input(node);
            }
            Kind::Measure => {
                let n = self.nodes.len();
                for a in 0..n {
                    for k in 0..self.adj[a].len() {
                        let b = self.adj[a][k];
                        let m = self.measurement(a, b);
                        self.nodes[a]
                            .handle_link_metric(RelayId(b as u64), m, self.now)
                            .expect("known neighbour");
                    }
                    self.after_input(a);
                }
                self.push(self.now + self.measure_interval_us, Kind::Measure);
            }
        }
        true
    }

    /// Runs until virtual time `t`.
    pub fn run_until(&mut self, t: u64) {
        while self.step(t) {}
        self.now = self.now.max(t);
    }

    /// Runs until `t`, calling `check` after every step.
    pub fn run_until_checked(&mut self, t: u64, mut check: impl FnMut(&Self)) {
        while self.step(t) {
            check(self);
        }
        self.now = self.now.max(t);
    }

    pub fn next_hop(&self, a: usize, d: usize) -> Option<usize> {
        self.nodes[a]
            .next_hop(RelayId(d as u64))
            .map(|r| r.0 as usize)
    }

    /// Cost of the path a→d that the next hops realize (nominal link costs), or
    /// None if it is broken or loops.
    pub fn path_cost(&self, a: usize, d: usize) -> Option<u64> {
        let mut cost = 0;
        let mut at = a;
        for _ in 0..self.nodes.len() {
            if at == d {
                return Some(cost);
            }
            let nh = self.next_hop(at, d)?;
            if !self.up[at][nh] {
                return None;
            }
            cost += self.link_cost(at, nh);
            at = nh;
        }
        None
    }

    /// The hops of the installed path a→d (a excluded, d included).
    pub fn path(&self, a: usize, d: usize) -> Vec<usize> {
        let mut p = Vec::new();
        let mut at = a;
        while at != d && p.len() < self.nodes.len() {
            match self.next_hop(at, d) {
                Some(nh) => {
                    p.push(nh);
                    at = nh;
                }
                None => break,
            }
        }
        p
    }

    /// A forwarding loop in the installed next hops, if any: (dest, a node on it).
    pub fn find_loop(&self) -> Option<(usize, usize)> {
        let n = self.nodes.len();
        // state per dest: 0 unknown, 1 on the current walk, 2 reaches d or dead end.
        let mut state = vec![0u8; n];
        for d in 0..n {
            state.iter_mut().for_each(|s| *s = 0);
            state[d] = 2;
            for start in 0..n {
                let mut walk = Vec::new();
                let mut at = start;
                loop {
                    match state[at] {
                        2 => break,
                        1 => return Some((d, at)),
                        _ => {}
                    }
                    state[at] = 1;
                    walk.push(at);
                    match self.next_hop(at, d) {
                        Some(nh) => at = nh,
                        None => break,
                    }
                }
                for w in walk {
                    state[w] = 2;
                }
            }
        }
        None
    }

    /// Shortest path costs from `src` over the up links (nominal costs).
    pub fn dijkstra(&self, src: usize) -> Vec<Option<u64>> {
        let n = self.nodes.len();
        let mut dist: Vec<Option<u64>> = vec![None; n];
        let mut heap = BinaryHeap::new();
        dist[src] = Some(0);
        heap.push(Reverse((0u64, src)));
        while let Some(Reverse((du, u))) = heap.pop() {
            if dist[u].is_some_and(|d| d < du) {
                continue;
            }
            for &v in &self.adj[u] {
                let nd = du + self.link_cost(u, v);
                if dist[v].is_none_or(|dv| nd < dv) {
                    dist[v] = Some(nd);
                    heap.push(Reverse((nd, v)));
                }
            }
        }
        dist
    }

    /// All-pairs optimum: `opt[a][d]`.
    pub fn all_pairs(&self) -> Vec<Vec<Option<u64>>> {
        (0..self.nodes.len()).map(|a| self.dijkstra(a)).collect()
    }

    /// The metric node a has installed for d.
    pub fn metric(&self, a: usize, d: usize) -> Metric {
        self.nodes[a]
            .route(RelayId(d as u64))
            .map_or(Metric::INFINITY, |r| r.metric)
    }
}

/// Within `max(1 ms, 1 %)` of the optimum (the route quality criterion).
pub fn within_tolerance(got: u64, opt: u64) -> bool {
    got <= opt + (opt / 100).max(1_000)
}

/// The WonderNetwork RTT matrix shipped in `data/latency/` (names, rtt_us[a][b]).
pub fn load_matrix(file: &str) -> (Vec<String>, Vec<Vec<u32>>) {
    let path = format!("{}/../data/latency/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let mut names: Vec<String> = Vec::new();
    let mut rows: Vec<(String, String, u32)> = Vec::new();
    for line in text.lines().skip(1) {
        let mut it = line.split(',');
        let (Some(s), Some(d), Some(r)) = (it.next(), it.next(), it.next()) else {
            panic!("bad line {line:?}");
        };
        let ms: f64 = r
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("bad rtt {r:?}: {e}"));
        for n in [s, d] {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
        rows.push((s.to_string(), d.to_string(), (ms * 1000.0).round() as u32));
    }
    let idx = |n: &str| names.iter().position(|x| x == n).expect("known name");
    let mut m = vec![vec![0u32; names.len()]; names.len()];
    for (s, d, r) in &rows {
        m[idx(s)][idx(d)] = *r;
    }
    (names, m)
}

/// How good the installed routes are against an optimum over the same link costs.
#[derive(Clone, Debug, Default)]
pub struct Quality {
    /// Ordered pairs looked at.
    pub pairs: usize,
    /// Pairs whose installed path costs within `max(1 ms, 1 %)` of the optimum.
    pub within: usize,
    /// Pairs with no working installed path although the optimum exists.
    pub broken: usize,
    /// Largest excess of an installed path over its optimum, µs (one-way metric).
    pub worst_excess_us: u64,
    /// Sum over directly linked pairs of (direct link cost − optimum), µs.
    pub possible_saving_us: u64,
    /// Sum over directly linked pairs of (direct link cost − installed path cost), µs.
    pub realized_saving_us: u64,
}

impl Quality {
    /// Share of the possible savings over direct links the mesh realizes.
    pub fn realized_share(&self) -> f64 {
        if self.possible_saving_us == 0 {
            1.0
        } else {
            self.realized_saving_us as f64 / self.possible_saving_us as f64
        }
    }
    pub fn all_within(&self) -> bool {
        self.within == self.pairs
    }
}

impl Sim {
    pub fn quality(&self, opt: &[Vec<Option<u64>>]) -> Quality {
        let n = self.len();
        let mut q = Quality::default();
        for a in 0..n {
            for d in 0..n {
                let Some(o) = opt[a][d] else { continue };
                if a == d {
                    continue;
                }
                q.pairs += 1;
                let Some(g) = self.path_cost(a, d) else {
                    q.broken += 1;
                    continue;
                };
                if within_tolerance(g, o) {
                    q.within += 1;
                }
                q.worst_excess_us = q.worst_excess_us.max(g.saturating_sub(o));
                if self.up[a][d] {
                    let direct = self.link_cost(a, d);
                    q.possible_saving_us += direct.saturating_sub(o);
                    q.realized_saving_us += direct.saturating_sub(g);
                }
            }
        }
        q
    }

    /// Runs in 100 ms slices until every pair is within tolerance of `opt` (checked
    /// after each slice) or `limit` µs passed. Returns the virtual time until 99 % of
    /// the pairs were within tolerance, and until all were.
    pub fn converge(&mut self, opt: &[Vec<Option<u64>>], limit: u64) -> (Option<u64>, Option<u64>) {
        let t0 = self.now;
        let mut t99 = None;
        loop {
            let q = self.quality(opt);
            if t99.is_none() && q.within * 100 >= q.pairs * 99 {
                t99 = Some(self.now - t0);
            }
            if q.all_within() {
                return (t99, Some(self.now - t0));
            }
            if self.now >= t0 + limit {
                return (t99, None);
            }
            let t = self.now + self.check_every_us;
            self.run_until(t);
        }
    }

    /// The RTT (sum of the matrix RTTs, ms) along the installed path a→d.
    pub fn path_rtt_ms(&self, a: usize, d: usize) -> Option<f64> {
        let mut at = a;
        let mut sum = 0u64;
        for _ in 0..self.len() {
            if at == d {
                return Some(sum as f64 / 1000.0);
            }
            let nh = self.next_hop(at, d)?;
            sum += u64::from(self.rtt[at][nh]);
            at = nh;
        }
        None
    }

    /// The up link (a, b) used by the most installed paths.
    pub fn busiest_link(&self) -> (usize, usize, usize) {
        let n = self.len();
        let mut count = vec![vec![0usize; n]; n];
        for a in 0..n {
            for d in 0..n {
                let mut at = a;
                for nh in self.path(a, d) {
                    count[at][nh] += 1;
                    at = nh;
                }
            }
        }
        let mut best = (0, 0, 0);
        for a in 0..n {
            for b in 0..n {
                let c = count[a][b] + count[b][a];
                if a < b && c > best.2 {
                    best = (a, b, c);
                }
            }
        }
        best
    }
}

/// The savings table in RTT terms, comparable with the data set's own figures:
/// pairs improved by ≥ 5 ms and ≥ 10 % over the direct RTT, and their median saving.
#[derive(Clone, Debug)]
pub struct Savings {
    pub pairs: usize,
    pub improved: usize,
    pub median_saving_ms: f64,
    /// Pairs whose path is ≥ 5 ms slower than the direct Internet path (only
    /// possible when the direct link is not in the mesh).
    pub worse: usize,
}

impl Savings {
    /// From (direct RTT, path RTT) per ordered pair, in ms.
    pub fn from_pairs(pairs: &[(f64, f64)]) -> Savings {
        let mut s: Vec<f64> = pairs
            .iter()
            .filter(|(d, p)| d - p >= 5.0 && d - p >= 0.1 * d)
            .map(|(d, p)| d - p)
            .collect();
        s.sort_by(f64::total_cmp);
        let median = if s.is_empty() { 0.0 } else { s[s.len() / 2] };
        Savings {
            pairs: pairs.len(),
            improved: s.len(),
            median_saving_ms: median,
            worse: pairs.iter().filter(|(d, p)| p - d >= 5.0).count(),
        }
    }

    pub fn share(&self) -> f64 {
        self.improved as f64 / self.pairs.max(1) as f64
    }
}

/// Optimal RTT paths (Dijkstra over the RTT matrix restricted to `links`), ms.
pub fn optimal_rtt_ms(rtt: &[Vec<u32>], up: &dyn Fn(usize, usize) -> bool, src: usize) -> Vec<f64> {
    let n = rtt.len();
    let mut dist = vec![f64::INFINITY; n];
    let mut done = vec![false; n];
    dist[src] = 0.0;
    for _ in 0..n {
        let Some(u) = (0..n)
            .filter(|&v| !done[v] && dist[v].is_finite())
            .min_by(|&x, &y| dist[x].total_cmp(&dist[y]))
        else {
            break;
        };
        done[u] = true;
        for v in 0..n {
            if v != u && up(u, v) {
                let nd = dist[u] + f64::from(rtt[u][v]) / 1000.0;
                if nd < dist[v] {
                    dist[v] = nd;
                }
            }
        }
    }
    dist
}

/// Neighbour choice for a mesh limited to `max` neighbours per relay: first the
/// lowest-latency peers (pairs taken in order of mean RTT, while both ends have
/// fewer than `near` such links), then random long links (seeded) until every
/// relay has `max` or no partner with room is left. Links are symmetric.
pub fn limited_neighbours(
    rtt: &[Vec<u32>],
    near: usize,
    max: usize,
    seed: u64,
) -> Vec<(usize, usize)> {
    let n = rtt.len();
    let mut deg = vec![0usize; n];
    let mut linked = vec![vec![false; n]; n];
    let mut links = Vec::new();
    let mut pairs: Vec<(u64, usize, usize)> = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            pairs.push((u64::from(rtt[a][b]) + u64::from(rtt[b][a]), a, b));
        }
    }
    pairs.sort();
    for &(_, a, b) in &pairs {
        if deg[a] < near && deg[b] < near {
            deg[a] += 1;
            deg[b] += 1;
            linked[a][b] = true;
            linked[b][a] = true;
            links.push((a, b));
        }
    }
    let mut rng = Rng::new(seed);
    for a in 0..n {
        let mut tries = 0;
        while deg[a] < max && tries < 20 * n {
            tries += 1;
            let b = rng.below(n as u64) as usize;
            if b != a && !linked[a][b] && deg[b] < max {
                deg[a] += 1;
                deg[b] += 1;
                linked[a][b] = true;
                linked[b][a] = true;
                links.push((a.min(b), a.max(b)));
            }
        }
    }
    links
}

/// Results of one scenario on the real matrix.
#[derive(Clone, Debug)]
pub struct Report {
    pub label: String,
    pub links: usize,
    pub cold_start_us: Option<u64>,
    pub cold_start_99_us: Option<u64>,
    pub quality: Quality,
    pub mesh: Savings,
    pub optimum: Savings,
    pub doubled: (usize, usize),
    pub after_double_us: Option<u64>,
    pub after_double_99_us: Option<u64>,
    pub quality_after_double: Quality,
    pub messages: u64,
    pub route_changes: u64,
    pub example: String,
}

/// Cold start of `links` on the matrix, convergence, then the busiest link's RTT
/// doubles and the mesh converges again. `limit_us` bounds each phase.
pub fn scenario(
    label: &str,
    names: &[String],
    rtt: &[Vec<u32>],
    links: &[(usize, usize)],
    cfg: RouteConfig,
    limit_us: u64,
) -> Report {
    let n = names.len();
    let mut sim = Sim::new(n, cfg, 7);
    let all: Vec<_> = links
        .iter()
        .map(|&(a, b)| (a, b, rtt[a][b], rtt[b][a]))
        .collect();
    sim.add_links(&all);
    let opt = sim.all_pairs();
    let (cold_start_99_us, cold_start_us) = sim.converge(&opt, limit_us);
    let quality = sim.quality(&opt);

    let mut mesh_pairs = Vec::new();
    let mut opt_pairs = Vec::new();
    for a in 0..n {
        let best = optimal_rtt_ms(rtt, &|u, v| sim.is_up(u, v), a);
        for d in 0..n {
            if a != d {
                let direct = f64::from(rtt[a][d]) / 1000.0;
                mesh_pairs.push((direct, sim.path_rtt_ms(a, d).unwrap_or(f64::INFINITY)));
                opt_pairs.push((direct, best[d]));
            }
        }
    }
    let idx = |name: &str| names.iter().position(|x| x == name);
    let example = match (idx("Tokyo"), idx("Frankfurt")) {
        (Some(t), Some(f)) => {
            let hops: Vec<&str> = sim.path(t, f).iter().map(|&h| names[h].as_str()).collect();
            format!(
                "Tokyo→Frankfurt: direct {:.1} ms, mesh {:.1} ms via {}",
                f64::from(rtt[t][f]) / 1000.0,
                sim.path_rtt_ms(t, f).unwrap_or(f64::NAN),
                hops.join(" → ")
            )
        }
        _ => String::new(),
    };

    let (a, b, _) = sim.busiest_link();
    sim.set_rtt(a, b, rtt[a][b] * 2, rtt[b][a] * 2);
    let opt2 = sim.all_pairs();
    // The ends learn the new RTT at their next measurement; time counts from the change.
    let (after_double_99_us, after_double_us) = sim.converge(&opt2, limit_us);
    let quality_after_double = sim.quality(&opt2);
    Report {
        label: label.to_string(),
        links: links.len(),
        cold_start_us,
        cold_start_99_us,
        quality,
        mesh: Savings::from_pairs(&mesh_pairs),
        optimum: Savings::from_pairs(&opt_pairs),
        doubled: (a, b),
        after_double_us,
        after_double_99_us,
        quality_after_double,
        messages: sim.delivered,
        route_changes: sim.route_changes,
        example,
    }
}

impl Report {
    pub fn print(&self, names: &[String]) {
        let secs = |t: Option<u64>| {
            t.map_or("not converged".to_string(), |t| {
                format!("{:.1} s", t as f64 / 1e6)
            })
        };
        println!("== {} ({} links)", self.label, self.links);
        println!(
            "  cold start: 99 % of pairs within max(1 ms, 1 %) of the optimum after {}, all {} after {} (worst excess {} µs, {} broken)",
            secs(self.cold_start_99_us),
            self.quality.pairs,
            secs(self.cold_start_us),
            self.quality.worst_excess_us,
            self.quality.broken
        );
        println!(
            "  savings over direct links realized: {:.2} % of possible",
            100.0 * self.quality.realized_share()
        );
        println!(
            "  RTT of {}–{} (busiest link) doubled: 99 % of pairs within tolerance after {}, all after {} (worst excess {} µs)",
            names[self.doubled.0],
            names[self.doubled.1],
            secs(self.after_double_99_us),
            secs(self.after_double_us),
            self.quality_after_double.worst_excess_us
        );
        println!(
            "  {} messages, {} route changes in all",
            self.messages, self.route_changes
        );
        println!(
            "  | paths | pairs improved ≥5 ms & ≥10 % | median saving | pairs ≥5 ms worse than direct |"
        );
        println!("  |---|---|---|---|");
        for (name, s) in [
            ("installed routes", &self.mesh),
            ("optimum over the same links", &self.optimum),
        ] {
            println!(
                "  | {name} | {} / {} ({:.1} %) | {:.1} ms | {} |",
                s.improved,
                s.pairs,
                100.0 * s.share(),
                s.median_saving_ms,
                s.worse
            );
        }
        println!("  {}", self.example);
    }
}

/// Region of each relay (same order as [`load_matrix`]'s names), from `locations.csv`.
pub fn load_regions(names: &[String]) -> Vec<String> {
    let path = format!(
        "{}/../data/latency/locations.csv",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let rows: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert!(f.len() >= 5, "bad line {l:?}");
            (f[0].to_string(), f[4].to_string())
        })
        .collect();
    names
        .iter()
        .map(|n| {
            rows.iter()
                .find(|(x, _)| x == n)
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| panic!("no location for {n}"))
        })
        .collect()
}

/// Neighbour choice with regional diversity: first the `near` lowest-latency peers
/// (as in [`limited_neighbours`]), then for each relay the nearest peer with room in
/// every other region (a direct long-haul link per continent), then the nearest
/// peers with room, until `max`. Links are symmetric; no relay exceeds `max`.
pub fn regional_neighbours(
    rtt: &[Vec<u32>],
    regions: &[String],
    near: usize,
    max: usize,
) -> Vec<(usize, usize)> {
    let n = rtt.len();
    let mean = |a: usize, b: usize| u64::from(rtt[a][b]) + u64::from(rtt[b][a]);
    let mut deg = vec![0usize; n];
    let mut linked = vec![vec![false; n]; n];
    let mut links = Vec::new();
    let mut link = |a: usize, b: usize, deg: &mut Vec<usize>, linked: &mut Vec<Vec<bool>>| {
        deg[a] += 1;
        deg[b] += 1;
        linked[a][b] = true;
        linked[b][a] = true;
        links.push((a.min(b), a.max(b)));
    };
    let mut pairs: Vec<(u64, usize, usize)> = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            pairs.push((mean(a, b), a, b));
        }
    }
    pairs.sort();
    for &(_, a, b) in &pairs {
        if deg[a] < near && deg[b] < near {
            link(a, b, &mut deg, &mut linked);
        }
    }
    let mut all_regions: Vec<&String> = regions.iter().collect();
    all_regions.sort();
    all_regions.dedup();
    for a in 0..n {
        for r in &all_regions {
            if **r == regions[a] || deg[a] >= max {
                continue;
            }
            if (0..n).any(|b| linked[a][b] && regions[b] == **r) {
                continue;
            }
            let pick = (0..n)
                .filter(|&b| b != a && regions[b] == **r && !linked[a][b] && deg[b] < max)
                .min_by_key(|&b| mean(a, b));
            if let Some(b) = pick {
                link(a, b, &mut deg, &mut linked);
            }
        }
    }
    for &(_, a, b) in &pairs {
        if deg[a] < max && deg[b] < max && !linked[a][b] {
            link(a, b, &mut deg, &mut linked);
        }
    }
    links
}
