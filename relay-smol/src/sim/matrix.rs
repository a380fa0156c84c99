//! RTT matrices (`src,dst,rtt_ms` CSV, as `data/latency/matrix.csv`) for the harness.

use std::collections::HashMap;
use std::path::Path;

/// Measured RTTs between named places.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// The places, as in the file (first appearance order).
    pub places: Vec<String>,
    /// `rtt_us[a * n + b]`: RTT from `a` to `b`, µs; `u32::MAX` when not measured (a pair
    /// measured one way only is used both ways).
    pub rtt_us: Vec<u32>,
}

/// Why a matrix could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum MatrixError {
    /// The file could not be read.
    Io(std::io::Error),
    /// A line is not `src,dst,rtt_ms` with a positive RTT (1-based line number).
    Line(usize, String),
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "cannot read the matrix: {e}"),
            Self::Line(n, l) => write!(
                f,
                "matrix line {n} is not `src,dst,rtt_ms` with a positive RTT in ms: {l:?}"
            ),
        }
    }
}

impl std::error::Error for MatrixError {}

impl Matrix {
    /// Reads a CSV file (header `src,dst,rtt_ms`).
    pub fn load(path: &Path) -> Result<Self, MatrixError> {
        let text = std::fs::read_to_string(path).map_err(MatrixError::Io)?;
        Self::parse(&text)
    }

    /// Parses CSV text (a first line starting with `src` is a header).
    pub fn parse(text: &str) -> Result<Self, MatrixError> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut places = Vec::new();
        let mut pairs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || (i == 0 && line.starts_with("src")) {
                continue;
            }
            let bad = || MatrixError::Line(i + 1, line.to_owned());
            let mut f = line.rsplitn(2, ',');
            let rtt: f64 = f
                .next()
                .and_then(|r| r.trim().parse().ok())
                .ok_or_else(bad)?;
            let (src, dst) = f.next().and_then(|p| p.split_once(',')).ok_or_else(bad)?;
            if !(rtt > 0.0 && rtt < 4e6) {
                return Err(bad());
            }
            let mut id = |name: &str| {
                let name = name.trim().to_owned();
                *index.entry(name.clone()).or_insert_with(|| {
                    places.push(name);
                    places.len() - 1
                })
            };
            let (a, b) = (id(src), id(dst));
            pairs.push((a, b, (rtt * 1000.0).round() as u32));
        }
        let n = places.len();
        let mut rtt_us = vec![u32::MAX; n * n];
        for &(a, b, r) in &pairs {
            rtt_us[a * n + b] = r;
        }
        for &(a, b, r) in &pairs {
            if rtt_us[b * n + a] == u32::MAX {
                rtt_us[b * n + a] = r;
            }
        }
        for a in 0..n {
            rtt_us[a * n + a] = 0;
        }
        Ok(Self { places, rtt_us })
    }

    /// Number of places.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    /// RTT from `a` to `b`, µs, if measured.
    pub fn rtt(&self, a: usize, b: usize) -> Option<u32> {
        let n = self.len();
        self.rtt_us
            .get(a * n + b)
            .copied()
            .filter(|r| *r != u32::MAX)
    }

    /// The first `n` places only.
    pub fn truncated(&self, n: usize) -> Self {
        let n = n.min(self.len());
        let old = self.len();
        let mut rtt_us = Vec::with_capacity(n * n);
        for a in 0..n {
            rtt_us.extend_from_slice(&self.rtt_us[a * old..a * old + n]);
        }
        Self {
            places: self.places[..n].to_vec(),
            rtt_us,
        }
    }

    /// A valid, unique relay name for every place: lowercase ASCII letters and digits,
    /// other characters as `-` (letters outside ASCII dropped), at most 32 bytes.
    pub fn relay_names(&self) -> Vec<String> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        self.places
            .iter()
            .map(|p| {
                let mut s = String::new();
                for c in p.chars() {
                    if c.is_ascii_alphanumeric() {
                        s.push(c.to_ascii_lowercase());
                    } else if c.is_ascii() && !s.ends_with('-') {
                        s.push('-');
                    }
                }
                let mut s: String = s.trim_matches('-').chars().take(28).collect();
                s = s.trim_end_matches('-').to_owned();
                if s.is_empty() {
                    s.push('r');
                }
                let k = seen.entry(s.clone()).or_insert(0);
                *k += 1;
                if *k > 1 {
                    s = format!("{s}-{k}");
                }
                s
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fills_the_reverse_and_names_relays() {
        let m = Matrix::parse(
            "src,dst,rtt_ms\nSão Paulo,New York,120.5\nNew York,Tokyo,150\nTokyo,New York,151\n",
        )
        .expect("parses");
        assert_eq!(m.len(), 3);
        assert_eq!(m.rtt(0, 1), Some(120_500));
        assert_eq!(m.rtt(1, 0), Some(120_500), "one way only: used both ways");
        assert_eq!((m.rtt(1, 2), m.rtt(2, 1)), (Some(150_000), Some(151_000)));
        assert_eq!(m.rtt(0, 2), None);
        assert_eq!(m.relay_names(), vec!["so-paulo", "new-york", "tokyo"]);
        for bad in ["a,b", "a,b,x", "a,b,-1"] {
            assert!(Matrix::parse(bad).is_err(), "{bad}");
        }
    }
}
