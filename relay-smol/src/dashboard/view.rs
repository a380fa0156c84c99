//! The mesh-wide picture behind `GET /v1/mesh` and the dashboard.
//!
//! Each relay announces a [`RelaySummary`] of itself (identity, counters, links, route table)
//! through the mesh; the local relay feeds its own summary the same way. [`MeshState`] keeps
//! the latest summary per relay (at most [`MAX_RELAYS`]), derives from successive summaries
//! the anomalies (RTT well above a link's baseline, loss spikes, links down/up, route flaps,
//! slow-consumer disconnects) and the route-change log, both in bounded rings, and builds the
//! [`MeshView`] served as JSON (schema in `docs/api.md`).
//!
//! Sans-IO: time is passed in as milliseconds since the Unix epoch (`now_ms`); nothing here
//! reads a clock. Call order: [`MeshState::update`] for every summary received (and for the
//! local one, about once a second), [`MeshState::expire`] now and then, [`MeshState::view`]
//! per HTTP request.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Most relays kept in the picture.
pub const MAX_RELAYS: usize = 256;
/// Most links one summary may list.
pub const MAX_LINKS_PER_RELAY: usize = 128;
/// Longest relay name, region or peer name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest public URL, in bytes.
pub const MAX_URL_LEN: usize = 256;
/// Most anomaly events kept (oldest dropped first, counted).
pub const MAX_EVENTS: usize = 200;
/// Most route changes kept in the log (oldest dropped first, counted).
pub const MAX_ROUTE_LOG: usize = 200;
/// Longest path followed through next hops before giving up (a loop or a stale table).
pub const MAX_PATH_HOPS: usize = 16;
/// A relay not heard from for this long is shown as stale.
pub const STALE_AFTER_MS: u64 = 15_000;
/// A relay not heard from for this long is removed.
pub const EXPIRE_AFTER_MS: u64 = 120_000;
/// A pair counts as improved when the overlay path saves at least this many ms…
pub const IMPROVED_MIN_MS: f64 = 5.0;
/// …and at least this share of the direct RTT.
pub const IMPROVED_MIN_RATIO: f64 = 0.10;
/// RTT anomaly: smoothed RTT above `baseline * RTT_HIGH_FACTOR` and `baseline + RTT_HIGH_MIN_MS`.
pub const RTT_HIGH_FACTOR: f64 = 1.5;
/// See [`RTT_HIGH_FACTOR`].
pub const RTT_HIGH_MIN_MS: f64 = 10.0;
/// Loss anomaly starts at this loss ratio and re-arms below [`LOSS_CLEAR`].
pub const LOSS_SPIKE: f64 = 0.05;
/// See [`LOSS_SPIKE`].
pub const LOSS_CLEAR: f64 = 0.01;
/// A route flap: this many next-hop changes of one (relay, destination) within [`FLAP_WINDOW_MS`].
pub const FLAP_CHANGES: usize = 3;
/// See [`FLAP_CHANGES`].
pub const FLAP_WINDOW_MS: u64 = 60_000;
/// Weight of a new sample in a link's RTT baseline (slow EWMA, fed only when not anomalous).
const BASELINE_ALPHA: f64 = 0.05;

/// What one relay announces about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelaySummary {
    /// Unique relay name.
    pub name: String,
    /// Free-form region label.
    pub region: String,
    /// Latitude in degrees, if configured.
    pub lat: Option<f64>,
    /// Longitude in degrees, if configured.
    pub lon: Option<f64>,
    /// Public URL of its WebSocket edge.
    pub url: String,
    /// Its counters.
    pub counters: RelayCounters,
    /// Its mesh links.
    pub links: Vec<LinkSummary>,
    /// Its route table: one entry per reachable destination relay.
    pub routes: Vec<RouteSummary>,
}

