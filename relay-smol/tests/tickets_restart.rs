//! Revocations survive restarts (issue #10): a real relay process revokes a ticket over
//! REST, is killed with SIGKILL (no chance to save at exit), and after a restart on the
//! same state directory still refuses that ticket. A damaged status file stops the relay
//! from starting, with a message that says what to do.
// Deadlines for waiting on a real child process.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_fastpubsub-relay");
const WAIT: Duration = Duration::from_secs(20);

struct Relay {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin token: `/v1/ticket-stats` is served to its holders only.
const ADMIN: &str = "tickets-restart-admin-token";

fn command(state: &Path) -> Command {
    let token_file = std::env::temp_dir().join(format!("fps-restart-admin-{}", std::process::id()));
    std::fs::write(&token_file, ADMIN).expect("admin token file");
    let mut c = Command::new(BIN);
    c.args([
        "run",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "off",
        "--admin-token-file",
    ])
    .arg(token_file)
    .arg("--state-dir")
    .arg(state)
    .env("RUST_LOG", "warn");
    c
}

impl Relay {
    fn start(state: &Path) -> Self {
        let mut child = command(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start relay");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(WAIT).expect("relay printed its address");
        let addr = line
            .split("://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Relay { child, addr }
    }

    fn http(&self, request: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.write_all(request.as_bytes()).expect("send");
        let mut resp = Vec::new();
        let mut buf = [0u8; 4096];
        // Read the head, then (REST) the body up to Content-Length or EOF.
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => resp.extend_from_slice(&buf[..n]),
            }
            let text = String::from_utf8_lossy(&resp);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if head.starts_with("HTTP/1.1 101") || body.len() >= len {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    fn rest(&self, method: &str, path: &str, master: &str, body: &str) -> (u16, String) {
        self.http(&format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {master}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
    }

    /// The HTTP status of a WebSocket handshake with `token` (101 admitted, 401 refused)
    /// and the refusal's body.
    fn handshake(&self, token: &str) -> (u16, String) {
        self.http(&format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: llps.v1,at.{token}\r\n\r\n"
        ))
    }

    fn new_token(&self, master: &str) -> String {
        // Expiry one hour after the relay's clock (the test reads the same clock).
        let expires = fastpubsub_relay::tickets::rfc3339::format(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs()
                + 3600,
        );
        let body = format!(
            r#"{{"right":{{"tenant_grants":[{{"tenant_ids":["t1"],"allow_channels_pub":["public.#"],"allow_channels_sub":["public.#"]}}],"expires_at":"{expires}"}},"created_by":"restart-test"}}"#
        );
        let (status, body) = self.rest("POST", "/v1/get-token", master, &body);
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["token"].as_str().expect("token").to_owned()
    }

    fn status_records(&self) -> u64 {
        let (status, body) =
            self.http(&format!(
                "GET /v1/ticket-stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
            ));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        v["status_records"].as_u64().expect("status_records")
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fps-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn a_revoked_ticket_stays_revoked_after_a_kill_and_restart() {
    let state = tmpdir("restart");
    let relay = Relay::start(&state);
    let master = std::fs::read_to_string(state.join("master.token")).expect("master token");
    let master = master.trim();
    let revoked = relay.new_token(master);
    let refreshed = relay.new_token(master);
    let control = relay.new_token(master);
    let (s, b) = relay.rest(
        "DELETE",
        "/v1/revoke-token",
        master,
        &format!(r#"{{"token":"{revoked}"}}"#),
    );
    assert_eq!(s, 200, "{b}");
    let id = refreshed
        .strip_prefix("AT_")
        .and_then(|t| t.split('_').next())
        .expect("id");
    let later = fastpubsub_relay::tickets::rfc3339::format(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            + 7200,
    );
    let (s, b) = relay.rest(
        "PUT",
        "/v1/refresh-token",
        master,
        &format!(r#"{{"token_id":"{id}","expires_at":"{later}"}}"#),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(relay.handshake(&revoked).0, 401);
    assert_eq!(relay.handshake(&control).0, 101);
    assert_eq!(relay.status_records(), 2);
    assert!(
        state.join("ticket-status.bin").exists(),
        "saved before the REST answer"
    );

    // SIGKILL: nothing runs at exit; only what was saved before the 200 survives.
    drop(relay);
    let relay = Relay::start(&state);
    let (status, body) = relay.handshake(&revoked);
    assert_eq!(
        status, 401,
        "revoked ticket admitted after a restart: {body}"
    );
    assert!(body.contains("revoked"), "{body}");
    assert_eq!(relay.handshake(&control).0, 101);
    assert_eq!(relay.handshake(&refreshed).0, 101);
    assert_eq!(
        relay.status_records(),
        2,
        "refresh and revocation both loaded"
    );
    drop(relay);

    // A damaged file: the relay does not start, and says why and what to do.
    let path = state.join("ticket-status.bin");
    let mut bytes = std::fs::read(&path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    std::fs::write(&path, &bytes).expect("damage");
    let out = command(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ticket-status.bin is unusable: checksum mismatch")
            && stderr.contains("move it aside"),
        "{stderr}"
    );
    // Moved aside: the relay starts, without the records (the documented trade-off).
    std::fs::rename(&path, state.join("ticket-status.bin.damaged")).expect("move aside");
    let relay = Relay::start(&state);
    assert_eq!(relay.status_records(), 0);
    assert_eq!(relay.handshake(&control).0, 101);
    drop(relay);
    let _ = std::fs::remove_dir_all(&state);
}
