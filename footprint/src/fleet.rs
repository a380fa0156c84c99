//! The load generator: many WebSocket clients of the relay in one thread.
//!
//! Handshakes are blocking (one at a time, with timeouts); afterwards every socket is
//! non-blocking and [`Fleet::pump`] waits on all of them with `poll(2)` until a condition
//! holds or a deadline passes. Counts, never sleeps: a measurement starts only once the relay
//! has confirmed every subscription (`OK:SUB`) or delivered every message.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::clock;

use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// One client connection and what it has received.
struct Client {
    ws: WebSocket<TcpStream>,
    acks: u64,
    delivered: u64,
}

/// Many idle or subscribed clients of one relay.
#[derive(Default)]
pub struct Fleet {
    clients: Vec<Client>,
    /// Access ticket every client presents (none with `--insecure-no-auth`).
    pub token: Option<String>,
}

/// Opens one WebSocket to `ws://addr/ws` with the `llps.v1` subprotocol and, when given,
/// the access ticket as `at.<token>` (blocking, bounded).
pub fn connect(addr: SocketAddr, token: Option<&str>) -> Result<WebSocket<TcpStream>, String> {
    let url = format!("ws://{addr}/ws");
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    let protocols = match token {
        Some(t) => format!("llps.v1, at.{t}"),
        None => "llps.v1".to_string(),
    };
    let value = HeaderValue::from_str(&protocols)
        .map_err(|_| "the token has characters not allowed in a header".to_string())?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", value);
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let (ws, _) = tungstenite::client::client(req, stream)
        .map_err(|e| format!("WebSocket handshake with {url}: {e}"))?;
    Ok(ws)
}

/// The binary v1 publish frame: `str16 tenant | str16 channel | payload`.
pub fn publish_v1(tenant: &str, channel: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut f = Vec::with_capacity(4 + tenant.len() + channel.len() + payload.len());
    for s in [tenant, channel] {
        let len =
            u16::try_from(s.len()).map_err(|_| format!("{s:?} is longer than 65535 bytes"))?;
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(s.as_bytes());
    }
    f.extend_from_slice(payload);
    Ok(f)
}

impl Fleet {
    /// An empty fleet whose clients will present `token`.
    pub fn with_token(token: Option<String>) -> Self {
        Fleet {
            clients: Vec::new(),
            token,
        }
    }

    /// Number of open clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// `OK:SUB` answers received, over all clients.
    pub fn acks(&self) -> u64 {
        self.clients.iter().map(|c| c.acks).sum()
    }

    /// Deliver frames received, over all clients.
    pub fn delivered(&self) -> u64 {
        self.clients.iter().map(|c| c.delivered).sum()
    }

    /// Opens `n` more clients; client `i` sends `SUB:<tenant>:<pattern(i, j)>` for each
    /// `j < subs_each`. Does not wait for the answers (see [`Fleet::pump`]).
    pub fn open(
        &mut self,
        addr: SocketAddr,
        n: usize,
        tenant: &str,
        subs_each: usize,
        pattern: impl Fn(usize, usize) -> String,
    ) -> Result<(), String> {
        for _ in 0..n {
            let i = self.clients.len();
            let mut ws = connect(addr, self.token.as_deref())?;
            for j in 0..subs_each {
                let cmd = format!("SUB:{tenant}:{}", pattern(i, j));
                ws.send(Message::text(cmd))
                    .map_err(|e| format!("client {i}: SUB: {e}"))?;
            }
            ws.get_ref()
                .set_nonblocking(true)
                .map_err(|e| e.to_string())?;
            self.clients.push(Client {
                ws,
                acks: 0,
                delivered: 0,
            });
        }
        Ok(())
    }

    /// Reads from every readable client until `done(self)` holds; fails at `deadline`, on
    /// any `ERR:` from the relay, or when the relay closes a client.
    pub fn pump(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&Fleet) -> bool,
    ) -> Result<(), String> {
        let mut fds: Vec<libc::pollfd> = self
            .clients
            .iter()
            .map(|c| libc::pollfd {
                fd: c.ws.get_ref().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        loop {
            if done(self) {
                return Ok(());
            }
            let now = clock::now();
            if now >= deadline {
                return Err(format!(
                    "timed out: {} clients, {} OK:SUB, {} deliveries so far",
                    self.len(),
                    self.acks(),
                    self.delivered()
                ));
            }
            let wait = deadline
                .saturating_duration_since(now)
                .min(Duration::from_millis(200));
            let timeout_ms = i32::try_from(wait.as_millis()).unwrap_or(200);
            let nfds =
                libc::nfds_t::try_from(fds.len()).map_err(|_| "too many sockets for poll")?;
            // SAFETY: `fds` is a live, initialised slice of `nfds` pollfd structs that poll
            // only reads and writes within its length.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), nfds, timeout_ms) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll: {e}"));
            }
            for (pfd, client) in fds.iter_mut().zip(self.clients.iter_mut()) {
                if pfd.revents != 0 {
                    pfd.revents = 0;
                    drain(client)?;
                }
            }
        }
    }

    /// Closes every client (best effort, without waiting).
    pub fn close_all(&mut self) {
        self.clients.clear();
    }
}

/// Reads every complete message available on a non-blocking client.
fn drain(c: &mut Client) -> Result<(), String> {
    loop {
        match c.ws.read() {
            Ok(Message::Text(t)) => {
                let t = t.as_str();
                if t.starts_with("OK:SUB:") {
                    c.acks += 1;
                } else if t.starts_with("ERR:") {
                    return Err(format!("the relay answered {t}"));
                }
            }
            Ok(Message::Binary(b)) => {
                if b.first() != Some(&0x01) {
                    return Err(format!("unexpected binary frame of {} bytes", b.len()));
                }
                c.delivered += 1;
            }
            Ok(Message::Close(why)) => return Err(format!("the relay closed a client: {why:?}")),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(format!("client read: {e}")),
        }
    }
}
