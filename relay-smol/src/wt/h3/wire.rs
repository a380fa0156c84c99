//! The HTTP/3 wire format a WebTransport session needs, as pure decoders over byte slices
//! (no QUIC, no clock, no I/O): QUIC varints, HTTP/3 frame headers, the type prefixes of
//! streams, the peer's control stream ([`ControlIn`]), a request stream up to its HEADERS
//! ([`HeadIn`]), the extended CONNECT and its response (QPACK with the static table only:
//! [`check_field_section`] first, then `wtransport-proto`'s decoder) and HTTP datagram
//! prefixes. [`super::H3`] feeds them what it reads from quinn-proto; the fuzz tests
//! (`relay-smol/tests/fuzz_wt.rs`, `fuzz/fuzz_targets/wt_h3.rs`) feed them anything.
//!
//! Every reader is bounded: it holds at most one incomplete frame of at most its limit, and
//! it walks complete frames with a cursor, moving what is left once per call (a flood of tiny
//! frames costs time linear in its bytes).

use std::borrow::Cow;

use wtransport_proto::frame::Frame;
use wtransport_proto::headers::Headers;

/// Largest HEADERS frame accepted (a ticket is at most 4,228 characters).
pub const MAX_HEADERS_LEN: usize = 16 * 1024;
/// Largest frame accepted on the peer's HTTP/3 control stream.
pub const MAX_CONTROL_FRAME: usize = 4 * 1024;
/// Longest frame header: a type and a length, each a varint of at most 8 bytes.
pub const MAX_FRAME_HEADER: usize = 16;
/// Longest stream prefix: a type and a session id (varints).
pub const MAX_STREAM_PREFIX: usize = 16;
/// Continuation bytes of a QPACK integer accepted (28 bits: more than any length here).
const MAX_QPACK_INT_CONTINUATIONS: usize = 4;

/// HTTP/3 error codes (RFC 9114 §8.1, RFC 9204 §6).
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
    /// A malformed SETTINGS frame.
    pub const H3_SETTINGS_ERROR: u32 = 0x109;
    /// The control stream did not start with SETTINGS.
    pub const H3_MISSING_SETTINGS: u32 = 0x10a;
    /// The request was refused.
    pub const H3_REQUEST_REJECTED: u32 = 0x10b;
    /// A malformed request or response.
    pub const H3_MESSAGE_ERROR: u32 = 0x10e;
    /// A bad QPACK field section.
    pub const QPACK_DECOMPRESSION_FAILED: u32 = 0x200;
}

/// Stream type: HTTP/3 control stream.
pub const STREAM_CONTROL: u64 = 0x00;
/// Stream type: server push.
pub const STREAM_PUSH: u64 = 0x01;
/// Stream type: QPACK encoder stream.
pub const STREAM_QPACK_ENCODER: u64 = 0x02;
/// Stream type: QPACK decoder stream.
pub const STREAM_QPACK_DECODER: u64 = 0x03;
/// Stream type: WebTransport unidirectional stream (then the session id).
pub const STREAM_WT_UNI: u64 = 0x54;
/// Frame type: DATA.
pub const FRAME_DATA: u64 = 0x00;
/// Frame type: HEADERS.
pub const FRAME_HEADERS: u64 = 0x01;
/// Frame type: SETTINGS.
pub const FRAME_SETTINGS: u64 = 0x04;
/// Frame type that opens a WebTransport bidirectional stream (then the session id).
pub const FRAME_WT_BIDI: u64 = 0x41;
/// Frame types of HTTP/2 that HTTP/3 reserves: receiving one is an error (RFC 9114 §7.2.8).
const FRAME_H2_RESERVED: [u64; 4] = [0x02, 0x06, 0x08, 0x09];
/// CANCEL_PUSH, GOAWAY, MAX_PUSH_ID: control-stream frames, an error on a request stream.
const FRAME_CONTROL_ONLY: [u64; 3] = [0x03, 0x07, 0x0d];
/// SETTINGS identifiers of HTTP/2 that HTTP/3 reserves (RFC 9114 §7.2.4.1).
const SETTINGS_H2_RESERVED: [u64; 4] = [0x02, 0x03, 0x04, 0x05];
/// Settings accepted in one SETTINGS frame (Chromium sends about ten).
const MAX_SETTINGS: usize = 64;

