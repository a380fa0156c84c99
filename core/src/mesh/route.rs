//! Routing messages on the wire: a batch of [`crate::route::Message`]s (updates,
//! retractions, seqno requests) from one neighbour, as [`crate::route::RouteTable`]
//! hands them out.

use serde::{Deserialize, Serialize};

use super::{TAG_LEN, varint_len};
use crate::route;

/// Most routing messages in one [`RouteBatch`].
pub const MAX_ROUTE_MESSAGES: usize = 64;

/// Routing messages from the sender, in the order the table produced them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteBatch {
    /// Up to [`MAX_ROUTE_MESSAGES`] messages.
    pub messages: heapless::Vec<route::Message, MAX_ROUTE_MESSAGES>,
}

impl RouteBatch {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN
        + varint_len(MAX_ROUTE_MESSAGES)
        + MAX_ROUTE_MESSAGES * route::Message::MAX_ENCODED_LEN;
}

#[cfg(test)]
mod tests {
    use super::super::Message;
    use super::super::test_util::roundtrip;
    use super::*;
    use crate::route::{Metric, RelayId, Seqno, SeqnoRequest, Update};

    #[test]
    fn worst_case() {
        let mut messages = heapless::Vec::new();
        for i in 0..MAX_ROUTE_MESSAGES {
            let m = if i % 2 == 0 {
                route::Message::Update(Update {
                    source: RelayId(u64::MAX),
                    seqno: Seqno(u16::MAX),
                    metric: Metric::INFINITY,
                })
            } else {
                route::Message::SeqnoRequest(SeqnoRequest {
                    source: RelayId(u64::MAX),
                    seqno: Seqno(u16::MAX),
                    hop_count: u8::MAX,
                })
            };
            let _ = messages.push(m);
        }
        let n = roundtrip(&Message::Route(RouteBatch { messages }));
        assert!(n <= RouteBatch::MAX_LEN);
        // Updates are the larger kind: all-update batches reach the bound exactly.
        let mut messages = heapless::Vec::new();
        for _ in 0..MAX_ROUTE_MESSAGES {
            let _ = messages.push(route::Message::Update(Update {
                source: RelayId(u64::MAX),
                seqno: Seqno(u16::MAX),
                metric: Metric::INFINITY,
            }));
        }
        let n = roundtrip(&Message::Route(RouteBatch { messages }));
        assert_eq!(n, RouteBatch::MAX_LEN);
    }
}
