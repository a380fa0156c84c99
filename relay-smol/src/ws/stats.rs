//! The edge's counters: as one JSON document (`GET /stats`, for admin-token holders) and
//! mirrored into the relay's metrics (`/metrics`).

use crate::broker::Broker;
use crate::metrics::{EdgeLimit, RelayMetrics};
use crate::ws::admission::Admission;

/// Mirrors the edge's limit counters and gauges into `m` (called about once a second by the
/// admin refresher). Returns the handshakes refused for capacity at the edge (connection cap
/// and handshake caps), which the caller counts as `handshake_refusals{over_capacity}`.
pub fn mirror_into(m: &RelayMetrics, broker: &Broker, admission: &Admission) -> u64 {
    let s = broker.stats();
    let a = admission.stats();
    let hits = &m.edge_limit_hits;
    for (limit, n) in [
        (EdgeLimit::ReadStop, s.read_stops),
        (EdgeLimit::TurnYield, s.turn_yields),
        (EdgeLimit::CommandRate, s.commands_rate_limited),
        (EdgeLimit::RefusalUnanswered, s.refusals_unanswered),
        (EdgeLimit::RateLimitClose, s.rate_limit_closed),
        (EdgeLimit::PendingFull, a.refused_pending_full),
        (EdgeLimit::PendingPerSource, a.refused_pending_source),
        (EdgeLimit::PendingEvicted, a.pending_evicted),
        (EdgeLimit::TicketFailureBudget, a.refused_ticket_failures),
        (EdgeLimit::FailureSourceEvicted, a.failure_sources_evicted),
        (EdgeLimit::DeliverPatternsCapped, s.deliver_patterns_capped),
        (EdgeLimit::SubsPerConnection, s.refused_subs_per_connection),
        (EdgeLimit::SubsRelayFull, s.refused_subs_relay_full),
        (EdgeLimit::PatternTooComplex, s.refused_pattern_too_complex),
        (EdgeLimit::BadFramesClose, s.bad_frames_closed),
    ] {
        hits.mirror(limit, n);
    }
    m.edge_held_bytes
        .set(i64::try_from(broker.queue_bytes_held()).unwrap_or(i64::MAX));
    m.edge_handshakes_pending
        .set(i64::try_from(admission.pending()).unwrap_or(i64::MAX));
    s.refused_over_capacity
        .saturating_add(a.refused_pending_full)
        .saturating_add(a.refused_pending_source)
}

/// The `GET /stats` document: the broker's and the admission tables' counters as one JSON
/// object (`docs/api.md`).
pub fn stats_json(broker: &Broker, admission: &Admission) -> String {
    let s = broker.stats();
    let a = admission.stats();
    format!(
        concat!(
            "{{\"connections\":{},\"subscriptions\":{},\"queue_bytes_held\":{},",
            "\"connections_opened\":{},\"published\":{},\"delivered\":{},",
            "\"dropped_queue_full\":{},\"dropped_egress_rate\":{},\"refused_ingress_rate\":{},",
            "\"slow_consumers_closed\":{},\"access_ended_closed\":{},",
            "\"read_stops\":{},\"turn_yields\":{},\"commands_rate_limited\":{},",
            "\"refusals_unanswered\":{},\"rate_limit_closed\":{},",
            "\"handshakes_pending\":{},\"refused_pending_full\":{},",
            "\"refused_pending_source\":{},\"pending_evicted\":{},\"ticket_failures\":{},",
            "\"refused_ticket_failures\":{},\"ticket_failure_sources\":{},",
            "\"ticket_failure_sources_evicted\":{},\"deliver_patterns_capped\":{},",
            "\"dropped_wt_oversize\":{},",
            "\"intake_pauses\":{},\"intake_paused_us\":{},\"intake_pause_overruns\":{},",
            "\"intake_pauses_mesh\":{},",
            "\"dropped_relay_behind\":{},",
            "\"refused_subs_per_connection\":{},\"refused_subs_relay_full\":{},",
            "\"refused_pattern_too_complex\":{},\"bad_frames_closed\":{}}}"
        ),
        broker.connection_count(),
        broker.subscription_count(),
        broker.queue_bytes_held(),
        s.connections_opened,
        s.published,
        s.delivered,
        s.dropped_queue_full,
        s.dropped_egress_rate,
        s.refused_ingress_rate,
        s.slow_consumers_closed,
        s.access_ended_closed,
        s.read_stops,
        s.turn_yields,
        s.commands_rate_limited,
        s.refusals_unanswered,
        s.rate_limit_closed,
        admission.pending(),
        a.refused_pending_full,
        a.refused_pending_source,
        a.pending_evicted,
        a.ticket_failures,
        a.refused_ticket_failures,
        admission.failure_sources(),
        a.failure_sources_evicted,
        s.deliver_patterns_capped,
        s.dropped_wt_oversize,
        s.intake_pauses,
        s.intake_paused_us,
        s.intake_pause_overruns,
        s.intake_pauses_mesh,
        s.dropped_relay_behind,
        s.refused_subs_per_connection,
        s.refused_subs_relay_full,
        s.refused_pattern_too_complex,
        s.bad_frames_closed,
    )
}
