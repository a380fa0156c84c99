//! The subscribers' reader: one thread, one level-triggered epoll set over every subscriber
//! socket, one shared 256 KiB read buffer. A delivery costs a few header bytes of parsing
//! and one histogram increment, so the reader keeps up with several million deliveries per
//! second (the generator's own CPU use is printed with every result to show it).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};

use crate::conn::Conn;
use crate::hist::Hist;

/// When the reader stops.
pub struct Stop {
    /// Messages the publisher has sent so far (final once `done`).
    pub sent: Arc<AtomicU64>,
    /// The publisher has finished.
    pub done: Arc<AtomicBool>,
    /// After the publisher finished: end when no delivery arrived for this long.
    pub quiet: Duration,
    /// End at the latest here.
    pub deadline: Instant,
}

/// How a read phase went.
pub struct Outcome {
    /// Why it ended.
    pub ended: &'static str,
}

/// Reads every connection until `stop` says so. `base` is the run's clock origin; the
/// per-second tallies start at `t0_ns`. Connection `stuck.0` (if any) is read only until
/// `stuck.1` (ns since base) and is not waited for.
pub fn run(
    conns: &mut [Conn],
    hist: &mut Hist,
    base: Instant,
    t0_ns: u64,
    stop: &Stop,
    stuck: Option<(usize, u64)>,
) -> io::Result<Outcome> {
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    for (i, c) in conns.iter().enumerate() {
        c.sock.set_nonblocking(true)?;
        epoll::add(
            &ep,
            &c.sock,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        )?;
    }
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut buf = vec![0u8; 256 * 1024];
    let healthy = conns.len() - usize::from(stuck.is_some());
    let mut stuck_reading = stuck.is_some();
    let mut last_progress = Instant::now();
    let wait = Timespec {
        tv_sec: 0,
        tv_nsec: 20_000_000,
    };
    let ended = loop {
        let now = Instant::now();
        if let Some((i, at_ns)) = stuck
            && stuck_reading
            && now.duration_since(base).as_nanos() as u64 >= at_ns
        {
            stuck_reading = false;
            epoll::delete(&ep, &conns[i].sock)?;
        }
        if stop.done.load(Ordering::Acquire) {
            let want = stop.sent.load(Ordering::Acquire) * healthy as u64;
            let have: u64 = conns
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != stuck.map(|s| s.0))
                .map(|(_, c)| c.rx.got.deliveries)
                .sum();
            if have >= want {
                break "all delivered";
            }
            if now.duration_since(last_progress) >= stop.quiet {
                break "no more deliveries";
            }
        }
        if now >= stop.deadline {
            break "deadline";
        }
        epoll::wait(&ep, spare_capacity(&mut events), Some(&wait))?;
        for ev in events.drain(..) {
            let data = ev.data;
            let i = data.u64() as usize;
            let Some(c) = conns.get_mut(i) else { continue };
            let before = c.rx.got.deliveries;
            for _ in 0..4 {
                match c.sock.read(&mut buf) {
                    Ok(0) => {
                        c.rx.got.closed = true;
                        epoll::delete(&ep, &c.sock)?;
                        break;
                    }
                    Ok(n) => {
                        let now_ns = base.elapsed().as_nanos() as u64;
                        c.feed(&buf[..n], now_ns, t0_ns, hist);
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.rx.got.closed = true;
                        epoll::delete(&ep, &c.sock)?;
                        break;
                    }
                }
            }
            c.answer_pings();
            if c.rx.got.deliveries > before {
                last_progress = Instant::now();
            }
        }
    };
    Ok(Outcome { ended })
}

/// Reads what a connection that stopped reading still has coming, for up to `limit`:
/// tells whether the server closed it (and counts what it had delivered).
pub fn drain(c: &mut Conn, base: Instant, limit: Duration) {
    let end = Instant::now() + limit;
    let mut buf = vec![0u8; 256 * 1024];
    let mut hist = Hist::default();
    let mut idle_since = Instant::now();
    let _ = c.sock.set_nonblocking(true);
    while Instant::now() < end && !c.rx.got.closed {
        match c.sock.read(&mut buf) {
            Ok(0) => c.rx.got.closed = true,
            Ok(n) => {
                let now_ns = base.elapsed().as_nanos() as u64;
                c.feed(&buf[..n], now_ns, 0, &mut hist);
                idle_since = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if idle_since.elapsed() > Duration::from_millis(500) {
                    break; // nothing more: still open
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => c.rx.got.closed = true,
        }
    }
}
