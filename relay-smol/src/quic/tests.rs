//! The socket-free QUIC layers driven through the virtual-time network of
//! [`super::harness`]: mesh traffic (handshake, control frames, messages, datagrams, close,
//! loss, bounded queues) and the admission hardening under handshake floods.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, Side};

use super::admission::AdmissionLimits;
use super::framing::MAX_CONTROL_FRAME;
use super::harness::{Attacker, MeshHost, Net, Pki, Sources};
use super::tls::cert_is_valid_for;
use super::transport::{
    BacklogState, MAX_CONTROL_BACKLOG, MAX_QUEUED_MESSAGES, QuicEvent, SendError,
};

const A: &str = "10.0.0.1:4433";
const B: &str = "10.0.0.2:4433";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

/// Two mesh hosts, `a` (index 0) and `b` (index 1), 10 ms apart; `a` dials `b` and both
/// see the handshake complete. Returns the net and `a`'s handle of the link.
fn pair(pki: &Pki) -> (Net, ConnectionHandle) {
    let mut net = Net::new(Duration::from_millis(10));
    net.add(MeshHost::new(
        pki,
        "alpha",
        addr(A),
        AdmissionLimits::default(),
    ));
    net.add(MeshHost::new(
        pki,
        "beta",
        addr(B),
        AdmissionLimits::default(),
    ));
    let now = net.now;
    let h = net.mesh(0).t.connect(now, addr(B), "beta").expect("dial");
    assert!(
        net.run_until(Duration::from_secs(2), |n| n.mesh(0).connected().is_some()
            && n.mesh(1).connected().is_some()),
        "handshake did not complete"
    );
    (net, h)
}

fn b_conn(net: &mut Net) -> ConnectionHandle {
    net.mesh(1).connected().expect("b connected")
}

#[test]
fn handshake_names_both_sides() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    // Mutual TLS: each side got the other's certificate, and it names the peer.
    for (i, side, peer) in [(0, Side::Client, "beta"), (1, Side::Server, "alpha")] {
        let ev = net.mesh(i).events.iter().find_map(|e| match e {
            QuicEvent::Connected {
                side, peer_cert, ..
            } => Some((*side, peer_cert.clone())),
            _ => None,
        });
        let (got_side, cert) = ev.expect("connected event");
        assert_eq!(got_side, side);
        assert!(cert_is_valid_for(&cert.expect("peer cert"), peer));
    }
    assert_eq!(net.mesh(0).connected(), Some(h));
    // Three round trips at most (10 ms one way), whatever the CPU.
    assert!(
        net.elapsed() < Duration::from_millis(80),
        "{:?}",
        net.elapsed()
    );
}

#[test]
fn control_frames_arrive_whole_and_in_order_both_ways() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    let now = net.now;
    let big: Vec<u8> = (0..MAX_CONTROL_FRAME).map(|i| (i % 253) as u8).collect();
    let t = &mut net.mesh(0).t;
    t.send_control(now, h, b"one").expect("send");
    t.send_control(now, h, &big).expect("send");
    t.send_control(now, h, b"").expect("send");
    t.send_control(now, h, b"three").expect("send");
    assert_eq!(
        t.send_control(now, h, &vec![0; MAX_CONTROL_FRAME + 1]),
        Err(SendError::TooLarge)
    );
    assert!(net.run_until(Duration::from_secs(5), |n| n.mesh(1).control().len() == 4));
    let got = net.mesh(1).control();
    assert_eq!(got[0], b"one");
    assert_eq!(got[1], big);
    assert!(got[2].is_empty());
    assert_eq!(got[3], b"three");
    // The accepting side answers on the same stream.
    let hb = b_conn(&mut net);
    let now = net.now;
    net.mesh(1).t.send_control(now, hb, b"back").expect("send");
    assert!(
        net.run_until(Duration::from_secs(1), |n| n.mesh(0).control()
            == vec![b"back".to_vec()])
    );
    // Counted: 4-byte prefix per frame.
    let s = net.mesh(0).t.stats();
    assert_eq!(
        s.control_bytes_sent,
        (3 + MAX_CONTROL_FRAME + 5 + 4 * 4) as u64
    );
}

