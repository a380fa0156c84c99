//! The token lifecycle through `TicketService`, without HTTP: issue, admit, refresh past
//! the original expiry, revoke, master token, status table full, cache of refusals.

use std::net::IpAddr;

use ed25519_dalek::SigningKey;
use fastpubsub_core::ticket::{Protocols, STATUS_RECORD_MAX_LEN, StatusRecord};
use fastpubsub_relay::tickets::{StatusLoaded, TicketConfig, TicketService, rfc3339};
use serde_json::Value;

const NOW: u64 = 1_795_770_000;
const MASTER: &str = "0123456789abcdef-master";
const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn service(config: TicketConfig) -> TicketService {
    TicketService::issuer(SigningKey::from_bytes(&[4; 32]), MASTER, config)
}

fn auth() -> Option<&'static str> {
    Some("Bearer 0123456789abcdef-master")
}

fn get_token(s: &TicketService, extra: &str, ttl: u64) -> String {
    let body = format!(
        r#"{{"right":{{"tenant_grants":[{{"tenant_ids":["t1"],"allow_channels_pub":["public.#"],"allow_channels_sub":["public.#"]}}]{extra},"expires_at":"{}"}},"created_by":"test"}}"#,
        rfc3339::format(NOW + ttl)
    );
    let (status, body) = s.get_token(auth(), body.as_bytes(), NOW);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    v["token"].as_str().expect("token field").to_owned()
}

fn token_id(token: &str) -> &str {
    token
        .trim_start_matches("AT_")
        .split('_')
        .next()
        .expect("id")
}

