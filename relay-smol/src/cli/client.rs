//! `fastpubsub-relay sub` and `fastpubsub-relay pub`: small blocking clients of the client
//! contract, for a first contact and for scripts, over WebSocket (`ws://`, `wss://`) or
//! WebTransport (`https://`).
//!
//! Exit codes: 0 success, 1 the relay refused something (`ERR:`), 2 usage or connection
//! problem (bad URL, unreachable relay, refused handshake).
//!
//! Certificates (`wss://`, `https://`): these tools carry no system root store. Give the
//! relay's CA with `--ca FILE`, pin a WebTransport certificate with `--cert-hash HEX` (from
//! `GET /v1/wt-cert-hash`), or skip the check in a lab with `--insecure`.

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use fastpubsub_core::frame::{DeliverView, Mode, Publish};
use rustls_pki_types::pem::PemObject;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

use crate::wt::client::{CertCheck, Incoming, WtClient};

/// Subscribe to a pattern and print every delivery as `<channel><TAB><payload>`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sub")]
pub struct SubArgs {
    /// relay URL: ws://HOST/ws, wss://HOST/ws or https://HOST:PORT/ (WebTransport)
    #[argh(option, default = "String::from(\"ws://127.0.0.1:8080/ws\")")]
    pub url: String,
    /// access token (WebSocket: subprotocol at.<TOKEN>; WebTransport: Bearer)
    #[argh(option)]
    pub token: Option<String>,
    /// exit after this many deliveries
    #[argh(option)]
    pub count: Option<u64>,
    /// do not check the relay's certificate (labs only)
    #[argh(switch)]
    pub insecure: bool,
    /// CA certificate (PEM) to check the relay's certificate with
    #[argh(option)]
    pub ca: Option<PathBuf>,
    /// https:// only: accept just the certificate with this SHA-256 (hex)
    #[argh(option)]
    pub cert_hash: Option<String>,
    /// tenant
    #[argh(positional)]
    pub tenant: String,
    /// pattern, e.g. public.# (quote it in the shell); over WebTransport options may follow,
    /// e.g. 'public.#:U:0:0' (a line) or 'public.#:D' (datagrams)
    #[argh(positional)]
    pub pattern: String,
}

/// Publish MESSAGE, or each line of standard input when no message is given.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "pub")]
pub struct PubArgs {
    /// relay URL: ws://HOST/ws, wss://HOST/ws or https://HOST:PORT/ (WebTransport)
    #[argh(option, default = "String::from(\"ws://127.0.0.1:8080/ws\")")]
    pub url: String,
    /// access token (WebSocket: subprotocol at.<TOKEN>; WebTransport: Bearer)
    #[argh(option)]
    pub token: Option<String>,
    /// delivery mode: broadcast (default), low-latency or random
    #[argh(option, default = "String::from(\"broadcast\")")]
    pub mode: String,
    /// do not check the relay's certificate (labs only)
    #[argh(switch)]
    pub insecure: bool,
    /// CA certificate (PEM) to check the relay's certificate with
    #[argh(option)]
    pub ca: Option<PathBuf>,
    /// https:// only: accept just the certificate with this SHA-256 (hex)
    #[argh(option)]
    pub cert_hash: Option<String>,
    /// tenant
    #[argh(positional)]
    pub tenant: String,
    /// channel, e.g. public.chat
    #[argh(positional)]
    pub channel: String,
    /// message (reads lines from stdin when absent)
    #[argh(positional)]
    pub message: Option<String>,
}

/// How long a connect and a confirmation may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP stream, plain or TLS.
pub enum Stream {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }
}

type Ws = WebSocket<Stream>;

/// How the tools check certificates, from `--insecure`, `--ca`, `--cert-hash`.
#[derive(Debug, Clone)]
pub struct Trust {
    /// `--insecure`.
    pub insecure: bool,
    /// `--ca`.
    pub ca: Option<PathBuf>,
    /// `--cert-hash`.
    pub cert_hash: Option<String>,
}

impl Trust {
    fn roots(&self) -> Result<Option<Arc<rustls::RootCertStore>>, String> {
        let Some(path) = &self.ca else {
            return Ok(None);
        };
        let mut store = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read --ca {}: {e}", path.display()))?
        {
            let c = c.map_err(|e| format!("bad PEM in --ca {}: {e}", path.display()))?;
            store
                .add(c)
                .map_err(|e| format!("unusable CA in {}: {e}", path.display()))?;
        }
        Ok(Some(Arc::new(store)))
    }

