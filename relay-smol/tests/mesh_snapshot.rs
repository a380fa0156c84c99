//! Ticket status snapshot on link-up: a relay that was not connected when a ticket was
//! revoked learns it when its link comes up (joining late, or a partition healing after
//! the QUIC connection died), with real relay processes on 127.0.0.1.

#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{connect_with, http_get, http_raw, parse_response};
use ed25519_dalek::SigningKey;
use fastpubsub_core::ticket::Applied;
use fastpubsub_relay::tickets::{TicketConfig, TicketService, rfc3339};

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
    http: SocketAddr,
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
    let ca_dir = dir;
    tool(&["mesh-ca", "--dir", ca_dir.to_str().expect("utf8")]);
    for n in names {
        tool(&[
            "mesh-cert",
            "--name",
            n,
            "--ca-dir",
            ca_dir.to_str().expect("utf8"),
            "--out",
            dir.to_str().expect("utf8"),
        ]);
    }
}

fn relay(dir: &Path, name: &str, peers: &[(&str, SocketAddr)], auth: &[&str]) -> Relay {
    let p = |f: String| dir.join(f).to_str().expect("utf8").to_owned();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--listen", "127.0.0.1:0"])
        .args(auth)
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--mesh-listen", "127.0.0.1:0", "--name", name])
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
    let (mut http, mut admin, mut mesh) = (None, None, None);
    while http.is_none() || admin.is_none() || mesh.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("relay start lines");
        if line.contains(" admin on ") {
            admin = Some(addr_in(line));
        } else if line.contains(" listening on ") {
            http = Some(addr_in(line));
        } else if line.contains(" mesh ") {
            mesh = Some(addr_in(line));
        }
    }
    Relay {
        _proc: Proc(child),
        http: http.expect("http"),
        admin: admin.expect("admin"),
        mesh: mesh.expect("mesh"),
    }
}

fn status(r: &Relay) -> serde_json::Value {
    let (code, body) = http_get(r.admin, "/v1/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status JSON")
}

