//! Fuzzing of the mesh message decoder (postcard, from any host on the Internet that
//! reaches the mesh port) on stable Rust; the same target runs under cargo-fuzz in `fuzz/`.
//! Arbitrary bytes, bytes behind every message tag (so each variant's decoder is reached),
//! and mutations of valid messages: no panic, and an accepted message re-encodes to the
//! same message.
//!
//! Bounded for CI: about 1 s in a debug build (`cargo test -p fastpubsub-core --test mesh_fuzz`).

use fastpubsub_core::mesh::{self, Message, Probe};
use proptest::prelude::*;

/// Decodes; checks that what is accepted re-encodes identically.
fn decode_one(bytes: &[u8]) {
    if let Ok(msg) = mesh::decode(bytes) {
        let mut out = vec![0u8; Message::MAX_LEN];
        let enc = mesh::encode(&msg, &mut out).expect("an accepted message re-encodes");
        // Same message back (not always the same bytes: postcard accepts an overlong
        // varint such as `0x80 0x00` and re-encodes it in its shortest form).
        assert_eq!(
            mesh::decode(enc).as_ref(),
            Ok(&msg),
            "round trip of {msg:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        decode_one(&bytes);
    }

    /// A valid tag (0..16) first, then anything: reaches every variant's fields.
    #[test]
    fn every_variant_is_reached(tag in 0u8..16, rest in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = vec![tag];
        bytes.extend(rest);
        decode_one(&bytes);
    }

    /// Small varint lengths followed by text-like bytes: strings and lists that decode.
    #[test]
    fn structured_garbage_never_panics(
        tag in 0u8..16,
        parts in proptest::collection::vec((0u8..40, "[a-z0-9.#*:-]{0,40}"), 0..8),
    ) {
        let mut bytes = vec![tag];
        for (n, s) in parts {
            bytes.push(n);
            bytes.extend_from_slice(s.as_bytes());
        }
        decode_one(&bytes);
    }

    #[test]
    fn mutated_probes_never_panic(seq in any::<u32>(), sent in any::<u64>(), at in any::<u16>(), val in any::<u8>()) {
        let mut out = [0u8; Message::MAX_LEN];
        let bytes = mesh::encode(&Message::Probe(Probe { seq, sent_us: sent }), &mut out)
            .expect("encode")
            .to_vec();
        decode_one(&bytes);
        let mut bad = bytes.clone();
        let i = usize::from(at) % bad.len();
        bad[i] ^= val | 1;
        decode_one(&bad);
        decode_one(&bytes[..i]);
    }
}
