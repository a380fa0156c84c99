//! Errors of the routing table, split by blame.

use core::fmt;

use super::types::RelayId;

/// Why a `handle_*` call of [`RouteTable`](super::RouteTable) was refused.
///
/// Nothing is changed when an error is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteError {
    /// Capacity: the neighbour table is full; the link cannot be used for routing
    /// until another neighbour goes down. Counted in [`RouteStats::neighbour_table_full`](super::RouteStats).
    NeighbourTableFull(RelayId),
    /// Capacity: the destination table is full; the route to this relay is not
    /// learnt. Counted in [`RouteStats::dest_table_full`](super::RouteStats).
    DestTableFull(RelayId),
    /// Caller misuse: a message or link-down from a relay that is not a neighbour
    /// (no `handle_link_metric` for it yet, or it went down).
    UnknownNeighbour(RelayId),
    /// Caller misuse: this relay's own id used as a neighbour.
    SelfAsNeighbour,
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::NeighbourTableFull(id) => write!(
                f,
                "route table: no room for neighbour {id}; raise the neighbour capacity or lower max neighbours"
            ),
            RouteError::DestTableFull(id) => write!(
                f,
                "route table: no room for destination {id}; raise the destination capacity"
            ),
            RouteError::UnknownNeighbour(id) => write!(
                f,
                "route table: {id} is not a neighbour; report its link with handle_link_metric first"
            ),
            RouteError::SelfAsNeighbour => {
                f.write_str("route table: this relay's own id cannot be a neighbour")
            }
        }
    }
}

impl core::error::Error for RouteError {}
