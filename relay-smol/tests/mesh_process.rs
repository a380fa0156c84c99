//! End to end with real relay processes on 127.0.0.1 and `fastpubsub-linkemu` links:
//! Tokyo (T), Novosibirsk (N), Frankfurt (F) with the data set's RTTs (T–F 221.8 ms
//! direct; T–N + N–F = 180 ms). A WebSocket subscriber on F gets a WebSocket publish
//! from T through N after ≈ 90 ms; with 1 % loss on the relay path at least 99.9 % still
//! arrive; slowing T–N or killing N moves traffic to the direct path within 2 s; a relay with a
//! certificate from another CA cannot join.

#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Ws, connect_with, decode_deliver, http_get, publish, subscribe};
use fastpubsub_core::frame::Mode;
use tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_fastpubsub-relay");
const EMU: &str = env!("CARGO_BIN_EXE_fastpubsub-linkemu");

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Relay {
    proc: Proc,
    http: SocketAddr,
    mesh: SocketAddr,
}

fn tool(args: &[&str]) {
    let st = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run tool");
    assert!(st.success(), "{args:?} failed");
}

fn make_certs(dir: &Path, ca: &str, names: &[&str]) {
    let ca_dir = dir.join(ca);
    tool(&["mesh-ca", "--dir", ca_dir.to_str().expect("utf8")]);
    for n in names {
        tool(&[
            "mesh-cert",
            "--name",
            n,
            "--ca-dir",
            ca_dir.to_str().expect("utf8"),
            "--out",
            dir.join(ca).to_str().expect("utf8"),
        ]);
    }
}

fn relay(dir: &Path, ca: &str, name: &str, peers: &[(&str, SocketAddr)]) -> Relay {
    let d = dir.join(ca);
    let p = |f: String| d.join(f).to_str().expect("utf8").to_owned();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--listen", "127.0.0.1:0", "--insecure-no-auth"])
        .args([
            "--mesh-listen",
            "127.0.0.1:0",
            "--name",
            name,
            "--region",
            "test",
        ])
        .args(["--mesh-cert", &p(format!("{name}.pem"))])
        .args(["--mesh-key", &p(format!("{name}.key"))])
        .args(["--mesh-ca", &p("ca.pem".into())]);
    for (n, a) in peers {
        cmd.args(["--peer", &format!("{n}@{a}")]);
    }
    let mut child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn relay");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr_in = |line: String| -> SocketAddr {
        line.split("://")
            .nth(1)
            .and_then(|s| s.split(['/', ' ']).next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    };
    let http = addr_in(
        rx.recv_timeout(Duration::from_secs(10))
            .expect("listening line"),
    );
    let mesh = addr_in(rx.recv_timeout(Duration::from_secs(10)).expect("mesh line"));
    Relay {
        proc: Proc(child),
        http,
        mesh,
    }
}

struct Emu {
    _proc: Proc,
    listen: SocketAddr,
    control: SocketAddr,
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
}

