//! The WebTransport listener's families on `/metrics` (rendered only when the relay runs
//! one, `--wt-listen`): sessions and QUIC connections now, handshakes in progress, sessions
//! accepted, ended and refused (by HTTP status), handshakes refused by the admission limits
//! (by reason), Retry packets, failed handshakes, and deliveries to sessions dropped (by
//! where and why). The listener mirrors its typed status (`wt::status::WtStatus`) here.

use std::sync::atomic::{AtomicBool, Ordering};

use super::text::TextEncoder;
use super::{Counter, CounterBy, Gauge, LabelValues, QuicRefusal, counter, gauge};

label_enum!(
    /// Why a WebTransport session (its extended CONNECT) was refused.
    WtRefusal, "reason", {
        /// 401: bad, expired, revoked or missing ticket.
        Unauthorized = "unauthorized",
        /// 403: the ticket does not allow WebTransport, or an IP mask / Origin check.
        Forbidden = "forbidden",
        /// 503: the relay is at its connection limit or shutting down.
        Unavailable = "unavailable",
    }
);

label_enum!(
    /// Why a delivery to a WebTransport session was dropped (for that session only).
    WtDrop, "reason", {
        /// The session's budget was full with its control stream behind.
        ControlQueueFull = "control_queue_full",
        /// A line's share of the budget (half) or the whole budget was full.
        LineQueueFull = "line_queue_full",
        /// The datagram queue's share of the budget was full.
        DatagramQueueFull = "datagram_queue_full",
        /// The deliver frame was over the 65,536-byte WebTransport frame cap.
        FrameTooLarge = "frame_too_large",
        /// QUIC's datagram send buffer of the session was full (congested path).
        DatagramBufferFull = "datagram_buffer_full",
    }
);

/// The WebTransport families. Counters mirror totals kept by the listener and the broker.
#[derive(Debug, Default)]
pub struct WtMetrics {
    enabled: AtomicBool,
    /// Sessions open now (accepted, not ended).
    pub sessions: Gauge,
    /// QUIC connections open now (handshaking, in a session, closing).
    pub connections: Gauge,
    /// Incoming handshakes in progress now.
    pub handshakes_in_progress: Gauge,
    /// Sessions accepted (`200` to the CONNECT).
    pub sessions_accepted: Counter,
    /// Sessions ended, any reason (refused ones included).
    pub sessions_ended: Counter,
    /// CONNECTs refused, by status.
    pub session_refusals: CounterBy<WtRefusal>,
    /// Connection attempts refused by the handshake admission limits, by reason.
    pub handshakes_refused: CounterBy<QuicRefusal>,
    /// Retry packets sent (address validation under handshake load).
    pub retries: Counter,
    /// Handshakes that failed (TLS, ALPN, the client gave up).
    pub handshake_failures: Counter,
    /// Deliveries to sessions dropped, by reason.
    pub drops: CounterBy<WtDrop>,
    /// Certificates generated after the first.
    pub certificate_rotations: Counter,
}

/// This relay's WebTransport listener in one line of the dashboard (`webtransport` in
/// `GET /v1/mesh`, for the relay serving the document; see docs/api.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WtSummary {
    /// Sessions open now.
    pub sessions: i64,
    /// Sessions accepted since start.
    pub accepted: u64,
    /// CONNECTs refused (401, 403, 503) since start.
    pub refused: u64,
    /// Connection attempts stopped by the handshake admission limits since start.
    pub handshakes_refused: u64,
    /// Deliveries to sessions dropped since start, all reasons.
    pub deliveries_dropped: u64,
}

impl WtMetrics {
    /// The dashboard's summary, when a WebTransport listener runs.
    pub fn summary(&self) -> Option<WtSummary> {
        self.is_enabled().then(|| WtSummary {
            sessions: self.sessions.get(),
            accepted: self.sessions_accepted.get(),
            refused: self.session_refusals.sum(),
            handshakes_refused: self.handshakes_refused.sum(),
            deliveries_dropped: self.drops.sum(),
        })
    }

    /// The relay runs a WebTransport listener: render these families.
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Is a WebTransport listener running?
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(super) fn render(&self, e: &mut TextEncoder<'_>) {
        if !self.is_enabled() {
            return;
        }
        gauge(
            e,
            "fastpubsub_wt_sessions",
            "Open WebTransport sessions (they count in fastpubsub_connections too).",
            &self.sessions,
        );
        gauge(
            e,
            "fastpubsub_wt_connections",
            "Open QUIC connections of the WebTransport listener (handshaking, in a session, closing).",
            &self.connections,
        );
        gauge(
            e,
            "fastpubsub_wt_handshakes_in_progress",
            "Incoming WebTransport QUIC handshakes in progress (at most 1,024).",
            &self.handshakes_in_progress,
        );
        counter(
            e,
            "fastpubsub_wt_sessions_accepted_total",
            "WebTransport sessions accepted.",
            &self.sessions_accepted,
        );
        counter(
            e,
            "fastpubsub_wt_sessions_ended_total",
            "WebTransport sessions ended, any reason.",
            &self.sessions_ended,
        );
        self.session_refusals.render(
            e,
            "fastpubsub_wt_session_refusals_total",
            "WebTransport CONNECTs refused, by reason (401, 403, 503).",
        );
        self.handshakes_refused.render(
            e,
            "fastpubsub_wt_handshakes_refused_total",
            "WebTransport QUIC connection attempts stopped by the admission limits, by reason.",
        );
        counter(
            e,
            "fastpubsub_wt_retries_total",
            "Retry packets sent by the WebTransport listener (address validation under load).",
            &self.retries,
        );
        counter(
            e,
            "fastpubsub_wt_handshake_failures_total",
            "WebTransport QUIC handshakes that failed.",
            &self.handshake_failures,
        );
        self.drops.render(
            e,
            "fastpubsub_wt_deliveries_dropped_total",
            "Deliveries to WebTransport sessions dropped for that session, by reason.",
        );
        counter(
            e,
            "fastpubsub_wt_certificate_rotations_total",
            "Generated WebTransport certificates replaced.",
            &self.certificate_rotations,
        );
    }
}