#[test]
fn messages_arrive_once_each() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    let now = net.now;
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    net.mesh(0)
        .t
        .send_message(h, Bytes::from(big.clone()))
        .expect("send");
    for i in 0..500u32 {
        let m = [&i.to_be_bytes()[..], &[8u8; 96]].concat();
        net.mesh(0).t.send_message(h, Bytes::from(m)).expect("send");
    }
    let _ = now;
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.mesh(1).messages().len()
            == 501)
    );
    let mut got = net.mesh(1).messages();
    assert!(got.contains(&big), "the big message arrived intact");
    got.retain(|m| m.len() == 100);
    let mut ids: Vec<u32> = got
        .iter()
        .map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]]))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..500).collect::<Vec<_>>());
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.mesh(1).messages().len(), 501, "no duplicates");
}

#[test]
fn datagrams_are_delivered_and_counted_by_kind() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    // Kind 2 is "probe".
    net.mesh(0)
        .t
        .send_datagram(h, Bytes::from_static(&[2, 1, 2, 3]))
        .expect("send");
    assert!(
        net.run_until(Duration::from_secs(1), |n| n.mesh(1).datagrams()
            == vec![vec![2, 1, 2, 3]])
    );
    assert_eq!(net.mesh(0).t.control_by_kind()[2], [4, 0]);
    assert_eq!(net.mesh(1).t.control_by_kind()[2], [0, 4]);
}

#[test]
fn close_reaches_both_sides_once_and_frees_the_slot() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    let now = net.now;
    net.mesh(0).t.close(now, h, 3, "already linked");
    assert!(
        net.run_until(Duration::from_secs(5), |n| !n.mesh(0).lost().is_empty()
            && !n.mesh(1).lost().is_empty())
    );
    let lost_b = net.mesh(1).lost();
    assert_eq!(lost_b.len(), 1);
    assert!(lost_b[0].0, "was connected");
    assert!(lost_b[0].1.contains("already linked"), "{}", lost_b[0].1);
    assert_eq!(net.mesh(0).lost().len(), 1);
    // The dead handle refuses sends.
    assert_eq!(
        net.mesh(0).t.send_message(h, Bytes::from_static(b"x")),
        Err(SendError::NoConnection)
    );
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.mesh(0).t.connection_count(), 0);
    assert_eq!(net.mesh(1).t.connection_count(), 0);
    assert_eq!(net.mesh(0).lost().len(), 1, "Lost is reported once");
}

/// 10 % of datagrams lost both ways: every control frame and message still arrives once;
/// datagrams (probes) may be lost.
#[test]
fn reliable_traffic_survives_loss() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    let mut rng = fastrand::Rng::with_seed(42);
    net.set_filter(Some(Box::new(move |_| rng.u8(..100) >= 10)));
    let now = net.now;
    for i in 0..200u32 {
        let m = [&i.to_be_bytes()[..], &[8u8; 96]].concat();
        net.mesh(0).t.send_message(h, Bytes::from(m)).expect("send");
        net.mesh(0)
            .t
            .send_control(now, h, &i.to_be_bytes())
            .expect("send");
        let _ = net.mesh(0).t.send_datagram(h, Bytes::from_static(&[2, 0]));
    }
    assert!(
        net.run_until(Duration::from_secs(30), |n| n.mesh(1).messages().len()
            == 200
            && n.mesh(1).control().len() == 200)
    );
    let ctrl = net.mesh(1).control();
    for (i, f) in ctrl.iter().enumerate() {
        assert_eq!(f[..], (i as u32).to_be_bytes(), "in order");
    }
    assert!(net.dropped > 0);
    net.run_for(Duration::from_secs(1));
    assert_eq!(net.mesh(1).messages().len(), 200, "no duplicates");
    assert!(net.mesh(1).datagrams().len() <= 200);
}

