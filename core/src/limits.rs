//! The size limits of the client contract (LLPS v0.1 sections 3 and 5), defined once.
//!
//! Frames, patterns, mesh messages, tickets and the relay all use these (the modules
//! re-export them under their historical names, e.g. `frame::limits::MAX_TENANT_LEN`,
//! `pattern::MAX_NAME_LEN`, `mesh::MAX_TENANT`); nothing else defines them.

/// Largest tenant name in bytes (spec section 5).
pub const MAX_TENANT_LEN: usize = 255;
/// Largest channel or pattern in bytes (spec section 5).
pub const MAX_NAME_LEN: usize = 255;
/// Largest publish/deliver payload in bytes: 64 KiB (spec section 3).
pub const MAX_PAYLOAD_LEN: usize = 65_536;
