//! The routing table state machine: [`RouteTable`].

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use super::config::{ConfigError, RouteConfig, margin};
use super::error::RouteError;
use super::event::RouteEvent;
use super::metric::LinkMeasurement;
use super::types::{Metric, RelayId, Seqno};
use super::wire::{Digest, Message, Recipient, SeqnoRequest, Transmit, Update};

/// Counters of what the table did and refused, for `/v1/status` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteStats {
    /// Updates handed to [`RouteTable::handle_update`] and accepted.
    pub updates_received: u64,
    /// Received updates that were unfeasible (kept, but not selectable).
    pub updates_unfeasible: u64,
    /// Received updates about this relay itself (kept only for the digest).
    pub updates_about_self: u64,
    /// Updates handed out by [`RouteTable::poll_transmit`] (retractions and full tables
    /// included).
    pub updates_sent: u64,
    /// Retractions handed out.
    pub retractions_sent: u64,
    /// Seqno requests this relay originated (each attempt).
    pub seqno_requests_sent: u64,
    /// Seqno requests forwarded toward their source.
    pub seqno_requests_forwarded: u64,
    /// Seqno requests received.
    pub seqno_requests_received: u64,
    /// Received seqno requests dropped (unknown destination, hop limit, duplicate).
    pub seqno_requests_dropped: u64,
    /// Times this relay raised its own seqno on request.
    pub own_seqno_bumps: u64,
    /// Next-hop changes (installed, changed, retracted).
    pub route_changes: u64,
    /// Events dropped because the event queue was full (the caller polls too rarely).
    pub events_dropped: u64,
    /// Links refused because the neighbour table was full.
    pub neighbour_table_full: u64,
    /// Destinations refused because the destination table was full.
    pub dest_table_full: u64,
    /// Digests sent (periodic ones count once, whatever the number of neighbours).
    pub digests_sent: u64,
    /// Digests received.
    pub digests_received: u64,
    /// Received digests that differed from the routes held from their sender.
    pub digest_mismatches: u64,
    /// Mismatches not repaired because this table had refused some of the sender's
    /// destinations (full): asking again would not help.
    pub digests_unverifiable: u64,
    /// Table requests sent (a digest differed).
    pub table_requests_sent: u64,
    /// Table requests received.
    pub table_requests_received: u64,
    /// Full tables sent to one neighbour (a new link, or on request).
    pub tables_sent: u64,
    /// Routes dropped because a requested full table did not repeat them (stale).
    pub routes_purged: u64,
}

/// One row of [`RouteTable::routes`]: everything `/v1/status` shows about a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteInfo {
    /// The destination relay.
    pub dest: RelayId,
    /// The neighbour traffic to `dest` goes to, if reachable.
    pub next_hop: Option<RelayId>,
    /// The installed route's metric ([`Metric::INFINITY`] when unreachable).
    pub metric: Metric,
    /// The smoothed metric used for route selection.
    pub smoothed_metric: Metric,
    /// The installed route's seqno.
    pub seqno: Option<Seqno>,
    /// The cost of the direct link when `dest` is a neighbour.
    pub direct_metric: Option<Metric>,
    /// The best metric through a neighbour other than `dest` itself (the overlay path a
    /// direct link to `dest` competes with), [`Metric::INFINITY`] if none.
    pub via_others: Metric,
    /// This relay's feasibility distance for `dest` (seqno, metric), if any.
    pub feasibility_distance: Option<(Seqno, Metric)>,
}

impl RouteInfo {
    /// How much the installed route saves over the direct link, in microseconds
    /// (zero when it is the direct link, or there is none).
    pub fn saving_us(&self) -> u32 {
        match self.direct_metric {
            Some(d) if self.metric.is_finite() => d.as_us().saturating_sub(self.metric.as_us()),
            _ => 0,
        }
    }
}

/// One row of [`RouteTable::neighbours`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighbourInfo {
    /// The neighbour.
    pub id: RelayId,
    /// The link cost derived from `measurement`.
    pub cost: Metric,
    /// The last measurement reported.
    pub measurement: LinkMeasurement,
}

#[derive(Clone, Copy, Debug)]
struct NeighbourSlot {
    used: bool,
    id: RelayId,
    cost: Metric,
    measurement: LinkMeasurement,
    /// A full table is being sent to it: the next entry (0 = our own route, `k` = the
    /// destination slot `k - 1`), and the request it answers (0 = none).
    dump: Option<(usize, u8)>,
    /// The last finite route it advertised to this relay, with its generation.
    about_me: Option<(Seqno, Metric, u8)>,
    /// Generation of the routes it sent: raised by each table request, so the routes a
    /// requested full table does not repeat can be told apart.
    generation: u8,
    /// A table request (with `generation`) is to be sent.
    send_request: bool,
    /// When the last table request went out, and whether its answer is still awaited.
    requested_at: Option<u64>,
    awaiting: bool,
    /// One of its destinations was refused (table full) since the last request.
    refused: bool,
}

impl NeighbourSlot {
    const EMPTY: NeighbourSlot = NeighbourSlot {
        used: false,
        id: RelayId(0),
        cost: Metric::INFINITY,
        measurement: LinkMeasurement::from_rtt_us(0),
        dump: None,
        about_me: None,
        generation: 0,
        send_request: false,
        requested_at: None,
        awaiting: false,
        refused: false,
    };

    fn has_output(&self) -> bool {
        self.used && (self.send_request || self.dump.is_some())
    }
}

/// A route to one destination through one neighbour (16 bytes: one per destination ×
/// neighbour slot is the table's main memory).
#[derive(Clone, Copy, Debug)]
struct RouteSlot {
    present: bool,
    /// The neighbour's generation when this route was last received.
    generation: u8,
    seqno: Seqno,
    /// The neighbour's advertised metric.
    adv: Metric,
    /// Smoothed total metric (adv + link cost).
    smoothed: Metric,
    /// Mean deviation of the samples from `smoothed`, µs (noise estimate).
    dev: u32,
}

impl RouteSlot {
    const EMPTY: RouteSlot = RouteSlot {
        present: false,
        generation: 0,
        seqno: Seqno(0),
        adv: Metric::INFINITY,
        smoothed: Metric::INFINITY,
        dev: 0,
    };

    /// Takes a new sample of the route's total metric: smoothing (with a jump on
    /// large changes) and the noise estimate, like TCP's SRTT and RTTVAR.
    fn sample(&mut self, raw: Metric, cfg: &RouteConfig) {
        if !self.smoothed.is_finite() || !raw.is_finite() {
            self.smoothed = raw;
            self.dev = 0;
            return;
        }
        let (next, jumped) = smooth(self.smoothed, raw, cfg);
        if !jumped {
            let diff = raw.as_us().abs_diff(self.smoothed.as_us());
            let dev = i64::from(self.dev);
            self.dev = u32::try_from(dev + ((i64::from(diff) - dev) >> 2)).unwrap_or(u32::MAX);
        }
        self.smoothed = next;
    }
}

#[derive(Clone, Copy, Debug)]
struct PendingRequest {
    seqno: Seqno,
    /// Neighbour slot to ask; `None` asks all neighbours.
    to: Option<usize>,
    send_now: bool,
    next_at: u64,
    attempts_left: u8,
    /// Rounds of `request_attempts` sent without success (the gap before the next grows).
    rounds: u8,
}

#[derive(Clone, Copy, Debug)]
struct DestSlot {
    used: bool,
    id: RelayId,
    fd: Option<(Seqno, Metric)>,
    selected: Option<usize>,
    /// Metric of the selected route when last looked at (for events).
    sel_metric: Metric,
    advertised: Option<(Seqno, Metric)>,
    /// Smoothed metric of the selected route when it was last advertised.
    adv_smoothed: Metric,
    idle_since: u64,
    settle: Option<(usize, u64)>,
    request: Option<PendingRequest>,
    forward: Option<(usize, SeqnoRequest)>,
    last_forward: Option<(Seqno, u64)>,
    send_update: bool,
}

impl DestSlot {
    const EMPTY: DestSlot = DestSlot {
        used: false,
        id: RelayId(0),
        fd: None,
        selected: None,
        sel_metric: Metric::INFINITY,
        advertised: None,
        adv_smoothed: Metric::INFINITY,
        idle_since: 0,
        settle: None,
        request: None,
        forward: None,
        last_forward: None,
        send_update: false,
    };

    fn has_output(&self) -> bool {
        self.send_update || self.forward.is_some() || self.request.is_some_and(|r| r.send_now)
    }

    /// The finite route this relay advertises for it, if any.
    fn advertised_finite(&self) -> Option<(Seqno, Metric)> {
        self.advertised.filter(|(_, m)| m.is_finite())
    }
}

