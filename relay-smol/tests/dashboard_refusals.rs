//! `fastpubsub_handshake_refusals_total{reason="malformed"|"over_capacity"}` against a real
//! relay process with `--max-connections 1`: each series moves by exactly what the test did
//! (a garbage request head, an upgrade without a key; a second WebSocket while one is open).

#![allow(clippy::disallowed_methods)]

mod mesh_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use mesh_common::{start_relay_process, wait_for};

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

const MALFORMED: &str = "fastpubsub_handshake_refusals_total{reason=\"malformed\"}";
const FULL: &str = "fastpubsub_handshake_refusals_total{reason=\"over_capacity\"}";

/// Sends `request` and returns the status code of the answer.
fn send(addr: SocketAddr, request: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn upgrade(addr: SocketAddr) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: llps.v1\r\n\r\n"
    )
}

#[test]
fn malformed_and_over_capacity_refusals_are_counted() {
    let relay = start_relay_process(&["--admin-listen", "127.0.0.1:0", "--max-connections", "1"]);
    let admin = relay.admin.expect("admin listener");
    let m0 = wait_for(admin, "/metrics", 20, |m| {
        metric(m, MALFORMED).is_some() && metric(m, FULL).is_some()
    });
    let (mal0, full0) = (metric(&m0, MALFORMED), metric(&m0, FULL));
    assert_eq!((mal0, full0), (Some(0.0), Some(0.0)), "{m0}");

    assert_eq!(send(relay.edge, "NOT HTTP AT ALL\r\n\r\n"), 400);
    let no_key = upgrade(relay.edge).replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
    assert_eq!(send(relay.edge, &no_key), 400);
    wait_for(admin, "/metrics", 10, |m| metric(m, MALFORMED) == Some(2.0));

    // One WebSocket takes the only slot; the next upgrade is refused with 503.
    let mut first = TcpStream::connect(relay.edge).expect("connect");
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    first
        .write_all(upgrade(relay.edge).as_bytes())
        .expect("write");
    let mut head = [0u8; 12];
    first.read_exact(&mut head).expect("101");
    assert_eq!(&head[9..12], b"101");
    assert_eq!(send(relay.edge, &upgrade(relay.edge)), 503);
    let m = wait_for(admin, "/metrics", 10, |m| metric(m, FULL) == Some(1.0));
    assert_eq!(metric(&m, MALFORMED), Some(2.0), "{m}");
    drop(first);
}
