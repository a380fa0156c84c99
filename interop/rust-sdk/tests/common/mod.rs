//! Helpers of the SDK interop tests: relay processes with their printed addresses.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long any single wait may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// The relay binary under test: `RELAY_BIN`, else the workspace's debug build.
pub fn relay_bin() -> PathBuf {
    match std::env::var_os("RELAY_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/fastpubsub-relay"),
    }
}

/// A relay process and what it printed.
pub struct Relay {
    pub child: Child,
    /// HTTP/WebSocket address.
    pub ws: SocketAddr,
    /// WebTransport (UDP) address, if on.
    pub wt: Option<SocketAddr>,
    /// Mesh (UDP) address, if on.
    pub mesh: Option<SocketAddr>,
    /// Every line printed before it was ready.
    pub banner: Vec<String>,
}

/// The admin token the relays run with (`/stats` is for its holders).
pub const ADMIN_TOKEN: &str = "interop-admin-token-0123";

fn addr_in(line: &str) -> Option<SocketAddr> {
    line.split("://")
        .nth(1)
        .and_then(|s| s.split(['/', ' ']).next())
        .and_then(|s| s.parse().ok())
}

impl Relay {
    /// Starts `fastpubsub-relay run` with these arguments (add `--listen`, `--wt-listen`,
    /// …); returns once it printed its addresses (and, with tickets on, its dev ticket).
    pub fn start(args: &[&str]) -> Relay {
        let bin = relay_bin();
        // `/stats` is served to admin-token holders only.
        // Written once: tests start relays from parallel threads, and a relay reading the
        // file while another thread rewrites it could find it empty.
        static TOKEN_FILE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
        let token_file = TOKEN_FILE.get_or_init(|| {
            let p = std::env::temp_dir().join(format!("fps-interop-admin-{}", std::process::id()));
            std::fs::write(&p, ADMIN_TOKEN).unwrap();
            p
        });
        let mut child = Command::new(&bin)
            .arg("run")
            .args(["--admin-listen", "off"])
            .arg("--admin-token-file")
            .arg(&token_file)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); build it first", bin.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let wants_wt = args.contains(&"--wt-listen");
        let wants_mesh = args.contains(&"--mesh-listen");
        let tickets = !args.contains(&"--insecure-no-auth");
        let mut r = Relay { child, ws: "0.0.0.0:0".parse().unwrap(), wt: None, mesh: None, banner: Vec::new() };
        let mut have_ws = false;
        let deadline = Instant::now() + WAIT;
        loop {
            let ready = have_ws
                && (!wants_wt || r.wt.is_some())
                && (!wants_mesh || r.mesh.is_some())
                && (!tickets || r.banner.iter().any(|l| l.contains("AT_") || l.contains("access tickets")));
            if ready {
                return r;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("relay did not start: {:?}", r.banner));
            if line.contains("listening on") {
                r.ws = addr_in(&line).unwrap();
                have_ws = true;
            } else if line.contains("webtransport on") {
                r.wt = addr_in(&line);
            } else if line.contains(" mesh ") && line.contains("quic://") {
                r.mesh = addr_in(&line);
            }
            r.banner.push(line);
        }
    }

    /// `https://<wt>/` for the SDK's WebTransport endpoint.
    pub fn wt_url(&self) -> String {
        format!("https://{}/", self.wt.expect("started with --wt-listen"))
    }

    /// `ws://<ws>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    /// `http://<ws>`.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.ws)
    }

    /// The dev ticket of a first run.
    pub fn dev_ticket(&self) -> String {
        self.banner
            .iter()
            .find_map(|l| l.split_whitespace().find(|w| w.starts_with("AT_") && w.len() > 40))
            .expect("dev ticket in the banner")
            .to_string()
    }

    /// `GET path` on the HTTP port (with the admin token): (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.ws).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// One counter of `/stats` (a flat JSON object of numbers).
    pub fn stat(&self, name: &str) -> u64 {
        let body = self.get("/stats").1;
        let key = format!("\"{name}\":");
        let at = body.find(&key).unwrap_or_else(|| panic!("no {name} in {body}")) + key.len();
        body[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fastpubsub-interop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Mesh CA and certificates for `names`, made with the relay binary; returns the directory.
pub fn mesh_certs(names: &[&str]) -> PathBuf {
    let d = temp_dir("mesh");
    let run = |args: &[&str]| {
        let st = Command::new(relay_bin()).args(args).stdout(Stdio::null()).status().unwrap();
        assert!(st.success(), "{args:?}");
    };
    run(&["mesh-ca", "--dir", d.join("ca").to_str().unwrap()]);
    for n in names {
        run(&["mesh-cert", "--name", n, "--ca-dir", d.join("ca").to_str().unwrap(), "--out", d.to_str().unwrap()]);
    }
    d
}
