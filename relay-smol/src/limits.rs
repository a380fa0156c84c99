//! Every capacity and timeout of the edge, with its default. The `run` command exposes most
//! as flags (see `cli`); `docs/edge.md` lists them all, with the worst-case memory they allow.

use std::time::Duration;

use fastpubsub_core::frame::limits::MAX_PUBLISH_FRAME_LEN;

/// Bytes one connection task reads and handles per turn before it yields to the other tasks
/// (fair scheduling: one busy connection cannot hold the thread).
pub const TURN_BYTES: usize = 64 * 1024;
/// Work units one connection task does per turn before it yields: one per frame handled plus
/// one per connection a publish was queued to (a fan-out to 1,000 subscribers is 1,001).
pub const TURN_WORK: usize = 1024;
/// Ceiling of the outbound backlog at which a connection's reads stop (see
/// [`Limits::read_stop_bytes`]).
pub const READ_STOP_BYTES_MAX: usize = 64 * 1024;

/// A rate limit: `per_sec` on average, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sustained rate per second.
    pub per_sec: u32,
    /// Most that may be used at once after a quiet spell.
    pub burst: u32,
}

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
    /// The byte budget of one connection: everything the relay holds for it (queued
    /// deliveries, control replies, incomplete incoming frames) counts against it. Deliveries
    /// that would go over it are dropped for that connection only, and counted.
    pub queue_bytes: usize,
    /// How long a connection may stay blocked (deliveries dropped for its budget, or reads
    /// stopped for its own backlog) without its queue draining before it is sent
    /// `ERR:slow_consumer` and closed.
    pub slow_consumer_grace: Duration,
    /// `SUB` + `UNSUB` per connection; over it `ERR:rate_limited:SUB:…` / `…:UNSUB:…`.
    pub sub_rate: Rate,
    /// Text `PING`s + WebSocket Pings per connection; over it `ERR:rate_limited:PING:…`.
    pub ping_rate: Rate,
    /// Answered publish refusals per connection; beyond it refusals are counted, not answered.
    pub refusal_reply_rate: Rate,
    /// Commands over their rate (and unanswered permission/channel refusals) a connection may
    /// run up before it is closed with `ERR:rate_limited`.
    pub strike_rate: Rate,
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
            // An SDK re-sends every SUB at once after a reconnect: the burst covers a full
            // connection twice over.
            sub_rate: Rate {
                per_sec: 100,
                burst: 512,
            },
            // SDKs ping every 1–5 s; tools and tests also use PING/PONG as a barrier after
            // a batch of publishes.
            ping_rate: Rate {
                per_sec: 100,
                burst: 1000,
            },
            refusal_reply_rate: Rate {
                per_sec: 50,
                burst: 200,
            },
            strike_rate: Rate {
                per_sec: 2,
                burst: 200,
            },
            handshake_timeout: Duration::from_secs(10),
            max_http_head: 8 * 1024,
            max_http_body: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            max_bad_frames: 100,
        }
    }
}

impl Limits {
    /// Outbound backlog (bytes queued, not yet taken by the socket) at which the connection's
    /// reads stop until it drains: half the budget, at most [`READ_STOP_BYTES_MAX`]. Replies
    /// to frames read before the stop fit in the other half.
    pub fn read_stop_bytes(&self) -> usize {
        (self.queue_bytes / 2).clamp(1, READ_STOP_BYTES_MAX)
    }
}
