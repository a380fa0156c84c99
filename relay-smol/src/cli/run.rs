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
    #[argh(option)]
    pub admin_listen: Option<String>,
    /// file with an admin token: the admin pages are then also served on the public port to its holders
    #[argh(option)]
    pub admin_token_file: Option<PathBuf>,
    // ----- mesh (see docs/mesh.md) -----
    /// UDP address for relay-to-relay QUIC (enables the mesh), e.g. 0.0.0.0:7000
    #[argh(option)]
    pub mesh_listen: Option<SocketAddr>,
    /// this relay's name in the mesh (must match its mesh certificate)
    #[argh(option)]
    pub name: Option<String>,
    /// region label shown to other relays
    #[argh(option)]
    pub region: Option<String>,
    /// latitude in degrees (with --lon)
    #[argh(option)]
    pub lat: Option<f64>,
    /// longitude in degrees (with --lat)
    #[argh(option)]
    pub lon: Option<f64>,
    /// public URL of this relay's WebSocket edge, told to other relays
    #[argh(option)]
    pub edge_url: Option<String>,
    /// relay certificate chain (PEM) from `mesh-cert`
    #[argh(option)]
    pub mesh_cert: Option<PathBuf>,
    /// relay private key (PEM) from `mesh-cert`
    #[argh(option)]
    pub mesh_key: Option<PathBuf>,
    /// mesh CA certificate (PEM) from `mesh-ca`
    #[argh(option)]
    pub mesh_ca: Option<PathBuf>,
    /// a seed relay NAME@HOST:PORT (repeatable)
    #[argh(option)]
    pub peer: Vec<crate::mesh::config::Seed>,
    /// mesh address other relays should dial (default: --mesh-listen)
    #[argh(option)]
    pub mesh_advertise: Option<SocketAddr>,
    /// most mesh links kept (default 16)
    #[argh(option)]
    pub max_neighbours: Option<usize>,
    /// milliseconds between mesh link probes (default 250)
    #[argh(option)]
    pub probe_interval_ms: Option<u64>,
    /// milliseconds between this relay's mesh-wide announcements (default 10000; lower only for tests and demos)
    #[argh(option)]
    pub announce_interval_ms: Option<u64>,
}

impl RunArgs {
    fn mesh_args(&self) -> crate::app::args::MeshArgs {
        crate::app::args::MeshArgs {
            mesh_listen: self.mesh_listen,
            name: self.name.clone(),
            region: self.region.clone(),
            lat: self.lat,
            lon: self.lon,
            edge_url: self.edge_url.clone(),
            mesh_cert: self.mesh_cert.clone(),
            mesh_key: self.mesh_key.clone(),
            mesh_ca: self.mesh_ca.clone(),
            peer: self.peer.clone(),
            mesh_advertise: self.mesh_advertise,
            max_neighbours: self.max_neighbours,
            probe_interval_ms: self.probe_interval_ms,
            announce_interval_ms: self.announce_interval_ms,
        }
    }
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
        // With the mesh on, records made here wait (bounded) for it to flood them.
        outbox_capacity: args.mesh_listen.map(|_| crate::app::mesh::TICKET_OUTBOX),
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
pub fn run(mut args: RunArgs) -> i32 {
    if let Some(path) = args.config.clone()
        && let Err(e) = crate::config_file::apply(&path, &mut args)
    {
        eprintln!("error: {e}");
        return 2;
    }
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
    let mesh = match args.mesh_args().build() {
        Ok(m) => m,
        Err(msg) => {
            eprintln!("error: {msg}");
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
    let admin = (
        args.admin_listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:9091".to_string()),
        args.admin_token_file.clone(),
    );
    let ex = Rc::new(LocalExecutor::new());
    let result = smol::block_on(ex.run(serve(config, auth, tickets, ex.clone(), admin, mesh)));
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
    mesh: Option<(
        crate::mesh::config::MeshConfig,
        crate::quic::tls::MeshIdentity,
    )>,
) -> Result<(), String> {
    let mut signals = Signals::new([Signal::Term, Signal::Int])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut relay = Relay::bind(&config, auth)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    if let Some(t) = &tickets {
        relay.add_rest_handler(t.rest_handler());
    }
    let addr = relay.local_addr();
    let mut admin_opts =
        crate::app::admin::options_from_cli(&admin.0, admin.1.as_deref(), addr, relay.is_tls())?;
    admin_opts.tickets = tickets.as_ref().map(|t| t.service());
    let admin = crate::app::admin::install(&mut relay, admin_opts, &ex)?;
    let mut mesh_line = None;
    if let Some((mesh_cfg, identity)) = mesh {
        let name = mesh_cfg.name.clone();
        let at = crate::app::mesh::attach(
            &mut relay,
            &ex,
            mesh_cfg,
            &identity,
            admin.clone(),
            tickets.as_ref().map(|t| t.service()),
        )
        .map_err(|e| e.to_string())?;
        mesh_line = Some(format!(
            "fastpubsub-relay mesh {name} on quic://{at} (status: GET /v1/status on the admin listener)"
        ));
    }
    let (ws, http) = if relay.is_tls() {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    println!("fastpubsub-relay listening on {ws}://{addr}/ws (REST on {http}://{addr})");
    if let Some(line) = mesh_line {
        println!("{line}");
    }
    if let Some(a) = admin.admin_addr {
        println!(
            "fastpubsub-relay admin on http://{a}/dashboard (also /v1/mesh, /v1/status, /metrics)"
        );
    }
    if let Some(t) = &tickets {
        // A closed stdout must not take the relay down.
        let banner = t.announce(addr, crate::clock::wall_now(), "fastpubsub-relay");
        let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    }
    log::info!("listening on {addr}");
    let shutdown = async move {
        if let Some(Ok(sig)) = signals.next().await {
            log::info!("received {sig:?}");
        }
    };
    relay.run(ex, shutdown).await.map_err(|e| e.to_string())
}
