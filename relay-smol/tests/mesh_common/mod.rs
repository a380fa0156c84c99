//! Shared by the mesh and dashboard integration tests (and `benches/mesh_hop.rs`, through
//! `#[path]`): child processes killed on drop, the `fastpubsub-linkemu` link emulator, mesh
//! nodes in this process (a thread each), `fastpubsub-relay run` processes with their
//! addresses read from stdout, mesh certificates, plain HTTP GET and bounded waits.
//!
//! Every wait here polls an observable condition with a deadline; none sleeps and hopes.
#![allow(dead_code)] // each test file uses a different part
// Tests measure their own timeouts with the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fastpubsub_relay::app::mesh::{self as app_mesh, Delivery, MeshCommand, MeshTask};
use fastpubsub_relay::app::status::RelayStatus;
use fastpubsub_relay::mesh::config::{MeshConfig, Seed};
use fastpubsub_relay::mesh::hooks::{TicketApplied, TicketHook};
use fastpubsub_relay::mesh::node::MeshNode;
use fastpubsub_relay::quic::certs::{CaPem, issue_relay_cert};
use fastpubsub_relay::quic::tls::MeshIdentity;
use smol::channel::{Receiver, Sender, unbounded};

/// The relay binary.
pub const RELAY: &str = env!("CARGO_BIN_EXE_fastpubsub-relay");
/// The link emulator binary.
pub const LINKEMU: &str = env!("CARGO_BIN_EXE_fastpubsub-linkemu");

/// Longest a relay process may take to print its addresses, or a node thread to bind.
pub const START_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Processes

/// A child process, killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Proc {
    /// Kills the process now and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free UDP port on 127.0.0.1 (bound and released: another process may take it first, which
/// then shows as a failed start).
pub fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free UDP port")
}

/// Milliseconds since the Unix epoch, comparable with the `unix_ms` of the relay's events.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Polls `f` every 20 ms until it gives a value; panics after `limit`. Returns the value and
/// how long it took.
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, t0.elapsed());
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long to keep listening after the last expected delivery, for duplicates.
pub const DUP_WINDOW: Duration = Duration::from_millis(300);

/// Deliveries of one publish run: latencies (ms, sorted), distinct messages, duplicates.
pub struct Run {
    pub lat_ms: Vec<f64>,
    pub delivered: usize,
    pub duplicates: usize,
}

impl Run {
    /// The `p` quantile (0..=1) of the latencies; NaN when nothing arrived.
    pub fn pct(&self, p: f64) -> f64 {
        let i = ((self.lat_ms.len() as f64 - 1.0) * p).round() as usize;
        self.lat_ms.get(i).copied().unwrap_or(f64::NAN)
    }
}

/// Collects the deliveries of messages `0..sent.len()` (message `i` sent at `sent[i]`) from
/// `next(timeout)`, which gives (index, arrival) or `None` after `timeout`: until every
/// message arrived and then [`DUP_WINDOW`] more, or until `limit` passed.
pub fn collect(
    sent: &[Instant],
    limit: Duration,
    mut next: impl FnMut(Duration) -> Option<(u32, Instant)>,
) -> Run {
    let mut seen = std::collections::HashSet::new();
    let mut lat_ms = Vec::new();
    let mut duplicates = 0;
    let mut until = Instant::now() + limit;
    let mut complete = false;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Some((i, at)) = next(left) else {
            break; // timed out, or the source is gone
        };
        let Some(s) = sent.get(i as usize) else {
            continue; // not from this run
        };
        if !seen.insert(i) {
            duplicates += 1;
            continue;
        }
        lat_ms.push(at.duration_since(*s).as_secs_f64() * 1000.0);
        if !complete && seen.len() == sent.len() {
            complete = true;
            until = Instant::now() + DUP_WINDOW;
        }
    }
    lat_ms.sort_by(f64::total_cmp);
    Run {
        lat_ms,
        delivered: seen.len(),
        duplicates,
    }
}

/// The first 4 bytes of a payload as a big-endian message index.
pub fn index_of(payload: &[u8]) -> Option<u32> {
    payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
}