/// A broken HTTP/3 input: the connection ends with this code and reason (the blame is the
/// peer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H3Error {
    /// The HTTP/3 error code sent in the CONNECTION_CLOSE.
    pub code: u32,
    /// What was wrong, for the reason phrase and the log.
    pub why: String,
}

impl H3Error {
    fn new(code: u32, why: impl Into<String>) -> Self {
        H3Error {
            code,
            why: why.into(),
        }
    }
}

impl std::fmt::Display for H3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (HTTP/3 error {:#x})", self.why, self.code)
    }
}

impl std::error::Error for H3Error {}

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

/// Appends `v` as a varint; values of 2^62 and more (not encodable) are written as 2^62 - 1.
pub fn varint_encode(v: u64, out: &mut Vec<u8>) {
    const MAX: u64 = (1 << 62) - 1;
    let v = v.min(MAX);
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// Appends an HTTP/3 frame.
pub fn push_frame(kind: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint_encode(kind, out);
    varint_encode(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// The header of an HTTP/3 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Frame type.
    pub kind: u64,
    /// Payload length as sent (may be anything up to 2^62 - 1).
    pub len: u64,
    /// Bytes of the header itself.
    pub hlen: usize,
}

/// The frame header at the start of `buf`, or `None` while incomplete.
pub fn frame_header(buf: &[u8]) -> Option<FrameHeader> {
    let (kind, a) = varint_decode(buf)?;
    let (len, b) = varint_decode(buf.get(a..)?)?;
    Some(FrameHeader {
        kind,
        len,
        hlen: a + b,
    })
}

/// What a unidirectional stream opened by the peer carries (its type prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniType {
    /// The peer's HTTP/3 control stream.
    Control,
    /// A server push (a client must not receive one from... a client).
    Push,
    /// QPACK encoder stream (unused: no dynamic table; read and discarded).
    QpackEncoder,
    /// QPACK decoder stream (read and discarded).
    QpackDecoder,
    /// A WebTransport stream of session `session`.
    WebTransport {
        /// The session id (the CONNECT stream's id).
        session: u64,
    },
    /// A type this relay does not know (reserved or an extension): refused.
    Other(u64),
}

/// The type prefix of a unidirectional stream: `(type, prefix length)`, or `None` while
/// incomplete (at most [`MAX_STREAM_PREFIX`] bytes are ever needed).
pub fn uni_type(buf: &[u8]) -> Option<(UniType, usize)> {
    let (t, n) = varint_decode(buf)?;
    Some(match t {
        STREAM_CONTROL => (UniType::Control, n),
        STREAM_PUSH => (UniType::Push, n),
        STREAM_QPACK_ENCODER => (UniType::QpackEncoder, n),
        STREAM_QPACK_DECODER => (UniType::QpackDecoder, n),
        STREAM_WT_UNI => {
            let (session, m) = varint_decode(buf.get(n..)?)?;
            (UniType::WebTransport { session }, n + m)
        }
        other => (UniType::Other(other), n),
    })
}

/// The start of a bidirectional stream other than the request: `Some((type, session id,
/// length))`; a WebTransport stream has type [`FRAME_WT_BIDI`]. `None` while incomplete.
pub fn bidi_header(buf: &[u8]) -> Option<(u64, u64, usize)> {
    let (kind, a) = varint_decode(buf)?;
    let (session, b) = varint_decode(buf.get(a..)?)?;
    Some((kind, session, a + b))
}

/// The quarter stream id that starts an HTTP datagram: `(session id, prefix length)`, or
/// `None` when `d` is too short or the id is not a client bidirectional stream.
pub fn datagram_session(d: &[u8]) -> Option<(u64, usize)> {
    let (q, n) = varint_decode(d)?;
    Some((q.checked_mul(4)?, n))
}

/// Checks the payload of a SETTINGS frame: identifier/value varint pairs filling it exactly,
/// no identifier twice, none of HTTP/2's.
pub fn check_settings(payload: &[u8]) -> Result<(), H3Error> {
    let mut seen: Vec<u64> = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        let bad = || H3Error::new(code::H3_SETTINGS_ERROR, "malformed SETTINGS frame");
        let (id, a) = varint_decode(rest).ok_or_else(bad)?;
        let (_, b) = varint_decode(rest.get(a..).ok_or_else(bad)?).ok_or_else(bad)?;
        if SETTINGS_H2_RESERVED.contains(&id) {
            return Err(H3Error::new(
                code::H3_SETTINGS_ERROR,
                format!("HTTP/2 setting {id:#x} in SETTINGS"),
            ));
        }
        if seen.contains(&id) {
            return Err(H3Error::new(
                code::H3_SETTINGS_ERROR,
                format!("setting {id:#x} appears twice"),
            ));
        }
        if seen.len() >= MAX_SETTINGS {
            return Err(H3Error::new(
                code::H3_EXCESSIVE_LOAD,
                format!("more than {MAX_SETTINGS} settings"),
            ));
        }
        seen.push(id);
        rest = rest.get(a + b..).unwrap_or(&[]);
    }
    Ok(())
}

