//! The relay's configuration file (`fastpubsub-relay run --config FILE`).
//!
//! One TOML file; every key is optional and has the same default as the matching `run` flag,
//! and a flag given on the command line overrides the file. [`load`] is the entry point: it
//! reads the file, checks every key against [`KEYS`], and returns the [`FileSettings`] it
//! sets; `run` merges them under its flags (`cli::run::apply_config_file`). This module does
//! not know the command line.
//!
//! The reader accepts the part of TOML a flat config needs: `[table]` headers, `key = value`
//! with strings (`"basic"` with escapes, `'literal'`), integers (`_` separators allowed) and
//! booleans, and `#` comments. Anything else (floats, dates, arrays, inline tables, dotted
//! keys) is refused with the line and what was expected, as are unknown tables or keys and
//! values out of range: a typo never silently falls back to a default.
//! Written by hand instead of using the `toml` crate: that crate (with serde) costs more
//! binary size than this whole file, and the relay needs none of the rest of TOML.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::mesh::config::Seed;

/// Largest config file read, in bytes; a config file is a few hundred bytes.
pub const MAX_FILE_LEN: u64 = 64 * 1024;

/// What went wrong reading the config file: where, which key, what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when the problem is on a line.
    pub line: Option<usize>,
    /// `table.key`, when the problem is about one key.
    pub key: Option<String>,
    /// What was wrong and what was expected.
    pub why: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config file {}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ", key {key}")?;
        }
        write!(f, ": {}", self.why)
    }
}

impl std::error::Error for ConfigFileError {}

/// A value as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A string (basic or literal).
    Str(String),
    /// An integer.
    Int(i64),
    /// `true` or `false`.
    Bool(bool),
    /// `["a", "b"]`: strings on one line.
    List(Vec<String>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::List(_) => "a list",
        }
    }
}

/// One `key = value` line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The `[table]` it is in.
    pub table: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Value,
    /// 1-based line number.
    pub line: usize,
}

/// What a key accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `"IP:PORT"`.
    Addr,
    /// `"IP:PORT"` or `"off"`.
    AddrOrOff,
    /// Any non-empty string.
    Text,
    /// `["NAME@HOST:PORT", ...]`: mesh seed relays.
    Seeds,
    /// A file path string.
    Path,
    /// `true` / `false`.
    Bool,
    /// A whole number in `min..=max`.
    Int {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
}

/// One key the file may contain.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// Its table.
    pub table: &'static str,
    /// Its name (the matching `run` flag is `--` + name with `-` for `_`).
    pub key: &'static str,
    /// What it accepts.
    pub kind: Kind,
}

const fn key(table: &'static str, key: &'static str, kind: Kind) -> KeySpec {
    KeySpec { table, key, kind }
}

const fn int(table: &'static str, key: &'static str, min: u64, max: u64) -> KeySpec {
    KeySpec {
        table,
        key,
        kind: Kind::Int { min, max },
    }
}

