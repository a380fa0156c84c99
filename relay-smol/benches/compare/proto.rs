//! The three client protocols the load generator speaks over WebSocket: LLPS (this relay),
//! NATS's text protocol (nats-server) and MQTT 3.1.1 (mosquitto). For each: the frames a
//! subscriber and a publisher send to get going, a publish template, and a streaming parser
//! of what the server sends back.
//!
//! Every publish payload starts with the send time (ns since the run's base instant, u64
//! big-endian) and a sequence number; the parsers pull out the send time and skip the rest.

use crate::ws::{Piece, client_frame};

/// Tenant, channel and pattern names (short, so every header fits the capture buffer).
pub const TENANT: &str = "bench";
/// Channel (LLPS) / subject (NATS).
pub const CHANNEL: &str = "fan.x";
/// MQTT topic.
pub const TOPIC: &str = "fan/x";

/// Bytes of a delivery kept to decode it (headers + send time + sequence number).
const CAP: usize = 64;

/// A client protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// LLPS v0.1 (`shared/spec/llps-v0.1.md`).
    Llps,
    /// NATS client protocol over WebSocket.
    Nats,
    /// MQTT 3.1.1 over WebSocket (subprotocol `mqtt`).
    Mqtt,
}

impl Proto {
    /// Request path of the WebSocket upgrade.
    pub fn path(self) -> &'static str {
        match self {
            Proto::Llps => "/ws",
            Proto::Nats => "/",
            Proto::Mqtt => "/mqtt",
        }
    }

    /// Subprotocol the upgrade asks for.
    pub fn subprotocol(self) -> Option<&'static str> {
        match self {
            Proto::Llps => Some("llps.v1, at.bench"),
            Proto::Nats => None,
            Proto::Mqtt => Some("mqtt"),
        }
    }

    /// Frames a subscriber sends after the upgrade, and how many acknowledgements confirm
    /// that its subscription is active.
    pub fn subscribe(self, client: &str) -> (Vec<u8>, u32) {
        match self {
            Proto::Llps => (
                client_frame(0x1, format!("SUB:{TENANT}:{CHANNEL}").as_bytes()),
                1,
            ),
            Proto::Nats => (
                client_frame(
                    0x2,
                    format!("{}SUB {CHANNEL} 1\r\nPING\r\n", nats_connect()).as_bytes(),
                ),
                1,
            ),
            Proto::Mqtt => {
                let mut v = client_frame(0x2, &mqtt_connect(client));
                let mut body = vec![0x00, 0x01];
                put_str16(&mut body, TOPIC);
                body.push(0x00); // QoS 0
                v.extend(client_frame(0x2, &mqtt_packet(0x82, &body)));
                (v, 2)
            }
        }
    }

    /// Frames a publisher sends after the upgrade, and how many acknowledgements confirm
    /// that the server has taken it in.
    pub fn publisher_hello(self, client: &str) -> (Vec<u8>, u32) {
        match self {
            Proto::Llps => (client_frame(0x1, b"PING"), 1),
            Proto::Nats => (
                client_frame(0x2, format!("{}PING\r\n", nats_connect()).as_bytes()),
                1,
            ),
            Proto::Mqtt => (client_frame(0x2, &mqtt_connect(client)), 1),
        }
    }

    /// One publish frame with a `size`-byte payload, and the offset of the payload in it
    /// (where the publisher stamps send time and sequence number). One frame per message,
    /// for every protocol.
    pub fn publish_template(self, size: usize) -> (Vec<u8>, usize) {
        let payload = vec![b'x'; size.max(16)];
        let (msg, off) = match self {
            Proto::Llps => {
                let mut m = Vec::new();
                put_str16(&mut m, TENANT);
                put_str16(&mut m, CHANNEL);
                let off = m.len();
                m.extend_from_slice(&payload);
                (m, off)
            }
            Proto::Nats => {
                let mut m = format!("PUB {CHANNEL} {}\r\n", payload.len()).into_bytes();
                let off = m.len();
                m.extend_from_slice(&payload);
                m.extend_from_slice(b"\r\n");
                (m, off)
            }
            Proto::Mqtt => {
                let mut body = Vec::new();
                put_str16(&mut body, TOPIC);
                body.extend_from_slice(&payload);
                let m = mqtt_packet(0x30, &body);
                let off = m.len() - payload.len();
                (m, off)
            }
        };
        let frame = client_frame(0x2, &msg);
        let off = frame.len() - msg.len() + off;
        (frame, off)
    }

    /// The answer to a server's keep-alive ping, for protocols that expect one.
    pub fn pong(self) -> Option<Vec<u8>> {
        match self {
            Proto::Nats => Some(client_frame(0x2, b"PONG\r\n")),
            _ => None,
        }
    }
}

