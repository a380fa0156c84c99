//! The link emulator adds the configured delay and loss, and takes changes while running.

#![allow(clippy::disallowed_methods)]

mod mesh_common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mesh_common::Emu;

/// An echo server on its own thread; returns its address.
fn echo() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = s.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Send `count` numbered packets `gap` apart through the emulator; returns the RTTs of
/// those that came back (each waited for at most `wait`).
fn measure(emu: &Emu, count: u32, gap: Duration, wait: Duration) -> Vec<Duration> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_nonblocking(true).expect("nonblocking");
    let mut sent = Vec::new();
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    let mut drain = |rtts: &mut Vec<Duration>, sent: &Vec<Instant>| {
        while let Ok((n, _)) = s.recv_from(&mut buf) {
            if n == 4 {
                let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if let Some(t) = sent.get(i) {
                    rtts.push(t.elapsed());
                }
            }
        }
    };
    for i in 0..count {
        sent.push(Instant::now());
        s.send_to(&i.to_be_bytes(), emu.listen).expect("send");
        std::thread::sleep(gap);
        drain(&mut rtts, &sent);
    }
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline && rtts.len() < count as usize {
        drain(&mut rtts, &sent);
        std::thread::sleep(Duration::from_micros(200));
    }
    rtts
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[test]
fn delay_is_added_and_changeable() {
    let emu = Emu::start(echo(), &["--delay", "20ms"]);
    let mut rtts = measure(&emu, 50, Duration::from_millis(2), Duration::from_secs(2));
    assert_eq!(rtts.len(), 50, "no loss configured");
    let m = median(&mut rtts);
    eprintln!("delay 20ms each way: median RTT {m:?}");
    assert!(
        m >= Duration::from_millis(40) && m < Duration::from_millis(48),
        "{m:?}"
    );

    // Change while running: only the forward direction slower.
    let reply = emu.cmd("delay fwd 50ms").expect("control reply");
    assert!(reply.contains("\"delay_ms\":50.000"), "{reply}");
    let mut rtts = measure(&emu, 30, Duration::from_millis(2), Duration::from_secs(2));
    assert_eq!(rtts.len(), 30);
    let m = median(&mut rtts);
    eprintln!("delay 50ms fwd + 20ms rev: median RTT {m:?}");
    assert!(
        m >= Duration::from_millis(70) && m < Duration::from_millis(78),
        "{m:?}"
    );
    assert!(emu.cmd("nonsense 3").expect("reply").contains("error"));
}

#[test]
fn loss_ratio() {
    let emu = Emu::start(echo(), &["--delay", "1ms"]);
    let reply = emu.cmd("loss fwd 20%").expect("reply");
    assert!(reply.contains("\"loss_pct\":20.000"), "{reply}");
    let rtts = measure(
        &emu,
        2000,
        Duration::from_micros(100),
        Duration::from_secs(2),
    );
    // Binomial(2000, 0.8): mean 1600, sd ≈ 17.9; ±5 sd.
    let got = rtts.len();
    eprintln!("loss 20% one way: {got}/2000 came back");
    assert!((1510..=1690).contains(&got), "{got}");
    let stats = emu.cmd("stats").expect("stats");
    assert!(
        stats.contains("\"rev\":{\"delay_ms\":1.000,\"jitter_ms\":0.000,\"loss_pct\":0.000"),
        "{stats}"
    );
}
