//! Compare bench: the same load against this relay, nats-server and mosquitto, one table.
//!
//! Run: `cargo bench -p fastpubsub-relay --bench compare` (about 6 minutes; add
//! `-- --quick` for a short run, `--servers relay,nats` / `--scenarios unpaced,stuck` /
//! `--subs 100` / `--sizes 64` to narrow it). Each cell starts a fresh server from a generated config, WebSocket listener
//! on 127.0.0.1 only, pinned to CPU 0; this load generator (one publisher thread, one epoll
//! reader thread for every subscriber) is pinned to CPU 1. Every client speaks its server's
//! own protocol over WebSocket: LLPS, NATS's text protocol, MQTT 3.1.1 (QoS 0), one
//! WebSocket frame per message.
//!
//! Without `--bench` (as `cargo test` runs it) it only checks its own parsers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    missing_docs
)]

mod conn;
mod hist;
mod proto;
mod publisher;
mod reader;
mod scenario;
mod server;
mod ws;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use scenario::{Fanout, Row, StuckPlan, size_label};
use server::Kind;

struct Opts {
    quick: bool,
    servers: Vec<Kind>,
    scenarios: Vec<String>,
    subs: Vec<usize>,
    sizes: Vec<usize>,
}

fn numbers(flag: &str, v: Option<String>) -> Result<Vec<usize>, String> {
    let v = v.ok_or(format!("{flag} needs a list"))?;
    v.split(',')
        .map(|n| {
            n.parse()
                .map_err(|_| format!("{flag}: {n:?} is not a number"))
        })
        .collect()
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        quick: false,
        servers: vec![Kind::Relay, Kind::Nats, Kind::Mosquitto],
        scenarios: ["unpaced", "paced", "idle", "stuck"]
            .map(String::from)
            .to_vec(),
        subs: vec![1, 10, 100],
        sizes: vec![64, 1024],
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "--quick" => o.quick = true,
            "--servers" => {
                let v = args.next().ok_or("--servers needs a list")?;
                o.servers = v
                    .split(',')
                    .map(|s| match s {
                        "relay" => Ok(Kind::Relay),
                        "nats" => Ok(Kind::Nats),
                        "mosquitto" => Ok(Kind::Mosquitto),
                        _ => Err(format!("unknown server {s:?} (relay, nats, mosquitto)")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--scenarios" => {
                let v = args.next().ok_or("--scenarios needs a list")?;
                o.scenarios = v.split(',').map(String::from).collect();
                for s in &o.scenarios {
                    if !["unpaced", "paced", "idle", "stuck"].contains(&s.as_str()) {
                        return Err(format!(
                            "unknown scenario {s:?} (unpaced, paced, idle, stuck)"
                        ));
                    }
                }
            }
            "--subs" => o.subs = numbers("--subs", args.next())?,
            "--sizes" => o.sizes = numbers("--sizes", args.next())?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; use --quick, --servers LIST, --scenarios LIST, --subs LIST, --sizes LIST"
                ));
            }
        }
    }
    Ok(o)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        selfcheck();
        println!(
            "compare bench: parsers checked; measure with `cargo bench -p fastpubsub-relay --bench compare`"
        );
        return;
    }
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    raise_nofile();
    let pinned = server::can_pin();
    if pinned {
        let me = std::process::id().to_string();
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &me])
            .stdout(Stdio::null())
            .status();
    }
    let base = Instant::now();
    println!("# compare bench: relay vs nats-server vs mosquitto over WebSocket on loopback");
    println!(
        "servers pinned to CPU 0, load generator to CPU 1: {pinned}; loadavg at start: {}",
        loadavg()
    );
    for k in &opts.servers {
        let v = if *k == Kind::Relay {
            format!("fastpubsub-relay (this tree, {})", git_rev())
        } else {
            k.version()
        };
        println!("- {}: {v}", k.name());
    }
    println!();
    println!(
        "| scenario | server | delivered/s | lost | p50 | p99 | CPU µs/delivery | peak RSS | gen CPU | notes |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let q = opts.quick;
    let run = |row: Result<Row, String>, label: &str, kind: Kind| match row {
        Ok(r) => print_row(&r),
        Err(e) => println!(
            "| {label} | {} | — | — | — | — | — | — | — | failed: {e} |",
            kind.name()
        ),
    };
    for mode in ["unpaced", "paced"] {
        if !opts.scenarios.iter().any(|s| s == mode) {
            continue;
        }
        for &size in &opts.sizes {
            for &subs in &opts.subs {
                let f = if mode == "unpaced" {
                    let count = if subs >= 100 { 20_000 } else { 200_000 };
                    Fanout {
                        subs,
                        size,
                        count: if q { count / 10 } else { count },
                        rate: None,
                        limit: Duration::from_secs(60),
                    }
                } else {
                    let secs = if q { 1 } else { 3 };
                    Fanout {
                        subs,
                        size,
                        count: 2000 * secs,
                        rate: Some(2000),
                        limit: Duration::from_secs(secs + 20),
                    }
                };
                for &k in &opts.servers {
                    let label = format!("{mode} {subs} x {}", size_label(size));
                    run(scenario::fanout(k, &f, base), &label, k);
                }
            }
        }
    }
    if opts.scenarios.iter().any(|s| s == "idle") {
        let n = if q { 1000 } else { 5000 };
        for &k in &opts.servers {
            run(scenario::idle(k, n), "idle", k);
        }
    }
    if opts.scenarios.iter().any(|s| s == "stuck") {
        let p = StuckPlan {
            rate: 10_000,
            size: 1024,
            secs: if q { 8 } else { 12 },
            stop_after: Duration::from_secs(1),
        };
        for &k in &opts.servers {
            run(scenario::stuck(k, &p, base), "stuck", k);
        }
    }
    println!("\nloadavg at end: {}", loadavg());
    println!(
        "lost = deliveries to subscribers that read as fast as they can that never arrived; \
         delivered/s = deliveries / (first send .. last delivery); CPU and RSS from the \
         server's /proc; gen CPU = this load generator's CPU (share of its one core · per delivery)."
    );
}

