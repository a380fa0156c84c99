//! The admin routes as one pure function: [`AdminRoutes::handle`] turns (listener, method,
//! path, `Authorization` header, now) into a [`Response`], or `None` when the path is not an
//! admin path so the caller's router goes on. Both the admin listener ([`super::server`]) and
//! the public edge's HTTP router call it; neither needs to know what the routes are.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use super::access::{AdminAccess, Listener, is_admin_path};
use super::view::MeshState;
use super::{JSON_CONTENT_TYPE, serve};
use crate::metrics::{RelayMetrics, text::CONTENT_TYPE as METRICS_CONTENT_TYPE};

/// Builds the `GET /v1/status` JSON document at `now_ms` (provided by the mesh layer);
/// `None` while there is none (answered with 503).
pub type StatusFn = dyn Fn(u64) -> Option<String> + Send + Sync;

/// One HTTP response, ready to write.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers (security headers, `WWW-Authenticate`, `Allow`).
    pub headers: Vec<(&'static str, &'static str)>,
    /// Body (empty for `HEAD`, but `Content-Length` is the full length: see `content_length`).
    pub body: Cow<'static, [u8]>,
    /// The `Content-Length` to announce.
    pub content_length: usize,
}

impl Response {
    fn new(
        status: u16,
        reason: &'static str,
        content_type: &'static str,
        body: Cow<'static, [u8]>,
    ) -> Self {
        let mut headers = Vec::with_capacity(super::SECURITY_HEADERS.len() + 1);
        headers.extend_from_slice(super::SECURITY_HEADERS);
        Response {
            status,
            reason,
            content_type,
            headers,
            content_length: body.len(),
            body,
        }
    }

    fn text(status: u16, reason: &'static str, body: &'static str) -> Self {
        Response::new(
            status,
            reason,
            "text/plain; charset=utf-8",
            Cow::Borrowed(body.as_bytes()),
        )
    }

