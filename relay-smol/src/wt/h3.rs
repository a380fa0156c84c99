//! HTTP/3 with WebTransport over one `quinn_proto::Connection`, sans-IO, both sides.
//!
//! Only the part of HTTP/3 a WebTransport session needs: each side's control stream with
//! its SETTINGS, one extended CONNECT request (`:protocol webtransport`) and its response,
//! WebTransport streams (bidirectional: frame type `0x41` + session id; unidirectional:
//! stream type `0x54` + session id) and HTTP datagrams (quarter stream id + payload,
//! RFC 9297). QPACK runs with a zero-size dynamic table (both sides announce it), so
//! field sections are static-table and literal only; encoding and decoding (with Huffman)
//! come from `wtransport-proto`, the protocol crate of the SDK's own client.
//!
//! Call order, like quinn-proto's own `Connection`: feed every `quinn_proto::Event` that
//! concerns streams or datagrams to [`H3::handle_event`] (and [`H3::on_connected`] once the
//! handshake is done), then drain [`H3::poll_event`]. Bytes of WebTransport streams are read
//! with [`H3::read`], which hands out first what the header parse left over. Every buffer
//! here is bounded: a request head over [`MAX_HEADERS_LEN`], a control frame over
//! [`MAX_CONTROL_FRAME`] or more streams than [`MAX_PEER_UNI`] end the connection with an
//! HTTP/3 error code.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use quinn_proto::{Connection, Dir, Event, StreamEvent, StreamId, VarInt};
use wtransport_proto::frame::{Frame, FrameKind};
use wtransport_proto::headers::Headers;

/// Largest HEADERS frame accepted (a ticket is at most 4,228 characters).
pub const MAX_HEADERS_LEN: usize = 16 * 1024;
/// Largest frame accepted on the peer's HTTP/3 control stream.
pub const MAX_CONTROL_FRAME: usize = 4 * 1024;
/// Unidirectional streams the peer may have open (control, QPACK encoder and decoder, and
/// room for WebTransport lines on the client side).
pub const MAX_PEER_UNI: usize = 16;

/// HTTP/3 error codes (RFC 9114 §8.1).
pub mod code {
    /// No error.
    pub const H3_NO_ERROR: u32 = 0x100;
    /// A stream the peer must not have opened.
    pub const H3_STREAM_CREATION_ERROR: u32 = 0x103;
    /// A critical stream was closed.
    pub const H3_CLOSED_CRITICAL_STREAM: u32 = 0x104;
    /// A frame not allowed here.
    pub const H3_FRAME_UNEXPECTED: u32 = 0x105;
    /// A malformed or oversize frame.
    pub const H3_FRAME_ERROR: u32 = 0x106;
    /// Too much of something.
    pub const H3_EXCESSIVE_LOAD: u32 = 0x107;
    /// A malformed request or response.
    pub const H3_MESSAGE_ERROR: u32 = 0x10e;
    /// The request was refused.
    pub const H3_REQUEST_REJECTED: u32 = 0x10b;
    /// A bad QPACK field section.
    pub const QPACK_DECOMPRESSION_FAILED: u32 = 0x200;
}

const STREAM_CONTROL: u64 = 0x00;
const STREAM_PUSH: u64 = 0x01;
const STREAM_QPACK_ENCODER: u64 = 0x02;
const STREAM_QPACK_DECODER: u64 = 0x03;
const STREAM_WT_UNI: u64 = 0x54;
const FRAME_DATA: u64 = 0x00;
const FRAME_HEADERS: u64 = 0x01;
const FRAME_SETTINGS: u64 = 0x04;
const FRAME_WT_BIDI: u64 = 0x41;

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

// ----- QUIC variable-length integers (RFC 9000 §16) -----

