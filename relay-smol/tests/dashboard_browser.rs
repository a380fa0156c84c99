//! Browser test: Debian's `chromium`, headless, opens `/dashboard` on a relay's admin listener
//! and checks in the rendered DOM what the relay serves; saves a screenshot per scenario under
//! `target/dashboard-*.png`.
//!
//! - one real relay process (`fastpubsub-relay run`, a subscriber and a publisher): its own row,
//!   live counters, zero links;
//! - three and 100 relays: the admin listener, routes, `/v1/mesh` builder and page are the real
//!   ones, but the mesh-wide announcements do not exist yet, so the relay's `MeshState` is fed
//!   the summaries the relays of a converged mesh would announce (see dashboard_common). When
//!   the mesh lands, start three relay processes with the link emulator instead and keep
//!   `open_dashboard` and the DOM checks unchanged.
//!
//! Needs `/usr/bin/chromium` (CI: `apt-get install -y chromium`); override with `CHROMIUM=…`.

mod dashboard_common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashboard_common::{dataset, start_relay_process, summaries, tnf, wait_for};
use fastpubsub_relay::dashboard::access::AdminAccess;
use fastpubsub_relay::dashboard::routes::AdminRoutes;
use fastpubsub_relay::dashboard::server::AdminServer;
use fastpubsub_relay::dashboard::view::{MeshState, RelaySummary};
use fastpubsub_relay::metrics::RelayMetrics;

const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

fn now_ms() -> u64 {
    fastpubsub_relay::dashboard::edge::unix_ms()
}

/// A relay's admin side in this process: mesh picture and admin listener on 127.0.0.1:0.
struct Relay {
    addr: SocketAddr,
    mesh: Arc<Mutex<MeshState>>,
}

fn start_relay(self_name: &str) -> Relay {
    let mesh = Arc::new(Mutex::new(MeshState::new(self_name)));
    let routes = Arc::new(AdminRoutes {
        access: AdminAccess::loopback_only(),
        metrics: Arc::new(RelayMetrics::default()),
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
    Relay { addr, mesh }
}

fn feed(relay: &Relay, all: Vec<RelaySummary>) {
    let mut mesh = relay.mesh.lock().expect("mesh lock");
    for s in all {
        mesh.update(s, now_ms()).expect("summary accepted");
    }
}

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// Runs headless chromium on `url` and returns the DOM after the page's scripts ran; also
/// writes `target/<shot>.png`.
fn open_dashboard(url: &str, shot: &str) -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} not found: install Debian's chromium (apt-get install -y chromium) or set CHROMIUM"
    );
    let profile = target_dir().join(format!("chromium-profile-{shot}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let png = target_dir().join(format!("{shot}.png"));
    let _ = std::fs::remove_file(&png);
    let common = [
        "--headless".to_string(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--hide-scrollbars".into(),
        format!("--user-data-dir={}", profile.display()),
        // Let the page poll /v1/mesh and render before the DOM is taken.
        "--virtual-time-budget=6000".into(),
        "--window-size=1440,1200".into(),
    ];
    let dom_file = target_dir().join(format!("{shot}.dom.html"));
    let run = |extra: &str| -> String {
        // To a file, not a pipe: a 100-relay DOM is larger than a pipe buffer.
        let out = std::fs::File::create(&dom_file).expect("create DOM file");
        let mut child = Command::new(&chromium)
            .args(&common)
            .arg(extra)
            .arg(url)
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let start = fastpubsub_relay::clock::now();
        loop {
            if let Some(_status) = child.try_wait().expect("wait chromium") {
                break;
            }
            if start.elapsed() > CHROMIUM_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish within {CHROMIUM_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::read_to_string(&dom_file).unwrap_or_default()
    };
    let dom = run("--dump-dom");
    run(&format!("--screenshot={}", png.display()));
    let _ = std::fs::remove_dir_all(&profile);
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} missing or empty ({size} bytes)",
        png.display()
    );
    println!("screenshot: {} ({size} bytes)", png.display());
    dom
}

/// The text of the first element whose opening tag contains `marker`.
fn text_after(dom: &str, marker: &str) -> String {
    let Some(at) = dom.find(marker) else {
        return String::new();
    };
    let rest = &dom[at..];
    let Some(open_end) = rest.find('>') else {
        return String::new();
    };
    let body = &rest[open_end + 1..];
    body[..body.find('<').unwrap_or(body.len())].to_string()
}

/// The first opening tag starting with `start` that contains `attr`.
fn tag_with<'a>(dom: &'a str, start: &str, attr: &str) -> Option<&'a str> {
    dom.match_indices(start).find_map(|(at, _)| {
        let tag = &dom[at..at + dom[at..].find('>')? + 1];
        tag.contains(attr).then_some(tag)
    })
}

fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

/// A real relay process with one subscriber and three publishes: its own row, live counters,
/// no links. The template for the three-relay mesh scenario once the mesh exists.
#[test]
fn single_relay_shows_its_own_row_and_no_links() {
    let relay = start_relay_process(&["--admin-listen", "127.0.0.1:0"]);
    let admin = relay.admin.expect("admin listener address");
    let url = format!("ws://{}/ws", relay.edge);
    let mut sub = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_fastpubsub-relay"))
            .args(["sub", "--url", &url, "demo", "public.#"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sub"),
    );
    wait_for(admin, "/v1/mesh", 20, |b| {
        b.contains("\"subscriptions\":1,")
    });
    for i in 0..3 {
        let st = Command::new(env!("CARGO_BIN_EXE_fastpubsub-relay"))
            .args([
                "pub",
                "--url",
                &url,
                "demo",
                "public.chat",
                &format!("hello {i}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pub");
        assert!(st.success(), "pub failed");
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
    assert!(text_after(&dom, "id=\"status\"").contains("live"));
    assert!(
        dom.contains("id=\"land\" class=\"land\" d=\"M"),
        "land outline not loaded"
    );
    let _ = sub.0.kill();
}

struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn three_relays_show_links_and_the_saving_route() {
    let (sites, rtt) = tnf();
    let relay = start_relay("Tokyo");
    feed(&relay, summaries(&sites, &rtt));

    let dom = open_dashboard(
        &format!("http://{}/dashboard", relay.addr),
        "dashboard-three",
    );
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page never rendered /v1/mesh:\n{dom}"
    );
    for s in &sites {
        assert!(
            dom.contains(&format!("<tr data-relay=\"{}\"", s.name)),
            "row of {}",
            s.name
        );
        assert!(
            dom.contains(&format!("<circle r=\"1.6\" data-relay=\"{}\"", s.name)),
            "dot of {}",
            s.name
        );
    }
    assert_eq!(count(&dom, "<path data-link="), 3, "three links drawn");
    assert!(dom.contains("data-link=\"Frankfurt|Tokyo\""));
    // The page selects the largest saving: Tokyo -> Frankfurt (or back) through Novosibirsk.
    let saving: f64 = dom
        .split("data-saving=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("pair info with a saving");
    assert!((saving - 41.8).abs() < 0.05, "saving {saving}");
    assert!(
        dom.contains("data-path=\"Tokyo&gt;Novosibirsk&gt;Frankfurt\"")
            || dom.contains("data-path=\"Frankfurt&gt;Novosibirsk&gt;Tokyo\""),
        "path in use"
    );
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
