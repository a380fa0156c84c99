//! The official SDK's edge discovery against a three-relay mesh: the bootstrap document is
//! one relay's `GET /v1/edges` (built from the mesh's announcements), and the SDK's
//! nearest-edge selection (parallel `GET /ping`) must pick the relay with the lowest ping.
//! Each relay's edge port is reached through a TCP proxy that delays every chunk by a
//! different amount (0, 100 and 200 ms), and each relay announces the proxy as its public
//! host.
//!
//! `cargo test --locked --features discovery` (in `interop/rust-sdk`).
#![cfg(feature = "discovery")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::{Relay, WAIT, mesh_certs};
use fastpubsub_sdk::FastPubSubSession;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tokio::time::sleep(delay).await;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// A TCP proxy on 127.0.0.1 that delays every chunk, both ways, by `delay`; its target is
/// set once the relay behind it is up.
async fn delay_proxy(delay: Duration) -> (u16, Arc<OnceLock<SocketAddr>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let target: Arc<OnceLock<SocketAddr>> = Arc::new(OnceLock::new());
    let t = target.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Some(to) = t.get().copied() else { continue };
            tokio::spawn(async move {
                let Ok(upstream) = TcpStream::connect(to).await else { return };
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                let up = tokio::spawn(pipe(cr, uw, delay));
                let down = tokio::spawn(pipe(ur, cw, delay));
                let _ = (up.await, down.await);
            });
        }
    });
    (port, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_picks_the_relay_with_the_lowest_ping() {
    let certs = mesh_certs(&["a", "b", "c", "localhost"]);
    let p = |f: &str| certs.join(f).to_str().unwrap().to_string();
    let (ca, tls_pem, tls_key) = (p("ca/ca.pem"), p("localhost.pem"), p("localhost.key"));
    let mut relays: Vec<Relay> = Vec::new();
    let mut proxies = Vec::new();
    for (name, delay_ms) in [("a", 200u64), ("b", 100), ("c", 0)] {
        let (port, target) = delay_proxy(Duration::from_millis(delay_ms)).await;
        let host = format!("localhost:{port}");
        let (pem, key) = (p(&format!("{name}.pem")), p(&format!("{name}.key")));
        let seed = relays.first().map(|a| format!("a@{}", a.mesh.unwrap()));
        let mut args = vec![
            "--insecure-no-auth", "--listen", "127.0.0.1:0", "--tls-cert", &tls_pem, "--tls-key", &tls_key,
            "--public-host", &host, "--mesh-listen", "127.0.0.1:0", "--name", name, "--mesh-cert", &pem,
            "--mesh-key", &key, "--mesh-ca", &ca, "--announce-interval-ms", "200",
        ];
        if let Some(s) = &seed {
            args.extend(["--peer", s.as_str()]);
        }
        let relay = Relay::start(&args);
        target.set(relay.ws).unwrap();
        proxies.push(port);
        relays.push(relay);
    }
    // The bootstrap document of relay a lists all three once the announcements arrived.
    let bootstrap = format!("https://localhost:{}/v1/edges", relays[0].ws.port());
    let mut session = FastPubSubSession::new("lab")
        .with_ca_file(ca.clone())
        .with_bootstrap_url(bootstrap);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(c) = session.discover_edges().await {
            if c.len() == 3 {
                break;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the mesh's edges never all appeared");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let bases: Vec<String> = session.edge_candidates().iter().map(|c| c.api_base.clone()).collect();
    for port in &proxies {
        assert!(bases.contains(&format!("https://localhost:{port}")), "{bases:?}");
    }
    for _ in 0..3 {
        let selected = session.select_nearest_edge().await.unwrap();
        assert_eq!(
            selected.candidate.api_base,
            format!("https://localhost:{}", proxies[2]),
            "the relay behind the 0 ms proxy (ping {:?})",
            selected.ping
        );
    }
}