#[test]
fn lifecycle_refresh_then_revoke() {
    let s = service(TicketConfig::default());
    let token = get_token(&s, "", 60);
    let ws = Protocols::WEBSOCKET;
    let t = s
        .admit(Some(&token), LOCAL, None, ws, NOW + 1)
        .expect("admitted");
    let c = t.claims().expect("claims");
    assert!(c.may_publish("t1", "public.x") && !c.may_publish("t2", "public.x"));
    assert_eq!(
        s.admit(Some(&token), LOCAL, None, ws, NOW + 60)
            .expect_err("expired")
            .status,
        401
    );

    // Refresh: the same string is valid past its original expiry.
    let body = format!(
        r#"{{"token_id":"{}","expires_at":"{}"}}"#,
        token_id(&token),
        rfc3339::format(NOW + 600)
    );
    let (status, resp) = s.refresh_token(auth(), body.as_bytes(), NOW + 30);
    assert_eq!(status, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).expect("json");
    assert_eq!(
        v["new_expires_at"].as_str(),
        Some(rfc3339::format(NOW + 600).as_str())
    );
    assert!(v["message"].is_string());
    assert_eq!(s.check_live(&t, NOW + 300), Ok(NOW + 600));
    assert!(s.admit(Some(&token), LOCAL, None, ws, NOW + 300).is_ok());

    // Refresh more than 24 h ahead: refused.
    let far = format!(
        r#"{{"token_id":"{}","expires_at":"{}"}}"#,
        token_id(&token),
        rfc3339::format(NOW + 30 + 86_401)
    );
    let (status, resp) = s.refresh_token(auth(), far.as_bytes(), NOW + 30);
    assert_eq!(status, 400);
    assert!(resp.contains("more than 24 h ahead"), "{resp}");

    // Revoke.
    let body = format!(r#"{{"token":"{token}"}}"#);
    let (status, resp) = s.revoke_token(auth(), body.as_bytes(), NOW + 40);
    assert_eq!(status, 200, "{resp}");
    let d = s
        .admit(Some(&token), LOCAL, None, ws, NOW + 41)
        .expect_err("revoked");
    assert_eq!((d.status, d.reason.as_str()), (401, "ticket was revoked"));
    assert!(
        s.check_live(&t, NOW + 41).is_err(),
        "live connections see it too"
    );
    let again = format!(
        r#"{{"token_id":"{}","expires_at":"{}"}}"#,
        token_id(&token),
        rfc3339::format(NOW + 900)
    );
    assert_eq!(s.refresh_token(auth(), again.as_bytes(), NOW + 42).0, 409);
    assert_eq!(
        s.revoke_token(auth(), body.as_bytes(), NOW + 43).0,
        200,
        "idempotent"
    );
}

#[test]
fn refresh_of_expired_or_unknown_token_is_refused() {
    let s = service(TicketConfig::default());
    let token = get_token(&s, "", 60);
    let body = format!(
        r#"{{"token_id":"{}","expires_at":"{}"}}"#,
        token_id(&token),
        rfc3339::format(NOW + 600)
    );
    let (status, msg) = s.refresh_token(auth(), body.as_bytes(), NOW + 61);
    assert_eq!(status, 410, "{msg}");
    let (status, msg) = s.refresh_token(
        auth(),
        br#"{"token_id":"zz","expires_at":"2026-11-27T12:00:00Z"}"#,
        NOW,
    );
    assert_eq!(status, 400);
    assert!(msg.starts_with("token_id:"), "{msg}");
    let (status, msg) = s.refresh_token(auth(), br#"{"expires_at":"2026-11-27T12:00:00Z"}"#, NOW);
    assert_eq!(status, 400);
    assert!(msg.starts_with("token_id: missing"), "{msg}");
    let (status, msg) = s.revoke_token(auth(), br#"{"token":"AT_00_11"}"#, NOW);
    assert_eq!(status, 400);
    assert!(msg.starts_with("token: malformed"), "{msg}");
}

#[test]
fn master_token_and_issuing_errors() {
    let s = service(TicketConfig::default());
    let body = br#"{"right":{"tenant_grants":[],"expires_at":"2026-11-27T12:00:00Z"}}"#;
    assert_eq!(s.get_token(None, body, NOW).0, 401);
    assert_eq!(
        s.get_token(Some("Bearer wrong"), body, NOW),
        (401, "wrong master token".into())
    );
    assert_eq!(
        s.get_token(Some("Basic 0123456789abcdef-master"), body, NOW)
            .0,
        401
    );
    assert_eq!(
        s.get_token(Some("bearer  0123456789abcdef-master "), b"{}", NOW)
            .0,
        400,
        "scheme is case-insensitive"
    );
    let (status, msg) = s.get_token(auth(), body, NOW);
    assert_eq!(status, 400);
    assert!(msg.contains("tenant_grants is empty"), "{msg}");

    let verifier = TicketService::verifier(
        SigningKey::from_bytes(&[4; 32]).verifying_key(),
        TicketConfig::default(),
    );
    assert!(!verifier.can_issue());
    assert_eq!(verifier.get_token(auth(), body, NOW).0, 403);
    assert_eq!(verifier.revoke_token(auth(), b"{}", NOW).0, 403);
}

#[test]
fn status_table_full_is_503_and_nothing_is_dropped() {
    // Exactly 16 revocations fit; the 17th is refused.
    let s = service(TicketConfig {
        status_capacity: 16,
        ..TicketConfig::default()
    });
    let mut refused = None;
    let mut accepted = Vec::new();
    for _ in 0..200 {
        let token = get_token(&s, "", 3600);
        let body = format!(r#"{{"token":"{token}"}}"#);
        let (status, msg) = s.revoke_token(auth(), body.as_bytes(), NOW + 1);
        match status {
            200 => accepted.push(token),
            503 => {
                refused = Some((token, msg));
                break;
            }
            other => panic!("unexpected {other}: {msg}"),
        }
    }
    let (token, msg) = refused.expect("the table filled up");
    assert_eq!(accepted.len(), 16, "the stated capacity is the real one");
    assert!(msg.contains("status table is full (16 "), "{msg}");
    assert_eq!(s.stats().status_full, 1);
    // The refused revocation did not happen; every accepted one still holds.
    assert!(
        s.admit(Some(&token), LOCAL, None, Protocols::WEBSOCKET, NOW + 2)
            .is_ok()
    );
    for t in &accepted {
        assert_eq!(
            s.admit(Some(t), LOCAL, None, Protocols::WEBSOCKET, NOW + 2)
                .expect_err("revoked")
                .status,
            401
        );
    }
    // Once the revoked tickets expire their slots are reused.
    assert_eq!(s.prune(NOW + 3600), accepted.len());
    let body = format!(r#"{{"token":"{token}"}}"#);
    let (status, msg) = s.revoke_token(auth(), body.as_bytes(), NOW + 2);
    assert_eq!(status, 200, "{msg}");
}

/// The capacity in force is the configured one (not rounded), and the table holds exactly
/// that many ticket ids, however the (random) ids fall: fill to capacity, one more is full.
#[test]
fn status_capacity_is_exact() {
    for capacity in [1000, fastpubsub_relay::tickets::MAX_STATUS_CAPACITY] {
        let s = service(TicketConfig {
            status_capacity: capacity,
            ..TicketConfig::default()
        });
        assert_eq!(s.config().status_capacity, capacity);
        let key = SigningKey::from_bytes(&[4; 32]);
        // Ids from a xorshift generator: spread like the OS's random ids.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next_id = || {
            let mut id = [0u8; 16];
            for half in id.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                half.copy_from_slice(&x.to_le_bytes());
            }
            id
        };
        for n in 0..capacity {
            let r = StatusRecord::revoke(next_id(), NOW + 3600, NOW, &key).expect("sign");
            assert!(s.apply(r, NOW).is_ok(), "record {n} of {capacity} refused");
        }
        assert_eq!(s.stats().status_records, capacity);
        let one_more = StatusRecord::revoke(next_id(), NOW + 3600, NOW, &key).expect("sign");
        let full = s.apply(one_more, NOW).expect_err("full");
        assert_eq!(full.capacity, capacity);
        assert_eq!(s.stats().status_full, 1);
        assert_eq!(s.stats().status_records, capacity);
    }
}

#[test]
fn restrictions_are_403_and_bad_tokens_are_cached_401() {
    let s = service(TicketConfig::default());
    let token = get_token(
        &s,
        r#","allow_ip_masks":["10.0.0.0/8"],"allowed_ws_origin":["https://app.example"],"allow_protocols":["websocket"]"#,
        600,
    );
    let ten: IpAddr = "10.1.1.1".parse().expect("ip");
    let ws = Protocols::WEBSOCKET;
    assert!(
        s.admit(Some(&token), ten, Some("https://app.example"), ws, NOW)
            .is_ok()
    );
    let d = s
        .admit(Some(&token), LOCAL, Some("https://app.example"), ws, NOW)
        .expect_err("ip");
    assert_eq!(d.status, 403);
    assert!(d.reason.contains("IP"), "{}", d.reason);
    let d = s
        .admit(Some(&token), ten, Some("https://evil.example"), ws, NOW)
        .expect_err("origin");
    assert_eq!(d.status, 403);
    assert!(d.reason.contains("Origin"), "{}", d.reason);
    let d = s.admit(
        Some(&token),
        ten,
        Some("https://app.example"),
        Protocols::WEBTRANSPORT,
        NOW,
    );
    assert_eq!(d.expect_err("protocol").status, 403);
    assert_eq!(
        s.admit(None, ten, None, ws, NOW)
            .expect_err("missing")
            .status,
        401
    );

    // A forged token: one Ed25519 verification, then answered from the cache.
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).expect("ascii");
    let before = s.stats();
    for _ in 0..50 {
        let d = s
            .admit(Some(&forged), ten, None, ws, NOW)
            .expect_err("forged");
        assert_eq!(d.status, 401);
        assert!(d.reason.contains("signature"), "{}", d.reason);
    }
    let after = s.stats();
    assert_eq!(after.verified_cold - before.verified_cold, 1);
    assert_eq!(after.cache_hits - before.cache_hits, 49);
    assert_eq!(after.refused - before.refused, 50);
}

#[test]
fn outbox_hands_local_records_to_the_mesh() {
    let issuer = service(TicketConfig {
        outbox_capacity: 2,
        ..TicketConfig::default()
    });
    let verifier = TicketService::verifier(*issuer.public_key(), TicketConfig::default());
    let tokens: Vec<String> = (0..3).map(|_| get_token(&issuer, "", 600)).collect();
    for t in &tokens {
        let body = format!(r#"{{"token":"{t}"}}"#);
        assert_eq!(issuer.revoke_token(auth(), body.as_bytes(), NOW + 1).0, 200);
    }
    assert_eq!(
        issuer.stats().outbox_dropped,
        1,
        "oldest dropped and counted"
    );
    let out = issuer.drain_outgoing(10);
    assert_eq!(out.len(), 2);
    assert!(issuer.drain_outgoing(10).is_empty());
    for rec in &out {
        verifier
            .apply_remote(rec, NOW + 2)
            .expect("verified and applied");
    }
    let ws = Protocols::WEBSOCKET;
    assert!(
        verifier
            .admit(Some(&tokens[0]), LOCAL, None, ws, NOW + 3)
            .is_ok(),
        "its record was dropped"
    );
    for t in &tokens[1..] {
        assert_eq!(
            verifier
                .admit(Some(t), LOCAL, None, ws, NOW + 3)
                .expect_err("revoked")
                .status,
            401
        );
    }
    // Without a mesh (capacity 0, the default) nothing is queued.
    let plain = service(TicketConfig::default());
    let t = get_token(&plain, "", 600);
    assert_eq!(
        plain
            .revoke_token(auth(), format!(r#"{{"token":"{t}"}}"#).as_bytes(), NOW)
            .0,
        200
    );
    assert!(plain.drain_outgoing(10).is_empty());
    assert_eq!(plain.stats().outbox_dropped, 0);
}

#[test]
fn records_flow_between_relays() {
    // An issuing relay and a verifier-only relay share the public key; the verifier applies
    // the issuer's signed record and refuses the revoked ticket too.
    let issuer = service(TicketConfig::default());
    let verifier = TicketService::verifier(*issuer.public_key(), TicketConfig::default());
    let token = get_token(&issuer, "", 600);
    assert!(
        verifier
            .admit(Some(&token), LOCAL, None, Protocols::WEBSOCKET, NOW)
            .is_ok()
    );
    let t = verifier.verify_cached(&token).expect("valid");
    let rec = StatusRecord::revoke(
        *t.ticket_id(),
        NOW + 600,
        NOW,
        &SigningKey::from_bytes(&[4; 32]),
    )
    .expect("record");
    let mut buf = [0u8; STATUS_RECORD_MAX_LEN];
    let bytes = rec.encode(&mut buf).expect("fits").to_vec();
    assert!(verifier.apply_remote(&bytes, NOW).is_ok());
    let d = verifier.admit(Some(&token), LOCAL, None, Protocols::WEBSOCKET, NOW + 1);
    assert_eq!(d.expect_err("revoked").status, 401);
    let forged = StatusRecord::revoke([0; 16], NOW + 600, NOW, &SigningKey::from_bytes(&[5; 32]))
        .expect("record");
    let bytes = forged.encode(&mut buf).expect("fits").to_vec();
    assert!(
        verifier.apply_remote(&bytes, NOW).is_err(),
        "a record signed with another key"
    );
}

/// The status file: records from the mesh are saved by `save_status` (only when something
/// changed), a new service on the same file starts with them, expired records and records
/// of another ticket key are dropped at load, and a damaged file is an error.
#[test]
fn status_file_keeps_records_across_services() {
    let dir = std::env::temp_dir().join(format!("fps-status-file-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(fastpubsub_relay::tickets::persist::STATUS_FILE);
    let key = SigningKey::from_bytes(&[4; 32]);
    let revoke = StatusRecord::revoke([1; 16], NOW + 100, NOW, &key).expect("sign");
    let refresh = StatusRecord::refresh([2; 16], NOW + 5000, NOW, &key).expect("sign");
    let mut bytes = [0u8; STATUS_RECORD_MAX_LEN];

    let mut a = service(TicketConfig::default());
    assert_eq!(
        a.attach_status_file(&path, NOW),
        Ok(StatusLoaded::default())
    );
    assert_eq!(a.save_status(NOW), Ok(false), "nothing changed");
    for r in [revoke, refresh] {
        let b = r.encode(&mut bytes).expect("encode").to_vec();
        a.apply_remote(&b, NOW).expect("apply");
    }
    assert_eq!(a.save_status(NOW), Ok(true));
    assert_eq!(a.save_status(NOW), Ok(false), "saved once");
    assert_eq!(a.stats().status_saved, 1);

    // Same file, later: the revocation (kept until NOW + 100) has expired, the refresh not.
    let mut b = service(TicketConfig::default());
    let loaded = b.attach_status_file(&path, NOW + 200).expect("load");
    assert_eq!((loaded.applied, loaded.expired), (1, 1));
    assert_eq!(b.stats().status_records, 1);
    // Before expiry both are back.
    // `b` rewrote the file without the expired record: a later load finds only one.
    let mut c = service(TicketConfig::default());
    let loaded = c.attach_status_file(&path, NOW + 1);
    assert_eq!(loaded.map(|l| l.applied), Ok(1));

    // Another ticket key: the records are dropped (and the file rewritten), not an error.
    let mut other = TicketService::issuer(
        SigningKey::from_bytes(&[8; 32]),
        MASTER,
        TicketConfig::default(),
    );
    let loaded = other.attach_status_file(&path, NOW).expect("sound file");
    assert_eq!((loaded.applied, loaded.other_key), (0, 1));

    // Damage: an error that names the file and the remedy.
    let mut d = service(TicketConfig::default());
    std::fs::write(&path, b"FPS-TICKET-STATUS\nnot really").expect("write");
    let err = d.attach_status_file(&path, NOW).expect_err("corrupt");
    let text = err.to_string();
    assert!(
        text.contains("ticket-status.bin is unusable") && text.contains("move it aside"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
