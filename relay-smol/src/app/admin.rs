//! The admin side (dashboard, `/v1/mesh`, `/v1/status`, `/metrics`) wired into a running
//! edge: [`install`] adds the admin routes to the edge's REST handlers (public listener,
//! credential required), binds the admin listener, and starts a task that mirrors the
//! broker's statistics into [`RelayMetrics`] and refreshes the local relay's summary in the
//! mesh picture every [`REFRESH`].
//!
//! The mesh plugs in through the returned [`AdminHandle`]: its announcements feed received
//! relay summaries into `mesh` (`super::hooks::MeshFeed`), and its typed status goes to
//! [`AdminHandle::set_status`], which serves it on `/v1/status`, mirrors it into the metrics
//! and takes this relay's links and routes from it.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_io::Timer;
use smol::LocalExecutor;

use super::status::{LocalIdentity, RelayStatus, summary_parts};
use crate::broker::Broker;
use crate::clock;
use crate::dashboard::access::{AdminAccess, DEFAULT_ADMIN_LISTEN, Listener};
use crate::dashboard::routes::{AdminRoutes, StatusFn};
use crate::dashboard::server::AdminServer;
use crate::dashboard::view::{LinkSummary, MeshState, RelayCounters, RelaySummary, RouteSummary};
use crate::metrics::{DropReason, RefusalReason, RelayMetrics, Source, TicketCache};
use crate::rest::{HttpRequest, HttpResponse, RestHandler};
use crate::tickets::TicketService;
use crate::ws::Relay;

/// How often the local relay's counters and summary are refreshed.
pub const REFRESH: Duration = Duration::from_secs(1);

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
    /// The `/v1/status` builder (default: the status last given to
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
    status: Option<Arc<RelayStatus>>,
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

    /// Takes the mesh's latest status (the mesh thread hands it over every 100 ms): serves
    /// it on `/v1/status`, takes the local relay's identity, links and routes from it for the
    /// next summary, and mirrors its link measurements and mesh counters into the metrics.
    pub fn set_status(&self, status: Arc<RelayStatus>) {
        let (malformed, full) = status.mirror_metrics(&self.metrics);
        let (mut id, links, routes) = summary_parts(&status.mesh);
        let mut l = self.local.lock().unwrap_or_else(|p| p.into_inner());
        l.refusals.mesh_malformed = malformed;
        l.refusals.mesh_full = full;
        l.refusals.mirror(&self.metrics);
        if id.url.is_empty() {
            // No --edge-url: keep the edge's own address.
            id.url = std::mem::take(&mut l.identity.url);
        }
        if id.name != l.identity.name {
            let mut mesh = self.mesh.lock().unwrap_or_else(|p| p.into_inner());
            mesh.set_self_name(&id.name);
        }
        l.identity = id;
        l.links = links;
        l.routes = routes;
        l.status = Some(status);
    }
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
                let status = local
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .status
                    .clone();
                status.map(|s| s.to_json())
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
        handle.set_status(Arc::new(super::super::status::tests::sample()));
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
    fn edge_and_mesh_refusals_add_up_under_one_label() {
        let m = RelayMetrics::default();
        let parts = RefusalParts {
            edge_malformed: 10,
            edge_full: 20,
            mesh_malformed: 2,
            mesh_full: 5,
        };
        parts.mirror(&m);
        assert_eq!(m.handshake_refusals.get(RefusalReason::Malformed), 12);
        assert_eq!(m.handshake_refusals.get(RefusalReason::OverCapacity), 25);
    }
}
