//! The WebTransport edge's LLPS input: control-stream frames (`kind | len | payload`), line
//! frames (`len | payload`), `SUB` delivery options, and the whole control-stream path of a
//! session into a broker (`wt::session::feed_control`) with a WebSocket subscriber. The first
//! byte picks the chunk size the stream arrives in.
#![no_main]

use std::time::Duration;

use fastpubsub_relay::auth::AllowAll;
use fastpubsub_relay::broker::Broker;
use fastpubsub_relay::limits::Limits;
use fastpubsub_relay::wt::frame::{self, ControlReader, MAX_FRAME, push_control};
use fastpubsub_relay::wt::session::feed_control;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let chunk = bytes.first().map_or(1, |&b| usize::from(b % 64) + 1);
    for line in [false, true] {
        let mut r = if line { ControlReader::line() } else { ControlReader::default() };
        let mut frames: Vec<(u8, Vec<u8>)> = Vec::new();
        if r.push(bytes, &mut |k, f| frames.push((k, f.to_vec()))).is_ok() {
            let mut again = Vec::new();
            for (k, f) in &frames {
                assert!(*k <= frame::KIND_TEXT && f.len() <= MAX_FRAME);
                if line {
                    again.extend_from_slice(&(f.len() as u32).to_be_bytes());
                    again.extend_from_slice(f);
                } else {
                    push_control(*k, f, &mut again);
                }
            }
            assert_eq!(&bytes[..again.len()], &again[..]);
        }
    }
    if let Ok(o) = frame::split_options(&String::from_utf8_lossy(bytes)) {
        let canonical = match o.target {
            frame::Target::Control => None,
            frame::Target::Line(l) => Some(format!("{}:U:{l}:{}", o.pattern, o.kbps)),
            frame::Target::Datagram => Some(format!("{}:D:{}", o.pattern, o.kbps)),
        };
        if let Some(c) = canonical {
            assert_eq!(frame::split_options(&c), Ok(o));
        }
    }
    let limits = Limits {
        queue_bytes: 64 * 1024,
        slow_consumer_grace: Duration::from_secs(3600),
        ..Limits::default()
    };
    let mut b = Broker::new(limits, fastpubsub_relay::clock::now());
    let (Some(id), Some(ws)) = (b.register_wt(Box::new(AllowAll)), b.register(Box::new(AllowAll)))
    else {
        return;
    };
    let _ = b.subscribe(ws, "t", "#");
    let mut r = ControlReader::default();
    for c in bytes.chunks(chunk) {
        if feed_control(&mut r, &mut b, id, c).is_err() {
            break;
        }
    }
    assert!(b.subscription_count() <= 1 + b.limits().max_subs_per_conn);
});
