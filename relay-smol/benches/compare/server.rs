//! The servers under test, each started fresh from a generated config with its WebSocket
//! listener on 127.0.0.1 only, pinned to CPU 0 (when there are two CPUs and `taskset`), and
//! killed when dropped (also if the bench dies: parent-death signal).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::proto::Proto;

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// This relay (`fastpubsub-relay run --insecure-no-auth`, default limits).
    Relay,
    /// `nats-server` with a `websocket` block.
    Nats,
    /// `mosquitto` with a `websockets` listener.
    Mosquitto,
}

impl Kind {
    /// Short name for tables and arguments.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Relay => "relay",
            Kind::Nats => "nats",
            Kind::Mosquitto => "mosquitto",
        }
    }

    /// The protocol its clients speak.
    pub fn proto(self) -> Proto {
        match self {
            Kind::Relay => Proto::Llps,
            Kind::Nats => Proto::Nats,
            Kind::Mosquitto => Proto::Mqtt,
        }
    }

    /// The program to run, if installed.
    pub fn program(self) -> Option<PathBuf> {
        match self {
            Kind::Relay => Some(PathBuf::from(env!("CARGO_BIN_EXE_fastpubsub-relay"))),
            Kind::Nats => find(&["nats-server"]),
            Kind::Mosquitto => find(&["mosquitto", "/usr/sbin/mosquitto"]),
        }
    }

    /// One line saying which version runs.
    pub fn version(self) -> String {
        let Some(p) = self.program() else {
            return "not installed".into();
        };
        let arg = match self {
            Kind::Relay => "--version",
            Kind::Nats => "--version",
            Kind::Mosquitto => "-h",
        };
        Command::new(&p)
            .arg(arg)
            .stdin(Stdio::null())
            .output()
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s.lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_else(|e| e.to_string())
    }
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .collect();
    for n in names {
        let p = PathBuf::from(n);
        if p.is_absolute() {
            if p.is_file() {
                return Some(p);
            }
            continue;
        }
        if let Some(found) = dirs.iter().map(|d| d.join(n)).find(|p| p.is_file()) {
            return Some(found);
        }
    }
    None
}

/// Pins to one CPU when the machine has two or more and `taskset` exists.
pub fn can_pin() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running server.
pub struct Server {
    /// Which one.
    pub kind: Kind,
    child: Child,
    /// Its WebSocket listener.
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Server {
    /// Starts `kind` with a config generated in a fresh directory; waits until its
    /// WebSocket port accepts connections (at most 10 s).
    pub fn start(kind: Kind) -> Result<Server, String> {
        let program = kind
            .program()
            .ok_or_else(|| format!("{} is not installed", kind.name()))?;
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "fastpubsub-compare-{}-{}-{n}",
            std::process::id(),
            kind.name()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
        let port = free_port().map_err(|e| e.to_string())?;
        let mut args: Vec<String> = Vec::new();
        match kind {
            Kind::Relay => {
                args.extend(
                    [
                        "run",
                        "--listen",
                        &format!("127.0.0.1:{port}"),
                        "--insecure-no-auth",
                        "--admin-listen",
                        "off",
                    ]
                    .map(String::from),
                );
            }
            Kind::Nats => {
                let client_port = free_port().map_err(|e| e.to_string())?;
                let conf = format!(
                    "# generated by the compare bench\nlisten: \"127.0.0.1:{client_port}\"\n\
                     websocket {{\n  host: \"127.0.0.1\"\n  port: {port}\n  no_tls: true\n  compression: false\n}}\n"
                );
                let path = dir.join("nats.conf");
                std::fs::write(&path, conf).map_err(|e| e.to_string())?;
                args.extend(["-c".to_string(), path.display().to_string()]);
            }
            Kind::Mosquitto => {
                // mosquitto 2.0.11 starts no listener at all when the only one is a websockets
                // listener ("Unable to start any listening sockets"), hence the MQTT one;
                // `socket_domain ipv4` keeps the websockets listener on 127.0.0.1 (without it,
                // libwebsockets binds every address).
                let mqtt_port = free_port().map_err(|e| e.to_string())?;
                let conf = format!(
                    "# generated by the compare bench\npersistence false\nallow_anonymous true\n\
                     log_dest stderr\nlog_type error\n\
                     listener {mqtt_port} 127.0.0.1\n\
                     listener {port} 127.0.0.1\nsocket_domain ipv4\nprotocol websockets\n"
                );
                let path = dir.join("mosquitto.conf");
                std::fs::write(&path, conf).map_err(|e| e.to_string())?;
                args.extend(["-c".to_string(), path.display().to_string()]);
            }
        }
        let mut cmd = if can_pin() {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(&args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        // SAFETY: only an async-signal-safe prctl between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut s = Server {
            kind,
            child,
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                let log = std::fs::read_to_string(s.dir.join("server.log")).unwrap_or_default();
                return Err(format!("{} exited ({status}): {log}", kind.name()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not listen on {addr} within 10 s",
                    kind.name()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds (all threads) used so far.
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.pid())
    }

    /// Resident set size now, KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Peak resident set size, KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds a process has used: the sum of its threads' run time in
/// `/proc/PID/task/*/schedstat` (ns), which is exact where utime + stime in `/proc/PID/stat`
/// count 10 ms ticks (too coarse for a 2,000 msgs/s run). Falls back to `stat`.
pub fn proc_cpu_secs(pid: u32) -> f64 {
    let mut ns: u64 = 0;
    let mut any = false;
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in dir.flatten() {
            if let Some(v) = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            {
                ns += v;
                any = true;
            }
        }
    }
    if any {
        return ns as f64 / 1e9;
    }
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// utime + stime of a `/proc/.../stat` file, in seconds.
fn stat_cpu_secs(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields 14 and 15 (utime, stime); `after` starts at field 3.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}
