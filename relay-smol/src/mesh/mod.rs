//! Relay mesh: links, probing, routing, interest, forwarding.
//!
//! - [`config`]: what a relay is told (name, region, seeds, limits).
//! - [`probe`]: link measurement from probe datagrams (RTT, jitter, loss, up/down).
//! - [`interest`]: which relays want which (tenant, pattern).
//! - [`dedup`]: per-origin duplicate suppression.
//! - [`neighbours`]: which relays to keep links to (the limit, nearest by RTT).
//! - [`ticket_sync`]: ticket status snapshot sent to a neighbour on link-up.
//! - [`announce`]: flooding of the mesh-wide relay announcements (dashboard picture).
//! - [`node`]: the mesh node driving all of the above on the QUIC driver.

pub mod announce;
pub mod config;
pub mod dedup;
pub mod edge;
pub mod interest;
pub mod neighbours;
pub mod node;
pub mod probe;
pub mod ticket_sync;

use crate::quic::driver::Driver;
use crate::quic::tls::{self, MeshIdentity};

/// Why the mesh could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// TLS configuration.
    Tls(tls::TlsConfigError),
    /// Binding the UDP socket.
    Bind(std::net::SocketAddr, std::io::Error),
    /// The node configuration.
    Node(node::NodeError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tls(e) => write!(f, "mesh TLS: {e}"),
            Self::Bind(a, e) => write!(f, "mesh: cannot bind UDP {a}: {e}"),
            Self::Node(e) => write!(f, "mesh: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Bind the mesh socket and build the node; run both with
/// `crate::quic::driver::run(driver, &mut node, commands)`.
pub fn start(
    mut cfg: config::MeshConfig,
    identity: &MeshIdentity,
    sink: Box<dyn node::LocalSink>,
) -> Result<(Driver, node::MeshNode), StartError> {
    let server = tls::server_config(identity).map_err(StartError::Tls)?;
    let client = tls::client_config(identity).map_err(StartError::Tls)?;
    let driver =
        Driver::bind(cfg.listen, server, client).map_err(|e| StartError::Bind(cfg.listen, e))?;
    cfg.listen = driver.local_addr();
    let node = node::MeshNode::new(cfg, sink, crate::clock::now()).map_err(StartError::Node)?;
    Ok((driver, node))
}