/// A link whose peer stops answering: messages queue up to the bound, the rest are refused
/// and counted; the control backlog is bounded by closing the link.
#[test]
fn queues_are_bounded_when_the_peer_goes_silent() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    let b = addr(B);
    net.set_filter(Some(Box::new(move |p| p.to != b)));
    let now = net.now;
    let mut refused = 0;
    for i in 0..(MAX_QUEUED_MESSAGES as u32 * 4) {
        let m = Bytes::from([&i.to_be_bytes()[..], &[8u8; 96]].concat());
        if net.mesh(0).t.send_message(h, m) == Err(SendError::QueueFull) {
            refused += 1;
        }
        if i % 256 == 0 {
            net.run_for(Duration::from_millis(100)); // well inside the idle timeout
        }
    }
    assert!(refused > 0);
    assert_eq!(net.mesh(0).t.stats().messages_dropped_queue, refused);
    assert!(net.mesh(0).t.queued_messages(h) <= MAX_QUEUED_MESSAGES);
    // Control frames pile up to the backlog bound, then the link is closed.
    let frame = vec![4u8; MAX_CONTROL_FRAME];
    let mut closed = false;
    for _ in 0..(2 * MAX_CONTROL_BACKLOG / MAX_CONTROL_FRAME) {
        match net.mesh(0).t.send_control(now, h, &frame) {
            Ok(()) => {}
            Err(SendError::QueueFull) => {
                closed = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(closed, "backlog bound reached");
    assert_eq!(net.mesh(0).t.stats().control_closed, 1);
}

// ----- hardening: handshake floods ---------------------------------------------------

const ATTACKER: &str = "10.9.9.9:5555";
const C: &str = "10.0.0.3:4433";

/// `b` (index 0) under `limits`, an attacker (index 1) opening `count` connections at
/// 100/s, and `c` (index 2), a real relay that will dial `b`.
fn flooded(
    pki: &Pki,
    limits: AdmissionLimits,
    count: usize,
    follow_retry: bool,
    sources: Sources,
) -> Net {
    let mut net = Net::new(Duration::from_millis(5));
    net.add(MeshHost::new(pki, "beta", addr(B), limits));
    net.add(Attacker::new(
        pki,
        addr(ATTACKER),
        addr(B),
        Duration::from_millis(10),
        count,
        follow_retry,
        sources,
    ));
    net.add(MeshHost::new(
        pki,
        "gamma",
        addr(C),
        AdmissionLimits::default(),
    ));
    net
}

/// `c` dials `b` every second (as the mesh's dialler does after a failure) until a link
/// is up or `limit` passed; returns how long it took.
fn dial_until_linked(net: &mut Net, limit: Duration) -> Option<Duration> {
    let start = net.now;
    let mut next_dial = net.now;
    let linked = net.run_until(limit, |n| {
        if n.mesh(2).connected().is_some() {
            return true;
        }
        let now = n.now;
        if now >= next_dial {
            next_dial = now + Duration::from_secs(1);
            let _ = n.mesh(2).t.connect(now, addr(B), "beta");
        }
        false
    });
    linked.then(|| net.now - start)
}

/// The largest number of incoming handshakes `b` had in progress while running `d`.
fn run_watching_handshakes(net: &mut Net, d: Duration) -> usize {
    let mut max = 0;
    let _ = net.run_until(d, |n| {
        max = max.max(n.mesh(0).t.endpoint().handshakes_in_progress());
        false
    });
    max
}

/// The attack of issue #10 against the old driver (no Retry, no handshake budget apart
/// from the table, no per-source limit, handshakes held until the idle timeout): the
/// table fills and a real relay cannot get in. The hardened defaults are tested below
/// against the same flood; this test shows the scenario really is an attack.
#[test]
fn without_hardening_a_half_open_flood_locks_out_a_real_relay() {
    let pki = Pki::new();
    let legacy = AdmissionLimits {
        max_connections: 128,
        reserved_outgoing: 0,
        max_handshakes: 128,
        retry_above: usize::MAX,
        max_handshakes_per_source: usize::MAX,
        source_rate: 1e9,
        source_burst: 1e9,
        max_sources: 1024,
        handshake_timeout: Duration::from_secs(10),
    };
    let mut net = flooded(&pki, legacy, 2000, false, Sources::One);
    net.run_for(Duration::from_secs(3));
    assert_eq!(net.mesh(0).t.connection_count(), 128, "table full");
    assert_eq!(dial_until_linked(&mut net, Duration::from_secs(15)), None);
    assert!(net.mesh(0).t.stats().refused_full > 0);
}

/// The same flood against the defaults: one source gets its per-source quota (then only
/// Retry packets, which it ignores), and the real relay links at once.
#[test]
fn half_open_flood_from_one_source_is_held_to_its_quota() {
    let pki = Pki::new();
    let l = AdmissionLimits::default();
    let mut net = flooded(&pki, l, 1500, false, Sources::One);
    let max = run_watching_handshakes(&mut net, Duration::from_secs(3));
    assert_eq!(max, l.max_handshakes_per_source);
    let took = dial_until_linked(&mut net, Duration::from_secs(15)).expect("linked");
    assert!(took < Duration::from_millis(100), "{took:?}");
    let s = net.mesh(0).t.stats();
    assert!(s.retries > 250, "{s:?}");
    assert_eq!(s.accepted, l.max_handshakes_per_source as u64 + 1);
}

/// The flooder follows Retry (its address is real): it then holds its validated quota
/// too, is refused beyond it, and its handshakes time out; nothing more.
#[test]
fn half_open_flood_that_passes_retry_is_refused_and_times_out() {
    let pki = Pki::new();
    let l = AdmissionLimits::default();
    let mut net = flooded(&pki, l, 1000, true, Sources::One);
    let max = run_watching_handshakes(&mut net, Duration::from_secs(4));
    assert_eq!(
        max,
        2 * l.max_handshakes_per_source,
        "unvalidated + validated quota"
    );
    assert!(dial_until_linked(&mut net, Duration::from_secs(15)).is_some());
    let s = net.mesh(0).t.stats();
    assert!(s.refused_source_handshakes > 100, "{s:?}");
    // After the flood, the table holds only the real link (the rest timed out and drained).
    net.run_for(Duration::from_secs(15));
    let s = net.mesh(0).t.stats();
    assert_eq!(s.handshake_timeouts, s.accepted - 1, "{s:?}");
    assert_eq!(net.mesh(0).t.endpoint().handshakes_in_progress(), 0);
    assert_eq!(net.mesh(0).t.connection_count(), 1);
}

/// Spoofed sources: every Initial from a new address that never sees our answers. Past
/// `retry_above` handshakes in progress every one gets a stateless Retry, so they cost no
/// slot, and the real relay (which passes Retry) links at once.
#[test]
fn spoofed_flood_costs_no_state_past_the_retry_threshold() {
    let pki = Pki::new();
    let l = AdmissionLimits::default();
    let mut net = flooded(&pki, l, 1000, false, Sources::Spoofed);
    let max = run_watching_handshakes(&mut net, Duration::from_secs(4));
    assert_eq!(max, l.retry_above);
    let took = dial_until_linked(&mut net, Duration::from_secs(15)).expect("linked");
    assert!(took < Duration::from_millis(100), "{took:?}");
    let s = net.mesh(0).t.stats();
    assert!(s.retries > 350, "{s:?}");
    assert!(s.connections <= l.retry_above as u64 + 1, "{s:?}");
}

/// Many real addresses (a botnet) that pass Retry fill the whole handshake budget; a real
/// relay still gets in by displacing the oldest handshake of a source holding more.
#[test]
fn flood_from_many_sources_is_displaced_for_a_real_relay() {
    let pki = Pki::new();
    let l = AdmissionLimits::default();
    let mut net = flooded(&pki, l, 1000, true, Sources::Many(12));
    let max = run_watching_handshakes(&mut net, Duration::from_secs(3));
    assert_eq!(max, l.max_handshakes, "the budget is full");
    let took = dial_until_linked(&mut net, Duration::from_secs(15)).expect("linked");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let s = net.mesh(0).t.endpoint().admission_stats();
    // Spread evenly over 12 addresses the flood never displaces itself; only the real
    // relay displaced one of its handshakes.
    assert_eq!(s.displaced, 1, "{s:?}");
    assert!(net.mesh(0).t.stats().refused_handshakes > 200, "{s:?}");
}

/// Incoming connections cannot take the slots reserved for dials: with every incoming
/// slot held, `b` still dials out.
#[test]
fn dials_do_not_compete_with_incoming_handshakes() {
    let pki = Pki::new();
    let l = AdmissionLimits {
        max_connections: 8,
        reserved_outgoing: 2,
        ..AdmissionLimits::default()
    };
    let mut net = flooded(&pki, l, 600, true, Sources::Many(6));
    net.run_for(Duration::from_secs(2));
    assert_eq!(net.mesh(0).t.endpoint().handshakes_in_progress(), 6);
    assert!(net.mesh(0).t.stats().refused_full > 0);
    let now = net.now;
    let h = net.mesh(0).t.connect(now, addr(C), "gamma").expect("dial");
    assert!(net.run_until(Duration::from_secs(2), |n| n.mesh(0).connected() == Some(h)));
}

// ----- message batches ---------------------------------------------------------------

fn msg(i: u32) -> Bytes {
    Bytes::from([&i.to_be_bytes()[..], &[8u8; 96]].concat())
}

fn ids(msgs: &[Vec<u8>]) -> Vec<u32> {
    let mut v: Vec<u32> = msgs
        .iter()
        .map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]]))
        .collect();
    v.sort_unstable();
    v
}

