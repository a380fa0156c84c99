//! Ticket errors, split by blame: a presented ticket that is refused ([`TicketError`]),
//! claims that cannot be issued ([`IssueError`]), and a full status table
//! ([`StatusTableFull`]).

use core::fmt;

use super::limits::{
    MAX_CLAIMS_LEN, MAX_GRANTS, MAX_IP_MASKS, MAX_KB_PER_SEC, MAX_ORIGIN_LEN, MAX_ORIGINS,
    MAX_PATTERNS_PER_GRANT, MAX_TENANT_LEN, MAX_TENANTS_PER_GRANT, MAX_TTL_SECS, MIN_KB_PER_SEC,
};
use crate::pattern::{MAX_NAME_LEN, PatternError};

/// A capacity of the ticket format; each one is a constant in [`super::limits`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cap {
    /// [`MAX_GRANTS`] tenant grants per ticket.
    Grants,
    /// [`MAX_TENANTS_PER_GRANT`] tenant ids per grant.
    TenantsPerGrant,
    /// [`MAX_PATTERNS_PER_GRANT`] publish patterns per grant.
    PubPatternsPerGrant,
    /// [`MAX_PATTERNS_PER_GRANT`] subscribe patterns per grant.
    SubPatternsPerGrant,
    /// [`MAX_NAME_LEN`] bytes per pattern.
    PatternLen,
    /// [`MAX_TENANT_LEN`] bytes per tenant id.
    TenantLen,
    /// [`MAX_ORIGINS`] allowed WebSocket origins.
    Origins,
    /// [`MAX_ORIGIN_LEN`] bytes per origin.
    OriginLen,
    /// [`MAX_IP_MASKS`] IP masks.
    IpMasks,
    /// [`MAX_CLAIMS_LEN`] bytes of encoded claims (the whole ticket must fit in a header).
    EncodedSize,
}

impl Cap {
    /// The numeric limit of this cap.
    pub const fn limit(self) -> usize {
        match self {
            Self::Grants => MAX_GRANTS,
            Self::TenantsPerGrant => MAX_TENANTS_PER_GRANT,
            Self::PubPatternsPerGrant | Self::SubPatternsPerGrant => MAX_PATTERNS_PER_GRANT,
            Self::PatternLen => MAX_NAME_LEN,
            Self::TenantLen => MAX_TENANT_LEN,
            Self::Origins => MAX_ORIGINS,
            Self::OriginLen => MAX_ORIGIN_LEN,
            Self::IpMasks => MAX_IP_MASKS,
            Self::EncodedSize => MAX_CLAIMS_LEN,
        }
    }

    /// A short name of what is counted, for messages.
    pub const fn what(self) -> &'static str {
        match self {
            Self::Grants => "tenant_grants per ticket",
            Self::TenantsPerGrant => "tenant_ids per grant",
            Self::PubPatternsPerGrant => "allow_channels_pub patterns per grant",
            Self::SubPatternsPerGrant => "allow_channels_sub patterns per grant",
            Self::PatternLen => "bytes per channel pattern",
            Self::TenantLen => "bytes per tenant id",
            Self::Origins => "allowed_ws_origin entries",
            Self::OriginLen => "bytes per allowed_ws_origin entry",
            Self::IpMasks => "allow_ip_masks entries",
            Self::EncodedSize => "bytes of encoded ticket claims",
        }
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at most {} {}", self.limit(), self.what())
    }
}

/// What is wrong with the shape of a presented ticket.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The token does not start with `AT_`.
    Prefix,
    /// No `_` separates the id from the secret, or a part is empty.
    Parts,
    /// The id is not lowercase hex of an even length.
    IdHex,
    /// The id decodes to more than [`MAX_CLAIMS_LEN`] bytes.
    IdTooLong,
    /// The secret is not 128 lowercase hex digits (a 64-byte signature).
    SecretHex,
    /// The claims do not decode (postcard), exceed a cap, or have trailing bytes.
    Claims,
    /// The claims decode but are inconsistent (e.g. expiry before issue).
    Inconsistent,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Prefix => "token does not start with AT_",
            Self::Parts => "token is not AT_<id>_<secret> with both parts non-empty",
            Self::IdHex => "token id is not lowercase hex",
            Self::IdTooLong => "token id is longer than any ticket this relay accepts",
            Self::SecretHex => "token secret is not a 128-digit lowercase hex signature",
            Self::Claims => "token claims do not decode",
            Self::Inconsistent => "token claims are inconsistent",
        })
    }
}

impl core::error::Error for Malformed {}

/// Why a presented ticket is refused. Every variant blames the ticket (the peer).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketError {
    /// The token is not a well-formed ticket.
    Malformed(Malformed),
    /// The claims carry a format version this code does not know.
    UnsupportedVersion(u8),
    /// The signature does not verify with the configured public key (forged or altered).
    BadSignature,
    /// The ticket expired at `expired_at` (unix seconds).
    Expired {
        /// Effective expiry, after any refresh.
        expired_at: u64,
    },
    /// The ticket's issue time is later than now (beyond the allowed clock skew).
    NotYetValid {
        /// Issue time, unix seconds.
        issued_at: u64,
    },
    /// The ticket was revoked.
    Revoked,
}

