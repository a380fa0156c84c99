//! Edge benchmark (bounded in time, ~30 s): fan-out throughput, publish→deliver latency and
//! memory per idle subscribed connection, against the release-profile relay binary running
//! as its own process.
//!
//! Run: `cargo bench -p fastpubsub-relay --bench edge`
//! The relay is pinned to CPU 0 and this load generator to CPU 1 when `taskset` exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_io::Async;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::LocalExecutor;

const HANDSHAKE: &str = "GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: llps.v1, at.bench\r\n\r\n";

fn pinned() -> bool {
    Command::new("taskset")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Relay {
    child: Child,
    addr: SocketAddr,
}

impl Relay {
    fn start(extra: &[&str]) -> Relay {
        let bin = env!("CARGO_BIN_EXE_fastpubsub-relay");
        let mut cmd = if pinned() {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", bin]);
            c
        } else {
            Command::new(bin)
        };
        let mut child = cmd
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--insecure-no-auth",
                "--admin-listen",
                "off",
            ])
            // `/stats` is served to admin-token holders only.
            .arg("--admin-token-file")
            .arg(admin_token_file())
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .unwrap()
            .parse()
            .unwrap();
        Relay { child, addr }
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// CPU seconds (user + system) the relay has used so far.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // Fields 14 and 15 of /proc/PID/stat (utime, stime); `after` starts at field 3.
        let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        ticks as f64 / clock_ticks()
    }

    fn stats(&self) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.write_all(
            format!(
                "GET /stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin token the bench's relay runs with.
const ADMIN_TOKEN: &str = "edge-bench-admin-token";

fn admin_token_file() -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("fps-bench-admin-{}", std::process::id()));
    std::fs::write(&p, ADMIN_TOKEN).unwrap();
    p
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    // Mask key 0: valid, and the payload bytes stay as they are.
    let mut v = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        v.push(0x80 | n as u8);
    } else if n <= 65535 {
        v.push(0x80 | 126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
    v.extend_from_slice(&[0, 0, 0, 0]);
    v.extend_from_slice(payload);
    v
}

fn publish_frame(channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    for s in ["bench", channel] {
        p.extend_from_slice(&(s.len() as u16).to_be_bytes());
        p.extend_from_slice(s.as_bytes());
    }
    p.extend_from_slice(payload);
    client_frame(0x2, &p)
}

fn connect_blocking(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(HANDSHAKE.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            assert!(
                buf.starts_with(b"HTTP/1.1 101"),
                "handshake refused: {}",
                String::from_utf8_lossy(&buf)
            );
            buf.drain(..end + 4);
            return (s, buf);
        }
    }
}

/// Counts server frames of opcode 2 in a byte stream without copying payloads.
#[derive(Default)]
struct FrameCounter {
    hdr: Vec<u8>,
    skip: u64,
}

impl FrameCounter {
    fn feed(&mut self, data: &[u8]) -> u64 {
        let mut count = 0;
        let mut i = 0;
        while i < data.len() {
            if self.skip > 0 {
                let k = (self.skip as usize).min(data.len() - i);
                self.skip -= k as u64;
                i += k;
                continue;
            }
            self.hdr.push(data[i]);
            i += 1;
            let h = &self.hdr;
            if h.len() < 2 {
                continue;
            }
            let (need, len) = match h[1] & 0x7f {
                126 => (
                    4,
                    if h.len() >= 4 {
                        u64::from(u16::from_be_bytes([h[2], h[3]]))
                    } else {
                        0
                    },
                ),
                127 => (
                    10,
                    if h.len() >= 10 {
                        u64::from_be_bytes(h[2..10].try_into().unwrap())
                    } else {
                        0
                    },
                ),
                n => (2, u64::from(n)),
            };
            if h.len() == need {
                if h[0] & 0x0f == 2 {
                    count += 1;
                }
                self.skip = len;
                self.hdr.clear();
            }
        }
        count
    }
}