/// Every key the file may contain. `docs/embedded.md` documents them; defaults are those
/// of the `run` flags (see `fastpubsub-relay run --help`).
pub const KEYS: &[KeySpec] = &[
    key("edge", "listen", Kind::Addr),
    key("edge", "tls_cert", Kind::Path),
    key("edge", "tls_key", Kind::Path),
    key("edge", "insecure_no_auth", Kind::Bool),
    key("edge", "public_host", Kind::Text),
    key("wt", "listen", Kind::Addr),
    key("wt", "cert", Kind::Path),
    key("wt", "key", Kind::Path),
    int("limits", "max_connections", 1, 10_000_000),
    int("limits", "max_pending_handshakes", 1, 10_000_000),
    int("limits", "max_pending_per_source", 1, 10_000_000),
    int("limits", "max_subs_per_conn", 1, 1_000_000),
    int("limits", "max_total_subs", 1, 100_000_000),
    int("limits", "max_frame_bytes", 64, 16 * 1024 * 1024),
    int("limits", "queue_bytes", 1024, 1024 * 1024 * 1024),
    int("limits", "slow_consumer_grace_ms", 0, 3_600_000),
    int("limits", "shutdown_grace_ms", 0, 3_600_000),
    int("limits", "close_timeout_ms", 0, 600_000),
    key("tickets", "state_dir", Kind::Path),
    key("tickets", "public_key", Kind::Path),
    int(
        "tickets",
        "status_capacity",
        1,
        crate::tickets::MAX_STATUS_CAPACITY as u64,
    ),
    key("admin", "listen", Kind::AddrOrOff),
    key("admin", "token_file", Kind::Path),
    key("mesh", "listen", Kind::Addr),
    key("mesh", "name", Kind::Text),
    key("mesh", "region", Kind::Text),
    key("mesh", "edge_url", Kind::Text),
    key("mesh", "cert", Kind::Path),
    key("mesh", "key", Kind::Path),
    key("mesh", "ca", Kind::Path),
    key("mesh", "peers", Kind::Seeds),
    key("mesh", "advertise", Kind::Addr),
    // Leaves room in the route table's neighbour slots for exploration and grace links.
    int(
        "mesh",
        "max_neighbours",
        1,
        crate::mesh::limits::MAX_NEIGHBOURS_LIMIT as u64,
    ),
    int(
        "mesh",
        "probe_interval_ms",
        crate::mesh::limits::MIN_PROBE_INTERVAL_MS,
        crate::mesh::limits::MAX_PROBE_INTERVAL_MS,
    ),
    // Receivers mark a relay stale after 15 s without an announcement (dashboard::view).
    int(
        "mesh",
        "announce_interval_ms",
        crate::mesh::limits::MIN_ANNOUNCE_INTERVAL_MS,
        crate::mesh::limits::MAX_ANNOUNCE_INTERVAL_MS,
    ),
];

fn is_bare_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses a basic string body after the opening `"`; returns the string and the rest.
fn basic_string(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => {
                let (_, e) = chars.next().ok_or("a string ends in a lone backslash")?;
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'u' => {
                        let mut code = 0u32;
                        for _ in 0..4 {
                            let (_, h) = chars.next().ok_or("\\u needs four hex digits")?;
                            let d = h.to_digit(16).ok_or("\\u needs four hex digits")?;
                            code = code * 16 + d;
                        }
                        out.push(char::from_u32(code).ok_or("\\u names no character")?);
                    }
                    other => return Err(format!("unknown escape \\{other} in a string")),
                }
            }
            c if c.is_control() && c != '\t' => {
                return Err("control character inside a string".to_string());
            }
            c => out.push(c),
        }
    }
    Err("string has no closing \"".to_string())
}

/// Parses a value and returns it with whatever follows it on the line.
fn value(s: &str) -> Result<(Value, &str), String> {
    if let Some(rest) = s.strip_prefix('"') {
        if rest.starts_with("\"\"") {
            return Err("multi-line strings are not supported; use one \"string\"".into());
        }
        let (v, rest) = basic_string(rest)?;
        return Ok((Value::Str(v), rest));
    }
    if let Some(rest) = s.strip_prefix('\'') {
        let end = rest.find('\'').ok_or("string has no closing '")?;
        return Ok((Value::Str(rest[..end].to_string()), &rest[end + 1..]));
    }
    let end = s
        .find(|c: char| c.is_whitespace() || c == '#')
        .unwrap_or(s.len());
    let (word, rest) = s.split_at(end);
    match word {
        "true" => return Ok((Value::Bool(true), rest)),
        "false" => return Ok((Value::Bool(false), rest)),
        _ => {}
    }
    if s.starts_with('[') {
        return list(s);
    }
    if word.starts_with('{') {
        return Err("inline tables are not supported".into());
    }
    let digits = word.strip_prefix(['+', '-']).unwrap_or(word);
    let well_formed = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && (digits.len() == 1 || !digits.starts_with('0'));
    if !well_formed {
        return Err(format!(
            "expected a \"string\", a whole number or true/false, found {word:?}"
        ));
    }
    let n: i64 = word
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{word} is too large"))?;
    Ok((Value::Int(n), rest))
}

/// A one-line array of strings, starting at its `[`: `["a", 'b']`.
fn list(s: &str) -> Result<(Value, &str), String> {
    let mut rest = s.get(1..).unwrap_or("").trim_start();
    let mut items = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix(']') {
            return Ok((Value::List(items), after));
        }
        if !(rest.starts_with('"') || rest.starts_with('\'')) {
            return Err(if rest.is_empty() || rest.starts_with('#') {
                "an array must close on the same line: [\"a\", \"b\"]".to_string()
            } else {
                format!("arrays hold \"strings\" only, found {rest:?}")
            });
        }
        let (v, after) = value(rest)?;
        if let Value::Str(item) = v {
            items.push(item);
        }
        rest = after.trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if rest.is_empty() || rest.starts_with('#') {
            return Err("an array must close on the same line: [\"a\", \"b\"]".to_string());
        } else if !rest.starts_with(']') {
            return Err(format!("expected `,` or `]` in the array, found {rest:?}"));
        }
    }
}