impl fmt::Display for TicketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "malformed ticket: {m}"),
            Self::UnsupportedVersion(v) => {
                write!(f, "ticket format version {v} is not supported (expected 1)")
            }
            Self::BadSignature => f.write_str(
                "ticket signature does not verify (forged, altered or another overlay's key)",
            ),
            Self::Expired { expired_at } => write!(f, "ticket expired at unix time {expired_at}"),
            Self::NotYetValid { issued_at } => {
                write!(
                    f,
                    "ticket is not valid yet (issued at unix time {issued_at}; check clocks)"
                )
            }
            Self::Revoked => f.write_str("ticket was revoked"),
        }
    }
}

impl core::error::Error for TicketError {}

/// Why claims cannot be issued as a ticket. Every variant blames the request (the caller).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueError {
    /// A capacity of the format is exceeded; the cap says which.
    OverCap(Cap),
    /// `expires_at` is not after `issued_at`.
    ExpiresBeforeIssue,
    /// `expires_at` is more than [`MAX_TTL_SECS`] after `issued_at`.
    TtlTooLong {
        /// Requested lifetime in seconds.
        ttl_secs: u64,
    },
    /// The ticket grants nothing.
    NoGrants,
    /// A grant lists no tenant id.
    GrantWithoutTenant {
        /// Index of the grant, from 0.
        grant: usize,
    },
    /// A tenant id is empty, contains `:`, a control character or whitespace.
    InvalidTenant {
        /// Index of the grant, from 0.
        grant: usize,
    },
    /// A publish or subscribe pattern is not a valid pattern.
    InvalidPattern {
        /// Index of the grant, from 0.
        grant: usize,
        /// True for `allow_channels_pub`, false for `allow_channels_sub`.
        publish: bool,
        /// Why.
        why: PatternError,
    },
    /// An origin is empty or contains a control character or whitespace.
    InvalidOrigin,
    /// An IP mask is not `ADDR` or `ADDR/PREFIX` with a prefix within the family.
    InvalidIpMask,
    /// A KB/s limit is outside [`MIN_KB_PER_SEC`]..=[`MAX_KB_PER_SEC`].
    KbPerSecOutOfRange {
        /// True for ingress, false for egress.
        ingress: bool,
        /// The requested value.
        value: u32,
    },
    /// The protocol set is empty.
    NoProtocols,
    /// The caller's output buffer is smaller than [`super::limits::MAX_TOKEN_LEN`].
    BufferTooSmall,
}

impl fmt::Display for IssueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OverCap(cap) => write!(f, "over cap: {cap}"),
            Self::ExpiresBeforeIssue => f.write_str("expires_at must be later than now"),
            Self::TtlTooLong { ttl_secs } => write!(
                f,
                "expires_at is {ttl_secs} s ahead; at most {MAX_TTL_SECS} s (24 h) is allowed"
            ),
            Self::NoGrants => f.write_str("tenant_grants is empty: the ticket would grant nothing"),
            Self::GrantWithoutTenant { grant } => {
                write!(f, "tenant_grants[{grant}].tenant_ids is empty")
            }
            Self::InvalidTenant { grant } => write!(
                f,
                "tenant_grants[{grant}].tenant_ids has an empty id or one with ':', whitespace or control characters"
            ),
            Self::InvalidPattern { grant, publish, why } => write!(
                f,
                "tenant_grants[{grant}].{}: invalid pattern: {why}",
                if *publish { "allow_channels_pub" } else { "allow_channels_sub" }
            ),
            Self::InvalidOrigin => f.write_str(
                "allowed_ws_origin has an empty entry or one with whitespace or control characters",
            ),
            Self::InvalidIpMask => f.write_str(
                "allow_ip_masks has an entry that is not ADDR or ADDR/PREFIX (e.g. 10.0.0.0/8, 2001:db8::/32)",
            ),
            Self::KbPerSecOutOfRange { ingress, value } => write!(
                f,
                "{} is {value}; it must be in [{MIN_KB_PER_SEC}, {MAX_KB_PER_SEC}]",
                if *ingress { "ingress_kb_per_sec" } else { "egress_kb_per_sec" }
            ),
            Self::NoProtocols => f.write_str("allow_protocols is empty: the ticket would allow nothing"),
            Self::BufferTooSmall => f.write_str("output buffer smaller than MAX_TOKEN_LEN"),
        }
    }
}

impl core::error::Error for IssueError {}

/// The status table has no free slot for a new ticket id, even after dropping expired
/// records. A capacity error: nothing was stored, nothing was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusTableFull {
    /// The table's configured capacity.
    pub capacity: usize,
}

impl fmt::Display for StatusTableFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ticket status table is full ({} live refresh/revoke records); retry later or raise its capacity",
            self.capacity
        )
    }
}

impl core::error::Error for StatusTableFull {}

/// A valid ticket that is not allowed for this connection (HTTP 403 at the handshake).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessDenied {
    /// The client's IP address is outside every `allow_ip_masks` network.
    Ip,
    /// The browser `Origin` is missing or not in `allowed_ws_origin`.
    Origin,
    /// The transport is not in `allow_protocols`.
    Protocol,
}

impl fmt::Display for AccessDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ip => "ticket is not allowed from this IP address (allow_ip_masks)",
            Self::Origin => "ticket is not allowed from this Origin (allowed_ws_origin)",
            Self::Protocol => "ticket is not allowed over this protocol (allow_protocols)",
        })
    }
}

impl core::error::Error for AccessDenied {}
