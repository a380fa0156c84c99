//! Per-connection rate limits: token buckets for payload bytes (a ticket's ingress and egress
//! KB/s) and for commands (`SUB`/`UNSUB`, pings, answered publish refusals), plus the strike
//! count that closes a connection which keeps running into them.
//!
//! Sans-IO: every call takes `now`; nothing here reads a clock. The broker owns one
//! [`CommandLimiter`] per connection and asks it before it does the work a command costs.
//!
//! Policy (see `docs/edge.md`, "Limits"):
//! - a command over its rate is refused with `ERR:rate_limited:<WHAT>:…` and costs one strike;
//! - a publish refusal (permission, channel, ingress rate) is answered with its `ERR:` while
//!   the refusal-reply bucket has tokens; beyond that refusals are counted but not answered,
//!   except for one `ERR:rate_limited:PUB_REFUSALS:…` notice each time the bucket runs dry;
//! - when the strike bucket is empty the connection is closed (`ERR:rate_limited` + 1008).

use std::time::Instant;

use crate::limits::{Limits, Rate};

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    rate: u32,
    burst: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            rate: rate.per_sec,
            burst: rate.burst.max(1),
            tokens: f64::from(rate.burst.max(1)),
            last: now,
        }
    }

    /// A byte bucket whose burst is one second's worth.
    pub fn bytes_per_sec(rate: u32, now: Instant) -> Self {
        TokenBucket::new(
            Rate {
                per_sec: rate,
                burst: rate,
            },
            now,
        )
    }

    /// The refill rate per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Takes `n` tokens if there are that many (after refilling up to `now`).
    pub fn take(&mut self, n: usize, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * f64::from(self.rate)).min(f64::from(self.burst));
        let n = n as f64;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// A command class with its own rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `SUB` and `UNSUB` (one bucket).
    Subscription,
    /// Text `PING` and WebSocket Ping frames (one bucket).
    Ping,
}

/// What to do with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit: do it.
    Allow,
    /// Over the limit: refuse it with `ERR:rate_limited`.
    Refuse,
    /// Over the limit and out of strikes: refuse and close the connection.
    Close,
}

/// What to do with the `ERR:` answer of a refused publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReply {
    /// Send it.
    Answer,
    /// The reply bucket just ran dry: send one `ERR:rate_limited:PUB_REFUSALS` notice instead.
    Notice,
    /// Stay silent (counted).
    Silent,
    /// Out of strikes: close the connection.
    Close,
}

/// The command and refusal buckets of one connection.
#[derive(Debug, Clone)]
pub struct CommandLimiter {
    subscription: TokenBucket,
    ping: TokenBucket,
    refusal_replies: TokenBucket,
    strikes: TokenBucket,
    /// The refusal-reply bucket is dry and its notice was sent.
    refusals_muted: bool,
}

impl CommandLimiter {
    /// Full buckets with the rates of `limits`.
    pub fn new(limits: &Limits, now: Instant) -> Self {
        CommandLimiter {
            subscription: TokenBucket::new(limits.sub_rate, now),
            ping: TokenBucket::new(limits.ping_rate, now),
            refusal_replies: TokenBucket::new(limits.refusal_reply_rate, now),
            strikes: TokenBucket::new(limits.strike_rate, now),
            refusals_muted: false,
        }
    }

    /// Checks one command against its bucket; over the limit costs a strike.
    pub fn command(&mut self, cmd: Command, now: Instant) -> Verdict {
        let bucket = match cmd {
            Command::Subscription => &mut self.subscription,
            Command::Ping => &mut self.ping,
        };
        if bucket.take(1, now) {
            Verdict::Allow
        } else if self.strikes.take(1, now) {
            Verdict::Refuse
        } else {
            Verdict::Close
        }
    }

    /// A publish was refused: may its `ERR:` be sent? `strike` says whether the refusal is the
    /// client's fault beyond a plain rate (permission, channel); ingress-rate refusals never
    /// close a connection, they only go quiet.
    pub fn publish_refused(&mut self, strike: bool, now: Instant) -> RefusalReply {
        if self.refusal_replies.take(1, now) {
            self.refusals_muted = false;
            return RefusalReply::Answer;
        }
        if strike && !self.strikes.take(1, now) {
            return RefusalReply::Close;
        }
        if self.refusals_muted {
            RefusalReply::Silent
        } else {
            self.refusals_muted = true;
            RefusalReply::Notice
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> Limits {
        Limits {
            sub_rate: Rate {
                per_sec: 10,
                burst: 20,
            },
            ping_rate: Rate {
                per_sec: 2,
                burst: 3,
            },
            refusal_reply_rate: Rate {
                per_sec: 1,
                burst: 2,
            },
            strike_rate: Rate {
                per_sec: 1,
                burst: 5,
            },
            ..Limits::default()
        }
    }

    #[test]
    fn burst_then_rate_then_strikes_then_close() {
        let t0 = crate::clock::now();
        let mut l = CommandLimiter::new(&limits(), t0);
        for _ in 0..20 {
            assert_eq!(l.command(Command::Subscription, t0), Verdict::Allow);
        }
        // Over the burst: five strikes, then a close.
        for _ in 0..5 {
            assert_eq!(l.command(Command::Subscription, t0), Verdict::Refuse);
        }
        assert_eq!(l.command(Command::Subscription, t0), Verdict::Close);
        // A second later the bucket holds 10 again and a strike has come back.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(l.command(Command::Subscription, t1), Verdict::Allow);
        }
        assert_eq!(l.command(Command::Subscription, t1), Verdict::Refuse);
        assert_eq!(l.command(Command::Subscription, t1), Verdict::Close);
        // Pings have their own bucket.
        let mut l = CommandLimiter::new(&limits(), t0);
        let allowed = (0..10)
            .filter(|_| l.command(Command::Ping, t0) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 3);
    }

    #[test]
    fn publish_refusals_go_quiet_with_one_notice_and_close_only_for_strikes() {
        let t0 = crate::clock::now();
        let mut l = CommandLimiter::new(&limits(), t0);
        let seq: Vec<RefusalReply> = (0..6).map(|_| l.publish_refused(false, t0)).collect();
        use RefusalReply::*;
        assert_eq!(seq, [Answer, Answer, Notice, Silent, Silent, Silent]);
        // Refilled: answered again, and the next dry spell gets a new notice.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(l.publish_refused(false, t1), Answer);
        assert_eq!(l.publish_refused(false, t1), Notice);
        // Refusals that strike close once the strikes are gone; rate refusals never do.
        let mut l = CommandLimiter::new(&limits(), t0);
        let seq: Vec<RefusalReply> = (0..9).map(|_| l.publish_refused(true, t0)).collect();
        assert_eq!(
            seq,
            [
                Answer, Answer, Notice, Silent, Silent, Silent, Silent, Close, Close
            ]
        );
        let mut l = CommandLimiter::new(&limits(), t0);
        assert!((0..1000).all(|_| l.publish_refused(false, t0) != Close));
    }

    #[test]
    fn byte_bucket_refills_at_its_rate() {
        let t0 = crate::clock::now();
        let mut b = TokenBucket::bytes_per_sec(1000, t0);
        assert!(b.take(1000, t0));
        assert!(!b.take(1, t0));
        assert!(b.take(500, t0 + Duration::from_millis(500)));
        assert!(!b.take(100, t0 + Duration::from_millis(500)));
        assert_eq!(b.rate(), 1000);
    }
}
