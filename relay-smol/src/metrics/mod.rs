//! Relay metrics and their Prometheus rendering (`GET /metrics`).
//!
//! One [`RelayMetrics`] per relay, shared as `Arc<RelayMetrics>`: the edge, broker, tickets and
//! mesh code bump its counters and gauges (lock-free atomics, callable from any task); the HTTP
//! layer calls [`RelayMetrics::render`] and serves the text with [`text::CONTENT_TYPE`].
//!
//! Naming follows Prometheus conventions: every name starts with `fastpubsub_`, counters end in
//! `_total`, times are in `_seconds`, ratios in `_ratio`. Every label set is bounded: reasons are
//! closed enums ([`DropReason`], [`RefusalReason`], …) and the per-link series are capped at
//! [`MAX_LINK_SERIES`] (links beyond the cap are counted in
//! `fastpubsub_metrics_series_dropped_total`, never silently lost). No label ever carries a
//! tenant, channel or client identity.

pub mod text;

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use text::{MetricType, TextEncoder};

/// Most per-link series exported (a relay keeps far fewer links than this).
pub const MAX_LINK_SERIES: usize = 256;
/// Longest peer name kept in a label; longer names are cut at a character boundary.
pub const MAX_LABEL_VALUE_LEN: usize = 64;

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Mirrors a total kept elsewhere (e.g. the broker's own statistics). Never goes down:
    /// a smaller value is ignored, so the exposed series stays monotonic.
    pub fn mirror(&self, total: u64) {
        self.0.fetch_max(total, Ordering::Relaxed);
    }
}

/// An integer gauge (connections, subscriptions).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A closed set of label values for one label: the reason enums below.
pub trait LabelValues: Copy + 'static {
    /// The label's name.
    const LABEL: &'static str;
    /// Every value, in exposition order.
    const ALL: &'static [Self];
    /// The label value text.
    fn as_str(self) -> &'static str;
    /// Position in [`LabelValues::ALL`].
    fn index(self) -> usize;
}

/// One counter per value of a closed label set: bounded by construction.
#[derive(Debug)]
pub struct CounterBy<L: LabelValues> {
    counts: Box<[AtomicU64]>,
    _label: core::marker::PhantomData<L>,
}

impl<L: LabelValues> Default for CounterBy<L> {
    fn default() -> Self {
        CounterBy {
            counts: L::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            _label: core::marker::PhantomData,
        }
    }
}

