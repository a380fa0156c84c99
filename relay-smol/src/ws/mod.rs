//! WebSocket/HTTP edge: the listener, the handshake, and one task per connection.
//!
//! One port serves REST (`rest`) and the WebSocket at `/ws`. The whole relay runs on one
//! `smol::LocalExecutor` thread: the broker is shared as `Rc<RefCell<_>>` without locks,
//! every connection is one task ([`conn`]), a sweeper task does the periodic checks.
//!
//! Use [`Relay::bind`] then [`Relay::run`] (see `cli::run` for the full wiring with signals).

pub mod conn;
pub mod http;
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
use crate::rest::{self, HttpRequest, HttpResponse, RestHandler};
use crate::tls::{self, TlsStream};
use conn::Shared;
use http::ReadError;
use transport::Transport;

/// Size of the read buffer shared by all connections: one turn's reads.
const SCRATCH_LEN: usize = crate::limits::TURN_BYTES;

/// The subprotocol of the client contract.
pub const SUBPROTOCOL: &str = "llps.v1";

/// A bound, not yet running edge.
pub struct Relay {
    listener: Async<TcpListener>,
    local_addr: SocketAddr,
    shared: Rc<Shared>,
    auth: Rc<dyn Authorizer>,
    tls: Option<Arc<rustls::ServerConfig>>,
    rest: Vec<Rc<dyn RestHandler>>,
}

struct Ctx {
    shared: Rc<Shared>,
    auth: Rc<dyn Authorizer>,
    tls: Option<Arc<rustls::ServerConfig>>,
    rest: Vec<Rc<dyn RestHandler>>,
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
        Ok(Relay {
            listener,
            local_addr,
            shared,
            auth,
            tls,
            rest: Vec::new(),
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

    /// The handshake authorizer (the WebTransport edge checks its sessions with it too).
    pub fn authorizer(&self) -> Rc<dyn Authorizer> {
        self.auth.clone()
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
            auth,
            tls,
            rest,
            ..
        } = self;
        let limits = shared.limits.clone();
        let ctx = Rc::new(Ctx {
            shared: shared.clone(),
            auth,
            tls,
            rest,
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

        let accept = async {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let _ = stream.get_ref().set_nodelay(true);
                        ex.spawn(serve(stream, peer, ctx.clone())).detach();
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
        Ok(())
    }
}

async fn wait_until_empty(broker: &Rc<RefCell<Broker>>, within: Duration) {
    let deadline = clock::now() + within;
    while broker.borrow().connection_count() > 0 && clock::now() < deadline {
        Timer::after(Duration::from_millis(20)).await;
    }
}

async fn serve(stream: Async<TcpStream>, peer: SocketAddr, ctx: Rc<Ctx>) {
    let mut io = match &ctx.tls {
        Some(cfg) => match TlsStream::new(stream, cfg.clone()) {
            Ok(t) => Transport::Tls(Box::new(t)),
            Err(_) => return,
        },
        None => Transport::Plain(stream),
    };
    let limits = &ctx.shared.limits;
    let timeout = async {
        Timer::after(limits.handshake_timeout).await;
        Err(ReadError::Closed)
    };
    // Boxed: the handshake's buffers must not stay in the connection's long-lived future.
    let read = Box::pin(http::read_request(&mut io, peer, limits));
    let (req, rest) = match read.or(timeout).await {
        Ok(r) => r,
        Err(ReadError::Closed) => return,
        Err(ReadError::Respond(resp)) => {
            ctx.shared.broker.borrow_mut().note_malformed_request();
            Box::pin(respond(&mut io, &resp)).await;
            return;
        }
    };
    if req.path == "/ws" && is_upgrade(&req) {
        let Some((io, id)) = Box::pin(upgrade(io, req, ctx.clone())).await else {
            return;
        };
        conn::run(io, id, ctx.shared.clone(), rest).await;
    } else {
        let resp = {
            let broker = ctx.shared.broker.borrow();
            rest::route(&req, &ctx.rest, &broker, clock::wall_now())
        };
        Box::pin(respond(&mut io, &resp)).await;
    }
}

async fn respond(io: &mut Transport, resp: &HttpResponse) {
    let _ = io.write_all(&http::encode_response(resp)).await;
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
    let hs = HandshakeRequest {
        token: offer.token,
        peer: req.peer.ip(),
        origin: req.header("origin"),
        now: clock::wall_now(),
        protocol: crate::auth::Protocol::WebSocket,
    };
    let access = match ctx.auth.authorize(&hs) {
        Ok(a) => a,
        Err(refusal) => {
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
    if io.write_all(head.as_bytes()).await.is_err() {
        ctx.shared.broker.borrow_mut().unregister(id);
        return None;
    }
    Some((io, id))
}