/// Monotonic counters and current gauges of one relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayCounters {
    /// Open client connections.
    pub connections: u64,
    /// Active subscriptions.
    pub subscriptions: u64,
    /// Messages received (clients and mesh) since start.
    pub messages_in: u64,
    /// Messages delivered to local subscribers or forwarded, since start.
    pub messages_out: u64,
    /// Messages dropped since start, all reasons.
    pub drops: u64,
    /// Slow consumers disconnected since start.
    pub slow_consumer_disconnects: u64,
    /// Time the edge spent with client reads paused because it was behind on writing
    /// deliveries (docs/edge.md), ms since start. Known for the local relay only: relay
    /// announcements do not carry it (`None` for the others).
    #[serde(default)]
    pub intake_paused_ms: Option<u64>,
}

impl RelayCounters {
    /// The local relay's counters, read from its metrics.
    pub fn from_metrics(m: &crate::metrics::RelayMetrics) -> Self {
        RelayCounters {
            connections: u64::try_from(m.connections.get()).unwrap_or(0),
            subscriptions: u64::try_from(m.subscriptions.get()).unwrap_or(0),
            messages_in: m.messages_received.sum(),
            messages_out: m
                .messages_delivered
                .get()
                .saturating_add(m.messages_forwarded.get()),
            drops: m.drops.sum(),
            slow_consumer_disconnects: m.slow_consumer_disconnects.get(),
            intake_paused_ms: Some(m.intake_paused_us.get() / 1000),
        }
    }
}

/// One link as its reporting relay measures it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    /// The peer's relay name.
    pub peer: String,
    /// Whether the link is up.
    pub up: bool,
    /// Smoothed RTT, ms.
    pub rtt_ms: f64,
    /// Minimum RTT over the probe window, ms.
    pub rtt_min_ms: f64,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Probe loss over the window, 0..=1.
    pub loss: f64,
}

/// One route-table entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteSummary {
    /// Destination relay.
    pub dst: String,
    /// Next hop towards it (equal to `dst` for the direct link).
    pub next_hop: String,
    /// Route metric, ms (latency with jitter and loss penalties, see docs/api.md).
    pub metric_ms: f64,
}

/// A summary that breaks the rules: the announcing peer's fault.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SummaryError {
    /// A name, region or URL is empty or too long.
    BadText {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A number is not finite or out of range.
    BadNumber {
        /// Which field.
        field: &'static str,
    },
    /// More links or routes than allowed.
    TooMany {
        /// Which list.
        field: &'static str,
        /// How many were sent.
        count: usize,
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for SummaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SummaryError::BadText { field, len } => write!(
                f,
                "relay summary field {field} has {len} bytes; it must have 1 to {MAX_NAME_LEN} (URL: {MAX_URL_LEN})"
            ),
            SummaryError::BadNumber { field } => write!(
                f,
                "relay summary field {field} is not a finite number in its range"
            ),
            SummaryError::TooMany { field, count, max } => {
                write!(
                    f,
                    "relay summary lists {count} {field}; at most {max} are allowed"
                )
            }
        }
    }
}

impl std::error::Error for SummaryError {}

/// The picture already holds [`MAX_RELAYS`] relays: a capacity limit, not a peer fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeshFull;

impl fmt::Display for MeshFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mesh picture is full ({MAX_RELAYS} relays); summary ignored"
        )
    }
}

impl std::error::Error for MeshFull {}

/// Why [`MeshState::update`] refused a summary.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum UpdateError {
    /// The summary is malformed.
    Invalid(SummaryError),
    /// No room for another relay.
    Full(MeshFull),
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Invalid(e) => e.fmt(f),
            UpdateError::Full(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for UpdateError {}

fn check_text(field: &'static str, s: &str, max: usize) -> Result<(), SummaryError> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(SummaryError::BadText {
            field,
            len: s.len(),
        });
    }
    Ok(())
}

fn check_num(field: &'static str, v: f64, lo: f64, hi: f64) -> Result<(), SummaryError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(SummaryError::BadNumber { field })
    }
}

