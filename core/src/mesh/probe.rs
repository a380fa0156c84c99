//! Link probes, sent as QUIC datagrams. Timestamps are microseconds of the sender's own
//! clock (supplied by the caller); only the sender interprets them.

use serde::{Deserialize, Serialize};

use super::{TAG_LEN, U32_LEN, U64_LEN};

/// A probe: the receiver answers with a [`ProbeAck`] echoing `seq` and `sent_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Sequence number (per link, wrapping).
    pub seq: u32,
    /// Sender's clock when sent, in µs.
    pub sent_us: u64,
}

impl Probe {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN + U32_LEN + U64_LEN;
}

/// The answer to a [`Probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAck {
    /// The probe's `seq`.
    pub seq: u32,
    /// The probe's `sent_us`, echoed.
    pub echo_us: u64,
}

impl ProbeAck {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN + U32_LEN + U64_LEN;
}

#[cfg(test)]
mod tests {
    use super::super::Message;
    use super::super::test_util::roundtrip;
    use super::*;

    #[test]
    fn worst_case() {
        let n = roundtrip(&Message::Probe(Probe {
            seq: u32::MAX,
            sent_us: u64::MAX,
        }));
        assert_eq!(n, Probe::MAX_LEN);
        let n = roundtrip(&Message::ProbeAck(ProbeAck {
            seq: u32::MAX,
            echo_us: u64::MAX,
        }));
        assert_eq!(n, ProbeAck::MAX_LEN);
    }
}
