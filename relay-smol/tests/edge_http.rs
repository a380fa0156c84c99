//! The HTTP side of the edge: /ping, 404/400/426, the WebSocket handshake (strict client,
//! token in subprotocol or Authorization), 503 at the connection limit, no open relay
//! without --insecure-no-auth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::process::Command;

use common::*;
use fastpubsub_relay::limits::Limits;

#[test]
fn ping_answers_pong() {
    let relay = TestRelay::start(Limits::default());
    let (status, body) = http_get(relay.addr, "/ping");
    assert_eq!(status, 200);
    assert_eq!(body.trim(), "pong");
}

#[test]
fn head_ping_has_no_body() {
    let relay = TestRelay::start(Limits::default());
    let resp = http_raw(relay.addr, b"HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{resp}");
    assert!(head.contains("Content-Length: 4\r\n"), "{head}");
    assert_eq!(body, "", "HEAD must not carry a body");
}

#[test]
fn conflicting_content_lengths_are_refused() {
    let relay = TestRelay::start(Limits::default());
    for req in [
        "POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nhello",
        "POST /x HTTP/1.1\r\nContent-Length: 1, 5\r\n\r\nhello",
        "POST /x HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
        "POST /x HTTP/1.1\r\nContent-Length: \r\n\r\nhello",
    ] {
        let (status, body) = parse_response(&http_raw(relay.addr, req.as_bytes()));
        assert_eq!(status, 400, "{req:?}: {body}");
        assert!(body.contains("Content-Length"), "{body}");
    }
    // The same value twice is one length (RFC 9112 6.3): the request is read and routed.
    let same = "POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello";
    let (status, _) = parse_response(&http_raw(relay.addr, same.as_bytes()));
    assert_eq!(status, 404);
}

#[test]
fn counters_are_for_admin_token_holders_only() {
    let relay = TestRelay::start(Limits::default());
    for path in ["/stats", "/v1/ticket-stats", "/v1/wt-stats"] {
        let (status, body) = http_get(relay.addr, path);
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body.contains("admin credential required"), "{body}");
        let wrong = http_raw(
            relay.addr,
            format!("GET {path} HTTP/1.1\r\nAuthorization: Bearer not-the-token-0000\r\n\r\n")
                .as_bytes(),
        );
        assert_eq!(parse_response(&wrong).0, 401, "{wrong}");
        assert!(wrong.contains("WWW-Authenticate: Basic"), "{wrong}");
    }
    let (status, body) = http_get_admin(relay.addr, "/stats");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"queue_bytes_held\":"), "{body}");
    // /ping stays public.
    assert_eq!(http_get(relay.addr, "/ping").0, 200);
}

#[test]
fn counters_do_not_exist_without_an_admin_token() {
    // A relay without an admin token (the default) has no /stats on its public port.
    let config = fastpubsub_relay::config::Config::new("127.0.0.1:0".parse().unwrap());
    let relay = TestRelay::start_ungated(config);
    let (status, body) = http_get(relay.addr, "/stats");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("admin listener"), "{body}");
    let (status, _) = http_get_admin(relay.addr, "/stats");
    assert_eq!(status, 404);
}

#[test]
fn unknown_path_is_404_with_a_body() {
    let relay = TestRelay::start(Limits::default());
    let (status, body) = http_get(relay.addr, "/nope");
    assert_eq!(status, 404);
    assert!(body.contains("/nope"), "{body}");
}

#[test]
fn garbage_http_is_400() {
    let relay = TestRelay::start(Limits::default());
    let resp = http_raw(relay.addr, b"\x00\x01 garbage\r\n\r\n");
    let (status, body) = parse_response(&resp);
    assert_eq!(status, 400, "{resp}");
    assert!(body.contains("malformed"), "{body}");
}

#[test]
fn ws_path_without_upgrade_is_426() {
    let relay = TestRelay::start(Limits::default());
    let (status, _) = http_get(relay.addr, "/ws");
    assert_eq!(status, 426);
}

#[test]
fn oversize_head_is_431() {
    let relay = TestRelay::start(Limits::default());
    let big = format!(
        "GET /ping HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (status, _) = parse_response(&http_raw(relay.addr, big.as_bytes()));
    assert_eq!(status, 431);
}

#[test]
fn handshake_answers_llps_v1_and_connection_upgrade_exactly() {
    let relay = TestRelay::start(Limits::default());
    let mut raw = RawWs::start(relay.addr).unwrap();
    let head = raw.finish();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: Upgrade\r\n"), "{head}");
    assert!(
        head.contains("\r\nSec-WebSocket-Protocol: llps.v1\r\n"),
        "{head}"
    );
    // RFC 6455 sample key → sample accept value.
    assert!(
        head.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
}

#[test]
fn strict_client_with_token_in_subprotocol_is_accepted() {
    let relay = TestRelay::start(Limits::default());
    // tungstenite fails the handshake unless the answer names one of the offered protocols.
    let mut ws = connect_with(&relay.url(), Some("llps.v1,at.AT_abc_secret"), None).unwrap();
    barrier(&mut ws);
    let mut ws = connect_with(&relay.url(), Some("llps.v1"), Some("AT_abc_secret")).unwrap();
    barrier(&mut ws);
}

#[test]
fn wrong_subprotocol_is_refused_with_reason() {
    let relay = TestRelay::start(Limits::default());
    match connect_with(&relay.url(), Some("mqtt"), None) {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 400);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("llps.v1"), "{body}");
        }
        other => panic!("expected HTTP 400, got {other:?}"),
    }
}

#[test]
fn connection_limit_answers_503() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let relay = TestRelay::start(limits);
    let mut a = connect(&relay);
    let mut b = connect(&relay);
    barrier(&mut a);
    barrier(&mut b);
    match connect_with(&relay.url(), Some("llps.v1"), None) {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body =
                String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
            assert!(body.contains("connection limit (2)"), "{body}");
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    drop(a);
    relay.wait_stats("a slot to free", |s| s["connections"] == 1);
    let mut c = connect(&relay);
    barrier(&mut c);
}

#[test]
fn insecure_no_auth_logs_a_loud_warning() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastpubsub-relay"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-auth",
            "--admin-listen",
            "off",
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(WAIT) {
            Ok(line) if line.contains("EVERY client may publish and subscribe") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found, "no warning in: {seen:?}");
}

#[test]
fn run_without_flags_is_not_an_open_relay() {
    // Without --insecure-no-auth, `run` requires access tickets (a first run creates the key
    // material in the state directory): a client without a token is refused.
    let state = std::env::temp_dir().join(format!("fps-edge-noauth-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastpubsub-relay"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--state-dir",
        ])
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let read = std::io::BufRead::read_line(&mut out, &mut line);
    // Keep draining stdout so the relay never writes into a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let addr = line
        .split("ws://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .map(str::to_owned);
    let result = addr
        .as_ref()
        .map(|a| connect_with(&format!("ws://{a}/ws"), Some("llps.v1"), None));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&state);
    assert!(
        read.is_ok() && addr.is_some(),
        "no listening line: {line:?}"
    );
    match result {
        Some(Err(tungstenite::Error::Http(resp))) => assert_eq!(resp.status(), 401),
        other => panic!("expected HTTP 401 without a token, got {other:?}"),
    }
}
