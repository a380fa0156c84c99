//! Spec vectors and property tests for the frame codec.

extern crate std;
use std::vec::Vec;

use super::limits::*;
use super::*;

fn v1(tenant: &str, channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in [tenant, channel] {
        v.extend_from_slice(&(s.len() as u16).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
    }
    v.extend_from_slice(payload);
    v
}

fn v2(mode: u8, tenant: &str, channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = std::vec![0x02, mode];
    v.extend_from_slice(&v1(tenant, channel, payload));
    v
}

#[test]
fn publish_v1_vector() {
    let bytes = [0, 2, b't', b'1', 0, 3, b'a', b'.', b'b', b'h', b'i'];
    let p = Publish::new_checked(&bytes).unwrap();
    assert_eq!(p.version(), Version::V1);
    assert_eq!(p.mode(), Mode::Broadcast);
    assert_eq!(p.tenant(), "t1");
    assert_eq!(p.channel(), "a.b");
    assert_eq!(p.payload(), b"hi");
}

#[test]
fn publish_v1_empty_payload() {
    let frame = v1("t", "c", b"");
    let p = Publish::new_checked(&frame).unwrap();
    assert_eq!(p.payload(), b"");
}

#[test]
fn publish_v2_modes() {
    for (byte, mode) in [
        (0, Mode::Broadcast),
        (1, Mode::LowLatency),
        (2, Mode::Random),
    ] {
        let frame = v2(byte, "tenant_1", "public.chat", b"\x00\xff");
        let p = Publish::new_checked(&frame).unwrap();
        assert_eq!(p.version(), Version::V2);
        assert_eq!(p.mode(), mode);
        assert_eq!(p.tenant(), "tenant_1");
        assert_eq!(p.channel(), "public.chat");
        assert_eq!(p.payload(), b"\x00\xff");
    }
    assert_eq!(
        Publish::new_checked(&v2(3, "t", "c", b"")),
        Err(FrameError::UnknownMode { mode: 3 })
    );
}

#[test]
fn publish_errors() {
    let cases: &[(&[u8], FrameError)] = &[
        (
            &[],
            FrameError::Truncated {
                field: "tenant length",
            },
        ),
        (&[0x02], FrameError::Truncated { field: "mode" }),
        (&[0], FrameError::Truncated { field: "tenant" }),
        (&[0, 5, b'a'], FrameError::Truncated { field: "tenant" }),
        (&[0, 0], FrameError::EmptyField { field: "tenant" }),
        (&[0, 1, b't'], FrameError::Truncated { field: "channel" }),
        (
            &[0, 1, b't', 0, 0],
            FrameError::EmptyField { field: "channel" },
        ),
        (
            &[0, 1, 0xff, 0, 1, b'c'],
            FrameError::NotUtf8 { field: "tenant" },
        ),
        (&[0, 1, b':', 0, 1, b'c'], FrameError::TenantHasColon),
        (
            &[0, 1, b't', 0, 1, 0xc3],
            FrameError::NotUtf8 { field: "channel" },
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(Publish::new_checked(bytes), Err(*want), "input {bytes:?}");
    }
}

#[test]
fn publish_limits() {
    let t255 = "t".repeat(255);
    let c255 = "c".repeat(255);
    let max = std::vec![7u8; MAX_PAYLOAD_LEN];
    let frame = v2(0, &t255, &c255, &max);
    assert_eq!(frame.len(), MAX_PUBLISH_FRAME_LEN);
    let p = Publish::new_checked(&frame).unwrap();
    assert_eq!(p.payload().len(), MAX_PAYLOAD_LEN);

    let over = std::vec![7u8; MAX_PAYLOAD_LEN + 1];
    let err = Publish::new_checked(&v1("t", "c", &over)).unwrap_err();
    assert_eq!(
        err,
        FrameError::PayloadTooLarge {
            len: MAX_PAYLOAD_LEN + 1
        }
    );
    assert_eq!(err.reason(), "payload_too_large");

    let t256 = "t".repeat(256);
    // A 256-byte tenant starts with 0x01: still v1, and refused by its length.
    let err = Publish::new_checked(&v1(&t256, "c", b"")).unwrap_err();
    assert_eq!(err, FrameError::TenantTooLong { len: 256 });
    assert_eq!(err.reason(), "invalid_tenant");
    let c256 = "c".repeat(256);
    let err = Publish::new_checked(&v1("t", &c256, b"")).unwrap_err();
    assert_eq!(
        err,
        FrameError::NameTooLong {
            field: "channel",
            len: 256
        }
    );
    assert_eq!(err.reason(), "invalid_channel");
}

#[test]
fn commands() {
    assert_eq!(Command::parse("PING"), Ok(Command::Ping));
    assert_eq!(
        Command::parse("SUB:t1:public.#"),
        Ok(Command::Sub {
            tenant: "t1",
            pattern: "public.#"
        })
    );
    assert_eq!(
        Command::parse("UNSUB:t1:a:b"),
        Ok(Command::Unsub {
            tenant: "t1",
            pattern: "a:b"
        })
    );
    assert_eq!(Command::parse("PONG"), Err(FrameError::UnknownCommand));
    assert_eq!(Command::parse("ping"), Err(FrameError::UnknownCommand));
    assert_eq!(Command::parse("SUB:t1"), Err(FrameError::MissingPattern));
    assert_eq!(Command::parse("SUB::x"), Err(FrameError::EmptyTenant));
    assert_eq!(
        Command::parse("SUB:t:"),
        Err(FrameError::EmptyField { field: "pattern" })
    );
    let long = std::format!("SUB:t:{}", "p".repeat(256));
    let err = Command::parse(&long).unwrap_err();
    assert_eq!(
        err,
        FrameError::NameTooLong {
            field: "pattern",
            len: 256
        }
    );
    assert_eq!(err.reason(), "invalid_pattern");
    assert_eq!(
        Command::parse("SUB:t 1:x"),
        Err(FrameError::TenantBadByte { byte: b' ' })
    );
}

#[test]
fn deliver_vector() {
    let d = Deliver::new("t1", "a.b", b"hi").unwrap();
    let pats = ["a.*", "a.#"];
    let len = d.encoded_len(pats).unwrap();
    let mut out = std::vec![0u8; len];
    assert_eq!(d.encode(pats, &mut out), Ok(len));
    let want: &[u8] = &[
        0x01, 0, 2, b't', b'1', 0, 3, b'a', b'.', b'b', 0, 0, 0, 2, b'h', b'i', 0, 2, 0, 3, b'a',
        b'.', b'*', 0, 3, b'a', b'.', b'#',
    ];
    assert_eq!(out, want);
    let view = DeliverView::new_checked(&out).unwrap();
    assert_eq!(view.patterns().collect::<Vec<_>>(), pats);
    let mut longer = out.clone();
    longer.push(0);
    assert_eq!(
        DeliverView::new_checked(&longer),
        Err(FrameError::Trailing { extra: 1 })
    );
    let mut small = [0u8; 4];
    assert!(matches!(
        d.encode(pats, &mut small),
        Err(EncodeError::BufferTooSmall { .. })
    ));
    assert_eq!(
        d.encoded_len([]),
        Err(EncodeError::PatternCount { count: 0 })
    );
    assert!(Deliver::new("t", "c", &std::vec![0; MAX_PAYLOAD_LEN + 1]).is_err());

    // Head once, then a pattern list per receiver: the same bytes as encode_with.
    let mut split = Vec::new();
    d.encode_head(|p| split.extend_from_slice(p));
    assert_eq!(split.len(), d.head_len());
    let plen = Deliver::encode_patterns(pats, |p| split.extend_from_slice(p)).unwrap();
    assert_eq!(plen, Deliver::patterns_len(pats).unwrap());
    assert_eq!(split, want);
    let mut nothing = Vec::new();
    assert_eq!(
        Deliver::encode_patterns([""], |p| nothing.extend_from_slice(p)),
        Err(EncodeError::EmptyField { field: "pattern" })
    );
    assert!(nothing.is_empty(), "nothing emitted on error");
}

#[test]
fn replies() {
    let cases: &[(Reply<'_>, &str)] = &[
        (
            Reply::OkSub {
                tenant: "t1",
                pattern: "a.#",
            },
            "OK:SUB:t1:a.#",
        ),
        (
            Reply::OkUnsub {
                tenant: "t1",
                pattern: "a.#",
            },
            "OK:UNSUB:t1:a.#",
        ),
        (
            Reply::Err {
                reason: "permission_denied",
                parts: &["SUB", "t1", "private.#"],
            },
            "ERR:permission_denied:SUB:t1:private.#",
        ),
        (
            Reply::Err {
                reason: "slow_consumer",
                parts: &[],
            },
            "ERR:slow_consumer",
        ),
        (Reply::Pong, "PONG"),
        (Reply::Reconnect, "RECONNECT"),
    ];
    for (reply, want) in cases {
        let mut out = [0u8; 64];
        let n = reply.encode(&mut out).unwrap();
        assert_eq!(n, reply.encoded_len());
        assert_eq!(&out[..n], want.as_bytes());
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn name(max: usize) -> impl Strategy<Value = std::string::String> {
        proptest::string::string_regex(&std::format!("[a-z0-9.*#_-]{{1,{max}}}")).unwrap()
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Publish::new_checked(&bytes);
            let _ = DeliverView::new_checked(&bytes);
            if let Ok(text) = core::str::from_utf8(&bytes) {
                let _ = Command::parse(text);
            }
        }

        #[test]
        fn publish_round_trip(mode in 0u8..3, tenant in "[a-z0-9_]{1,40}", channel in name(60),
                              payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mode = Mode::from_byte(mode).unwrap();
            let mut out = std::vec![0u8; Publish::encoded_len_v2(&tenant, &channel, &payload)];
            let n = Publish::encode_v2(mode, &tenant, &channel, &payload, &mut out).unwrap();
            prop_assert_eq!(n, out.len());
            let p = Publish::new_checked(&out).unwrap();
            prop_assert_eq!(p.mode(), mode);
            prop_assert_eq!(p.tenant(), tenant.as_str());
            prop_assert_eq!(p.channel(), channel.as_str());
            prop_assert_eq!(p.payload(), &payload[..]);
        }

        #[test]
        fn deliver_round_trip(tenant in "[a-z0-9_]{1,40}", channel in name(60),
                              payload in proptest::collection::vec(any::<u8>(), 0..300),
                              pats in proptest::collection::vec(name(30), 1..5)) {
            let d = Deliver::new(&tenant, &channel, &payload).unwrap();
            let refs: Vec<&str> = pats.iter().map(|s| s.as_str()).collect();
            let mut out = std::vec![0u8; d.encoded_len(refs.iter().copied()).unwrap()];
            d.encode(refs.iter().copied(), &mut out).unwrap();
            let mut pieces = Vec::new();
            d.encode_with(refs.iter().copied(), |p| pieces.extend_from_slice(p)).unwrap();
            prop_assert_eq!(&pieces, &out);
            let v = DeliverView::new_checked(&out).unwrap();
            prop_assert_eq!(v.tenant(), tenant.as_str());
            prop_assert_eq!(v.channel(), channel.as_str());
            prop_assert_eq!(v.payload(), &payload[..]);
            prop_assert_eq!(v.patterns().collect::<Vec<_>>(), refs);
        }

        #[test]
        fn mutated_valid_frames_never_panic(seed in proptest::collection::vec(any::<u8>(), 0..40),
                                            pos in any::<usize>(), val in any::<u8>()) {
            let mut frame = v2(1, "t", "a.b", &seed);
            let i = pos % frame.len();
            frame[i] = val;
            let _ = Publish::new_checked(&frame);
            frame.truncate(pos % (frame.len() + 1));
            let _ = Publish::new_checked(&frame);
        }
    }
}
