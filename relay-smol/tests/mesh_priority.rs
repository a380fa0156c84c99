//! Control-plane priority (issue #10, item 2): the mesh runs on a thread of its own
//! (`app::mesh::attach`, as `run` wires it), so a saturated edge cannot knock the relay out
//! of the mesh.
//!
//! One edge thread (a real `ws::Relay` on its executor) carries two mesh nodes linked to a
//! third node `b`:
//! - `a`, attached to the edge as `run` does it: its node on the `mesh` thread;
//! - `c`, the way the mesh ran before: its QUIC driver and node as a task on the edge's own
//!   executor (the control of the experiment).
//!
//! Then a task on the edge thread keeps it busy without yielding for [`HOG`] (4× the 1 s +
//! RTT after which an unanswered link is declared down). `b` must see `a`'s link up the
//! whole time with its probes answered, and its route to `a` kept; `c`'s link must go down
//! (it shows the hog really starved whatever shares the edge's thread, so this test fails if
//! the mesh is moved back onto it).

#![allow(clippy::disallowed_methods)]

mod mesh_common;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fastpubsub_relay::app::admin::{install, options_from_cli};
use fastpubsub_relay::app::mesh::{self as app_mesh, MeshTask};
use fastpubsub_relay::app::status::RelayStatus;
use fastpubsub_relay::auth::AllowAll;
use fastpubsub_relay::config::Config;
use fastpubsub_relay::mesh::config::MeshConfig;
use fastpubsub_relay::quic::certs::{CaPem, generate_ca};
use fastpubsub_relay::ws::Relay;
use mesh_common::{identity, seed, start_node};
use smol::LocalExecutor;
use smol::channel::{Sender, bounded, unbounded};

/// How long the edge thread is kept busy.
const HOG: Duration = Duration::from_secs(4);
/// Generous limit for the links to come up and be measured on a loaded machine.
const CONVERGE: Duration = Duration::from_secs(30);

/// The edge thread with `a` attached and `c` on its executor.
struct Edge {
    /// Asks the edge thread to stay busy this long; it answers on the channel when done.
    hog: Sender<(Duration, mpsc::Sender<Duration>)>,
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn mesh_config(name: &str, b: SocketAddr) -> MeshConfig {
    let mut cfg = MeshConfig::new(name, "127.0.0.1:0".parse().expect("addr"));
    cfg.region = "test".into();
    cfg.seeds = vec![seed("b", b)];
    cfg
}

fn start_edge(ca: &CaPem, b: SocketAddr) -> Edge {
    let (id_a, id_c) = (identity("a", ca), identity("c", ca));
    let (hog, hog_rx) = unbounded::<(Duration, mpsc::Sender<Duration>)>();
    let (stop, stop_rx) = bounded::<()>(1);
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let ex = Rc::new(LocalExecutor::new());
        let config = Config::new("127.0.0.1:0".parse().expect("addr"));
        let mut relay = Relay::bind(&config, Rc::new(AllowAll)).expect("bind edge");
        let mut opts = options_from_cli("off", None, relay.local_addr(), false).expect("opts");
        opts.identity.name = "a".into();
        let admin = install(&mut relay, opts, &ex).expect("admin");
        // a: as `run` wires it.
        app_mesh::attach(&mut relay, &ex, mesh_config("a", b), &id_a, admin, None)
            .expect("attach a");
        // c: its driver and node as a task of the edge's executor.
        let (driver, node) = app_mesh::bind(mesh_config("c", b), &id_c).expect("bind c");
        let task = MeshTask::new(node, fastpubsub_relay::clock::now(), Box::new(|_| {}));
        let (c_cmd, c_rx) = unbounded();
        ex.spawn(async move {
            let _ = app_mesh::run(driver, task, c_rx).await;
        })
        .detach();
        // The saturated edge: a task that does not yield until its time is up.
        ex.spawn(async move {
            while let Ok((d, done)) = hog_rx.recv().await {
                let t0 = Instant::now();
                while t0.elapsed() < d {
                    std::hint::spin_loop();
                }
                let _ = done.send(t0.elapsed());
            }
        })
        .detach();
        let _ = ready_tx.send(());
        let shutdown = async move {
            let _ = stop_rx.recv().await;
            drop(c_cmd);
        };
        smol::block_on(ex.run(relay.run(ex.clone(), shutdown))).expect("edge ran");
    });
    ready_rx.recv_timeout(CONVERGE).expect("edge started");
    Edge {
        hog,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// (up, probes answered) of `b`'s link to `peer`.
fn link(s: &RelayStatus, peer: &str) -> Option<(bool, u64)> {
    s.mesh
        .links
        .iter()
        .find(|l| l.peer.as_deref() == Some(peer))
        .map(|l| (l.up, l.probes_answered))
}

fn next_hop(s: &RelayStatus, dest: &str) -> Option<String> {
    s.mesh
        .routes
        .iter()
        .find(|r| r.dest == dest)
        .and_then(|r| r.next_hop.clone())
}

#[test]
fn a_busy_edge_does_not_take_the_relay_out_of_the_mesh() {
    let ca = generate_ca().expect("ca");
    let b = start_node("b", &ca, vec![], |cfg| cfg.region = "test".into());
    let edge = start_edge(&ca, b.addr);

    // Both links up, answered, and routed at b.
    let t0 = Instant::now();
    let before = loop {
        let s = b.status_typed();
        let ready = |p: &str| {
            matches!(link(&s, p), Some((true, n)) if n > 0) && next_hop(&s, p).as_deref() == Some(p)
        };
        if ready("a") && ready("c") {
            break s;
        }
        assert!(
            t0.elapsed() < CONVERGE,
            "links a and c not up after {CONVERGE:?}: {}",
            s.to_json()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (_, a_answered_before) = link(&before, "a").expect("link a");
    eprintln!("links up after {:?}", t0.elapsed());

    // Keep the edge busy and watch b meanwhile.
    let (done_tx, done_rx) = mpsc::channel();
    edge.hog.send_blocking((HOG, done_tx)).expect("edge alive");
    let mut polls = 0;
    let mut c_down = false;
    let busy_for = loop {
        let s = b.status_typed();
        polls += 1;
        let (a_up, _) = link(&s, "a").expect("b keeps its link to a");
        assert!(
            a_up,
            "a's link went down while the edge was busy: {}",
            s.to_json()
        );
        assert_eq!(
            next_hop(&s, "a").as_deref(),
            Some("a"),
            "b lost its route to a while the edge was busy"
        );
        c_down |= link(&s, "c").is_none_or(|(up, _)| !up);
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(d) => break d,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("edge thread gone: {e}"),
        }
        assert!(
            t0.elapsed() < CONVERGE + 4 * HOG,
            "the busy task never ended"
        );
    };
    let after = b.status_typed();
    let (a_up, a_answered_after) = link(&after, "a").expect("link a");
    let answered = a_answered_after - a_answered_before;
    eprintln!(
        "edge busy for {busy_for:?}: {polls} polls of b, a up throughout with {answered} probes \
         answered, c down: {c_down}"
    );
    assert!(busy_for >= HOG, "the edge was busy for {busy_for:?} only");
    assert!(a_up);
    // Probes go out at least once a second: a must have answered through the busy time.
    assert!(
        answered >= HOG.as_secs() / 2,
        "a answered only {answered} probes in {busy_for:?}"
    );
    assert!(
        c_down,
        "c (the mesh on the edge's executor) was never seen down: the edge was not really busy"
    );
    drop(edge);
}
