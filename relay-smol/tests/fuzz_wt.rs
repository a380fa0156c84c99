//! Fuzzing, on stable Rust, of the WebTransport edge's decoders of outside input (the same
//! targets run under cargo-fuzz: `fuzz/fuzz_targets/wt_h3.rs`, `fuzz/fuzz_targets/wt_llps.rs`):
//! HTTP/3 frame headers and stream prefixes, the peer's control stream, the request stream up
//! to its HEADERS, the extended CONNECT and its response (QPACK), HTTP datagram prefixes, the
//! LLPS control stream and lines, `SUB` delivery options, and the whole control-stream path
//! into a broker (`wt::session::feed_control`). No input may panic; what a decoder accepts is
//! checked against a round trip or an invariant; a stream split anywhere decodes as it does
//! whole.
//!
//! Bounded for CI: a few seconds in a debug build (`cargo test -p fastpubsub-relay --test fuzz_wt`).

use std::time::Duration;

use fastpubsub_core::frame::{Mode, Publish};
use fastpubsub_relay::auth::AllowAll;
use fastpubsub_relay::broker::{Broker, Target};
use fastpubsub_relay::limits::Limits;
use fastpubsub_relay::wt::frame::{self, ControlReader, MAX_FRAME, push_control};
use fastpubsub_relay::wt::h3::wire::{
    self, ControlIn, HeadIn, MAX_CONTROL_FRAME, MAX_FRAME_HEADER, MAX_HEADERS_LEN,
};
use fastpubsub_relay::wt::session::feed_control;
use proptest::prelude::*;

/// A split point of `bytes` chosen by the input itself.
fn cut(bytes: &[u8]) -> usize {
    bytes
        .first()
        .map_or(0, |&b| usize::from(b) % (bytes.len() + 1))
}

/// Every HTTP/3 decoder on `bytes`.
fn h3_all(bytes: &[u8]) {
    if let Some((v, n)) = wire::varint_decode(bytes) {
        assert!(matches!(n, 1 | 2 | 4 | 8) && n <= bytes.len());
        let mut out = Vec::new();
        wire::varint_encode(v, &mut out);
        assert_eq!(wire::varint_decode(&out).map(|x| x.0), Some(v));
    }
    if let Some(h) = wire::frame_header(bytes) {
        assert!(h.hlen <= MAX_FRAME_HEADER && h.hlen <= bytes.len());
    }
    if let Some((_, n)) = wire::uni_type(bytes) {
        assert!(n <= wire::MAX_STREAM_PREFIX && n <= bytes.len());
    }
    if let Some((_, _, n)) = wire::bidi_header(bytes) {
        assert!(n <= wire::MAX_STREAM_PREFIX);
    }
    if let Some((sid, n)) = wire::datagram_session(bytes) {
        assert_eq!(sid % 4, 0);
        assert!(n <= bytes.len());
    }
    let _ = wire::check_settings(bytes);
    field_section(bytes);
    control_stream(bytes);
    request_stream(bytes);
}

/// A QPACK field section into every decoder that reads one.
fn field_section(bytes: &[u8]) {
    let lines = wire::check_field_section(bytes);
    let fields = wire::decode_fields(bytes);
    match (&lines, &fields) {
        (Ok(n), Ok(f)) => assert!(f.len() <= *n, "more fields than field lines"),
        (Err(_), Ok(_)) => panic!("decoded a section the check refused"),
        _ => {}
    }
    if let Ok(req) = wire::decode_request(bytes) {
        assert!(req.path.starts_with('/'));
        assert!(!req.authority.is_empty());
        if let Some(t) = req.token() {
            assert!(!t.is_empty());
            let in_auth = req.authorization.as_deref().is_some_and(|a| a.contains(t));
            assert!(in_auth || req.path.contains(t), "token from nowhere");
        }
    }
    if let Ok((status, _)) = wire::decode_response(bytes) {
        assert!((100..=599).contains(&status));
    }
}