/// Babel's feasibility condition (RFC 8966 §3.5.1): an update is feasible when its
/// (seqno, metric) is strictly better than the feasibility distance.
fn feasible(fd: Option<(Seqno, Metric)>, seqno: Seqno, metric: Metric) -> bool {
    if !metric.is_finite() {
        return false;
    }
    match fd {
        None => true,
        Some((fs, fm)) => seqno.is_newer_than(fs) || (seqno == fs && metric < fm),
    }
}

/// Moves `prev` toward `sample`; jumps straight to it on a large change (then
/// also returns true).
fn smooth(prev: Metric, sample: Metric, cfg: &RouteConfig) -> (Metric, bool) {
    if !prev.is_finite() || !sample.is_finite() {
        return (sample, true);
    }
    let (p, s) = (i64::from(prev.as_us()), i64::from(sample.as_us()));
    let diff = s - p;
    if diff.unsigned_abs() > u64::from(margin(prev, cfg.jump_us, cfg.jump_ppm)) {
        return (sample, true);
    }
    let mut step = diff >> cfg.smoothing_shift.min(16);
    if step == 0 && diff != 0 {
        step = diff.signum();
    }
    (Metric::from_us(u64::try_from(p + step).unwrap_or(0)), false)
}

/// `a + margin < b`, without overflow.
fn better_by(a: Metric, b: Metric, margin_us: u32) -> bool {
    u64::from(a.as_us()) + u64::from(margin_us) < u64::from(b.as_us())
}

/// A latency distance-vector routing table (Babel-like, RFC 8966), sans-IO. It holds up
/// to [`RouteConfig::max_destinations`] destination relays and
/// [`RouteConfig::max_neighbours`] neighbours, and its memory grows with the relays it
/// actually knows (16 bytes per destination × neighbour slot, plus about 150 bytes per
/// destination): a 5-relay mesh pays for 5.
///
/// It owns no socket, clock or randomness. The caller (the mesh driver, or a
/// simulator) feeds it inputs with the current time in microseconds and drains
/// its outputs.
///
/// # Updates: incremental, checked by digests
///
/// Routes are sent when they change (triggered updates) and in full only to a neighbour
/// whose link just came up. Instead of repeating the whole table every few seconds,
/// every [`RouteConfig::digest_interval_us`] each neighbour gets a [`Digest`] of every
/// route advertised; a neighbour whose own view differs (an update lost to a full queue,
/// a link only one side saw go down) asks for the whole table
/// ([`Message::TableRequest`]), and routes that table does not repeat are dropped. Over
/// an in-order link (the mesh's control stream) the control traffic at rest is one
/// digest per link and interval, whatever the number of relays.
///
/// # Call order
///
/// Like quinn-proto's `Connection`:
///
/// 1. Feed inputs as they happen:
///    - [`handle_link_metric`](Self::handle_link_metric) for every new measurement
///      of a link (the first one brings the neighbour up),
///    - [`handle_link_down`](Self::handle_link_down) when a link dies,
///    - [`handle_message`](Self::handle_message) for every routing message received
///      from a neighbour, in the order it was sent,
///    - [`handle_timeout`](Self::handle_timeout) when the time given by
///      [`poll_timeout`](Self::poll_timeout) has come.
/// 2. After any `handle_*` call, drain [`poll_transmit`](Self::poll_transmit) until
///    `None` and send each message, in order (a message to
///    [`Recipient::AllNeighbours`] goes to every neighbour whose link is up). If a
///    link's queue is full the message may be dropped: the next digest repairs it.
/// 3. Drain [`poll_event`](Self::poll_event) (route changes for the dashboard).
///    The queue holds [`RouteConfig::max_events`] events; overflow is counted in
///    [`RouteStats::events_dropped`].
/// 4. Re-arm one timer at [`poll_timeout`](Self::poll_timeout).
///
/// [`next_hop`](Self::next_hop) and [`routes`](Self::routes) may be read at any time.
/// Every call does bounded work: at most `O(destinations × neighbours)` (a link change or
/// a housekeeping tick), usually `O(log destinations)` to `O(neighbours)`. Memory is
/// only allocated when a destination or neighbour is first learnt.
///
/// # Example
///
/// ```
/// use fastpubsub_core::route::{LinkMeasurement, RelayId, RouteConfig, RouteTable};
///
/// let mut t = RouteTable::new(RelayId(1), Default::default(), RouteConfig::default(), 0)?;
/// t.handle_link_metric(RelayId(2), LinkMeasurement::from_rtt_us(20_000), 0)?;
/// while let Some(tx) = t.poll_transmit() {
///     // encode tx.message with postcard and send it to tx.to
///     let _ = tx;
/// }
/// assert_eq!(t.next_hop(RelayId(2)), None); // not until relay 2 announces itself
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RouteTable {
    me: RelayId,
    seqno: Seqno,
    /// The seqno last advertised for ourselves (what the digest counts).
    self_advertised: Option<Seqno>,
    cfg: RouteConfig,
    neighbours: Vec<NeighbourSlot>,
    n_neighbours: usize,
    dests: Vec<DestSlot>,
    free_dests: Vec<usize>,
    index: BTreeMap<RelayId, usize>,
    /// Route slots per destination (≥ `neighbours.len()`): `routes[d * stride + n]`.
    stride: usize,
    routes: Vec<RouteSlot>,
    self_pending: bool,
    digest_due: bool,
    pending: usize,
    cursor: usize,
    /// Next destination slot the drift refresh looks at.
    refresh_cursor: usize,
    events: VecDeque<RouteEvent>,
    next_digest: u64,
    next_tick: u64,
    stats: RouteStats,
}

impl RouteTable {
    /// A table for relay `me`, starting at seqno `initial_seqno` (pass a random or
    /// time-derived value so a restarted relay is not stuck behind its old seqno;
    /// seqno requests recover in any case), at time `now_us`. Allocates nothing until
    /// the first neighbour comes up.
    pub fn new(
        me: RelayId,
        initial_seqno: Seqno,
        cfg: RouteConfig,
        now_us: u64,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        Ok(RouteTable {
            me,
            seqno: initial_seqno,
            self_advertised: None,
            cfg,
            neighbours: Vec::new(),
            n_neighbours: 0,
            dests: Vec::new(),
            free_dests: Vec::new(),
            index: BTreeMap::new(),
            stride: 0,
            routes: Vec::new(),
            self_pending: true,
            digest_due: false,
            pending: 0,
            cursor: 0,
            refresh_cursor: 0,
            events: VecDeque::new(),
            next_digest: now_us.saturating_add(cfg.digest_interval_us),
            next_tick: now_us.saturating_add(cfg.tick_us),
            stats: RouteStats::default(),
        })
    }

    /// This relay's id.
    pub fn me(&self) -> RelayId {
        self.me
    }

    /// This relay's current seqno (what it announces for itself).
    pub fn seqno(&self) -> Seqno {
        self.seqno
    }

    /// The configuration in use.
    pub fn config(&self) -> &RouteConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> RouteStats {
        self.stats
    }

    /// Destinations known (reachable or being retracted).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no destination is known.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Heap bytes held for destinations, neighbours and routes (the index's nodes are
    /// estimated): what the table costs beyond `size_of::<RouteTable>()`.
    pub fn heap_bytes(&self) -> usize {
        use core::mem::size_of;
        self.dests.capacity() * size_of::<DestSlot>()
            + self.free_dests.capacity() * size_of::<usize>()
            + self.neighbours.capacity() * size_of::<NeighbourSlot>()
            + self.routes.capacity() * size_of::<RouteSlot>()
            + self.events.capacity() * size_of::<RouteEvent>()
            + self.index.len() * (size_of::<RelayId>() + size_of::<usize>()) * 3 / 2
    }

    /// The neighbour to forward to for `dest`, if it is reachable.
    pub fn next_hop(&self, dest: RelayId) -> Option<RelayId> {
        let d = *self.index.get(&dest)?;
        let n = self.dests.get(d)?.selected?;
        Some(self.neighbours.get(n)?.id)
    }

    /// The status row of one destination, if known.
    pub fn route(&self, dest: RelayId) -> Option<RouteInfo> {
        self.index.get(&dest).map(|&d| self.route_info(d))
    }

