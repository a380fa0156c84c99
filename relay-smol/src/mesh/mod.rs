//! The relay mesh as sans-IO state machines: links, probing, routing, interest, forwarding,
//! ticket status and announcements. Nothing here reads a clock, draws entropy of its own or
//! touches a socket; `crate::app::mesh` drives it on QUIC, [`sim`] in virtual time.
//!
//! - [`node`]: [`node::MeshNode`], one relay's node, built from the parts below.
//! - [`probe`]: link measurement from probe datagrams (RTT, jitter, loss, up/down).
//! - [`neighbours`]: which relays to keep links to (the limit, nearest by RTT).
//! - [`interest`]: which relays want which (tenant, pattern).
//! - [`forward`]: where a publish goes and how copies split by next hop (pure functions).
//! - [`dedup`]: per-origin duplicate suppression.
//! - [`ticket_sync`]: ticket status snapshot sent to a neighbour on link-up.
//! - [`announce`]: flooding of the mesh-wide relay announcements (dashboard picture).
//! - [`hooks`]: what the node asks of the tickets layer and the dashboard side.
//! - [`status`]: the node's status as typed data.
//! - [`config`], [`limits`], [`time`], [`link`]: what a relay is told, every capacity and
//!   timer, the one representation of time (µs), and how links are named.
//!
//! Every sub-machine has the shape of `core::route::RouteTable`: `handle_*(…, now)` in,
//! `poll_*` out, `poll_timeout()` for the next call, bounded work per call.

pub mod announce;
pub mod config;
pub mod dedup;
pub mod forward;
pub mod hooks;
pub mod interest;
pub mod limits;
pub mod link;
pub mod neighbours;
pub mod node;
pub mod probe;
pub mod status;
pub mod ticket_sync;
pub mod time;
