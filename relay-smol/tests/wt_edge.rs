//! The WebTransport edge end to end: a relay process with `--wt-listen`, the crate's own
//! WebTransport client (`wt::client`) and WebSocket clients on the same broker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use common::{WAIT, connect_with, decode_deliver, next_deliver, publish_frame, send_text};
use fastpubsub_core::frame::Mode;
use fastpubsub_relay::wt::client::{CertCheck, Incoming, WtClient};

/// A relay process with the WebTransport edge on.
struct WtRelay {
    child: Child,
    ws: SocketAddr,
    wt: SocketAddr,
    /// The admin listener, when the test asked for one (`--admin-listen`).
    admin: Option<SocketAddr>,
    banner: Vec<String>,
}

impl WtRelay {
    fn start(extra: &[&str]) -> WtRelay {
        let admin = if extra.contains(&"--admin-listen") {
            &[][..]
        } else {
            &["--admin-listen", "off"][..]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_fastpubsub-relay"))
            .args(["run", "--listen", "127.0.0.1:0"])
            .args(admin)
            .args(["--wt-listen", "127.0.0.1:0"])
            // The counters (/stats, /v1/wt-stats) are served to admin-token holders only.
            .arg("--admin-token-file")
            .arg(common::admin_token_file())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr_in = |line: &str| -> SocketAddr {
            line.split("://")
                .nth(1)
                .and_then(|s| s.split('/').next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no address in {line:?}"))
        };
        let (mut ws, mut wt, mut admin_addr) = (None, None, None);
        let mut banner = Vec::new();
        let deadline = Instant::now() + WAIT;
        while ws.is_none() || wt.is_none() || banner.iter().all(|l: &String| !l.contains("AT_")) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                if ws.is_some() && wt.is_some() && extra.contains(&"--insecure-no-auth") {
                    break;
                }
                panic!("relay did not start: {banner:?}");
            };
            if line.contains("listening on") {
                ws = Some(addr_in(&line));
            } else if line.contains("webtransport on") {
                wt = Some(addr_in(&line));
            } else if line.contains("admin on") {
                admin_addr = Some(addr_in(&line));
            }
            banner.push(line);
            let admin_ready = admin_addr.is_some() || !extra.contains(&"--admin-listen");
            if ws.is_some() && wt.is_some() && admin_ready && extra.contains(&"--insecure-no-auth")
            {
                break;
            }
        }
        WtRelay {
            child,
            ws: ws.unwrap(),
            wt: wt.unwrap(),
            admin: admin_addr,
            banner,
        }
    }

