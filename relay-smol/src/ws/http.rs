//! Just enough HTTP/1.1 for one port that serves REST and the WebSocket upgrade: read one
//! request head (bounded) and its `Content-Length` body (bounded), write one response.

use std::net::SocketAddr;

use crate::limits::{HTTP_CHUNK, Limits};
use crate::rest::{HttpRequest, HttpResponse};
use crate::ws::transport::Transport;

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed or the socket failed before a full request; no answer possible.
    Closed,
    /// The request is malformed or too large; answer with this response and close.
    Respond(HttpResponse),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed => f.write_str("the peer closed before sending a full request"),
            Self::Respond(r) => write!(
                f,
                "request refused with {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ),
        }
    }
}

impl std::error::Error for ReadError {}

const MAX_HEADERS: usize = 48;

/// Parses the request head at the start of `buf` (what [`read_request`] has read so far):
/// `Ok(None)` when more bytes are needed, else the request (without its body), the head's
/// length and the body's length. Pure, so it can be fuzzed without a socket.
pub fn parse_head(
    buf: &[u8],
    peer: SocketAddr,
    limits: &Limits,
) -> Result<Option<(HttpRequest, usize, usize)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => {
            let req = to_request(&parsed, peer)?;
            let body_len = body_length(&req, limits)?;
            Ok(Some((req, head_len, body_len)))
        }
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_http_head {
                return Err(ReadError::Respond(HttpResponse::text(
                    431,
                    format!("request head larger than {} bytes", limits.max_http_head),
                )));
            }
            Ok(None)
        }
        Err(e) => Err(ReadError::Respond(HttpResponse::text(
            400,
            format!("malformed HTTP request: {e}"),
        ))),
    }
}

/// Reads one request. Returns it with any bytes that followed it on the wire.
///
/// Memory: the head buffer grows up to twice `max_http_head` at most; once the head is
/// parsed the body is read into exactly `Content-Length` more bytes, and becomes the
/// request's body without a copy (`Limits::handshake_bytes_bound` counts on this).
pub async fn read_request(
    io: &mut Transport,
    peer: SocketAddr,
    limits: &Limits,
) -> Result<(HttpRequest, Vec<u8>), ReadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; HTTP_CHUNK];
    let (mut req, head_len, body_len) = loop {
        let n = io.read(&mut chunk).await.map_err(|_| ReadError::Closed)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        if let Some(head) = parse_head(&buf, peer, limits)? {
            break head;
        }
    };
    // The head is parsed into `req`: keep only what follows it.
    buf.drain(..head_len.min(buf.len()));
    if buf.len() < body_len {
        buf.reserve_exact(body_len - buf.len());
    }
    while buf.len() < body_len {
        let want = (body_len - buf.len()).min(HTTP_CHUNK);
        let n = io
            .read(chunk.get_mut(..want).unwrap_or(&mut []))
            .await
            .map_err(|_| ReadError::Closed)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
    }
    let rest = buf.split_off(body_len.min(buf.len()));
    req.body = buf;
    Ok((req, rest))
}

fn to_request(
    parsed: &httparse::Request<'_, '_>,
    peer: SocketAddr,
) -> Result<HttpRequest, ReadError> {
    let bad = |why: &str| ReadError::Respond(HttpResponse::text(400, why.to_string()));
    let method = parsed
        .method
        .ok_or_else(|| bad("missing method"))?
        .to_string();
    let target = parsed.path.ok_or_else(|| bad("missing request target"))?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| bad(&format!("header {} is not valid UTF-8", h.name)))?;
        headers.push((h.name.to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok(HttpRequest {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
        peer,
    })
}

/// The body length from `Content-Length`. RFC 9112 6.3: several values (in repeated headers
/// or as a list) are refused unless they are all the same number; anything else is `400`.
fn body_length(req: &HttpRequest, limits: &Limits) -> Result<usize, ReadError> {
    if req.header("transfer-encoding").is_some() {
        return Err(ReadError::Respond(HttpResponse::text(
            411,
            "chunked bodies are not supported; send Content-Length".to_string(),
        )));
    }
    let bad = |why: String| ReadError::Respond(HttpResponse::text(400, why));
    let mut len: Option<usize> = None;
    for v in req
        .headers_named("content-length")
        .flat_map(|v| v.split(','))
    {
        let v = v.trim();
        let n: usize = v
            .parse()
            .ok()
            .filter(|_| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad(format!("bad Content-Length: {v:?}")))?;
        match len {
            Some(m) if m != n => {
                return Err(bad(format!(
                    "conflicting Content-Length values {m} and {n}; send one"
                )));
            }
            _ => len = Some(n),
        }
    }
    let Some(len) = len else {
        return Ok(0);
    };
    if len > limits.max_http_body {
        return Err(ReadError::Respond(HttpResponse::text(
            413,
            format!(
                "request body of {len} bytes is over the limit of {} bytes",
                limits.max_http_body
            ),
        )));
    }
    Ok(len)
}

/// Standard reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Serializes a response (always `Connection: close`). For a `HEAD` request (`head`) the
/// body is left out; `Content-Length` still gives its length (RFC 9110 9.3.2).
pub fn encode_response(resp: &HttpResponse, head: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        reason_phrase(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (k, v) in &resp.headers {
        out.push_str(k);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(&resp.body);
    }
    bytes
}
