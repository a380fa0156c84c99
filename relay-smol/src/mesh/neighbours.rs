//! Which relays to keep links to: the relay's side of
//! [`fastpubsub_core::route::NeighbourPolicy`] (see there for the policy).
//!
//! The node describes every known relay as a [`PeerView`] each tick and calls
//! [`Neighbours::plan`]; it dials the names in [`Plan::dial`] and closes the links in
//! [`Plan::close`] with [`CLOSE_NEIGHBOUR_LIMIT`]. This module keeps what the policy
//! needs across links: the last measured RTT of each peer (so a closed link's
//! measurement still ranks it), a random number per peer (the long-range choice), and
//! the backoff for peers that closed our link because *they* were full (300 s, doubling
//! to an hour), so a relay does not keep knocking at a full one.
//!
//! Bounds: one entry per known relay in each map (the node keeps at most `MAX_PEERS`);
//! incoming links beyond [`Neighbours::hard_limit`] are refused at their Hello: closed
//! [`REFUSE_AFTER`] later, after our gossip told the newcomer about the other relays;
//! counted in `refused_full`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fastpubsub_core::mesh::GeoPos;
use fastpubsub_core::route::{
    Candidate, Decision, NeighbourConfig, NeighbourPolicy, RelayId, Role,
};
use quinn_proto::ConnectionHandle;
use serde::Serialize;

/// Application close code: the relay keeps better links (its neighbour limit).
pub const CLOSE_NEIGHBOUR_LIMIT: u32 = 4;
/// The close reason sent with [`CLOSE_NEIGHBOUR_LIMIT`] (the peer matches on it).
pub const CLOSE_REASON: &str = "neighbour limit reached, keeping better links";
/// First wait before dialling again a relay that closed our link for its limit.
pub const FULL_BACKOFF: Duration = Duration::from_secs(300);
/// Longest such wait.
pub const FULL_BACKOFF_MAX: Duration = Duration::from_secs(3600);
/// An incoming link refused at its Hello is closed this long after (time for our
/// gossip to reach the newcomer: closing at once would discard it).
pub const REFUSE_AFTER: Duration = Duration::from_secs(1);
/// Refused links waiting to be closed (beyond, closed at the next plan).
const MAX_REFUSING: usize = 128;

/// Counters (status page: `counters.neighbours`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NeighbourStats {
    /// Links we closed to stay within the limit (incoming ones included).
    pub closed_over_limit: u64,
    /// Exploratory links we closed after measuring them.
    pub closed_explored: u64,
    /// Incoming links refused at their Hello (closed a second later): far over the limit.
    pub refused_full: u64,
    /// Our links the peer closed for its own limit.
    pub closed_by_peer_full: u64,
    /// Dials started by the policy.
    pub dials: u64,
    /// Exploratory dials.
    pub explored: u64,
}

/// The node's view of one known relay.
#[derive(Debug, Clone)]
pub struct PeerView<'a> {
    /// Name.
    pub name: &'a str,
    /// Routing id.
    pub id: RelayId,
    /// Up link and since when.
    pub link: Option<(ConnectionHandle, Instant)>,
    /// A dial is in progress.
    pub dialing: bool,
    /// Smoothed RTT of the current link, µs.
    pub rtt_us: Option<u32>,
    /// Route metric to it (one-way cost), µs.
    pub route_metric_us: Option<u32>,
    /// Its position, if it told us.
    pub position: Option<GeoPos>,
    /// It has an address and its redial backoff is over.
    pub dialable: bool,
}

