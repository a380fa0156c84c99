//! The client contract after the handshake: every row of the spec's tables, delivery modes,
//! limits and malformed input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;

use common::*;
use fastpubsub_core::frame::Mode;
use fastpubsub_core::frame::limits::MAX_PAYLOAD_LEN;
use fastpubsub_relay::limits::Limits;
use tungstenite::Message;

fn relay() -> TestRelay {
    TestRelay::start(Limits::default())
}

#[test]
fn sub_unsub_ping_replies() {
    let relay = relay();
    let mut ws = connect(&relay);
    send_text(&mut ws, "SUB:tenant_1:public.#");
    assert_eq!(next_text(&mut ws), "OK:SUB:tenant_1:public.#");
    send_text(&mut ws, "UNSUB:tenant_1:public.#");
    assert_eq!(next_text(&mut ws), "OK:UNSUB:tenant_1:public.#");
    send_text(&mut ws, "PING");
    assert_eq!(next_text(&mut ws), "PONG");
}

#[test]
fn websocket_ping_gets_pong() {
    let relay = relay();
    let mut raw = RawWs::connect(relay.addr);
    raw.send_frame(true, 0x9, b"hello");
    assert_eq!(raw.read_frame(), Some((0xA, b"hello".to_vec())));
}

#[test]
fn publish_v1_and_v2_are_delivered_with_the_subscribed_pattern() {
    let relay = relay();
    let mut sub = connect(&relay);
    let mut publ = connect(&relay);
    subscribe(&mut sub, "t1", "public.#");
    publ.send(Message::binary(publish_v1_frame(
        "t1",
        "public.chat.room1",
        b"v1",
    )))
    .unwrap();
    publish(&mut publ, Mode::Broadcast, "t1", "public", b"v2");
    let d = next_deliver(&mut sub);
    assert_eq!(
        d,
        Delivery {
            tenant: "t1".into(),
            channel: "public.chat.room1".into(),
            payload: b"v1".to_vec(),
            patterns: vec!["public.#".into()],
        }
    );
    let d = next_deliver(&mut sub);
    assert_eq!(
        (d.channel.as_str(), d.payload.as_slice()),
        ("public", &b"v2"[..])
    );
}

#[test]
fn empty_payload_and_other_tenants() {
    let relay = relay();
    let mut sub = connect(&relay);
    let mut publ = connect(&relay);
    subscribe(&mut sub, "t1", "a.*");
    publish(&mut publ, Mode::Broadcast, "t2", "a.b", b"other tenant");
    publish(&mut publ, Mode::Broadcast, "t1", "a.b.c", b"too deep");
    publish(&mut publ, Mode::Broadcast, "t1", "a.b", b"");
    let d = next_deliver(&mut sub);
    assert_eq!((d.channel.as_str(), d.payload.len()), ("a.b", 0));
    barrier(&mut publ);
    assert_nothing_then_pong(&mut sub);
}

#[test]
fn two_matching_patterns_give_one_frame_listing_both() {
    let relay = relay();
    let mut sub = connect(&relay);
    let mut publ = connect(&relay);
    subscribe(&mut sub, "t1", "public.#");
    subscribe(&mut sub, "t1", "public.*");
    subscribe(&mut sub, "t1", "other.#");
    publish(&mut publ, Mode::Broadcast, "t1", "public.chat", b"x");
    let mut d = next_deliver(&mut sub);
    d.patterns.sort();
    assert_eq!(
        d.patterns,
        vec!["public.#".to_string(), "public.*".to_string()]
    );
    barrier(&mut publ);
    assert_nothing_then_pong(&mut sub); // exactly one frame
}

#[test]
fn unsubscribe_stops_delivery() {
    let relay = relay();
    let mut sub = connect(&relay);
    let mut publ = connect(&relay);
    subscribe(&mut sub, "t1", "news.#");
    publish(&mut publ, Mode::Broadcast, "t1", "news.a", b"1");
    assert_eq!(next_deliver(&mut sub).payload, b"1");
    send_text(&mut sub, "UNSUB:t1:news.#");
    assert_eq!(next_text(&mut sub), "OK:UNSUB:t1:news.#");
    publish(&mut publ, Mode::Broadcast, "t1", "news.a", b"2");
    barrier(&mut publ);
    assert_nothing_then_pong(&mut sub);
}

