//! `/v1/mesh` content: the mesh picture built from relay summaries (paths, savings, headline),
//! anomalies and route changes derived from successive summaries, and every bound.

mod dashboard_common;

use dashboard_common::{dataset, shortest, summaries, tnf};
use fastpubsub_relay::dashboard::view::{
    EventKind, IMPROVED_MIN_MS, IMPROVED_MIN_RATIO, MAX_EVENTS, MAX_LINKS_PER_RELAY, MAX_RELAYS,
    MeshState, MeshView, RelaySummary, UpdateError,
};

const T0: u64 = 1_790_000_000_000;

fn state_with(all: &[RelaySummary], me: &str, now: u64) -> MeshState {
    let mut s = MeshState::new(me);
    for r in all {
        s.update(r.clone(), now).expect("valid summary");
    }
    s
}

fn id(v: &MeshView, name: &str) -> usize {
    v.relays
        .iter()
        .position(|r| r.name == name)
        .expect("relay in view")
}

#[test]
fn three_relays_show_the_relay_path_and_its_saving() {
    let (sites, rtt) = tnf();
    let all = summaries(&sites, &rtt);
    let v = state_with(&all, "Tokyo", T0).view(T0 + 500);
    assert_eq!(v.relays.len(), 3);
    assert_eq!(v.links.len(), 6, "every relay reports its two links");
    assert_eq!(v.pairs.len(), 6);
    let (t, n, f) = (id(&v, "Tokyo"), id(&v, "Novosibirsk"), id(&v, "Frankfurt"));
    assert!(v.relays[t].is_self && !v.relays[n].is_self);
    let tf = v
        .pairs
        .iter()
        .find(|p| p.0 == t && p.1 == f)
        .expect("T->F pair");
    assert_eq!(tf.2, vec![n], "T->F goes through Novosibirsk");
    let tn = v
        .pairs
        .iter()
        .find(|p| p.0 == t && p.1 == n)
        .expect("T->N pair");
    assert!(tn.2.is_empty(), "T->N is direct");
    assert_eq!((tn.5, tn.6, tn.7), (Some(95.0), Some(95.0), Some(0.0)));
    assert!(tf.3, "path complete");
    assert_eq!(tf.5, Some(180.0));
    assert_eq!(tf.6, Some(221.8));
    assert_eq!(tf.7, Some(41.8));
    // T->N and N->F are direct with no saving; T->F and F->T are improved.
    assert_eq!(v.headline.compared, 6);
    assert_eq!(v.headline.improved, 2);
    assert_eq!(v.headline.median_saving_ms, Some(41.8));
    assert!((v.headline.improved_share - 2.0 / 6.0).abs() < 1e-3);
    let json = serde_json::to_string(&v).expect("encode");
    assert!(
        json.contains("\"pairs\":[["),
        "pairs are compact rows: {json}"
    );
    println!("3 relays: /v1/mesh {} bytes", json.len());
}

#[test]
fn relays_without_links_or_routes_make_an_empty_but_valid_view() {
    let (sites, _) = tnf();
    let alone = summaries(&sites[..1], &vec![vec![None]]);
    let v = state_with(&alone, "Tokyo", T0).view(T0);
    assert_eq!(v.relays.len(), 1);
    assert!(v.links.is_empty() && v.pairs.is_empty());
    assert_eq!(v.headline.compared, 0);
    assert_eq!(v.headline.median_saving_ms, None);
}

