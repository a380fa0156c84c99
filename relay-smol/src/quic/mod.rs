//! QUIC driver: quinn-proto on an async-io UDP socket, with mutual TLS under the mesh CA.
//!
//! - [`certs`]: `mesh-ca` / `mesh-cert` (the mesh's identity material).
//! - [`tls`]: rustls + quinn-proto configurations for mesh links.
//! - [`driver`]: the one task that owns the QUIC endpoint and its connections.

pub mod certs;
pub mod driver;
pub mod tls;
