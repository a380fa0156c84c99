//! Micro-benchmark of the subscription index (not a test: it reports, never asserts).
//!
//! `cargo bench -p fastpubsub-core --features std --bench pattern`
//!
//! Builds a `SubIndex<u32>` of 100,000 subscriptions shaped like a relay's (many
//! per-room exact channels, per-room `#`, per-user `*`, a few broad patterns shared by
//! many connections), then reports heap bytes per subscription (counted by a wrapping
//! global allocator: bytes requested, not allocator overhead) and lookups per second for
//! a bounded number of `for_each_match` and `has_match` calls.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use fastpubsub_core::pattern::{
    MAX_NODES_VISITED, MAX_PATTERN_SEGMENTS, MAX_PATTERN_STARS, SubIndex,
};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Bytes including a glibc-like chunk overhead: 8-byte header, 16-byte granularity,
/// 32-byte minimum. Closer to what the process's RSS pays than the requested size.
static CHUNKS: AtomicUsize = AtomicUsize::new(0);

fn chunk(size: usize) -> usize {
    (size + 8).div_ceil(16).max(2) * 16
}
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to `System` unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(layout.size()), Ordering::Relaxed);
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        CHUNKS.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        ALLOCS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        CHUNKS.fetch_add(chunk(new_size), Ordering::Relaxed);
        CHUNKS.fetch_sub(chunk(layout.size()), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SUBSCRIPTIONS: u32 = 100_000;
const LOOKUPS: u32 = 1_000_000;

/// A small deterministic PRNG (xorshift64*), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n)) as u32
    }
}

fn subscription(i: u32, rng: &mut Rng) -> String {
    let tenant = rng.below(10);
    match i % 100 {
        0..=59 => format!("t{tenant}.chat.room{}.msgs", rng.below(20_000)),
        60..=79 => format!("t{tenant}.chat.room{}.#", rng.below(20_000)),
        80..=98 => format!("t{tenant}.user.{}.*", rng.below(50_000)),
        _ => format!(
            "t{tenant}.{}",
            ["#", "chat.*.msgs", "user.#", "chat.#"][rng.below(4) as usize]
        ),
    }
}

fn channel(rng: &mut Rng) -> String {
    let tenant = rng.below(10);
    if rng.below(2) == 0 {
        format!("t{tenant}.chat.room{}.msgs", rng.below(20_000))
    } else {
        format!("t{tenant}.user.{}.inbox", rng.below(50_000))
    }
}

/// Builds, looks up and empties an index of `subs`, with values made by `value`.
fn run<V: Copy + Eq>(label: &str, subs: &[String], channels: &[String], value: fn(u32) -> V) {
    println!(
        "--- V = {label}: size_of SubIndex = {} bytes",
        size_of::<SubIndex<V>>()
    );
    let before = LIVE.load(Ordering::Relaxed);
    let chunks_before = CHUNKS.load(Ordering::Relaxed);
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut index = SubIndex::new(subs.len());
    for (i, p) in (0u32..).zip(subs) {
        let _ = index.insert(p, value(i));
    }
    let build = start.elapsed();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    let allocs = ALLOCS.load(Ordering::Relaxed) - allocs_before;
    let chunks = CHUNKS.load(Ordering::Relaxed) - chunks_before;
    let n = subs.len() as f64;
    println!(
        "{} subscriptions ({} entries, {} trie nodes) built in {:.1} ms",
        subs.len(),
        index.len(),
        index.node_count(),
        build.as_secs_f64() * 1e3
    );
    println!(
        "heap: {bytes} bytes, {allocs} allocations = {:.1} bytes/subscription (requested sizes)",
        bytes as f64 / n
    );
    println!(
        "heap with malloc chunk overhead (estimate): {chunks} bytes = {:.1} bytes/subscription",
        chunks as f64 / n
    );

    let mut found = 0u64;
    let allocs_before = ALLOCS.load(Ordering::Relaxed);
    let start = Instant::now();
    for c in channels.iter().cycle().take(LOOKUPS as usize) {
        index.for_each_match(black_box(c), |p, v| {
            found += 1;
            black_box((p, v));
        });
    }
    let t = start.elapsed();
    let lookup_allocs = ALLOCS.load(Ordering::Relaxed) - allocs_before;
    println!(
        "for_each_match: {:.2} M lookups/s, {:.1} matches/lookup ({:.1} M matches/s), {:.0} ns/lookup, {} allocations",
        f64::from(LOOKUPS) / t.as_secs_f64() / 1e6,
        found as f64 / f64::from(LOOKUPS),
        found as f64 / t.as_secs_f64() / 1e6,
        t.as_secs_f64() * 1e9 / f64::from(LOOKUPS),
        lookup_allocs
    );

    let start = Instant::now();
    let mut hits = 0u32;
    for c in channels.iter().cycle().take(LOOKUPS as usize) {
        hits += u32::from(index.has_match(black_box(c)));
    }
    let t = start.elapsed();
    println!(
        "has_match: {:.2} M lookups/s ({hits} hits)",
        f64::from(LOOKUPS) / t.as_secs_f64() / 1e6
    );

    let start = Instant::now();
    for (i, p) in (0u32..).zip(subs) {
        index.remove(p, value(i));
    }
    println!(
        "removed all in {:.1} ms; left: {} entries, {} nodes, {} heap bytes",
        start.elapsed().as_secs_f64() * 1e3,
        index.len(),
        index.node_count(),
        LIVE.load(Ordering::Relaxed) - before
    );
}

