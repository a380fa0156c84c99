//! Routing messages between neighbours and the transmits the table hands out.
//!
//! The structs are plain serde types so the mesh wire can carry them with postcard;
//! the table does not encode anything itself.

use serde::{Deserialize, Serialize};

use super::types::{Metric, RelayId, Seqno};

/// A route announcement: "I reach `source` with this metric, at this seqno".
///
/// An infinite metric is a retraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// The destination relay (the route's source, in Babel's words).
    pub source: RelayId,
    /// The source's sequence number carried by this route.
    pub seqno: Seqno,
    /// The sender's metric to `source`; [`Metric::INFINITY`] retracts the route.
    pub metric: Metric,
}

impl Update {
    /// Upper bound of the postcard encoding (id 8 bytes, varints 3 + 5 bytes).
    pub const MAX_ENCODED_LEN: usize = RelayId::ENCODED_LEN + 3 + 5;

    /// Whether this update retracts the route.
    pub const fn is_retraction(&self) -> bool {
        !self.metric.is_finite()
    }
}

/// A request to `source` for a sequence number at least `seqno`, forwarded hop by hop
/// toward it (RFC 8966 §3.8.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqnoRequest {
    /// The destination whose routes are stuck unfeasible.
    pub source: RelayId,
    /// The seqno wanted (the requester's feasibility distance seqno + 1).
    pub seqno: Seqno,
    /// Hops left; a request arriving with 1 is not forwarded further.
    pub hop_count: u8,
}

impl SeqnoRequest {
    /// Upper bound of the postcard encoding (id 8 bytes, varint 3 bytes, 1 byte).
    pub const MAX_ENCODED_LEN: usize = RelayId::ENCODED_LEN + 3 + 1;
}

/// A summary of every route the sender advertises, sent to each neighbour every few
/// seconds instead of the whole table: the receiver compares it with the routes it holds
/// from the sender and asks for the table ([`Message::TableRequest`]) only when they differ
/// (an update lost on the way, a link one side saw go down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    /// Wrapping sum of a 64-bit hash of every advertised finite route (destination,
    /// seqno, metric), the sender's route to itself included.
    pub digest: u64,
    /// How many routes that is.
    pub routes: u32,
    /// Nonzero: this digest ends the full table the receiver asked for with
    /// [`Message::TableRequest`] carrying this number (routes not repeated in it are stale).
    pub reply_to: u8,
}

impl Digest {
    /// Upper bound of the postcard encoding (8-byte hash, varint 5 bytes, 1 byte).
    pub const MAX_ENCODED_LEN: usize = 8 + 5 + 1;

    /// The hash of one advertised route, summed (wrapping) into [`Digest::digest`]. Part of
    /// the protocol: both ends must compute it alike.
    pub const fn entry(source: RelayId, seqno: Seqno, metric: Metric) -> u64 {
        let mut h = source.0 ^ ((seqno.0 as u64) << 32 | metric.0 as u64).rotate_left(23);
        // splitmix64's finalizer: every bit of the entry moves about half the hash.
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

// The hash is random: 8 raw bytes, not a 9–10 byte varint.
impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.digest.to_be_bytes(), self.routes, self.reply_to).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (h, routes, reply_to) = <([u8; 8], u32, u8)>::deserialize(d)?;
        Ok(Digest {
            digest: u64::from_be_bytes(h),
            routes,
            reply_to,
        })
    }
}

/// One routing message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message {
    /// A route announcement or retraction.
    Update(Update),
    /// A seqno request.
    SeqnoRequest(SeqnoRequest),
    /// The sender's advertised routes in one number (see [`Digest`]).
    Digest(Digest),
    /// "Send me your whole table": the answer is an update per advertised route, then a
    /// [`Digest`] whose `reply_to` is this number (1..=255).
    TableRequest(u8),
}

impl Message {
    /// Upper bound of the postcard encoding (1-byte variant tag + the largest body).
    pub const MAX_ENCODED_LEN: usize = 1 + Update::MAX_ENCODED_LEN;
}

/// Who a [`Transmit`] goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recipient {
    /// Every neighbour whose link is up.
    AllNeighbours,
    /// One neighbour.
    Neighbour(RelayId),
}

/// A message to send, from [`RouteTable::poll_transmit`](super::RouteTable::poll_transmit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub to: Recipient,
    /// What to send.
    pub message: Message,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_case_encodings_fit() {
        let mut buf = [0u8; 64];
        let upd = Update {
            source: RelayId(u64::MAX),
            seqno: Seqno(u16::MAX),
            metric: Metric::INFINITY,
        };
        let n = postcard::to_slice(&upd, &mut buf).map(|b| b.len());
        assert_eq!(n, Ok(Update::MAX_ENCODED_LEN));
        let req = SeqnoRequest {
            source: RelayId(u64::MAX),
            seqno: Seqno(u16::MAX),
            hop_count: u8::MAX,
        };
        let n = postcard::to_slice(&req, &mut buf).map(|b| b.len());
        assert_eq!(n, Ok(SeqnoRequest::MAX_ENCODED_LEN));
        let dig = Digest {
            digest: u64::MAX,
            routes: u32::MAX,
            reply_to: u8::MAX,
        };
        let n = postcard::to_slice(&dig, &mut buf).map(|b| b.len());
        assert_eq!(n, Ok(Digest::MAX_ENCODED_LEN));
        for msg in [
            Message::Update(upd),
            Message::SeqnoRequest(req),
            Message::Digest(dig),
            Message::TableRequest(u8::MAX),
        ] {
            let enc = postcard::to_slice(&msg, &mut buf).map(|b| b.len());
            let len = enc.unwrap_or(usize::MAX);
            assert!(len <= Message::MAX_ENCODED_LEN, "{msg:?} took {len}");
            let back: Result<Message, _> = postcard::from_bytes(&buf[..len]);
            assert_eq!(back, Ok(msg));
        }
    }

    #[test]
    fn garbage_decodes_to_error_not_panic() {
        let mut state = 0x1234_5678_u32;
        let mut buf = [0u8; 16];
        for _ in 0..2000 {
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *b = state as u8;
            }
            let len = (state % 17) as usize;
            let _ = postcard::from_bytes::<Message>(&buf[..len]);
        }
    }
}
