//! One connection's byte budget, its read stop and its command rate limits, against a real
//! relay: a client that floods and never reads is held to its budget and closed with a
//! reason, command floods get `ERR:rate_limited` and then a close, and others are unaffected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use fastpubsub_core::frame::Mode;
use fastpubsub_relay::limits::Limits;

/// Reads frames until the relay's Close; returns the text frames seen (skipping Pongs).
fn texts_until_close(c: &mut RawWs) -> (Vec<String>, Option<u16>) {
    let mut texts = Vec::new();
    loop {
        match c.read_frame() {
            Some((0x1, t)) => texts.push(String::from_utf8(t).unwrap()),
            Some((0x8, p)) => return (texts, p.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]))),
            Some(_) => {}
            None => return (texts, None),
        }
    }
}

#[test]
fn ws_ping_flood_from_a_non_reader_is_held_to_its_budget_and_closed() {
    // Pings unlimited here: this test is about the budget and the read stop, which must hold
    // whatever the rate limits are.
    // The flooder reads soon after its close (below), well within the close timeout, and
    // must find the reason and the Close frame. (After the timeout the relay drops the
    // socket, which resets it if the flooder's input is still unread.)
    let limits = Limits {
        slow_consumer_grace: Duration::from_millis(500),
        close_timeout: Duration::from_secs(3),
        ping_rate: fastpubsub_relay::limits::Rate {
            per_sec: 1_000_000,
            burst: 1_000_000,
        },
        ..Limits::default()
    };
    let budget = limits.queue_bytes;
    let relay = TestRelay::start(limits);
    let mut healthy = connect(&relay);
    subscribe(&mut healthy, "t", "c");
    let flooder = RawWs::connect(relay.addr);

    // 100,000 WebSocket Pings with 125-byte payloads (13 MB), written by a thread that
    // never reads. The relay must stop reading it (TCP pushes back: the writes block and
    // time out) and close it after the grace.
    let mut w = flooder.stream.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let writer = std::thread::spawn(move || {
        let frame = client_frame(true, 0x9, &[b'p'; 125]);
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 1000)
            .collect();
        let mut sent = 0usize;
        for _ in 0..100 {
            if w.write_all(&batch).is_err() {
                break;
            }
            sent += 1000;
        }
        sent
    });

    // Meanwhile the healthy client publishes to itself; it must get every message and its
    // replies, and the relay's held bytes stay within the flooder's budget plus the
    // healthy client's small share.
    let mut max_held = 0u64;
    let start = Instant::now();
    let mut i = 0u32;
    while start.elapsed() < Duration::from_secs(2) {
        publish(&mut healthy, Mode::Broadcast, "t", "c", &i.to_be_bytes());
        let d = next_deliver(&mut healthy);
        assert_eq!(d.payload, i.to_be_bytes());
        let held = relay.stats()["queue_bytes_held"].as_u64().unwrap();
        max_held = max_held.max(held);
        i += 1;
    }
    eprintln!("max held {max_held} bytes over {i} round trips");
    let stats = relay.wait_stats("the flooder to be closed", |s| {
        s["slow_consumers_closed"] == 1
    });
    // The writer may be blocked in a write that makes a little progress now and then (the
    // relay discards some input while closing): end it, as a client that saw its writes
    // stall would, and read.
    let _ = flooder.stream.shutdown(std::net::Shutdown::Write);
    let sent = writer.join().unwrap();
    assert!(stats["read_stops"].as_u64().unwrap() >= 1, "{stats}");
    // Once closing, the relay reads and discards at most 256 KiB more, then stops reading
    // until its close timeout: the writer stops.
    assert!(sent > 0 && sent < 100_000, "{sent}");
    // The pool keeps spare buffers, so the bound is the budget plus what one drained queue
    // buffer and the healthy client hold.
    assert!(
        max_held <= 2 * budget as u64 + 64 * 1024,
        "held {max_held} bytes with a budget of {budget}"
    );
    // The flooder, reading at last: Pongs, the reason and a 1008 close. It kept writing
    // after the close; the relay must not have dropped the socket on it while its unread
    // input was there (that sends a reset, which loses the reason and the Close frame).
    let mut flooder = flooder;
    let (texts, code) = texts_until_close(&mut flooder);
    eprintln!("flooder: wrote {sent} Pings, then read {texts:?} and close {code:?}");
    assert!(
        texts.len() == 1 && texts[0].starts_with("ERR:slow_consumer:this connection did not drain"),
        "{texts:?}"
    );
    assert_eq!(code, Some(1008), "{texts:?}");
    drop(flooder);
    barrier(&mut healthy);
}

