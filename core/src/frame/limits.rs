//! Every size limit and fixed offset of the client frames, in one place (the contract's
//! name and payload limits are [`crate::limits`]'s, re-exported here).

pub use crate::limits::{MAX_NAME_LEN, MAX_PAYLOAD_LEN, MAX_TENANT_LEN};
/// Largest number of patterns one deliver frame can list (`count` is a `u16`).
pub const MAX_DELIVER_PATTERNS: usize = u16::MAX as usize;

/// First byte of a v2 publish frame.
pub const PUBLISH_V2_TAG: u8 = 0x02;
/// First byte of a deliver frame.
pub const DELIVER_TAG: u8 = 0x01;
/// Bytes before the tenant in a v2 publish: tag and mode.
pub const PUBLISH_V2_HEADER_LEN: usize = 2;

/// Largest publish frame a conforming client can send: v2 header, two full-size str16
/// fields and a full-size payload. A relay's WebSocket message limit must be at least this.
pub const MAX_PUBLISH_FRAME_LEN: usize =
    PUBLISH_V2_HEADER_LEN + 2 + MAX_TENANT_LEN + 2 + MAX_NAME_LEN + MAX_PAYLOAD_LEN;

/// Largest text command: `UNSUB:` + tenant + `:` + pattern.
pub const MAX_COMMAND_LEN: usize = 6 + MAX_TENANT_LEN + 1 + MAX_NAME_LEN;