/// What to do now.
#[derive(Debug, Default)]
pub struct Plan {
    /// Relays to dial.
    pub dial: Vec<String>,
    /// Links to close (with [`CLOSE_NEIGHBOUR_LIMIT`]).
    pub close: Vec<(String, ConnectionHandle)>,
    /// Whether every known relay fits (full mesh).
    pub full_mesh: bool,
    /// Role of each relay linked or wanted (status page).
    pub roles: Vec<(String, &'static str)>,
}

struct Remembered {
    rtt_us: Option<u32>,
    pick: u32,
    full_count: u32,
    full_until: Option<Instant>,
}

/// The neighbour selection of one node.
pub struct Neighbours {
    policy: NeighbourPolicy,
    peers: HashMap<String, Remembered>,
    /// Counters.
    pub stats: NeighbourStats,
    /// Roles from the last plan (status page).
    pub roles: Vec<(String, &'static str)>,
    refusing: Vec<(ConnectionHandle, Instant)>,
    /// Links we closed that QUIC has not reported lost yet: not counted, not closed again.
    closing: Vec<ConnectionHandle>,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Full => "full-mesh",
        Role::Near => "nearest",
        Role::LongRange => "long-range",
        Role::Explore => "exploring",
        Role::Spare => "spare",
        _ => "other",
    }
}

/// Great-circle RTT estimate, µs: fibre at 200 km/ms, paths 1.5 × the great circle.
///
/// Uses [`sin`] and [`asin`] below instead of `f64::sin`/`asin`: those call libm, which
/// would add `libm.so.6` to the relay's shared libraries (the footprint budget allows
/// libc, the loader and libgcc_s only) for an estimate that needs three digits.
fn geo_rtt_us(a: GeoPos, b: GeoPos) -> u32 {
    let rad = |udeg: i32| f64::from(udeg) / 1e6 * std::f64::consts::PI / 180.0;
    let (la1, lo1, la2, lo2) = (
        rad(a.lat_udeg),
        rad(a.lon_udeg),
        rad(b.lat_udeg),
        rad(b.lon_udeg),
    );
    let h = sin((la2 - la1) / 2.0).powi(2) + cos(la1) * cos(la2) * sin((lo2 - lo1) / 2.0).powi(2);
    let km = 2.0 * 6371.0 * asin(h.max(0.0).sqrt().min(1.0));
    // RTT ms = 2 × 1.5 × km / 200.
    (km * 15.0) as u32
}

/// Sine without libm: reduced to [-π/2, π/2], then Taylor to x¹¹ (error < 1e-7 there).
fn sin(x: f64) -> f64 {
    use std::f64::consts::{FRAC_PI_2, PI, TAU};
    if !x.is_finite() {
        return 0.0;
    }
    let mut x = x % TAU;
    if x > PI {
        x -= TAU;
    } else if x < -PI {
        x += TAU;
    }
    if x > FRAC_PI_2 {
        x = PI - x;
    } else if x < -FRAC_PI_2 {
        x = -PI - x;
    }
    let x2 = x * x;
    x * (1.0
        - x2 / 6.0 * (1.0 - x2 / 20.0 * (1.0 - x2 / 42.0 * (1.0 - x2 / 72.0 * (1.0 - x2 / 110.0)))))
}

/// Cosine without libm.
fn cos(x: f64) -> f64 {
    sin(x + std::f64::consts::FRAC_PI_2)
}

/// Arcsine of `x` in [0, 1] without libm (Abramowitz & Stegun 4.4.46, error < 2e-8).
fn asin(x: f64) -> f64 {
    const A: [f64; 8] = [
        1.570_796_305_0,
        -0.214_598_801_6,
        0.088_978_987_4,
        -0.050_174_304_6,
        0.030_891_881_0,
        -0.017_088_125_6,
        0.006_670_090_1,
        -0.001_262_491_1,
    ];
    let x = x.clamp(0.0, 1.0);
    let poly = A.iter().rev().fold(0.0, |acc, a| acc * x + a);
    std::f64::consts::FRAC_PI_2 - (1.0 - x).sqrt() * poly
}

impl Neighbours {
    /// Selection with `cfg` (see [`NeighbourConfig::with_max`] for the defaults).
    pub fn new(cfg: NeighbourConfig) -> Self {
        Self {
            policy: NeighbourPolicy::new(cfg),
            peers: HashMap::new(),
            stats: NeighbourStats::default(),
            roles: Vec::new(),
            refusing: Vec::new(),
            closing: Vec::new(),
        }
    }

    /// An incoming link came in far over the limit ([`Self::hard_limit`]): close it
    /// [`REFUSE_AFTER`] from `now` (see [`Self::due_refusals`]).
    pub fn refuse_later(&mut self, conn: ConnectionHandle, now: Instant) {
        self.stats.refused_full += 1;
        let at = if self.refusing.len() >= MAX_REFUSING {
            now
        } else {
            now + REFUSE_AFTER
        };
        self.refusing.push((conn, at));
    }

