//! The edge attacks of issue #10, each bounded in count and in time (`until`), each returning
//! an [`AttackReport`] that says what it sent and how the relay answered.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{AttackReport, RawWs, Relay, Tally, client_frame, connect_from, publish_frame};

/// The `n`-th attack source address: 127.0.0.(10 + n).
pub fn source(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + (n % 200) as u8)
}

/// Writes `frame` repeated `batch` times per write, until `until`, a write error (the relay
/// stopped reading us long enough for the write timeout, or closed us) or `max_frames`.
/// Returns the frames written.
fn flood(ws: &mut RawWs, frame: &[u8], batch: usize, max_frames: u64, until: Instant) -> u64 {
    let chunk: Vec<u8> = frame
        .iter()
        .copied()
        .cycle()
        .take(frame.len() * batch)
        .collect();
    let _ = ws
        .stream
        .set_write_timeout(Some(Duration::from_millis(500)));
    let mut sent = 0u64;
    while Instant::now() < until && sent < max_frames {
        if ws.stream.write_all(&chunk).is_err() {
            break;
        }
        sent += batch as u64;
    }
    sent
}

/// How a flooding connection ended: reads (bounded) until the relay's close; counts
/// `closed <code> after ERR:<reason>` and returns whether it was closed with 1008.
fn ending(ws: &mut RawWs, tally: &Tally) -> bool {
    let _ = ws.stream.set_read_timeout(Some(Duration::from_secs(10)));
    let (last, code) = ws.read_until_close(2_000_000);
    if code.is_none() {
        tally.add(
            &format!(
                "ended without a close: eof={} after {} frames, last={last:?}",
                ws.closed, ws.frames_read
            ),
            1,
        );
    }
    let reason = last
        .as_deref()
        .and_then(|t| t.strip_prefix("ERR:"))
        .and_then(|t| t.split(':').next())
        .unwrap_or("none");
    match code {
        Some(c) => tally.add(&format!("closed {c} after ERR:{reason}"), 1),
        None => tally.add(&format!("not closed (last ERR:{reason})"), 1),
    }
    if code == Some(1008) {
        tally.add("closed with 1008", 1);
    }
    code == Some(1008)
}

/// Joins flooder threads and reports; expects every flooder to be closed with 1008.
fn flooders_report(name: &str, conns: usize, tally: &Tally) -> AttackReport {
    let mut rep = AttackReport::new(name);
    rep.peak_conns = conns;
    let closed = tally.get("closed with 1008");
    rep.expect(
        format!("every flooder closed with 1008 and a reason ({closed} of {conns})"),
        closed == conns as u64,
    );
    for l in tally.lines() {
        rep.note(l);
    }
    rep
}

