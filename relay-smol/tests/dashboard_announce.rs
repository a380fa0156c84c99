//! Mesh-wide announcements on real relay processes: Tokyo (t), Novosibirsk (n), Frankfurt (f)
//! on 127.0.0.1, every mesh link through `fastpubsub-linkemu` with the data set's delays
//! (T–F 221.8 ms RTT direct; T–N + N–F = 180 ms). With `--announce-interval-ms 500`, `GET
//! /v1/mesh` on EVERY relay must list all three relays, their six directed links (up, with
//! the emulated RTTs) and T→F through N with a positive saving. Then the mesh control bytes
//! and the announcement counters in `/metrics` and `/v1/status` must move, and once N stops,
//! T and F show it stale and T→F direct.

#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::http_get;
use serde_json::Value;

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
    _proc: Proc,
    admin: SocketAddr,
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

fn make_certs(dir: &Path, names: &[&str]) {
    let ca_dir = dir.join("mesh");
    tool(&["mesh-ca", "--dir", ca_dir.to_str().expect("utf8")]);
    for n in names {
        tool(&[
            "mesh-cert",
            "--name",
            n,
            "--ca-dir",
            ca_dir.to_str().expect("utf8"),
            "--out",
            ca_dir.to_str().expect("utf8"),
        ]);
    }
}

fn relay(dir: &Path, name: &str, pos: (f64, f64), peers: &[(&str, SocketAddr)]) -> Relay {
    let d = dir.join("mesh");
    let p = |f: String| d.join(f).to_str().expect("utf8").to_owned();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--listen", "127.0.0.1:0", "--insecure-no-auth"])
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--mesh-listen", "127.0.0.1:0", "--name", name])
        .args(["--region", "test", "--announce-interval-ms", "500"])
        .args(["--lat", &pos.0.to_string(), "--lon", &pos.1.to_string()])
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
    let (mut admin, mut mesh) = (None, None);
    while admin.is_none() || mesh.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("relay start lines");
        if line.contains(" admin on ") {
            admin = Some(addr_in(line));
        } else if line.contains(" mesh ") {
            mesh = Some(addr_in(line));
        }
    }
    Relay {
        _proc: Proc(child),
        admin: admin.expect("admin"),
        mesh: mesh.expect("mesh"),
    }
}

struct Emu {
    _proc: Proc,
    listen: SocketAddr,
}

fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
}

fn emu_up(control: SocketAddr) -> bool {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.send_to(b"stats", control);
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf).is_ok()
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
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !emu_up(control) {
        assert!(Instant::now() < deadline, "linkemu did not start");
    }
    e
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fps-announce-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp");
    d
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (code, body) = http_get(addr, path);
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
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
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one relay's `/v1/mesh` says, by relay name.
#[derive(Debug)]
struct Picture {
    names: Vec<String>,
    /// (from, to, up, rtt_ms)
    links: Vec<(String, String, bool, f64)>,
    /// (src, dst, via, saving_ms)
    pairs: Vec<(String, String, Vec<String>, Option<f64>)>,
}

fn picture(v: &Value) -> Option<Picture> {
    let names: Vec<String> = v
        .get("relays")?
        .as_array()?
        .iter()
        .map(|r| Some(r.get("name")?.as_str()?.to_owned()))
        .collect::<Option<_>>()?;
    let name = |i: &Value| names.get(usize::try_from(i.as_u64()?).ok()?).cloned();
    let links = v
        .get("links")?
        .as_array()?
        .iter()
        .map(|l| {
            Some((
                name(l.get(0)?)?,
                name(l.get(1)?)?,
                l.get(2)?.as_u64()? == 1,
                l.get(3)?.as_f64()?,
            ))
        })
        .collect::<Option<_>>()?;
    let pairs = v
        .get("pairs")?
        .as_array()?
        .iter()
        .map(|p| {
            let via = p
                .get(2)?
                .as_array()?
                .iter()
                .map(name)
                .collect::<Option<Vec<_>>>()?;
            Some((name(p.get(0)?)?, name(p.get(1)?)?, via, p.get(7)?.as_f64()))
        })
        .collect::<Option<_>>()?;
    Some(Picture {
        names,
        links,
        pairs,
    })
}