fn print_row(r: &Row) {
    let dash = || "—".to_string();
    let rate = r.delivered_per_s.map_or_else(dash, si);
    let lost = r.lost.map_or_else(dash, |(lost, of)| {
        if lost == 0 {
            "0".into()
        } else {
            format!("{:.1} % ({lost})", lost as f64 * 100.0 / of.max(1) as f64)
        }
    });
    let cpu = r.cpu_us.map_or_else(dash, |c| format!("{c:.2}"));
    let gen_cpu = match (r.gen_cpu, r.gen_us) {
        (Some(c), Some(u)) => format!("{c:.0} % · {u:.2} µs"),
        (Some(c), None) => format!("{c:.0} %"),
        _ => dash(),
    };
    println!(
        "| {} | {} | {rate} | {lost} | {} | {} | {cpu} | {:.1} MiB | {gen_cpu} | {} |",
        r.scenario,
        r.server.name(),
        r.p50_us.map_or_else(dash, us),
        r.p99_us.map_or_else(dash, us),
        r.rss_kib as f64 / 1024.0,
        r.note
    );
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn us(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{:.2} s", v as f64 / 1e6)
    } else if v >= 1000 {
        format!("{:.1} ms", v as f64 / 1e3)
    } else {
        format!("{v} µs")
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn git_rev() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .map_or_else(|| "git revision unknown".into(), |r| format!("git {r}"))
}

/// Thousands of connections in the idle scenario: raise the open-files limit (servers
/// inherit it).
fn raise_nofile() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    if let Some(max) = l.maximum {
        l.current = Some(max);
        let _ = setrlimit(Resource::Nofile, l);
    }
}