/// The first route event in a status document for `dest` through `hop` at or after
/// `since_ms` (Unix ms): its time.
pub fn route_event_since(
    status: &serde_json::Value,
    dest: &str,
    hop: &str,
    since_ms: u64,
) -> Option<u64> {
    status
        .get("route_events")?
        .as_array()?
        .iter()
        .filter(|e| {
            e.get("dest").and_then(|d| d.as_str()) == Some(dest)
                && e.get("next_hop").and_then(|h| h.as_str()) == Some(hop)
        })
        .filter_map(|e| e.get("unix_ms")?.as_u64())
        .filter(|at| *at >= since_ms)
        .min()
}

/// The issue's bound: a route moves within 2 s of a change of the links.
pub const SWITCH_BOUND: Duration = Duration::from_secs(2);

/// Makes a change (`change()`: slow a link, kill a relay) and checks that the relay whose
/// status `status()` gives then routes to `dest` through `hop` within [`SWITCH_BOUND`] of
/// the change, by the relay's own route event (waits at most 20 s to see it).
pub fn assert_route_moves(
    what: &str,
    change: impl FnOnce(),
    dest: &str,
    hop: &str,
    status: impl FnMut() -> serde_json::Value,
) -> Duration {
    let changed = unix_ms();
    change();
    let took = route_switch(what, Duration::from_secs(20), changed, dest, hop, status);
    assert!(
        took < SWITCH_BOUND,
        "{what}: route moved {took:?} after the change"
    );
    took
}

/// Waits (at most `limit`) until the relay whose status `status()` gives routes to `dest`
/// through `hop`; returns how long after `changed_ms` (Unix ms, taken just before the change)
/// its route switched, by the relay's own route event, so the test's polling does not count.
pub fn route_switch(
    what: &str,
    limit: Duration,
    changed_ms: u64,
    dest: &str,
    hop: &str,
    mut status: impl FnMut() -> serde_json::Value,
) -> Duration {
    let (at, observed) = wait_until(what, limit, || {
        let st = status();
        if route_in(&st, dest)?.0 != hop {
            return None;
        }
        route_event_since(&st, dest, hop, changed_ms)
    });
    let took = Duration::from_millis(at.saturating_sub(changed_ms));
    eprintln!(
        "{what}: route switched {took:?} after the change (seen by polling after {observed:?})"
    );
    took
}

// ---------------------------------------------------------------------------------------
// The link emulator

/// A `fastpubsub-linkemu` process: UDP sent to `listen` goes to its target (and back) with the
/// configured delay, jitter and loss; `control` takes commands while it runs.
pub struct Emu {
    proc: Proc,
    pub listen: SocketAddr,
    pub control: SocketAddr,
}

