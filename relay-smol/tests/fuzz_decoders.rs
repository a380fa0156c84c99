//! Fuzzing, on stable Rust, of the relay's decoders of outside input (the same targets
//! run under cargo-fuzz in `fuzz/`): HTTP request heads, WebSocket frame headers, the JSON
//! body of `POST /v1/get-token`, RFC 3339 times, config files, and the ticket status file.
//! No input may panic; accepted input is checked where a round trip exists.
//!
//! Bounded for CI: a few seconds in a debug build (`cargo test -p fastpubsub-relay --test fuzz_decoders`).

use std::net::SocketAddr;

use fastpubsub_relay::config_file;
use fastpubsub_relay::limits::Limits;
use fastpubsub_relay::tickets::{persist, request, rfc3339};
use fastpubsub_relay::ws::http;
use fastpubsub_relay::wsframe;
use proptest::prelude::*;

const NOW: u64 = 1_780_000_000;

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

fn http_head(bytes: &[u8]) {
    let limits = Limits::default();
    if let Ok(Some((req, head_len, body_len))) = http::parse_head(bytes, peer(), &limits) {
        assert!(head_len <= bytes.len());
        assert!(body_len <= limits.max_http_body);
        assert!(!req.method.is_empty());
    }
}

fn ws_header(bytes: &[u8]) {
    if let Ok(Some(h)) = wsframe::parse_header(bytes) {
        let _ = format!("{h:?}");
    }
    let _ = wsframe::server_frame_len(bytes);
}

fn text_inputs(s: &str) {
    let _ = rfc3339::parse(s);
    let _ = config_file::parse(s);
    let _ = config_file::from_text(s, std::path::Path::new("fuzz.toml"));
    let _ = request::parse_get_token(s.as_bytes(), NOW);
}

fn status_file(bytes: &[u8]) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[2; 32]).verifying_key();
    let _ = persist::decode(bytes, &key);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        http_head(&bytes);
        ws_header(&bytes);
        status_file(&bytes);
        text_inputs(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn http_like_heads_never_panic(
        method in "(GET|POST|PUT|DELETE|HEAD|get|X)",
        path in "/[a-z/?=&%.-]{0,30}",
        headers in proptest::collection::vec(("[A-Za-z-]{1,20}", "[ -~]{0,40}"), 0..10),
        tail in "(\r\n|\n|\r)?",
    ) {
        let mut req = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str(&tail);
        req.push_str("\r\n");
        http_head(req.as_bytes());
    }

    #[test]
    fn config_like_text_never_panics(
        lines in proptest::collection::vec(
            "(\\[(edge|limits|tickets|admin|mesh|x)\\]|[a-z_]{1,20} = (\"[ -~]{0,20}\"|'[ -~]{0,10}'|-?[0-9_]{1,22}|true|false|[ -~]{0,10})|#[ -~]{0,10}|)",
            0..12,
        ),
    ) {
        text_inputs(&lines.join("\n"));
    }

    #[test]
    fn json_like_bodies_never_panic(
        body in "\\{\"right\":\\{\"tenant_grants\":\\[(\\{\"tenant_ids\":\\[\"[a-z:]{0,5}\"\\],\"allow_channels_pub\":\\[\"[a-z.#*]{0,8}\"\\],\"allow_channels_sub\":\\[\"[a-z.#*]{0,8}\"\\]\\})?\\](,\"[a-z_]{1,20}\":(-?[0-9]{1,25}|\"[ -~]{0,30}\"|\\[\\]|null|true))*\\}\\}",
    ) {
        let _ = request::parse_get_token(body.as_bytes(), NOW);
    }

    #[test]
    fn rfc3339_like_text_never_panics(s in "[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}[Tt ][0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}(\\.[0-9]{0,12})?(Z|[+-][0-9]{1,3}:[0-9]{1,3})?") {
        if let Ok(t) = rfc3339::parse(&s) {
            // What parses formats back to a time that parses to the same second.
            prop_assert_eq!(rfc3339::parse(&rfc3339::format(t)), Ok(t));
        }
    }
}
