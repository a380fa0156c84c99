//! Small value types of the routing layer: relay ids, metrics and sequence numbers.

use core::fmt;

use serde::{Deserialize, Serialize};

/// A relay in the mesh: a 64-bit id derived from its name ([`RelayId::from_name`]).
///
/// 64 bits make collisions negligible (about 3 × 10⁻¹⁴ for 1,000 relays; a 16-bit id
/// had an 85 % chance of one at 500). The routing table only compares ids. On the wire
/// it is 8 bytes, big-endian: a hash needs all its bits, and a postcard varint of a
/// random 64-bit value would take 9–10 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelayId(pub u64);

impl RelayId {
    /// Encoded size on the wire (postcard), bytes.
    pub const ENCODED_LEN: usize = 8;

    /// The id of the relay named `name` (the DNS name in its mesh certificate): FNV-1a
    /// 64 with a final mix, so every bit depends on every byte. Stable across builds
    /// and platforms: every relay derives the same id from a name.
    pub const fn from_name(name: &str) -> RelayId {
        let b = name.as_bytes();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut i = 0;
        while i < b.len() {
            h ^= b[i] as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
            i += 1;
        }
        // splitmix64's finalizer: FNV's low bits are weak for short names.
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        RelayId(h)
    }
}

impl Serialize for RelayId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.to_be_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RelayId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <[u8; 8]>::deserialize(d).map(|b| RelayId(u64::from_be_bytes(b)))
    }
}

impl fmt::Display for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "relay#{:016x}", self.0)
    }
}

/// A route or link cost in microseconds of one-way latency (see [`crate::route`] docs).
///
/// Additive along a path. [`Metric::INFINITY`] means "unreachable": an update
/// carrying it is a retraction. Sums saturate at infinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Metric(pub u32);

impl Metric {
    /// Zero cost: the metric a relay announces for itself.
    pub const ZERO: Metric = Metric(0);
    /// Unreachable. Any value at or above this is treated as infinite.
    pub const INFINITY: Metric = Metric(u32::MAX);

    /// A metric from microseconds, saturating at [`Metric::INFINITY`].
    pub const fn from_us(us: u64) -> Metric {
        if us >= u32::MAX as u64 {
            Metric::INFINITY
        } else {
            Metric(us as u32)
        }
    }

    /// The metric in microseconds (`u32::MAX` when infinite).
    pub const fn as_us(self) -> u32 {
        self.0
    }

    /// Whether this metric is finite (a usable route).
    pub const fn is_finite(self) -> bool {
        self.0 != u32::MAX
    }

    /// Path composition: the sum, infinite if either side is infinite or it overflows.
    pub const fn add(self, other: Metric) -> Metric {
        if !self.is_finite() || !other.is_finite() {
            return Metric::INFINITY;
        }
        Metric::from_us(self.0 as u64 + other.0 as u64)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_finite() {
            write!(f, "{}.{:03} ms", self.0 / 1000, self.0 % 1000)
        } else {
            f.write_str("infinity")
        }
    }
}

/// A route sequence number, compared modulo 2^16 as in RFC 8966 §3.2.1.
///
/// Only the source of a route (the destination relay) increases it, when asked
/// by a seqno request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Seqno(pub u16);

impl Seqno {
    /// Whether `self` is strictly newer than `other` (modular comparison).
    pub const fn is_newer_than(self, other: Seqno) -> bool {
        let d = self.0.wrapping_sub(other.0);
        d != 0 && d < 0x8000
    }

    /// The next sequence number.
    pub const fn next(self) -> Seqno {
        Seqno(self.0.wrapping_add(1))
    }
}

impl fmt::Display for Seqno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqno_wraps() {
        assert!(Seqno(1).is_newer_than(Seqno(0)));
        assert!(!Seqno(0).is_newer_than(Seqno(0)));
        assert!(!Seqno(0).is_newer_than(Seqno(1)));
        assert!(Seqno(0).is_newer_than(Seqno(u16::MAX)));
        assert!(Seqno(0x7fff).is_newer_than(Seqno(0)));
        assert!(!Seqno(0x8000).is_newer_than(Seqno(0)));
        assert_eq!(Seqno(u16::MAX).next(), Seqno(0));
    }

    #[test]
    fn relay_ids_are_stable_spread_and_8_bytes() {
        // Fixed values: every relay must derive the same id from a name, forever.
        assert_eq!(RelayId::from_name("tokyo"), RelayId(0xbbe1_c4e6_3a87_4cf0));
        assert_ne!(RelayId::from_name("tokyo"), RelayId::from_name("tokyp"));
        let mut ids = [0u64; 2000];
        let mut name = [0u8; 10];
        for (i, id) in ids.iter_mut().enumerate() {
            name[..6].copy_from_slice(b"relay-");
            name[6] = b'0' + (i / 1000) as u8;
            name[7] = b'0' + (i / 100 % 10) as u8;
            name[8] = b'0' + (i / 10 % 10) as u8;
            name[9] = b'0' + (i % 10) as u8;
            let s = core::str::from_utf8(&name).unwrap_or("");
            *id = RelayId::from_name(s).0;
        }
        ids.sort_unstable();
        assert!(ids.windows(2).all(|w| w[0] != w[1]), "a collision");
        // Low bits spread (the route table hashes with them): every residue mod 64 used.
        let mut seen = [false; 64];
        for id in ids {
            seen[(id % 64) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        let mut buf = [0u8; 16];
        for id in [RelayId(0), RelayId(u64::MAX), RelayId::from_name("a")] {
            let n = postcard::to_slice(&id, &mut buf).map(|b| b.len());
            assert_eq!(n, Ok(RelayId::ENCODED_LEN));
            assert_eq!(postcard::from_bytes::<RelayId>(&buf[..8]), Ok(id));
        }
    }

    #[test]
    fn metric_saturates() {
        assert_eq!(Metric(5).add(Metric(7)), Metric(12));
        assert_eq!(Metric(u32::MAX - 1).add(Metric(1)), Metric::INFINITY);
        assert_eq!(Metric::INFINITY.add(Metric::ZERO), Metric::INFINITY);
        assert!(!Metric::from_us(u64::MAX).is_finite());
    }
}
