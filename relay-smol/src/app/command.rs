//! What the edge asks of the mesh thread: the items of the bounded queue between them (a
//! leaf, so the edge's hooks and the mesh task both use it without depending on each other).

use std::sync::Arc;

use bytes::Bytes;
use fastpubsub_core::frame::Mode;
use smol::channel::Sender;

use super::status::RelayStatus;

/// Commands queued from the edge to the mesh thread; more are dropped and counted.
pub const COMMAND_QUEUE: usize = 16_384;

/// Work for the mesh thread from other tasks.
#[derive(Debug)]
#[non_exhaustive]
pub enum MeshCommand {
    /// A client of this relay published.
    Publish {
        /// Tenant.
        tenant: String,
        /// Channel (concrete).
        channel: String,
        /// Payload.
        payload: Bytes,
        /// Delivery mode.
        mode: Mode,
        /// Whether this relay has a matching subscriber (and, for the deliver-one modes,
        /// is a candidate: broadcast always delivers here separately).
        local_match: bool,
    },
    /// This relay gained its first / lost its last subscriber for (tenant, pattern).
    Interest {
        /// Tenant.
        tenant: String,
        /// Pattern.
        pattern: String,
        /// Gained (true) or lost (false).
        present: bool,
    },
    /// Reply with the status.
    Status(Sender<Arc<RelayStatus>>),
}
