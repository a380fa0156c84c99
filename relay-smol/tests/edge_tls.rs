//! `wss://` and `https://` on the same port with `--tls-cert/--tls-key` (PEM).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use common::*;
use fastpubsub_core::frame::Mode;
use fastpubsub_relay::config::{Config, TlsFiles};
use rustls::pki_types::ServerName;
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

struct Tls {
    relay: TestRelay,
    client: Arc<rustls::ClientConfig>,
    _dir: std::path::PathBuf,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

fn start(name: &str) -> Tls {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir =
        std::env::temp_dir().join(format!("fastpubsub-edge-tls-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let mut config = Config::new("127.0.0.1:0".parse().unwrap());
    config.tls = Some(TlsFiles { cert, key });
    let relay = TestRelay::start_config(config);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        relay,
        client: Arc::new(client),
        _dir: dir,
    }
}

fn tls_stream(t: &Tls) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(t.relay.addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(t.client.clone(), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn https_ping_and_wss_pubsub() {
    let t = start("pubsub");
    let mut s = tls_stream(&t);
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let (status, body) = parse_response(&resp);
    assert_eq!((status, body.trim()), (200, "pong"), "{resp}");

    let ws_connect = || {
        let url = format!("wss://localhost:{}/ws", t.relay.addr.port());
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("llps.v1, at.x"),
        );
        tungstenite::client::client(req, tls_stream(&t))
            .map_err(|e| format!("{e}"))
            .unwrap()
            .0
    };
    let mut sub = ws_connect();
    let mut publ = ws_connect();
    sub.send(Message::text("SUB:t1:secure.#")).unwrap();
    match sub.read().unwrap() {
        Message::Text(txt) => assert_eq!(txt.as_str(), "OK:SUB:t1:secure.#"),
        other => panic!("{other:?}"),
    }
    let big = vec![5u8; 60_000];
    for payload in [&b"hello"[..], &big[..]] {
        publ.send(Message::binary(publish_frame(
            Mode::Broadcast,
            "t1",
            "secure.x",
            payload,
        )))
        .unwrap();
        match sub.read().unwrap() {
            Message::Binary(b) => assert_eq!(decode_deliver(&b).payload, payload),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn plain_http_to_a_tls_port_is_refused_without_harm() {
    let t = start("plain");
    let resp = http_raw(t.relay.addr, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(!resp.contains("pong"));
    let mut s = tls_stream(&t);
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.ends_with("pong"), "{resp}");
}