/// Only whitespace or a comment may follow a value or a header.
fn end_of_line(rest: &str) -> Result<(), String> {
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected {rest:?} after the value"))
    }
}

/// Parses the text of a config file into its entries (no schema check).
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut entries: Vec<Entry> = Vec::new();
    let mut tables: Vec<String> = Vec::new();
    let mut table = String::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            if rest.starts_with('[') {
                return Err((n, "arrays of tables ([[...]]) are not supported".into()));
            }
            let (name, after) = rest
                .split_once(']')
                .ok_or((n, format!("table header {line:?} has no closing ]")))?;
            let name = name.trim();
            if !is_bare_key(name) {
                return Err((
                    n,
                    format!("bad table name {name:?}: use letters, digits, _ and -"),
                ));
            }
            end_of_line(after).map_err(|e| (n, e))?;
            if tables.iter().any(|t| t == name) {
                return Err((n, format!("table [{name}] appears twice")));
            }
            tables.push(name.to_string());
            table = name.to_string();
            continue;
        }
        let (key, rest) = line.split_once('=').ok_or((
            n,
            format!("expected `key = value` or `[table]`, found {line:?}"),
        ))?;
        let key = key.trim();
        if !is_bare_key(key) {
            return Err((
                n,
                format!("bad key {key:?}: use letters, digits, _ and - (no dots or quotes)"),
            ));
        }
        let (v, rest) = value(rest.trim_start()).map_err(|e| (n, format!("{key}: {e}")))?;
        end_of_line(rest).map_err(|e| (n, format!("{key}: {e}")))?;
        if let Some(prev) = entries.iter().find(|e| e.table == table && e.key == key) {
            return Err((n, format!("{key} is already set on line {}", prev.line)));
        }
        entries.push(Entry {
            table: table.clone(),
            key: key.to_string(),
            value: v,
            line: n,
        });
    }
    Ok(entries)
}

/// A checked value, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Checked {
    Addr(SocketAddr),
    Text(String),
    Seeds(Vec<Seed>),
    Path(PathBuf),
    Bool(bool),
    Int(u64),
}