/// The peer's HTTP/3 control stream after its type byte: SETTINGS first (checked), then
/// frames this relay has no use for (GOAWAY, MAX_PUSH_ID, PRIORITY_UPDATE, reserved types),
/// skipped. Holds at most one incomplete frame of at most [`MAX_CONTROL_FRAME`] bytes.
#[derive(Debug, Default)]
pub struct ControlIn {
    buf: Vec<u8>,
    settings: bool,
}

impl ControlIn {
    /// Has the peer's SETTINGS frame arrived?
    pub fn has_settings(&self) -> bool {
        self.settings
    }

    /// Bytes held for an incomplete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), H3Error> {
        self.buf.extend_from_slice(bytes);
        let mut pos = 0;
        let result = loop {
            let Some(h) = self.buf.get(pos..).and_then(frame_header) else {
                break Ok(());
            };
            if h.len > MAX_CONTROL_FRAME as u64 {
                break Err(H3Error::new(
                    code::H3_EXCESSIVE_LOAD,
                    format!(
                        "control frame of {} bytes (at most {MAX_CONTROL_FRAME})",
                        h.len
                    ),
                ));
            }
            let end = pos + h.hlen + h.len as usize;
            let Some(payload) = self.buf.get(pos + h.hlen..end) else {
                break Ok(());
            };
            if let Err(e) = on_control_frame(&mut self.settings, h.kind, payload) {
                break Err(e);
            }
            pos = end;
        };
        self.buf.drain(..pos.min(self.buf.len()));
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
        result
    }
}

/// One complete frame of the peer's control stream.
fn on_control_frame(settings: &mut bool, kind: u64, payload: &[u8]) -> Result<(), H3Error> {
    if !*settings {
        if kind != FRAME_SETTINGS {
            return Err(H3Error::new(
                code::H3_MISSING_SETTINGS,
                "the first frame on the control stream must be SETTINGS",
            ));
        }
        check_settings(payload)?;
        *settings = true;
        return Ok(());
    }
    if kind == FRAME_SETTINGS
        || kind == FRAME_DATA
        || kind == FRAME_HEADERS
        || FRAME_H2_RESERVED.contains(&kind)
    {
        return Err(H3Error::new(
            code::H3_FRAME_UNEXPECTED,
            format!("frame type {kind:#x} on the control stream"),
        ));
    }
    Ok(())
}

/// A request stream (server: the CONNECT) or its response (client) up to the HEADERS frame:
/// frames of unknown type before it are skipped (RFC 9114 §9), DATA and control-stream
/// frames are errors. Holds at most one incomplete frame of at most [`MAX_HEADERS_LEN`].
#[derive(Debug, Default)]
pub struct HeadIn {
    buf: Vec<u8>,
    /// Start of the HEADERS payload and its end, once complete.
    headers: Option<(usize, usize)>,
}

