//! Fuzzing of the client frame decoders on stable Rust (the same targets run under
//! cargo-fuzz in `fuzz/`): arbitrary bytes and text, and mutations of valid frames, into
//! `Publish::new_checked`, `DeliverView::new_checked` and `Command::parse`. No input may
//! panic; whatever a decoder accepts must re-encode to the same fields.
//!
//! Bounded for CI: about 1 s in a debug build (`cargo test -p fastpubsub-core --test frame_fuzz`).

use fastpubsub_core::frame::{Command, Deliver, DeliverView, Mode, Publish, Version};
use proptest::prelude::*;

/// Everything a decoder of client input must survive; checks what it accepted.
fn decode_all(bytes: &[u8]) {
    if let Ok(p) = Publish::new_checked(bytes) {
        assert!(!p.tenant().is_empty() && !p.channel().is_empty());
        if p.version() == Version::V2 {
            let mut out = vec![0u8; Publish::encoded_len_v2(p.tenant(), p.channel(), p.payload())];
            let n = Publish::encode_v2(p.mode(), p.tenant(), p.channel(), p.payload(), &mut out)
                .expect("an accepted publish re-encodes");
            assert_eq!(&out[..n], bytes, "v2 publish round trip");
        }
    }
    if let Ok(d) = DeliverView::new_checked(bytes) {
        let patterns: Vec<&str> = d.patterns().collect();
        assert_eq!(patterns.len(), usize::from(d.pattern_count()));
        let deliver = Deliver::new(d.tenant(), d.channel(), d.payload()).expect("fields fit");
        let mut out = vec![0u8; bytes.len()];
        let n = deliver
            .encode(patterns.iter().copied(), &mut out)
            .expect("an accepted deliver re-encodes");
        assert_eq!(&out[..n], bytes, "deliver round trip");
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = Command::parse(text).map(|c| c.verb());
    }
}

/// A valid frame to mutate: v1 or v2 publish, or a deliver.
fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
    let name = "[a-z.]{1,12}";
    (
        0u8..4,
        name,
        name,
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(kind, tenant, channel, payload)| match kind {
            0..=2 => {
                let mode = [Mode::Broadcast, Mode::LowLatency, Mode::Random][usize::from(kind)];
                let mut out = vec![0u8; Publish::encoded_len_v2(&tenant, &channel, &payload)];
                let n = Publish::encode_v2(mode, &tenant, &channel, &payload, &mut out)
                    .expect("encode");
                out.truncate(n);
                out
            }
            _ => {
                let d = Deliver::new(&tenant, &channel, &payload).expect("deliver");
                let pats = [channel.as_str(), "#"];
                let mut out = vec![0u8; 1024];
                let n = d.encode(pats.iter().copied(), &mut out).expect("encode");
                out.truncate(n);
                out
            }
        })
}

/// Byte-level mutations: flip, insert, delete, truncate.
fn mutate(mut bytes: Vec<u8>, edits: &[(u8, u16, u8)]) -> Vec<u8> {
    for &(op, at, val) in edits {
        let at = usize::from(at) % (bytes.len() + 1);
        match op % 4 {
            0 if at < bytes.len() => bytes[at] ^= val | 1,
            1 => bytes.insert(at, val),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            _ => bytes.truncate(at),
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_frames_never_panic(
        frame in valid_frame(),
        edits in proptest::collection::vec((any::<u8>(), any::<u16>(), any::<u8>()), 0..4),
    ) {
        decode_all(&frame);
        decode_all(&mutate(frame, &edits));
    }

    #[test]
    fn command_text_never_panics(s in "(SUB|UNSUB|PING|PONG|sub)?:?[a-z:.*#\\PC]{0,40}") {
        let _ = Command::parse(&s);
    }
}

/// Found by cargo-fuzz (`fuzz/artifacts/frame/`): a deliver frame whose channel is longer
/// than the contract's 255 bytes was accepted by the decoder but refused by the encoder.
#[test]
fn deliver_names_over_the_limit_are_refused() {
    let long = "c".repeat(256);
    for (tenant, channel, pattern) in [
        ("t".repeat(256), "c".to_string(), "p".to_string()),
        ("t".to_string(), long.clone(), "p".to_string()),
        ("t".to_string(), "c".to_string(), long.clone()),
    ] {
        let mut frame = vec![0x01];
        for s in [&tenant, &channel] {
            frame.extend_from_slice(&(s.len() as u16).to_be_bytes());
            frame.extend_from_slice(s.as_bytes());
        }
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.push(b'x');
        frame.extend_from_slice(&1u16.to_be_bytes());
        frame.extend_from_slice(&(pattern.len() as u16).to_be_bytes());
        frame.extend_from_slice(pattern.as_bytes());
        assert!(
            DeliverView::new_checked(&frame).is_err(),
            "{} {} {}",
            tenant.len(),
            channel.len(),
            pattern.len()
        );
        decode_all(&frame);
    }
}
