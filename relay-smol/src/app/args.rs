//! Options of `fastpubsub-relay run` for the mesh ([`MeshArgs`]) and their check into a
//! [`MeshConfig`] and a [`MeshIdentity`].

use std::net::SocketAddr;
use std::path::PathBuf;

use fastpubsub_core::mesh::GeoPos;

use crate::mesh::announce::AnnounceConfig;
use crate::mesh::config::{MeshConfig, Seed};
use crate::mesh::limits::{
    MAX_ANNOUNCE_INTERVAL_MS, MAX_NEIGHBOURS_LIMIT, MAX_PROBE_INTERVAL_MS,
    MIN_ANNOUNCE_INTERVAL_MS, MIN_PROBE_INTERVAL_MS, PROBE_INTERVAL_WHY, ROUTE_NEIGHBOURS,
};
use crate::quic::tls::MeshIdentity;

/// Mesh options of `fastpubsub-relay run` (the run command copies its flags in here).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MeshArgs {
    /// UDP address for relay-to-relay QUIC (enables the mesh), e.g. 0.0.0.0:7000
    pub mesh_listen: Option<SocketAddr>,
    /// this relay's name (must match its mesh certificate)
    pub name: Option<String>,
    /// region label shown to other relays
    pub region: Option<String>,
    /// latitude in degrees
    pub lat: Option<f64>,
    /// longitude in degrees
    pub lon: Option<f64>,
    /// public URL of this relay's WebSocket edge
    pub edge_url: Option<String>,
    /// relay certificate chain (PEM), from `mesh-cert`
    pub mesh_cert: Option<PathBuf>,
    /// relay private key (PEM), from `mesh-cert`
    pub mesh_key: Option<PathBuf>,
    /// mesh CA certificate (PEM), from `mesh-ca`
    pub mesh_ca: Option<PathBuf>,
    /// a seed relay, NAME@HOST:PORT (repeatable)
    pub peer: Vec<Seed>,
    /// address other relays should dial (default: --mesh-listen)
    pub mesh_advertise: Option<SocketAddr>,
    /// most mesh links kept (default 16)
    pub max_neighbours: Option<usize>,
    /// milliseconds between link probes (default 250)
    pub probe_interval_ms: Option<u64>,
    /// milliseconds between this relay's announcements (default 10000)
    pub announce_interval_ms: Option<u64>,
}

impl MeshArgs {
    /// The mesh configuration and identity, or `None` when `--mesh-listen` is absent.
    pub fn build(&self) -> Result<Option<(MeshConfig, MeshIdentity)>, String> {
        let Some(listen) = self.mesh_listen else {
            return Ok(None);
        };
        let name = self
            .name
            .clone()
            .ok_or("--mesh-listen needs --name (the relay name in its mesh certificate)")?;
        let (Some(cert), Some(key), Some(ca)) = (&self.mesh_cert, &self.mesh_key, &self.mesh_ca)
        else {
            return Err("--mesh-listen needs --mesh-cert, --mesh-key and --mesh-ca \
                        (create them with `fastpubsub-relay mesh-ca` and `mesh-cert --name NAME`)"
                .into());
        };
        let identity = MeshIdentity::load(cert, key, ca).map_err(|e| e.to_string())?;
        let mut cfg = MeshConfig::new(&name, listen);
        cfg.region = self.region.clone().unwrap_or_default();
        cfg.edge_url = self.edge_url.clone().unwrap_or_default();
        cfg.seeds = self.peer.clone();
        cfg.advertise = self.mesh_advertise;
        if let Some(m) = self.max_neighbours {
            let top = MAX_NEIGHBOURS_LIMIT;
            if !(1..=top).contains(&m) {
                return Err(format!(
                    "--max-neighbours {m}: use 1..={top} (the route table has {} neighbour \
                     slots and keeps room for exploration and incoming links)",
                    ROUTE_NEIGHBOURS
                ));
            }
            cfg.max_neighbours = m;
        }
        if let Some(ms) = self.probe_interval_ms {
            if !(MIN_PROBE_INTERVAL_MS..=MAX_PROBE_INTERVAL_MS).contains(&ms) {
                return Err(format!(
                    "--probe-interval-ms {ms}: use {MIN_PROBE_INTERVAL_MS}..={MAX_PROBE_INTERVAL_MS} \
                     ({PROBE_INTERVAL_WHY})"
                ));
            }
            cfg.probe.interval_us = ms * 1000;
        }
        if let Some(ms) = self.announce_interval_ms {
            if !(MIN_ANNOUNCE_INTERVAL_MS..=MAX_ANNOUNCE_INTERVAL_MS).contains(&ms) {
                return Err(format!(
                    "--announce-interval-ms {ms}: use {MIN_ANNOUNCE_INTERVAL_MS}..={MAX_ANNOUNCE_INTERVAL_MS} \
                     (other relays show a relay as stale after 15 s without an announcement)"
                ));
            }
            cfg.announce = AnnounceConfig::with_interval_ms(ms);
        }
        cfg.position = match (self.lat, self.lon) {
            (Some(lat), Some(lon))
                if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
            {
                Some(GeoPos {
                    lat_udeg: (lat * 1e6) as i32,
                    lon_udeg: (lon * 1e6) as i32,
                })
            }
            (None, None) => None,
            _ => return Err("--lat and --lon go together (degrees, -90..90 and -180..180)".into()),
        };
        if self
            .edge_url
            .as_ref()
            .is_some_and(|u| u.len() > fastpubsub_core::mesh::MAX_URL)
        {
            return Err("--edge-url is too long (256 bytes at most)".into());
        }
        if cfg.region.len() > fastpubsub_core::mesh::MAX_REGION {
            return Err("--region is too long (32 bytes at most)".into());
        }
        Ok(Some((cfg, identity)))
    }
}
