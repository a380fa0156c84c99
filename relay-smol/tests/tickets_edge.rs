//! Access tickets on a real relay on 127.0.0.1: REST lifecycle, handshake refusals, grants,
//! revoke closing a live connection, refresh keeping one alive past its original expiry,
//! IP mask and Origin checks, rate limits.
// The tests build expiry times from the same wall clock the relay reads.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use fastpubsub_relay::config::Config;
use fastpubsub_relay::tickets::edge::{TicketAuthorizer, TicketRest};
use fastpubsub_relay::tickets::{TicketConfig, TicketService, rfc3339};
use fastpubsub_relay::ws::Relay;
use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

const MASTER: &str = "test-master-token-0123456789";
/// The admin token (`/stats` is served to its holders only).
const ADMIN: &str = "tickets-edge-admin-token";
const WAIT: Duration = Duration::from_secs(8);

struct TestRelay {
    addr: SocketAddr,
    stop: Option<smol::channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestRelay {
    fn start() -> Self {
        let service = Arc::new(TicketService::issuer(
            SigningKey::from_bytes(&[11; 32]),
            MASTER,
            TicketConfig::default(),
        ));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            let mut config = Config::new("127.0.0.1:0".parse().expect("addr"));
            config.limits.shutdown_grace = Duration::from_millis(50);
            config.limits.close_timeout = Duration::from_millis(200);
            let auth = Rc::new(TicketAuthorizer::new(Arc::clone(&service)));
            let mut relay = Relay::bind(&config, auth).expect("bind");
            relay.add_rest_handler(Rc::new(TicketRest::new(service)));
            // /stats is for admin-token holders.
            let admin = fastpubsub_relay::dashboard::access::AdminAccess::with_token(ADMIN, false)
                .expect("admin token");
            relay.set_admin_gate(Rc::new(admin));
            addr_tx.send(relay.local_addr()).expect("send addr");
            let ex = Rc::new(smol::LocalExecutor::new());
            let shutdown = async move {
                let _ = stop_rx.recv().await;
            };
            smol::block_on(ex.run(relay.run(ex.clone(), shutdown))).expect("relay ran");
        });
        let addr = addr_rx.recv_timeout(WAIT).expect("relay started");
        Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn http(&self, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let auth = auth
            .map(|a| format!("Authorization: Bearer {a}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        let status = resp
            .get(9..12)
            .and_then(|c| c.parse().ok())
            .expect("status line");
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// `POST /v1/get-token` with `right` fields added to one grant for t1.
    fn token(&self, extra: &str, ttl_secs: u64) -> String {
        let body = format!(
            r#"{{"right":{{"tenant_grants":[{{"tenant_ids":["t1"],"allow_channels_pub":["public.#"],"allow_channels_sub":["public.#"]}}]{extra},"expires_at":"{}"}}}}"#,
            rfc3339::format(now() + ttl_secs)
        );
        let (status, resp) = self.http("POST", "/v1/get-token", Some(MASTER), &body);
        assert_eq!(status, 200, "{resp}");
        let v: Value = serde_json::from_str(&resp).expect("json");
        v["token"].as_str().expect("token").to_owned()
    }

    fn stats(&self) -> Value {
        let (status, body) = self.http("GET", "/stats", Some(ADMIN), "");
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("json")
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.try_send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

type Ws = WebSocket<TcpStream>;

/// Opens `/ws` with the token in the subprotocol list (as the SDK does) and an optional
/// Origin; on refusal returns the HTTP status and body.
fn connect(
    addr: SocketAddr,
    token: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, (u16, String)> {
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .expect("request");
    let protocols = match token {
        Some(t) => format!("llps.v1,at.{t}"),
        None => "llps.v1".into(),
    };
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&protocols).expect("header"),
    );
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(o).expect("header"));
    }
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    stream.set_nodelay(true).expect("nodelay");
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("handshake failed: {e}"),
    }
}

#[derive(Debug, PartialEq)]
enum Event {
    Text(String),
    Binary(usize),
    Closed(String),
}

/// The next event, or `None` after `timeout`.
fn next_event(ws: &mut Ws, timeout: Duration) -> Option<Event> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(t)) => return Some(Event::Text(t.to_string())),
            Ok(Message::Binary(b)) => return Some(Event::Binary(b.len())),
            Ok(Message::Close(c)) => {
                return Some(Event::Closed(
                    c.map(|c| c.reason.to_string()).unwrap_or_default(),
                ));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Some(Event::Closed(String::new()));
            }
            Err(e) => return Some(Event::Closed(format!("error: {e}"))),
        }
    }
    None
}

