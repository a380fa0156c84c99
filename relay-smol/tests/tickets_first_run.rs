//! The secure first run and the ticket CLI, through the real binary: `run` with no key
//! material creates the state directory and prints a master token, a dev ticket and
//! commands that work; a restart reuses the keys; `keygen`, `ticket`, `ticket inspect`.
// Deadlines for waiting on a real child process.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fastpubsub-relay");
const WAIT: Duration = Duration::from_secs(20);

struct Relay {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Relay {
    fn start(state: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "off",
                "--state-dir",
            ])
            .arg(state)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start relay");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line containing `needle`; returns it.
    fn wait_line(&mut self, needle: &str) -> String {
        self.wait_lines(needle, false).0
    }

    /// Waits for a stdout line containing `needle` and the line after it.
    fn wait_next(&mut self, needle: &str) -> String {
        self.wait_lines(needle, true).1
    }

    fn wait_lines(&mut self, needle: &str, next: bool) -> (String, String) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.seen.iter().position(|l| l.contains(needle)) {
                while next && self.seen.len() <= i + 1 && Instant::now() < deadline {
                    if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                        self.seen.push(l);
                    }
                }
                let next = self.seen.get(i + 1).cloned().unwrap_or_default();
                return (self.seen[i].clone(), next);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no line with {needle:?}; got {:#?}",
                self.seen
            );
            if let Ok(l) = self
                .lines
                .recv_timeout(left.min(Duration::from_millis(500)))
            {
                self.seen.push(l);
            }
        }
    }

    fn addr(&mut self) -> String {
        let line = self.wait_line("listening on ws://");
        let rest = line.split("ws://").nth(1).expect("url");
        rest.split('/').next().expect("addr").to_owned()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let d = std::env::temp_dir().join(format!("fps-{name}-{}-{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

fn post_get_token(addr: &str, master: &str) -> (u16, String) {
    let body = format!(
        r#"{{"right":{{"tenant_grants":[{{"tenant_ids":["dev"],"allow_channels_pub":["public.#"],"allow_channels_sub":["public.#"]}}],"expires_at":"{}"}}}}"#,
        fastpubsub_relay::tickets::rfc3339::format(
            std::time::SystemTime::UNIX_EPOCH
                .elapsed()
                .expect("clock")
                .as_secs()
                + 3600
        )
    );
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "POST /v1/get-token HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {master}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (
        status,
        resp.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

/// Runs the printed `sub` and `pub` commands: the subscriber must print the message.
fn sub_and_pub_work(addr: &str, token: &str) {
    let url = format!("ws://{addr}/ws");
    let mut sub = Command::new(BIN)
        .args([
            "sub", "--url", &url, "--token", token, "--count", "1", "dev", "public.#",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sub");
    let deadline = Instant::now() + WAIT;
    let mut done = None;
    while done.is_none() && Instant::now() < deadline {
        let ok = Command::new(BIN)
            .args([
                "pub",
                "--url",
                &url,
                "--token",
                token,
                "dev",
                "public.hello",
                "hi there",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("pub")
            .success();
        assert!(ok, "pub with the dev ticket failed");
        for _ in 0..10 {
            if let Some(status) = sub.try_wait().expect("wait") {
                done = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    let status = match done {
        Some(s) => s,
        None => {
            let _ = sub.kill();
            let _ = sub.wait();
            panic!("sub got nothing within {WAIT:?}");
        }
    };
    let mut out = String::new();
    sub.stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert!(status.success(), "sub failed: {out}");
    assert!(out.contains("public.hello\thi there"), "{out}");
}

#[test]
fn first_run_creates_keys_and_prints_working_commands_then_reuses_them() {
    let state = temp_dir("first-run");
    let mut relay = Relay::start(&state);
    let addr = relay.addr();
    relay.wait_line("secure first run");
    let master = relay.wait_next("Master token");
    let ticket = relay.wait_next("Dev ticket");
    let (master, ticket) = (master.trim().to_owned(), ticket.trim().to_owned());
    assert!(ticket.starts_with("AT_"), "{ticket}");
    relay.wait_line(&format!(
        "sub --url ws://{addr}/ws --token {ticket} dev 'public.#'"
    ));
    relay.wait_line("curl -s -X POST");
    #[cfg(unix)]
    {
        assert_eq!(mode(&state), 0o700);
        for f in ["ticket-signing.key", "ticket-public.key", "master.token"] {
            assert_eq!(mode(&state.join(f)), 0o600, "{f}");
        }
    }
    sub_and_pub_work(&addr, &ticket);
    let (status, body) = post_get_token(&addr, &master);
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with(r#"{"token":"AT_"#), "{body}");
    assert_eq!(post_get_token(&addr, "not-the-master").0, 401);
    drop(relay);

    // A restart reuses the key material: no new secrets, old tickets still work.
    let mut again = Relay::start(&state);
    let addr = again.addr();
    again.wait_line("access tickets: issuing relay");
    assert!(
        !again.seen.iter().any(|l| l.contains("secure first run")),
        "{:#?}",
        again.seen
    );
    assert!(
        !again.seen.iter().any(|l| l.contains(&master)),
        "master token not printed again"
    );
    sub_and_pub_work(&addr, &ticket);
    drop(again);
    let _ = std::fs::remove_dir_all(&state);
}

#[test]
fn keygen_mint_and_inspect_cli() {
    let dir = temp_dir("cli");
    let out = Command::new(BIN)
        .args(["keygen", "--dir"])
        .arg(&dir)
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    #[cfg(unix)]
    for f in ["ticket-signing.key", "ticket-public.key"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let again = Command::new(BIN)
        .args(["keygen", "--dir"])
        .arg(&dir)
        .output()
        .expect("keygen");
    assert!(!again.status.success(), "never overwrites keys");

    let sk = dir.join("ticket-signing.key");
    let pk = dir.join("ticket-public.key");
    let out = Command::new(BIN)
        .args([
            "ticket",
            "--tenant",
            "t1",
            "--pub",
            "public.#",
            "--sub",
            "public.#",
            "--ttl",
            "1h",
            "--signing-key",
        ])
        .arg(&sk)
        .output()
        .expect("mint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_owned();
    assert!(token.starts_with("AT_"));

    let out = Command::new(BIN)
        .args(["ticket", "inspect", &token, "--public-key"])
        .arg(&pk)
        .output()
        .expect("inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("tenants [\"t1\"]") && text.contains("VALID now"),
        "{text}"
    );

    let other = temp_dir("cli-other");
    assert!(
        Command::new(BIN)
            .args(["keygen", "--dir"])
            .arg(&other)
            .status()
            .expect("keygen")
            .success()
    );
    let out = Command::new(BIN)
        .args(["ticket", "inspect", &token, "--public-key"])
        .arg(other.join("ticket-public.key"))
        .output()
        .expect("inspect");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("INVALID: ticket signature does not verify")
    );

    let out = Command::new(BIN)
        .args([
            "ticket",
            "--tenant",
            "t1",
            "--pub",
            "a",
            "--ttl",
            "25h",
            "--signing-key",
        ])
        .arg(&sk)
        .output()
        .expect("mint");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("between 1s and 24h"));
    let out = Command::new(BIN)
        .args([
            "ticket",
            "--tenant",
            "t1",
            "--pub",
            "a.#.b",
            "--signing-key",
        ])
        .arg(&sk)
        .output()
        .expect("mint");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_channels_pub: invalid pattern"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}
