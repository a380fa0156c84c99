//! The admin listener: a tiny HTTP/1.1 server for the admin paths only, bound to loopback by
//! default ([`super::access::DEFAULT_ADMIN_LISTEN`]). One request per connection
//! (`Connection: close`), `GET`/`HEAD`, bounded everywhere: at most [`MAX_CONNECTIONS`] at once
//! (more are closed at once and counted), request head at most [`MAX_REQUEST_BYTES`], and
//! [`REQUEST_TIMEOUT`] to send it.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_io::{Async, Timer};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};

use super::access::Listener;
use super::routes::{AdminRoutes, Response};

/// One connection's task, for the caller's executor.
pub type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// Most admin connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest request head (request line and headers) accepted.
pub const MAX_REQUEST_BYTES: usize = 8192;
/// Time a client has to send its request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A bound admin listener. [`AdminServer::run`] serves it until the task is dropped.
pub struct AdminServer {
    listener: Async<TcpListener>,
    routes: Arc<AdminRoutes>,
    clock: fn() -> u64,
    active: Arc<AtomicUsize>,
    refused: Arc<AtomicU64>,
}

impl AdminServer {
    /// Binds `addr`. `clock` gives milliseconds since the Unix epoch (the relay's clock module).
    pub fn bind(
        addr: SocketAddr,
        routes: Arc<AdminRoutes>,
        clock: fn() -> u64,
    ) -> io::Result<Self> {
        Ok(AdminServer {
            listener: Async::<TcpListener>::bind(addr)?,
            routes,
            clock,
            active: Arc::new(AtomicUsize::new(0)),
            refused: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.get_ref().local_addr()
    }

    /// Connections closed because [`MAX_CONNECTIONS`] were already open.
    pub fn refused(&self) -> Arc<AtomicU64> {
        self.refused.clone()
    }

    /// Accepts connections forever (or until an accept error), handing each connection's task
    /// to `spawn` (e.g. `|t| ex.spawn(t).detach()` on a smol `Executor` or `LocalExecutor`).
    pub async fn run(self, spawn: impl Fn(Task)) -> io::Result<()> {
        loop {
            let (stream, peer) = self.listener.accept().await?;
            if self.active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                self.refused.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "admin listener: refusing {peer}, {MAX_CONNECTIONS} connections already open"
                );
                drop(stream);
                continue;
            }
            self.active.fetch_add(1, Ordering::Relaxed);
            let guard = ActiveGuard(self.active.clone());
            let routes = self.routes.clone();
            let clock = self.clock;
            spawn(Box::pin(async move {
                let _guard = guard;
                if let Err(e) = serve_one(stream, &routes, clock).await {
                    log::debug!("admin listener: {peer}: {e}");
                }
            }));
        }
    }
}

struct ActiveGuard(Arc<AtomicUsize>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_one(
    mut stream: Async<TcpStream>,
    routes: &AdminRoutes,
    clock: fn() -> u64,
) -> io::Result<()> {
    let read = read_head(&mut stream);
    let timeout = async {
        Timer::after(REQUEST_TIMEOUT).await;
        Err(HeadError::Timeout)
    };
    let response = match future::or(read, timeout).await {
        Ok(head) => answer(&head, routes, clock()),
        Err(HeadError::Io(e)) => return Err(e),
        Err(HeadError::Timeout) => plain(
            408,
            "Request Timeout",
            "request head not received in time\n",
        ),
        Err(HeadError::TooLarge) => plain(
            431,
            "Request Header Fields Too Large",
            "request head too large\n",
        ),
    };
    stream.write_all(&response.to_http1()).await?;
    stream.flush().await?;
    Ok(())
}

enum HeadError {
    Io(io::Error),
    Timeout,
    TooLarge,
}

async fn read_head(stream: &mut Async<TcpStream>) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

fn plain(status: u16, reason: &'static str, body: &'static str) -> Response {
    Response {
        status,
        reason,
        content_type: "text/plain; charset=utf-8",
        headers: super::SECURITY_HEADERS.to_vec(),
        body: std::borrow::Cow::Borrowed(body.as_bytes()),
        content_length: body.len(),
    }
}

/// Parses a request head and routes it.
fn answer(head: &[u8], routes: &AdminRoutes, now_ms: u64) -> Response {
    let Ok(head) = std::str::from_utf8(head) else {
        return plain(400, "Bad Request", "request head is not UTF-8\n");
    };
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return plain(
            400,
            "Bad Request",
            "malformed request line; expected `METHOD /path HTTP/1.1`\n",
        );
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return plain(
            400,
            "Bad Request",
            "only HTTP/1.x requests for absolute paths are served\n",
        );
    }
    let authorization = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| v.trim())
    });
    match routes.handle(Listener::Admin, method, target, authorization, now_ms) {
        Some(r) => r,
        None => plain(
            404,
            "Not Found",
            "admin listener: see /dashboard, /v1/mesh, /v1/status and /metrics\n",
        ),
    }
}
