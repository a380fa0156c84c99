//! `fastpubsub-linkemu`: a user-space UDP link emulator (delay, jitter, loss) for tests
//! and demos on one machine, where the kernel has no netem.
//!
//! It listens on `--listen`; every datagram from a client there is forwarded to
//! `--target` from a socket of its own for that client, and the target's answers come
//! back the same way. Each direction (`fwd` = listen→target, `rev` = target→listen) has
//! its own one-way delay, jitter (uniform ±) and random loss. Packets keep their order
//! within a direction (a late packet holds back the ones behind it, like a real link).
//!
//! Settings change while running, by a line on stdin or a datagram to `--control`:
//! `delay 110ms`, `delay fwd 100ms`, `jitter 2ms`, `loss 1%`, `loss rev 0.5%`, `stats`
//! (`show` is an alias). The reply (on the control socket) is the new settings or the
//! counters as one line of JSON.
//!
//! Bounded: at most `--max-queue` packets wait in the delay line (more are dropped and
//! counted as `queue_drops`), at most 64 clients.
// A tool that emulates wall-clock delay: it reads the clock by design.
#![allow(clippy::disallowed_methods)]

use std::collections::{BinaryHeap, HashMap};
use std::io::BufRead;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use argh::FromArgs;

const MAX_CLIENTS: usize = 64;

/// UDP link emulator: forwards --listen to --target with delay, jitter and loss.
#[derive(FromArgs)]
struct Args {
    /// address to listen on (clients send here)
    #[argh(option)]
    listen: SocketAddr,
    /// address to forward to
    #[argh(option)]
    target: SocketAddr,
    /// one-way delay, both directions (e.g. 110ms, 0.5ms, 1s)
    #[argh(option, default = "String::from(\"0ms\")")]
    delay: String,
    /// uniform jitter ± this much, both directions
    #[argh(option, default = "String::from(\"0ms\")")]
    jitter: String,
    /// random loss, both directions (e.g. 1%)
    #[argh(option, default = "String::from(\"0%\")")]
    loss: String,
    /// UDP address for control commands (optional)
    #[argh(option)]
    control: Option<SocketAddr>,
    /// most packets waiting in the delay line
    #[argh(option, default = "100_000")]
    max_queue: usize,
}

#[derive(Clone, Copy, Debug, Default)]
struct DirCfg {
    delay: Duration,
    jitter: Duration,
    loss: f64,
}

#[derive(Default)]
struct Counters {
    fwd_packets: AtomicU64,
    rev_packets: AtomicU64,
    fwd_lost: AtomicU64,
    rev_lost: AtomicU64,
    queue_drops: AtomicU64,
    client_drops: AtomicU64,
}

