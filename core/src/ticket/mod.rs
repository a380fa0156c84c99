//! Access tickets: format, verification into fixed-size claims, grant checks, status table.
//!
//! A ticket is the token string `AT_<id>_<secret>` of the client contract (LLPS §1):
//! `<id>` is the lowercase hex of the postcard-encoded [`Claims`], `<secret>` the lowercase
//! hex of an Ed25519 signature over `TICKET_DOMAIN || claims`. Any relay holding the
//! overlay's public key checks a ticket on its own, with no database and no allocation;
//! only a relay given the signing key can [`issue`] one.
//!
//! How it is called:
//! - issuing: build [`Grant`]s and a [`ClaimsSpec`], then [`Claims::new`] (every cap and
//!   rule checked, the cap named on refusal) and [`issue`] into a `MAX_TOKEN_LEN` buffer;
//! - admitting a connection: [`verify_signature`] + [`Claims::decode`] (or [`verify`]),
//!   then [`StatusTable::check`] (revoked / refreshed / expired) and
//!   [`Claims::check_access`] (IP, Origin, protocol);
//! - per command: [`Claims::may_subscribe`] and [`Claims::may_publish`];
//! - refresh/revoke: [`StatusRecord`]s applied to a bounded [`StatusTable`].
//!
//! The public API exposes `ed25519_dalek` key types on purpose: they are the key format.

mod claims;
mod error;
mod hex;
pub mod limits;
mod status;
mod token;

pub use claims::{Claims, ClaimsSpec, Grant, IpMask, Protocols};
pub use error::{AccessDenied, Cap, IssueError, Malformed, StatusTableFull, TicketError};
#[cfg(feature = "alloc")]
pub use status::HeapSlots;
pub use status::{
    Applied, FixedSlots, STATUS_RECORD_MAX_LEN, StatusAction, StatusRecord, StatusSlots,
    StatusTable, TicketStatus,
};
pub use token::{TicketBuf, decode_token_id, issue, split_token, verify, verify_signature};
