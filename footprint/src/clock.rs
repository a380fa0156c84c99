//! The only place the footprint tool reads the OS clock: deadlines for its bounded waits.
//! (Measurements never depend on time; they wait for counted events.)
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

/// Now, for computing and checking deadlines.
pub fn now() -> Instant {
    Instant::now()
}
