//! The edge's counters as one JSON document (`GET /stats`).

use crate::broker::Broker;
use crate::ws::admission::Admission;

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
            "\"dropped_relay_behind\":{}}}"
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
    )
}
