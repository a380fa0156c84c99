//! Client → edge text commands: `SUB:<tenant>:<pattern>`, `UNSUB:<tenant>:<pattern>`, `PING`.

use super::FrameError;
use super::limits::MAX_NAME_LEN;
use super::validate_tenant;

/// A parsed text command, borrowing from the text frame.
///
/// The pattern is checked for length and non-emptiness only; its syntax (segments,
/// wildcards) is checked by the `pattern` module so the relay can answer
/// `ERR:invalid_pattern` with the exact reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command<'a> {
    /// Subscribe this connection to `pattern` in `tenant`.
    Sub {
        /// Tenant, validated by [`super::validate_tenant`].
        tenant: &'a str,
        /// Everything after the second `:`, exactly as sent.
        pattern: &'a str,
    },
    /// Remove that subscription.
    Unsub {
        /// Tenant, validated by [`super::validate_tenant`].
        tenant: &'a str,
        /// Everything after the second `:`, exactly as sent.
        pattern: &'a str,
    },
    /// Application ping; answered with `PONG`.
    Ping,
}

impl<'a> Command<'a> {
    /// Parses one text frame.
    pub fn parse(text: &'a str) -> Result<Self, FrameError> {
        if text == "PING" {
            return Ok(Command::Ping);
        }
        let (is_sub, rest) = if let Some(rest) = text.strip_prefix("SUB:") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("UNSUB:") {
            (false, rest)
        } else {
            return Err(FrameError::UnknownCommand);
        };
        let (tenant, pattern) = rest.split_once(':').ok_or(FrameError::MissingPattern)?;
        validate_tenant(tenant)?;
        if pattern.is_empty() {
            return Err(FrameError::EmptyField { field: "pattern" });
        }
        if pattern.len() > MAX_NAME_LEN {
            return Err(FrameError::NameTooLong {
                field: "pattern",
                len: pattern.len(),
            });
        }
        Ok(if is_sub {
            Command::Sub { tenant, pattern }
        } else {
            Command::Unsub { tenant, pattern }
        })
    }

    /// The command's verb as written on the wire (`SUB`, `UNSUB`, `PING`).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Sub { .. } => "SUB",
            Command::Unsub { .. } => "UNSUB",
            Command::Ping => "PING",
        }
    }
}