    /// Every known destination (reachable or being retracted), for `/v1/status`.
    pub fn routes(&self) -> impl Iterator<Item = RouteInfo> + '_ {
        self.index.values().map(|&d| self.route_info(d))
    }

    /// Every neighbour whose link is up.
    pub fn neighbours(&self) -> impl Iterator<Item = NeighbourInfo> + '_ {
        self.neighbours
            .iter()
            .filter(|n| n.used)
            .map(|n| NeighbourInfo {
                id: n.id,
                cost: n.cost,
                measurement: n.measurement,
            })
    }

    fn route_info(&self, d: usize) -> RouteInfo {
        let slot = &self.dests[d];
        let sel = slot.selected;
        let direct = self.find_neighbour(slot.id);
        let via_others = (0..self.neighbours.len())
            .filter(|&n| Some(n) != direct && self.r(d, n).present)
            .map(|n| self.r(d, n).smoothed)
            .min()
            .unwrap_or(Metric::INFINITY);
        RouteInfo {
            dest: slot.id,
            next_hop: sel.map(|n| self.neighbours[n].id),
            metric: sel.map_or(Metric::INFINITY, |n| self.metric(d, n)),
            smoothed_metric: sel.map_or(Metric::INFINITY, |n| self.r(d, n).smoothed),
            seqno: sel.map(|n| self.r(d, n).seqno),
            direct_metric: direct.map(|n| self.neighbours[n].cost),
            via_others,
            feasibility_distance: slot.fd,
        }
    }

    // ---- inputs -------------------------------------------------------------

    /// A new measurement of the link to `neighbour`. The first one brings the
    /// neighbour up and schedules our whole table for it.
    pub fn handle_link_metric(
        &mut self,
        neighbour: RelayId,
        measurement: LinkMeasurement,
        now_us: u64,
    ) -> Result<(), RouteError> {
        if neighbour == self.me {
            return Err(RouteError::SelfAsNeighbour);
        }
        let cost = measurement.cost(&self.cfg);
        let Some(nb) = self.find_neighbour(neighbour) else {
            let Some(nb) = self.new_neighbour_slot() else {
                self.stats.neighbour_table_full += 1;
                return Err(RouteError::NeighbourTableFull(neighbour));
            };
            self.neighbours[nb] = NeighbourSlot {
                used: true,
                id: neighbour,
                cost,
                measurement,
                dump: Some((0, 0)),
                ..NeighbourSlot::EMPTY
            };
            self.n_neighbours += 1;
            return Ok(());
        };
        self.neighbours[nb].measurement = measurement;
        if self.neighbours[nb].cost == cost {
            return Ok(());
        }
        self.neighbours[nb].cost = cost;
        for d in 0..self.dests.len() {
            if !self.dests[d].used || !self.r(d, nb).present {
                continue;
            }
            let raw = self.metric(d, nb);
            let cfg = self.cfg;
            self.r_mut(d, nb).sample(raw, &cfg);
            self.reconsider(d, nb, now_us);
        }
        Ok(())
    }

    /// The link to `neighbour` died: every route through it is dropped at once and
    /// the affected destinations are rerouted or retracted.
    pub fn handle_link_down(&mut self, neighbour: RelayId, now_us: u64) -> Result<(), RouteError> {
        let nb = self
            .find_neighbour(neighbour)
            .ok_or(RouteError::UnknownNeighbour(neighbour))?;
        for d in 0..self.dests.len() {
            if !self.dests[d].used {
                continue;
            }
            let had = self.r(d, nb).present;
            *self.r_mut(d, nb) = RouteSlot::EMPTY;
            let slot = &mut self.dests[d];
            if slot.settle.is_some_and(|(n, _)| n == nb) {
                slot.settle = None;
            }
            if let Some(r) = slot.request.as_mut()
                && r.to == Some(nb)
            {
                r.to = None;
            }
            if slot.forward.is_some_and(|(n, _)| n == nb) {
                self.touch(d, |s| s.forward = None);
            }
            if had && self.dests[d].selected == Some(nb) {
                self.select(d, now_us);
            }
        }
        self.neighbours[nb] = NeighbourSlot::EMPTY;
        self.n_neighbours = self.n_neighbours.saturating_sub(1);
        Ok(())
    }

    /// A routing message received from `from` (a neighbour), whatever its kind: the
    /// entry point for a driver; it dispatches to the `handle_*` method of the kind.
    pub fn handle_message(
        &mut self,
        from: RelayId,
        message: Message,
        now_us: u64,
    ) -> Result<(), RouteError> {
        match message {
            Message::Update(u) => self.handle_update(from, u, now_us),
            Message::SeqnoRequest(r) => self.handle_seqno_request(from, r, now_us),
            Message::Digest(g) => self.handle_digest(from, g, now_us),
            Message::TableRequest(n) => self.handle_table_request(from, n, now_us),
        }
    }

    /// An update received from `from` (a neighbour).
    pub fn handle_update(
        &mut self,
        from: RelayId,
        update: Update,
        now_us: u64,
    ) -> Result<(), RouteError> {
        let nb = self
            .find_neighbour(from)
            .ok_or(RouteError::UnknownNeighbour(from))?;
        let generation = self.neighbours[nb].generation;
        if update.source == self.me {
            self.stats.updates_about_self += 1;
            self.neighbours[nb].about_me =
                update
                    .metric
                    .is_finite()
                    .then_some((update.seqno, update.metric, generation));
            return Ok(());
        }
        let d = match self.index.get(&update.source) {
            Some(&d) => d,
            None if update.is_retraction() => {
                self.stats.updates_received += 1;
                return Ok(());
            }
            None => {
                let Some(d) = self.new_dest_slot(update.source, now_us) else {
                    self.stats.dest_table_full += 1;
                    self.neighbours[nb].refused = true;
                    return Err(RouteError::DestTableFull(update.source));
                };
                d
            }
        };
        self.stats.updates_received += 1;
        if update.is_retraction() {
            if self.r(d, nb).present {
                *self.r_mut(d, nb) = RouteSlot::EMPTY;
                self.select(d, now_us);
            }
            return Ok(());
        }
        if !feasible(self.dests[d].fd, update.seqno, update.metric) {
            self.stats.updates_unfeasible += 1;
        }
        let raw = update.metric.add(self.neighbours[nb].cost);
        let settling_here = self.dests[d].settle.is_some_and(|(c, _)| c == nb);
        let cfg = self.cfg;
        let r = self.r_mut(d, nb);
        r.generation = generation;
        // Fast path: a repeat of an unchanged, settled route changes nothing.
        if r.present
            && r.seqno == update.seqno
            && r.adv == update.metric
            && r.smoothed == raw
            && r.dev == 0
        {
            if settling_here {
                self.select(d, now_us);
            }
            return Ok(());
        }
        if !r.present {
            *r = RouteSlot {
                generation,
                ..RouteSlot::EMPTY
            };
        }
        r.present = true;
        r.seqno = update.seqno;
        r.adv = update.metric;
        r.sample(raw, &cfg);
        self.reconsider(d, nb, now_us);
        Ok(())
    }

    /// A seqno request received from `from` (a neighbour): answered with an update
    /// if this relay is the source or has a new enough route, else forwarded one
    /// hop toward the source.
    pub fn handle_seqno_request(
        &mut self,
        from: RelayId,
        request: SeqnoRequest,
        now_us: u64,
    ) -> Result<(), RouteError> {
        let from_nb = self
            .find_neighbour(from)
            .ok_or(RouteError::UnknownNeighbour(from))?;
        self.stats.seqno_requests_received += 1;
        if request.source == self.me {
            if request.seqno.is_newer_than(self.seqno) {
                self.seqno = request.seqno;
                self.stats.own_seqno_bumps += 1;
            }
            self.self_pending = true;
            return Ok(());
        }
        let Some(&d) = self.index.get(&request.source) else {
            self.stats.seqno_requests_dropped += 1;
            return Ok(());
        };
        if let Some(n) = self.dests[d].selected
            && !request.seqno.is_newer_than(self.r(d, n).seqno)
        {
            self.touch(d, |s| s.send_update = true);
            return Ok(());
        }
        let target = self.dests[d].selected.or_else(|| self.best(d).1);
        let dup = self.dests[d].last_forward.is_some_and(|(s, t)| {
            s == request.seqno && now_us.saturating_sub(t) < self.cfg.request_dedup_us
        });
        match target {
            Some(n) if request.hop_count > 1 && n != from_nb && !dup => {
                let fwd = SeqnoRequest {
                    hop_count: request.hop_count - 1,
                    ..request
                };
                self.dests[d].last_forward = Some((request.seqno, now_us));
                self.touch(d, |s| s.forward = Some((n, fwd)));
            }
            _ => self.stats.seqno_requests_dropped += 1,
        }
        Ok(())
    }

    /// A digest received from `from`: compared with the routes held from it; a
    /// difference asks for its whole table (at most once per
    /// [`RouteConfig::table_request_interval_us`]). A digest that ends a requested full
    /// table first drops the routes that table did not repeat.
    pub fn handle_digest(
        &mut self,
        from: RelayId,
        digest: Digest,
        now_us: u64,
    ) -> Result<(), RouteError> {
        let nb = self
            .find_neighbour(from)
            .ok_or(RouteError::UnknownNeighbour(from))?;
        self.stats.digests_received += 1;
        let generation = self.neighbours[nb].generation;
        if digest.reply_to != 0 && digest.reply_to == generation && self.neighbours[nb].awaiting {
            self.neighbours[nb].awaiting = false;
            self.purge_stale(nb, generation, now_us);
        }
        if self.view_digest(nb) == (digest.digest, digest.routes) {
            return Ok(());
        }
        self.stats.digest_mismatches += 1;
        let s = &self.neighbours[nb];
        if s.refused {
            self.stats.digests_unverifiable += 1;
            return Ok(());
        }
        let recent = s
            .requested_at
            .is_some_and(|t| now_us.saturating_sub(t) < self.cfg.table_request_interval_us);
        if !recent && !s.send_request {
            let s = &mut self.neighbours[nb];
            s.generation = s.generation % u8::MAX + 1;
            s.send_request = true;
            s.awaiting = true;
            s.requested_at = Some(now_us);
        }
        Ok(())
    }

    /// A table request received from `from`: our whole table goes to it, then a digest
    /// answering request `number`.
    pub fn handle_table_request(
        &mut self,
        from: RelayId,
        number: u8,
        _now_us: u64,
    ) -> Result<(), RouteError> {
        let nb = self
            .find_neighbour(from)
            .ok_or(RouteError::UnknownNeighbour(from))?;
        self.stats.table_requests_received += 1;
        self.neighbours[nb].dump = Some((0, number));
        Ok(())
    }

    /// Runs timers: digests, request retries, settling of small improvements,
    /// forgetting of long-unreachable destinations.
    pub fn handle_timeout(&mut self, now_us: u64) {
        if now_us >= self.next_tick {
            self.next_tick = now_us.saturating_add(self.cfg.tick_us);
            self.housekeeping(now_us);
        }
        if now_us >= self.next_digest {
            self.next_digest = now_us.saturating_add(self.cfg.digest_interval_us);
            self.digest_due = true;
        }
    }

    // ---- outputs ------------------------------------------------------------

    /// The next message to send, if any. Bounded work: at most one scan of the
    /// destination slots and one of the neighbour slots.
    ///
    /// Order: our own route, changed routes and seqno requests, table requests, full
    /// tables (each followed by its digest), then the periodic digest, which waits
    /// until every full table is out so that no neighbour gets it half-way.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.n_neighbours == 0 {
            return None;
        }
        if self.self_pending {
            self.self_pending = false;
            self.self_advertised = Some(self.seqno);
            self.stats.updates_sent += 1;
            return Some(Transmit {
                to: Recipient::AllNeighbours,
                message: Message::Update(Update {
                    source: self.me,
                    seqno: self.seqno,
                    metric: Metric::ZERO,
                }),
            });
        }
        if let Some(tx) = self.poll_dest_output() {
            return Some(tx);
        }
        for nb in 0..self.neighbours.len() {
            if !self.neighbours[nb].has_output() {
                continue;
            }
            let to = Recipient::Neighbour(self.neighbours[nb].id);
            if self.neighbours[nb].send_request {
                self.neighbours[nb].send_request = false;
                self.stats.table_requests_sent += 1;
                return Some(Transmit {
                    to,
                    message: Message::TableRequest(self.neighbours[nb].generation),
                });
            }
            if let Some(tx) = self.poll_dump(nb) {
                return Some(tx);
            }
        }
        if self.digest_due {
            self.digest_due = false;
            self.stats.digests_sent += 1;
            let (digest, routes) = self.own_digest();
            return Some(Transmit {
                to: Recipient::AllNeighbours,
                message: Message::Digest(Digest {
                    digest,
                    routes,
                    reply_to: 0,
                }),
            });
        }
        None
    }

    /// The next route event, if any.
    pub fn poll_event(&mut self) -> Option<RouteEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next (microseconds).
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(self.next_digest.min(self.next_tick))
    }

    // ---- storage ------------------------------------------------------------

    fn r(&self, d: usize, n: usize) -> &RouteSlot {
        &self.routes[d * self.stride + n]
    }

    fn r_mut(&mut self, d: usize, n: usize) -> &mut RouteSlot {
        &mut self.routes[d * self.stride + n]
    }

    fn find_neighbour(&self, id: RelayId) -> Option<usize> {
        self.neighbours.iter().position(|n| n.used && n.id == id)
    }

    /// A free neighbour slot, growing the table (and the route stride) when needed.
    fn new_neighbour_slot(&mut self) -> Option<usize> {
        if let Some(n) = self.neighbours.iter().position(|n| !n.used) {
            return Some(n);
        }
        if self.neighbours.len() >= self.cfg.max_neighbours {
            return None;
        }
        let n = self.neighbours.len();
        self.neighbours.push(NeighbourSlot::EMPTY);
        if n >= self.stride {
            // Grow by half (at least 4): few relayouts, little unused room.
            let new = (self.stride + (self.stride / 2).max(4)).min(self.cfg.max_neighbours);
            let mut routes = Vec::with_capacity(self.dests.len() * new);
            for d in 0..self.dests.len() {
                let row = &self.routes[d * self.stride..(d + 1) * self.stride];
                routes.extend_from_slice(row);
                routes.resize((d + 1) * new, RouteSlot::EMPTY);
            }
            self.routes = routes;
            self.stride = new;
        }
        Some(n)
    }

    /// A slot for a new destination, `None` when the table is full.
    fn new_dest_slot(&mut self, id: RelayId, now_us: u64) -> Option<usize> {
        if self.index.len() >= self.cfg.max_destinations {
            return None;
        }
        let d = match self.free_dests.pop() {
            Some(d) => d,
            None => {
                self.dests.push(DestSlot::EMPTY);
                self.routes
                    .resize(self.dests.len() * self.stride, RouteSlot::EMPTY);
                self.dests.len() - 1
            }
        };
        self.dests[d] = DestSlot {
            used: true,
            id,
            idle_since: now_us,
            ..DestSlot::EMPTY
        };
        self.index.insert(id, d);
        Some(d)
    }

    fn forget_dest(&mut self, d: usize) {
        let id = self.dests[d].id;
        self.index.remove(&id);
        self.dests[d] = DestSlot::EMPTY;
        let stride = self.stride;
        self.routes[d * stride..(d + 1) * stride].fill(RouteSlot::EMPTY);
        self.free_dests.push(d);
        // Room again: a neighbour whose destination was refused can be checked again.
        for n in self.neighbours.iter_mut() {
            n.refused = false;
        }
    }

    // ---- internals ----------------------------------------------------------

    fn metric(&self, d: usize, n: usize) -> Metric {
        self.r(d, n).adv.add(self.neighbours[n].cost)
    }

    /// Changes a destination's output flags, keeping the pending count right.
    fn touch(&mut self, d: usize, f: impl FnOnce(&mut DestSlot)) {
        let before = self.dests[d].has_output();
        f(&mut self.dests[d]);
        let after = self.dests[d].has_output();
        match (before, after) {
            (false, true) => self.pending += 1,
            (true, false) => self.pending = self.pending.saturating_sub(1),
            _ => {}
        }
    }

    /// The next message from the destinations' output flags.
    fn poll_dest_output(&mut self) -> Option<Transmit> {
        let n = self.dests.len().max(1);
        // Each slot is visited at most twice (once to take its last output, once
        // to move past it): bounded even if the pending count were wrong.
        for _ in 0..=2 * n {
            if self.pending == 0 {
                return None;
            }
            let d = self.cursor % n;
            if self.dests.get(d).is_some_and(|s| s.has_output()) {
                if let Some(tx) = self.take_output(d) {
                    return Some(tx);
                }
            } else {
                self.cursor = self.cursor.wrapping_add(1);
            }
        }
        self.pending = 0;
        None
    }

    /// The next entry of the full table going to neighbour `nb`, then its digest.
    fn poll_dump(&mut self, nb: usize) -> Option<Transmit> {
        let (mut next, reply_to) = self.neighbours[nb].dump?;
        let to = Recipient::Neighbour(self.neighbours[nb].id);
        let update = |source: RelayId, (seqno, metric): (Seqno, Metric)| Transmit {
            to,
            message: Message::Update(Update {
                source,
                seqno,
                metric,
            }),
        };
        if next == 0 {
            self.neighbours[nb].dump = Some((1, reply_to));
            if let Some(s) = self.self_advertised {
                self.stats.updates_sent += 1;
                return Some(update(self.me, (s, Metric::ZERO)));
            }
            next = 1;
        }
        while next <= self.dests.len() {
            let d = next - 1;
            next += 1;
            if let Some(adv) = self.dests[d].advertised_finite()
                && self.dests[d].used
            {
                self.neighbours[nb].dump = Some((next, reply_to));
                self.stats.updates_sent += 1;
                return Some(update(self.dests[d].id, adv));
            }
        }
        self.neighbours[nb].dump = None;
        self.stats.tables_sent += 1;
        self.stats.digests_sent += 1;
        let (digest, routes) = self.own_digest();
        Some(Transmit {
            to,
            message: Message::Digest(Digest {
                digest,
                routes,
                reply_to,
            }),
        })
    }

    /// The digest of what this relay advertises (what every neighbour should hold).
    fn own_digest(&self) -> (u64, u32) {
        let mut sum = 0u64;
        let mut count = 0u32;
        if let Some(s) = self.self_advertised {
            sum = Digest::entry(self.me, s, Metric::ZERO);
            count = 1;
        }
        for slot in self.dests.iter().filter(|s| s.used) {
            if let Some((s, m)) = slot.advertised_finite() {
                sum = sum.wrapping_add(Digest::entry(slot.id, s, m));
                count += 1;
            }
        }
        (sum, count)
    }

    /// The digest of the routes held from neighbour `nb`.
    fn view_digest(&self, nb: usize) -> (u64, u32) {
        let mut sum = 0u64;
        let mut count = 0u32;
        if let Some((s, m, _)) = self.neighbours[nb].about_me {
            sum = Digest::entry(self.me, s, m);
            count = 1;
        }
        for (d, slot) in self.dests.iter().enumerate().filter(|(_, s)| s.used) {
            let r = self.r(d, nb);
            if r.present {
                sum = sum.wrapping_add(Digest::entry(slot.id, r.seqno, r.adv));
                count += 1;
            }
        }
        (sum, count)
    }

    /// Drops the routes of `nb` older than `generation` (a requested full table did
    /// not repeat them).
    fn purge_stale(&mut self, nb: usize, generation: u8, now_us: u64) {
        if self.neighbours[nb]
            .about_me
            .is_some_and(|(_, _, g)| g != generation)
        {
            self.neighbours[nb].about_me = None;
        }
        for d in 0..self.dests.len() {
            let r = *self.r(d, nb);
            if self.dests[d].used && r.present && r.generation != generation {
                *self.r_mut(d, nb) = RouteSlot::EMPTY;
                self.stats.routes_purged += 1;
                self.select(d, now_us);
            }
        }
    }

    /// Takes one message from destination `d`'s output flags.
    fn take_output(&mut self, d: usize) -> Option<Transmit> {
        let slot = self.dests[d];
        if slot.send_update {
            self.touch(d, |s| s.send_update = false);
            if let Some(tx) = self.make_update(d) {
                return Some(tx);
            }
        }
        if let Some(mut r) = slot.request.filter(|r| r.send_now) {
            r.send_now = false;
            r.attempts_left = r.attempts_left.saturating_sub(1);
            let to = match r.to {
                Some(n) if self.neighbours[n].used => Recipient::Neighbour(self.neighbours[n].id),
                _ => Recipient::AllNeighbours,
            };
            self.touch(d, |s| s.request = Some(r));
            self.stats.seqno_requests_sent += 1;
            return Some(Transmit {
                to,
                message: Message::SeqnoRequest(SeqnoRequest {
                    source: slot.id,
                    seqno: r.seqno,
                    hop_count: self.cfg.request_hop_count,
                }),
            });
        }
        if let Some((n, req)) = slot.forward {
            self.touch(d, |s| s.forward = None);
            if self.neighbours[n].used {
                self.stats.seqno_requests_forwarded += 1;
                return Some(Transmit {
                    to: Recipient::Neighbour(self.neighbours[n].id),
                    message: Message::SeqnoRequest(req),
                });
            }
        }
        None
    }

    /// Builds the update for destination `d` and records it as advertised (which
    /// moves the feasibility distance, RFC 8966 §3.7.3). Nothing when it would repeat
    /// a retraction already sent: every neighbour has it (or the digest repairs it).
    fn make_update(&mut self, d: usize) -> Option<Transmit> {
        let slot = self.dests[d];
        let (seqno, metric) = match slot.selected {
            Some(n) => {
                self.dests[d].adv_smoothed = self.r(d, n).smoothed;
                (self.r(d, n).seqno, self.metric(d, n))
            }
            None => {
                let (s, m) = slot.advertised?;
                if !m.is_finite() {
                    return None;
                }
                (s, Metric::INFINITY)
            }
        };
        if metric.is_finite() {
            let fd = match slot.fd {
                Some((fs, fm)) if !(seqno.is_newer_than(fs) || (seqno == fs && metric < fm)) => {
                    (fs, fm)
                }
                _ => (seqno, metric),
            };
            self.dests[d].fd = Some(fd);
            self.dests[d].sel_metric = metric;
        } else {
            self.stats.retractions_sent += 1;
        }
        self.dests[d].advertised = Some((seqno, metric));
        self.stats.updates_sent += 1;
        Some(Transmit {
            to: Recipient::AllNeighbours,
            message: Message::Update(Update {
                source: slot.id,
                seqno,
                metric,
            }),
        })
    }

    fn housekeeping(&mut self, now_us: u64) {
        for d in 0..self.dests.len() {
            if !self.dests[d].used {
                continue;
            }
            let mut moved = false;
            let mut any = false;
            for n in 0..self.neighbours.len() {
                if !self.r(d, n).present {
                    continue;
                }
                any = true;
                let raw = self.metric(d, n);
                let cfg = self.cfg;
                let r = self.r_mut(d, n);
                // Time-based part of the smoothing: the smoothed metric keeps moving
                // toward the current one even without new samples, and the noise
                // estimate fades when no new deviation feeds it.
                r.dev -= r.dev.div_ceil(4);
                if r.smoothed != raw {
                    r.smoothed = smooth(r.smoothed, raw, &cfg).0;
                    moved = true;
                }
            }
            let settled = self.dests[d]
                .settle
                .is_some_and(|(_, t)| now_us.saturating_sub(t) >= self.cfg.settle_time_us);
            if settled || moved {
                self.select(d, now_us);
            }
            if let Some(mut r) = self.dests[d].request
                && !r.send_now
                && now_us >= r.next_at
            {
                if r.attempts_left > 0 {
                    r.send_now = true;
                    r.next_at = now_us.saturating_add(self.cfg.request_retry_us);
                } else {
                    // Still stuck (selection clears the request once it is not): another
                    // round later, 4 retry intervals after the first round, doubling up to
                    // 64, to every neighbour (the one asked may route through us and drop
                    // it). Without periodic updates nothing else would ask again.
                    r.rounds = r.rounds.saturating_add(1);
                    r.to = None;
                    r.attempts_left = self.cfg.request_attempts;
                    let gap = self.cfg.request_retry_us << (u32::from(r.rounds) + 1).min(6);
                    r.next_at = now_us.saturating_add(gap);
                }
                self.touch(d, |s| s.request = Some(r));
            }
            let s = &self.dests[d];
            if !any
                && s.selected.is_none()
                && s.request.is_none()
                && !s.has_output()
                && now_us.saturating_sub(s.idle_since) >= self.cfg.source_gc_us
            {
                self.forget_dest(d);
            }
        }
        self.refresh_drifted();
        // A requested table that never came (lost, or the neighbour refused): the next
        // differing digest asks again.
        for n in self.neighbours.iter_mut() {
            if n.awaiting
                && n.requested_at
                    .is_some_and(|t| now_us.saturating_sub(t) >= self.cfg.table_request_interval_us)
            {
                n.awaiting = false;
            }
        }
    }

    /// The spread refresh: this tick's slice of the destinations (all of them once per
    /// `refresh_interval_us`, at most `refresh_max_per_tick`); a selected route whose smoothed metric drifted by more than
    /// the settle margin since it was advertised is advertised again.
    fn refresh_drifted(&mut self) {
        let n = self.dests.len();
        if n == 0 {
            return;
        }
        let ticks = (self.cfg.refresh_interval_us / self.cfg.tick_us).max(1) as usize;
        for _ in 0..n.div_ceil(ticks).min(self.cfg.refresh_max_per_tick) {
            let d = self.refresh_cursor % n;
            self.refresh_cursor = (d + 1) % n;
            let slot = &self.dests[d];
            let Some(sel) = slot.selected.filter(|_| slot.used && !slot.send_update) else {
                continue;
            };
            let (now, then) = (self.r(d, sel).smoothed, slot.adv_smoothed);
            let m = margin(then, self.cfg.settle_margin_us, self.cfg.settle_margin_ppm);
            if u64::from(now.as_us().abs_diff(then.as_us())) > u64::from(m) {
                self.touch(d, |s| s.send_update = true);
            }
        }
    }

    /// Cheap check after route (d, n) changed: a full selection only when it can
    /// matter (it is the selected route, a candidate, or better than the selected).
    fn reconsider(&mut self, d: usize, n: usize, now_us: u64) {
        let slot = &self.dests[d];
        let needs = match slot.selected {
            None => true,
            Some(s) if s == n => true,
            Some(s) => {
                slot.settle.is_some_and(|(c, _)| c == n)
                    || self.r(d, n).smoothed < self.r(d, s).smoothed
            }
        };
        if needs {
            self.select(d, now_us);
        }
    }

    /// The best routes to `d` by smoothed metric (ties: raw metric, then neighbour
    /// id): (among feasible routes, among all finite routes).
    fn best(&self, d: usize) -> (Option<usize>, Option<usize>) {
        let fd = self.dests[d].fd;
        type Key = (Metric, Metric, RelayId, usize);
        let mut best_f: Option<Key> = None;
        let mut best_a: Option<Key> = None;
        let better = |k: &Key, b: &Option<Key>| b.is_none_or(|b| (k.0, k.1, k.2) < (b.0, b.1, b.2));
        for n in 0..self.neighbours.len() {
            let r = self.r(d, n);
            // A finite advertised metric can still sum to infinity with the link
            // cost: such a route is unusable.
            if !r.present || !self.metric(d, n).is_finite() {
                continue;
            }
            let key = (r.smoothed, self.metric(d, n), self.neighbours[n].id, n);
            if better(&key, &best_a) {
                best_a = Some(key);
            }
            if feasible(fd, r.seqno, r.adv) && better(&key, &best_f) {
                best_f = Some(key);
            }
        }
        (best_f.map(|b| b.3), best_a.map(|b| b.3))
    }

    /// Route selection with hysteresis (see the module docs), then the seqno
    /// request and triggered update decisions.
    fn select(&mut self, d: usize, now_us: u64) {
        let fd = self.dests[d].fd;
        let cur = self.dests[d].selected.filter(|&n| {
            let r = self.r(d, n);
            r.present && feasible(fd, r.seqno, r.adv) && self.metric(d, n).is_finite()
        });
        let (best, best_any) = self.best(d);
        let new = match (cur, best) {
            (None, b) => {
                self.dests[d].settle = None;
                b
            }
            (Some(c), None) => Some(c),
            (Some(c), Some(b)) if b == c => {
                self.dests[d].settle = None;
                Some(c)
            }
            (Some(c), Some(b)) => {
                let (cs, bs) = (self.r(d, c).smoothed, self.r(d, b).smoothed);
                if better_by(
                    bs,
                    cs,
                    margin(cs, self.cfg.fast_margin_us, self.cfg.fast_margin_ppm),
                ) {
                    Some(b)
                } else if better_by(bs, cs, self.settle_margin(d, c, b)) {
                    match self.dests[d].settle {
                        Some((n, since)) if n == b => {
                            if now_us.saturating_sub(since) >= self.cfg.settle_time_us {
                                Some(b)
                            } else {
                                Some(c)
                            }
                        }
                        _ => {
                            self.dests[d].settle = Some((b, now_us));
                            if self.cfg.settle_time_us == 0 {
                                Some(b)
                            } else {
                                Some(c)
                            }
                        }
                    }
                } else {
                    self.dests[d].settle = None;
                    Some(c)
                }
            }
        };
        if new != self.dests[d].selected {
            self.install(d, new, now_us);
        }
        // Seqno request when a better route is stuck unfeasible (RFC 8966 §3.8.2.1).
        match best_any {
            Some(a) if !feasible(fd, self.r(d, a).seqno, self.r(d, a).adv) => {
                let better = match new {
                    None => true,
                    Some(s) => {
                        let ss = self.r(d, s).smoothed;
                        better_by(
                            self.r(d, a).smoothed,
                            ss,
                            margin(ss, self.cfg.settle_margin_us, self.cfg.settle_margin_ppm),
                        )
                    }
                };
                if better {
                    self.request_seqno(d, a, now_us);
                }
            }
            _ => {
                if self.dests[d].request.is_some() {
                    self.touch(d, |s| s.request = None);
                }
            }
        }
        self.check_trigger(d);
    }

    /// The margin a candidate `b` must beat the current route `c` by for the settle
    /// time: the configured margin plus an allowance for the measured noise of both
    /// routes, so two equal routes under noise do not take turns.
    fn settle_margin(&self, d: usize, c: usize, b: usize) -> u32 {
        let cs = self.r(d, c).smoothed;
        let noise = (u64::from(self.r(d, c).dev) + u64::from(self.r(d, b).dev))
            * u64::from(self.cfg.noise_weight_pct)
            / 100;
        let m = u64::from(margin(
            cs,
            self.cfg.settle_margin_us,
            self.cfg.settle_margin_ppm,
        )) + noise;
        u32::try_from(m).unwrap_or(u32::MAX)
    }

    fn install(&mut self, d: usize, new: Option<usize>, now_us: u64) {
        let slot = self.dests[d];
        let dest = slot.id;
        let old_metric = slot.sel_metric;
        let event = match (slot.selected, new) {
            (None, Some(n)) => Some(RouteEvent::Installed {
                at_us: now_us,
                dest,
                next_hop: self.neighbours[n].id,
                metric: self.metric(d, n),
            }),
            (Some(o), Some(n)) => Some(RouteEvent::Changed {
                at_us: now_us,
                dest,
                old_next_hop: self.neighbours[o].id,
                old_metric,
                new_next_hop: self.neighbours[n].id,
                new_metric: self.metric(d, n),
            }),
            (Some(o), None) => Some(RouteEvent::Retracted {
                at_us: now_us,
                dest,
                old_next_hop: self.neighbours[o].id,
                old_metric,
            }),
            (None, None) => None,
        };
        let sel_metric = new.map(|n| self.r(d, n).adv.add(self.neighbours[n].cost));
        let s = &mut self.dests[d];
        s.selected = new;
        s.settle = None;
        match sel_metric {
            Some(m) => s.sel_metric = m,
            None => s.idle_since = now_us,
        }
        self.touch(d, |s| s.send_update = true);
        if let Some(e) = event {
            self.stats.route_changes += 1;
            if self.events.len() >= self.cfg.max_events {
                self.stats.events_dropped += 1;
            } else {
                self.events.push_back(e);
            }
        }
    }

    fn request_seqno(&mut self, d: usize, to: usize, now_us: u64) {
        let Some((fs, _)) = self.dests[d].fd else {
            return;
        };
        let want = fs.next();
        if self.dests[d]
            .request
            .is_some_and(|r| !want.is_newer_than(r.seqno))
        {
            return;
        }
        let req = PendingRequest {
            seqno: want,
            to: Some(to),
            send_now: true,
            next_at: now_us.saturating_add(self.cfg.request_retry_us),
            attempts_left: self.cfg.request_attempts,
            rounds: 0,
        };
        self.touch(d, |s| s.request = Some(req));
    }

    /// Triggered update when the selected route's seqno or metric moved enough.
    fn check_trigger(&mut self, d: usize) {
        let Some(n) = self.dests[d].selected else {
            return;
        };
        let raw = self.metric(d, n);
        self.dests[d].sel_metric = raw;
        let trigger = match self.dests[d].advertised {
            None => true,
            Some((s, m)) => {
                s != self.r(d, n).seqno
                    || !m.is_finite()
                    || u64::from(raw.as_us().abs_diff(m.as_us()))
                        > u64::from(margin(m, self.cfg.trigger_us, self.cfg.trigger_ppm))
                    || {
                        // A smaller change that lasts (seen in the smoothed metric).
                        let (now, then) = (self.r(d, n).smoothed, self.dests[d].adv_smoothed);
                        u64::from(now.as_us().abs_diff(then.as_us()))
                            > u64::from(margin(
                                then,
                                self.cfg.lasting_trigger_us,
                                self.cfg.lasting_trigger_ppm,
                            ))
                    }
            }
        };
        if trigger {
            self.touch(d, |s| s.send_update = true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: RelayId = RelayId(1);
    const B: RelayId = RelayId(2);
    const D: RelayId = RelayId(9);
    const ME: RelayId = RelayId(5);

    /// Room for 4 destinations and 2 neighbours.
    fn table() -> RouteTable {
        let cfg = RouteConfig {
            max_destinations: 4,
            max_neighbours: 2,
            ..RouteConfig::default()
        };
        let t = RouteTable::new(ME, Seqno(100), cfg, 0);
        t.unwrap_or_else(|e| panic!("{e}"))
    }

    fn drain(t: &mut RouteTable) -> Vec<Transmit> {
        let mut v = Vec::new();
        while let Some(tx) = t.poll_transmit() {
            v.push(tx);
            assert!(v.len() < 100_000, "too many transmits");
        }
        v
    }

    fn update(to: Recipient, source: RelayId, seqno: u16, metric: Metric) -> Transmit {
        Transmit {
            to,
            message: Message::Update(Update {
                source,
                seqno: Seqno(seqno),
                metric,
            }),
        }
    }

    fn digest(to: Recipient, entries: &[(RelayId, u16, Metric)], reply_to: u8) -> Transmit {
        let sum = entries.iter().fold(0u64, |a, &(id, s, m)| {
            a.wrapping_add(Digest::entry(id, Seqno(s), m))
        });
        Transmit {
            to,
            message: Message::Digest(Digest {
                digest: sum,
                routes: entries.len() as u32,
                reply_to,
            }),
        }
    }

    fn upd(source: RelayId, seqno: u16, ms: u32) -> Update {
        Update {
            source,
            seqno: Seqno(seqno),
            metric: if ms == u32::MAX {
                Metric::INFINITY
            } else {
                Metric(ms * 1000)
            },
        }
    }

    /// Link costs: A 10.1 ms, B 20.1 ms (RTT/2 + 100 µs hop cost).
    fn with_links(t: &mut RouteTable) {
        assert_eq!(
            t.handle_link_metric(A, LinkMeasurement::from_rtt_us(20_000), 0),
            Ok(())
        );
        assert_eq!(
            t.handle_link_metric(B, LinkMeasurement::from_rtt_us(40_000), 0),
            Ok(())
        );
        let out = drain(t);
        // One self announcement to everyone, then each new neighbour's full table (our
        // own route only) closed by its digest; nothing is repeated to the others.
        let me = [(ME, 100, Metric::ZERO)];
        let (to_a, to_b) = (Recipient::Neighbour(A), Recipient::Neighbour(B));
        assert_eq!(
            out,
            [
                update(Recipient::AllNeighbours, ME, 100, Metric::ZERO),
                update(to_a, ME, 100, Metric::ZERO),
                digest(to_a, &me, 0),
                update(to_b, ME, 100, Metric::ZERO),
                digest(to_b, &me, 0),
            ]
        );
    }

    #[test]
    fn learns_announces_and_reports_a_route() {
        let mut t = table();
        with_links(&mut t);
        assert_eq!(t.handle_update(A, upd(D, 7, 30), 1_000), Ok(()));
        assert_eq!(t.next_hop(D), Some(A));
        assert_eq!(
            t.poll_event(),
            Some(RouteEvent::Installed {
                at_us: 1_000,
                dest: D,
                next_hop: A,
                metric: Metric(40_100),
            })
        );
        assert_eq!(t.poll_event(), None);
        let out = drain(&mut t);
        assert_eq!(out.len(), 1);
        let mut want = upd(D, 7, 0);
        want.metric = Metric(40_100);
        assert_eq!(out[0].message, Message::Update(want));
        let info = t.route(D).unwrap_or_else(|| panic!("route to D"));
        assert_eq!(info.metric, Metric(40_100));
        assert_eq!(info.seqno, Some(Seqno(7)));
        assert_eq!(info.feasibility_distance, Some((Seqno(7), Metric(40_100))));
        assert_eq!(info.direct_metric, None);
        assert_eq!(t.routes().count(), 1);
        assert_eq!(t.neighbours().count(), 2);
    }

    #[test]
    fn unfeasible_route_waits_for_a_new_seqno() {
        let mut t = table();
        with_links(&mut t);
        t.handle_update(A, upd(D, 7, 30), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        drain(&mut t); // advertised (7, 40.1 ms): the feasibility distance
        while t.poll_event().is_some() {}
        t.handle_update(A, upd(D, 7, u32::MAX), 1_000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.next_hop(D), None);
        assert!(matches!(
            t.poll_event(),
            Some(RouteEvent::Retracted {
                dest: D,
                old_next_hop: A,
                ..
            })
        ));
        let out = drain(&mut t);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, Message::Update(upd(D, 7, u32::MAX)));
        // B's route has the same seqno and a metric (45 ms) not below the
        // feasibility distance (40.1 ms): unfeasible, so a seqno request goes to B.
        t.handle_update(B, upd(D, 7, 45), 2_000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.next_hop(D),
            None,
            "unfeasible route must not be installed"
        );
        assert_eq!(t.stats().updates_unfeasible, 1);
        let out = drain(&mut t);
        assert_eq!(
            out.as_slice(),
            &[Transmit {
                to: Recipient::Neighbour(B),
                message: Message::SeqnoRequest(SeqnoRequest {
                    source: D,
                    seqno: Seqno(8),
                    hop_count: 16,
                }),
            }]
        );
        // The source answers with seqno 8: feasible now.
        t.handle_update(B, upd(D, 8, 45), 3_000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.next_hop(D), Some(B));
        assert_eq!(t.route(D).map(|r| r.metric), Some(Metric(65_100)));
    }

    #[test]
    fn answers_and_forwards_seqno_requests() {
        let mut t = table();
        with_links(&mut t);
        // For itself: raises its seqno and announces.
        let req = SeqnoRequest {
            source: ME,
            seqno: Seqno(103),
            hop_count: 5,
        };
        t.handle_seqno_request(A, req, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.seqno(), Seqno(103));
        let out = drain(&mut t);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].message, Message::Update(upd(ME, 103, 0)));
        // For D, with an older route via A: forwarded to A, hop count - 1, once.
        t.handle_update(A, upd(D, 7, 30), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        drain(&mut t);
        let req = SeqnoRequest {
            source: D,
            seqno: Seqno(8),
            hop_count: 5,
        };
        t.handle_seqno_request(B, req, 10)
            .unwrap_or_else(|e| panic!("{e}"));
        t.handle_seqno_request(B, req, 20)
            .unwrap_or_else(|e| panic!("{e}"));
        let out = drain(&mut t);
        assert_eq!(
            out.as_slice(),
            &[Transmit {
                to: Recipient::Neighbour(A),
                message: Message::SeqnoRequest(SeqnoRequest {
                    hop_count: 4,
                    ..req
                }),
            }]
        );
        assert_eq!(t.stats().seqno_requests_dropped, 1);
        // A request our route already satisfies is answered with an update.
        let old = SeqnoRequest {
            seqno: Seqno(7),
            ..req
        };
        t.handle_seqno_request(B, old, 30)
            .unwrap_or_else(|e| panic!("{e}"));
        let out = drain(&mut t);
        assert!(
            matches!(out.as_slice(), [Transmit { message: Message::Update(u), .. }] if u.source == D)
        );
    }

    #[test]
    fn link_down_and_expiry_retract() {
        let mut t = table();
        with_links(&mut t);
        t.handle_update(A, upd(D, 7, 30), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        t.handle_update(B, upd(D, 7, 25), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.next_hop(D), Some(A)); // 40.1 ms < 45.1 ms
        drain(&mut t);
        t.handle_link_down(A, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.next_hop(D),
            Some(B),
            "the other feasible route takes over at once"
        );
        assert_eq!(
            t.handle_update(A, upd(D, 7, 30), 20),
            Err(RouteError::UnknownNeighbour(A))
        );
        // Routes live as long as the link: no refresh needed, nothing expires.
        let mut now = 0;
        while now < 60_000_000 {
            now = t.poll_timeout().unwrap_or(u64::MAX).min(60_000_000);
            t.handle_timeout(now);
            drain(&mut t);
        }
        assert_eq!(t.next_hop(D), Some(B));
    }

    #[test]
    fn refuses_misuse_and_overflow() {
        let mut t = table();
        let m = LinkMeasurement::from_rtt_us(1_000);
        assert_eq!(
            t.handle_link_metric(ME, m, 0),
            Err(RouteError::SelfAsNeighbour)
        );
        assert_eq!(
            t.handle_link_down(A, 0),
            Err(RouteError::UnknownNeighbour(A))
        );
        with_links(&mut t);
        assert_eq!(
            t.handle_link_metric(RelayId(3), m, 0),
            Err(RouteError::NeighbourTableFull(RelayId(3)))
        );
        for i in 0..4 {
            assert_eq!(t.handle_update(A, upd(RelayId(20 + i), 1, 5), 0), Ok(()));
        }
        assert_eq!(
            t.handle_update(A, upd(RelayId(30), 1, 5), 0),
            Err(RouteError::DestTableFull(RelayId(30)))
        );
        // A retraction of an unknown destination is not an error.
        assert_eq!(t.handle_update(A, upd(RelayId(30), 1, u32::MAX), 0), Ok(()));
        let s = t.stats();
        assert_eq!((s.neighbour_table_full, s.dest_table_full), (1, 1));
        // Updates about ourselves are ignored.
        assert_eq!(t.handle_update(A, upd(ME, 1, 5), 0), Ok(()));
        assert_eq!(t.stats().updates_about_self, 1);
    }

    #[test]
    fn memory_grows_with_the_relays_known() {
        // One route slot per destination × neighbour dominates; keep it small.
        assert_eq!(core::mem::size_of::<RouteSlot>(), 16);
        assert!(
            core::mem::size_of::<DestSlot>() <= 192,
            "{}",
            core::mem::size_of::<DestSlot>()
        );
        let mut t = RouteTable::new(ME, Seqno(1), RouteConfig::default(), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.heap_bytes(), 0, "nothing before the first neighbour");
        let m = LinkMeasurement::from_rtt_us(10_000);
        let fill = |t: &mut RouteTable, dests: u64, neighbours: u64| {
            for n in 0..neighbours {
                t.handle_link_metric(RelayId(1000 + n), m, 0)
                    .unwrap_or_else(|e| panic!("{e}"));
                for d in 0..dests {
                    t.handle_update(RelayId(1000 + n), upd(RelayId(5000 + d), 1, 20), 0)
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            }
            drain(t);
        };
        fill(&mut t, 4, 4);
        let small = t.heap_bytes();
        fill(&mut t, 1000, 32);
        let big = t.heap_bytes();
        assert_eq!(t.len(), 1000);
        // A few relays: a few KiB; 1,000 with 32 neighbours: well under 1 MiB.
        assert!(small < 8 * 1024, "{small} B for 4 destinations");
        assert!(big < 1024 * 1024, "{big} B for 1,000 destinations");
    }

    /// Delivers everything `from` sends to `to` (messages for `to` or everyone), except
    /// those `lose` picks. Returns how many were delivered.
    fn pump(
        from: &mut RouteTable,
        to: &mut RouteTable,
        now: u64,
        mut lose: impl FnMut(&Message) -> bool,
    ) -> usize {
        let mut n = 0;
        for tx in drain(from) {
            let mine = match tx.to {
                Recipient::AllNeighbours => true,
                Recipient::Neighbour(id) => id == to.me(),
            };
            if mine && !lose(&tx.message) {
                to.handle_message(from.me(), tx.message, now)
                    .unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        n
    }

    /// Two linked tables X (relay 1) and Y (relay 2); Y also links relay 3 for X to learn.
    fn pair() -> (RouteTable, RouteTable) {
        let new = |id| {
            RouteTable::new(RelayId(id), Seqno(1), RouteConfig::default(), 0)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let (mut x, mut y) = (new(1), new(2));
        let m = LinkMeasurement::from_rtt_us(10_000);
        for (t, peer) in [(&mut x, 2), (&mut y, 1)] {
            t.handle_link_metric(RelayId(peer), m, 0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        // Until quiet: learning each other's route triggers one more update each.
        while pump(&mut x, &mut y, 0, |_| false) + pump(&mut y, &mut x, 0, |_| false) > 0 {}
        (x, y)
    }

    fn tick(t: &mut RouteTable, now: u64) {
        t.handle_timeout(now);
    }

    #[test]
    fn matching_digests_ask_nothing() {
        let (mut x, mut y) = pair();
        assert_eq!(x.next_hop(RelayId(2)), Some(RelayId(2)));
        for now in [4_000_000, 8_000_000, 12_000_000] {
            tick(&mut x, now);
            tick(&mut y, now);
            assert_eq!(pump(&mut x, &mut y, now, |_| false), 1, "one digest");
            assert_eq!(pump(&mut y, &mut x, now, |_| false), 1, "one digest");
        }
        for t in [&x, &y] {
            let s = t.stats();
            assert_eq!((s.digests_received, s.digest_mismatches), (4, 0));
            assert_eq!(s.table_requests_sent, 0);
        }
    }

    #[test]
    fn a_lost_update_is_repaired_by_the_next_digest() {
        let (mut x, mut y) = pair();
        // X learns relay 9 (from a third neighbour) and announces it; Y loses it.
        x.handle_link_metric(RelayId(3), LinkMeasurement::from_rtt_us(20_000), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        x.handle_update(RelayId(3), upd(RelayId(9), 4, 30), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let lose_9 = |m: &Message| matches!(m, Message::Update(u) if u.source == RelayId(9));
        pump(&mut x, &mut y, 0, lose_9);
        assert_eq!(y.next_hop(RelayId(9)), None);
        // The digest differs: Y asks for X's table, gets it, and the digests agree.
        tick(&mut x, 4_000_000);
        pump(&mut x, &mut y, 4_000_000, |_| false);
        assert_eq!(y.stats().digest_mismatches, 1);
        assert_eq!(
            pump(&mut y, &mut x, 4_000_000, |_| false),
            1,
            "table request"
        );
        pump(&mut x, &mut y, 4_000_000, |_| false);
        assert_eq!(y.next_hop(RelayId(9)), Some(RelayId(1)));
        assert_eq!(x.stats().tables_sent, 3, "on two link-ups and on request");
        tick(&mut x, 8_000_000);
        pump(&mut x, &mut y, 8_000_000, |_| false);
        assert_eq!(y.stats().digest_mismatches, 1, "agrees now");
        assert_eq!(y.stats().table_requests_sent, 1);
    }

    #[test]
    fn a_requested_table_drops_the_routes_it_does_not_repeat() {
        let (mut x, mut y) = pair();
        x.handle_link_metric(RelayId(3), LinkMeasurement::from_rtt_us(20_000), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        x.handle_update(RelayId(3), upd(RelayId(9), 4, 30), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        pump(&mut x, &mut y, 0, |_| false);
        assert_eq!(y.next_hop(RelayId(9)), Some(RelayId(1)));
        // X loses relay 9; its retraction to Y is lost: Y still routes to 9 through X.
        x.handle_link_down(RelayId(3), 1_000)
            .unwrap_or_else(|e| panic!("{e}"));
        let lose_9 = |m: &Message| matches!(m, Message::Update(u) if u.source == RelayId(9));
        pump(&mut x, &mut y, 1_000, lose_9);
        assert_eq!(y.next_hop(RelayId(9)), Some(RelayId(1)), "stale");
        tick(&mut x, 4_000_000);
        pump(&mut x, &mut y, 4_000_000, |_| false);
        pump(&mut y, &mut x, 4_000_000, |_| false);
        // The full table does not mention 9: Y drops it.
        pump(&mut x, &mut y, 4_000_000, |_| false);
        assert_eq!(y.next_hop(RelayId(9)), None);
        assert_eq!(y.stats().routes_purged, 1);
        // A second request within the interval is not sent even if digests differed.
        assert_eq!(y.stats().table_requests_sent, 1);
    }

    #[test]
    fn a_table_request_is_rate_limited_and_skipped_when_full() {
        let (mut x, mut y) = pair();
        let bogus = Digest {
            digest: 1,
            routes: 1,
            reply_to: 0,
        };
        for now in [1, 2, 3] {
            y.handle_digest(RelayId(1), bogus, now)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(pump(&mut y, &mut x, 3, |_| false), 1, "one request");
        y.handle_digest(RelayId(1), bogus, 10_000_001)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            pump(&mut y, &mut x, 10_000_001, |_| false),
            1,
            "again later"
        );
        assert_eq!(y.stats().digest_mismatches, 4);
        // A table that refused one of X's destinations cannot agree: it does not ask.
        let cfg = RouteConfig {
            max_destinations: 1,
            ..RouteConfig::default()
        };
        let mut z = RouteTable::new(RelayId(2), Seqno(1), cfg, 0).unwrap_or_else(|e| panic!("{e}"));
        z.handle_link_metric(RelayId(1), LinkMeasurement::from_rtt_us(1_000), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        for d in [7, 8] {
            let _ = z.handle_update(RelayId(1), upd(RelayId(d), 1, 5), 0);
        }
        drain(&mut z);
        z.handle_digest(RelayId(1), bogus, 20_000_000)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(drain(&mut z).is_empty());
        let s = z.stats();
        assert_eq!((s.dest_table_full, s.digests_unverifiable), (1, 1));
    }

    #[test]
    fn smoothing_jumps_on_real_changes_only() {
        let cfg = RouteConfig::default();
        assert_eq!(
            smooth(Metric(100_000), Metric(104_000), &cfg),
            (Metric(100_500), false)
        );
        assert_eq!(
            smooth(Metric(100_000), Metric(200_000), &cfg),
            (Metric(200_000), true)
        );
        assert_eq!(
            smooth(Metric(100_000), Metric(100_001), &cfg),
            (Metric(100_001), false)
        );
        assert!(feasible(None, Seqno(1), Metric(5)));
        assert!(!feasible(None, Seqno(1), Metric::INFINITY));
        assert!(feasible(Some((Seqno(1), Metric(10))), Seqno(1), Metric(9)));
        assert!(!feasible(
            Some((Seqno(1), Metric(10))),
            Seqno(1),
            Metric(10)
        ));
        assert!(feasible(
            Some((Seqno(1), Metric(10))),
            Seqno(2),
            Metric(1000)
        ));
        assert!(!feasible(Some((Seqno(1), Metric(10))), Seqno(0), Metric(1)));
    }
}
