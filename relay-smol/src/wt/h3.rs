//! HTTP/3 with WebTransport over one `quinn_proto::Connection`, sans-IO, both sides.
//!
//! Only the part of HTTP/3 a WebTransport session needs: each side's control stream with
//! its SETTINGS, one extended CONNECT request (`:protocol webtransport`) and its response,
//! WebTransport streams (bidirectional: frame type `0x41` + session id; unidirectional:
//! stream type `0x54` + session id) and HTTP datagrams (quarter stream id + payload,
//! RFC 9297). The byte-level decoding lives in [`wire`] (pure, fuzzed); this layer moves
//! bytes between quinn-proto's streams and those decoders.
//!
//! Call order, like quinn-proto's own `Connection`: feed every `quinn_proto::Event` that
//! concerns streams or datagrams to [`H3::handle_event`] (and [`H3::on_connected`] once the
//! handshake is done), then drain [`H3::poll_event`]. Bytes of WebTransport streams are read
//! with [`H3::read`], which hands out first what the header parse left over. Every buffer
//! here is bounded: a request head over [`MAX_HEADERS_LEN`], a control frame over
//! [`MAX_CONTROL_FRAME`] or more streams than [`MAX_PEER_UNI`] end the connection with an
//! HTTP/3 error code.

pub mod wire;

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use quinn_proto::{Connection, Dir, Event, StreamEvent, StreamId, VarInt};

use wire::{
    ControlIn, FRAME_SETTINGS, FRAME_WT_BIDI, HeadIn, MAX_STREAM_PREFIX, STREAM_CONTROL,
    STREAM_WT_UNI, UniType, push_frame, varint_encode,
};
pub use wire::{H3Error, MAX_CONTROL_FRAME, MAX_HEADERS_LEN, Request, code, headers_frame};

/// Unidirectional streams of the peer being read (control, QPACK encoder and decoder, and
/// room for ones whose type is still arriving).
pub const MAX_PEER_UNI: usize = 16;
/// Bidirectional streams of the peer whose WebTransport header is still arriving.
const MAX_BIDI_PENDING: usize = 4;
/// Bytes moved from quinn-proto per read of a stream this layer parses or discards.
const PULL_CHUNK: usize = 16 * 1024;

/// The SETTINGS both sides send: exactly what wtransport 0.7 (the SDK) sends, which
/// Chromium accepts too: QPACK without a dynamic table, extended CONNECT, HTTP datagrams,
/// WebTransport (draft-02 id) with one session.
const SETTINGS: &[(u64, u64)] = &[
    (0x01, 0),        // QPACK_MAX_TABLE_CAPACITY
    (0x07, 0),        // QPACK_BLOCKED_STREAMS
    (0x08, 1),        // ENABLE_CONNECT_PROTOCOL
    (0x33, 1),        // H3_DATAGRAM
    (0x2b60_3742, 1), // ENABLE_WEBTRANSPORT (draft-02)
    (0xc671_706a, 1), // WEBTRANSPORT_MAX_SESSIONS (as wtransport sends it)
];

/// Our control stream's first bytes: its type and the SETTINGS frame.
fn settings_frame() -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in SETTINGS {
        varint_encode(*id, &mut payload);
        varint_encode(*value, &mut payload);
    }
    let mut out = Vec::new();
    varint_encode(STREAM_CONTROL, &mut out);
    push_frame(FRAME_SETTINGS, &payload, &mut out);
    out
}

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The relay: answers one CONNECT, opens lines.
    Server,
    /// A client: sends the CONNECT, opens the LLPS control stream.
    Client,
}

