//! Every capacity and timeout of the edge, with its default. The `run` command exposes each
//! one as a flag (see `cli`); `docs/edge.md` lists them.

use std::time::Duration;

use fastpubsub_core::frame::limits::MAX_PUBLISH_FRAME_LEN;

/// Capacities and timeouts of one relay.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open WebSocket connections; the next handshake gets `503`.
    pub max_connections: usize,
    /// Subscriptions one connection may hold; the next `SUB` gets `ERR:too_many_subscriptions`.
    pub max_subs_per_conn: usize,
    /// Subscriptions on the whole relay (the subscription index capacity).
    pub max_total_subs: usize,
    /// Largest WebSocket message from a client, in bytes. Larger messages are skipped and
    /// answered with `ERR:frame_too_large`; the connection stays open.
    pub max_frame_len: usize,
    /// Bytes queued towards one connection; deliveries beyond it are dropped for that
    /// connection only, and counted.
    pub queue_bytes: usize,
    /// How long a connection may keep dropping deliveries (its queue never empties) before
    /// it is sent `ERR:slow_consumer` and closed.
    pub slow_consumer_grace: Duration,
    /// Time a client has to send its HTTP request head.
    pub handshake_timeout: Duration,
    /// Largest HTTP request head, in bytes (`431` beyond it).
    pub max_http_head: usize,
    /// Largest HTTP request body, in bytes (`413` beyond it).
    pub max_http_body: usize,
    /// After SIGTERM/SIGINT: how long clients get to move after `RECONNECT`.
    pub shutdown_grace: Duration,
    /// How long a closing connection gets to flush its last frames before it is dropped.
    pub close_timeout: Duration,
    /// Malformed frames tolerated per connection before it is closed (each one is answered
    /// with `ERR:bad_frame` until then).
    pub max_bad_frames: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 16_384,
            max_subs_per_conn: 256,
            max_total_subs: 1_000_000,
            max_frame_len: MAX_PUBLISH_FRAME_LEN,
            queue_bytes: 256 * 1024,
            slow_consumer_grace: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            max_http_head: 8 * 1024,
            max_http_body: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            max_bad_frames: 100,
        }
    }
}