#[test]
fn anomalies_and_route_changes_come_from_successive_summaries() {
    let (sites, mut rtt) = tnf();
    let mut s = state_with(&summaries(&sites, &rtt), "Tokyo", T0);
    assert!(
        s.view(T0).events.is_empty(),
        "a first sighting is not an anomaly"
    );
    assert!(s.view(T0).route_changes.is_empty());

    // Tokyo–Novosibirsk RTT triples: rtt_high on both ends, and T->F moves to the direct link.
    rtt[0][1] = Some(300.0);
    rtt[1][0] = Some(300.0);
    for r in summaries(&sites, &rtt) {
        s.update(r, T0 + 1_000).expect("update");
    }
    let v = s.view(T0 + 1_000);
    let high: Vec<_> = v
        .events
        .iter()
        .filter(|e| e.kind == EventKind::RttHigh)
        .collect();
    assert_eq!(high.len(), 2, "{:?}", v.events);
    assert!(
        high.iter()
            .all(|e| e.value == Some(300.0) && e.baseline == Some(95.0))
    );
    let tf = v
        .route_changes
        .iter()
        .find(|c| c.relay == "Tokyo" && c.dst == "Frankfurt")
        .expect("route change logged");
    assert_eq!(
        (tf.from.as_deref(), tf.to.as_deref()),
        (Some("Novosibirsk"), Some("Frankfurt"))
    );
    assert_eq!(tf.at_ms, T0 + 1_000);
    // still high: no repeated event
    for r in summaries(&sites, &rtt) {
        s.update(r, T0 + 2_000).expect("update");
    }
    assert_eq!(s.view(T0 + 2_000).events.len(), 2);

    // Back to normal, then once more away: the route flips three times within a minute.
    rtt[0][1] = Some(95.0);
    rtt[1][0] = Some(95.0);
    for r in summaries(&sites, &rtt) {
        s.update(r, T0 + 3_000).expect("update");
    }
    rtt[0][1] = Some(300.0);
    rtt[1][0] = Some(300.0);
    for r in summaries(&sites, &rtt) {
        s.update(r, T0 + 4_000).expect("update");
    }
    let v = s.view(T0 + 4_000);
    let flaps: Vec<_> = v
        .events
        .iter()
        .filter(|e| e.kind == EventKind::RouteFlap)
        .collect();
    assert!(
        flaps
            .iter()
            .any(|e| e.relay == "Tokyo" && e.peer.as_deref() == Some("Frankfurt")),
        "{:?}",
        v.events
    );
    assert!(
        v.events.windows(2).all(|w| w[0].at_ms >= w[1].at_ms),
        "newest first"
    );

    // Loss spike, link down, link up, slow consumers on Frankfurt.
    let mut all = summaries(&sites, &rtt);
    all[2].links[0].loss = 0.2;
    all[2].counters.slow_consumer_disconnects = 3;
    s.update(all[2].clone(), T0 + 5_000).expect("update");
    all[2].links[0].up = false;
    s.update(all[2].clone(), T0 + 6_000).expect("update");
    all[2].links[0].up = true;
    all[2].links[0].loss = 0.0;
    s.update(all[2].clone(), T0 + 7_000).expect("update");
    all[2].links.remove(1); // a link that vanishes is down
    s.update(all[2].clone(), T0 + 8_000).expect("update");
    let kinds: Vec<(EventKind, u64)> = s
        .view(T0 + 8_000)
        .events
        .iter()
        .filter(|e| e.relay == "Frankfurt" && e.kind != EventKind::RouteFlap)
        .map(|e| (e.kind, e.at_ms))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::LinkDown, T0 + 8_000),
            (EventKind::LinkUp, T0 + 7_000),
            (EventKind::LinkDown, T0 + 6_000),
            (EventKind::LossSpike, T0 + 5_000),
            (EventKind::SlowConsumer, T0 + 5_000),
        ]
    );
}

#[test]
fn message_rates_come_from_counter_deltas() {
    let (sites, rtt) = tnf();
    let mut all = summaries(&sites, &rtt);
    let mut s = state_with(&all, "Tokyo", T0);
    all[1].counters.messages_in = 500;
    all[1].counters.messages_out = 1_000;
    s.update(all[1].clone(), T0 + 2_000).expect("update");
    let v = s.view(T0 + 2_000);
    let n = &v.relays[id(&v, "Novosibirsk")];
    assert_eq!((n.messages_in_per_s, n.messages_out_per_s), (250.0, 500.0));
    // a restarted relay (counters went down) shows 0, not a huge number
    all[1].counters.messages_in = 10;
    s.update(all[1].clone(), T0 + 3_000).expect("update");
    let v = s.view(T0 + 3_000);
    assert_eq!(v.relays[id(&v, "Novosibirsk")].messages_in_per_s, 0.0);
}

