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
use std::time::{Duration, SystemTime};

use async_io::Timer;
use smol::LocalExecutor;

use super::access::{AdminAccess, DEFAULT_ADMIN_LISTEN, Listener};
use super::routes::{AdminRoutes, StatusFn};
use super::server::AdminServer;
use super::view::{LinkSummary, MeshState, RelayCounters, RelaySummary, RouteSummary};
use crate::broker::Broker;
use crate::clock;
use crate::mesh::node::MeshCommand;
use crate::metrics::{
    Direction, DropReason, LinkSample, QuicRefusal, RefusalReason, RelayMetrics, Source,
    TicketCache,
};
use crate::rest::{HttpRequest, HttpResponse, RestHandler};
use crate::tickets::TicketService;
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
    /// The address is the default one, not asked for: if it is taken (another relay on this
    /// host), run without an admin listener and say so, instead of failing.
    pub listen_is_default: bool,
    /// Admin token: also serve the admin paths on the public listener to holders of it.
    pub token: Option<String>,
    /// Require the token on the admin listener too (for a non-loopback admin address).
    pub token_everywhere: bool,
    /// This relay.
    pub identity: LocalIdentity,
    /// The `/v1/status` builder, from the mesh layer (default: the document last given to
    /// [`AdminHandle::set_status`]).
    pub status: Option<Arc<StatusFn>>,
    /// The ticket service, whose verification and refusal counters go to `/metrics`.
    pub tickets: Option<Arc<TicketService>>,
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
    refusals: RefusalParts,
}

/// Handshake refusals counted in two places (edge and mesh) for one label each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RefusalParts {
    edge_malformed: u64,
    edge_full: u64,
    mesh_malformed: u64,
    mesh_full: u64,
}

impl RefusalParts {
    fn mirror(&self, m: &RelayMetrics) {
        m.handshake_refusals.mirror(
            RefusalReason::Malformed,
            self.edge_malformed.saturating_add(self.mesh_malformed),
        );
        m.handshake_refusals.mirror(
            RefusalReason::OverCapacity,
            self.edge_full.saturating_add(self.mesh_full),
        );
    }
}

impl AdminHandle {
    /// Sets the local relay's links and route table for its next summary (mesh layer).
    pub fn set_local_mesh(&self, links: Vec<LinkSummary>, routes: Vec<RouteSummary>) {
        let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        l.links = links;
        l.routes = routes;
    }

    /// The local relay's identity as shown (from the mesh status once it runs).
    pub fn local_identity(&self) -> LocalIdentity {
        let l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        l.identity.clone()
    }

    /// Takes the mesh node's latest `/v1/status` document (see docs/api.md): serves it on
    /// `/v1/status`, takes the local relay's identity, links and routes from it for the next
    /// summary, and mirrors its link measurements and mesh counters into the metrics. Call it
    /// about once a second ([`follow_mesh_status`] does). A document that does not parse is
    /// still served, and the previous links and routes are kept.
    pub fn set_status(&self, json: String) {
        let parsed = summary_parts_from_status(&json);
        if let Some((_, links, _)) = &parsed {
            let samples: Vec<LinkSample> = links
                .iter()
                .map(|l| LinkSample {
                    peer: l.peer.clone(),
                    up: l.up,
                    // µs resolution, so the exposition shows 0.000729, not 0.0007289999…
                    rtt_seconds: (l.rtt_ms * 1000.0).round() / 1e6,
                    rtt_min_seconds: (l.rtt_min_ms * 1000.0).round() / 1e6,
                    jitter_seconds: (l.jitter_ms * 1000.0).round() / 1e6,
                    loss_ratio: l.loss,
                })
                .collect();
            self.metrics.set_links(&samples);
        }
        let mesh_refusals = mirror_mesh_counters(&self.metrics, &json);
        let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((malformed, full)) = mesh_refusals {
            l.refusals.mesh_malformed = malformed;
            l.refusals.mesh_full = full;
            l.refusals.mirror(&self.metrics);
        }
        if let Some((identity, links, routes)) = parsed {
            if let Some(mut id) = identity {
                if id.url.is_empty() {
                    // No --edge-url: keep the edge's own address.
                    id.url = std::mem::take(&mut l.identity.url);
                }
                if id.name != l.identity.name {
                    let mut mesh = self.mesh.lock().unwrap_or_else(|p| p.into_inner());
                    mesh.set_self_name(&id.name);
                }
                l.identity = id;
            }
            l.links = links;
            l.routes = routes;
        }
        l.status = Some(json);
    }
}

