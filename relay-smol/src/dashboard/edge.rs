//! Glue between the admin side (dashboard, `/v1/mesh`, `/metrics`) and a running edge:
//! [`install`] adds the admin routes to the edge's REST handlers (public listener, credential
//! required), binds the admin listener, and starts a task that mirrors the broker's statistics
//! into [`RelayMetrics`] and refreshes the local relay's summary in the mesh picture every
//! [`REFRESH`].
//!
//! The mesh layer plugs in through the returned [`AdminHandle`]: it feeds received relay
//! summaries into `mesh`, sets the local relay's links and routes with
//! [`AdminHandle::set_local_mesh`], bumps the mesh counters of `metrics`, and may install a
//! `/v1/status` builder before calling [`install`] (`AdminOptions::status`).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_io::Timer;
use smol::LocalExecutor;

use super::access::{AdminAccess, Listener};
use super::routes::{AdminRoutes, StatusFn};
use super::server::AdminServer;
use super::view::{LinkSummary, MeshState, RelayCounters, RelaySummary, RouteSummary};
use crate::broker::Broker;
use crate::clock;
use crate::metrics::{DropReason, RelayMetrics, Source};
use crate::rest::{HttpRequest, HttpResponse, RestHandler};
use crate::ws::Relay;

/// How often the local relay's counters and summary are refreshed.
pub const REFRESH: Duration = Duration::from_secs(1);

/// Who this relay is, as the dashboard shows it.
#[derive(Clone, Debug)]
pub struct LocalIdentity {
    /// Relay name (unique in the mesh).
    pub name: String,
    /// Region label.
    pub region: String,
    /// Latitude and longitude in degrees, if known.
    pub position: Option<(f64, f64)>,
    /// Public URL of the WebSocket edge.
    pub url: String,
}

/// How to expose the admin side.
pub struct AdminOptions {
    /// Address of the admin listener; `None` runs none (then only a token opens the pages).
    pub listen: Option<SocketAddr>,
    /// Admin token: also serve the admin paths on the public listener to holders of it.
    pub token: Option<String>,
    /// Require the token on the admin listener too (for a non-loopback admin address).
    pub token_everywhere: bool,
    /// This relay.
    pub identity: LocalIdentity,
    /// The `/v1/status` builder, from the mesh layer.
    pub status: Option<Arc<StatusFn>>,
}

/// What [`install`] set up; the mesh layer writes into it.
#[derive(Clone)]
pub struct AdminHandle {
    /// Where the admin listener listens, if it runs.
    pub admin_addr: Option<SocketAddr>,
    /// The relay's metrics.
    pub metrics: Arc<RelayMetrics>,
    /// The mesh picture (`/v1/mesh`); feed received relay summaries here.
    pub mesh: Arc<Mutex<MeshState>>,
    local: Arc<Mutex<Local>>,
}

struct Local {
    identity: LocalIdentity,
    links: Vec<LinkSummary>,
    routes: Vec<RouteSummary>,
    status: Option<String>,
}

impl AdminHandle {
    /// Sets the local relay's links and route table for its next summary (mesh layer).
    pub fn set_local_mesh(&self, links: Vec<LinkSummary>, routes: Vec<RouteSummary>) {
        let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        l.links = links;
        l.routes = routes;
    }

    /// Takes the mesh node's latest `/v1/status` document (see docs/api.md): serves it on
    /// `/v1/status`, and takes the local relay's identity, links and routes from it for the
    /// next summary. Call it about once a second. A document that does not parse is still
    /// served, and the previous links and routes are kept.
    pub fn set_status(&self, json: String) {
        let parsed = summary_parts_from_status(&json);
        let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((identity, links, routes)) = parsed {
            if let Some(id) = identity {
                l.identity = id;
            }
            l.links = links;
            l.routes = routes;
        }
        l.status = Some(json);
    }
}

