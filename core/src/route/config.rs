//! Tunables of the routing table: timers, link cost weights, hysteresis.

use core::fmt;

use super::types::Metric;

/// Configuration of a [`RouteTable`](super::RouteTable). All times in microseconds.
///
/// Start from [`RouteConfig::default()`] and change fields; [`RouteConfig::validate`]
/// is called by the table's constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// Interval of periodic full updates (Babel's default: 4 s).
    pub update_interval_us: u64,
    /// A route not refreshed by its neighbour for this long is dropped (≈ 3.5 updates).
    pub route_expiry_us: u64,
    /// Housekeeping period: expiry, request retries and settling are checked this often.
    pub tick_us: u64,
    /// Interval between retries of an unanswered seqno request.
    pub request_retry_us: u64,
    /// How many times a seqno request is sent in all.
    pub request_attempts: u8,
    /// Hop limit put on seqno requests this relay originates.
    pub request_hop_count: u8,
    /// A forwarded seqno request for the same source and seqno is not forwarded
    /// again within this time.
    pub request_dedup_us: u64,
    /// After a destination becomes unreachable, its retraction is repeated in
    /// periodic updates for this long.
    pub retraction_hold_us: u64,
    /// An unreachable destination (and its feasibility distance) is forgotten after this long.
    pub source_gc_us: u64,
    /// Fixed cost added per link for forwarding through a relay (processing, queueing).
    pub hop_cost_us: u32,
    /// Jitter weight in percent: `cost += jitter_us * jitter_weight_pct / 100`.
    pub jitter_weight_pct: u32,
    /// Loss weight: the cost is multiplied by `1 + loss * loss_weight` (loss as a fraction).
    pub loss_weight: u32,
    /// Switch at once to a route whose smoothed metric is better by more than
    /// `max(fast_margin_us, current * fast_margin_ppm / 1e6)`.
    pub fast_margin_us: u32,
    /// See [`RouteConfig::fast_margin_us`].
    pub fast_margin_ppm: u32,
    /// Switch to a route better by more than `max(settle_margin_us, current *
    /// settle_margin_ppm / 1e6)` once it stayed so for [`RouteConfig::settle_time_us`].
    pub settle_margin_us: u32,
    /// See [`RouteConfig::settle_margin_us`].
    pub settle_margin_ppm: u32,
    /// How long a small improvement must last before the route switches.
    pub settle_time_us: u64,
    /// Noise allowance of the settle margin, percent of the sum of both routes'
    /// mean deviations (their measured noise).
    pub noise_weight_pct: u32,
    /// Smoothing: each new sample moves the smoothed metric by `1 / 2^smoothing_shift`
    /// of the difference…
    pub smoothing_shift: u8,
    /// …unless the sample differs from the smoothed value by more than
    /// `max(jump_us, smoothed * jump_ppm / 1e6)`: then it is taken as is (a real change).
    pub jump_us: u32,
    /// See [`RouteConfig::jump_us`].
    pub jump_ppm: u32,
    /// A selected route whose metric moved by more than `max(trigger_us, advertised *
    /// trigger_ppm / 1e6)` since it was last advertised is advertised at once.
    pub trigger_us: u32,
    /// See [`RouteConfig::trigger_us`].
    pub trigger_ppm: u32,
    /// A selected route whose *smoothed* metric moved by more than
    /// `max(lasting_trigger_us, smoothed * lasting_trigger_ppm / 1e6)` since it was
    /// last advertised is advertised at once: small changes that last propagate
    /// without waiting for the periodic update, noise does not.
    pub lasting_trigger_us: u32,
    /// See [`RouteConfig::lasting_trigger_us`].
    pub lasting_trigger_ppm: u32,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            update_interval_us: 4_000_000,
            route_expiry_us: 14_000_000,
            tick_us: 1_000_000,
            request_retry_us: 1_000_000,
            request_attempts: 3,
            request_hop_count: 16,
            request_dedup_us: 1_000_000,
            retraction_hold_us: 12_000_000,
            source_gc_us: 180_000_000,
            hop_cost_us: 100,
            jitter_weight_pct: 50,
            loss_weight: 10,
            fast_margin_us: 1_000,
            fast_margin_ppm: 50_000,
            settle_margin_us: 100,
            settle_margin_ppm: 3_000,
            settle_time_us: 5_000_000,
            noise_weight_pct: 200,
            smoothing_shift: 3,
            jump_us: 2_000,
            jump_ppm: 100_000,
            trigger_us: 1_000,
            trigger_ppm: 50_000,
            lasting_trigger_us: 500,
            lasting_trigger_ppm: 10_000,
        }
    }
}

