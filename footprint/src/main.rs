//! `footprint`: builds the release relay, measures its size and memory, and checks every
//! number against `footprint/budgets.toml`.
//!
//! ```text
//! cargo run -p footprint --release                    # host: size, sections, libraries, RSS
//! cargo run -p footprint --release -- --target aarch64  # + the cross-built aarch64 binary
//! cargo run -p footprint --release -- variants          # opt-level and feature size costs
//! ```
//!
//! Exit status: 0 all within budget, 1 something is over budget, 2 a measurement failed.
//! RSS is measured on the host only: under qemu-user the RSS would include the emulator.

mod budgets;
mod clock;
mod elf;
mod fleet;
mod relay;
mod types;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use budgets::Budgets;
use fleet::Fleet;
use relay::Relay;

/// The workspace root (this crate lives in `footprint/`).
fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

struct Args {
    aarch64: bool,
    relay: Option<PathBuf>,
    budgets: PathBuf,
    markdown: Option<PathBuf>,
    variants: bool,
    insecure: bool,
}

const USAGE: &str = "usage: footprint [variants] [--target aarch64] [--relay PATH] [--insecure] [--budgets FILE] [--markdown FILE]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        aarch64: false,
        relay: None,
        budgets: root().join("footprint/budgets.toml"),
        markdown: None,
        variants: false,
        insecure: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "variants" => a.variants = true,
            "--insecure" => a.insecure = true,
            "--target" => match value("--target")?.as_str() {
                "aarch64" | "aarch64-unknown-linux-gnu" => a.aarch64 = true,
                "host" => a.aarch64 = false,
                t => return Err(format!("--target {t}: expected `host` or `aarch64`")),
            },
            "--relay" => a.relay = Some(PathBuf::from(value("--relay")?)),
            "--budgets" => a.budgets = PathBuf::from(value("--budgets")?),
            "--markdown" => a.markdown = Some(PathBuf::from(value("--markdown")?)),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Runs a build command and fails with its status when it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    eprintln!("footprint: running {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

/// Builds the host release relay with `extra` cargo args into `target_dir`; returns the binary.
fn build_host(target_dir: Option<&Path>, extra: &[&str]) -> Result<PathBuf, String> {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(root())
        .args([
            "build",
            "--locked",
            "--release",
            "-p",
            "fastpubsub-relay",
            "--bin",
            "fastpubsub-relay",
        ])
        .args(extra);
    let dir = match target_dir {
        Some(d) => {
            cmd.arg("--target-dir").arg(d);
            d.to_path_buf()
        }
        None => root().join("target"),
    };
    run(&mut cmd)?;
    Ok(dir.join("release/fastpubsub-relay"))
}

/// Builds the aarch64 release relay with `cross/build`; returns the binary it printed.
fn build_aarch64(extra: &[&str]) -> Result<PathBuf, String> {
    let script = root().join("cross/build");
    let mut cmd = Command::new(&script);
    cmd.current_dir(root()).arg("aarch64").args(extra);
    eprintln!("footprint: running {cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} aarch64 failed: {}",
            script.display(),
            out.status
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("").trim();
    Ok(PathBuf::from(last))
}

/// One row of the report.
struct Row {
    what: String,
    target: String,
    measured: String,
    budget: String,
    over: Option<bool>,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
    used: Vec<String>,
}

fn bytes(n: u64) -> String {
    let mut s = String::new();
    let digits = n.to_string();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    if n >= 1024 * 1024 {
        let _ = write!(s, " ({:.2} MiB)", n as f64 / (1024.0 * 1024.0));
    } else if n >= 1024 {
        let _ = write!(s, " ({:.1} KiB)", n as f64 / 1024.0);
    }
    s
}

impl Report {
    /// Adds a number checked against the integer budget `key` (if the file has one).
    fn check(&mut self, budgets: &Budgets, key: &str, what: &str, target: &str, value: u64) {
        self.used.push(key.to_string());
        let (budget, over) = match budgets.int(key) {
            Some(b) => (bytes(b), Some(value > b)),
            None => ("—".to_string(), None),
        };
        self.rows.push(Row {
            what: what.into(),
            target: target.into(),
            measured: bytes(value),
            budget,
            over,
        });
    }

    /// Adds an informational number (no budget).
    fn info(&mut self, what: &str, target: &str, measured: String) {
        self.rows.push(Row {
            what: what.into(),
            target: target.into(),
            measured,
            budget: "—".into(),
            over: None,
        });
    }

    fn over_budget(&self) -> usize {
        self.rows.iter().filter(|r| r.over == Some(true)).count()
    }

    fn markdown(&self) -> String {
        let mut s = String::from(
            "| measurement | target | measured | budget | result |\n|---|---|---:|---:|---|\n",
        );
        for r in &self.rows {
            let result = match r.over {
                Some(true) => "**OVER**",
                Some(false) => "ok",
                None => "",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.what, r.target, r.measured, r.budget, result
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "\n{n}");
        }
        s
    }
}

/// Size, sections and libraries of one binary.
fn measure_binary(
    rep: &mut Report,
    budgets: &Budgets,
    arch: &str,
    bin: &Path,
) -> Result<(), String> {
    let data = std::fs::read(bin).map_err(|e| format!("cannot read {}: {e}", bin.display()))?;
    let elf = elf::parse(&data).map_err(|e| format!("{}: {e}", bin.display()))?;
    if elf.machine != arch {
        return Err(format!(
            "{} is a {} binary, expected {arch}",
            bin.display(),
            elf.machine
        ));
    }
    let stripped = !elf.sections.iter().any(|s| s.name == ".symtab");
    let what = if stripped {
        "binary size (stripped)"
    } else {
        "binary size (NOT stripped)"
    };
    rep.check(
        budgets,
        &format!("{arch}.binary_bytes"),
        what,
        arch,
        data.len() as u64,
    );
    for name in [
        ".text",
        ".rodata",
        ".eh_frame",
        ".data.rel.ro",
        ".data",
        ".bss",
    ] {
        if let Some(s) = elf.sections.iter().find(|s| s.name == name) {
            rep.check(
                budgets,
                &format!("{arch}.section{}", name.replace('.', "_")),
                &format!("section `{name}`"),
                arch,
                s.size,
            );
        }
    }
    let key = format!("{arch}.allowed_needed");
    rep.used.push(key.clone());
    let allowed = budgets.list(&key);
    let bad: Vec<&String> = elf
        .needed
        .iter()
        .filter(|n| allowed.is_some_and(|a| !a.contains(n)))
        .collect();
    rep.rows.push(Row {
        what: "shared libraries (DT_NEEDED)".into(),
        target: arch.into(),
        measured: elf.needed.join(", "),
        budget: allowed.map(|a| a.join(", ")).unwrap_or_else(|| "—".into()),
        over: allowed.map(|_| !bad.is_empty()),
    });
    Ok(())
}

/// How the measured relay checks clients: access tickets (its default) or
/// `--insecure-no-auth` (`footprint --insecure`).
struct Access {
    /// `run` arguments for the mode.
    mode: Vec<String>,
    /// The ticket every client presents.
    token: Option<String>,
    /// What the report says.
    label: &'static str,
}

impl Access {
    fn fleet(&self) -> Fleet {
        Fleet::with_token(self.token.clone())
    }
}

/// Tickets: a fresh key pair in target/footprint-state, one ticket for tenant `fp` that may
/// publish and subscribe everywhere (`#`), the relay started with that state dir.
fn setup_access(bin: &Path, insecure: bool) -> Result<Access, String> {
    if insecure {
        return Ok(Access {
            mode: vec!["--insecure-no-auth".into()],
            token: None,
            label: "--insecure-no-auth",
        });
    }
    let dir = root().join("target/footprint-state");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let out = Command::new(bin)
        .arg("keygen")
        .arg("--dir")
        .arg(&dir)
        .output()
        .map_err(|e| format!("cannot run {} keygen: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let out = Command::new(bin)
        .args([
            "ticket", "--tenant", "fp", "--pub", "#", "--sub", "#", "--ttl", "1h",
        ])
        .args([
            "--ingress-kb",
            "16384",
            "--egress-kb",
            "16384",
            "--signing-key",
        ])
        .arg(dir.join("ticket-signing.key"))
        .output()
        .map_err(|e| format!("cannot run {} ticket: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let token = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AT_"))
        .ok_or_else(|| {
            format!(
                "`ticket` printed no AT_ token: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )
        })?
        .to_string();
    Ok(Access {
        mode: vec!["--state-dir".into(), dir.display().to_string()],
        token: Some(token),
        label: "access tickets",
    })
}

const SETTLE: Duration = Duration::from_secs(180);

/// RSS scenarios on the host relay.
fn measure_memory(
    rep: &mut Report,
    budgets: &Budgets,
    arch: &str,
    bin: &Path,
    access: &Access,
) -> Result<(), String> {
    let limit = relay::raise_nofile_limit()?;
    if limit < 10_100 {
        return Err(format!(
            "RLIMIT_NOFILE hard limit is {limit}; 10,000 connections need ~10,100 (raise it with ulimit -Hn)"
        ));
    }
    let start = Duration::from_secs(30);

    // 1. Idle, then 1,000 and 10,000 idle connections with one subscription each.
    // Idle RSS is mostly file-backed pages (binary, libc) whose count moves with the kernel's
    // fault-around from one start to the next; the minimum over three fresh starts is the
    // figure that barely moves. The heap part (RssAnon) is checked on its own below.
    let mut idle = u64::MAX;
    for _ in 0..2 {
        let fresh = Relay::start(bin, &access.mode, start)?;
        idle = idle.min(fresh.memory()?.rss);
    }
    let mut r = Relay::start(bin, &access.mode, start)?;
    let idle_mem = r.memory()?;
    let idle = idle.min(idle_mem.rss);
    rep.check(
        budgets,
        &format!("{arch}.idle_rss_bytes"),
        "idle RSS after start",
        arch,
        idle,
    );
    rep.check(
        budgets,
        &format!("{arch}.idle_rss_anon_bytes"),
        "idle RssAnon (heap + stacks: the stable part of idle RSS)",
        arch,
        idle_mem.anon,
    );
    let mut fleet = access.fleet();
    let pat = |i: usize, _j: usize| format!("idle.c{i}");
    fleet.open(r.addr, 1_000, "fp", 1, pat)?;
    fleet.pump(clock::now() + SETTLE, |f| f.acks() == 1_000)?;
    r.check_alive()?;
    let rss_1k = r.memory()?.rss;
    rep.check(
        budgets,
        &format!("{arch}.rss_1k_conns_bytes"),
        "RSS, 1,000 idle subscribed WS connections",
        arch,
        rss_1k,
    );
    fleet.open(r.addr, 9_000, "fp", 1, pat)?;
    fleet.pump(clock::now() + SETTLE, |f| f.acks() == 10_000)?;
    r.check_alive()?;
    let rss_10k = r.memory()?.rss;
    rep.check(
        budgets,
        &format!("{arch}.rss_10k_conns_bytes"),
        "RSS, 10,000 idle subscribed WS connections",
        arch,
        rss_10k,
    );
    let per_conn = rss_10k.saturating_sub(idle) / 10_000;
    rep.check(
        budgets,
        &format!("{arch}.per_conn_bytes"),
        "per idle subscribed WS connection: (RSS@10k − idle) / 10k",
        arch,
        per_conn,
    );
    rep.info(
        "per connection, marginal: (RSS@10k − RSS@1k) / 9k",
        arch,
        bytes(rss_10k.saturating_sub(rss_1k) / 9_000),
    );
    fleet.close_all();
    drop(r);

    // 2. 100,000 subscriptions: 1,000 connections x 100 distinct patterns.
    let r = Relay::start(bin, &access.mode, start)?;
    let mut fleet = access.fleet();
    fleet.open(r.addr, 1_000, "fp", 100, |i, j| format!("subs.c{i}.s{j}.#"))?;
    fleet.pump(clock::now() + SETTLE, |f| f.acks() == 100_000)?;
    let rss_subs = r.memory()?.rss;
    rep.check(
        budgets,
        &format!("{arch}.rss_100k_subs_bytes"),
        "RSS, 100,000 subscriptions (1,000 conns × 100)",
        arch,
        rss_subs,
    );
    rep.info(
        "per subscription: (RSS@100k subs − RSS@1k conns) / 99k",
        arch,
        bytes(rss_subs.saturating_sub(rss_1k) / 99_000),
    );
    fleet.close_all();
    drop(r);

    // 3. Fan-out: 500 subscribers of `fan.#`; one publisher sends 10 bursts of 20 x 1 KiB
    //    to `fan.room`; each burst waits until every subscriber has every message.
    const SUBS: u64 = 500;
    const BURSTS: u64 = 10;
    const PER_BURST: u64 = 20;
    let mut r = Relay::start(bin, &access.mode, start)?;
    let mut fleet = access.fleet();
    fleet.open(r.addr, SUBS as usize, "fp", 1, |_, _| "fan.#".to_string())?;
    fleet.pump(clock::now() + SETTLE, |f| f.acks() == SUBS)?;
    let mut publisher = fleet::connect(r.addr, access.token.as_deref())?;
    let frame = fleet::publish_v1("fp", "fan.room", &[0x5a; 1024])?;
    for burst in 1..=BURSTS {
        for _ in 0..PER_BURST {
            publisher
                .send(tungstenite::Message::binary(frame.clone()))
                .map_err(|e| format!("publish: {e}"))?;
        }
        fleet.pump(clock::now() + SETTLE, |f| {
            f.delivered() == SUBS * PER_BURST * burst
        })?;
    }
    r.check_alive()?;
    let peak = r.memory()?.hwm;
    rep.check(
        budgets,
        &format!("{arch}.fanout_peak_rss_bytes"),
        "peak RSS (VmHWM), fan-out: 500 subs × 200 msgs × 1 KiB, bursts of 20",
        arch,
        peak,
    );
    Ok(())
}

fn measure_types(rep: &mut Report, budgets: &Budgets) {
    for (key, name, size) in types::sizes() {
        rep.check(
            budgets,
            &format!("size_of.{key}"),
            &format!("size_of `{name}`"),
            "any 64-bit",
            size as u64,
        );
    }
}

/// `variants`: release binary size for each opt-level and without each default feature.
/// Each variant builds in its own target dir under target/footprint-variants/ (slow: full builds).
fn variants() -> Result<(), String> {
    let size_of_file = |bin: &Path| -> Result<u64, String> {
        std::fs::metadata(bin)
            .map(|m| m.len())
            .map_err(|e| format!("{}: {e}", bin.display()))
    };
    let mut s = String::from("| variant | x86_64 stripped bytes | vs default |\n|---|---:|---:|\n");
    // Features only change the relay crate: all feature builds share one target dir, so
    // after the first only the relay recompiles. Kept apart from target/release.
    let base = root().join("target/footprint-variants");
    let features_dir = base.join("features");
    let default = size_of_file(&build_host(Some(&features_dir), &[])?)?;
    let _ = writeln!(
        s,
        "| default (`dashboard`), profile as committed | {} | — |",
        bytes(default)
    );
    let features: [(&str, &[&str]); 1] = [("without `dashboard`", &["--no-default-features"])];
    for (name, flags) in features {
        let size = size_of_file(&build_host(Some(&features_dir), flags)?)?;
        let delta = size as i64 - default as i64;
        let _ = writeln!(s, "| {name} | {} | {delta:+} |", bytes(size));
    }
    // opt-level changes every crate: full builds, each in its own target dir.
    for opt in ["2", "s", "z"] {
        let value = if opt.bytes().all(|b| b.is_ascii_digit()) {
            opt.to_string()
        } else {
            format!("\"{opt}\"")
        };
        let cfg = format!("profile.release.opt-level={value}");
        let size = size_of_file(&build_host(
            Some(&base.join(format!("opt-{opt}"))),
            &["--config", &cfg],
        )?)?;
        let delta = size as i64 - default as i64;
        let _ = writeln!(s, "| opt-level = {value} | {} | {delta:+} |", bytes(size));
    }
    println!("{s}");
    Ok(())
}

fn main_result() -> Result<bool, String> {
    let args = parse_args()?;
    if args.variants {
        variants()?;
        return Ok(true);
    }
    let text = std::fs::read_to_string(&args.budgets)
        .map_err(|e| format!("cannot read {}: {e}", args.budgets.display()))?;
    let budgets = Budgets::parse(&text).map_err(|e| format!("{}: {e}", args.budgets.display()))?;
    let mut rep = Report::default();
    let host = std::env::consts::ARCH;
    let bin = match &args.relay {
        Some(p) => p.clone(),
        None => build_host(None, &[])?,
    };
    measure_binary(&mut rep, &budgets, host, &bin)?;
    if args.aarch64 {
        let arm = build_aarch64(&[])?;
        measure_binary(&mut rep, &budgets, "aarch64", &arm)?;
        rep.notes.push("aarch64: size, sections and libraries only. RSS is measured on the host: under qemu-user it would include the emulator (tens of MiB). The relay's heap per connection and per subscription is the same on any 64-bit target.".into());
    }
    let access = setup_access(&bin, args.insecure)?;
    measure_memory(&mut rep, &budgets, host, &bin, &access)?;
    measure_types(&mut rep, &budgets);
    rep.notes.push("RSS is VmRSS from /proc/PID/status, read after the relay confirmed every subscription (OK:SUB) or delivered every message, never after a sleep; the relay runs with RUST_LOG=error, its admin listener (dashboard) on, clients authenticated with ".to_string() + access.label + ".");
    let md = rep.markdown();
    println!("{md}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &md).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    for key in budgets.keys() {
        let measured_here = rep.used.iter().any(|u| u == key);
        let other_target = !args.aarch64 && key.starts_with("aarch64.");
        if !measured_here && !other_target {
            eprintln!("footprint: warning: budget {key} matches no measurement (typo?)");
        }
    }
    let over = rep.over_budget();
    if over > 0 {
        eprintln!("footprint: {over} measurement(s) over budget");
    } else {
        eprintln!("footprint: every measurement is within budget");
    }
    Ok(over == 0)
}

fn main() {
    match main_result() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("footprint: error: {e}");
            std::process::exit(2);
        }
    }
}
