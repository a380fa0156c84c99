//! Relay-to-relay wire messages (postcard).
//!
//! Every message a relay sends to another relay is one [`Message`], encoded with
//! postcard into a caller-provided buffer ([`encode`]) and decoded zero-copy from the
//! received bytes ([`decode`]): strings and payloads borrow from the input. Each message
//! kind has a `MAX_LEN` (the largest encoding any valid value of it can have) and
//! [`Message::max_len`] gives it for a decoded value's kind, so a relay sizes its buffers
//! once. Decoding untrusted bytes never panics: it returns a [`DecodeError`], either
//! because the bytes are not a message ([`DecodeError::Malformed`]) or because the
//! message breaks a rule of the mesh (bad name, over a limit: [`DecodeError::Invalid`]).
//!
//! Which message goes where (the relay decides, this module only encodes):
//! - [`Probe`] / [`ProbeAck`]: QUIC datagrams (unreliable: loss is what they measure).
//! - [`Hello`], [`Peers`], [`RouteBatch`], [`InterestUpdate`],
//!   [`InterestSnapshotRequest`], [`InterestSnapshot`], [`TicketStatus`],
//!   [`TicketSnapshot`], [`Announce`]: the link's control stream, in order.
//! - [`Data`]: one QUIC unidirectional stream per message.
//!
//! Relays are identified by their name (the DNS name in their mesh certificate), see
//! [`valid_relay_name`]; routing and data destinations use the compact
//! [`crate::route::RelayId`] the relay derives from each name.

mod announce;
pub mod close;
mod data;
mod hello;
mod interest;
mod probe;
mod route;
mod ticket;

pub use announce::{Announce, MAX_ANNOUNCE_BODY};
pub use data::{Data, MAX_DESTINATIONS, MAX_HOP_LIMIT, MAX_PAYLOAD};
pub use hello::{GeoPos, Hello, MAX_GOSSIP, MAX_REGION, MAX_URL, PeerInfo, Peers};
pub use interest::{
    InterestChange, InterestEntry, InterestSnapshot, InterestSnapshotRequest, InterestUpdate,
    MAX_INTEREST_CHANGES, MAX_SNAPSHOT_ENTRIES,
};
pub use probe::{Probe, ProbeAck};
pub use route::{MAX_ROUTE_MESSAGES, RouteBatch};
pub use ticket::{MAX_TICKET_RECORD, MAX_TICKET_SNAPSHOT_RECORDS, TicketSnapshot, TicketStatus};

use core::fmt;
use serde::{Deserialize, Serialize};

/// Version of the mesh protocol spoken by this build (sent in [`Hello`]).
/// 2: relay ids are 64 bits (8 bytes on the wire; were 16-bit varints).
pub const PROTOCOL_VERSION: u16 = 2;
/// Longest relay name, in bytes.
pub const MAX_NAME: usize = 32;
/// Longest mesh address text (`host:port`), in bytes.
pub const MAX_ADDR: usize = 64;
/// Longest channel or pattern, in bytes (the client contract's
/// [`crate::limits::MAX_NAME_LEN`]).
pub use crate::limits::MAX_NAME_LEN as MAX_CHANNEL;
/// Longest tenant, in bytes (the client contract's [`crate::limits::MAX_TENANT_LEN`]).
pub use crate::limits::MAX_TENANT_LEN as MAX_TENANT;

/// Bytes postcard uses for the varint of `n`.
pub(crate) const fn varint_len(n: usize) -> usize {
    let mut len = 1;
    let mut v = n >> 7;
    while v > 0 {
        len += 1;
        v >>= 7;
    }
    len
}

/// Largest encoding of a string or byte slice of at most `max` bytes.
pub(crate) const fn bytes_len(max: usize) -> usize {
    varint_len(max) + max
}

/// Largest varint encoding of a `u16`, `u32`, `u64`.
pub(crate) const U16_LEN: usize = 3;
pub(crate) const U32_LEN: usize = 5;
pub(crate) const U64_LEN: usize = 10;
/// The enum tag of [`Message`] (fewer than 128 variants: one byte).
pub(crate) const TAG_LEN: usize = 1;

