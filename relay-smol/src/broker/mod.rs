//! Local fan-out: connections, their subscriptions, their bounded outbound queues.
//!
//! One `Broker` lives on the relay's single-threaded executor (shared as
//! `Rc<RefCell<Broker>>`). Connection tasks call it to subscribe, publish and send replies;
//! the fan-out encodes each deliver frame (WebSocket header + LLPS deliver frame) straight
//! into the receiving connection's [`queue::OutQueue`] and wakes that connection's task,
//! which writes everything queued in one syscall.
//!
//! One byte budget per connection ([`Limits::queue_bytes`]): queued deliveries, control
//! replies and the incomplete incoming frames its task holds ([`Broker::set_in_held`]) all
//! count against it. Policy when it is full (design principle 1): a delivery is dropped for
//! that connection only and counted ([`Stats::dropped_queue_full`]). Replies are not dropped;
//! instead the connection's reads stop while its outbound backlog is at
//! [`Limits::read_stop_bytes`] ([`Broker::read_stop`]), so it cannot ask for more of them. A
//! connection that stays blocked (dropping, or reads stopped) for
//! [`Limits::slow_consumer_grace`] without its queue draining is sent `ERR:slow_consumer` and
//! closed, whatever filled it. Publishers never wait for subscribers.
//!
//! Loss only where someone is slow (design principle 2): a queue can also fill because the
//! relay itself is behind — the socket takes bytes, the connection's task just has not run
//! yet (publishers read faster than the relay writes). The broker tells the two apart by
//! whether the socket refused bytes since the queue last drained ([`Broker::write_blocked`]):
//! a queue at [`Limits::behind_bytes`] whose socket still takes bytes pauses every
//! connection's reads ([`ReadStop::RelayBehind`]) until it is written, so TCP pushes back on
//! the publishers and nothing is dropped; a queue whose socket refuses bytes never pauses
//! anyone (its listener is the slow one and loses messages, as above). Paused connections
//! are released in an order that puts those that did not get to read last time first, so one
//! fast publisher cannot starve another. A pause is bounded ([`MAX_INTAKE_PAUSE`](crate::limits::MAX_INTAKE_PAUSE)) and
//! counted ([`Stats::intake_pauses`], [`Stats::intake_paused_us`]).
//!
//! Commands have rate limits per connection ([`limiter`]).
//!
//! The mesh plugs in through [`mesh::MeshHook`] (see there).

mod answer;
mod intake;
pub mod limiter;
pub mod mesh;
pub mod queue;
pub mod wt;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Instant, SystemTime};

use fastpubsub_core::frame::{Deliver, Mode, Reply};
use fastpubsub_core::pattern::{self, PatternError, PatternTooComplex, SubIndex};

use crate::auth::Access;
use crate::limits::{Limits, POOL_BUFFERS, queue_grow_cap};
use crate::wsframe::{OP_BINARY, OP_CLOSE, OP_TEXT};
use intake::Intake;
use limiter::{CommandLimiter, RefusalReply, TokenBucket, Verdict};
use mesh::{LocalPlan, MeshHook};
use queue::{BufPool, OutQueue};
pub use wt::Target;
use wt::{DATAGRAM_QUEUE, MAX_WT_FRAME, WtQueues};

/// Identifies a connection inside one broker (a slot index; reused after close).
pub type ConnId = u32;

/// Index value: connection in the high bits, subscription slot in the low 16.
type SubKey = u64;

fn key(conn: ConnId, slot: u16) -> SubKey {
    (u64::from(conn) << 16) | u64::from(slot)
}
fn key_conn(k: SubKey) -> ConnId {
    (k >> 16) as ConnId
}
fn key_slot(k: SubKey) -> usize {
    (k & 0xffff) as usize
}

/// Counters of the broker (monotonic).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Connections accepted.
    pub connections_opened: u64,
    /// Publishes accepted from clients.
    pub published: u64,
    /// Deliver frames queued to connections.
    pub delivered: u64,
    /// Deliveries dropped because the receiver's queue was full.
    pub dropped_queue_full: u64,
    /// Deliveries dropped by a receiver's egress rate limit.
    pub dropped_egress_rate: u64,
    /// Publishes refused by a sender's ingress rate limit.
    pub refused_ingress_rate: u64,
    /// Connections closed as slow consumers.
    pub slow_consumers_closed: u64,
    /// Connections closed because their access ended (expired/revoked).
    pub access_ended_closed: u64,
    /// Handshakes refused because the connection limit was reached.
    pub refused_over_capacity: u64,
    /// Requests refused as malformed (bad HTTP head, not a valid WebSocket upgrade).
    pub refused_malformed: u64,
    /// Times a connection's reads were stopped because its own outbound backlog reached
    /// [`Limits::read_stop_bytes`].
    pub read_stops: u64,
    /// Times a connection task yielded with work left because its turn budget was used up.
    pub turn_yields: u64,
    /// Commands refused with `ERR:rate_limited` (`SUB`/`UNSUB`/`PING`/WebSocket Ping).
    pub commands_rate_limited: u64,
    /// Publish refusals not answered because the connection's refusal-reply rate was used up.
    pub refusals_unanswered: u64,
    /// Connections closed for running out of rate-limit strikes.
    pub rate_limit_closed: u64,
    /// Deliver frames that listed only `Limits::max_deliver_patterns` of more matching
    /// patterns (the pattern-cost limits make this impossible; counted all the same).
    pub deliver_patterns_capped: u64,
    /// Deliveries skipped for a WebTransport session because the deliver frame was over
    /// its 65,536-byte frame cap (delivered to everyone else).
    pub dropped_wt_oversize: u64,
    /// WebTransport deliveries dropped because the session's budget was full, by target
    /// (included in `dropped_queue_full`): its control stream, ...
    pub dropped_wt_control_full: u64,
    /// ... a line (the line's own half of the budget, or the whole budget) ...
    pub dropped_wt_line_full: u64,
    /// ... or its datagram queue.
    pub dropped_wt_datagram_full: u64,
    /// WebTransport datagrams dropped because QUIC's datagram send buffer of the session
    /// was full (the path is congested; datagrams are never queued beyond it).
    pub dropped_wt_datagram_buffer: u64,
    /// Times the relay paused every connection's reads because it was behind on writing
    /// ([`ReadStop::RelayBehind`]).
    pub intake_pauses: u64,
    /// Total time reads were paused for that, µs.
    pub intake_paused_us: u64,
    /// Pauses ended by [`MAX_INTAKE_PAUSE`](crate::limits::MAX_INTAKE_PAUSE) rather than by the backlog being written.
    pub intake_pause_overruns: u64,
    /// Intake pauses held because the mesh was backed up ([`mesh::MeshHook::backed_up`]);
    /// also counted in [`Stats::intake_pauses`] when they started a pause.
    pub intake_pauses_mesh: u64,
    /// Of [`Stats::dropped_queue_full`]: deliveries dropped for a connection whose socket was
    /// still taking bytes (the relay, not the listener, was behind). Pausing intake keeps this
    /// at 0; anything else is a bug or a single frame larger than half a budget.
    pub dropped_relay_behind: u64,
    /// `SUB`s refused because the connection held `Limits::max_subs_per_conn`.
    pub refused_subs_per_connection: u64,
    /// `SUB`s refused because the relay held `Limits::max_total_subs`.
    pub refused_subs_relay_full: u64,
    /// `SUB`s refused by the pattern-cost limits (`ERR:pattern_too_complex`).
    pub refused_pattern_too_complex: u64,
    /// Connections closed after more than `Limits::max_bad_frames` malformed frames.
    pub bad_frames_closed: u64,
}

/// Why a `SUB` was refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum SubError {
    /// The pattern is not a valid pattern.
    InvalidPattern(PatternError),
    /// The pattern is valid but over the cost limits (per pattern, or the connection's
    /// `*` budget): `ERR:pattern_too_complex`.
    TooComplex(PatternTooComplex),
    /// The connection's access does not cover the pattern.
    PermissionDenied,
    /// The connection holds [`Limits::max_subs_per_conn`] subscriptions already.
    TooManyForConnection(usize),
    /// The relay holds [`Limits::max_total_subs`] subscriptions already.
    RelayFull(usize),
}

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PubError {
    /// The channel is not a valid concrete channel.
    InvalidChannel(PatternError),
    /// The connection's access does not allow publishing on this channel.
    PermissionDenied,
    /// Over the connection's ingress rate limit.
    RateLimited(u32),
}

impl std::fmt::Display for SubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidPattern(e) => write!(f, "invalid pattern: {e}"),
            Self::TooComplex(e) => write!(f, "pattern too complex: {e}"),
            Self::PermissionDenied => f.write_str("the ticket does not allow this subscription"),
            Self::TooManyForConnection(n) => {
                write!(
                    f,
                    "this connection already holds the maximum of {n} subscriptions"
                )
            }
            Self::RelayFull(n) => write!(f, "this relay holds its maximum of {n} subscriptions"),
        }
    }
}

impl std::error::Error for SubError {}

