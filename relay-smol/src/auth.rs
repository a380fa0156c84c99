//! The authorization seam: every WebSocket handshake goes through one [`Authorizer`].
//!
//! The edge calls [`Authorizer::authorize`] once per handshake with what it knows
//! ([`HandshakeRequest`]). The answer is either a per-connection [`Access`] object, which
//! the edge then asks before every `SUB` and publish and polls about once a second for
//! expiry or revocation, or a [`Refusal`] (HTTP status + body, no WebSocket opened).
//!
//! Implementations: [`AllowAll`] (only behind the explicit `--insecure-no-auth` flag) and
//! the access-ticket checker in `tickets` (when configured).
//!
//! Keep `authorize` cheap for repeated bad tokens: the published SDK retries a refused
//! handshake once per second forever.

use std::net::IpAddr;
use std::time::SystemTime;

/// What the edge knows about a handshake.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeRequest<'a> {
    /// The access token from `Sec-WebSocket-Protocol: llps.v1,at.<TOKEN>` or
    /// `Authorization: Bearer <TOKEN>`, if any.
    pub token: Option<&'a str>,
    /// The peer's IP address.
    pub peer: IpAddr,
    /// The `Origin` header (browsers), if any.
    pub origin: Option<&'a str>,
    /// Wall-clock now.
    pub now: SystemTime,
    /// Which edge the client came in on (a ticket's `allow_protocols` may exclude one).
    pub protocol: Protocol,
}

/// The client edge of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// WebSocket (`/ws`).
    #[default]
    WebSocket,
    /// WebTransport (HTTP/3 over QUIC).
    WebTransport,
}

/// A refused handshake: the HTTP status (401 bad/missing token, 403 not allowed from here)
/// and a short body that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status code.
    pub status: u16,
    /// Body text: what is wrong and what to do.
    pub reason: String,
}

/// Optional per-connection rate limits, in bytes per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Publish payload bytes the client may send per second (`None` = unlimited).
    pub ingress_bytes_per_sec: Option<u32>,
    /// Delivered payload bytes the client may receive per second (`None` = unlimited).
    pub egress_bytes_per_sec: Option<u32>,
}

/// What one authorized connection may do. Owned by the connection for its lifetime.
pub trait Access {
    /// May this connection publish on `channel` (concrete, validated) in `tenant`?
    fn may_publish(&self, tenant: &str, channel: &str) -> bool;
    /// May this connection subscribe to `pattern` (validated) in `tenant`? Every channel
    /// the pattern can match must be allowed (pattern containment).
    fn may_subscribe(&self, tenant: &str, pattern: &str) -> bool;
    /// Rate limits of this connection.
    fn rate_limits(&self) -> RateLimits {
        RateLimits::default()
    }
    /// Is the access still valid at `now`? `Err(reason)` (e.g. "token expired",
    /// "token revoked") makes the edge send `ERR:access_ended:<reason>` and close the
    /// connection. Called about once a second; keep it cheap.
    fn check(&self, now: SystemTime) -> Result<(), String> {
        let _ = now;
        Ok(())
    }
}

/// Decides every handshake.
pub trait Authorizer {
    /// Allow (with the connection's [`Access`]) or refuse a handshake.
    fn authorize(&self, req: &HandshakeRequest<'_>) -> Result<Box<dyn Access>, Refusal>;
}

/// Allows everything to everyone. Used only with `--insecure-no-auth`, which logs a loud
/// warning at startup.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Access for AllowAll {
    fn may_publish(&self, _tenant: &str, _channel: &str) -> bool {
        true
    }
    fn may_subscribe(&self, _tenant: &str, _pattern: &str) -> bool {
        true
    }
}

impl Authorizer for AllowAll {
    fn authorize(&self, _req: &HandshakeRequest<'_>) -> Result<Box<dyn Access>, Refusal> {
        Ok(Box::new(AllowAll))
    }
}