fn check(spec: &KeySpec, v: &Value) -> Result<Checked, String> {
    match (spec.kind, v) {
        (Kind::Addr, Value::Str(s)) => s.parse().map(Checked::Addr).map_err(|_| {
            format!("expected an address like \"0.0.0.0:8080\" or \"[::]:8080\", found {s:?}")
        }),
        (Kind::AddrOrOff, Value::Str(s)) if s == "off" => Ok(Checked::Text(s.clone())),
        (Kind::AddrOrOff, Value::Str(s)) => match s.parse::<SocketAddr>() {
            Ok(_) => Ok(Checked::Text(s.clone())),
            Err(_) => Err(format!(
                "expected an address like \"127.0.0.1:9091\" or \"off\", found {s:?}"
            )),
        },
        (Kind::Text, Value::Str(s)) if s.is_empty() => {
            Err("expected a non-empty string, found \"\"".to_string())
        }
        (Kind::Text, Value::Str(s)) => Ok(Checked::Text(s.clone())),
        (Kind::Seeds, Value::List(items)) => items
            .iter()
            .map(|i| {
                i.parse::<Seed>()
                    .map_err(|e| format!("peer {i:?}: {e} (expected \"NAME@HOST:PORT\")"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Checked::Seeds),
        (Kind::Path, Value::Str(s)) if s.is_empty() => {
            Err("expected a file path, found an empty string".to_string())
        }
        (Kind::Path, Value::Str(s)) => Ok(Checked::Path(PathBuf::from(s))),
        (Kind::Bool, Value::Bool(b)) => Ok(Checked::Bool(*b)),
        (Kind::Int { min, max }, Value::Int(n)) => match u64::try_from(*n) {
            Ok(n) if (min..=max).contains(&n) => Ok(Checked::Int(n)),
            _ if spec.key == "probe_interval_ms" => Err(format!(
                "expected a whole number from {min} to {max}, found {n}: {}",
                crate::mesh::limits::PROBE_INTERVAL_WHY
            )),
            _ => Err(format!(
                "expected a whole number from {min} to {max}, found {n}"
            )),
        },
        (kind, v) => {
            let want = match kind {
                Kind::Addr => "an address string like \"0.0.0.0:8080\"",
                Kind::AddrOrOff => "an address string like \"127.0.0.1:9091\" or \"off\"",
                Kind::Text => "a \"string\"",
                Kind::Seeds => "a list like [\"fra@10.0.0.2:7000\", \"tyo@10.0.0.3:7000\"]",
                Kind::Path => "a file path string",
                Kind::Bool => "true or false",
                Kind::Int { .. } => "a whole number (no quotes)",
            };
            Err(format!("expected {want}, found {}", v.kind()))
        }
    }
}

/// What a config file sets: one field per key of [`KEYS`], `None` (or empty) when the file
/// does not set it. `run` lets its flags override these.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSettings {
    /// `edge.listen`.
    pub listen: Option<SocketAddr>,
    /// `edge.tls_cert`.
    pub tls_cert: Option<PathBuf>,
    /// `edge.tls_key`.
    pub tls_key: Option<PathBuf>,
    /// `edge.insecure_no_auth`.
    pub insecure_no_auth: Option<bool>,
    /// `tickets.state_dir`.
    pub state_dir: Option<PathBuf>,
    /// `tickets.public_key`.
    pub ticket_public_key: Option<PathBuf>,
    /// `tickets.status_capacity`.
    pub ticket_status_capacity: Option<usize>,
    /// `limits.max_connections`.
    pub max_connections: Option<usize>,
    /// `limits.max_pending_handshakes`.
    pub max_pending_handshakes: Option<usize>,
    /// `limits.max_pending_per_source`.
    pub max_pending_per_source: Option<usize>,
    /// `limits.max_subs_per_conn`.
    pub max_subs_per_conn: Option<usize>,
    /// `limits.max_total_subs`.
    pub max_total_subs: Option<usize>,
    /// `limits.max_frame_bytes`.
    pub max_frame_bytes: Option<usize>,
    /// `limits.queue_bytes`.
    pub queue_bytes: Option<usize>,
    /// `limits.slow_consumer_grace_ms`.
    pub slow_consumer_grace_ms: Option<u64>,
    /// `limits.shutdown_grace_ms`.
    pub shutdown_grace_ms: Option<u64>,
    /// `limits.close_timeout_ms`.
    pub close_timeout_ms: Option<u64>,
    /// `admin.listen` (an address or `off`).
    pub admin_listen: Option<String>,
    /// `admin.token_file`.
    pub admin_token_file: Option<PathBuf>,
    /// `mesh.listen`.
    pub mesh_listen: Option<SocketAddr>,
    /// `mesh.name`.
    pub name: Option<String>,
    /// `mesh.region`.
    pub region: Option<String>,
    /// `mesh.edge_url`.
    pub edge_url: Option<String>,
    /// `mesh.cert`.
    pub mesh_cert: Option<PathBuf>,
    /// `mesh.key`.
    pub mesh_key: Option<PathBuf>,
    /// `mesh.ca`.
    pub mesh_ca: Option<PathBuf>,
    /// `mesh.peers`.
    pub peers: Option<Vec<Seed>>,
    /// `mesh.advertise`.
    pub mesh_advertise: Option<SocketAddr>,
    /// `mesh.max_neighbours`.
    pub max_neighbours: Option<usize>,
    /// `mesh.probe_interval_ms`.
    pub probe_interval_ms: Option<u64>,
    /// `mesh.announce_interval_ms`.
    pub announce_interval_ms: Option<u64>,
    /// `edge.public_host`.
    pub public_host: Option<String>,
    /// `wt.listen`.
    pub wt_listen: Option<SocketAddr>,
    /// `wt.cert`.
    pub wt_cert: Option<PathBuf>,
    /// `wt.key`.
    pub wt_key: Option<PathBuf>,
}

/// Reads `path` and returns what it sets (checked against [`KEYS`]).
pub fn load(path: &Path) -> Result<FileSettings, ConfigFileError> {
    let err = |why: String| ConfigFileError {
        path: path.to_path_buf(),
        line: None,
        key: None,
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if meta.len() > MAX_FILE_LEN {
        return Err(err(format!(
            "it is {} bytes; a config file is at most {MAX_FILE_LEN}",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read it as UTF-8 text: {e}")))?;
    from_text(&text, path)
}

/// Parses and checks the text of a config file (`path` only names it in errors). Pure: the
/// fuzz targets call it.
pub fn from_text(text: &str, path: &Path) -> Result<FileSettings, ConfigFileError> {
    let err = |line: Option<usize>, key: Option<String>, why: String| ConfigFileError {
        path: path.to_path_buf(),
        line,
        key,
        why,
    };
    let entries = parse(text).map_err(|(line, why)| err(Some(line), None, why))?;
    let mut settings = FileSettings::default();
    for e in &entries {
        let name = format!("{}.{}", e.table, e.key);
        if e.table.is_empty() {
            return Err(err(
                Some(e.line),
                Some(e.key.clone()),
                "every key belongs in a table: [edge], [limits], [tickets], [admin] or [mesh]"
                    .to_string(),
            ));
        }
        let spec = KEYS
            .iter()
            .find(|k| k.table == e.table && k.key == e.key)
            .ok_or_else(|| {
                let known: Vec<&str> = KEYS
                    .iter()
                    .filter(|k| k.table == e.table)
                    .map(|k| k.key)
                    .collect();
                let why = if known.is_empty() {
                    format!(
                        "unknown table [{}]; known tables: [edge], [limits], [tickets], [admin], [mesh]",
                        e.table
                    )
                } else {
                    format!("unknown key; [{}] knows: {}", e.table, known.join(", "))
                };
                err(Some(e.line), Some(name.clone()), why)
            })?;
        let v = check(spec, &e.value).map_err(|why| err(Some(e.line), Some(name.clone()), why))?;
        store(&mut settings, spec.table, spec.key, v);
    }
    Ok(settings)
}

/// The check that needs the merged settings (file and flags): a queue smaller than the
/// largest frame could never deliver a full-size message.
pub fn check_queue_fits_frame(
    path: &Path,
    queue: usize,
    frame: usize,
) -> Result<(), ConfigFileError> {
    if queue < frame {
        return Err(ConfigFileError {
            path: path.to_path_buf(),
            line: None,
            key: Some("limits.queue_bytes".to_string()),
            why: format!(
                "queue_bytes ({queue}) is smaller than max_frame_bytes ({frame}): a full-size \
                 message could never be queued; raise queue_bytes or lower max_frame_bytes"
            ),
        });
    }
    Ok(())
}

/// Stores a checked value (the first one given for a key counts).
fn store(a: &mut FileSettings, table: &str, key: &str, v: Checked) {
    fn fill<T>(slot: &mut Option<T>, v: T) {
        if slot.is_none() {
            *slot = Some(v);
        }
    }
    let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    match (table, key, v) {
        ("edge", "listen", Checked::Addr(x)) => fill(&mut a.listen, x),
        ("edge", "public_host", Checked::Text(x)) => fill(&mut a.public_host, x),
        ("wt", "listen", Checked::Addr(x)) => fill(&mut a.wt_listen, x),
        ("wt", "cert", Checked::Path(x)) => fill(&mut a.wt_cert, x),
        ("wt", "key", Checked::Path(x)) => fill(&mut a.wt_key, x),
        ("tickets", "state_dir", Checked::Path(x)) => fill(&mut a.state_dir, x),
        ("tickets", "public_key", Checked::Path(x)) => fill(&mut a.ticket_public_key, x),
        ("tickets", "status_capacity", Checked::Int(n)) => {
            fill(&mut a.ticket_status_capacity, as_usize(n))
        }
        ("admin", "listen", Checked::Text(x)) => fill(&mut a.admin_listen, x),
        ("admin", "token_file", Checked::Path(x)) => fill(&mut a.admin_token_file, x),
        ("mesh", "listen", Checked::Addr(x)) => fill(&mut a.mesh_listen, x),
        ("mesh", "name", Checked::Text(x)) => fill(&mut a.name, x),
        ("mesh", "region", Checked::Text(x)) => fill(&mut a.region, x),
        ("mesh", "edge_url", Checked::Text(x)) => fill(&mut a.edge_url, x),
        ("mesh", "cert", Checked::Path(x)) => fill(&mut a.mesh_cert, x),
        ("mesh", "key", Checked::Path(x)) => fill(&mut a.mesh_key, x),
        ("mesh", "ca", Checked::Path(x)) => fill(&mut a.mesh_ca, x),
        ("mesh", "peers", Checked::Seeds(x)) => fill(&mut a.peers, x),
        ("mesh", "advertise", Checked::Addr(x)) => fill(&mut a.mesh_advertise, x),
        ("mesh", "max_neighbours", Checked::Int(n)) => fill(&mut a.max_neighbours, as_usize(n)),
        ("mesh", "probe_interval_ms", Checked::Int(n)) => fill(&mut a.probe_interval_ms, n),
        ("mesh", "announce_interval_ms", Checked::Int(n)) => fill(&mut a.announce_interval_ms, n),
        (_, "tls_cert", Checked::Path(x)) => fill(&mut a.tls_cert, x),
        (_, "tls_key", Checked::Path(x)) => fill(&mut a.tls_key, x),
        (_, "insecure_no_auth", Checked::Bool(x)) => {
            a.insecure_no_auth = Some(a.insecure_no_auth.unwrap_or(false) | x)
        }
        (_, "max_connections", Checked::Int(n)) => fill(&mut a.max_connections, as_usize(n)),
        (_, "max_pending_handshakes", Checked::Int(n)) => {
            fill(&mut a.max_pending_handshakes, as_usize(n))
        }
        (_, "max_pending_per_source", Checked::Int(n)) => {
            fill(&mut a.max_pending_per_source, as_usize(n))
        }
        (_, "max_subs_per_conn", Checked::Int(n)) => fill(&mut a.max_subs_per_conn, as_usize(n)),
        (_, "max_total_subs", Checked::Int(n)) => fill(&mut a.max_total_subs, as_usize(n)),
        (_, "max_frame_bytes", Checked::Int(n)) => fill(&mut a.max_frame_bytes, as_usize(n)),
        (_, "queue_bytes", Checked::Int(n)) => fill(&mut a.queue_bytes, as_usize(n)),
        (_, "slow_consumer_grace_ms", Checked::Int(n)) => fill(&mut a.slow_consumer_grace_ms, n),
        (_, "shutdown_grace_ms", Checked::Int(n)) => fill(&mut a.shutdown_grace_ms, n),
        (_, "close_timeout_ms", Checked::Int(n)) => fill(&mut a.close_timeout_ms, n),
        // KEYS and this match are kept in step by the `every_key_is_stored` test.
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // What `run` does with a file: load it, merge it under the flags, check the merge.
    use crate::cli::run::{RunArgs, apply_config_file as apply};
    use argh::FromArgs;

    fn args(flags: &[&str]) -> RunArgs {
        RunArgs::from_args(&["run"], flags).expect("valid flags")
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fastpubsub-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }

    #[test]
    fn file_fills_unset_args_and_flags_win() {
        let p = write(
            "ok.toml",
            "# edge box\n[edge]\nlisten = \"0.0.0.0:9000\" # all interfaces\n\
             tls_cert = '/etc/c.pem'\ninsecure_no_auth = true\n\n[limits]\n\
             max_connections = 2_000\nqueue_bytes = 98304\nclose_timeout_ms = 0\n",
        );
        let mut a = args(&["--max-connections", "7"]);
        apply(&p, &mut a).expect("valid file");
        assert_eq!(a.listen, Some("0.0.0.0:9000".parse().expect("addr")));
        assert_eq!(a.tls_cert, Some(PathBuf::from("/etc/c.pem")));
        assert!(a.insecure_no_auth);
        assert_eq!(a.max_connections, Some(7), "the flag overrides the file");
        assert_eq!(a.queue_bytes, Some(98304));
        assert_eq!(a.close_timeout_ms, Some(0));
        assert_eq!(a.max_total_subs, None, "absent keys keep the flag default");
    }

    #[test]
    fn errors_say_file_line_key_and_expectation() {
        let cases: &[(&str, Option<usize>, Option<&str>, &str)] = &[
            (
                "[limits]\nmax_connections = \"many\"",
                Some(2),
                Some("limits.max_connections"),
                "whole number (no quotes)",
            ),
            (
                "[limits]\nmax_connections = 0",
                Some(2),
                Some("limits.max_connections"),
                "from 1 to",
            ),
            (
                "[mesh]\nmax_neighbours = 25",
                Some(2),
                Some("mesh.max_neighbours"),
                "from 1 to 24",
            ),
            (
                "[limits]\nqueue_bytes = -5",
                Some(2),
                Some("limits.queue_bytes"),
                "from 1024 to",
            ),
            (
                "[limits]\nmax_conections = 5",
                Some(2),
                Some("limits.max_conections"),
                "knows: max_connections",
            ),
            (
                "[mush]\npeers = 1",
                Some(2),
                Some("mush.peers"),
                "unknown table [mush]",
            ),
            (
                "[mesh]\nannounce_interval_ms = 60000",
                Some(2),
                Some("mesh.announce_interval_ms"),
                "from 100 to 10000",
            ),
            (
                "listen = \"1.2.3.4:5\"",
                Some(1),
                Some("listen"),
                "belongs in a table",
            ),
            (
                "[edge]\nlisten = \"localhost\"",
                Some(2),
                Some("edge.listen"),
                "address like",
            ),
            (
                "[edge]\nlisten = 8080",
                Some(2),
                Some("edge.listen"),
                "found an integer",
            ),
            (
                "[edge]\ninsecure_no_auth = \"yes\"",
                Some(2),
                Some("edge.insecure_no_auth"),
                "true or false",
            ),
            (
                "[edge]\ntls_cert = \"\"",
                Some(2),
                Some("edge.tls_cert"),
                "empty string",
            ),
            (
                "[edge]\nlisten = \"a\"\nlisten = \"b\"",
                Some(3),
                None,
                "already set on line 2",
            ),
            ("[edge]\n[edge]", Some(2), None, "appears twice"),
            (
                "[limits]\nqueue_bytes = 1.5",
                Some(2),
                None,
                "whole number or true/false",
            ),
            (
                "[limits]\nqueue_bytes = 0x10",
                Some(2),
                None,
                "whole number or true/false",
            ),
            (
                "[limits]\nqueue_bytes = 1__0",
                Some(2),
                None,
                "whole number or true/false",
            ),
            (
                "[limits]\nqueue_bytes = 99999999999999999999",
                Some(2),
                None,
                "too large",
            ),
            (
                "[limits]\nqueue_bytes = 1 2",
                Some(2),
                None,
                "after the value",
            ),
            ("[edge]\nlisten = \"x", Some(2), None, "no closing"),
            ("[edge]\nlisten = \"\\q\"", Some(2), None, "unknown escape"),
            (
                "[edge]\nlisten = [\"a\"]",
                Some(2),
                Some("edge.listen"),
                "found a list",
            ),
            ("[edge]\nlisten = {a = 1}", Some(2), None, "inline tables"),
            (
                "[mesh]\npeers = \"a@b:1\"",
                Some(2),
                Some("mesh.peers"),
                "a list like",
            ),
            (
                "[mesh]\npeers = [\"nohost\"]",
                Some(2),
                Some("mesh.peers"),
                "NAME@HOST:PORT",
            ),
            (
                "[mesh]\npeers = [\"a@1.2.3.4:1\"",
                Some(2),
                None,
                "close on the same line",
            ),
            ("[mesh]\npeers = [1]", Some(2), None, "\"strings\" only"),
            (
                "[mesh]\npeers = [\"a\" \"b\"]",
                Some(2),
                None,
                "expected `,` or `]`",
            ),
            (
                "[mesh]\nname = \"\"",
                Some(2),
                Some("mesh.name"),
                "non-empty",
            ),
            (
                "[mesh]\nprobe_interval_ms = 1",
                Some(2),
                Some("mesh.probe_interval_ms"),
                "from 10 to",
            ),
            (
                "[mesh]\nprobe_interval_ms = 1001",
                Some(2),
                Some("mesh.probe_interval_ms"),
                "from 10 to 1000, found 1001: a link with no probe answer for 1 s + RTT",
            ),
            ("[[edge]]", Some(1), None, "arrays of tables"),
            ("[edge\nlisten = \"a\"", Some(1), None, "no closing ]"),
            ("[edge]\nedge.listen = \"a\"", Some(2), None, "no dots"),
            ("[edge]\njust words", Some(2), None, "key = value"),
            (
                "[limits]\nqueue_bytes = 4096",
                None,
                Some("limits.queue_bytes"),
                "smaller than max_frame_bytes",
            ),
        ];
        for (i, (text, line, key, want)) in cases.iter().enumerate() {
            let p = write(&format!("bad{i}.toml"), text);
            let e = apply(&p, &mut args(&[])).expect_err(text);
            assert_eq!(e.line, *line, "{text}: {e}");
            assert_eq!(e.key.as_deref(), *key, "{text}: {e}");
            assert!(e.why.contains(want), "{text}: {e}");
            let shown = e.to_string();
            assert!(shown.contains(&p.display().to_string()), "{shown}");
        }
    }

    #[test]
    fn missing_and_oversized_files_are_clear_errors() {
        let mut a = args(&[]);
        let e = apply(Path::new("/nonexistent/relay.toml"), &mut a).expect_err("missing");
        assert!(
            e.to_string().contains("/nonexistent/relay.toml") && e.why.contains("cannot read"),
            "{e}"
        );
        let big = "# padding\n".repeat(7000);
        let p = write("big.toml", &big);
        let e = apply(&p, &mut a).expect_err("too big");
        assert!(e.why.contains("at most 65536"), "{e}");
    }

    #[test]
    fn mesh_table_with_peers() {
        let p = write(
            "mesh.toml",
            "[mesh]\nlisten = \"0.0.0.0:7000\"\nname = \"fra\"\n\
             peers = [\"tyo@10.0.0.3:7000\", 'nsk@10.0.0.4:7000',] # seeds\n",
        );
        let mut a = args(&["--name", "cli-name"]);
        apply(&p, &mut a).expect("valid mesh table");
        assert_eq!(a.mesh_listen, Some("0.0.0.0:7000".parse().expect("addr")));
        assert_eq!(a.name.as_deref(), Some("cli-name"), "the flag wins");
        assert_eq!(a.peer.len(), 2);
        let mut b = args(&["--peer", "x@10.0.0.9:7000"]);
        apply(&p, &mut b).expect("valid mesh table");
        assert_eq!(
            b.peer.len(),
            1,
            "peers on the command line replace the file's list"
        );
    }

    #[test]
    fn strings_escapes_and_literals() {
        let e =
            parse("[edge]\ntls_cert = \"/a\\\\b\\u0041\\\"\"\ntls_key = 'C:\\k'").expect("valid");
        assert_eq!(e[0].value, Value::Str("/a\\bA\"".into()));
        assert_eq!(e[1].value, Value::Str("C:\\k".into()));
    }

    #[test]
    fn every_key_is_stored() {
        // A key in KEYS that `store` ignores would be accepted and then do nothing.
        for spec in KEYS {
            let value = match spec.kind {
                Kind::Addr => "\"10.0.0.1:1\"".to_string(),
                Kind::AddrOrOff => "\"off\"".to_string(),
                Kind::Text => "\"x\"".to_string(),
                Kind::Seeds => "[\"b@10.0.0.2:7000\"]".to_string(),
                Kind::Path => "\"/x\"".to_string(),
                Kind::Bool => "true".to_string(),
                // The largest frame limit would exceed the default queue (a checked error).
                Kind::Int { min, .. } if spec.key == "max_frame_bytes" => min.to_string(),
                Kind::Int { max, .. } => max.to_string(),
            };
            let p = write(
                &format!("key-{}.toml", spec.key),
                &format!("[{}]\n{} = {value}\n", spec.table, spec.key),
            );
            let mut a = args(&[]);
            apply(&p, &mut a).expect("valid single key");
            let before = format!("{:?}", args(&[]));
            assert_ne!(
                format!("{a:?}"),
                before,
                "key {}.{} changed nothing",
                spec.table,
                spec.key
            );
        }
    }

    #[test]
    fn shipped_example_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../platforms/configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("platforms/configs exists") {
            let p = entry.expect("dir entry").path();
            if p.extension().and_then(|e| e.to_str()) == Some("toml") {
                apply(&p, &mut args(&[])).unwrap_or_else(|e| panic!("{e}"));
                seen += 1;
            }
        }
        assert!(
            seen >= 3,
            "expected the three machine-class configs, found {seen}"
        );
    }
}