/// What happened at the HTTP/3 layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum H3Event {
    /// (Server) the client asked for a WebTransport session: answer with
    /// [`H3::respond`].
    Request(Request),
    /// (Client) the relay answered the CONNECT.
    Response {
        /// `:status`.
        status: u16,
        /// The `llps-reason` field, if any.
        reason: Option<String>,
    },
    /// The peer opened a WebTransport bidirectional stream of our session.
    BidiOpened(StreamId),
    /// The peer opened a WebTransport unidirectional stream of our session.
    UniOpened(StreamId),
    /// A WebTransport stream (from [`H3Event::BidiOpened`], [`H3Event::UniOpened`] or one we
    /// opened) may have data: call [`H3::read`].
    Readable(StreamId),
    /// A stream of ours may take more bytes.
    Writable(StreamId),
    /// The peer stopped one of our streams.
    Stopped(StreamId),
    /// Everything we wrote on a stream we finished was acknowledged.
    Finished(StreamId),
    /// An HTTP datagram of our session (the payload, prefix removed).
    Datagram(Bytes),
    /// The peer broke HTTP/3: close the connection with this code and reason.
    Fatal(u32, String),
}

/// What [`H3::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// More may come later.
    Open,
    /// The peer finished the stream (everything was handed out).
    Finished,
    /// The peer reset it, or it is gone.
    Reset,
}

enum UniIn {
    /// Type prefix not complete yet (at most [`MAX_STREAM_PREFIX`] bytes).
    Prefix(Vec<u8>),
    /// The peer's control stream.
    Control(ControlIn),
    /// QPACK streams: read and discarded (no dynamic table).
    Discard,
}

/// The HTTP/3 + WebTransport state of one connection. See the module docs.
pub struct H3 {
    role: Role,
    ctrl_opened: bool,
    /// Small writes (SETTINGS, HEADERS, stream headers) the stream did not take yet.
    out: HashMap<StreamId, Vec<u8>>,
    uni_in: HashMap<StreamId, UniIn>,
    peer_control: bool,
    peer_settings: bool,
    /// The CONNECT stream (its id is the session id).
    request: Option<StreamId>,
    /// The CONNECT (server) or its response (client) until its HEADERS arrived.
    head: HeadIn,
    /// The HEADERS of the request stream were handled: what follows is read and dropped.
    head_done: bool,
    answered: bool,
    /// WebTransport bidi streams whose `0x41` header is still being read.
    bidi_hdr: HashMap<StreamId, Vec<u8>>,
    /// Bytes read past a stream header, handed out first by [`H3::read`].
    leftover: HashMap<StreamId, Vec<u8>>,
    events: VecDeque<H3Event>,
}

impl std::fmt::Debug for H3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3")
            .field("role", &self.role)
            .field("session", &self.request)
            .field("answered", &self.answered)
            .finish()
    }
}

/// Reads up to `limit` bytes of stream `id`, handing each chunk to `sink`:
/// `(bytes read, finished, reset)`.
fn pull(
    conn: &mut Connection,
    id: StreamId,
    limit: usize,
    sink: &mut dyn FnMut(&[u8]),
) -> (usize, bool, bool) {
    let mut rs = conn.recv_stream(id);
    let Ok(mut chunks) = rs.read(true) else {
        return (0, false, true);
    };
    let (mut n, mut fin, mut reset) = (0, false, false);
    while n < limit {
        match chunks.next(limit - n) {
            Ok(Some(c)) => {
                n += c.bytes.len();
                sink(&c.bytes);
            }
            Ok(None) => {
                fin = true;
                break;
            }
            Err(quinn_proto::ReadError::Blocked) => break,
            Err(_) => {
                reset = true;
                break;
            }
        }
    }
    let _ = chunks.finalize();
    (n, fin, reset)
}

/// Reads and drops everything `id` has now: `true` once it ended (finished or reset).
fn drain(conn: &mut Connection, id: StreamId) -> bool {
    loop {
        let (n, fin, reset) = pull(conn, id, PULL_CHUNK, &mut |_| {});
        if fin || reset {
            return true;
        }
        if n == 0 {
            return false;
        }
    }
}

