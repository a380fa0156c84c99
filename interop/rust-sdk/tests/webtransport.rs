//! The official Rust SDK (`fastpubsub-sdk` 0.3.4, feature `webtransport`) against real relay
//! processes over WebTransport, and against the same relays over WebSocket.
//!
//! `cargo test --locked --features webtransport` (in `interop/rust-sdk`); the relay binary is
//! `RELAY_BIN`, else the workspace's `target/debug/fastpubsub-relay`.
#![cfg(feature = "webtransport")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Relay, WAIT, mesh_certs, temp_dir};
use fastpubsub_sdk::client::{FastPubSub, create_web_socket, create_web_transport};
use fastpubsub_sdk::metadata::SdkMessage;
use fastpubsub_sdk::transport::{SubscribeOptions, WebSocketTransport, WebTransport, WtSubDelivery};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

fn insecure() {
    // Every test sets the same value (the relays use generated lab certificates).
    std::env::set_var("FASTPUBSUB_WT_INSECURE", "1");
}

async fn wt(relay: &Relay, token: &str) -> FastPubSub<WebTransport> {
    insecure();
    create_web_transport("lab", token)
        .endpoint(relay.wt_url())
        .api_base(relay.api_base())
        .build()
        .await
        .expect("WebTransport client")
}

async fn ws(relay: &Relay, token: &str) -> FastPubSub<WebSocketTransport> {
    create_web_socket("lab", token)
        .endpoint(relay.ws_url())
        .api_base(relay.api_base())
        .build()
        .await
        .expect("WebSocket client")
}

fn opts(wt_delivery: Option<WtSubDelivery>) -> SubscribeOptions {
    SubscribeOptions {
        queue_capacity: 4096,
        wt_delivery,
    }
}

async fn next(rx: &mut Receiver<SdkMessage>) -> SdkMessage {
    timeout(WAIT, rx.recv())
        .await
        .expect("a delivery within the wait")
        .expect("subscription queue open")
}

/// Publishes `probe` messages on `channel` until `rx` gets one (a WebSocket `subscribe()`
/// returns before the relay confirms; this waits for the subscription to be live).
async fn until_live<T: fastpubsub_sdk::transport::Transport>(
    publisher: &mut FastPubSub<T>,
    tenant: &str,
    channel: &str,
    rx: &mut Receiver<SdkMessage>,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        publisher.publish(tenant, channel, b"probe").await.unwrap();
        if let Ok(Some(m)) = timeout(Duration::from_millis(100), rx.recv()).await {
            assert_eq!(&m.payload[..], b"probe");
            // Drain probes still in flight.
            while let Ok(Some(_)) = timeout(Duration::from_millis(200), rx.recv()).await {}
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "subscription never went live");
    }
}

