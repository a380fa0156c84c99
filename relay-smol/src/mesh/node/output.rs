//! What the node hands its driver: [`MeshTransmit`]s (bytes for a link), [`MeshEvent`]s
//! (dial, close, deliver locally), and what the driver reports back when a link would not
//! take a transmit ([`Refused`]). Both queues are bounded ([`MAX_OUTPUTS`]); the driver
//! drains them after every input, so only one burst can come near the bound, and what does
//! not fit is dropped and counted.

use std::collections::VecDeque;
use std::net::SocketAddr;

use bytes::Bytes;
use fastpubsub_core::frame::Mode;

use crate::mesh::limits::MAX_OUTPUTS;
use crate::mesh::link::LinkId;

/// How a transmit travels on its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransmitKind {
    /// A frame on the link's control stream (reliable, in order).
    Control,
    /// A datagram (unreliable: probes).
    Datagram,
    /// A message on its own stream (reliable, not ordered with others: data).
    Message,
}

/// Bytes for one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshTransmit {
    /// The link.
    pub link: LinkId,
    /// How it travels.
    pub kind: TransmitKind,
    /// One encoded mesh message (`fastpubsub_core::mesh::encode`).
    pub bytes: Bytes,
}

/// Why a link did not take a transmit (the driver says; the node counts and reacts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refused {
    /// The link is gone (or going).
    NoLink,
    /// The link's queue is full.
    QueueFull,
    /// Larger than the link allows.
    TooLarge,
    /// The link does not carry this kind (datagrams before the handshake).
    Unsupported,
}

/// Something for the driver (or the layer above) to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MeshEvent {
    /// Open a link to relay `peer` at `addr`; report with `MeshNode::handle_dialled`.
    Dial {
        /// The relay's name (its certificate must name it).
        peer: String,
        /// Where.
        addr: SocketAddr,
    },
    /// Close `link` with application `code` and `reason`.
    Close {
        /// The link.
        link: LinkId,
        /// `fastpubsub_core::mesh::close` code.
        code: u32,
        /// Sent to the peer.
        reason: &'static str,
    },
    /// Deliver to this relay's own subscribers (the broker).
    Deliver {
        /// Tenant.
        tenant: String,
        /// Channel.
        channel: String,
        /// Payload.
        payload: Bytes,
        /// Delivery mode.
        mode: Mode,
    },
}

/// The two bounded output queues.
#[derive(Debug, Default)]
pub(super) struct Outputs {
    pub(super) transmits: VecDeque<MeshTransmit>,
    pub(super) events: VecDeque<MeshEvent>,
    /// Outputs dropped because a queue was full.
    pub(super) dropped: u64,
}

impl Outputs {
    pub(super) fn transmit(&mut self, link: LinkId, kind: TransmitKind, bytes: Bytes) -> bool {
        if self.transmits.len() >= MAX_OUTPUTS {
            self.dropped += 1;
            return false;
        }
        self.transmits.push_back(MeshTransmit { link, kind, bytes });
        true
    }

    pub(super) fn event(&mut self, e: MeshEvent) {
        if self.events.len() >= MAX_OUTPUTS {
            self.dropped += 1;
            return;
        }
        self.events.push_back(e);
    }
}
