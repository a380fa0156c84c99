//! Every capacity and timeout of the edge, with its default. The `run` command exposes most
//! as flags (see `cli`); `docs/edge.md` lists them all, with the worst-case memory they allow.

use std::time::Duration;

use fastpubsub_core::frame::limits::{
    MAX_NAME_LEN, MAX_PAYLOAD_LEN, MAX_PUBLISH_FRAME_LEN, MAX_TENANT_LEN,
};
use fastpubsub_core::pattern::{MAX_PATTERN_SEGMENTS, MAX_STARS_PER_CONNECTION};

/// Bytes one connection task reads and handles per turn before it yields to the other tasks
/// (fair scheduling: one busy connection cannot hold the thread).
pub const TURN_BYTES: usize = 64 * 1024;
/// Work units one connection task does per turn before it yields: [`FRAME_WORK`] per frame
/// handled plus one per connection a publish was queued to. A turn therefore ends after at
/// most 1,024 frames or 16,384 deliveries (a mix in between), a few milliseconds of work.
///
/// Why deliveries are cheap units: every connection a turn queued to is written with one
/// `write` after the turn, so the fan-out per turn sets how many deliveries share a syscall.
/// Measured (`cargo bench --bench compare -- --subs 100 --sizes 64`, same run): at one unit
/// per delivery and 1,024 per turn (10 publishes per turn to 100 subscribers) the relay spent
/// 0.94–1.08 µs of CPU per delivery against nats-server's 0.22–0.32; at 16,384 deliveries per
/// turn, 0.22 against 0.19.
pub const TURN_WORK: usize = 16 * 1024;
/// Work units of one frame handled (a delivery queued is one unit): parsing, checking and
/// matching a frame costs many times more than copying one delivery into a queue.
pub const FRAME_WORK: usize = 16;
/// Ceiling of the outbound backlog at which a connection's reads stop (see
/// [`Limits::read_stop_bytes`]).
pub const READ_STOP_BYTES_MAX: usize = 64 * 1024;

/// Longest the relay pauses every connection's reads because it is behind on writing
/// (`broker::ReadStop::RelayBehind`). The backlog that causes a pause is on sockets that take
/// bytes, so it is normally written within one round of the executor (microseconds); past
/// this bound (checked at every read gate and by the once-a-second sweep) the connections
/// holding it are treated as not keeping up and intake goes on.
pub const MAX_INTAKE_PAUSE: Duration = Duration::from_secs(1);

/// Spare outbound buffers the broker keeps for reuse, each of at most
/// [`queue_grow_cap`]`(queue_bytes)` bytes.
pub const POOL_BUFFERS: usize = 64;

/// Capacity up to which a connection's outbound buffer grows by doubling (and the largest
/// buffer the spare pool keeps): the budget plus room for the close frames.
pub fn queue_grow_cap(queue_bytes: usize) -> usize {
    queue_bytes.saturating_add(4096)
}

/// File descriptors kept free for everything that is not a client connection: listeners, the
/// mesh socket, the admin listener's connections, state files, stdio, the reactor.
pub const FD_RESERVE: u64 = 128;

/// Heap of one connection's bookkeeping whatever it does: its task, broker state, socket
/// registration. Measured at about 1.5 KiB per idle subscribed connection (footprint); the
/// bound keeps a margin.
pub const CONN_FIXED_BYTES: usize = 4096;
/// Heap of one subscription index node with its child-map entry and allocation overhead (the
/// node itself is 48 bytes, core's `sizes` test).
pub const INDEX_NODE_BYTES: usize = 96;
/// Heap of one subscription at most: its tenant and pattern kept by the connection, in the
/// subscription index and in the interest map (three copies), one index node per segment,
/// plus bookkeeping. Measured: 278 bytes for short patterns (footprint).
pub const SUB_BYTES: usize =
    3 * (MAX_TENANT_LEN + MAX_NAME_LEN) + MAX_PATTERN_SEGMENTS * INDEX_NODE_BYTES + 256;