/// The whole mesh as the test arranged it, or why not yet.
fn whole_mesh(p: &Picture) -> Result<f64, String> {
    for n in ["f", "n", "t"] {
        if !p.names.iter().any(|x| x == n) {
            return Err(format!("relay {n} missing"));
        }
    }
    // Emulated RTTs: T–N and N–F 90 ms, T–F 221.8 ms (plus loopback and scheduling).
    for (a, b, rtt) in [
        ("t", "n", 90.0),
        ("n", "t", 90.0),
        ("n", "f", 90.0),
        ("f", "n", 90.0),
        ("t", "f", 221.8),
        ("f", "t", 221.8),
    ] {
        let Some(l) = p.links.iter().find(|l| l.0 == a && l.1 == b) else {
            return Err(format!("link {a}→{b} missing"));
        };
        // Smoothed RTTs on a loaded 2-core machine run a few ms to tens of ms above the floor.
        if !l.2 || !(rtt - 2.0..rtt + 50.0).contains(&l.3) {
            return Err(format!("link {a}→{b}: up {} rtt {} ms", l.2, l.3));
        }
    }
    let Some(tf) = p.pairs.iter().find(|x| x.0 == "t" && x.1 == "f") else {
        return Err("no route t→f".into());
    };
    match (&tf.2[..], tf.3) {
        ([via], Some(s)) if via == "n" && s > 5.0 => Ok(s),
        _ => Err(format!("t→f: via {:?}, saving {:?}", tf.2, tf.3)),
    }
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn every_relay_shows_the_whole_mesh() {
    let dir = tmpdir("tnf");
    make_certs(&dir, &["t", "n", "f"]);
    let f = relay(&dir, "f", (50.11, 8.68), &[]);
    let e_nf = emu(f.mesh, "45ms");
    let n = relay(&dir, "n", (55.03, 82.92), &[("f", e_nf.listen)]);
    let e_tn = emu(n.mesh, "45ms");
    let e_tf = emu(f.mesh, "110.9ms");
    let t = relay(
        &dir,
        "t",
        (35.68, 139.69),
        &[("n", e_tn.listen), ("f", e_tf.listen)],
    );
    let relays = [("t", &t), ("n", &n), ("f", &f)];

    for (name, r) in relays {
        let mut last: String;
        let t0 = Instant::now();
        let saving = loop {
            let v = get_json(r.admin, "/v1/mesh");
            match picture(&v)
                .ok_or_else(|| format!("unreadable: {v}"))
                .and_then(|p| whole_mesh(&p))
            {
                Ok(s) => break s,
                Err(why) => last = why,
            }
            assert!(
                t0.elapsed() < Duration::from_secs(40),
                "{name}'s /v1/mesh never showed the whole mesh: {last}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let took = t0.elapsed();
        eprintln!("{name}: whole mesh after {took:?}; t→f via n saves {saving:.1} ms");
        let v = get_json(r.admin, "/v1/mesh");
        assert_eq!(v.get("self_name").and_then(Value::as_str), Some(name));
        assert_eq!(
            v.get("relays").and_then(Value::as_array).map(Vec::len),
            Some(3)
        );
        let fr = v
            .get("relays")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|r| r.get("name") == Some(&Value::from("f"))))
            .cloned()
            .expect("f listed");
        assert_eq!(fr.get("lat").and_then(Value::as_f64), Some(50.11));
        assert!(
            fr.get("url")
                .and_then(Value::as_str)
                .is_some_and(|u| u.starts_with("ws://127.0.0.1:")),
            "{fr}"
        );
    }

    // Announcement flooding and control bytes are counted and move.
    for (name, r) in relays {
        let first = get_json(r.admin, "/v1/status");
        let a = first
            .pointer("/counters/announce")
            .cloned()
            .expect("announce counters");
        let sent = a.get("sent_own").and_then(Value::as_u64).unwrap_or(0);
        let new = a.get("new").and_then(Value::as_u64).unwrap_or(0);
        assert!(sent >= 1 && new >= 2, "{name}: {a}");
        let (_, m0) = http_get(r.admin, "/metrics");
        let tx0 = metric(
            &m0,
            "fastpubsub_mesh_control_bytes_total{direction=\"sent\"}",
        );
        let rx0 = metric(
            &m0,
            "fastpubsub_mesh_control_bytes_total{direction=\"received\"}",
        );
        assert!(tx0.is_some_and(|b| b > 0.0), "{name}: {m0}");
        for dir in ["sent", "received"] {
            let series = format!(
                "fastpubsub_mesh_control_kind_bytes_total{{kind=\"announce\",direction=\"{dir}\"}}"
            );
            assert!(
                metric(&m0, &series).is_some_and(|b| b > 0.0),
                "{name}: {series} in {m0}"
            );
        }
        assert!(rx0.is_some_and(|b| b > 0.0), "{name}: {m0}");
        wait_until(
            &format!("{name}'s control bytes to grow"),
            Duration::from_secs(10),
            || {
                let (_, m) = http_get(r.admin, "/metrics");
                let tx = metric(
                    &m,
                    "fastpubsub_mesh_control_bytes_total{direction=\"sent\"}",
                )?;
                let rx = metric(
                    &m,
                    "fastpubsub_mesh_control_bytes_total{direction=\"received\"}",
                )?;
                (Some(tx) > tx0 && Some(rx) > rx0).then_some(())
            },
        );
    }

    // n stops: t and f no longer hear from it. Its entry turns stale (15 s without an
    // announcement) and t's route to f goes direct.
    drop(n);
    let (_, took) = wait_until("n stale on t and f", Duration::from_secs(40), || {
        for r in [&t, &f] {
            let v = get_json(r.admin, "/v1/mesh");
            let n = v
                .get("relays")?
                .as_array()?
                .iter()
                .find(|x| x.get("name") == Some(&Value::from("n")))?
                .clone();
            if n.get("stale") != Some(&Value::Bool(true)) {
                return None;
            }
            let p = picture(&v)?;
            let tf = p.pairs.iter().find(|x| x.0 == "t" && x.1 == "f")?;
            if !tf.2.is_empty() {
                return None;
            }
        }
        Some(())
    });
    eprintln!("n stopped: stale on t and f, t→f direct, after {took:?}");
    drop((e_nf, e_tn, e_tf));
}