    /// Refused links to close now.
    pub fn due_refusals(&mut self, now: Instant) -> Vec<ConnectionHandle> {
        let mut due = Vec::new();
        self.refusing.retain(|&(c, at)| {
            if at <= now {
                due.push(c);
                self.closing.push(c);
                false
            } else {
                true
            }
        });
        due
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.policy.config().max
    }

    /// Incoming links beyond this many are refused at once (the rest of the excess is
    /// closed by the policy after its grace): twice the limit, at least 8, at most what
    /// the routing table holds (but never below the limit).
    pub fn hard_limit(&self) -> usize {
        (2 * self.max())
            .clamp(8, super::node::ROUTE_NEIGHBOURS - 1)
            .max(self.max())
    }

    fn entry(&mut self, name: &str) -> &mut Remembered {
        self.peers
            .entry(name.to_owned())
            .or_insert_with(|| Remembered {
                rtt_us: None,
                pick: fastrand::u32(..),
                full_count: 0,
                full_until: None,
            })
    }

    /// A new RTT measurement of the link to `name`.
    pub fn measured(&mut self, name: &str, rtt_us: u32) {
        self.entry(name).rtt_us = Some(rtt_us);
    }

    /// The link `conn` to `name` was lost for `reason`: when the peer closed it for its
    /// limit, back off from it.
    pub fn link_lost(&mut self, name: &str, conn: ConnectionHandle, reason: &str, now: Instant) {
        self.closing.retain(|c| *c != conn);
        self.refusing.retain(|(c, _)| *c != conn);
        if !reason.contains(CLOSE_REASON) {
            return;
        }
        self.stats.closed_by_peer_full += 1;
        let e = self.entry(name);
        let wait = FULL_BACKOFF
            .saturating_mul(1 << e.full_count.min(4))
            .min(FULL_BACKOFF_MAX);
        e.full_count = e.full_count.saturating_add(1);
        e.full_until = Some(now + wait);
        log::info!("mesh: {name} is full; not dialling it for {wait:?}");
    }

