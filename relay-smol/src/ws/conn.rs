//! One WebSocket connection after the handshake: a single poll-driven task that writes the
//! connection's outbound queue (everything queued, in one `write`) and reads, parses and
//! handles client frames.
//!
//! Memory per idle connection is small on purpose: reads go into one buffer shared by all
//! connections of the executor; only the bytes of an incomplete frame are kept per
//! connection, and only until the frame completes.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Context, Poll};

use fastpubsub_core::frame::{Command, FrameError, Publish, Reply};

use crate::broker::{Broker, ConnId, PubError, SubError};
use crate::clock;
use crate::limits::Limits;
use crate::ws::codec::{self, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT};
use crate::ws::transport::Transport;

/// Reads handled per poll before yielding to other tasks (fairness).
const READ_BUDGET: usize = 4;

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

struct Driver {
    id: ConnId,
    io: Transport,
    shared: Rc<Shared>,
    /// Bytes of an incomplete client frame (allocated only while one is pending).
    pending_in: Vec<u8>,
    /// Bytes of an oversize frame still to discard.
    skip: u64,
    /// Fragmented message being assembled: opcode and bytes.
    msg_op: Option<u8>,
    msg: Vec<u8>,
    msg_discard: bool,
    /// We sent FIN after our final frames.
    fin_sent: bool,
    /// The client sent a Close frame: drop as soon as our answer is flushed.
    peer_closed: bool,
    /// The last read returned data, so more may be waiting: read without asking the
    /// reactor first. When false, a wake-up for writing costs no read syscall.
    read_hot: bool,
}

/// Runs the connection until it ends; unregisters it from the broker.
pub async fn run(io: Transport, id: ConnId, shared: Rc<Shared>, initial: Vec<u8>) {
    let mut d = Driver {
        id,
        io,
        shared: shared.clone(),
        pending_in: Vec::new(),
        skip: 0,
        msg_op: None,
        msg: Vec::new(),
        msg_discard: false,
        fin_sent: false,
        peer_closed: false,
        read_hot: true,
    };
    let mut ok = true;
    if !initial.is_empty() {
        let mut data = initial;
        ok = d.process(&mut data).is_ok();
    }
    if ok {
        poll_fn(|cx| d.poll(cx)).await;
    }
    shared.broker.borrow_mut().unregister(id);
}