/// A [`RouteConfig`] value that cannot work (caller misuse).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A timer is zero; the named field must be positive.
    ZeroInterval(&'static str),
    /// Routes would expire before their neighbour refreshes them.
    ExpiryShorterThanUpdates,
    /// `smoothing_shift` above 16 would freeze the smoothed metric.
    SmoothingTooSlow,
    /// The settle margin is larger than the fast margin, so settling never applies.
    SettleMarginAboveFastMargin,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroInterval(name) => write!(f, "route config: {name} must be > 0"),
            ConfigError::ExpiryShorterThanUpdates => f.write_str(
                "route config: route_expiry_us must exceed update_interval_us, or routes expire between refreshes",
            ),
            ConfigError::SmoothingTooSlow => {
                f.write_str("route config: smoothing_shift must be at most 16")
            }
            ConfigError::SettleMarginAboveFastMargin => f.write_str(
                "route config: settle margins must not exceed the fast switch margins",
            ),
        }
    }
}

impl core::error::Error for ConfigError {}

/// `max(abs_us, value * ppm / 1e6)`, the shape of every margin in [`RouteConfig`].
pub(crate) fn margin(value: Metric, abs_us: u32, ppm: u32) -> u32 {
    let rel = (u64::from(value.as_us()) * u64::from(ppm)) / 1_000_000;
    let rel = u32::try_from(rel).unwrap_or(u32::MAX);
    rel.max(abs_us)
}

impl RouteConfig {
    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (v, name) in [
            (self.update_interval_us, "update_interval_us"),
            (self.route_expiry_us, "route_expiry_us"),
            (self.tick_us, "tick_us"),
            (self.request_retry_us, "request_retry_us"),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroInterval(name));
            }
        }
        if self.route_expiry_us <= self.update_interval_us {
            return Err(ConfigError::ExpiryShorterThanUpdates);
        }
        if self.smoothing_shift > 16 {
            return Err(ConfigError::SmoothingTooSlow);
        }
        if self.settle_margin_us > self.fast_margin_us
            || self.settle_margin_ppm > self.fast_margin_ppm
        {
            return Err(ConfigError::SettleMarginAboveFastMargin);
        }
        Ok(())
    }

    /// A configuration without hysteresis or smoothing: always the lowest metric at
    /// once. Only useful as a baseline in tests and simulations.
    pub fn without_hysteresis() -> RouteConfig {
        RouteConfig {
            fast_margin_us: 0,
            fast_margin_ppm: 0,
            settle_margin_us: 0,
            settle_margin_ppm: 0,
            settle_time_us: 0,
            noise_weight_pct: 0,
            smoothing_shift: 0,
            ..RouteConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_margins_scale() {
        assert_eq!(RouteConfig::default().validate(), Ok(()));
        assert_eq!(RouteConfig::without_hysteresis().validate(), Ok(()));
        assert_eq!(margin(Metric(10_000), 1_000, 50_000), 1_000);
        assert_eq!(margin(Metric(100_000), 1_000, 50_000), 5_000);
        let bad = RouteConfig {
            route_expiry_us: 1,
            ..RouteConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::ExpiryShorterThanUpdates));
        let bad = RouteConfig {
            tick_us: 0,
            ..RouteConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::ZeroInterval("tick_us")));
    }
}
