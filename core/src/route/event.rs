//! Route events for the dashboard and the logs.

use core::fmt;

use super::types::{Metric, RelayId};

/// A change of the installed route to one destination, from
/// [`RouteTable::poll_event`](super::RouteTable::poll_event).
///
/// Only next-hop changes are events; a metric drift on the same next hop is visible
/// through [`RouteTable::routes`](super::RouteTable::routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteEvent {
    /// A destination became reachable.
    Installed {
        /// When (the `now` of the call that caused it), microseconds.
        at_us: u64,
        /// The destination.
        dest: RelayId,
        /// The neighbour traffic to `dest` now goes to.
        next_hop: RelayId,
        /// The route's metric.
        metric: Metric,
    },
    /// The next hop to a destination changed.
    Changed {
        /// When, microseconds.
        at_us: u64,
        /// The destination.
        dest: RelayId,
        /// The previous next hop.
        old_next_hop: RelayId,
        /// The previous route's metric when it was replaced.
        old_metric: Metric,
        /// The new next hop.
        new_next_hop: RelayId,
        /// The new route's metric.
        new_metric: Metric,
    },
    /// A destination became unreachable.
    Retracted {
        /// When, microseconds.
        at_us: u64,
        /// The destination.
        dest: RelayId,
        /// The next hop it had.
        old_next_hop: RelayId,
        /// The metric it had (last finite value known).
        old_metric: Metric,
    },
}

impl RouteEvent {
    /// The destination concerned.
    pub fn dest(&self) -> RelayId {
        match *self {
            RouteEvent::Installed { dest, .. }
            | RouteEvent::Changed { dest, .. }
            | RouteEvent::Retracted { dest, .. } => dest,
        }
    }

    /// When it happened, microseconds.
    pub fn at_us(&self) -> u64 {
        match *self {
            RouteEvent::Installed { at_us, .. }
            | RouteEvent::Changed { at_us, .. }
            | RouteEvent::Retracted { at_us, .. } => at_us,
        }
    }
}

impl fmt::Display for RouteEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RouteEvent::Installed {
                dest,
                next_hop,
                metric,
                ..
            } => write!(f, "route to {dest} installed via {next_hop} ({metric})"),
            RouteEvent::Changed {
                dest,
                old_next_hop,
                old_metric,
                new_next_hop,
                new_metric,
                ..
            } => write!(
                f,
                "route to {dest} changed from {old_next_hop} ({old_metric}) to {new_next_hop} ({new_metric})"
            ),
            RouteEvent::Retracted {
                dest,
                old_next_hop,
                old_metric,
                ..
            } => write!(
                f,
                "route to {dest} retracted (was via {old_next_hop}, {old_metric})"
            ),
        }
    }
}
