//! LLPS v0.1 client frame codec: publish v1/v2 and text commands in, deliver frames and replies out.
//!
//! Everything here follows `spec/llps-v0.1.md` section 3. Decoders are zero-copy views over
//! the input slice ([`Publish::new_checked`], [`Command::parse`]): they validate once and their
//! accessors cannot panic. Encoders never allocate: they report their [`Deliver::encoded_len`]
//! first and then write into a caller buffer (`&mut [u8]`) or hand their pieces to a sink
//! closure, so a relay can append a frame straight into a connection's outbound queue.
//!
//! All limits of the contract live in [`limits`].

mod command;
mod deliver;
mod error;
pub mod limits;
mod publish;
mod reply;
mod str16;

pub use command::Command;
pub use deliver::{Deliver, DeliverView};
pub use error::{EncodeError, FrameError};
pub use publish::{Mode, Publish, Version};
pub use reply::Reply;

/// Checks a tenant name as the contract limits it: 1..=[`limits::MAX_TENANT_LEN`] bytes,
/// no `:` (it separates fields in text commands), no ASCII control characters or whitespace.
pub fn validate_tenant(tenant: &str) -> Result<(), FrameError> {
    if tenant.is_empty() {
        return Err(FrameError::EmptyTenant);
    }
    if tenant.len() > limits::MAX_TENANT_LEN {
        return Err(FrameError::TenantTooLong { len: tenant.len() });
    }
    for b in tenant.bytes() {
        if b == b':' {
            return Err(FrameError::TenantHasColon);
        }
        if b.is_ascii_control() || b.is_ascii_whitespace() {
            return Err(FrameError::TenantBadByte { byte: b });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
