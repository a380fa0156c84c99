//! Latency histogram of fixed size: 1 µs buckets below 1,024 µs, then 64 buckets per
//! doubling (under 1.6 % error) up to about 2^40 µs. Recording is one index computation.

const LINEAR: u64 = 1024;
const SUB: u64 = 64;
const OCTAVES: usize = 31;

/// Counts of latencies in µs.
pub struct Hist {
    buckets: Vec<u64>,
    count: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            buckets: vec![0; LINEAR as usize + OCTAVES * SUB as usize],
            count: 0,
        }
    }
}

fn index(us: u64) -> usize {
    if us < LINEAR {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() as u64; // >= 10
    let sub = (us >> (exp - 6)) & (SUB - 1);
    let i = LINEAR + (exp - 10) * SUB + sub;
    (i as usize).min(LINEAR as usize + OCTAVES * SUB as usize - 1)
}

/// Lower bound in µs of bucket `i`.
fn lower(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let exp = (i - LINEAR) / SUB + 10;
    let sub = (i - LINEAR) % SUB;
    (1 << exp) | (sub << (exp - 6))
}

impl Hist {
    /// Records one latency in ns.
    pub fn record_ns(&mut self, ns: u64) {
        let i = index(ns / 1000);
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
            self.count += 1;
        }
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `p` quantile (0..=1) in µs (bucket lower bound), or `None` when empty.
    pub fn quantile_us(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((self.count as f64 * p).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(lower(i));
            }
        }
        None
    }
}

/// Self-check (run by `cargo test`): quantiles of known samples.
pub fn selfcheck() {
    let mut h = Hist::default();
    assert_eq!(h.quantile_us(0.5), None);
    for us in 1..=1000u64 {
        h.record_ns(us * 1000 + 999);
    }
    assert_eq!(h.count(), 1000);
    assert_eq!(h.quantile_us(0.5), Some(500));
    assert_eq!(h.quantile_us(0.99), Some(990));
    h.record_ns(5_000_000_000); // 5 s
    let top = h.quantile_us(1.0).unwrap_or(0);
    assert!(
        (4_900_000..=5_000_000).contains(&top),
        "5 s recorded as {top} µs"
    );
    for us in [1024u64, 1500, 70_000, 1 << 35] {
        let l = lower(index(us));
        assert!(l <= us && us - l <= us / 60, "{us} -> {l}");
    }
}
