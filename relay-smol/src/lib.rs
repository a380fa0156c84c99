//! `fastpubsub-relay`: the relay library behind the `fastpubsub-relay` binary.
//!
//! - [`ws`]: the WebSocket/HTTP edge (listener, handshake, connection tasks).
//! - [`wsframe`]: the WebSocket frame codec (a leaf: `ws` and `broker` both use it).
//! - [`broker`]: local fan-out with bounded per-subscriber queues; the mesh seam.
//! - [`rest`]: REST endpoints (`/ping`, `/stats`, pluggable handlers).
//! - [`auth`]: the authorization seam every handshake goes through.
//! - [`tickets`]: access-ticket issuing and checking.
//! - [`quic`], [`mesh`]: the relay mesh.
//! - [`cli`]: the command line (`run`, `pub`, `sub`).
//! - [`clock`], [`limits`], [`config`], [`tls`]: time, capacities, configuration, TLS.
//! - [`dashboard`], [`metrics`]: `/dashboard`, `/v1/mesh`, admin access, `/metrics`.
//! - [`app`]: the wiring of all of the above for `run`.
//! - [`sim`]: the mesh in virtual time (N real mesh nodes over modelled links), for tests
//!   and the `mesh_sim` example.

pub mod app;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod config_file;
pub mod dashboard;
pub mod limits;
pub mod mesh;
pub mod metrics;
pub mod quic;
pub mod rest;
pub mod sim;
pub mod tickets;
pub mod tls;
pub mod ws;
pub mod wsframe;
pub mod wt;