#[test]
fn bad_summaries_are_refused_with_the_reason() {
    let (sites, rtt) = tnf();
    let good = summaries(&sites, &rtt).remove(0);
    let mut s = MeshState::new("Tokyo");
    type Breaker = Box<dyn Fn(&mut RelaySummary)>;
    let cases: Vec<(Breaker, &str)> = vec![
        (Box::new(|r| r.name = String::new()), "name"),
        (Box::new(|r| r.name = "x".repeat(65)), "name"),
        (Box::new(|r| r.lat = Some(91.0)), "lat"),
        (Box::new(|r| r.lon = None), "lat/lon"),
        (Box::new(|r| r.links[0].rtt_ms = f64::NAN), "rtt_ms"),
        (Box::new(|r| r.links[0].loss = 1.5), "loss"),
        (Box::new(|r| r.routes[0].metric_ms = -1.0), "metric_ms"),
        (Box::new(|r| r.region = "a\nb".into()), "region"),
        (
            Box::new(|r| {
                let l = r.links[0].clone();
                r.links = vec![l; MAX_LINKS_PER_RELAY + 1];
            }),
            "links",
        ),
    ];
    for (break_it, field) in cases {
        let mut bad = good.clone();
        break_it(&mut bad);
        match s.update(bad, T0) {
            Err(UpdateError::Invalid(e)) => assert!(e.to_string().contains(field), "{e} / {field}"),
            other => panic!("expected Invalid for {field}, got {other:?}"),
        }
    }
    assert!(s.is_empty());
}

#[test]
fn tables_and_histories_are_bounded() {
    let (sites, rtt) = tnf();
    let template = summaries(&sites, &rtt).remove(2);
    let mut s = MeshState::new("relay-0");
    for i in 0..MAX_RELAYS {
        let mut r = template.clone();
        r.name = format!("relay-{i}");
        s.update(r, T0).expect("room");
    }
    let mut extra = template.clone();
    extra.name = "one-too-many".into();
    assert!(matches!(
        s.update(extra.clone(), T0 + 1),
        Err(UpdateError::Full(_))
    ));
    assert_eq!(s.view(T0 + 1).dropped.relays_refused_full, 1);
    // after expiry there is room again; the local relay is never expired
    s.update(extra, T0 + 200_000).expect("room after expiry");
    let v = s.view(T0 + 200_000);
    assert_eq!(v.relays.len(), 2);
    assert!(v.relays.iter().any(|r| r.name == "relay-0" && r.stale));

    // the event ring keeps the newest MAX_EVENTS and counts the rest
    let mut r = template;
    for i in 0..(MAX_EVENTS as u64 + 50) {
        r.links[0].up = i % 2 == 1;
        s.update(r.clone(), T0 + 300_000 + i).expect("update");
    }
    let v = s.view(T0 + 400_000);
    assert_eq!(v.events.len(), MAX_EVENTS);
    assert!(v.dropped.events >= 49, "{}", v.dropped.events);
}

/// The 100 cities of the data set as a converged full mesh: the headline must equal the
/// improvement computed independently from the shortest paths, and the document stays small
/// enough to poll every 1.5 s.
#[test]
fn hundred_relays_from_the_data_set() {
    let (sites, rtt) = dataset();
    assert_eq!(sites.len(), 100);
    let all = summaries(&sites, &rtt);
    let s = state_with(&all, &sites[0].name, T0);
    let v = s.view(T0);
    assert_eq!(v.relays.len(), 100);
    assert_eq!(v.pairs.len(), 9_900);
    assert_eq!(v.links.len(), 9_900);
    assert!(
        v.pairs.iter().all(|p| p.3),
        "every path reaches its destination"
    );

    // Independent expectation: shortest distance vs the direct RTT over both directions'
    // reports (the view takes the reporting relay's own measurement).
    let (d, _) = shortest(&rtt);
    let mut savings = Vec::new();
    for i in 0..100 {
        for j in 0..100 {
            if i == j {
                continue;
            }
            let direct = rtt[i][j].expect("full mesh");
            let saving = direct - d[i][j];
            if saving >= IMPROVED_MIN_MS && saving >= IMPROVED_MIN_RATIO * direct {
                savings.push(saving);
            }
        }
    }
    savings.sort_by(f64::total_cmp);
    let median = (savings[savings.len() / 2 - 1] + savings[savings.len() / 2]) / 2.0;
    assert_eq!(v.headline.compared, 9_900);
    assert_eq!(v.headline.improved, savings.len());
    let got = v.headline.median_saving_ms.expect("median");
    assert!((got - median).abs() <= 0.05, "median {got} vs {median}");

    let full = serde_json::to_vec(&v).expect("encode").len();
    let mut lean = v.clone();
    lean.pairs.clear();
    let lean = serde_json::to_vec(&lean).expect("encode").len();
    println!(
        "100 relays: improved {} of {} ordered pairs ({:.1} %), median saving {:.1} ms; /v1/mesh {} bytes, {} bytes with pairs=none",
        v.headline.improved,
        v.headline.compared,
        v.headline.improved_share * 100.0,
        got,
        full,
        lean
    );
    assert!(full < 2_000_000, "/v1/mesh is {full} bytes for 100 relays");
}