/// 1 publisher → `subs` subscribers, `size`-byte payloads, for `secs`: delivered msgs/s,
/// relay CPU seconds per second, relay stats.
fn fanout(subs: usize, size: usize, secs: f64) -> (f64, f64, String) {
    let relay = Relay::start(&["--queue-bytes", "1048576"]);
    let addr = relay.addr;
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));

    let (d2, s2, r2) = (delivered.clone(), stop.clone(), ready.clone());
    let readers = std::thread::spawn(move || {
        let ex = Rc::new(LocalExecutor::new());
        smol::block_on(ex.run(async {
            let mut tasks = Vec::new();
            for _ in 0..subs {
                let (d, s, r) = (d2.clone(), s2.clone(), r2.clone());
                tasks.push(ex.spawn(async move {
                    let (stream, rest) = connect_blocking(addr);
                    let mut stream = Async::new(stream).unwrap();
                    stream
                        .write_all(&client_frame(0x1, b"SUB:bench:fan.#"))
                        .await
                        .unwrap();
                    let mut counter = FrameCounter::default();
                    counter.feed(&rest);
                    r.fetch_add(1, Ordering::SeqCst);
                    let mut buf = vec![0u8; 256 * 1024];
                    while !s.load(Ordering::Relaxed) {
                        let read = stream.read(&mut buf);
                        let timeout = async {
                            async_io::Timer::after(Duration::from_millis(200)).await;
                            Ok(usize::MAX)
                        };
                        match futures_lite::future::or(read, timeout).await {
                            Ok(usize::MAX) => continue,
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let c = counter.feed(&buf[..n]);
                                d.fetch_add(c, Ordering::Relaxed);
                            }
                        }
                    }
                }));
            }
            for t in tasks {
                t.await;
            }
        }));
    });
    while ready.load(Ordering::SeqCst) < subs as u64 {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100)); // SUBs processed

    let s3 = stop.clone();
    let publisher = std::thread::spawn(move || {
        let (mut s, _) = connect_blocking(addr);
        let payload = vec![b'x'; size];
        let one = publish_frame("fan.x", &payload);
        let batch: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * (64 * 1024 / one.len()).max(1))
            .collect();
        while !s3.load(Ordering::Relaxed) {
            if s.write_all(&batch).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300)); // warm-up
    let c0 = delivered.load(Ordering::Relaxed);
    let cpu0 = relay.cpu_secs();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let c1 = delivered.load(Ordering::Relaxed);
    let cpu1 = relay.cpu_secs();
    let dt = t0.elapsed().as_secs_f64();
    let stats = relay.stats();
    stop.store(true, Ordering::Relaxed);
    drop(relay);
    let _ = publisher.join();
    let _ = readers.join();
    ((c1 - c0) as f64 / dt, (cpu1 - cpu0) / dt, stats)
}

