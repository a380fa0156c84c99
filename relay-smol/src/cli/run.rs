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
use crate::tickets::edge::{TicketOptions, TicketSetup};
use crate::ws::Relay;

/// Run the relay.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// address of the HTTP/WebSocket port (default 127.0.0.1:8080)
    #[argh(
        option,
        default = "\"127.0.0.1:8080\".parse().expect(\"valid default\")"
    )]
    pub listen: SocketAddr,
    /// TLS certificate chain (PEM) for wss:// and https://
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[argh(option)]
    pub tls_key: Option<PathBuf>,
    /// accept every client without a token (labs and tests only; logs a warning)
    #[argh(switch)]
    pub insecure_no_auth: bool,
    /// state directory with the ticket signing key, public key and master token; created
    /// on first run (default $FASTPUBSUB_STATE_DIR, $XDG_STATE_HOME/fastpubsub or
    /// ~/.local/state/fastpubsub)
    #[argh(option)]
    pub state_dir: Option<PathBuf>,
    /// check tickets with this public key file only (a relay that does not issue tickets)
    #[argh(option)]
    pub ticket_public_key: Option<PathBuf>,
    /// refresh/revoke records kept before refusing new ones with 503 (default and max 8192)
    #[argh(option)]
    pub ticket_status_capacity: Option<usize>,
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
    /// admin listener for /dashboard, /v1/mesh, /v1/status, /metrics (default 127.0.0.1:9091; `off` for none)
    #[argh(option, default = "String::from(\"127.0.0.1:9091\")")]
    pub admin_listen: String,
    /// file with an admin token: the admin pages are then also served on the public port to its holders
    #[argh(option)]
    pub admin_token_file: Option<PathBuf>,
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

/// Picks the handshake authorizer: access tickets (the default; a first run creates the
/// key material), or everything allowed with `--insecure-no-auth`.
pub fn choose_authorizer(
    args: &RunArgs,
) -> Result<(Rc<dyn Authorizer>, Option<TicketSetup>), String> {
    if args.insecure_no_auth {
        log::warn!("**************************************************************");
        log::warn!("* --insecure-no-auth: EVERY client may publish and subscribe *");
        log::warn!("* to EVERY tenant without a token. Labs and tests only.      *");
        log::warn!("**************************************************************");
        return Ok((Rc::new(AllowAll), None));
    }
    let tickets = TicketSetup::load(&TicketOptions {
        state_dir: args.state_dir.clone(),
        public_key: args.ticket_public_key.clone(),
        status_capacity: args.ticket_status_capacity,
    })?;
    Ok((tickets.authorizer(), Some(tickets)))
}

/// Raises the soft open-files limit to the hard limit: every connection is a descriptor.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let target = l.maximum.unwrap_or(1 << 20);
    if l.current.is_some_and(|c| c < target) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: l.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current
}

/// Runs the relay; returns the exit code.
pub fn run(args: RunArgs) -> i32 {
    let (auth, tickets) = match choose_authorizer(&args) {
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
        listen: args.listen,
        tls,
        limits: args.limits(),
    };
    let admin = (args.admin_listen.clone(), args.admin_token_file.clone());
    let ex = Rc::new(LocalExecutor::new());
    let result = smol::block_on(ex.run(serve(config, auth, tickets, ex.clone(), admin)));
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
    tickets: Option<TicketSetup>,
    ex: Rc<LocalExecutor<'static>>,
    admin: (String, Option<PathBuf>),
) -> Result<(), String> {
    let mut signals = Signals::new([Signal::Term, Signal::Int])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut relay = Relay::bind(&config, auth)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    if let Some(t) = &tickets {
        relay.add_rest_handler(t.rest_handler());
    }
    let addr = relay.local_addr();
    let mut admin_opts = crate::dashboard::edge::options_from_cli(
        &admin.0,
        admin.1.as_deref(),
        addr,
        relay.is_tls(),
    )?;
    admin_opts.tickets = tickets.as_ref().map(|t| t.service());
    let admin = crate::dashboard::edge::install(&mut relay, admin_opts, &ex)?;
    let (ws, http) = if relay.is_tls() {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    // The edge address stays the first line: scripts and tests read it.
    println!("fastpubsub-relay listening on {ws}://{addr}/ws (REST on {http}://{addr})");
    if let Some(a) = admin.admin_addr {
        println!(
            "fastpubsub-relay admin on http://{a}/dashboard (also /v1/mesh, /v1/status, /metrics)"
        );
    }
    if let Some(t) = &tickets {
        print!(
            "{}",
            t.announce(addr, crate::clock::wall_now(), "fastpubsub-relay")
        );
    }
    log::info!("listening on {addr}");
    let shutdown = async move {
        if let Some(Ok(sig)) = signals.next().await {
            log::info!("received {sig:?}");
        }
    };
    relay.run(ex, shutdown).await.map_err(|e| e.to_string())
}
