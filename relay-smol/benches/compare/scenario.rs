//! The measured scenarios, each against a fresh server: fan-out (unpaced or paced), idle
//! memory per subscribed connection, and one subscriber that stops reading.

use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::hist::Hist;
use crate::publisher::{self, Plan, Progress};
use crate::reader::{self, Stop};
use crate::server::{Kind, Server, proc_cpu_secs};

/// One line of the result table.
pub struct Row {
    /// Scenario label.
    pub scenario: String,
    /// Server.
    pub server: Kind,
    /// Deliveries per second (healthy subscribers), first send to last delivery.
    pub delivered_per_s: Option<f64>,
    /// Deliveries to healthy subscribers that never arrived, and how many were expected.
    pub lost: Option<(u64, u64)>,
    /// Latency quantiles, µs.
    pub p50_us: Option<u64>,
    /// Latency quantiles, µs.
    pub p99_us: Option<u64>,
    /// Server CPU per delivery, µs.
    pub cpu_us: Option<f64>,
    /// Server peak RSS, KiB.
    pub rss_kib: u64,
    /// Load generator CPU (publisher + reader) in % of one core.
    pub gen_cpu: Option<f64>,
    /// Load generator CPU per delivery, µs (what it could sustain on a whole core).
    pub gen_us: Option<f64>,
    /// Anything else worth saying.
    pub note: String,
}

impl Row {
    fn new(scenario: String, server: Kind) -> Row {
        Row {
            scenario,
            server,
            delivered_per_s: None,
            lost: None,
            p50_us: None,
            p99_us: None,
            cpu_us: None,
            rss_kib: 0,
            gen_cpu: None,
            gen_us: None,
            note: String::new(),
        }
    }
}

fn gen_cpu_secs() -> f64 {
    proc_cpu_secs(std::process::id())
}

fn subscribers(s: &Server, n: usize) -> Result<Vec<Conn>, String> {
    (0..n)
        .map(|i| {
            Conn::subscriber(s.addr, s.kind.proto(), &format!("fps-bench-sub-{i}"))
                .map_err(|e| format!("subscriber {i}: {e}"))
        })
        .collect()
}

/// What a fan-out run measures.
pub struct Fanout {
    /// Subscribers.
    pub subs: usize,
    /// Payload bytes.
    pub size: usize,
    /// Messages.
    pub count: u64,
    /// Paced rate, or unpaced.
    pub rate: Option<u64>,
    /// Hard limit for the run.
    pub limit: Duration,
}

