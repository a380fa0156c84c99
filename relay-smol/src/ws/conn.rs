//! One WebSocket connection after the handshake: a single poll-driven task that writes the
//! connection's outbound queue (everything queued, in one `write`) and reads, parses and
//! handles client frames.
//!
//! Memory per idle connection is small on purpose: reads go into one buffer shared by all
//! connections of the executor; only the bytes of an incomplete frame (or of frames read but
//! not handled yet, see below) are kept per connection, counted against its budget
//! ([`Broker::set_in_held`]), and only until they are handled.
//!
//! # When a connection does not read
//!
//! Reading is gated in exactly one place, [`Broker::read_stop`], asked before every read and
//! after every frame handled. Its answer is a [`ReadStop`](crate::broker::ReadStop) reason or
//! "read on":
//!
//! - `ReadStop::OwnBacklog`: the connection's outbound queue is at
//!   `Limits::read_stop_bytes` (the client is not reading what we send). Its requests would
//!   only queue more replies (PONG, OK:, ERR:, WebSocket Pongs), so we take none until the
//!   socket drains; TCP pushes back on the client. Nobody else is slowed: this connection's
//!   task just does not run its reads. If it stays blocked for the slow-consumer grace, the
//!   broker closes it (`ERR:slow_consumer`).
//! - `ReadStop::RelayBehind`: the relay is behind on writing — some connection's queue is at
//!   `Limits::behind_bytes` while its socket still takes bytes (its task has not run yet,
//!   typically because publishers were read first). Every connection's reads wait until the
//!   broker wakes them (the backlog is written, or `MAX_INTAKE_PAUSE` passed), so TCP pushes
//!   back on the publishers instead of deliveries being dropped for listeners that read.
//!   [`ConnTask::flush`] tells the broker when a socket refuses bytes
//!   ([`Broker::write_blocked`]): such a listener is the slow one and never pauses anyone.
//!
//! Besides the gate, every turn of the task is bounded ([`TURN_BYTES`] read and [`TURN_WORK`]
//! frames + deliveries); then it yields to the other tasks with its remaining input kept in
//! `pending_in`, so one busy connection cannot hold the thread.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll};

use fastpubsub_core::frame::{Command, FrameError, Publish, Reply};

use crate::broker::limiter::{Command as Limited, Verdict};
use crate::broker::{Broker, ConnId};
use crate::clock;
use crate::limits::{FRAME_WORK, Limits, TURN_BYTES, TURN_WORK};
use crate::ws::transport::Transport;
use crate::wsframe::{self, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT};

/// Smallest read worth a syscall when the turn has little budget left.
const MIN_READ: usize = 4096;

/// Input a closing connection reads and discards (waiting for the client's end of stream)
/// before it stops reading and waits out its close timeout.
const CLOSE_DISCARD_MAX: usize = 256 * 1024;

/// State shared by all connections of one relay (single-threaded).
pub struct Shared {
    /// The broker.
    pub broker: Rc<RefCell<Broker>>,
    /// Read buffer shared by all connections.
    pub scratch: RefCell<Vec<u8>>,
    /// Limits.
    pub limits: Limits,
}

/// Why a connection ends from our side.
enum End {
    /// Drop the socket now.
    Drop,
}

/// The read gate's answer after a frame.
enum Gate {
    /// Handle the next frame.
    Go,
    /// Stop reading and parsing until the gate opens ([`Broker::read_stop`]).
    Stop,
    /// The connection is closing: discard the rest of the input.
    Closing,
}

/// What one turn of the task may still do.
#[derive(Default)]
struct Turn {
    bytes: usize,
    work: usize,
}

impl Turn {
    fn spent(&self) -> bool {
        self.bytes >= TURN_BYTES || self.work >= TURN_WORK
    }
}

/// Whether handling input went through all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parsed {
    /// Every complete frame was handled.
    All,
    /// Stopped early (turn budget or read stop): complete frames may wait in `pending_in`.
    Stopped,
}

