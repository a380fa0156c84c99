//! 100 simulated relays flooding their announcements through the mesh's own flooding rules
//! (`mesh::announce::AnnounceTable`, the same code the node runs) in virtual time, with
//! real announcement bodies (`dashboard::announce::Announcement` of a relay with its links and
//! a route to every other relay). Checks the bounds docs/dashboard.md states:
//! - size: every body ≤ `MAX_ANNOUNCE_BODY`, every frame ≤ `Announce::MAX_LEN`;
//! - rate at rest: per link and direction ≤ `R × max frame / (0.75 × interval)` bytes/s (one
//!   copy per origin per interval; 0.75 is the shortest jittered interval);
//! - triggered announcements (links flapping) stay at one per `min_interval`;
//! - an origin announcing too fast is rate-limited at its neighbours, so it cannot flood;
//! - every relay (and a late joiner, from the held announcements) ends up with all 100, and
//!   one relay's `MeshState` shows all 100 relays with their links.
//!
//! Numbers are printed (`cargo test -p fastpubsub-relay --test dashboard_announce_sim --
//! --nocapture`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use fastpubsub_core::mesh::{self, Announce, MAX_ANNOUNCE_BODY, Message};
use fastpubsub_core::route::RelayId;
use fastpubsub_relay::dashboard::announce::Announcement;
use fastpubsub_relay::dashboard::view::{
    LinkSummary, MeshState, RelayCounters, RelaySummary, RouteSummary,
};
use fastpubsub_relay::mesh::announce::{AnnounceConfig, AnnounceTable, Verdict};
use fastpubsub_relay::mesh::limits::{
    ANNOUNCE_INTERVAL_US, ANNOUNCE_MIN_INTERVAL_US, ANNOUNCE_ORIGINS as MAX_ORIGINS,
    ANNOUNCE_RATE_BURST as RATE_BURST,
};

const R: usize = 100;
const S: u64 = 1_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// The node's jitter: 0.75..1.25 of `d` µs.
    fn jittered(&mut self, d: u64) -> u64 {
        Duration::from_micros(d)
            .mul_f64(0.75 + (self.below(1000) as f64) / 2000.0)
            .as_micros() as u64
    }
}

fn name(i: usize) -> String {
    format!("relay-{i:03}")
}

/// A ring plus seeded random chords: every relay has 4 to ~10 links.
fn topology(rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut adj = vec![Vec::new(); R];
    let link = |a: usize, b: usize, adj: &mut Vec<Vec<usize>>| {
        if a != b && !adj[a].contains(&b) {
            adj[a].push(b);
            adj[b].push(a);
        }
    };
    for i in 0..R {
        link(i, (i + 1) % R, &mut adj);
        link(i, (i + 7) % R, &mut adj);
    }
    for _ in 0..R {
        let (a, b) = (rng.below(R as u64) as usize, rng.below(R as u64) as usize);
        link(a, b, &mut adj);
    }
    adj
}

/// Relay `i`'s announcement body: its links and a route to every other relay.
fn body(i: usize, adj: &[Vec<usize>], seq: u32) -> Vec<u8> {
    let s = RelaySummary {
        name: name(i),
        region: "europe-west".into(),
        lat: Some(50.110924),
        lon: Some(8.682127),
        url: format!("wss://{}.fastpubsub.example.net/ws", name(i)),
        counters: RelayCounters {
            connections: 12_345,
            subscriptions: 67_890,
            messages_in: 1_234_567_890,
            messages_out: 9_876_543_210,
            drops: 42,
            slow_consumer_disconnects: 7,
            intake_paused_ms: None,
        },
        links: adj[i]
            .iter()
            .map(|p| LinkSummary {
                peer: name(*p),
                up: true,
                rtt_ms: 123.456,
                rtt_min_ms: 120.001,
                jitter_ms: 2.5,
                loss: 0.0125,
            })
            .collect(),
        routes: (0..R)
            .filter(|d| *d != i)
            .map(|d| RouteSummary {
                dst: name(d),
                next_hop: name(adj[i][d % adj[i].len()]),
                metric_ms: 87.654,
            })
            .collect(),
    };
    let a = Announcement::from_summary(&s, RelayId::from_name(&s.name), seq, |n| {
        Some(RelayId::from_name(n))
    });
    let mut buf = vec![0u8; MAX_ANNOUNCE_BODY];
    a.encode(&mut buf).map(|b| b.to_vec()).expect("fits")
}