/// One publisher → `f.subs` subscribers; every subscriber is expected to get every message.
pub fn fanout(kind: Kind, f: &Fanout, base: Instant) -> Result<Row, String> {
    let label = match f.rate {
        None => format!("unpaced {} x {}", f.subs, size_label(f.size)),
        Some(r) => format!("paced {}/s x {} x {}", r, f.subs, size_label(f.size)),
    };
    let mut row = Row::new(label, kind);
    let server = Server::start(kind)?;
    let mut subs = subscribers(&server, f.subs)?;
    let publ = Conn::publisher(server.addr, kind.proto()).map_err(|e| format!("publisher: {e}"))?;
    let deadline = Instant::now() + f.limit;
    let progress = Progress::default();
    let plan = Plan {
        proto: kind.proto(),
        size: f.size,
        count: f.count,
        rate: f.rate,
        deadline,
    };
    let (cpu0, gen0) = (server.cpu_secs(), gen_cpu_secs());
    let t0 = Instant::now();
    let t0_ns = t0.duration_since(base).as_nanos() as u64;
    let p2 = progress.clone();
    let pub_thread = std::thread::spawn(move || publisher::run(publ, plan, base, p2));
    let stop = Stop {
        sent: progress.sent.clone(),
        done: progress.done.clone(),
        quiet: Duration::from_secs(1),
        deadline,
    };
    let mut hist = Hist::default();
    let outcome = reader::run(&mut subs, &mut hist, base, t0_ns, &stop, None);
    progress
        .abort
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (cpu1, gen1) = (server.cpu_secs(), gen_cpu_secs());
    let (publ, pub_err) = pub_thread
        .join()
        .map_err(|_| "publisher thread panicked".to_string())?;
    let outcome = outcome.map_err(|e| format!("reader: {e}"))?;
    let sent = progress.sent.load(std::sync::atomic::Ordering::Acquire);
    let received: u64 = subs.iter().map(|c| c.rx.got.deliveries).sum();
    let last_ns = subs.iter().map(|c| c.rx.got.last_ns).max().unwrap_or(0);
    let span = last_ns.saturating_sub(t0_ns) as f64 / 1e9;
    row.delivered_per_s = (span > 0.0).then(|| received as f64 / span);
    let expected = sent * f.subs as u64;
    row.lost = Some((expected.saturating_sub(received), expected));
    row.p50_us = hist.quantile_us(0.50);
    row.p99_us = hist.quantile_us(0.99);
    row.cpu_us = (received > 0).then(|| (cpu1 - cpu0) * 1e6 / received as f64);
    // Over the active part (the generator idles in epoll_wait after the last delivery).
    row.gen_cpu = (span > 0.0).then(|| (gen1 - gen0) / span * 100.0);
    row.gen_us = (received > 0).then(|| (gen1 - gen0) * 1e6 / received as f64);
    row.rss_kib = server.peak_rss_kib();
    let mut notes = Vec::new();
    if sent < f.count {
        notes.push(format!("published only {sent} of {}", f.count));
    }
    if let Some(e) = pub_err {
        notes.push(format!("publisher: {e}"));
    }
    if outcome.ended == "deadline" {
        notes.push(format!("stopped at the {} s limit", f.limit.as_secs()));
    }
    let closed = subs.iter().filter(|c| c.rx.got.closed).count();
    if closed > 0 {
        notes.push(format!("{closed} subscribers closed by the server"));
    }
    if let Some(e) = subs.iter().find_map(|c| c.rx.got.error.clone()) {
        notes.push(format!("server said: {}", short(&e)));
    }
    row.note = notes.join("; ");
    drop(publ);
    drop(subs);
    Ok(row)
}