/// Heap of one connection in its handshake apart from its request: its task, TLS state.
pub const HANDSHAKE_FIXED_BYTES: usize = 8192;
/// Bytes of one HTTP read chunk during the handshake.
pub const HTTP_CHUNK: usize = 2048;
/// Largest WebSocket frame header a client sends (2 + 8-byte length + mask).
pub const CLIENT_HEADER_MAX: usize = 14;
/// Relay-wide tables outside the edge's per-connection state, at most: the ticket caches
/// (4,096 verified + 1,024 refused, about 2 KiB each), the ticket status table (8,192
/// records), the admission tables (4,096 sources). See docs/tickets.md.
pub const OTHER_TABLES_BYTES: usize = 16 << 20;

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
    /// Connections still in their HTTP request or WebSocket upgrade (before they count in
    /// `max_connections`); the next accepted socket gets a quick `503` and is closed.
    pub max_pending_handshakes: usize,
    /// The same, per source address (an IPv4 address or an IPv6 /64).
    pub max_pending_per_source: usize,
    /// Failed ticket checks (`401`) one source may cause: a burst, then a rate. Beyond it the
    /// handshake is answered `429` without looking at the ticket.
    pub ticket_failures: Rate,
    /// Sources whose ticket failures are remembered (a bounded table; the least suspicious
    /// source of a small random sample is forgotten when it is full).
    pub ticket_failure_sources: usize,
    /// Time a client has to finish its handshake: send the request and take the answer.
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
            // Each can hold up to handshake_bytes_bound() (~88 KiB with a full body).
            max_pending_handshakes: 1024,
            // A burst of clients behind one NAT all arrive at once.
            max_pending_per_source: 256,
            // An SDK retries a refused handshake once per second: it never runs out.
            ticket_failures: Rate {
                per_sec: 1,
                burst: 30,
            },
            ticket_failure_sources: 4096,
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

    /// Outbound backlog at which a connection whose socket still takes bytes makes the relay
    /// count as behind and pause intake (`broker::ReadStop::RelayBehind`): half the budget, so
    /// the deliveries of the frames already being handled (at most one per connection per
    /// frame) still fit. Intake resumes when every such backlog is down to half of this.
    pub fn behind_bytes(&self) -> usize {
        (self.queue_bytes / 2).max(1)
    }

    /// Patterns one deliver frame lists at most. The contract lists every matching pattern;
    /// the pattern-cost limits (`core::pattern`) bound how many of one connection's patterns
    /// can match one channel: one without wildcards, one per '#' prefix length
    /// (`MAX_PATTERN_SEGMENTS`), one per '*' the connection may hold
    /// (`MAX_STARS_PER_CONNECTION`) — 81. So this cap never cuts a list; it keeps a deliver
    /// frame bounded by construction (at most 81 × 257 bytes of patterns, not 256 × 257).
    pub fn max_deliver_patterns(&self) -> usize {
        self.max_subs_per_conn
            .min(1 + MAX_PATTERN_SEGMENTS + MAX_STARS_PER_CONNECTION)
    }

    /// Largest WebSocket frame the relay queues to a client: a deliver frame with both names
    /// at full length, a full payload and [`Limits::max_deliver_patterns`] full-length
    /// patterns (10 header + 1 tag + 2×(2+255) + 4 + 65,536 + 2 + n×(2+255)).
    pub fn max_outbound_frame(&self) -> usize {
        10 + 1
            + (2 + MAX_TENANT_LEN)
            + (2 + MAX_NAME_LEN)
            + 4
            + MAX_PAYLOAD_LEN
            + 2
            + self.max_deliver_patterns() * (2 + MAX_NAME_LEN)
    }

    /// Input a connection task can hold: a partly assembled message, an incomplete frame and
    /// the unhandled rest of one turn's read, each with its allocation slack.
    pub fn input_bytes_bound(&self) -> usize {
        2 * (self.max_frame_len + CLIENT_HEADER_MAX) + TURN_BYTES + 4096
    }

    /// Heap one upgraded connection can make the relay hold, at most (docs/edge.md,
    /// "Worst-case memory"): bookkeeping, its subscriptions, its outbound buffer (the budget,
    /// one partly written frame before it, the close frames) and its input. Replies past the
    /// read stop fit in the budget (`read_stop_bytes` is at most half of it).
    pub fn conn_bytes_bound(&self) -> usize {
        CONN_FIXED_BYTES
            + self.max_subs_per_conn * SUB_BYTES
            + self.queue_bytes
            + self.max_outbound_frame()
            + 4096
            + self.input_bytes_bound()
    }

    /// Heap one connection in its handshake can hold, at most: bookkeeping, its request head
    /// (while it grows: twice the limit), its body and one read chunk.
    pub fn handshake_bytes_bound(&self) -> usize {
        HANDSHAKE_FIXED_BYTES + 2 * self.max_http_head + self.max_http_body + 2 * HTTP_CHUNK
    }

    /// Relay-wide heap for the edge apart from connections: the shared read buffer, the
    /// spare outbound buffers and the other bounded tables ([`OTHER_TABLES_BYTES`]).
    pub fn shared_bytes_bound(&self) -> usize {
        TURN_BYTES + POOL_BUFFERS * queue_grow_cap(self.queue_bytes) + OTHER_TABLES_BYTES
    }

    /// The memory bound for `conns` upgraded connections and `pending` in their handshake,
    /// above the relay's idle footprint. Subscriptions are also capped relay-wide.
    pub fn relay_bytes_bound_for(&self, conns: usize, pending: usize) -> usize {
        let subs = conns
            .saturating_mul(self.max_subs_per_conn)
            .min(self.max_total_subs);
        let per_conn = self.conn_bytes_bound() - self.max_subs_per_conn * SUB_BYTES;
        conns
            .saturating_mul(per_conn)
            .saturating_add(subs.saturating_mul(SUB_BYTES))
            .saturating_add(pending.saturating_mul(self.handshake_bytes_bound()))
            .saturating_add(self.shared_bytes_bound())
    }

    /// The memory bound of the whole edge at its caps (`max_connections`,
    /// `max_pending_handshakes`), above the idle footprint.
    pub fn relay_bytes_bound(&self) -> usize {
        self.relay_bytes_bound_for(self.max_connections, self.max_pending_handshakes)
    }

    /// Sizes the connection caps to the open-files limit `nofile`, so the relay never runs
    /// out of descriptors: `max_connections + max_pending_handshakes + FD_RESERVE <= nofile`.
    /// A cap the operator did not set (`explicit_*` false) is sized quietly: the handshake cap
    /// to an eighth of what is free (at most its current value); the connection cap takes the
    /// rest. Returns a warning for every cap it had to lower below what was asked for.
    pub fn fit_to_fd_limit(
        &mut self,
        nofile: u64,
        explicit_connections: bool,
        explicit_pending: bool,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        let free = usize::try_from(nofile.saturating_sub(FD_RESERVE))
            .unwrap_or(usize::MAX)
            .max(2);
        let pending_cap = if explicit_pending {
            free / 2
        } else {
            (free / 8).max(1)
        };
        if self.max_pending_handshakes > pending_cap {
            if explicit_pending {
                notes.push(format!(
                    "--max-pending-handshakes {} does not fit the open-files limit {nofile}; using {pending_cap} (raise the limit, e.g. LimitNOFILE=, to allow more)",
                    self.max_pending_handshakes
                ));
            }
            self.max_pending_handshakes = pending_cap;
        }
        let conn_cap = free - self.max_pending_handshakes;
        if self.max_connections > conn_cap {
            notes.push(format!(
                "{} {} does not fit the open-files limit {nofile} (with {} connections in their handshake and {FD_RESERVE} descriptors kept free); using {conn_cap} (raise the limit, e.g. LimitNOFILE=, to allow more)",
                if explicit_connections {
                    "--max-connections"
                } else {
                    "the default --max-connections"
                },
                self.max_connections,
                self.max_pending_handshakes
            ));
            self.max_connections = conn_cap;
        }
        notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_bounds() {
        // The numbers docs/edge.md shows for the defaults.
        let l = Limits::default();
        assert_eq!(l.max_outbound_frame(), 66_067 + 81 * 257);
        assert_eq!(l.input_bytes_bound(), 2 * 66_066 + 65_536 + 4096);
        assert_eq!(SUB_BYTES, 3322);
        assert_eq!(l.conn_bytes_bound(), 1_409_416);
        assert_eq!(l.handshake_bytes_bound(), 94_208);
        assert_eq!(l.shared_bytes_bound(), 33_882_112);
        // 16,384 connections with 1,000,000 subscriptions relay-wide and 1,024 handshakes:
        // 11.7 GiB, most of it the budget and the input of every connection at once.
        assert_eq!(l.relay_bytes_bound(), 12_610_744_960);
    }

    #[test]
    fn caps_fit_the_open_files_limit() {
        // A generous limit changes nothing.
        let mut l = Limits::default();
        assert!(l.fit_to_fd_limit(1 << 20, false, false).is_empty());
        assert_eq!(
            (l.max_connections, l.max_pending_handshakes),
            (16_384, 1024)
        );
        // The common soft limit of 1024: both caps sized, the sum fits.
        let mut l = Limits::default();
        let notes = l.fit_to_fd_limit(1024, false, false);
        assert_eq!(l.max_pending_handshakes, 112);
        assert_eq!(l.max_connections, 1024 - 128 - 112);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("open-files limit 1024"), "{notes:?}");
        // Explicit values are kept when they fit, lowered with a warning when not.
        let mut l = Limits {
            max_connections: 100,
            max_pending_handshakes: 50,
            ..Limits::default()
        };
        assert!(l.fit_to_fd_limit(1024, true, true).is_empty());
        assert_eq!((l.max_connections, l.max_pending_handshakes), (100, 50));
        let mut l = Limits {
            max_connections: 20_000,
            max_pending_handshakes: 1000,
            ..Limits::default()
        };
        let notes = l.fit_to_fd_limit(20_000, true, true);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(l.max_pending_handshakes, 1000);
        assert_eq!(l.max_connections, 20_000 - 128 - 1000);
        assert!(l.max_connections + l.max_pending_handshakes + FD_RESERVE as usize <= 20_000);
    }
}