struct ConnTask {
    id: ConnId,
    io: Transport,
    shared: Rc<Shared>,
    /// Input read but not handled yet: an incomplete frame, and after [`Parsed::Stopped`] also
    /// complete frames. Allocated only while non-empty, with exact capacity.
    pending_in: Vec<u8>,
    /// `pending_in` may hold complete frames: handle them before reading more.
    in_ready: bool,
    /// Bytes of an oversize frame still to discard.
    skip: u64,
    /// Fragmented message being assembled: opcode and bytes.
    msg_op: Option<u8>,
    msg: Vec<u8>,
    msg_discard: bool,
    /// Work units (connections a publish was queued to) of the frame being handled.
    work: usize,
    /// We sent FIN after our final frames.
    fin_sent: bool,
    /// The client sent a Close frame: drop as soon as our answer is flushed.
    peer_closed: bool,
    /// Bytes read and discarded since the connection started closing.
    discarded: usize,
    /// The last read returned data, so more may be waiting: read without asking the
    /// reactor first. When false, a wake-up for writing costs no read syscall.
    read_hot: bool,
}

/// Runs the connection until it ends; unregisters it from the broker.
pub async fn run(io: Transport, id: ConnId, shared: Rc<Shared>, initial: Vec<u8>) {
    let mut d = ConnTask {
        id,
        io,
        shared: shared.clone(),
        pending_in: Vec::new(),
        in_ready: false,
        skip: 0,
        msg_op: None,
        msg: Vec::new(),
        msg_discard: false,
        work: 0,
        fin_sent: false,
        peer_closed: false,
        discarded: 0,
        read_hot: true,
    };
    if !initial.is_empty() {
        // Bytes that came with the handshake: handled in the first turn.
        d.pending_in = initial;
        d.in_ready = true;
        d.report_in_held();
    }
    poll_fn(|cx| d.poll(cx)).await;
    shared.broker.borrow_mut().unregister(id);
}

