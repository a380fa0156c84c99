//! Shared by the dashboard tests: relay summaries for a mesh whose links have given RTTs and
//! whose route tables hold the shortest paths over those RTTs (as a converged latency
//! distance-vector mesh would), and the real data set of 100 cities.
#![allow(dead_code)] // each test file uses a different part

use fastpubsub_relay::dashboard::view::{LinkSummary, RelayCounters, RelaySummary, RouteSummary};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One relay of a test mesh.
pub struct Site {
    pub name: String,
    pub region: String,
    pub lat: f64,
    pub lon: f64,
}

/// `rtt[i][j]`: RTT of the direct link i–j in ms, `None` = no link.
pub type Rtt = Vec<Vec<Option<f64>>>;

/// Shortest-path next hops and distances (Floyd–Warshall over link RTTs).
pub fn shortest(rtt: &Rtt) -> (Vec<Vec<f64>>, Vec<Vec<Option<usize>>>) {
    let n = rtt.len();
    let mut d = vec![vec![f64::INFINITY; n]; n];
    let mut next = vec![vec![None; n]; n];
    for i in 0..n {
        d[i][i] = 0.0;
        next[i][i] = Some(i);
        for j in 0..n {
            if let (Some(r), true) = (rtt[i][j], i != j) {
                d[i][j] = r;
                next[i][j] = Some(j);
            }
        }
    }
    for k in 0..n {
        for i in 0..n {
            for j in 0..n {
                let via = d[i][k] + d[k][j];
                if via < d[i][j] - 1e-9 {
                    d[i][j] = via;
                    next[i][j] = next[i][k];
                }
            }
        }
    }
    (d, next)
}

/// The summaries every relay of the mesh would announce after convergence.
pub fn summaries(sites: &[Site], rtt: &Rtt) -> Vec<RelaySummary> {
    let (d, next) = shortest(rtt);
    sites
        .iter()
        .enumerate()
        .map(|(i, s)| RelaySummary {
            name: s.name.clone(),
            region: s.region.clone(),
            lat: Some(s.lat),
            lon: Some(s.lon),
            url: format!(
                "wss://{}.example.invalid/ws",
                s.name.to_lowercase().replace(' ', "-")
            ),
            counters: RelayCounters::default(),
            links: (0..sites.len())
                .filter_map(|j| {
                    let r = rtt[i][j]?;
                    Some(LinkSummary {
                        peer: sites[j].name.clone(),
                        up: true,
                        rtt_ms: r,
                        rtt_min_ms: r * 0.98,
                        jitter_ms: 0.5,
                        loss: 0.0,
                    })
                })
                .collect(),
            routes: (0..sites.len())
                .filter(|&j| j != i && d[i][j].is_finite())
                .filter_map(|j| {
                    Some(RouteSummary {
                        dst: sites[j].name.clone(),
                        next_hop: sites[next[i][j]?].name.clone(),
                        // core::route metrics are one-way latency
                        metric_ms: d[i][j] / 2.0,
                    })
                })
                .collect(),
        })
        .collect()
}

/// Tokyo, Novosibirsk, Frankfurt with the numbers: T–F 221.8 ms direct, T–N–F 180 ms.
pub fn tnf() -> (Vec<Site>, Rtt) {
    let sites = vec![
        Site {
            name: "Tokyo".into(),
            region: "Asia".into(),
            lat: 35.68,
            lon: 139.69,
        },
        Site {
            name: "Novosibirsk".into(),
            region: "Asia".into(),
            lat: 55.03,
            lon: 82.92,
        },
        Site {
            name: "Frankfurt".into(),
            region: "Europe".into(),
            lat: 50.11,
            lon: 8.68,
        },
    ];
    let rtt = vec![
        vec![None, Some(95.0), Some(221.8)],
        vec![Some(95.0), None, Some(85.0)],
        vec![Some(221.8), Some(85.0), None],
    ];
    (sites, rtt)
}