/// One message at a time (an idle relay): one stream each, as before batches existed.
#[test]
fn idle_messages_go_one_per_stream() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    for i in 0..5 {
        net.mesh(0).t.send_message(h, msg(i)).expect("send");
        let want = i as usize + 1;
        assert!(
            net.run_until(Duration::from_secs(1), |n| n.mesh(1).messages().len()
                == want)
        );
    }
    let s = net.mesh(0).t.stats();
    assert_eq!((s.messages_sent, s.message_streams), (5, 5));
}

/// Messages that queue up in one round go out in batches of about a packet; every one
/// arrives once.
#[test]
fn queued_messages_go_out_in_batches() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    for i in 0..500 {
        net.mesh(0).t.send_message(h, msg(i)).expect("send");
    }
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.mesh(1).messages().len()
            == 500)
    );
    assert_eq!(ids(&net.mesh(1).messages()), (0..500).collect::<Vec<_>>());
    let s = net.mesh(0).t.stats();
    assert_eq!(s.messages_sent, 500);
    // 101 bytes each in a batch: 10 per 1,100-byte batch.
    assert_eq!(s.message_streams, 50, "{s:?}");
    net.run_for(Duration::from_millis(500));
    assert_eq!(net.mesh(1).messages().len(), 500, "no duplicates");
}