/// The peer's control stream, whole and split in two: same outcome, bounded buffer.
fn control_stream(bytes: &[u8]) {
    let mut whole = ControlIn::default();
    let a = whole.push(bytes).map_err(|e| e.code);
    let mut split = ControlIn::default();
    let (x, y) = bytes.split_at(cut(bytes));
    let b = split
        .push(x)
        .map_err(|e| e.code)
        .and_then(|()| split.push(y).map_err(|e| e.code));
    assert_eq!(a, b, "control stream split at {}", x.len());
    if a.is_ok() {
        assert_eq!(whole.has_settings(), split.has_settings());
        assert!(whole.buffered() <= MAX_CONTROL_FRAME + MAX_FRAME_HEADER);
    }
}

/// A request stream up to its HEADERS, whole and split in two: the same payload.
fn request_stream(bytes: &[u8]) {
    let mut whole = HeadIn::default();
    let a = whole
        .push(bytes)
        .map(|p| p.map(<[u8]>::to_vec))
        .map_err(|e| e.code);
    let mut split = HeadIn::default();
    let (x, y) = bytes.split_at(cut(bytes));
    let b = match split.push(x) {
        Ok(Some(p)) => Ok(Some(p.to_vec())),
        Ok(None) => split
            .push(y)
            .map(|p| p.map(<[u8]>::to_vec))
            .map_err(|e| e.code),
        Err(e) => Err(e.code),
    };
    assert_eq!(a, b, "request stream split at {}", x.len());
    match a {
        Ok(Some(p)) => {
            assert!(p.len() <= MAX_HEADERS_LEN);
            field_section(&p);
        }
        Ok(None) => assert!(whole.buffered() <= bytes.len()),
        Err(_) => {}
    }
}

/// The LLPS framing of the control stream (`kind | len | payload`) and of a line
/// (`len | payload`): whole and split give the same frames; accepted frames re-encode to the
/// bytes they came from.
fn llps_frames(bytes: &[u8]) {
    for line in [false, true] {
        let new = || {
            if line {
                ControlReader::line()
            } else {
                ControlReader::default()
            }
        };
        let run = |parts: &[&[u8]]| {
            let mut r = new();
            let mut frames: Vec<(u8, Vec<u8>)> = Vec::new();
            for p in parts {
                r.push(p, &mut |k, f| frames.push((k, f.to_vec())))
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(frames)
        };
        let whole = run(&[bytes]);
        let (x, y) = bytes.split_at(cut(bytes));
        let split = run(&[x, y]);
        match (&whole, &split) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "line={line} split at {}", x.len()),
            (Err(_), Err(_)) => {}
            // An error in a later frame may cut the frames before it short on one side only.
            _ => assert!(whole.is_err() || split.is_err()),
        }
        if let Ok(frames) = whole {
            let mut again = Vec::new();
            for (k, f) in &frames {
                assert!(*k <= frame::KIND_TEXT && f.len() <= MAX_FRAME);
                if line {
                    again.extend_from_slice(&(f.len() as u32).to_be_bytes());
                    again.extend_from_slice(f);
                } else {
                    push_control(*k, f, &mut again);
                }
            }
            assert_eq!(&bytes[..again.len()], &again[..], "frames re-encode");
        }
    }
}

/// `SUB` delivery options: what is accepted parses again the same from its canonical form.
fn sub_options(text: &str) {
    let Ok(o) = frame::split_options(text) else {
        return;
    };
    assert!(text.starts_with(o.pattern));
    let canonical = match o.target {
        frame::Target::Control => {
            assert_eq!(o.pattern, text, "plain SUB keeps the whole pattern");
            return;
        }
        frame::Target::Line(l) => {
            assert!(l <= frame::MAX_LINE);
            format!("{}:U:{l}:{}", o.pattern, o.kbps)
        }
        frame::Target::Datagram => format!("{}:D:{}", o.pattern, o.kbps),
    };
    assert_eq!(frame::split_options(&canonical), Ok(o), "{canonical}");
}

fn broker() -> Broker {
    let limits = Limits {
        queue_bytes: 64 * 1024,
        slow_consumer_grace: Duration::from_secs(3600),
        ..Limits::default()
    };
    Broker::new(limits, fastpubsub_relay::clock::now())
}

/// The whole control-stream path of one session into a broker with a WebSocket subscriber:
/// nothing panics, and the session's subscriptions stay within their limits.
fn session(chunks: &[Vec<u8>]) {
    let mut b = broker();
    let id = b.register_wt(Box::new(AllowAll)).expect("room");
    let ws = b.register(Box::new(AllowAll)).expect("room");
    b.subscribe(ws, "t", "#").expect("subscribe");
    let mut r = ControlReader::default();
    for c in chunks {
        if feed_control(&mut r, &mut b, id, c).is_err() {
            break;
        }
    }
    assert!(b.subscription_count() <= 1 + b.limits().max_subs_per_conn);
    assert!(r.buffered() <= MAX_FRAME + 5 + chunks.iter().map(Vec::len).sum::<usize>());
}

