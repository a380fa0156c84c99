//! Neighbour selection: which relays a relay keeps links to when it knows more than it
//! may link (`max`), as a sans-IO policy the relay runs every tick and the route
//! simulator runs in virtual time.
//!
//! - Full mesh while the known relays fit: every known relay is wanted.
//! - Beyond: the `near` lowest-latency peers (`max - long_range - explore slot`), ranked
//!   by *measured* RTT from the link probes (kept by the caller after a link closes),
//!   or, for a peer never measured, by an estimate (the route metric, or geography);
//!   plus `long_range` others picked by the caller's per-peer random number (stable, so
//!   they do not churn) to keep the graph connected and let routing find detours;
//!   plus one exploratory link that rotates every `explore_every_us` to a peer not
//!   measured yet (the most promising estimate first), held `explore_hold_us` so its
//!   probes measure it.
//! - Hysteresis: a linked peer's RTT counts `replace_pct` % and `replace_margin_us`
//!   better than it is, so a candidate replaces it only when clearly better.
//!   When the hold ends, the exploratory link is closed unless the measurement made the
//!   peer wanted (nearest); exploration stops once every known peer is measured.
//! - The cap holds for all links, incoming ones included: when links (up and being
//!   dialled) exceed `max`, or room is needed for a wanted dial, the unwanted links
//!   older than `grace_us` are closed, worst first. The grace lets a relay that joined
//!   through us learn the other relays (gossip) before we close it.
//!
//! Call [`NeighbourPolicy::plan`] with one [`Candidate`] per known relay (the caller's
//! order), get one [`Decision`] per candidate in `out`. Decisions are idempotent: the
//! caller dials a `Dial` it is not already dialling and closes each `Close`.

use core::fmt;

use super::types::RelayId;

/// Tunables of a [`NeighbourPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourConfig {
    /// Most links, incoming and outgoing together.
    pub max: usize,
    /// Links kept to random (non-nearest) peers, beyond a full mesh (at most a third of
    /// `max` and [`MAX_LONG_RANGE`]).
    pub long_range: usize,
    /// Whether one link slot rotates to measure peers not measured yet.
    pub explore: bool,
    /// A new exploratory link this often, µs.
    pub explore_every_us: u64,
    /// How long an exploratory link stays wanted (time for its probes), µs.
    pub explore_hold_us: u64,
    /// Hysteresis: a linked peer ranks as if its RTT were this many percent lower…
    pub replace_pct: u32,
    /// …and this many µs lower.
    pub replace_margin_us: u32,
    /// An unwanted link younger than this is not closed, µs.
    pub grace_us: u64,
}

impl NeighbourConfig {
    /// Defaults for a cap of `max` links: 2 long-range links (3 from 16 on), exploration
    /// every 60 s held 15 s, replace only when 10 % and 2 ms better, 20 s grace
    /// (longer than the hold, so another relay's exploratory link is gone before it
    /// would count against the cap).
    pub const fn with_max(max: usize) -> Self {
        Self {
            max,
            long_range: if max >= 16 { 3 } else { 2 },
            explore: true,
            explore_every_us: 60_000_000,
            explore_hold_us: 15_000_000,
            replace_pct: 10,
            replace_margin_us: 2_000,
            grace_us: 20_000_000,
        }
    }

    /// Slots for the nearest peers, long-range peers, and exploration (small caps keep
    /// most slots for the nearest).
    pub const fn slots(&self) -> (usize, usize, usize) {
        let explore = if self.explore && self.max >= 4 { 1 } else { 0 };
        let mut long = if self.long_range < self.max / 3 {
            self.long_range
        } else {
            self.max / 3
        };
        if long > MAX_LONG_RANGE {
            long = MAX_LONG_RANGE;
        }
        (self.max - long - explore, long, explore)
    }
}

/// The caller's view of one known relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The relay.
    pub id: RelayId,
    /// Link up since (µs, caller's clock), if up.
    pub up_since_us: Option<u64>,
    /// A dial to it is in progress.
    pub dialing: bool,
    /// Measured RTT, µs: of the current link, or the last one it had.
    pub rtt_us: Option<u32>,
    /// An estimate of the RTT for a peer never measured (route metric, geography), µs.
    pub estimate_us: Option<u32>,
    /// It could be dialled now (known address, not backing off, not refusing us).
    pub dialable: bool,
    /// The caller's random number for this peer, fixed for the peer's lifetime
    /// (long-range choice and ties).
    pub pick: u32,
}