fn nats_connect() -> String {
    // verbose off (no +OK per PUB), echo off; the subject and sid are the same for all.
    r#"CONNECT {"verbose":false,"pedantic":false,"echo":false,"headers":false,"protocol":1,"lang":"fastpubsub-bench","version":"0"}"#.to_string() + "\r\n"
}

fn put_str16(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(&(s.len() as u16).to_be_bytes());
    v.extend_from_slice(s.as_bytes());
}

fn mqtt_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![first];
    let mut n = body.len();
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        v.push(b);
        if n == 0 {
            break;
        }
    }
    v.extend_from_slice(body);
    v
}

fn mqtt_connect(client: &str) -> Vec<u8> {
    let mut body = Vec::new();
    put_str16(&mut body, "MQTT");
    body.push(4); // 3.1.1
    body.push(0x02); // clean session
    body.extend_from_slice(&0u16.to_be_bytes()); // no keep-alive: runs are short
    put_str16(&mut body, client);
    mqtt_packet(0x10, &body)
}

/// What a server sent, as far as the load generator cares.
pub enum Event<'a> {
    /// A delivery whose payload says it was sent at `sent_ns`.
    Delivery {
        /// Send time stamped by the publisher.
        sent_ns: u64,
    },
    /// An acknowledgement (`OK:`/`PONG`, NATS `PONG`, MQTT CONNACK/SUBACK).
    Ack,
    /// An error report from the server (first bytes of its text).
    Error(&'a [u8]),
    /// The server pinged at protocol level and expects an answer ([`Proto::pong`]).
    Ping,
    /// A WebSocket Close frame.
    Closed,
}

/// Streaming parser of one connection's server messages (after WebSocket deframing).
pub struct Parser {
    proto: Proto,
    cap: [u8; CAP],
    ncap: usize,
    /// Bytes of the current NATS MSG body (payload + CRLF) or MQTT packet body still to come.
    left: u64,
    /// NATS: the current protocol line.
    line: Vec<u8>,
    /// MQTT: fixed header bytes of the next packet.
    mh: [u8; 5],
    mhlen: usize,
    mtype: u8,
}

impl Parser {
    /// A parser for `proto`.
    pub fn new(proto: Proto) -> Self {
        Parser {
            proto,
            cap: [0; CAP],
            ncap: 0,
            left: 0,
            line: Vec::new(),
            mh: [0; 5],
            mhlen: 0,
            mtype: 0,
        }
    }

    fn capture(&mut self, d: &[u8], upto: usize) {
        let k = upto.saturating_sub(self.ncap).min(d.len());
        if k > 0 {
            self.cap[self.ncap..self.ncap + k].copy_from_slice(&d[..k]);
            self.ncap += k;
        }
    }