/// A CONNECT-like field section: fields from the names a request carries, and others.
fn connect_fields() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just(":method".to_owned()),
        Just(":protocol".to_owned()),
        Just(":scheme".to_owned()),
        Just(":path".to_owned()),
        Just(":authority".to_owned()),
        Just(":status".to_owned()),
        Just("authorization".to_owned()),
        Just("Authorization".to_owned()),
        Just("origin".to_owned()),
        Just("llps-reason".to_owned()),
        "[a-zA-Z:-]{1,12}",
    ];
    let value = prop_oneof![
        Just("CONNECT".to_owned()),
        Just("webtransport".to_owned()),
        Just("https".to_owned()),
        Just("/?at=AT_ab_cd".to_owned()),
        Just("Bearer AT_ab_cd".to_owned()),
        Just("200".to_owned()),
        "[ -~]{0,24}",
    ];
    proptest::collection::vec((name, value), 0..9)
}

/// A QPACK prefix integer with an `n`-bit prefix: the value if it fits, else the prefix
/// all ones and `more` continuation bytes (the last without its high bit), overlong or not.
fn qpack_int(flags: u8, n: u32, v: u8, more: &[u8], out: &mut Vec<u8>) {
    let mask = ((1u16 << n) - 1) as u8;
    if more.is_empty() {
        out.push((flags << n) | ((v & mask) % mask));
        return;
    }
    out.push(flags << n | mask);
    for (i, b) in more.iter().enumerate() {
        out.push(if i + 1 == more.len() {
            b & 0x7f
        } else {
            b | 0x80
        });
    }
}

/// Field sections built from QPACK's grammar, with integers of any length and strings that
/// may run past the end: what reaches the QPACK decoder.
fn qpack_sections() -> impl Strategy<Value = Vec<u8>> {
    let int = (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..13));
    let line = (
        0u8..4,
        int.clone(),
        int,
        proptest::collection::vec(any::<u8>(), 0..8),
    );
    (proptest::collection::vec(line, 0..6), any::<bool>()).prop_map(|(lines, ric)| {
        let mut out = vec![u8::from(ric), 0];
        for (kind, (a, more_a), (b, more_b), bytes) in lines {
            match kind {
                // Indexed, static (T = 1).
                0 => qpack_int(0b11, 6, a, &more_a, &mut out),
                // Literal with a static name reference, then the value string.
                1 => {
                    qpack_int(0b0101, 4, a, &more_a, &mut out);
                    qpack_int(0, 7, b, &more_b, &mut out);
                    out.extend_from_slice(&bytes);
                }
                // Literal name and value.
                2 => {
                    qpack_int(0b0010, 3, a, &more_a, &mut out);
                    out.extend_from_slice(&bytes);
                    qpack_int(0, 7, b, &more_b, &mut out);
                    out.extend_from_slice(&bytes);
                }
                // Dynamic references (refused).
                _ => qpack_int(0b10, 6, a, &more_a, &mut out),
            }
        }
        out
    })
}

/// Bytes of a control stream: SETTINGS (valid or not) and frames of the types that matter.
fn control_stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        prop_oneof![
            Just(0x04u64),
            Just(0x00),
            Just(0x01),
            Just(0x07),
            Just(0x0d),
            Just(0x21),
            any::<u64>()
        ],
        proptest::collection::vec(any::<u8>(), 0..24),
    );
    proptest::collection::vec(frame, 0..6).prop_map(|frames| {
        let mut out = Vec::new();
        for (kind, payload) in frames {
            wire::push_frame(kind, &payload, &mut out);
        }
        out
    })
}