impl HeadIn {
    /// Bytes held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds the next bytes of the stream; `Ok(Some(payload))` once the HEADERS frame is
    /// complete (later calls return it again and ignore their input).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<&[u8]>, H3Error> {
        if self.headers.is_none() {
            self.buf.extend_from_slice(bytes);
            self.scan()?;
        }
        Ok(self
            .headers
            .and_then(|(start, end)| self.buf.get(start..end)))
    }

    fn scan(&mut self) -> Result<(), H3Error> {
        let mut pos = 0;
        let result = loop {
            let Some(h) = self.buf.get(pos..).and_then(frame_header) else {
                break Ok(());
            };
            if h.len > MAX_HEADERS_LEN as u64 {
                break Err(H3Error::new(
                    code::H3_EXCESSIVE_LOAD,
                    format!("frame of {} bytes (at most {MAX_HEADERS_LEN})", h.len),
                ));
            }
            if h.kind == FRAME_DATA {
                break Err(H3Error::new(
                    code::H3_FRAME_UNEXPECTED,
                    "DATA before HEADERS",
                ));
            }
            if h.kind == FRAME_SETTINGS
                || FRAME_CONTROL_ONLY.contains(&h.kind)
                || FRAME_H2_RESERVED.contains(&h.kind)
            {
                break Err(H3Error::new(
                    code::H3_FRAME_UNEXPECTED,
                    format!("frame type {:#x} on a request stream", h.kind),
                ));
            }
            let end = pos + h.hlen + h.len as usize;
            if self.buf.len() < end {
                break Ok(());
            }
            if h.kind == FRAME_HEADERS {
                self.headers = Some((h.hlen, end - pos)); // after the drain below
                break Ok(());
            }
            pos = end; // an unknown frame type: skipped
        };
        self.buf.drain(..pos.min(self.buf.len()));
        result
    }
}

/// Walks a QPACK field section (RFC 9204 §4.5) before the decoder sees it: Required Insert
/// Count 0 (this relay announces no dynamic table), only static references and literals,
/// every integer at most 28 bits past its prefix and every string inside the section.
/// Returns the number of field lines. (`wtransport-proto`'s decoder shifts without a check
/// on long integers; this keeps such input away from it.)
pub fn check_field_section(payload: &[u8]) -> Result<usize, H3Error> {
    let bad = |why: &str| H3Error::new(code::QPACK_DECOMPRESSION_FAILED, why.to_owned());
    let mut r = QpackReader { buf: payload };
    let (_, ric) = r
        .int(8)
        .ok_or_else(|| bad("truncated field section prefix"))?;
    if ric != 0 {
        return Err(bad(
            "the field section needs the QPACK dynamic table, which this relay does not have",
        ));
    }
    r.int(7)
        .ok_or_else(|| bad("truncated field section prefix"))?;
    let mut lines = 0;
    while let Some(&first) = r.buf.first() {
        lines += 1;
        if first & 0x80 != 0 {
            // Indexed field line; T (0x40) = static.
            if first & 0x40 == 0 {
                return Err(bad("dynamic table reference in a field line"));
            }
            r.int(6).ok_or_else(|| bad("truncated field line"))?;
        } else if first & 0x40 != 0 {
            // Literal field line with name reference; T (0x10) = static.
            if first & 0x10 == 0 {
                return Err(bad("dynamic table reference in a field line"));
            }
            r.int(4).ok_or_else(|| bad("truncated field line"))?;
            r.string(7).ok_or_else(|| bad("truncated field value"))?;
        } else if first & 0x20 != 0 {
            // Literal field line with literal name.
            r.string(3).ok_or_else(|| bad("truncated field name"))?;
            r.string(7).ok_or_else(|| bad("truncated field value"))?;
        } else {
            return Err(bad("post-base (dynamic table) field line"));
        }
    }
    Ok(lines)
}

struct QpackReader<'a> {
    buf: &'a [u8],
}

