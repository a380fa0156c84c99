//! Every capacity and timer of the mesh, in one place, with why it has its value.
//! Times are µs ([`super::time`]). Close codes are wire constants and live with the
//! messages in `fastpubsub_core::mesh::close`; they are re-exported here.
//!
//! When a bound is hit the mesh counts it in its status (`counters.*`) and on `/metrics`;
//! nothing is dropped silently. `docs/mesh.md` ("Limits") lists them for operators.

use super::time::{MS, SEC};

pub use fastpubsub_core::mesh::close;

// ----- the node ----------------------------------------------------------------------

/// Destinations the routing table holds (its memory grows with the relays known).
pub const ROUTE_DESTS: usize = 1024;
/// Neighbours the routing table holds.
pub const ROUTE_NEIGHBOURS: usize = 32;
/// Largest `--max-neighbours`: the policy may hold a few links over its limit (exploration,
/// incoming links in their grace period, up to [`ROUTE_NEIGHBOURS`]` - 1`), so the limit
/// leaves room for them in the route table's neighbour slots.
pub const MAX_NEIGHBOURS_LIMIT: usize = 24;
/// Relays known (linked or not).
pub const MAX_PEERS: usize = 256;
/// Links (QUIC connections, in and out, handshaking included) the node tracks; the QUIC
/// layer holds no more than this (checked where the two are wired together).
pub const MAX_LINKS: usize = 128;
/// Route events kept for the status page.
pub const MAX_EVENTS: usize = 64;
/// Route messages kept per link until its first measurement.
pub const MAX_PENDING_ROUTE: usize = 1024;
/// Outputs (transmits and events) one node queues between two drains by its driver. A
/// driver drains after every input, so only a burst from a single input can come near it
/// (a new link's snapshots: ~`MAX_PEERS` interest origins and announcements); beyond it,
/// outputs are dropped and counted (`counters.mesh.outputs_dropped`).
pub const MAX_OUTPUTS: usize = 16 * 1024;
/// Route messages go out at most this long after the input that made them, batched: a
/// burst of received updates and measurements makes one frame per link, not one per input
/// (with 100 relays starting cold, 2.9 M route frames in the first 11 s became N; see
/// docs/mesh.md). Adds at most this much per hop to a route change's propagation.
pub const ROUTE_BATCH_US: u64 = 25 * MS;
/// Peer gossip interval.
pub const GOSSIP_EVERY_US: u64 = 30 * SEC;
/// First wait before redialling a lost link (doubling, ±25 % jitter).
pub const BACKOFF_MIN_US: u64 = SEC;
/// Longest wait before redialling.
pub const BACKOFF_MAX_US: u64 = 30 * SEC;
/// How often the neighbour policy runs.
pub const PLAN_EVERY_US: u64 = 250 * MS;
/// A relay that dialled us and went away is only redialled by us after this long.
pub const INBOUND_GRACE_US: u64 = 30 * SEC;
/// A learned (non-seed) peer not linked and not heard of for this long is dropped.
pub const PEER_TTL_US: u64 = 600 * SEC;

// ----- neighbour selection -----------------------------------------------------------

/// First wait before dialling again a relay that closed our link for its limit.
pub const FULL_BACKOFF_US: u64 = 300 * SEC;
/// Longest such wait.
pub const FULL_BACKOFF_MAX_US: u64 = 3600 * SEC;
/// An incoming link refused at its Hello is closed this long after (time for our
/// gossip to reach the newcomer: closing at once would discard it).
pub const REFUSE_AFTER_US: u64 = SEC;
/// Refused links waiting to be closed (beyond, closed at the next plan).
pub const MAX_REFUSING: usize = 128;

// ----- probing -----------------------------------------------------------------------