impl std::fmt::Display for PubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidChannel(e) => write!(f, "invalid channel: {e}"),
            Self::PermissionDenied => f.write_str("the ticket does not allow publishing here"),
            Self::RateLimited(n) => write!(f, "over the ingress limit of {n} bytes/s"),
        }
    }
}

impl std::error::Error for PubError {}

/// A connection's subscription, stored exactly as the client sent it.
#[derive(Debug)]
/// (A WebTransport session keeps each subscription's target and rate in its
/// [`WtQueues`], so WebSocket subscriptions pay nothing for them.)
struct Sub {
    tenant: Box<str>,
    pattern: Box<str>,
}

/// Why a connection is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// Final frames queued; flush them until the deadline, then drop.
    Flushing(Instant),
}

/// Why a connection task must not read from its socket now.
///
/// This is the one mechanism that pauses a connection's reads; every reason to pause is a
/// variant here and is decided in [`Broker::read_stop`]. While a reason holds, the task reads
/// nothing and parses nothing (bytes already read wait in its input buffer, counted against
/// its budget); TCP then pushes back on the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadStop {
    /// The connection's outbound backlog is at [`Limits::read_stop_bytes`]: its socket is not
    /// taking what is queued already, so its requests (and their replies) wait. Only this
    /// connection is affected.
    OwnBacklog,
    /// The relay is behind on its own writing: some connection's queue is at
    /// [`Limits::behind_bytes`] while its socket still takes bytes (its task has not run yet).
    /// Every connection waits until that backlog is written, so TCP slows the publishers
    /// instead of deliveries being dropped for a listener that reads. A connection whose
    /// socket refuses bytes does not count, so a listener that does not read never causes
    /// this. At most [`MAX_INTAKE_PAUSE`](crate::limits::MAX_INTAKE_PAUSE); the task is woken when it ends.
    RelayBehind,
}

/// State of one connection held by the broker (the socket stays with the connection task).
pub struct ConnState {
    out: OutQueue,
    waker: Option<Waker>,
    subs: Vec<Option<Sub>>,
    nsubs: usize,
    /// `*` wildcards in `subs` (at most `pattern::MAX_STARS_PER_CONNECTION`).
    stars: usize,
    access: Box<dyn Access>,
    /// Since when the connection is blocked (a delivery dropped for its budget, or reads
    /// stopped for its backlog) without its queue having drained.
    blocked_since: Option<Instant>,
    /// Reads are stopped for [`ReadStop::OwnBacklog`] (to count each stop once).
    read_stopped: bool,
    /// The socket refused bytes since the queue last drained: the listener is not keeping up.
    write_blocked: bool,
    /// The queue is at [`Limits::behind_bytes`] and its socket takes bytes: counted in
    /// [`Broker`]'s `behind`, intake is paused.
    behind: bool,
    /// Waiting for the end of an intake pause.
    waiting: bool,
    /// Was allowed to read since it was last released from an intake pause.
    served: bool,
    /// Heap bytes of incomplete incoming frames held by the connection task.
    in_held: usize,
    dropped: u64,
    closing: Closing,
    kill: bool,
    bad_frames: u32,
    ingress: Option<TokenBucket>,
    egress: Option<TokenBucket>,
    commands: CommandLimiter,
    /// Lines and datagrams of a WebTransport session (`None` on WebSocket).
    wt: Option<Box<WtQueues>>,
}

impl ConnState {
    /// The connection's access object.
    pub fn access(&self) -> &dyn Access {
        &*self.access
    }
    /// Bytes waiting to be written.
    pub fn pending(&self) -> &[u8] {
        self.out.pending()
    }
    /// Is the connection closing (final frames queued)?
    pub fn is_closing(&self) -> bool {
        self.closing != Closing::Open
    }
    /// Must the task drop the connection now (close deadline passed or shutdown)?
    pub fn must_drop(&self) -> bool {
        self.kill
    }
    /// Remembers the task's waker (cheaply, when it changed).
    pub fn set_waker(&mut self, w: &Waker) {
        match &self.waker {
            Some(old) if old.will_wake(w) => {}
            _ => self.waker = Some(w.clone()),
        }
    }
    /// Counts a malformed frame; returns the total so far.
    pub fn note_bad_frame(&mut self) -> u32 {
        self.bad_frames = self.bad_frames.saturating_add(1);
        self.bad_frames
    }
    /// Deliveries dropped for this connection.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
    /// Bytes held for this connection against its budget: outbound queue (with a
    /// WebTransport session's lines and datagrams) plus incomplete incoming frames.
    pub fn held(&self) -> usize {
        self.out.queued() + self.in_held + self.wt.as_ref().map_or(0, |w| w.queued())
    }
    /// The WebTransport queues (lines, datagrams), if this is a WebTransport session.
    pub fn wt(&self) -> Option<&WtQueues> {
        self.wt.as_deref()
    }
    /// Same, mutable (the session sets the datagram size).
    pub fn wt_mut(&mut self) -> Option<&mut WtQueues> {
        self.wt.as_deref_mut()
    }
    fn wake(&self) {
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
    }
}

/// Local subscriptions and fan-out of one relay.
pub struct Broker {
    conns: Vec<Option<ConnState>>,
    free: Vec<ConnId>,
    open: usize,
    /// Sum of every connection's `in_held`.
    in_held_total: usize,
    tenants: HashMap<Box<str>, SubIndex<SubKey>>,
    /// `"tenant:pattern"` → connections subscribed (for interest changes).
    interest: HashMap<Box<str>, u32>,
    total_subs: usize,
    limits: Limits,
    pool: BufPool,
    scratch: Vec<SubKey>,
    /// `(target rank, subscription slot)` of one WebTransport delivery, reused.
    wt_scratch: Vec<(u8, usize)>,
    /// The receiver-independent head of the deliver frame being fanned out.
    head: Vec<u8>,
    /// [`Limits::behind_bytes`], kept for the fan-out's hot path.
    behind_at: usize,
    to_close: Vec<ConnId>,
    mesh: Option<Rc<dyn MeshHook>>,
    stats: Stats,
    now: Instant,
    shutting_down: bool,
    /// The intake pause; held by every connection with `behind` set.
    intake: Intake,
    /// Scratch list of connections to wake when a pause ends.
    released: Vec<ConnId>,
    /// The mesh holds the intake pause ([`mesh::MeshHook::backed_up`]).
    mesh_holds: bool,
    /// A mesh-held pause reached its bound: the mesh holds none again until it has been seen
    /// clear (so a backlog that never clears pauses intake once, not every second).
    mesh_overran: bool,
    /// The task that re-checks the mesh while it holds the pause ([`Broker::mesh_watch`]).
    mesh_watcher: Option<Waker>,
}