/// Subscribers of one pattern are a plain list (values are only `Eq`): inserting the
/// n-th scans n-1 values for a duplicate. Reports what that costs.
fn popular_pattern() {
    const SUBSCRIBERS: u64 = 20_000;
    let mut index = SubIndex::new(SUBSCRIBERS as usize);
    let start = Instant::now();
    for v in 0..SUBSCRIBERS {
        let _ = index.insert("public.#", v);
    }
    let t = start.elapsed();
    let start = Instant::now();
    let mut found = 0u64;
    for _ in 0..100 {
        index.for_each_match("public.chat", |_, v| found += black_box(v) & 1);
    }
    let lookup = start.elapsed() / 100;
    println!(
        "--- one pattern, {SUBSCRIBERS} subscribers (u64): inserted in {:.1} ms ({:.1} µs for the last ones), lookup {:.0} µs ({found})",
        t.as_secs_f64() * 1e3,
        t.as_secs_f64() * 1e6 / SUBSCRIBERS as f64 * 2.0,
        lookup.as_secs_f64() * 1e6
    );
}

/// The issue #10 attack, shaped for the index alone: `n` distinct patterns of `segments`
/// segments over {`a`, `*`} (alternating, with the choices of the first 14 positions taken
/// from the bits of the pattern's number, so every pattern has its own trie branch), the
/// last segment `last`. The channel is `a` × `segments`: every branch is compatible with
/// it up to the last segment.
fn adversarial_patterns(n: u32, segments: usize, last: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut segs: Vec<&str> = (0..segments - 1)
                .map(|j| {
                    let star = if j < 14 {
                        (i >> j) & 1 == 1
                    } else {
                        j % 2 == 1
                    };
                    if star { "*" } else { "a" }
                })
                .collect();
            segs.push(last);
            segs.join(".")
        })
        .collect()
}

/// Times lookups of `channel` in an index of `patterns` (stored as far as the index takes
/// them).
fn adversarial(label: &str, patterns: &[String], channel: &str) {
    // The limits the relay's broker gives each tenant's index (`--max-total-subs`).
    let mut index = SubIndex::new(1_000_000);
    let mut stored = 0u32;
    let mut refused = 0u32;
    for (i, p) in (0u32..).zip(patterns) {
        match index.insert(p, i) {
            Ok(true) => stored += 1,
            _ => refused += 1,
        }
    }
    const ROUNDS: u32 = 2000;
    let mut work = Default::default();
    let start = Instant::now();
    for _ in 0..ROUNDS {
        work = index.for_each_match(black_box(channel), |p, v| {
            black_box((p, v));
        });
    }
    let t = start.elapsed() / ROUNDS;
    println!(
        "--- adversarial {label}: {stored} stored, {refused} refused, {} trie nodes; {} nodes visited (bound {MAX_NODES_VISITED}), {} matches/lookup, {:.2} µs/lookup",
        index.node_count(),
        work.nodes_visited,
        work.matches,
        t.as_secs_f64() * 1e6
    );
}

/// The worst set within the limits: a pattern for every placement of at most
/// `MAX_PATTERN_STARS` `*` among `a`s, of every length up to `MAX_PATTERN_SEGMENTS`, so
/// the channel `a` × 16 is compatible with every trie node (the bound is reached).
fn worst_within_limits() -> Vec<String> {
    let mut out = Vec::new();
    for d in 1..=MAX_PATTERN_SEGMENTS {
        for mask in 0u32..(1 << d) {
            if mask.count_ones() as usize <= MAX_PATTERN_STARS {
                let segs: Vec<&str> = (0..d)
                    .map(|j| if mask >> j & 1 == 1 { "*" } else { "a" })
                    .collect();
                out.push(segs.join("."));
            }
        }
    }
    out
}

fn main() {
    let worst = worst_within_limits();
    let sixteen = vec!["a"; MAX_PATTERN_SEGMENTS].join(".");
    adversarial("worst set within the limits", &worst, &sixteen);
    let no_match: Vec<String> = worst
        .iter()
        .map(|p| format!("{p}.z"))
        .filter(|p| p.split('.').count() <= MAX_PATTERN_SEGMENTS)
        .collect();
    adversarial("worst set within the limits, no match", &no_match, &sixteen);
    let issue = adversarial_patterns(40 * 256, 124, "z");
    adversarial(
        "124-segment, no match (issue #10)",
        &issue,
        &vec!["a"; 124].join("."),
    );
    let issue = adversarial_patterns(40 * 256, 124, "a");
    adversarial(
        "124-segment, all match (issue #10)",
        &issue,
        &vec!["a"; 124].join("."),
    );
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let subs: Vec<String> = (0..SUBSCRIPTIONS)
        .map(|i| subscription(i, &mut rng))
        .collect();
    let channels: Vec<String> = (0..1024).map(|_| channel(&mut rng)).collect();
    run("u32", &subs, &channels, |i| i);
    run("u64", &subs, &channels, |i| u64::from(i) << 16 | 7);
    popular_pattern();
}
