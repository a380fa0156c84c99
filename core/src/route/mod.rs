//! Latency distance-vector routing as a sans-IO state machine.
//!
//! [`RouteTable`] is a Babel-like (RFC 8966) distance-vector table keyed by small
//! relay ids ([`RelayId`]), with a latency metric derived from link measurements
//! ([`LinkMeasurement::cost`]): one-way delay (RTT/2) raised by jitter and loss, plus
//! a fixed per-hop cost; additive along the path; [`Metric::INFINITY`] retracts.
//!
//! - Loop freedom: Babel's feasibility condition. For every destination the table
//!   keeps a feasibility distance (seqno, metric), the best it ever advertised for
//!   the current seqno; a route is selectable only if its (seqno, advertised
//!   metric) is strictly better. When a better route is stuck unfeasible, a
//!   [`SeqnoRequest`] goes toward the destination, which raises its seqno.
//! - Hysteresis: selection compares smoothed metrics; it switches at once when the
//!   candidate is better by `max(1 ms, 5 %)`, and after a settle time (5 s) when it
//!   stays better by `max(0.1 ms, 0.3 %)` plus an allowance for the routes' measured
//!   noise, so noise does not flap routes and lasting small gains are still taken.
//! - Triggered updates on significant change, periodic full updates, retractions
//!   when a link dies, expiry of routes a neighbour stops refreshing.
//!
//! [`neighbours`] decides which relays to keep links to when there are more than a
//! relay may link ([`NeighbourPolicy`]).
//!
//! See `docs/routing.md` for the reasoning and the measured results.

mod config;
mod error;
mod event;
mod metric;
pub mod neighbours;
#[cfg(feature = "alloc")]
mod table;
mod types;
mod wire;

pub use config::{ConfigError, MAX_TABLE_DESTINATIONS, MAX_TABLE_NEIGHBOURS, RouteConfig};
pub use error::RouteError;
pub use event::RouteEvent;
pub use metric::LinkMeasurement;
pub use neighbours::{
    Candidate, Decision, NeighbourConfig, NeighbourPolicy, PeerIntent, PlanError, PlanSummary, Role,
};
#[cfg(feature = "alloc")]
pub use table::{NeighbourInfo, RouteInfo, RouteStats, RouteTable};
pub use types::{Metric, RelayId, Seqno};
pub use wire::{Digest, Message, Recipient, SeqnoRequest, Transmit, Update};