/// Checks the parsers against byte streams as each server sends them, split at every
/// position (a test that can fail; `cargo test` runs it).
fn selfcheck() {
    use conn::Receiver;
    use hist::Hist;
    use proto::Proto;
    use ws::server_frame;

    hist::selfcheck();

    let payload = |sent_ns: u64, size: usize| {
        let mut p = vec![b'x'; size];
        p[..8].copy_from_slice(&sent_ns.to_be_bytes());
        p[8..16].copy_from_slice(&7u64.to_be_bytes());
        p
    };
    let deliver = |sent_ns: u64, size: usize| {
        let p = payload(sent_ns, size);
        let d = fastpubsub_core::frame::Deliver::new("bench", "fan.x", &p).unwrap();
        let mut v = Vec::new();
        d.encode_with(["fan.x", "fan.#"], |piece| v.extend_from_slice(piece))
            .unwrap();
        server_frame(0x2, &v)
    };
    let mqtt_publish = |sent_ns: u64, size: usize| {
        let mut body = vec![0, 5];
        body.extend_from_slice(b"fan/x");
        body.extend_from_slice(&payload(sent_ns, size));
        let mut v = vec![0x30];
        let mut n = body.len();
        loop {
            let b = (n % 128) as u8;
            n /= 128;
            v.push(if n > 0 { b | 0x80 } else { b });
            if n == 0 {
                break;
            }
        }
        v.extend_from_slice(&body);
        v
    };

    /// A server byte stream and what the receiver must make of it.
    struct Case {
        proto: Proto,
        stream: Vec<u8>,
        deliveries: u64,
        acks: u32,
        pings: u32,
        error: Option<&'static str>,
        closed: bool,
    }
    let mut cases: Vec<Case> = Vec::new();

    let mut s = server_frame(0x1, b"OK:SUB:bench:fan.x");
    s.extend(deliver(1_000, 64));
    s.extend(deliver(2_000, 1024));
    s.extend(deliver(3_000, 65_536)); // 64-bit WebSocket length
    s.extend(server_frame(
        0x1,
        b"ERR:slow_consumer:your queue stayed over",
    ));
    s.extend(server_frame(0x8, &[0x03, 0xf0]));
    cases.push(Case {
        proto: Proto::Llps,
        stream: s,
        deliveries: 3,
        acks: 1,
        pings: 0,
        error: Some("ERR:slow_consumer"),
        closed: true,
    });

    let mut msgs = b"PONG\r\n".to_vec();
    for (t, size) in [(1_000u64, 64usize), (2_000, 1024)] {
        msgs.extend(format!("MSG fan.x 1 {size}\r\n").as_bytes());
        msgs.extend(payload(t, size));
        msgs.extend(b"\r\n");
    }
    let (a, b) = msgs.split_at(40); // a MSG split across two WebSocket frames
    let mut s = server_frame(
        0x2,
        b"INFO {\"server_id\":\"x\",\"max_payload\":1048576} \r\n",
    );
    s.extend(server_frame(0x2, a));
    s.extend(server_frame(0x2, b));
    s.extend(server_frame(0x2, b"PING\r\nMSG fan.x 1 reply.to 64\r\n"));
    s.extend(server_frame(0x2, &payload(3_000, 64)));
    s.extend(server_frame(0x2, b"\r\n-ERR 'Slow Consumer Detected'\r\n"));
    cases.push(Case {
        proto: Proto::Nats,
        stream: s,
        deliveries: 3,
        acks: 1,
        pings: 1,
        error: Some("-ERR 'Slow"),
        closed: false,
    });

    let mut mq = vec![0x20, 0x02, 0x00, 0x00, 0x90, 0x03, 0x00, 0x01, 0x00];
    mq.extend(mqtt_publish(1_000, 64));
    mq.extend(mqtt_publish(2_000, 1024));
    mq.extend(mqtt_publish(3_000, 20_000));
    let (a, b) = mq.split_at(100);
    let mut s = server_frame(0x2, a);
    s.extend(server_frame(0x2, b));
    cases.push(Case {
        proto: Proto::Mqtt,
        stream: s,
        deliveries: 3,
        acks: 2,
        pings: 0,
        error: None,
        closed: false,
    });

    for Case {
        proto,
        stream,
        deliveries,
        acks,
        pings,
        error,
        closed,
    } in cases
    {
        for split in (0..=stream.len()).step_by(1 + stream.len() / 2000) {
            let mut rx = Receiver::new(proto);
            let mut h = Hist::default();
            let now_ns = 11_000;
            rx.feed(&stream[..split], now_ns, 0, &mut h);
            rx.feed(&stream[split..], now_ns, 0, &mut h);
            let g = &rx.got;
            let what = format!("{proto:?} split at {split}");
            assert_eq!(g.deliveries, deliveries, "{what}: deliveries");
            assert_eq!(g.acks, acks, "{what}: acks");
            assert_eq!(g.pings, pings, "{what}: pings");
            assert_eq!(g.closed, closed, "{what}: closed");
            match error {
                Some(p) => assert!(
                    g.error.as_deref().is_some_and(|e| e.starts_with(p)),
                    "{what}: error {:?}",
                    g.error
                ),
                None => assert!(g.error.is_none(), "{what}: error {:?}", g.error),
            }
            // Sent at 1, 2, 3 µs, received at 11 µs: 10, 9, 8 µs.
            assert_eq!(h.quantile_us(0.0), Some(8), "{what}: latency");
            assert_eq!(h.quantile_us(1.0), Some(10), "{what}: latency");
        }
        // Byte by byte.
        let mut rx = Receiver::new(proto);
        for b in &stream {
            rx.feed(std::slice::from_ref(b), 11_000, 0, &mut Hist::default());
        }
        assert_eq!(rx.got.deliveries, deliveries, "{proto:?} byte by byte");
    }

    // Publish templates: the stamp offset points at the payload inside one client frame.
    for proto in [Proto::Llps, Proto::Nats, Proto::Mqtt] {
        for size in [64usize, 1024, 70_000] {
            let (frame, off) = proto.publish_template(size);
            assert_eq!(frame[0], 0x82, "{proto:?} one final binary frame");
            assert!(frame[off..off + size].iter().all(|&b| b == b'x'));
            assert_eq!(
                frame.len() - off - size,
                if proto == Proto::Nats { 2 } else { 0 }
            );
        }
    }
}
