//! Issuing and verifying tickets: round trip, tampering, keys, time, caps.

use ed25519_dalek::SigningKey;
use fastpubsub_core::ticket::{
    self, Cap, Claims, ClaimsSpec, Grant, IpMask, IssueError, Malformed, Protocols, TicketBuf,
    TicketError, limits,
};

const NOW: u64 = 1_780_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn spec<'s, 'a>(grants: &'s [Grant<'a>], ttl: u64) -> ClaimsSpec<'s, 'a> {
    ClaimsSpec {
        ticket_id: [9; 16],
        issued_at: NOW,
        expires_at: NOW + ttl,
        grants,
        ip_masks: &[],
        origins: &[],
        protocols: Protocols::ALL,
        ingress_kb_per_sec: 512,
        egress_kb_per_sec: 2048,
    }
}

fn grant() -> Grant<'static> {
    Grant::new(&["tenant_1"], &["public.#"], &["public.#"]).expect("grant within caps")
}

fn mint(spec: &ClaimsSpec<'_, '_>, key: &SigningKey) -> String {
    let claims = Claims::new(spec).expect("valid claims");
    let mut out = [0u8; limits::MAX_TOKEN_LEN];
    ticket::issue(&claims, key, &mut out)
        .expect("issue")
        .to_owned()
}

#[test]
fn round_trip_keeps_every_claim() {
    let masks = [IpMask::parse("10.0.0.0/8").expect("mask")];
    let grants = [
        grant(),
        Grant::new(&["t2", "t3"], &[], &["a.*"]).expect("grant"),
    ];
    let mut s = spec(&grants, 3600);
    s.ip_masks = &masks;
    s.origins = &["https://app.example"];
    s.protocols = Protocols::WEBSOCKET;
    let token = mint(&s, &key(1));
    assert!(token.starts_with("AT_"));
    let (id, secret) = ticket::split_token(&token).expect("shape");
    assert_eq!(secret.len(), 128);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );

    let mut buf = TicketBuf::new();
    let c = ticket::verify(&token, &key(1).verifying_key(), &mut buf, NOW + 10).expect("valid");
    assert_eq!(c.version(), 1);
    assert_eq!(c.ticket_id(), &[9; 16]);
    assert_eq!((c.issued_at(), c.expires_at()), (NOW, NOW + 3600));
    assert_eq!(c.grants().len(), 2);
    assert_eq!(c.grants()[1].tenants(), &["t2", "t3"]);
    assert_eq!(c.grants()[1].subscribe(), &["a.*"]);
    assert_eq!(c.ip_masks(), &masks);
    assert_eq!(c.origins(), &["https://app.example"]);
    assert_eq!(c.protocols(), Protocols::WEBSOCKET);
    assert_eq!((c.ingress_kb_per_sec(), c.egress_kb_per_sec()), (512, 2048));

    // The id alone decodes to the same claims (what a refresh sends back).
    let mut raw = [0u8; limits::MAX_CLAIMS_LEN];
    let by_id = ticket::decode_token_id(id, &mut raw).expect("id decodes");
    assert_eq!(by_id, c);
}

#[test]
fn any_single_byte_change_in_id_or_secret_is_refused() {
    let grants = [grant()];
    let token = mint(&spec(&grants, 3600), &key(1));
    let vk = key(1).verifying_key();
    let bytes = token.as_bytes();
    let mut tried = 0;
    for pos in 3..bytes.len() {
        for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40] {
            let mut changed = bytes.to_vec();
            changed[pos] ^= mask;
            let Ok(changed) = String::from_utf8(changed) else {
                continue;
            };
            let mut buf = TicketBuf::new();
            let res = ticket::verify(&changed, &vk, &mut buf, NOW + 1);
            assert!(res.is_err(), "byte {pos} ^ {mask:#x} accepted: {changed}");
            tried += 1;
        }
    }
    assert_eq!(
        tried,
        7 * (bytes.len() - 3),
        "every position and mask tried"
    );
}

