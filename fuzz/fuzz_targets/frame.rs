//! Client frames (WebSocket binary and text messages): publish v1/v2, deliver, commands.
#![no_main]

use fastpubsub_core::frame::{Command, Deliver, DeliverView, Publish, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(p) = Publish::new_checked(bytes)
        && p.version() == Version::V2
    {
        let mut out = vec![0u8; Publish::encoded_len_v2(p.tenant(), p.channel(), p.payload())];
        let n = Publish::encode_v2(p.mode(), p.tenant(), p.channel(), p.payload(), &mut out)
            .expect("an accepted publish re-encodes");
        assert_eq!(&out[..n], bytes);
    }
    if let Ok(d) = DeliverView::new_checked(bytes) {
        let patterns: Vec<&str> = d.patterns().collect();
        let deliver = Deliver::new(d.tenant(), d.channel(), d.payload()).expect("fields fit");
        let mut out = vec![0u8; bytes.len()];
        let n = deliver.encode(patterns.iter().copied(), &mut out).expect("re-encodes");
        assert_eq!(&out[..n], bytes);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = Command::parse(text);
    }
});
