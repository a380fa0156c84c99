//! Ticket status snapshot on link-up: a relay that was not connected when a ticket was
//! revoked learns it when its link comes up (joining late, or a partition healing after
//! the QUIC connection died), with real relay processes on 127.0.0.1.

#![allow(clippy::disallowed_methods)]

mod common;

mod mesh_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::connect_with;
use ed25519_dalek::SigningKey;
use fastpubsub_core::ticket::Applied;
use fastpubsub_relay::tickets::{TicketConfig, TicketService, rfc3339};
use mesh_common::{
    Emu, RelayProc, make_certs, mesh_relay, mint_ticket, revoke_ticket, tmpdir, wait_until,
};

fn relay(certs: &Path, name: &str, peers: &[(&str, SocketAddr)], auth: &[&str]) -> RelayProc {
    mesh_relay(certs, name, peers, auth)
}

fn counter(r: &RelayProc, path: &str) -> u64 {
    r.status()
        .pointer(path)
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

/// Peers of `r` with an up link.
fn up_peers(r: &RelayProc) -> Vec<String> {
    r.status()["links"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|x| x["up"] == true)
                .filter_map(|x| x["peer"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// An issuing relay `a` (state in `dir/a-state`) and a ticket it signed.
fn issuer(dir: &Path, certs: &Path) -> (RelayProc, PathBuf, String) {
    let state = dir.join("a-state");
    let a = relay(
        certs,
        "a",
        &[],
        &["--state-dir", state.to_str().expect("utf8")],
    );
    let token = mint_ticket(&state);
    (a, state, token)
}

fn revoke(a: &RelayProc, state: &Path, token: &str) {
    let (code, resp) = revoke_ticket(a.edge, state, token);
    assert_eq!(code, 200, "{resp}");
    assert!(resp.contains("token revoked"), "{resp}");
}

/// True when `r` accepts a client with `token`; false when it refuses it as revoked
/// (any other refusal fails the test).
fn accepted(r: &RelayProc, token: &str) -> bool {
    match connect_with(
        &format!("ws://{}/ws", r.edge),
        Some(&format!("llps.v1, at.{token}")),
        None,
    ) {
        Ok(_) => true,
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            assert!(
                resp.status() == 401 && body.contains("revoked"),
                "refused for another reason: {} {body}",
                resp.status()
            );
            false
        }
        Err(e) => panic!("connect: {e}"),
    }
}

#[test]
fn snapshot_lists_the_records_in_force_and_they_verify_elsewhere() {
    const NOW: u64 = 1_795_770_000;
    let key = SigningKey::from_bytes(&[7; 32]);
    let a = TicketService::issuer(
        key.clone(),
        "master-token-0123456789",
        TicketConfig::default(),
    );
    let c = TicketService::verifier(key.verifying_key(), TicketConfig::default());
    let auth = Some("Bearer master-token-0123456789");
    let mut tokens = Vec::new();
    for ttl in [600, 3600] {
        let body = format!(
            r#"{{"right":{{"tenant_grants":[{{"tenant_ids":["t"],"allow_channels_pub":["a"],"allow_channels_sub":["a"]}}],"expires_at":"{}"}}}}"#,
            rfc3339::format(NOW + ttl)
        );
        let (code, resp) = a.get_token(auth, body.as_bytes(), NOW);
        assert_eq!(code, 200, "{resp}");
        let v: serde_json::Value = serde_json::from_str(&resp).expect("json");
        tokens.push(v["token"].as_str().expect("token").to_owned());
    }
    assert!(a.snapshot(NOW, 100).is_empty(), "no records yet");
    for t in &tokens {
        let body = format!("{{\"token\":\"{t}\"}}");
        let (code, resp) = a.revoke_token(auth, body.as_bytes(), NOW);
        assert_eq!(code, 200, "{resp}");
    }
    let snap = a.snapshot(NOW, 100);
    assert_eq!(snap.len(), 2);
    assert_eq!(a.snapshot(NOW, 1).len(), 1, "bounded by max");
    // Only records in force: the 600 s ticket's revocation is kept until its expiry.
    assert_eq!(a.snapshot(NOW + 601, 100).len(), 1);
    assert!(a.snapshot(NOW + 3601, 100).is_empty());
    // The receiver verifies them like flooded records.
    for r in &snap {
        assert_eq!(c.apply_remote(r, NOW), Ok(Applied::Added));
        assert_eq!(c.apply_remote(r, NOW), Ok(Applied::Unchanged));
    }
    let mut forged = snap[0].clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(
        c.apply_remote(&forged, NOW).is_err(),
        "bad signature refused"
    );
    for t in &tokens {
        let v = c.verify_cached(t).expect("valid signature");
        assert!(c.check_live(&v, NOW).is_err(), "revoked at C");
    }
}

#[test]
fn a_relay_that_joins_after_a_revocation_refuses_the_ticket() {
    let dir = tmpdir("snap-join");
    let certs = make_certs(&dir, "mesh", &["a", "c"]);
    let (a, state, token) = issuer(&dir, &certs);
    assert!(accepted(&a, &token), "A accepts the fresh ticket");
    revoke(&a, &state, &token);
    assert!(!accepted(&a, &token), "A refuses it at once");

    // C starts only now; it never saw the flooded record.
    let public = state.join("ticket-public.key");
    let c_state = dir.join("c-state");
    let started = Instant::now();
    let c = relay(
        &certs,
        "c",
        &[("a", a.mesh())],
        &[
            "--ticket-public-key",
            public.to_str().expect("utf8"),
            "--state-dir",
            c_state.to_str().expect("utf8"),
        ],
    );
    let (_, took) = wait_until(
        "C refuses the ticket revoked before it joined",
        Duration::from_secs(10),
        || (!accepted(&c, &token)).then_some(()),
    );
    eprintln!(
        "C started {:?} ago, refused the revoked ticket after {took:?} of polling",
        started.elapsed()
    );
    // It came with A's snapshot (status page lags by ≤ 1 s).
    wait_until(
        "C counts the snapshot record",
        Duration::from_secs(3),
        || (counter(&c, "/counters/ticket_sync/records_new") == 1).then_some(()),
    );
    assert!(counter(&a, "/counters/ticket_sync/snapshots_completed") >= 1);
    assert_eq!(counter(&c, "/counters/mesh/ticket_records_bad"), 0);
    // C floods what was new to it on, but not back to where it came from.
    assert_eq!(counter(&a, "/counters/mesh/ticket_records_new"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_partitioned_relay_catches_up_when_the_link_heals() {
    let dir = tmpdir("snap-heal");
    let certs = make_certs(&dir, "mesh", &["a", "c"]);
    let (a, state, token) = issuer(&dir, &certs);
    let e = Emu::start(a.mesh(), &["--delay", "1ms"]);
    let public = state.join("ticket-public.key");
    let c_state = dir.join("c-state");
    let c = relay(
        &certs,
        "c",
        &[("a", e.listen)],
        &[
            "--ticket-public-key",
            public.to_str().expect("utf8"),
            "--state-dir",
            c_state.to_str().expect("utf8"),
        ],
    );
    wait_until("C links to A", Duration::from_secs(10), || {
        up_peers(&c).contains(&"a".to_owned()).then_some(())
    });
    assert!(accepted(&c, &token), "C accepts the ticket");

    // Partition: everything between A and C is lost, until the QUIC connection dies (its
    // idle timeout), so the revocation cannot arrive late through retransmission.
    e.set("loss 100%");
    wait_until("C loses its link to A", Duration::from_secs(30), || {
        c.status()["links"]
            .as_array()
            .is_some_and(|l| l.iter().all(|x| x["peer"] != "a"))
            .then_some(())
    });
    revoke(&a, &state, &token);
    assert!(accepted(&c, &token), "C cannot know yet");

    let healed = Instant::now();
    e.set("loss 0%");
    let (_, took) = wait_until(
        "C refuses the ticket after the partition healed",
        Duration::from_secs(40),
        || (!accepted(&c, &token)).then_some(()),
    );
    eprintln!(
        "healed {:?} ago, C refused the revoked ticket after {took:?}",
        healed.elapsed()
    );
    wait_until(
        "C counts the snapshot record",
        Duration::from_secs(3),
        || (counter(&c, "/counters/ticket_sync/records_new") == 1).then_some(()),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ----- in process, with a stand-in tickets layer: what the node does with each record ----

mod in_process {
    use std::sync::mpsc;
    use std::time::Duration;

    use fastpubsub_relay::mesh::config::Seed;
    use fastpubsub_relay::quic::certs::{CaPem, generate_ca};

    use super::mesh_common::{self, FakeTickets, start_node_with_hook};

    /// A mesh node with the stand-in tickets layer; `applied` sees what it applied.
    struct Node {
        node: mesh_common::Node,
        applied: mpsc::Receiver<Vec<u8>>,
    }

    impl Node {
        fn status(&self) -> serde_json::Value {
            self.node.status()
        }

        fn count(&self, path: &str) -> u64 {
            self.status()
                .pointer(path)
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
        }

        fn applied_within(&self, n: usize, limit: Duration) -> Vec<Vec<u8>> {
            let mut got: Vec<Vec<u8>> = (0..n)
                .map(|_| self.applied.recv_timeout(limit).expect("record applied"))
                .collect();
            got.sort();
            got
        }
    }

    fn start(name: &str, ca: &CaPem, seeds: Vec<Seed>, table: &[&[u8]]) -> Node {
        let table: Vec<Vec<u8>> = table.iter().map(|r| r.to_vec()).collect();
        let (applied_tx, applied) = mpsc::channel();
        // Nothing made here; the snapshot is the starting table plus what was applied.
        let hook = FakeTickets {
            outgoing: Default::default(),
            table,
            snapshots: true,
            applied: applied_tx,
        };
        let node = start_node_with_hook(
            name,
            ca,
            seeds,
            |cfg| cfg.dial_learned = false, // a line: C – B – A
            Box::new(hook),
        );
        Node { node, applied }
    }

    fn seed(name: &str, n: &Node) -> Vec<Seed> {
        vec![mesh_common::seed(name, n.node.addr)]
    }

    /// C – B linked first; then A (holding two valid records and a forged one) links to
    /// B. B applies A's valid records once, refuses and counts the forged one, floods the
    /// new ones on to C, and sends nothing back to A.
    #[test]
    fn snapshot_records_are_verified_counted_and_new_ones_flooded_on() {
        let ca = generate_ca().expect("ca");
        let c = start("c", &ca, vec![], &[]);
        let b = start("b", &ca, seed("c", &c), &[]);
        let t0 = std::time::Instant::now();
        while b.count("/counters/ticket_sync/snapshots_completed") < 1 {
            assert!(t0.elapsed() < Duration::from_secs(10), "B–C link");
            std::thread::sleep(Duration::from_millis(20));
        }
        let a = start(
            "a",
            &ca,
            seed("b", &b),
            &[b"ok revoke 1", b"forged", b"ok refresh 2"],
        );
        let want = vec![b"ok refresh 2".to_vec(), b"ok revoke 1".to_vec()];
        assert_eq!(b.applied_within(2, Duration::from_secs(10)), want);
        assert_eq!(c.applied_within(2, Duration::from_secs(3)), want);
        assert_eq!(b.count("/counters/ticket_sync/records_received"), 3);
        assert_eq!(b.count("/counters/ticket_sync/records_new"), 2);
        assert_eq!(b.count("/counters/ticket_sync/records_bad"), 1);
        assert_eq!(b.count("/counters/mesh/ticket_records_bad"), 1);
        // C got them by the flood, not by a snapshot.
        assert_eq!(c.count("/counters/mesh/ticket_records_new"), 2);
        assert_eq!(c.count("/counters/ticket_sync/records_received"), 0);
        assert!(
            a.applied.recv_timeout(Duration::from_millis(300)).is_err(),
            "nothing comes back to A"
        );
        assert_eq!(a.count("/counters/ticket_sync/snapshots_completed"), 1);
        assert!(b.applied.try_recv().is_err() && c.applied.try_recv().is_err());
    }
}
