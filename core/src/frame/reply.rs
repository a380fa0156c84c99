//! Edge → client text replies: `OK:SUB:…`, `OK:UNSUB:…`, `ERR:…`, `PONG`, `RECONNECT`.

use super::EncodeError;
use super::str16::put;

/// One text reply. `Err` is `ERR:<reason>` followed by `:<part>` for each part, so a relay can
/// name what was refused and why, e.g. `ERR:permission_denied:SUB:t1:private.#`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply<'a> {
    /// `OK:SUB:<tenant>:<pattern>`.
    OkSub {
        /// Tenant exactly as the client sent it.
        tenant: &'a str,
        /// Pattern exactly as the client sent it.
        pattern: &'a str,
    },
    /// `OK:UNSUB:<tenant>:<pattern>`.
    OkUnsub {
        /// Tenant exactly as the client sent it.
        tenant: &'a str,
        /// Pattern exactly as the client sent it.
        pattern: &'a str,
    },
    /// `ERR:<reason>[:<part>]*`.
    Err {
        /// Machine-readable reason code, e.g. `permission_denied`.
        reason: &'a str,
        /// Context pieces appended with `:` separators (what was refused, and why).
        parts: &'a [&'a str],
    },
    /// `PONG`.
    Pong,
    /// `RECONNECT`: the edge asks the client to move to a new connection.
    Reconnect,
}

impl Reply<'_> {
    fn for_each_piece(&self, mut f: impl FnMut(&[u8])) {
        match self {
            Reply::OkSub { tenant, pattern } | Reply::OkUnsub { tenant, pattern } => {
                f(if matches!(self, Reply::OkSub { .. }) {
                    b"OK:SUB:"
                } else {
                    b"OK:UNSUB:"
                });
                f(tenant.as_bytes());
                f(b":");
                f(pattern.as_bytes());
            }
            Reply::Err { reason, parts } => {
                f(b"ERR:");
                f(reason.as_bytes());
                for p in parts.iter() {
                    f(b":");
                    f(p.as_bytes());
                }
            }
            Reply::Pong => f(b"PONG"),
            Reply::Reconnect => f(b"RECONNECT"),
        }
    }

    /// Length of the reply text in bytes.
    pub fn encoded_len(&self) -> usize {
        let mut n = 0;
        self.for_each_piece(|p| n += p.len());
        n
    }

    /// Hands the reply to `sink` as consecutive pieces; returns the total length.
    pub fn encode_with(&self, mut sink: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        self.for_each_piece(|p| {
            n += p.len();
            sink(p)
        });
        n
    }

    /// Writes the reply into `out`; returns the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let needed = self.encoded_len();
        if out.len() < needed {
            return Err(EncodeError::BufferTooSmall {
                needed,
                available: out.len(),
            });
        }
        let mut pos = 0;
        self.for_each_piece(|p| put(out, &mut pos, p));
        Ok(pos)
    }
}
