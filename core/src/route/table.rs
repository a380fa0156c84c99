//! The routing table state machine: [`RouteTable`].

use heapless::Deque;

use super::config::{ConfigError, RouteConfig, margin};
use super::error::RouteError;
use super::event::RouteEvent;
use super::metric::LinkMeasurement;
use super::types::{Metric, RelayId, Seqno};
use super::wire::{Message, Recipient, SeqnoRequest, Transmit, Update};

/// Counters of what the table did and refused, for `/v1/status` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteStats {
    /// Updates handed to [`RouteTable::handle_update`] and accepted.
    pub updates_received: u64,
    /// Received updates that were unfeasible (kept, but not selectable).
    pub updates_unfeasible: u64,
    /// Received updates about this relay itself (ignored).
    pub updates_about_self: u64,
    /// Updates handed out by [`RouteTable::poll_transmit`] (retractions included).
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
    /// Routes dropped because their neighbour stopped refreshing them.
    pub routes_expired: u64,
    /// Events dropped because the event queue was full (the caller polls too rarely).
    pub events_dropped: u64,
    /// Links refused because the neighbour table was full.
    pub neighbour_table_full: u64,
    /// Destinations refused because the destination table was full.
    pub dest_table_full: u64,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    Used,
    Tombstone,
}

trait Keyed {
    fn state(&self) -> SlotState;
    fn id(&self) -> RelayId;
}

/// Open addressing from `id % N`; tombstones keep probe chains intact.
fn find_slot<S: Keyed>(slots: &[S], id: RelayId) -> Option<usize> {
    let n = slots.len();
    if n == 0 {
        return None;
    }
    let start = (id.0 % n as u64) as usize;
    for i in 0..n {
        let j = (start + i) % n;
        let s = slots.get(j)?;
        match s.state() {
            SlotState::Free => return None,
            SlotState::Used if s.id() == id => return Some(j),
            _ => {}
        }
    }
    None
}

fn free_slot<S: Keyed>(slots: &[S], id: RelayId) -> Option<usize> {
    let n = slots.len();
    if n == 0 {
        return None;
    }
    let start = (id.0 % n as u64) as usize;
    (0..n)
        .map(|i| (start + i) % n)
        .find(|&j| slots.get(j).is_some_and(|s| s.state() != SlotState::Used))
}

#[derive(Clone, Copy, Debug)]
struct NeighbourSlot {
    state: SlotState,
    id: RelayId,
    cost: Metric,
    measurement: LinkMeasurement,
}

impl NeighbourSlot {
    const EMPTY: NeighbourSlot = NeighbourSlot {
        state: SlotState::Free,
        id: RelayId(0),
        cost: Metric::INFINITY,
        measurement: LinkMeasurement::from_rtt_us(0),
    };
}

impl Keyed for NeighbourSlot {
    fn state(&self) -> SlotState {
        self.state
    }
    fn id(&self) -> RelayId {
        self.id
    }
}

/// A route to one destination through one neighbour.
#[derive(Clone, Copy, Debug)]
struct RouteSlot {
    present: bool,
    seqno: Seqno,
    /// The neighbour's advertised metric.
    adv: Metric,
    /// Smoothed total metric (adv + link cost).
    smoothed: Metric,
    /// Mean deviation of the samples from `smoothed`, µs (noise estimate).
    dev: u32,
    expires_at: u64,
}

