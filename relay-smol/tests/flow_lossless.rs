//! Loss only where someone is slow (design principle 2, issue #11): publishers that send as
//! fast as they can make the relay slow its intake, not drop deliveries to subscribers that
//! read; a subscriber that does not read loses messages and is closed, and nobody else
//! notices.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use fastpubsub_relay::limits::Limits;

/// Publishers, messages each, payload bytes, readers.
const PUBLISHERS: usize = 8;
const MESSAGES: usize = 2000;
const PAYLOAD: usize = 1024;
const READERS: usize = 10;
/// Bound of the whole exchange (a debug relay on a loaded 2-core machine).
const LIMIT: Duration = Duration::from_secs(120);

/// A publish frame (v1) whose payload starts with the publisher and its sequence number.
fn publish(publisher: usize, seq: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + 2 + 2 + 8 + PAYLOAD);
    for s in ["t1", "flow.x"] {
        p.extend_from_slice(&(s.len() as u16).to_be_bytes());
        p.extend_from_slice(s.as_bytes());
    }
    let mut payload = vec![b'x'; PAYLOAD];
    payload[..4].copy_from_slice(&(publisher as u32).to_be_bytes());
    payload[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
    p.extend_from_slice(&payload);
    client_frame(true, 0x2, &p)
}

/// Reads deliveries as fast as it can until every publisher's messages arrived (or the
/// limit); checks each publisher's messages arrive once and in order. Returns how many
/// arrived per publisher.
fn read_all(mut ws: RawWs, deadline: Instant) -> Vec<usize> {
    let mut next = vec![0usize; PUBLISHERS];
    let mut buf = std::mem::take(&mut ws.buf);
    let mut chunk = vec![0u8; 256 * 1024];
    let mut total = 0;
    ws.stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while total < PUBLISHERS * MESSAGES && Instant::now() < deadline {
        // Parse every complete frame in `buf`.
        let mut pos = 0;
        while buf.len() - pos >= 4 {
            let b = &buf[pos..];
            let (hlen, len) = match b[1] & 0x7f {
                126 => (4, usize::from(u16::from_be_bytes([b[2], b[3]]))),
                127 => panic!("no frame here is over 64 KiB"),
                n => (2, usize::from(n)),
            };
            if b.len() < hlen + len {
                break;
            }
            assert_eq!(b[0], 0x82, "only deliveries expected");
            // 0x01 | str16 "t1" | str16 "flow.x" | u32 len | payload | ...
            let f = &b[hlen..hlen + len];
            let off = 1 + 2 + 2 + 2 + 6 + 4;
            let publisher = u32::from_be_bytes(f[off..off + 4].try_into().unwrap()) as usize;
            let seq = u32::from_be_bytes(f[off + 4..off + 8].try_into().unwrap()) as usize;
            assert_eq!(
                seq, next[publisher],
                "publisher {publisher}: message {seq} arrived, {} expected (lost or reordered)",
                next[publisher]
            );
            next[publisher] += 1;
            total += 1;
            pos += hlen + len;
        }
        buf.drain(..pos);
        match ws.stream.read(&mut chunk) {
            Ok(0) => panic!("the relay closed a subscriber that reads"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reader: {e}"),
        }
    }
    next
}

fn subscriber(addr: SocketAddr) -> RawWs {
    let mut ws = RawWs::connect(addr);
    ws.send_frame(true, 0x1, b"SUB:t1:flow.#");
    assert_eq!(ws.read_text(), "OK:SUB:t1:flow.#");
    ws
}

#[test]
fn unpaced_publishers_lose_nothing_for_readers_while_a_non_reader_is_closed() {
    let limits = Limits {
        slow_consumer_grace: Duration::from_millis(500),
        // Long enough for the test to read the stuck one's ERR after its close.
        close_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let relay = TestRelay::start(limits);
    let deadline = Instant::now() + LIMIT;

    // Subscribes, then never reads (until the end).
    let mut stuck = subscriber(relay.addr);
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let ws = subscriber(relay.addr);
            std::thread::spawn(move || read_all(ws, deadline))
        })
        .collect();
    // Every publisher writes all its messages as fast as the relay takes them, then asks for
    // a PONG (so it knows the relay has handled them all).
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let mut ws = RawWs::connect(relay.addr);
            std::thread::spawn(move || {
                let mut batch = Vec::new();
                for seq in 0..MESSAGES {
                    batch.extend(publish(p, seq));
                    if batch.len() >= 64 * 1024 || seq + 1 == MESSAGES {
                        ws.stream.write_all(&batch).unwrap();
                        batch.clear();
                    }
                }
                ws.send_frame(true, 0x1, b"PING");
                ws.stream.set_read_timeout(Some(LIMIT)).unwrap();
                assert_eq!(ws.read_text(), "PONG");
            })
        })
        .collect();
    for p in publishers {
        p.join().expect("publisher");
    }
    for (i, r) in readers.into_iter().enumerate() {
        let got = r.join().expect("reader");
        assert_eq!(
            got,
            vec![MESSAGES; PUBLISHERS],
            "reader {i} must get every message of every publisher"
        );
    }
    let stats = relay.wait_stats("the non-reader to be closed", |s| {
        s["slow_consumers_closed"] == 1
    });
    // Only the non-reader lost messages (it is unsubscribed once closed).
    let sent = (PUBLISHERS * MESSAGES) as u64;
    let dropped = stats["dropped_queue_full"].as_u64().unwrap();
    let to_stuck = stats["delivered"].as_u64().unwrap() - sent * READERS as u64;
    assert!(dropped > 0, "the non-reader lost messages: {stats}");
    assert!(to_stuck + dropped <= sent, "{stats}");
    // The relay fell behind (eight publishers, read faster than ten queues are written) and
    // paused its intake instead of dropping: nothing was dropped on a socket that took bytes.
    assert!(stats["intake_pauses"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["dropped_relay_behind"], 0, "{stats}");

    // The non-reader reads again: what it had, then ERR:slow_consumer and a close.
    stuck.stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut saw_err = false;
    loop {
        match stuck.read_frame() {
            Some((0x2, _)) => assert!(!saw_err, "no deliveries after the ERR"),
            Some((0x1, text)) => {
                let text = String::from_utf8(text).unwrap();
                assert!(text.starts_with("ERR:slow_consumer:"), "{text}");
                saw_err = true;
            }
            Some((0x8, payload)) => {
                assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
                break;
            }
            Some((op, _)) => panic!("unexpected opcode {op}"),
            None => panic!("connection ended without a close frame"),
        }
    }
    assert!(saw_err, "the non-reader was told why it was closed");
}