impl<L: LabelValues> CounterBy<L> {
    /// Adds one to the counter of `value`.
    pub fn inc(&self, value: L) {
        self.add(value, 1);
    }
    /// Adds `n` to the counter of `value`.
    pub fn add(&self, value: L, n: u64) {
        if let Some(c) = self.counts.get(value.index()) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
    /// Mirrors a total kept elsewhere for `value` (see [`Counter::mirror`]).
    pub fn mirror(&self, value: L, total: u64) {
        if let Some(c) = self.counts.get(value.index()) {
            c.fetch_max(total, Ordering::Relaxed);
        }
    }
    /// The count of `value`.
    pub fn get(&self, value: L) -> u64 {
        self.counts
            .get(value.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
    /// The sum over all values.
    pub fn sum(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
    fn render(&self, e: &mut TextEncoder<'_>, name: &str, help: &str) {
        e.family(name, help, MetricType::Counter);
        for v in L::ALL {
            e.sample(name, &[(L::LABEL, v.as_str())], self.get(*v));
        }
    }
}

macro_rules! label_enum {
    ($(#[$m:meta])* $name:ident, $label:literal, { $($(#[$vm:meta])* $v:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $name { $($(#[$vm])* $v,)+ }
        impl LabelValues for $name {
            const LABEL: &'static str = $label;
            const ALL: &'static [Self] = &[$($name::$v,)+];
            fn as_str(self) -> &'static str { match self { $($name::$v => $s,)+ } }
            fn index(self) -> usize { self as usize }
        }
    };
}

label_enum!(
    /// Why a message was dropped (`fastpubsub_drops_total{reason}`).
    DropReason, "reason", {
        /// A subscriber's bounded send queue was full and its socket was refusing bytes (the
        /// subscriber does not keep up).
        SubscriberQueueFull = "subscriber_queue_full",
        /// A subscriber's queue was full while its socket still took bytes: the relay, not the
        /// subscriber, was behind. The edge pauses intake instead, so this stays 0 (docs/edge.md).
        RelayBehind = "relay_behind",
        /// A mesh link's bounded send queue was full.
        LinkQueueFull = "link_queue_full",
        /// The payload exceeded the size limit.
        TooLarge = "too_large",
        /// The ticket does not grant publishing on the channel.
        NotPermitted = "not_permitted",
        /// The publisher exceeded its rate limit.
        RateLimited = "rate_limited",
        /// A forwarded message reached its hop limit.
        HopLimit = "hop_limit",
        /// A forwarded message was seen before (per-origin dedup window).
        Duplicate = "duplicate",
        /// No route to a destination relay.
        NoRoute = "no_route",
    }
);

label_enum!(
    /// Why a handshake was refused (`fastpubsub_handshake_refusals_total{reason}`).
    RefusalReason, "reason", {
        /// Not a valid WebSocket upgrade or HTTP request.
        Malformed = "malformed",
        /// The access ticket was missing, invalid, expired, revoked or not valid here (the
        /// client's HTTP answer and the log say which).
        Ticket = "ticket",
        /// A connection limit was reached.
        OverCapacity = "over_capacity",
        /// A mesh peer without a valid certificate from the mesh CA.
        MeshCertificate = "mesh_certificate",
    }
);

label_enum!(
    /// Why the mesh's QUIC endpoint did not let a connection attempt finish its handshake
    /// (`fastpubsub_mesh_handshakes_refused_total{reason}`; see `quic::admission`).
    QuicRefusal, "reason", {
        /// Every connection slot open to incoming connections was taken.
        TableFull = "table_full",
        /// Too many incoming handshakes were in progress.
        HandshakeBudget = "handshake_budget",
        /// The source address had too many handshakes in progress.
        SourceHandshakes = "source_handshakes",
        /// The source address started handshakes too fast.
        SourceRate = "source_rate",
        /// The table of source addresses was full.
        SourceTable = "source_table",
        /// The handshake did not complete in time.
        Timeout = "timeout",
        /// The handshake was closed for one from a source with fewer in progress.
        Displaced = "displaced",
    }
);

pub mod wt;

label_enum!(
    /// A bounded policy of the edge that was applied
    /// (`fastpubsub_edge_limit_hits_total{limit}`; docs/edge.md, "Limits and defaults").
    EdgeLimit, "limit", {
        /// A connection's reads stopped: its own outbound backlog reached the read-stop mark.
        ReadStop = "read_stop",
        /// A connection task yielded with work left (its turn budget was used up).
        TurnYield = "turn_yield",
        /// A command over its rate limit (`ERR:rate_limited`).
        CommandRate = "command_rate",
        /// A publish refusal not answered (the refusal-reply rate was used up).
        RefusalUnanswered = "refusal_unanswered",
        /// A connection closed for running out of rate-limit strikes.
        RateLimitClose = "rate_limit_close",
        /// A connection refused because the handshake cap was full (503).
        PendingFull = "pending_full",
        /// A connection refused because its source had its handshake cap (503).
        PendingPerSource = "pending_per_source",
        /// A held handshake closed to make room for a new one.
        PendingEvicted = "pending_evicted",
        /// A handshake answered 429: its source used up its failed-ticket budget.
        TicketFailureBudget = "ticket_failure_budget",
        /// A source forgotten from the full failed-ticket table.
        FailureSourceEvicted = "failure_source_evicted",
        /// A deliver frame that listed fewer patterns than matched (never, under the
        /// pattern-cost limits).
        DeliverPatternsCapped = "deliver_patterns_capped",
        /// A `SUB` refused: the connection holds its maximum of subscriptions.
        SubsPerConnection = "subs_per_connection",
        /// A `SUB` refused: the relay holds its maximum of subscriptions.
        SubsRelayFull = "subs_relay_full",
        /// A `SUB` refused by the pattern-cost limits.
        PatternTooComplex = "pattern_too_complex",
        /// A connection closed after too many malformed frames.
        BadFramesClose = "bad_frames_close",
    }
);

label_enum!(
    /// Whether a ticket verification was answered from the cache (`cache` label).
    TicketCache, "cache", {
        /// Answered from the verified-ticket cache.
        Hit = "hit",
        /// Full signature verification.
        Miss = "miss",
    }
);

label_enum!(
    /// Where a received message came from (`source` label).
    Source, "source", {
        /// A local WebSocket client.
        Client = "client",
        /// A mesh peer.
        Mesh = "mesh",
    }
);

label_enum!(
    /// Traffic direction (`direction` label).
    Direction, "direction", {
        /// Sent by this relay.
        Sent = "sent",
        /// Received by this relay.
        Received = "received",
    }
);

/// Mesh message kinds (`kind` label): `fastpubsub_core::mesh::KIND_NAMES`.
pub const MESH_KINDS: usize = fastpubsub_core::mesh::KIND_NAMES.len();

/// Mesh control bytes by message kind and [`Direction`]: a fixed, bounded set of series.
#[derive(Debug, Default)]
pub struct KindBytes([[AtomicU64; 2]; MESH_KINDS]);

impl KindBytes {
    fn cell(&self, kind: usize, dir: Direction) -> Option<&AtomicU64> {
        self.0.get(kind)?.get(dir.index())
    }
    /// Mirrors a total kept elsewhere (see [`Counter::mirror`]); `kind` indexes `KIND_NAMES`.
    pub fn mirror(&self, kind: usize, dir: Direction, total: u64) {
        if let Some(c) = self.cell(kind, dir) {
            c.fetch_max(total, Ordering::Relaxed);
        }
    }
    /// The count of `kind` in direction `dir`.
    pub fn get(&self, kind: usize, dir: Direction) -> u64 {
        self.cell(kind, dir)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
    fn render(&self, e: &mut TextEncoder<'_>, name: &str, help: &str) {
        e.family(name, help, MetricType::Counter);
        for (k, kind) in fastpubsub_core::mesh::KIND_NAMES.iter().enumerate() {
            for d in Direction::ALL {
                e.sample(
                    name,
                    &[("kind", kind), (Direction::LABEL, d.as_str())],
                    self.get(k, *d),
                );
            }
        }
    }
}

/// One link's measurements, as the mesh reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkSample {
    /// The peer relay's name.
    pub peer: String,
    /// Whether the link is up.
    pub up: bool,
    /// Smoothed RTT, seconds.
    pub rtt_seconds: f64,
    /// Minimum RTT over the window, seconds.
    pub rtt_min_seconds: f64,
    /// Jitter, seconds.
    pub jitter_seconds: f64,
    /// Loss over the window, 0..=1.
    pub loss_ratio: f64,
}

/// Every metric of issue 6, item 3. Create one with `RelayMetrics::default()`.
#[derive(Debug, Default)]
pub struct RelayMetrics {
    /// Open client WebSocket connections.
    pub connections: Gauge,
    /// Client connections accepted since start.
    pub connections_accepted: Counter,
    /// Active subscriptions over all connections.
    pub subscriptions: Gauge,
    /// Messages received, by source.
    pub messages_received: CounterBy<Source>,
    /// Deliveries to local subscribers.
    pub messages_delivered: Counter,
    /// Copies forwarded to mesh next hops.
    pub messages_forwarded: Counter,
    /// Dropped messages, by reason.
    pub drops: CounterBy<DropReason>,
    /// Consumers disconnected for staying slow.
    pub slow_consumer_disconnects: Counter,
    /// Times the relay paused reading every client because it was behind on writing.
    pub intake_pauses: Counter,
    /// Time spent in those pauses, µs (rendered in seconds).
    pub intake_paused_us: Counter,
    /// Pauses ended by their bound (1 s) rather than by the backlog being written.
    pub intake_pause_overruns: Counter,
    /// Edge limits applied, by limit.
    pub edge_limit_hits: CounterBy<EdgeLimit>,
    /// Heap bytes the edge holds for connections (outbound buffers, the spare pool,
    /// incomplete input): the broker's own accounting of the memory bound.
    pub edge_held_bytes: Gauge,
    /// Client connections still in their HTTP/WebSocket handshake.
    pub edge_handshakes_pending: Gauge,
    /// Times the mesh being backed up held the intake pause.
    pub intake_pauses_mesh: Counter,
    /// Refused handshakes, by reason.
    pub handshake_refusals: CounterBy<RefusalReason>,
    /// Ticket verifications, by cache outcome.
    pub ticket_verifications: CounterBy<TicketCache>,
    /// Route changes installed by the routing table.
    pub route_changes: Counter,
    /// Mesh control-plane bytes (probes, route updates, interest, announcements).
    pub mesh_control_bytes: CounterBy<Direction>,
    /// The same bytes by mesh message kind.
    pub mesh_control_kind_bytes: KindBytes,
    /// Mesh QUIC connection attempts stopped before their handshake completed, by reason.
    pub mesh_handshakes_refused: CounterBy<QuicRefusal>,
    /// Retry packets the mesh port sent (address validation).
    pub mesh_retries: Counter,
    /// Incoming mesh handshakes in progress.
    pub mesh_handshakes_in_progress: Gauge,
    /// Mesh links backed up now (queue or unsent bytes above the high mark).
    pub mesh_links_backed_up: Gauge,
    /// Mesh links slow now (backed up for a second or more: they drop instead).
    pub mesh_links_slow: Gauge,
    /// Of the `link_queue_full` drops, those on slow links.
    pub mesh_messages_dropped_slow_link: Counter,
    /// Times the mesh asked the relay's intake to pause (a healthy link backed up).
    pub mesh_backpressure_episodes: Counter,
    /// Milliseconds the mesh's intake-pause signal was on, in all.
    pub mesh_backpressure_ms: Counter,
    /// The WebTransport listener's families (rendered when it runs).
    pub wt: wt::WtMetrics,
    links: Mutex<Vec<LinkSample>>,
    link_series_dropped: Counter,
}

impl RelayMetrics {
    /// Replaces the per-link gauges with `links` (the mesh calls this after each probe round).
    /// Keeps at most [`MAX_LINK_SERIES`]; the rest are counted as dropped series.
    pub fn set_links(&self, links: &[LinkSample]) {
        let kept = links.len().min(MAX_LINK_SERIES);
        let extra = links.len() - kept;
        if extra > 0 {
            self.link_series_dropped.add(extra as u64);
        }
        let mut new: Vec<LinkSample> = links.iter().take(kept).cloned().collect();
        for l in &mut new {
            truncate_at_char(&mut l.peer, MAX_LABEL_VALUE_LEN);
        }
        // A poisoned lock only means a panic elsewhere mid-update; the data is plain values.
        let mut guard = self.links.lock().unwrap_or_else(|p| p.into_inner());
        *guard = new;
    }

    /// Renders every metric in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut e = TextEncoder::new(&mut out);
        e.family(
            "fastpubsub_build_info",
            "Relay version; the value is always 1.",
            MetricType::Gauge,
        );
        e.sample(
            "fastpubsub_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1u64,
        );
        gauge(
            &mut e,
            "fastpubsub_connections",
            "Open client WebSocket connections.",
            &self.connections,
        );
        counter(
            &mut e,
            "fastpubsub_connections_accepted_total",
            "Client connections accepted since start.",
            &self.connections_accepted,
        );
        gauge(
            &mut e,
            "fastpubsub_subscriptions",
            "Active subscriptions over all connections.",
            &self.subscriptions,
        );
        self.messages_received.render(
            &mut e,
            "fastpubsub_messages_received_total",
            "Messages received, from local clients or mesh peers.",
        );
        counter(
            &mut e,
            "fastpubsub_messages_delivered_total",
            "Messages delivered to local subscribers.",
            &self.messages_delivered,
        );
        counter(
            &mut e,
            "fastpubsub_messages_forwarded_total",
            "Message copies forwarded to mesh next hops.",
            &self.messages_forwarded,
        );
        self.drops.render(
            &mut e,
            "fastpubsub_drops_total",
            "Messages dropped, by reason.",
        );
        counter(
            &mut e,
            "fastpubsub_slow_consumer_disconnects_total",
            "Consumers disconnected because their queue stayed full.",
            &self.slow_consumer_disconnects,
        );
        counter(
            &mut e,
            "fastpubsub_intake_pauses_total",
            "Times the relay stopped reading clients because it was behind on writing deliveries (instead of dropping them for listeners that read).",
            &self.intake_pauses,
        );
        e.family(
            "fastpubsub_intake_paused_seconds_total",
            "Time the relay spent with client reads paused because it was behind on writing.",
            MetricType::Counter,
        );
        e.sample(
            "fastpubsub_intake_paused_seconds_total",
            &[],
            self.intake_paused_us.get() as f64 / 1e6,
        );
        counter(
            &mut e,
            "fastpubsub_intake_pause_overruns_total",
            "Intake pauses that reached their bound (1 s) before the backlog holding them was written; the backlog then counts as a slow consumer's.",
            &self.intake_pause_overruns,
        );
        self.edge_limit_hits.render(
            &mut e,
            "fastpubsub_edge_limit_hits_total",
            "Edge limits applied (read stops, rate limits, handshake caps, ...), by limit.",
        );
        gauge(
            &mut e,
            "fastpubsub_edge_held_bytes",
            "Heap bytes the edge holds for connections (queues, spare buffers, incomplete input).",
            &self.edge_held_bytes,
        );
        gauge(
            &mut e,
            "fastpubsub_edge_handshakes_pending",
            "Client connections still in their HTTP/WebSocket handshake.",
            &self.edge_handshakes_pending,
        );
        counter(
            &mut e,
            "fastpubsub_intake_pauses_mesh_total",
            "Times the relay stopped reading clients because the mesh was backed up (its queue from the edge half full, or a next hop's link that is not slow backed up).",
            &self.intake_pauses_mesh,
        );
        self.handshake_refusals.render(
            &mut e,
            "fastpubsub_handshake_refusals_total",
            "Client or mesh handshakes refused, by reason.",
        );
        self.ticket_verifications.render(
            &mut e,
            "fastpubsub_ticket_verifications_total",
            "Ticket verifications, by whether the cache answered.",
        );
        counter(
            &mut e,
            "fastpubsub_route_changes_total",
            "Next-hop changes installed by the routing table.",
            &self.route_changes,
        );
        self.mesh_control_bytes.render(
            &mut e,
            "fastpubsub_mesh_control_bytes_total",
            "Mesh control-plane bytes (probes, route updates, interest, announcements).",
        );
        self.mesh_control_kind_bytes.render(
            &mut e,
            "fastpubsub_mesh_control_kind_bytes_total",
            "Mesh control-plane bytes by message kind.",
        );
        self.mesh_handshakes_refused.render(
            &mut e,
            "fastpubsub_mesh_handshakes_refused_total",
            "Mesh QUIC connection attempts stopped before their handshake completed, by reason.",
        );
        counter(
            &mut e,
            "fastpubsub_mesh_retries_total",
            "Retry packets sent on the mesh port (address validation under handshake load).",
            &self.mesh_retries,
        );
        gauge(
            &mut e,
            "fastpubsub_mesh_handshakes_in_progress",
            "Incoming mesh QUIC handshakes in progress.",
            &self.mesh_handshakes_in_progress,
        );
        gauge(
            &mut e,
            "fastpubsub_mesh_links_backed_up",
            "Mesh links whose send queue or unsent bytes are above the high mark now.",
            &self.mesh_links_backed_up,
        );
        gauge(
            &mut e,
            "fastpubsub_mesh_links_slow",
            "Mesh links backed up for a second or more now: their overflow is dropped.",
            &self.mesh_links_slow,
        );
        counter(
            &mut e,
            "fastpubsub_mesh_messages_dropped_slow_link_total",
            "Of the link_queue_full drops, those on slow links (the peer or path cannot keep up).",
            &self.mesh_messages_dropped_slow_link,
        );
        counter(
            &mut e,
            "fastpubsub_mesh_backpressure_episodes_total",
            "Times a healthy mesh link backed up and the mesh asked the intake to pause.",
            &self.mesh_backpressure_episodes,
        );
        e.family(
            "fastpubsub_mesh_backpressure_seconds_total",
            "Time the mesh's intake-pause signal was on.",
            MetricType::Counter,
        );
        e.sample(
            "fastpubsub_mesh_backpressure_seconds_total",
            &[],
            self.mesh_backpressure_ms.get() as f64 / 1000.0,
        );
        {
            let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
            type Field = fn(&LinkSample) -> f64;
            let families: [(&str, &str, Field); 5] = [
                (
                    "fastpubsub_link_up",
                    "1 if the mesh link is up, else 0.",
                    |l| {
                        if l.up { 1.0 } else { 0.0 }
                    },
                ),
                (
                    "fastpubsub_link_rtt_seconds",
                    "Smoothed round-trip time of the mesh link.",
                    |l| l.rtt_seconds,
                ),
                (
                    "fastpubsub_link_rtt_min_seconds",
                    "Minimum round-trip time of the mesh link over the probe window.",
                    |l| l.rtt_min_seconds,
                ),
                (
                    "fastpubsub_link_jitter_seconds",
                    "Round-trip jitter of the mesh link.",
                    |l| l.jitter_seconds,
                ),
                (
                    "fastpubsub_link_loss_ratio",
                    "Probe loss of the mesh link over the window (0 to 1).",
                    |l| l.loss_ratio,
                ),
            ];
            for (name, help, field) in families {
                e.family(name, help, MetricType::Gauge);
                for l in links.iter() {
                    e.sample(name, &[("peer", &l.peer)], field(l));
                }
            }
        }
        self.wt.render(&mut e);
        counter(
            &mut e,
            "fastpubsub_metrics_series_dropped_total",
            "Per-link series not exported because the series cap was reached.",
            &self.link_series_dropped,
        );
        out
    }
}

fn counter(e: &mut TextEncoder<'_>, name: &str, help: &str, c: &Counter) {
    e.family(name, help, MetricType::Counter);
    e.sample(name, &[], c.get());
}

fn gauge(e: &mut TextEncoder<'_>, name: &str, help: &str, g: &Gauge) {
    e.family(name, help, MetricType::Gauge);
    e.sample(name, &[], g.get());
}

fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::text::{valid_label_name, valid_metric_name};
    use super::*;

    /// Parses the exposition back: (family name -> type) and the sample lines, checking the
    /// structure every scraper relies on.
    type Families = Vec<(String, String)>;
    type Samples = Vec<(String, String, String)>;

    fn parse(text: &str) -> (Families, Samples) {
        let mut types = Vec::new();
        let mut samples = Vec::new();
        let mut last_help: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                last_help = Some(name);
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap_or_default().to_string();
                assert_eq!(
                    last_help.as_deref(),
                    Some(name.as_str()),
                    "TYPE without HELP"
                );
                types.push((name, it.next().unwrap_or_default().to_string()));
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap_or_default();
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => (n, l.trim_end_matches('}')),
                    None => (series, ""),
                };
                assert_eq!(
                    types.last().map(|t| t.0.as_str()),
                    Some(name),
                    "sample {name} outside its family"
                );
                assert!(value.parse::<f64>().is_ok(), "bad value in {line:?}");
                samples.push((name.to_string(), labels.to_string(), value.to_string()));
            }
        }
        (types, samples)
    }