impl RouteSlot {
    const EMPTY: RouteSlot = RouteSlot {
        present: false,
        seqno: Seqno(0),
        adv: Metric::INFINITY,
        smoothed: Metric::INFINITY,
        dev: 0,
        expires_at: 0,
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
}

#[derive(Clone, Copy, Debug)]
struct DestSlot {
    state: SlotState,
    id: RelayId,
    fd: Option<(Seqno, Metric)>,
    selected: Option<usize>,
    /// Metric of the selected route when last looked at (for events).
    sel_metric: Metric,
    advertised: Option<(Seqno, Metric)>,
    /// Smoothed metric of the selected route when it was last advertised.
    adv_smoothed: Metric,
    lost_at: Option<u64>,
    idle_since: u64,
    settle: Option<(usize, u64)>,
    request: Option<PendingRequest>,
    forward: Option<(usize, SeqnoRequest)>,
    last_forward: Option<(Seqno, u64)>,
    send_update: bool,
}

impl DestSlot {
    const EMPTY: DestSlot = DestSlot {
        state: SlotState::Free,
        id: RelayId(0),
        fd: None,
        selected: None,
        sel_metric: Metric::INFINITY,
        advertised: None,
        adv_smoothed: Metric::INFINITY,
        lost_at: None,
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
}

impl Keyed for DestSlot {
    fn state(&self) -> SlotState {
        self.state
    }
    fn id(&self) -> RelayId {
        self.id
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

/// A latency distance-vector routing table (Babel-like, RFC 8966), sans-IO and of
/// fixed capacity: up to `N_DEST` destination relays and `N_NEIGH` neighbours.
///
/// It owns no socket, clock or randomness. The caller (the mesh driver, or a
/// simulator) feeds it inputs with the current time in microseconds and drains
/// its outputs.
///
/// # Call order
///
/// Like quinn-proto's `Connection`:
///
/// 1. Feed inputs as they happen:
///    - [`handle_link_metric`](Self::handle_link_metric) for every new measurement
///      of a link (the first one brings the neighbour up),
///    - [`handle_link_down`](Self::handle_link_down) when a link dies,
///    - [`handle_update`](Self::handle_update) and
///      [`handle_seqno_request`](Self::handle_seqno_request) for messages received
///      from a neighbour,
///    - [`handle_timeout`](Self::handle_timeout) when the time given by
///      [`poll_timeout`](Self::poll_timeout) has come.
/// 2. After any `handle_*` call, drain [`poll_transmit`](Self::poll_transmit) until
///    `None` and send each message (a message to
///    [`Recipient::AllNeighbours`] goes to every neighbour whose link is up). If a
///    link's queue is full the message may be dropped: periodic updates repair it.
/// 3. Drain [`poll_event`](Self::poll_event) (route changes for the dashboard).
///    The queue holds `N_DEST` events; overflow is counted in
///    [`RouteStats::events_dropped`].
/// 4. Re-arm one timer at [`poll_timeout`](Self::poll_timeout).
///
/// [`next_hop`](Self::next_hop) and [`routes`](Self::routes) may be read at any time.
/// Every call does bounded work: at most `O(N_DEST × N_NEIGH)` (a link change or a
/// housekeeping tick), usually `O(1)` or `O(N_NEIGH)`.
///
/// # Example
///
/// ```
/// use fastpubsub_core::route::{LinkMeasurement, RelayId, RouteConfig, RouteTable};
///
/// let mut t: RouteTable<8, 4> = RouteTable::new(RelayId(1), Default::default(), RouteConfig::default(), 0)?;
/// t.handle_link_metric(RelayId(2), LinkMeasurement::from_rtt_us(20_000), 0)?;
/// while let Some(tx) = t.poll_transmit() {
///     // encode tx.message with postcard and send it to tx.to
///     let _ = tx;
/// }
/// assert_eq!(t.next_hop(RelayId(2)), None); // not until relay 2 announces itself
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RouteTable<const N_DEST: usize, const N_NEIGH: usize> {
    me: RelayId,
    seqno: Seqno,
    cfg: RouteConfig,
    neighbours: [NeighbourSlot; N_NEIGH],
    n_neighbours: usize,
    dests: [DestSlot; N_DEST],
    n_dests: usize,
    routes: [[RouteSlot; N_NEIGH]; N_DEST],
    self_pending: bool,
    pending: usize,
    cursor: usize,
    events: Deque<RouteEvent, N_DEST>,
    next_periodic: u64,
    next_tick: u64,
    stats: RouteStats,
}

impl<const N_DEST: usize, const N_NEIGH: usize> RouteTable<N_DEST, N_NEIGH> {
    /// A table for relay `me`, starting at seqno `initial_seqno` (pass a random or
    /// time-derived value so a restarted relay is not stuck behind its old seqno;
    /// seqno requests recover in any case), at time `now_us`.
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
            cfg,
            neighbours: [NeighbourSlot::EMPTY; N_NEIGH],
            n_neighbours: 0,
            dests: [DestSlot::EMPTY; N_DEST],
            n_dests: 0,
            routes: [[RouteSlot::EMPTY; N_NEIGH]; N_DEST],
            self_pending: true,
            pending: 0,
            cursor: 0,
            events: Deque::new(),
            next_periodic: now_us.saturating_add(cfg.update_interval_us),
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

    /// The neighbour to forward to for `dest`, if it is reachable.
    pub fn next_hop(&self, dest: RelayId) -> Option<RelayId> {
        let d = find_slot(&self.dests, dest)?;
        let n = self.dests.get(d)?.selected?;
        Some(self.neighbours.get(n)?.id)
    }

    /// The status row of one destination, if known.
    pub fn route(&self, dest: RelayId) -> Option<RouteInfo> {
        find_slot(&self.dests, dest).map(|d| self.route_info(d))
    }

    /// Every known destination (reachable or being retracted), for `/v1/status`.
    pub fn routes(&self) -> impl Iterator<Item = RouteInfo> + '_ {
        (0..N_DEST)
            .filter(|&d| self.dests[d].state == SlotState::Used)
            .map(|d| self.route_info(d))
    }

    /// Every neighbour whose link is up.
    pub fn neighbours(&self) -> impl Iterator<Item = NeighbourInfo> + '_ {
        self.neighbours
            .iter()
            .filter(|n| n.state == SlotState::Used)
            .map(|n| NeighbourInfo {
                id: n.id,
                cost: n.cost,
                measurement: n.measurement,
            })
    }

