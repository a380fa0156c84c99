//! Status records (refresh/revoke) and the bounded status table.

use ed25519_dalek::SigningKey;
use fastpubsub_core::ticket::{
    self, Applied, Claims, ClaimsSpec, FixedSlots, Grant, IssueError, Protocols,
    STATUS_RECORD_MAX_LEN, StatusRecord, StatusSlots, StatusTable, StatusTableFull, TicketBuf,
    TicketError, TicketStatus, limits,
};

const NOW: u64 = 1_780_000_000;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn id(n: u8) -> [u8; 16] {
    [n; 16]
}

#[test]
fn refresh_extends_and_revoke_is_final() {
    let grants = [Grant::new(&["t"], &["a"], &["a"]).expect("grant")];
    let spec = ClaimsSpec {
        ticket_id: id(1),
        issued_at: NOW,
        expires_at: NOW + 10,
        grants: &grants,
        ip_masks: &[],
        origins: &[],
        protocols: Protocols::ALL,
        ingress_kb_per_sec: 8,
        egress_kb_per_sec: 8,
    };
    let claims = Claims::new(&spec).expect("claims");
    let mut out = [0u8; limits::MAX_TOKEN_LEN];
    let token = ticket::issue(&claims, &key(), &mut out)
        .expect("issue")
        .to_owned();
    let mut buf = TicketBuf::new();
    let bytes = ticket::verify_signature(&token, &key().verifying_key(), &mut buf).expect("sig");
    let c = Claims::decode(bytes).expect("decode");

    let mut table: StatusTable<FixedSlots<8>> = StatusTable::new();
    assert_eq!(table.check(&c, NOW + 5), Ok(NOW + 10));
    assert_eq!(
        table.check(&c, NOW + 10),
        Err(TicketError::Expired {
            expired_at: NOW + 10
        })
    );

    let r = StatusRecord::refresh(id(1), NOW + 100, NOW + 5, &key()).expect("refresh");
    assert_eq!(table.apply(r, NOW + 5), Ok(Applied::Added));
    assert_eq!(table.apply(r, NOW + 5), Ok(Applied::Unchanged), "duplicate");
    assert_eq!(
        table.check(&c, NOW + 50),
        Ok(NOW + 100),
        "valid past the issued expiry"
    );
    assert_eq!(
        table.status(&id(1)),
        TicketStatus::Refreshed {
            expires_at: NOW + 100
        }
    );
    // An older refresh arriving late does not win.
    let older = StatusRecord::refresh(id(1), NOW + 200, NOW + 1, &key()).expect("refresh");
    assert_eq!(
        table.apply(older, NOW + 6),
        Ok(Applied::Updated),
        "keep-until extended only"
    );
    assert_eq!(table.check(&c, NOW + 50), Ok(NOW + 100));

    let rv = StatusRecord::revoke(id(1), NOW + 100, NOW + 7, &key()).expect("revoke");
    assert_eq!(table.apply(rv, NOW + 7), Ok(Applied::Updated));
    assert_eq!(table.check(&c, NOW + 8), Err(TicketError::Revoked));
    let later = StatusRecord::refresh(id(1), NOW + 300, NOW + 9, &key()).expect("refresh");
    table.apply(later, NOW + 9).expect("room");
    assert_eq!(
        table.check(&c, NOW + 10),
        Err(TicketError::Revoked),
        "revocation is final"
    );
    assert_eq!(table.records().count(), 2);
}

#[test]
fn refresh_limits() {
    assert_eq!(
        StatusRecord::refresh(id(1), NOW + limits::MAX_TTL_SECS + 1, NOW, &key()).err(),
        Some(IssueError::TtlTooLong {
            ttl_secs: limits::MAX_TTL_SECS + 1
        })
    );
    assert_eq!(
        StatusRecord::refresh(id(1), NOW, NOW, &key()).err(),
        Some(IssueError::ExpiresBeforeIssue)
    );
    let rv = StatusRecord::revoke(id(1), u64::MAX, NOW, &key()).expect("revoke");
    assert_eq!(
        rv.keep_until(),
        NOW + limits::MAX_TTL_SECS,
        "clamped to the longest ticket life"
    );
}

#[test]
fn full_table_refuses_and_prunes_expired() {
    full_table::<FixedSlots<8>>();
    #[cfg(feature = "alloc")]
    full_table::<fastpubsub_core::ticket::HeapSlots>();
}

/// The same behaviour whatever the storage.
fn full_table<S: StatusSlots>() {
    let mut table: StatusTable<S> = StatusTable::with_limit(3);
    assert_eq!(table.capacity(), 3);
    for n in 0..3 {
        let r = StatusRecord::revoke(id(n), NOW + 10 + u64::from(n), NOW, &key()).expect("revoke");
        assert_eq!(table.apply(r, NOW), Ok(Applied::Added));
    }
    let extra = StatusRecord::revoke(id(9), NOW + 100, NOW, &key()).expect("revoke");
    assert_eq!(
        table.apply(extra, NOW + 1),
        Err(StatusTableFull { capacity: 3 })
    );
    assert_eq!(
        table.status(&id(9)),
        TicketStatus::Unknown,
        "nothing stored"
    );
    assert_eq!(table.len(), 3, "nothing dropped");
    // An update of a known id needs no new slot.
    let upd = StatusRecord::refresh(id(0), NOW + 50, NOW + 1, &key()).expect("refresh");
    assert_eq!(table.apply(upd, NOW + 1), Ok(Applied::Updated));
    // Once id 1 is past its keep-until, its slot is reused.
    assert_eq!(table.apply(extra, NOW + 11), Ok(Applied::Added));
    assert_eq!(table.status(&id(1)), TicketStatus::Unknown);
    assert_eq!(table.status(&id(9)), TicketStatus::Revoked);
    let stale = StatusRecord::revoke(id(7), NOW + 5, NOW, &key()).expect("revoke");
    assert_eq!(table.apply(stale, NOW + 5), Ok(Applied::Stale));
    assert_eq!(table.prune(NOW + 1000), 3);
    assert!(table.is_empty());
    assert!(
        StatusTableFull { capacity: 3 }
            .to_string()
            .contains("full (3 ")
    );
}

#[test]
fn records_round_trip_with_signature() {
    let other = SigningKey::from_bytes(&[6; 32]);
    for r in [
        StatusRecord::refresh(
            [0xff; 16],
            u64::MAX,
            u64::MAX - limits::MAX_TTL_SECS,
            &key(),
        )
        .expect("refresh"),
        StatusRecord::revoke([0xff; 16], u64::MAX, u64::MAX, &key()).expect("revoke"),
    ] {
        let mut out = [0u8; STATUS_RECORD_MAX_LEN];
        let bytes = r.encode(&mut out).expect("worst case fits").to_vec();
        let back = StatusRecord::decode_verified(&bytes, &key().verifying_key()).expect("verify");
        assert_eq!(back, r);
        assert_eq!(
            StatusRecord::decode_verified(&bytes, &other.verifying_key()).err(),
            Some(TicketError::BadSignature)
        );
        for pos in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[pos] ^= 0x01;
            assert!(
                StatusRecord::decode_verified(&changed, &key().verifying_key()).is_err(),
                "byte {pos} flipped accepted"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(StatusRecord::decode_verified(&longer, &key().verifying_key()).is_err());
    }
}