/// With segmentation offload allowed, a burst leaves in transmits of several datagrams
/// (one send call each), and every message still arrives once, also when one datagram of
/// a transmit is lost.
#[test]
fn bursts_go_out_in_gso_transmits_and_survive_loss() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    net.mesh(0).t.set_max_datagrams(10);
    net.mesh(1).t.set_max_datagrams(10);
    let b = addr(B);
    let mut big = 0;
    net.set_filter(Some(Box::new(move |p| {
        // Drop the 3rd full-size datagram towards b (inside a GSO transmit).
        if p.to == b && p.bytes.len() > 1000 {
            big += 1;
            return big != 3;
        }
        true
    })));
    let before = net.segmented;
    for i in 0..500 {
        net.mesh(0).t.send_message(h, msg(i)).expect("send");
    }
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.mesh(1).messages().len()
            == 500)
    );
    assert_eq!(ids(&net.mesh(1).messages()), (0..500).collect::<Vec<_>>());
    assert!(
        net.segmented > before,
        "no transmit carried several datagrams"
    );
    assert_eq!(net.dropped, 1);
    let s = net.mesh(0).t.stats();
    // Datagrams, not transmits, are counted: on average at most one packet's size.
    assert!(s.udp_tx_bytes <= s.udp_tx * 1452, "{s:?}");
}

