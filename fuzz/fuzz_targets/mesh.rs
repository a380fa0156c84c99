//! Mesh messages (postcard, from anyone who reaches the mesh port).
#![no_main]

use fastpubsub_core::mesh::{self, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(msg) = mesh::decode(bytes) {
        let mut out = vec![0u8; Message::MAX_LEN];
        let enc = mesh::encode(&msg, &mut out).expect("an accepted message re-encodes");
        // The same message (overlong varints re-encode shorter, so not always the same bytes).
        assert_eq!(mesh::decode(enc).as_ref(), Ok(&msg));
    }
});