impl ConnTask {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut turn = Turn::default();
        loop {
            let (flushed, closing) = match self.flush(cx) {
                Ok(v) => v,
                Err(End::Drop) => return Poll::Ready(()),
            };
            if closing && flushed && self.peer_closed {
                return Poll::Ready(());
            }
            if closing && flushed && !self.fin_sent {
                self.io.shutdown_write();
                self.fin_sent = true;
            }
            if turn.spent() {
                self.broker().note_turn_yield();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if closing && self.discarded >= CLOSE_DISCARD_MAX {
                // Enough junk: stop reading and wait for the close deadline (the broker's
                // sweep wakes us with `must_drop`). Not dropping now: "flushed" only means
                // the kernel took our last frames; closing a socket with unread input sends
                // a reset, which throws away what the client has not received yet (the
                // reason and the Close frame). Not reading, TCP pushes back on the client.
                return Poll::Pending;
            }
            if !closing {
                if self.broker().read_stop(self.id).is_some() {
                    // OwnBacklog: the flush above registered for writability, we run again
                    // when the socket takes bytes. RelayBehind: the broker wakes us when the
                    // pause ends.
                    return Poll::Pending;
                }
                if self.in_ready {
                    self.shared.broker.borrow_mut().set_now(clock::now());
                    if self.handle_pending(&mut turn).is_err() {
                        return Poll::Ready(());
                    }
                    continue;
                }
            }
            if !self.read_hot {
                match self.io.poll_read_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(())) => self.read_hot = true,
                }
            }
            let shared = self.shared.clone();
            let mut scratch = shared.scratch.borrow_mut();
            let want = TURN_BYTES
                .saturating_sub(turn.bytes)
                .max(MIN_READ)
                .min(scratch.len());
            let buf = scratch.get_mut(..want).unwrap_or(&mut []);
            let n = match self.io.poll_read(cx, buf) {
                Poll::Pending => {
                    self.read_hot = false;
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(n)) => n,
            };
            turn.bytes += n;
            if closing {
                self.discarded += n;
            } else {
                shared.broker.borrow_mut().set_now(clock::now());
                let data = buf.get_mut(..n).unwrap_or(&mut []);
                if self.process(data, &mut turn).is_err() {
                    return Poll::Ready(());
                }
            }
        }
    }

    /// Writes the queue. Returns (queue empty and flushed, connection closing).
    fn flush(&mut self, cx: &mut Context<'_>) -> Result<(bool, bool), End> {
        let mut b = self.shared.broker.borrow_mut();
        loop {
            let Some(st) = b.conn_mut(self.id) else {
                return Err(End::Drop);
            };
            if st.must_drop() {
                return Err(End::Drop);
            }
            st.set_waker(cx.waker());
            let closing = st.is_closing();
            let pending = st.pending();
            if pending.is_empty() {
                return match self.io.poll_flush(cx) {
                    Poll::Ready(Ok(())) => Ok((true, closing)),
                    Poll::Pending => Ok((false, closing)),
                    Poll::Ready(Err(_)) => Err(End::Drop),
                };
            }
            match self.io.poll_write(cx, pending) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Err(End::Drop),
                Poll::Ready(Ok(n)) => {
                    // The time an intake pause ends is taken here (`consumed` may end it).
                    b.set_now(clock::now());
                    b.consumed(self.id, n);
                }
                Poll::Pending => {
                    // The socket refuses bytes: this listener is not keeping up (as opposed
                    // to the relay not having written yet; see `ReadStop::RelayBehind`).
                    b.write_blocked(self.id);
                    return Ok((false, closing));
                }
            }
        }
    }

    /// Handles freshly read bytes.
    fn process(&mut self, mut data: &mut [u8], turn: &mut Turn) -> Result<(), End> {
        if self.skip > 0 {
            let k = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(data.len());
            self.skip -= k as u64;
            data = data.get_mut(k..).unwrap_or(&mut []);
        }
        if data.is_empty() {
            return Ok(());
        }
        if self.pending_in.is_empty() {
            let (used, parsed) = self.parse_frames(data, turn)?;
            if let Some(rest) = data.get(used..)
                && !rest.is_empty()
            {
                self.pending_in = rest.to_vec();
            }
            self.in_ready = parsed == Parsed::Stopped && !self.pending_in.is_empty();
        } else {
            self.pending_in.reserve_exact(data.len());
            self.pending_in.extend_from_slice(data);
            self.handle_pending(turn)?;
        }
        self.report_in_held();
        Ok(())
    }

    /// Handles what waits in `pending_in`, as far as the turn and the read gate allow.
    fn handle_pending(&mut self, turn: &mut Turn) -> Result<(), End> {
        let mut buf = std::mem::take(&mut self.pending_in);
        let (used, parsed) = self.parse_frames(&mut buf, turn)?;
        buf.drain(..used.min(buf.len()));
        // Keep the allocation only while input waits, and not much larger than it.
        if buf.is_empty() {
            buf = Vec::new();
        } else if buf.capacity() > 2 * buf.len() + MIN_READ {
            buf.shrink_to_fit();
        }
        self.pending_in = buf;
        self.in_ready = parsed == Parsed::Stopped && !self.pending_in.is_empty();
        self.report_in_held();
        Ok(())
    }

    /// Tells the broker how many bytes of input this connection holds (its budget counts them).
    fn report_in_held(&self) {
        let held = self.pending_in.capacity() + self.msg.capacity();
        self.broker().set_in_held(self.id, held);
    }

    /// Parses and handles complete frames in `buf` until the input ends, the turn budget is
    /// spent or the read gate closes; returns the bytes consumed.
    fn parse_frames(&mut self, buf: &mut [u8], turn: &mut Turn) -> Result<(usize, Parsed), End> {
        let max = self.shared.limits.max_frame_len;
        let mut pos = 0;
        while pos < buf.len() {
            let rest = buf.get_mut(pos..).unwrap_or(&mut []);
            let h = match wsframe::parse_header(rest) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    let why = format!("WebSocket protocol error: {e}");
                    self.broker().close(self.id, 1002, &why, None, false);
                    return Ok((buf.len(), Parsed::All));
                }
            };
            let is_data = matches!(h.opcode, OP_TEXT | OP_BINARY | OP_CONT);
            let so_far = if h.opcode == OP_CONT {
                self.msg.len() as u64
            } else {
                0
            };
            if is_data && h.payload_len + so_far > max as u64 {
                let total = h.header_len as u64 + h.payload_len;
                let avail = rest.len() as u64;
                if total <= avail {
                    pos += total as usize;
                } else {
                    self.skip = total - avail;
                    pos = buf.len();
                }
                if !self.msg_discard {
                    let why = format!(
                        "message of {} bytes is over this relay's limit of {max} bytes",
                        h.payload_len + so_far
                    );
                    self.refuse_bad("frame_too_large", &why)?;
                }
                if h.opcode != OP_CONT && !h.fin {
                    self.msg_op = Some(h.opcode);
                }
                if self.msg_op.is_some() {
                    self.msg_discard = !h.fin;
                    self.msg = Vec::new();
                    if h.fin {
                        self.msg_op = None;
                    }
                }
                turn.work += FRAME_WORK;
                continue;
            }
            let plen = h.payload_len as usize;
            let total = h.header_len + plen;
            if rest.len() < total {
                break;
            }
            let payload = rest.get_mut(h.header_len..total).unwrap_or(&mut []);
            wsframe::unmask(payload, h.mask, 0);
            self.work = 0;
            self.on_frame(h.opcode, h.fin, payload)?;
            pos += total;
            turn.work += FRAME_WORK + self.work;
            match self.gate() {
                Gate::Closing => return Ok((buf.len(), Parsed::All)),
                Gate::Stop => return Ok((pos, Parsed::Stopped)),
                Gate::Go if turn.spent() && pos < buf.len() => {
                    return Ok((pos, Parsed::Stopped));
                }
                Gate::Go => {}
            }
        }
        Ok((pos, Parsed::All))
    }

    /// After a frame: go on, stop reading for now, or discard the rest (closing)?
    fn gate(&self) -> Gate {
        let mut b = self.broker();
        if b.conn_mut(self.id).is_none_or(|c| c.is_closing()) {
            return Gate::Closing;
        }
        match b.read_stop(self.id) {
            Some(_) => Gate::Stop,
            None => Gate::Go,
        }
    }

    fn broker(&self) -> std::cell::RefMut<'_, Broker> {
        self.shared.broker.borrow_mut()
    }

    fn on_frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) -> Result<(), End> {
        match opcode {
            OP_TEXT | OP_BINARY => {
                if self.msg_op.is_some() {
                    self.protocol_close("new message started inside a fragmented one");
                    return Ok(());
                }
                if fin {
                    self.on_message(opcode, payload)
                } else {
                    self.msg_op = Some(opcode);
                    self.msg_discard = false;
                    self.append_fragment(payload);
                    Ok(())
                }
            }
            OP_CONT => {
                let Some(op) = self.msg_op else {
                    self.protocol_close("continuation frame without a message");
                    return Ok(());
                };
                if !self.msg_discard {
                    self.append_fragment(payload);
                }
                if fin {
                    let msg = std::mem::take(&mut self.msg);
                    let discard = self.msg_discard;
                    self.msg_op = None;
                    self.msg_discard = false;
                    if !discard {
                        self.on_message(op, &msg)?;
                    }
                }
                Ok(())
            }
            OP_PING => {
                let mut b = self.broker();
                match b.check_command(self.id, Limited::Ping) {
                    Verdict::Allow => b.send_control(self.id, OP_PONG, payload),
                    Verdict::Refuse => {
                        let why = b.rate_limited_why(Limited::Ping, "WebSocket Pings and PINGs");
                        b.send_reply(
                            self.id,
                            &Reply::Err {
                                reason: "rate_limited",
                                parts: &["PING_FRAME", &why],
                            },
                        );
                    }
                    Verdict::Close => {}
                }
                Ok(())
            }
            OP_PONG => Ok(()),
            OP_CLOSE => {
                let code = match payload {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => 1000,
                };
                let code = if matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
                    code
                } else {
                    1000
                };
                self.peer_closed = true;
                self.broker().close(self.id, code, "", None, false);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Adds a fragment to the message being assembled; the capacity doubles only up to the
    /// frame limit (the message can never be larger).
    fn append_fragment(&mut self, payload: &[u8]) {
        let need = self.msg.len() + payload.len();
        if need > self.msg.capacity() {
            let target = (self.msg.capacity() * 2)
                .max(256)
                .min(self.shared.limits.max_frame_len)
                .max(need);
            self.msg.reserve_exact(target - self.msg.len());
        }
        self.msg.extend_from_slice(payload);
    }

    fn protocol_close(&mut self, why: &str) {
        self.broker().close(self.id, 1002, why, None, false);
    }

    /// Answers `ERR:<reason>:<why>` for a malformed input; closes after too many.
    fn refuse_bad(&mut self, reason: &str, why: &str) -> Result<(), End> {
        self.broker().refuse_malformed(self.id, reason, why);
        Ok(())
    }

    fn on_message(&mut self, opcode: u8, bytes: &[u8]) -> Result<(), End> {
        if opcode == OP_TEXT {
            let Ok(text) = std::str::from_utf8(bytes) else {
                return self.refuse_bad("bad_frame", "text frame is not valid UTF-8");
            };
            match Command::parse(text) {
                Ok(cmd) => self.on_command(cmd),
                Err(e) => self.refuse_bad(e.reason(), &e.to_string()),
            }
        } else {
            match Publish::new_checked(bytes) {
                Ok(p) => self.on_publish(&p),
                Err(e @ FrameError::PayloadTooLarge { len }) => {
                    // Name the tenant and channel: they parsed fine before the payload.
                    let cut = bytes
                        .len()
                        .saturating_sub(len - fastpubsub_core::frame::limits::MAX_PAYLOAD_LEN);
                    let why = e.to_string();
                    match bytes.get(..cut).map(Publish::new_checked) {
                        Some(Ok(p)) => {
                            let parts = ["PUB", p.tenant(), p.channel(), why.as_str()];
                            self.answer_refused_publish(e.reason(), &parts, true);
                            Ok(())
                        }
                        _ => self.refuse_bad(e.reason(), &why),
                    }
                }
                Err(e) => self.refuse_bad(e.reason(), &e.to_string()),
            }
        }
    }

    fn on_command(&mut self, cmd: Command<'_>) -> Result<(), End> {
        let id = self.id;
        let mut b = self.broker();
        if !b.admit_command(id, &cmd, "PINGs and WebSocket Pings") {
            return Ok(());
        }
        match cmd {
            Command::Ping => b.send_reply(id, &Reply::Pong),
            Command::Sub { tenant, pattern } => match b.subscribe(id, tenant, pattern) {
                Ok(_) => b.send_reply(id, &Reply::OkSub { tenant, pattern }),
                Err(e) => b.answer_sub_refused(id, tenant, pattern, &e),
            },
            Command::Unsub { tenant, pattern } => {
                b.unsubscribe(id, tenant, pattern);
                b.send_reply(id, &Reply::OkUnsub { tenant, pattern });
            }
            _ => {}
        }
        Ok(())
    }

    fn on_publish(&mut self, p: &Publish<'_>) -> Result<(), End> {
        let id = self.id;
        let result = self
            .broker()
            .publish(id, p.tenant(), p.channel(), p.payload(), p.mode());
        let e = match result {
            Ok(n) => {
                self.work = n;
                return Ok(());
            }
            Err(e) => e,
        };
        self.broker()
            .answer_publish_refused(id, p.tenant(), p.channel(), e);
        Ok(())
    }

    /// Answers a refused publish with `ERR:<reason>:<parts>` while the connection's
    /// refusal-reply rate allows (see `broker::limiter`).
    fn answer_refused_publish(&mut self, reason: &str, parts: &[&str], strike: bool) {
        self.broker()
            .answer_refused_publish(self.id, reason, parts, strike);
    }
}

const _: u8 = OP_CLOSE;
const _: u8 = OP_PONG;
