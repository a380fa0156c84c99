//! Distance-vector routing messages (Babel-like, RFC 8966): route updates with sequence
//! numbers and metrics, and sequence-number requests.

use serde::{Deserialize, Serialize};

use super::{MAX_NAME, TAG_LEN, U16_LEN, U32_LEN, bytes_len, check_name, varint_len};

/// Most routes in one [`RouteUpdate`].
pub const MAX_ROUTE_ENTRIES: usize = 32;
/// The metric of a retracted (unreachable) route.
pub const METRIC_INFINITY: u32 = u32::MAX;

/// One advertised route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry<'a> {
    /// The destination relay.
    pub destination: &'a str,
    /// The destination's sequence number (wrapping, compared modulo 2¹⁶).
    pub seqno: u16,
    /// The sender's metric to the destination in µs ([`METRIC_INFINITY`] = retraction).
    pub metric: u32,
}

impl RouteEntry<'_> {
    const MAX_LEN: usize = bytes_len(MAX_NAME) + U16_LEN + U32_LEN;
}

/// Routes from the sender; `interval_ms` says when the next full update is due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteUpdate<'a> {
    /// Interval of the sender's periodic updates, in ms.
    pub interval_ms: u16,
    /// Up to [`MAX_ROUTE_ENTRIES`] routes.
    #[serde(borrow)]
    pub entries: heapless::Vec<RouteEntry<'a>, MAX_ROUTE_ENTRIES>,
}

impl RouteUpdate<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize =
        TAG_LEN + U16_LEN + varint_len(MAX_ROUTE_ENTRIES) + MAX_ROUTE_ENTRIES * RouteEntry::MAX_LEN;

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        for e in &self.entries {
            check_name(e.destination, "route update: bad destination name")?;
        }
        Ok(())
    }
}

/// Ask for a route to `destination` with a sequence number at least `seqno`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqnoRequest<'a> {
    /// The destination relay.
    pub destination: &'a str,
    /// The wanted sequence number.
    pub seqno: u16,
    /// Hops the request may still be forwarded.
    pub hop_count: u8,
}

impl SeqnoRequest<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN + bytes_len(MAX_NAME) + U16_LEN + 1;

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        check_name(self.destination, "seqno request: bad destination name")
    }
}

#[cfg(test)]
mod tests {
    use super::super::Message;
    use super::super::test_util::{roundtrip, s};
    use super::*;

    #[test]
    fn worst_case() {
        let mut entries = heapless::Vec::new();
        for _ in 0..MAX_ROUTE_ENTRIES {
            let _ = entries.push(RouteEntry {
                destination: s(MAX_NAME, b'a'),
                seqno: u16::MAX,
                metric: METRIC_INFINITY,
            });
        }
        let n = roundtrip(&Message::RouteUpdate(RouteUpdate {
            interval_ms: u16::MAX,
            entries,
        }));
        assert_eq!(n, RouteUpdate::MAX_LEN);
        let n = roundtrip(&Message::SeqnoRequest(SeqnoRequest {
            destination: s(MAX_NAME, b'z'),
            seqno: u16::MAX,
            hop_count: u8::MAX,
        }));
        assert_eq!(n, SeqnoRequest::MAX_LEN);
    }
}
