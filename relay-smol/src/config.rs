//! Configuration of one relay process: where it listens, TLS, limits.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::limits::Limits;

/// PEM files for `wss://` and `https://`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Everything the edge needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the one HTTP/WebSocket port (use port 0 for an ephemeral port).
    pub listen: SocketAddr,
    /// Serve TLS on that port when set.
    pub tls: Option<TlsFiles>,
    /// Capacities and timeouts.
    pub limits: Limits,
}

impl Config {
    /// A plain-HTTP config with default limits.
    pub fn new(listen: SocketAddr) -> Self {
        Config {
            listen,
            tls: None,
            limits: Limits::default(),
        }
    }
}
