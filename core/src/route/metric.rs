//! Link measurements and the link cost derived from them.

use super::config::RouteConfig;
use super::types::Metric;

/// What the link prober measured on one link, handed to
/// [`RouteTable::handle_link_metric`](super::RouteTable::handle_link_metric).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkMeasurement {
    /// Smoothed round-trip time, microseconds.
    pub rtt_us: u32,
    /// Minimum round-trip time over the window, microseconds (reported, not used in the cost).
    pub min_rtt_us: u32,
    /// Jitter (mean deviation of the RTT), microseconds.
    pub jitter_us: u32,
    /// Loss over the window, parts per million (0..=1_000_000).
    pub loss_ppm: u32,
}

impl LinkMeasurement {
    /// A measurement with only an RTT (no jitter, no loss).
    pub const fn from_rtt_us(rtt_us: u32) -> LinkMeasurement {
        LinkMeasurement {
            rtt_us,
            min_rtt_us: rtt_us,
            jitter_us: 0,
            loss_ppm: 0,
        }
    }

    /// The link cost: the expected one-way latency, raised by jitter and loss.
    ///
    /// `cost = (rtt/2 + jitter * jitter_weight_pct/100) * (1 + loss * loss_weight) + hop_cost`,
    /// with loss as a fraction (capped at 100 %). Never zero (Babel needs a strictly
    /// positive link cost for loop freedom) and always finite: a dead link is
    /// reported with `handle_link_down`, not with a cost.
    pub fn cost(&self, cfg: &RouteConfig) -> Metric {
        let one_way = u64::from(self.rtt_us) / 2;
        let jitter = u64::from(self.jitter_us) * u64::from(cfg.jitter_weight_pct) / 100;
        let base = one_way + jitter;
        let loss_ppm = u64::from(self.loss_ppm.min(1_000_000));
        let loss_extra = base * loss_ppm / 1_000_000 * u64::from(cfg.loss_weight);
        let total = base + loss_extra + u64::from(cfg.hop_cost_us);
        // Keep it finite: a link that is up always has a usable cost.
        Metric::from_us(total.clamp(1, u64::from(u32::MAX - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_formula() {
        let cfg = RouteConfig {
            hop_cost_us: 100,
            jitter_weight_pct: 50,
            loss_weight: 10,
            ..RouteConfig::default()
        };
        assert_eq!(
            LinkMeasurement::from_rtt_us(20_000).cost(&cfg),
            Metric(10_100)
        );
        let m = LinkMeasurement {
            rtt_us: 20_000,
            min_rtt_us: 18_000,
            jitter_us: 2_000,
            loss_ppm: 10_000,
        };
        // (10 000 + 1 000) * (1 + 0.01 * 10) + 100
        assert_eq!(m.cost(&cfg), Metric(12_200));
        let zero = RouteConfig {
            hop_cost_us: 0,
            ..cfg
        };
        assert_eq!(LinkMeasurement::default().cost(&zero), Metric(1));
        let huge = LinkMeasurement {
            rtt_us: u32::MAX,
            min_rtt_us: 0,
            jitter_us: u32::MAX,
            loss_ppm: u32::MAX,
        };
        assert!(huge.cost(&cfg).is_finite());
    }
}