fn expect_text(ws: &mut Ws, prefix: &str) -> String {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match next_event(ws, Duration::from_millis(500)) {
            Some(Event::Text(t)) if t.starts_with(prefix) => return t,
            Some(Event::Closed(r)) => panic!("closed ({r}) while waiting for {prefix}"),
            _ => {}
        }
    }
    panic!("no {prefix} within {WAIT:?}");
}

fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).expect("send");
}

fn publish_frame(tenant: &str, channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    for s in [tenant, channel] {
        f.extend_from_slice(&u16::try_from(s.len()).expect("short").to_be_bytes());
        f.extend_from_slice(s.as_bytes());
    }
    f.extend_from_slice(payload);
    f
}

#[test]
fn rest_lifecycle_and_handshake_refusals() {
    let r = TestRelay::start();
    let good = r.token("", 600);
    let grant = r#"[{"tenant_ids":["t1"],"allow_channels_pub":["a"]}]"#;

    // REST failures are 4xx with a body that says why.
    let body = format!(
        r#"{{"right":{{"tenant_grants":{grant},"expires_at":"{}"}}}}"#,
        rfc3339::format(now() + 600)
    );
    assert_eq!(r.http("POST", "/v1/get-token", None, &body).0, 401);
    let (s, msg) = r.http("POST", "/v1/get-token", Some("wrong"), &body);
    assert_eq!((s, msg.as_str()), (401, "wrong master token"));
    let far = format!(
        r#"{{"right":{{"tenant_grants":{grant},"expires_at":"{}"}}}}"#,
        rfc3339::format(now() + 2 * 86_400)
    );
    let (s, msg) = r.http("POST", "/v1/get-token", Some(MASTER), &far);
    assert_eq!(s, 400);
    assert!(
        msg.contains("right.expires_at") && msg.contains("24 h"),
        "{msg}"
    );
    let bad_pat = body.replace(r#"["a"]"#, r#"["a.#.b"]"#);
    let (s, msg) = r.http("POST", "/v1/get-token", Some(MASTER), &bad_pat);
    assert_eq!(s, 400);
    assert!(msg.contains("allow_channels_pub: invalid pattern"), "{msg}");
    let (s, msg) = r.http("POST", "/v1/get-token", Some(MASTER), "{not json");
    assert_eq!(s, 400);
    assert!(msg.contains("not valid JSON"), "{msg}");
    assert_eq!(r.http("GET", "/v1/get-token", Some(MASTER), "").0, 405);

    // Handshakes: missing, forged, wrong key → 401 with a reason; good → 101.
    let (s, why) = connect(r.addr, None, None).expect_err("refused");
    assert_eq!(s, 401);
    assert!(why.contains("missing access token"), "{why}");
    let mut forged = good.clone().into_bytes();
    let i = forged.len() / 2;
    forged[i] = if forged[i] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).expect("ascii");
    let (s, _) = connect(r.addr, Some(&forged), None).expect_err("refused");
    assert_eq!(s, 401);
    let other_overlay = {
        let req = fastpubsub_relay::tickets::request::IssueRequest {
            grants: vec![fastpubsub_relay::tickets::request::GrantRequest {
                tenants: vec!["t1".into()],
                publish: vec!["public.#".into()],
                subscribe: vec!["public.#".into()],
            }],
            ip_masks: vec![],
            origins: vec![],
            protocols: fastpubsub_core::ticket::Protocols::ALL,
            ingress_kb_per_sec: None,
            egress_kb_per_sec: None,
            expires_at: now() + 600,
            created_by: None,
        };
        fastpubsub_relay::tickets::request::sign(
            &req,
            [1; 16],
            now(),
            (8, 8),
            &SigningKey::from_bytes(&[12; 32]),
        )
        .expect("signed")
    };
    let (s, why) = connect(r.addr, Some(&other_overlay), None).expect_err("refused");
    assert_eq!(s, 401);
    assert!(why.contains("signature"), "{why}");

    // Grants on a live connection.
    let mut ws = connect(r.addr, Some(&good), None).expect("admitted");
    send(&mut ws, "SUB:t1:public.#");
    expect_text(&mut ws, "OK:SUB:t1:public.#");
    send(&mut ws, "SUB:t1:private.#");
    assert_eq!(
        expect_text(&mut ws, "ERR:"),
        "ERR:permission_denied:SUB:t1:private.#"
    );
    send(&mut ws, "SUB:t2:public.#");
    assert_eq!(
        expect_text(&mut ws, "ERR:"),
        "ERR:permission_denied:SUB:t2:public.#"
    );
    ws.send(Message::binary(publish_frame("t1", "private.x", b"no")))
        .expect("send");
    assert_eq!(
        expect_text(&mut ws, "ERR:"),
        "ERR:permission_denied:PUB:t1:private.x"
    );
    ws.send(Message::binary(publish_frame("t1", "public.x", b"yes")))
        .expect("send");
    let deadline = Instant::now() + WAIT;
    let mut delivered = false;
    while !delivered && Instant::now() < deadline {
        match next_event(&mut ws, Duration::from_millis(300)) {
            Some(Event::Binary(_)) => delivered = true,
            Some(Event::Text(t)) => panic!("unexpected {t}"),
            Some(Event::Closed(r)) => panic!("closed: {r}"),
            None => {}
        }
    }
    assert!(delivered, "own publish delivered to own subscription");
}