impl QpackReader<'_> {
    /// A prefix integer with an `n`-bit prefix (RFC 7541 §5.1): `(flags above it, value)`.
    fn int(&mut self, n: u32) -> Option<(u8, u64)> {
        let (&first, mut rest) = self.buf.split_first()?;
        let mask = ((1u16 << n) - 1) as u8;
        let flags = if n >= 8 { 0 } else { first >> n };
        let mut v = u64::from(first & mask);
        if v == u64::from(mask) {
            let mut shift = 0;
            let mut more = true;
            for _ in 0..MAX_QPACK_INT_CONTINUATIONS {
                let (&b, r) = rest.split_first()?;
                rest = r;
                v += u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    more = false;
                    break;
                }
            }
            if more {
                return None;
            }
        }
        self.buf = rest;
        Some((flags, v))
    }

    /// A string with an `n`-bit length prefix (the H bit above it): skipped.
    fn string(&mut self, n: u32) -> Option<()> {
        let (_, len) = self.int(n)?;
        let len = usize::try_from(len).ok()?;
        self.buf = self.buf.get(len..)?;
        Some(())
    }
}

/// Decodes a field section (see [`check_field_section`]) into `(name, value)` pairs.
pub fn decode_fields(payload: &[u8]) -> Result<Vec<(String, String)>, H3Error> {
    check_field_section(payload)?;
    let f = Frame::new_headers(Cow::Borrowed(payload));
    let headers = Headers::with_frame(&f).map_err(|_| {
        H3Error::new(
            code::QPACK_DECOMPRESSION_FAILED,
            "cannot decode the field section (bad static index or string)",
        )
    })?;
    Ok(headers
        .as_ref()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect())
}

/// The value of field `name` (matched case-insensitively: SDK 0.3.4 sends `Authorization`);
/// an error when two fields differ only in case (which one counts would be a guess).
fn field<'a>(fields: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, H3Error> {
    let mut found = fields.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
    let first = found.next().map(|(_, v)| v.as_str());
    if found.next().is_some() {
        return Err(H3Error::new(
            code::H3_MESSAGE_ERROR,
            format!("the field {name} appears twice"),
        ));
    }
    Ok(first)
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

/// Decodes the HEADERS payload of an extended CONNECT (RFC 9220): `:method CONNECT`,
/// `:protocol webtransport`, `:scheme https`, a `:path` starting with `/`, an `:authority`.
pub fn decode_request(payload: &[u8]) -> Result<Request, H3Error> {
    let fields = decode_fields(payload)?;
    let bad = |why: &str| H3Error::new(code::H3_MESSAGE_ERROR, why.to_owned());
    if field(&fields, ":method")? != Some("CONNECT") {
        return Err(bad(
            "only an extended CONNECT opens a WebTransport session here",
        ));
    }
    if field(&fields, ":protocol")? != Some("webtransport") {
        return Err(bad("the CONNECT must carry :protocol webtransport"));
    }
    if field(&fields, ":scheme")?.is_some_and(|s| s != "https") {
        return Err(bad("the CONNECT must carry :scheme https"));
    }
    let path = field(&fields, ":path")?.ok_or_else(|| bad("the CONNECT has no :path"))?;
    if !path.starts_with('/') {
        return Err(bad("the CONNECT's :path must start with /"));
    }
    let authority = field(&fields, ":authority")?
        .filter(|a| !a.is_empty())
        .ok_or_else(|| bad("the CONNECT has no :authority"))?;
    Ok(Request {
        path: path.to_owned(),
        authority: authority.to_owned(),
        authorization: field(&fields, "authorization")?.map(str::to_owned),
        origin: field(&fields, "origin")?.map(str::to_owned),
    })
}

/// Decodes the HEADERS payload of the relay's answer (client side): `(status, llps-reason)`;
/// a missing or malformed `:status` is an error.
pub fn decode_response(payload: &[u8]) -> Result<(u16, Option<String>), H3Error> {
    let fields = decode_fields(payload)?;
    let status = field(&fields, ":status")?
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| H3Error::new(code::H3_MESSAGE_ERROR, "the response has no valid :status"))?;
    Ok((status, field(&fields, "llps-reason")?.map(str::to_owned)))
}

