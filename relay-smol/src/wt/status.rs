//! The WebTransport listener's status as typed data ([`WtStatus`]): the listener's own
//! counters ([`ListenerStats`], kept by the endpoint) and the broker's counters of deliveries
//! to sessions ([`DeliveryStats`]). From it, and from nothing else, come `GET /v1/wt-stats`
//! ([`StatsRest`]) and the `fastpubsub_wt_*` families on `/metrics`
//! ([`WtStatus::mirror_metrics`], every second by [`mirror_metrics`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::broker::{Broker, Stats};
use crate::metrics::wt::{WtDrop, WtRefusal};
use crate::metrics::{QuicRefusal, RelayMetrics};

/// How often [`mirror_metrics`] copies the status into the metrics.
pub const MIRROR_EVERY: Duration = Duration::from_secs(1);

/// Counters of the listener (monotonic unless said "now").
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct ListenerStats {
    /// Connections whose QUIC handshake completed.
    pub connected: u64,
    /// Connections ended (any reason, refused sessions included).
    pub ended: u64,
    /// Sessions open now (accepted, not ended).
    pub sessions: usize,
    /// Sessions accepted (`200` to the CONNECT).
    pub sessions_accepted: u64,
    /// CONNECTs refused `401` (ticket bad, expired, revoked, missing).
    pub refused_unauthorized: u64,
    /// CONNECTs refused `403` (the ticket does not allow WebTransport, IP mask, Origin).
    pub refused_forbidden: u64,
    /// CONNECTs refused `503` (connection limit, shutting down).
    pub refused_unavailable: u64,
    /// Certificates generated after the first.
    pub rotations: u64,
    /// QUIC connections open now (handshaking, sessions, closing).
    pub connections: usize,
    /// Handshakes in progress now.
    pub handshakes_in_progress: usize,
    /// Incoming connections admitted to a handshake.
    pub admitted: u64,
    /// Retry packets sent (address validation under handshake load).
    pub retries: u64,
    /// Incoming connections refused by the admission limits (the sum of the five below).
    pub refused: u64,
    /// ... because every connection slot was taken.
    pub refused_full: u64,
    /// ... because the relay-wide handshake budget was in use.
    pub refused_handshakes: u64,
    /// ... because their source had its handshakes in progress.
    pub refused_source_handshakes: u64,
    /// ... because their source started handshakes too fast.
    pub refused_source_rate: u64,
    /// ... because the source table was full.
    pub refused_source_table: u64,
    /// Handshakes closed by the handshake timeout.
    pub handshake_timeouts: u64,
    /// Handshakes closed to make room for a source with fewer in progress.
    pub handshakes_displaced: u64,
    /// Handshakes that failed (TLS, ALPN, the client gave up) or timed out.
    pub handshake_failures: u64,
    /// UDP datagrams in.
    pub datagrams_in: u64,
    /// UDP datagrams out.
    pub datagrams_out: u64,
}

/// Deliveries to WebTransport sessions dropped (for that session only; everyone else got
/// them), from the broker's counters.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct DeliveryStats {
    /// The session's budget was full with its control stream behind.
    pub dropped_control_full: u64,
    /// A line's half of the budget, or the whole budget, was full.
    pub dropped_line_full: u64,
    /// The datagram queue's half of the budget was full.
    pub dropped_datagram_full: u64,
    /// The deliver frame was over the 65,536-byte WebTransport frame cap.
    pub dropped_oversize: u64,
    /// QUIC's datagram send buffer was full (congested path).
    pub dropped_datagram_buffer: u64,
}

impl DeliveryStats {
    /// The WebTransport part of the broker's counters.
    pub fn from_broker(s: &Stats) -> Self {
        DeliveryStats {
            dropped_control_full: s.dropped_wt_control_full,
            dropped_line_full: s.dropped_wt_line_full,
            dropped_datagram_full: s.dropped_wt_datagram_full,
            dropped_oversize: s.dropped_wt_oversize,
            dropped_datagram_buffer: s.dropped_wt_datagram_buffer,
        }
    }
}

/// Everything `GET /v1/wt-stats` shows: the listener's counters at the top level, the
/// dropped deliveries under `deliveries`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WtStatus {
    /// The listener.
    #[serde(flatten)]
    pub listener: ListenerStats,
    /// Deliveries to sessions.
    pub deliveries: DeliveryStats,
}

