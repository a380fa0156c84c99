//! Time in the mesh: one representation everywhere, microseconds as `u64` on a clock the
//! caller owns (as `core::route` does).
//!
//! Nothing under `mesh/` reads a clock or holds an `Instant`. The QUIC wiring
//! (`crate::app::mesh`) picks an origin (the node's start) and converts; the virtual-time
//! harness (`crate::sim`) simply counts. Durations are `u64` µs too, written with [`MS`]
//! and [`SEC`] (`30 * SEC`), and named `*_us` where they are fields.

use std::time::Duration;

/// One millisecond, µs.
pub const MS: u64 = 1_000;
/// One second, µs.
pub const SEC: u64 = 1_000_000;

/// `d` in µs (saturating).
pub fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `d` scaled by a factor in `[0.75, 1.25)` drawn from `rng`: spreads timers of many relays
/// (redials, announcements) so they do not fire in step.
pub fn jittered(d_us: u64, rng: &mut fastrand::Rng) -> u64 {
    // d × (3/4 + u/2) with u uniform in [0, 1), in integers.
    let u = rng.u64(..1 << 20);
    let d = u128::from(d_us);
    u64::try_from(d * 3 / 4 + d * u128::from(u) / (2 << 20)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_us() {
        assert_eq!(us(Duration::from_secs(2)), 2 * SEC);
        assert_eq!(us(Duration::from_millis(3)), 3 * MS);
        assert_eq!(us(Duration::MAX), u64::MAX);
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut lo, mut hi) = (u64::MAX, 0);
        for _ in 0..10_000 {
            let j = jittered(SEC, &mut rng);
            lo = lo.min(j);
            hi = hi.max(j);
        }
        assert!(lo >= 750 * MS && hi < 1_250 * MS, "{lo}..{hi}");
        assert!(
            lo < 760 * MS && hi > 1_240 * MS,
            "covers the range: {lo}..{hi}"
        );
    }
}
