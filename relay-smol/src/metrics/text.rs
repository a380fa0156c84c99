//! Prometheus text exposition format, version 0.0.4 (`text/plain; version=0.0.4`).
//!
//! [`TextEncoder`] appends families to a `String`: one [`TextEncoder::family`] call writes the
//! `# HELP` and `# TYPE` lines, then one [`TextEncoder::sample`] call per series. Label values
//! and help texts are escaped as the format requires, so any string (a peer name from the
//! mesh, say) is safe to pass; metric and label *names* come from our own catalog and are
//! checked by [`valid_metric_name`] / [`valid_label_name`] in tests.

use core::fmt::Write as _;

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two metric types the relay exposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricType {
    /// Monotonic count since start; its name ends in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// A sample value: integers are written exactly, floats in Prometheus' float syntax
/// (`NaN`, `+Inf`, `-Inf` for the special values).
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// An exact unsigned integer.
    Int(u64),
    /// A signed integer (gauges that can go below zero).
    Signed(i64),
    /// A float.
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Signed(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}

/// Appends metric families in the text exposition format to a `String`.
pub struct TextEncoder<'a> {
    out: &'a mut String,
}

impl<'a> TextEncoder<'a> {
    /// An encoder appending to `out`.
    pub fn new(out: &'a mut String) -> Self {
        TextEncoder { out }
    }

    /// Starts a family: writes its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, help: &str, ty: MetricType) {
        debug_assert!(valid_metric_name(name), "bad metric name {name:?}");
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(ty.as_str());
        self.out.push('\n');
    }

    /// Writes one sample line `name{l1="v1",…} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                debug_assert!(valid_label_name(k), "bad label name {k:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                push_label_value(self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(self.out, value.into());
        self.out.push('\n');
    }
}

fn push_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn push_value(out: &mut String, v: Value) {
    // Writing to a String cannot fail.
    let _ = match v {
        Value::Int(i) => write!(out, "{i}"),
        Value::Signed(i) => write!(out, "{i}"),
        Value::Float(f) if f.is_nan() => write!(out, "NaN"),
        Value::Float(f) if f == f64::INFINITY => write!(out, "+Inf"),
        Value::Float(f) if f == f64::NEG_INFINITY => write!(out, "-Inf"),
        Value::Float(f) => write!(out, "{f}"),
    };
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, the metric name syntax.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with the reserved `__`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_and_samples_follow_the_format() {
        let mut s = String::new();
        let mut e = TextEncoder::new(&mut s);
        e.family(
            "fastpubsub_drops_total",
            "Dropped messages.\nBy reason \\ cause",
            MetricType::Counter,
        );
        e.sample("fastpubsub_drops_total", &[("reason", "queue_full")], 3u64);
        e.sample(
            "fastpubsub_drops_total",
            &[("reason", "a\"b\\c\nd"), ("x", "y")],
            0u64,
        );
        e.family(
            "fastpubsub_connections",
            "Open connections.",
            MetricType::Gauge,
        );
        e.sample("fastpubsub_connections", &[], -2i64);
        assert_eq!(
            s,
            "# HELP fastpubsub_drops_total Dropped messages.\\nBy reason \\\\ cause\n\
             # TYPE fastpubsub_drops_total counter\n\
             fastpubsub_drops_total{reason=\"queue_full\"} 3\n\
             fastpubsub_drops_total{reason=\"a\\\"b\\\\c\\nd\",x=\"y\"} 0\n\
             # HELP fastpubsub_connections Open connections.\n\
             # TYPE fastpubsub_connections gauge\n\
             fastpubsub_connections -2\n"
        );
    }

    #[test]
    fn floats_use_prometheus_syntax() {
        let mut s = String::new();
        let mut e = TextEncoder::new(&mut s);
        for v in [
            0.25,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0000001,
            1e21,
        ] {
            e.sample("m", &[], v);
        }
        let values: Vec<&str> = s.lines().map(|l| l.trim_start_matches("m ")).collect();
        assert_eq!(values[..4], ["0.25", "NaN", "+Inf", "-Inf"]);
        // Whatever Rust prints for the rest must parse back as the same float.
        assert_eq!(values[4].parse::<f64>().ok(), Some(0.0000001));
        assert_eq!(values[5].parse::<f64>().ok(), Some(1e21));
    }

    #[test]
    fn name_syntax() {
        assert!(valid_metric_name("fastpubsub_link_rtt_seconds"));
        assert!(valid_metric_name("a:b_c9"));
        assert!(!valid_metric_name("9a"));
        assert!(!valid_metric_name(""));
        assert!(!valid_metric_name("a-b"));
        assert!(valid_label_name("reason"));
        assert!(!valid_label_name("__reserved"));
        assert!(!valid_label_name("a:b"));
        assert!(!valid_label_name(""));
    }
}