/// Reads identity, links and routes out of a `/v1/status` document.
pub fn summary_parts_from_status(
    json: &str,
) -> Option<(Option<LocalIdentity>, Vec<LinkSummary>, Vec<RouteSummary>)> {
    use serde_json::Value;
    let v: Value = serde_json::from_str(json).ok()?;
    let num = |x: &Value, k: &str| x.get(k).and_then(Value::as_f64);
    let text = |x: &Value, k: &str| x.get(k).and_then(Value::as_str).map(str::to_string);
    let identity = v.get("identity").and_then(|i| {
        Some(LocalIdentity {
            name: text(i, "name")?,
            region: text(i, "region")
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "unknown".into()),
            position: i
                .get("position")
                .and_then(|p| Some((num(p, "lat")?, num(p, "lon")?))),
            url: text(i, "edge_url")?,
        })
    });
    let links = v
        .get("links")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|l| {
                    let rtt_min = num(l, "min_rtt_ms").unwrap_or(0.0);
                    Some(LinkSummary {
                        peer: text(l, "peer")?,
                        up: l.get("up").and_then(Value::as_bool).unwrap_or(false),
                        rtt_ms: num(l, "rtt_ms").unwrap_or(rtt_min),
                        rtt_min_ms: rtt_min,
                        jitter_ms: num(l, "jitter_ms").unwrap_or(0.0),
                        loss: (num(l, "loss_pct").unwrap_or(0.0) / 100.0).clamp(0.0, 1.0),
                    })
                })
                .take(super::view::MAX_LINKS_PER_RELAY)
                .collect()
        })
        .unwrap_or_default();
    let routes = v
        .get("routes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    Some(RouteSummary {
                        dst: text(r, "dest")?,
                        next_hop: text(r, "next_hop")?,
                        metric_ms: num(r, "metric_ms")?,
                    })
                })
                .take(super::view::MAX_RELAYS)
                .collect()
        })
        .unwrap_or_default();
    Some((identity, links, routes))
}

/// Milliseconds since the Unix epoch, from the relay's clock module.
pub fn unix_ms() -> u64 {
    unix_ms_of(clock::wall_now())
}

fn unix_ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Installs the admin side on `relay` (before `relay.run`): REST handler, admin listener,
/// refresher task. Errors say what to fix (bad token, admin address in use).
pub fn install(
    relay: &mut Relay,
    opts: AdminOptions,
    ex: &Rc<LocalExecutor<'static>>,
) -> Result<AdminHandle, String> {
    let access = match &opts.token {
        Some(t) => AdminAccess::with_token(t, opts.token_everywhere).map_err(|e| e.to_string())?,
        None if opts.token_everywhere => {
            return Err(
                "an admin token is required on the admin listener, but none is configured".into(),
            );
        }
        None => AdminAccess::loopback_only(),
    };
    let metrics = Arc::new(RelayMetrics::default());
    let mesh = Arc::new(Mutex::new(MeshState::new(&opts.identity.name)));
    let local = Arc::new(Mutex::new(Local {
        identity: opts.identity,
        links: Vec::new(),
        routes: Vec::new(),
        status: None,
    }));
    let status: Arc<StatusFn> = match opts.status {
        Some(f) => f,
        None => {
            let local = local.clone();
            Arc::new(move |_now| {
                local
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .status
                    .clone()
            })
        }
    };
    let routes = Arc::new(AdminRoutes {
        access,
        metrics: metrics.clone(),
        mesh: mesh.clone(),
        status: Some(status),
    });
    relay.add_rest_handler(Rc::new(PublicAdmin(routes.clone())));
    let admin_addr = match opts.listen {
        Some(addr) => {
            let server = AdminServer::bind(addr, routes, unix_ms).map_err(|e| {
                format!(
                    "cannot listen for admin on {addr}: {e} (set another --admin-listen or `off`)"
                )
            })?;
            let bound = server.local_addr().map_err(|e| e.to_string())?;
            if !bound.ip().is_loopback() && !opts.token_everywhere {
                log::warn!(
                    "admin listener on non-loopback {bound} without a token: anyone who can reach it sees the mesh topology"
                );
            }
            let spawner = ex.clone();
            ex.spawn(async move {
                if let Err(e) = server.run(move |t| spawner.spawn(t).detach()).await {
                    log::error!("admin listener stopped: {e}");
                }
            })
            .detach();
            Some(bound)
        }
        None => None,
    };
    let handle = AdminHandle {
        admin_addr,
        metrics,
        mesh,
        local,
    };
    let refresher = handle.clone();
    let broker = relay.broker();
    ex.spawn(async move {
        loop {
            refresh(&refresher, &broker, unix_ms());
            Timer::after(REFRESH).await;
        }
    })
    .detach();
    Ok(handle)
}