impl Candidate {
    fn linked(&self) -> bool {
        self.up_since_us.is_some() || self.dialing
    }
}

/// What to do about one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Decision {
    /// Not wanted and not linked: nothing to do.
    #[default]
    Idle,
    /// Wanted (or tolerated under the cap) and linked or being dialled: keep it.
    Keep(Role),
    /// Wanted, not linked: dial it.
    Dial(Role),
    /// Linked but not wanted, and the cap needs the slot: close it.
    Close,
}

/// Why a peer is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Full mesh: every known relay fits.
    Full,
    /// Among the lowest-latency peers.
    Near,
    /// A random other peer.
    LongRange,
    /// Being measured.
    Explore,
    /// Not wanted, but kept while the cap has room (or within its grace time).
    Spare,
}

/// What [`NeighbourPolicy::plan`] decided, in numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanSummary {
    /// Peers wanted.
    pub wanted: usize,
    /// Dials to start.
    pub dial: usize,
    /// Links to close.
    pub close: usize,
    /// Links (up or dialling) before the plan.
    pub linked: usize,
    /// Whether the full-mesh rule applied.
    pub full_mesh: bool,
}

/// Why [`NeighbourPolicy::plan`] could not plan. The caller is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    /// `out` must have one slot per candidate.
    OutputLength {
        /// Candidates given.
        candidates: usize,
        /// Slots in `out`.
        out: usize,
    },
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutputLength { candidates, out } => write!(
                f,
                "neighbour plan: {candidates} candidates but {out} output slots (need one each)"
            ),
        }
    }
}

impl core::error::Error for PlanError {}

/// The neighbour selection policy of one relay (see the module docs).
#[derive(Debug, Clone)]
pub struct NeighbourPolicy {
    cfg: NeighbourConfig,
    explore: Option<(RelayId, u64)>,
    next_explore_us: u64,
    long: heapless::Vec<RelayId, MAX_LONG_RANGE>,
}

/// Most long-range links ([`NeighbourConfig::long_range`] is capped to it).
pub const MAX_LONG_RANGE: usize = 8;

const NONE: u64 = u64::MAX;

impl NeighbourPolicy {
    /// A policy with `cfg`; the first exploration is due at once.
    pub const fn new(cfg: NeighbourConfig) -> Self {
        Self {
            cfg,
            explore: None,
            next_explore_us: 0,
            long: heapless::Vec::new(),
        }
    }

    /// The configuration.
    pub const fn config(&self) -> &NeighbourConfig {
        &self.cfg
    }

    /// The peer being explored and since when (µs).
    pub const fn exploring(&self) -> Option<(RelayId, u64)> {
        self.explore
    }

    /// Rank of a candidate (lower is better): measured RTT (with the hysteresis bonus
    /// while linked), else the estimate, else unrankable.
    fn score(&self, c: &Candidate) -> u64 {
        match (c.rtt_us, c.estimate_us) {
            (Some(rtt), _) => {
                let rtt = u64::from(rtt);
                if c.linked() {
                    (rtt * u64::from(100u32.saturating_sub(self.cfg.replace_pct)) / 100)
                        .saturating_sub(u64::from(self.cfg.replace_margin_us))
                } else {
                    rtt
                }
            }
            (None, Some(e)) => u64::from(e),
            (None, None) => NONE - 1,
        }
    }

    /// Long range: the ones chosen before while they stay eligible (no churn), then new
    /// ones: linked ones first (no needless dial), by the caller's random pick.
    fn pick_long_range(&mut self, cands: &[Candidate], out: &mut [Decision], long: usize) {
        let eligible = |c: &Candidate| c.linked() || c.dialable;
        let mut kept: heapless::Vec<RelayId, MAX_LONG_RANGE> = heapless::Vec::new();
        for id in &self.long {
            if kept.len() >= long {
                break;
            }
            if let Some(i) = cands.iter().position(|c| c.id == *id)
                && out[i] == Decision::Idle
                && eligible(&cands[i])
            {
                out[i] = Decision::Keep(Role::LongRange);
                let _ = kept.push(*id);
            }
        }
        while kept.len() < long.min(MAX_LONG_RANGE) {
            let best = cands
                .iter()
                .enumerate()
                .filter(|(i, c)| out[*i] == Decision::Idle && eligible(c))
                .map(|(i, c)| (!c.linked(), c.pick, i))
                .min();
            let Some((_, _, i)) = best else { break };
            out[i] = Decision::Keep(Role::LongRange);
            let _ = kept.push(cands[i].id);
        }
        self.long = kept;
    }