    /// Handles one payload piece of a server frame.
    pub fn piece(&mut self, p: Piece<'_>, on: &mut impl FnMut(Event<'_>)) {
        if p.opcode == 0x8 {
            if p.last {
                on(Event::Closed);
            }
            return;
        }
        if p.opcode != 0x1 && p.opcode != 0x2 {
            return; // WebSocket ping/pong: not used by these servers here
        }
        match self.proto {
            Proto::Llps => {
                if p.first {
                    self.ncap = 0;
                }
                self.capture(p.data, CAP);
                if p.last {
                    self.llps_message(p.opcode, on);
                }
            }
            Proto::Nats => self.nats_bytes(p.data, on),
            Proto::Mqtt => self.mqtt_bytes(p.data, on),
        }
    }

    fn llps_message(&mut self, opcode: u8, on: &mut impl FnMut(Event<'_>)) {
        let c = &self.cap[..self.ncap];
        if opcode == 0x1 {
            if c.starts_with(b"OK:") || c == b"PONG" {
                on(Event::Ack);
            } else if c.starts_with(b"ERR:") {
                on(Event::Error(c));
            }
            return;
        }
        // 0x01 | str16 tenant | str16 channel | u32 len | payload | ...
        let u16_at = |i: usize| {
            c.get(i..i + 2)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        };
        let Some(tl) = u16_at(1) else { return };
        let Some(cl) = u16_at(3 + tl) else { return };
        let off = 3 + tl + 2 + cl + 4;
        if c.first() == Some(&0x01)
            && let Some(ts) = c.get(off..off + 8)
        {
            let sent_ns = u64::from_be_bytes(ts.try_into().unwrap_or([0; 8]));
            on(Event::Delivery { sent_ns });
        }
    }

    fn nats_bytes(&mut self, mut d: &[u8], on: &mut impl FnMut(Event<'_>)) {
        while !d.is_empty() {
            if self.left > 0 {
                let k = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(d.len());
                self.capture(&d[..k], 8);
                self.left -= k as u64;
                d = &d[k..];
                if self.left == 0 && self.ncap == 8 {
                    let sent_ns = u64::from_be_bytes(self.cap[..8].try_into().unwrap_or([0; 8]));
                    on(Event::Delivery { sent_ns });
                }
                continue;
            }
            match d.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.push_line(&d[..i]);
                    d = &d[i + 1..];
                    self.nats_line(on);
                    self.line.clear();
                }
                None => {
                    self.push_line(d);
                    d = &[];
                }
            }
        }
    }

    fn push_line(&mut self, d: &[u8]) {
        // INFO lines are a few hundred bytes; what matters is at the start.
        let room = 512usize.saturating_sub(self.line.len());
        self.line.extend_from_slice(&d[..room.min(d.len())]);
    }

    fn nats_line(&mut self, on: &mut impl FnMut(Event<'_>)) {
        let l = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        if let Some(rest) = l.strip_prefix(b"MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let len = rest
                .rsplit(|&b| b == b' ')
                .next()
                .and_then(|t| std::str::from_utf8(t).ok())
                .and_then(|t| t.parse::<u64>().ok());
            if let Some(len) = len {
                self.left = len + 2;
                self.ncap = 0;
            }
        } else if l == b"PING" {
            on(Event::Ping);
        } else if l == b"PONG" {
            on(Event::Ack);
        } else if l.starts_with(b"-ERR") {
            on(Event::Error(l));
        }
    }

    fn mqtt_bytes(&mut self, mut d: &[u8], on: &mut impl FnMut(Event<'_>)) {
        while !d.is_empty() {
            if self.left > 0 {
                let k = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(d.len());
                self.capture(&d[..k], CAP);
                self.left -= k as u64;
                d = &d[k..];
                if self.left == 0 {
                    self.mqtt_packet_done(on);
                }
                continue;
            }
            self.mh[self.mhlen] = d[0];
            self.mhlen += 1;
            d = &d[1..];
            if self.mhlen < 2 || (self.mh[self.mhlen - 1] & 0x80 != 0 && self.mhlen < 5) {
                continue;
            }
            let mut len = 0u64;
            for (i, b) in self.mh[1..self.mhlen].iter().enumerate() {
                len |= u64::from(b & 0x7f) << (7 * i);
            }
            self.mtype = self.mh[0];
            self.mhlen = 0;
            self.ncap = 0;
            self.left = len;
            if len == 0 {
                self.mqtt_packet_done(on);
            }
        }
    }

    fn mqtt_packet_done(&mut self, on: &mut impl FnMut(Event<'_>)) {
        let c = &self.cap[..self.ncap];
        match self.mtype >> 4 {
            3 => {
                let qos = (self.mtype >> 1) & 0x3;
                let Some(tl) = c
                    .get(0..2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                else {
                    return;
                };
                let off = 2 + tl + if qos > 0 { 2 } else { 0 };
                if let Some(ts) = c.get(off..off + 8) {
                    let sent_ns = u64::from_be_bytes(ts.try_into().unwrap_or([0; 8]));
                    on(Event::Delivery { sent_ns });
                }
            }
            2 => {
                if c.get(1) == Some(&0) {
                    on(Event::Ack);
                } else {
                    on(Event::Error(b"CONNACK refused the connection"));
                }
            }
            9 => {
                if c.len() > 2 && c[2..].iter().all(|&rc| rc < 0x80) {
                    on(Event::Ack);
                } else {
                    on(Event::Error(b"SUBACK refused the subscription"));
                }
            }
            _ => {}
        }
    }
}