#[test]
fn shapes_and_keys() {
    let grants = [grant()];
    let token = mint(&spec(&grants, 3600), &key(1));
    let vk = key(1).verifying_key();
    let mut buf = TicketBuf::new();
    let cases: &[(&str, TicketError)] = &[
        ("", TicketError::Malformed(Malformed::Prefix)),
        ("XT_00_00", TicketError::Malformed(Malformed::Prefix)),
        ("AT_abc", TicketError::Malformed(Malformed::Parts)),
        ("AT__abc", TicketError::Malformed(Malformed::Parts)),
        ("AT_abc_", TicketError::Malformed(Malformed::Parts)),
        ("AT_00_00", TicketError::Malformed(Malformed::SecretHex)),
    ];
    for (t, want) in cases {
        assert_eq!(
            ticket::verify(t, &vk, &mut buf, NOW).err(),
            Some(*want),
            "{t:?}"
        );
    }
    let (id, secret) = ticket::split_token(&token).expect("shape");
    let odd = format!("AT_{}_{}", &id[1..], secret);
    assert_eq!(
        ticket::verify(&odd, &vk, &mut buf, NOW).err(),
        Some(TicketError::Malformed(Malformed::IdHex))
    );
    let huge = format!("AT_{}_{}", "00".repeat(limits::MAX_CLAIMS_LEN + 1), secret);
    assert_eq!(
        ticket::verify(&huge, &vk, &mut buf, NOW).err(),
        Some(TicketError::Malformed(Malformed::IdTooLong))
    );
    let extra = format!("{token}_00");
    assert!(ticket::verify(&extra, &vk, &mut buf, NOW).is_err());
    assert_eq!(
        ticket::verify(&token, &key(2).verifying_key(), &mut buf, NOW).err(),
        Some(TicketError::BadSignature),
        "another overlay's key"
    );
    // A signature moved onto other claims.
    let other = mint(&spec(&grants, 7200), &key(1));
    let (other_id, _) = ticket::split_token(&other).expect("shape");
    let spliced = format!("AT_{other_id}_{secret}");
    assert_eq!(
        ticket::verify(&spliced, &vk, &mut buf, NOW).err(),
        Some(TicketError::BadSignature)
    );
}

#[test]
fn time_window() {
    let grants = [grant()];
    let token = mint(&spec(&grants, 60), &key(1));
    let vk = key(1).verifying_key();
    let mut buf = TicketBuf::new();
    assert!(ticket::verify(&token, &vk, &mut buf, NOW + 59).is_ok());
    assert_eq!(
        ticket::verify(&token, &vk, &mut buf, NOW + 60).err(),
        Some(TicketError::Expired {
            expired_at: NOW + 60
        })
    );
    let skew = limits::MAX_CLOCK_SKEW_SECS;
    assert!(ticket::verify(&token, &vk, &mut buf, NOW - skew).is_ok());
    assert_eq!(
        ticket::verify(&token, &vk, &mut buf, NOW - skew - 1).err(),
        Some(TicketError::NotYetValid { issued_at: NOW })
    );
}

#[test]
fn ttl_over_24h_refused_at_issue() {
    let grants = [grant()];
    assert!(Claims::new(&spec(&grants, limits::MAX_TTL_SECS)).is_ok());
    assert_eq!(
        Claims::new(&spec(&grants, limits::MAX_TTL_SECS + 1)).err(),
        Some(IssueError::TtlTooLong {
            ttl_secs: limits::MAX_TTL_SECS + 1
        })
    );
    assert_eq!(
        Claims::new(&spec(&grants, 0)).err(),
        Some(IssueError::ExpiresBeforeIssue)
    );
}

