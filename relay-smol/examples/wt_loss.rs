//! Load generator of the loss benchmark (`relay-smol/scripts/wt_loss.sh`): a publisher
//! (WebSocket) or a subscriber over WebSocket, WebTransport's control stream, a line, or
//! datagrams. Every payload carries its sequence number and send time (wall clock: the
//! publisher and the subscribers run on one machine), so a subscriber measures delivery
//! latency and loss.
//!
//! ```text
//! wt_loss pub URL COUNT RATE [SIZE]            # publishes COUNT messages at RATE/s on t:bench.x
//! wt_loss sub MODE URL COUNT SECONDS           # MODE: ws | wt | wt-line | wt-dgram
//! ```
//! A subscriber prints `ready` once subscribed and, at the end, one line of JSON.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fastpubsub_core::frame::{DeliverView, Mode, Publish};
use fastpubsub_relay::wt::client::{CertCheck, Incoming, WtClient};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn ws_connect(url: &str) -> WebSocket<TcpStream> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("llps.v1"),
    );
    let host = req.uri().host().unwrap().to_string();
    let port = req.uri().port_u16().unwrap();
    let tcp = TcpStream::connect((host.as_str(), port)).unwrap();
    tcp.set_nodelay(true).unwrap();
    tungstenite::client::client(req, tcp).unwrap().0
}

fn publisher(url: &str, count: u64, rate: u64, size: usize) {
    let mut ws = ws_connect(url);
    let start = Instant::now();
    let mut payload = vec![0u8; size.max(16)];
    for seq in 0..count {
        let due = start + Duration::from_nanos(seq * 1_000_000_000 / rate);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        payload[8..16].copy_from_slice(&now_ns().to_be_bytes());
        let mut frame = vec![0u8; Publish::encoded_len_v2("t", "bench.x", &payload)];
        Publish::encode_v2(Mode::Broadcast, "t", "bench.x", &payload, &mut frame).unwrap();
        ws.send(Message::binary(frame)).unwrap();
    }
    ws.send(Message::text("PING")).unwrap();
    while let Ok(m) = ws.read() {
        if matches!(&m, Message::Text(t) if t.as_str() == "PONG") {
            break;
        }
    }
}

struct Tally {
    seen: Vec<bool>,
    lat_us: Vec<u64>,
}

impl Tally {
    fn take(&mut self, deliver: &[u8]) {
        let Ok(d) = DeliverView::new_checked(deliver) else {
            return;
        };
        let p = d.payload();
        if p.len() < 16 {
            return;
        }
        let seq = u64::from_be_bytes(p[..8].try_into().unwrap()) as usize;
        let sent = u64::from_be_bytes(p[8..16].try_into().unwrap());
        if let Some(s) = self.seen.get_mut(seq)
            && !*s
        {
            *s = true;
            self.lat_us.push(now_ns().saturating_sub(sent) / 1000);
        }
    }

    fn done(&self) -> bool {
        self.seen.iter().all(|s| *s)
    }

    fn report(mut self, mode: &str) {
        self.lat_us.sort_unstable();
        let q = |f: f64| {
            if self.lat_us.is_empty() {
                return f64::NAN;
            }
            let i = ((self.lat_us.len() as f64 - 1.0) * f).round() as usize;
            self.lat_us[i] as f64 / 1000.0
        };
        println!(
            "{{\"mode\":\"{mode}\",\"expected\":{},\"received\":{},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2}}}",
            self.seen.len(),
            self.lat_us.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
}

fn subscriber(mode: &str, url: &str, count: u64, seconds: u64) {
    let mut t = Tally {
        seen: vec![false; count as usize],
        lat_us: Vec::with_capacity(count as usize),
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    if mode == "ws" {
        let mut ws = ws_connect(url);
        ws.send(Message::text("SUB:t:bench.#")).unwrap();
        let _ = ws
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)));
        let mut ready = false;
        while Instant::now() < deadline && !t.done() {
            match ws.read() {
                Ok(Message::Text(s)) if s.as_str().starts_with("OK:SUB") && !ready => {
                    ready = true;
                    println!("ready");
                    let _ = std::io::stdout().flush();
                }
                Ok(Message::Binary(b)) => t.take(&b),
                Ok(_) => {}
                Err(tungstenite::Error::Io(_)) => {}
                Err(e) => panic!("ws: {e}"),
            }
        }
    } else {
        let mut c =
            WtClient::connect(url, None, CertCheck::Insecure, Duration::from_secs(20)).unwrap();
        let opts = match mode {
            "wt-line" => ":U:0:0",
            "wt-dgram" => ":D",
            _ => "",
        };
        c.send_text(&format!("SUB:t:bench.#{opts}"));
        let mut ready = false;
        while Instant::now() < deadline && !t.done() {
            match c.recv(Duration::from_millis(200)) {
                Some(Incoming::Text(s)) if s.starts_with("OK:SUB") && !ready => {
                    ready = true;
                    println!("ready");
                    let _ = std::io::stdout().flush();
                }
                Some(Incoming::Deliver(b, _)) => t.take(&b),
                Some(_) => {}
                None => {
                    if let Some(why) = c.closed() {
                        panic!("wt session ended: {why}");
                    }
                }
            }
        }
    }
    t.report(mode);
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("pub") => publisher(
            &a[2],
            a[3].parse().unwrap(),
            a[4].parse().unwrap(),
            a.get(5).map_or(64, |s| s.parse().unwrap()),
        ),
        Some("sub") => subscriber(&a[2], &a[3], a[4].parse().unwrap(), a[5].parse().unwrap()),
        _ => {
            eprintln!(
                "usage: wt_loss pub URL COUNT RATE [SIZE] | wt_loss sub MODE URL COUNT SECONDS"
            );
            std::process::exit(2);
        }
    }
}