fn refuse_stream(conn: &mut Connection, id: StreamId, code: u32) {
    let _ = conn.recv_stream(id).stop(VarInt::from_u32(code));
    if id.dir() == Dir::Bi {
        let _ = conn.send_stream(id).reset(VarInt::from_u32(code));
    }
}

impl H3 {
    /// A fresh HTTP/3 layer for one side of a connection.
    pub fn new(role: Role) -> Self {
        H3 {
            role,
            ctrl_opened: false,
            out: HashMap::new(),
            uni_in: HashMap::new(),
            peer_control: false,
            peer_settings: false,
            request: None,
            head: HeadIn::default(),
            head_done: false,
            answered: false,
            bidi_hdr: HashMap::new(),
            leftover: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// The session id (the CONNECT stream), once known.
    pub fn session_id(&self) -> Option<StreamId> {
        self.request
    }

    /// Has the peer's SETTINGS frame arrived?
    pub fn has_peer_settings(&self) -> bool {
        self.peer_settings
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<H3Event> {
        self.events.pop_front()
    }

    /// The handshake is done: open our control stream with SETTINGS.
    pub fn on_connected(&mut self, conn: &mut Connection) {
        if self.ctrl_opened {
            return;
        }
        if let Some(id) = conn.streams().open(Dir::Uni) {
            self.ctrl_opened = true;
            self.write_small(conn, id, settings_frame());
        }
    }

    /// Writes `bytes` to `id` now, keeping what the stream does not take for later.
    fn write_small(&mut self, conn: &mut Connection, id: StreamId, mut bytes: Vec<u8>) {
        if let Some(q) = self.out.get_mut(&id) {
            q.extend_from_slice(&bytes);
            return;
        }
        match conn.send_stream(id).write(&bytes) {
            Ok(n) if n == bytes.len() => {}
            Ok(n) => {
                bytes.drain(..n);
                self.out.insert(id, bytes);
            }
            Err(quinn_proto::WriteError::Blocked) => {
                self.out.insert(id, bytes);
            }
            Err(_) => {}
        }
    }

    fn flush_small(&mut self, conn: &mut Connection, id: StreamId) -> bool {
        let Some(q) = self.out.get_mut(&id) else {
            return true;
        };
        match conn.send_stream(id).write(q) {
            Ok(n) => {
                q.drain(..n);
            }
            Err(quinn_proto::WriteError::Blocked) => {}
            Err(_) => q.clear(),
        }
        if q.is_empty() {
            self.out.remove(&id);
            true
        } else {
            false
        }
    }

    /// (Client) sends the extended CONNECT for `authority` and `path` (with the ticket as a
    /// Bearer token when given). Returns the session id.
    pub fn connect(
        &mut self,
        conn: &mut Connection,
        authority: &str,
        path: &str,
        token: Option<&str>,
    ) -> Option<StreamId> {
        let id = conn.streams().open(Dir::Bi)?;
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut fields = vec![
            (":method", "CONNECT"),
            (":scheme", "https"),
            (":protocol", "webtransport"),
            (":authority", authority),
            (":path", path),
        ];
        if let Some(b) = &bearer {
            fields.push(("authorization", b));
        }
        self.write_small(conn, id, headers_frame(&fields));
        self.request = Some(id);
        Some(id)
    }

    /// (Server) answers the CONNECT: `200` opens the session, anything else refuses it
    /// with `reason` in an `llps-reason` field (HTTP/3 has no reason phrase) and finishes
    /// the request stream.
    pub fn respond(&mut self, conn: &mut Connection, status: u16, reason: Option<&str>) {
        let Some(id) = self.request else { return };
        if self.answered {
            return;
        }
        self.answered = true;
        let status_text = status.to_string();
        let mut fields = vec![
            (":status", status_text.as_str()),
            // Older Chromium releases look for it; harmless elsewhere.
            ("sec-webtransport-http3-draft", "draft02"),
        ];
        let reason = reason.map(|r| r.replace(['\r', '\n'], " "));
        if let Some(r) = &reason {
            fields.push(("llps-reason", r.as_str()));
        }
        self.write_small(conn, id, headers_frame(&fields));
        if status != 200 {
            let _ = conn.send_stream(id).finish();
        }
    }

    /// Opens a WebTransport stream of our session (the LLPS control stream for a client, a
    /// line for the relay) and writes its header. `None`: the peer's stream limit.
    pub fn open(&mut self, conn: &mut Connection, dir: Dir) -> Option<StreamId> {
        let session = self.request?;
        let id = conn.streams().open(dir)?;
        let mut hdr = Vec::with_capacity(9);
        match dir {
            Dir::Bi => varint_encode(FRAME_WT_BIDI, &mut hdr),
            Dir::Uni => varint_encode(STREAM_WT_UNI, &mut hdr),
        }
        varint_encode(session.into(), &mut hdr);
        self.write_small(conn, id, hdr);
        Some(id)
    }

    /// True when a stream we opened still holds header bytes not taken by QUIC: payload
    /// writes must wait (they would overtake the header).
    pub fn header_pending(&self, id: StreamId) -> bool {
        self.out.contains_key(&id)
    }

    /// The prefix of every HTTP datagram of our session (its quarter stream id).
    pub fn datagram_prefix(&self) -> Option<Vec<u8>> {
        let id: u64 = self.request?.into();
        let mut p = Vec::with_capacity(8);
        varint_encode(id / 4, &mut p);
        Some(p)
    }

    /// Feeds one quinn-proto event. Events that are not about streams or datagrams are
    /// ignored (the caller handles connection state).
    pub fn handle_event(&mut self, conn: &mut Connection, ev: &Event) {
        match ev {
            Event::Stream(StreamEvent::Opened { dir }) => {
                while let Some(id) = conn.streams().accept(*dir) {
                    match dir {
                        Dir::Uni => {
                            if self.uni_in.len() >= MAX_PEER_UNI {
                                refuse_stream(conn, id, code::H3_EXCESSIVE_LOAD);
                                continue;
                            }
                            self.uni_in.insert(id, UniIn::Prefix(Vec::new()));
                            self.read_uni(conn, id);
                        }
                        Dir::Bi => self.accept_bidi(conn, id),
                    }
                }
            }
            Event::Stream(StreamEvent::Readable { id }) => self.readable(conn, *id),
            Event::Stream(StreamEvent::Writable { id }) if self.flush_small(conn, *id) => {
                self.events.push_back(H3Event::Writable(*id));
            }
            Event::Stream(StreamEvent::Finished { id }) => {
                self.events.push_back(H3Event::Finished(*id));
            }
            Event::Stream(StreamEvent::Stopped { id, .. }) => {
                self.out.remove(id);
                self.events.push_back(H3Event::Stopped(*id));
            }
            Event::DatagramReceived => {
                while let Some(d) = conn.datagrams().recv() {
                    self.on_datagram(d);
                }
            }
            _ => {}
        }
    }

    fn on_datagram(&mut self, d: Bytes) {
        let Some(session) = self.request else { return };
        if let Some((sid, n)) = wire::datagram_session(&d)
            && sid == u64::from(session)
        {
            self.events.push_back(H3Event::Datagram(d.slice(n..)));
        }
        // Datagrams of other sessions have nowhere to go: dropped (RFC 9297 §2.1).
    }

    fn fatal(&mut self, e: H3Error) {
        self.events.push_back(H3Event::Fatal(e.code, e.why));
    }

    fn accept_bidi(&mut self, conn: &mut Connection, id: StreamId) {
        match self.role {
            Role::Server if self.request.is_none() => {
                self.request = Some(id);
                self.read_head(conn);
            }
            Role::Server if self.bidi_hdr.len() < MAX_BIDI_PENDING => {
                self.bidi_hdr.insert(id, Vec::new());
                self.read_bidi_header(conn, id);
            }
            // A client gets no bidi streams from the relay; a server at most a few at once.
            _ => refuse_stream(conn, id, code::H3_STREAM_CREATION_ERROR),
        }
    }

    fn readable(&mut self, conn: &mut Connection, id: StreamId) {
        if Some(id) == self.request {
            self.read_head(conn);
        } else if self.uni_in.contains_key(&id) {
            self.read_uni(conn, id);
        } else if self.bidi_hdr.contains_key(&id) {
            self.read_bidi_header(conn, id);
        } else {
            self.events.push_back(H3Event::Readable(id));
        }
    }

    fn read_uni(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(mut state) = self.uni_in.remove(&id) else {
            return;
        };
        if let UniIn::Prefix(buf) = &mut state {
            let room = MAX_STREAM_PREFIX.saturating_sub(buf.len());
            let (_, fin, reset) = pull(conn, id, room, &mut |b| buf.extend_from_slice(b));
            let Some((kind, n)) = wire::uni_type(buf) else {
                if !(fin || reset) {
                    self.uni_in.insert(id, state);
                }
                return;
            };
            let rest = buf.get(n..).unwrap_or(&[]).to_vec();
            state = match kind {
                UniType::Control if self.peer_control => {
                    return self.fatal(H3Error {
                        code: code::H3_STREAM_CREATION_ERROR,
                        why: "a second HTTP/3 control stream".into(),
                    });
                }
                UniType::Control => {
                    self.peer_control = true;
                    let mut c = ControlIn::default();
                    if let Err(e) = c.push(&rest) {
                        return self.fatal(e);
                    }
                    UniIn::Control(c)
                }
                UniType::QpackEncoder | UniType::QpackDecoder => UniIn::Discard,
                UniType::WebTransport { session } if self.role == Role::Client => {
                    if self.request.map(u64::from) != Some(session) {
                        return refuse_stream(conn, id, code::H3_STREAM_CREATION_ERROR);
                    }
                    if !rest.is_empty() {
                        self.leftover.insert(id, rest);
                    }
                    return self.events.push_back(H3Event::UniOpened(id));
                }
                UniType::Push => {
                    // Push needs a MAX_PUSH_ID we never send.
                    return self.fatal(H3Error {
                        code: code::H3_STREAM_CREATION_ERROR,
                        why: "a push stream, which this side never allowed".into(),
                    });
                }
                // WebTransport streams to the relay (the contract has none) and unknown
                // types are refused.
                UniType::WebTransport { .. } | UniType::Other(_) => {
                    return refuse_stream(conn, id, code::H3_STREAM_CREATION_ERROR);
                }
            };
        }
        match state {
            UniIn::Control(mut c) => {
                loop {
                    let mut err = None;
                    let (n, fin, reset) = pull(conn, id, PULL_CHUNK, &mut |b| {
                        if err.is_none()
                            && let Err(e) = c.push(b)
                        {
                            err = Some(e);
                        }
                    });
                    self.peer_settings = c.has_settings();
                    if let Some(e) = err {
                        return self.fatal(e);
                    }
                    if fin || reset {
                        return self.fatal(H3Error {
                            code: code::H3_CLOSED_CRITICAL_STREAM,
                            why: "peer closed its control stream".into(),
                        });
                    }
                    if n == 0 {
                        break;
                    }
                }
                self.uni_in.insert(id, UniIn::Control(c));
            }
            UniIn::Discard => {
                if !drain(conn, id) {
                    self.uni_in.insert(id, UniIn::Discard);
                }
            }
            prefix @ UniIn::Prefix(_) => {
                self.uni_in.insert(id, prefix);
            }
        }
    }

    /// Reads the request stream: the CONNECT (server) or its answer (client) until its
    /// HEADERS, then whatever follows (capsules) is dropped and its end ends the session.
    fn read_head(&mut self, conn: &mut Connection) {
        let Some(id) = self.request else { return };
        if self.head_done {
            if drain(conn, id) {
                let why = match self.role {
                    Role::Server => "the client closed the session",
                    Role::Client => "the relay closed the session",
                };
                self.fatal(H3Error {
                    code: code::H3_NO_ERROR,
                    why: why.into(),
                });
            }
            return;
        }
        loop {
            let mut err = None;
            let mut complete = false;
            let head = &mut self.head;
            let (n, fin, reset) = pull(conn, id, PULL_CHUNK, &mut |b| {
                if err.is_some() || complete {
                    return;
                }
                match head.push(b) {
                    Ok(Some(_)) => complete = true,
                    Ok(None) => {}
                    Err(e) => err = Some(e),
                }
            });
            if let Some(e) = err {
                return self.fatal(e);
            }
            if complete {
                self.head_done = true;
                let payload = self.head.push(&[]).ok().flatten().unwrap_or(&[]);
                let decoded = match self.role {
                    Role::Server => wire::decode_request(payload).map(H3Event::Request),
                    Role::Client => {
                        self.answered = true;
                        wire::decode_response(payload)
                            .map(|(status, reason)| H3Event::Response { status, reason })
                    }
                };
                self.head = HeadIn::default();
                match decoded {
                    Ok(ev) => self.events.push_back(ev),
                    Err(e) => return self.fatal(e),
                }
                // Anything after the HEADERS (and its end) is handled like later reads.
                if fin || reset {
                    return self.read_head(conn);
                }
                return;
            }
            if fin || reset {
                return self.fatal(H3Error {
                    code: code::H3_MESSAGE_ERROR,
                    why: "the request stream ended before its HEADERS".into(),
                });
            }
            if n == 0 {
                return;
            }
        }
    }

    fn read_bidi_header(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(mut buf) = self.bidi_hdr.remove(&id) else {
            return;
        };
        let room = MAX_STREAM_PREFIX.saturating_sub(buf.len());
        let (_, fin, reset) = pull(conn, id, room, &mut |b| buf.extend_from_slice(b));
        match wire::bidi_header(&buf) {
            None if fin || reset => {}
            None => {
                self.bidi_hdr.insert(id, buf);
            }
            Some((FRAME_WT_BIDI, sid, n)) if self.request.map(u64::from) == Some(sid) => {
                let rest = buf.split_off(n);
                if !rest.is_empty() {
                    self.leftover.insert(id, rest);
                }
                self.events.push_back(H3Event::BidiOpened(id));
                if fin {
                    self.events.push_back(H3Event::Readable(id));
                }
            }
            // Another request or another session: refused.
            Some(_) => refuse_stream(conn, id, code::H3_REQUEST_REJECTED),
        }
    }

    /// Reads a WebTransport stream: hands at most `max` bytes to `sink` (leftover from the
    /// header parse first).
    pub fn read(
        &mut self,
        conn: &mut Connection,
        id: StreamId,
        max: usize,
        sink: &mut dyn FnMut(&[u8]),
    ) -> ReadStatus {
        let mut budget = max;
        if let Some(mut left) = self.leftover.remove(&id) {
            let n = left.len().min(budget);
            sink(left.get(..n).unwrap_or(&[]));
            budget -= n;
            if n < left.len() {
                left.drain(..n);
                self.leftover.insert(id, left);
                return ReadStatus::Open;
            }
        }
        let (_, fin, reset) = pull(conn, id, budget, sink);
        if reset {
            ReadStatus::Reset
        } else if fin {
            ReadStatus::Finished
        } else {
            ReadStatus::Open
        }
    }

    /// Forgets a stream that ended.
    pub fn forget(&mut self, id: StreamId) {
        self.leftover.remove(&id);
        self.out.remove(&id);
    }
}