fn dataset_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // In the repository (data/latency) or beside it, as the issues name it (../shared/data/latency).
    for dir in [
        manifest.join("../data/latency"),
        manifest.join("../../shared/data/latency"),
    ] {
        if dir.join("matrix.csv").is_file() && dir.join("locations.csv").is_file() {
            return dir;
        }
    }
    panic!(
        "latency data set not found in data/latency/ or ../shared/data/latency/ (locations.csv, matrix.csv)"
    );
}

/// The 100 cities and their measured RTT matrix (full mesh).
pub fn dataset() -> (Vec<Site>, Rtt) {
    let dir = dataset_dir();
    let locs = std::fs::read_to_string(dir.join("locations.csv")).expect("read locations.csv");
    let sites: Vec<Site> = locs
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Site {
                name: f[0].to_string(),
                lat: f[1].parse().expect("lat"),
                lon: f[2].parse().expect("lon"),
                region: f[4].to_string(),
            }
        })
        .collect();
    let index: std::collections::HashMap<&str, usize> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut rtt = vec![vec![None; sites.len()]; sites.len()];
    let matrix = std::fs::read_to_string(dir.join("matrix.csv")).expect("read matrix.csv");
    for l in matrix.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.split(',').collect();
        let (a, b) = (index[f[0]], index[f[1]]);
        rtt[a][b] = Some(f[2].parse::<f64>().expect("rtt"));
    }
    (sites, rtt)
}

/// Longest a chromium run may take.
pub const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// One chromium at a time in a test binary: on two cores, browsers run in parallel by the test
/// threads starve the relays under test and distort the RTTs they measure.
static CHROMIUM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs headless chromium on `url` and returns the DOM after the page's scripts ran; also
/// writes `target/<shot>.png`.
pub fn open_dashboard(url: &str, shot: &str) -> String {
    let _one_at_a_time = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
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
pub fn text_after(dom: &str, marker: &str) -> String {
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
pub fn tag_with<'a>(dom: &'a str, start: &str, attr: &str) -> Option<&'a str> {
    dom.match_indices(start).find_map(|(at, _)| {
        let tag = &dom[at..at + dom[at..].find('>')? + 1];
        tag.contains(attr).then_some(tag)
    })
}

pub fn count(dom: &str, needle: &str) -> usize {
    dom.matches(needle).count()
}

/// Whether a rendered page shows the path `a`→`b`→`c` (or back) selected with a positive
/// saving (see [`assert_saving_route_page`] for the full check).
pub fn shows_saving_route(dom: &str, [a, b, c]: [&str; 3]) -> bool {
    let path = dom.contains(&format!("data-path=\"{a}&gt;{b}&gt;{c}\""))
        || dom.contains(&format!("data-path=\"{c}&gt;{b}&gt;{a}\""));
    let saving = dom
        .split("data-saving=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse::<f64>().ok());
    path && saving.is_some_and(|s| s > 0.0)
}

/// Checks a rendered three-relay page whose relay path `a`→`b`→`c` (or back) saves over the
/// direct `a`–`c` link: rendered, a row and a map dot per relay, three links, that path
/// selected; returns the saving it shows (ms).
pub fn assert_saving_route_page(dom: &str, [a, b, c]: [&str; 3]) -> f64 {
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page never rendered /v1/mesh:\n{dom}"
    );
    for name in [a, b, c] {
        assert!(
            dom.contains(&format!("<tr data-relay=\"{name}\"")),
            "row of {name}"
        );
        assert!(
            dom.contains(&format!("<circle r=\"1.6\" data-relay=\"{name}\"")),
            "dot of {name}"
        );
    }
    assert_eq!(count(dom, "<path data-link="), 3, "three links drawn");
    // The page selects the largest saving: a -> c (or back) through b.
    assert!(
        dom.contains(&format!("data-path=\"{a}&gt;{b}&gt;{c}\""))
            || dom.contains(&format!("data-path=\"{c}&gt;{b}&gt;{a}\"")),
        "the saving route is selected"
    );
    let saving: f64 = dom
        .split("data-saving=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .and_then(|s| s.parse().ok())
        .expect("pair info with a saving");
    assert!(saving > 0.0, "saving shown: {saving}");
    saving
}