impl Emu {
    /// Starts an emulator towards `target` with extra arguments (e.g. `--delay 20ms`) and
    /// waits (at most 10 s) until its control socket answers.
    pub fn start(target: SocketAddr, extra: &[&str]) -> Emu {
        let (listen, control) = (free_udp(), free_udp());
        let child = Command::new(LINKEMU)
            .args([
                "--listen",
                &listen.to_string(),
                "--target",
                &target.to_string(),
            ])
            .args(["--control", &control.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn linkemu");
        let e = Emu {
            proc: Proc(child),
            listen,
            control,
        };
        wait_until("linkemu control socket", Duration::from_secs(10), || {
            e.cmd("stats")
        });
        e
    }

    /// An emulator towards `target` adding `delay` (e.g. `"45ms"`) in each direction.
    pub fn delay(target: SocketAddr, delay: &str) -> Emu {
        Emu::start(target, &["--delay", delay])
    }

    /// Sends a control command; its reply, or `None` after 200 ms without one.
    pub fn cmd(&self, cmd: &str) -> Option<String> {
        let s = UdpSocket::bind("127.0.0.1:0").ok()?;
        s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
        s.send_to(cmd.as_bytes(), self.control).ok()?;
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Sends a control command and insists on a reply (retried for up to 5 s: a busy machine
    /// may be slower than one 200 ms read).
    pub fn set(&self, cmd: &str) -> String {
        wait_until(
            &format!("linkemu reply to {cmd:?}"),
            Duration::from_secs(5),
            || self.cmd(cmd),
        )
        .0
    }
}

// ---------------------------------------------------------------------------------------
// Mesh nodes in this process

/// A delivery seen by a node's sink: payload and arrival time.
pub type Got = (Vec<u8>, Instant);

/// A mesh node (QUIC driver and `MeshNode`) on its own thread; stops when dropped or killed.
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    cmd: Option<Sender<MeshCommand>>,
    /// Local deliveries.
    pub got: Receiver<Got>,
    thread: Option<JoinHandle<()>>,
}

/// A seed peer.
pub fn seed(name: &str, addr: SocketAddr) -> Seed {
    Seed {
        name: name.into(),
        addr,
    }
}

/// A relay identity named `name`, issued by `ca`.
pub fn identity(name: &str, ca: &CaPem) -> MeshIdentity {
    let r = issue_relay_cert(name, &ca.cert, &ca.key).expect("issue relay cert");
    MeshIdentity::from_pem(&r.chain, &r.key, &ca.cert).expect("identity")
}

/// Starts a node on 127.0.0.1:0 with `seeds`; `tweak` adjusts its configuration.
pub fn start_node(
    name: &str,
    ca: &CaPem,
    seeds: Vec<Seed>,
    tweak: impl FnOnce(&mut MeshConfig),
) -> Node {
    start_node_with(name, ca, seeds, tweak, |_| {})
}

/// As [`start_node`], with a ticket hook installed before the node runs.
pub fn start_node_with_hook(
    name: &str,
    ca: &CaPem,
    seeds: Vec<Seed>,
    tweak: impl FnOnce(&mut MeshConfig),
    hook: Box<dyn TicketHook + Send>,
) -> Node {
    start_node_with(name, ca, seeds, tweak, move |n| n.set_ticket_hook(hook))
}

/// As [`start_node`]; `setup` runs on the node's thread before it starts (hooks, sinks).
pub fn start_node_with(
    name: &str,
    ca: &CaPem,
    seeds: Vec<Seed>,
    tweak: impl FnOnce(&mut MeshConfig),
    setup: impl FnOnce(&mut MeshNode) + Send + 'static,
) -> Node {
    let mut cfg = MeshConfig::new(name, "127.0.0.1:0".parse().expect("addr"));
    cfg.seeds = seeds;
    tweak(&mut cfg);
    let id = identity(name, ca);
    let (tx, got) = unbounded();
    let (cmd, rx) = unbounded();
    let (addr_tx, addr_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let origin = fastpubsub_relay::clock::now();
        let (driver, mut node) = app_mesh::bind(cfg, &id).expect("start node");
        setup(&mut node);
        let _ = addr_tx.send(driver.local_addr());
        // Arrival times are taken on the node's thread, as the broker would deliver.
        let deliver = move |d: Delivery| {
            let _ = tx.try_send((d.payload.to_vec(), Instant::now()));
        };
        let task = MeshTask::new(node, origin, Box::new(deliver));
        let _ = smol::block_on(app_mesh::run(driver, task, rx));
    });
    let addr = addr_rx.recv_timeout(START_WAIT).expect("node started");
    Node {
        name: name.into(),
        addr,
        cmd: Some(cmd),
        got,
        thread: Some(thread),
    }
}

/// Three nodes in a line, A – B – C: C first, B seeded with C, A with B. `start(name, seeds)`
/// starts one node.
pub fn line3<N>(
    mut start: impl FnMut(&str, Vec<Seed>) -> N,
    addr: impl Fn(&N) -> SocketAddr,
) -> (N, N, N) {
    let c = start("c", vec![]);
    let b = start("b", vec![seed("c", addr(&c))]);
    let a = start("a", vec![seed("b", addr(&b))]);
    (a, b, c)
}

/// The next delivery on `rx`, or `None` after `timeout`.
pub fn recv_timeout(rx: &Receiver<Got>, timeout: Duration) -> Option<Got> {
    smol::block_on(futures_lite::future::or(
        async { rx.recv().await.ok() },
        async {
            async_io::Timer::after(timeout).await;
            None
        },
    ))
}

impl Node {
    /// Hands a command to the node.
    pub fn send(&self, c: MeshCommand) {
        let tx = self.cmd.as_ref().expect("node killed");
        smol::block_on(tx.send(c)).expect("node alive");
    }

    /// The node's status (waits at most 10 s for it).
    pub fn status_typed(&self) -> Arc<RelayStatus> {
        let (tx, rx) = unbounded();
        self.send(MeshCommand::Status(tx));
        smol::block_on(futures_lite::future::or(
            async { rx.recv().await.ok() },
            async {
                async_io::Timer::after(Duration::from_secs(10)).await;
                None
            },
        ))
        .expect("status reply")
    }

    /// The node's `/v1/status` document (waits at most 10 s for it).
    pub fn status_text(&self) -> String {
        self.status_typed().to_json()
    }

    /// The node's status JSON.
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.status_text()).expect("status JSON")
    }