/// Bytes of the control frame carrying an announcement (4-byte length prefix included).
fn frame_len(origin: &str, seq: u64, body: &[u8]) -> usize {
    let mut buf = vec![0u8; Announce::MAX_LEN];
    let n = mesh::encode(&Message::Announce(Announce { origin, seq, body }), &mut buf)
        .map(|b| b.len())
        .expect("encodes");
    assert!(n <= Announce::MAX_LEN);
    n + 4
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Ev {
    /// Relay announces itself if due.
    Tick(usize),
    /// `to` receives `origin`'s announcement `seq` from `from`.
    Deliver {
        to: usize,
        from: usize,
        origin: usize,
        seq: u64,
    },
}

struct Sim {
    rng: Rng,
    adj: Vec<Vec<usize>>,
    /// One-way delay per link, µs.
    delay: HashMap<(usize, usize), u64>,
    tables: Vec<AnnounceTable>,
    bodies: Vec<Vec<u8>>,
    /// Frame length of each relay's announcement (seq varints keep one length here).
    frames: Vec<usize>,
    /// Latest seq each relay announced (bodies are re-used; their size is what matters).
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    n: u64,
    /// Bytes per directed link, counted from `measure_from`.
    bytes: HashMap<(usize, usize), u64>,
    measure_from: u64,
    max_frame: usize,
    cfg: AnnounceConfig,
    /// Relays whose announcements are fed to an observer's mesh picture.
    observer: Option<(usize, MeshState)>,
    /// The relay made to announce far too often (bypassing its own schedule).
    chatty: Option<usize>,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let adj = topology(&mut rng);
        let mut delay = HashMap::new();
        for (a, ps) in adj.iter().enumerate() {
            for &b in ps {
                let d = *delay.entry((b, a)).or_insert(5_000 + rng.below(145_000));
                delay.insert((a, b), d);
            }
        }
        let cfg = AnnounceConfig::default();
        let tables = (0..R)
            .map(|i| AnnounceTable::new(&name(i), cfg, 1, rng.below(ANNOUNCE_INTERVAL_US)))
            .collect();
        let bodies: Vec<Vec<u8>> = (0..R).map(|i| body(i, &adj, u32::MAX)).collect();
        let frames = (0..R)
            .map(|i| frame_len(&name(i), (1 << 32) | u64::from(u32::MAX), &bodies[i]))
            .collect();
        Sim {
            rng,
            adj,
            delay,
            tables,
            bodies,
            frames,
            queue: BinaryHeap::new(),
            n: 0,
            bytes: HashMap::new(),
            measure_from: u64::MAX,
            max_frame: 0,
            cfg,
            observer: None,
            chatty: None,
        }
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.n += 1;
        self.queue.push(Reverse((at, self.n, ev)));
    }

    fn send(&mut self, now: u64, from: usize, to: usize, origin: usize, seq: u64) {
        let len = self.frames[origin];
        self.max_frame = self.max_frame.max(len);
        if now >= self.measure_from {
            *self.bytes.entry((from, to)).or_default() += len as u64;
        }
        let d = self.delay.get(&(from, to)).copied().unwrap_or(50_000);
        self.push(
            now + d,
            Ev::Deliver {
                to,
                from,
                origin,
                seq,
            },
        );
    }

    fn flood_own(&mut self, now: u64, i: usize) {
        let seq = self.tables[i].next_seq();
        let next = self.rng.jittered(self.cfg.interval_us);
        let body = self.bodies[i].clone();
        self.tables[i].handle_sent_own(seq, &body, now, next);
        for p in self.adj[i].clone() {
            self.send(now, i, p, i, seq);
        }
    }

    fn run_until(&mut self, end: u64) {
        while let Some(Reverse((at, _, ev))) = self.queue.peek().copied() {
            if at > end {
                break;
            }
            self.queue.pop();
            match ev {
                Ev::Tick(i) => {
                    if self.chatty == Some(i) {
                        self.flood_own(at, i);
                        self.push(at + 50_000, Ev::Tick(i));
                        continue;
                    }
                    if self.tables[i].poll_transmit(at).is_some() {
                        self.flood_own(at, i);
                    }
                    let next = self.tables[i]
                        .poll_timeout()
                        .unwrap_or(u64::MAX)
                        .max(at + 1);
                    self.push(next, Ev::Tick(i));
                }
                Ev::Deliver {
                    to,
                    from,
                    origin,
                    seq,
                } => {
                    let body = self.bodies[origin].clone();
                    let v = self.tables[to].handle_remote(&name(origin), seq, &body, at);
                    if v != Verdict::New {
                        continue;
                    }
                    if let Some((obs, state)) = &mut self.observer
                        && *obs == to
                    {
                        let summary = Announcement::decode(&body)
                            .and_then(|a| {
                                a.to_summary(|id| {
                                    (0..R).map(name).find(|n| RelayId::from_name(n) == id)
                                })
                            })
                            .expect("valid announcement");
                        state.update(summary, at / 1000).expect("picture takes it");
                    }
                    for p in self.adj[to].clone() {
                        if p != from {
                            self.send(at, to, p, origin, seq);
                        }
                    }
                }
            }
        }
    }

    fn start(&mut self) {
        for i in 0..R {
            let t = self.tables[i].poll_timeout().unwrap_or(u64::MAX);
            self.push(t, Ev::Tick(i));
        }
    }
}