#[test]
fn deliver_one_modes_pick_exactly_one_connection() {
    let relay = relay();
    let mut subs: Vec<Ws> = (0..3).map(|_| connect(&relay)).collect();
    for s in &mut subs {
        subscribe(s, "t1", "jobs.#");
    }
    let mut publ = connect(&relay);
    const N: usize = 60;
    for mode in [Mode::Random, Mode::LowLatency] {
        for i in 0..N {
            publish(&mut publ, mode, "t1", "jobs.x", format!("{i}").as_bytes());
        }
        barrier(&mut publ);
        let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut per_sub = Vec::new();
        for s in &mut subs {
            send_text(s, "PING");
            let mut n = 0;
            loop {
                match next(s) {
                    Message::Text(t) if t.as_str() == "PONG" => break,
                    Message::Binary(b) => {
                        *seen.entry(decode_deliver(&b).payload).or_default() += 1;
                        n += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            per_sub.push(n);
        }
        assert_eq!(seen.len(), N, "{mode}: every message delivered");
        assert!(
            seen.values().all(|&c| c == 1),
            "{mode}: each message exactly once"
        );
        // 60 messages over 3 connections: all on one connection has probability 3^-59.
        assert!(
            per_sub.iter().filter(|&&n| n > 0).count() > 1,
            "{mode}: spread {per_sub:?}"
        );
    }
}

#[test]
fn publish_without_subscribers_is_a_silent_noop() {
    let relay = relay();
    let mut publ = connect(&relay);
    publish(&mut publ, Mode::Random, "t1", "nobody.here", b"x");
    assert_nothing_then_pong(&mut publ);
}

#[test]
fn payload_64k_is_intact_and_64k_plus_1_is_refused() {
    let relay = relay();
    let mut sub = connect(&relay);
    let mut publ = connect(&relay);
    subscribe(&mut sub, "t1", "big");
    let payload: Vec<u8> = (0..MAX_PAYLOAD_LEN).map(|i| (i * 31 % 251) as u8).collect();
    publish(&mut publ, Mode::Broadcast, "t1", "big", &payload);
    assert_eq!(next_deliver(&mut sub).payload, payload);
    let mut over = payload.clone();
    over.push(1);
    publ.send(Message::binary(publish_v1_frame("t1", "big", &over)))
        .unwrap();
    let err = next_text(&mut publ);
    assert_eq!(
        err,
        "ERR:payload_too_large:PUB:t1:big:the payload is 65537 bytes (at most 65536)"
    );
    barrier(&mut publ); // still open
    assert_nothing_then_pong(&mut sub);
}

#[test]
fn refusals_name_what_and_why_and_keep_the_connection() {
    let relay = relay();
    let mut ws = connect(&relay);
    let cases: Vec<(Message, &str)> = vec![
        (
            Message::text("SUB:t1:a.#.b"),
            "ERR:invalid_pattern:SUB:t1:a.#.b:",
        ),
        (
            Message::text("SUB:t1:a..b"),
            "ERR:invalid_pattern:SUB:t1:a..b:",
        ),
        (Message::text("SUB:t1:a*"), "ERR:invalid_pattern:SUB:t1:a*:"),
        (Message::text("HELLO"), "ERR:bad_frame:unknown command"),
        (Message::text("SUB:t1"), "ERR:bad_frame:missing ':'"),
        (
            Message::text("SUB::x"),
            "ERR:invalid_tenant:the tenant is empty",
        ),
        (
            Message::text(format!("SUB:t1:{}", "p".repeat(256))),
            "ERR:invalid_pattern:",
        ),
        (
            Message::binary(publish_frame(Mode::Broadcast, "t1", "a.*", b"x")),
            "ERR:invalid_channel:PUB:t1:a.*:",
        ),
        (
            Message::binary(vec![0x02, 7, 0, 1, b't', 0, 1, b'c']),
            "ERR:bad_frame:unknown delivery mode 7",
        ),
        (
            Message::binary(vec![0x00]),
            "ERR:bad_frame:frame ends inside the tenant",
        ),
        (Message::binary(vec![]), "ERR:bad_frame:"),
        (
            Message::binary(vec![0, 1, b':', 0, 1, b'c']),
            "ERR:invalid_tenant:the tenant contains ':'",
        ),
        (
            Message::binary(vec![0, 1, b't', 0, 1, 0xff]),
            "ERR:bad_frame:the channel is not valid UTF-8",
        ),
    ];
    for (msg, want) in cases {
        let shown = format!("{msg:?}");
        ws.send(msg).unwrap();
        let got = next_text(&mut ws);
        assert!(
            got.starts_with(want),
            "{shown}: got {got:?}, want prefix {want:?}"
        );
    }
    barrier(&mut ws);
}

#[test]
fn subscription_limit_per_connection() {
    let relay = TestRelay::start(Limits {
        max_subs_per_conn: 2,
        ..Limits::default()
    });
    let mut ws = connect(&relay);
    subscribe(&mut ws, "t", "a");
    subscribe(&mut ws, "t", "b");
    subscribe(&mut ws, "t", "b"); // again: idempotent, no new slot
    send_text(&mut ws, "SUB:t:c");
    let err = next_text(&mut ws);
    assert!(
        err.starts_with("ERR:too_many_subscriptions:SUB:t:c:"),
        "{err}"
    );
    barrier(&mut ws);
    // Counted where an operator looks.
    let s = relay.stats();
    assert_eq!(s["refused_subs_per_connection"], 1, "{s}");
    assert_eq!(s["refused_subs_relay_full"], 0, "{s}");
}

#[test]
fn subscription_limit_per_relay_is_counted() {
    let relay = TestRelay::start(Limits {
        max_total_subs: 3,
        ..Limits::default()
    });
    let mut a = connect(&relay);
    let mut b = connect(&relay);
    subscribe(&mut a, "t", "a");
    subscribe(&mut a, "t", "b");
    subscribe(&mut b, "t", "c");
    send_text(&mut b, "SUB:t:d");
    let err = next_text(&mut b);
    assert!(err.starts_with("ERR:relay_full:SUB:t:d:"), "{err}");
    barrier(&mut b);
    let s = relay.stats();
    assert_eq!(s["refused_subs_relay_full"], 1, "{s}");
    assert_eq!(s["refused_subs_per_connection"], 0, "{s}");
    barrier(&mut a);
}

#[test]
fn oversize_and_fragmented_messages() {
    let limits = Limits {
        max_frame_len: 1000,
        ..Limits::default()
    };
    let relay = TestRelay::start(limits);
    let mut raw = RawWs::connect(relay.addr);
    // Oversize single frame: skipped, answered, connection stays.
    raw.send_frame(true, 0x2, &vec![0u8; 5000]);
    let err = raw.read_text();
    assert!(err.starts_with("ERR:frame_too_large:"), "{err}");
    // A command in three fragments.
    raw.send_frame(false, 0x1, b"SUB:t");
    raw.send_frame(false, 0x0, b"1:fr");
    raw.send_frame(true, 0x0, b"ag.#");
    assert_eq!(raw.read_text(), "OK:SUB:t1:frag.#");
    // Fragments that add up past the limit are refused as one message.
    raw.send_frame(false, 0x2, &[0u8; 600]);
    raw.send_frame(true, 0x0, &[0u8; 600]);
    let err = raw.read_text();
    assert!(err.starts_with("ERR:frame_too_large:"), "{err}");
    raw.send_frame(true, 0x1, b"PING");
    assert_eq!(raw.read_text(), "PONG");
}

#[test]
fn unmasked_frame_closes_with_protocol_error() {
    let relay = relay();
    let mut raw = RawWs::connect(relay.addr);
    use std::io::Write;
    raw.stream
        .write_all(&[0x81, 4, b'P', b'I', b'N', b'G'])
        .unwrap();
    let (op, payload) = raw.read_frame().expect("a close frame");
    assert_eq!(op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
    assert_eq!(raw.read_frame(), None, "then EOF");
}

#[test]
fn garbage_sender_is_closed_after_the_bad_frame_limit() {
    let relay = TestRelay::start(Limits {
        max_bad_frames: 3,
        ..Limits::default()
    });
    let mut raw = RawWs::connect(relay.addr);
    for _ in 0..4 {
        raw.send_frame(true, 0x1, b"nonsense");
    }
    for _ in 0..4 {
        assert!(raw.read_text().starts_with("ERR:bad_frame"));
    }
    assert!(raw.read_text().starts_with("ERR:too_many_bad_frames"));
    let (op, _) = raw.read_frame().expect("close frame");
    assert_eq!(op, 0x8);
    relay.wait_stats("the close to be counted", |s| s["bad_frames_closed"] == 1);
}

#[test]
fn client_close_is_answered() {
    let relay = relay();
    let mut raw = RawWs::connect(relay.addr);
    raw.send_frame(true, 0x8, &1000u16.to_be_bytes());
    let (op, payload) = raw.read_frame().expect("close echo");
    assert_eq!(op, 0x8);
    assert_eq!(&payload[..2], &1000u16.to_be_bytes());
    assert_eq!(raw.read_frame(), None);
    relay.wait_stats("the connection to go", |s| s["connections"] == 0);
}
