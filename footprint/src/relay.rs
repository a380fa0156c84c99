//! One relay process under measurement: start it on an ephemeral 127.0.0.1 port, wait until
//! it answers `GET /ping`, read its memory from `/proc/PID/status`, stop it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::clock;

/// Memory of a process, from `/proc/PID/status`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident set size now.
    pub rss: u64,
    /// `VmHWM`: the highest RSS so far.
    pub hwm: u64,
    /// `RssAnon`: the resident heap, stacks and other private memory (the part of RSS the
    /// relay's own data makes; `RssFile`, the mapped binary and libc, varies by ~10 % with
    /// page-cache readahead).
    pub anon: u64,
}

/// A running relay, killed when dropped.
pub struct Relay {
    child: Child,
    /// Where it listens (the WebSocket is `ws://ADDR/ws`).
    pub addr: SocketAddr,
}

impl Relay {
    /// Starts `bin run --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 MODE...` and waits
    /// (bounded) for the address it prints and for `GET /ping` to answer `pong`.
    pub fn start(bin: &Path, mode: &[String], timeout: Duration) -> Result<Relay, String> {
        let deadline = clock::now() + timeout;
        let mut child = Command::new(bin)
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(mode)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("relay stdout was not captured")?;
        // The relay prints `fastpubsub-relay listening on ws://ADDR/ws ...` once bound; read
        // it on a thread so the wait can time out.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut relay = Relay {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let addr = loop {
            let left = deadline.saturating_duration_since(clock::now());
            let line = rx.recv_timeout(left).map_err(|_| {
                format!("the relay printed no `listening on ws://` line within {timeout:?}")
            })?;
            if let Some(rest) = line.split("listening on ws://").nth(1) {
                let a = rest.split('/').next().unwrap_or("");
                break a
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("bad address {a:?} in relay output {line:?}: {e}"))?;
            }
        };
        relay.addr = addr;
        loop {
            match ping(addr) {
                Ok(()) => return Ok(relay),
                Err(e) if clock::now() >= deadline => {
                    return Err(format!(
                        "GET /ping did not answer pong within {timeout:?}: {e}"
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The relay's memory now.
    pub fn memory(&self) -> Result<Memory, String> {
        read_memory(self.child.id())
    }

    /// Fails if the relay has exited (it must survive every load we apply).
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!("the relay exited during the measurement: {status}")),
            Err(e) => Err(format!("cannot check the relay process: {e}")),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /ping` over a fresh connection; Ok when the body is `pong` (trimmed).
pub fn ping(addr: SocketAddr) -> Result<(), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.take(64 * 1024)
        .read_to_end(&mut resp)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    if text.starts_with("HTTP/1.1 200") && body.trim() == "pong" {
        Ok(())
    } else {
        Err(format!(
            "unexpected answer: {:?}",
            text.chars().take(200).collect::<String>()
        ))
    }
}

/// Reads `VmRSS` and `VmHWM` of process `pid`.
pub fn read_memory(pid: u32) -> Result<Memory, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| format!("{path} has no {name} line"))?;
        let kb = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("cannot read the number in {path}: {line:?}"))?;
        Ok(kb * 1024)
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
        anon: field("RssAnon:")?,
    })
}

/// Raises this process's open-file soft limit to its hard limit (children inherit it);
/// returns the new soft limit.
pub fn raise_nofile_limit() -> Result<u64, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass, which outlives the calls.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if !ok {
        return Err(format!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        ));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(format!(
            "setrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory() {
        let m = read_memory(std::process::id()).expect("own /proc status");
        assert!(
            m.rss > 0 && m.hwm >= m.rss && m.anon > 0 && m.anon <= m.rss,
            "{m:?}"
        );
    }

    #[test]
    fn missing_process_is_an_error() {
        // PIDs are capped by pid_max (at most 2^22), so this one cannot exist.
        assert!(read_memory(u32::MAX).is_err());
    }
}
