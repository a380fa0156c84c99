//! The seam between the local broker and the relay mesh.
//!
//! The broker calls a [`MeshHook`] (if one is installed with `Broker::set_mesh`) at two
//! points:
//!
//! 1. [`MeshHook::local_publish`]: a client of this relay published. The hook forwards the
//!    message to other relays as it sees fit and says whether this relay delivers it to its
//!    own subscribers ([`LocalPlan`]). Broadcast: always deliver here too. Low-latency: the
//!    local relay wins when it has a match. Random: the mesh picks one relay among those
//!    with interest, possibly this one.
//! 2. [`MeshHook::interest_changed`]: the first subscription for a `(tenant, pattern)`
//!    appeared on this relay, or the last one went away.
//!
//! The other direction is a plain method: a message that arrives from the mesh is handed to
//! `Broker::deliver_from_mesh`, which delivers it to local subscribers only (never offered
//! back to the mesh).
//!
//! Both hook methods run while the broker is borrowed: they must not call back into the
//! broker; queue the work instead (e.g. push to a channel drained by the mesh task).

use fastpubsub_core::frame::Mode;

/// What the broker does locally with a message published on this relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalPlan {
    /// Deliver to matching local subscribers (by the message's mode).
    DeliverHere,
    /// Do not deliver locally (the mesh sent it to another relay).
    NotHere,
}

/// Receives local publishes and interest changes for the mesh.
pub trait MeshHook {
    /// A client of this relay published. `has_local_match` tells whether this relay has a
    /// matching subscriber.
    fn local_publish(
        &self,
        tenant: &str,
        channel: &str,
        payload: &[u8],
        mode: Mode,
        has_local_match: bool,
    ) -> LocalPlan;

    /// `present == true`: the first subscription to `pattern` in `tenant` appeared on this
    /// relay; `false`: the last one went away.
    fn interest_changed(&self, tenant: &str, pattern: &str, present: bool);

    /// Is the mesh backed up — the relay hands it messages faster than it sends them (its
    /// queue from the edge is half full, or a next hop's link that is not slow is backed up)?
    /// While it is, the broker pauses intake as when its own queues are behind
    /// ([`ReadStop::RelayBehind`](super::ReadStop::RelayBehind)): the mesh's side of "loss
    /// only where someone is slow" (issue #11 item 2). A link that stays backed up is the
    /// mesh's slow consumer and must stop counting here (it drops for itself instead). Asked
    /// before every client read: keep it cheap (atomic loads).
    fn backed_up(&self) -> bool {
        false
    }
}
