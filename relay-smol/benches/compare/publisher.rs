//! The publisher: one connection, one WebSocket frame per message, unpaced (batches of
//! frames in one `write`, each stamped with the batch's send time) or paced (one frame per
//! due time). Blocking writes with a short timeout, so a server that stops reading (which is
//! how nats-server pushes back) is waited for, but never past the deadline.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::proto::Proto;

/// What to publish.
pub struct Plan {
    /// Protocol of the connection.
    pub proto: Proto,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages to send.
    pub count: u64,
    /// Messages per second, or `None` for as fast as the server takes them.
    pub rate: Option<u64>,
    /// Give up here.
    pub deadline: Instant,
}

/// Progress shared with the reader.
#[derive(Clone, Default)]
pub struct Progress {
    /// Messages written so far.
    pub sent: Arc<AtomicU64>,
    /// Finished (all sent, or gave up).
    pub done: Arc<AtomicBool>,
    /// Asked to stop early.
    pub abort: Arc<AtomicBool>,
}

fn write_all(c: &mut Conn, mut buf: &[u8], plan: &Plan, p: &Progress) -> io::Result<()> {
    while !buf.is_empty() {
        match c.sock.write(buf) {
            Ok(0) => return Err(io::Error::other("connection closed")),
            Ok(n) => buf = &buf[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if Instant::now() >= plan.deadline || p.abort.load(Ordering::Relaxed) {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "gave up writing"));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn stamp(frame: &mut [u8], off: usize, sent_ns: u64, seq: u64) {
    frame[off..off + 8].copy_from_slice(&sent_ns.to_be_bytes());
    frame[off + 8..off + 16].copy_from_slice(&seq.to_be_bytes());
}

/// Publishes per `plan` on `c`; returns the connection (keep it open until the reader is
/// done: closing it early could make a server discard what it has not read yet) and why it
/// stopped early, if it did.
pub fn run(mut c: Conn, plan: Plan, base: Instant, p: Progress) -> (Conn, Option<String>) {
    let _ = c.sock.set_nonblocking(false);
    let _ = c.sock.set_write_timeout(Some(Duration::from_millis(100)));
    let (one, off) = plan.proto.publish_template(plan.size);
    let flen = one.len();
    let mut err = None;
    match plan.rate {
        None => {
            let per_batch = (64 * 1024 / flen).max(1) as u64;
            let mut batch: Vec<u8> = Vec::with_capacity(flen * per_batch as usize);
            for _ in 0..per_batch {
                batch.extend_from_slice(&one);
            }
            let mut seq = 0;
            while seq < plan.count && !p.abort.load(Ordering::Relaxed) {
                let k = per_batch.min(plan.count - seq);
                let now_ns = base.elapsed().as_nanos() as u64;
                for j in 0..k as usize {
                    stamp(&mut batch[j * flen..], off, now_ns, seq + j as u64);
                }
                if let Err(e) = write_all(&mut c, &batch[..k as usize * flen], &plan, &p) {
                    err = Some(e.to_string());
                    break;
                }
                seq += k;
                p.sent.store(seq, Ordering::Release);
            }
        }
        Some(rate) => {
            let mut frame = one;
            let start = Instant::now();
            for seq in 0..plan.count {
                if p.abort.load(Ordering::Relaxed) {
                    break;
                }
                let due = start + Duration::from_nanos(seq * 1_000_000_000 / rate.max(1));
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                stamp(&mut frame, off, base.elapsed().as_nanos() as u64, seq);
                if let Err(e) = write_all(&mut c, &frame, &plan, &p) {
                    err = Some(e.to_string());
                    break;
                }
                p.sent.store(seq + 1, Ordering::Release);
            }
        }
    }
    p.done.store(true, Ordering::Release);
    (c, err)
}
