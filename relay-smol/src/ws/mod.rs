//! WebSocket/HTTP edge: the listener, the handshake, and one task per connection.
//!
//! One port serves REST (`rest`) and the WebSocket at `/ws`. The whole relay runs on one
//! `smol::LocalExecutor` thread: the broker is shared as `Rc<RefCell<_>>` without locks,
//! every connection is one task ([`conn`]), a sweeper task does the periodic checks.
//!
//! Use [`Relay::bind`] then [`Relay::run`] (see `cli::run` for the full wiring with signals).

pub mod admission;
pub mod conn;
pub mod http;
pub mod stats;
pub mod transport;

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::FutureExt;
use smol::LocalExecutor;

use crate::auth::{Authorizer, HandshakeRequest};
use crate::broker::{Broker, ConnId};
use crate::clock;
use crate::config::Config;
use crate::rest::{self, AdminGate, HttpRequest, HttpResponse, NoAdmin, RestHandler};
use crate::tls::{self, TlsStream};
use admission::{Admission, AdmissionLimits, Pending, PendingRefused};
use conn::Shared;
use http::ReadError;
use transport::Transport;

/// Size of the read buffer shared by all connections: one turn's reads.
const SCRATCH_LEN: usize = crate::limits::TURN_BYTES;

/// Connections accepted in a row before the accept loop yields to the other tasks.
const ACCEPT_BURST: u32 = 64;

/// The subprotocol of the client contract.
pub const SUBPROTOCOL: &str = "llps.v1";

/// A bound, not yet running edge.
pub struct Relay {
    listener: Async<TcpListener>,
    local_addr: SocketAddr,
    shared: Rc<Shared>,
    admission: Rc<RefCell<Admission>>,
    auth: Rc<dyn Authorizer>,
    tls: Option<Arc<rustls::ServerConfig>>,
    rest: Vec<Rc<dyn RestHandler>>,
    admin: Rc<dyn AdminGate>,
}

struct Ctx {
    shared: Rc<Shared>,
    admission: Rc<RefCell<Admission>>,
    auth: Rc<dyn Authorizer>,
    tls: Option<Arc<rustls::ServerConfig>>,
    rest: Vec<Rc<dyn RestHandler>>,
    admin: Rc<dyn AdminGate>,
}

