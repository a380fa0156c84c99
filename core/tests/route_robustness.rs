//! Robustness: a table fed long seeded sequences of arbitrary peer input (any ids,
//! seqnos, metrics, hop counts, in any order, with link flaps and timeouts) never
//! panics, keeps its capacities, only ever routes through an up neighbour, and its
//! polls always terminate.
#![allow(missing_docs)]

mod route_harness;

use fastpubsub_core::route::{
    Digest, LinkMeasurement, Message, Metric, Recipient, RelayId, RouteConfig, RouteError,
    RouteTable, Seqno, SeqnoRequest, Update,
};
use route_harness::Rng;

#[test]
fn arbitrary_peer_input_never_breaks_the_table() {
    for seed in 1..=4 {
        let mut rng = Rng::new(seed);
        let me = RelayId(7);
        let cfg = RouteConfig {
            max_destinations: 8,
            max_neighbours: 4,
            ..RouteConfig::default()
        };
        let mut t = RouteTable::new(me, Seqno(u16::MAX - 3), cfg, 0).expect("valid config");
        let mut now = 0u64;
        let mut up: Vec<RelayId> = Vec::new();
        let (mut full, mut unknown) = (0u32, 0u32);
        for _ in 0..20_000 {
            now += rng.below(300_000);
            // A small id space makes collisions with `me`, neighbours and dests likely.
            let id = RelayId(rng.below(12));
            let r = match rng.below(10) {
                0 => {
                    let m = LinkMeasurement {
                        rtt_us: rng.next_u64() as u32,
                        min_rtt_us: rng.next_u64() as u32,
                        jitter_us: rng.next_u64() as u32,
                        loss_ppm: rng.next_u64() as u32,
                    };
                    let r = t.handle_link_metric(id, m, now);
                    if r.is_ok() && !up.contains(&id) {
                        up.push(id);
                    }
                    r
                }
                1 => {
                    up.retain(|&x| x != id);
                    t.handle_link_down(id, now)
                }
                2 => {
                    let q = SeqnoRequest {
                        source: RelayId(rng.below(12)),
                        seqno: Seqno(rng.next_u64() as u16),
                        hop_count: rng.next_u64() as u8,
                    };
                    t.handle_seqno_request(id, q, now)
                }
                3 => {
                    t.handle_timeout(now);
                    Ok(())
                }
                4 => {
                    let m = if rng.below(2) == 0 {
                        Message::TableRequest(rng.next_u64() as u8)
                    } else {
                        Message::Digest(Digest {
                            digest: rng.next_u64(),
                            routes: rng.below(10) as u32,
                            reply_to: rng.below(4) as u8,
                        })
                    };
                    t.handle_message(id, m, now)
                }
                _ => {
                    let metric = match rng.below(4) {
                        0 => Metric::INFINITY,
                        1 => Metric(rng.next_u64() as u32),
                        _ => Metric(rng.below(200_000) as u32),
                    };
                    let u = Update {
                        source: RelayId(rng.below(12)),
                        seqno: Seqno((u16::MAX - 3).wrapping_add(rng.below(8) as u16)),
                        metric,
                    };
                    t.handle_update(id, u, now)
                }
            };
            match r {
                Ok(()) => {}
                Err(RouteError::NeighbourTableFull(_) | RouteError::DestTableFull(_)) => full += 1,
                Err(RouteError::UnknownNeighbour(_) | RouteError::SelfAsNeighbour) => unknown += 1,
                Err(e) => panic!("unexpected error {e}"),
            }
            let mut n = 0;
            while let Some(tx) = t.poll_transmit() {
                n += 1;
                // Our route, 8 destinations (update, request, forward), 4 neighbours
                // (table request, full table of 9, its digest), the periodic digest.
                assert!(
                    n <= 1 + 8 * 3 + 4 * 11 + 1,
                    "poll_transmit does not terminate"
                );
                if let Recipient::Neighbour(id) = tx.to {
                    assert!(up.contains(&id), "message to a neighbour that is down");
                }
            }
            while t.poll_event().is_some() {}
            // Like a driver: a due timer is served, and then lies in the future.
            if t.poll_timeout().is_some_and(|w| w <= now) {
                t.handle_timeout(now);
                assert!(t.poll_timeout().is_some_and(|w| w > now));
                while t.poll_transmit().is_some() {}
            }
            assert!(t.neighbours().count() <= 4 && t.routes().count() <= 8);
            for r in t.routes() {
                assert_ne!(r.dest, me);
                if let Some(nh) = r.next_hop {
                    assert!(
                        up.contains(&nh),
                        "route to {} via {nh}, which is down",
                        r.dest
                    );
                    assert!(r.metric.is_finite());
                }
            }
        }
        assert!(
            full > 0 && unknown > 0,
            "the sequence should exercise refusals"
        );
        let s = t.stats();
        assert!(s.updates_received > 1_000 && s.route_changes > 10, "{s:?}");
    }
}
