//! The only place that reads the OS clock (clippy's `disallowed-methods` keeps it that way).
//!
//! Everything else takes `now` as an argument, so tests and simulators can drive time.
#![allow(clippy::disallowed_methods)]

use std::time::{Instant, SystemTime};

/// Monotonic now, for timeouts, rates and durations.
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock now, for expiry times that come from outside (tickets).
pub fn wall_now() -> SystemTime {
    SystemTime::now()
}