/// A lost packet delays only the messages it carried: the rest of the burst arrives one
/// delay later, the lost batch after the retransmission.
#[test]
fn a_lost_packet_delays_only_its_messages() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    let b = addr(B);
    let mut big = 0;
    net.set_filter(Some(Box::new(move |p| {
        // Drop the 3rd full-size datagram towards b.
        if p.to == b && p.bytes.len() > 1000 {
            big += 1;
            return big != 3;
        }
        true
    })));
    let t0 = net.now;
    // 60 messages, 6 batches: within the initial congestion window, one flight.
    for i in 0..60 {
        net.mesh(0).t.send_message(h, msg(i)).expect("send");
    }
    assert!(net.run_until(Duration::from_secs(5), |n| n.mesh(1).messages().len() == 60));
    assert_eq!(net.dropped, 1);
    let first = Duration::from_millis(15); // one one-way delay (10 ms): the first flight
    let late: Vec<u32> = net
        .mesh(1)
        .timed_messages()
        .iter()
        .filter(|(t, _)| *t - t0 > first)
        .map(|(_, m)| u32::from_be_bytes([m[0], m[1], m[2], m[3]]))
        .collect();
    // One batch (10 messages) was in the lost datagram, perhaps part of a second.
    assert!(!late.is_empty() && late.len() <= 20, "late: {late:?}");
    assert_eq!(ids(&net.mesh(1).messages()), (0..60).collect::<Vec<_>>());
}

/// A relay that does not read batches (an older version) negotiates the first ALPN and
/// gets one message per stream, however many wait.
#[test]
fn a_peer_without_batches_gets_one_message_per_stream() {
    let pki = Pki::new();
    let mut net = Net::new(Duration::from_millis(10));
    net.add(MeshHost::new(
        &pki,
        "alpha",
        addr(A),
        AdmissionLimits::default(),
    ));
    net.add(MeshHost::without_batches(&pki, "beta", addr(B)));
    let now = net.now;
    let h = net.mesh(0).t.connect(now, addr(B), "beta").expect("dial");
    assert!(net.run_until(Duration::from_secs(2), |n| n.mesh(0).connected().is_some()));
    for i in 0..100 {
        net.mesh(0).t.send_message(h, msg(i)).expect("send");
    }
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.mesh(1).messages().len()
            == 100)
    );
    assert_eq!(ids(&net.mesh(1).messages()), (0..100).collect::<Vec<_>>());
    let s = net.mesh(0).t.stats();
    assert_eq!((s.messages_sent, s.message_streams), (100, 100));
}

// ----- backlog policy ----------------------------------------------------------------