    /// Decide, at `now_us`, about every candidate (`out[i]` for `cands[i]`).
    pub fn plan(
        &mut self,
        now_us: u64,
        cands: &[Candidate],
        out: &mut [Decision],
    ) -> Result<PlanSummary, PlanError> {
        if out.len() != cands.len() {
            return Err(PlanError::OutputLength {
                candidates: cands.len(),
                out: out.len(),
            });
        }
        let linked = cands.iter().filter(|c| c.linked()).count();
        let mut sum = PlanSummary {
            linked,
            ..PlanSummary::default()
        };
        // Can we have it: linked already, or dialable.
        let eligible = |c: &Candidate| c.linked() || c.dialable;
        if cands.len() <= self.cfg.max {
            sum.full_mesh = true;
            for (c, o) in cands.iter().zip(out.iter_mut()) {
                *o = if c.linked() {
                    Decision::Keep(Role::Full)
                } else if c.dialable {
                    sum.dial += 1;
                    Decision::Dial(Role::Full)
                } else {
                    Decision::Idle
                };
                sum.wanted += usize::from(c.linked() || c.dialable);
            }
            self.explore = None;
            return Ok(sum);
        }
        out.fill(Decision::Idle);
        let (near, long, explore_slots) = self.cfg.slots();

        // The nearest: repeated minimum (no allocation; n is at most a few hundred).
        for _ in 0..near {
            let best = cands
                .iter()
                .enumerate()
                .filter(|(i, c)| out[*i] == Decision::Idle && eligible(c))
                .map(|(i, c)| (self.score(c), c.pick, i))
                .filter(|(s, _, _)| *s < NONE - 1)
                .min();
            let Some((_, _, i)) = best else { break };
            out[i] = Decision::Keep(Role::Near);
        }
        // Exploration: hold the current one (before the long-range choice, so a link
        // being measured does not become long range), or start the next when due.
        let mut ended = None;
        if explore_slots == 0 {
            self.pick_long_range(cands, out, long);
        } else {
            if let Some((id, since)) = self.explore {
                let held = cands
                    .iter()
                    .position(|c| c.id == id)
                    .filter(|&i| eligible(&cands[i]) && now_us < since + self.cfg.explore_hold_us);
                match held {
                    Some(i) => {
                        if out[i] == Decision::Idle {
                            out[i] = Decision::Keep(Role::Explore);
                        }
                    }
                    None => {
                        self.explore = None;
                        self.next_explore_us = since + self.cfg.explore_every_us;
                        ended = Some(id);
                    }
                }
            }
            self.pick_long_range(cands, out, long);
            if self.explore.is_none() && now_us >= self.next_explore_us {
                let next = cands
                    .iter()
                    .enumerate()
                    .filter(|(i, c)| {
                        out[*i] == Decision::Idle && c.rtt_us.is_none() && c.dialable && !c.linked()
                    })
                    .map(|(i, c)| (c.estimate_us.unwrap_or(u32::MAX), c.pick, i))
                    .min();
                match next {
                    Some((_, _, i)) => {
                        out[i] = Decision::Keep(Role::Explore);
                        self.explore = Some((cands[i].id, now_us));
                    }
                    // Everyone is measured: look again later.
                    None => self.next_explore_us = now_us + self.cfg.explore_every_us,
                }
            }
        }

        // Wanted and not linked: dial. Only a nearest peer is worth closing a spare
        // link for; long-range and exploratory dials wait for free room.
        let mut want_near = 0;
        for (c, o) in cands.iter().zip(out.iter_mut()) {
            if let Decision::Keep(role) = *o {
                sum.wanted += 1;
                if !c.linked() {
                    *o = Decision::Dial(role);
                    want_near += usize::from(role == Role::Near);
                }
            }
        }
        // Unwanted links: spare while there is room, closed (worst first, after their
        // grace) when over the cap or a nearest peer needs the slot.
        for (c, o) in cands.iter().zip(out.iter_mut()) {
            if *o == Decision::Idle && c.linked() {
                *o = if Some(c.id) == ended && c.up_since_us.is_some() {
                    // Our own exploratory link, measured and not wanted: rotate it out.
                    sum.close += 1;
                    Decision::Close
                } else {
                    Decision::Keep(Role::Spare)
                };
            }
        }
        // Spare links within their grace do not count yet: most are other relays'
        // exploratory links, gone before the grace ends.
        let young_spares = cands
            .iter()
            .zip(out.iter())
            .filter(|(c, o)| {
                **o == Decision::Keep(Role::Spare)
                    && c.up_since_us.is_none_or(|s| now_us < s + self.cfg.grace_us)
            })
            .count();
        let counted = linked - young_spares;
        let need = (counted + want_near).saturating_sub(self.cfg.max);
        for _ in 0..need {
            let worst = cands
                .iter()
                .enumerate()
                .filter(|(i, c)| {
                    out[*i] == Decision::Keep(Role::Spare)
                        && c.up_since_us
                            .is_some_and(|s| now_us >= s + self.cfg.grace_us)
                })
                // Worst first; among equals the youngest (the newcomer, not an old
                // relationship: fewer knock-on closes).
                .map(|(i, c)| (self.score(c), c.up_since_us, u32::MAX - c.pick, i))
                .max();
            let Some((_, _, _, i)) = worst else { break };
            out[i] = Decision::Close;
            sum.close += 1;
        }
        // Dials only into the room there is, nearest first, then long range, then
        // exploration: walk the dials in key order, the first `room` are granted, the
        // rest wait.
        let room = self.cfg.max.saturating_sub(counted - sum.close);
        let key = |d: Decision, i: usize, c: &Candidate| {
            let rank = match d {
                Decision::Dial(Role::LongRange) => 1,
                Decision::Dial(Role::Explore) => 2,
                _ => 0,
            };
            (rank, self.score(c), i)
        };
        let mut last = None;
        for _ in 0..room {
            let next = cands
                .iter()
                .enumerate()
                .filter(|(i, _)| matches!(out[*i], Decision::Dial(_)))
                .map(|(i, c)| key(out[i], i, c))
                .filter(|k| last.is_none_or(|l| *k > l))
                .min();
            let Some(k) = next else { break };
            last = Some(k);
            sum.dial += 1;
        }
        for i in 0..cands.len() {
            if matches!(out[i], Decision::Dial(_))
                && last.is_none_or(|l| key(out[i], i, &cands[i]) > l)
            {
                out[i] = Decision::Idle;
            }
        }
        // An exploration that could not be dialled is retried when there is room.
        if let Some((id, _)) = self.explore
            && let Some(i) = cands.iter().position(|c| c.id == id)
            && out[i] == Decision::Idle
            && !cands[i].linked()
        {
            self.explore = None;
        }
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    fn cand(id: u16, rtt_ms: Option<u32>) -> Candidate {
        Candidate {
            id: RelayId(u64::from(id)),
            up_since_us: None,
            dialing: false,
            rtt_us: rtt_ms.map(|m| m * 1000),
            estimate_us: None,
            dialable: true,
            pick: u32::from(id).wrapping_mul(2_654_435_761),
        }
    }

    fn up(mut c: Candidate, since: u64) -> Candidate {
        c.up_since_us = Some(since);
        c
    }

    fn plan(p: &mut NeighbourPolicy, now: u64, c: &[Candidate]) -> ([Decision; 32], PlanSummary) {
        let mut out = [Decision::Idle; 32];
        let sum = p.plan(now, c, &mut out[..c.len()]);
        (out, sum.unwrap_or_default())
    }

    #[test]
    fn full_mesh_while_everyone_fits() {
        let mut p = NeighbourPolicy::new(NeighbourConfig::with_max(4));
        let c = [
            up(cand(1, Some(90)), 0),
            cand(2, None),
            cand(3, Some(5)),
            Candidate {
                dialable: false,
                ..cand(4, None)
            },
        ];
        let (out, sum) = plan(&mut p, 0, &c);
        assert_eq!(
            out[..4],
            [
                Decision::Keep(Role::Full),
                Decision::Dial(Role::Full),
                Decision::Dial(Role::Full),
                Decision::Idle
            ]
        );
        assert!(sum.full_mesh);
        assert_eq!((sum.dial, sum.close, sum.wanted), (2, 0, 3));
    }

    #[test]
    fn beyond_the_cap_nearest_plus_long_range_plus_one_explored() {
        // max 6: 3 near, 2 long range, 1 exploration.
        let cfg = NeighbourConfig::with_max(6);
        assert_eq!(cfg.slots(), (3, 2, 1));
        let mut p = NeighbourPolicy::new(cfg);
        let mut c: [Candidate; 12] =
            core::array::from_fn(|i| cand(i as u16, Some(10 * (12 - i as u32))));
        // Two peers never measured: one with a good estimate, one with none.
        c[0].rtt_us = None;
        c[0].estimate_us = Some(1_000);
        c[1].rtt_us = None;
        let (out, sum) = plan(&mut p, 0, &c);
        let near: usize = out
            .iter()
            .filter(|d| **d == Decision::Dial(Role::Near))
            .count();
        assert_eq!(near, 3);
        // The estimate counts for ranking until measured: peer 0 (1 ms estimate) is near,
        // then the two lowest measured RTTs (peers 11 and 10).
        assert_eq!(out[0], Decision::Dial(Role::Near));
        assert_eq!(out[11], Decision::Dial(Role::Near));
        assert_eq!(out[10], Decision::Dial(Role::Near));
        assert_eq!(
            out.iter()
                .filter(|d| **d == Decision::Dial(Role::LongRange))
                .count(),
            2
        );
        // Explored: the only unmeasured peer left.
        assert_eq!(out[1], Decision::Dial(Role::Explore));
        assert_eq!(p.exploring(), Some((RelayId(1), 0)));
        assert_eq!((sum.dial, sum.close, sum.wanted), (6, 0, 6));
    }

    #[test]
    fn hysteresis_replaces_a_neighbour_only_when_clearly_better() {
        let mut cfg = NeighbourConfig::with_max(4);
        cfg.explore = false;
        cfg.long_range = 1;
        let mut p = NeighbourPolicy::new(cfg);
        // Near slots: 3. Linked: 20, 30, 50 ms and a long-range one; candidate at 47 ms.
        let mut c = [
            up(cand(1, Some(20)), 0),
            up(cand(2, Some(30)), 0),
            up(cand(3, Some(50)), 0),
            up(cand(4, Some(300)), 0),
            cand(5, Some(47)),
        ];
        let (out, sum) = plan(&mut p, 60 * S, &c);
        assert_eq!(out[4], Decision::Idle, "47 vs 50 ms: not clearly better");
        assert_eq!((sum.dial, sum.close), (0, 0));
        // 40 ms is (10 % and 2 ms better than 50): replace, closing the one that lost its slot.
        c[4].rtt_us = Some(40_000);
        let (out, sum) = plan(&mut p, 60 * S, &c);
        assert_eq!(out[4], Decision::Dial(Role::Near));
        assert_eq!(out[2], Decision::Close);
        assert_eq!(out[3], Decision::Keep(Role::LongRange), "long range stays");
        assert_eq!((sum.dial, sum.close), (1, 1));
    }

    #[test]
    fn incoming_links_over_the_cap_are_closed_worst_first_after_the_grace() {
        let mut cfg = NeighbourConfig::with_max(4);
        cfg.explore = false;
        cfg.long_range = 1;
        let mut p = NeighbourPolicy::new(cfg);
        let c: [Candidate; 7] =
            core::array::from_fn(|i| up(cand(i as u16, Some(10 + 10 * i as u32)), 5 * S));
        let (out, sum) = plan(&mut p, 6 * S, &c);
        assert_eq!(sum.close, 0, "within the grace nothing is closed");
        assert!(out[..7].iter().all(|d| matches!(d, Decision::Keep(_))));
        let (out, sum) = plan(&mut p, 30 * S, &c);
        assert_eq!(sum.close, 3);
        // Near: 0, 1, 2; long range: the lowest pick among the rest; the others close.
        let kept: usize = out[..7]
            .iter()
            .filter(|d| matches!(d, Decision::Keep(_)))
            .count();
        assert_eq!(kept, 4);
        assert!(out[..3].iter().all(|d| *d == Decision::Keep(Role::Near)));
    }

    #[test]
    fn exploration_rotates() {
        let mut cfg = NeighbourConfig::with_max(4);
        cfg.long_range = 1;
        let mut p = NeighbourPolicy::new(cfg);
        let mut c: [Candidate; 8] = core::array::from_fn(|i| up(cand(i as u16, Some(10)), 0));
        for x in c.iter_mut().skip(2) {
            x.up_since_us = None;
            x.rtt_us = None;
        }
        c[4].estimate_us = Some(50_000); // worse than the linked ones: not near
        let (out, _) = plan(&mut p, 0, &c);
        assert_eq!(out[4], Decision::Dial(Role::Explore), "best estimate first");
        c[4].up_since_us = Some(0);
        c[4].rtt_us = Some(400_000); // measured: far away
        let (out, _) = plan(&mut p, 10 * S, &c);
        assert_eq!(out[4], Decision::Keep(Role::Explore), "held for its probes");
        let (out, _) = plan(&mut p, 16 * S, &c);
        assert_eq!(
            out[4],
            Decision::Close,
            "measured, not wanted: closed after the hold"
        );
        assert_eq!(p.exploring(), None);
        c[4].up_since_us = None;
        let (out, _) = plan(&mut p, 30 * S, &c);
        assert!(!out.contains(&Decision::Dial(Role::Explore)), "not due yet");
        let (out, _) = plan(&mut p, 61 * S, &c);
        assert_eq!(
            out.iter()
                .filter(|d| **d == Decision::Dial(Role::Explore))
                .count(),
            1,
            "next one after explore_every"
        );
        assert!(matches!(p.exploring(), Some((id, _)) if id != RelayId(4)));
    }

    #[test]
    fn dials_never_exceed_the_room_under_random_states() {
        let mut rng: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..2_000u64 {
            let max = 2 + (next() % 12) as usize;
            let mut p = NeighbourPolicy::new(NeighbourConfig::with_max(max));
            let n = 1 + (next() % 32) as usize;
            let c: [Candidate; 32] = core::array::from_fn(|i| Candidate {
                id: RelayId(i as u64),
                up_since_us: (next() % 3 == 0).then_some(next() % (30 * S)),
                dialing: next() % 9 == 0,
                rtt_us: (next() % 4 != 0).then(|| (next() % 300_000) as u32),
                estimate_us: (next() % 2 == 0).then(|| (next() % 300_000) as u32),
                dialable: next() % 5 != 0,
                pick: next() as u32,
            });
            let c = &c[..n];
            let (out, sum) = plan(&mut p, 30 * S, c);
            let linked = c.iter().filter(|x| x.linked()).count();
            let dials = out[..n]
                .iter()
                .filter(|d| matches!(d, Decision::Dial(_)))
                .count();
            let closes = out[..n].iter().filter(|d| **d == Decision::Close).count();
            assert_eq!((dials, closes), (sum.dial, sum.close), "round {round}");
            // Spare links within their grace are not counted against the cap (yet).
            let young = c
                .iter()
                .zip(&out[..n])
                .filter(|(x, d)| {
                    **d == Decision::Keep(Role::Spare)
                        && x.up_since_us
                            .is_none_or(|s| 30 * S < s + p.config().grace_us)
                })
                .count();
            let counted = linked - young;
            if !sum.full_mesh {
                assert!(
                    counted + dials - closes <= max || dials == 0,
                    "round {round}"
                );
                let wanted = out[..n]
                    .iter()
                    .filter(|d| {
                        matches!(d, Decision::Dial(_))
                            || matches!(d, Decision::Keep(r) if *r != Role::Spare)
                    })
                    .count();
                assert!(wanted <= max, "round {round}: {wanted} > {max}");
            }
            for (x, d) in c.iter().zip(&out[..n]) {
                match d {
                    Decision::Dial(_) => assert!(x.dialable && !x.linked()),
                    Decision::Close => assert!(x.up_since_us.is_some()),
                    Decision::Keep(_) => assert!(x.linked()),
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn output_must_match() {
        let mut p = NeighbourPolicy::new(NeighbourConfig::with_max(4));
        let c = [cand(1, None)];
        let mut out = [Decision::Idle; 2];
        assert_eq!(
            p.plan(0, &c, &mut out),
            Err(PlanError::OutputLength {
                candidates: 1,
                out: 2
            })
        );
    }
}
