//! Browser test: Debian's `chromium`, headless, opens `/dashboard` on a relay's admin listener
//! and checks in the rendered DOM what the relay serves; saves a screenshot per scenario under
//! `target/dashboard-*.png`.
//!
//! - one real relay process (`fastpubsub-relay run`, a subscriber and a publisher): its own row,
//!   live counters, zero links;
//! - three real relay processes (Tokyo, Novosibirsk, Frankfurt) whose mesh links go through
//!   `fastpubsub-linkemu` with the data set's delays (slow direct T–F, faster path through N):
//!   Tokyo's page shows the three relays, their links and the route through N with its
//!   saving, all learnt from the mesh-wide announcements;
//! - three and 100 relays with exact numbers: the admin listener, routes, `/v1/mesh` builder
//!   and page are the real ones, and the relay's `MeshState` is fed the summaries the relays
//!   of a converged mesh would announce (see dashboard_common), so the DOM can be checked
//!   against values known in advance.
//!
//! Needs `/usr/bin/chromium` (CI: `apt-get install -y chromium`); override with `CHROMIUM=…`.

mod dashboard_common;
mod mesh_common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use dashboard_common::{
    assert_saving_route_page, count, dataset, open_dashboard, shows_saving_route, summaries,
    tag_with, text_after, tnf,
};
use fastpubsub_relay::dashboard::access::AdminAccess;
use fastpubsub_relay::dashboard::routes::AdminRoutes;
use fastpubsub_relay::dashboard::server::AdminServer;
use fastpubsub_relay::dashboard::view::{MeshState, RelaySummary};
use fastpubsub_relay::metrics::{EdgeLimit, RelayMetrics};
use mesh_common::{
    Emu, RelayProc, free_udp, make_certs, mesh_relay_at, pub_tool, spawn_sub, start_relay_process,
    tmpdir, wait_for,
};

fn now_ms() -> u64 {
    fastpubsub_relay::app::admin::unix_ms()
}

/// A relay's admin side in this process: mesh picture and admin listener on 127.0.0.1:0.
struct Relay {
    addr: SocketAddr,
    mesh: Arc<Mutex<MeshState>>,
    metrics: Arc<RelayMetrics>,
}

fn start_relay(self_name: &str) -> Relay {
    let mesh = Arc::new(Mutex::new(MeshState::new(self_name)));
    let metrics = Arc::new(RelayMetrics::default());
    let routes = Arc::new(AdminRoutes {
        access: AdminAccess::loopback_only(),
        metrics: metrics.clone(),
        mesh: mesh.clone(),
        status: None,
    });
    let server = AdminServer::bind("127.0.0.1:0".parse().expect("addr"), routes, now_ms)
        .expect("bind admin listener");
    let addr = server.local_addr().expect("local addr");
    let ex = Arc::new(smol::Executor::new());
    std::thread::spawn(move || {
        let spawner = ex.clone();
        let _ = smol::block_on(ex.run(server.run(move |t| spawner.spawn(t).detach())));
    });
    Relay {
        addr,
        mesh,
        metrics,
    }
}

fn feed(relay: &Relay, all: Vec<RelaySummary>) {
    let mut mesh = relay.mesh.lock().expect("mesh lock");
    for s in all {
        mesh.update(s, now_ms()).expect("summary accepted");
    }
}