/// Frames of an LLPS control stream: commands (with options), publishes and garbage.
fn llps_stream() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let text = prop_oneof![
        Just("PING".to_owned()),
        "SUB:t:[a-z.#*]{0,8}(:U:[0-9]{0,3}:[0-9]{0,4}|:D(:[0-9]{0,3})?)?",
        "UNSUB:t:[a-z.#*]{0,8}(:U:[0-9]:0|:D)?",
        "[ -~]{0,20}",
    ];
    let item = prop_oneof![
        text.prop_map(|t| {
            let mut out = Vec::new();
            push_control(frame::KIND_TEXT, t.as_bytes(), &mut out);
            out
        }),
        ("[a-z.]{1,8}", proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(ch, p)| {
            let mut f = vec![0u8; Publish::encoded_len_v2("t", &ch, &p)];
            let n = Publish::encode_v2(Mode::Broadcast, "t", &ch, &p, &mut f).unwrap_or(0);
            f.truncate(n);
            let mut out = Vec::new();
            push_control(frame::KIND_BINARY, &f, &mut out);
            out
        }),
        proptest::collection::vec(any::<u8>(), 0..12),
    ];
    (proptest::collection::vec(item, 0..10), 1usize..40).prop_map(|(items, chunk)| {
        let all: Vec<u8> = items.concat();
        all.chunks(chunk).map(<[u8]>::to_vec).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        h3_all(&bytes);
        llps_frames(&bytes);
        sub_options(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn connect_requests_decode_or_are_refused(
        fields in connect_fields(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        keep in any::<usize>(),
    ) {
        let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let frame = wire::headers_frame(&pairs);
        let h = wire::frame_header(&frame).expect("a frame");
        let payload = &frame[h.hlen..];
        // Unmutated: a request with the fields a CONNECT needs decodes to them.
        if let Ok(req) = wire::decode_request(payload) {
            let has = |n: &str, v: &str| fields.iter().any(|(k, x)| k.eq_ignore_ascii_case(n) && x == v);
            prop_assert!(has(":path", &req.path) && has(":authority", &req.authority));
        }
        h3_all(&frame);
        let mut m = payload.to_vec();
        for (at, x) in flips {
            if !m.is_empty() {
                let i = at % m.len();
                m[i] ^= x;
            }
        }
        m.truncate(keep % (m.len() + 1));
        field_section(&m);
    }

    #[test]
    fn qpack_sections_never_panic(section in qpack_sections()) {
        field_section(&section);
        let mut frame = Vec::new();
        wire::push_frame(wire::FRAME_HEADERS, &section, &mut frame);
        request_stream(&frame);
    }

    #[test]
    fn control_streams_never_panic(bytes in control_stream_bytes()) {
        h3_all(&bytes);
    }

    #[test]
    fn sub_options_parse_back(text in "[a-z.#*]{0,6}(:U:[0-9]{0,4}:[0-9]{0,11}|:D(:[0-9]{0,11})?|:[A-Z0-9]{0,3}){0,3}") {
        sub_options(&text);
    }

    #[test]
    fn llps_control_streams_into_a_broker(chunks in llps_stream()) {
        for c in &chunks {
            llps_frames(c);
        }
        session(&chunks);
    }
}

#[test]
fn a_session_subscribes_on_lines_and_datagrams_through_feed_control() {
    // The fuzzed path does what the session does: a check that it is not a no-op.
    let mut b = broker();
    let id = b.register_wt(Box::new(AllowAll)).expect("room");
    let mut r = ControlReader::default();
    let mut wire = Vec::new();
    for cmd in ["SUB:t:a.#:U:0:0", "SUB:t:b.#:D", "SUB:t:c:U:9:0", "PING"] {
        push_control(frame::KIND_TEXT, cmd.as_bytes(), &mut wire);
    }
    feed_control(&mut r, &mut b, id, &wire).expect("well-formed");
    let replies = String::from_utf8_lossy(b.conn_mut(id).expect("open").pending()).into_owned();
    for want in [
        "OK:SUB:t:a.#:U:1",
        "OK:SUB:t:b.#",
        "ERR:bad_options:SUB:t:c:U:9:0:line must be 0 (relay picks) or 1..=8",
        "PONG",
    ] {
        assert!(replies.contains(want), "{want} missing from {replies:?}");
    }
    assert_eq!(
        b.subscribe_to(id, "t", "b.#", Target::Datagram, 0)
            .map(|r| r.1)
            .ok(),
        Some(Target::Datagram)
    );
    assert!(feed_control(&mut r, &mut b, id, &[7, 0, 0, 0, 0]).is_err());
}
