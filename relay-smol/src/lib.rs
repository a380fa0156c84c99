//! `fastpubsub-relay`: the relay library behind the `fastpubsub-relay` binary.
//!
//! - [`ws`]: the WebSocket/HTTP edge.
//! - [`broker`]: local fan-out with bounded per-subscriber queues.
//! - [`rest`]: REST endpoints.
//! - [`tickets`]: access-ticket issuing and checking.
//! - [`quic`], [`mesh`]: the relay mesh.
//! - [`cli`]: the command line.
//! - [`dashboard`], [`metrics`]: `/dashboard`, `/v1/mesh`, admin access, `/metrics`.

pub mod broker;
pub mod cli;
pub mod dashboard;
pub mod mesh;
pub mod metrics;
pub mod quic;
pub mod rest;
pub mod tickets;
pub mod ws;