#[test]
fn sub_flood_is_rate_limited_then_closed() {
    let relay = TestRelay::start(Limits::default());
    let l = Limits::default();
    let mut c = RawWs::connect(relay.addr);
    // Duplicate SUBs in batches of 50, reading the answers of each batch: the burst is
    // answered OK, then ERR:rate_limited for each, then the strikes run out and it is closed.
    let batch: Vec<u8> = (0..50)
        .flat_map(|_| client_frame(true, 0x1, b"SUB:t:dup.#"))
        .collect();
    let (mut ok, mut limited, mut last) = (0usize, 0usize, String::new());
    let mut code = None;
    'outer: for _ in 0..100 {
        c.stream.write_all(&batch).unwrap();
        for _ in 0..50 {
            match c.read_frame() {
                Some((0x1, t)) => {
                    last = String::from_utf8(t).unwrap();
                    if last == "OK:SUB:t:dup.#" {
                        ok += 1;
                    } else if last.starts_with(
                        "ERR:rate_limited:SUB:t:dup.#:more than 100 SUB/UNSUB per second",
                    ) {
                        limited += 1;
                    }
                }
                Some((0x8, p)) => {
                    code = Some(u16::from_be_bytes([p[0], p[1]]));
                    break 'outer;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(ok >= l.sub_rate.burst as usize && ok < 2000, "{ok} OKs");
    assert!(
        // The answers of the last batch are discarded by the close.
        limited >= l.strike_rate.burst as usize - 50
            && limited <= l.strike_rate.burst as usize + 50,
        "{limited} refusals"
    );
    assert!(
        last.starts_with("ERR:rate_limited:this connection kept going over"),
        "{last}"
    );
    assert_eq!(code, Some(1008));
    let s = relay.stats();
    assert_eq!(s["rate_limit_closed"], 1, "{s}");
}

#[test]
fn refused_publish_flood_goes_quiet_with_one_notice() {
    let relay = TestRelay::start(Limits::default());
    let l = Limits::default();
    let mut c = RawWs::connect(relay.addr);
    // Invalid channels (an empty segment): each one is refused.
    let n = l.refusal_reply_rate.burst as usize + 100;
    let mut wire = Vec::new();
    for _ in 0..n {
        wire.extend_from_slice(&client_frame(
            true,
            0x2,
            &publish_frame(Mode::Broadcast, "t", "a..b", b"x"),
        ));
    }
    wire.extend_from_slice(&client_frame(true, 0x1, b"PING"));
    c.stream.write_all(&wire).unwrap();
    let mut answered = 0;
    let mut notices = 0;
    loop {
        let t = c.read_text();
        if t == "PONG" {
            break;
        }
        if t.starts_with("ERR:invalid_channel:PUB:t:a..b:") {
            answered += 1;
        } else if t.starts_with("ERR:rate_limited:PUB_REFUSALS:more than 50 refused publishes") {
            notices += 1;
        } else {
            panic!("unexpected {t}");
        }
    }
    assert!(
        answered >= l.refusal_reply_rate.burst as usize && answered < n,
        "{answered}"
    );
    assert!(notices >= 1, "a notice when the answers stop");
    let s = relay.stats();
    assert!(s["refusals_unanswered"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(
        s["rate_limit_closed"], 0,
        "100 strikes are not yet abuse: {s}"
    );
}

#[test]
fn a_big_batch_is_handled_in_bounded_turns() {
    let relay = TestRelay::start(Limits::default());
    let mut other = connect(&relay);
    let mut c = RawWs::connect(relay.addr);
    // 20,000 publishes (about 560 KB) in one write, then a PING: the connection's task has
    // to yield several times (64 KiB or 1,024 frames per turn), and the other client is
    // served in between.
    let mut wire = Vec::new();
    let frame = client_frame(
        true,
        0x2,
        &publish_frame(Mode::Broadcast, "t", "nobody", b"x"),
    );
    for _ in 0..20_000 {
        wire.extend_from_slice(&frame);
    }
    wire.extend_from_slice(&client_frame(true, 0x1, b"PING"));
    c.stream.write_all(&wire).unwrap();
    barrier(&mut other);
    assert_eq!(c.read_text(), "PONG");
    let s = relay.stats();
    assert!(s["turn_yields"].as_u64().unwrap() >= 10, "{s}");
    assert_eq!(s["published"], 20_000, "{s}");
}