    fn wt_url(&self) -> String {
        format!("https://{}/", self.wt)
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    fn dev_ticket(&self) -> String {
        self.banner
            .iter()
            .find_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("AT_") && w.len() > 40)
            })
            .expect("dev ticket in the banner")
            .to_string()
    }

    fn stats(&self) -> serde_json::Value {
        let (status, body) = common::http_get_admin(self.ws, "/stats");
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    fn wt_stats(&self) -> serde_json::Value {
        let (status, body) = common::http_get_admin(self.ws, "/v1/wt-stats");
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `/metrics` (mirrored about once a second) has every one of `lines`.
    fn metrics_show(&self, lines: &[&str]) {
        let admin = self.admin.expect("started with --admin-listen");
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = common::http_get(admin, "/metrics");
            assert_eq!(status, 200);
            if lines.iter().all(|want| body.lines().any(|l| l == *want)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "/metrics lacks some of {lines:?}:\n{body}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for WtRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wt(relay: &WtRelay, token: Option<&str>) -> WtClient {
    WtClient::connect(&relay.wt_url(), token, CertCheck::Insecure, WAIT).unwrap()
}

fn next_text(c: &mut WtClient) -> String {
    match c.recv(WAIT) {
        Some(Incoming::Text(t)) => t,
        Some(other) => panic!("expected text, got {other:?}"),
        None => panic!("no text within {WAIT:?}: {:?}", c.closed()),
    }
}

fn next_deliver_wt(c: &mut WtClient) -> (common::Delivery, u8) {
    match c.recv(WAIT) {
        Some(Incoming::Deliver(b, from)) => (decode_deliver(&b), from),
        other => panic!("expected a delivery, got {other:?} ({:?})", c.closed()),
    }
}

fn barrier(c: &mut WtClient) {
    c.send_text("PING");
    assert_eq!(next_text(c), "PONG");
}

#[test]
fn pubsub_over_webtransport_and_to_and_from_websocket() {
    let relay = WtRelay::start(&["--insecure-no-auth"]);
    let mut a = wt(&relay, None);
    a.send_text("SUB:t:a.#");
    assert_eq!(next_text(&mut a), "OK:SUB:t:a.#");
    a.send_text("SUB:t:a.b");
    assert_eq!(next_text(&mut a), "OK:SUB:t:a.b");
    let mut b = connect_with(&relay.ws_url(), Some("llps.v1"), None).unwrap();
    common::subscribe(&mut b, "t", "a.*");

    // WebTransport → both.
    a.send_binary(&publish_frame(Mode::Broadcast, "t", "a.b", b"from wt"));
    let (d, from) = next_deliver_wt(&mut a);
    assert_eq!(
        (d.channel.as_str(), &d.payload[..], from),
        ("a.b", &b"from wt"[..], 0)
    );
    let mut pats = d.patterns.clone();
    pats.sort();
    assert_eq!(
        pats,
        ["a.#", "a.b"],
        "one frame listing every matching pattern"
    );
    let d = next_deliver(&mut b);
    assert_eq!(
        (d.payload.as_slice(), d.patterns.as_slice()),
        (&b"from wt"[..], &["a.*".to_string()][..])
    );

    // WebSocket → WebTransport.
    common::publish(&mut b, Mode::Broadcast, "t", "a.c", b"from ws");
    let (d, _) = next_deliver_wt(&mut a);
    assert_eq!(
        (d.channel.as_str(), d.patterns.as_slice()),
        ("a.c", &["a.#".to_string()][..])
    );
    let _ = next_deliver(&mut b);

    // Errors name what and why; the session stays.
    a.send_text("SUB:t:a.#.b");
    assert!(next_text(&mut a).starts_with("ERR:invalid_pattern:SUB:t:a.#.b"));
    a.send_text("UNSUB:t:a.b");
    assert_eq!(next_text(&mut a), "OK:UNSUB:t:a.b");
    barrier(&mut a);
}

#[test]
fn lines_and_datagrams() {
    let relay = WtRelay::start(&["--insecure-no-auth"]);
    let mut a = wt(&relay, None);
    a.send_text("SUB:t:l.#:U:0:0");
    assert_eq!(next_text(&mut a), "OK:SUB:t:l.#:U:1");
    a.send_text("SUB:t:m.#:U:5:100");
    assert_eq!(next_text(&mut a), "OK:SUB:t:m.#:U:5");
    a.send_text("SUB:t:d.#:D");
    assert_eq!(next_text(&mut a), "OK:SUB:t:d.#");
    a.send_text("SUB:t:x:U:9:0");
    assert!(next_text(&mut a).starts_with("ERR:bad_options:SUB:t:x:U:9:0"));

    let mut publisher = wt(&relay, None);
    for (ch, want) in [("l.1", 1u8), ("m.1", 5), ("d.1", 255)] {
        publisher.send_binary(&publish_frame(Mode::Broadcast, "t", ch, ch.as_bytes()));
        let (d, from) = next_deliver_wt(&mut a);
        assert_eq!((d.channel.as_str(), from), (ch, want), "{ch}");
    }
    // A delivery too large for a datagram goes on the control stream.
    let big = vec![7u8; 4000];
    publisher.send_binary(&publish_frame(Mode::Broadcast, "t", "d.big", &big));
    let (d, from) = next_deliver_wt(&mut a);
    assert_eq!((d.payload.len(), from), (4000, 0));
}

#[test]
fn frame_cap_and_protocol_errors() {
    let relay = WtRelay::start(&["--insecure-no-auth"]);
    let mut a = wt(&relay, None);
    a.send_text("SUB:t:big");
    assert_eq!(next_text(&mut a), "OK:SUB:t:big");
    let mut w = connect_with(&relay.ws_url(), Some("llps.v1"), None).unwrap();
    common::subscribe(&mut w, "t", "big");
    let mut p = wt(&relay, None);
    // A publish frame of exactly 65,536 bytes is accepted; its deliver frame is larger
    // than a WebTransport frame may be: WebSocket gets it, the WT session skips it.
    let v1_overhead = 2 + 1 + 2 + 3;
    let payload = vec![1u8; 65_536 - v1_overhead];
    p.send_binary(&common::publish_v1_frame("t", "big", &payload));
    barrier(&mut p); // drives the publisher's QUIC until the relay has handled it
    let d = next_deliver(&mut w);
    assert_eq!(d.payload.len(), payload.len());
    barrier(&mut a);
    let s = relay.stats();
    assert_eq!(s["dropped_wt_oversize"], 1, "{s}");
    // One byte more ends the publisher's session (the contract's frame cap).
    let mut too_big = common::publish_v1_frame("t", "big", &payload);
    too_big.push(0);
    p.send_binary(&too_big);
    p.flush(WAIT);
    assert_eq!(p.recv(WAIT), None);
    assert!(
        p.closed().is_some_and(|w| w.contains("65536")),
        "{:?}",
        p.closed()
    );
    // An unknown kind byte too.
    let mut q = wt(&relay, None);
    barrier(&mut q);
    q.send_raw_control(&[7, 0, 0, 0, 0]);
    assert_eq!(q.recv(WAIT), None);
    assert!(
        q.closed().is_some_and(|w| w.contains("kind")),
        "{:?}",
        q.closed()
    );
    // The others are unaffected.
    barrier(&mut a);
    send_text(&mut w, "PING");
}

#[test]
fn tickets_bearer_query_refusals_and_protocols() {
    let dir = std::env::temp_dir().join(format!("fastpubsub-wt-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let relay = WtRelay::start(&["--state-dir", dir.to_str().unwrap()]);
    let ticket = relay.dev_ticket();
    // Bearer (the SDK).
    let mut a = wt(&relay, Some(&ticket));
    a.send_text("SUB:dev:public.#");
    assert_eq!(next_text(&mut a), "OK:SUB:dev:public.#");
    a.send_text("SUB:dev:private.#");
    assert_eq!(next_text(&mut a), "ERR:permission_denied:SUB:dev:private.#");
    // `?at=` (browsers).
    let url = format!("{}?at={ticket}", relay.wt_url());
    let mut b = WtClient::connect(&url, None, CertCheck::Insecure, WAIT).unwrap();
    barrier(&mut b);
    // Bogus, missing: 401 with a reason.
    let e = WtClient::connect(&relay.wt_url(), Some("AT_00_00"), CertCheck::Insecure, WAIT)
        .err()
        .unwrap();
    assert!(e.contains("HTTP 401"), "{e}");
    let e = WtClient::connect(&relay.wt_url(), None, CertCheck::Insecure, WAIT)
        .err()
        .unwrap();
    assert!(e.contains("HTTP 401") && e.contains("?at="), "{e}");
    // A ticket for WebSocket only: 403 over WebTransport, fine over WebSocket.
    let master = std::fs::read_to_string(PathBuf::from(&dir).join("master.token")).unwrap();
    let body = serde_json::json!({"right": {"tenant_grants": [{"tenant_ids": ["dev"],
        "allow_channels_pub": ["public.#"], "allow_channels_sub": ["public.#"]}],
        "allow_protocols": ["websocket"],
        "expires_at": fastpubsub_relay::tickets::rfc3339::format(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600)},
        "created_by": "wt-test"});
    let req = format!(
        "POST /v1/get-token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        master.trim(),
        body.to_string().len(),
        body
    );
    let (status, resp) = common::parse_response(&common::http_raw(relay.ws, req.as_bytes()));
    assert_eq!(status, 200, "{resp}");
    let ws_only = serde_json::from_str::<serde_json::Value>(&resp).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let e = WtClient::connect(&relay.wt_url(), Some(&ws_only), CertCheck::Insecure, WAIT)
        .err()
        .unwrap();
    assert!(e.contains("HTTP 403"), "{e}");
    let _ws = connect_with(
        &relay.ws_url(),
        Some(&format!("llps.v1, at.{ws_only}")),
        None,
    )
    .unwrap();
    // Every answer is counted, by status.
    let w = relay.wt_stats();
    assert_eq!(
        (
            w["sessions"].as_u64(),
            w["sessions_accepted"].as_u64(),
            w["refused_unauthorized"].as_u64(),
            w["refused_forbidden"].as_u64(),
        ),
        (Some(2), Some(2), Some(2), Some(1)),
        "{w}"
    );
    // The certificate hash is served, and pinning it works.
    let (status, body) = common::http_get(relay.ws, "/v1/wt-cert-hash");
    assert_eq!(status, 200);
    let hex = serde_json::from_str::<serde_json::Value>(&body).unwrap()["hex"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        relay.banner.iter().any(|l| l.contains(&hex)),
        "hash printed at start"
    );
    let pinned = fastpubsub_relay::wt::client::parse_hash(&hex).unwrap();
    let mut c = WtClient::connect(
        &relay.wt_url(),
        Some(&ticket),
        CertCheck::Sha256(pinned),
        WAIT,
    )
    .unwrap();
    barrier(&mut c);
    let e = WtClient::connect(
        &relay.wt_url(),
        Some(&ticket),
        CertCheck::Sha256([0; 32]),
        WAIT,
    )
    .err()
    .unwrap();
    assert!(e.contains("pinned") || e.contains("certificate"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_that_changes_address_keeps_its_session() {
    let relay = WtRelay::start(&["--insecure-no-auth", "--admin-listen", "127.0.0.1:0"]);
    let mut a = wt(&relay, None);
    a.send_text("SUB:t:m.#:U:0:0");
    assert_eq!(next_text(&mut a), "OK:SUB:t:m.#:U:1");
    a.send_text("SUB:t:c.#");
    assert_eq!(next_text(&mut a), "OK:SUB:t:c.#");
    let mut p = wt(&relay, None);
    p.send_binary(&publish_frame(Mode::Broadcast, "t", "m.1", b"before"));
    assert_eq!(next_deliver_wt(&mut a).0.payload, b"before");
    let old = a.local_addr().unwrap();
    let new = a.rebind().unwrap();
    assert_ne!(old.port(), new.port());
    // The next packet from the new address migrates the connection.
    barrier(&mut a);
    for (i, ch) in ["m.2", "c.2"].iter().enumerate() {
        p.send_binary(&publish_frame(Mode::Broadcast, "t", ch, b"after"));
        let (d, from) = next_deliver_wt(&mut a);
        assert_eq!((d.channel.as_str(), from), (*ch, [1, 0][i]));
    }
    assert_eq!(
        relay.stats()["connections"],
        2,
        "still the same two sessions"
    );
    let (status, body) = common::http_get_admin(relay.ws, "/v1/wt-stats");
    assert_eq!(status, 200);
    let w: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (w["connected"].as_u64(), w["ended"].as_u64()),
        (Some(2), Some(0)),
        "{w}"
    );
    assert!(w["datagrams_in"].as_u64().unwrap() > 0, "{w}");
    assert_eq!(w["sessions"].as_u64(), Some(2), "{w}");
    relay.metrics_show(&[
        "fastpubsub_wt_sessions 2",
        "fastpubsub_wt_sessions_accepted_total 2",
        "fastpubsub_wt_session_refusals_total{reason=\"unauthorized\"} 0",
        "fastpubsub_wt_deliveries_dropped_total{reason=\"line_queue_full\"} 0",
    ]);
    // The dashboard's card reads the same numbers.
    let (status, body) = common::http_get(relay.admin.unwrap(), "/v1/mesh");
    assert_eq!(status, 200);
    let mesh: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        mesh["webtransport"]["sessions"], 2,
        "{}",
        mesh["webtransport"]
    );
    assert_eq!(
        mesh["webtransport"]["accepted"], 2,
        "{}",
        mesh["webtransport"]
    );
    drop(p);
    relay.metrics_show(&[
        "fastpubsub_wt_sessions 1",
        "fastpubsub_wt_sessions_ended_total 1",
    ]);
}

#[test]
fn cli_tools_speak_https_webtransport_and_wss() {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("fastpubsub-wt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let (c, k) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let relay = WtRelay::start(&[
        "--insecure-no-auth",
        "--tls-cert",
        c,
        "--tls-key",
        k,
        "--wt-cert",
        c,
        "--wt-key",
        k,
    ]);
    let bin = env!("CARGO_BIN_EXE_fastpubsub-relay");
    let wt_url = format!("https://localhost:{}/", relay.wt.port());
    let mut sub = Command::new(bin)
        .args([
            "sub",
            "--url",
            &wt_url,
            "--ca",
            c,
            "--count",
            "2",
            "t",
            "a.#:U:0:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // wss:// with the CA, until the subscription is live (the first line arrives).
    let wss = format!("wss://localhost:{}/ws", relay.ws.port());
    let deadline = Instant::now() + WAIT;
    let first = loop {
        let st = Command::new(bin)
            .args(["pub", "--url", &wss, "--ca", c, "t", "a.wss", "over wss"])
            .status()
            .unwrap();
        assert!(st.success());
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(300)) {
            break line;
        }
        assert!(Instant::now() < deadline, "sub never received");
    };
    assert_eq!(first, "a.wss\tover wss");
    while rx
        .recv_timeout(std::time::Duration::from_millis(300))
        .is_ok()
    {}
    // https:// (WebTransport) pinned by hash.
    let hex = fastpubsub_relay::wt::cert::hex(&{
        use sha2::Digest;
        let d: [u8; 32] = sha2::Sha256::digest(ck.cert.der()).into();
        d
    });
    let st = Command::new(bin)
        .args([
            "pub",
            "--url",
            &format!("https://127.0.0.1:{}/", relay.wt.port()),
            "--cert-hash",
            &hex,
            "t",
            "a.wt",
            "over wt",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "a.wt\tover wt");
    assert!(sub.wait().unwrap().success(), "sub exits 0 after --count 2");
    // No check chosen: a clear refusal, exit 2.
    let o = Command::new(bin)
        .args(["pub", "--url", &wt_url, "t", "a.x", "m"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--cert-hash"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn drain_sends_reconnect_then_closes() {
    let relay = WtRelay::start(&["--insecure-no-auth", "--shutdown-grace-ms", "300"]);
    let mut a = wt(&relay, None);
    a.send_text("SUB:t:x");
    assert_eq!(next_text(&mut a), "OK:SUB:t:x");
    let pid = rustix::process::Pid::from_raw(relay.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    assert_eq!(next_text(&mut a), "RECONNECT");
    // Still subscribed during the grace, then closed by the relay (1001, going away).
    assert_eq!(a.recv(WAIT), None);
    assert!(a.closed().is_some(), "the session ended");
}

#[test]
fn a_burst_to_three_subscribers_loses_nothing() {
    let relay = WtRelay::start(&["--insecure-no-auth"]);
    let mut subs: Vec<WtClient> = ["SUB:t:load.#", "SUB:t:load.#:U:0:0", "SUB:t:load.#:U:7:0"]
        .iter()
        .map(|cmd| {
            let mut c = wt(&relay, None);
            c.send_text(cmd);
            assert!(next_text(&mut c).starts_with("OK:SUB:t:load.#"));
            c
        })
        .collect();
    let mut p = wt(&relay, None);
    let mut payload = vec![0x5au8; 1024];
    for n in 0u32..1000 {
        payload[..4].copy_from_slice(&n.to_be_bytes());
        p.send_binary(&publish_frame(Mode::Broadcast, "t", "load.x", &payload));
    }
    barrier(&mut p);
    for (i, s) in subs.iter_mut().enumerate() {
        for n in 0u32..1000 {
            let (d, _) = next_deliver_wt(s);
            let got = u32::from_be_bytes(d.payload[..4].try_into().unwrap());
            assert_eq!(got, n, "subscriber {i}: {}", relay.stats());
        }
    }
    assert_eq!(relay.stats()["dropped_queue_full"], 0);
}

#[test]
fn a_revoked_ticket_ends_its_session_and_is_refused() {
    let dir = std::env::temp_dir().join(format!("fastpubsub-wt-revoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let relay = WtRelay::start(&["--state-dir", dir.to_str().unwrap()]);
    let ticket = relay.dev_ticket();
    let mut a = wt(&relay, Some(&ticket));
    a.send_text("SUB:dev:public.#");
    assert_eq!(next_text(&mut a), "OK:SUB:dev:public.#");
    let master = std::fs::read_to_string(dir.join("master.token")).unwrap();
    let body = format!("{{\"token\":\"{ticket}\"}}");
    let req = format!(
        "DELETE /v1/revoke-token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        master.trim(),
        body.len()
    );
    let (status, resp) = common::parse_response(&common::http_raw(relay.ws, req.as_bytes()));
    assert_eq!(status, 200, "{resp}");
    // The sweep (about once a second) ends it: ERR:access_ended, then the close.
    let t = next_text(&mut a);
    assert!(t.starts_with("ERR:access_ended:"), "{t}");
    assert_eq!(a.recv(WAIT), None);
    assert!(a.closed().is_some());
    let e = WtClient::connect(&relay.wt_url(), Some(&ticket), CertCheck::Insecure, WAIT)
        .err()
        .unwrap();
    assert!(e.contains("HTTP 401") && e.contains("revoked"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