/// Mirrors the broker's statistics into the metrics and refreshes the local summary.
fn refresh(h: &AdminHandle, broker: &Rc<RefCell<Broker>>, now_ms: u64) {
    {
        let b = broker.borrow();
        let s = b.stats();
        let m = &h.metrics;
        m.connections
            .set(i64::try_from(b.connection_count()).unwrap_or(i64::MAX));
        m.subscriptions
            .set(i64::try_from(b.subscription_count()).unwrap_or(i64::MAX));
        m.connections_accepted.mirror(s.connections_opened);
        m.messages_received.mirror(Source::Client, s.published);
        m.messages_delivered.mirror(s.delivered);
        m.drops
            .mirror(DropReason::SubscriberQueueFull, s.dropped_queue_full);
        m.drops.mirror(
            DropReason::RateLimited,
            s.dropped_egress_rate.saturating_add(s.refused_ingress_rate),
        );
        m.slow_consumer_disconnects.mirror(s.slow_consumers_closed);
    }
    let summary = {
        let l = h.local.lock().unwrap_or_else(|p| p.into_inner());
        let id = &l.identity;
        RelaySummary {
            name: id.name.clone(),
            region: id.region.clone(),
            lat: id.position.map(|p| p.0),
            lon: id.position.map(|p| p.1),
            url: id.url.clone(),
            counters: RelayCounters::from_metrics(&h.metrics),
            links: l.links.clone(),
            routes: l.routes.clone(),
        }
    };
    let mut mesh = h.mesh.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = mesh.update(summary, now_ms) {
        log::warn!("local relay summary refused: {e}");
    }
}

/// The admin routes on the public listener: only with the admin credential.
struct PublicAdmin(Arc<AdminRoutes>);

impl RestHandler for PublicAdmin {
    fn handle(&self, req: &HttpRequest, now: SystemTime) -> Option<HttpResponse> {
        let target = match &req.query {
            Some(q) => format!("{}?{q}", req.path),
            None => req.path.clone(),
        };
        let r = self.0.handle(
            Listener::Public,
            &req.method,
            &target,
            req.header("authorization"),
            unix_ms_of(now),
        )?;
        Some(HttpResponse {
            status: r.status,
            content_type: r.content_type,
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (*k, (*v).to_string()))
                .collect(),
            body: r.body.into_owned(),
        })
    }
}