    /// (next hop, metric ms) of the route to `dest`.
    pub fn route_to(&self, dest: &str) -> Option<(String, f64)> {
        route_in(&self.status(), dest)
    }

    /// A mesh counter from the status (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        self.status()
            .pointer(&format!("/counters/mesh/{name}"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    }

    /// Stops the node: closes its command channel and joins its thread.
    pub fn kill(&mut self) {
        self.cmd = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------
// Status documents (of a node or a relay process)

/// (next hop, metric ms) of the route to `dest` in a status document.
pub fn route_in(status: &serde_json::Value, dest: &str) -> Option<(String, f64)> {
    status.get("routes")?.as_array()?.iter().find_map(|r| {
        if r.get("dest")?.as_str()? != dest {
            return None;
        }
        Some((
            r.get("next_hop")?.as_str()?.to_owned(),
            r.get("metric_ms")
                .and_then(|m| m.as_f64())
                .unwrap_or(f64::NAN),
        ))
    })
}

/// Whether a status document routes to `dest` through `hop` with a metric below `below_ms`:
/// the route is not only installed but measured to be the better one. (Right after start a
/// route can be installed on partial measurements and move once the other links are
/// measured; tests that check steady routing wait for this.)
pub fn settled_via(status: &serde_json::Value, dest: &str, hop: &str, below_ms: f64) -> bool {
    route_in(status, dest).is_some_and(|(h, m)| h == hop && m < below_ms)
}

// ---------------------------------------------------------------------------------------
// Relay processes

/// A `fastpubsub-relay run` process on 127.0.0.1, killed on drop.
pub struct RelayProc {
    proc: Proc,
    /// The edge (public WebSocket/HTTP) address.
    pub edge: SocketAddr,
    /// The admin listener's address, if it runs.
    pub admin: Option<SocketAddr>,
    /// The mesh (QUIC) address, if the mesh runs.
    pub mesh: Option<SocketAddr>,
}

impl RelayProc {
    /// Starts `fastpubsub-relay run --listen 127.0.0.1:0 ARGS…` and waits (at most 20 s) for
    /// the lines that announce its addresses: the edge always, the admin listener when
    /// `--admin-listen` names one, the mesh when `--mesh-listen` is given.
    pub fn start(args: &[&str]) -> RelayProc {
        let mut child = Command::new(RELAY)
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fastpubsub-relay");
        let stdout = child.stdout.take().expect("relay stdout");
        let proc = Proc(child);
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let want_admin = args
            .windows(2)
            .any(|w| w[0] == "--admin-listen" && w[1] != "off");
        let want_mesh = args.contains(&"--mesh-listen");
        let (mut edge, mut admin, mut mesh) = (None, None, None);
        let deadline = Instant::now() + START_WAIT;
        while edge.is_none() || (want_admin && admin.is_none()) || (want_mesh && mesh.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("relay {args:?} did not print its addresses in 20 s"));
            let addr = || -> Option<SocketAddr> {
                line.split("://")
                    .nth(1)?
                    .split(['/', ' '])
                    .next()?
                    .parse()
                    .ok()
            };
            if line.contains(" admin on http://") {
                admin = addr();
            } else if line.contains(" listening on ") {
                edge = addr();
            } else if line.contains(" mesh ") && line.contains("quic://") {
                mesh = addr();
            }
        }
        RelayProc {
            proc,
            edge: edge.expect("edge address"),
            admin,
            mesh,
        }
    }

    /// The admin address (panics when the relay runs without one).
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("relay started with an admin listener")
    }

    /// The mesh address (panics when the relay runs without the mesh).
    pub fn mesh(&self) -> SocketAddr {
        self.mesh.expect("relay started with --mesh-listen")
    }

    /// `GET /v1/status` on the admin listener.
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = http_get(self.admin(), "/v1/status", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("status JSON")
    }

    /// The next hop of the route to `dest`.
    pub fn next_hop(&self, dest: &str) -> Option<String> {
        route_in(&self.status(), dest).map(|r| r.0)
    }

    /// Kills the relay process now (SIGKILL: no graceful close) and reaps it.
    pub fn kill(&mut self) {
        self.proc.kill();
    }
}

/// `run --listen 127.0.0.1:0 --insecure-no-auth EXTRA…`.
pub fn start_relay_process(extra: &[&str]) -> RelayProc {
    let mut args = vec!["--insecure-no-auth"];
    args.extend_from_slice(extra);
    RelayProc::start(&args)
}

/// A mesh relay named `name` with its certificate from `certs` (see [`make_certs`]), the
/// mesh and admin listeners on 127.0.0.1:0, seed `peers` and `extra` arguments (auth, region,
/// position…).
pub fn mesh_relay(
    certs: &Path,
    name: &str,
    peers: &[(&str, SocketAddr)],
    extra: &[&str],
) -> RelayProc {
    mesh_relay_at(certs, name, "127.0.0.1:0", peers, extra)
}

/// As [`mesh_relay`], with the mesh listening on `mesh_listen` (e.g. a port from
/// [`free_udp`], so emulators towards it can start first and relays start concurrently).
pub fn mesh_relay_at(
    certs: &Path,
    name: &str,
    mesh_listen: &str,
    peers: &[(&str, SocketAddr)],
    extra: &[&str],
) -> RelayProc {
    let p = |f: &str| certs.join(f).to_str().expect("utf-8 path").to_owned();
    let (cert, key, ca) = (
        p(&format!("{name}.pem")),
        p(&format!("{name}.key")),
        p("ca.pem"),
    );
    let peers: Vec<String> = peers.iter().map(|(n, a)| format!("{n}@{a}")).collect();
    let mut args = vec![
        "--admin-listen",
        "127.0.0.1:0",
        "--mesh-listen",
        mesh_listen,
        "--name",
        name,
        "--mesh-cert",
        &cert,
        "--mesh-key",
        &key,
        "--mesh-ca",
        &ca,
    ];
    for p in &peers {
        args.extend(["--peer", p.as_str()]);
    }
    args.extend_from_slice(extra);
    RelayProc::start(&args)
}

/// Runs `fastpubsub-relay ARGS…` to completion; whether it succeeded.
pub fn run_tool(args: &[&str]) -> bool {
    Command::new(RELAY)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run fastpubsub-relay")
        .success()
}

/// `fastpubsub-relay sub --url URL EXTRA… TENANT PATTERN` in the background.
pub fn spawn_sub(url: &str, extra: &[&str], tenant: &str, pattern: &str) -> Proc {
    Proc(
        Command::new(RELAY)
            .args(["sub", "--url", url])
            .args(extra)
            .args([tenant, pattern])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sub"),
    )
}

/// `fastpubsub-relay pub --url URL TENANT CHANNEL MESSAGE`, which must succeed.
pub fn pub_tool(url: &str, tenant: &str, channel: &str, message: &str) {
    assert!(
        run_tool(&["pub", "--url", url, tenant, channel, message]),
        "pub {tenant} {channel} {message:?} failed"
    );
}

/// Mints a one-hour ticket for tenant `acme` (publish and subscribe `chat.#`) with the
/// signing key in a relay's state directory (`fastpubsub-relay ticket`); returns the token.
pub fn mint_ticket(state: &Path) -> String {
    let key = state.join("ticket-signing.key");
    let out = Command::new(RELAY)
        .args([
            "ticket", "--tenant", "acme", "--pub", "chat.#", "--sub", "chat.#", "--ttl", "1h",
        ])
        .args(["--signing-key", key.to_str().expect("utf-8 path")])
        .output()
        .expect("run fastpubsub-relay ticket");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .find(|w| w.starts_with("AT_"))
        .unwrap_or_else(|| panic!("no ticket in {text:?}"))
        .to_owned()
}

/// A fresh temporary directory `fps-<tag>-<pid>`.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fps-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// Makes a mesh CA in `dir/<ca>` and a certificate for each of `names` beside it (`mesh-ca`,
/// `mesh-cert`); returns `dir/<ca>`, the directory [`mesh_relay`] takes.
pub fn make_certs(dir: &Path, ca: &str, names: &[&str]) -> PathBuf {
    let ca_dir = dir.join(ca);
    let d = ca_dir.to_str().expect("utf-8 path");
    assert!(run_tool(&["mesh-ca", "--dir", d]), "mesh-ca failed");
    for n in names {
        assert!(
            run_tool(&["mesh-cert", "--name", n, "--ca-dir", d, "--out", d]),
            "mesh-cert {n} failed"
        );
    }
    ca_dir
}

// ---------------------------------------------------------------------------------------
// HTTP

/// `GET path` over plain HTTP/1.1 with an optional `Authorization` value; returns (status,
/// body).
pub fn http_get(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    http_request(addr, "GET", path, auth, None)
}

/// `METHOD path` over plain HTTP/1.1 with an optional `Authorization` value and JSON body;
/// returns (status, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    json: Option<&str>,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let body = json
        .map(|b| {
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )
        })
        .unwrap_or_else(|| "\r\n".into());
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n{body}"
    )
    .expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Revokes `token` at the relay whose edge is `edge`, with the master token in its state