    /// The WebTransport certificate check.
    pub fn wt_check(&self) -> Result<CertCheck, String> {
        if let Some(h) = &self.cert_hash {
            return crate::wt::client::parse_hash(h)
                .map(CertCheck::Sha256)
                .map_err(|e| format!("--cert-hash: {e}"));
        }
        if let Some(r) = self.roots()? {
            return Ok(CertCheck::Roots(r));
        }
        if self.insecure {
            return Ok(CertCheck::Insecure);
        }
        Err(
            "https:// needs --cert-hash HEX (GET /v1/wt-cert-hash on the relay), --ca FILE, \
             or --insecure in a lab: this tool has no system root store"
                .into(),
        )
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let cfg = match (self.roots()?, self.insecure) {
            (Some(r), _) => builder.with_root_certificates(r).with_no_client_auth(),
            (None, true) => {
                // The same "accept anything" verifier as WebTransport's --insecure.
                let wt = crate::wt::client::insecure_verifier(provider);
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(wt)
                    .with_no_client_auth()
            }
            (None, false) => {
                return Err(
                    "wss:// needs --ca FILE (the relay's CA), or --insecure in a lab: \
                            this tool has no system root store"
                        .into(),
                );
            }
        };
        Ok(Arc::new(cfg))
    }
}

/// One connection of the tools: WebSocket or WebTransport.
pub enum Link {
    /// `ws://` or `wss://`.
    Ws(Box<Ws>),
    /// `https://`.
    Wt(Box<WtClient>),
}

/// What the relay sent, for the tools.
pub enum Got {
    /// A text line.
    Text(String),
    /// A deliver frame.
    Binary(Vec<u8>),
    /// Nothing within the time given.
    Nothing,
    /// The connection ended (why).
    Ended(String),
}

impl Link {
    fn send_text(&mut self, t: &str) -> Result<(), String> {
        match self {
            Link::Ws(ws) => ws
                .send(Message::text(t))
                .map_err(|e| format!("cannot send: {e}")),
            Link::Wt(c) => {
                c.send_text(t);
                Ok(())
            }
        }
    }

    fn send_binary(&mut self, b: Vec<u8>) -> Result<(), String> {
        match self {
            Link::Ws(ws) => ws
                .send(Message::binary(b))
                .map_err(|e| format!("cannot send: {e}")),
            Link::Wt(c) => {
                c.send_binary(&b);
                if c.flush(TIMEOUT) {
                    Ok(())
                } else {
                    Err(format!(
                        "cannot send: {}",
                        c.closed().unwrap_or("the relay does not take data")
                    ))
                }
            }
        }
    }

    fn recv(&mut self, wait: Option<Duration>) -> Got {
        match self {
            Link::Ws(ws) => {
                let _ = ws.get_ref().tcp().set_read_timeout(wait);
                match ws.read() {
                    Ok(Message::Text(t)) => Got::Text(t.as_str().to_owned()),
                    Ok(Message::Binary(b)) => Got::Binary(b.to_vec()),
                    Ok(Message::Close(f)) => Got::Ended(format!(
                        "relay closed the connection {}",
                        f.map(|f| f.reason.to_string()).unwrap_or_default()
                    )),
                    Ok(_) => Got::Nothing,
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        Got::Nothing
                    }
                    Err(e) => Got::Ended(format!("connection ended: {e}")),
                }
            }
            Link::Wt(c) => match c.recv(wait.unwrap_or(Duration::from_secs(3600))) {
                Some(Incoming::Text(t)) => Got::Text(t),
                Some(Incoming::Deliver(b, _)) => Got::Binary(b),
                None => match c.closed() {
                    Some(why) => Got::Ended(format!("session ended: {why}")),
                    None => Got::Nothing,
                },
            },
        }
    }

    fn close(self) {
        match self {
            Link::Ws(mut ws) => {
                let _ = ws.close(None);
                let _ = ws.flush();
            }
            Link::Wt(mut c) => c.finish(),
        }
    }
}

/// Connects and completes the handshake, with readable errors.
pub fn connect(url: &str, token: Option<&str>, trust: &Trust) -> Result<Link, String> {
    if url.starts_with("https://") {
        let c = WtClient::connect(url, token, trust.wt_check()?, TIMEOUT)?;
        return Ok(Link::Wt(Box::new(c)));
    }
    let tls = url.starts_with("wss://");
    if !tls && !url.starts_with("ws://") {
        return Err(format!(
            "URL {url:?}: use ws://HOST/ws, wss://HOST/ws or https://HOST:PORT/ (WebTransport)"
        ));
    }
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let host = req
        .uri()
        .host()
        .ok_or_else(|| format!("URL {url:?} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = req.uri().port_u16().unwrap_or(if tls { 443 } else { 80 });
    let protocols = match token {
        Some(t) => format!("llps.v1, at.{t}"),
        None => "llps.v1".to_string(),
    };
    let value = HeaderValue::from_str(&protocols)
        .map_err(|_| "the token contains characters not allowed in a header".to_string())?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", value);
    let tcp = TcpStream::connect((host.as_str(), port))
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(TIMEOUT));
    let stream = if tls {
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("bad host name {host:?}: {e}"))?;
        let conn = rustls::ClientConnection::new(trust.tls()?, name)
            .map_err(|e| format!("TLS setup: {e}"))?;
        Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
    } else {
        Stream::Plain(tcp)
    };
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(Link::Ws(Box::new(ws))),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            Err(format!(
                "the relay refused the connection: HTTP {}: {}",
                resp.status(),
                body.trim()
            ))
        }
        Err(e) => Err(format!("WebSocket handshake with {url} failed: {e}")),
    }
}

