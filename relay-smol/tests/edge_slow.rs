//! A subscriber that stops reading must not slow anyone else, and is eventually closed with
//! `ERR:slow_consumer`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use fastpubsub_core::frame::Mode;
use fastpubsub_relay::limits::Limits;

#[test]
fn stuck_subscriber_does_not_slow_a_fast_one_and_is_closed() {
    let limits = Limits {
        queue_bytes: 256 * 1024,
        slow_consumer_grace: Duration::from_millis(300),
        close_timeout: Duration::from_secs(20),
        ..Limits::default()
    };
    let relay = TestRelay::start(limits);

    // The stuck subscriber: a raw socket with a small receive buffer that we stop reading.
    let mut slow = RawWs::connect(relay.addr);
    slow.send_frame(true, 0x1, b"SUB:t1:feed.#");
    assert_eq!(slow.read_text(), "OK:SUB:t1:feed.#");

    let mut fast = connect(&relay);
    subscribe(&mut fast, "t1", "feed.#");
    let mut publ = connect(&relay);

    // 8 KiB messages, 32 MB in all: more than the stuck one's socket buffers and its
    // 256 KiB queue hold; the fast one reads everything, in step with the publisher (at most
    // 20 messages = 160 KiB behind, within its queue). The publisher keeps going for longer
    // than the grace.
    const N: usize = 4000;
    let payload = vec![7u8; 8192];
    let start = Instant::now();
    let mut received = 0usize;
    for i in 0..N {
        let mut p = payload.clone();
        p[..8].copy_from_slice(&(i as u64).to_be_bytes());
        publish(&mut publ, Mode::Broadcast, "t1", "feed.x", &p);
        // Read what the fast subscriber has, in step with the publisher (it keeps up).
        if i % 20 == 19 {
            barrier(&mut publ);
            while received <= i {
                let d = next_deliver(&mut fast);
                assert_eq!(
                    &d.payload[..8],
                    &(received as u64).to_be_bytes(),
                    "fast subscriber lost or reordered a message"
                );
                received += 1;
            }
        }
        if i == N / 2 {
            // Make sure the publisher keeps going past the grace period.
            while start.elapsed() < Duration::from_millis(400) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    barrier(&mut publ);
    while received < N {
        let d = next_deliver(&mut fast);
        assert_eq!(&d.payload[..8], &(received as u64).to_be_bytes());
        received += 1;
    }
    assert_eq!(received, N, "the fast subscriber got every message");

    let stats = relay.wait_stats("the slow consumer to be closed", |s| {
        s["slow_consumers_closed"] == 1
    });
    assert!(stats["dropped_queue_full"].as_u64().unwrap() > 0, "{stats}");

    // The stuck client reads again: some deliveries, then ERR:slow_consumer and a close.
    let mut saw_err = false;
    loop {
        match slow.read_frame() {
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
    assert!(saw_err);
    // The fast one is still fine.
    barrier(&mut fast);
}