/// Mirrors the mesh node's counters (in its `/v1/status` document) into the metrics; returns
/// the mesh's handshake refusals `(malformed, over capacity)`, which the caller adds to the
/// edge's.
fn mirror_mesh_counters(m: &RelayMetrics, json: &str) -> Option<(u64, u64)> {
    use serde_json::Value;
    let v = serde_json::from_str::<Value>(json).ok()?;
    let c = v.get("counters")?;
    let get =
        |path: &[&str]| -> Option<u64> { path.iter().try_fold(c, |x, k| x.get(*k))?.as_u64() };
    if let Some(n) = get(&["mesh", "data_received"]) {
        m.messages_received.mirror(Source::Mesh, n);
    }
    if let Some(n) = get(&["mesh", "data_sent"]) {
        m.messages_forwarded.mirror(n);
    }
    for (key, reason) in [
        ("dropped_hop_limit", DropReason::HopLimit),
        ("dropped_no_route", DropReason::NoRoute),
        ("dropped_queue_full", DropReason::LinkQueueFull),
        ("duplicates", DropReason::Duplicate),
    ] {
        if let Some(n) = get(&["mesh", key]) {
            m.drops.mirror(reason, n);
        }
    }
    if let Some(n) = get(&["route", "route_changes"]) {
        m.route_changes.mirror(n);
    }
    if let Some(n) = get(&["quic", "control_bytes_sent"]) {
        m.mesh_control_bytes.mirror(Direction::Sent, n);
    }
    if let Some(n) = get(&["quic", "control_bytes_received"]) {
        m.mesh_control_bytes.mirror(Direction::Received, n);
    }
    if let Some(by_kind) = c.get("control_by_kind") {
        for (k, name) in fastpubsub_core::mesh::KIND_NAMES.iter().enumerate() {
            let pair = by_kind.get(*name).and_then(Value::as_array);
            for (i, dir) in [Direction::Sent, Direction::Received]
                .into_iter()
                .enumerate()
            {
                if let Some(n) = pair.and_then(|p| p.get(i)).and_then(Value::as_u64) {
                    m.mesh_control_kind_bytes.mirror(k, dir, n);
                }
            }
        }
    }
    if let Some(n) = get(&["quic", "handshake_failures"]) {
        // Plus links whose certificate does not name the relay their Hello claims.
        let identity = get(&["mesh", "refused_identity"]).unwrap_or(0);
        m.handshake_refusals
            .mirror(RefusalReason::MeshCertificate, n.saturating_add(identity));
    }
    for (key, reason) in [
        ("refused_full", QuicRefusal::TableFull),
        ("refused_handshakes", QuicRefusal::HandshakeBudget),
        ("refused_source_handshakes", QuicRefusal::SourceHandshakes),
        ("refused_source_rate", QuicRefusal::SourceRate),
        ("refused_source_table", QuicRefusal::SourceTable),
        ("handshake_timeouts", QuicRefusal::Timeout),
        ("handshakes_displaced", QuicRefusal::Displaced),
    ] {
        if let Some(n) = get(&["quic", key]) {
            m.mesh_handshakes_refused.mirror(reason, n);
        }
    }
    if let Some(n) = get(&["quic", "retries"]) {
        m.mesh_retries.mirror(n);
    }
    if let Some(n) = get(&["quic", "handshakes_in_progress"]) {
        m.mesh_handshakes_in_progress
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    for (key, gauge) in [
        ("links_backed_up", &m.mesh_links_backed_up),
        ("links_slow", &m.mesh_links_slow),
    ] {
        if let Some(n) = get(&["quic", key]) {
            gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    for (key, counter) in [
        (
            "messages_dropped_slow_link",
            &m.mesh_messages_dropped_slow_link,
        ),
        ("backpressure_episodes", &m.mesh_backpressure_episodes),
        ("backpressure_ms", &m.mesh_backpressure_ms),
    ] {
        if let Some(n) = get(&["quic", key]) {
            counter.mirror(n);
        }
    }
    let full = get(&["quic", "refused_full"])
        .unwrap_or(0)
        .saturating_add(get(&["mesh", "refused_full"]).unwrap_or(0));
    Some((get(&["mesh", "refused_malformed"]).unwrap_or(0), full))
}

/// Asks the mesh node for its status document every [`REFRESH`] and hands it to
/// [`AdminHandle::set_status`]; returns when the mesh node's command channel closes. Spawn it
/// next to the node: `ex.spawn(follow_mesh_status(handle.clone(), commands.clone())).detach()`.
pub async fn follow_mesh_status(handle: AdminHandle, commands: smol::channel::Sender<MeshCommand>) {
    loop {
        let (tx, rx) = smol::channel::bounded(1);
        if commands.send(MeshCommand::Status(tx)).await.is_err() {
            return;
        }
        if let Ok(json) = rx.recv().await {
            handle.set_status(json);
        }
        Timer::after(REFRESH).await;
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
            url: text(i, "edge_url").unwrap_or_default(),
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
    clock::unix_ms(clock::wall_now())
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
        refusals: RefusalParts::default(),
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
    relay.set_admin_gate(Rc::new(access.clone()));
    let routes = Arc::new(AdminRoutes {
        access,
        metrics: metrics.clone(),
        mesh: mesh.clone(),
        status: Some(status),
    });
    relay.add_rest_handler(Rc::new(PublicAdmin(routes.clone())));
    let admin_addr = match opts.listen {
        Some(addr) => 'bound: {
            let server = match AdminServer::bind(addr, routes, unix_ms) {
                Ok(s) => s,
                Err(e) if opts.listen_is_default => {
                    log::warn!(
                        "admin listener: cannot listen on {addr} ({e}; another relay on this host?): \
                         running without /dashboard, /v1/mesh, /v1/status and /metrics; \
                         choose a free address with --admin-listen"
                    );
                    break 'bound None;
                }
                Err(e) => {
                    return Err(format!(
                        "cannot listen for admin on {addr}: {e} (set another --admin-listen, or `off`)"
                    ));
                }
            };
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
    let admission = relay.admission();
    let tickets = opts.tickets;
    ex.spawn(async move {
        loop {
            if let Some(t) = &tickets {
                let st = t.stats();
                let m = &refresher.metrics;
                m.ticket_verifications
                    .mirror(TicketCache::Hit, st.cache_hits);
                m.ticket_verifications
                    .mirror(TicketCache::Miss, st.verified_cold);
                m.handshake_refusals
                    .mirror(RefusalReason::Ticket, st.refused);
            }
            refresh(&refresher, &broker, &admission, unix_ms());
            Timer::after(REFRESH).await;
        }
    })
    .detach();
    Ok(handle)
}

/// Mirrors the broker's statistics into the metrics and refreshes the local summary.
fn refresh(
    h: &AdminHandle,
    broker: &Rc<RefCell<Broker>>,
    admission: &Rc<RefCell<crate::ws::admission::Admission>>,
    now_ms: u64,
) {
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
        // `dropped_relay_behind` is the part of `dropped_queue_full` not caused by a slow
        // subscriber (0 by design: the edge pauses intake instead).
        m.drops.mirror(
            DropReason::SubscriberQueueFull,
            s.dropped_queue_full.saturating_sub(s.dropped_relay_behind),
        );
        m.drops
            .mirror(DropReason::RelayBehind, s.dropped_relay_behind);
        m.drops.mirror(
            DropReason::RateLimited,
            s.dropped_egress_rate.saturating_add(s.refused_ingress_rate),
        );
        m.slow_consumer_disconnects.mirror(s.slow_consumers_closed);
        m.intake_pauses.mirror(s.intake_pauses);
        m.intake_paused_us.mirror(s.intake_paused_us);
        m.intake_pause_overruns.mirror(s.intake_pause_overruns);
        let edge_full = crate::ws::stats::mirror_into(m, &b, &admission.borrow());
        m.intake_pauses_mesh.mirror(s.intake_pauses_mesh);
        let mut l = h.local.lock().unwrap_or_else(|p| p.into_inner());
        l.refusals.edge_malformed = s.refused_malformed;
        l.refusals.edge_full = edge_full;
        l.refusals.mirror(m);
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
            clock::unix_ms(now),
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
        listen_is_default: admin_listen.trim() == DEFAULT_ADMIN_LISTEN.to_string(),
        token,
        token_everywhere: false,
        identity: LocalIdentity {
            name: format!("relay-{}", edge_addr.port()),
            region: "local".into(),
            position: None,
            url: format!("{scheme}://{edge_addr}/ws"),
        },
        status: None,
        tickets: None,
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
      "peers": [], "interest": {},
      "counters": {"mesh": {"data_sent": 11, "data_received": 7, "dropped_no_route": 2,
                            "duplicates": 1},
                   "quic": {"handshake_failures": 3}, "route": {"route_changes": 4}},
      "route_events": []
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

    #[test]
    fn a_mesh_status_becomes_the_local_relay() {
        use crate::auth::AllowAll;
        use crate::config::Config;
        let config = Config::new("127.0.0.1:0".parse().expect("addr"));
        let mut relay = Relay::bind(&config, Rc::new(AllowAll)).expect("bind edge");
        let ex = Rc::new(LocalExecutor::new());
        let mut opts =
            options_from_cli("127.0.0.1:0", None, relay.local_addr(), false).expect("options");
        opts.identity.name = "relay-before".into();
        let handle = install(&mut relay, opts, &ex).expect("install");
        handle.set_status(STATUS.to_string());
        let view = smol::block_on(ex.run(async {
            let deadline = clock::now() + Duration::from_secs(10);
            loop {
                Timer::after(Duration::from_millis(50)).await;
                let v = handle.mesh.lock().expect("lock").view(unix_ms());
                if v.relays.iter().any(|r| r.name == "tokyo") || clock::now() > deadline {
                    return v;
                }
            }
        }));
        assert_eq!(view.self_name, "tokyo");
        assert_eq!(
            view.relays.len(),
            1,
            "the old name is gone: {:?}",
            view.relays
        );
        let me = &view.relays[0];
        assert!(me.is_self && me.lat == Some(35.68));
        assert_eq!(
            me.intake_paused_ms_total,
            Some(0),
            "the local relay shows its intake pauses"
        );
        assert!(
            view.links.is_empty(),
            "its peers have not announced themselves yet"
        );
        let m = handle.metrics.render();
        assert!(
            m.contains("fastpubsub_link_rtt_seconds{peer=\"nsk\"} 0.0952"),
            "{m}"
        );
    }

    #[test]
    fn flow_counters_reach_the_metrics_and_the_local_row() {
        let m = RelayMetrics::default();
        m.intake_pauses.mirror(3);
        m.intake_paused_us.mirror(2_500_000);
        m.intake_pause_overruns.mirror(1);
        m.drops.mirror(DropReason::SubscriberQueueFull, 7);
        m.drops.mirror(DropReason::RelayBehind, 2);
        let text = m.render();
        for line in [
            "fastpubsub_intake_pauses_total 3",
            "fastpubsub_intake_paused_seconds_total 2.5",
            "fastpubsub_intake_pause_overruns_total 1",
            "fastpubsub_drops_total{reason=\"subscriber_queue_full\"} 7",
            "fastpubsub_drops_total{reason=\"relay_behind\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        let c = RelayCounters::from_metrics(&m);
        assert_eq!(c.intake_paused_ms, Some(2500));
        assert_eq!(c.drops, 9);
    }

    #[test]
    fn status_document_feeds_the_metrics() {
        let m = RelayMetrics::default();
        mirror_mesh_counters(&m, STATUS);
        assert_eq!(m.messages_forwarded.get(), 11);
        assert_eq!(m.messages_received.get(Source::Mesh), 7);
        assert_eq!(m.drops.get(DropReason::NoRoute), 2);
        assert_eq!(m.drops.get(DropReason::Duplicate), 1);
        assert_eq!(
            m.drops.get(DropReason::HopLimit),
            0,
            "absent counters stay as they were"
        );
        assert_eq!(m.route_changes.get(), 4);
        assert_eq!(m.handshake_refusals.get(RefusalReason::MeshCertificate), 3);
    }

    #[test]
    fn mesh_refusals_and_control_bytes_reach_the_metrics() {
        let doc = r#"{"counters": {
            "mesh": {"refused_malformed": 2, "refused_full": 1, "refused_identity": 5},
            "quic": {"handshake_failures": 3, "refused_full": 4,
                     "refused_source_rate": 6, "handshake_timeouts": 7, "retries": 8,
                     "handshakes_in_progress": 9, "links_backed_up": 2, "links_slow": 1,
                     "messages_dropped_slow_link": 11, "backpressure_episodes": 3,
                     "backpressure_ms": 1500,
                     "control_bytes_sent": 700, "control_bytes_received": 900},
            "control_by_kind": {"announce": [100, 200], "probe": [30, 40], "bogus": [1, 1]}
        }}"#;
        let m = RelayMetrics::default();
        assert_eq!(mirror_mesh_counters(&m, doc), Some((2, 5)));
        assert_eq!(m.handshake_refusals.get(RefusalReason::MeshCertificate), 8);
        assert_eq!(m.mesh_control_bytes.get(Direction::Sent), 700);
        assert_eq!(m.mesh_control_bytes.get(Direction::Received), 900);
        let announce = fastpubsub_core::mesh::KIND_NAMES
            .iter()
            .position(|k| *k == "announce")
            .expect("kind");
        assert_eq!(
            m.mesh_control_kind_bytes.get(announce, Direction::Sent),
            100
        );
        assert_eq!(
            m.mesh_control_kind_bytes.get(announce, Direction::Received),
            200
        );
        // Edge and mesh parts add up under one label each.
        let parts = RefusalParts {
            edge_malformed: 10,
            edge_full: 20,
            mesh_malformed: 2,
            mesh_full: 5,
        };
        parts.mirror(&m);
        assert_eq!(m.handshake_refusals.get(RefusalReason::Malformed), 12);
        assert_eq!(m.handshake_refusals.get(RefusalReason::OverCapacity), 25);
        let text = m.render();
        assert!(
            text.contains(
                "fastpubsub_mesh_control_kind_bytes_total{kind=\"announce\",direction=\"received\"} 200"
            ),
            "{text}"
        );
        assert_eq!(m.mesh_handshakes_refused.get(QuicRefusal::TableFull), 4);
        assert_eq!(m.mesh_handshakes_refused.get(QuicRefusal::SourceRate), 6);
        assert_eq!(m.mesh_handshakes_refused.get(QuicRefusal::Timeout), 7);
        assert_eq!(m.mesh_retries.get(), 8);
        assert!(
            text.contains("fastpubsub_mesh_handshakes_refused_total{reason=\"source_rate\"} 6"),
            "{text}"
        );
        assert!(
            text.contains("fastpubsub_mesh_handshakes_in_progress 9"),
            "{text}"
        );
        for line in [
            "fastpubsub_mesh_links_backed_up 2\n",
            "fastpubsub_mesh_links_slow 1\n",
            "fastpubsub_mesh_messages_dropped_slow_link_total 11\n",
            "fastpubsub_mesh_backpressure_episodes_total 3\n",
            "fastpubsub_mesh_backpressure_seconds_total 1.5\n",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
        assert!(mirror_mesh_counters(&m, "not json").is_none());
    }
}
