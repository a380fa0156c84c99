//! The compact wire form of a relay summary, for the mesh-wide announcements of issue 6
//! item 1: relays are named by their 64-bit mesh `RelayId` (8 bytes), times are integer microseconds,
//! loss is parts per million, and the whole thing is postcard, at most [`MAX_LEN`] bytes.
//!
//! The mesh layer (`crate::mesh::announce`) floods one [`Announcement`] per relay every
//! interval (10 s, and at most once a second on a link going up or down), newer `seq`
//! wins per origin, and hands each received one to the wiring's feed (`crate::app::hooks`),
//! which calls [`Announcement::to_summary`] and then `MeshState::update`.
//!
//! Rate bound: per link and direction, one announcement per origin per interval, so with
//! `R` relays a link carries at most `R × MAX_LEN / interval` bytes/s; the 100-relay test
//! below measures the real size.

use serde::{Deserialize, Serialize};

use super::view::{
    LinkSummary, MAX_NAME_LEN, MAX_RELAYS, MAX_URL_LEN, RelayCounters, RelaySummary, RouteSummary,
};
use fastpubsub_core::route::RelayId;

/// Largest encoded announcement: the mesh's bound on an announcement body (the worst case
/// below fits; see the test).
pub const MAX_LEN: usize = fastpubsub_core::mesh::MAX_ANNOUNCE_BODY;

/// Most links in one announcement: a relay has at most 32 (the route table's neighbours);
/// with 8-byte relay ids, 128 links and [`MAX_RELAYS`] routes would not fit [`MAX_LEN`].
pub const MAX_ANNOUNCED_LINKS: usize = 64;

/// One link, as announced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireLink {
    /// Peer relay id.
    pub peer: RelayId,
    /// Up?
    pub up: bool,
    /// Smoothed RTT, µs.
    pub rtt_us: u32,
    /// Window-minimum RTT, µs.
    pub rtt_min_us: u32,
    /// Jitter, µs.
    pub jitter_us: u32,
    /// Loss, parts per million.
    pub loss_ppm: u32,
}

/// One route, as announced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireRoute {
    /// Destination relay id.
    pub dst: RelayId,
    /// Next hop relay id.
    pub next_hop: RelayId,
    /// Route metric, µs.
    pub metric_us: u32,
}

/// A relay's announcement of itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// The announcing relay's id.
    pub origin: RelayId,
    /// Increases with every announcement of this origin (newer wins).
    pub seq: u32,
    /// Name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Position in micro-degrees.
    pub position: Option<(i32, i32)>,
    /// Public edge URL.
    pub url: String,
    /// Counters.
    pub counters: [u64; 6],
    /// Links.
    pub links: Vec<WireLink>,
    /// Routes.
    pub routes: Vec<WireRoute>,
}

/// Why an announcement cannot be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnnounceError {
    /// Received bytes are not a valid announcement (peer garbage).
    Malformed,
    /// The announcement names a relay id this relay does not know yet (try again later).
    UnknownRelay(RelayId),
    /// The summary breaks a limit (caller misuse: validate first).
    TooLarge,
}

impl std::fmt::Display for AnnounceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnnounceError::Malformed => write!(
                f,
                "relay announcement is malformed or longer than {MAX_LEN} bytes"
            ),
            AnnounceError::UnknownRelay(id) => {
                write!(f, "relay announcement names unknown relay id {id}")
            }
            AnnounceError::TooLarge => write!(f, "relay summary exceeds the announcement limits"),
        }
    }
}

impl std::error::Error for AnnounceError {}

