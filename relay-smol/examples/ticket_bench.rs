//! Ticket benchmark: verifications per second (cold = Ed25519 + decode, cached = the
//! relay's verified-ticket cache), the per-publish grant check, and full WebSocket
//! handshake time against a relay on 127.0.0.1.
//!
//! `cargo run --release -p fastpubsub-relay --example ticket_bench [-- <scale>]`
//! (scale 1 by default; every loop is bounded by count).
// A benchmark measures time.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use fastpubsub_core::ticket::{self, Claims, Protocols, TicketBuf};
use fastpubsub_relay::auth::{Authorizer, HandshakeRequest};
use fastpubsub_relay::config::Config;
use fastpubsub_relay::tickets::edge::{TicketAuthorizer, TicketRest};
use fastpubsub_relay::tickets::request::{self, GrantRequest, IssueRequest};
use fastpubsub_relay::tickets::{TicketConfig, TicketService};
use fastpubsub_relay::ws::Relay;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mint(key: &SigningKey, n: u16) -> String {
    let mut id = [0u8; 16];
    id[..2].copy_from_slice(&n.to_be_bytes());
    let req = IssueRequest {
        grants: vec![GrantRequest {
            tenants: vec!["tenant_1".into()],
            publish: vec!["public.#".into(), "rooms.*.chat".into()],
            subscribe: vec!["public.#".into()],
        }],
        ip_masks: vec![],
        origins: vec![],
        protocols: Protocols::ALL,
        ingress_kb_per_sec: Some(512),
        egress_kb_per_sec: Some(2048),
        expires_at: now() + 3600,
        created_by: None,
    };
    request::sign(&req, id, now(), (1024, 4096), key).unwrap_or_else(|e| panic!("{}", e.message))
}

fn rate(label: &str, n: u64, took: Duration) {
    let per = took.as_secs_f64() / n as f64;
    println!(
        "{label:<44} {:>12.0} /s   {:>9.2} µs each   ({n} in {took:.2?})",
        1.0 / per,
        per * 1e6
    );
}

fn handshake(addr: SocketAddr, token: &str) -> Duration {
    let started = Instant::now();
    let mut req = format!("ws://{addr}/ws")
        .into_client_request()
        .unwrap_or_else(|e| panic!("{e}"));
    let v = HeaderValue::from_str(&format!("llps.v1,at.{token}")).unwrap_or_else(|e| panic!("{e}"));
    req.headers_mut().insert("Sec-WebSocket-Protocol", v);
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
    let _ = stream.set_nodelay(true);
    let (ws, _) =
        tungstenite::client::client(req, stream).unwrap_or_else(|e| panic!("handshake: {e}"));
    let took = started.elapsed();
    drop(ws);
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn main() {
    let scale: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .clamp(1, 100);
    let key = SigningKey::from_bytes(&[42; 32]);
    let pk = key.verifying_key();
    let token = mint(&key, 1);
    println!("token length: {} bytes", token.len());

    // Cold: full signature check + claims decode, every time.
    let n = 2_000 * scale;
    let mut buf = TicketBuf::new();
    let t = Instant::now();
    for _ in 0..n {
        let c = ticket::verify(std::hint::black_box(&token), &pk, &mut buf, now());
        assert!(c.is_ok());
    }
    rate("verify cold (Ed25519 + decode)", n, t.elapsed());

    // Cached: the relay's admit path on a token seen before (hash, cache, status, access).
    let svc = Arc::new(TicketService::issuer(
        key.clone(),
        "bench-master-token",
        TicketConfig::default(),
    ));
    let n = 200_000 * scale;
    let t0 = now();
    let t = Instant::now();
    for _ in 0..n {
        let ok = svc.admit(
            Some(std::hint::black_box(&token)),
            LOCAL,
            None,
            Protocols::WEBSOCKET,
            t0,
        );
        assert!(ok.is_ok());
    }
    rate("admit cached (valid token)", n, t.elapsed());

    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap_or_default();
    let t = Instant::now();
    for _ in 0..n {
        let d = svc.admit(
            Some(std::hint::black_box(&forged)),
            LOCAL,
            None,
            Protocols::WEBSOCKET,
            t0,
        );
        assert!(d.is_err());
    }
    rate("admit cached (forged token, refused)", n, t.elapsed());
    let st = svc.stats();
    println!(
        "  (service counters: {} cold verifications, {} cache hits)",
        st.verified_cold, st.cache_hits
    );

    // Per-command grant checks as the edge calls them.
    let auth = TicketAuthorizer::new(Arc::clone(&svc));
    let access = auth
        .authorize(&HandshakeRequest {
            token: Some(&token),
            peer: LOCAL,
            origin: None,
            now: SystemTime::now(),
            protocol: fastpubsub_relay::auth::Protocol::WebSocket,
        })
        .unwrap_or_else(|e| panic!("{}", e.reason));
    let n = 1_000_000 * scale;
    let t = Instant::now();
    for _ in 0..n {
        assert!(access.may_publish(
            std::hint::black_box("tenant_1"),
            std::hint::black_box("rooms.r1.chat")
        ));
    }
    rate("may_publish (owned grants + pattern match)", n, t.elapsed());
    let t = Instant::now();
    for _ in 0..n {
        assert!(
            access
                .check(SystemTime::UNIX_EPOCH + Duration::from_secs(t0))
                .is_ok()
        );
    }
    rate("live check (expiry + revocation)", n, t.elapsed());
    let (id, _) = ticket::split_token(&token).unwrap_or(("", ""));
    let mut raw = [0u8; 2048];
    let n = 200_000 * scale;
    let t = Instant::now();
    for _ in 0..n {
        let c = ticket::decode_token_id(std::hint::black_box(id), &mut raw);
        assert!(c.is_ok_and(|c| c.may_publish("tenant_1", "public.x")));
    }
    rate(
        "claims hex-decode + decode + check (no sig)",
        n,
        t.elapsed(),
    );
    let _ = Claims::decode(&[]).is_err();

    // Full handshakes against a real relay on 127.0.0.1.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let svc2 = Arc::clone(&svc);
    let relay = std::thread::spawn(move || {
        let mut config = Config::new(SocketAddr::from((LOCAL, 0)));
        config.limits.shutdown_grace = Duration::from_millis(50);
        let mut relay = Relay::bind(&config, Rc::new(TicketAuthorizer::new(Arc::clone(&svc2))))
            .unwrap_or_else(|e| panic!("{e}"));
        relay.add_rest_handler(Rc::new(TicketRest::new(svc2)));
        let _ = addr_tx.send(relay.local_addr());
        let ex = Rc::new(smol::LocalExecutor::new());
        let stop = async move {
            let _ = stop_rx.recv().await;
        };
        let _ = smol::block_on(ex.run(relay.run(ex.clone(), stop)));
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let n = (200 * scale) as usize;
    for (label, fresh) in [
        ("handshake, cached token", false),
        ("handshake, new token each (cold verify)", true),
    ] {
        let tokens: Vec<String> = if fresh {
            (0..n)
                .map(|i| mint(&key, u16::try_from(i + 2).unwrap_or(u16::MAX)))
                .collect()
        } else {
            vec![token.clone(); n]
        };
        let mut times: Vec<Duration> = tokens.iter().map(|t| handshake(addr, t)).collect();
        times.sort();
        let total: Duration = times.iter().sum();
        println!(
            "{label:<44} median {:>8.1?}  p99 {:>8.1?}  mean {:>8.1?}  ({n} sequential)",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            total / n as u32
        );
    }
    let _ = stop_tx.try_send(());
    let _ = relay.join();
}
