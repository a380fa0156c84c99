//! Mesh configuration.

use std::net::SocketAddr;
use std::path::PathBuf;

use fastpubsub_core::mesh::GeoPos;
use fastpubsub_core::route::{NeighbourConfig, RouteConfig};

use super::announce::AnnounceConfig;
use super::probe::ProbeConfig;

/// A seed peer: a relay name and where to dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The relay's name (its certificate must name it).
    pub name: String,
    /// Its mesh address.
    pub addr: SocketAddr,
}

impl std::str::FromStr for Seed {
    type Err = String;

    /// `NAME@HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, addr) = s
            .split_once('@')
            .ok_or_else(|| format!("bad peer {s:?}: use NAME@HOST:PORT, e.g. fra@10.0.0.2:7000"))?;
        if !fastpubsub_core::mesh::valid_relay_name(name) {
            return Err(format!(
                "bad peer name {name:?}: 1-32 of a-z, 0-9 and '-', not starting or ending with '-'"
            ));
        }
        let addr = addr.parse().map_err(|e| {
            format!("bad peer address {addr:?} in {s:?}: {e} (use HOST:PORT with an IP)")
        })?;
        Ok(Seed {
            name: name.to_owned(),
            addr,
        })
    }
}

/// Where the relay's mesh identity lives.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    /// Relay certificate chain (PEM).
    pub cert: PathBuf,
    /// Relay private key (PEM).
    pub key: PathBuf,
    /// Mesh CA certificate (PEM).
    pub ca: PathBuf,
}

/// Everything the mesh node needs.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// This relay's name (must match its certificate).
    pub name: String,
    /// Region label.
    pub region: String,
    /// Position, if known.
    pub position: Option<GeoPos>,
    /// Public URL of this relay's WebSocket edge.
    pub edge_url: String,
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Address other relays should dial (default: the listen address).
    pub advertise: Option<SocketAddr>,
    /// Relays to dial at start.
    pub seeds: Vec<Seed>,
    /// Most links, incoming ones included (see `mesh::neighbours`): a full mesh while
    /// the known relays fit, else the nearest by measured RTT plus a few others.
    pub max_neighbours: usize,
    /// The neighbour policy's tunables; `None`: the defaults for `max_neighbours`
    /// (`NeighbourConfig::with_max`).
    pub neighbour_policy: Option<NeighbourConfig>,
    /// Dial relays learned by gossip (default). Off: only the seeds are dialled, a
    /// static topology (tests, benchmarks, demos).
    pub dial_learned: bool,
    /// Probing.
    pub probe: ProbeConfig,
    /// Routing.
    pub route: RouteConfig,
    /// How long a relay learned by gossip waits before it is dialled (so configured links
    /// come up first), µs.
    pub discover_delay_us: u64,
    /// Hop limit set on messages published here.
    pub hop_limit: u8,
    /// Timing of the mesh-wide relay announcements (see [`super::announce`]).
    pub announce: AnnounceConfig,
}

impl MeshConfig {
    /// Defaults for relay `name` listening on `listen`.
    pub fn new(name: &str, listen: SocketAddr) -> Self {
        Self {
            name: name.to_owned(),
            region: String::new(),
            position: None,
            edge_url: String::new(),
            listen,
            advertise: None,
            seeds: Vec::new(),
            max_neighbours: 16,
            neighbour_policy: None,
            dial_learned: true,
            probe: ProbeConfig::default(),
            route: RouteConfig::default(),
            discover_delay_us: 5 * super::time::SEC,
            hop_limit: 8,
            announce: AnnounceConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        let s: Seed = "fra@127.0.0.1:7000".parse().expect("valid");
        assert_eq!(s.name, "fra");
        assert_eq!(s.addr.port(), 7000);
        for bad in [
            "fra",
            "Fra@127.0.0.1:1",
            "fra@localhost:1",
            "fra@127.0.0.1",
            "@1.2.3.4:5",
        ] {
            assert!(bad.parse::<Seed>().is_err(), "{bad}");
        }
    }
}
