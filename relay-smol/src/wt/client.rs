//! A small blocking WebTransport client of the LLPS contract, on the same pieces as the
//! relay (quinn-proto, [`H3`]): for the `sub`/`pub` tools with `https://` URLs and for
//! tests. One thread, one UDP socket; [`WtClient::recv`] drives QUIC while it waits.
//!
//! Certificates: this tool has no system root store, so it either pins the relay's
//! certificate by SHA-256 (`--cert-hash`, as browsers do with `serverCertificateHashes`;
//! `GET /v1/wt-cert-hash` serves it) or, for labs, skips the check (`--insecure`).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{
    ClientConfig, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event, StreamId,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::frame::{ControlReader, KIND_BINARY, KIND_TEXT, push_control};
use super::h3::{H3, H3Event, ReadStatus, Role};

/// How the relay's certificate is checked.
#[derive(Debug, Clone)]
pub enum CertCheck {
    /// Accept any certificate (labs only).
    Insecure,
    /// Accept only a certificate whose SHA-256 (DER) is this.
    Sha256([u8; 32]),
    /// Verify the chain against these roots (e.g. a lab CA from `--ca`).
    Roots(Arc<rustls::RootCertStore>),
}

/// Parses a SHA-256 given as 64 hex digits (colons allowed).
pub fn parse_hash(s: &str) -> Result<[u8; 32], String> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 {
        return Err("a SHA-256 is 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
            .map_err(|_| "a SHA-256 is 64 hex digits".to_string())?;
    }
    Ok(out)
}

#[derive(Debug)]
struct Verifier {
    check: CertCheck,
    provider: Arc<rustls::crypto::CryptoProvider>,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(v) = &self.webpki {
            return v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        }
        match &self.check {
            CertCheck::Roots(_) => Err(rustls::Error::General("no verifier".into())),
            CertCheck::Insecure => Ok(ServerCertVerified::assertion()),
            CertCheck::Sha256(h) => {
                let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                if &got == h {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "certificate sha-256 {} is not the pinned one",
                        super::cert::hex(&got)
                    )))
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A verifier that accepts any certificate (still checking handshake signatures): the
/// tools' `--insecure`.
pub fn insecure_verifier(
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Arc<dyn ServerCertVerifier> {
    Arc::new(Verifier {
        check: CertCheck::Insecure,
        provider,
        webpki: None,
    })
}

fn client_config(check: CertCheck) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = match &check {
        CertCheck::Roots(roots) => Some(
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                roots.clone(),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("bad CA: {e}"))?,
        ),
        _ => None,
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            check,
            provider,
            webpki,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut cfg = ClientConfig::new(Arc::new(quic));
    cfg.transport_config(super::cert::client_transport());
    Ok(cfg)
}

/// Something the relay sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text line on the control stream (`OK:…`, `ERR:…`, `PONG`, `RECONNECT`).
    Text(String),
    /// A deliver frame, and where it came: 0 = control stream, 1..=8 = that line
    /// (numbered by its first frame), 255 = a datagram.
    Deliver(Vec<u8>, u8),
}

/// Where a line's frames are in their stream.
struct Line {
    id: StreamId,
    number: Option<u8>,
    reader: ControlReader,
}

/// See the module docs.
pub struct WtClient {
    endpoint: Endpoint,
    socket: UdpSocket,
    handle: ConnectionHandle,
    conn: quinn_proto::Connection,
    h3: H3,
    ctrl: Option<StreamId>,
    reader: ControlReader,
    lines: Vec<Line>,
    out: Vec<u8>,
    inbox: VecDeque<Incoming>,
    closed: Option<String>,
    buf: Vec<u8>,
}

/// Host and port and path of an `https://host:port/path?query` URL.
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("a WebTransport URL starts with https:// (got {url:?})"))?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path
    };
    if authority.is_empty() {
        return Err(format!("URL {url:?} has no host"));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    Ok((authority, path))
}

