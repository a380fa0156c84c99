//! One WebTransport session on the relay: the glue between a QUIC connection's HTTP/3
//! layer ([`H3`]) and the broker, sans-IO (the endpoint task owns the socket).
//!
//! - The CONNECT is authorized like a WebSocket handshake (ticket from `Authorization:
//!   Bearer` or `?at=`, protocol WebTransport); a refusal is a 401/403/503 with the reason
//!   in `llps-reason`, then the connection closes.
//! - The client's first WebTransport bidi stream is the LLPS control stream: its frames
//!   are commands and publishes, handled exactly as on `/ws`; `SUB` may carry delivery
//!   options (`:U:<line>:<kbps>`, `:D[:<kbps>]`).
//! - Deliveries come from the broker's queues (WebSocket-framed, see `broker::wt`) and
//!   are re-framed as they are written: `kind | len` on the control stream, `len` on a
//!   line (a relay-opened uni stream whose first frame is `U:<line>`), one datagram each.
//! - A WebSocket Close frame at the end of the control queue (slow consumer, ticket
//!   ended, shutdown) becomes the QUIC connection close with that code and reason.
//!
//! Call order per wake-up: [`Session::handle_event`] for every quinn-proto event of the
//! connection, then [`Session::pump`]; [`Session::is_done`] says when to forget it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use bytes::Bytes;
use fastpubsub_core::frame::{Command, Publish, Reply};
use quinn_proto::{Connection, Dir, Event, StreamId, VarInt};

use super::frame::{self, ControlReader, KIND_BINARY, KIND_TEXT, MAX_FRAME};
use super::h3::{H3, H3Event, ReadStatus, Role};
use crate::auth::{Authorizer, HandshakeRequest, Protocol};
use crate::broker::wt::{DATAGRAM_QUEUE, LINES};
use crate::broker::{Broker, ConnId, Target};
use crate::clock;
use crate::wsframe::{OP_BINARY, OP_CLOSE, OP_TEXT};

/// Application close code: the client broke the LLPS framing.
pub const CLOSE_PROTOCOL: u32 = 4002;
/// Application close code: the session was refused (after the 4xx/5xx answer).
pub const CLOSE_REFUSED: u32 = 4003;
/// How long a refused session stays open for its answer to arrive.
pub const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes read from the control stream per turn: a publisher's burst is handled in slices,
/// with the sessions it delivered to written out in between (the endpoint drives a session
/// that has more to read again in its next turn, after the others).
const READ_BUDGET: usize = 64 * 1024;

/// Writes one broker queue (WebSocket frames) to a QUIC stream as WebTransport frames.
#[derive(Debug, Default)]
struct Reframer {
    /// The new header of the frame being written, not yet taken by the stream.
    hdr: Vec<u8>,
    /// Payload bytes of the current frame still to write (0: at a frame boundary).
    left: usize,
}

/// Parses a server WebSocket frame header: `(opcode, header length, payload length)`.
fn ws_header(b: &[u8]) -> Option<(u8, usize, usize)> {
    let op = b.first()? & 0x0f;
    let l7 = b.get(1)? & 0x7f;
    match l7 {
        126 => Some((
            op,
            4,
            usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])),
        )),
        127 => {
            let v = u64::from_be_bytes(b.get(2..10)?.try_into().ok()?);
            Some((op, 10, usize::try_from(v).ok()?))
        }
        n => Some((op, 2, usize::from(n))),
    }
}

/// What a queue's next frame asks for beyond bytes.
enum Special {
    Close(u32, String),
}

