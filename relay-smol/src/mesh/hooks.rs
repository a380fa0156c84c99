//! What the node asks of the layers beside it, synchronously and without I/O: the tickets
//! layer ([`TicketHook`]: verify and apply flooded status records, hand out its own) and the
//! dashboard side ([`AnnounceHook`]: build this relay's announcement body, take in the
//! others'). Both are optional; the wiring (`crate::app`) installs them.

use super::status::MeshStatus;

/// What the tickets layer did with a status record from the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TicketApplied {
    /// New information: flood it on.
    New,
    /// Already known: stop here.
    Known,
    /// Bad signature or garbage: stop here and count.
    Bad,
}

/// The tickets layer's side of status-record flooding (refresh, revoke).
pub trait TicketHook: Send {
    /// Encoded records made on this relay since the last call (at most `max`).
    fn drain_outgoing(&mut self, max: usize) -> Vec<Vec<u8>>;
    /// Verify and apply a record received from the mesh.
    fn apply_remote(&mut self, record: &[u8]) -> TicketApplied;
    /// Encoded records still in force (at most `max`), for a neighbour whose link just
    /// came up (see [`super::ticket_sync`]). None by default.
    fn snapshot(&mut self, max: usize) -> Vec<Vec<u8>> {
        let _ = max;
        Vec::new()
    }
}

/// What the dashboard side made of a received announcement body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnnounceApplied {
    /// Taken into the picture.
    Applied,
    /// Not understood or refused (counted; the mesh still forwards it: the body is opaque to
    /// the mesh rules, which alone bound size and rate).
    Bad,
}

/// What the dashboard side does with announcements (see [`super::announce`]).
pub trait AnnounceHook: Send {
    /// This relay's announcement body now (at most `MAX_ANNOUNCE_BODY` bytes), built from
    /// the node's status; `seq` is the announcement's sequence number. `None` skips this
    /// round.
    fn local_body(&mut self, status: &MeshStatus, seq: u64) -> Option<Vec<u8>>;
    /// A new announcement of relay `origin`. `name_of` resolves the relay ids the node knows.
    fn apply_remote(
        &mut self,
        origin: &str,
        body: &[u8],
        name_of: &dyn Fn(fastpubsub_core::route::RelayId) -> Option<String>,
    ) -> AnnounceApplied;
}