impl WtClient {
    /// Connects to `url` (`https://host:port/path`), sends the CONNECT with `token` as a
    /// Bearer ticket (and whatever `?at=` the URL carries), and opens the control stream.
    /// Fails with the relay's status and reason when it refuses.
    pub fn connect(
        url: &str,
        token: Option<&str>,
        check: CertCheck,
        timeout: Duration,
    ) -> Result<WtClient, String> {
        let (authority, path) = split_url(url)?;
        // IPv4 first: `localhost` often lists ::1 first while labs listen on 127.0.0.1.
        let mut addrs: Vec<SocketAddr> = authority
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .collect();
        addrs.sort_by_key(|a| a.is_ipv6());
        let remote = *addrs
            .first()
            .ok_or_else(|| format!("{authority} resolves to no address"))?;
        let bind: SocketAddr = if remote.is_ipv6() {
            "[::]:0".parse().map_err(|_| "bad bind address")?
        } else {
            "0.0.0.0:0".parse().map_err(|_| "bad bind address")?
        };
        let socket = UdpSocket::bind(bind).map_err(|e| format!("cannot bind UDP: {e}"))?;
        let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, true, None);
        let server_name = super::discovery::host_only(&authority).to_owned();
        let (handle, conn) = endpoint
            .connect(
                crate::clock::now(),
                client_config(check)?,
                remote,
                &server_name,
            )
            .map_err(|e| format!("cannot start QUIC to {remote}: {e}"))?;
        let mut c = WtClient {
            endpoint,
            socket,
            handle,
            conn,
            h3: H3::new(Role::Client),
            ctrl: None,
            reader: ControlReader::default(),
            lines: Vec::new(),
            out: Vec::new(),
            inbox: VecDeque::new(),
            closed: None,
            buf: vec![0; 65_536],
        };
        let deadline = crate::clock::now() + timeout;
        let mut requested = false;
        loop {
            c.turn(Duration::from_millis(20))
                .map_err(|e| format!("WebTransport to {url}: {e}"))?;
            if let Some(why) = &c.closed {
                return Err(format!("WebTransport to {url}: {why}"));
            }
            if !requested && c.conn.is_handshaking() {
                // wait
            } else if !requested {
                c.h3.connect(&mut c.conn, &authority, &path, token)
                    .ok_or("the relay allows no request stream")?;
                requested = true;
            }
            while let Some(ev) = c.h3.poll_event() {
                match ev {
                    H3Event::Response { status: 200, .. } => {
                        let id =
                            c.h3.open(&mut c.conn, Dir::Bi)
                                .ok_or("the relay allows no control stream")?;
                        c.ctrl = Some(id);
                        c.flush_transmits();
                        return Ok(c);
                    }
                    H3Event::Response { status, reason } => {
                        return Err(format!(
                            "the relay refused the session: HTTP {status}: {}",
                            reason.unwrap_or_default()
                        ));
                    }
                    H3Event::Fatal(code, why) => {
                        return Err(format!("HTTP/3 error {code:#x}: {why}"));
                    }
                    other => c.on_h3(other),
                }
            }
            if crate::clock::now() >= deadline {
                return Err(format!(
                    "WebTransport to {url}: no answer within {timeout:?}"
                ));
            }
        }
    }

    /// Moves to a new local UDP port (like a NAT rebinding or a network change); QUIC
    /// migrates the connection.
    pub fn rebind(&mut self) -> io::Result<SocketAddr> {
        let local = self.socket.local_addr()?;
        let bind = SocketAddr::new(local.ip(), 0);
        self.socket = UdpSocket::bind(bind)?;
        self.socket.local_addr()
    }

    /// The local UDP address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Queues a text command (`SUB:t:p`, `PING`, …).
    pub fn send_text(&mut self, text: &str) {
        push_control(KIND_TEXT, text.as_bytes(), &mut self.out);
        self.write_out();
    }

    /// Queues a binary frame (a publish). Frames over 65,536 bytes go out as they are: the
    /// relay must refuse them (tests use this).
    pub fn send_binary(&mut self, frame: &[u8]) {
        push_control(KIND_BINARY, frame, &mut self.out);
        self.write_out();
    }

    /// Drives the connection until every queued byte was handed to QUIC (or `timeout`);
    /// `false` when some are left.
    pub fn flush(&mut self, timeout: Duration) -> bool {
        let deadline = crate::clock::now() + timeout;
        while !self.out.is_empty() && self.closed.is_none() && crate::clock::now() < deadline {
            if self.turn(Duration::from_millis(10)).is_err() {
                break;
            }
        }
        self.out.is_empty()
    }

    /// Writes raw bytes to the control stream (tests of the relay's framing checks).
    pub fn send_raw_control(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.write_out();
    }

    /// Finishes the control stream (what dropping an SDK client does).
    pub fn finish(&mut self) {
        self.write_out();
        if let Some(id) = self.ctrl {
            let _ = self.conn.send_stream(id).finish();
        }
        self.flush_transmits();
    }

    /// Why the connection ended, once it has.
    pub fn closed(&self) -> Option<&str> {
        self.closed.as_deref()
    }

    /// The next thing the relay sent, waiting up to `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Option<Incoming> {
        let deadline = crate::clock::now() + timeout;
        loop {
            if let Some(i) = self.inbox.pop_front() {
                return Some(i);
            }
            if self.closed.is_some() {
                return None;
            }
            let now = crate::clock::now();
            if now >= deadline {
                return None;
            }
            if self
                .turn((deadline - now).min(Duration::from_millis(50)))
                .is_err()
            {
                return None;
            }
        }
    }

    fn write_out(&mut self) {
        let Some(id) = self.ctrl else { return };
        if self.out.is_empty() || self.h3.header_pending(id) {
            return;
        }
        if let Ok(n) = self.conn.send_stream(id).write(&self.out) {
            self.out.drain(..n);
        }
        self.flush_transmits();
    }

    fn flush_transmits(&mut self) {
        let now = crate::clock::now();
        let mut buf = Vec::with_capacity(1500);
        while let Some(t) = self.conn.poll_transmit(now, 1, &mut buf) {
            let _ = self
                .socket
                .send_to(buf.get(..t.size).unwrap_or(&[]), t.destination);
            buf.clear();
        }
    }

    /// One round: wait for a datagram (up to `wait`), feed it, handle timers and events,
    /// send what QUIC wants to send.
    fn turn(&mut self, wait: Duration) -> Result<(), String> {
        let now = crate::clock::now();
        let wait = match self.conn.poll_timeout() {
            Some(t) if t > now => wait.min(t - now),
            Some(_) => Duration::from_millis(1),
            None => wait,
        };
        let _ = self
            .socket
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match self.socket.recv_from(&mut self.buf) {
            Ok((n, from)) => {
                let now = crate::clock::now();
                let data = BytesMut::from(self.buf.get(..n).unwrap_or(&[]));
                let mut resp = Vec::new();
                if let Some(DatagramEvent::ConnectionEvent(h, ev)) =
                    self.endpoint.handle(now, from, None, None, data, &mut resp)
                    && h == self.handle
                {
                    self.conn.handle_event(ev);
                }
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            }
            Err(e) => return Err(format!("UDP: {e}")),
        }
        let now = crate::clock::now();
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        while let Some(ev) = self.conn.poll() {
            match &ev {
                Event::Connected => self.h3.on_connected(&mut self.conn),
                Event::ConnectionLost { reason } => {
                    self.closed = Some(reason.to_string());
                }
                _ => {}
            }
            self.h3.handle_event(&mut self.conn, &ev);
        }
        while let Some(ev) = self.conn.poll_endpoint_events() {
            if let Some(back) = self.endpoint.handle_event(self.handle, ev) {
                self.conn.handle_event(back);
            }
        }
        // Only the H3 events `connect` does not handle itself are consumed here.
        if self.ctrl.is_some() {
            while let Some(ev) = self.h3.poll_event() {
                self.on_h3(ev);
            }
        }
        self.write_out();
        self.flush_transmits();
        Ok(())
    }

    fn on_h3(&mut self, ev: H3Event) {
        match ev {
            H3Event::UniOpened(id) => {
                self.lines.push(Line {
                    id,
                    number: None,
                    reader: ControlReader::line(),
                });
                self.read_line(id);
            }
            H3Event::Readable(id) if Some(id) == self.ctrl => self.read_control(),
            H3Event::Readable(id) => self.read_line(id),
            H3Event::Writable(_) => self.write_out(),
            H3Event::Datagram(d) => self.inbox.push_back(Incoming::Deliver(d.to_vec(), 255)),
            H3Event::Fatal(_, why) => self.closed = Some(why),
            _ => {}
        }
    }

    fn read_control(&mut self) {
        let Some(id) = self.ctrl else { return };
        let mut frames = Vec::new();
        let reader = &mut self.reader;
        let mut bad = None;
        let status = self.h3.read(&mut self.conn, id, 1 << 20, &mut |b| {
            if let Err(e) = reader.push(b, &mut |k, p| frames.push((k, p.to_vec()))) {
                bad = Some(e.to_string());
            }
        });
        for (k, p) in frames {
            self.inbox.push_back(if k == KIND_TEXT {
                Incoming::Text(String::from_utf8_lossy(&p).into_owned())
            } else {
                Incoming::Deliver(p, 0)
            });
        }
        if let Some(b) = bad {
            self.closed = Some(b);
        } else if status != ReadStatus::Open {
            self.closed = Some("the relay ended the control stream".into());
        }
    }

    fn read_line(&mut self, id: StreamId) {
        let Some(i) = self.lines.iter().position(|l| l.id == id) else {
            return;
        };
        let mut payloads: Vec<Vec<u8>> = Vec::new();
        let mut raw = Vec::new();
        let status = self.h3.read(&mut self.conn, id, 1 << 20, &mut |b| {
            raw.extend_from_slice(b)
        });
        let Some(line) = self.lines.get_mut(i) else {
            return;
        };
        let _ = line
            .reader
            .push(&raw, &mut |_, p| payloads.push(p.to_vec()));
        for p in payloads {
            match line.number {
                None => {
                    line.number = std::str::from_utf8(&p)
                        .ok()
                        .and_then(|s| s.strip_prefix("U:"))
                        .and_then(|n| n.parse().ok())
                        .or(Some(0));
                }
                Some(n) => self.inbox.push_back(Incoming::Deliver(p, n)),
            }
        }
        if status != ReadStatus::Open {
            self.lines.remove(i);
        }
    }

    /// The datagram bytes of a session for tests that check RFC 9297 framing.
    pub fn datagram_max(&mut self) -> Option<usize> {
        self.conn.datagrams().max_size()
    }
}

impl Drop for WtClient {
    fn drop(&mut self) {
        self.conn.close(
            crate::clock::now(),
            quinn_proto::VarInt::from_u32(0),
            Bytes::from_static(b"bye"),
        );
        self.flush_transmits();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_hashes() {
        assert_eq!(
            split_url("https://h:4433/?at=x").unwrap(),
            ("h:4433".into(), "/?at=x".into())
        );
        assert_eq!(
            split_url("https://h").unwrap(),
            ("h:443".into(), "/".into())
        );
        assert_eq!(
            split_url("https://h?at=1").unwrap(),
            ("h:443".into(), "/?at=1".into())
        );
        assert!(split_url("wss://h/ws").is_err());
        let h = "ab".repeat(32);
        assert_eq!(parse_hash(&h).unwrap(), [0xab; 32]);
        assert!(parse_hash("abc").is_err());
    }
}
