//! Admin access and `/metrics` against a real relay process: the admin pages live on the
//! loopback admin listener and are absent from the public port unless an admin token is
//! configured; `/metrics` reports what the test did (one subscriber, three publishes).

mod mesh_common;

use std::process::Command;

use mesh_common::{RelayProc, http_get, pub_tool, spawn_sub, start_relay_process, wait_for};

const TOKEN: &str = "test-admin-token-0123456789";

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn admin_listener_serves_metrics_that_match_the_traffic() {
    let relay = start_relay_process(&["--admin-listen", "127.0.0.1:0"]);
    let admin = relay.admin.expect("admin listener address");
    let url = format!("ws://{}/ws", relay.edge);
    let _sub = spawn_sub(&url, &[], "demo", "public.#");
    wait_for(admin, "/metrics", 20, |m| {
        metric(m, "fastpubsub_subscriptions") == Some(1.0)
    });
    for i in 0..3 {
        pub_tool(&url, "demo", "public.chat", &format!("m{i}"));
    }
    let m = wait_for(admin, "/metrics", 20, |m| {
        metric(m, "fastpubsub_messages_delivered_total") == Some(3.0)
    });
    assert_eq!(
        metric(&m, "fastpubsub_messages_received_total{source=\"client\"}"),
        Some(3.0)
    );
    assert_eq!(
        metric(&m, "fastpubsub_connections"),
        Some(1.0),
        "the subscriber"
    );
    assert_eq!(
        metric(&m, "fastpubsub_connections_accepted_total"),
        Some(4.0),
        "sub + 3 pubs"
    );
    assert_eq!(
        metric(
            &m,
            "fastpubsub_drops_total{reason=\"subscriber_queue_full\"}"
        ),
        Some(0.0)
    );

    // The public port does not reveal the admin pages without a token.
    for path in [
        "/metrics",
        "/v1/mesh",
        "/v1/status",
        "/dashboard",
        "/dashboard/app.js",
    ] {
        assert_eq!(
            http_get(relay.edge, path, None).0,
            404,
            "{path} on the public port"
        );
    }
    // The admin listener serves all of them (status: 503 until the mesh provides it).
    assert_eq!(http_get(admin, "/dashboard", None).0, 200);
    assert_eq!(http_get(admin, "/dashboard/app.js", None).0, 200);
    assert_eq!(http_get(admin, "/v1/mesh", None).0, 200);
    assert_eq!(http_get(admin, "/v1/status", None).0, 503);
    assert_eq!(http_get(admin, "/nothing", None).0, 404);
}

#[test]
fn admin_token_opens_the_public_port_to_its_holders_only() {
    let dir = std::env::temp_dir().join(format!("fastpubsub-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let relay = start_relay_process(&[
        "--admin-listen",
        "off",
        "--admin-token-file",
        token_file.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(relay.admin, None, "no admin listener with `off`");

    let (status, body) = http_get(relay.edge, "/metrics", None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("admin credential required"), "{body}");
    assert_eq!(
        http_get(
            relay.edge,
            "/metrics",
            Some("Bearer wrong-token-wrong-token")
        )
        .0,
        401
    );
    let (status, body) = http_get(relay.edge, "/metrics", Some(&format!("Bearer {TOKEN}")));
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE fastpubsub_connections gauge"));
    // Basic auth, as a browser sends it after its login prompt: admin:<token>
    let basic = "Basic YWRtaW46dGVzdC1hZG1pbi10b2tlbi0wMTIzNDU2Nzg5";
    let (status, body) = http_get(relay.edge, "/v1/mesh", Some(basic));
    assert_eq!(status, 200);
    assert!(body.starts_with("{\"schema\":1,"), "{body}");
    // The rest of the edge is untouched.
    assert_eq!(http_get(relay.edge, "/ping", None).0, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weak_admin_token_stops_the_relay_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("fastpubsub-dash-weak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, "short\n").expect("write token");
    let out = Command::new(env!("CARGO_BIN_EXE_fastpubsub-relay"))
        .args([
            "run",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
        ])
        .arg("--admin-token-file")
        .arg(&token_file)
        .output()
        .expect("run relay");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin token has 5 bytes"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refused_ticket_handshakes_are_counted() {
    let dir = std::env::temp_dir().join(format!("fastpubsub-dash-tickets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.to_str().expect("utf-8 path").to_string();
    let relay = RelayProc::start(&["--state-dir", &state, "--admin-listen", "127.0.0.1:0"]);
    let admin = relay.admin.expect("admin listener address");
    let url = format!("ws://{}/ws", relay.edge);
    for token in [None, Some("not-a-ticket")] {
        let mut extra = vec!["--count", "1"];
        if let Some(t) = token {
            extra.extend(["--token", t]);
        }
        let mut child = spawn_sub(&url, &extra, "demo", "public.#");
        let deadline = fastpubsub_relay::clock::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(st) = child.0.try_wait().expect("wait sub") {
                break st;
            }
            assert!(
                fastpubsub_relay::clock::now() < deadline,
                "sub without a valid ticket was not refused"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert!(
            !status.success(),
            "handshake with {token:?} must be refused"
        );
    }
    let m = wait_for(admin, "/metrics", 20, |m| {
        metric(m, "fastpubsub_handshake_refusals_total{reason=\"ticket\"}") == Some(2.0)
    });
    assert_eq!(metric(&m, "fastpubsub_connections"), Some(0.0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_taken_admin_address_fails_only_when_asked_for() {
    // Asked for explicitly: the relay refuses to start and says why.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_fastpubsub-relay"))
        .args([
            "run",
            "--insecure-no-auth",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            &addr,
        ])
        .output()
        .expect("run relay");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen for admin on {addr}")),
        "{err}"
    );

    // The default (127.0.0.1:9091) taken, e.g. by another relay on the host: it runs without.
    let _hold = std::net::TcpListener::bind("127.0.0.1:9091"); // taken either way
    let relay = start_relay_process(&[]);
    assert_eq!(relay.admin, None);
    assert_eq!(http_get(relay.edge, "/ping", None).0, 200);
}
