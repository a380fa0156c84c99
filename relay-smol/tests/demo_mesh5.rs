//! The five-relay demo cannot rot: `demo/mesh5.sh --check` runs headless with this build's
//! binaries (five relays, ten link emulators, publishers and subscribers), waits until the mesh
//! converged, traffic flows and Tokyo's `/v1/mesh` lists all five relays, then exits 0. The
//! script cleans up after itself on exit; on a timeout this test stops it with SIGTERM (its
//! trap then ends everything it started) and fails.
//!
//! Needs bash and curl (both in the CI image).

#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest the script may run: its own limit (`CHECK_TIMEOUT`) plus start-up and slack.
const LIMIT: Duration = Duration::from_secs(150);

#[test]
fn five_relay_demo_converges_and_shows_the_whole_mesh() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("demo/mesh5.sh");
    let bin_dir = PathBuf::from(env!("CARGO_BIN_EXE_fastpubsub-relay"))
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let out_path = std::env::temp_dir().join(format!("fps-demo-mesh5-{}.out", std::process::id()));
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut child = Command::new("bash")
        .arg(&script)
        .arg("--check")
        .env("BIN", &bin_dir)
        .env("DASH_PORT", "0")
        .env("CHECK_TIMEOUT", "100")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup output file"))
        .stderr(out)
        .spawn()
        .expect("run demo/mesh5.sh");
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the script") {
            break Some(st);
        }
        if t0.elapsed() > LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let status = status.unwrap_or_else(|| {
        // SIGTERM lets the script's trap stop its relays and emulators; then make sure.
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        child.wait().expect("reap the script")
    });
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    println!("{text}");
    println!("demo/mesh5.sh --check took {:?}", t0.elapsed());
    assert!(
        status.success() && t0.elapsed() <= LIMIT,
        "demo/mesh5.sh --check failed ({status}) after {:?}:\n{text}",
        t0.elapsed()
    );
    assert!(text.contains("check passed"), "{text}");
    for relay in ["singapore", "novosibirsk", "frankfurt", "london"] {
        assert!(
            text.contains(&format!("  link  {relay}")),
            "Tokyo's link to {relay} listed:\n{text}"
        );
    }
    assert!(
        text.contains("route frankfurt    via novosibirsk  saves"),
        "Tokyo→Frankfurt through Novosibirsk with a saving:\n{text}"
    );
}