#[test]
fn hundred_relays_stay_within_size_and_rate_bounds() {
    let mut sim = Sim::new(0x5eed_1234_abcd_0001);
    let observer = 42;
    sim.observer = Some((observer, MeshState::new(&name(observer))));
    let degrees: Vec<usize> = sim.adj.iter().map(Vec::len).collect();
    let (dmin, dmax) = (
        degrees.iter().min().copied().unwrap_or(0),
        degrees.iter().max().copied().unwrap_or(0),
    );
    let body_max = sim.bodies.iter().map(Vec::len).max().unwrap_or(0);
    let body_min = sim.bodies.iter().map(Vec::len).min().unwrap_or(0);
    assert!(body_max <= MAX_ANNOUNCE_BODY);

    sim.start();
    let iv = ANNOUNCE_INTERVAL_US;
    let interval_s = ANNOUNCE_INTERVAL_US as f64 / 1e6;
    // Two intervals to converge, then ten measured at rest.
    sim.run_until(2 * iv);
    for (i, t) in sim.tables.iter().enumerate() {
        assert_eq!(t.len(), R, "relay {i} holds {} of {R}", t.len());
    }
    sim.measure_from = 2 * iv;
    sim.run_until(12 * iv);
    let secs = 10.0 * interval_s;
    let rates: Vec<f64> = sim.bytes.values().map(|b| *b as f64 / secs).collect();
    let max_rate = rates.iter().copied().fold(0.0, f64::max);
    let mean_rate = rates.iter().sum::<f64>() / rates.len() as f64;
    let bound = R as f64 * sim.max_frame as f64 / (0.75 * interval_s);
    println!(
        "100 relays, {dmin}..{dmax} links each, routes to all: announcement body {body_min}..{body_max} B, \
         largest frame {} B; at rest every {interval_s} s: per link and direction mean {mean_rate:.0} B/s, \
         max {max_rate:.0} B/s (bound {bound:.0} B/s)",
        sim.max_frame
    );
    assert!(sim.max_frame <= Announce::MAX_LEN + 4);
    assert!(max_rate <= bound, "{max_rate} > {bound}");
    // Flooding sends each origin's announcement over every link in at least one direction:
    // the mean sits near R × frame / interval per direction, far from a copy per path.
    assert!(
        mean_rate > 0.3 * R as f64 * body_min as f64 / interval_s,
        "{mean_rate}"
    );

    // The observer's picture: all 100 relays, each with its links.
    let (_, state) = sim.observer.take().expect("observer");
    let view = state.view(12 * iv / 1000);
    assert_eq!(
        view.relays.len(),
        R - 1,
        "every relay but the observer itself"
    );
    let total_links: usize = degrees
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != observer)
        .map(|(_, d)| d)
        .sum();
    assert_eq!(view.links.len(), total_links - degrees[observer]);

    // Links flapping at one relay: its triggered announcements stay at one per min interval.
    let flapper = 7;
    let sent0 = sim.tables[flapper].stats().sent_own;
    let t0 = 12 * iv;
    for k in 0..100u64 {
        let at = t0 + k * 100_000;
        sim.run_until(at);
        sim.tables[flapper].handle_link_change(at);
        let next = sim.tables[flapper].poll_timeout().unwrap_or(u64::MAX);
        sim.push(next, Ev::Tick(flapper));
    }
    sim.run_until(t0 + 10 * S);
    let flaps = sim.tables[flapper].stats().sent_own - sent0;
    let most = (10 * S / ANNOUNCE_MIN_INTERVAL_US) + 1;
    println!("relay with links flapping every 100 ms for 10 s: {flaps} announcements (≤ {most})");
    assert!(flaps >= 5 && flaps <= most, "{flaps}");

    // A relay announcing every 50 ms (ignoring its schedule): neighbours rate-limit it, so
    // each link carries at most one of its announcements per half min interval.
    let chatty = 13;
    sim.chatty = Some(chatty);
    let t1 = t0 + 10 * S;
    sim.push(t1, Ev::Tick(chatty));
    sim.bytes.clear();
    sim.measure_from = t1;
    let limited0: u64 = sim.tables.iter().map(|t| t.stats().rate_limited).sum();
    sim.run_until(t1 + 5 * S);
    sim.chatty = None;
    let limited: u64 = sim
        .tables
        .iter()
        .map(|t| t.stats().rate_limited)
        .sum::<u64>()
        - limited0;
    let frame = frame_len(&name(chatty), u64::MAX, &sim.bodies[chatty]) as f64;
    let per_copy = 5.0 / ((ANNOUNCE_MIN_INTERVAL_US as f64 / 1e6) / 2.0) + RATE_BURST as f64;
    // Links not touching the chatty relay carry its announcements plus everyone's regular ones.
    let regular = R as f64 * sim.max_frame as f64 * 5.0 / (0.75 * interval_s);
    let worst = sim
        .bytes
        .iter()
        .filter(|((a, b), _)| *a != chatty && *b != chatty)
        .map(|(_, v)| *v as f64)
        .fold(0.0, f64::max);
    println!(
        "relay announcing every 50 ms for 5 s: {limited} rate-limited at neighbours; busiest other link {worst:.0} B \
         (bound {:.0} B)",
        regular + per_copy * frame
    );
    assert!(limited > 50, "{limited}");
    assert!(worst <= regular + per_copy * frame, "{worst}");

    // A late joiner linked to two relays gets every held announcement at once.
    let mut joiner = AnnounceTable::new("relay-new", AnnounceConfig::default(), 1, 0);
    let now = t1 + 6 * S;
    for src in [0usize, 50] {
        let held: Vec<(String, u64, Vec<u8>)> = sim.tables[src]
            .held()
            .map(|(o, s, b)| (o.to_owned(), s, b.to_vec()))
            .collect();
        assert!(held.len() <= MAX_ORIGINS);
        for (o, s, b) in held {
            joiner.handle_remote(&o, s, &b, now);
        }
    }
    assert_eq!(
        joiner.len(),
        R,
        "the joiner knows every relay after its first links"
    );
}
