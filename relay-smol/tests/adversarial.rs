//! The adversarial suite (issue #10, item 8): bounded, loopback-only attacks on a RELEASE
//! relay process while a healthy control client publishes and subscribes 100 msg/s. Each
//! scenario asserts that the relay stays up, the control client gets ≥ 99 % of its messages
//! with p99 under 100 ms (`FASTPUBSUB_ADVERSARIAL_P99_MS` overrides), and the relay's peak RSS
//! stays under the documented bound (docs/edge.md, "Worst-case memory") for the connections
//! the attack held. The p99 limit is 100 ms plus the longest a thread of the test process was
//! kept from running (a loaded machine stalls any process now and then; a few ms on a quiet
//! one; the summary shows it), and a scenario that fails on the p99 alone runs once more; the
//! second run must pass.
//!
//! The library (relay process, control client, RSS watch, attacks) is
//! `tests/adversarial_lib/`; its module doc says how to add a scenario. All scenarios run in
//! one test, one after the other, each against a fresh relay (they would disturb each
//! other's control client if run in parallel); every summary is printed before the first
//! failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod adversarial_lib;

use std::time::{Duration, Instant};

use adversarial_lib::{Outcome, Relay, attacks, scenario};

/// One scenario's outcome and the bound it is held to.
struct Checked {
    outcome: Outcome,
    bound_kib: u64,
}

fn run(
    checked: &mut Vec<Checked>,
    name: &str,
    extra: &[&str],
    secs: u64,
    attack: impl Fn(&Relay, Instant) -> adversarial_lib::AttackReport,
) {
    // FASTPUBSUB_ADVERSARIAL_ONLY=<part of a name> runs only the matching scenarios.
    if let Ok(only) = std::env::var("FASTPUBSUB_ADVERSARIAL_ONLY")
        && !name.contains(only.as_str())
    {
        return;
    }
    let attempt = || {
        let mut relay = Relay::start(extra);
        let outcome = scenario(&mut relay, name, Duration::from_secs(secs), &attack);
        // The control client holds two connections and makes a handshake now and then.
        let bound_kib = relay.bound_for(
            outcome.attack.peak_conns + 2,
            outcome.attack.peak_pending + 2,
        );
        eprintln!("{}", outcome.summary(bound_kib));
        Checked { outcome, bound_kib }
    };
    let mut c = attempt();
    // A control p99 over the limit with everything else fine can be the loaded test machine
    // (2 cores shared by many builds stall any process for 100+ ms now and then): one more
    // run, against a fresh relay, must pass. A relay that really slows the control client
    // fails both.
    if c.outcome.only_latency_failed(c.bound_kib) {
        eprintln!(
            "   control p99 over {:?} with everything else held: running the scenario once more",
            c.outcome.p99_allowed()
        );
        c = attempt();
    }
    checked.push(c);
}

/// The flooders read only once their writes have stalled for 500 ms, maybe twice (the relay
/// discards 256 KiB of input after its close, then stops reading); the relay keeps its
/// reason and Close frame for them until its close timeout (2 s by default, then it drops
/// the socket, and that resets it when the flooder's input is still unread). A longer close
/// timeout keeps the check "every flooder is told why" from depending on the thread
/// scheduling of a loaded test machine.
const FLOODERS_READ_LATE: &[&str] = &["--close-timeout-ms", "10000"];

#[test]
fn edge_attacks() {
    let started = Instant::now();
    let limit = fastpubsub_relay::cli::run::raise_fd_limit().unwrap_or(1024);
    assert!(
        limit >= 2048,
        "the open-files limit {limit} is too low for this suite"
    );
    // The half-open flood holds up to 2,000 sockets in this process (twice the cap).
    let per_source = ((limit as usize).saturating_sub(1000) / 20).min(100);
    let mut checked = Vec::new();

    run(
        &mut checked,
        "WebSocket Ping flood, 4 non-readers",
        FLOODERS_READ_LATE,
        5,
        |r, until| attacks::ping_flood(r, until, 4, true, 2_000_000),
    );
    run(
        &mut checked,
        "PING flood, 4 non-readers",
        FLOODERS_READ_LATE,
        4,
        |r, until| attacks::ping_flood(r, until, 4, false, 2_000_000),
    );
    run(
        &mut checked,
        "duplicate SUB/UNSUB flood, 4 non-readers",
        FLOODERS_READ_LATE,
        4,
        |r, until| attacks::sub_unsub_flood(r, until, 4, 2_000_000),
    );
    run(
        &mut checked,
        "refused-publish flood, 4 non-readers",
        FLOODERS_READ_LATE,
        4,
        |r, until| attacks::refused_publish_flood(r, until, 4, 2_000_000),
    );
    run(
        &mut checked,
        "non-reading subscribers of a firehose, 10 x 16 KiB messages at 4 MB/s",
        &[],
        9,
        |r, until| attacks::non_reading_subscribers(r, until, 10, 16 * 1024),
    );
    run(
        &mut checked,
        "pattern-heavy subscriptions, 40 x 256, 300 publishes/s",
        &[],
        5,
        |r, until| attacks::pattern_heavy(r, until, 40, 256, 124, 300),
    );
    run(
        &mut checked,
        &format!("half-open handshake flood, 20 sources x {per_source}"),
        &[],
        8,
        |r, until| attacks::half_open_flood(r, until, 20, per_source),
    );
    run(
        &mut checked,
        "forged-ticket flood, 10 sources",
        &[],
        4,
        |r, until| attacks::forged_ticket_flood(r, until, 10),
    );
    run(
        &mut checked,
        "oversized and garbage frames",
        &[],
        10,
        |r, until| attacks::garbage_frames(r, until, 2),
    );

    eprintln!(
        "adversarial suite: {} scenarios in {:.1} s",
        checked.len(),
        started.elapsed().as_secs_f64()
    );
    for c in &checked {
        c.outcome.assert_healthy(c.bound_kib);
    }
}