/// `a` (0) linked to `b` (1) and `c` (2); returns a's handles of both links.
fn star(pki: &Pki) -> (Net, ConnectionHandle, ConnectionHandle) {
    let mut net = Net::new(Duration::from_millis(10));
    net.add(MeshHost::new(
        pki,
        "alpha",
        addr(A),
        AdmissionLimits::default(),
    ));
    net.add(MeshHost::new(
        pki,
        "beta",
        addr(B),
        AdmissionLimits::default(),
    ));
    net.add(MeshHost::new(
        pki,
        "gamma",
        addr(C),
        AdmissionLimits::default(),
    ));
    let now = net.now;
    let hb = net.mesh(0).t.connect(now, addr(B), "beta").expect("dial");
    let hc = net.mesh(0).t.connect(now, addr(C), "gamma").expect("dial");
    assert!(
        net.run_until(Duration::from_secs(2), |n| n.mesh(0).connected_count() == 2
            && n.mesh(1).connected().is_some()
            && n.mesh(2).connected().is_some())
    );
    (net, hb, hc)
}

/// A burst larger than the link can take at once backs the link up: the intake signal is
/// on while it drains, nothing is dropped, and it goes off once the queue is low.
#[test]
fn a_burst_backs_up_the_link_and_signals_intake_without_dropping() {
    let pki = Pki::new();
    let (mut net, h) = pair(&pki);
    let signal = net.mesh(0).t.backlog_signal();
    assert!(!signal.is_set());
    // 1,000 × 1 KiB: far more than the first congestion window.
    for i in 0..1000u32 {
        let m = Bytes::from([&i.to_be_bytes()[..], &[8u8; 1020]].concat());
        net.mesh(0).t.send_message(h, m).expect("queued");
    }
    net.step();
    let b = net.mesh(0).t.backlog(h).expect("link");
    assert_eq!(b.state, BacklogState::BackedUp, "{b:?}");
    assert!(signal.is_set());
    assert!(
        net.run_until(Duration::from_secs(10), |n| n.mesh(1).messages().len()
            == 1000)
    );
    assert!(!signal.is_set());
    let s = net.mesh(0).t.stats();
    assert_eq!(s.messages_dropped_queue, 0);
    assert_eq!((s.backpressure_episodes, s.links_backed_up), (1, 0));
    assert!(s.backpressure_ms < 1000, "{s:?}");
}

/// A next hop that stops answering is the mesh's slow consumer: after LINK_SLOW_AFTER it no
/// longer holds the intake signal, its overflow is dropped and counted for it alone, and
/// the other next hop keeps getting every message.
#[test]
fn a_slow_link_drops_for_itself_only() {
    let pki = Pki::new();
    let (mut net, hb, hc) = star(&pki);
    let b = addr(B);
    net.set_filter(Some(Box::new(move |p| p.to != b && p.from != b)));
    let signal = net.mesh(0).t.backlog_signal();
    let mut sent_c = 0;
    for round in 0..40u32 {
        for i in 0..100u32 {
            let big = Bytes::from([&i.to_be_bytes()[..], &[8u8; 1020]].concat());
            let _ = net.mesh(0).t.send_message(hb, big);
            net.mesh(0)
                .t
                .send_message(hc, msg(round * 100 + i))
                .expect("c's link is healthy");
            sent_c += 1;
        }
        net.run_for(Duration::from_millis(50));
        if round == 5 {
            // Backed up but not yet slow: intake is told to wait.
            assert!(signal.is_set());
            let b = net.mesh(0).t.backlog(hb).expect("b");
            assert_eq!(b.state, BacklogState::BackedUp, "{b:?}");
        }
    }
    let lost = net.mesh(0).lost();
    assert!(lost.is_empty(), "{lost:?} at {:?}", net.elapsed());
    assert_eq!(
        net.mesh(0).t.backlog(hb).expect("b").state,
        BacklogState::Slow
    );
    assert!(!signal.is_set(), "a slow link does not hold intake back");
    assert!(
        net.run_until(Duration::from_secs(5), |n| n.mesh(2).messages().len()
            == sent_c)
    );
    let s = net.mesh(0).t.stats();
    assert!(s.messages_dropped_slow_link > 0, "{s:?}");
    assert!(s.messages_dropped_slow_link <= s.messages_dropped_queue);
    assert_eq!(s.links_slow, 1);
}