fn ticket_relay(name: &str) -> Relay {
    let dir = temp_dir(name);
    Relay::start(&[
        "--listen",
        "127.0.0.1:0",
        "--wt-listen",
        "127.0.0.1:0",
        "--state-dir",
        dir.to_str().unwrap(),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_subscribe_publish_matched_pattern_and_bogus_ticket() {
    let relay = ticket_relay("basic");
    let ticket = relay.dev_ticket();
    let mut c = wt(&relay, &ticket).await;
    let mut all = c.subscribe("dev", "public.#", &opts(None)).await.unwrap();
    let mut one = c.subscribe("dev", "public.*.x", &opts(None)).await.unwrap();
    c.publish("dev", "public.a.x", b"hello wt").await.unwrap();
    let m = next(&mut all).await;
    assert_eq!((m.tenant.as_str(), m.channel.as_str(), &m.payload[..]), ("dev", "public.a.x", &b"hello wt"[..]));
    assert_eq!(m.matched_pattern, "public.#");
    let m = next(&mut one).await;
    assert_eq!(m.matched_pattern, "public.*.x");

    // A bogus ticket is refused at the CONNECT (the SDK only sees "rejected").
    insecure();
    let err = create_web_transport("lab", "AT_00_00")
        .endpoint(relay.wt_url())
        .build()
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("rejected"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_size_limits_both_ways() {
    let relay = ticket_relay("size");
    let t = relay.dev_ticket();
    let mut wt_client = wt(&relay, &t).await;
    let mut ws_client = ws(&relay, &t).await;
    let (tenant, ch, pat) = ("dev", "public.big", "public.#");
    let mut wt_rx = wt_client.subscribe(tenant, pat, &opts(None)).await.unwrap();
    let mut ws_rx = ws_client.subscribe(tenant, pat, &opts(None)).await.unwrap();
    until_live(&mut wt_client, tenant, "public.probe", &mut ws_rx).await;
    while let Ok(Some(_)) = timeout(Duration::from_millis(300), wt_rx.recv()).await {}

    // Publish over WT: the frame (a broadcast goes as v1: 4 + |t| + |ch| + payload) may be
    // 65,536 bytes.
    let max_pub = 65_536 - 4 - tenant.len() - ch.len();
    wt_client.publish(tenant, ch, &vec![1u8; max_pub]).await.unwrap();
    assert_eq!(next(&mut ws_rx).await.payload.len(), max_pub, "delivered over WebSocket");
    let err = wt_client.publish(tenant, ch, &vec![1u8; max_pub + 1]).await.err().expect("refused");
    assert!(err.to_string().contains("too large"), "{err}");

    // Deliver over WT: the deliver frame may be 65,536 bytes; one byte more is skipped
    // for the WT session (counted) and still delivered over WebSocket.
    while let Ok(Some(_)) = timeout(Duration::from_millis(300), wt_rx.recv()).await {}
    let max_del = 65_523 - tenant.len() - ch.len() - pat.len();
    ws_client.publish(tenant, ch, &vec![2u8; max_del]).await.unwrap();
    assert_eq!(next(&mut wt_rx).await.payload.len(), max_del);
    assert_eq!(next(&mut ws_rx).await.payload.len(), max_del);
    ws_client.publish(tenant, ch, &vec![3u8; max_del + 1]).await.unwrap();
    assert_eq!(next(&mut ws_rx).await.payload.len(), max_del + 1);
    ws_client.publish(tenant, ch, b"after").await.unwrap();
    assert_eq!(&next(&mut wt_rx).await.payload[..], b"after", "the oversize one was skipped");
    // Skipped for the WT subscriber: the largest WT publish (its deliver frame is larger than
    // the publish frame) and the one-byte-too-large WebSocket publish.
    assert_eq!(relay.stat("dropped_wt_oversize"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uni_lines_and_three_subscribers_lose_nothing() {
    let relay = ticket_relay("lines");
    let t = relay.dev_ticket();
    let mut subs = Vec::new();
    let mut rxs = Vec::new();
    for i in 0..3u8 {
        let mut c = wt(&relay, &t).await;
        let d = match i {
            0 => None,
            1 => Some(WtSubDelivery::Uni { stream: 0, max_kb_per_sec: None }),
            _ => Some(WtSubDelivery::Uni { stream: 7, max_kb_per_sec: Some(0) }),
        };
        rxs.push(c.subscribe("dev", "public.load.#", &opts(d)).await.unwrap());
        subs.push(c);
    }
    let mut p = wt(&relay, &t).await;
    let payload = vec![0x5au8; 1024];
    for n in 0u32..1000 {
        let mut m = payload.clone();
        m[..4].copy_from_slice(&n.to_be_bytes());
        p.publish("dev", "public.load.x", &m).await.unwrap();
    }
    for (i, rx) in rxs.iter_mut().enumerate() {
        for n in 0u32..1000 {
            let m = next(rx).await;
            assert_eq!(m.payload.len(), 1024);
            // In order per subscriber: one stream per subscription target.
            let got = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
            assert_eq!(
                got,
                n,
                "subscriber {i}; relay dropped_queue_full {} dropped_egress_rate {}",
                relay.stat("dropped_queue_full"),
                relay.stat("dropped_egress_rate")
            );
        }
    }
    assert_eq!(relay.stat("dropped_queue_full"), 0);
    assert_eq!(relay.stat("dropped_egress_rate"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webtransport_to_websocket_and_back() {
    let relay = ticket_relay("cross");
    let t = relay.dev_ticket();
    let mut a = wt(&relay, &t).await;
    let mut b = ws(&relay, &t).await;
    let mut a_rx = a.subscribe("dev", "public.from-ws", &opts(None)).await.unwrap();
    let mut b_rx = b.subscribe("dev", "public.from-wt", &opts(None)).await.unwrap();
    until_live(&mut a, "dev", "public.from-wt", &mut b_rx).await;
    for i in 0..20u8 {
        a.publish("dev", "public.from-wt", &[i]).await.unwrap();
        b.publish("dev", "public.from-ws", &[i]).await.unwrap();
    }
    for i in 0..20u8 {
        assert_eq!(&next(&mut b_rx).await.payload[..], &[i]);
        assert_eq!(&next(&mut a_rx).await.payload[..], &[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_two_relays_of_a_mesh() {
    let certs = mesh_certs(&["a", "b"]);
    let p = |f: &str| certs.join(f).to_str().unwrap().to_string();
    let (ca, a_pem, a_key, b_pem, b_key) = (p("ca/ca.pem"), p("a.pem"), p("a.key"), p("b.pem"), p("b.key"));
    let common = ["--insecure-no-auth", "--listen", "127.0.0.1:0", "--wt-listen", "127.0.0.1:0", "--mesh-listen", "127.0.0.1:0", "--mesh-ca"];
    let mut args_a: Vec<&str> = common.to_vec();
    args_a.extend([ca.as_str(), "--name", "a", "--mesh-cert", &a_pem, "--mesh-key", &a_key]);
    let relay_a = Relay::start(&args_a);
    let seed = format!("a@{}", relay_a.mesh.unwrap());
    let mut args_b: Vec<&str> = common.to_vec();
    args_b.extend([ca.as_str(), "--name", "b", "--mesh-cert", &b_pem, "--mesh-key", &b_key, "--peer", &seed]);
    let relay_b = Relay::start(&args_b);

    // WebTransport subscriber on B, WebTransport and WebSocket publishers on A.
    let mut sub = wt(&relay_b, "AT_lab").await;
    let mut rx = sub.subscribe("t", "news.#", &opts(None)).await.unwrap();
    let mut pub_wt = wt(&relay_a, "AT_lab").await;
    until_live(&mut pub_wt, "t", "news.probe", &mut rx).await;
    for i in 0..100u8 {
        pub_wt.publish("t", "news.wt", &[i]).await.unwrap();
    }
    // The mesh sends each message on its own QUIC stream: every one arrives, not
    // necessarily in order.
    let mut got = Vec::new();
    for _ in 0..100u8 {
        let m = next(&mut rx).await;
        assert_eq!(m.channel, "news.wt");
        got.push(m.payload[0]);
    }
    got.sort_unstable();
    assert_eq!(got, (0..100u8).collect::<Vec<_>>());
    // And back: a WebSocket subscriber on A gets what a WebTransport client on B publishes.
    let mut ws_a = ws(&relay_a, "AT_lab").await;
    let mut ws_rx = ws_a.subscribe("t", "back.#", &opts(None)).await.unwrap();
    until_live(&mut sub, "t", "back.probe", &mut ws_rx).await;
    sub.publish("t", "back.x", b"from b").await.unwrap();
    assert_eq!(&next(&mut ws_rx).await.payload[..], b"from b");
}