/// Publish→deliver latency at `rate` msgs/s for `secs`: (p50 µs, p99 µs, max µs, samples).
fn latency(rate: u64, secs: f64) -> (f64, f64, f64, usize) {
    let relay = Relay::start(&[]);
    let addr = relay.addr;
    let (mut sub, mut buf) = connect_blocking(addr);
    sub.write_all(&client_frame(0x1, b"SUB:bench:lat")).unwrap();
    let (mut publ, _) = connect_blocking(addr);
    let base = Instant::now();
    let total = (rate as f64 * secs) as u64;
    // Wait for OK:SUB.
    let mut chunk = vec![0u8; 65536];
    while !buf.windows(6).any(|w| w == b"OK:SUB") {
        let n = sub.read(&mut chunk).unwrap();
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.clear();
    let reader = std::thread::spawn(move || {
        let mut lat = Vec::with_capacity(total as usize);
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 65536];
        sub.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        while (lat.len() as u64) < total {
            let Ok(n) = sub.read(&mut chunk) else { break };
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            // Frames: 0x82, len (< 126 here), deliver frame whose payload's first 8 bytes
            // are the send time in ns since `base`.
            while buf.len() >= 2 && buf.len() >= 2 + (buf[1] & 0x7f) as usize {
                let len = (buf[1] & 0x7f) as usize;
                let frame = &buf[2..2 + len];
                // 0x01 | str16 "bench" | str16 "lat" | u32 len | payload
                let off = 1 + 2 + 5 + 2 + 3 + 4;
                if frame.len() >= off + 8 {
                    let sent = u64::from_be_bytes(frame[off..off + 8].try_into().unwrap());
                    let now = base.elapsed().as_nanos() as u64;
                    lat.push(now.saturating_sub(sent));
                }
                buf.drain(..2 + len);
            }
        }
        lat
    });
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval * i as u32;
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let sent = base.elapsed().as_nanos() as u64;
        let mut payload = [0u8; 16];
        payload[..8].copy_from_slice(&sent.to_be_bytes());
        publ.write_all(&publish_frame("lat", &payload)).unwrap();
    }
    let mut lat = reader.join().unwrap();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    (
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        lat.len(),
    )
}

/// RSS of the relay at start and per idle subscribed connection.
fn idle_memory(conns: usize) -> (u64, f64) {
    let relay = Relay::start(&[]);
    std::thread::sleep(Duration::from_millis(200));
    let idle = relay.rss_kib();
    let mut held = Vec::with_capacity(conns);
    for chunk in 0..conns.div_ceil(100) {
        let mut batch = Vec::new();
        for _ in 0..100.min(conns - chunk * 100) {
            let (mut s, _) = connect_blocking(relay.addr);
            s.write_all(&client_frame(0x1, b"SUB:bench:idle.#"))
                .unwrap();
            batch.push(s);
        }
        held.extend(batch);
    }
    // Every SUB answered: read the OK:SUB from each.
    for s in &mut held {
        let mut b = [0u8; 64];
        let _ = s.read(&mut b).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = relay.rss_kib();
    (
        idle,
        (after.saturating_sub(idle) * 1024) as f64 / conns as f64,
    )
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench targets without
    // it, and must not run a 40 s measurement against a debug build.
    if !std::env::args().any(|a| a == "--bench") {
        println!("edge benchmark: run it with `cargo bench -p fastpubsub-relay --bench edge`");
        return;
    }
    if pinned() {
        let me = std::process::id().to_string();
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &me])
            .stdout(Stdio::null())
            .status();
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "edge benchmark (relay pinned to CPU 0, load generator to CPU 1: {}); loadavg {}",
        pinned(),
        load.trim()
    );
    println!("\nfan-out, 1 publisher -> N subscribers (delivered msgs/s, 2 s window):");
    for size in [64usize, 1024] {
        for subs in [1usize, 10, 100] {
            let (rate, cpu, stats) = fanout(subs, size, 2.0);
            let dropped = stats
                .split("\"dropped_queue_full\":")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .unwrap_or("?")
                .to_string();
            let us_per = if rate > 0.0 { cpu * 1e6 / rate } else { 0.0 };
            println!(
                "  {size:>5} B x {subs:>3} subs: {rate:>10.0} msgs/s delivered; relay CPU {:>3.0}% = {us_per:.2} us/delivery; dropped for full queues: {dropped}",
                cpu * 100.0
            );
        }
    }
    println!("\npublish->deliver latency, 1 -> 1, 16 B payload:");
    for rate in [1_000u64, 10_000] {
        let (p50, p99, max, n) = latency(rate, 2.0);
        println!(
            "  {rate:>6} msgs/s: p50 {p50:.1} us, p99 {p99:.1} us, max {max:.1} us ({n} samples)"
        );
    }
    let (idle, per_conn) = idle_memory(5000);
    println!(
        "\nmemory: relay idle RSS {idle} KiB; {per_conn:.0} bytes per idle subscribed connection (5000 connections)"
    );
}
