//! Access tickets (token strings from any client) and signed status records (mesh).
#![no_main]

use ed25519_dalek::SigningKey;
use fastpubsub_core::ticket::{self, Claims, StatusRecord, TicketBuf, limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
    let _ = Claims::decode(bytes);
    let _ = StatusRecord::decode_verified(bytes, &key);
    let text = String::from_utf8_lossy(bytes);
    let mut buf = TicketBuf::new();
    let _ = ticket::verify(&text, &key, &mut buf, 1_780_000_000);
    let mut raw = [0u8; limits::MAX_CLAIMS_LEN];
    let _ = ticket::decode_token_id(&text, &mut raw);
});
