//! The ticket status file read at start (`<state dir>/ticket-status.bin`).
#![no_main]

use fastpubsub_relay::tickets::persist;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let key = ed25519_dalek::SigningKey::from_bytes(&[2; 32]).verifying_key();
    let _ = persist::decode(bytes, &key);
});