    /// The status line, headers and body as HTTP/1.1 bytes, with `Connection: close`.
    pub fn to_http1(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 512);
        out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", self.status, self.reason).as_bytes());
        out.extend_from_slice(format!("Content-Type: {}\r\n", self.content_type).as_bytes());
        out.extend_from_slice(format!("Content-Length: {}\r\n", self.content_length).as_bytes());
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"Connection: close\r\n\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// What the admin routes read: the access rule, the metrics, the mesh picture and the
/// status document builder.
pub struct AdminRoutes {
    /// Who may see the admin paths.
    pub access: AdminAccess,
    /// The relay's metrics (`/metrics`).
    pub metrics: Arc<RelayMetrics>,
    /// The mesh picture (`/v1/mesh`).
    pub mesh: Arc<Mutex<MeshState>>,
    /// The `/v1/status` builder; `None` answers 503 until the mesh layer provides one.
    pub status: Option<Arc<StatusFn>>,
}

impl AdminRoutes {
    /// Answers an admin path; `None` for any other path (the caller routes it).
    /// `authorization` is the raw `Authorization` header value.
    pub fn handle(
        &self,
        listener: Listener,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        now_ms: u64,
    ) -> Option<Response> {
        if !is_admin_path(path) {
            return None;
        }
        if let Err(denied) = self.access.check(listener, authorization) {
            let (status, reason) = denied.status();
            let mut r = Response::text(status, reason, denied.body());
            if let Some(h) = denied.www_authenticate() {
                r.headers.push(("WWW-Authenticate", h));
            }
            return Some(r);
        }
        let head = method == "HEAD";
        if method != "GET" && !head {
            let mut r = Response::text(
                405,
                "Method Not Allowed",
                "only GET and HEAD are allowed here\n",
            );
            r.headers.push(("Allow", "GET, HEAD"));
            return Some(r);
        }
        let (route, query) = path.split_once('?').unwrap_or((path, ""));
        let mut r = match route {
            "/metrics" => Response::new(
                200,
                "OK",
                METRICS_CONTENT_TYPE,
                Cow::Owned(self.metrics.render().into_bytes()),
            ),
            "/v1/mesh" => {
                let mut mesh = self.mesh.lock().unwrap_or_else(|p| p.into_inner());
                mesh.expire(now_ms);
                let mut view = mesh.view(now_ms);
                drop(mesh);
                if query.split('&').any(|kv| kv == "pairs=none") {
                    view.pairs.clear();
                }
                view.webtransport = self.metrics.wt.summary();
                match serde_json::to_vec(&view) {
                    Ok(body) => Response::new(200, "OK", JSON_CONTENT_TYPE, Cow::Owned(body)),
                    Err(_) => Response::text(
                        500,
                        "Internal Server Error",
                        "could not encode the mesh view\n",
                    ),
                }
            }
            "/v1/status" => match self.status.as_ref().and_then(|f| f(now_ms)) {
                Some(doc) => {
                    Response::new(200, "OK", JSON_CONTENT_TYPE, Cow::Owned(doc.into_bytes()))
                }
                None => Response::text(
                    503,
                    "Service Unavailable",
                    "status is not available yet: this relay runs without the mesh layer, or it has not reported\n",
                ),
            },
            _ => match serve(route) {
                Some((ty, body)) => Response::new(200, "OK", ty, Cow::Borrowed(body)),
                None => Response::text(404, "Not Found", "no such dashboard page\n"),
            },
        };
        if head {
            r.body = Cow::Borrowed(b"");
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::access::AdminAccess;

    fn routes(access: AdminAccess) -> AdminRoutes {
        AdminRoutes {
            access,
            metrics: Arc::new(RelayMetrics::default()),
            mesh: Arc::new(Mutex::new(MeshState::new("tokyo"))),
            status: None,
        }
    }

    #[test]
    fn routes_answer_by_path_and_method() {
        let r = routes(AdminAccess::loopback_only());
        let get = |p: &str| r.handle(Listener::Admin, "GET", p, None, 1_000);
        assert_eq!(get("/ping"), None);
        let m = get("/metrics").map(|x| (x.status, x.content_type));
        assert_eq!(m, Some((200, METRICS_CONTENT_TYPE)));
        let mesh = get("/v1/mesh?pairs=none");
        assert_eq!(mesh.as_ref().map(|x| x.status), Some(200));
        let body = mesh
            .map(|x| String::from_utf8_lossy(&x.body).into_owned())
            .unwrap_or_default();
        assert!(body.contains("\"self_name\":\"tokyo\""), "{body}");
        assert_eq!(get("/v1/status").map(|x| x.status), Some(503));
        let post = r.handle(Listener::Admin, "POST", "/metrics", None, 0);
        assert_eq!(post.as_ref().map(|x| x.status), Some(405));
        let head = r.handle(Listener::Admin, "HEAD", "/metrics", None, 0);
        assert!(
            head.as_ref()
                .is_some_and(|h| h.body.is_empty() && h.content_length > 0)
        );
        let wire = get("/metrics").map(|x| x.to_http1()).unwrap_or_default();
        assert!(wire.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(String::from_utf8_lossy(&wire).contains("X-Content-Type-Options: nosniff\r\n"));
    }

    #[test]
    fn access_is_enforced_before_anything_else() {
        let r = routes(AdminAccess::loopback_only());
        let x = r.handle(Listener::Public, "GET", "/v1/mesh", None, 0);
        assert_eq!(x.map(|x| x.status), Some(404));
        let r = routes(
            AdminAccess::with_token("0123456789abcdef-token", false)
                .unwrap_or_else(|_| AdminAccess::loopback_only()),
        );
        let x = r.handle(Listener::Public, "POST", "/v1/mesh", None, 0);
        assert_eq!(x.as_ref().map(|x| x.status), Some(401));
        assert!(x.is_some_and(|x| x.headers.iter().any(|(k, _)| *k == "WWW-Authenticate")));
        let ok = r.handle(
            Listener::Public,
            "GET",
            "/metrics",
            Some("Bearer 0123456789abcdef-token"),
            0,
        );
        assert_eq!(ok.map(|x| x.status), Some(200));
    }
}
