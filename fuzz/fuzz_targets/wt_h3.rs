//! The WebTransport edge's HTTP/3 input (`wt::h3::wire`): frame headers and stream prefixes,
//! the peer's control stream, the request stream up to its HEADERS, the extended CONNECT and
//! its response (QPACK), HTTP datagram prefixes. The first byte picks where the stream is
//! split in two: a split stream must decode as it does whole.
#![no_main]

use fastpubsub_relay::wt::h3::wire::{self, ControlIn, HeadIn};
use libfuzzer_sys::fuzz_target;

fn field_section(bytes: &[u8]) {
    let checked = wire::check_field_section(bytes);
    if let Ok(fields) = wire::decode_fields(bytes) {
        assert!(fields.len() <= checked.expect("decoded only after the check"));
    }
    if let Ok(req) = wire::decode_request(bytes) {
        assert!(req.path.starts_with('/') && !req.authority.is_empty());
        let _ = req.token();
    }
    if let Ok((status, _)) = wire::decode_response(bytes) {
        assert!((100..=599).contains(&status));
    }
}

fuzz_target!(|bytes: &[u8]| {
    let cut = bytes.first().map_or(0, |&b| usize::from(b) % (bytes.len() + 1));
    let (x, y) = bytes.split_at(cut);
    let _ = wire::varint_decode(bytes);
    let _ = wire::frame_header(bytes);
    let _ = wire::uni_type(bytes);
    let _ = wire::bidi_header(bytes);
    let _ = wire::datagram_session(bytes);
    let _ = wire::check_settings(bytes);
    field_section(bytes);

    let mut whole = ControlIn::default();
    let a = whole.push(bytes).map_err(|e| e.code);
    let mut split = ControlIn::default();
    let b = split.push(x).map_err(|e| e.code).and_then(|()| split.push(y).map_err(|e| e.code));
    assert_eq!(a, b);
    assert!(whole.buffered() <= wire::MAX_CONTROL_FRAME + wire::MAX_FRAME_HEADER || a.is_err());

    let mut whole = HeadIn::default();
    let a = whole.push(bytes).map(|p| p.map(<[u8]>::to_vec)).map_err(|e| e.code);
    let mut split = HeadIn::default();
    let b = match split.push(x) {
        Ok(Some(p)) => Ok(Some(p.to_vec())),
        Ok(None) => split.push(y).map(|p| p.map(<[u8]>::to_vec)).map_err(|e| e.code),
        Err(e) => Err(e.code),
    };
    assert_eq!(a, b);
    if let Ok(Some(p)) = a {
        assert!(p.len() <= wire::MAX_HEADERS_LEN);
        field_section(&p);
    }
});
