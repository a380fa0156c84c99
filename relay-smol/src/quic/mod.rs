//! QUIC for the mesh (and the layers other QUIC users share), with mutual TLS under the mesh
//! CA. Socket-free layers, then one thin socket loop:
//!
//! - [`admission`]: who gets a handshake (Retry, handshake budgets, per-source limits,
//!   reserved outgoing slots) — the hardening of a port open to the Internet;
//! - [`endpoint`]: a quinn-proto endpoint and its connections, sans-IO, guarded by
//!   [`admission`]; shared by every QUIC user;
//! - [`framing`]: control frames and message batches inside mesh streams (pure);
//! - [`transport`]: the mesh's links over [`endpoint`]: control stream, message streams,
//!   probe datagrams, counters by message kind;
//! - [`driver`]: the socket loop over `async_io` (UDP socket + one timer) that runs any
//!   sans-IO [`driver::Machine`], and the mesh's [`driver::Handler`] glue;
//! - [`certs`], [`tls`]: the mesh's identity material and TLS configurations;
//! - [`ratelog`]: one warning per interval for floods of failures.

pub mod admission;
pub mod certs;
pub mod driver;
pub mod endpoint;
pub mod framing;
pub mod ratelog;
pub mod tls;
pub mod transport;

#[cfg(test)]
pub mod harness;
#[cfg(test)]
mod tests;
