//! Shared helpers of the edge integration tests: start a relay (in-process on its own
//! thread, or as a process), connect real WebSocket clients, read with timeouts.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
// Tests measure their own timeouts with the real clock.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fastpubsub_core::frame::{DeliverView, Mode, Publish};
use fastpubsub_relay::auth::{AllowAll, Authorizer};
use fastpubsub_relay::config::Config;
use fastpubsub_relay::dashboard::access::AdminAccess;
use fastpubsub_relay::limits::Limits;
use fastpubsub_relay::ws::Relay;
use smol::LocalExecutor;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// How long any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The admin token of the test relays: `/stats` is served to its holders only.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A relay running on its own thread.
pub struct TestRelay {
    pub addr: SocketAddr,
    stop: Option<smol::channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestRelay {
    /// Starts a relay with `--insecure-no-auth` semantics and these limits on 127.0.0.1:0.
    pub fn start(limits: Limits) -> TestRelay {
        let mut config = Config::new("127.0.0.1:0".parse().unwrap());
        config.limits = limits;
        Self::start_config(config)
    }

    /// Starts a relay with this config (listen address should be 127.0.0.1:0).
    pub fn start_config(config: Config) -> TestRelay {
        Self::start_with_auth(config, || Rc::new(AllowAll))
    }

    /// Starts a relay with this config and the authorizer `auth` makes (on the relay's
    /// thread).
    pub fn start_with_auth(
        config: Config,
        auth: impl FnOnce() -> Rc<dyn Authorizer> + Send + 'static,
    ) -> TestRelay {
        Self::start_inner(config, auth, true)
    }

    /// Starts a relay without an admin token (its counters are not on the public port).
    pub fn start_ungated(config: Config) -> TestRelay {
        Self::start_inner(config, || Rc::new(AllowAll), false)
    }

    fn start_inner(
        config: Config,
        auth: impl FnOnce() -> Rc<dyn Authorizer> + Send + 'static,
        admin_token: bool,
    ) -> TestRelay {
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let thread = std::thread::spawn(move || {
            let ex = Rc::new(LocalExecutor::new());
            let mut relay = Relay::bind(&config, auth()).unwrap();
            if admin_token {
                let access = AdminAccess::with_token(ADMIN_TOKEN, false).unwrap();
                relay.set_admin_gate(Rc::new(access));
            }
            addr_tx.send(relay.local_addr()).unwrap();
            let shutdown = async move {
                let _ = stop_rx.recv().await;
            };
            smol::block_on(ex.run(relay.run(ex.clone(), shutdown))).unwrap();
        });
        let addr = addr_rx.recv_timeout(WAIT).unwrap();
        TestRelay {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// GET /stats as JSON (with the admin token).
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = http_get_admin(self.addr, "/stats");
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `f(stats)` holds.
    pub fn wait_stats(
        &self,
        what: &str,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let s = self.stats();
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stats: {s}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.try_send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends a raw HTTP request and returns the whole response text.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// GET `path`: (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    parse_response(&resp)
}

/// GET `path` with `Authorization: Bearer <ADMIN_TOKEN>`: (status, body).
pub fn http_get_admin(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n")
            .as_bytes(),
    );
    parse_response(&resp)
}

/// A file holding [`ADMIN_TOKEN`], for `run --admin-token-file` (one per test process).
pub fn admin_token_file() -> std::path::PathBuf {
    // Written once: tests start relays from parallel threads, and a relay reading the file
    // while another thread rewrites it could find it empty.
    static FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("fps-admin-token-{}", std::process::id()));
        std::fs::write(&p, ADMIN_TOKEN).unwrap();
        p
    })
    .clone()
}

