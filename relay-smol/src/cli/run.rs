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
    /// UDP address of the WebTransport edge (HTTP/3), e.g. 0.0.0.0:4433; use the port of
    /// --listen so SDK discovery (https://HOST/wt) finds it
    #[argh(option)]
    pub wt_listen: Option<SocketAddr>,
    /// certificate chain (PEM) of the WebTransport edge (default: a generated ECDSA P-256
    /// certificate valid 13 days, rotated, its SHA-256 at GET /v1/wt-cert-hash)
    #[argh(option)]
    pub wt_cert: Option<PathBuf>,
    /// private key (PEM) for --wt-cert
    #[argh(option)]
    pub wt_key: Option<PathBuf>,
    /// this relay's public host name (or host:port) as clients reach it; used in edge
    /// discovery (GET /v1/edges) and the generated WebTransport certificate
    #[argh(option)]
    pub public_host: Option<String>,
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
    /// connections still in their HTTP/WebSocket handshake before new ones get a quick 503
    /// (default: an eighth of the free open-files limit, at most 1024)
    #[argh(option)]
    pub max_pending_handshakes: Option<usize>,
    /// the same per source address, IPv4 or IPv6 /64 (default 256)
    #[argh(option)]
    pub max_pending_per_source: Option<usize>,
    /// subscriptions per connection (default 256)
    #[argh(option)]
    pub max_subs_per_conn: Option<usize>,
    /// subscriptions on the whole relay (default 1000000)
    #[argh(option)]
    pub max_total_subs: Option<usize>,
    /// largest client WebSocket message in bytes (default 66052: a full-size publish)
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
            edge_url: self.edge_url.clone().or_else(|| {
                let scheme = if self.tls_cert.is_some() { "wss" } else { "ws" };
                self.public_host
                    .as_ref()
                    .map(|h| format!("{scheme}://{h}/ws"))
            }),
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
        if let Some(v) = self.max_pending_handshakes {
            l.max_pending_handshakes = v;
        }
        if let Some(v) = self.max_pending_per_source {
            l.max_pending_per_source = v;
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

/// Reads the config file at `path` and merges it under the flags: every argument the
/// command line left unset takes the file's value; then checks what needs both.
pub fn apply_config_file(
    path: &std::path::Path,
    args: &mut RunArgs,
) -> Result<(), crate::config_file::ConfigFileError> {
    let file = crate::config_file::load(path)?;
    args.merge_file(file);
    let defaults = Limits::default();
    crate::config_file::check_queue_fits_frame(
        path,
        args.queue_bytes.unwrap_or(defaults.queue_bytes),
        args.max_frame_bytes.unwrap_or(defaults.max_frame_len),
    )
}

impl RunArgs {
    /// Takes the file's value for every argument the command line left unset (flags
    /// override the file; `--peer` given on the command line replaces the file's list).
    pub fn merge_file(&mut self, f: crate::config_file::FileSettings) {
        fn fill<T>(slot: &mut Option<T>, v: Option<T>) {
            if slot.is_none() {
                *slot = v;
            }
        }
        fill(&mut self.listen, f.listen);
        fill(&mut self.tls_cert, f.tls_cert);
        fill(&mut self.tls_key, f.tls_key);
        self.insecure_no_auth |= f.insecure_no_auth.unwrap_or(false);
        fill(&mut self.state_dir, f.state_dir);
        fill(&mut self.ticket_public_key, f.ticket_public_key);
        fill(&mut self.ticket_status_capacity, f.ticket_status_capacity);
        fill(&mut self.max_connections, f.max_connections);
        fill(&mut self.max_pending_handshakes, f.max_pending_handshakes);
        fill(&mut self.max_pending_per_source, f.max_pending_per_source);
        fill(&mut self.max_subs_per_conn, f.max_subs_per_conn);
        fill(&mut self.max_total_subs, f.max_total_subs);
        fill(&mut self.max_frame_bytes, f.max_frame_bytes);
        fill(&mut self.queue_bytes, f.queue_bytes);
        fill(&mut self.slow_consumer_grace_ms, f.slow_consumer_grace_ms);
        fill(&mut self.shutdown_grace_ms, f.shutdown_grace_ms);
        fill(&mut self.close_timeout_ms, f.close_timeout_ms);
        fill(&mut self.admin_listen, f.admin_listen);
        fill(&mut self.admin_token_file, f.admin_token_file);
        fill(&mut self.mesh_listen, f.mesh_listen);
        fill(&mut self.name, f.name);
        fill(&mut self.region, f.region);
        fill(&mut self.edge_url, f.edge_url);
        fill(&mut self.mesh_cert, f.mesh_cert);
        fill(&mut self.mesh_key, f.mesh_key);
        fill(&mut self.mesh_ca, f.mesh_ca);
        if self.peer.is_empty()
            && let Some(peers) = f.peers
        {
            self.peer = peers;
        }
        fill(&mut self.mesh_advertise, f.mesh_advertise);
        fill(&mut self.max_neighbours, f.max_neighbours);
        fill(&mut self.probe_interval_ms, f.probe_interval_ms);
        fill(&mut self.announce_interval_ms, f.announce_interval_ms);
        fill(&mut self.public_host, f.public_host);
        fill(&mut self.wt_listen, f.wt_listen);
        fill(&mut self.wt_cert, f.wt_cert);
        fill(&mut self.wt_key, f.wt_key);
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
    let tickets = TicketSetup::load(
        &TicketOptions {
            state_dir: args.state_dir.clone(),
            public_key: args.ticket_public_key.clone(),
            status_capacity: args.ticket_status_capacity,
            // With the mesh on, records made here wait (bounded) for it to flood them.
            outbox_capacity: args.mesh_listen.map(|_| crate::app::mesh::TICKET_OUTBOX),
        },
        crate::clock::wall_now(),
    )?;
    Ok((tickets.authorizer(), Some(tickets)))
}

/// The WebTransport listener's settings, checked.
pub struct WtOptions {
    /// UDP address.
    pub listen: SocketAddr,
    /// The certificate in use at start.
    pub cert: crate::wt::cert::WtCert,
    /// Names for generated certificates.
    pub names: Vec<String>,
}

fn wt_options(args: &RunArgs) -> Result<Option<WtOptions>, String> {
    let Some(listen) = args.wt_listen else {
        if args.wt_cert.is_some() || args.wt_key.is_some() {
            return Err("--wt-cert/--wt-key need --wt-listen".into());
        }
        return Ok(None);
    };
    let now = crate::clock::wall_now();
    let mut names = Vec::new();
    if let Some(h) = &args.public_host {
        crate::wt::discovery::check_host(h).map_err(|e| format!("--public-host {h:?}: {e}"))?;
        let host = crate::wt::discovery::host_only(h);
        names.push(host.to_owned());
    }
    for n in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_owned());
        }
    }
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    let cert = match (&args.wt_cert, &args.wt_key) {
        (Some(c), Some(k)) => crate::wt::cert::WtCert::load(c, k, now)?,
        (None, None) => crate::wt::cert::WtCert::generate(&names, now)?,
        _ => return Err("--wt-cert and --wt-key go together".into()),
    };
    Ok(Some(WtOptions {
        listen,
        cert,
        names,
    }))
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
        && let Err(e) = apply_config_file(&path, &mut args)
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
    let wt = match wt_options(&args) {
        Ok(w) => w,
        Err(msg) => {
            eprintln!("error: {msg}");
            return 2;
        }
    };
    let mut config = Config {
        listen: args
            .listen
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
        tls,
        limits: args.limits(),
    };
    // Every connection is a descriptor: raise the limit, then fit the caps under it.
    let nofile = raise_fd_limit().unwrap_or(1024);
    for note in config.limits.fit_to_fd_limit(
        nofile,
        args.max_connections.is_some(),
        args.max_pending_handshakes.is_some(),
    ) {
        log::warn!("{note}");
    }
    let admin = (
        args.admin_listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:9091".to_string()),
        args.admin_token_file.clone(),
    );
    let ex = Rc::new(LocalExecutor::new());
    let result = smol::block_on(ex.run(serve(
        config,
        auth,
        tickets,
        ex.clone(),
        admin,
        mesh,
        wt,
        args.public_host.clone(),
    )));
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

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
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
    wt: Option<WtOptions>,
    public_host: Option<String>,
) -> Result<(), String> {
    let mut signals = Signals::new([Signal::Term, Signal::Int])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let mut relay = Relay::bind(&config, auth)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    if let Some(t) = &tickets {
        relay.add_rest_handler(t.rest_handler());
        t.spawn_status_saver(&ex);
    }
    let addr = relay.local_addr();
    let mut wt_line = None;
    let mut wt_status = None;
    if let Some(w) = wt {
        let edge = crate::wt::endpoint::WtEdge::bind(
            w.listen,
            w.cert,
            w.names,
            relay.broker(),
            relay.authorizer(),
        )?;
        relay.add_rest_handler(Rc::new(crate::wt::cert::CertRest::new(edge.hash())));
        wt_status = Some(edge.status_source());
        relay.add_rest_handler(Rc::new(crate::wt::status::StatsRest(edge.status_source())));
        wt_line = Some(format!(
            "fastpubsub-relay webtransport on https://{}/ (udp; certificate sha-256 {}, also at GET /v1/wt-cert-hash)",
            edge.local_addr(),
            edge.cert_sha256_hex()
        ));
        ex.spawn(edge.run()).detach();
    }
    let mut admin_opts =
        crate::app::admin::options_from_cli(&admin.0, admin.1.as_deref(), addr, relay.is_tls())?;
    admin_opts.tickets = tickets.as_ref().map(|t| t.service());
    let admin = crate::app::admin::install(&mut relay, admin_opts, &ex)?;
    if let Some(src) = wt_status {
        ex.spawn(crate::wt::status::mirror_metrics(
            src,
            admin.metrics.clone(),
        ))
        .detach();
    }
    relay.add_rest_handler(Rc::new(crate::wt::discovery::EdgesRest::new(
        public_host,
        Some(admin.mesh.clone()),
    )));
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
    if let Some(line) = wt_line {
        println!("{line}");
    }
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
    let result = relay.run(ex, shutdown).await.map_err(|e| e.to_string());
    if let Some(t) = &tickets {
        t.save_status_now();
    }
    result
}
