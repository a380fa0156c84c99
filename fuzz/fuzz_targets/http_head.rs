//! HTTP request heads (the edge's one port: REST and the WebSocket upgrade), and the
//! WebSocket frame header decoder.
#![no_main]

use fastpubsub_relay::limits::Limits;
use fastpubsub_relay::ws::http;
use fastpubsub_relay::wsframe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let limits = Limits::default();
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    if let Ok(Some((req, head_len, body_len))) = http::parse_head(bytes, peer, &limits) {
        assert!(head_len <= bytes.len());
        assert!(body_len <= limits.max_http_body);
        assert!(!req.method.is_empty());
    }
    let _ = wsframe::parse_header(bytes);
    let _ = wsframe::server_frame_len(bytes);
});
