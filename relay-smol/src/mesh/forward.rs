//! Forwarding decisions as pure functions: which relays a publish goes to ([`choose`]) and
//! how copies are split by next hop ([`plan`]). The node feeds them its interest and route
//! tables; they touch nothing else, so they are tested here with plain values.

use fastpubsub_core::frame::Mode;
use fastpubsub_core::mesh::MAX_DESTINATIONS;
use fastpubsub_core::route::RelayId;

/// Where a publish made on this relay goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Nowhere in the mesh (no other relay wants it, or this relay delivers it itself).
    Nowhere,
    /// To this relay's own subscribers (it won the draw of a deliver-one mode).
    Here,
    /// To these relays.
    Relays(Vec<RelayId>),
}

/// Where a publish in `mode` goes, given the relays with matching interest and a route
/// (`remote`) and whether this relay has a matching subscriber (`local_match`).
///
/// - broadcast: every such relay (this relay's own subscribers are served by the edge);
/// - low-latency: this relay if it has a match (the edge serves it), else the relay with
///   the lowest route metric (`metric_to`; ties by id);
/// - random: one of the candidates, this relay included, uniformly from `rng`.
pub fn choose(
    mode: Mode,
    mut remote: Vec<RelayId>,
    local_match: bool,
    metric_to: impl Fn(RelayId) -> u32,
    rng: &mut fastrand::Rng,
) -> Choice {
    let relays = |v: Vec<RelayId>| {
        if v.is_empty() {
            Choice::Nowhere
        } else {
            Choice::Relays(v)
        }
    };
    match mode {
        Mode::Broadcast => relays(remote),
        Mode::LowLatency => {
            if local_match {
                return Choice::Nowhere;
            }
            remote.sort_by_key(|id| (metric_to(*id), id.0));
            remote.truncate(1);
            relays(remote)
        }
        // Random, and any mode added later: one candidate, drawn.
        _ => {
            let n = remote.len() + usize::from(local_match);
            if n == 0 {
                return Choice::Nowhere;
            }
            match remote.get(rng.usize(..n)) {
                Some(id) => Choice::Relays(vec![*id]),
                None => Choice::Here,
            }
        }
    }
}

/// One copy of a message: the next hop it goes to and the destinations it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The neighbour the copy is sent to.
    pub next_hop: RelayId,
    /// Destinations reached through it (at most [`MAX_DESTINATIONS`] per copy).
    pub destinations: heapless::Vec<RelayId, MAX_DESTINATIONS>,
}

/// How to send a message to a set of destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// One group per next hop, sent as one copy (more when a hop carries more than [`MAX_DESTINATIONS`]).
    pub groups: Vec<Group>,
    /// Destinations without a route (dropped, to be counted).
    pub no_route: u64,
}

/// Groups `dests` (this relay `me` skipped) by their next hop from `next_hop`: one copy per
/// next hop listing the destinations it reaches. `O(dests × copies)`.
pub fn plan(me: RelayId, dests: &[RelayId], next_hop: impl Fn(RelayId) -> Option<RelayId>) -> Plan {
    let mut p = Plan::default();
    for &d in dests {
        if d == me {
            continue;
        }
        let Some(nh) = next_hop(d) else {
            p.no_route += 1;
            continue;
        };
        match p
            .groups
            .iter_mut()
            .find(|c| c.next_hop == nh && !c.destinations.is_full())
        {
            Some(c) => {
                let _ = c.destinations.push(d);
            }
            None => {
                let mut destinations = heapless::Vec::new();
                let _ = destinations.push(d);
                p.groups.push(Group {
                    next_hop: nh,
                    destinations,
                });
            }
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<RelayId> {
        v.iter().map(|i| RelayId(*i)).collect()
    }

    #[test]
    fn one_copy_per_next_hop() {
        // 2 and 3 via 2, 4 via 4, 5 unreachable, 1 is us.
        let hop = |d: RelayId| match d.0 {
            2 | 3 => Some(RelayId(2)),
            4 => Some(RelayId(4)),
            _ => None,
        };
        let p = plan(RelayId(1), &ids(&[1, 2, 3, 4, 5]), hop);
        assert_eq!(p.no_route, 1);
        let got: Vec<(u64, Vec<u64>)> = p
            .groups
            .iter()
            .map(|c| (c.next_hop.0, c.destinations.iter().map(|d| d.0).collect()))
            .collect();
        assert_eq!(got, vec![(2, vec![2, 3]), (4, vec![4])]);
    }

    #[test]
    fn a_full_copy_starts_another() {
        let dests: Vec<RelayId> = (10..10 + MAX_DESTINATIONS as u64 + 3)
            .map(RelayId)
            .collect();
        let p = plan(RelayId(1), &dests, |_| Some(RelayId(2)));
        let sizes: Vec<usize> = p.groups.iter().map(|c| c.destinations.len()).collect();
        assert_eq!(sizes, vec![MAX_DESTINATIONS, 3]);
    }

    #[test]
    fn modes_choose_as_the_contract_says() {
        let mut rng = fastrand::Rng::with_seed(1);
        let metric = |id: RelayId| 100 - id.0 as u32;
        let r = ids(&[3, 7, 5]);
        assert_eq!(
            choose(Mode::Broadcast, r.clone(), true, metric, &mut rng),
            Choice::Relays(r.clone())
        );
        assert_eq!(
            choose(Mode::Broadcast, vec![], false, metric, &mut rng),
            Choice::Nowhere
        );
        assert_eq!(
            choose(Mode::LowLatency, r.clone(), false, metric, &mut rng),
            Choice::Relays(ids(&[7])),
            "lowest metric"
        );
        assert_eq!(
            choose(Mode::LowLatency, r.clone(), true, metric, &mut rng),
            Choice::Nowhere,
            "a local match wins"
        );
        // Random: every candidate, this relay included, about equally often.
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            match choose(Mode::Random, r.clone(), true, metric, &mut rng) {
                Choice::Relays(v) => {
                    let i = r.iter().position(|x| *x == v[0]).expect("a candidate");
                    counts[i] += 1;
                }
                Choice::Here => counts[3] += 1,
                Choice::Nowhere => panic!("there are candidates"),
            }
        }
        assert!(counts.iter().all(|c| (850..1150).contains(c)), "{counts:?}");
        assert_eq!(
            choose(Mode::Random, vec![], false, metric, &mut rng),
            Choice::Nowhere
        );
    }
}