fn counter(r: &Relay, path: &str) -> u64 {
    status(r)
        .pointer(path)
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// Peers of `r` with an up link.
fn up_peers(r: &Relay) -> Vec<String> {
    status(r)["links"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|x| x["up"] == true)
                .filter_map(|x| x["peer"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
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

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fps-snap-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp");
    d
}

/// An issuing relay `a` (state in `dir/a-state`) and a ticket it signed.
fn issuer(dir: &Path) -> (Relay, PathBuf, String) {
    let state = dir.join("a-state");
    let a = relay(
        dir,
        "a",
        &[],
        &["--state-dir", state.to_str().expect("utf8")],
    );
    let out = Command::new(BIN)
        .args([
            "ticket", "--tenant", "acme", "--pub", "chat.#", "--sub", "chat.#", "--ttl", "1h",
        ])
        .args([
            "--signing-key",
            state.join("ticket-signing.key").to_str().expect("utf8"),
        ])
        .output()
        .expect("mint");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = text
        .split_whitespace()
        .find(|w| w.starts_with("AT_"))
        .unwrap_or_else(|| panic!("no ticket in {text:?}"))
        .to_owned();
    (a, state, token)
}

fn revoke(a: &Relay, state: &Path, token: &str) {
    let master = std::fs::read_to_string(state.join("master.token")).expect("master token");
    let body = format!("{{\"token\":\"{token}\"}}");
    let req = format!(
        "DELETE /v1/revoke-token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        master.trim(),
        body.len()
    );
    let (code, resp) = parse_response(&http_raw(a.http, req.as_bytes()));
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains("token revoked"), "{resp}");
}

/// True when `r` accepts a client with `token`; false when it refuses it as revoked
/// (any other refusal fails the test).
fn accepted(r: &Relay, token: &str) -> bool {
    match connect_with(
        &format!("ws://{}/ws", r.http),
        Some(&format!("llps.v1, at.{token}")),
        None,
    ) {
        Ok(_) => true,
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            assert!(
                resp.status() == 401 && body.contains("revoked"),
                "refused for another reason: {} {body}",
                resp.status()
            );
            false
        }
        Err(e) => panic!("connect: {e}"),
    }
}

#[test]
fn snapshot_lists_the_records_in_force_and_they_verify_elsewhere() {
    const NOW: u64 = 1_795_770_000;
    let key = SigningKey::from_bytes(&[7; 32]);
    let a = TicketService::issuer(
        key.clone(),
        "master-token-0123456789",
        TicketConfig::default(),
    );
    let c = TicketService::verifier(key.verifying_key(), TicketConfig::default());
    let auth = Some("Bearer master-token-0123456789");
    let mut tokens = Vec::new();
    for ttl in [600, 3600] {
        let body = format!(
            r#"{{"right":{{"tenant_grants":[{{"tenant_ids":["t"],"allow_channels_pub":["a"],"allow_channels_sub":["a"]}}],"expires_at":"{}"}}}}"#,
            rfc3339::format(NOW + ttl)
        );
        let (code, resp) = a.get_token(auth, body.as_bytes(), NOW);
        assert_eq!(code, 200, "{resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).expect("json");
        tokens.push(v["token"].as_str().expect("token").to_owned());
    }
    assert!(a.snapshot(NOW, 100).is_empty(), "no records yet");
    for t in &tokens {
        let body = format!("{{\"token\":\"{t}\"}}");
        let (code, resp) = a.revoke_token(auth, body.as_bytes(), NOW);
        assert_eq!(code, 200, "{resp}");
    }
    let snap = a.snapshot(NOW, 100);
    assert_eq!(snap.len(), 2);
    assert_eq!(a.snapshot(NOW, 1).len(), 1, "bounded by max");
    // Only records in force: the 600 s ticket's revocation is kept until its expiry.
    assert_eq!(a.snapshot(NOW + 601, 100).len(), 1);
    assert!(a.snapshot(NOW + 3601, 100).is_empty());
    // The receiver verifies them like flooded records.
    for r in &snap {
        assert_eq!(c.apply_remote(r, NOW), Ok(Applied::Added));
        assert_eq!(c.apply_remote(r, NOW), Ok(Applied::Unchanged));
    }
    let mut forged = snap[0].clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(
        c.apply_remote(&forged, NOW).is_err(),
        "bad signature refused"
    );
    for t in &tokens {
        let v = c.verify_cached(t).expect("valid signature");
        assert!(c.check_live(&v, NOW).is_err(), "revoked at C");
    }
}

#[test]
fn a_relay_that_joins_after_a_revocation_refuses_the_ticket() {
    let dir = tmpdir("join");
    make_certs(&dir, &["a", "c"]);
    let (a, state, token) = issuer(&dir);
    assert!(accepted(&a, &token), "A accepts the fresh ticket");
    revoke(&a, &state, &token);
    assert!(!accepted(&a, &token), "A refuses it at once");

    // C starts only now; it never saw the flooded record.
    let public = state.join("ticket-public.key");
    let started = Instant::now();
    let c = relay(
        &dir,
        "c",
        &[("a", a.mesh)],
        &["--ticket-public-key", public.to_str().expect("utf8")],
    );
    let (_, took) = wait_until(
        "C refuses the ticket revoked before it joined",
        Duration::from_secs(10),
        || (!accepted(&c, &token)).then_some(()),
    );
    eprintln!(
        "C started {:?} ago, refused the revoked ticket after {took:?} of polling",
        started.elapsed()
    );
    // It came with A's snapshot (status page lags by ≤ 1 s).
    wait_until(
        "C counts the snapshot record",
        Duration::from_secs(3),
        || (counter(&c, "/counters/ticket_sync/records_new") == 1).then_some(()),
    );
    assert!(counter(&a, "/counters/ticket_sync/snapshots_completed") >= 1);
    assert_eq!(counter(&c, "/counters/mesh/ticket_records_bad"), 0);
    // C floods what was new to it on, but not back to where it came from.
    assert_eq!(counter(&a, "/counters/mesh/ticket_records_new"), 0);
    let _ = std::fs::remove_dir_all(&dir);
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

fn emu(target: SocketAddr) -> Emu {
    let (listen, control) = (free_udp(), free_udp());
    let child = Command::new(EMU)
        .args([
            "--listen",
            &listen.to_string(),
            "--target",
            &target.to_string(),
        ])
        .args(["--control", &control.to_string(), "--delay", "1ms"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn linkemu");
    let e = Emu {
        _proc: Proc(child),
        listen,
        control,
    };
    wait_until("linkemu starts", Duration::from_secs(10), || {
        emu_cmd(e.control, "stats")
    });
    e
}

#[test]
fn a_partitioned_relay_catches_up_when_the_link_heals() {
    let dir = tmpdir("heal");
    make_certs(&dir, &["a", "c"]);
    let (a, state, token) = issuer(&dir);
    let e = emu(a.mesh);
    let public = state.join("ticket-public.key");
    let c = relay(
        &dir,
        "c",
        &[("a", e.listen)],
        &["--ticket-public-key", public.to_str().expect("utf8")],
    );
    wait_until("C links to A", Duration::from_secs(10), || {
        up_peers(&c).contains(&"a".to_owned()).then_some(())
    });
    assert!(accepted(&c, &token), "C accepts the ticket");

    // Partition: everything between A and C is lost, until the QUIC connection dies (its
    // idle timeout), so the revocation cannot arrive late through retransmission.
    emu_cmd(e.control, "loss 100%").expect("emu");
    wait_until("C loses its link to A", Duration::from_secs(30), || {
        status(&c)["links"]
            .as_array()
            .is_some_and(|l| l.iter().all(|x| x["peer"] != "a"))
            .then_some(())
    });
    revoke(&a, &state, &token);
    assert!(accepted(&c, &token), "C cannot know yet");

    let healed = Instant::now();
    emu_cmd(e.control, "loss 0%").expect("emu");
    let (_, took) = wait_until(
        "C refuses the ticket after the partition healed",
        Duration::from_secs(40),
        || (!accepted(&c, &token)).then_some(()),
    );
    eprintln!(
        "healed {:?} ago, C refused the revoked ticket after {took:?}",
        healed.elapsed()
    );
    wait_until(
        "C counts the snapshot record",
        Duration::from_secs(3),
        || (counter(&c, "/counters/ticket_sync/records_new") == 1).then_some(()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- in process, with a stand-in tickets layer: what the node does with each record ----

mod in_process {
    use std::net::SocketAddr;
    use std::sync::mpsc;
    use std::time::Duration;

    use fastpubsub_core::mesh::DeliveryMode;
    use fastpubsub_relay::mesh::config::{MeshConfig, Seed};
    use fastpubsub_relay::mesh::node::{LocalSink, MeshCommand, TicketApplied, TicketHook};
    use fastpubsub_relay::quic::certs::{CaPem, generate_ca, issue_relay_cert};
    use fastpubsub_relay::quic::driver;
    use fastpubsub_relay::quic::tls::MeshIdentity;
    use smol::channel::{Sender, unbounded};

    struct NoSink;

    impl LocalSink for NoSink {
        fn deliver(&mut self, _: &str, _: &str, _: &[u8], _: DeliveryMode) -> usize {
            0
        }
    }

    /// Records starting with `ok` are valid, the rest are "bad signatures"; the snapshot
    /// is what the relay was given at start plus what it applied.
    struct Hook {
        table: Vec<Vec<u8>>,
        applied: mpsc::Sender<Vec<u8>>,
    }

    impl TicketHook for Hook {
        fn drain_outgoing(&mut self, _: usize) -> Vec<Vec<u8>> {
            Vec::new()
        }
        fn apply_remote(&mut self, record: &[u8]) -> TicketApplied {
            if !record.starts_with(b"ok") {
                return TicketApplied::Bad;
            }
            if self.table.iter().any(|r| r == record) {
                return TicketApplied::Known;
            }
            self.table.push(record.to_vec());
            let _ = self.applied.send(record.to_vec());
            TicketApplied::New
        }
        fn snapshot(&mut self, max: usize) -> Vec<Vec<u8>> {
            self.table.iter().take(max).cloned().collect()
        }
    }

    struct Node {
        addr: SocketAddr,
        cmd: Sender<MeshCommand>,
        applied: mpsc::Receiver<Vec<u8>>,
    }

    impl Node {
        fn status(&self) -> serde_json::Value {
            let (tx, rx) = unbounded();
            smol::block_on(self.cmd.send(MeshCommand::Status(tx))).expect("alive");
            serde_json::from_str(&smol::block_on(rx.recv()).expect("status")).expect("json")
        }

        fn count(&self, path: &str) -> u64 {
            self.status()
                .pointer(path)
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
        }

        fn applied_within(&self, n: usize, limit: Duration) -> Vec<Vec<u8>> {
            let mut got: Vec<Vec<u8>> = (0..n)
                .map(|_| self.applied.recv_timeout(limit).expect("record applied"))
                .collect();
            got.sort();
            got
        }
    }

    fn start(name: &str, ca: &CaPem, seeds: Vec<Seed>, table: &[&[u8]]) -> Node {
        let mut cfg = MeshConfig::new(name, "127.0.0.1:0".parse().expect("addr"));
        cfg.seeds = seeds;
        cfg.dial_learned = false; // a line: C – B – A
        let r = issue_relay_cert(name, &ca.cert, &ca.key).expect("issue");
        let id = MeshIdentity::from_pem(&r.chain, &r.key, &ca.cert).expect("identity");
        let table: Vec<Vec<u8>> = table.iter().map(|r| r.to_vec()).collect();
        let (applied_tx, applied) = mpsc::channel();
        let (cmd, rx) = unbounded();
        let (atx, arx) = mpsc::channel();
        std::thread::spawn(move || {
            let (d, mut n) =
                fastpubsub_relay::mesh::start(cfg, &id, Box::new(NoSink)).expect("start");
            n.set_ticket_hook(Box::new(Hook {
                table,
                applied: applied_tx,
            }));
            let _ = atx.send(d.local_addr());
            let _ = smol::block_on(driver::run(d, &mut n, rx));
        });
        Node {
            addr: arx.recv_timeout(Duration::from_secs(5)).expect("started"),
            cmd,
            applied,
        }
    }

    fn seed(name: &str, n: &Node) -> Vec<Seed> {
        vec![Seed {
            name: name.into(),
            addr: n.addr,
        }]
    }

    /// C – B linked first; then A (holding two valid records and a forged one) links to
    /// B. B applies A's valid records once, refuses and counts the forged one, floods the
    /// new ones on to C, and sends nothing back to A.
    #[test]
    fn snapshot_records_are_verified_counted_and_new_ones_flooded_on() {
        let ca = generate_ca().expect("ca");
        let c = start("c", &ca, vec![], &[]);
        let b = start("b", &ca, seed("c", &c), &[]);
        let t0 = std::time::Instant::now();
        while b.count("/counters/ticket_sync/snapshots_completed") < 1 {
            assert!(t0.elapsed() < Duration::from_secs(10), "B–C link");
            std::thread::sleep(Duration::from_millis(20));
        }
        let a = start(
            "a",
            &ca,
            seed("b", &b),
            &[b"ok revoke 1", b"forged", b"ok refresh 2"],
        );
        let want = vec![b"ok refresh 2".to_vec(), b"ok revoke 1".to_vec()];
        assert_eq!(b.applied_within(2, Duration::from_secs(10)), want);
        assert_eq!(c.applied_within(2, Duration::from_secs(3)), want);
        assert_eq!(b.count("/counters/ticket_sync/records_received"), 3);
        assert_eq!(b.count("/counters/ticket_sync/records_new"), 2);
        assert_eq!(b.count("/counters/ticket_sync/records_bad"), 1);
        assert_eq!(b.count("/counters/mesh/ticket_records_bad"), 1);
        // C got them by the flood, not by a snapshot.
        assert_eq!(c.count("/counters/mesh/ticket_records_new"), 2);
        assert_eq!(c.count("/counters/ticket_sync/records_received"), 0);
        assert!(
            a.applied.recv_timeout(Duration::from_millis(300)).is_err(),
            "nothing comes back to A"
        );
        assert_eq!(a.count("/counters/ticket_sync/snapshots_completed"), 1);
        assert!(b.applied.try_recv().is_err() && c.applied.try_recv().is_err());
    }
}