    /// Decide what to dial and close. `me` is our own position (for estimates).
    pub fn plan(
        &mut self,
        now: Instant,
        now_us: u64,
        start: Instant,
        me: Option<GeoPos>,
        peers: &[PeerView<'_>],
    ) -> Plan {
        let mut cands = Vec::with_capacity(peers.len());
        for p in peers {
            if let Some(r) = p.rtt_us {
                self.measured(p.name, r);
            }
            let closing = p.link.is_some_and(|(c, _)| self.closing.contains(&c));
            let e = self.entry(p.name);
            let backing_off = e.full_until.is_some_and(|t| now < t);
            let estimate = p
                .route_metric_us
                .map(|m| m.saturating_mul(2))
                .or_else(|| me.zip(p.position).map(|(a, b)| geo_rtt_us(a, b)));
            cands.push(Candidate {
                up_since_us: p
                    .link
                    .filter(|_| !closing)
                    .map(|(_, since)| since.saturating_duration_since(start).as_micros() as u64),
                dialing: p.dialing,
                rtt_us: e.rtt_us,
                estimate_us: estimate,
                dialable: p.dialable && !backing_off && !closing,
                pick: e.pick,
                ..Candidate::new(p.id)
            });
        }
        let mut out = vec![Decision::Idle; cands.len()];
        let mut plan = Plan::default();
        let was_exploring = self.policy.exploring();
        let sum = match self.policy.plan(now_us, &cands, &mut out) {
            Ok(s) => s,
            Err(e) => {
                log::error!("mesh: {e}");
                return plan;
            }
        };
        plan.full_mesh = sum.full_mesh;
        for (p, d) in peers.iter().zip(&out) {
            match *d {
                Decision::Dial(role) => {
                    self.stats.dials += 1;
                    if role == Role::Explore {
                        self.stats.explored += 1;
                    }
                    plan.dial.push(p.name.to_owned());
                    plan.roles.push((p.name.to_owned(), role_name(role)));
                }
                Decision::Close => {
                    if let Some((c, _)) = p.link {
                        if was_exploring.is_some_and(|(id, _)| id == p.id) {
                            self.stats.closed_explored += 1;
                        } else {
                            self.stats.closed_over_limit += 1;
                        }
                        plan.close.push((p.name.to_owned(), c));
                        self.closing.push(c);
                    }
                }
                Decision::Keep(role) => plan.roles.push((p.name.to_owned(), role_name(role))),
                _ => {}
            }
        }
        self.roles.clone_from(&plan.roles);
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &'static str, i: u64) -> PeerView<'static> {
        PeerView {
            name,
            id: RelayId(i),
            link: None,
            dialing: false,
            rtt_us: None,
            route_metric_us: None,
            position: None,
            dialable: true,
        }
    }

    #[test]
    fn full_mesh_dials_everyone_and_backs_off_from_a_full_peer() {
        let t0 = crate::clock::now();
        let mut n = Neighbours::new(NeighbourConfig::with_max(4));
        let peers = [view("a", 1), view("b", 2)];
        let p = n.plan(t0, 0, t0, None, &peers);
        assert!(p.full_mesh);
        assert_eq!(p.dial, vec!["a".to_owned(), "b".to_owned()]);
        // "b" closed our link because it was full: not dialled for 300 s, then 600 s.
        n.link_lost(
            "b",
            ConnectionHandle(2),
            &format!("closed by peer: 4: {CLOSE_REASON}"),
            t0,
        );
        n.link_lost("a", ConnectionHandle(1), "timed out", t0);
        let p = n.plan(t0, 0, t0, None, &peers);
        assert_eq!(p.dial, vec!["a".to_owned()]);
        let p = n.plan(t0 + FULL_BACKOFF, 0, t0, None, &peers);
        assert_eq!(p.dial.len(), 2);
        n.link_lost("b", ConnectionHandle(2), CLOSE_REASON, t0);
        let p = n.plan(t0 + FULL_BACKOFF, 0, t0, None, &peers);
        assert_eq!(p.dial, vec!["a".to_owned()], "600 s the second time");
        assert_eq!(n.stats.closed_by_peer_full, 2);
    }

    #[test]
    fn beyond_the_limit_the_nearest_measured_win_and_the_rest_close() {
        let t0 = crate::clock::now();
        let mut n = Neighbours::new(NeighbourConfig::with_max(4)); // 1 nearest + 1 long range + 1 explore … see slots
        let (near, _, _) = NeighbourConfig::with_max(4).slots();
        let names = ["p0", "p1", "p2", "p3", "p4", "p5", "p6"];
        let peers: Vec<PeerView<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, name)| PeerView {
                link: Some((ConnectionHandle(i), t0)),
                rtt_us: Some(10_000 * (i as u32 + 1)),
                ..view(name, i as u64)
            })
            .collect();
        let later = t0 + Duration::from_secs(60);
        let p = n.plan(later, 60_000_000, t0, None, &peers);
        assert!(!p.full_mesh);
        assert_eq!(p.close.len(), 7 - 4, "{p:?}");
        let kept: Vec<&str> = p.roles.iter().map(|(n, _)| n.as_str()).collect();
        for name in &names[..near] {
            assert!(kept.contains(name), "{name} is among the nearest: {kept:?}");
        }
        assert!(
            p.close
                .iter()
                .all(|(n, _)| !names[..near].contains(&n.as_str()))
        );
        assert_eq!(n.stats.closed_over_limit, 3);
    }

    #[test]
    fn geography_estimates_rtt() {
        let tokyo = GeoPos {
            lat_udeg: 35_689_500,
            lon_udeg: 139_691_700,
        };
        let frankfurt = GeoPos {
            lat_udeg: 50_110_900,
            lon_udeg: 8_682_100,
        };
        let est = geo_rtt_us(tokyo, frankfurt);
        // ~9 300 km: ~140 ms; the data set measures 221.8 ms (paths are longer).
        assert!((120_000..160_000).contains(&est), "{est}");
        assert_eq!(geo_rtt_us(tokyo, tokyo), 0);
    }

    #[test]
    fn libm_free_trigonometry_matches_std() {
        let mut worst: f64 = 0.0;
        for i in -4000..=4000 {
            let x = f64::from(i) / 1000.0;
            worst = worst.max((sin(x) - x.sin()).abs());
            worst = worst.max((cos(x) - x.cos()).abs());
        }
        for i in 0..=1000 {
            let x = f64::from(i) / 1000.0;
            worst = worst.max((asin(x) - x.asin()).abs());
        }
        assert!(worst < 1e-6, "worst error {worst}");
    }
}