impl WtStatus {
    /// The JSON document of `GET /v1/wt-stats`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Copies the status into the `fastpubsub_wt_*` families (and turns them on).
    pub fn mirror_metrics(&self, m: &RelayMetrics) {
        let l = &self.listener;
        let w = &m.wt;
        w.enable();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        w.sessions.set(gauge(l.sessions));
        w.connections.set(gauge(l.connections));
        w.handshakes_in_progress
            .set(gauge(l.handshakes_in_progress));
        w.sessions_accepted.mirror(l.sessions_accepted);
        w.sessions_ended.mirror(l.ended);
        for (reason, n) in [
            (WtRefusal::Unauthorized, l.refused_unauthorized),
            (WtRefusal::Forbidden, l.refused_forbidden),
            (WtRefusal::Unavailable, l.refused_unavailable),
        ] {
            w.session_refusals.mirror(reason, n);
        }
        for (reason, n) in [
            (QuicRefusal::TableFull, l.refused_full),
            (QuicRefusal::HandshakeBudget, l.refused_handshakes),
            (QuicRefusal::SourceHandshakes, l.refused_source_handshakes),
            (QuicRefusal::SourceRate, l.refused_source_rate),
            (QuicRefusal::SourceTable, l.refused_source_table),
            (QuicRefusal::Timeout, l.handshake_timeouts),
            (QuicRefusal::Displaced, l.handshakes_displaced),
        ] {
            w.handshakes_refused.mirror(reason, n);
        }
        w.retries.mirror(l.retries);
        w.handshake_failures.mirror(l.handshake_failures);
        let d = &self.deliveries;
        for (reason, n) in [
            (WtDrop::ControlQueueFull, d.dropped_control_full),
            (WtDrop::LineQueueFull, d.dropped_line_full),
            (WtDrop::DatagramQueueFull, d.dropped_datagram_full),
            (WtDrop::FrameTooLarge, d.dropped_oversize),
            (WtDrop::DatagramBufferFull, d.dropped_datagram_buffer),
        ] {
            w.drops.mirror(reason, n);
        }
        w.certificate_rotations.mirror(l.rotations);
    }
}

/// Where the status comes from: the listener's counters and the broker (same thread).
#[derive(Clone)]
pub struct StatusSource {
    /// The listener's counters, updated by the endpoint on every wake-up.
    pub listener: Rc<RefCell<ListenerStats>>,
    /// The broker the sessions deliver from.
    pub broker: Rc<RefCell<Broker>>,
}

impl StatusSource {
    /// The status now.
    pub fn status(&self) -> WtStatus {
        WtStatus {
            listener: *self.listener.borrow(),
            deliveries: DeliveryStats::from_broker(&self.broker.borrow().stats()),
        }
    }
}

/// Serves `GET /v1/wt-stats`.
pub struct StatsRest(pub StatusSource);

impl crate::rest::RestHandler for StatsRest {
    fn handle(
        &self,
        req: &crate::rest::HttpRequest,
        _now: std::time::SystemTime,
    ) -> Option<crate::rest::HttpResponse> {
        (req.path == "/v1/wt-stats")
            .then(|| crate::rest::HttpResponse::json(200, self.0.status().to_json()))
    }
}

/// Copies the status into `metrics` every [`MIRROR_EVERY`], for as long as the relay runs
/// (spawn it on the relay's executor).
pub async fn mirror_metrics(src: StatusSource, metrics: Arc<RelayMetrics>) {
    loop {
        src.status().mirror_metrics(&metrics);
        async_io::Timer::after(MIRROR_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reaches_json_and_metrics() {
        let status = WtStatus {
            listener: ListenerStats {
                sessions: 2,
                sessions_accepted: 5,
                refused_forbidden: 3,
                refused_source_rate: 7,
                refused: 7,
                ..ListenerStats::default()
            },
            deliveries: DeliveryStats {
                dropped_line_full: 4,
                dropped_datagram_buffer: 6,
                ..DeliveryStats::default()
            },
        };
        let j: serde_json::Value = serde_json::from_str(&status.to_json()).unwrap();
        assert_eq!(j["sessions"], 2);
        assert_eq!(j["refused_forbidden"], 3);
        assert_eq!(j["deliveries"]["dropped_line_full"], 4);
        let m = RelayMetrics::default();
        assert!(
            !m.render().contains("fastpubsub_wt_"),
            "off without a listener"
        );
        status.mirror_metrics(&m);
        let text = m.render();
        for line in [
            "fastpubsub_wt_sessions 2",
            "fastpubsub_wt_sessions_accepted_total 5",
            "fastpubsub_wt_session_refusals_total{reason=\"forbidden\"} 3",
            "fastpubsub_wt_handshakes_refused_total{reason=\"source_rate\"} 7",
            "fastpubsub_wt_deliveries_dropped_total{reason=\"line_queue_full\"} 4",
            "fastpubsub_wt_deliveries_dropped_total{reason=\"datagram_buffer_full\"} 6",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
