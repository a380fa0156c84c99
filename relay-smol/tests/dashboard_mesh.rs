//! The dashboard of a real three-relay mesh: mesh nodes Tokyo, Novosibirsk and Frankfurt on
//! 127.0.0.1, every link through `fastpubsub-linkemu` with the data set's delays (T–F
//! 221.8 ms RTT direct, T–N + N–F = 180 ms). Once T routes to F through N, each node's own
//! status becomes its relay summary (`app::status::summary_parts`, as
//! `AdminHandle::set_status` does for the local relay) and goes into Tokyo's mesh picture.
//! The mesh-wide announcements (issue 6 item 1) are the only part this test carries by hand.
//!
//! Checks `/v1/mesh` (measured links, the path in use, a positive saving) and, in headless
//! chromium, the page: three relays, three links, the route with its saving. Screenshot:
//! `target/dashboard-mesh.png`.

mod dashboard_common;
mod mesh_common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fastpubsub_core::mesh::GeoPos;
use fastpubsub_relay::app::admin::unix_ms;
use fastpubsub_relay::app::status::{RelayStatus, summary_parts};
use fastpubsub_relay::clock;
use fastpubsub_relay::dashboard::access::AdminAccess;
use fastpubsub_relay::dashboard::routes::AdminRoutes;
use fastpubsub_relay::dashboard::server::AdminServer;
use fastpubsub_relay::dashboard::view::{MeshState, RelayCounters, RelaySummary};
use fastpubsub_relay::mesh::config::Seed;
use fastpubsub_relay::metrics::RelayMetrics;
use fastpubsub_relay::quic::certs::{CaPem, generate_ca};
use mesh_common::{Emu, Node, http_get, seed, start_node};

fn start(name: &str, region: &str, lat: f64, lon: f64, ca: &CaPem, seeds: Vec<Seed>) -> Node {
    start_node(name, ca, seeds, |cfg| {
        cfg.region = region.into();
        cfg.position = Some(GeoPos {
            lat_udeg: (lat * 1e6) as i32,
            lon_udeg: (lon * 1e6) as i32,
        });
        cfg.edge_url = format!("wss://{name}.example.invalid/ws");
    })
}

fn summary(status: &RelayStatus) -> RelaySummary {
    let (id, links, routes) = summary_parts(&status.mesh);
    RelaySummary {
        name: id.name,
        region: id.region,
        lat: id.position.map(|p| p.0),
        lon: id.position.map(|p| p.1),
        url: id.url,
        counters: RelayCounters::default(),
        links,
        routes,
    }
}

#[test]
fn dashboard_of_a_three_relay_mesh_shows_the_saving_route() {
    let ca = generate_ca().expect("ca");
    let f = start("frankfurt", "europe", 50.11, 8.68, &ca, vec![]);
    let e_nf = Emu::delay(f.addr, "45ms");
    let n = start(
        "novosibirsk",
        "asia",
        55.03,
        82.92,
        &ca,
        vec![seed("frankfurt", e_nf.listen)],
    );
    let e_tn = Emu::delay(n.addr, "45ms");
    let e_tf = Emu::delay(f.addr, "110.9ms");
    let t = start(
        "tokyo",
        "asia",
        35.68,
        139.69,
        &ca,
        vec![
            seed("novosibirsk", e_tn.listen),
            seed("frankfurt", e_tf.listen),
        ],
    );

    // Wait (at most 30 s) until T routes to F through N and every relay has its two links up.
    let deadline = clock::now() + Duration::from_secs(30);
    let summaries = loop {
        let all: Vec<RelaySummary> = [&t, &n, &f]
            .iter()
            .map(|x| summary(&x.status_typed()))
            .collect();
        let via_n = all[0]
            .routes
            .iter()
            .any(|r| r.dst == "frankfurt" && r.next_hop == "novosibirsk");
        let links_up = all
            .iter()
            .all(|s| s.links.iter().filter(|l| l.up).count() == 2);
        if via_n && links_up {
            break all;
        }
        assert!(clock::now() < deadline, "mesh did not converge: {all:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    drop((e_nf, e_tn, e_tf)); // measurements are taken; the page needs only the relay

    let mesh = Arc::new(Mutex::new(MeshState::new("tokyo")));
    {
        let mut m = mesh.lock().expect("lock");
        for s in summaries {
            m.update(s, unix_ms())
                .expect("summary of a real node is valid");
        }
    }
    let view = mesh.lock().expect("lock").view(unix_ms());
    let id = |name: &str| {
        view.relays
            .iter()
            .position(|r| r.name == name)
            .expect("relay")
    };
    let (ti, ni, fi) = (id("tokyo"), id("novosibirsk"), id("frankfurt"));
    let tf = view
        .pairs
        .iter()
        .find(|p| p.0 == ti && p.1 == fi)
        .expect("pair T->F");
    assert_eq!(tf.2, vec![ni], "T->F through N");
    assert!(tf.3, "complete path");
    let (path, direct, saving) = (
        tf.5.expect("path RTT"),
        tf.6.expect("direct RTT"),
        tf.7.expect("saving"),
    );
    eprintln!("measured: T->F path {path} ms, direct {direct} ms, saving {saving} ms");
    assert!(
        (175.0..200.0).contains(&path),
        "path RTT {path} should be about 180 ms"
    );
    assert!(
        (215.0..240.0).contains(&direct),
        "direct RTT {direct} should be about 221.8 ms"
    );
    assert!(saving >= 15.0, "saving {saving} ms");
    assert!(view.headline.improved >= 1, "{:?}", view.headline);
    assert_eq!(view.links.len(), 6);

    // The page, served by the admin listener of Tokyo's mesh picture.
    let routes = Arc::new(AdminRoutes {
        access: AdminAccess::loopback_only(),
        metrics: Arc::new(RelayMetrics::default()),
        mesh: mesh.clone(),
        status: Some(Arc::new({
            let st = t.status_text();
            move |_| Some(st.clone())
        })),
    });
    let server =
        AdminServer::bind("127.0.0.1:0".parse().expect("addr"), routes, unix_ms).expect("bind");
    let admin = server.local_addr().expect("addr");
    let ex = Arc::new(smol::Executor::new());
    std::thread::spawn(move || {
        let spawner = ex.clone();
        let _ = smol::block_on(ex.run(server.run(move |t| spawner.spawn(t).detach())));
    });
    let (code, body) = http_get(admin, "/v1/status", None);
    assert_eq!(code, 200);
    assert!(body.contains("\"name\":\"tokyo\""), "{body}");

    let dom =
        dashboard_common::open_dashboard(&format!("http://{admin}/dashboard"), "dashboard-mesh");
    dashboard_common::assert_saving_route_page(&dom, ["tokyo", "novosibirsk", "frankfurt"]);
}
