//! The `ERR:` answers of the client edges (WebSocket in `ws::conn`, WebTransport in
//! `wt::session`): one refusal has one text whichever edge the client came in on, and the
//! rate limits on commands and on refusal replies apply the same way.

use fastpubsub_core::frame::{Command, Reply};

use super::limiter::{Command as Limited, RefusalReply, Verdict};
use super::{Broker, ConnId, PubError, SubError};

impl SubError {
    /// The `ERR:` reason code and the explanation after the names (empty when the code says
    /// it all).
    pub fn answer(&self) -> (&'static str, String) {
        match self {
            SubError::InvalidPattern(pe) => ("invalid_pattern", pe.to_string()),
            SubError::TooComplex(e) => ("pattern_too_complex", e.to_string()),
            SubError::PermissionDenied => ("permission_denied", String::new()),
            SubError::TooManyForConnection(n) => (
                "too_many_subscriptions",
                format!("this connection already holds the maximum of {n} subscriptions"),
            ),
            SubError::RelayFull(n) => (
                "relay_full",
                format!("this relay holds its maximum of {n} subscriptions"),
            ),
        }
    }
}

impl PubError {
    /// The `ERR:` reason code, the explanation, and whether the refusal is a strike against
    /// the connection's refusal budget (`broker::limiter`; a rate limit is not).
    pub fn answer(&self) -> (&'static str, String, bool) {
        match self {
            PubError::InvalidChannel(pe) => ("invalid_channel", pe.to_string(), true),
            PubError::PermissionDenied => ("permission_denied", String::new(), true),
            PubError::RateLimited(rate) => (
                "rate_limited",
                format!("over this connection's ingress limit of {rate} bytes/s"),
                false,
            ),
        }
    }
}

/// `[verb, a, b, why]`, without `why` when it is empty.
fn parts<'a>(all: &'a [&'a str; 4]) -> &'a [&'a str] {
    if all[3].is_empty() {
        &all[..3]
    } else {
        &all[..]
    }
}

impl Broker {
    /// Answers `ERR:<reason>:<why>` for a malformed frame; closes the connection once it sent
    /// more than `Limits::max_bad_frames`.
    pub fn refuse_malformed(&mut self, id: ConnId, reason: &str, why: &str) {
        let max = self.limits().max_bad_frames;
        self.send_reply(
            id,
            &Reply::Err {
                reason,
                parts: &[why],
            },
        );
        let count = self.conn_mut(id).map_or(0, |c| c.note_bad_frame());
        if count > max {
            if count == max + 1 {
                self.stats.bad_frames_closed += 1;
            }
            let why = format!("more than {max} malformed frames");
            self.close(id, 1008, &why, Some(("too_many_bad_frames", &why)), false);
        }
    }

    /// The explanation of an `ERR:rate_limited` answer: `what` was limited, at which rate.
    pub fn rate_limited_why(&self, limited: Limited, what: &str) -> String {
        let l = self.limits();
        let r = match limited {
            Limited::Subscription => l.sub_rate,
            _ => l.ping_rate,
        };
        format!(
            "more than {} {what} per second (bursts of {}) on this connection; slow down",
            r.per_sec, r.burst
        )
    }

    /// Checks `SUB`/`UNSUB`/`PING` against the connection's command rate and answers
    /// `ERR:rate_limited` when it is over (`pings` names what the ping limit counts on this
    /// edge). `false`: do not carry the command out.
    pub fn admit_command(&mut self, id: ConnId, cmd: &Command<'_>, pings: &str) -> bool {
        let (limited, verb, tenant, pattern) = match cmd {
            Command::Ping => (Limited::Ping, "PING", "", ""),
            Command::Sub { tenant, pattern } => (Limited::Subscription, "SUB", *tenant, *pattern),
            Command::Unsub { tenant, pattern } => {
                (Limited::Subscription, "UNSUB", *tenant, *pattern)
            }
            _ => return true,
        };
        match self.check_command(id, limited) {
            Verdict::Allow => true,
            Verdict::Close => false,
            Verdict::Refuse => {
                let what = match limited {
                    Limited::Subscription => "SUB/UNSUB",
                    _ => pings,
                };
                let why = self.rate_limited_why(limited, what);
                let all = [verb, tenant, pattern, why.as_str()];
                let parts = if tenant.is_empty() {
                    &[verb, why.as_str()][..]
                } else {
                    &all[..]
                };
                self.send_reply(
                    id,
                    &Reply::Err {
                        reason: "rate_limited",
                        parts,
                    },
                );
                false
            }
        }
    }

    /// Answers a refused `SUB:<tenant>:<pattern>`.
    pub fn answer_sub_refused(&mut self, id: ConnId, tenant: &str, pattern: &str, e: &SubError) {
        let (reason, why) = e.answer();
        let all = ["SUB", tenant, pattern, why.as_str()];
        self.send_reply(
            id,
            &Reply::Err {
                reason,
                parts: parts(&all),
            },
        );
    }

    /// Answers a refused publish to `tenant`/`channel` (within the refusal-reply rate).
    pub fn answer_publish_refused(&mut self, id: ConnId, tenant: &str, channel: &str, e: PubError) {
        let (reason, why, strike) = e.answer();
        let all = ["PUB", tenant, channel, why.as_str()];
        self.answer_refused_publish(id, reason, parts(&all), strike);
    }

    /// Answers a refused publish with `ERR:<reason>:<parts>` while the connection's
    /// refusal-reply rate allows, then once with a notice, then silently (counted); a
    /// `strike` counts against the connection's refusal budget (`broker::limiter`).
    pub fn answer_refused_publish(
        &mut self,
        id: ConnId,
        reason: &str,
        parts: &[&str],
        strike: bool,
    ) {
        match self.publish_refused(id, strike) {
            RefusalReply::Answer => self.send_reply(id, &Reply::Err { reason, parts }),
            RefusalReply::Notice => {
                let r = self.limits().refusal_reply_rate;
                let why = format!(
                    "more than {} refused publishes per second (bursts of {}) on this connection; further refusals are counted but not answered until the rate drops",
                    r.per_sec, r.burst
                );
                self.send_reply(
                    id,
                    &Reply::Err {
                        reason: "rate_limited",
                        parts: &["PUB_REFUSALS", &why],
                    },
                );
            }
            RefusalReply::Silent | RefusalReply::Close => {}
        }
    }
}