/// A real relay process with one subscriber and three publishes: its own row, live counters,
/// no links. The template for the three-relay mesh scenario once the mesh exists.
#[test]
fn single_relay_shows_its_own_row_and_no_links() {
    let relay = start_relay_process(&["--admin-listen", "127.0.0.1:0"]);
    let admin = relay.admin.expect("admin listener address");
    let url = format!("ws://{}/ws", relay.edge);
    let mut sub = spawn_sub(&url, &[], "demo", "public.#");
    wait_for(admin, "/v1/mesh", 20, |b| {
        b.contains("\"subscriptions\":1,")
    });
    for i in 0..3 {
        pub_tool(&url, "demo", "public.chat", &format!("hello {i}"));
    }
    let mesh = wait_for(admin, "/v1/mesh", 20, |b| {
        b.contains("\"messages_in_total\":3,")
    });
    let name = mesh
        .split("\"self_name\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("self_name")
        .to_string();

    let dom = open_dashboard(&format!("http://{admin}/dashboard"), "dashboard-single");
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page never rendered /v1/mesh:\n{dom}"
    );
    let row = tag_with(&dom, "<tr ", &format!("data-relay=\"{name}\"")).expect("relay row");
    let row_html = &dom[dom.find(row).expect("row")..];
    let row_html = &row_html[..row_html.find("</tr>").expect("row end")];
    assert!(
        row_html.contains(&format!("{name} (this relay)")),
        "{row_html}"
    );
    // connections, subscriptions
    assert!(
        row_html.contains("<td class=\"n\">1</td><td class=\"n\">1</td>"),
        "{row_html}"
    );
    let dot =
        tag_with(&dom, "<circle ", &format!("data-relay=\"{name}\"")).expect("relay on the map");
    assert!(
        dot.contains("class=\"self"),
        "self marker on the map: {dot}"
    );
    assert_eq!(count(&dom, "data-link="), 0, "no links");
    assert_eq!(text_after(&dom, "data-k=\"relays\""), "1");
    assert_eq!(text_after(&dom, "data-k=\"links\""), "0/0");
    assert_eq!(text_after(&dom, "data-k=\"backlog\""), "0 / 0");
    assert_eq!(text_after(&dom, "data-k=\"edge-limits\""), "0");
    // (The page's own connections hold a few bytes.)
    let detail = text_after(&dom, "data-k=\"edge-limits-detail\"");
    assert!(
        detail.starts_with("none hit; ") && detail.ends_with(" KiB held, 0 handshakes pending"),
        "{detail}"
    );
    assert!(text_after(&dom, "id=\"status\"").contains("live"));
    assert!(
        dom.contains("id=\"land\" class=\"land\" d=\"M"),
        "land outline not loaded"
    );
    sub.kill();
}

