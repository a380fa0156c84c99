//! One client connection of the load generator: its socket, its parsers and what it has
//! received so far. Setup (upgrade, subscribe, wait for acknowledgements) is blocking and
//! bounded by a deadline; afterwards the socket is non-blocking and read by the reader.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::hist::Hist;
use crate::proto::{Event, Parser, Proto};
use crate::ws::{Deframer, upgrade_request};

/// What a connection has received.
#[derive(Default)]
pub struct Tally {
    /// Deliveries received.
    pub deliveries: u64,
    /// Acknowledgements received.
    pub acks: u32,
    /// The first error the server reported.
    pub error: Option<String>,
    /// The server closed the connection (Close frame, EOF or reset).
    pub closed: bool,
    /// Protocol pings received and not yet answered.
    pub pings: u32,
    /// Time of the last delivery (ns since base).
    pub last_ns: u64,
    /// Longest time between two deliveries (ns).
    pub max_gap_ns: u64,
    /// Deliveries per second since the reader's start.
    pub per_sec: Vec<u64>,
}

/// The receiving side of a connection without its socket: deframing, parsing, tallying.
pub struct Receiver {
    de: Deframer,
    parser: Parser,
    /// What it has received.
    pub got: Tally,
}

impl Receiver {
    /// A receiver for `proto`.
    pub fn new(proto: Proto) -> Receiver {
        Receiver {
            de: Deframer::default(),
            parser: Parser::new(proto),
            got: Tally::default(),
        }
    }

    /// Parses bytes read at `now_ns` (ns since base); `t0_ns` is the start of the
    /// per-second tally. Latencies of deliveries go into `hist`.
    pub fn feed(&mut self, data: &[u8], now_ns: u64, t0_ns: u64, hist: &mut Hist) {
        let Receiver { de, parser, got } = self;
        de.feed(data, |piece| {
            parser.piece(piece, &mut |ev| match ev {
                Event::Delivery { sent_ns } => {
                    got.deliveries += 1;
                    hist.record_ns(now_ns.saturating_sub(sent_ns));
                    if got.last_ns > 0 {
                        got.max_gap_ns = got.max_gap_ns.max(now_ns.saturating_sub(got.last_ns));
                    }
                    got.last_ns = now_ns;
                    let sec = (now_ns.saturating_sub(t0_ns) / 1_000_000_000) as usize;
                    if sec < 600 {
                        if got.per_sec.len() <= sec {
                            got.per_sec.resize(sec + 1, 0);
                        }
                        got.per_sec[sec] += 1;
                    }
                }
                Event::Ack => got.acks += 1,
                Event::Error(text) => {
                    if got.error.is_none() {
                        got.error = Some(String::from_utf8_lossy(text).into_owned());
                    }
                }
                Event::Ping => got.pings += 1,
                Event::Closed => got.closed = true,
            })
        });
    }
}

/// A client connection.
pub struct Conn {
    /// The socket.
    pub sock: TcpStream,
    proto: Proto,
    /// What it has received.
    pub rx: Receiver,
}

fn timeout(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("timed out {what}"))
}

impl Conn {
    /// Connects and sends the WebSocket upgrade request (finish with [`Conn::upgraded`]).
    pub fn open(addr: SocketAddr, proto: Proto) -> io::Result<Conn> {
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        sock.set_nodelay(true)?;
        sock.write_all(upgrade_request(proto.path(), proto.subprotocol()).as_bytes())?;
        Ok(Conn {
            sock,
            proto,
            rx: Receiver::new(proto),
        })
    }

    /// Reads the upgrade response (101 or an error naming the status).
    pub fn upgraded(&mut self, deadline: Instant) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            self.read_timeout(deadline, "waiting for the WebSocket upgrade")?;
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the WebSocket upgrade",
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                if !buf.starts_with(b"HTTP/1.1 101") {
                    let head = String::from_utf8_lossy(&buf[..end]);
                    return Err(io::Error::other(format!("upgrade refused: {head}")));
                }
                let rest = buf[end + 4..].to_vec();
                self.feed(&rest, 0, 0, &mut Hist::default());
                return Ok(());
            }
            if buf.len() > 16 * 1024 {
                return Err(io::Error::other("upgrade response head over 16 KiB"));
            }
        }
    }

    fn read_timeout(&mut self, deadline: Instant, what: &str) -> io::Result<()> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout(what));
        }
        self.sock.set_read_timeout(Some(left))
    }

    /// Sends `bytes` (blocking).
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Reads until `n` acknowledgements have arrived in total, or an error.
    pub fn wait_acks(&mut self, n: u32, deadline: Instant) -> io::Result<()> {
        let mut chunk = vec![0u8; 16 * 1024];
        while self.rx.got.acks < n {
            if let Some(e) = &self.rx.got.error {
                return Err(io::Error::other(format!("server said: {e}")));
            }
            self.read_timeout(deadline, "waiting for the server's acknowledgement")
                .map_err(|e| io::Error::new(e.kind(), format!("{e} ({:?})", self.proto)))?;
            let r = self.sock.read(&mut chunk);
            match r {
                Ok(0) => return Err(io::Error::other("server closed during setup")),
                Ok(k) => self.feed(&chunk[..k], 0, 0, &mut Hist::default()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timeout("waiting for the server's acknowledgement"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Opens a subscriber: upgrade, subscribe, acknowledged.
    pub fn subscriber(addr: SocketAddr, proto: Proto, name: &str) -> io::Result<Conn> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = Conn::open(addr, proto)?;
        c.upgraded(deadline)?;
        let (frames, acks) = proto.subscribe(name);
        c.send(&frames)?;
        c.wait_acks(acks, deadline)?;
        Ok(c)
    }

    /// Opens a publisher: upgrade, hello, acknowledged.
    pub fn publisher(addr: SocketAddr, proto: Proto) -> io::Result<Conn> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = Conn::open(addr, proto)?;
        c.upgraded(deadline)?;
        let (frames, acks) = proto.publisher_hello("fps-bench-pub");
        c.send(&frames)?;
        c.wait_acks(acks, deadline)?;
        Ok(c)
    }

    /// Parses bytes read at `now_ns` (see [`Receiver::feed`]).
    pub fn feed(&mut self, data: &[u8], now_ns: u64, t0_ns: u64, hist: &mut Hist) {
        self.rx.feed(data, now_ns, t0_ns, hist);
    }

    /// Answers protocol pings (non-blocking socket: a tiny frame into an empty send buffer).
    pub fn answer_pings(&mut self) {
        if self.rx.got.pings == 0 {
            return;
        }
        if let Some(pong) = self.proto.pong() {
            for _ in 0..self.rx.got.pings {
                let _ = self.sock.write_all(&pong);
            }
        }
        self.rx.got.pings = 0;
    }
}