const MAX_MS: f64 = 3_600_000.0;

impl RelaySummary {
    /// Checks every field against the limits above.
    pub fn validate(&self) -> Result<(), SummaryError> {
        check_text("name", &self.name, MAX_NAME_LEN)?;
        check_text("region", &self.region, MAX_NAME_LEN)?;
        if !self.url.is_empty() {
            // a mesh-only relay has no edge URL
            check_text("url", &self.url, MAX_URL_LEN)?;
        }
        match (self.lat, self.lon) {
            (Some(lat), Some(lon)) => {
                check_num("lat", lat, -90.0, 90.0)?;
                check_num("lon", lon, -180.0, 180.0)?;
            }
            (None, None) => {}
            _ => {
                return Err(SummaryError::BadNumber {
                    field: "lat/lon (give both or neither)",
                });
            }
        }
        if self.links.len() > MAX_LINKS_PER_RELAY {
            return Err(SummaryError::TooMany {
                field: "links",
                count: self.links.len(),
                max: MAX_LINKS_PER_RELAY,
            });
        }
        if self.routes.len() > MAX_RELAYS {
            return Err(SummaryError::TooMany {
                field: "routes",
                count: self.routes.len(),
                max: MAX_RELAYS,
            });
        }
        for l in &self.links {
            check_text("links.peer", &l.peer, MAX_NAME_LEN)?;
            check_num("links.rtt_ms", l.rtt_ms, 0.0, MAX_MS)?;
            check_num("links.rtt_min_ms", l.rtt_min_ms, 0.0, MAX_MS)?;
            check_num("links.jitter_ms", l.jitter_ms, 0.0, MAX_MS)?;
            check_num("links.loss", l.loss, 0.0, 1.0)?;
        }
        for r in &self.routes {
            check_text("routes.dst", &r.dst, MAX_NAME_LEN)?;
            check_text("routes.next_hop", &r.next_hop, MAX_NAME_LEN)?;
            check_num("routes.metric_ms", r.metric_ms, 0.0, MAX_MS)?;
        }
        Ok(())
    }
}

/// Kinds of anomaly events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// Smoothed RTT rose well above the link's baseline.
    RttHigh,
    /// Loss rose to [`LOSS_SPIKE`] or more.
    LossSpike,
    /// The link went down.
    LinkDown,
    /// The link came back up.
    LinkUp,
    /// A route changed next hop [`FLAP_CHANGES`] times within [`FLAP_WINDOW_MS`].
    RouteFlap,
    /// The relay disconnected slow consumers since its last summary.
    SlowConsumer,
}

/// One anomaly, with its time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// When it was seen, ms since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The relay that reported it.
    pub relay: String,
    /// The link's peer or the route's destination, when there is one.
    pub peer: Option<String>,
    /// The value behind it (RTT ms, loss ratio, change count, disconnects).
    pub value: Option<f64>,
    /// The reference it was compared against (baseline RTT ms), when there is one.
    pub baseline: Option<f64>,
}

/// One next-hop change of one relay's route.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteChange {
    /// When it was seen, ms since the Unix epoch.
    pub at_ms: u64,
    /// The relay whose table changed.
    pub relay: String,
    /// The destination.
    pub dst: String,
    /// Previous next hop (`None`: no route before).
    pub from: Option<String>,
    /// New next hop (`None`: route lost).
    pub to: Option<String>,
    /// New metric, ms.
    pub metric_ms: Option<f64>,
}

#[derive(Debug, Default)]
struct LinkTrack {
    up: bool,
    baseline_ms: Option<f64>,
    rtt_high: bool,
    loss_high: bool,
}

#[derive(Debug)]
struct Entry {
    summary: RelaySummary,
    at_ms: u64,
    in_per_s: f64,
    out_per_s: f64,
}