    #[test]
    fn catalog_follows_naming_conventions() {
        let m = RelayMetrics::default();
        m.wt.enable();
        m.set_links(&[LinkSample {
            peer: "nsk".into(),
            up: true,
            rtt_seconds: 0.1,
            rtt_min_seconds: 0.09,
            jitter_seconds: 0.002,
            loss_ratio: 0.0,
        }]);
        let (types, samples) = parse(&m.render());
        // Issue 6 item 3, each one present.
        for want in [
            "fastpubsub_connections",
            "fastpubsub_subscriptions",
            "fastpubsub_messages_received_total",
            "fastpubsub_messages_delivered_total",
            "fastpubsub_messages_forwarded_total",
            "fastpubsub_drops_total",
            "fastpubsub_slow_consumer_disconnects_total",
            "fastpubsub_intake_pauses_total",
            "fastpubsub_intake_paused_seconds_total",
            "fastpubsub_intake_pause_overruns_total",
            "fastpubsub_edge_limit_hits_total",
            "fastpubsub_edge_held_bytes",
            "fastpubsub_edge_handshakes_pending",
            "fastpubsub_intake_pauses_mesh_total",
            "fastpubsub_handshake_refusals_total",
            "fastpubsub_ticket_verifications_total",
            "fastpubsub_link_rtt_seconds",
            "fastpubsub_link_jitter_seconds",
            "fastpubsub_link_loss_ratio",
            "fastpubsub_route_changes_total",
            "fastpubsub_mesh_control_bytes_total",
            "fastpubsub_wt_sessions",
            "fastpubsub_wt_session_refusals_total",
            "fastpubsub_wt_deliveries_dropped_total",
        ] {
            assert!(types.iter().any(|(n, _)| n == want), "{want} missing");
        }
        let mut seen = std::collections::HashSet::new();
        for (name, ty) in &types {
            assert!(seen.insert(name.clone()), "family {name} twice");
            assert!(
                valid_metric_name(name) && name.starts_with("fastpubsub_"),
                "{name}"
            );
            match ty.as_str() {
                "counter" => assert!(name.ends_with("_total"), "counter {name} lacks _total"),
                "gauge" => assert!(!name.ends_with("_total"), "gauge {name} ends in _total"),
                other => panic!("unexpected type {other}"),
            }
            assert!(
                !name.contains("_ms") && !name.contains("millis"),
                "{name}: use base units"
            );
        }
        for (_, labels, _) in &samples {
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, _) = pair.split_once('=').unwrap_or_default();
                assert!(valid_label_name(k), "{k}");
            }
        }
    }

    #[test]
    fn values_reach_the_exposition() {
        let m = RelayMetrics::default();
        m.connections.inc();
        m.connections.inc();
        m.connections.dec();
        m.drops.add(DropReason::SubscriberQueueFull, 7);
        m.drops.inc(DropReason::NoRoute);
        m.handshake_refusals.inc(RefusalReason::Ticket);
        m.ticket_verifications.add(TicketCache::Hit, 5);
        m.messages_received.add(Source::Mesh, 11);
        m.mesh_control_bytes.add(Direction::Sent, 1234);
        m.set_links(&[LinkSample {
            peer: "tok\"yo".into(),
            up: false,
            rtt_seconds: 0.2218,
            rtt_min_seconds: 0.22,
            jitter_seconds: 0.001,
            loss_ratio: 0.25,
        }]);
        let text = m.render();
        for want in [
            "fastpubsub_connections 1\n",
            "fastpubsub_drops_total{reason=\"subscriber_queue_full\"} 7\n",
            "fastpubsub_drops_total{reason=\"no_route\"} 1\n",
            "fastpubsub_drops_total{reason=\"duplicate\"} 0\n",
            "fastpubsub_handshake_refusals_total{reason=\"ticket\"} 1\n",
            "fastpubsub_ticket_verifications_total{cache=\"hit\"} 5\n",
            "fastpubsub_ticket_verifications_total{cache=\"miss\"} 0\n",
            "fastpubsub_messages_received_total{source=\"mesh\"} 11\n",
            "fastpubsub_mesh_control_bytes_total{direction=\"sent\"} 1234\n",
            "fastpubsub_link_up{peer=\"tok\\\"yo\"} 0\n",
            "fastpubsub_link_rtt_seconds{peer=\"tok\\\"yo\"} 0.2218\n",
            "fastpubsub_link_loss_ratio{peer=\"tok\\\"yo\"} 0.25\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(m.drops.sum(), 8);
        m.slow_consumer_disconnects.mirror(5);
        m.slow_consumer_disconnects.mirror(3);
        m.drops.mirror(DropReason::NoRoute, 4);
        assert_eq!(
            m.slow_consumer_disconnects.get(),
            5,
            "mirrored counters never go down"
        );
        assert_eq!(m.drops.get(DropReason::NoRoute), 4);
    }

    #[test]
    fn link_series_are_capped_and_counted() {
        let m = RelayMetrics::default();
        let links: Vec<LinkSample> = (0..MAX_LINK_SERIES + 10)
            .map(|i| LinkSample {
                peer: format!("relay-{i}-{}", "é".repeat(40)),
                up: true,
                rtt_seconds: 0.01,
                rtt_min_seconds: 0.01,
                jitter_seconds: 0.0,
                loss_ratio: 0.0,
            })
            .collect();
        m.set_links(&links);
        let text = m.render();
        let rtt_lines = text
            .lines()
            .filter(|l| l.starts_with("fastpubsub_link_rtt_seconds{"))
            .count();
        assert_eq!(rtt_lines, MAX_LINK_SERIES);
        assert!(text.contains("fastpubsub_metrics_series_dropped_total 10\n"));
        let longest = text
            .lines()
            .filter_map(|l| l.strip_prefix("fastpubsub_link_up{peer=\""))
            .map(|l| l.split('"').next().unwrap_or_default().len())
            .max();
        assert!(longest.is_some_and(|n| n <= MAX_LABEL_VALUE_LEN));
        // a shorter snapshot replaces the old series
        m.set_links(&links[..2]);
        let text = m.render();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("fastpubsub_link_up{"))
                .count(),
            2
        );
    }
}
