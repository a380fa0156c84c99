//! The only place that reads the OS clock (clippy's `disallowed-methods` keeps it that way).
//!
//! Everything else takes `now` as an argument, so tests and simulators can drive time.
#![allow(clippy::disallowed_methods)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic now, for timeouts, rates and durations.
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock now, for expiry times that come from outside (tickets).
pub fn wall_now() -> SystemTime {
    SystemTime::now()
}

/// Whole seconds of `t` since the Unix epoch (0 before 1970). The one conversion every
/// module uses (tickets, certificates, the mesh).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds of `t` since the Unix epoch (0 before 1970, saturating).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