/// directory (`DELETE /v1/revoke-token`); returns (status, body).
pub fn revoke_ticket(edge: SocketAddr, state: &Path, token: &str) -> (u16, String) {
    let master = std::fs::read_to_string(state.join("master.token")).expect("master token");
    let auth = format!("Bearer {}", master.trim());
    let body = format!("{{\"token\":\"{token}\"}}");
    http_request(edge, "DELETE", "/v1/revoke-token", Some(&auth), Some(&body))
}

/// Polls `GET path` until it answers 200 and `ok(body)` holds, at most `secs` seconds; returns
/// the body.
pub fn wait_for(addr: SocketAddr, path: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (status, body) = http_get(addr, path, None);
        if status == 200 && ok(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "condition on {path} not met within {secs} s; last: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The tickets layer of an in-process node, for the flooding and snapshot tests: records
/// starting with `ok` are valid, the rest are "bad signatures"; a record is applied once
/// and then reported on `applied`.
pub struct FakeTickets {
    /// Records made on this relay, taken by the node's flood.
    pub outgoing: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Records in force here: the starting table plus every one applied.
    pub table: Vec<Vec<u8>>,
    /// Whether `snapshot` hands out `table` on link-up (off: flooding only).
    pub snapshots: bool,
    /// Each newly applied record.
    pub applied: mpsc::Sender<Vec<u8>>,
}

impl TicketHook for FakeTickets {
    fn drain_outgoing(&mut self, max: usize) -> Vec<Vec<u8>> {
        let mut q = self.outgoing.lock().unwrap_or_else(|p| p.into_inner());
        let n = max.min(q.len());
        q.drain(..n).collect()
    }
    fn apply_remote(&mut self, record: &[u8]) -> TicketApplied {
        if !record.starts_with(b"ok") {
            return TicketApplied::Bad;
        }
        if self.table.iter().any(|r| r == record) {
            return TicketApplied::Known;
        }
        self.table.push(record.to_vec());
        let _ = self.applied.send(record.to_vec());
        TicketApplied::New
    }
    fn snapshot(&mut self, max: usize) -> Vec<Vec<u8>> {
        if !self.snapshots {
            return Vec::new();
        }
        self.table.iter().take(max).cloned().collect()
    }
}