impl Driver {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        for _ in 0..READ_BUDGET {
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
            if !self.read_hot {
                match self.io.poll_read_ready(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(())) => self.read_hot = true,
                }
            }
            {
                let shared = self.shared.clone();
                let mut scratch = shared.scratch.borrow_mut();
                let n = match self.io.poll_read(cx, &mut scratch[..]) {
                    Poll::Pending => {
                        self.read_hot = false;
                        return Poll::Pending;
                    }
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(n)) => n,
                };
                if !closing {
                    shared.broker.borrow_mut().set_now(clock::now());
                    let data = scratch.get_mut(..n).unwrap_or(&mut []);
                    if self.process(data).is_err() {
                        return Poll::Ready(());
                    }
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
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
                Poll::Ready(Ok(n)) => b.consumed(self.id, n),
                Poll::Pending => return Ok((false, closing)),
            }
        }
    }

    /// Handles freshly read bytes.
    fn process(&mut self, mut data: &mut [u8]) -> Result<(), End> {
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
            let used = self.parse_frames(data)?;
            if let Some(rest) = data.get(used..)
                && !rest.is_empty()
            {
                self.pending_in.extend_from_slice(rest);
            }
        } else {
            let mut buf = std::mem::take(&mut self.pending_in);
            buf.extend_from_slice(data);
            let used = self.parse_frames(&mut buf)?;
            buf.drain(..used.min(buf.len()));
            // Keep the allocation only while a frame is incomplete.
            self.pending_in = if buf.is_empty() { Vec::new() } else { buf };
        }
        Ok(())
    }

    /// Parses and handles every complete frame in `buf`; returns the bytes consumed.
    fn parse_frames(&mut self, buf: &mut [u8]) -> Result<usize, End> {
        let max = self.shared.limits.max_frame_len;
        let mut pos = 0;
        while pos < buf.len() {
            let rest = buf.get_mut(pos..).unwrap_or(&mut []);
            let h = match codec::parse_header(rest) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    let why = format!("WebSocket protocol error: {e}");
                    self.broker().close(self.id, 1002, &why, None, false);
                    return Ok(buf.len());
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
                continue;
            }
            let plen = h.payload_len as usize;
            let total = h.header_len + plen;
            if rest.len() < total {
                break;
            }
            let payload = rest.get_mut(h.header_len..total).unwrap_or(&mut []);
            codec::unmask(payload, h.mask, 0);
            self.on_frame(h.opcode, h.fin, payload)?;
            pos += total;
            if self.broker_closing() {
                return Ok(buf.len());
            }
        }
        Ok(pos)
    }

    fn broker(&self) -> std::cell::RefMut<'_, Broker> {
        self.shared.broker.borrow_mut()
    }

    fn broker_closing(&self) -> bool {
        self.broker()
            .conn_mut(self.id)
            .is_none_or(|c| c.is_closing())
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
                    self.msg.extend_from_slice(payload);
                    Ok(())
                }
            }
            OP_CONT => {
                let Some(op) = self.msg_op else {
                    self.protocol_close("continuation frame without a message");
                    return Ok(());
                };
                if !self.msg_discard {
                    self.msg.extend_from_slice(payload);
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
                self.broker().send_control(self.id, codec::OP_PONG, payload);
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

    fn protocol_close(&mut self, why: &str) {
        self.broker().close(self.id, 1002, why, None, false);
    }

    /// Answers `ERR:<reason>:<why>` for a malformed input; closes after too many.
    fn refuse_bad(&mut self, reason: &str, why: &str) -> Result<(), End> {
        let max = self.shared.limits.max_bad_frames;
        let mut b = self.broker();
        b.send_reply(
            self.id,
            &Reply::Err {
                reason,
                parts: &[why],
            },
        );
        let count = b.conn_mut(self.id).map_or(0, |c| c.note_bad_frame());
        if count > max {
            let why = format!("more than {max} malformed frames");
            b.close(
                self.id,
                1008,
                &why,
                Some(("too_many_bad_frames", &why)),
                false,
            );
        }
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
                            self.broker().send_reply(
                                self.id,
                                &Reply::Err {
                                    reason: e.reason(),
                                    parts: &parts,
                                },
                            );
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
        match cmd {
            Command::Ping => b.send_reply(id, &Reply::Pong),
            Command::Sub { tenant, pattern } => match b.subscribe(id, tenant, pattern) {
                Ok(_) => b.send_reply(id, &Reply::OkSub { tenant, pattern }),
                Err(e) => {
                    let (reason, why) = match e {
                        SubError::InvalidPattern(pe) => ("invalid_pattern", pe.to_string()),
                        SubError::TooComplex(e) => ("pattern_too_complex", e.to_string()),
                        SubError::PermissionDenied => ("permission_denied", String::new()),
                        SubError::TooManyForConnection(n) => (
                            "too_many_subscriptions",
                            format!(
                                "this connection already holds the maximum of {n} subscriptions"
                            ),
                        ),
                        SubError::RelayFull(n) => (
                            "relay_full",
                            format!("this relay holds its maximum of {n} subscriptions"),
                        ),
                    };
                    let parts_full = ["SUB", tenant, pattern, why.as_str()];
                    let parts = if why.is_empty() {
                        &parts_full[..3]
                    } else {
                        &parts_full[..]
                    };
                    b.send_reply(id, &Reply::Err { reason, parts });
                }
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
        let mut b = self.broker();
        if let Err(e) = b.publish(id, p.tenant(), p.channel(), p.payload(), p.mode()) {
            let (reason, why) = match e {
                PubError::InvalidChannel(pe) => ("invalid_channel", pe.to_string()),
                PubError::PermissionDenied => ("permission_denied", String::new()),
                PubError::RateLimited(rate) => (
                    "rate_limited",
                    format!("over this connection's ingress limit of {rate} bytes/s"),
                ),
            };
            let parts_full = ["PUB", p.tenant(), p.channel(), why.as_str()];
            let parts = if why.is_empty() {
                &parts_full[..3]
            } else {
                &parts_full[..]
            };
            b.send_reply(id, &Reply::Err { reason, parts });
        }
        Ok(())
    }
}

const _: u8 = OP_CLOSE;
const _: u8 = OP_PONG;