/// Builds [`AdminOptions`] from the `run` command line: `admin_listen` is an address or `off`;
/// `token_file` holds the admin token (first line). The identity defaults to the edge address
/// until the mesh configuration provides name, region and position.
pub fn options_from_cli(
    admin_listen: &str,
    token_file: Option<&std::path::Path>,
    edge_addr: SocketAddr,
    tls: bool,
) -> Result<AdminOptions, String> {
    let listen = match admin_listen.trim() {
        "off" => None,
        a => Some(a.parse::<SocketAddr>().map_err(|e| {
            format!("--admin-listen {a:?}: {e}; give an address like 127.0.0.1:9091, or `off`")
        })?),
    };
    let token = match token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read admin token file {}: {e}", path.display()))?;
            Some(text.lines().next().unwrap_or_default().trim().to_string())
        }
        None => None,
    };
    if listen.is_none() && token.is_none() {
        log::info!("admin pages off: no admin listener and no admin token");
    }
    let scheme = if tls { "wss" } else { "ws" };
    Ok(AdminOptions {
        listen,
        token,
        token_everywhere: false,
        identity: LocalIdentity {
            name: format!("relay-{}", edge_addr.port()),
            region: "local".into(),
            position: None,
            url: format!("{scheme}://{edge_addr}/ws"),
        },
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like the mesh node's `status_json` (quic branch, docs/api.md).
    const STATUS: &str = r#"{
      "identity": {"name": "tokyo", "relay_id": 7, "region": "asia",
                   "position": {"lat": 35.68, "lon": 139.69},
                   "edge_url": "wss://tokyo.example/ws", "mesh_addr": "127.0.0.1:4433",
                   "protocol_version": 1, "uptime_s": 12},
      "links": [
        {"peer": "nsk", "remote": "127.0.0.1:5000", "side": "out", "up": true, "rtt_ms": 95.2,
         "min_rtt_ms": 94.8, "jitter_ms": 0.4, "loss_pct": 2.5, "probes_sent": 40,
         "probes_answered": 39, "quic_rtt_ms": 95.0, "queued_messages": 0, "age_s": 10},
        {"peer": "fra", "remote": "127.0.0.1:5001", "side": "in", "up": false, "rtt_ms": null,
         "min_rtt_ms": 221.0, "jitter_ms": 1.0, "loss_pct": 100.0, "probes_sent": 40,
         "probes_answered": 0, "quic_rtt_ms": null, "queued_messages": 0, "age_s": 10},
        {"peer": null, "remote": "127.0.0.1:5002", "side": "in", "up": false, "rtt_ms": null,
         "min_rtt_ms": 0.0, "jitter_ms": 0.0, "loss_pct": 0.0, "probes_sent": 0,
         "probes_answered": 0, "quic_rtt_ms": null, "queued_messages": 0, "age_s": 0}
      ],
      "routes": [
        {"dest": "fra", "next_hop": "nsk", "metric_ms": 90.1, "smoothed_metric_ms": 90.0,
         "direct_metric_ms": 110.9, "saving_ms": 20.8, "seqno": 3},
        {"dest": "lon", "next_hop": null, "metric_ms": null, "smoothed_metric_ms": null,
         "direct_metric_ms": null, "saving_ms": 0.0, "seqno": null}
      ],
      "peers": [], "interest": {}, "counters": {}, "route_events": []
    }"#;

    #[test]
    fn status_document_becomes_the_local_summary() {
        let (id, links, routes) = summary_parts_from_status(STATUS).expect("parses");
        let id = id.expect("identity");
        assert_eq!((id.name.as_str(), id.region.as_str()), ("tokyo", "asia"));
        assert_eq!(id.position, Some((35.68, 139.69)));
        assert_eq!(id.url, "wss://tokyo.example/ws");
        assert_eq!(links.len(), 2, "the link without a known peer is skipped");
        assert_eq!(
            links[0],
            LinkSummary {
                peer: "nsk".into(),
                up: true,
                rtt_ms: 95.2,
                rtt_min_ms: 94.8,
                jitter_ms: 0.4,
                loss: 0.025,
            }
        );
        assert!(!links[1].up);
        assert_eq!(
            links[1].rtt_ms, 221.0,
            "no smoothed RTT: falls back to the minimum"
        );
        assert_eq!(links[1].loss, 1.0);
        assert_eq!(
            routes,
            vec![RouteSummary {
                dst: "fra".into(),
                next_hop: "nsk".into(),
                metric_ms: 90.1
            }],
            "unreachable destinations are not routes"
        );
        let summary = RelaySummary {
            name: id.name,
            region: id.region,
            lat: Some(35.68),
            lon: Some(139.69),
            url: id.url,
            counters: RelayCounters::default(),
            links,
            routes,
        };
        assert_eq!(summary.validate(), Ok(()));
        assert!(summary_parts_from_status("not json").is_none());
    }
}
