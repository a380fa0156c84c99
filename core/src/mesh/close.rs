//! Application close codes of a mesh link (the QUIC `CONNECTION_CLOSE` a relay sends),
//! with the reason texts a peer matches on. Both the QUIC layer and the mesh node close
//! links, so the codes live here, next to the messages, and nowhere else.

/// Normal shutdown.
pub const NORMAL: u32 = 0;
/// The peer broke the mesh protocol (bad first message, wrong version, identity).
pub const PROTOCOL: u32 = 1;
/// The peer does not read its control stream (the backlog bound was hit).
pub const STUCK: u32 = 2;
/// A second link to a relay already linked.
pub const DUPLICATE: u32 = 3;
/// The relay keeps better links (its neighbour limit).
pub const NEIGHBOUR_LIMIT: u32 = 4;
/// The reason sent with [`NEIGHBOUR_LIMIT`]; a relay that reads it backs off from the peer.
pub const NEIGHBOUR_LIMIT_REASON: &str = "neighbour limit reached, keeping better links";