#[test]
fn caps_refused_at_issue_with_the_cap_named() {
    let many: Vec<String> = (0..40).map(|i| format!("p{i}.#")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let t = limits::MAX_TENANTS_PER_GRANT;
    let p = limits::MAX_PATTERNS_PER_GRANT;
    assert_eq!(
        Grant::new(&many[..=t], &[], &[]).err(),
        Some(IssueError::OverCap(Cap::TenantsPerGrant))
    );
    assert_eq!(
        Grant::new(&["t"], &many[..=p], &[]).err(),
        Some(IssueError::OverCap(Cap::PubPatternsPerGrant))
    );
    assert_eq!(
        Grant::new(&["t"], &[], &many[..=p]).err(),
        Some(IssueError::OverCap(Cap::SubPatternsPerGrant))
    );

    let grants: Vec<Grant> = (0..=limits::MAX_GRANTS).map(|_| grant()).collect();
    assert_eq!(
        Claims::new(&spec(&grants, 60)).err(),
        Some(IssueError::OverCap(Cap::Grants))
    );

    let one = [grant()];
    let mut s = spec(&one, 60);
    let masks = vec![IpMask::parse("10.0.0.0/8").expect("mask"); limits::MAX_IP_MASKS + 1];
    s.ip_masks = &masks;
    assert_eq!(
        Claims::new(&s).err(),
        Some(IssueError::OverCap(Cap::IpMasks))
    );

    let mut s = spec(&one, 60);
    let origins = vec!["https://a.example"; limits::MAX_ORIGINS + 1];
    s.origins = &origins;
    assert_eq!(
        Claims::new(&s).err(),
        Some(IssueError::OverCap(Cap::Origins))
    );

    let long = "a".repeat(256);
    let g = [Grant::new(&["t"], &[long.as_str()], &[]).expect("count ok")];
    assert_eq!(
        Claims::new(&spec(&g, 60)).err(),
        Some(IssueError::OverCap(Cap::PatternLen))
    );
    let g = [Grant::new(&[long.as_str()], &[], &[]).expect("count ok")];
    assert_eq!(
        Claims::new(&spec(&g, 60)).err(),
        Some(IssueError::OverCap(Cap::TenantLen))
    );

    // Every per-field cap at its maximum with long strings overflows the encoded size cap.
    let pat = format!("{}.#", "x".repeat(250));
    let pats = vec![pat.as_str(); p];
    let tenants: Vec<String> = (0..t).map(|i| format!("{i}{}", "t".repeat(250))).collect();
    let tenants: Vec<&str> = tenants.iter().map(String::as_str).collect();
    let big: Vec<Grant> = (0..limits::MAX_GRANTS)
        .map(|_| Grant::new(&tenants, &pats, &pats).expect("at caps"))
        .collect();
    let claims = Claims::new(&spec(&big, 60)).expect("every field within its cap");
    let mut out = [0u8; limits::MAX_TOKEN_LEN];
    let err = ticket::issue(&claims, &key(1), &mut out).err();
    assert_eq!(err, Some(IssueError::OverCap(Cap::EncodedSize)));
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        text.contains("2048 bytes of encoded ticket claims"),
        "{text}"
    );
    assert!(ticket::issue(&claims, &key(1), &mut [0u8; 10]).is_err());
}

#[test]
fn rules_refused_at_issue() {
    let bad_pat = [Grant::new(&["t"], &["a.#.b"], &[]).expect("caps")];
    assert!(matches!(
        Claims::new(&spec(&bad_pat, 60)),
        Err(IssueError::InvalidPattern {
            grant: 0,
            publish: true,
            ..
        })
    ));
    let bad_sub = [Grant::new(&["t"], &[], &["a*"]).expect("caps")];
    assert!(matches!(
        Claims::new(&spec(&bad_sub, 60)),
        Err(IssueError::InvalidPattern {
            grant: 0,
            publish: false,
            ..
        })
    ));
    for t in ["", "a:b", "a b"] {
        let g = [Grant::new(&[t], &[], &[]).expect("caps")];
        assert_eq!(
            Claims::new(&spec(&g, 60)).err(),
            Some(IssueError::InvalidTenant { grant: 0 }),
            "{t:?}"
        );
    }
    let g = [Grant::new(&[], &["a"], &[]).expect("caps")];
    assert_eq!(
        Claims::new(&spec(&g, 60)).err(),
        Some(IssueError::GrantWithoutTenant { grant: 0 })
    );
    assert_eq!(
        Claims::new(&spec(&[], 60)).err(),
        Some(IssueError::NoGrants)
    );
    let one = [grant()];
    for (ingress, v) in [(true, 7), (true, 16385), (false, 0), (false, 100_000)] {
        let mut s = spec(&one, 60);
        if ingress {
            s.ingress_kb_per_sec = v
        } else {
            s.egress_kb_per_sec = v
        }
        assert_eq!(
            Claims::new(&s).err(),
            Some(IssueError::KbPerSecOutOfRange { ingress, value: v })
        );
    }
    let mut s = spec(&one, 60);
    s.protocols = Protocols::NONE;
    assert_eq!(Claims::new(&s).err(), Some(IssueError::NoProtocols));
    let mut s = spec(&one, 60);
    s.origins = &["https://a b"];
    assert_eq!(Claims::new(&s).err(), Some(IssueError::InvalidOrigin));
}

#[test]
fn unknown_version_refused() {
    let grants = [grant()];
    let token = mint(&spec(&grants, 60), &key(1));
    let (id, _) = ticket::split_token(&token).expect("shape");
    let mut raw = [0u8; limits::MAX_CLAIMS_LEN];
    let changed = format!("02{}", &id[2..]);
    assert_eq!(
        ticket::decode_token_id(&changed, &mut raw).err(),
        Some(TicketError::UnsupportedVersion(2))
    );
    let trailing = format!("{id}00");
    assert_eq!(
        ticket::decode_token_id(&trailing, &mut raw).err(),
        Some(TicketError::Malformed(Malformed::Claims))
    );
}
