//! REST on the edge port: `GET /ping`, `GET /stats`, and whatever [`RestHandler`]s are
//! installed (the access-ticket endpoints plug in here).
//!
//! A handler sees every request that is not the WebSocket upgrade; the first handler that
//! returns `Some` answers. Unknown paths get `404` with a body that names the path.

use std::net::SocketAddr;
use std::time::SystemTime;

/// One HTTP request (head + bounded body).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Query string (after `?`), if any.
    pub query: Option<String>,
    /// Headers, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Body (`Content-Length` bytes, bounded by `Limits::max_http_body`).
    pub body: Vec<u8>,
    /// The peer's address.
    pub peer: SocketAddr,
}

impl HttpRequest {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header (lower-case name), in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The token of an `Authorization: Bearer <token>` header.
    pub fn bearer_token(&self) -> Option<&str> {
        let v = self.header("authorization")?;
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }
}

/// One HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A `text/plain` response.
    pub fn text(status: u16, body: String) -> Self {
        HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: String) -> Self {
        HttpResponse {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }
}

/// Answers REST requests (e.g. the token endpoints). Return `None` to pass.
pub trait RestHandler {
    /// Handles `req` if it is one of this handler's routes.
    fn handle(&self, req: &HttpRequest, now: SystemTime) -> Option<HttpResponse>;
}

/// Paths on the edge port that reveal the relay's counters: served only to requests its
/// [`AdminGate`] admits (an admin-token holder), like the admin pages. `/ping` stays public.
pub const ADMIN_ONLY_PATHS: &[&str] = &["/stats", "/v1/ticket-stats", "/v1/wt-stats"];

/// Decides whether a request on the public edge port may see an [`ADMIN_ONLY_PATHS`] page.
pub trait AdminGate {
    /// `Ok` to serve it, or the response that refuses it (404 when not exposed, 401 with
    /// `WWW-Authenticate` when a credential is needed).
    fn admit(&self, req: &HttpRequest) -> Result<(), HttpResponse>;
}

/// The gate without an admin credential configured: the pages do not exist on this port.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAdmin;

impl AdminGate for NoAdmin {
    fn admit(&self, req: &HttpRequest) -> Result<(), HttpResponse> {
        Err(HttpResponse::text(
            404,
            format!(
                "no such path: {} (the relay's counters are on the admin listener's /metrics, and here to holders of the admin token: --admin-token-file)",
                req.path
            ),
        ))
    }
}

/// Routes a request: built-ins first, then the handlers, then 404.
/// `stats` renders the `GET /stats` document (the edge's counters).
pub fn route(
    req: &HttpRequest,
    handlers: &[std::rc::Rc<dyn RestHandler>],
    stats: &dyn Fn() -> String,
    now: SystemTime,
) -> HttpResponse {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET" | "HEAD", "/ping") => {
            let mut r = HttpResponse::text(200, "pong".to_string());
            r.headers
                .push(("Access-Control-Allow-Origin", "*".to_string()));
            return r;
        }
        (_, "/ping") => return HttpResponse::text(405, "use GET /ping".to_string()),
        ("GET", "/stats") => return HttpResponse::json(200, stats()),
        _ => {}
    }
    for h in handlers {
        if let Some(resp) = h.handle(req, now) {
            return resp;
        }
    }
    if req.path == "/ws" {
        return HttpResponse::text(
            426,
            "/ws is the WebSocket endpoint: send GET with Upgrade: websocket".to_string(),
        );
    }
    HttpResponse::text(
        404,
        format!(
            "no such path: {} {} (this relay serves GET /ping, GET /stats and the WebSocket at /ws)",
            req.method, req.path
        ),
    )
}