/// Decodes a varint at the start of `buf`: `(value, length)`, or `None` when incomplete.
pub fn varint_decode(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in bytes.iter().skip(1) {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// Appends `v` (at most 2^62 - 1) as a varint.
pub fn varint_encode(v: u64, out: &mut Vec<u8>) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&((v & ((1 << 62) - 1)) | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

fn frame(kind: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint_encode(kind, out);
    varint_encode(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// The SETTINGS frame both sides send.
fn settings_frame() -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in SETTINGS {
        varint_encode(*id, &mut payload);
        varint_encode(*value, &mut payload);
    }
    let mut out = Vec::new();
    varint_encode(STREAM_CONTROL, &mut out);
    frame(FRAME_SETTINGS, &payload, &mut out);
    out
}

/// A QPACK field section (static table + literals, Huffman where shorter) in a HEADERS frame.
pub fn headers_frame(fields: &[(&str, &str)]) -> Vec<u8> {
    let headers: Headers = fields.iter().copied().collect();
    let f = headers.generate_frame();
    let mut out = Vec::new();
    frame(FRAME_HEADERS, f.payload(), &mut out);
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

/// A decoded extended CONNECT request (server side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `:path`, with any query.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// The `authorization` field (matched case-insensitively: SDK 0.3.4 sends
    /// `Authorization`).
    pub authorization: Option<String>,
    /// The `origin` field (browsers).
    pub origin: Option<String>,
}

impl Request {
    /// The access ticket: `Authorization: Bearer <T>`, else `?at=<T>` in the path.
    pub fn token(&self) -> Option<&str> {
        if let Some(v) = &self.authorization
            && let Some((scheme, t)) = v.split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
            && !t.trim().is_empty()
        {
            return Some(t.trim());
        }
        let (_, query) = self.path.split_once('?')?;
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix("at="))
            .filter(|t| !t.is_empty())
    }
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

/// A complete frame in a buffer: `(type, end of payload, header length)`.
type FrameAt = (u64, usize, usize);

enum UniIn {
    /// Type not read yet.
    Unknown(Vec<u8>),
    /// The peer's control stream: frames.
    Control(Vec<u8>),
    /// QPACK streams and anything we ignore: read and discard.
    Discard,
}

/// The HTTP/3 + WebTransport state of one connection. See the module docs.
pub struct H3 {
    role: Role,
    ctrl_opened: bool,
    /// Small writes (SETTINGS, HEADERS, stream headers) the stream did not take yet.
    out: HashMap<StreamId, Vec<u8>>,
    uni_in: HashMap<StreamId, UniIn>,
    peer_settings: bool,
    /// The CONNECT stream (its id is the session id) and its unparsed bytes.
    request: Option<StreamId>,
    request_buf: Vec<u8>,
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

impl H3 {
    /// A fresh HTTP/3 layer for one side of a connection.
    pub fn new(role: Role) -> Self {
        H3 {
            role,
            ctrl_opened: false,
            out: HashMap::new(),
            uni_in: HashMap::new(),
            peer_settings: false,
            request: None,
            request_buf: Vec::new(),
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
        let status = status.to_string();
        let mut fields = vec![
            (":status", status.as_str()),
            // Older Chromium releases look for it; harmless elsewhere.
            ("sec-webtransport-http3-draft", "draft02"),
        ];
        let reason = reason.map(|r| r.replace(['\r', '\n'], " "));
        if let Some(r) = &reason {
            fields.push(("llps-reason", r.as_str()));
        }
        self.write_small(conn, id, headers_frame(&fields));
        if fields.first().is_some_and(|(_, s)| *s != "200") {
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
                                let _ = conn
                                    .recv_stream(id)
                                    .stop(VarInt::from_u32(code::H3_EXCESSIVE_LOAD));
                                continue;
                            }
                            self.uni_in.insert(id, UniIn::Unknown(Vec::new()));
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
        let Some((q, n)) = varint_decode(&d) else {
            return;
        };
        if q == u64::from(session) / 4 {
            self.events.push_back(H3Event::Datagram(d.slice(n..)));
        }
        // Datagrams of other sessions have nowhere to go: dropped (RFC 9297 §2.1).
    }

    fn fatal(&mut self, code: u32, why: impl Into<String>) {
        self.events.push_back(H3Event::Fatal(code, why.into()));
    }

    fn accept_bidi(&mut self, conn: &mut Connection, id: StreamId) {
        match self.role {
            Role::Server if self.request.is_none() => {
                self.request = Some(id);
                self.read_request(conn);
            }
            Role::Server if self.bidi_hdr.len() < 4 => {
                self.bidi_hdr.insert(id, Vec::new());
                self.read_bidi_header(conn, id);
            }
            _ => {
                // A client gets no bidi streams from the relay; a server at most a few.
                let _ = conn
                    .recv_stream(id)
                    .stop(VarInt::from_u32(code::H3_STREAM_CREATION_ERROR));
                let _ = conn
                    .send_stream(id)
                    .reset(VarInt::from_u32(code::H3_STREAM_CREATION_ERROR));
            }
        }
    }

    fn readable(&mut self, conn: &mut Connection, id: StreamId) {
        if Some(id) == self.request {
            match self.role {
                Role::Server => self.read_request(conn),
                Role::Client => self.read_response(conn),
            }
        } else if self.uni_in.contains_key(&id) {
            self.read_uni(conn, id);
        } else if self.bidi_hdr.contains_key(&id) {
            self.read_bidi_header(conn, id);
        } else {
            self.events.push_back(H3Event::Readable(id));
        }
    }

    /// Reads up to `limit` more bytes of `id` into `buf`; `(bytes read, finished, reset)`.
    fn pull(conn: &mut Connection, id: StreamId, buf: &mut Vec<u8>, limit: usize) -> (bool, bool) {
        let mut rs = conn.recv_stream(id);
        let Ok(mut chunks) = rs.read(true) else {
            return (false, true);
        };
        let mut fin = false;
        let mut reset = false;
        loop {
            let room = limit.saturating_sub(buf.len());
            if room == 0 {
                break;
            }
            match chunks.next(room) {
                Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
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
        (fin, reset)
    }

    fn read_uni(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(state) = self.uni_in.remove(&id) else {
            return;
        };
        let state = match state {
            UniIn::Unknown(mut buf) => {
                let (fin, reset) = Self::pull(conn, id, &mut buf, 16);
                match varint_decode(&buf) {
                    None if fin || reset => return,
                    None => UniIn::Unknown(buf),
                    Some((STREAM_CONTROL, n)) => {
                        buf.drain(..n);
                        UniIn::Control(buf)
                    }
                    Some((STREAM_QPACK_ENCODER | STREAM_QPACK_DECODER, _)) => UniIn::Discard,
                    Some((STREAM_WT_UNI, n)) if self.role == Role::Client => {
                        let Some((sid, m)) = varint_decode(&buf[n..]) else {
                            if fin || reset {
                                return;
                            }
                            self.uni_in.insert(id, UniIn::Unknown(buf));
                            return;
                        };
                        if self.request.map(u64::from) != Some(sid) {
                            let _ = conn
                                .recv_stream(id)
                                .stop(VarInt::from_u32(code::H3_STREAM_CREATION_ERROR));
                            return;
                        }
                        let rest = buf.split_off(n + m);
                        if !rest.is_empty() {
                            self.leftover.insert(id, rest);
                        }
                        self.events.push_back(H3Event::UniOpened(id));
                        return;
                    }
                    Some((STREAM_PUSH, _)) => {
                        self.fatal(code::H3_STREAM_CREATION_ERROR, "push stream from a client");
                        return;
                    }
                    Some(_) => {
                        // Unknown stream types (and WT streams to the relay) are refused.
                        let _ = conn
                            .recv_stream(id)
                            .stop(VarInt::from_u32(code::H3_STREAM_CREATION_ERROR));
                        return;
                    }
                }
            }
            other => other,
        };
        match state {
            UniIn::Control(mut buf) => {
                let (fin, reset) = Self::pull(conn, id, &mut buf, MAX_CONTROL_FRAME + 16);
                if let Err(why) = self.control_frames(&mut buf) {
                    self.fatal(why.0, why.1);
                    return;
                }
                if fin || reset {
                    self.fatal(
                        code::H3_CLOSED_CRITICAL_STREAM,
                        "peer closed its control stream",
                    );
                    return;
                }
                if buf.len() > MAX_CONTROL_FRAME + 8 {
                    self.fatal(code::H3_EXCESSIVE_LOAD, "control frame too large");
                    return;
                }
                self.uni_in.insert(id, UniIn::Control(buf));
            }
            UniIn::Discard => {
                let mut sink = Vec::new();
                loop {
                    sink.clear();
                    let (fin, reset) = Self::pull(conn, id, &mut sink, 4096);
                    if fin || reset {
                        return;
                    }
                    if sink.is_empty() {
                        break;
                    }
                }
                self.uni_in.insert(id, UniIn::Discard);
            }
            UniIn::Unknown(buf) => {
                self.uni_in.insert(id, UniIn::Unknown(buf));
            }
        }
    }

    /// Handles complete frames of the peer's control stream.
    fn control_frames(&mut self, buf: &mut Vec<u8>) -> Result<(), (u32, String)> {
        loop {
            let Some((kind, a)) = varint_decode(buf) else {
                return Ok(());
            };
            let Some((len, b)) = buf.get(a..).and_then(varint_decode) else {
                return Ok(());
            };
            if len > MAX_CONTROL_FRAME as u64 {
                return Err((
                    code::H3_EXCESSIVE_LOAD,
                    format!("control frame of {len} bytes"),
                ));
            }
            let end = a + b + len as usize;
            if buf.len() < end {
                return Ok(());
            }
            let first = !self.peer_settings;
            match kind {
                FRAME_SETTINGS if first => self.peer_settings = true,
                _ if first => {
                    return Err((
                        0x10a, // H3_MISSING_SETTINGS
                        "the first frame on the control stream must be SETTINGS".into(),
                    ));
                }
                FRAME_SETTINGS | FRAME_DATA | FRAME_HEADERS => {
                    return Err((
                        code::H3_FRAME_UNEXPECTED,
                        format!("frame type {kind:#x} on the control stream"),
                    ));
                }
                // GOAWAY, MAX_PUSH_ID, PRIORITY_UPDATE, reserved: nothing to do for us.
                _ => {}
            }
            buf.drain(..end);
        }
    }

    /// Parses the next complete frame in `buf`: `(type, payload range end, header len)`.
    fn next_frame(buf: &[u8], max: usize) -> Result<Option<FrameAt>, (u32, String)> {
        let Some((kind, a)) = varint_decode(buf) else {
            return Ok(None);
        };
        let Some((len, b)) = buf.get(a..).and_then(varint_decode) else {
            return Ok(None);
        };
        if len > max as u64 {
            return Err((
                code::H3_EXCESSIVE_LOAD,
                format!("frame of {len} bytes (at most {max})"),
            ));
        }
        let end = a + b + len as usize;
        if buf.len() < end {
            return Ok(None);
        }
        Ok(Some((kind, end, a + b)))
    }

    fn read_request(&mut self, conn: &mut Connection) {
        let Some(id) = self.request else { return };
        if self.answered {
            // After the answer the CONNECT stream carries only capsules; we read and drop
            // them (bounded), and its end ends the session.
            let mut sink = Vec::new();
            loop {
                sink.clear();
                let (fin, reset) = Self::pull(conn, id, &mut sink, 4096);
                if fin || reset {
                    self.fatal(code::H3_NO_ERROR, "the client closed the session");
                    return;
                }
                if sink.is_empty() {
                    return;
                }
            }
        }
        let mut buf = std::mem::take(&mut self.request_buf);
        let (fin, reset) = Self::pull(conn, id, &mut buf, MAX_HEADERS_LEN + 16);
        loop {
            match Self::next_frame(&buf, MAX_HEADERS_LEN) {
                Err((c, why)) => return self.fatal(c, why),
                Ok(None) => break,
                Ok(Some((FRAME_HEADERS, end, hdr))) => {
                    let payload = buf.get(hdr..end).unwrap_or(&[]);
                    match decode_request(payload) {
                        Ok(req) => self.events.push_back(H3Event::Request(req)),
                        Err((c, why)) => self.fatal(c, why),
                    }
                    return;
                }
                Ok(Some((FRAME_DATA, _, _))) => {
                    return self.fatal(code::H3_FRAME_UNEXPECTED, "DATA before HEADERS");
                }
                Ok(Some((_, end, _))) => {
                    buf.drain(..end); // reserved/unknown frame types are skipped (RFC 9114 §9)
                }
            }
        }
        if fin || reset {
            return self.fatal(
                code::H3_MESSAGE_ERROR,
                "request stream ended before HEADERS",
            );
        }
        if buf.len() > MAX_HEADERS_LEN + 16 {
            return self.fatal(code::H3_EXCESSIVE_LOAD, "request head too large");
        }
        self.request_buf = buf;
    }

    fn read_response(&mut self, conn: &mut Connection) {
        let Some(id) = self.request else { return };
        if self.answered {
            let mut sink = Vec::new();
            let (fin, reset) = Self::pull(conn, id, &mut sink, 4096);
            if fin || reset {
                self.fatal(code::H3_NO_ERROR, "the relay closed the session");
            }
            return;
        }
        let mut buf = std::mem::take(&mut self.request_buf);
        let (fin, reset) = Self::pull(conn, id, &mut buf, MAX_HEADERS_LEN + 16);
        loop {
            match Self::next_frame(&buf, MAX_HEADERS_LEN) {
                Err((c, why)) => return self.fatal(c, why),
                Ok(None) => break,
                Ok(Some((FRAME_HEADERS, end, hdr))) => {
                    let payload = buf.get(hdr..end).unwrap_or(&[]);
                    self.answered = true;
                    match decode_fields(payload) {
                        Ok(fields) => {
                            let status = field(&fields, ":status")
                                .and_then(|s| s.parse::<u16>().ok())
                                .unwrap_or(0);
                            let reason = field(&fields, "llps-reason").map(str::to_owned);
                            self.events.push_back(H3Event::Response { status, reason });
                        }
                        Err((c, why)) => self.fatal(c, why),
                    }
                    return;
                }
                Ok(Some((_, end, _))) => {
                    buf.drain(..end);
                }
            }
        }
        if fin || reset {
            return self.fatal(code::H3_MESSAGE_ERROR, "the relay ended the request stream");
        }
        self.request_buf = buf;
    }

    fn read_bidi_header(&mut self, conn: &mut Connection, id: StreamId) {
        let Some(mut buf) = self.bidi_hdr.remove(&id) else {
            return;
        };
        let (fin, reset) = Self::pull(conn, id, &mut buf, 16);
        let parsed = varint_decode(&buf)
            .and_then(|(kind, a)| varint_decode(buf.get(a..)?).map(|(sid, b)| (kind, sid, a + b)));
        match parsed {
            None if fin || reset || buf.len() >= 16 => {}
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
            Some(_) => {
                // Another request or another session: refused.
                let _ = conn
                    .recv_stream(id)
                    .stop(VarInt::from_u32(code::H3_REQUEST_REJECTED));
                let _ = conn
                    .send_stream(id)
                    .reset(VarInt::from_u32(code::H3_REQUEST_REJECTED));
            }
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
        let mut rs = conn.recv_stream(id);
        let Ok(mut chunks) = rs.read(true) else {
            return ReadStatus::Reset;
        };
        let mut status = ReadStatus::Open;
        while budget > 0 {
            match chunks.next(budget) {
                Ok(Some(c)) => {
                    budget -= c.bytes.len();
                    sink(&c.bytes);
                }
                Ok(None) => {
                    status = ReadStatus::Finished;
                    break;
                }
                Err(quinn_proto::ReadError::Blocked) => break,
                Err(_) => {
                    status = ReadStatus::Reset;
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        status
    }

    /// Forgets a stream that ended.
    pub fn forget(&mut self, id: StreamId) {
        self.leftover.remove(&id);
        self.out.remove(&id);
    }
}

fn decode_fields(payload: &[u8]) -> Result<Vec<(String, String)>, (u32, String)> {
    let f = Frame::new_headers(std::borrow::Cow::Borrowed(payload));
    debug_assert!(matches!(f.kind(), FrameKind::Headers));
    let headers = Headers::with_frame(&f).map_err(|_| {
        (
            code::QPACK_DECOMPRESSION_FAILED,
            "cannot decode the field section (this relay's QPACK has no dynamic table)".into(),
        )
    })?;
    Ok(headers
        .as_ref()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn decode_request(payload: &[u8]) -> Result<Request, (u32, String)> {
    let fields = decode_fields(payload)?;
    let bad = |why: &str| (code::H3_MESSAGE_ERROR, why.to_owned());
    if field(&fields, ":method") != Some("CONNECT") {
        return Err(bad(
            "only an extended CONNECT opens a WebTransport session here",
        ));
    }
    if field(&fields, ":protocol") != Some("webtransport") {
        return Err(bad("the CONNECT must carry :protocol webtransport"));
    }
    let path = field(&fields, ":path").ok_or_else(|| bad("the CONNECT has no :path"))?;
    let authority =
        field(&fields, ":authority").ok_or_else(|| bad("the CONNECT has no :authority"))?;
    Ok(Request {
        path: path.to_owned(),
        authority: authority.to_owned(),
        authorization: field(&fields, "authorization").map(str::to_owned),
        origin: field(&fields, "origin").map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_length() {
        for v in [
            0u64,
            63,
            64,
            16_383,
            16_384,
            (1 << 30) - 1,
            1 << 30,
            (1 << 62) - 1,
        ] {
            let mut out = Vec::new();
            varint_encode(v, &mut out);
            assert_eq!(varint_decode(&out), Some((v, out.len())), "{v}");
            assert_eq!(varint_decode(&out[..out.len() - 1]), None);
        }
    }

    #[test]
    fn request_token_from_bearer_any_case_or_query() {
        let mut fields = vec![
            (":method", "CONNECT"),
            (":protocol", "webtransport"),
            (":scheme", "https"),
            (":authority", "h:1"),
            (":path", "/"),
            ("Authorization", "Bearer AT_a_b"),
        ];
        let decode = |fields: &[(&str, &str)]| {
            let f = headers_frame(fields);
            let (kind, a) = varint_decode(&f).unwrap();
            let (len, b) = varint_decode(&f[a..]).unwrap();
            assert_eq!((kind, len as usize), (FRAME_HEADERS, f.len() - a - b));
            decode_request(&f[a + b..])
        };
        assert_eq!(decode(&fields).unwrap().token(), Some("AT_a_b"));
        fields[4] = (":path", "/x?y=1&at=AT_c_d");
        fields.pop();
        assert_eq!(decode(&fields).unwrap().token(), Some("AT_c_d"));
        fields[4] = (":path", "/");
        assert_eq!(decode(&fields).unwrap().token(), None);
        fields[0] = (":method", "GET");
        assert!(decode(&fields).is_err());
    }
}