/// `conns` connections that never read, each sending WebSocket Pings (`ws_ping`) or text
/// `PING`s as fast as the relay takes them, up to `max_frames` each.
pub fn ping_flood(
    relay: &Relay,
    until: Instant,
    conns: usize,
    ws_ping: bool,
    max_frames: u64,
) -> AttackReport {
    let ticket = relay.ticket("public.#", "public.#");
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let (addr, ticket, tally) = (relay.addr, ticket.clone(), tally.clone());
            std::thread::spawn(move || {
                let Ok(mut ws) = RawWs::connect(source(i), addr, &ticket) else {
                    tally.add("handshake refused", 1);
                    return;
                };
                let frame = if ws_ping {
                    client_frame(true, 0x9, &[b'p'; 125])
                } else {
                    client_frame(true, 0x1, b"PING")
                };
                let sent = flood(&mut ws, &frame, 1000, max_frames, until);
                tally.add("frames sent", sent);
                ending(&mut ws, &tally);
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let mut rep = flooders_report(
        if ws_ping {
            "WebSocket Ping flood from non-readers"
        } else {
            "PING flood from non-readers"
        },
        conns,
        &tally,
    );
    // The limits that held it are visible to the operator.
    let limit = |l: &str| format!("fastpubsub_edge_limit_hits_total{{limit=\"{l}\"}}");
    let rated = relay.metric_at_least(&limit("command_rate"), 1.0);
    let closed = relay.metric_at_least(&limit("rate_limit_close"), conns as f64);
    rep.expect(
        format!("/metrics counts them: command_rate {rated}, rate_limit_close {closed}"),
        rated >= 1.0 && closed >= conns as f64,
    );
    rep
}

/// `conns` non-reading connections alternating `SUB` and `UNSUB` of one pattern as fast as
/// the relay takes them.
pub fn sub_unsub_flood(
    relay: &Relay,
    until: Instant,
    conns: usize,
    max_frames: u64,
) -> AttackReport {
    let ticket = relay.ticket("public.#", "public.#");
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let (addr, ticket, tally) = (relay.addr, ticket.clone(), tally.clone());
            std::thread::spawn(move || {
                let Ok(mut ws) = RawWs::connect(source(i), addr, &ticket) else {
                    tally.add("handshake refused", 1);
                    return;
                };
                let mut pair = client_frame(true, 0x1, b"SUB:t1:public.dup.#");
                pair.extend_from_slice(&client_frame(true, 0x1, b"UNSUB:t1:public.dup.#"));
                let sent = flood(&mut ws, &pair, 500, max_frames / 2, until) * 2;
                tally.add("commands sent", sent);
                ending(&mut ws, &tally);
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    flooders_report("duplicate SUB/UNSUB flood", conns, &tally)
}

/// `conns` non-reading connections publishing where their ticket does not allow
/// (`private.x` with a `public.#` ticket), as fast as the relay takes them.
pub fn refused_publish_flood(
    relay: &Relay,
    until: Instant,
    conns: usize,
    max_frames: u64,
) -> AttackReport {
    let ticket = relay.ticket("public.#", "public.#");
    let tally = Arc::new(Tally::default());
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let (addr, ticket, tally) = (relay.addr, ticket.clone(), tally.clone());
            std::thread::spawn(move || {
                let Ok(mut ws) = RawWs::connect(source(i), addr, &ticket) else {
                    tally.add("handshake refused", 1);
                    return;
                };
                let frame = client_frame(true, 0x2, &publish_frame("t1", "private.x", b"no"));
                let sent = flood(&mut ws, &frame, 1000, max_frames, until);
                tally.add("refused publishes sent", sent);
                ending(&mut ws, &tally);
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    flooders_report("refused-publish flood from non-readers", conns, &tally)
}

/// `subs` subscribers that never read, and one publisher sending `payload`-byte messages to
/// all of them as fast as it can until `until`: each subscriber's budget fills, deliveries
/// to it are dropped, and it is closed as a slow consumer after the grace.
pub fn non_reading_subscribers(
    relay: &Relay,
    until: Instant,
    subs: usize,
    payload: usize,
) -> AttackReport {
    let ticket = relay.ticket_with("public.#", "public.#", &["--ingress-kb", "16384"]);
    let tally = Tally::default();
    let mut stuck = Vec::new();
    for i in 0..subs {
        // A small receive buffer: the relay's budget fills, not the kernel's buffers.
        match RawWs::connect_with(source(i), relay.addr, &ticket, Some(4096)) {
            Ok(mut ws) => {
                let _ = ws.send(0x1, b"SUB:t1:public.firehose");
                let _ = ws.stream.set_read_timeout(Some(Duration::from_secs(10)));
                if let Some((0x1, t)) = ws.read_frame() {
                    tally.add(&String::from_utf8_lossy(&t), 1);
                }
                stuck.push(ws);
            }
            Err(_) => tally.add("handshake refused", 1),
        }
    }
    let mut publ = RawWs::connect(source(subs), relay.addr, &ticket).expect("publisher");
    let frame = client_frame(
        true,
        0x2,
        &publish_frame("t1", "public.firehose", &vec![7u8; payload]),
    );
    // The publisher reads what it is sent (it is healthy) and stays under its ingress limit
    // (16 MB/s): 4 MB/s of messages.
    let mut reader = RawWs {
        stream: publ.stream.try_clone().expect("clone"),
        buf: Vec::new(),
        closed: false,
        frames_read: 0,
    };
    let _ = reader
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)));
    let drain = std::thread::spawn(move || {
        let mut texts = 0u64;
        while Instant::now() < until + Duration::from_secs(1) && !reader.closed {
            if let Some((0x1, _)) = reader.read_frame() {
                texts += 1;
            }
        }
        texts
    });
    let rate = (4 << 20) / payload.max(1);
    let period = Duration::from_secs(1) / rate.max(1) as u32;
    let mut sent = 0u64;
    let mut next = Instant::now();
    // Bounded by time and by 200,000 messages.
    while Instant::now() < until && sent < 200_000 {
        if publ.stream.write_all(&frame).is_err() {
            break;
        }
        sent += 1;
        next += period;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    tally.add("messages published", sent);
    tally.add("replies to the publisher", drain.join().unwrap_or(0));
    // Now the stuck ones read: whatever was queued, then the reason and the close.
    for (i, mut ws) in stuck.into_iter().enumerate() {
        if !ending(&mut ws, &tally) {
            tally.add(&format!("subscriber {i} not closed"), 1);
        }
    }
    let mut rep = flooders_report("non-reading subscribers of a firehose", subs, &tally);
    rep.peak_conns = subs + 1;
    rep
}

/// The issue's pattern attack, then the worst the relay allows. `conns` connections each try
/// `subs` distinct patterns of `segments` segments (1-character literals and `*` in varying
/// places, all matching one channel): the pattern-cost limits refuse them
/// (`ERR:pattern_too_complex`). Each connection then subscribes the most patterns that can
/// match one 16-segment channel under those limits (the channel, every `#` prefix, 64
/// single-`*` patterns: 80 within a `public.#` grant), and one connection publishes 1-byte
/// messages on that channel at `rate`/s until `until`: every publish is a deliver frame of
/// 80 patterns to each of the `conns`. Without pattern-cost limits in the relay the first
/// phase would already be taken and the scenario is reported as skipped.
pub fn pattern_heavy(
    relay: &Relay,
    until: Instant,
    conns: usize,
    subs: usize,
    segments: usize,
    rate: u32,
) -> AttackReport {
    let ticket = relay.ticket("public.#", "public.#");
    let mut rep = AttackReport::new("pattern-heavy subscriptions");
    let tally = Tally::default();
    let inner = segments.saturating_sub(2).max(1);
    // The issue's set: public . (a|*) × inner . z — every pattern matches one channel.
    let issue_pattern = |k: usize| -> String {
        let mut p = String::from("public.");
        for i in 0..inner {
            let star = ((k >> (i % 14)) & 1 == 1) ^ (i % 2 == 1);
            p.push_str(if star { "*." } else { "a." });
        }
        p.push('z');
        p
    };
    // The worst allowed set for a 16-segment channel.
    let channel: Vec<String> = std::iter::once("public".to_string())
        .chain((1..16).map(|i| format!("s{i}")))
        .collect();
    let mut worst = vec![channel.join(".")];
    for k in 1..16 {
        worst.push(format!("{}.#", channel[..k].join(".")));
    }
    // 64 distinct single-'*' patterns: a '#'-ended prefix of `len` segments with the star
    // at `pos` (never at 0: the grant is `public.#`).
    'stars: for len in (2..=15).rev() {
        for pos in 1..len {
            if worst.len() == 16 + 64 {
                break 'stars;
            }
            let mut p = channel[..len].to_vec();
            p[pos] = "*".into();
            p.push("#".into());
            worst.push(p.join("."));
        }
    }
    let answers = |ws: &mut RawWs, n: usize, tally: &Tally, ok_key: &str| {
        for _ in 0..n {
            match ws.read_frame() {
                Some((0x1, t)) => {
                    let t = String::from_utf8_lossy(&t);
                    let key = if t.starts_with("OK:SUB:") {
                        ok_key.to_string()
                    } else {
                        t.split(':').take(2).collect::<Vec<_>>().join(":")
                    };
                    tally.add(&key, 1);
                }
                _ => {
                    tally.add("no answer", 1);
                    break;
                }
            }
        }
    };
    let mut readers = Vec::new();
    for c in 0..conns {
        let Ok(mut ws) = RawWs::connect(source(c), relay.addr, &ticket) else {
            tally.add("handshake refused", 1);
            continue;
        };
        let wire: Vec<u8> = (0..subs)
            .flat_map(|s| {
                client_frame(
                    true,
                    0x1,
                    format!("SUB:t1:{}", issue_pattern(c * subs + s)).as_bytes(),
                )
            })
            .collect();
        if ws.stream.write_all(&wire).is_err() {
            tally.add("write failed", 1);
            continue;
        }
        answers(&mut ws, subs, &tally, "issue pattern subscribed");
        let wire: Vec<u8> = worst
            .iter()
            .flat_map(|p| client_frame(true, 0x1, format!("SUB:t1:{p}").as_bytes()))
            .collect();
        let _ = ws.stream.write_all(&wire);
        answers(
            &mut ws,
            worst.len(),
            &tally,
            "allowed worst pattern subscribed",
        );
        // Read deliveries in a thread: this connection is a healthy reader.
        let _ = ws.stream.set_read_timeout(Some(Duration::from_millis(200)));
        readers.push(std::thread::spawn(move || {
            let (mut n, mut listed) = (0u64, 0u64);
            let stop = until + Duration::from_secs(1);
            while Instant::now() < stop && !ws.closed {
                if let Some((0x2, body)) = ws.read_frame() {
                    n += 1;
                    listed = listed.max(super::deliver_pattern_count(&body).unwrap_or(0));
                }
            }
            (n, listed)
        }));
    }
    rep.peak_conns = conns + 1;
    let taken = tally.get("issue pattern subscribed");
    if taken > (conns * 64) as u64 {
        rep.skipped = Some(format!(
            "this relay took {taken} of the issue's patterns: it has no pattern-cost limits (ERR:pattern_too_complex, issue #10 item 2)"
        ));
    } else {
        rep.expect(
            format!("the issue's patterns refused ({taken} taken)"),
            taken == 0,
        );
        let mut publ = RawWs::connect(source(conns), relay.addr, &ticket).expect("publisher");
        let frame = client_frame(true, 0x2, &publish_frame("t1", &channel.join("."), b"x"));
        let period = Duration::from_secs(1) / rate.max(1);
        let mut sent = 0u64;
        let mut next = Instant::now();
        while Instant::now() < until && sent < u64::from(rate) * 60 {
            if publ.stream.write_all(&frame).is_err() {
                break;
            }
            sent += 1;
            next += period;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        tally.add("publishes sent", sent);
    }
    let mut most_listed = 0;
    for t in readers {
        let (n, listed) = t.join().unwrap_or((0, 0));
        tally.add("deliveries read", n);
        most_listed = most_listed.max(listed);
    }
    rep.note(format!("most patterns in one deliver frame: {most_listed}"));
    for l in tally.lines() {
        rep.note(l);
    }
    rep
}

/// `per_source` connections from each of `sources` addresses that send half a request and
/// hold it until `until`. Meanwhile a fresh client handshakes every 200 ms from 127.0.0.1: once
/// the flood has stopped opening connections and its held ones are older than the eviction
/// age, every fresh client must get in (held handshakes must not keep new clients out).
pub fn half_open_flood(
    relay: &Relay,
    until: Instant,
    sources: usize,
    per_source: usize,
) -> AttackReport {
    let ticket = relay.ticket("public.#", "public.#");
    let tally = Arc::new(Tally::default());
    let opened_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    // One opener thread per source, so the flood opens its connections at once.
    let openers: Vec<_> = (0..sources)
        .map(|s| {
            let (addr, tally) = (relay.addr, tally.clone());
            std::thread::spawn(move || {
                let mut held: Vec<TcpStream> = Vec::new();
                for _ in 0..per_source {
                    if Instant::now() >= until {
                        break;
                    }
                    match connect_from(source(s), addr) {
                        Ok(mut c) => {
                            let _ = c.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                            held.push(c);
                        }
                        Err(_) => tally.add("connect failed", 1),
                    }
                }
                held
            })
        })
        .collect();
    let release = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opener = {
        let (tally, opened_at, release) = (tally.clone(), opened_at.clone(), release.clone());
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = openers
                .into_iter()
                .flat_map(|t| t.join().unwrap_or_default())
                .collect();
            *opened_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            tally.add("half-open connections opened", held.len() as u64);
            // Hold them until the prober is done (bounded: 30 s).
            let stop = Instant::now() + Duration::from_secs(30);
            while !release.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < stop {
                std::thread::sleep(Duration::from_millis(50));
            }
            // How were they answered? A look at each (non-blocking).
            let mut answers = std::collections::BTreeMap::<String, u64>::new();
            for c in &mut held {
                let _ = c.set_nonblocking(true);
                let mut buf = [0u8; 64];
                let key = match c.read(&mut buf) {
                    Ok(0) => "closed by the relay".to_string(),
                    Ok(n) => String::from_utf8_lossy(&buf[..n.min(12)]).into_owned(),
                    Err(_) => "still held".to_string(),
                };
                *answers.entry(key).or_insert(0) += 1;
            }
            for (k, v) in answers {
                tally.add(&format!("answer {k:?}"), v);
            }
            held.len()
        })
    };
    // Fresh clients, one try per 200 ms: while the flood opens its connections (until
    // `until`), and then five more once it holds them all (bounded: 15 s past `until`).
    let (mut during, mut after) = ((0u64, 0u64), (0u64, 0u64));
    let mut first_refusal = None;
    let hard_stop = until + Duration::from_secs(15);
    while (Instant::now() < until || after.0 + after.1 < 5) && Instant::now() < hard_stop {
        let settled = opened_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() > Duration::from_millis(1500));
        let ok = match RawWs::connect(Ipv4Addr::LOCALHOST, relay.addr, &ticket) {
            Ok(_) => true,
            Err(e) => {
                first_refusal.get_or_insert_with(|| e.0.lines().next().unwrap_or("").to_string());
                false
            }
        };
        let slot = if settled { &mut after } else { &mut during };
        if ok {
            slot.0 += 1;
        } else {
            slot.1 += 1;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    release.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = opener.join().unwrap_or(0);
    let mut rep = AttackReport::new("half-open HTTP handshake flood");
    rep.peak_pending = opened;
    rep.note(format!(
        "fresh clients while the flood opened: {} in, {} refused; after it held them: {} in, {} refused",
        during.0, during.1, after.0, after.1
    ));
    if let Some(r) = first_refusal {
        rep.note(format!("first refusal: {r}"));
    }
    for l in tally.lines() {
        rep.note(l);
    }
    rep.expect(
        format!(
            "every fresh client got in once the flood held its connections ({} of {})",
            after.0,
            after.0 + after.1
        ),
        after.1 == 0 && after.0 > 0,
    );
    let answered =
        tally.matching("answer \"HTTP/1.1 503") + tally.get("answer \"closed by the relay\"");
    rep.expect(
        format!("held connections over the caps were answered 503 or closed ({answered})"),
        answered > 0,
    );
    rep
}

/// Unique forged tickets (well-formed, random claims and signature) from `sources`
/// addresses, one new connection per try, as fast as each thread can, until `until`.
pub fn forged_ticket_flood(relay: &Relay, until: Instant, sources: usize) -> AttackReport {
    let tally = Arc::new(Tally::default());
    let cpu_before = cpu_secs(relay.pid());
    let started = Instant::now();
    let threads: Vec<_> = (0..sources)
        .map(|s| {
            let (addr, tally) = (relay.addr, tally.clone());
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(s as u64);
                // Bounded: at most 100,000 tries per source.
                for _ in 0..100_000 {
                    if Instant::now() >= until {
                        break;
                    }
                    let claims: String = (0..120).map(|_| format!("{:02x}", rng.u8(..))).collect();
                    let sig: String = (0..64).map(|_| format!("{:02x}", rng.u8(..))).collect();
                    let ticket = format!("AT_{claims}_{sig}");
                    let key = match RawWs::connect(source(s), addr, &ticket) {
                        Ok(_) => "accepted (!)".to_string(),
                        Err(e) => e.0.get(9..12).unwrap_or("???").to_string(),
                    };
                    tally.add(&format!("HTTP {key}"), 1);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let cpu = cpu_secs(relay.pid()) - cpu_before;
    let mut rep = AttackReport::new("forged-ticket flood");
    rep.peak_pending = sources;
    let secs = started.elapsed().as_secs_f64();
    let checked = tally.get("HTTP 401");
    // Each source: its burst, then its rate.
    let allowed = sources as f64 * (30.0 + secs + 2.0);
    rep.expect(
        format!("ticket checks bounded per source ({checked} checked, at most {allowed:.0})"),
        (checked as f64) <= allowed,
    );
    rep.expect(
        "sources over their budget answered 429",
        tally.get("HTTP 429") > 0,
    );
    rep.note(format!(
        "relay CPU {:.0} % of a core",
        100.0 * cpu / started.elapsed().as_secs_f64()
    ));
    for l in tally.lines() {
        rep.note(l);
    }
    rep
}

/// Oversized and malformed frames: a 100 MB length streamed as junk, random bytes, a 64-bit
/// length with the top bit set, a fragment bomb (1-byte continuations), an unknown opcode;
/// `rounds` of each, from fresh connections.
pub fn garbage_frames(relay: &Relay, until: Instant, rounds: usize) -> AttackReport {
    let ticket = relay.ticket("public.#", "public.#");
    let tally = Tally::default();
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..rounds {
        if Instant::now() >= until {
            break;
        }
        // 1. A binary frame announcing 100 MB, then 8 MB of junk.
        if let Ok(mut ws) = RawWs::connect(source(round), relay.addr, &ticket) {
            let mut head = vec![0x82, 0xFF];
            head.extend_from_slice(&(100u64 << 20).to_be_bytes());
            head.extend_from_slice(&[1, 2, 3, 4]);
            let _ = ws.stream.write_all(&head);
            let junk = vec![0xAAu8; 64 * 1024];
            for _ in 0..128 {
                if ws.stream.write_all(&junk).is_err() {
                    break;
                }
            }
            ws.send(0x1, b"PING").ok();
            let _ = ws.stream.set_read_timeout(Some(Duration::from_secs(5)));
            let first = ws.read_frame();
            tally.add(
                &format!(
                    "100 MB frame -> {}",
                    first
                        .map(|(_, t)| String::from_utf8_lossy(&t)
                            .chars()
                            .take(20)
                            .collect::<String>())
                        .unwrap_or_else(|| "nothing".into())
                ),
                1,
            );
        }
        // 2. Random bytes.
        if let Ok(mut ws) = RawWs::connect(source(round), relay.addr, &ticket) {
            let bytes: Vec<u8> = (0..4096).map(|_| rng.u8(..)).collect();
            let _ = ws.stream.write_all(&bytes);
            let (_, code) = ws.read_until_close(10_000);
            tally.add(&format!("random bytes -> close {code:?}"), 1);
        }
        // 3. A 64-bit length with the top bit set.
        if let Ok(mut ws) = RawWs::connect(source(round), relay.addr, &ticket) {
            let _ = ws
                .stream
                .write_all(&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 5, 1, 2, 3, 4]);
            let (_, code) = ws.read_until_close(10);
            tally.add(&format!("top-bit length -> close {code:?}"), 1);
        }
        // 4. A fragment bomb: one text frame opened, then 100,000 1-byte continuations.
        if let Ok(mut ws) = RawWs::connect(source(round), relay.addr, &ticket) {
            let mut wire = client_frame(false, 0x1, b"S");
            let cont = client_frame(false, 0x0, b"x");
            for _ in 0..100_000 {
                wire.extend_from_slice(&cont);
            }
            wire.extend_from_slice(&client_frame(true, 0x0, b"!"));
            let _ = ws.stream.write_all(&wire);
            ws.send(0x1, b"PING").ok();
            let _ = ws.stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut seen = Vec::new();
            for _ in 0..4 {
                match ws.read_frame() {
                    Some((0x1, t)) => {
                        let t = String::from_utf8_lossy(&t).into_owned();
                        let done = t == "PONG";
                        seen.push(t.chars().take(24).collect::<String>());
                        if done {
                            break;
                        }
                    }
                    Some((op, _)) => seen.push(format!("opcode {op}")),
                    None => break,
                }
            }
            tally.add(&format!("fragment bomb -> {seen:?}"), 1);
        }
        // 5. An unknown opcode.
        if let Ok(mut ws) = RawWs::connect(source(round), relay.addr, &ticket) {
            let _ = ws.stream.write_all(&client_frame(true, 0x3, b"?"));
            let (_, code) = ws.read_until_close(10);
            tally.add(&format!("opcode 3 -> close {code:?}"), 1);
        }
    }
    let mut rep = AttackReport::new("oversized and garbage frames");
    rep.peak_conns = 1;
    let n = rounds as u64;
    for key in [
        "100 MB frame -> ERR:frame_too_large:",
        "random bytes -> close Some(1002)",
        "top-bit length -> close Some(1002)",
        "opcode 3 -> close Some(1002)",
    ] {
        let got = tally.get(key);
        rep.expect(format!("{key} ({got} of {n})"), got == n);
    }
    let bombs = tally.matching("fragment bomb -> [\"ERR:frame_too_large");
    rep.expect(
        format!("fragment bomb refused, connection kept ({bombs} of {n})"),
        bombs == n,
    );
    for l in tally.lines() {
        rep.note(l);
    }
    rep
}

/// CPU seconds (user + system) of `pid` so far.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime) in clock ticks of 1/100 s on Linux.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / 100.0
}