/// The latest summary of every relay, plus anomaly and route-change history. Bounded.
#[derive(Debug)]
pub struct MeshState {
    self_name: String,
    relays: BTreeMap<String, Entry>,
    links: HashMap<(String, String), LinkTrack>,
    flaps: HashMap<(String, String), VecDeque<u64>>,
    events: VecDeque<Event>,
    route_log: VecDeque<RouteChange>,
    events_dropped: u64,
    route_log_dropped: u64,
    refused_full: u64,
}

impl MeshState {
    /// An empty picture for the relay named `self_name`.
    pub fn new(self_name: &str) -> Self {
        MeshState {
            self_name: self_name.to_string(),
            relays: BTreeMap::new(),
            links: HashMap::new(),
            flaps: HashMap::new(),
            events: VecDeque::new(),
            route_log: VecDeque::new(),
            events_dropped: 0,
            route_log_dropped: 0,
            refused_full: 0,
        }
    }

    /// Renames the local relay (its identity came later, e.g. from the mesh node); its entry
    /// under the old name is dropped.
    pub fn set_self_name(&mut self, name: &str) {
        if self.self_name != name {
            let old = std::mem::replace(&mut self.self_name, name.to_string());
            self.relays.remove(&old);
            self.links.retain(|(a, _), _| a != &old);
        }
    }

    /// Number of relays in the picture.
    pub fn len(&self) -> usize {
        self.relays.len()
    }

    /// True when no relay is known.
    pub fn is_empty(&self) -> bool {
        self.relays.is_empty()
    }

    /// Takes in a relay's summary (a received announcement or the local relay's own).
    pub fn update(&mut self, summary: RelaySummary, now_ms: u64) -> Result<(), UpdateError> {
        summary.validate().map_err(UpdateError::Invalid)?;
        if !self.relays.contains_key(&summary.name) && self.relays.len() >= MAX_RELAYS {
            self.expire(now_ms);
            if self.relays.len() >= MAX_RELAYS {
                self.refused_full += 1;
                return Err(UpdateError::Full(MeshFull));
            }
        }
        let name = summary.name.clone();
        let (in_per_s, out_per_s) = match self.relays.remove(&name) {
            Some(prev) => {
                let (i, o) = rates(&prev, &summary, now_ms);
                self.diff_routes(&prev.summary.routes, &summary.routes, &name, now_ms);
                let lost = summary
                    .counters
                    .slow_consumer_disconnects
                    .saturating_sub(prev.summary.counters.slow_consumer_disconnects);
                if lost > 0 {
                    self.push_event(Event {
                        at_ms: now_ms,
                        kind: EventKind::SlowConsumer,
                        relay: name.clone(),
                        peer: None,
                        value: Some(lost as f64),
                        baseline: None,
                    });
                }
                (i, o)
            }
            None => (0.0, 0.0),
        };
        self.track_links(&summary, now_ms);
        self.relays.insert(
            name,
            Entry {
                summary,
                at_ms: now_ms,
                in_per_s,
                out_per_s,
            },
        );
        Ok(())
    }

