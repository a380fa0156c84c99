//! `fastpubsub-relay run`: start the edge, serve until SIGTERM/SIGINT, drain, exit 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use argh::FromArgs;
use async_signal::{Signal, Signals};
use futures_lite::StreamExt;
use smol::LocalExecutor;

use crate::auth::{AllowAll, Authorizer};
use crate::config::{Config, TlsFiles};
use crate::limits::Limits;
use crate::ws::Relay;

/// Run the relay.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// configuration file (TOML, see docs/embedded.md); flags given here override it
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// address of the HTTP/WebSocket port (default 127.0.0.1:8080)
    #[argh(option)]
    pub listen: Option<SocketAddr>,
    /// TLS certificate chain (PEM) for wss:// and https://
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[argh(option)]
    pub tls_key: Option<PathBuf>,
    /// accept every client without a token (labs and tests only; logs a warning)
    #[argh(switch)]
    pub insecure_no_auth: bool,
    /// open WebSocket connections before handshakes get 503 (default 16384)
    #[argh(option)]
    pub max_connections: Option<usize>,
    /// subscriptions per connection (default 256)
    #[argh(option)]
    pub max_subs_per_conn: Option<usize>,
    /// subscriptions on the whole relay (default 1000000)
    #[argh(option)]
    pub max_total_subs: Option<usize>,
    /// largest client WebSocket message in bytes (default 66050: a full-size publish)
    #[argh(option)]
    pub max_frame_bytes: Option<usize>,
    /// outbound queue per connection in bytes (default 262144)
    #[argh(option)]
    pub queue_bytes: Option<usize>,
    /// milliseconds a connection may stay over its queue before ERR:slow_consumer (default 5000)
    #[argh(option)]
    pub slow_consumer_grace_ms: Option<u64>,
    /// milliseconds between RECONNECT and closing the rest on shutdown (default 10000)
    #[argh(option)]
    pub shutdown_grace_ms: Option<u64>,
    /// milliseconds a closing connection gets to flush (default 2000)
    #[argh(option)]
    pub close_timeout_ms: Option<u64>,
}

impl RunArgs {
    fn limits(&self) -> Limits {
        let mut l = Limits::default();
        if let Some(v) = self.max_connections {
            l.max_connections = v;
        }
        if let Some(v) = self.max_subs_per_conn {
            l.max_subs_per_conn = v;
        }
        if let Some(v) = self.max_total_subs {
            l.max_total_subs = v;
        }
        if let Some(v) = self.max_frame_bytes {
            l.max_frame_len = v;
        }
        if let Some(v) = self.queue_bytes {
            l.queue_bytes = v;
        }
        if let Some(v) = self.slow_consumer_grace_ms {
            l.slow_consumer_grace = Duration::from_millis(v);
        }
        if let Some(v) = self.shutdown_grace_ms {
            l.shutdown_grace = Duration::from_millis(v);
        }
        if let Some(v) = self.close_timeout_ms {
            l.close_timeout = Duration::from_millis(v);
        }
        l
    }
}

/// Picks the handshake authorizer. This is where access-ticket checking is wired in; until
/// it is configured, only `--insecure-no-auth` starts a relay.
pub fn choose_authorizer(args: &RunArgs) -> Result<Rc<dyn Authorizer>, String> {
    if args.insecure_no_auth {
        log::warn!("**************************************************************");
        log::warn!("* --insecure-no-auth: EVERY client may publish and subscribe *");
        log::warn!("* to EVERY tenant without a token. Labs and tests only.      *");
        log::warn!("**************************************************************");
        return Ok(Rc::new(AllowAll));
    }
    Err(
        "no access control configured: refusing to start an open relay.\n  \
         For a lab or a test, start it with --insecure-no-auth (every client may do anything)."
            .to_string(),
    )
}

/// Runs the relay; returns the exit code.
pub fn run(mut args: RunArgs) -> i32 {
    if let Some(path) = args.config.clone()
        && let Err(e) = crate::config_file::apply(&path, &mut args)
    {
        eprintln!("error: {e}");
        return 2;
    }
    let auth = match choose_authorizer(&args) {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("error: {msg}");
            return 2;
        }
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        _ => {
            eprintln!("error: --tls-cert and --tls-key go together");
            return 2;
        }
    };
    let config = Config {
        listen: args
            .listen
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
        tls,
        limits: args.limits(),
    };
    let ex = Rc::new(LocalExecutor::new());
    let result = smol::block_on(ex.run(serve(config, auth, ex.clone())));
    match result {
        Ok(()) => {
            log::info!("stopped");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn serve(
    config: Config,
    auth: Rc<dyn Authorizer>,
    ex: Rc<LocalExecutor<'static>>,
) -> Result<(), String> {
    let mut signals = Signals::new([Signal::Term, Signal::Int])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let relay = Relay::bind(&config, auth)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = relay.local_addr();
    let (ws, http) = if relay.is_tls() {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    println!("fastpubsub-relay listening on {ws}://{addr}/ws (REST on {http}://{addr})");
    log::info!("listening on {addr}");
    let shutdown = async move {
        if let Some(Ok(sig)) = signals.next().await {
            log::info!("received {sig:?}");
        }
    };
    relay.run(ex, shutdown).await.map_err(|e| e.to_string())
}
