//! The application wiring: where the layers that do not know each other are put together
//! for `fastpubsub-relay run`. Nothing else depends on this module; it depends on them all.
//!
//! - [`mesh`]: the sans-IO mesh node on the QUIC driver, on its own thread, with bounded
//!   queues to the edge ([`mesh::attach`]);
//! - [`hooks`]: the seams between the mesh and the broker, the tickets layer and the
//!   dashboard;
//! - [`admin`]: the admin side (dashboard, `/v1/mesh`, `/v1/status`, `/metrics`) on the
//!   edge and its own listener ([`admin::install`]);
//! - [`status`]: the relay's typed status, from which `/v1/status`, the metrics and the
//!   dashboard summary are rendered;
//! - [`command`]: what the edge queues for the mesh thread;
//! - [`args`]: the mesh options of `run`, checked into a mesh configuration.

pub mod admin;
pub mod args;
pub mod command;
pub mod hooks;
pub mod mesh;
pub mod status;