/// The relay ids of `/v1/mesh`'s `relays` by name.
fn relay_ids(mesh: &serde_json::Value) -> Vec<(String, u64)> {
    mesh["relays"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| Some((r["name"].as_str()?.to_owned(), r["id"].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// `(via, saving_ms)` of the pair `src`→`dst` in a `/v1/mesh` document.
fn pair(mesh: &serde_json::Value, src: &str, dst: &str) -> Option<(Vec<u64>, f64)> {
    let ids = relay_ids(mesh);
    let id = |n: &str| ids.iter().find(|(m, _)| m == n).map(|(_, i)| *i);
    let (s, d) = (id(src)?, id(dst)?);
    mesh["pairs"].as_array()?.iter().find_map(|p| {
        (p[0].as_u64()? == s && p[1].as_u64()? == d && p[3].as_bool()?).then(|| {
            let via = p[2].as_array()?.iter().filter_map(|v| v.as_u64()).collect();
            Some((via, p[7].as_f64()?))
        })?
    })
}

/// Whether `saving` (ms) of `src`→`dst` counts as improved, as the page counts it (and only
/// then selects the route): at least `min_saving_ms` and `min_saving_ratio` of the direct RTT.
/// A loaded machine inflates each link's RTT, the relay path's twice, which can keep a
/// positive saving under the page's threshold for a while.
fn improved(mesh: &serde_json::Value, src: &str, dst: &str, saving: f64) -> bool {
    let ids = relay_ids(mesh);
    let id = |n: &str| ids.iter().find(|(m, _)| m == n).map(|(_, i)| *i);
    let (Some(s), Some(d)) = (id(src), id(dst)) else {
        return false;
    };
    let direct = mesh["pairs"].as_array().and_then(|ps| {
        ps.iter()
            .find(|p| p[0].as_u64() == Some(s) && p[1].as_u64() == Some(d))
            .and_then(|p| p[6].as_f64())
    });
    let h = &mesh["headline"];
    let (min_ms, min_ratio) = (
        h["min_saving_ms"].as_f64().unwrap_or(5.0),
        h["min_saving_ratio"].as_f64().unwrap_or(0.1),
    );
    direct.is_some_and(|d| saving >= min_ms && saving >= min_ratio * d)
}

/// Three real relay processes, every mesh link through the link emulator with the data set's
/// delays (T–F 221.8 ms RTT direct, T–N + N–F = 180 ms): Tokyo's dashboard shows the three
/// relays (as announced through the mesh), their three links, and Tokyo→Frankfurt through
/// Novosibirsk with a positive saving. Screenshot: `target/dashboard-processes.png`.
#[test]
fn three_relay_processes_show_links_and_the_saving_route() {
    let dir = tmpdir("dash-processes");
    let certs = make_certs(&dir, "mesh", &["tokyo", "novosibirsk", "frankfurt"]);
    let (mt, mn, mf) = (free_udp(), free_udp(), free_udp());
    let e_nf = Emu::delay(mf, "45ms");
    let e_tn = Emu::delay(mn, "45ms");
    let e_tf = Emu::delay(mf, "110.9ms");
    let start = |name: &str, at: SocketAddr, pos: (&str, &str), peers: &[(&str, SocketAddr)]| {
        let extra = [
            "--insecure-no-auth",
            "--region",
            "test",
            "--lat",
            pos.0,
            "--lon",
            pos.1,
            "--announce-interval-ms",
            "500",
        ];
        mesh_relay_at(&certs, name, &at.to_string(), peers, &extra)
    };
    let relays: Vec<RelayProc> = std::thread::scope(|s| {
        let f = s.spawn(|| start("frankfurt", mf, ("50.1167", "8.6833"), &[]));
        let n = s.spawn(|| {
            start(
                "novosibirsk",
                mn,
                ("55.0167", "82.9333"),
                &[("frankfurt", e_nf.listen)],
            )
        });
        let t = s.spawn(|| {
            start(
                "tokyo",
                mt,
                ("35.6833", "139.7667"),
                &[("novosibirsk", e_tn.listen), ("frankfurt", e_tf.listen)],
            )
        });
        [t, n, f]
            .into_iter()
            .map(|h| h.join().expect("relay started"))
            .collect()
    });
    let tokyo = relays[0].admin();

    // Wait (at most 60 s) until Tokyo's picture holds the three relays, their links (each end
    // reports its own: six rows, all up) and T→F through N with a positive saving, then render
    // the page. A heavily loaded machine inflates the measured RTTs, two links' worth on the
    // relay path, and can move the route to the direct link for a while: if it moved before
    // the page rendered, wait for the mesh again (three tries).
    let names = ["tokyo", "novosibirsk", "frankfurt"];
    let mut tries = 0;
    let dom = loop {
        tries += 1;
        let body = wait_for(tokyo, "/v1/mesh", 60, |b| {
            let Ok(m) = serde_json::from_str::<serde_json::Value>(b) else {
                return false;
            };
            let ids = relay_ids(&m);
            let links_up = m["links"]
                .as_array()
                .map_or(0, |l| l.iter().filter(|r| r[2].as_u64() == Some(1)).count());
            let n = ids
                .iter()
                .find(|(name, _)| name == "novosibirsk")
                .map(|x| x.1);
            ids.len() == 3
                && links_up == 6
                && pair(&m, "tokyo", "frankfurt").is_some_and(|(via, saving)| {
                    n.is_some_and(|n| via == [n]) && improved(&m, "tokyo", "frankfurt", saving)
                })
        });
        let mesh: serde_json::Value = serde_json::from_str(&body).expect("mesh JSON");
        let (_, saving) = pair(&mesh, "tokyo", "frankfurt").expect("pair T->F");
        println!("Tokyo's /v1/mesh: T->F through N saves {saving} ms RTT");
        let dom = open_dashboard(&format!("http://{tokyo}/dashboard"), "dashboard-processes");
        if shows_saving_route(&dom, names) || tries == 3 {
            break dom;
        }
        println!("try {tries}: the route changed before the page rendered (machine load)");
    };
    assert_saving_route_page(&dom, names);
    assert!(
        dom.contains("data-link=\"frankfurt|tokyo\""),
        "the direct T–F link"
    );
    assert_eq!(text_after(&dom, "data-k=\"relays\""), "3");
    drop(relays);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn three_relays_show_links_and_the_saving_route() {
    let (sites, rtt) = tnf();
    let relay = start_relay("Tokyo");
    feed(&relay, summaries(&sites, &rtt));
    // The link backlog card reads this relay's /metrics.
    relay.metrics.mesh_links_backed_up.set(2);
    relay.metrics.mesh_links_slow.set(1);
    relay.metrics.mesh_messages_dropped_slow_link.add(17);
    relay.metrics.mesh_backpressure_episodes.add(4);
    relay.metrics.mesh_backpressure_ms.add(2500);
    // So does the edge limits card.
    relay
        .metrics
        .edge_limit_hits
        .mirror(EdgeLimit::CommandRate, 40);
    relay.metrics.edge_limit_hits.mirror(EdgeLimit::ReadStop, 3);
    relay.metrics.edge_held_bytes.set(5 * 1024);
    relay.metrics.edge_handshakes_pending.set(2);

    let dom = open_dashboard(
        &format!("http://{}/dashboard", relay.addr),
        "dashboard-three",
    );
    assert_eq!(text_after(&dom, "data-k=\"backlog\""), "2 / 1");
    assert_eq!(
        text_after(&dom, "data-k=\"backlog-detail\""),
        "17 dropped on slow links; intake paused 4× (2.5 s)"
    );
    assert_eq!(text_after(&dom, "data-k=\"edge-limits\""), "43");
    assert_eq!(
        text_after(&dom, "data-k=\"edge-limits-detail\""),
        "command rate 40 · read stop 3; 5 KiB held, 2 handshakes pending"
    );
    let saving = assert_saving_route_page(&dom, ["Tokyo", "Novosibirsk", "Frankfurt"]);
    assert!((saving - 41.8).abs() < 0.05, "saving {saving}");
    assert!(dom.contains("data-link=\"Frankfurt|Tokyo\""));
    assert!(dom.contains("class=\"path\""), "path drawn on the map");
    assert!(
        dom.contains("class=\"direct\""),
        "direct link drawn on the map"
    );
    assert_eq!(text_after(&dom, "data-k=\"share\""), "33.3 %");
    assert_eq!(text_after(&dom, "data-k=\"median\""), "41.8 ms");
    assert!(
        dom.contains("<tr data-src=\"Tokyo\" data-dst=\"Frankfurt\">"),
        "largest savings table"
    );
}

#[test]
fn hundred_relays_from_the_data_set_render() {
    let (sites, rtt) = dataset();
    let relay = start_relay(&sites[0].name);
    feed(&relay, summaries(&sites, &rtt));
    let dom = open_dashboard(
        &format!("http://{}/dashboard", relay.addr),
        "dashboard-hundred",
    );
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page never rendered /v1/mesh"
    );
    assert_eq!(
        count(&dom, "<tr data-relay="),
        100,
        "one table row per relay"
    );
    assert_eq!(count(&dom, "<circle r=\"1.6\" data-relay="), 100);
    assert_eq!(count(&dom, "<path data-link="), 4950);
    assert_eq!(text_after(&dom, "data-k=\"relays\""), "100");
    let headline = relay
        .mesh
        .lock()
        .expect("mesh lock")
        .view(now_ms())
        .headline;
    let share = text_after(&dom, "data-k=\"share\"");
    assert_eq!(
        share,
        format!("{:.1} %", headline.improved_share * 100.0),
        "headline shown"
    );
    println!(
        "100 relays: headline {share}, median {}",
        text_after(&dom, "data-k=\"median\"")
    );
    assert!(dom.contains("data-saving=\""), "a saving route is selected");
}

/// Anomalies and route changes from successive summaries reach the page: Tokyo–Novosibirsk
/// slows to 300 ms (RTT anomaly on both ends, Tokyo→Frankfurt moves to the direct link) and
/// Novosibirsk–Frankfurt loses 20 % of its probes.
#[test]
fn anomalies_and_route_changes_are_listed() {
    let (sites, mut rtt) = tnf();
    let relay = start_relay("Tokyo");
    feed(&relay, summaries(&sites, &rtt));
    rtt[0][1] = Some(300.0);
    rtt[1][0] = Some(300.0);
    let mut later = summaries(&sites, &rtt);
    for s in &mut later {
        for l in &mut s.links {
            if (s.name == "Novosibirsk" && l.peer == "Frankfurt")
                || (s.name == "Frankfurt" && l.peer == "Novosibirsk")
            {
                l.loss = 0.2;
            }
        }
    }
    feed(&relay, later);

    let dom = open_dashboard(
        &format!("http://{}/dashboard", relay.addr),
        "dashboard-anomalies",
    );
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page never rendered /v1/mesh"
    );
    assert_eq!(
        count(&dom, "<tr data-kind=\"rtt_high\">"),
        2,
        "RTT anomaly on both ends"
    );
    assert_eq!(
        count(&dom, "<tr data-kind=\"loss_spike\">"),
        2,
        "loss spike on both ends"
    );
    assert!(dom.contains("<span class=\"kind rtt_high\">rtt high</span>"));
    assert!(
        dom.contains("300.0 ms (baseline 95.0 ms)"),
        "value and baseline shown"
    );
    assert!(
        dom.contains("<td>Tokyo</td><td>Frankfurt</td><td>Novosibirsk → Frankfurt</td>"),
        "route change logged"
    );
    let lossy = tag_with(&dom, "<path ", "data-link=\"Frankfurt|Novosibirsk\"").expect("N–F link");
    assert!(lossy.contains("lossy"), "a lossy link is dashed: {lossy}");
}