/// A QPACK field section (static table + literals, Huffman where shorter) in a HEADERS frame.
pub fn headers_frame(fields: &[(&str, &str)]) -> Vec<u8> {
    let headers: Headers = fields.iter().copied().collect();
    let f = headers.generate_frame();
    let mut out = Vec::new();
    push_frame(FRAME_HEADERS, f.payload(), &mut out);
    out
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
        let mut out = Vec::new();
        varint_encode(u64::MAX, &mut out);
        assert_eq!(varint_decode(&out), Some(((1 << 62) - 1, 8)));
    }

    fn connect_payload(fields: &[(&str, &str)]) -> Vec<u8> {
        let f = headers_frame(fields);
        let h = frame_header(&f).unwrap();
        assert_eq!(h.kind, FRAME_HEADERS);
        f[h.hlen..].to_vec()
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
        let decode = |fields: &[(&str, &str)]| decode_request(&connect_payload(fields));
        assert_eq!(decode(&fields).unwrap().token(), Some("AT_a_b"));
        fields[4] = (":path", "/x?y=1&at=AT_c_d");
        fields.pop();
        assert_eq!(decode(&fields).unwrap().token(), Some("AT_c_d"));
        fields[4] = (":path", "/");
        assert_eq!(decode(&fields).unwrap().token(), None);
        fields[4] = (":path", "x");
        assert_eq!(decode(&fields).unwrap_err().code, code::H3_MESSAGE_ERROR);
        fields[4] = (":path", "/");
        fields[0] = (":method", "GET");
        assert!(decode(&fields).is_err());
    }

    #[test]
    fn fields_that_differ_only_in_case_are_refused() {
        let e = decode_request(&connect_payload(&[
            (":method", "CONNECT"),
            (":protocol", "webtransport"),
            (":authority", "h:1"),
            (":path", "/"),
            ("authorization", "Bearer AT_a_b"),
            ("Authorization", "Bearer AT_c_d"),
        ]))
        .unwrap_err();
        assert_eq!(e.code, code::H3_MESSAGE_ERROR);
        assert!(e.why.contains("authorization appears twice"), "{e}");
    }

    #[test]
    fn long_qpack_integers_are_refused_before_the_decoder() {
        // Required Insert Count 0, Delta Base 0, then a literal with a literal name whose
        // length integer has twelve continuation bytes: `wtransport-proto`'s decoder shifts
        // by 70 bits and panics in a build with overflow checks (debug, fuzzing).
        let mut p = vec![0, 0, 0x27];
        p.extend_from_slice(&[0x80; 12]);
        p.push(0x01);
        let e = decode_fields(&p).unwrap_err();
        assert_eq!(e.code, code::QPACK_DECOMPRESSION_FAILED);
        // A dynamic table reference and a non-zero Required Insert Count.
        assert!(decode_fields(&[0, 0, 0x80]).is_err());
        assert!(decode_fields(&[1, 0]).is_err());
        // An ordinary CONNECT passes the check with one line per field.
        let ok = connect_payload(&[(":method", "CONNECT"), (":path", "/")]);
        assert_eq!(check_field_section(&ok), Ok(2));
    }

    #[test]
    fn control_stream_frames() {
        let mut settings = Vec::new();
        for (id, v) in [(0x01u64, 0u64), (0x33, 1)] {
            varint_encode(id, &mut settings);
            varint_encode(v, &mut settings);
        }
        let mut wire = Vec::new();
        push_frame(FRAME_SETTINGS, &settings, &mut wire);
        push_frame(0x07, &[0], &mut wire); // GOAWAY
        push_frame(0x21, &[1, 2, 3], &mut wire); // reserved: skipped
        for cut in 0..wire.len() {
            let mut c = ControlIn::default();
            c.push(&wire[..cut]).unwrap();
            c.push(&wire[cut..]).unwrap();
            assert!(c.has_settings());
            assert_eq!(c.buffered(), 0);
        }
        let mut c = ControlIn::default();
        let mut goaway = Vec::new();
        push_frame(0x07, &[0], &mut goaway);
        assert_eq!(c.push(&goaway).unwrap_err().code, code::H3_MISSING_SETTINGS);
        let mut c = ControlIn::default();
        let mut twice = wire.clone();
        push_frame(FRAME_SETTINGS, &[], &mut twice);
        assert_eq!(c.push(&twice).unwrap_err().code, code::H3_FRAME_UNEXPECTED);
        let mut c = ControlIn::default();
        let mut dup = Vec::new();
        push_frame(FRAME_SETTINGS, &[0x33, 1, 0x33, 0], &mut dup);
        assert_eq!(c.push(&dup).unwrap_err().code, code::H3_SETTINGS_ERROR);
        // A length over the limit is refused from its header, before any payload.
        let mut c = ControlIn::default();
        let mut big = Vec::new();
        push_frame(FRAME_SETTINGS, &[], &mut big);
        varint_encode(0x21, &mut big);
        varint_encode(MAX_CONTROL_FRAME as u64 + 1, &mut big);
        assert_eq!(c.push(&big).unwrap_err().code, code::H3_EXCESSIVE_LOAD);
        // An 8-byte type and length around a full-size frame is fine.
        let mut c = ControlIn::default();
        let mut wide = Vec::new();
        push_frame(FRAME_SETTINGS, &[], &mut wide);
        wide.extend_from_slice(&(0x21u64 | 0xc000_0000_0000_0000).to_be_bytes());
        wide.extend_from_slice(&(MAX_CONTROL_FRAME as u64 | 0xc000_0000_0000_0000).to_be_bytes());
        wide.extend_from_slice(&[0; MAX_CONTROL_FRAME]);
        for chunk in wide.chunks(1000) {
            c.push(chunk).unwrap();
        }
        assert_eq!(c.buffered(), 0);
    }

    #[test]
    fn request_stream_up_to_headers() {
        let payload = connect_payload(&[(":method", "CONNECT"), (":path", "/")]);
        let mut wire = Vec::new();
        push_frame(0x21, &[9; 40], &mut wire); // reserved: skipped
        push_frame(FRAME_HEADERS, &payload, &mut wire);
        wire.extend_from_slice(b"capsules after the head");
        for cut in 0..wire.len() {
            let mut h = HeadIn::default();
            let first = h.push(&wire[..cut]).unwrap().map(<[u8]>::to_vec);
            let second = h.push(&wire[cut..]).unwrap().map(<[u8]>::to_vec);
            assert_eq!(first.or(second).as_deref(), Some(&payload[..]), "cut {cut}");
        }
        let mut data = Vec::new();
        push_frame(FRAME_DATA, b"x", &mut data);
        assert_eq!(
            HeadIn::default().push(&data).unwrap_err().code,
            code::H3_FRAME_UNEXPECTED
        );
        let mut big = Vec::new();
        varint_encode(FRAME_HEADERS, &mut big);
        varint_encode(MAX_HEADERS_LEN as u64 + 1, &mut big);
        assert_eq!(
            HeadIn::default().push(&big).unwrap_err().code,
            code::H3_EXCESSIVE_LOAD
        );
    }

    #[test]
    fn stream_prefixes_and_datagrams() {
        assert_eq!(uni_type(&[0x00]), Some((UniType::Control, 1)));
        assert_eq!(uni_type(&[0x40, 0x54]), None);
        assert_eq!(
            uni_type(&[0x40, 0x54, 0x04]),
            Some((UniType::WebTransport { session: 4 }, 3))
        );
        assert_eq!(uni_type(&[0x21]), Some((UniType::Other(0x21), 1)));
        assert_eq!(
            bidi_header(&[0x40, 0x41, 0x00]),
            Some((FRAME_WT_BIDI, 0, 3))
        );
        assert_eq!(datagram_session(&[0x01, 9]), Some((4, 1)));
        assert_eq!(datagram_session(&[]), None);
        let (status, reason) = decode_response(&connect_payload(&[
            (":status", "403"),
            ("llps-reason", "no"),
        ]))
        .unwrap();
        assert_eq!((status, reason.as_deref()), (403, Some("no")));
        assert!(decode_response(&connect_payload(&[(":status", "2000")])).is_err());
    }
}