/// Probes remembered per link for loss and minimum RTT.
pub const PROBE_WINDOW: usize = 40;
/// Shortest probe interval accepted from the command line or the config file, ms.
pub const MIN_PROBE_INTERVAL_MS: u64 = 10;
/// Longest probe interval accepted, ms: a link is declared down after 1 s + RTT without
/// an answer, so a longer interval would make a healthy link flap down between two probes.
pub const MAX_PROBE_INTERVAL_MS: u64 = 1_000;
/// Why the probe interval is bounded, for error messages.
pub const PROBE_INTERVAL_WHY: &str = "a link with no probe answer for 1 s + RTT is declared down, so probes must go out at least once a second";

// ----- interest ----------------------------------------------------------------------

/// Most relays whose interest is tracked.
pub const INTEREST_ORIGINS: usize = 256;
/// Most (tenant, pattern) pairs per relay.
pub const INTEREST_ENTRIES: usize = 4096;
/// Most remote (tenant, pattern) pairs in all (the index's bound).
pub const INTEREST_TOTAL_ENTRIES: usize = 256 * 1024;
/// Most pairs held in partial snapshots (parts still arriving), all origins together.
pub const INTEREST_PARTIAL_ENTRIES: usize = INTEREST_TOTAL_ENTRIES;
/// A partial snapshot whose last part has not come within this is dropped.
pub const PARTIAL_TTL_US: u64 = 5 * SEC;
/// A snapshot request stays outstanding this long; no other for that origin before.
pub const REQUEST_TIMEOUT_US: u64 = 2 * SEC;
/// Least time between two snapshots of one origin answered on one link.
pub const ANSWER_EVERY_US: u64 = SEC;
/// A relay with no route for this long has its interest forgotten.
pub const UNROUTED_TTL_US: u64 = 60 * SEC;
/// Most keys a pacer (snapshot requests, answers) remembers.
pub const MAX_PACED: usize = 4096;
/// How often the interest table does its housekeeping.
pub const INTEREST_EXPIRE_EVERY_US: u64 = SEC;

// ----- duplicate suppression ---------------------------------------------------------

/// Message ids remembered below the highest one, per origin.
pub const DEDUP_WINDOW: u64 = 4096;
/// Origins tracked for duplicate suppression.
pub const DEDUP_ORIGINS: usize = 1024;

// ----- announcements -----------------------------------------------------------------

/// Regular announcement period.
pub const ANNOUNCE_INTERVAL_US: u64 = 10 * SEC;
/// Shortest gap between two announcements of one relay (triggered by a link change).
pub const ANNOUNCE_MIN_INTERVAL_US: u64 = SEC;
/// Shortest announce interval accepted from the command line or the config file, ms.
pub const MIN_ANNOUNCE_INTERVAL_MS: u64 = 100;
/// Longest announce interval accepted, ms (other relays show a relay as stale after 15 s
/// without an announcement).
pub const MAX_ANNOUNCE_INTERVAL_MS: u64 = 10_000;
/// Most origins whose latest announcement is kept (the dashboard's picture holds as many).
pub const ANNOUNCE_ORIGINS: usize = 256;
/// An origin silent for this many intervals is forgotten.
pub const ANNOUNCE_EXPIRE_INTERVALS: u32 = 12;
/// Announcements of one origin accepted back to back before the rate rule bites.
pub const ANNOUNCE_RATE_BURST: u64 = 3;

// ----- ticket status snapshots -------------------------------------------------------

/// Ticket snapshots sent at the same time.
pub const TICKET_SYNC_ACTIVE: usize = 4;
/// Links waiting for their ticket snapshot.
pub const TICKET_SYNC_WAITING: usize = MAX_LINKS;
/// Records in one ticket snapshot: twice the largest status table (a refresh and a
/// revocation per ticket id; checked against the tickets layer where they are wired).
pub const TICKET_SYNC_RECORDS: usize = 16 * 1024;
/// Pace: one part per link this often (32 records / 10 ms: the largest table, 16 384
/// records of ~110 bytes, goes in ~5 s at ~350 KB/s).
pub const TICKET_PART_EVERY_US: u64 = 10 * MS;