impl Broker {
    /// An empty broker with these limits; `now` seeds its coarse clock.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Broker {
            conns: Vec::new(),
            free: Vec::new(),
            open: 0,
            in_held_total: 0,
            tenants: HashMap::new(),
            interest: HashMap::new(),
            total_subs: 0,
            pool: BufPool::new(POOL_BUFFERS, queue_grow_cap(limits.queue_bytes)),
            behind_at: limits.behind_bytes(),
            limits,
            scratch: Vec::new(),
            wt_scratch: Vec::new(),
            head: Vec::new(),
            to_close: Vec::new(),
            mesh: None,
            stats: Stats::default(),
            now,
            shutting_down: false,
            intake: Intake::default(),
            released: Vec::new(),
            mesh_holds: false,
            mesh_overran: false,
            mesh_watcher: None,
        }
    }

    /// Installs the mesh seam (see [`mesh`]).
    pub fn set_mesh(&mut self, hook: Rc<dyn MeshHook>) {
        self.mesh = Some(hook);
    }

    /// Updates the broker's coarse clock (called once per I/O batch).
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// Counts a WebTransport datagram dropped because QUIC's datagram buffer was full.
    pub fn note_wt_datagram_dropped(&mut self) {
        self.stats.dropped_wt_datagram_buffer += 1;
    }

    /// Counts a request refused as malformed by the edge (for `/metrics`).
    pub fn note_malformed_request(&mut self) {
        self.stats.refused_malformed += 1;
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let (pauses, paused_us, overruns) = self.intake.counters();
        Stats {
            intake_pauses: pauses,
            intake_paused_us: paused_us,
            intake_pause_overruns: overruns,
            ..self.stats
        }
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.open
    }

    /// Subscriptions on this relay.
    pub fn subscription_count(&self) -> usize {
        self.total_subs
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Is the relay draining for shutdown?
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Admits a new connection, or `None` when [`Limits::max_connections`] are open.
    pub fn register(&mut self, access: Box<dyn Access>) -> Option<ConnId> {
        if self.shutting_down {
            return None;
        }
        if self.open >= self.limits.max_connections {
            self.stats.refused_over_capacity += 1;
            return None;
        }
        let rates = access.rate_limits();
        let now = self.now;
        let state = ConnState {
            out: OutQueue::default(),
            waker: None,
            subs: Vec::new(),
            nsubs: 0,
            stars: 0,
            access,
            blocked_since: None,
            read_stopped: false,
            write_blocked: false,
            behind: false,
            waiting: false,
            served: false,
            in_held: 0,
            dropped: 0,
            closing: Closing::Open,
            kill: false,
            bad_frames: 0,
            ingress: rates
                .ingress_bytes_per_sec
                .map(|r| TokenBucket::bytes_per_sec(r, now)),
            egress: rates
                .egress_bytes_per_sec
                .map(|r| TokenBucket::bytes_per_sec(r, now)),
            commands: CommandLimiter::new(&self.limits, now),
            wt: None,
        };
        let id = if let Some(id) = self.free.pop() {
            if let Some(slot) = self.conns.get_mut(id as usize) {
                *slot = Some(state);
            }
            id
        } else {
            let id = ConnId::try_from(self.conns.len()).ok()?;
            self.conns.push(Some(state));
            id
        };
        self.open += 1;
        self.stats.connections_opened += 1;
        Some(id)
    }

    /// Admits a WebTransport session: a connection with lines and a datagram queue.
    pub fn register_wt(&mut self, access: Box<dyn Access>) -> Option<ConnId> {
        let id = self.register(access)?;
        if let Some(st) = self.conn_mut(id) {
            st.wt = Some(Box::default());
        }
        Some(id)
    }

    /// Removes a connection and all its subscriptions.
    pub fn unregister(&mut self, id: ConnId) {
        self.drop_all_subs(id);
        if let Some(slot) = self.conns.get_mut(id as usize)
            && let Some(mut st) = slot.take()
        {
            st.out.consume(usize::MAX, &mut self.pool);
            if let Some(wt) = &mut st.wt {
                wt.release(&mut self.pool);
            }
            if st.behind {
                self.behind_remove();
            }
            self.in_held_total -= st.in_held;
            self.free.push(id);
            self.open -= 1;
        }
    }

    /// The state of a connection.
    pub fn conn_mut(&mut self, id: ConnId) -> Option<&mut ConnState> {
        self.conns.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Records that the socket took `n` queued bytes of connection `id`.
    pub fn consumed(&mut self, id: ConnId, n: usize) {
        let resume_at = self.behind_at / 2;
        if let Some(Some(st)) = self.conns.get_mut(id as usize) {
            st.out.consume(n, &mut self.pool);
            if st.out.is_empty() {
                st.write_blocked = false;
                if st.wt.as_ref().is_none_or(|w| w.all_empty()) {
                    st.blocked_since = None;
                }
            }
            if st.behind && st.out.queued() <= resume_at {
                st.behind = false;
                self.behind_remove();
            }
        }
    }

    /// The bytes queued on WebTransport queue `q` (line `q + 1`, or
    /// [`wt::DATAGRAM_QUEUE`]) of session `id`.
    pub fn wt_pending(&self, id: ConnId, q: usize) -> &[u8] {
        self.conns
            .get(id as usize)
            .and_then(Option::as_ref)
            .and_then(|st| st.wt.as_ref())
            .and_then(|w| w.queue(q))
            .map_or(&[], OutQueue::pending)
    }

    /// Records that the session took `n` bytes of WebTransport queue `q`.
    pub fn wt_consumed(&mut self, id: ConnId, q: usize, n: usize) {
        if let Some(Some(st)) = self.conns.get_mut(id as usize)
            && let Some(w) = &mut st.wt
        {
            if let Some(queue) = w.queue_mut(q) {
                queue.consume(n, &mut self.pool);
            }
            if st.out.is_empty() && w.all_empty() {
                st.blocked_since = None;
            }
        }
    }

    /// The socket of connection `id` refused bytes (its task's write would block with bytes
    /// queued): its listener is not keeping up, so its backlog no longer pauses intake.
    pub fn write_blocked(&mut self, id: ConnId) {
        if let Some(Some(st)) = self.conns.get_mut(id as usize) {
            st.write_blocked = true;
            if st.behind {
                st.behind = false;
                self.behind_remove();
            }
        }
    }

    fn behind_add(&mut self) {
        self.intake.hold(self.now);
    }

    fn behind_remove(&mut self) {
        if self.intake.unhold() {
            self.end_pause();
        }
    }

    /// Ends an intake pause: wakes the waiting connections in release order.
    fn end_pause(&mut self) {
        let mut released = std::mem::take(&mut self.released);
        self.intake.end(self.now, &mut released);
        for id in released.drain(..) {
            if let Some(Some(st)) = self.conns.get_mut(id as usize)
                && st.waiting
            {
                st.waiting = false;
                st.served = false;
                st.wake();
            }
        }
        self.released = released;
    }

    /// A pause past [`MAX_INTAKE_PAUSE`](crate::limits::MAX_INTAKE_PAUSE): the backlog that holds it is not being written
    /// although its sockets take bytes; treat those connections as not keeping up (they go
    /// to the drop policy) and let intake go on.
    fn end_overrun_pause(&mut self) {
        for st in self.conns.iter_mut().flatten() {
            if st.behind {
                st.behind = false;
                st.write_blocked = true;
            }
        }
        if self.mesh_holds {
            self.mesh_holds = false;
            self.mesh_overran = true;
        }
        self.intake.overrun();
        self.end_pause();
    }

    /// The connection task reports the heap bytes of incomplete incoming frames it holds for
    /// connection `id` (they count against the connection's budget).
    pub fn set_in_held(&mut self, id: ConnId, bytes: usize) {
        if let Some(Some(st)) = self.conns.get_mut(id as usize) {
            self.in_held_total = self.in_held_total - st.in_held + bytes;
            st.in_held = bytes;
            if st.out.is_empty() {
                // Input alone never blocks: it is bounded by the frame limit, and a
                // connection whose queue is empty is not behind.
                st.blocked_since = None;
            }
        }
    }

    /// Must connection `id` stop reading now, and why? `None`: read on. Asked by the
    /// connection task before every read and after every frame it handles.
    pub fn read_stop(&mut self, id: ConnId) -> Option<ReadStop> {
        let stop_at = self.limits.read_stop_bytes();
        if self.intake.overdue(self.now) {
            self.end_overrun_pause();
        }
        if self.mesh.is_some() {
            self.check_mesh_backlog();
        }
        let paused = self.intake.paused();
        let st = self.conns.get_mut(id as usize)?.as_mut()?;
        if st.out.queued() >= stop_at {
            if !st.read_stopped {
                st.read_stopped = true;
                self.stats.read_stops += 1;
            }
            st.blocked_since.get_or_insert(self.now);
            return Some(ReadStop::OwnBacklog);
        }
        st.read_stopped = false;
        if paused {
            if !st.waiting {
                st.waiting = true;
                self.intake.wait(id, st.served);
            }
            return Some(ReadStop::RelayBehind);
        }
        st.served = true;
        None
    }

    /// Is intake paused because the relay is behind on writing?
    pub fn intake_paused(&self) -> bool {
        self.intake.paused()
    }

    /// Holds the intake pause while the mesh is backed up ([`mesh::MeshHook::backed_up`]),
    /// releases it when the mesh has caught up, and ends a pause past its bound. Asked by
    /// [`Broker::read_stop`] and, while the mesh holds a pause (nobody reads then), by the
    /// watcher task ([`Broker::mesh_watch`]). Returns whether the mesh holds the pause.
    pub fn check_mesh_backlog(&mut self) -> bool {
        if self.intake.overdue(self.now) {
            self.end_overrun_pause();
        }
        let backed_up = self.mesh.as_ref().is_some_and(|m| m.backed_up());
        if !backed_up {
            self.mesh_overran = false;
        }
        let hold = backed_up && !self.mesh_overran;
        if hold && !self.mesh_holds {
            self.mesh_holds = true;
            self.stats.intake_pauses_mesh += 1;
            self.behind_add();
            if let Some(w) = self.mesh_watcher.take() {
                w.wake();
            }
        } else if !hold && self.mesh_holds {
            self.mesh_holds = false;
            self.behind_remove();
        }
        self.mesh_holds
    }

    /// For the task that watches the mesh's backlog: `true` while the mesh holds the intake
    /// pause (re-check with [`Broker::check_mesh_backlog`] soon: no read asks while everyone
    /// waits); otherwise keeps `waker` to wake when the mesh starts holding one.
    pub fn mesh_watch(&mut self, waker: &Waker) -> bool {
        if self.mesh_holds {
            return true;
        }
        self.mesh_watcher = Some(waker.clone());
        false
    }

    /// Counts a connection task yielding with work left (turn budget used up).
    pub fn note_turn_yield(&mut self) {
        self.stats.turn_yields += 1;
    }

    /// Checks a command of connection `id` against its rate limit. On [`Verdict::Close`] the
    /// connection is already being closed with `ERR:rate_limited`.
    pub fn check_command(&mut self, id: ConnId, cmd: limiter::Command) -> Verdict {
        let now = self.now;
        let Some(Some(st)) = self.conns.get_mut(id as usize) else {
            return Verdict::Allow;
        };
        let v = st.commands.command(cmd, now);
        if v != Verdict::Allow {
            self.stats.commands_rate_limited += 1;
        }
        if v == Verdict::Close {
            self.close_rate_limited(id);
        }
        v
    }

    /// A publish of connection `id` was refused: may its `ERR:` be sent? `strike`: the
    /// refusal is for permission or a bad channel (not the ingress rate). On
    /// [`RefusalReply::Close`] the connection is already being closed.
    pub fn publish_refused(&mut self, id: ConnId, strike: bool) -> RefusalReply {
        let now = self.now;
        let Some(Some(st)) = self.conns.get_mut(id as usize) else {
            return RefusalReply::Silent;
        };
        let r = st.commands.publish_refused(strike, now);
        match r {
            RefusalReply::Answer => {}
            RefusalReply::Notice | RefusalReply::Silent => self.stats.refusals_unanswered += 1,
            RefusalReply::Close => {
                self.stats.refusals_unanswered += 1;
                self.close_rate_limited(id);
            }
        }
        r
    }

    fn close_rate_limited(&mut self, id: ConnId) {
        self.stats.rate_limit_closed += 1;
        let s = self.limits.strike_rate;
        let why = format!(
            "this connection kept going over its command rate limits ({} refusals, then more than {} per second); closing",
            s.burst, s.per_sec
        );
        self.close(id, 1008, "rate limited", Some(("rate_limited", &why)), true);
    }

    /// Subscribes connection `id` to `pattern` in `tenant`. `Ok(true)` = new, `Ok(false)` =
    /// it was already subscribed. Does not send the reply.
    pub fn subscribe(&mut self, id: ConnId, tenant: &str, pattern: &str) -> Result<bool, SubError> {
        self.subscribe_to(id, tenant, pattern, Target::Control, 0)
            .map(|(new, _)| new)
    }

    /// Like [`Broker::subscribe`], with a WebTransport delivery target and an own egress
    /// limit (`kbps` KB/s, 0 = none). Returns whether it is new and the target in use (the
    /// line picked for `Line(0)`; the existing subscription's target when it was there
    /// already). A WebSocket connection always gets `Control`.
    pub fn subscribe_to(
        &mut self,
        id: ConnId,
        tenant: &str,
        pattern: &str,
        target: Target,
        kbps: u32,
    ) -> Result<(bool, Target), SubError> {
        let r = self.subscribe_checked(id, tenant, pattern, target, kbps);
        // Every cap a subscriber can hit is counted (`/stats`, `/metrics`).
        match &r {
            Err(SubError::TooManyForConnection(_)) => self.stats.refused_subs_per_connection += 1,
            Err(SubError::RelayFull(_)) => self.stats.refused_subs_relay_full += 1,
            Err(SubError::TooComplex(_)) => self.stats.refused_pattern_too_complex += 1,
            _ => {}
        }
        r
    }

    fn subscribe_checked(
        &mut self,
        id: ConnId,
        tenant: &str,
        pattern: &str,
        target: Target,
        kbps: u32,
    ) -> Result<(bool, Target), SubError> {
        pattern::validate_pattern(pattern).map_err(SubError::InvalidPattern)?;
        let cost = pattern::check_pattern_cost(pattern).map_err(SubError::TooComplex)?;
        let max_per_conn = self.limits.max_subs_per_conn;
        let max_total = self.limits.max_total_subs;
        let now = self.now;
        let Some(Some(st)) = self.conns.get_mut(id as usize) else {
            return Ok((false, Target::Control));
        };
        if !st.access.may_subscribe(tenant, pattern) {
            return Err(SubError::PermissionDenied);
        }
        let existing = st.subs.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| &*s.tenant == tenant && &*s.pattern == pattern)
        });
        let rate =
            || (kbps > 0).then(|| TokenBucket::bytes_per_sec(kbps.saturating_mul(1024), now));
        if let Some(slot) = existing {
            // Subscribing again with other WebTransport options moves the subscription.
            let t = match &mut st.wt {
                Some(w) => w.retarget(slot, target, rate()),
                None => Target::Control,
            };
            return Ok((false, t));
        }
        if st.nsubs >= max_per_conn || st.nsubs >= usize::from(u16::MAX) {
            return Err(SubError::TooManyForConnection(max_per_conn));
        }
        if st.stars + cost.stars > pattern::MAX_STARS_PER_CONNECTION {
            return Err(SubError::TooComplex(PatternTooComplex::ConnectionStars {
                held: st.stars,
                stars: cost.stars,
            }));
        }
        if self.total_subs >= max_total {
            return Err(SubError::RelayFull(max_total));
        }
        let slot = match st.subs.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                st.subs.push(None);
                st.subs.len() - 1
            }
        };
        let slot16 =
            u16::try_from(slot).map_err(|_| SubError::TooManyForConnection(max_per_conn))?;
        let index = self
            .tenants
            .entry(tenant.into())
            .or_insert_with(|| SubIndex::new(max_total));
        if index.insert(pattern, key(id, slot16)).is_err() {
            return Err(SubError::RelayFull(max_total));
        }
        let target = match &mut st.wt {
            Some(w) => w.add_sub(slot, target, rate()),
            None => Target::Control,
        };
        if let Some(s) = st.subs.get_mut(slot) {
            *s = Some(Sub {
                tenant: tenant.into(),
                pattern: pattern.into(),
            });
        }
        st.nsubs += 1;
        st.stars += cost.stars;
        self.total_subs += 1;
        self.interest_add(tenant, pattern);
        Ok((true, target))
    }

    /// Removes a subscription; `true` when it existed.
    pub fn unsubscribe(&mut self, id: ConnId, tenant: &str, pattern: &str) -> bool {
        let Some(Some(st)) = self.conns.get_mut(id as usize) else {
            return false;
        };
        let Some(slot) = st.subs.iter().position(|s| {
            s.as_ref()
                .is_some_and(|s| &*s.tenant == tenant && &*s.pattern == pattern)
        }) else {
            return false;
        };
        if let Some(s) = st.subs.get_mut(slot) {
            *s = None;
        }
        if let Some(w) = &mut st.wt {
            w.remove_sub(slot);
        }
        st.nsubs -= 1;
        st.stars = st
            .stars
            .saturating_sub(pattern::PatternCost::of(pattern).stars);
        while st.subs.last().is_some_and(Option::is_none) {
            st.subs.pop();
        }
        if st.nsubs == 0 {
            st.subs = Vec::new();
        }
        let slot16 = slot as u16; // slots are < 65536 by construction
        self.index_remove(tenant, pattern, key(id, slot16));
        true
    }

    fn index_remove(&mut self, tenant: &str, pattern: &str, k: SubKey) {
        if let Some(index) = self.tenants.get_mut(tenant) {
            index.remove(pattern, k);
            if index.is_empty() {
                self.tenants.remove(tenant);
            }
        }
        self.total_subs -= 1;
        self.interest_remove(tenant, pattern);
    }

    fn drop_all_subs(&mut self, id: ConnId) {
        let subs = match self.conns.get_mut(id as usize) {
            Some(Some(st)) => {
                st.nsubs = 0;
                st.stars = 0;
                std::mem::take(&mut st.subs)
            }
            _ => return,
        };
        for (slot, sub) in subs.into_iter().enumerate() {
            if let Some(sub) = sub {
                self.index_remove(&sub.tenant, &sub.pattern, key(id, slot as u16));
            }
        }
    }

    fn interest_key(tenant: &str, pattern: &str) -> Box<str> {
        let mut k = String::with_capacity(tenant.len() + 1 + pattern.len());
        k.push_str(tenant);
        k.push(':');
        k.push_str(pattern);
        k.into_boxed_str()
    }

    fn interest_add(&mut self, tenant: &str, pattern: &str) {
        match self.interest.entry(Self::interest_key(tenant, pattern)) {
            Entry::Occupied(mut e) => *e.get_mut() += 1,
            Entry::Vacant(e) => {
                e.insert(1);
                if let Some(m) = &self.mesh {
                    m.interest_changed(tenant, pattern, true);
                }
            }
        }
    }

    fn interest_remove(&mut self, tenant: &str, pattern: &str) {
        if let Entry::Occupied(mut e) = self.interest.entry(Self::interest_key(tenant, pattern)) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
                if let Some(m) = &self.mesh {
                    m.interest_changed(tenant, pattern, false);
                }
            }
        }
    }

    /// Every `(tenant, pattern)` with at least one subscriber here (for a mesh joining late).
    pub fn interests(&self) -> impl Iterator<Item = (&str, &str)> {
        self.interest.keys().filter_map(|k| k.split_once(':'))
    }

    /// A client of connection `from` publishes. Checks the channel, the access and the
    /// ingress rate, offers the message to the mesh, and fans it out locally. Returns the
    /// number of connections it was queued to here.
    pub fn publish(
        &mut self,
        from: ConnId,
        tenant: &str,
        channel: &str,
        payload: &[u8],
        mode: Mode,
    ) -> Result<usize, PubError> {
        pattern::validate_channel(channel).map_err(PubError::InvalidChannel)?;
        let now = self.now;
        if let Some(Some(st)) = self.conns.get_mut(from as usize) {
            if !st.access.may_publish(tenant, channel) {
                return Err(PubError::PermissionDenied);
            }
            if let Some(b) = &mut st.ingress
                && !b.take(payload.len(), now)
            {
                self.stats.refused_ingress_rate += 1;
                return Err(PubError::RateLimited(b.rate()));
            }
        }
        self.stats.published += 1;
        if let Some(m) = self.mesh.clone() {
            let has_local = self
                .tenants
                .get(tenant)
                .is_some_and(|i| i.has_match(channel));
            if m.local_publish(tenant, channel, payload, mode, has_local) == LocalPlan::NotHere {
                return Ok(0);
            }
        }
        Ok(self.deliver_local(tenant, channel, payload, mode))
    }

    /// A message from the mesh: deliver to local subscribers only.
    pub fn deliver_from_mesh(
        &mut self,
        tenant: &str,
        channel: &str,
        payload: &[u8],
        mode: Mode,
    ) -> usize {
        if pattern::validate_channel(channel).is_err() {
            return 0;
        }
        self.deliver_local(tenant, channel, payload, mode)
    }

    fn deliver_local(&mut self, tenant: &str, channel: &str, payload: &[u8], mode: Mode) -> usize {
        let Some(index) = self.tenants.get(tenant) else {
            return 0;
        };
        let Ok(d) = Deliver::new(tenant, channel, payload) else {
            return 0;
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        index.for_each_match(channel, |_, k| scratch.push(k));
        scratch.sort_unstable();
        // The frame up to the pattern list is the same for every receiver: encode it once.
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        if !scratch.is_empty() {
            d.encode_head(|piece| head.extend_from_slice(piece));
        }
        let mut delivered = 0;
        match mode {
            Mode::Broadcast => {
                for group in scratch.chunk_by(|a, b| key_conn(*a) == key_conn(*b)) {
                    delivered += usize::from(self.enqueue_deliver(group, &d, &head));
                }
            }
            _ => {
                let groups = scratch
                    .chunk_by(|a, b| key_conn(*a) == key_conn(*b))
                    .count();
                if groups > 0 {
                    let pick = fastrand::usize(..groups);
                    if let Some(group) = scratch
                        .chunk_by(|a, b| key_conn(*a) == key_conn(*b))
                        .nth(pick)
                    {
                        delivered += usize::from(self.enqueue_deliver(group, &d, &head));
                    }
                }
            }
        }
        // Keep the buffer, not a 64 KiB payload's worth of it.
        if head.capacity() > 4096 {
            head = Vec::new();
        }
        self.head = head;
        self.scratch = scratch;
        self.close_pending_slow();
        delivered
    }

    /// Queues one deliver frame for the connection of `group` (all its matching slots):
    /// `head` ([`Deliver::encode_head`]) and the connection's own pattern list.
    fn enqueue_deliver(&mut self, group: &[SubKey], d: &Deliver<'_>, head: &[u8]) -> bool {
        let Some(&first) = group.first() else {
            return false;
        };
        let id = key_conn(first);
        let Some(Some(st)) = self.conns.get_mut(id as usize) else {
            return false;
        };
        if st.wt.is_some() {
            return self.enqueue_deliver_wt(id, group, d);
        }
        let ConnState {
            subs,
            out,
            closing,
            dropped,
            blocked_since,
            egress,
            waker,
            in_held,
            write_blocked,
            behind,
            ..
        } = st;
        if *closing != Closing::Open {
            return false;
        }
        // The pattern-cost limits make more than `max_deliver_patterns` matches for one
        // connection impossible (see `Limits::max_deliver_patterns`); the cap keeps the
        // frame bounded by construction all the same, and a cut is counted.
        let cap = self.limits.max_deliver_patterns();
        if group.len() > cap {
            self.stats.deliver_patterns_capped += 1;
        }
        let patterns = group
            .iter()
            .take(cap)
            .filter_map(|k| subs.get(key_slot(*k)).and_then(Option::as_ref))
            .map(|s| &*s.pattern);
        let Ok(plen) = Deliver::patterns_len(patterns.clone()) else {
            return false;
        };
        let flen = head.len() + plen;
        let total = queue::framed_len(flen);
        if out.queued() + *in_held + total > self.limits.queue_bytes {
            self.stats.dropped_queue_full += 1;
            if !*write_blocked {
                self.stats.dropped_relay_behind += 1;
            }
            *dropped += 1;
            let since = *blocked_since.get_or_insert(self.now);
            if self.now.saturating_duration_since(since) >= self.limits.slow_consumer_grace {
                self.to_close.push(id);
            }
            return false;
        }
        if let Some(b) = egress
            && !b.take(flen, self.now)
        {
            self.stats.dropped_egress_rate += 1;
            *dropped += 1;
            return false;
        }
        let was_empty = out.is_empty();
        out.push_frame_head(OP_BINARY, flen, &mut self.pool, head, |buf| {
            let _ = Deliver::encode_patterns(patterns, |piece| buf.extend_from_slice(piece));
        });
        if was_empty && let Some(w) = waker {
            w.wake_by_ref();
        }
        self.stats.delivered += 1;
        if !*write_blocked && !*behind && out.queued() >= self.behind_at {
            *behind = true;
            self.behind_add();
        }
        true
    }

    /// [`Self::enqueue_deliver`] for a WebTransport session: one deliver frame per target
    /// (control stream, each line, datagrams), each listing that target's patterns. The
    /// session has the connection's one budget (`queue_bytes`, everything it holds), and a
    /// line or the datagram queue may fill at most half of it, so one stuck line leaves room
    /// for the control stream and the other lines. Frames over [`MAX_WT_FRAME`] are skipped
    /// and counted. No allocation per delivery (the grouping reuses `wt_scratch`).
    fn enqueue_deliver_wt(&mut self, id: ConnId, group: &[SubKey], d: &Deliver<'_>) -> bool {
        let now = self.now;
        let limit = self.limits.queue_bytes;
        let grace = self.limits.slow_consumer_grace;
        let mut picks = std::mem::take(&mut self.wt_scratch);
        picks.clear();
        let Some(Some(st)) = self.conns.get_mut(id as usize) else {
            self.wt_scratch = picks;
            return false;
        };
        let ConnState {
            subs,
            out,
            dropped,
            blocked_since,
            egress,
            waker,
            wt,
            in_held,
            closing,
            ..
        } = st;
        let Some(wt) = wt.as_mut().filter(|_| *closing == Closing::Open) else {
            self.wt_scratch = picks;
            return false;
        };
        // Targets in a fixed order: control, lines 1..=8, datagrams.
        let rank = |t: Target| match t {
            Target::Control => 0u8,
            Target::Line(l) => l,
            Target::Datagram => wt::LINES as u8 + 1,
        };
        for k in group {
            let slot = key_slot(*k);
            let Some(Some(sub)) = subs.get(slot) else {
                continue;
            };
            let cost = d.encoded_len(std::iter::once(&*sub.pattern)).unwrap_or(0);
            if let Some(b) = wt.rate_of(slot)
                && !b.take(cost, now)
            {
                self.stats.dropped_egress_rate += 1;
                *dropped += 1;
                continue;
            }
            picks.push((rank(wt.target_of(slot)), slot));
        }
        picks.sort_unstable();
        let mut any = false;
        for run in picks.chunk_by(|a, b| a.0 == b.0) {
            let Some(&(r, _)) = run.first() else {
                continue;
            };
            let pats = || {
                run.iter()
                    .filter_map(|(_, i)| subs.get(*i).and_then(Option::as_ref))
                    .map(|s| &*s.pattern)
            };
            let Ok(flen) = d.encoded_len(pats()) else {
                continue;
            };
            if flen > MAX_WT_FRAME {
                self.stats.dropped_wt_oversize += 1;
                *dropped += 1;
                continue;
            }
            let held = out.queued() + *in_held + wt.queued();
            let r = usize::from(r);
            let q: &mut OutQueue = match r {
                0 => out,
                r if r <= wt::LINES => match wt.queue_mut(r - 1) {
                    Some(q) => q,
                    None => continue,
                },
                _ if flen <= wt.datagram_max() => match wt.queue_mut(DATAGRAM_QUEUE) {
                    Some(q) => q,
                    None => continue,
                },
                _ => out, // too large for a datagram: the control stream carries it
            };
            let total = queue::framed_len(flen);
            let own_cap = if r == 0 { limit } else { limit / 2 };
            if held + total > limit || q.queued() + total > own_cap {
                self.stats.dropped_queue_full += 1;
                *match r {
                    0 => &mut self.stats.dropped_wt_control_full,
                    r if r <= wt::LINES => &mut self.stats.dropped_wt_line_full,
                    _ if flen <= wt.datagram_max() => &mut self.stats.dropped_wt_datagram_full,
                    _ => &mut self.stats.dropped_wt_control_full,
                } += 1;
                *dropped += 1;
                let since = *blocked_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= grace {
                    self.to_close.push(id);
                }
                continue;
            }
            if let Some(b) = egress
                && !b.take(flen, now)
            {
                self.stats.dropped_egress_rate += 1;
                *dropped += 1;
                continue;
            }
            let was_empty = q.is_empty();
            q.push_frame(OP_BINARY, flen, &mut self.pool, |sink| {
                let _ = d.encode_with(pats(), sink);
            });
            if was_empty && let Some(w) = waker {
                w.wake_by_ref();
            }
            self.stats.delivered += 1;
            any = true;
        }
        self.wt_scratch = picks;
        any
    }

    fn close_pending_slow(&mut self) {
        while let Some(id) = self.to_close.pop() {
            let Some((out, held_in)) = self
                .conn_mut(id)
                .filter(|c| c.closing == Closing::Open)
                .map(|c| (c.out.queued(), c.in_held))
            else {
                continue;
            };
            self.stats.slow_consumers_closed += 1;
            let grace = self.limits.slow_consumer_grace.as_secs_f64();
            let why = format!(
                "this connection did not drain for {grace:.1} s: {out} bytes waiting to be sent and {held_in} bytes of incomplete frames held (budget {} bytes); messages were dropped, closing",
                self.limits.queue_bytes
            );
            self.close(
                id,
                1008,
                "slow consumer",
                Some(("slow_consumer", &why)),
                true,
            );
        }
    }

    /// Queues a text reply to connection `id`. Replies are small and are never dropped: the
    /// budget holds because a connection's reads stop while its backlog is at
    /// [`Limits::read_stop_bytes`] ([`Broker::read_stop`]), so at most one reply per frame
    /// already read lands above that mark.
    pub fn send_reply(&mut self, id: ConnId, reply: &Reply<'_>) {
        let Some(Some(st)) = self.conns.get_mut(id as usize) else {
            return;
        };
        if st.closing != Closing::Open {
            return;
        }
        let was_empty = st.out.is_empty();
        st.out
            .push_frame(OP_TEXT, reply.encoded_len(), &mut self.pool, |sink| {
                reply.encode_with(sink);
            });
        if was_empty {
            st.wake();
        }
    }

    /// Queues a control frame (pong) to connection `id` (bounded like [`Broker::send_reply`]).
    pub fn send_control(&mut self, id: ConnId, opcode: u8, payload: &[u8]) {
        let Some(Some(st)) = self.conns.get_mut(id as usize) else {
            return;
        };
        if st.closing != Closing::Open {
            return;
        }
        let was_empty = st.out.is_empty();
        st.out.push_simple(opcode, payload, &mut self.pool);
        if was_empty {
            st.wake();
        }
    }

    /// Closes connection `id`: drops its subscriptions (and, with `discard`, every queued
    /// frame the socket has not started to take), queues `ERR:<reason>:<why>` (if given)
    /// and a Close frame with `code`/`close_reason`, and gives the task
    /// [`Limits::close_timeout`] to flush them.
    pub fn close(
        &mut self,
        id: ConnId,
        code: u16,
        close_reason: &str,
        err: Option<(&str, &str)>,
        discard: bool,
    ) {
        self.drop_all_subs(id);
        let deadline = self.now + self.limits.close_timeout;
        let Some(Some(st)) = self.conns.get_mut(id as usize) else {
            return;
        };
        if st.closing != Closing::Open {
            return;
        }
        if discard {
            st.out.discard_unstarted();
            if let Some(w) = &mut st.wt {
                w.discard(&mut self.pool);
            }
        }
        let was_behind = std::mem::replace(&mut st.behind, false);
        if let Some((reason, why)) = err {
            let parts = [why];
            let reply = Reply::Err {
                reason,
                parts: &parts,
            };
            st.out
                .push_frame(OP_TEXT, reply.encoded_len(), &mut self.pool, |sink| {
                    reply.encode_with(sink);
                });
        }
        let mut body = Vec::with_capacity(2 + close_reason.len().min(123));
        body.extend_from_slice(&code.to_be_bytes());
        let mut cut = close_reason.len().min(123);
        while !close_reason.is_char_boundary(cut) {
            cut -= 1;
        }
        body.extend_from_slice(close_reason.get(..cut).unwrap_or("").as_bytes());
        st.out.push_simple(OP_CLOSE, &body, &mut self.pool);
        st.closing = Closing::Flushing(deadline);
        st.wake();
        if was_behind {
            // What it still has to write is its own business now: nobody waits for it.
            self.behind_remove();
        }
    }

    /// Periodic housekeeping (about once a second and on shutdown): closes slow consumers
    /// past their grace and connections whose access ended; drops connections whose close
    /// deadline passed.
    pub fn sweep(&mut self, now: Instant, wall: SystemTime) {
        self.now = now;
        if self.intake.overdue(now) {
            self.end_overrun_pause();
        }
        let grace = self.limits.slow_consumer_grace;
        let mut ended: Vec<(ConnId, String)> = Vec::new();
        for (i, slot) in self.conns.iter_mut().enumerate() {
            let Some(st) = slot else { continue };
            let id = i as ConnId;
            match st.closing {
                Closing::Flushing(deadline) => {
                    if now >= deadline && !st.kill {
                        st.kill = true;
                        st.wake();
                    }
                }
                Closing::Open => {
                    if let Some(since) = st.blocked_since
                        && st.held() > 0
                        && now.saturating_duration_since(since) >= grace
                    {
                        self.to_close.push(id);
                    } else if let Err(why) = st.access.check(wall) {
                        ended.push((id, why));
                    }
                }
            }
        }
        self.close_pending_slow();
        for (id, why) in ended {
            self.stats.access_ended_closed += 1;
            self.close(id, 1008, "access ended", Some(("access_ended", &why)), true);
        }
    }

    /// Starts a graceful shutdown: refuses new connections and sends `RECONNECT` to every
    /// open connection.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|_| i as ConnId))
            .collect();
        for id in ids {
            self.send_reply(id, &Reply::Reconnect);
        }
    }

    /// Ends the shutdown grace: closes every remaining connection (going away).
    pub fn close_all(&mut self) {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|_| i as ConnId))
            .collect();
        for id in ids {
            self.close(id, 1001, "relay shutting down", None, false);
        }
    }

    /// Marks every connection to be dropped at once.
    pub fn kill_all(&mut self) {
        for st in self.conns.iter_mut().flatten() {
            st.kill = true;
            st.wake();
        }
    }

    /// Heap bytes held for connections: outbound queue buffers, the spare-buffer pool and
    /// incomplete incoming frames (the broker's own accounting of the memory bound in
    /// `docs/edge.md`).
    pub fn queue_bytes_held(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .map(|c| c.out.capacity() + c.wt.as_ref().map_or(0, |w| w.capacity()))
            .sum::<usize>()
            + self.pool.held_bytes()
            + self.in_held_total
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::mesh::{LocalPlan, MeshHook};
    use super::*;
    use crate::auth::AllowAll;

    #[derive(Default)]
    struct Recorder {
        events: RefCell<Vec<String>>,
        plan: Option<LocalPlan>,
    }

    impl MeshHook for Recorder {
        fn local_publish(
            &self,
            tenant: &str,
            channel: &str,
            _payload: &[u8],
            mode: Mode,
            has_local: bool,
        ) -> LocalPlan {
            self.events.borrow_mut().push(format!(
                "publish {tenant} {channel} {mode} local={has_local}"
            ));
            self.plan.unwrap_or(LocalPlan::DeliverHere)
        }
        fn interest_changed(&self, tenant: &str, pattern: &str, present: bool) {
            self.events
                .borrow_mut()
                .push(format!("interest {tenant} {pattern} {present}"));
        }
    }

    fn broker(hook: Rc<Recorder>) -> Broker {
        let mut b = Broker::new(Limits::default(), crate::clock::now());
        b.set_mesh(hook);
        b
    }

    #[test]
    fn interest_changes_are_reported_once_per_tenant_pattern() {
        let hook = Rc::new(Recorder::default());
        let mut b = broker(hook.clone());
        let c1 = b.register(Box::new(AllowAll)).unwrap();
        let c2 = b.register(Box::new(AllowAll)).unwrap();
        assert!(b.subscribe(c1, "t", "a.#").unwrap());
        assert!(!b.subscribe(c1, "t", "a.#").unwrap());
        assert!(b.subscribe(c2, "t", "a.#").unwrap());
        assert!(b.subscribe(c2, "u", "a.#").unwrap());
        assert!(b.unsubscribe(c1, "t", "a.#"));
        b.unregister(c2);
        assert_eq!(
            *hook.events.borrow(),
            [
                "interest t a.# true",
                "interest u a.# true",
                "interest t a.# false",
                "interest u a.# false"
            ]
        );
        assert_eq!(b.subscription_count(), 0);
        assert_eq!(b.interests().count(), 0);
    }

    #[test]
    fn local_publish_is_offered_to_the_mesh_and_can_be_taken_away() {
        let hook = Rc::new(Recorder {
            plan: Some(LocalPlan::NotHere),
            ..Recorder::default()
        });
        let mut b = broker(hook.clone());
        let c = b.register(Box::new(AllowAll)).unwrap();
        b.subscribe(c, "t", "x.*").unwrap();
        assert_eq!(b.publish(c, "t", "x.y", b"p", Mode::Random), Ok(0));
        assert_eq!(b.publish(c, "t", "z", b"p", Mode::Broadcast), Ok(0));
        assert_eq!(b.deliver_from_mesh("t", "x.y", b"p", Mode::Broadcast), 1);
        let events = hook.events.borrow();
        assert_eq!(events[1], "publish t x.y random local=true");
        assert_eq!(events[2], "publish t z broadcast local=false");
        assert_eq!(
            events.len(),
            3,
            "mesh deliveries are not offered back: {events:?}"
        );
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let limits = Limits {
            queue_bytes: 1000,
            ..Limits::default()
        };
        let mut b = Broker::new(limits, crate::clock::now());
        let c = b.register(Box::new(AllowAll)).unwrap();
        b.subscribe(c, "t", "q").unwrap();
        let payload = [0u8; 300];
        let delivered: usize = (0..5)
            .map(|_| b.publish(c, "t", "q", &payload, Mode::Broadcast).unwrap())
            .sum();
        assert_eq!(delivered, 3);
        assert_eq!(b.stats().dropped_queue_full, 2);
        assert_eq!(b.conn_mut(c).unwrap().dropped(), 2);
    }

    /// A broker with a 16 KiB budget (behind at 8 KiB, resumed at 4 KiB), a publisher and a
    /// subscriber of `t`/`q`.
    fn flow_broker() -> (Broker, ConnId, ConnId) {
        let limits = Limits {
            queue_bytes: 16 * 1024,
            ..Limits::default()
        };
        let mut b = Broker::new(limits, crate::clock::now());
        let p = b.register(Box::new(AllowAll)).unwrap();
        let s = b.register(Box::new(AllowAll)).unwrap();
        b.subscribe(s, "t", "q").unwrap();
        (b, p, s)
    }

    /// Publishes 1,000-byte messages from `p` while its reads are allowed; returns how many.
    fn publish_until_paused(b: &mut Broker, p: ConnId) -> usize {
        let mut n = 0;
        while b.read_stop(p).is_none() {
            assert_eq!(b.publish(p, "t", "q", &[0u8; 1000], Mode::Broadcast), Ok(1));
            n += 1;
            assert!(n < 100, "intake never paused");
        }
        n
    }

    /// A waker that logs `id` when woken.
    fn logging_waker(id: u32, log: &std::sync::Arc<std::sync::Mutex<Vec<u32>>>) -> Waker {
        struct W(u32, std::sync::Arc<std::sync::Mutex<Vec<u32>>>);
        impl std::task::Wake for W {
            fn wake(self: std::sync::Arc<Self>) {
                self.1.lock().unwrap().push(self.0);
            }
        }
        Waker::from(std::sync::Arc::new(W(id, log.clone())))
    }

    #[test]
    fn a_backlog_on_a_socket_that_takes_bytes_pauses_intake_instead_of_dropping() {
        let (mut b, p, s) = flow_broker();
        let other = b.register(Box::new(AllowAll)).unwrap();
        let n = publish_until_paused(&mut b, p);
        assert_eq!(n, 9, "9 deliveries of 1,020 bytes cross the 8 KiB mark");
        assert_eq!(b.read_stop(p), Some(ReadStop::RelayBehind));
        assert_eq!(
            b.read_stop(other),
            Some(ReadStop::RelayBehind),
            "every reader waits"
        );
        assert!(b.intake_paused());
        // The subscriber's task writes all but the last delivery: under the 4 KiB resume mark.
        let queued = b.conn_mut(s).unwrap().pending().len();
        b.consumed(s, queued - 1100);
        assert!(!b.intake_paused());
        assert_eq!(b.read_stop(p), None);
        let st = b.stats();
        assert_eq!((st.intake_pauses, st.dropped_queue_full), (1, 0));
    }

    #[test]
    fn a_socket_that_refuses_bytes_never_pauses_intake_and_drops_alone() {
        let (mut b, p, s) = flow_broker();
        b.publish(p, "t", "q", &[0u8; 1000], Mode::Broadcast)
            .unwrap();
        b.write_blocked(s);
        for _ in 0..40 {
            assert_eq!(
                b.read_stop(p),
                None,
                "a listener that does not read pauses nobody"
            );
            b.publish(p, "t", "q", &[0u8; 1000], Mode::Broadcast)
                .unwrap();
        }
        let st = b.stats();
        assert_eq!(st.intake_pauses, 0);
        assert!(st.dropped_queue_full > 20, "{st:?}");
        assert_eq!(
            st.dropped_relay_behind, 0,
            "dropped only where the socket refused bytes"
        );
        // Once its socket took everything, it is a listener that reads again.
        let queued = b.conn_mut(s).unwrap().pending().len();
        b.consumed(s, queued);
        assert_eq!(publish_until_paused(&mut b, p), 9);
    }

    #[test]
    fn a_backlog_whose_socket_starts_refusing_bytes_ends_the_pause() {
        let (mut b, p, s) = flow_broker();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        b.conn_mut(p).unwrap().set_waker(&logging_waker(p, &log));
        publish_until_paused(&mut b, p);
        assert_eq!(b.read_stop(p), Some(ReadStop::RelayBehind));
        b.write_blocked(s);
        assert!(!b.intake_paused());
        assert_eq!(*log.lock().unwrap(), [p], "the waiting publisher was woken");
        assert_eq!(b.read_stop(p), None);
    }

    #[test]
    fn waiting_readers_are_woken_in_turn_who_did_not_read_first() {
        let (mut b, p1, s) = flow_broker();
        let p2 = b.register(Box::new(AllowAll)).unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        for id in [p1, p2, s] {
            b.conn_mut(id).unwrap().set_waker(&logging_waker(id, &log));
        }
        log.lock().unwrap().clear();
        for round in 0..3 {
            // p1 reads and fills the queue; p2 then finds intake paused without having read.
            publish_until_paused(&mut b, p1);
            assert_eq!(b.read_stop(p2), Some(ReadStop::RelayBehind));
            log.lock().unwrap().clear();
            let queued = b.conn_mut(s).unwrap().pending().len();
            b.consumed(s, queued);
            assert_eq!(*log.lock().unwrap(), [p2, p1], "round {round}");
            // Next round the other way round: p2 reads first.
            publish_until_paused(&mut b, p2);
            assert_eq!(b.read_stop(p1), Some(ReadStop::RelayBehind));
            log.lock().unwrap().clear();
            let queued = b.conn_mut(s).unwrap().pending().len();
            b.consumed(s, queued);
            assert_eq!(*log.lock().unwrap(), [p1, p2], "round {round}");
        }
        assert_eq!(b.stats().intake_pauses, 6);
    }

    #[test]
    fn an_intake_pause_is_bounded_then_the_backlog_counts_as_slow() {
        let (mut b, p, s) = flow_broker();
        let t0 = crate::clock::now();
        b.set_now(t0);
        publish_until_paused(&mut b, p);
        b.sweep(
            t0 + crate::limits::MAX_INTAKE_PAUSE / 2,
            crate::clock::wall_now(),
        );
        assert!(b.intake_paused(), "not yet");
        b.sweep(
            t0 + crate::limits::MAX_INTAKE_PAUSE,
            crate::clock::wall_now(),
        );
        assert!(!b.intake_paused());
        assert_eq!(b.read_stop(p), None);
        let st = b.stats();
        assert_eq!(
            (st.intake_pause_overruns, st.intake_paused_us),
            (1, 1_000_000)
        );
        // The unwritten backlog is now a slow consumer's: it drops, intake goes on.
        for _ in 0..20 {
            b.publish(p, "t", "q", &[0u8; 1000], Mode::Broadcast)
                .unwrap();
            assert_eq!(b.read_stop(p), None);
        }
        assert!(b.stats().dropped_queue_full > 0);
        assert_eq!(b.stats().dropped_relay_behind, 0);
        let _ = s;
    }

    /// A mesh hook whose backlog the test sets.
    #[derive(Default)]
    struct Backlog(std::cell::Cell<bool>);

    impl MeshHook for Backlog {
        fn local_publish(&self, _: &str, _: &str, _: &[u8], _: Mode, _: bool) -> LocalPlan {
            LocalPlan::DeliverHere
        }
        fn interest_changed(&self, _: &str, _: &str, _: bool) {}
        fn backed_up(&self) -> bool {
            self.0.get()
        }
    }

    #[test]
    fn a_backed_up_mesh_pauses_intake_until_it_catches_up() {
        let (mut b, p, _s) = flow_broker();
        let mesh = Rc::new(Backlog::default());
        b.set_mesh(mesh.clone());
        let t0 = crate::clock::now();
        b.set_now(t0);
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        b.conn_mut(p).unwrap().set_waker(&logging_waker(p, &log));
        let watcher = logging_waker(99, &log);
        assert!(!b.mesh_watch(&watcher), "nothing to watch yet");
        assert_eq!(b.read_stop(p), None);

        mesh.0.set(true);
        assert_eq!(b.read_stop(p), Some(ReadStop::RelayBehind));
        assert_eq!(*log.lock().unwrap(), [99], "the watcher is woken");
        assert!(b.mesh_watch(&watcher), "the mesh holds the pause");
        // Still backed up at the watcher's next look; then it catches up.
        assert!(b.check_mesh_backlog());
        mesh.0.set(false);
        b.set_now(t0 + std::time::Duration::from_millis(3));
        assert!(!b.check_mesh_backlog());
        assert_eq!(*log.lock().unwrap(), [99, p], "the waiting reader is woken");
        assert_eq!(b.read_stop(p), None);
        let st = b.stats();
        assert_eq!(
            (st.intake_pauses, st.intake_pauses_mesh, st.intake_paused_us),
            (1, 1, 3000)
        );
    }

    #[test]
    fn a_mesh_that_stays_backed_up_pauses_intake_once_for_the_bound() {
        let (mut b, p, _s) = flow_broker();
        let mesh = Rc::new(Backlog::default());
        b.set_mesh(mesh.clone());
        let t0 = crate::clock::now();
        b.set_now(t0);
        mesh.0.set(true);
        assert_eq!(b.read_stop(p), Some(ReadStop::RelayBehind));
        b.set_now(t0 + crate::limits::MAX_INTAKE_PAUSE);
        assert!(!b.check_mesh_backlog(), "the bound ends the pause");
        for _ in 0..3 {
            assert_eq!(b.read_stop(p), None, "and it is not taken again");
        }
        // Once the mesh was seen clear, a new backlog pauses again.
        mesh.0.set(false);
        assert_eq!(b.read_stop(p), None);
        mesh.0.set(true);
        assert_eq!(b.read_stop(p), Some(ReadStop::RelayBehind));
        let st = b.stats();
        assert_eq!((st.intake_pauses_mesh, st.intake_pause_overruns), (2, 1));
    }

    #[test]
    fn a_mesh_pause_and_a_queue_backlog_end_when_both_are_gone() {
        let (mut b, p, s) = flow_broker();
        let mesh = Rc::new(Backlog::default());
        b.set_mesh(mesh.clone());
        publish_until_paused(&mut b, p);
        mesh.0.set(true);
        assert!(b.check_mesh_backlog());
        let queued = b.conn_mut(s).unwrap().pending().len();
        b.consumed(s, queued);
        assert!(b.intake_paused(), "the mesh still holds it");
        mesh.0.set(false);
        assert!(!b.check_mesh_backlog());
        assert!(!b.intake_paused());
        assert_eq!(b.stats().intake_pauses, 1, "one pause, two holders");
    }

    #[test]
    fn incoming_bytes_count_against_the_budget() {
        let limits = Limits {
            queue_bytes: 1000,
            ..Limits::default()
        };
        let mut b = Broker::new(limits, crate::clock::now());
        let c = b.register(Box::new(AllowAll)).unwrap();
        b.subscribe(c, "t", "q").unwrap();
        b.set_in_held(c, 700);
        assert_eq!(b.queue_bytes_held(), 700);
        // 300 bytes of payload + frame overhead no longer fit next to 700 held bytes.
        assert_eq!(b.publish(c, "t", "q", &[0u8; 300], Mode::Broadcast), Ok(0));
        assert_eq!(b.stats().dropped_queue_full, 1);
        b.set_in_held(c, 0);
        assert_eq!(b.publish(c, "t", "q", &[0u8; 300], Mode::Broadcast), Ok(1));
        b.unregister(c);
        assert_eq!(b.queue_bytes_held() - b.pool.held_bytes(), 0);
    }

    #[test]
    fn replies_stop_reads_and_a_blocked_connection_is_closed_after_the_grace() {
        let limits = Limits {
            queue_bytes: 4096,
            slow_consumer_grace: std::time::Duration::from_secs(5),
            ..Limits::default()
        };
        let stop_at = limits.read_stop_bytes();
        let t0 = crate::clock::now();
        let mut b = Broker::new(limits, t0);
        let c = b.register(Box::new(AllowAll)).unwrap();
        let other = b.register(Box::new(AllowAll)).unwrap();
        // A client that never reads and keeps asking for PONGs: reads stop at the mark.
        let mut pongs = 0;
        while b.read_stop(c).is_none() {
            b.send_reply(c, &Reply::Pong);
            pongs += 1;
            assert!(pongs < 10_000);
        }
        assert_eq!(b.read_stop(c), Some(ReadStop::OwnBacklog));
        assert_eq!(b.stats().read_stops, 1, "one stop counted once");
        assert_eq!(pongs, stop_at.div_ceil(6));
        assert_eq!(b.read_stop(other), None, "other connections read on");
        // Nothing drains: closed after the grace (not before), with the reason.
        b.sweep(
            t0 + std::time::Duration::from_secs(4),
            crate::clock::wall_now(),
        );
        assert!(!b.conn_mut(c).unwrap().is_closing());
        b.sweep(
            t0 + std::time::Duration::from_secs(6),
            crate::clock::wall_now(),
        );
        assert!(b.conn_mut(c).unwrap().is_closing());
        assert!(!b.conn_mut(other).unwrap().is_closing());
        assert_eq!(b.stats().slow_consumers_closed, 1);
        let text = String::from_utf8_lossy(b.conn_mut(c).unwrap().pending()).into_owned();
        assert!(
            text.contains("ERR:slow_consumer:this connection did not drain for 5.0 s"),
            "{text}"
        );
    }

    #[test]
    fn a_draining_connection_is_not_closed() {
        let limits = Limits {
            queue_bytes: 4096,
            ..Limits::default()
        };
        let t0 = crate::clock::now();
        let mut b = Broker::new(limits, t0);
        let c = b.register(Box::new(AllowAll)).unwrap();
        while b.read_stop(c).is_none() {
            b.send_reply(c, &Reply::Pong);
        }
        let n = b.conn_mut(c).unwrap().pending().len();
        b.consumed(c, n);
        assert_eq!(b.read_stop(c), None);
        b.sweep(
            t0 + std::time::Duration::from_secs(60),
            crate::clock::wall_now(),
        );
        assert!(!b.conn_mut(c).unwrap().is_closing());
    }

    #[test]
    fn command_floods_are_refused_then_closed() {
        let t0 = crate::clock::now();
        let mut b = Broker::new(Limits::default(), t0);
        let c = b.register(Box::new(AllowAll)).unwrap();
        let l = Limits::default();
        let mut verdicts = Vec::new();
        for _ in 0..(l.sub_rate.burst + l.strike_rate.burst + 1) {
            verdicts.push(b.check_command(c, limiter::Command::Subscription));
        }
        let allowed = verdicts.iter().filter(|v| **v == Verdict::Allow).count();
        assert_eq!(allowed, l.sub_rate.burst as usize);
        assert_eq!(verdicts.last(), Some(&Verdict::Close));
        assert!(b.conn_mut(c).unwrap().is_closing());
        assert_eq!(b.stats().rate_limit_closed, 1);
        assert_eq!(
            b.stats().commands_rate_limited,
            u64::from(l.strike_rate.burst) + 1
        );
    }

    #[test]
    fn a_deliver_frame_lists_at_most_the_bound_the_pattern_limits_allow() {
        use fastpubsub_core::frame::DeliverView;
        use fastpubsub_core::pattern::{MAX_PATTERN_SEGMENTS, MAX_STARS_PER_CONNECTION};
        let l = Limits::default();
        assert_eq!(
            l.max_deliver_patterns(),
            1 + MAX_PATTERN_SEGMENTS + MAX_STARS_PER_CONNECTION
        );
        let mut b = Broker::new(l.clone(), crate::clock::now());
        let c = b.register(Box::new(AllowAll)).unwrap();
        // The most patterns of one connection that can match one channel: the channel itself,
        // every '#' prefix the segment limit allows, one '*' pattern per allowed star.
        let channel: Vec<String> = (0..MAX_PATTERN_SEGMENTS).map(|i| format!("s{i}")).collect();
        let mut subs = vec![channel.join(".")];
        for k in 0..MAX_PATTERN_SEGMENTS {
            let mut p = channel[..k].to_vec();
            p.push("#".into());
            subs.push(p.join("."));
        }
        for i in 0..MAX_STARS_PER_CONNECTION {
            // One '*' (at i % 10) in a '#'-ended prefix of 16 - i / 10 segments: distinct.
            let mut p = channel[..MAX_PATTERN_SEGMENTS - 1 - i / 10].to_vec();
            p[i % 10] = "*".into();
            p.push("#".into());
            subs.push(p.join("."));
        }
        for p in &subs {
            assert!(b.subscribe(c, "t", p).unwrap(), "{p}");
        }
        // One more '*' is refused: the connection's star budget is spent.
        assert!(matches!(
            b.subscribe(c, "t", "*.x"),
            Err(SubError::TooComplex(_))
        ));
        let other = b.register(Box::new(AllowAll)).unwrap();
        assert_eq!(
            b.publish(other, "t", &channel.join("."), b"p", Mode::Broadcast),
            Ok(1)
        );
        let queued = b.conn_mut(c).unwrap().pending().to_vec();
        let hlen = crate::wsframe::server_frame_len(&queued).unwrap() - (queued.len() - 4);
        let view = DeliverView::new_checked(&queued[4.max(hlen)..]).unwrap();
        assert_eq!(usize::from(view.pattern_count()), l.max_deliver_patterns());
        assert_eq!(b.stats().deliver_patterns_capped, 0);
        assert!(queued.len() <= l.max_outbound_frame());
    }
}