#[test]
fn revoke_closes_a_live_connection() {
    let r = TestRelay::start();
    let token = r.token("", 600);
    let mut ws = connect(r.addr, Some(&token), None).expect("admitted");
    send(&mut ws, "SUB:t1:public.#");
    expect_text(&mut ws, "OK:SUB:");
    let started = Instant::now();
    let (s, msg) = r.http(
        "DELETE",
        "/v1/revoke-token",
        Some(MASTER),
        &format!(r#"{{"token":"{token}"}}"#),
    );
    assert_eq!(s, 200, "{msg}");
    let mut saw_err = None;
    let closed = loop {
        match next_event(&mut ws, WAIT) {
            Some(Event::Text(t)) if t.starts_with("ERR:access_ended") => saw_err = Some(t),
            Some(Event::Closed(reason)) => break reason,
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("not closed within {WAIT:?} after revoke"),
        }
    };
    let took = started.elapsed();
    println!("revoked connection closed after {took:?} (close reason {closed:?})");
    let err = saw_err.expect("ERR line before close");
    assert!(err.contains("revoked"), "{err}");
    assert!(closed.contains("access ended"), "{closed}");
    let (s, why) = connect(r.addr, Some(&token), None).expect_err("refused now");
    assert_eq!((s, why.as_str()), (401, "ticket was revoked"));
    assert_eq!(r.stats()["access_ended_closed"], 1);
}

#[test]
fn refresh_keeps_a_connection_alive_past_its_original_expiry() {
    let r = TestRelay::start();
    let refreshed = r.token("", 2);
    let control = r.token("", 2);
    let mut a = connect(r.addr, Some(&refreshed), None).expect("admitted");
    let mut b = connect(r.addr, Some(&control), None).expect("admitted");
    let id = refreshed
        .trim_start_matches("AT_")
        .split('_')
        .next()
        .expect("id");
    let new_exp = rfc3339::format(now() + 120);
    let body = format!(r#"{{"token_id":"{id}","expires_at":"{new_exp}"}}"#);
    let (s, msg) = r.http("PUT", "/v1/refresh-token", Some(MASTER), &body);
    assert_eq!(s, 200, "{msg}");
    let v: Value = serde_json::from_str(&msg).expect("json");
    assert_eq!(v["new_expires_at"].as_str(), Some(new_exp.as_str()));

    // The control connection ends at the original expiry ...
    let mut ended = None;
    let closed = loop {
        match next_event(&mut b, WAIT) {
            Some(Event::Text(t)) if t.starts_with("ERR:access_ended") => ended = Some(t),
            Some(Event::Closed(reason)) => break reason,
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("control connection not closed within {WAIT:?}"),
        }
    };
    let ended = ended.expect("ERR line");
    assert!(ended.contains("expired"), "{ended}");
    assert!(closed.contains("access ended"), "{closed}");
    // ... and the refreshed one, past that same expiry, still answers.
    send(&mut a, "PING");
    assert_eq!(next_event(&mut a, WAIT), Some(Event::Text("PONG".into())));
    assert!(
        connect(r.addr, Some(&refreshed), None).is_ok(),
        "new handshakes accepted too"
    );
    assert_eq!(
        connect(r.addr, Some(&control), None).err().map(|e| e.0),
        Some(401)
    );
}

#[test]
fn ip_mask_and_origin_checks() {
    let r = TestRelay::start();
    let elsewhere = r.token(r#","allow_ip_masks":["10.0.0.0/8","2001:db8::/32"]"#, 600);
    let (s, why) = connect(r.addr, Some(&elsewhere), None).expect_err("refused");
    assert_eq!(s, 403);
    assert!(why.contains("IP address"), "{why}");
    let local = r.token(r#","allow_ip_masks":["10.0.0.0/8","127.0.0.0/8"]"#, 600);
    assert!(connect(r.addr, Some(&local), None).is_ok());

    let browser = r.token(r#","allowed_ws_origin":["https://app.example"]"#, 600);
    assert!(connect(r.addr, Some(&browser), Some("https://app.example")).is_ok());
    for origin in [Some("https://evil.example"), None] {
        let (s, why) = connect(r.addr, Some(&browser), origin).expect_err("refused");
        assert_eq!(s, 403, "{origin:?}");
        assert!(why.contains("Origin"), "{why}");
    }
    let wt_only = r.token(r#","allow_protocols":["webtransport"]"#, 600);
    let (s, why) = connect(r.addr, Some(&wt_only), None).expect_err("refused");
    assert_eq!(s, 403);
    assert!(why.contains("protocol"), "{why}");
}

#[test]
fn ingress_and_egress_rate_limits() {
    let r = TestRelay::start();
    // Ingress: 8 KB/s; three 4000-byte publishes in a row exceed the bucket.
    let slow_pub = r.token(r#","ingress_kb_per_sec":8"#, 600);
    let mut p = connect(r.addr, Some(&slow_pub), None).expect("admitted");
    for _ in 0..3 {
        p.send(Message::binary(publish_frame(
            "t1",
            "public.rate",
            &[7u8; 4000],
        )))
        .expect("send");
    }
    let err = expect_text(&mut p, "ERR:");
    assert!(
        err.starts_with("ERR:rate_limited:PUB:t1:public.rate"),
        "{err}"
    );

    // Egress: a subscriber at 8 KB/s gets a burst of 12 × 4000 bytes; the excess is dropped
    // and counted.
    let slow_sub = r.token(r#","egress_kb_per_sec":8"#, 600);
    let fast_pub = r.token(r#","ingress_kb_per_sec":16384"#, 600);
    let mut s = connect(r.addr, Some(&slow_sub), None).expect("admitted");
    send(&mut s, "SUB:t1:public.flood");
    expect_text(&mut s, "OK:SUB:");
    let mut f = connect(r.addr, Some(&fast_pub), None).expect("admitted");
    for _ in 0..12 {
        f.send(Message::binary(publish_frame(
            "t1",
            "public.flood",
            &[1u8; 4000],
        )))
        .expect("send");
    }
    send(&mut f, "PING");
    assert_eq!(
        next_event(&mut f, WAIT),
        Some(Event::Text("PONG".into())),
        "publisher not limited"
    );
    let deadline = Instant::now() + WAIT;
    let dropped = loop {
        let d = r.stats()["dropped_egress_rate"].as_u64().expect("counter");
        if d > 0 || Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        dropped > 0,
        "egress over-limit deliveries are counted as drops"
    );
    let mut got = 0;
    while let Some(Event::Binary(_)) = next_event(&mut s, Duration::from_millis(300)) {
        got += 1;
    }
    assert!((1..12).contains(&got), "subscriber got {got} of 12");
}
