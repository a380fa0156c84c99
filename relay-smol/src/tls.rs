//! Optional TLS on the edge port (`wss://` and `https://`): rustls with the ring provider,
//! driven over a non-blocking `Async<TcpStream>` with poll functions (no extra runtime).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use async_io::Async;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// Loads the PEM certificate chain and key into a server config (HTTP/1.1 ALPN).
pub fn load_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("cannot read certificate file {}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in certificate file {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no CERTIFICATE block in {}", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "cannot read a private key from {}: {e}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not form a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Plain reads/writes on the non-blocking socket (rustls wants `io::Read`/`io::Write`).
struct Raw<'a>(&'a TcpStream);

impl Read for Raw<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0;
        s.read(buf)
    }
}
impl Write for Raw<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.0;
        s.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A server-side TLS stream over a non-blocking TCP socket.
pub struct TlsStream {
    tcp: Async<TcpStream>,
    conn: rustls::ServerConnection,
}

impl TlsStream {
    /// Starts a server TLS session on an accepted socket.
    pub fn new(tcp: Async<TcpStream>, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream { tcp, conn })
    }

    /// The TCP socket.
    pub fn tcp(&self) -> &Async<TcpStream> {
        &self.tcp
    }

    /// Writes pending TLS records to the socket.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Raw(self.tcp.get_ref())) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_writable(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads plaintext; `Ok(0)` at end of stream.
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            if let Poll::Ready(Err(e)) = self.poll_flush(cx) {
                return Poll::Ready(Err(e));
            }
            match self.conn.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            match self.conn.read_tls(&mut Raw(self.tcp.get_ref())) {
                Ok(0) => return Poll::Ready(Ok(0)),
                Ok(_) => {
                    if let Err(e) = self.conn.process_new_packets() {
                        // Best effort: send the alert rustls queued, then fail.
                        let _ = self.conn.write_tls(&mut Raw(self.tcp.get_ref()));
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_readable(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes plaintext (buffered by rustls up to its limit, then pushed to the socket).
    pub fn poll_write(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let n = self.conn.writer().write(buf)?;
        let flushed = self.poll_flush(cx);
        if n > 0 {
            if let Poll::Ready(Err(e)) = flushed {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(n));
        }
        ready!(flushed)?;
        Poll::Ready(self.conn.writer().write(buf))
    }

    /// Sends close_notify and shuts the socket down for writing (best effort).
    pub fn shutdown_write(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.write_tls(&mut Raw(self.tcp.get_ref()));
        let _ = self.tcp.get_ref().shutdown(std::net::Shutdown::Write);
    }
}
