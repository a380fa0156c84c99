//! Small value types of the routing layer: relay ids, metrics and sequence numbers.

use core::fmt;

use serde::{Deserialize, Serialize};

/// A relay in the mesh, as a small number.
///
/// Mapping relay names (or certificate identities) to ids is the caller's job; the
/// routing table only compares ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RelayId(pub u16);

impl fmt::Display for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "relay#{}", self.0)
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
    fn metric_saturates() {
        assert_eq!(Metric(5).add(Metric(7)), Metric(12));
        assert_eq!(Metric(u32::MAX - 1).add(Metric(1)), Metric::INFINITY);
        assert_eq!(Metric::INFINITY.add(Metric::ZERO), Metric::INFINITY);
        assert!(!Metric::from_us(u64::MAX).is_finite());
    }
}