/// See the module docs.
pub struct Session {
    h3: H3,
    remote: SocketAddr,
    id: Option<ConnId>,
    ctrl: Option<StreamId>,
    reader: ControlReader,
    ctrl_out: Reframer,
    lines: [Option<(StreamId, Reframer)>; LINES],
    refused_at: Option<Instant>,
    /// Reading the control stream waits for the session's backlog to drain
    /// (`Broker::read_stop`); QUIC flow control then holds the client back.
    read_stopped: bool,
    /// The control stream had more to read when the turn's budget ran out.
    more_input: bool,
    /// Bytes read from the control stream in this turn (at most [`READ_BUDGET`]).
    turn_read: usize,
    /// The broker closed the session: the control stream is finished so its last frames
    /// (`ERR:…`) arrive; the connection closes with this code and reason once they are
    /// acknowledged, or after [`REFUSAL_LINGER`].
    close_pending: Option<(u32, String, Instant)>,
    /// The quarter stream id every HTTP datagram of the session starts with (empty until the
    /// session is accepted).
    datagram_prefix: Vec<u8>,
    /// The datagram size last given to the broker.
    datagram_max: Option<usize>,
    /// The status of the CONNECT's answer, until [`Session::take_outcome`].
    outcome: Option<u16>,
    /// The CONNECT was answered 200.
    accepted: bool,
    done: bool,
    waker: Option<Waker>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("remote", &self.remote)
            .field("id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}

impl Session {
    /// A session for a connection from `remote`; `waker` is given to the broker so a
    /// delivery wakes the endpoint task for this session.
    pub fn new(remote: SocketAddr, waker: Waker) -> Self {
        Session {
            h3: H3::new(Role::Server),
            remote,
            id: None,
            ctrl: None,
            reader: ControlReader::default(),
            ctrl_out: Reframer::default(),
            lines: Default::default(),
            refused_at: None,
            read_stopped: false,
            more_input: false,
            turn_read: 0,
            close_pending: None,
            datagram_prefix: Vec::new(),
            datagram_max: None,
            outcome: None,
            accepted: false,
            done: false,
            waker: Some(waker),
        }
    }

    /// The broker connection, once the session is accepted.
    pub fn conn_id(&self) -> Option<ConnId> {
        self.id
    }

    /// Is the session waiting out a refusal's answer or a close's last frames?
    pub fn is_lingering(&self) -> bool {
        !self.done && (self.refused_at.is_some() || self.close_pending.is_some())
    }

    /// When a lingering session must be closed at the latest.
    pub fn linger_deadline(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        self.refused_at
            .or(self.close_pending.as_ref().map(|c| c.2))
            .map(|at| at + REFUSAL_LINGER)
    }

    /// The status of the CONNECT's answer (200, or 401, 403, 503) once, after it was given
    /// (for counters).
    pub fn take_outcome(&mut self) -> Option<u16> {
        self.outcome.take()
    }

    /// Was the session accepted (it counts as an open session until it is lost)?
    pub fn was_accepted(&self) -> bool {
        self.accepted
    }

    /// Starts a turn of the endpoint: the read budget is [`READ_BUDGET`] again.
    pub fn begin_turn(&mut self) {
        self.turn_read = 0;
    }

    /// Does the session have input left that its last turn did not read (drive it again)?
    pub fn wants_turn(&self) -> bool {
        self.more_input && !self.done
    }

    /// Has the session ended (the connection is closing or closed)?
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The connection's handshake completed.
    pub fn on_connected(&mut self, conn: &mut Connection) {
        self.h3.on_connected(conn);
    }

    /// Feeds one quinn-proto event of this connection.
    pub fn handle_event(
        &mut self,
        conn: &mut Connection,
        ev: &Event,
        broker: &Rc<RefCell<Broker>>,
        auth: &dyn Authorizer,
        now: Instant,
    ) {
        if matches!(ev, Event::Connected) {
            self.on_connected(conn);
        }
        self.h3.handle_event(conn, ev);
        while let Some(e) = self.h3.poll_event() {
            self.on_h3(conn, e, broker, auth, now);
        }
    }

    fn on_h3(
        &mut self,
        conn: &mut Connection,
        e: H3Event,
        broker: &Rc<RefCell<Broker>>,
        auth: &dyn Authorizer,
        now: Instant,
    ) {
        match e {
            H3Event::Request(req) => {
                let hs = HandshakeRequest {
                    token: req.token(),
                    peer: self.remote.ip(),
                    origin: req.origin.as_deref(),
                    now: clock::wall_now(),
                    protocol: Protocol::WebTransport,
                };
                let access = match auth.authorize(&hs) {
                    Ok(a) => a,
                    Err(r) => {
                        let reason = if hs.token.is_none() {
                            "missing access ticket: send `Authorization: Bearer <TICKET>` or \
                             add `?at=<TICKET>` to the URL"
                                .to_owned()
                        } else {
                            r.reason
                        };
                        log::debug!(
                            "wt: session from {} refused: {} {reason}",
                            self.remote,
                            r.status
                        );
                        return self.refuse(conn, r.status, &reason, now);
                    }
                };
                let mut b = broker.borrow_mut();
                match b.register_wt(access) {
                    Some(id) => {
                        if let (Some(st), Some(w)) = (b.conn_mut(id), &self.waker) {
                            st.set_waker(w);
                        }
                        drop(b);
                        self.id = Some(id);
                        self.accepted = true;
                        self.outcome = Some(200);
                        self.h3.respond(conn, 200, None);
                        self.datagram_prefix = self.h3.datagram_prefix().unwrap_or_default();
                        self.update_datagram_max(conn, broker);
                    }
                    None => {
                        let why = if b.is_shutting_down() {
                            "relay is shutting down; connect to another relay or retry shortly"
                                .to_owned()
                        } else {
                            format!(
                                "relay is at its connection limit ({}); retry later or use \
                                 another relay",
                                b.limits().max_connections
                            )
                        };
                        drop(b);
                        self.refuse(conn, 503, &why, now);
                    }
                }
            }
            H3Event::BidiOpened(id) => {
                if self.ctrl.is_none() && self.id.is_some() {
                    self.ctrl = Some(id);
                    self.read_control(conn, broker, now);
                } else {
                    let _ = conn.recv_stream(id).stop(VarInt::from_u32(CLOSE_PROTOCOL));
                    let _ = conn.send_stream(id).reset(VarInt::from_u32(CLOSE_PROTOCOL));
                }
            }
            H3Event::Readable(id) if Some(id) == self.ctrl => self.read_control(conn, broker, now),
            H3Event::Readable(_) | H3Event::UniOpened(_) | H3Event::Response { .. } => {}
            H3Event::Writable(_) => {}
            H3Event::Finished(id) if Some(id) == self.ctrl => {
                if let Some((code, why, _)) = self.close_pending.take() {
                    self.end(conn, code, &why, broker, now);
                }
            }
            H3Event::Finished(_) => {}
            H3Event::Stopped(id) => {
                if Some(id) == self.ctrl {
                    self.end(conn, 0, "control stream stopped by the client", broker, now);
                } else if let Some(slot) = self
                    .lines
                    .iter_mut()
                    .find(|l| l.as_ref().is_some_and(|(s, _)| *s == id))
                {
                    // The client stopped reading a line: a new one is opened for later
                    // deliveries (with its own first frame).
                    *slot = None;
                }
            }
            H3Event::Datagram(_) => {} // clients send nothing over datagrams
            H3Event::Fatal(code, why) => {
                if self.id.is_some() || code != super::h3::code::H3_NO_ERROR {
                    log::debug!("wt: session from {} ends: {why}", self.remote);
                }
                self.end(conn, code, &why, broker, now);
            }
        }
    }

    fn refuse(&mut self, conn: &mut Connection, status: u16, reason: &str, now: Instant) {
        self.h3.respond(conn, status, Some(reason));
        self.outcome = Some(status);
        // A CONNECTION_CLOSE now would discard the answer still in flight: close once it had
        // time to arrive (the client usually closes first).
        self.refused_at = Some(now);
    }

    /// Closes a refused session [`REFUSAL_LINGER`] after its answer.
    fn finish_refusal(&mut self, conn: &mut Connection, now: Instant) {
        if let Some(at) = self.refused_at
            && !self.done
            && now.saturating_duration_since(at) >= REFUSAL_LINGER
        {
            conn.close(
                now,
                VarInt::from_u32(CLOSE_REFUSED),
                Bytes::from_static(b"refused"),
            );
            self.done = true;
        }
    }

    fn end(
        &mut self,
        conn: &mut Connection,
        code: u32,
        why: &str,
        broker: &Rc<RefCell<Broker>>,
        now: Instant,
    ) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(id) = self.id.take() {
            broker.borrow_mut().unregister(id);
        }
        let mut reason = why.as_bytes();
        reason = reason.get(..reason.len().min(200)).unwrap_or(&[]);
        conn.close(now, VarInt::from_u32(code), Bytes::copy_from_slice(reason));
    }

    /// The connection is gone (closed by either side or timed out): release the broker
    /// connection.
    pub fn on_lost(&mut self, broker: &Rc<RefCell<Broker>>) {
        self.done = true;
        if let Some(id) = self.id.take() {
            broker.borrow_mut().unregister(id);
        }
    }

    /// Tells the broker the largest deliver frame one datagram carries now (the path's
    /// datagram size changes with path MTU discovery and migration).
    fn update_datagram_max(&mut self, conn: &mut Connection, broker: &Rc<RefCell<Broker>>) {
        let Some(id) = self.id else { return };
        let max = conn
            .datagrams()
            .max_size()
            .map_or(0, |m| m.saturating_sub(self.datagram_prefix.len()));
        if Some(max) == self.datagram_max {
            return;
        }
        self.datagram_max = Some(max);
        if let Some(w) = broker.borrow_mut().conn_mut(id).and_then(|c| c.wt_mut()) {
            w.set_datagram_max(max);
        }
    }

    fn read_control(&mut self, conn: &mut Connection, broker: &Rc<RefCell<Broker>>, now: Instant) {
        let (Some(ctrl), Some(id)) = (self.ctrl, self.id) else {
            return;
        };
        let mut b = broker.borrow_mut();
        b.set_now(now);
        if b.read_stop(id).is_some() {
            self.read_stopped = true;
            return;
        }
        self.read_stopped = false;
        self.more_input = false;
        let mut err = None;
        let mut read = self.turn_read;
        let mut status = ReadStatus::Open;
        // Frames go to the broker straight from QUIC's chunks: no copy, no allocation.
        while err.is_none() {
            if read >= READ_BUDGET {
                self.more_input = true;
                break;
            }
            let mut got = 0;
            let reader = &mut self.reader;
            status = self.h3.read(conn, ctrl, READ_BUDGET - read, &mut |bytes| {
                got += bytes.len();
                if err.is_none()
                    && let Err(e) = feed_control(reader, &mut b, id, bytes)
                {
                    err = Some(e);
                }
            });
            read += got;
            if got == 0 || status != ReadStatus::Open || closing(&mut b, id) {
                break;
            }
        }
        self.turn_read = read;
        b.set_in_held(id, self.reader.buffered());
        drop(b);
        if let Some(e) = err {
            return self.end(conn, CLOSE_PROTOCOL, &e.to_string(), broker, now);
        }
        match status {
            ReadStatus::Open => {}
            ReadStatus::Finished => self.end(
                conn,
                0,
                "the client finished its control stream",
                broker,
                now,
            ),
            ReadStatus::Reset => {
                self.end(conn, 0, "the client reset its control stream", broker, now)
            }
        }
    }

    /// Writes what the broker queued for this session (bounded by QUIC's flow control), and
    /// finishes refused or closing sessions.
    pub fn pump(&mut self, conn: &mut Connection, broker: &Rc<RefCell<Broker>>, now: Instant) {
        if self.refused_at.is_some() {
            return self.finish_refusal(conn, now);
        }
        let Some(id) = self.id else { return };
        if self.done {
            return;
        }
        if let Some((code, why, at)) = &self.close_pending {
            if now.saturating_duration_since(*at) >= REFUSAL_LINGER {
                let (code, why) = (*code, why.clone());
                self.end(conn, code, &why, broker, now);
            }
            return;
        }
        let (must_drop, closing) = broker
            .borrow_mut()
            .conn_mut(id)
            .map_or((true, true), |c| (c.must_drop(), c.is_closing()));
        if must_drop || (closing && self.ctrl.is_none()) {
            // The close deadline passed (or there is no stream to say why on).
            return self.end(conn, 1008, "closed by the relay", broker, now);
        }
        if (self.read_stopped && broker.borrow_mut().read_stop(id).is_none())
            || (self.more_input && self.turn_read < READ_BUDGET)
        {
            self.read_control(conn, broker, now);
            if self.done {
                return;
            }
        }
        if let Some(ctrl) = self.ctrl {
            match self.write_queue(conn, broker, id, None, ctrl) {
                Ok(()) => {}
                Err(Special::Close(code, why)) => {
                    // A CONNECTION_CLOSE now would drop the `ERR:` still in flight.
                    let _ = conn.send_stream(ctrl).finish();
                    self.close_pending = Some((code, why, now));
                    return;
                }
            }
        }
        for i in 0..LINES {
            if broker.borrow().wt_pending(id, i).is_empty() {
                continue;
            }
            if self.lines.get(i).is_some_and(Option::is_none) {
                let Some(sid) = self.h3.open(conn, Dir::Uni) else {
                    break; // the client's stream limit: `Available` brings us back
                };
                // The line's first frame names it.
                let first = format!("U:{}", i + 1);
                let mut hdr = (first.len() as u32).to_be_bytes().to_vec();
                hdr.extend_from_slice(first.as_bytes());
                if let Some(slot) = self.lines.get_mut(i) {
                    *slot = Some((sid, Reframer { hdr, left: 0 }));
                }
            }
            let Some(Some((sid, _))) = self.lines.get(i) else {
                continue;
            };
            let sid = *sid;
            if self.h3.header_pending(sid) {
                continue;
            }
            let _ = self.write_queue(conn, broker, id, Some(i), sid);
        }
        self.update_datagram_max(conn, broker);
        self.send_datagrams(conn, broker, id);
    }

    /// Writes queue `line` (`None`: the control queue) to `sid`.
    fn write_queue(
        &mut self,
        conn: &mut Connection,
        broker: &Rc<RefCell<Broker>>,
        id: ConnId,
        line: Option<usize>,
        sid: StreamId,
    ) -> Result<(), Special> {
        let mut b = broker.borrow_mut();
        let rf = match line {
            None => &mut self.ctrl_out,
            Some(i) => match self.lines.get_mut(i) {
                Some(Some((_, rf))) => rf,
                _ => return Ok(()),
            },
        };
        loop {
            if !rf.hdr.is_empty() {
                match conn.send_stream(sid).write(&rf.hdr) {
                    Ok(n) => {
                        rf.hdr.drain(..n);
                    }
                    Err(_) => return Ok(()),
                }
                if !rf.hdr.is_empty() {
                    return Ok(());
                }
            }
            let pending = match line {
                None => b.conn_mut(id).map(|c| c.pending()).unwrap_or(&[]),
                Some(i) => b.wt_pending(id, i),
            };
            if pending.is_empty() {
                return Ok(());
            }
            if rf.left == 0 {
                let Some((op, hlen, plen)) = ws_header(pending) else {
                    return Ok(());
                };
                if op == OP_CLOSE {
                    let body = pending.get(hlen..hlen + plen).unwrap_or(&[]);
                    let code = match body {
                        [a, b2, ..] => u32::from(u16::from_be_bytes([*a, *b2])),
                        _ => 0,
                    };
                    let why = String::from_utf8_lossy(body.get(2..).unwrap_or(&[])).into_owned();
                    consume(&mut b, id, line, hlen + plen);
                    return Err(Special::Close(code, why));
                }
                consume(&mut b, id, line, hlen);
                if op != OP_TEXT && op != OP_BINARY {
                    // Pong and the like have no WebTransport form: skipped.
                    consume(&mut b, id, line, plen);
                    continue;
                }
                let len = (plen.min(MAX_FRAME) as u32).to_be_bytes();
                if line.is_none() {
                    rf.hdr.push(if op == OP_TEXT {
                        KIND_TEXT
                    } else {
                        KIND_BINARY
                    });
                }
                rf.hdr.extend_from_slice(&len);
                rf.left = plen;
                continue;
            }
            let pending = match line {
                None => b.conn_mut(id).map(|c| c.pending()).unwrap_or(&[]),
                Some(i) => b.wt_pending(id, i),
            };
            let chunk = pending.get(..rf.left.min(pending.len())).unwrap_or(&[]);
            match conn.send_stream(sid).write(chunk) {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => {
                    rf.left -= n;
                    consume(&mut b, id, line, n);
                }
            }
        }
    }

    fn send_datagrams(&mut self, conn: &mut Connection, broker: &Rc<RefCell<Broker>>, id: ConnId) {
        let prefix = &self.datagram_prefix;
        if prefix.is_empty() {
            return;
        }
        let mut b = broker.borrow_mut();
        loop {
            let pending = b.wt_pending(id, DATAGRAM_QUEUE);
            let Some((_, hlen, plen)) = ws_header(pending) else {
                return;
            };
            let Some(payload) = pending.get(hlen..hlen + plen) else {
                return;
            };
            // QUIC's datagram buffer (`cert::DATAGRAM_SEND_BUFFER`) is the only queue a
            // datagram waits in beyond the session's budget: when it is full the path is
            // congested, and this datagram is dropped and counted (unreliable by contract;
            // quinn would otherwise drop the oldest without a count).
            let len = prefix.len() + plen;
            let sent = len <= conn.datagrams().send_buffer_space() && {
                let mut d = Vec::with_capacity(len);
                d.extend_from_slice(prefix);
                d.extend_from_slice(payload);
                conn.datagrams().send(Bytes::from(d), false).is_ok()
            };
            if !sent {
                b.note_wt_datagram_dropped();
            }
            b.wt_consumed(id, DATAGRAM_QUEUE, hlen + plen);
        }
    }
}

fn consume(b: &mut Broker, id: ConnId, line: Option<usize>, n: usize) {
    match line {
        None => b.consumed(id, n),
        Some(i) => b.wt_consumed(id, i, n),
    }
}

fn closing(b: &mut Broker, id: ConnId) -> bool {
    b.conn_mut(id).is_none_or(|c| c.is_closing())
}

/// Feeds bytes of a session's control stream to `reader` and hands every complete frame to
/// the broker as connection `id`'s command or publish, exactly as over WebSocket; frames that
/// follow a close are ignored. Needs no QUIC: the fuzz tests call it directly. An error (an
/// unknown kind, a length over 65,536) ends the session.
pub fn feed_control(
    reader: &mut ControlReader,
    b: &mut Broker,
    id: ConnId,
    bytes: &[u8],
) -> Result<(), frame::StreamError> {
    reader.push(bytes, &mut |kind, payload| {
        if !closing(b, id) {
            on_frame(b, id, kind, payload);
        }
    })
}

fn on_frame(b: &mut Broker, id: ConnId, kind: u8, payload: &[u8]) {
    if kind == KIND_TEXT {
        let Ok(text) = std::str::from_utf8(payload) else {
            return b.refuse_malformed(id, "bad_frame", "text frame is not valid UTF-8");
        };
        match Command::parse(text) {
            Ok(cmd) => on_command(b, id, cmd),
            Err(e) => b.refuse_malformed(id, e.reason(), &e.to_string()),
        }
    } else {
        // Over WebTransport the frame cap (65,536 for the whole publish) keeps every payload
        // within the LLPS limit, so no refusal here can name a tenant and channel.
        match Publish::new_checked(payload) {
            Ok(p) => {
                if let Err(e) = b.publish(id, p.tenant(), p.channel(), p.payload(), p.mode()) {
                    b.answer_publish_refused(id, p.tenant(), p.channel(), e);
                }
            }
            Err(e) => b.refuse_malformed(id, e.reason(), &e.to_string()),
        }
    }
}

fn on_command(b: &mut Broker, id: ConnId, cmd: Command<'_>) {
    if !b.admit_command(id, &cmd, "PINGs") {
        return;
    }
    match cmd {
        Command::Ping => b.send_reply(id, &Reply::Pong),
        Command::Sub { tenant, pattern } => {
            let opts = match frame::split_options(pattern) {
                Ok(o) => o,
                Err(e) => {
                    let why = e.to_string();
                    let parts = ["SUB", tenant, pattern, why.as_str()];
                    return b.send_reply(
                        id,
                        &Reply::Err {
                            reason: "bad_options",
                            parts: &parts,
                        },
                    );
                }
            };
            let target = match opts.target {
                frame::Target::Control => Target::Control,
                frame::Target::Line(l) => Target::Line(l),
                frame::Target::Datagram => Target::Datagram,
            };
            match b.subscribe_to(id, tenant, opts.pattern, target, opts.kbps) {
                Ok((_, Target::Line(l))) => {
                    let p = format!("{}:U:{l}", opts.pattern);
                    b.send_reply(
                        id,
                        &Reply::OkSub {
                            tenant,
                            pattern: &p,
                        },
                    );
                }
                Ok(_) => b.send_reply(
                    id,
                    &Reply::OkSub {
                        tenant,
                        pattern: opts.pattern,
                    },
                ),
                Err(e) => b.answer_sub_refused(id, tenant, opts.pattern, &e),
            }
        }
        Command::Unsub { tenant, pattern } => {
            let plain = frame::split_options(pattern).map_or(pattern, |o| o.pattern);
            b.unsubscribe(id, tenant, plain);
            b.send_reply(
                id,
                &Reply::OkUnsub {
                    tenant,
                    pattern: plain,
                },
            );
        }
        _ => {}
    }
}