    /// Removes relays not heard from for [`EXPIRE_AFTER_MS`] (never the local relay) and the
    /// link and flap history that belonged to them.
    pub fn expire(&mut self, now_ms: u64) {
        let me = &self.self_name;
        self.relays
            .retain(|n, e| n == me || now_ms.saturating_sub(e.at_ms) < EXPIRE_AFTER_MS);
        let relays = &self.relays;
        self.links.retain(|(a, _), _| relays.contains_key(a));
        self.flaps.retain(|(a, _), v| {
            v.retain(|t| now_ms.saturating_sub(*t) < FLAP_WINDOW_MS);
            relays.contains_key(a) && !v.is_empty()
        });
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    fn diff_routes(&mut self, old: &[RouteSummary], new: &[RouteSummary], relay: &str, now: u64) {
        let old_map: HashMap<&str, &RouteSummary> =
            old.iter().map(|r| (r.dst.as_str(), r)).collect();
        let new_map: HashMap<&str, &RouteSummary> =
            new.iter().map(|r| (r.dst.as_str(), r)).collect();
        let mut changes = Vec::new();
        for r in new {
            let from = old_map.get(r.dst.as_str()).map(|o| o.next_hop.as_str());
            if from != Some(r.next_hop.as_str()) {
                changes.push(RouteChange {
                    at_ms: now,
                    relay: relay.to_string(),
                    dst: r.dst.clone(),
                    from: from.map(str::to_string),
                    to: Some(r.next_hop.clone()),
                    metric_ms: Some(r.metric_ms),
                });
            }
        }
        for r in old {
            if !new_map.contains_key(r.dst.as_str()) {
                changes.push(RouteChange {
                    at_ms: now,
                    relay: relay.to_string(),
                    dst: r.dst.clone(),
                    from: Some(r.next_hop.clone()),
                    to: None,
                    metric_ms: None,
                });
            }
        }
        for c in changes {
            // Flap history only for destinations the relay announces (bounded by MAX_RELAYS each).
            let key = (c.relay.clone(), c.dst.clone());
            let times = self.flaps.entry(key).or_default();
            times.retain(|t| now.saturating_sub(*t) < FLAP_WINDOW_MS);
            times.push_back(now);
            let count = times.len();
            if count >= FLAP_CHANGES {
                times.clear();
                self.push_event(Event {
                    at_ms: now,
                    kind: EventKind::RouteFlap,
                    relay: c.relay.clone(),
                    peer: Some(c.dst.clone()),
                    value: Some(count as f64),
                    baseline: None,
                });
            }
            if self.route_log.len() >= MAX_ROUTE_LOG {
                self.route_log.pop_front();
                self.route_log_dropped += 1;
            }
            self.route_log.push_back(c);
        }
    }

    fn track_links(&mut self, s: &RelaySummary, now: u64) {
        let mut events = Vec::new();
        for l in &s.links {
            let key = (s.name.clone(), l.peer.clone());
            let first = !self.links.contains_key(&key);
            let t = self.links.entry(key).or_default();
            let ev = |kind, value, baseline| Event {
                at_ms: now,
                kind,
                relay: s.name.clone(),
                peer: Some(l.peer.clone()),
                value,
                baseline,
            };
            if l.up != t.up && !(first && l.up) {
                let kind = if l.up {
                    EventKind::LinkUp
                } else {
                    EventKind::LinkDown
                };
                events.push(ev(kind, None, None));
            }
            t.up = l.up;
            if !l.up {
                continue;
            }
            match t.baseline_ms {
                None => t.baseline_ms = Some(l.rtt_ms),
                Some(base) => {
                    let high =
                        l.rtt_ms > base * RTT_HIGH_FACTOR && l.rtt_ms > base + RTT_HIGH_MIN_MS;
                    if high && !t.rtt_high {
                        events.push(ev(EventKind::RttHigh, Some(l.rtt_ms), Some(base)));
                    }
                    t.rtt_high = high;
                    if !high {
                        t.baseline_ms = Some(base + BASELINE_ALPHA * (l.rtt_ms - base));
                    }
                }
            }
            if l.loss >= LOSS_SPIKE && !t.loss_high {
                t.loss_high = true;
                events.push(ev(EventKind::LossSpike, Some(l.loss), None));
            } else if l.loss < LOSS_CLEAR {
                t.loss_high = false;
            }
        }
        // A link that vanished from the summary is down.
        let listed: Vec<&str> = s.links.iter().map(|l| l.peer.as_str()).collect();
        for ((a, b), t) in self.links.iter_mut() {
            if a == &s.name && t.up && !listed.contains(&b.as_str()) {
                t.up = false;
                events.push(Event {
                    at_ms: now,
                    kind: EventKind::LinkDown,
                    relay: a.clone(),
                    peer: Some(b.clone()),
                    value: None,
                    baseline: None,
                });
            }
        }
        for e in events {
            self.push_event(e);
        }
    }

    /// The picture as served by `GET /v1/mesh`.
    pub fn view(&self, now_ms: u64) -> MeshView {
        let names: Vec<&str> = self.relays.keys().map(String::as_str).collect();
        let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let relays: Vec<RelayView> = self
            .relays
            .values()
            .enumerate()
            .map(|(id, e)| {
                let s = &e.summary;
                let age = now_ms.saturating_sub(e.at_ms);
                RelayView {
                    id,
                    name: s.name.clone(),
                    region: s.region.clone(),
                    lat: s.lat,
                    lon: s.lon,
                    url: s.url.clone(),
                    is_self: s.name == self.self_name,
                    age_ms: age,
                    stale: age >= STALE_AFTER_MS,
                    connections: s.counters.connections,
                    subscriptions: s.counters.subscriptions,
                    messages_in_total: s.counters.messages_in,
                    messages_out_total: s.counters.messages_out,
                    messages_in_per_s: round2(e.in_per_s),
                    messages_out_per_s: round2(e.out_per_s),
                    drops_total: s.counters.drops,
                    slow_consumer_disconnects_total: s.counters.slow_consumer_disconnects,
                    intake_paused_ms_total: s.counters.intake_paused_ms,
                }
            })
            .collect();
        // Directed link RTTs for path sums: (from, to) -> (up, rtt).
        let mut link_rtt: HashMap<(usize, usize), (bool, f64)> = HashMap::new();
        let mut links = Vec::new();
        for (from, e) in self.relays.values().enumerate() {
            for l in &e.summary.links {
                let Some(&to) = index.get(l.peer.as_str()) else {
                    continue;
                };
                link_rtt.insert((from, to), (l.up, l.rtt_ms));
                links.push(LinkRow(
                    from,
                    to,
                    u8::from(l.up),
                    round1(l.rtt_ms),
                    round1(l.rtt_min_ms),
                    round1(l.jitter_ms),
                    round4(l.loss),
                ));
            }
        }
        let rtt = |a: usize, b: usize| -> Option<f64> {
            match (link_rtt.get(&(a, b)), link_rtt.get(&(b, a))) {
                (Some((true, r)), _) => Some(*r),
                (_, Some((true, r))) => Some(*r),
                _ => None,
            }
        };
        // Route tables by index: next_hop[src][dst] and metric.
        let tables: Vec<HashMap<usize, (usize, f64)>> = self
            .relays
            .values()
            .map(|e| {
                e.summary
                    .routes
                    .iter()
                    .filter_map(|r| {
                        Some((
                            *index.get(r.dst.as_str())?,
                            (*index.get(r.next_hop.as_str())?, r.metric_ms),
                        ))
                    })
                    .collect()
            })
            .collect();
        let mut pairs = Vec::new();
        let mut savings = Vec::new();
        let mut compared = 0usize;
        for (src, table) in tables.iter().enumerate() {
            let mut dsts: Vec<(&usize, &(usize, f64))> = table.iter().collect();
            dsts.sort_unstable_by_key(|(d, _)| **d);
            for (&dst, &(_, metric)) in dsts {
                if dst == src {
                    continue;
                }
                let mut path = vec![src];
                let mut cur = src;
                let mut complete = false;
                while path.len() <= MAX_PATH_HOPS {
                    let Some(&(next, _)) = tables.get(cur).and_then(|t| t.get(&dst)) else {
                        break;
                    };
                    if path.contains(&next) {
                        break; // a loop in transient tables: show what we have
                    }
                    path.push(next);
                    if next == dst {
                        complete = true;
                        break;
                    }
                    cur = next;
                }
                let path_rtt = if complete {
                    path.windows(2)
                        .map(|w| match w {
                            [a, b] => rtt(*a, *b),
                            _ => None,
                        })
                        .sum::<Option<f64>>()
                } else {
                    None
                };
                let direct = rtt(src, dst);
                let saving = match (path_rtt, direct) {
                    (Some(p), Some(d)) => {
                        compared += 1;
                        let s = d - p;
                        if s >= IMPROVED_MIN_MS && s >= IMPROVED_MIN_RATIO * d {
                            savings.push(s);
                        }
                        Some(s)
                    }
                    _ => None,
                };
                let via = match path.as_slice() {
                    [_, mid @ .., last] if complete && *last == dst => mid.to_vec(),
                    [_, rest @ ..] => rest.to_vec(),
                    [] => Vec::new(),
                };
                pairs.push(PairRow(
                    src,
                    dst,
                    via,
                    complete,
                    round1(metric),
                    path_rtt.map(round1),
                    direct.map(round1),
                    saving.map(round1),
                ));
            }
        }
        savings.sort_by(f64::total_cmp);
        let median = match savings.len() {
            0 => None,
            n if n % 2 == 1 => savings.get(n / 2).copied(),
            n => match (savings.get(n / 2 - 1), savings.get(n / 2)) {
                (Some(a), Some(b)) => Some((a + b) / 2.0),
                _ => None,
            },
        };
        let headline = Headline {
            pairs: pairs.len(),
            compared,
            improved: savings.len(),
            improved_share: if compared == 0 {
                0.0
            } else {
                round4(savings.len() as f64 / compared as f64)
            },
            median_saving_ms: median.map(round1),
            min_saving_ms: IMPROVED_MIN_MS,
            min_saving_ratio: IMPROVED_MIN_RATIO,
        };
        MeshView {
            schema: 1,
            generated_at_ms: now_ms,
            self_name: self.self_name.clone(),
            relays,
            links,
            pairs,
            headline,
            events: self.events.iter().rev().cloned().collect(),
            route_changes: self.route_log.iter().rev().cloned().collect(),
            dropped: Dropped {
                events: self.events_dropped,
                route_changes: self.route_log_dropped,
                relays_refused_full: self.refused_full,
            },
            webtransport: None,
        }
    }
}

fn rates(prev: &Entry, new: &RelaySummary, now_ms: u64) -> (f64, f64) {
    let dt = now_ms.saturating_sub(prev.at_ms);
    if dt == 0 {
        return (prev.in_per_s, prev.out_per_s);
    }
    let secs = dt as f64 / 1000.0;
    let d = |a: u64, b: u64| b.checked_sub(a).map_or(0.0, |x| x as f64 / secs); // restart: 0
    (
        d(prev.summary.counters.messages_in, new.counters.messages_in),
        d(
            prev.summary.counters.messages_out,
            new.counters.messages_out,
        ),
    )
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// `GET /v1/mesh` (see docs/api.md).
#[derive(Clone, Debug, Serialize)]
pub struct MeshView {
    /// Schema version of this document (1).
    pub schema: u32,
    /// When it was built, ms since the Unix epoch.
    pub generated_at_ms: u64,
    /// Name of the relay that served it.
    pub self_name: String,
    /// Every relay, `id` = position.
    pub relays: Vec<RelayView>,
    /// Every directed link, by relay id.
    pub links: Vec<LinkRow>,
    /// Every ordered pair with a route.
    pub pairs: Vec<PairRow>,
    /// The product's metric over `pairs`.
    pub headline: Headline,
    /// Anomalies, newest first.
    pub events: Vec<Event>,
    /// Route changes, newest first.
    pub route_changes: Vec<RouteChange>,
    /// What the bounded histories and tables dropped.
    pub dropped: Dropped,
    /// The serving relay's WebTransport listener, when it runs one (filled in by the admin
    /// routes from the metrics).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webtransport: Option<crate::metrics::wt::WtSummary>,
}

/// One relay in [`MeshView`].
#[derive(Clone, Debug, Serialize)]
pub struct RelayView {
    /// Index in `relays`.
    pub id: usize,
    /// Name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Latitude.
    pub lat: Option<f64>,
    /// Longitude.
    pub lon: Option<f64>,
    /// Public edge URL.
    pub url: String,
    /// True for the relay serving the document.
    pub is_self: bool,
    /// Age of its latest summary, ms.
    pub age_ms: u64,
    /// No summary for [`STALE_AFTER_MS`].
    pub stale: bool,
    /// Open client connections.
    pub connections: u64,
    /// Active subscriptions.
    pub subscriptions: u64,
    /// Messages in since start.
    pub messages_in_total: u64,
    /// Messages out since start.
    pub messages_out_total: u64,
    /// Messages in per second, between its last two summaries.
    pub messages_in_per_s: f64,
    /// Messages out per second, between its last two summaries.
    pub messages_out_per_s: f64,
    /// Drops since start.
    pub drops_total: u64,
    /// Slow-consumer disconnects since start.
    pub slow_consumer_disconnects_total: u64,
    /// Time client reads were paused because the relay was behind on writing, ms since start
    /// (`null` for relays other than this one: not announced).
    pub intake_paused_ms_total: Option<u64>,
}

/// `[from, to, up, rtt_ms, rtt_min_ms, jitter_ms, loss]`: one directed link as its `from`
/// relay reports it (a JSON array, to keep 100-relay documents small; see docs/api.md).
#[derive(Clone, Debug, Serialize)]
pub struct LinkRow(
    /// Reporting relay id.
    pub usize,
    /// Peer relay id.
    pub usize,
    /// 1 if up, 0 if down.
    pub u8,
    /// Smoothed RTT, ms.
    pub f64,
    /// Window minimum RTT, ms.
    pub f64,
    /// Jitter, ms.
    pub f64,
    /// Loss ratio, 0..=1.
    pub f64,
);

/// `[src, dst, via, complete, metric_ms, path_rtt_ms, direct_rtt_ms, saving_ms]` (a JSON
/// array, to keep 100-relay documents small; see docs/api.md).
#[derive(Clone, Debug, Serialize)]
pub struct PairRow(
    /// Source relay id.
    pub usize,
    /// Destination relay id.
    pub usize,
    /// Relay ids strictly between `src` and `dst` along the route in use (empty: direct).
    pub Vec<usize>,
    /// True when the path reaches `dst` (false: a next hop has no route or a transient loop).
    pub bool,
    /// The source's route metric, ms.
    pub f64,
    /// Sum of link RTTs along the path, ms.
    pub Option<f64>,
    /// RTT of the direct link, ms, when it is up.
    pub Option<f64>,
    /// `direct - path` RTT, ms.
    pub Option<f64>,
);

/// The headline metric.
#[derive(Clone, Debug, Serialize)]
pub struct Headline {
    /// Ordered pairs with a route.
    pub pairs: usize,
    /// Pairs with both a direct RTT and a path RTT.
    pub compared: usize,
    /// Pairs whose path beats direct by both thresholds.
    pub improved: usize,
    /// `improved / compared`.
    pub improved_share: f64,
    /// Median saving over the improved pairs, ms.
    pub median_saving_ms: Option<f64>,
    /// Threshold in ms ([`IMPROVED_MIN_MS`]).
    pub min_saving_ms: f64,
    /// Threshold as a share of direct ([`IMPROVED_MIN_RATIO`]).
    pub min_saving_ratio: f64,
}

/// Counts of what bounded structures dropped.
#[derive(Clone, Debug, Serialize)]
pub struct Dropped {
    /// Events pushed out of the ring.
    pub events: u64,
    /// Route changes pushed out of the log.
    pub route_changes: u64,
    /// Summaries refused because [`MAX_RELAYS`] was reached.
    pub relays_refused_full: u64,
}