pub fn parse_response(resp: &str) -> (u16, String) {
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub type Ws = WebSocket<TcpStream>;

/// Connects like the published SDK: subprotocols `llps.v1` and `at.<token>`.
pub fn connect_with(
    url: &str,
    protocols: Option<&str>,
    bearer: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    if let Some(t) = bearer {
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    let host = req.uri().host().unwrap().to_string();
    let port = req.uri().port_u16().unwrap();
    let stream = TcpStream::connect((host.as_str(), port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => panic!("handshake interrupted"),
    }
}

pub fn connect(relay: &TestRelay) -> Ws {
    connect_with(&relay.url(), Some("llps.v1, at.test-token"), None).unwrap()
}

pub fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).unwrap();
}

/// Next message that is not a WebSocket control frame.
pub fn next(ws: &mut Ws) -> Message {
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
}

pub fn next_text(ws: &mut Ws) -> String {
    match next(ws) {
        Message::Text(t) => t.as_str().to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// A decoded deliver frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub tenant: String,
    pub channel: String,
    pub payload: Vec<u8>,
    pub patterns: Vec<String>,
}

pub fn decode_deliver(bytes: &[u8]) -> Delivery {
    let d = DeliverView::new_checked(bytes).unwrap();
    Delivery {
        tenant: d.tenant().to_string(),
        channel: d.channel().to_string(),
        payload: d.payload().to_vec(),
        patterns: d.patterns().map(String::from).collect(),
    }
}

pub fn next_deliver(ws: &mut Ws) -> Delivery {
    match next(ws) {
        Message::Binary(b) => decode_deliver(&b),
        other => panic!("expected a deliver frame, got {other:?}"),
    }
}

/// `SUB` and wait for `OK:SUB`.
pub fn subscribe(ws: &mut Ws, tenant: &str, pattern: &str) {
    send_text(ws, &format!("SUB:{tenant}:{pattern}"));
    assert_eq!(next_text(ws), format!("OK:SUB:{tenant}:{pattern}"));
}

pub fn publish_frame(mode: Mode, tenant: &str, channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; Publish::encoded_len_v2(tenant, channel, payload)];
    Publish::encode_v2(mode, tenant, channel, payload, &mut frame).unwrap();
    frame
}

pub fn publish_v1_frame(tenant: &str, channel: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in [tenant, channel] {
        v.extend_from_slice(&(s.len() as u16).to_be_bytes());
        v.extend_from_slice(s.as_bytes());
    }
    v.extend_from_slice(payload);
    v
}

pub fn publish(ws: &mut Ws, mode: Mode, tenant: &str, channel: &str, payload: &[u8]) {
    ws.send(Message::binary(publish_frame(
        mode, tenant, channel, payload,
    )))
    .unwrap();
}

/// Round trip PING → PONG: every frame the relay queued to this connection before it
/// handled the PING arrives before the PONG, so it works as a barrier.
pub fn barrier(ws: &mut Ws) {
    send_text(ws, "PING");
    assert_eq!(next_text(ws), "PONG");
}

/// Asserts that the next message is `PONG` (nothing was delivered before it).
pub fn assert_nothing_then_pong(ws: &mut Ws) {
    send_text(ws, "PING");
    match next(ws) {
        Message::Text(t) if t.as_str() == "PONG" => {}
        other => panic!("expected only PONG, got {other:?}"),
    }
}

/// A minimal raw WebSocket client (for malformed frames and for many cheap connections).
pub struct RawWs {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

pub const HANDSHAKE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: llps.v1, at.t\r\n\r\n";

impl RawWs {
    /// Sends the handshake without waiting for the answer.
    pub fn start(addr: SocketAddr) -> std::io::Result<RawWs> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(WAIT))?;
        stream.write_all(HANDSHAKE.as_bytes())?;
        Ok(RawWs {
            stream,
            buf: Vec::new(),
        })
    }

    /// Reads the 101 answer; returns the response head.
    pub fn finish(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                self.buf.drain(..end + 4);
                return head;
            }
            self.fill();
        }
    }

    pub fn connect(addr: SocketAddr) -> RawWs {
        let mut r = RawWs::start(addr).unwrap();
        let head = r.finish();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        r
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.stream
            .write_all(&client_frame(fin, opcode, payload))
            .unwrap();
    }

    /// Reads one server frame: (opcode, payload). `None` on EOF.
    pub fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (hlen, len) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    127 if self.buf.len() >= 10 => (
                        10,
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n as usize),
                };
                if hlen != usize::MAX && self.buf.len() >= hlen + len {
                    let op = self.buf[0] & 0x0f;
                    let payload = self.buf[hlen..hlen + len].to_vec();
                    self.buf.drain(..hlen + len);
                    return Some((op, payload));
                }
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn read_text(&mut self) -> String {
        let (op, p) = self.read_frame().expect("connection closed");
        assert_eq!(op, 1, "expected text, got opcode {op}: {p:?}");
        String::from_utf8(p).unwrap()
    }
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let n = payload.len();
    if n < 126 {
        v.push(0x80 | n as u8);
    } else if n <= 65535 {
        v.push(0x80 | 126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    v
}

/// The relay binary as a child process.
pub struct RelayProcess {
    pub child: Child,
    pub addr: SocketAddr,
}

impl RelayProcess {
    pub fn start(extra: &[&str]) -> RelayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fastpubsub-relay"))
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--insecure-no-auth",
                "--admin-listen",
                "off",
            ])
            .arg("--admin-token-file")
            .arg(admin_token_file())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx.recv_timeout(WAIT).expect("relay printed its address");
        let addr = line
            .split("://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        RelayProcess { child, addr }
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    /// Waits for exit (bounded); returns the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Raises this process's open-files soft limit to its hard limit; returns the new limit.
pub fn raise_nofile() -> u64 {
    fastpubsub_relay::cli::run::raise_fd_limit().unwrap_or(u64::MAX)
}

/// A TCP connection to `dst` from the loopback address `src` (e.g. 127.0.0.2), so one test can
/// act as many sources.
pub fn connect_from(src: std::net::Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None)?;
    bind(&fd, &SocketAddr::from((src, 0)))?;
    connect(&fd, &dst)?;
    let s = TcpStream::from(fd);
    s.set_read_timeout(Some(WAIT))?;
    Ok(s)
}