    fn route_info(&self, d: usize) -> RouteInfo {
        let slot = &self.dests[d];
        let sel = slot.selected;
        let direct_metric = find_slot(&self.neighbours, slot.id).map(|n| self.neighbours[n].cost);
        RouteInfo {
            dest: slot.id,
            next_hop: sel.map(|n| self.neighbours[n].id),
            metric: sel.map_or(Metric::INFINITY, |n| self.metric(d, n)),
            smoothed_metric: sel.map_or(Metric::INFINITY, |n| self.routes[d][n].smoothed),
            seqno: sel.map(|n| self.routes[d][n].seqno),
            direct_metric,
            feasibility_distance: slot.fd,
        }
    }

    // ---- inputs -------------------------------------------------------------

    /// A new measurement of the link to `neighbour`. The first one brings the
    /// neighbour up (and schedules a full update so it learns our routes).
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
        let nb = match find_slot(&self.neighbours, neighbour) {
            Some(nb) => nb,
            None => {
                let Some(nb) = free_slot(&self.neighbours, neighbour) else {
                    self.stats.neighbour_table_full += 1;
                    return Err(RouteError::NeighbourTableFull(neighbour));
                };
                self.neighbours[nb] = NeighbourSlot {
                    state: SlotState::Used,
                    id: neighbour,
                    cost,
                    measurement,
                };
                self.n_neighbours += 1;
                self.schedule_full_update(now_us);
                return Ok(());
            }
        };
        self.neighbours[nb].measurement = measurement;
        if self.neighbours[nb].cost == cost {
            return Ok(());
        }
        self.neighbours[nb].cost = cost;
        for d in 0..N_DEST {
            if self.dests[d].state != SlotState::Used || !self.routes[d][nb].present {
                continue;
            }
            let raw = self.metric(d, nb);
            self.routes[d][nb].sample(raw, &self.cfg);
            self.reconsider(d, nb, now_us);
        }
        Ok(())
    }

