//! `footprint/budgets.toml`: the limits every measurement is checked against.
//!
//! A strict reader for the subset of TOML the file uses: `[table]` headers, `key = integer`
//! (underscores allowed) and `key = ["string", ...]` on one line, `#` comments. Anything else
//! is an error naming the line, so a typo never silently drops a budget.

use std::collections::BTreeMap;
use std::fmt;

/// A budget value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An upper bound (bytes, counts).
    Int(u64),
    /// An allow-list (e.g. shared libraries).
    List(Vec<String>),
}

/// All budgets, keyed by `table.key`.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    values: BTreeMap<String, Value>,
}

/// A line of the budgets file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong and what was expected.
    pub why: String,
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.why)
    }
}

fn is_bare_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn parse_value(raw: &str) -> Result<Value, String> {
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or("an array must open and close on the same line: [\"a\", \"b\"]")?;
        let mut items = Vec::new();
        for item in inner.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let s = item
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .filter(|s| !s.contains(['"', '\\']))
                .ok_or_else(|| format!("array items must be plain \"strings\", found {item}"))?;
            items.push(s.to_string());
        }
        return Ok(Value::List(items));
    }
    let digits: String = raw.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || raw.ends_with('_') {
        return Err(format!(
            "expected a non-negative integer or a [\"list\"], found {raw}"
        ));
    }
    digits
        .parse::<u64>()
        .map(Value::Int)
        .map_err(|_| format!("{raw} does not fit in 64 bits"))
}

impl Budgets {
    /// Parses the budgets file text.
    pub fn parse(text: &str) -> Result<Self, BudgetError> {
        let mut values = BTreeMap::new();
        let mut table = String::new();
        for (i, line) in text.lines().enumerate() {
            let err = |why: String| BudgetError { line: i + 1, why };
            // No value in this file contains '#', so a comment starts at the first one.
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[') {
                let name = name
                    .strip_suffix(']')
                    .map(str::trim)
                    .filter(|n| is_bare_key(n))
                    .ok_or_else(|| err(format!("bad table header {line}: expected [name]")))?;
                table = name.to_string();
                continue;
            }
            let (key, raw) = line
                .split_once('=')
                .ok_or_else(|| err(format!("expected `key = value`, found {line}")))?;
            let key = key.trim();
            if !is_bare_key(key) {
                return Err(err(format!(
                    "bad key {key:?}: use letters, digits, _ and -"
                )));
            }
            if table.is_empty() {
                return Err(err(format!("key {key} is outside any [table]")));
            }
            let full = format!("{table}.{key}");
            let value = parse_value(raw.trim()).map_err(|why| err(format!("{full}: {why}")))?;
            if values.insert(full.clone(), value).is_some() {
                return Err(err(format!("{full} is set twice")));
            }
        }
        Ok(Budgets { values })
    }

    /// The integer budget `table.key`, if set.
    pub fn int(&self, key: &str) -> Option<u64> {
        match self.values.get(key) {
            Some(Value::Int(v)) => Some(*v),
            _ => None,
        }
    }

    /// The list budget `table.key`, if set.
    pub fn list(&self, key: &str) -> Option<&[String]> {
        match self.values.get(key) {
            Some(Value::List(v)) => Some(v),
            _ => None,
        }
    }

    /// Every key, to report budgets that no measurement used (likely a typo).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tables_ints_and_lists() {
        let b = Budgets::parse(
            "# c\n[host]\nbinary_bytes = 3_145_728 # 3 MiB\nneeded = [\"libc.so.6\", \"ld.so\"]\n",
        )
        .expect("valid");
        assert_eq!(b.int("host.binary_bytes"), Some(3_145_728));
        assert_eq!(
            b.list("host.needed"),
            Some(&["libc.so.6".to_string(), "ld.so".to_string()][..])
        );
        assert_eq!(b.int("host.needed"), None);
        assert_eq!(b.int("aarch64.binary_bytes"), None);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            ("x = 1", 1, "outside any [table]"),
            ("[t]\nx = 1\nx = 2", 3, "set twice"),
            ("[t]\nx = -1", 2, "non-negative integer"),
            ("[t]\nx = 1.5", 2, "non-negative integer"),
            ("[t]\nx = \"s\"", 2, "non-negative integer"),
            ("[t]\nx = 99999999999999999999", 2, "64 bits"),
            ("[t]\nx = [1]", 2, "plain \"strings\""),
            ("[t]\nx = [\"a\"", 2, "same line"),
            ("[t\nx = 1", 1, "table header"),
            ("[t]\nx", 2, "key = value"),
            ("[t]\na b = 1", 2, "bad key"),
        ];
        for (text, line, want) in cases {
            let e = Budgets::parse(text).expect_err(text);
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.why.contains(want), "{text}: {e}");
        }
    }
}