/// Memory per idle subscribed connection: RSS after `n` subscribed connections minus RSS
/// before, divided by `n`.
pub fn idle(kind: Kind, n: usize) -> Result<Row, String> {
    let mut row = Row::new(format!("idle: {n} subscribed connections"), kind);
    let server = Server::start(kind)?;
    std::thread::sleep(Duration::from_millis(300));
    let before = server.rss_kib();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut held: Vec<Conn> = Vec::with_capacity(n);
    // Batches of 100: open all, then finish each upgrade and subscribe, then collect acks.
    for start in (0..n).step_by(100) {
        if Instant::now() >= deadline {
            return Err(format!("only {} connections within 120 s", held.len()));
        }
        let mut batch = (start..(start + 100).min(n))
            .map(|_| Conn::open(server.addr, kind.proto()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("connection {}: {e}", held.len()))?;
        let d = Instant::now() + Duration::from_secs(20);
        let mut acks = 0;
        for (i, c) in batch.iter_mut().enumerate() {
            c.upgraded(d).map_err(|e| format!("upgrade: {e}"))?;
            let (frames, a) = kind.proto().subscribe(&format!("fps-idle-{}", start + i));
            c.send(&frames).map_err(|e| e.to_string())?;
            acks = a;
        }
        for c in &mut batch {
            c.wait_acks(acks, d)
                .map_err(|e| format!("subscribe: {e}"))?;
        }
        held.extend(batch);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = server.rss_kib();
    let per = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    row.rss_kib = after;
    row.note =
        format!("{per:.0} bytes per subscribed connection (RSS {before} KiB idle -> {after} KiB)");
    drop(held);
    Ok(row)
}

/// What the stuck-subscriber run measures.
pub struct StuckPlan {
    /// Publish rate.
    pub rate: u64,
    /// Payload bytes.
    pub size: usize,
    /// Length of the run.
    pub secs: u64,
    /// When the second subscriber stops reading.
    pub stop_after: Duration,
}

/// One fast and one stuck subscriber: does the fast one keep the rate every second, and is
/// the stuck one closed?
pub fn stuck(kind: Kind, p: &StuckPlan, base: Instant) -> Result<Row, String> {
    let mut row = Row::new(
        format!(
            "stuck: {}/s x {}, 1 of 2 subs stops reading",
            p.rate,
            size_label(p.size)
        ),
        kind,
    );
    let server = Server::start(kind)?;
    let mut subs = subscribers(&server, 2)?;
    let publ = Conn::publisher(server.addr, kind.proto()).map_err(|e| format!("publisher: {e}"))?;
    let count = p.rate * p.secs;
    let deadline = Instant::now() + Duration::from_secs(p.secs + 20);
    let progress = Progress::default();
    let plan = Plan {
        proto: kind.proto(),
        size: p.size,
        count,
        rate: Some(p.rate),
        deadline,
    };
    let (cpu0, gen0) = (server.cpu_secs(), gen_cpu_secs());
    let t0 = Instant::now();
    let t0_ns = t0.duration_since(base).as_nanos() as u64;
    let p2 = progress.clone();
    let pub_thread = std::thread::spawn(move || publisher::run(publ, plan, base, p2));
    let stop = Stop {
        sent: progress.sent.clone(),
        done: progress.done.clone(),
        quiet: Duration::from_secs(1),
        deadline,
    };
    let mut hist = Hist::default();
    let stop_ns = t0_ns + p.stop_after.as_nanos() as u64;
    let outcome = reader::run(&mut subs, &mut hist, base, t0_ns, &stop, Some((1, stop_ns)));
    progress
        .abort
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (cpu1, gen1) = (server.cpu_secs(), gen_cpu_secs());
    let wall = t0.elapsed().as_secs_f64();
    let (publ, pub_err) = pub_thread
        .join()
        .map_err(|_| "publisher thread panicked".to_string())?;
    outcome.map_err(|e| format!("reader: {e}"))?;
    let sent = progress.sent.load(std::sync::atomic::Ordering::Acquire);
    let fast_got = subs[0].rx.got.deliveries;
    let span = subs[0].rx.got.last_ns.saturating_sub(t0_ns) as f64 / 1e9;
    row.delivered_per_s = (span > 0.0).then(|| fast_got as f64 / span);
    row.lost = Some((sent.saturating_sub(fast_got), sent));
    row.p50_us = hist.quantile_us(0.50);
    row.p99_us = hist.quantile_us(0.99);
    let all: u64 = subs.iter().map(|c| c.rx.got.deliveries).sum();
    row.cpu_us = (all > 0).then(|| (cpu1 - cpu0) * 1e6 / all as f64);
    row.gen_cpu = Some((gen1 - gen0) / wall * 100.0);
    row.gen_us = (all > 0).then(|| (gen1 - gen0) * 1e6 / all as f64);
    row.rss_kib = server.peak_rss_kib();
    // Full seconds of the run: the fast subscriber's worst second against the rate.
    let per_sec = &subs[0].rx.got.per_sec;
    let worst = (0..p.secs as usize)
        .map(|s| per_sec.get(s).copied().unwrap_or(0))
        .min()
        .unwrap_or(0);
    let worst_pct = worst as f64 * 100.0 / p.rate as f64;
    let gap_ms = subs[0].rx.got.max_gap_ns as f64 / 1e6;
    let stuck_before = subs[1].rx.got.deliveries;
    reader::drain(&mut subs[1], base, Duration::from_secs(5));
    let s = &subs[1].rx.got;
    let fate = if s.closed {
        match &s.error {
            Some(e) => format!("stuck one closed ({})", short(e)),
            None => "stuck one closed (no reason seen)".to_string(),
        }
    } else {
        "stuck one still open".to_string()
    };
    let mut notes = vec![
        format!("fast one: worst second {worst_pct:.1} % of the rate, longest gap {gap_ms:.0} ms"),
        format!(
            "{fate}; it got {stuck_before} before it stopped reading, {} in all",
            s.deliveries
        ),
    ];
    if sent < count {
        notes.push(format!("published only {sent} of {count}"));
    }
    if let Some(e) = pub_err {
        notes.push(format!("publisher: {e}"));
    }
    row.note = notes.join("; ");
    drop(publ);
    Ok(row)
}

fn short(s: &str) -> String {
    let s = s.trim();
    let mut cut = s.len().min(48);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
}

/// `64 B`, `1 KiB`.
pub fn size_label(n: usize) -> String {
    if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}
