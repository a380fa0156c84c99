//! Property tests: arbitrary bytes and strings into the ticket decoders never panic, and a
//! valid ticket with any byte changed never verifies.

use ed25519_dalek::SigningKey;
use fastpubsub_core::ticket::{self, Claims, StatusRecord, TicketBuf, limits};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let _ = Claims::decode(&bytes);
        let _ = StatusRecord::decode_verified(&bytes, &key);
        let text = String::from_utf8_lossy(&bytes);
        let mut buf = TicketBuf::new();
        let _ = ticket::verify(&text, &key, &mut buf, 0);
        let mut raw = [0u8; limits::MAX_CLAIMS_LEN];
        let _ = ticket::decode_token_id(&text, &mut raw);
    }

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,300}", hexy in "AT_[0-9a-f_]{0,400}") {
        let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let mut buf = TicketBuf::new();
        prop_assert!(ticket::verify(&s, &key, &mut buf, 0).is_err());
        prop_assert!(ticket::verify(&hexy, &key, &mut buf, 0).is_err());
        let mut raw = [0u8; limits::MAX_CLAIMS_LEN];
        let id = hexy.trim_start_matches("AT_");
        let _ = ticket::decode_token_id(id, &mut raw);
    }

    #[test]
    fn hex_claims_of_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        // Signed garbage: a signer bug must not crash verifiers either.
        let sk = SigningKey::from_bytes(&[3; 32]);
        let mut msg = limits::TICKET_DOMAIN.to_vec();
        msg.extend_from_slice(&bytes);
        let sig = ed25519_dalek::Signer::sign(&sk, &msg).to_bytes();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let token = format!("AT_{}_{}", hex(&bytes), hex(&sig));
        let mut buf = TicketBuf::new();
        let _ = ticket::verify(&token, &sk.verifying_key(), &mut buf, 1_780_000_000);
    }
}
