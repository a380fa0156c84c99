//! Before the handshake: connections that hold a half-sent request are capped in total and
//! per source (the next one gets a quick 503 with the reason), released when their handshake
//! ends or times out; a source that keeps presenting bad tickets gets 429 without its ticket
//! being checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::*;
use fastpubsub_relay::auth::{Access, AllowAll, Authorizer, HandshakeRequest, Refusal};
use fastpubsub_relay::config::Config;
use fastpubsub_relay::limits::{Limits, Rate};

fn src(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A connection that sent half a request and waits.
fn half_open(from: Ipv4Addr, relay: &TestRelay) -> TcpStream {
    let mut s = connect_from(from, relay.addr).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
    s
}

/// Reads whatever the relay answers (until it closes) as text.
fn answer(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn ping_from(from: Ipv4Addr, relay: &TestRelay) -> String {
    let mut s = connect_from(from, relay.addr).unwrap();
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    answer(&mut s)
}

#[test]
fn half_open_handshakes_are_capped_in_total_and_per_source() {
    let limits = Limits {
        max_pending_handshakes: 30,
        max_pending_per_source: 12,
        ..Limits::default()
    };
    let relay = TestRelay::start(limits);
    // 12 from .2 fill that source: the 13th is refused at once with the reason.
    let mut held: Vec<TcpStream> = (0..12).map(|_| half_open(src(2), &relay)).collect();
    let mut extra = half_open(src(2), &relay);
    let resp = answer(&mut extra);
    assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
    assert!(
        resp.contains("your address has 12 connections waiting in their handshake"),
        "{resp}"
    );
    // Other sources are not affected.
    assert!(ping_from(src(3), &relay).starts_with("HTTP/1.1 200 "));
    // Fill the relay: 12 from .3, 6 from .4 = 30 in all; then any source is refused.
    held.extend((0..12).map(|_| half_open(src(3), &relay)));
    held.extend((0..6).map(|_| half_open(src(4), &relay)));
    // The relay must have accepted them before the next one arrives: wait until a
    // connection from a fresh source is refused.
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        let r = ping_from(src(5), &relay);
        if r.starts_with("HTTP/1.1 503 ") || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        refused.contains("this relay has 30 connections waiting in their handshake"),
        "{refused}"
    );
    // The held connections finish their request: each one is answered normally and its
    // place is released, so the relay takes handshakes again.
    for s in held.iter_mut().take(3) {
        s.write_all(b"\r\n").unwrap();
        let r = answer(s);
        assert!(r.starts_with("HTTP/1.1 426 "), "{r}");
    }
    drop(held);
    // (The /stats request is itself a connection in its handshake: 1.)
    let s = relay.wait_stats("every handshake place released", |s| {
        s["handshakes_pending"] == 1
    });
    assert!(s["refused_pending_source"].as_u64().unwrap() >= 1, "{s}");
    assert!(s["refused_pending_full"].as_u64().unwrap() >= 1, "{s}");
    let mut ws = connect(&relay);
    barrier(&mut ws);
}

#[test]
fn a_stalled_handshake_is_dropped_after_the_timeout_and_its_place_released() {
    let limits = Limits {
        max_pending_handshakes: 4,
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let relay = TestRelay::start(limits);
    let mut held: Vec<TcpStream> = (0..4).map(|_| half_open(src(6), &relay)).collect();
    // Each is closed by the relay after the timeout, without an answer.
    for s in &mut held {
        assert_eq!(answer(s), "");
    }
    let s = relay.wait_stats("the places released", |s| s["handshakes_pending"] == 1);
    assert_eq!(s["connections"], 0, "{s}");
    let mut ws = connect(&relay);
    barrier(&mut ws);
}

/// Allows the token `good`, refuses every other with 401 (like a forged ticket).
struct OnlyGood;

impl Authorizer for OnlyGood {
    fn authorize(&self, req: &HandshakeRequest<'_>) -> Result<Box<dyn Access>, Refusal> {
        match req.token {
            Some("good") => Ok(Box::new(AllowAll)),
            _ => Err(Refusal {
                status: 401,
                reason: "ticket signature does not verify".into(),
            }),
        }
    }
}

fn handshake_from(from: Ipv4Addr, relay: &TestRelay, token: &str) -> String {
    let mut s = connect_from(from, relay.addr).unwrap();
    let req = HANDSHAKE.replace("at.t", &format!("at.{token}"));
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_source_that_keeps_failing_ticket_checks_gets_429() {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap());
    config.limits = Limits {
        ticket_failures: Rate {
            per_sec: 1,
            burst: 5,
        },
        ..Limits::default()
    };
    let relay = TestRelay::start_with_auth(config, || Rc::new(OnlyGood) as Rc<dyn Authorizer>);
    for i in 0..5 {
        let r = handshake_from(src(7), &relay, &format!("forged{i}"));
        assert!(r.starts_with("HTTP/1.1 401 "), "{r}");
    }
    let r = handshake_from(src(7), &relay, "forged5");
    assert!(r.starts_with("HTTP/1.1 429 "), "{r}");
    assert!(r.contains("Retry-After: 1\r\n"), "{r}");
    assert!(
        r.contains("too many failed ticket checks from your address"),
        "{r}"
    );
    // Another source is checked as usual; a good ticket works there.
    assert!(handshake_from(src(8), &relay, "forged").starts_with("HTTP/1.1 401 "));
    assert!(handshake_from(src(8), &relay, "good").starts_with("HTTP/1.1 101 "));
    // After a second the source has one try again.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(handshake_from(src(7), &relay, "good").starts_with("HTTP/1.1 101 "));
    let s = relay.stats();
    assert_eq!(s["ticket_failures"], 6, "{s}");
    assert_eq!(s["refused_ticket_failures"], 1, "{s}");
    assert_eq!(s["ticket_failure_sources"], 2, "{s}");
}