/// True when `name` is a valid relay name: 1..=32 bytes of `a-z`, `0-9`, `-`, not
/// starting or ending with `-` (it is also the DNS name in the relay's certificate).
pub fn valid_relay_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

pub(crate) fn check_name(name: &str, what: &'static str) -> Result<(), &'static str> {
    if valid_relay_name(name) {
        Ok(())
    } else {
        Err(what)
    }
}

pub(crate) fn check_len(s: &str, max: usize, what: &'static str) -> Result<(), &'static str> {
    if s.len() <= max { Ok(()) } else { Err(what) }
}

/// One relay-to-relay message. See the module docs for which travels how.
// The route batch is inline (no_std, no allocation: 64 × 24 bytes with 64-bit relay ids);
// a decoded message lives on the stack for one dispatch.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Message<'a> {
    /// First control frame on a link, both ways: who the sender is.
    #[serde(borrow)]
    Hello(Hello<'a>),
    /// Relays the sender knows (bounded gossip, for membership).
    #[serde(borrow)]
    Peers(Peers<'a>),
    /// Link probe (datagram).
    Probe(Probe),
    /// Answer to a [`Probe`] (datagram).
    ProbeAck(ProbeAck),
    /// Distance-vector routing messages (updates, retractions, seqno requests).
    Route(RouteBatch),
    /// Changes to one relay's subscription interest.
    #[serde(borrow)]
    InterestUpdate(InterestUpdate<'a>),
    /// Ask for the full interest of one relay.
    #[serde(borrow)]
    InterestSnapshotRequest(InterestSnapshotRequest<'a>),
    /// One part of the full interest of one relay.
    #[serde(borrow)]
    InterestSnapshot(InterestSnapshot<'a>),
    /// A forwarded publish.
    #[serde(borrow)]
    Data(Data<'a>),
    /// A signed ticket status record (refresh, revoke), flooded.
    #[serde(borrow)]
    TicketStatus(TicketStatus<'a>),
    /// Part of the sender's still-valid ticket status records, on link-up.
    #[serde(borrow)]
    TicketSnapshot(TicketSnapshot<'a>),
    /// A relay's announcement of itself (opaque body), flooded.
    #[serde(borrow)]
    Announce(Announce<'a>),
}

/// The name of every message kind, indexed by its tag: the first byte of every encoded
/// [`Message`] (for per-kind byte counts; names are stable, new kinds are appended).
pub const KIND_NAMES: [&str; 12] = [
    "hello",
    "peers",
    "probe",
    "probe_ack",
    "route",
    "interest_update",
    "interest_snapshot_request",
    "interest_snapshot",
    "data",
    "ticket_status",
    "ticket_snapshot",
    "announce",
];

/// The kind of an encoded message, from its first byte, as an index into [`KIND_NAMES`]
/// (`None` for an empty frame or an unknown tag). Does not decode the rest.
pub fn kind_index(frame: &[u8]) -> Option<usize> {
    let tag = usize::from(*frame.first()?);
    (tag < KIND_NAMES.len()).then_some(tag)
}

impl Message<'_> {
    /// The largest encoding of any message, in bytes.
    pub const MAX_LEN: usize = Data::MAX_LEN;

    /// This message's kind, as an index into [`KIND_NAMES`].
    pub fn kind_index(&self) -> usize {
        match self {
            Self::Hello(_) => 0,
            Self::Peers(_) => 1,
            Self::Probe(_) => 2,
            Self::ProbeAck(_) => 3,
            Self::Route(_) => 4,
            Self::InterestUpdate(_) => 5,
            Self::InterestSnapshotRequest(_) => 6,
            Self::InterestSnapshot(_) => 7,
            Self::Data(_) => 8,
            Self::TicketStatus(_) => 9,
            Self::TicketSnapshot(_) => 10,
            Self::Announce(_) => 11,
        }
    }

    /// The largest encoding of a message of this kind.
    pub fn max_len(&self) -> usize {
        match self {
            Self::Hello(_) => Hello::MAX_LEN,
            Self::Peers(_) => Peers::MAX_LEN,
            Self::Probe(_) => Probe::MAX_LEN,
            Self::ProbeAck(_) => ProbeAck::MAX_LEN,
            Self::Route(_) => RouteBatch::MAX_LEN,
            Self::InterestUpdate(_) => InterestUpdate::MAX_LEN,
            Self::InterestSnapshotRequest(_) => InterestSnapshotRequest::MAX_LEN,
            Self::InterestSnapshot(_) => InterestSnapshot::MAX_LEN,
            Self::Data(_) => Data::MAX_LEN,
            Self::TicketStatus(_) => TicketStatus::MAX_LEN,
            Self::TicketSnapshot(_) => TicketSnapshot::MAX_LEN,
            Self::Announce(_) => Announce::MAX_LEN,
        }
    }

    /// Check the mesh's rules (names, lengths, ranges); the reason on failure.
    pub fn validate(&self) -> Result<(), &'static str> {
        match self {
            Self::Hello(m) => m.validate(),
            Self::Peers(m) => m.validate(),
            Self::Probe(_) | Self::ProbeAck(_) | Self::Route(_) => Ok(()),
            Self::InterestUpdate(m) => m.validate(),
            Self::InterestSnapshotRequest(m) => m.validate(),
            Self::InterestSnapshot(m) => m.validate(),
            Self::Data(m) => m.validate(),
            Self::TicketStatus(m) => m.validate(),
            Self::TicketSnapshot(m) => m.validate(),
            Self::Announce(m) => m.validate(),
        }
    }
}

/// Why bytes from a peer are not a valid message. The peer is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not a postcard encoding of a [`Message`] (truncated, unknown kind, bad UTF-8,
    /// a list longer than its bound).
    Malformed,
    /// Bytes left over after the message.
    TrailingBytes,
    /// Larger than any message can be.
    TooLong,
    /// Well-formed but breaks a mesh rule; says which.
    Invalid(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed mesh message"),
            Self::TrailingBytes => f.write_str("trailing bytes after mesh message"),
            Self::TooLong => f.write_str("mesh message longer than the largest allowed"),
            Self::Invalid(why) => write!(f, "invalid mesh message: {why}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a message could not be encoded. The caller is to blame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is smaller than the encoding (use `MAX_LEN`).
    BufferTooSmall,
    /// The message breaks a mesh rule; says which.
    Invalid(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("buffer too small for mesh message"),
            Self::Invalid(why) => write!(f, "refusing to encode invalid mesh message: {why}"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Encode `msg` into `buf`; returns the used prefix. Validates first, so a relay never
/// sends what a peer would refuse.
pub fn encode<'b>(msg: &Message<'_>, buf: &'b mut [u8]) -> Result<&'b mut [u8], EncodeError> {
    msg.validate().map_err(EncodeError::Invalid)?;
    postcard::to_slice(msg, buf).map_err(|_| EncodeError::BufferTooSmall)
}

/// Decode one message from exactly `bytes` (zero-copy) and validate it.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, DecodeError> {
    if bytes.len() > Message::MAX_LEN {
        return Err(DecodeError::TooLong);
    }
    let (msg, rest) =
        postcard::take_from_bytes::<Message<'_>>(bytes).map_err(|_| DecodeError::Malformed)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    msg.validate().map_err(DecodeError::Invalid)?;
    Ok(msg)
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;

    /// A string of `n` bytes of `c` (from a static pool; n ≤ 70_000).
    pub fn s(n: usize, c: u8) -> &'static str {
        static A: [u8; 70_000] = [b'a'; 70_000];
        static Z: [u8; 70_000] = [b'z'; 70_000];
        let pool: &'static [u8; 70_000] = if c == b'z' { &Z } else { &A };
        core::str::from_utf8(&pool[..n]).unwrap_or("")
    }

    /// Encode, check the length bound, decode, compare.
    pub fn roundtrip(msg: &Message<'_>) -> usize {
        let mut buf = [0u8; Message::MAX_LEN + 16];
        let len = encode(msg, &mut buf).map(|b| b.len());
        let len = match len {
            Ok(l) => l,
            Err(e) => panic!("encode failed: {e}"),
        };
        assert!(len <= msg.max_len(), "{len} > MAX_LEN {}", msg.max_len());
        let back = decode(&buf[..len]);
        assert_eq!(back.as_ref(), Ok(msg));
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_relay_name("tokyo"));
        assert!(valid_relay_name("fra-1"));
        assert!(!valid_relay_name(""));
        assert!(!valid_relay_name("-x"));
        assert!(!valid_relay_name("x-"));
        assert!(!valid_relay_name("Tokyo"));
        assert!(!valid_relay_name(test_util::s(33, b'a')));
    }

    #[test]
    fn varints() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(65_536), 3);
        let mut buf = [0u8; 16];
        for (v, n) in [
            (u16::MAX as u64, U16_LEN),
            (u32::MAX as u64, U32_LEN),
            (u64::MAX, U64_LEN),
        ] {
            let used = postcard::to_slice(&v, &mut buf).map(|b| b.len());
            assert_eq!(used, Ok(n));
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Seeded byte mutation of valid encodings plus random bytes: decode must return.
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let dests =
            heapless::Vec::from_slice(&[crate::route::RelayId(1), crate::route::RelayId(2)])
                .unwrap_or_default();
        let base = Message::Data(Data {
            origin: "t",
            msg_id: 7,
            hop_limit: 8,
            mode: crate::frame::Mode::Broadcast,
            destinations: dests,
            tenant: "acme",
            channel: "a.b",
            payload: b"hello",
        });
        let mut enc = [0u8; 256];
        let n = encode(&base, &mut enc).map(|b| b.len()).unwrap_or(0);
        assert!(n > 0);
        let mut decoded_ok = 0;
        for _ in 0..20_000 {
            let mut b = [0u8; 256];
            b[..n].copy_from_slice(&enc[..n]);
            let flips = 1 + (next() % 4) as usize;
            for _ in 0..flips {
                let i = (next() % n as u64) as usize;
                b[i] = next() as u8;
            }
            let len = (next() % (n as u64 + 8)) as usize;
            if decode(&b[..len]).is_ok() {
                decoded_ok += 1;
            }
            let mut r = [0u8; 64];
            for x in r.iter_mut() {
                *x = next() as u8;
            }
            let _ = decode(&r[..(next() % 64) as usize]);
        }
        // Some mutations (e.g. in the payload) stay valid; most do not.
        assert!(decoded_ok > 0 && decoded_ok < 20_000, "{decoded_ok}");
    }

    #[test]
    fn kind_is_the_first_byte() {
        let msgs = [
            Message::Probe(Probe { seq: 1, sent_us: 2 }),
            Message::ProbeAck(ProbeAck { seq: 1, echo_us: 2 }),
            Message::TicketStatus(TicketStatus {
                origin: "t",
                seq: 1,
                record: b"r",
            }),
            Message::Announce(Announce {
                origin: "t",
                seq: 1,
                body: b"b",
            }),
        ];
        let mut buf = [0u8; 64];
        for m in &msgs {
            let n = encode(m, &mut buf).map(|b| b.len()).unwrap_or(0);
            assert_eq!(kind_index(&buf[..n]), Some(m.kind_index()), "{m:?}");
        }
        assert_eq!(KIND_NAMES[msgs[3].kind_index()], "announce");
        assert_eq!(kind_index(&[]), None);
        assert_eq!(kind_index(&[12]), None);
    }

    #[test]
    fn trailing_and_too_long() {
        let mut buf = [0u8; 64];
        let n = encode(&Message::Probe(Probe { seq: 1, sent_us: 2 }), &mut buf)
            .map(|b| b.len())
            .unwrap_or(0);
        assert_eq!(decode(&buf[..n + 1]), Err(DecodeError::TrailingBytes));
        assert_eq!(decode(&buf[..n - 1]), Err(DecodeError::Malformed));
        assert_eq!(decode(&[0xff; 4]), Err(DecodeError::Malformed));
        static BIG: [u8; Message::MAX_LEN + 1] = [0; Message::MAX_LEN + 1];
        assert_eq!(decode(&BIG), Err(DecodeError::TooLong));
    }

    #[test]
    fn small_buffer_is_caller_error() {
        let mut buf = [0u8; 4];
        let r = encode(
            &Message::Probe(Probe {
                seq: u32::MAX,
                sent_us: u64::MAX,
            }),
            &mut buf,
        );
        assert_eq!(r.err(), Some(EncodeError::BufferTooSmall));
    }
}