fn us(ms: f64) -> u32 {
    (ms * 1000.0).round().clamp(0.0, f64::from(u32::MAX)) as u32
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

impl Announcement {
    /// Builds the announcement of `s`; `id_of` maps relay names to mesh ids. Links and routes
    /// to relays without an id are left out.
    pub fn from_summary(
        s: &RelaySummary,
        origin: RelayId,
        seq: u32,
        id_of: impl Fn(&str) -> Option<RelayId>,
    ) -> Self {
        let c = &s.counters;
        Announcement {
            origin,
            seq,
            name: s.name.clone(),
            region: s.region.clone(),
            position: s
                .lat
                .zip(s.lon)
                .map(|(lat, lon)| ((lat * 1e6).round() as i32, (lon * 1e6).round() as i32)),
            url: s.url.clone(),
            counters: [
                c.connections,
                c.subscriptions,
                c.messages_in,
                c.messages_out,
                c.drops,
                c.slow_consumer_disconnects,
            ],
            links: s
                .links
                .iter()
                .filter_map(|l| {
                    Some(WireLink {
                        peer: id_of(&l.peer)?,
                        up: l.up,
                        rtt_us: us(l.rtt_ms),
                        rtt_min_us: us(l.rtt_min_ms),
                        jitter_us: us(l.jitter_ms),
                        loss_ppm: (l.loss.clamp(0.0, 1.0) * 1e6).round() as u32,
                    })
                })
                .collect(),
            routes: s
                .routes
                .iter()
                .filter_map(|r| {
                    Some(WireRoute {
                        dst: id_of(&r.dst)?,
                        next_hop: id_of(&r.next_hop)?,
                        metric_us: us(r.metric_ms),
                    })
                })
                .collect(),
        }
    }

    /// Encodes into `buf` (at least [`MAX_LEN`] bytes); returns the used part.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], AnnounceError> {
        if self.links.len() > MAX_ANNOUNCED_LINKS
            || self.routes.len() > MAX_RELAYS
            || self.name.len() > MAX_NAME_LEN
            || self.region.len() > MAX_NAME_LEN
            || self.url.len() > MAX_URL_LEN
        {
            return Err(AnnounceError::TooLarge);
        }
        let cap = buf.len().min(MAX_LEN);
        let buf = buf.get_mut(..cap).ok_or(AnnounceError::TooLarge)?;
        postcard::to_slice(self, buf).map_err(|_| AnnounceError::TooLarge)
    }

    /// Decodes received bytes (at most [`MAX_LEN`]; trailing bytes are refused).
    pub fn decode(bytes: &[u8]) -> Result<Self, AnnounceError> {
        if bytes.len() > MAX_LEN {
            return Err(AnnounceError::Malformed);
        }
        match postcard::take_from_bytes::<Announcement>(bytes) {
            Ok((a, [])) => Ok(a),
            _ => Err(AnnounceError::Malformed),
        }
    }

    /// Back to a summary for `MeshState::update`; `name_of` maps mesh ids to names. The
    /// result still goes through `MeshState::update`'s validation.
    pub fn to_summary(
        &self,
        name_of: impl Fn(RelayId) -> Option<String>,
    ) -> Result<RelaySummary, AnnounceError> {
        let name = |id: RelayId| name_of(id).ok_or(AnnounceError::UnknownRelay(id));
        let [
            connections,
            subscriptions,
            messages_in,
            messages_out,
            drops,
            slow_consumer_disconnects,
        ] = self.counters;
        Ok(RelaySummary {
            name: self.name.clone(),
            region: self.region.clone(),
            lat: self.position.map(|p| f64::from(p.0) / 1e6),
            lon: self.position.map(|p| f64::from(p.1) / 1e6),
            url: self.url.clone(),
            counters: RelayCounters {
                connections,
                subscriptions,
                messages_in,
                messages_out,
                drops,
                slow_consumer_disconnects,
                intake_paused_ms: None,
            },
            links: self
                .links
                .iter()
                .map(|l| {
                    Ok(LinkSummary {
                        peer: name(l.peer)?,
                        up: l.up,
                        rtt_ms: ms(l.rtt_us),
                        rtt_min_ms: ms(l.rtt_min_us),
                        jitter_ms: ms(l.jitter_us),
                        loss: (f64::from(l.loss_ppm) / 1e6).min(1.0),
                    })
                })
                .collect::<Result<_, AnnounceError>>()?,
            routes: self
                .routes
                .iter()
                .map(|r| {
                    Ok(RouteSummary {
                        dst: name(r.dst)?,
                        next_hop: name(r.next_hop)?,
                        metric_ms: ms(r.metric_us),
                    })
                })
                .collect::<Result<_, AnnounceError>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name_of(id: RelayId) -> Option<String> {
        Some(format!("relay-{:03}", id.0))
    }

    fn id_of(name: &str) -> Option<RelayId> {
        name.strip_prefix("relay-")?.parse().ok().map(RelayId)
    }

    /// A relay of a 100-relay mesh with `links` neighbours and a route to every other relay.
    fn summary(me: u16, links: u16) -> RelaySummary {
        RelaySummary {
            name: name_of(RelayId(u64::from(me))).unwrap_or_default(),
            region: "Europe".into(),
            lat: Some(50.110924),
            lon: Some(8.682127),
            url: "wss://relay-042.fastpubsub.example.net/ws".into(),
            counters: RelayCounters {
                connections: 12_345,
                subscriptions: 67_890,
                messages_in: 1_234_567_890,
                messages_out: 9_876_543_210,
                drops: 42,
                slow_consumer_disconnects: 7,
                intake_paused_ms: None,
            },
            links: (0..links)
                .map(|i| LinkSummary {
                    peer: name_of(RelayId(u64::from((me + 1 + i) % 100))).unwrap_or_default(),
                    up: true,
                    rtt_ms: 123.456,
                    rtt_min_ms: 120.001,
                    jitter_ms: 2.5,
                    loss: 0.0125,
                })
                .collect(),
            routes: (0..100)
                .filter(|d| *d != me)
                .map(|d| RouteSummary {
                    dst: name_of(RelayId(u64::from(d))).unwrap_or_default(),
                    next_hop: name_of(RelayId(u64::from((d + 1) % 100))).unwrap_or_default(),
                    metric_ms: 87.654,
                })
                .collect(),
        }
    }

    #[test]
    fn roundtrip_keeps_the_summary() {
        let s = summary(42, 10);
        let a = Announcement::from_summary(&s, RelayId(42), 7, id_of);
        let mut buf = [0u8; MAX_LEN];
        let bytes = a.encode(&mut buf).map(|b| b.to_vec()).unwrap_or_default();
        let back = Announcement::decode(&bytes).and_then(|a| a.to_summary(name_of));
        let back = back.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.name, s.name);
        assert_eq!(back.counters, s.counters);
        assert_eq!(back.links.len(), 10);
        assert_eq!(back.routes, s.routes, "metrics survive at µs resolution");
        assert!((back.links[0].rtt_ms - 123.456).abs() < 1e-9);
        assert!((back.links[0].loss - 0.0125).abs() < 1e-9);
        assert!(back.lat.is_some_and(|l| (l - 50.110924).abs() < 1e-6));
        assert_eq!(back.validate(), Ok(()));
        // garbage and trailing bytes are refused; unknown ids are reported
        assert_eq!(
            Announcement::decode(&bytes[..bytes.len() / 2]),
            Err(AnnounceError::Malformed)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Announcement::decode(&longer), Err(AnnounceError::Malformed));
        assert_eq!(
            a.to_summary(|id| (id != RelayId(43)).then(|| format!("x{}", id.0)))
                .err(),
            Some(AnnounceError::UnknownRelay(RelayId(43)))
        );
    }

    /// Size and rate bounds with 100 relays: the issue's check for the announcements.
    #[test]
    fn hundred_relays_stay_within_size_and_rate_bounds() {
        let mut buf = [0u8; MAX_LEN];
        let mut sizes = Vec::new();
        for neighbours in [10u16, 63] {
            let a =
                Announcement::from_summary(&summary(42, neighbours), RelayId(42), u32::MAX, id_of);
            let n = a.encode(&mut buf).map(|b| b.len()).unwrap_or(usize::MAX);
            assert!(n <= MAX_LEN, "{n}");
            sizes.push(n);
        }
        // The mesh's regular announcement interval (crate::mesh::limits::ANNOUNCE_INTERVAL_US).
        const INTERVAL_S: f64 = 10.0;
        let per_link = |size: usize| 100.0 * size as f64 / INTERVAL_S;
        println!(
            "announcement: {} B with 10 links, {} B with 63 links; at 100 relays every {INTERVAL_S} s: {:.0} B/s and {:.0} B/s per link and direction",
            sizes[0],
            sizes[1],
            per_link(sizes[0]),
            per_link(sizes[1])
        );
        // 8-byte relay ids: 2,171 B and 3,178 B (1,500 and 3,000 with 16-bit ids).
        assert!(sizes[0] < 2_300 && sizes[1] < 3_300, "{sizes:?}");

        // Worst case the limits allow still fits MAX_LEN.
        let mut worst = summary(1, 0);
        worst.name = "n".repeat(MAX_NAME_LEN);
        worst.region = "r".repeat(MAX_NAME_LEN);
        worst.url = "u".repeat(MAX_URL_LEN);
        worst.counters = RelayCounters {
            connections: u64::MAX,
            subscriptions: u64::MAX,
            messages_in: u64::MAX,
            messages_out: u64::MAX,
            drops: u64::MAX,
            slow_consumer_disconnects: u64::MAX,
            intake_paused_ms: None,
        };
        let mut a = Announcement::from_summary(&worst, RelayId(u64::MAX), u32::MAX, id_of);
        a.position = Some((i32::MIN, i32::MIN));
        let link = WireLink {
            peer: RelayId(u64::MAX),
            up: true,
            rtt_us: u32::MAX,
            rtt_min_us: u32::MAX,
            jitter_us: u32::MAX,
            loss_ppm: u32::MAX,
        };
        a.links = vec![link; MAX_ANNOUNCED_LINKS];
        let route = WireRoute {
            dst: RelayId(u64::MAX),
            next_hop: RelayId(u64::MAX),
            metric_us: u32::MAX,
        };
        a.routes = vec![route; MAX_RELAYS];
        let n = a.encode(&mut buf).map(|b| b.len());
        assert!(n.is_ok(), "worst case does not fit {MAX_LEN}");
        println!("worst-case announcement: {n:?} B (MAX_LEN {MAX_LEN})");
        a.routes.push(WireRoute {
            dst: RelayId(0),
            next_hop: RelayId(0),
            metric_us: 0,
        });
        assert_eq!(a.encode(&mut buf).err(), Some(AnnounceError::TooLarge));
    }
}
