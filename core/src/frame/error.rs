//! Errors of the frame codec, split by blame: [`FrameError`] is the peer's input,
//! [`EncodeError`] is the caller's misuse of an encoder.

use core::fmt;

use super::limits::{MAX_NAME_LEN, MAX_PAYLOAD_LEN, MAX_TENANT_LEN};

/// A frame or command from the peer that breaks the contract. The `Display` text says what
/// and why, ready to follow `ERR:bad_frame:` (see [`FrameError::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame ends before the named field is complete.
    Truncated {
        /// Which field was cut short.
        field: &'static str,
    },
    /// A v2 publish names a delivery mode other than 0, 1 or 2.
    UnknownMode {
        /// The mode byte received.
        mode: u8,
    },
    /// A str16 field has length 0.
    EmptyField {
        /// Which field.
        field: &'static str,
    },
    /// A str16 field is not valid UTF-8.
    NotUtf8 {
        /// Which field.
        field: &'static str,
    },
    /// The tenant is empty.
    EmptyTenant,
    /// The tenant is longer than [`MAX_TENANT_LEN`].
    TenantTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The tenant contains `:`.
    TenantHasColon,
    /// The tenant contains an ASCII control character or whitespace.
    TenantBadByte {
        /// The offending byte.
        byte: u8,
    },
    /// A channel or pattern is longer than [`MAX_NAME_LEN`].
    NameTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// The payload is larger than [`MAX_PAYLOAD_LEN`].
    PayloadTooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// A text frame is none of `SUB:`, `UNSUB:`, `PING`.
    UnknownCommand,
    /// Bytes follow the last field of a frame that must end there.
    Trailing {
        /// How many extra bytes.
        extra: usize,
    },
    /// A `SUB`/`UNSUB` command lacks the `:` between tenant and pattern.
    MissingPattern,
}

impl FrameError {
    /// The `ERR:` reason code this error maps to: `payload_too_large` for an oversize
    /// payload, `invalid_tenant` for a bad tenant, `invalid_pattern`/`invalid_channel` for an
    /// oversize name, `bad_frame` for a structurally broken frame.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::PayloadTooLarge { .. } => "payload_too_large",
            FrameError::TenantTooLong { .. }
            | FrameError::TenantHasColon
            | FrameError::TenantBadByte { .. }
            | FrameError::EmptyTenant => "invalid_tenant",
            FrameError::NameTooLong { field, .. } if *field == "pattern" => "invalid_pattern",
            FrameError::NameTooLong { .. } => "invalid_channel",
            _ => "bad_frame",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Truncated { field } => write!(f, "frame ends inside the {field}"),
            FrameError::UnknownMode { mode } => {
                write!(f, "unknown delivery mode {mode} (expected 0, 1 or 2)")
            }
            FrameError::EmptyField { field } => write!(f, "the {field} is empty"),
            FrameError::NotUtf8 { field } => write!(f, "the {field} is not valid UTF-8"),
            FrameError::EmptyTenant => f.write_str("the tenant is empty"),
            FrameError::TenantTooLong { len } => {
                write!(f, "the tenant is {len} bytes (at most {MAX_TENANT_LEN})")
            }
            FrameError::TenantHasColon => f.write_str("the tenant contains ':'"),
            FrameError::TenantBadByte { byte } => {
                write!(
                    f,
                    "the tenant contains byte 0x{byte:02x} (no control characters or whitespace)"
                )
            }
            FrameError::NameTooLong { field, len } => {
                write!(f, "the {field} is {len} bytes (at most {MAX_NAME_LEN})")
            }
            FrameError::PayloadTooLarge { len } => {
                write!(f, "the payload is {len} bytes (at most {MAX_PAYLOAD_LEN})")
            }
            FrameError::UnknownCommand => {
                f.write_str("unknown command (expected SUB:<tenant>:<pattern>, UNSUB:<tenant>:<pattern> or PING)")
            }
            FrameError::Trailing { extra } => write!(f, "{extra} unexpected bytes after the last field"),
            FrameError::MissingPattern => {
                f.write_str("missing ':' between tenant and pattern (expected SUB:<tenant>:<pattern>)")
            }
        }
    }
}

impl core::error::Error for FrameError {}

/// The caller asked an encoder for something the contract cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is shorter than the encoded length.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A field is longer than its limit (tenant, channel, pattern or payload).
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A field that must be non-empty is empty.
    EmptyField {
        /// Which field.
        field: &'static str,
    },
    /// A deliver frame needs between 1 and 65,535 patterns.
    PatternCount {
        /// The count given.
        count: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed, available } => {
                write!(f, "output buffer holds {available} bytes, {needed} needed")
            }
            EncodeError::FieldTooLong { field, len } => {
                write!(
                    f,
                    "the {field} is {len} bytes, longer than the contract allows"
                )
            }
            EncodeError::EmptyField { field } => write!(f, "the {field} must not be empty"),
            EncodeError::PatternCount { count } => {
                write!(f, "a deliver frame lists 1..=65535 patterns, not {count}")
            }
        }
    }
}

impl core::error::Error for EncodeError {}
