//! `fastpubsub-relay sub` and `fastpubsub-relay pub`: small blocking WebSocket clients of the
//! client contract, for a first contact and for scripts.
//!
//! Exit codes: 0 success, 1 the relay refused something (`ERR:`), 2 usage or connection
//! problem (bad URL, unreachable relay, refused handshake).

use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::time::Duration;

use argh::FromArgs;
use fastpubsub_core::frame::{DeliverView, Mode, Publish};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// Subscribe to a pattern and print every delivery as `<channel><TAB><payload>`.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "sub")]
pub struct SubArgs {
    /// relay WebSocket URL, e.g. ws://127.0.0.1:8080/ws
    #[argh(option, default = "String::from(\"ws://127.0.0.1:8080/ws\")")]
    pub url: String,
    /// access token (sent as subprotocol at.<TOKEN>)
    #[argh(option)]
    pub token: Option<String>,
    /// exit after this many deliveries
    #[argh(option)]
    pub count: Option<u64>,
    /// tenant
    #[argh(positional)]
    pub tenant: String,
    /// pattern, e.g. public.# (quote it in the shell)
    #[argh(positional)]
    pub pattern: String,
}

/// Publish MESSAGE, or each line of standard input when no message is given.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "pub")]
pub struct PubArgs {
    /// relay WebSocket URL, e.g. ws://127.0.0.1:8080/ws
    #[argh(option, default = "String::from(\"ws://127.0.0.1:8080/ws\")")]
    pub url: String,
    /// access token (sent as subprotocol at.<TOKEN>)
    #[argh(option)]
    pub token: Option<String>,
    /// delivery mode: broadcast (default), low-latency or random
    #[argh(option, default = "String::from(\"broadcast\")")]
    pub mode: String,
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

type Ws = WebSocket<TcpStream>;

/// Connects and completes the handshake, with readable errors.
pub fn connect(url: &str, token: Option<&str>) -> Result<Ws, String> {
    if url.starts_with("wss://") {
        return Err(
            "wss:// is not supported by the CLI tools yet; use ws:// (e.g. on 127.0.0.1)".into(),
        );
    }
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("bad URL {url:?}: {e}"))?;
    let host = req
        .uri()
        .host()
        .ok_or_else(|| format!("URL {url:?} has no host"))?
        .to_string();
    let port = req.uri().port_u16().unwrap_or(80);
    let protocols = match token {
        Some(t) => format!("llps.v1, at.{t}"),
        None => "llps.v1".to_string(),
    };
    let value = HeaderValue::from_str(&protocols)
        .map_err(|_| "the token contains characters not allowed in a header".to_string())?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", value);
    let stream = TcpStream::connect((host.as_str(), port))
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
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
    let mut delivered = 0u64;
    loop {
        let mut ws = match connect(&args.url, args.token.as_deref()) {
            Ok(ws) => ws,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
        let cmd = format!("SUB:{}:{}", args.tenant, args.pattern);
        if let Err(e) = ws.send(Message::text(cmd)) {
            eprintln!("error: cannot send SUB: {e}");
            return 2;
        }
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        loop {
            let msg = match ws.read() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("connection ended: {e}");
                    return 2;
                }
            };
            match msg {
                Message::Binary(b) => match DeliverView::new_checked(&b) {
                    Ok(d) => {
                        if print_payload(&mut out, d.channel(), d.payload()).is_err() {
                            return 0; // stdout closed (e.g. piped into head)
                        }
                        let _ = out.flush();
                        delivered += 1;
                        if args.count.is_some_and(|c| delivered >= c) {
                            let _ = ws.close(None);
                            return 0;
                        }
                    }
                    Err(e) => eprintln!("warning: unreadable deliver frame: {e}"),
                },
                Message::Text(t) => {
                    let t = t.as_str();
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
                Message::Close(frame) => {
                    let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    eprintln!("relay closed the connection {why}");
                    return 2;
                }
                _ => {}
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
    ws: &mut Ws,
    mode: Mode,
    tenant: &str,
    channel: &str,
    payload: &[u8],
) -> Result<(), String> {
    let mut frame = vec![0u8; Publish::encoded_len_v2(tenant, channel, payload)];
    Publish::encode_v2(mode, tenant, channel, payload, &mut frame).map_err(|e| e.to_string())?;
    ws.send(Message::binary(frame))
        .map_err(|e| format!("cannot send: {e}"))
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
    let mut ws = match connect(&args.url, args.token.as_deref()) {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let result = match &args.message {
        Some(m) => send_publish(&mut ws, mode, &args.tenant, &args.channel, m.as_bytes()),
        None => {
            let stdin = std::io::stdin();
            let mut r = Ok(());
            for line in stdin.lock().lines() {
                match line {
                    Ok(l) => {
                        r = send_publish(&mut ws, mode, &args.tenant, &args.channel, l.as_bytes());
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
    if ws.send(Message::text("PING")).is_err() {
        eprintln!("error: connection lost before the relay confirmed");
        return 2;
    }
    let _ = ws.get_ref().set_read_timeout(Some(Duration::from_secs(10)));
    let mut code = 0;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) if t.as_str() == "PONG" => break,
            Ok(Message::Text(t)) => {
                if let Some(err) = t.as_str().strip_prefix("ERR:") {
                    eprintln!("error from relay: {err}");
                    code = 1;
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: no confirmation from the relay: {e}");
                return 2;
            }
        }
    }
    let _ = ws.close(None);
    let _ = ws.flush();
    code
}
