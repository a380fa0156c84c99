//! Pattern cost limits at the edge (issue #10): a pattern over the per-pattern limits, or
//! over the connection's `*` budget, is refused with
//! `ERR:pattern_too_complex:SUB:<tenant>:<pattern>:<why>`; the connection stays usable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::*;
use fastpubsub_core::frame::Mode;
use fastpubsub_core::pattern::{MAX_PATTERN_SEGMENTS, MAX_PATTERN_STARS, MAX_STARS_PER_CONNECTION};
use fastpubsub_relay::limits::Limits;

#[test]
fn too_deep_or_too_wild_patterns_are_refused_with_the_reason() {
    let relay = TestRelay::start(Limits::default());
    let mut ws = connect(&relay);
    // The attack pattern: 124 segments alternating a literal and `*`.
    let alternating = (0..124)
        .map(|j| if j % 2 == 0 { "a" } else { "*" })
        .collect::<Vec<_>>()
        .join(".");
    send_text(&mut ws, &format!("SUB:t1:{alternating}"));
    assert_eq!(
        next_text(&mut ws),
        format!(
            "ERR:pattern_too_complex:SUB:t1:{alternating}:the pattern has 124 segments, the maximum is {MAX_PATTERN_SEGMENTS} (end it with '#' to match deeper channels)"
        )
    );
    let stars = ["*"; MAX_PATTERN_STARS + 1].join(".");
    send_text(&mut ws, &format!("SUB:t1:{stars}"));
    let reply = next_text(&mut ws);
    assert!(
        reply.starts_with(&format!(
            "ERR:pattern_too_complex:SUB:t1:{stars}:the pattern has 4 '*' wildcards"
        )),
        "{reply}"
    );
    // At the limits: accepted, and it delivers.
    let deepest = vec!["a"; MAX_PATTERN_SEGMENTS - 1].join(".") + ".#";
    subscribe(&mut ws, "t1", &deepest);
    let mut publ = connect(&relay);
    let channel = vec!["a"; 40].join(".");
    publish(&mut publ, Mode::Broadcast, "t1", &channel, b"deep");
    let d = next_deliver(&mut ws);
    assert_eq!((d.channel, d.patterns), (channel, vec![deepest]));
}

#[test]
fn a_connection_has_a_star_budget() {
    let relay = TestRelay::start(Limits::default());
    let mut ws = connect(&relay);
    let per_pattern = MAX_PATTERN_STARS;
    let full = MAX_STARS_PER_CONNECTION / per_pattern;
    for i in 0..full {
        subscribe(&mut ws, "t1", &format!("r{i}.*.*.*"));
    }
    let held = full * per_pattern;
    let room = MAX_STARS_PER_CONNECTION - held;
    // One `*` more than the budget has room for, within the per-pattern limit.
    assert!(room < per_pattern);
    let over = format!("x.{}", vec!["*"; room + 1].join("."));
    send_text(&mut ws, &format!("SUB:t1:{over}"));
    assert_eq!(
        next_text(&mut ws),
        format!(
            "ERR:pattern_too_complex:SUB:t1:{over}:this connection's subscriptions hold {held} '*' wildcards and this pattern adds {}, the maximum per connection is {MAX_STARS_PER_CONNECTION} (unsubscribe some, or use '#')",
            room + 1
        )
    );
    // Patterns without `*` still fit, and a repeated SUB costs nothing.
    subscribe(&mut ws, "t1", "x.#");
    subscribe(&mut ws, "t1", "r0.*.*.*");
    // Another connection has its own budget.
    let mut other = connect(&relay);
    subscribe(&mut other, "t1", &over);
    // UNSUB gives the budget back.
    send_text(&mut ws, "UNSUB:t1:r0.*.*.*");
    assert_eq!(next_text(&mut ws), "OK:UNSUB:t1:r0.*.*.*");
    subscribe(&mut ws, "t1", &over);
    send_text(&mut ws, "PING");
    assert_eq!(next_text(&mut ws), "PONG");
    // The refusal is counted (`/stats`, and `/metrics` as edge limit `pattern_too_complex`).
    assert_eq!(relay.stats()["refused_pattern_too_complex"], 1);
}
