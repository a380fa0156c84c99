//! Edge discovery: `GET /v1/edges` serves the SDK's bootstrap document
//! (`{"version":1,"updated_at":…,"edges":[{"host":"h[:port]","lat":…,"lon":…},…]}`) listing
//! this relay and every relay the mesh's announcements told it about. From each host the
//! SDK derives `https://host` (`/ping`), `wss://host/ws` and `https://host/wt` (WebTransport
//! on the same port, over UDP), pings all of them and connects to the fastest.
//!
//! A relay announces `--public-host` (as its edge URL; `--edge-url` still wins). Hosts that
//! are guesses are left out: an unspecified address always, a loopback address unless this
//! relay's own public host is loopback too (a lab on one machine).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::dashboard::view::MeshState;
use crate::rest::{HttpRequest, HttpResponse, RestHandler};

/// Longest public host accepted.
pub const MAX_HOST: usize = 253 + 6;

/// The host part of `host[:port]` (IPv6 in brackets kept without them).
pub fn host_only(h: &str) -> &str {
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match h.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => h,
    }
}

/// Checks a `--public-host` value: `host` or `host:port`, no scheme, no path.
pub fn check_host(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > MAX_HOST {
        return Err(format!("must be 1..={MAX_HOST} characters"));
    }
    if h.contains("://") || h.contains('/') {
        return Err("give the host (and :port), not a URL, e.g. fra-01.example.net:443".into());
    }
    if !h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    {
        return Err("only letters, digits, '.', '-', ':' and [] for IPv6".into());
    }
    if let Some((_, port)) = h.rsplit_once(':')
        && !h.ends_with(']')
        && port.parse::<u16>().is_err()
        && h.matches(':').count() == 1
    {
        return Err(format!("bad port {port:?}"));
    }
    Ok(())
}

/// `host[:port]` of an edge URL (`wss://h:p/ws` → `h:p`).
pub fn host_of_url(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split(['/', '?']).next()?;
    (!host.is_empty()).then_some(host)
}

fn ip_of(host: &str) -> Option<IpAddr> {
    host_only(host).parse().ok()
}

/// Is `host` a guess rather than a configured public name?
fn is_guess(host: &str, allow_loopback: bool) -> bool {
    match ip_of(host) {
        Some(ip) if ip.is_unspecified() => true,
        Some(ip) if ip.is_loopback() => !allow_loopback,
        _ => false,
    }
}

/// One entry of the document.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Edge {
    /// `host[:port]`.
    pub host: String,
    /// Relay name (not sent: the SDK knows only `host`, `lat`, `lon`, `priority`).
    #[serde(skip)]
    pub name: String,
    /// Latitude (degrees), if the relay gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    /// Longitude (degrees).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

/// The document: `own` first (this relay's `--public-host`), then every fresh relay of the
/// mesh picture with a configured host, without duplicates.
pub fn document(own: Option<&str>, mesh: Option<&MeshState>, now: SystemTime) -> String {
    let now_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let allow_loopback = own.is_some_and(|h| ip_of(h).is_some_and(|ip| ip.is_loopback()));
    let mut edges: Vec<Edge> = Vec::new();
    if let Some(h) = own {
        edges.push(Edge {
            host: h.to_owned(),
            name: String::new(),
            lat: None,
            lon: None,
        });
    }
    if let Some(m) = mesh {
        for r in m.view(now_ms).relays {
            if r.stale {
                continue;
            }
            let Some(host) = host_of_url(&r.url) else {
                continue;
            };
            if is_guess(host, allow_loopback) {
                continue;
            }
            if let Some(e) = edges.iter_mut().find(|e| e.host == host) {
                if e.name.is_empty() {
                    e.name = r.name.clone();
                    e.lat = r.lat;
                    e.lon = r.lon;
                }
                continue;
            }
            edges.push(Edge {
                host: host.to_owned(),
                name: r.name.clone(),
                lat: r.lat,
                lon: r.lon,
            });
        }
    }
    serde_json::json!({
        "version": 1,
        "updated_at": now_ms / 1000,
        "edges": edges,
    })
    .to_string()
}

/// Serves `GET /v1/edges` (CORS open, like `/ping`: browsers discover edges too).
pub struct EdgesRest {
    own: Option<String>,
    mesh: Option<Arc<Mutex<MeshState>>>,
}

impl EdgesRest {
    /// This relay's public host and the mesh picture (absent without a mesh).
    pub fn new(own: Option<String>, mesh: Option<Arc<Mutex<MeshState>>>) -> Self {
        EdgesRest { own, mesh }
    }
}

impl RestHandler for EdgesRest {
    fn handle(&self, req: &HttpRequest, now: SystemTime) -> Option<HttpResponse> {
        if req.path != "/v1/edges" {
            return None;
        }
        if req.method != "GET" {
            return Some(HttpResponse::text(405, "use GET /v1/edges".to_owned()));
        }
        let body = match &self.mesh {
            Some(m) => {
                let m = m.lock().unwrap_or_else(|p| p.into_inner());
                document(self.own.as_deref(), Some(&m), now)
            }
            None => document(self.own.as_deref(), None, now),
        };
        let mut r = HttpResponse::json(200, body);
        r.headers
            .push(("Access-Control-Allow-Origin", "*".to_owned()));
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_only("a.example:443"), "a.example");
        assert_eq!(host_only("[::1]:443"), "::1");
        assert_eq!(host_only("a.example"), "a.example");
        assert_eq!(
            host_of_url("wss://a.example:8443/ws"),
            Some("a.example:8443")
        );
        assert_eq!(host_of_url("ws://127.0.0.1:1/ws"), Some("127.0.0.1:1"));
        assert!(check_host("fra-01.example.net:443").is_ok());
        assert!(check_host("[2001:db8::1]:443").is_ok());
        assert!(check_host("https://x").is_err());
        assert!(check_host("x/ws").is_err());
        assert!(check_host("x:99999").is_err());
        assert!(check_host("").is_err());
        assert!(is_guess("0.0.0.0:8080", true));
        assert!(is_guess("127.0.0.1:8080", false));
        assert!(!is_guess("127.0.0.1:8080", true));
        assert!(!is_guess("fra.example:443", false));
    }

    #[test]
    fn document_lists_own_host_first() {
        let d = document(Some("a.example:443"), None, UNIX_EPOCH);
        let v: serde_json::Value = serde_json::from_str(&d).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["edges"][0]["host"], "a.example:443");
        assert_eq!(v["edges"].as_array().unwrap().len(), 1);
    }
}
