//! REST bodies from whoever holds the master token: `POST /v1/get-token` JSON, RFC 3339
//! times.
#![no_main]

use fastpubsub_relay::tickets::{request, rfc3339};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = request::parse_get_token(bytes, 1_780_000_000);
    if let Ok(text) = std::str::from_utf8(bytes) {
        if let Ok(t) = rfc3339::parse(text) {
            assert_eq!(rfc3339::parse(&rfc3339::format(t)), Ok(t));
        }
    }
});
