//! Who a relay is ([`Hello`]) and which relays it knows ([`Peers`]).

use serde::{Deserialize, Serialize};

use super::{
    MAX_ADDR, MAX_NAME, TAG_LEN, U16_LEN, U32_LEN, bytes_len, check_len, check_name, varint_len,
};

/// Longest region label, in bytes.
pub const MAX_REGION: usize = 32;
/// Longest edge URL, in bytes.
pub const MAX_URL: usize = 256;
/// Most relays listed in one [`Peers`] message.
pub const MAX_GOSSIP: usize = 16;

/// A position in micro-degrees (latitude −90..=90, longitude −180..=180).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoPos {
    /// Latitude × 10⁶.
    pub lat_udeg: i32,
    /// Longitude × 10⁶.
    pub lon_udeg: i32,
}

impl GeoPos {
    /// Largest encoding.
    pub const MAX_LEN: usize = 2 * U32_LEN;

    fn validate(&self) -> Result<(), &'static str> {
        if self.lat_udeg.unsigned_abs() > 90_000_000 || self.lon_udeg.unsigned_abs() > 180_000_000 {
            return Err("position out of range");
        }
        Ok(())
    }
}

/// The first control frame on a link, sent by both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello<'a> {
    /// The sender's [`super::PROTOCOL_VERSION`].
    pub version: u16,
    /// The sender's relay name (must match its certificate).
    pub name: &'a str,
    /// A free-form region label, e.g. `asia`.
    pub region: &'a str,
    /// Where the relay is, if configured.
    pub position: Option<GeoPos>,
    /// Public URL of the sender's WebSocket edge (may be empty).
    pub edge_url: &'a str,
    /// The mesh address (`host:port`) other relays can dial (may be empty).
    pub mesh_addr: &'a str,
}

impl Hello<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN
        + U16_LEN
        + bytes_len(MAX_NAME)
        + bytes_len(MAX_REGION)
        + 1
        + GeoPos::MAX_LEN
        + bytes_len(MAX_URL)
        + bytes_len(MAX_ADDR);

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        check_name(self.name, "hello: bad relay name")?;
        check_len(self.region, MAX_REGION, "hello: region too long")?;
        check_len(self.edge_url, MAX_URL, "hello: edge URL too long")?;
        check_len(self.mesh_addr, MAX_ADDR, "hello: mesh address too long")?;
        if let Some(p) = &self.position {
            p.validate()?;
        }
        Ok(())
    }
}

/// One relay known to the sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo<'a> {
    /// The relay's name.
    pub name: &'a str,
    /// Its mesh address (`host:port`).
    pub addr: &'a str,
    /// Its region label.
    pub region: &'a str,
}

impl PeerInfo<'_> {
    const MAX_LEN: usize = bytes_len(MAX_NAME) + bytes_len(MAX_ADDR) + bytes_len(MAX_REGION);
}

/// Relays the sender knows and can vouch for (bounded gossip).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peers<'a> {
    /// Up to [`MAX_GOSSIP`] relays.
    #[serde(borrow)]
    pub peers: heapless::Vec<PeerInfo<'a>, MAX_GOSSIP>,
}

impl Peers<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN + varint_len(MAX_GOSSIP) + MAX_GOSSIP * PeerInfo::MAX_LEN;

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        for p in &self.peers {
            check_name(p.name, "peers: bad relay name")?;
            check_len(p.addr, MAX_ADDR, "peers: address too long")?;
            check_len(p.region, MAX_REGION, "peers: region too long")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{roundtrip, s};
    use super::super::{DecodeError, Message, decode, encode};
    use super::*;

    #[test]
    fn hello_worst_case() {
        let m = Message::Hello(Hello {
            version: u16::MAX,
            name: s(MAX_NAME, b'a'),
            region: s(MAX_REGION, b'z'),
            position: Some(GeoPos {
                lat_udeg: -90_000_000,
                lon_udeg: -180_000_000,
            }),
            edge_url: s(MAX_URL, b'z'),
            mesh_addr: s(MAX_ADDR, b'z'),
        });
        let n = roundtrip(&m);
        assert!(
            n + 8 >= Hello::MAX_LEN,
            "bound too loose: {n} vs {}",
            Hello::MAX_LEN
        );
    }

    #[test]
    fn peers_worst_case() {
        let mut peers = heapless::Vec::new();
        for _ in 0..MAX_GOSSIP {
            let _ = peers.push(PeerInfo {
                name: s(MAX_NAME, b'a'),
                addr: s(MAX_ADDR, b'z'),
                region: s(MAX_REGION, b'z'),
            });
        }
        let n = roundtrip(&Message::Peers(Peers { peers }));
        assert_eq!(n, Peers::MAX_LEN);
    }

    #[test]
    fn hello_rules() {
        let good = Hello {
            version: 1,
            name: "tokyo",
            region: "asia",
            position: None,
            edge_url: "",
            mesh_addr: "",
        };
        roundtrip(&Message::Hello(good.clone()));
        let mut buf = [0u8; 1024];
        for bad in [
            Hello {
                name: "Tokyo",
                ..good.clone()
            },
            Hello {
                region: s(MAX_REGION + 1, b'a'),
                ..good.clone()
            },
            Hello {
                position: Some(GeoPos {
                    lat_udeg: 91_000_000,
                    lon_udeg: 0,
                }),
                ..good.clone()
            },
        ] {
            let msg = Message::Hello(bad);
            assert!(encode(&msg, &mut buf).is_err());
            // Forge the bytes with postcard directly: decode must refuse them too.
            let n = postcard::to_slice(&msg, &mut buf)
                .map(|b| b.len())
                .unwrap_or(0);
            assert!(matches!(decode(&buf[..n]), Err(DecodeError::Invalid(_))));
        }
    }

    #[test]
    fn too_many_peers_is_malformed() {
        // A list one longer than the bound, forged by hand: length varint then entries.
        let mut buf = [0u8; 4096];
        buf[0] = 1; // Message::Peers tag
        buf[1] = (MAX_GOSSIP + 1) as u8;
        let mut pos = 2;
        for _ in 0..=MAX_GOSSIP {
            for part in [&b"a"[..], b"1:1", b"r"] {
                buf[pos] = part.len() as u8;
                buf[pos + 1..pos + 1 + part.len()].copy_from_slice(part);
                pos += 1 + part.len();
            }
        }
        assert_eq!(decode(&buf[..pos]), Err(DecodeError::Malformed));
    }
}