    /// The link to `neighbour` died: every route through it is dropped at once and
    /// the affected destinations are rerouted or retracted.
    pub fn handle_link_down(&mut self, neighbour: RelayId, now_us: u64) -> Result<(), RouteError> {
        let nb = find_slot(&self.neighbours, neighbour)
            .ok_or(RouteError::UnknownNeighbour(neighbour))?;
        for d in 0..N_DEST {
            if self.dests[d].state != SlotState::Used {
                continue;
            }
            let had = self.routes[d][nb].present;
            self.routes[d][nb] = RouteSlot::EMPTY;
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
        self.neighbours[nb] = NeighbourSlot {
            state: SlotState::Tombstone,
            ..NeighbourSlot::EMPTY
        };
        self.n_neighbours = self.n_neighbours.saturating_sub(1);
        if self.n_neighbours == 0 {
            self.neighbours = [NeighbourSlot::EMPTY; N_NEIGH];
        }
        Ok(())
    }

    /// An update received from `from` (a neighbour).
    pub fn handle_update(
        &mut self,
        from: RelayId,
        update: Update,
        now_us: u64,
    ) -> Result<(), RouteError> {
        let nb = find_slot(&self.neighbours, from).ok_or(RouteError::UnknownNeighbour(from))?;
        if update.source == self.me {
            self.stats.updates_about_self += 1;
            return Ok(());
        }
        let d = match find_slot(&self.dests, update.source) {
            Some(d) => d,
            None if update.is_retraction() => {
                self.stats.updates_received += 1;
                return Ok(());
            }
            None => {
                let Some(d) = free_slot(&self.dests, update.source) else {
                    self.stats.dest_table_full += 1;
                    return Err(RouteError::DestTableFull(update.source));
                };
                self.dests[d] = DestSlot {
                    state: SlotState::Used,
                    id: update.source,
                    idle_since: now_us,
                    ..DestSlot::EMPTY
                };
                self.n_dests += 1;
                d
            }
        };
        self.stats.updates_received += 1;
        if update.is_retraction() {
            if self.routes[d][nb].present {
                self.routes[d][nb] = RouteSlot::EMPTY;
                self.select(d, now_us);
            }
            return Ok(());
        }
        if !feasible(self.dests[d].fd, update.seqno, update.metric) {
            self.stats.updates_unfeasible += 1;
        }
        let raw = update.metric.add(self.neighbours[nb].cost);
        let r = &mut self.routes[d][nb];
        // Fast path: a refresh of an unchanged, settled route only extends its life.
        if r.present
            && r.seqno == update.seqno
            && r.adv == update.metric
            && r.smoothed == raw
            && r.dev == 0
        {
            r.expires_at = now_us.saturating_add(self.cfg.route_expiry_us);
            if self.dests[d].settle.is_some_and(|(c, _)| c == nb) {
                self.select(d, now_us);
            }
            return Ok(());
        }
        if !r.present {
            *r = RouteSlot::EMPTY;
        }
        r.present = true;
        r.seqno = update.seqno;
        r.adv = update.metric;
        r.expires_at = now_us.saturating_add(self.cfg.route_expiry_us);
        r.sample(raw, &self.cfg);
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
        let from_nb =
            find_slot(&self.neighbours, from).ok_or(RouteError::UnknownNeighbour(from))?;
        self.stats.seqno_requests_received += 1;
        if request.source == self.me {
            if request.seqno.is_newer_than(self.seqno) {
                self.seqno = request.seqno;
                self.stats.own_seqno_bumps += 1;
            }
            self.self_pending = true;
            return Ok(());
        }
        let Some(d) = find_slot(&self.dests, request.source) else {
            self.stats.seqno_requests_dropped += 1;
            return Ok(());
        };
        if let Some(n) = self.dests[d].selected
            && !request.seqno.is_newer_than(self.routes[d][n].seqno)
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

    /// Runs timers: periodic full updates, route expiry, request retries, settling
    /// of small improvements, forgetting of long-unreachable destinations.
    pub fn handle_timeout(&mut self, now_us: u64) {
        if now_us >= self.next_tick {
            self.next_tick = now_us.saturating_add(self.cfg.tick_us);
            self.housekeeping(now_us);
        }
        if now_us >= self.next_periodic {
            self.next_periodic = now_us.saturating_add(self.cfg.update_interval_us);
            self.schedule_full_update(now_us);
        }
    }

    // ---- outputs ------------------------------------------------------------

    /// The next message to send, if any. Bounded work: at most one scan of the
    /// destination slots.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.self_pending {
            self.self_pending = false;
            if self.n_neighbours > 0 {
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
        }
        // Each slot is visited at most twice (once to take its last output, once
        // to move past it): bounded even if the pending count were wrong.
        for _ in 0..=2 * N_DEST {
            if self.pending == 0 {
                return None;
            }
            let d = self.cursor % N_DEST.max(1);
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

    /// The next route event, if any.
    pub fn poll_event(&mut self) -> Option<RouteEvent> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next (microseconds).
    pub fn poll_timeout(&self) -> Option<u64> {
        Some(self.next_periodic.min(self.next_tick))
    }

    // ---- internals ----------------------------------------------------------

    fn metric(&self, d: usize, n: usize) -> Metric {
        self.routes[d][n].adv.add(self.neighbours[n].cost)
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
                Some(n) if self.neighbours[n].state == SlotState::Used => {
                    Recipient::Neighbour(self.neighbours[n].id)
                }
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
            if self.neighbours[n].state == SlotState::Used {
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
    /// moves the feasibility distance, RFC 8966 §3.7.3).
    fn make_update(&mut self, d: usize) -> Option<Transmit> {
        let slot = self.dests[d];
        let (seqno, metric) = match slot.selected {
            Some(n) => {
                self.dests[d].adv_smoothed = self.routes[d][n].smoothed;
                (self.routes[d][n].seqno, self.metric(d, n))
            }
            None => {
                let (s, m) = slot.advertised?;
                if !m.is_finite() {
                    // Already retracted; repeat it while the hold lasts (the caller
                    // only marks it then).
                    (s, m)
                } else {
                    (s, Metric::INFINITY)
                }
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
        if self.n_neighbours == 0 {
            return None;
        }
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

    fn schedule_full_update(&mut self, now_us: u64) {
        self.self_pending = true;
        for d in 0..N_DEST {
            let s = &self.dests[d];
            if s.state != SlotState::Used {
                continue;
            }
            let holding = s
                .lost_at
                .is_some_and(|t| now_us.saturating_sub(t) < self.cfg.retraction_hold_us);
            if s.selected.is_some() || (holding && s.advertised.is_some()) {
                self.touch(d, |s| s.send_update = true);
            }
        }
    }

    fn housekeeping(&mut self, now_us: u64) {
        for d in 0..N_DEST {
            if self.dests[d].state != SlotState::Used {
                continue;
            }
            let mut expired = false;
            let mut moved = false;
            let mut any = false;
            for n in 0..N_NEIGH {
                if !self.routes[d][n].present {
                    continue;
                }
                let raw = self.metric(d, n);
                let r = &mut self.routes[d][n];
                if r.expires_at <= now_us {
                    *r = RouteSlot::EMPTY;
                    expired = true;
                    self.stats.routes_expired += 1;
                    continue;
                }
                any = true;
                // Time-based part of the smoothing: the smoothed metric keeps moving
                // toward the current one even without new samples, and the noise
                // estimate fades when no new deviation feeds it.
                r.dev -= r.dev.div_ceil(4);
                if r.smoothed != raw {
                    r.smoothed = smooth(r.smoothed, raw, &self.cfg).0;
                    moved = true;
                }
            }
            let settled = self.dests[d]
                .settle
                .is_some_and(|(_, t)| now_us.saturating_sub(t) >= self.cfg.settle_time_us);
            if expired || settled || moved {
                self.select(d, now_us);
            }
            if let Some(mut r) = self.dests[d].request
                && !r.send_now
                && now_us >= r.next_at
            {
                if r.attempts_left > 0 {
                    r.send_now = true;
                    r.next_at = now_us.saturating_add(self.cfg.request_retry_us);
                    self.touch(d, |s| s.request = Some(r));
                } else {
                    self.dests[d].request = None;
                }
            }
            let s = &self.dests[d];
            if !any
                && s.selected.is_none()
                && s.request.is_none()
                && !s.has_output()
                && now_us.saturating_sub(s.idle_since) >= self.cfg.source_gc_us
            {
                self.dests[d] = DestSlot {
                    state: SlotState::Tombstone,
                    ..DestSlot::EMPTY
                };
                self.n_dests = self.n_dests.saturating_sub(1);
                if self.n_dests == 0 {
                    self.dests = [DestSlot::EMPTY; N_DEST];
                }
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
                    || self.routes[d][n].smoothed < self.routes[d][s].smoothed
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
        for (n, r) in self.routes[d].iter().enumerate() {
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
            let r = &self.routes[d][n];
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
                let (cs, bs) = (self.routes[d][c].smoothed, self.routes[d][b].smoothed);
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
            Some(a) if !feasible(fd, self.routes[d][a].seqno, self.routes[d][a].adv) => {
                let better = match new {
                    None => true,
                    Some(s) => {
                        let ss = self.routes[d][s].smoothed;
                        better_by(
                            self.routes[d][a].smoothed,
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
        let cs = self.routes[d][c].smoothed;
        let noise = (u64::from(self.routes[d][c].dev) + u64::from(self.routes[d][b].dev))
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
        let s = &mut self.dests[d];
        s.selected = new;
        s.settle = None;
        match new {
            Some(n) => {
                s.lost_at = None;
                s.sel_metric = self.routes[d][n].adv.add(self.neighbours[n].cost);
            }
            None => {
                s.lost_at = Some(now_us);
                s.idle_since = now_us;
            }
        }
        self.touch(d, |s| s.send_update = true);
        if let Some(e) = event {
            self.stats.route_changes += 1;
            if self.events.push_back(e).is_err() {
                self.stats.events_dropped += 1;
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
                s != self.routes[d][n].seqno
                    || !m.is_finite()
                    || u64::from(raw.as_us().abs_diff(m.as_us()))
                        > u64::from(margin(m, self.cfg.trigger_us, self.cfg.trigger_ppm))
                    || {
                        // A smaller change that lasts (seen in the smoothed metric).
                        let (now, then) = (self.routes[d][n].smoothed, self.dests[d].adv_smoothed);
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

    fn table() -> RouteTable<4, 2> {
        let t = RouteTable::new(ME, Seqno(100), RouteConfig::default(), 0);
        t.unwrap_or_else(|e| panic!("{e}"))
    }

    fn drain(t: &mut RouteTable<4, 2>) -> heapless::Vec<Transmit, 16> {
        let mut v = heapless::Vec::new();
        while let Some(tx) = t.poll_transmit() {
            assert!(v.push(tx).is_ok(), "too many transmits");
        }
        v
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
    fn with_links(t: &mut RouteTable<4, 2>) {
        assert_eq!(
            t.handle_link_metric(A, LinkMeasurement::from_rtt_us(20_000), 0),
            Ok(())
        );
        assert_eq!(
            t.handle_link_metric(B, LinkMeasurement::from_rtt_us(40_000), 0),
            Ok(())
        );
        let out = drain(t);
        // One self announcement, to everyone.
        assert_eq!(
            out.as_slice(),
            &[Transmit {
                to: Recipient::AllNeighbours,
                message: Message::Update(Update {
                    source: ME,
                    seqno: Seqno(100),
                    metric: Metric::ZERO,
                }),
            }]
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
        // B stops refreshing: gone after the expiry (14 s) at the next tick.
        let mut now = 0;
        while now < 20_000_000 {
            now = t.poll_timeout().unwrap_or(u64::MAX).min(20_000_000);
            t.handle_timeout(now);
            drain(&mut t);
            if t.next_hop(D).is_none() {
                break;
            }
        }
        assert_eq!(t.next_hop(D), None);
        assert!((14_000_000..=15_000_000).contains(&now), "expired at {now}");
        assert_eq!(t.stats().routes_expired, 1);
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
    fn memory_budget() {
        // One route slot per destination × neighbour dominates; keep it small.
        assert!(
            core::mem::size_of::<RouteSlot>() <= 40,
            "{}",
            core::mem::size_of::<RouteSlot>()
        );
        let size = core::mem::size_of::<RouteTable<100, 10>>();
        // 64-bit relay ids: 49 456 bytes (44 560 with 16-bit ones).
        assert!(size <= 50 * 1024, "RouteTable<100, 10> is {size} bytes");
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
