//! Config files (`run --config FILE`).
#![no_main]

use fastpubsub_relay::config_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = config_file::parse(text);
        let _ = config_file::from_text(text, std::path::Path::new("fuzz.toml"));
    }
});