impl Relay {
    /// Binds the listening socket and loads TLS files (if configured).
    pub fn bind(config: &Config, auth: Rc<dyn Authorizer>) -> io::Result<Relay> {
        let tls = match &config.tls {
            Some(files) => Some(tls::load_server_config(files).map_err(io::Error::other)?),
            None => None,
        };
        let listener = Async::<TcpListener>::bind(config.listen)?;
        let local_addr = listener.get_ref().local_addr()?;
        let broker = Broker::new(config.limits.clone(), clock::now());
        let shared = Rc::new(Shared {
            broker: Rc::new(RefCell::new(broker)),
            scratch: RefCell::new(vec![0u8; SCRATCH_LEN]),
            limits: config.limits.clone(),
        });
        let l = &config.limits;
        let admission = Admission::new(
            AdmissionLimits {
                max_pending: l.max_pending_handshakes,
                max_pending_per_source: l.max_pending_per_source,
                ticket_failures: l.ticket_failures,
                failure_sources: l.ticket_failure_sources,
            },
            fastrand::u64(..),
        );
        Ok(Relay {
            listener,
            local_addr,
            shared,
            admission: Rc::new(RefCell::new(admission)),
            auth,
            tls,
            rest: Vec::new(),
            admin: Rc::new(NoAdmin),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Is TLS on?
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The broker, for the mesh (install a `MeshHook`, call `deliver_from_mesh`).
    pub fn broker(&self) -> Rc<RefCell<Broker>> {
        self.shared.broker.clone()
    }

    /// The admission tables (connections in their handshake, failed tickets per source), for
    /// statistics.
    pub fn admission(&self) -> Rc<RefCell<Admission>> {
        self.admission.clone()
    }

    /// The handshake authorizer (the WebTransport edge checks its sessions with it too).
    pub fn authorizer(&self) -> Rc<dyn Authorizer> {
        self.auth.clone()
    }

    /// Sets who may see the edge's admin-only pages (`/stats`, …; `rest::ADMIN_ONLY_PATHS`)
    /// on this port; by default nobody ([`NoAdmin`]).
    pub fn set_admin_gate(&mut self, gate: Rc<dyn AdminGate>) {
        self.admin = gate;
    }

    /// Adds a REST handler (e.g. the token endpoints).
    pub fn add_rest_handler(&mut self, handler: Rc<dyn RestHandler>) {
        self.rest.push(handler);
    }

    /// Serves until `shutdown` completes, then drains: `RECONNECT` to every client, no new
    /// connections, the rest closed after `Limits::shutdown_grace`.
    pub async fn run(
        self,
        ex: Rc<LocalExecutor<'static>>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let Relay {
            listener,
            shared,
            admission,
            auth,
            tls,
            rest,
            admin,
            ..
        } = self;
        let limits = shared.limits.clone();
        let ctx = Rc::new(Ctx {
            shared: shared.clone(),
            admission,
            auth,
            tls,
            rest,
            admin,
        });
        let broker = shared.broker.clone();

        let sweep_every = (limits.slow_consumer_grace / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        let sweeper_broker = broker.clone();
        let sweeper = ex.spawn(async move {
            loop {
                Timer::after(sweep_every).await;
                sweeper_broker
                    .borrow_mut()
                    .sweep(clock::now(), clock::wall_now());
            }
        });
        let mesh_watcher = ex.spawn(follow_mesh_backlog(broker.clone()));

        let accept = async {
            let mut accepted = 0u32;
            loop {
                // A burst of connections must not keep the other tasks (handshakes in
                // progress among them) from running.
                accepted = accepted.wrapping_add(1);
                if accepted.is_multiple_of(ACCEPT_BURST) {
                    futures_lite::future::yield_now().await;
                }
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        match Pending::admit(&ctx.admission, peer.ip(), clock::now()) {
                            Ok(pending) => {
                                let _ = stream.get_ref().set_nodelay(true);
                                ex.spawn(serve(stream, peer, ctx.clone(), pending)).detach();
                            }
                            Err(why) => refuse_at_once(stream, &why, ctx.tls.is_some()),
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors and similar: back off, keep serving.
                        log::warn!("accept failed: {e}");
                        Timer::after(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        accept.or(shutdown).await;
        drop(listener);

        let open = broker.borrow().connection_count();
        log::info!("shutting down: sending RECONNECT to {open} connections");
        broker.borrow_mut().begin_shutdown();
        wait_until_empty(&broker, limits.shutdown_grace).await;
        let left = broker.borrow().connection_count();
        if left > 0 {
            log::info!("grace over: closing {left} connections");
            broker.borrow_mut().close_all();
            wait_until_empty(&broker, limits.close_timeout).await;
            broker.borrow_mut().kill_all();
            wait_until_empty(&broker, Duration::from_millis(200)).await;
        }
        drop(sweeper);
        drop(mesh_watcher);
        Ok(())
    }
}

/// How often the mesh's backlog is re-checked while it holds the intake pause.
const MESH_BACKLOG_POLL: Duration = Duration::from_millis(1);

/// While the mesh holds the intake pause (`Broker::check_mesh_backlog`), nobody reads and so
/// nobody asks whether it has caught up: this task does, every [`MESH_BACKLOG_POLL`], and
/// sleeps otherwise (woken by the broker when a mesh-held pause starts; no timer runs on an
/// idle relay or one without a mesh).
async fn follow_mesh_backlog(broker: Rc<RefCell<Broker>>) {
    loop {
        std::future::poll_fn(|cx| {
            if broker.borrow_mut().mesh_watch(cx.waker()) {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await;
        Timer::after(MESH_BACKLOG_POLL).await;
        let mut b = broker.borrow_mut();
        b.set_now(clock::now());
        b.check_mesh_backlog();
    }
}

async fn wait_until_empty(broker: &Rc<RefCell<Broker>>, within: Duration) {
    let deadline = clock::now() + within;
    while broker.borrow().connection_count() > 0 && clock::now() < deadline {
        Timer::after(Duration::from_millis(20)).await;
    }
}

/// Refuses a socket over the handshake caps without spending a task on it: one
/// non-blocking write of a `503` (plain HTTP only; on a TLS port it is just closed), then
/// close.
fn refuse_at_once(stream: Async<TcpStream>, why: &PendingRefused, tls: bool) {
    log::debug!("handshake refused at accept: {}", why.why());
    if !tls {
        let resp = HttpResponse::text(503, why.why());
        let mut s = stream.get_ref();
        let _ = std::io::Write::write(&mut s, &http::encode_response(&resp, false));
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
}

/// One accepted connection: its handshake (bounded in time, holding its `pending` place in
/// the handshake count), then its WebSocket or its one REST answer.
async fn serve(stream: Async<TcpStream>, peer: SocketAddr, ctx: Rc<Ctx>, pending: Pending) {
    let io = match &ctx.tls {
        Some(cfg) => match TlsStream::new(stream, cfg.clone()) {
            Ok(t) => Transport::Tls(Box::new(t)),
            Err(_) => return,
        },
        None => Transport::Plain(stream),
    };
    let timeout = async {
        Timer::after(ctx.shared.limits.handshake_timeout).await;
        None
    };
    let evicted = async {
        pending.evicted().await;
        None
    };
    // Boxed: the handshake's buffers must not stay in the connection's long-lived future.
    let handshake = Box::pin(handshake(io, peer, ctx.clone()));
    let Some((io, id, rest)) = handshake.or(timeout).or(evicted).await else {
        return;
    };
    drop(pending);
    conn::run(io, id, ctx.shared.clone(), rest).await;
}

/// Reads the request and answers it; `Some` with the registered connection when it was a
/// WebSocket upgrade that succeeded.
async fn handshake(
    mut io: Transport,
    peer: SocketAddr,
    ctx: Rc<Ctx>,
) -> Option<(Transport, ConnId, Vec<u8>)> {
    let (req, rest) = match http::read_request(&mut io, peer, &ctx.shared.limits).await {
        Ok(r) => r,
        Err(ReadError::Closed) => return None,
        Err(ReadError::Respond(resp)) => {
            ctx.shared.broker.borrow_mut().note_malformed_request();
            respond(&mut io, &resp).await;
            return None;
        }
    };
    if req.path == "/ws" && is_upgrade(&req) {
        let (io, id) = upgrade(io, req, ctx.clone()).await?;
        Some((io, id, rest))
    } else {
        let resp = if rest::ADMIN_ONLY_PATHS.contains(&req.path.as_str()) {
            ctx.admin.admit(&req).err()
        } else {
            None
        };
        let resp = resp.unwrap_or_else(|| {
            let doc = || stats::stats_json(&ctx.shared.broker.borrow(), &ctx.admission.borrow());
            rest::route(&req, &ctx.rest, &doc, clock::wall_now())
        });
        respond_to(&mut io, &resp, req.method == "HEAD").await;
        None
    }
}

async fn respond(io: &mut Transport, resp: &HttpResponse) {
    respond_to(io, resp, false).await;
}

/// Writes `resp` (without its body when `head`) and half-closes.
async fn respond_to(io: &mut Transport, resp: &HttpResponse, head: bool) {
    let _ = io.write_all(&http::encode_response(resp, head)).await;
    io.shutdown_write();
}

fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn is_upgrade(req: &HttpRequest) -> bool {
    req.headers_named("upgrade")
        .any(|v| has_token(v, "websocket"))
}

/// What the handshake found in the request.
struct Offer<'a> {
    key: &'a str,
    token: Option<&'a str>,
    wants_llps: bool,
}

fn check_upgrade(req: &HttpRequest) -> Result<Offer<'_>, HttpResponse> {
    let bad = |why: &str| HttpResponse::text(400, why.to_string());
    if req.method != "GET" {
        return Err(bad("the WebSocket handshake must be a GET"));
    }
    if !req
        .headers_named("connection")
        .any(|v| has_token(v, "upgrade"))
    {
        return Err(bad("WebSocket handshake needs `Connection: Upgrade`"));
    }
    if req.header("sec-websocket-version") != Some("13") {
        let mut r = bad("unsupported WebSocket version (this relay speaks version 13)");
        r.headers.push(("Sec-WebSocket-Version", "13".to_string()));
        return Err(r);
    }
    let key = req
        .header("sec-websocket-key")
        .ok_or_else(|| bad("missing Sec-WebSocket-Key"))?;
    let mut token = None;
    let mut offered = false;
    let mut wants_llps = false;
    for value in req.headers_named("sec-websocket-protocol") {
        for p in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            offered = true;
            if p == SUBPROTOCOL {
                wants_llps = true;
            } else if let Some(t) = p.strip_prefix("at.") {
                token = Some(t);
            }
        }
    }
    if offered && !wants_llps {
        return Err(bad(
            "this relay speaks the WebSocket subprotocol llps.v1; offer it in Sec-WebSocket-Protocol",
        ));
    }
    let token = token.or_else(|| req.bearer_token());
    Ok(Offer {
        key,
        token,
        wants_llps,
    })
}

/// Answers the upgrade request; on success returns the stream and the registered connection.
async fn upgrade(mut io: Transport, req: HttpRequest, ctx: Rc<Ctx>) -> Option<(Transport, ConnId)> {
    let offer = match check_upgrade(&req) {
        Ok(o) => o,
        Err(resp) => {
            ctx.shared.broker.borrow_mut().note_malformed_request();
            respond(&mut io, &resp).await;
            return None;
        }
    };
    let ip = req.peer.ip();
    let over_budget = ctx.admission.borrow_mut().check_failures(ip, clock::now());
    if let Err(retry) = over_budget {
        let t = ctx.shared.limits.ticket_failures;
        let mut resp = HttpResponse::text(
            429,
            format!(
                "too many failed ticket checks from your address (more than {} at once, then {} per second); retry in {} s with a valid ticket",
                t.burst,
                t.per_sec,
                retry.as_secs().max(1)
            ),
        );
        resp.headers
            .push(("Retry-After", retry.as_secs().max(1).to_string()));
        respond(&mut io, &resp).await;
        return None;
    }
    let hs = HandshakeRequest {
        token: offer.token,
        peer: ip,
        origin: req.header("origin"),
        now: clock::wall_now(),
        protocol: crate::auth::Protocol::WebSocket,
    };
    let access = match ctx.auth.authorize(&hs) {
        Ok(a) => a,
        Err(refusal) => {
            if refusal.status == 401 {
                ctx.admission.borrow_mut().note_failure(ip, clock::now());
            }
            log::debug!(
                "handshake from {} refused: {} {}",
                req.peer,
                refusal.status,
                refusal.reason
            );
            respond(&mut io, &HttpResponse::text(refusal.status, refusal.reason)).await;
            return None;
        }
    };
    let registered = ctx.shared.broker.borrow_mut().register(access);
    let Some(id) = registered else {
        let why = {
            let broker = ctx.shared.broker.borrow();
            if broker.is_shutting_down() {
                "relay is shutting down; connect to another relay or retry shortly".to_string()
            } else {
                format!(
                    "relay is at its connection limit ({}); retry later or use another relay",
                    broker.limits().max_connections
                )
            }
        };
        respond(&mut io, &HttpResponse::text(503, why)).await;
        return None;
    };
    let accept = tungstenite::handshake::derive_accept_key(offer.key.as_bytes());
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if offer.wants_llps {
        head.push_str("Sec-WebSocket-Protocol: llps.v1\r\n");
    }
    head.push_str("\r\n");
    drop(req);
    // Registered from here: if the write fails or the handshake times out (this future is
    // dropped), the guard unregisters the connection.
    let guard = Registration {
        broker: ctx.shared.broker.clone(),
        id: Some(id),
    };
    io.write_all(head.as_bytes()).await.ok()?;
    guard.keep().map(|id| (io, id))
}

/// A registered connection whose handshake is not finished: unregistered when dropped.
struct Registration {
    broker: Rc<RefCell<Broker>>,
    id: Option<ConnId>,
}

impl Registration {
    /// The handshake is done: the connection task takes over the registration.
    fn keep(mut self) -> Option<ConnId> {
        self.id.take()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.broker.borrow_mut().unregister(id);
        }
    }
}
