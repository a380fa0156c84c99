//! The byte stream under a connection: plain TCP or TLS, both non-blocking with poll methods.

use std::future::poll_fn;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_io::Async;
use futures_lite::{AsyncRead, AsyncWrite};

use crate::tls::TlsStream;

/// Plain or TLS stream.
pub enum Transport {
    /// Plain TCP.
    Plain(Async<TcpStream>),
    /// TLS over TCP.
    Tls(Box<TlsStream>),
}

impl Transport {
    /// Reads into `buf`; `Ok(0)` at end of stream.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(t) => t.poll_read(cx, buf),
        }
    }

    /// Ready when a read may find data: for plain TCP, when the reactor reported readability
    /// since the last registration (no syscall otherwise); TLS always says "try" because
    /// rustls may hold decrypted bytes.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(s) => s.poll_readable(cx),
            Transport::Tls(_) => Poll::Ready(Ok(())),
        }
    }

    /// Writes some of `buf`.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(t) => t.poll_write(cx, buf),
        }
    }

    /// Pushes out anything buffered below us (TLS records).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(_) => Poll::Ready(Ok(())),
            Transport::Tls(t) => t.poll_flush(cx),
        }
    }

    /// Half-closes the stream (FIN / close_notify), best effort.
    pub fn shutdown_write(&mut self) {
        match self {
            Transport::Plain(s) => {
                let _ = s.get_ref().shutdown(Shutdown::Write);
            }
            Transport::Tls(t) => t.shutdown_write(),
        }
    }

    /// Reads once.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Writes all of `buf` and flushes.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = poll_fn(|cx| self.poll_write(cx, buf)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = buf.get(n..).unwrap_or(&[]);
        }
        poll_fn(|cx| self.poll_flush(cx)).await
    }
}
