//! Every capacity and constant of the ticket format, in one place.

/// Current claims format version (first byte of the encoded claims).
pub const FORMAT_VERSION: u8 = 1;
/// Domain separation prefix of the signed message of a ticket: `DOMAIN || claims`.
pub const TICKET_DOMAIN: &[u8] = b"fastpubsub-ticket-v1\0";
/// Domain separation prefix of the signed message of a status (refresh/revoke) record.
pub const STATUS_DOMAIN: &[u8] = b"fastpubsub-ticket-status-v1\0";

/// Longest lifetime of a ticket, and furthest a refresh may push its expiry: 24 h.
pub const MAX_TTL_SECS: u64 = 24 * 60 * 60;
/// How far a ticket's issue time may be in the future (clock skew between relays).
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;

/// Tenant grants per ticket.
pub const MAX_GRANTS: usize = 4;
/// Tenant ids per grant.
pub const MAX_TENANTS_PER_GRANT: usize = 4;
/// Publish patterns per grant, and (separately) subscribe patterns per grant.
pub const MAX_PATTERNS_PER_GRANT: usize = 8;
pub use crate::limits::MAX_TENANT_LEN;
/// Allowed WebSocket origins per ticket.
pub const MAX_ORIGINS: usize = 4;
/// Bytes per origin (`scheme://host[:port]`).
pub const MAX_ORIGIN_LEN: usize = 255;
/// IP masks per ticket.
pub const MAX_IP_MASKS: usize = 8;
/// Bytes of encoded claims. Bounds the whole token to [`MAX_TOKEN_LEN`] so that it fits in
/// an HTTP header, whatever mix of the per-field caps a request uses.
pub const MAX_CLAIMS_LEN: usize = 2048;
/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Bytes of the random ticket id inside the claims.
pub const TICKET_ID_LEN: usize = 16;
/// Longest token string: `AT_` + hex(claims) + `_` + hex(signature).
pub const MAX_TOKEN_LEN: usize = 3 + 2 * MAX_CLAIMS_LEN + 1 + 2 * SIGNATURE_LEN;

/// Smallest allowed ingress/egress limit, KB/s (LLPS §1).
pub const MIN_KB_PER_SEC: u32 = 8;
/// Largest allowed ingress/egress limit, KB/s (LLPS §1).
pub const MAX_KB_PER_SEC: u32 = 16384;
