//! Tunables of the routing table: timers, link cost weights, hysteresis.

use core::fmt;

use super::types::Metric;

/// Most destinations any [`RouteConfig::max_destinations`] may allow.
pub const MAX_TABLE_DESTINATIONS: usize = 65_535;
/// Most neighbours any [`RouteConfig::max_neighbours`] may allow.
pub const MAX_TABLE_NEIGHBOURS: usize = 1_024;

/// Configuration of a [`RouteTable`](super::RouteTable). All times in microseconds.
///
/// Start from [`RouteConfig::default()`] and change fields; [`RouteConfig::validate`]
/// is called by the table's constructor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// Most destination relays the table learns (more are refused and counted). Memory
    /// grows with the destinations actually known, not with this cap.
    pub max_destinations: usize,
    /// Most neighbours with a routed link at the same time (more are refused and counted).
    pub max_neighbours: usize,
    /// Most route events held for [`poll_event`](super::RouteTable::poll_event).
    pub max_events: usize,
    /// Interval of the periodic [`Digest`](super::Digest) to every neighbour, which
    /// replaces periodic full updates (4 s: a lost update is repaired within one).
    pub digest_interval_us: u64,
    /// Least time between two table requests to one neighbour (a digest that still
    /// differs after that asks again).
    pub table_request_interval_us: u64,
    /// Every destination is looked at once per this interval (a slice per tick): a selected
    /// route whose smoothed metric drifted by more than the settle margin since it was
    /// advertised is advertised again. It carries drifts below the triggers, which the
    /// periodic full tables used to carry.
    pub refresh_interval_us: u64,
    /// At most this many destinations are looked at per tick (the refresh then takes
    /// longer than `refresh_interval_us`): the refresh's bytes per link stay bounded
    /// whatever the number of relays (16 × 17 bytes per second at most).
    pub refresh_max_per_tick: usize,
    /// Housekeeping period: expiry, request retries and settling are checked this often.
    pub tick_us: u64,
    /// Interval between retries of an unanswered seqno request.
    pub request_retry_us: u64,
    /// How many times a seqno request is sent in one round. While the better route stays
    /// unfeasible, another round follows 4 retry intervals later, the gap doubling up to 64.
    pub request_attempts: u8,
    /// Hop limit put on seqno requests this relay originates.
    pub request_hop_count: u8,
    /// A forwarded seqno request for the same source and seqno is not forwarded
    /// again within this time.
    pub request_dedup_us: u64,
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
            max_destinations: 1024,
            max_neighbours: 64,
            max_events: 256,
            digest_interval_us: 4_000_000,
            table_request_interval_us: 10_000_000,
            refresh_interval_us: 60_000_000,
            refresh_max_per_tick: 16,
            tick_us: 1_000_000,
            request_retry_us: 1_000_000,
            request_attempts: 3,
            request_hop_count: 16,
            request_dedup_us: 1_000_000,
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
    /// A timer or a capacity is zero; the named field must be positive.
    Zero(&'static str),
    /// `max_destinations` above [`MAX_TABLE_DESTINATIONS`](MAX_TABLE_DESTINATIONS) or
    /// `max_neighbours` above [`MAX_TABLE_NEIGHBOURS`](MAX_TABLE_NEIGHBOURS).
    CapacityTooLarge(&'static str),
    /// `smoothing_shift` above 16 would freeze the smoothed metric.
    SmoothingTooSlow,
    /// The settle margin is larger than the fast margin, so settling never applies.
    SettleMarginAboveFastMargin,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Zero(name) => write!(f, "route config: {name} must be > 0"),
            ConfigError::CapacityTooLarge(name) => write!(
                f,
                "route config: {name} is above what the table supports (route::MAX_TABLE_DESTINATIONS, route::MAX_TABLE_NEIGHBOURS)"
            ),
            ConfigError::SmoothingTooSlow => {
                f.write_str("route config: smoothing_shift must be at most 16")
            }
            ConfigError::SettleMarginAboveFastMargin => {
                f.write_str("route config: settle margins must not exceed the fast switch margins")
            }
        }
    }
}

impl core::error::Error for ConfigError {}

/// `max(abs_us, value * ppm / 1e6)`, the shape of every margin in [`RouteConfig`].
#[cfg_attr(not(feature = "alloc"), allow(dead_code))]
pub(crate) fn margin(value: Metric, abs_us: u32, ppm: u32) -> u32 {
    let rel = (u64::from(value.as_us()) * u64::from(ppm)) / 1_000_000;
    let rel = u32::try_from(rel).unwrap_or(u32::MAX);
    rel.max(abs_us)
}

impl RouteConfig {
    /// Checks that the values can work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (v, name) in [
            (self.digest_interval_us, "digest_interval_us"),
            (self.table_request_interval_us, "table_request_interval_us"),
            (self.refresh_interval_us, "refresh_interval_us"),
            (self.refresh_max_per_tick as u64, "refresh_max_per_tick"),
            (self.tick_us, "tick_us"),
            (self.request_retry_us, "request_retry_us"),
            (self.max_destinations as u64, "max_destinations"),
            (self.max_neighbours as u64, "max_neighbours"),
            (self.max_events as u64, "max_events"),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.max_destinations > MAX_TABLE_DESTINATIONS {
            return Err(ConfigError::CapacityTooLarge("max_destinations"));
        }
        if self.max_neighbours > MAX_TABLE_NEIGHBOURS {
            return Err(ConfigError::CapacityTooLarge("max_neighbours"));
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
            max_neighbours: 0,
            ..RouteConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::Zero("max_neighbours")));
        let bad = RouteConfig {
            tick_us: 0,
            ..RouteConfig::default()
        };
        assert_eq!(bad.validate(), Err(ConfigError::Zero("tick_us")));
        let bad = RouteConfig {
            max_destinations: MAX_TABLE_DESTINATIONS + 1,
            ..RouteConfig::default()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::CapacityTooLarge("max_destinations"))
        );
    }
}