struct Pending {
    due: Instant,
    seq: u64,
    via: Arc<UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.due == o.due && self.seq == o.seq
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // Min-heap on (due, seq).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

struct Line {
    heap: BinaryHeap<Pending>,
    seq: u64,
    last_due: [Option<Instant>; 2],
}

struct Emu {
    cfg: Mutex<[DirCfg; 2]>,
    line: Mutex<Line>,
    wake: Condvar,
    counters: Counters,
    max_queue: usize,
}

const FWD: usize = 0;
const REV: usize = 1;

impl Emu {
    /// Schedule `data` in direction `dir`, or drop it (loss or full queue).
    fn offer(&self, dir: usize, via: &Arc<UdpSocket>, to: SocketAddr, data: &[u8]) {
        let cfg = self.cfg.lock().map(|c| c[dir]).unwrap_or_default();
        let c = &self.counters;
        if dir == FWD {
            c.fwd_packets.fetch_add(1, Ordering::Relaxed);
        } else {
            c.rev_packets.fetch_add(1, Ordering::Relaxed);
        }
        if cfg.loss > 0.0 && fastrand::f64() < cfg.loss {
            if dir == FWD {
                c.fwd_lost.fetch_add(1, Ordering::Relaxed);
            } else {
                c.rev_lost.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let now = Instant::now();
        let mut delay = cfg.delay;
        if !cfg.jitter.is_zero() {
            let j = cfg.jitter.as_secs_f64() * (fastrand::f64() * 2.0 - 1.0);
            delay = Duration::from_secs_f64((delay.as_secs_f64() + j).max(0.0));
        }
        let Ok(mut line) = self.line.lock() else {
            return;
        };
        if line.heap.len() >= self.max_queue {
            c.queue_drops.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut due = now + delay;
        // Keep order within a direction.
        if let Some(prev) = line.last_due.get(dir).copied().flatten()
            && prev > due
        {
            due = prev;
        }
        if let Some(slot) = line.last_due.get_mut(dir) {
            *slot = Some(due);
        }
        line.seq += 1;
        let seq = line.seq;
        line.heap.push(Pending {
            due,
            seq,
            via: via.clone(),
            to,
            data: data.to_vec(),
        });
        drop(line);
        self.wake.notify_one();
    }

    /// The sender loop: sleeps until the earliest due packet, sends it.
    fn run_sender(&self) {
        let Ok(mut line) = self.line.lock() else {
            return;
        };
        loop {
            let now = Instant::now();
            match line.heap.peek().map(|p| p.due) {
                Some(due) if due <= now => {
                    if let Some(p) = line.heap.pop() {
                        drop(line);
                        let _ = p.via.send_to(&p.data, p.to);
                        line = match self.line.lock() {
                            Ok(l) => l,
                            Err(_) => return,
                        };
                    }
                }
                Some(due) => {
                    line = match self.wake.wait_timeout(line, due - now) {
                        Ok((l, _)) => l,
                        Err(_) => return,
                    };
                }
                None => {
                    line = match self.wake.wait(line) {
                        Ok(l) => l,
                        Err(_) => return,
                    };
                }
            }
        }
    }

    fn stats_json(&self) -> String {
        let c = &self.counters;
        let cfg = self.cfg.lock().map(|c| *c).unwrap_or_default();
        let queued = self.line.lock().map(|l| l.heap.len()).unwrap_or(0);
        format!(
            "{{\"fwd\":{{\"delay_ms\":{:.3},\"jitter_ms\":{:.3},\"loss_pct\":{:.3},\"packets\":{},\"lost\":{}}},\
             \"rev\":{{\"delay_ms\":{:.3},\"jitter_ms\":{:.3},\"loss_pct\":{:.3},\"packets\":{},\"lost\":{}}},\
             \"queued\":{queued},\"queue_drops\":{},\"client_drops\":{}}}",
            cfg[FWD].delay.as_secs_f64() * 1e3,
            cfg[FWD].jitter.as_secs_f64() * 1e3,
            cfg[FWD].loss * 100.0,
            c.fwd_packets.load(Ordering::Relaxed),
            c.fwd_lost.load(Ordering::Relaxed),
            cfg[REV].delay.as_secs_f64() * 1e3,
            cfg[REV].jitter.as_secs_f64() * 1e3,
            cfg[REV].loss * 100.0,
            c.rev_packets.load(Ordering::Relaxed),
            c.rev_lost.load(Ordering::Relaxed),
            c.queue_drops.load(Ordering::Relaxed),
            c.client_drops.load(Ordering::Relaxed),
        )
    }

    /// Apply one text command; the reply line.
    fn command(&self, line: &str) -> String {
        match apply_command(&self.cfg, line) {
            Ok(()) => self.stats_json(),
            Err(e) => format!("{{\"error\":{e:?}}}"),
        }
    }
}

/// Parse `10ms`, `1.5ms`, `2s`, `300us` (a bare number is milliseconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1e-3)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}: use e.g. 110ms, 0.5ms, 2s"))?;
    if !(0.0..=60.0).contains(&(v * scale)) {
        return Err(format!("duration {s:?} out of range 0..60s"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Parse `1%`, `0.5%` or a fraction `0.01`.
fn parse_loss(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let v = if let Some(p) = s.strip_suffix('%') {
        p.trim().parse::<f64>().map(|v| v / 100.0)
    } else {
        s.parse::<f64>()
    }
    .map_err(|_| format!("bad loss {s:?}: use e.g. 1% or 0.01"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("loss {s:?} out of range 0..100%"));
    }
    Ok(v)
}

fn apply_command(cfg: &Mutex<[DirCfg; 2]>, line: &str) -> Result<(), String> {
    let mut words = line.split_whitespace();
    let Some(cmd) = words.next() else {
        return Ok(());
    };
    if matches!(cmd, "stats" | "show") {
        return Ok(());
    }
    let mut rest: Vec<&str> = words.collect();
    let dirs: &[usize] = match rest.first().copied() {
        Some("fwd") => {
            rest.remove(0);
            &[FWD]
        }
        Some("rev") => {
            rest.remove(0);
            &[REV]
        }
        Some("both") => {
            rest.remove(0);
            &[FWD, REV]
        }
        _ => &[FWD, REV],
    };
    let [value] = rest.as_slice() else {
        return Err(format!(
            "usage: {cmd} [fwd|rev|both] VALUE (e.g. `delay 110ms`, `loss rev 1%`)"
        ));
    };
    let mut c = cfg.lock().map_err(|_| "poisoned".to_string())?;
    for &d in dirs {
        let Some(dc) = c.get_mut(d) else { continue };
        match cmd {
            "delay" => dc.delay = parse_duration(value)?,
            "jitter" => dc.jitter = parse_duration(value)?,
            "loss" => dc.loss = parse_loss(value)?,
            other => {
                return Err(format!(
                    "unknown command {other:?}: use delay, jitter, loss or stats"
                ));
            }
        }
    }
    Ok(())
}

fn main() {
    let args: Args = argh::from_env();
    if let Err(e) = run(args) {
        eprintln!("fastpubsub-linkemu: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let dc = DirCfg {
        delay: parse_duration(&args.delay)?,
        jitter: parse_duration(&args.jitter)?,
        loss: parse_loss(&args.loss)?,
    };
    let emu = Arc::new(Emu {
        cfg: Mutex::new([dc, dc]),
        line: Mutex::new(Line {
            heap: BinaryHeap::new(),
            seq: 0,
            last_due: [None, None],
        }),
        wake: Condvar::new(),
        counters: Counters::default(),
        max_queue: args.max_queue.max(1),
    });
    let listen =
        Arc::new(UdpSocket::bind(args.listen).map_err(|e| format!("bind {}: {e}", args.listen))?);
    eprintln!(
        "fastpubsub-linkemu: {} -> {} {}",
        listen.local_addr().map_err(|e| e.to_string())?,
        args.target,
        emu.stats_json()
    );
    {
        let emu = emu.clone();
        std::thread::spawn(move || emu.run_sender());
    }
    if let Some(ctl) = args.control {
        let sock = UdpSocket::bind(ctl).map_err(|e| format!("bind control {ctl}: {e}"))?;
        let emu = emu.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let line = String::from_utf8_lossy(buf.get(..n).unwrap_or(&[])).into_owned();
                let reply = emu.command(&line);
                let _ = sock.send_to(reply.as_bytes(), from);
            }
        });
    }
    {
        let emu = emu.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                println!("{}", emu.command(&line));
            }
        });
    }
    // Client address -> its upstream socket.
    let mut clients: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let bind_any: SocketAddr = if args.target.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    loop {
        let (n, from) = listen
            .recv_from(&mut buf)
            .map_err(|e| format!("recv: {e}"))?;
        let up = match clients.get(&from) {
            Some(s) => s.clone(),
            None => {
                if clients.len() >= MAX_CLIENTS {
                    emu.counters.client_drops.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let s = Arc::new(UdpSocket::bind(bind_any).map_err(|e| format!("bind: {e}"))?);
                clients.insert(from, s.clone());
                let (emu, s2, listen) = (emu.clone(), s.clone(), listen.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65_536];
                    while let Ok((n, _)) = s2.recv_from(&mut buf) {
                        emu.offer(REV, &listen, from, buf.get(..n).unwrap_or(&[]));
                    }
                });
                s
            }
        };
        emu.offer(FWD, &up, args.target, buf.get(..n).unwrap_or(&[]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        assert_eq!(parse_duration("110ms"), Ok(Duration::from_millis(110)));
        assert_eq!(parse_duration("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("300us"), Ok(Duration::from_micros(300)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_millis(7)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-1ms").is_err());
        assert!(parse_duration("61s").is_err());
        assert_eq!(parse_loss("1%"), Ok(0.01));
        assert_eq!(parse_loss("0.5"), Ok(0.5));
        assert!(parse_loss("101%").is_err());
        let cfg = Mutex::new([DirCfg::default(); 2]);
        assert!(apply_command(&cfg, "delay fwd 10ms").is_ok());
        assert!(apply_command(&cfg, "loss 2%").is_ok());
        assert!(apply_command(&cfg, "bogus 1").is_err());
        assert!(apply_command(&cfg, "delay").is_err());
        let c = cfg.lock().map(|c| *c).unwrap_or_default();
        assert_eq!(c[FWD].delay, Duration::from_millis(10));
        assert_eq!(c[REV].delay, Duration::ZERO);
        assert_eq!(c[REV].loss, 0.02);
    }
}