fn print_payload(out: &mut impl Write, channel: &str, payload: &[u8]) -> std::io::Result<()> {
    match std::str::from_utf8(payload) {
        Ok(s) if !s.chars().any(|c| c.is_control() && c != '\t') => writeln!(out, "{channel}\t{s}"),
        _ => {
            write!(out, "{channel}\t0x")?;
            for b in payload {
                write!(out, "{b:02x}")?;
            }
            writeln!(out)
        }
    }
}

/// `sub`: returns the exit code.
pub fn sub(args: SubArgs) -> i32 {
    let trust = Trust {
        insecure: args.insecure,
        ca: args.ca.clone(),
        cert_hash: args.cert_hash.clone(),
    };
    let mut delivered = 0u64;
    loop {
        let mut link = match connect(&args.url, args.token.as_deref(), &trust) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
        let cmd = format!("SUB:{}:{}", args.tenant, args.pattern);
        if let Err(e) = link.send_text(&cmd) {
            eprintln!("error: cannot send SUB: {e}");
            return 2;
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        loop {
            match link.recv(None) {
                Got::Binary(b) => match DeliverView::new_checked(&b) {
                    Ok(d) => {
                        if print_payload(&mut out, d.channel(), d.payload()).is_err() {
                            return 0; // stdout closed (e.g. piped into head)
                        }
                        let _ = out.flush();
                        delivered += 1;
                        if args.count.is_some_and(|c| delivered >= c) {
                            link.close();
                            return 0;
                        }
                    }
                    Err(e) => eprintln!("warning: unreadable deliver frame: {e}"),
                },
                Got::Text(t) => {
                    if let Some(rest) = t.strip_prefix("OK:SUB:") {
                        eprintln!("subscribed to {rest}");
                    } else if let Some(err) = t.strip_prefix("ERR:") {
                        eprintln!("error from relay: {err}");
                        return 1;
                    } else if t == "RECONNECT" {
                        eprintln!("relay asked to reconnect; reconnecting");
                        break;
                    }
                }
                Got::Nothing => {}
                Got::Ended(why) => {
                    eprintln!("{why}");
                    return 2;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "broadcast" | "0" => Ok(Mode::Broadcast),
        "low-latency" | "lowlatency" | "1" => Ok(Mode::LowLatency),
        "random" | "2" => Ok(Mode::Random),
        other => Err(format!(
            "unknown --mode {other:?}: use broadcast, low-latency or random"
        )),
    }
}

fn send_publish(
    link: &mut Link,
    mode: Mode,
    tenant: &str,
    channel: &str,
    payload: &[u8],
) -> Result<(), String> {
    let mut frame = vec![0u8; Publish::encoded_len_v2(tenant, channel, payload)];
    Publish::encode_v2(mode, tenant, channel, payload, &mut frame).map_err(|e| e.to_string())?;
    link.send_binary(frame)
}

/// `pub`: returns the exit code. After publishing it sends `PING` and waits for `PONG`, so
/// every `ERR:` the relay sent for these publishes is shown.
pub fn publish(args: PubArgs) -> i32 {
    let mode = match parse_mode(&args.mode) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let trust = Trust {
        insecure: args.insecure,
        ca: args.ca.clone(),
        cert_hash: args.cert_hash.clone(),
    };
    let mut link = match connect(&args.url, args.token.as_deref(), &trust) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let result = match &args.message {
        Some(m) => send_publish(&mut link, mode, &args.tenant, &args.channel, m.as_bytes()),
        None => {
            let stdin = std::io::stdin();
            let mut r = Ok(());
            for line in stdin.lock().lines() {
                match line {
                    Ok(l) => {
                        r = send_publish(
                            &mut link,
                            mode,
                            &args.tenant,
                            &args.channel,
                            l.as_bytes(),
                        );
                        if r.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        r = Err(format!("cannot read stdin: {e}"));
                        break;
                    }
                }
            }
            r
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        return 2;
    }
    if link.send_text("PING").is_err() {
        eprintln!("error: connection lost before the relay confirmed");
        return 2;
    }
    let mut code = 0;
    let deadline = crate::clock::now() + TIMEOUT;
    loop {
        match link.recv(Some(Duration::from_millis(500))) {
            Got::Text(t) if t == "PONG" => break,
            Got::Text(t) => {
                if let Some(err) = t.strip_prefix("ERR:") {
                    eprintln!("error from relay: {err}");
                    code = 1;
                }
            }
            Got::Binary(_) | Got::Nothing => {}
            Got::Ended(why) => {
                eprintln!("error: no confirmation from the relay: {why}");
                return 2;
            }
        }
        if crate::clock::now() >= deadline {
            eprintln!("error: no confirmation from the relay within {TIMEOUT:?}");
            return 2;
        }
    }
    link.close();
    code
}