fn emu_cmd(control: SocketAddr, cmd: &str) -> Option<String> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    s.send_to(cmd.as_bytes(), control).ok()?;
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn emu(target: SocketAddr, delay: &str) -> Emu {
    let (listen, control) = (free_udp(), free_udp());
    let child = Command::new(EMU)
        .args([
            "--listen",
            &listen.to_string(),
            "--target",
            &target.to_string(),
        ])
        .args(["--control", &control.to_string(), "--delay", delay])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn linkemu");
    let e = Emu {
        _proc: Proc(child),
        listen,
        control,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while emu_cmd(e.control, "stats").is_none() {
        assert!(Instant::now() < deadline, "linkemu did not start");
    }
    e
}

fn status(r: &Relay) -> serde_json::Value {
    let (code, body) = http_get(r.http, "/v1/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

fn next_hop(r: &Relay, dest: &str) -> Option<String> {
    status(r)
        .get("routes")?
        .as_array()?
        .iter()
        .find(|x| x.get("dest").and_then(|d| d.as_str()) == Some(dest))?
        .get("next_hop")?
        .as_str()
        .map(str::to_owned)
}

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> (T, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, t0.elapsed());
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ws(r: &Relay) -> Ws {
    connect_with(
        &format!("ws://{}/ws", r.http),
        Some("llps.v1, at.test"),
        None,
    )
    .expect("ws")
}

/// A subscriber on its own thread: every delivery's index and arrival time.
fn subscriber(r: &Relay) -> mpsc::Receiver<(u32, Instant)> {
    let mut s = ws(r);
    subscribe(&mut s, "acme", "chat.#");
    // Stay subscribed through quiet phases (the helper's read timeout would end it).
    s.get_mut().set_read_timeout(None).expect("timeout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(m) = s.read() {
            if let Message::Binary(b) = m {
                let d = decode_deliver(&b);
                let i = d
                    .payload
                    .get(..4)
                    .and_then(|p| p.try_into().ok())
                    .map(u32::from_be_bytes);
                if let Some(i) = i
                    && tx.send((i, Instant::now())).is_err()
                {
                    break;
                }
            }
        }
    });
    rx
}

struct Run {
    lat_ms: Vec<f64>,
    delivered: usize,
    duplicates: usize,
}

fn publish_run(
    p: &mut Ws,
    sub: &mpsc::Receiver<(u32, Instant)>,
    base: u32,
    count: u32,
    gap: Duration,
) -> Run {
    while sub.try_recv().is_ok() {}
    let mut sent = Vec::new();
    for i in 0..count {
        sent.push(Instant::now());
        publish(
            p,
            Mode::Broadcast,
            "acme",
            "chat.room1",
            &(base + i).to_be_bytes(),
        );
        std::thread::sleep(gap);
    }
    let mut seen = std::collections::HashSet::new();
    let mut lat_ms = Vec::new();
    let mut duplicates = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while seen.len() < count as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((i, at)) = sub.recv_timeout(left) else {
            break;
        };
        let Some(k) = i.checked_sub(base).filter(|k| *k < count) else {
            continue;
        };
        if !seen.insert(k) {
            duplicates += 1;
        }
        if let Some(s) = sent.get(k as usize) {
            lat_ms.push(at.duration_since(*s).as_secs_f64() * 1000.0);
        }
    }
    lat_ms.sort_by(f64::total_cmp);
    Run {
        delivered: seen.len(),
        duplicates,
        lat_ms,
    }
}

fn pct(v: &[f64], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(f64::NAN)
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fps-mesh-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp");
    d
}

#[test]
fn tokyo_to_frankfurt_through_novosibirsk() {
    let dir = tmpdir("tnf");
    make_certs(&dir, "mesh", &["t", "n", "f"]);
    make_certs(&dir, "rogue", &["r"]);
    let f = relay(&dir, "mesh", "f", &[]);
    let e_nf = emu(f.mesh, "45ms");
    let mut n = relay(&dir, "mesh", "n", &[("f", e_nf.listen)]);
    let e_tn = emu(n.mesh, "45ms");
    let e_tf = emu(f.mesh, "110.9ms");
    let t = relay(&dir, "mesh", "t", &[("n", e_tn.listen), ("f", e_tf.listen)]);

    let (_, took) = wait_until("T→F via N", Duration::from_secs(20), || {
        (next_hop(&t, "f")? == "n").then_some(())
    });
    eprintln!("route T→F via n after {took:?}");

    let sub = subscriber(&f);
    wait_until("T learns F's interest", Duration::from_secs(5), || {
        (status(&t).pointer("/interest/f/patterns")?.as_u64()? == 1).then_some(())
    });
    let mut p = ws(&t);

    // Steady routing through N: ≈ 90 ms, nothing lost or duplicated.
    let r = publish_run(&mut p, &sub, 0, 100, Duration::from_millis(10));
    eprintln!(
        "via N: {}/100 delivered, {} dup, latency p50 {:.1} ms p99 {:.1} ms",
        r.delivered,
        r.duplicates,
        pct(&r.lat_ms, 0.5),
        pct(&r.lat_ms, 0.99)
    );
    assert_eq!((r.delivered, r.duplicates), (100, 0));
    let p50 = pct(&r.lat_ms, 0.5);
    assert!(
        (88.0..105.0).contains(&p50),
        "p50 {p50:.1} ms should be ≈ 90, not 111"
    );

    // 1 % random loss on both relay-path links, both directions.
    for e in [&e_tn, &e_nf] {
        emu_cmd(e.control, "loss 1%").expect("emu");
    }
    let r = publish_run(&mut p, &sub, 1000, 2000, Duration::from_millis(2));
    eprintln!(
        "1% loss on T–N and N–F: {}/2000 delivered, {} dup, latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
        r.delivered,
        r.duplicates,
        pct(&r.lat_ms, 0.5),
        pct(&r.lat_ms, 0.99),
        pct(&r.lat_ms, 1.0)
    );
    assert!(
        r.delivered >= 1998,
        "{} of 2000 (need ≥ 99.9 %)",
        r.delivered
    );
    assert_eq!(r.duplicates, 0);
    for e in [&e_tn, &e_nf] {
        emu_cmd(e.control, "loss 0%").expect("emu");
    }
    wait_until("T→F via N after loss", Duration::from_secs(20), || {
        (next_hop(&t, "f")? == "n").then_some(())
    });

    // T–N gets slow (150 ms one way): T→F direct within 2 s; then back.
    emu_cmd(e_tn.control, "delay 150ms").expect("emu");
    let (_, took) = wait_until(
        "T→F direct after T–N slowed",
        Duration::from_secs(5),
        || (next_hop(&t, "f")? == "f").then_some(()),
    );
    eprintln!("T–N slowed to 300 ms RTT: route T→F direct after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    emu_cmd(e_tn.control, "delay 45ms").expect("emu");
    let (_, took) = wait_until("T→F via N again", Duration::from_secs(30), || {
        (next_hop(&t, "f")? == "n").then_some(())
    });
    eprintln!("T–N back to 90 ms RTT: route T→F via n again after {took:?}");

    // N dies: T→F direct within 2 s, and messages flow (≈ 111 ms).
    let _ = n.proc.0.kill();
    let killed = Instant::now();
    wait_until("T→F direct", Duration::from_secs(5), || {
        (next_hop(&t, "f")? == "f").then_some(())
    });
    let took = killed.elapsed();
    eprintln!("N killed: route T→F direct after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let r = publish_run(&mut p, &sub, 10_000, 50, Duration::from_millis(10));
    eprintln!(
        "direct: {}/50 delivered, latency p50 {:.1} ms",
        r.delivered,
        pct(&r.lat_ms, 0.5)
    );
    assert_eq!(r.delivered, 50, "T: {}\nF: {}", status(&t), status(&f));
    let p50 = pct(&r.lat_ms, 0.5);
    assert!((110.0..125.0).contains(&p50), "p50 {p50:.1}");

    // A relay with a certificate from another CA cannot join.
    let before = status(&f)
        .pointer("/counters/quic/handshake_failures")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let rogue = relay(&dir, "rogue", "r", &[("f", f.mesh)]);
    wait_until("F refuses the rogue relay", Duration::from_secs(10), || {
        let n = status(&f)
            .pointer("/counters/quic/handshake_failures")?
            .as_u64()?;
        (n > before).then_some(())
    });
    let st = status(&f);
    let linked_to_rogue = st.get("links").and_then(|l| l.as_array()).is_some_and(|l| {
        l.iter()
            .any(|x| x.get("peer").and_then(|p| p.as_str()) == Some("r"))
    });
    assert!(!linked_to_rogue, "F linked to a relay from another CA");
    assert!(next_hop(&rogue, "f").is_none(), "rogue relay got a route");
    let _ = std::fs::remove_dir_all(&dir);
}
