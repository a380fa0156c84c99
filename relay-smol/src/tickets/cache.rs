//! The verified-ticket cache: a reconnect storm (or the SDK's once-per-second retry of a
//! refused token) must not redo Ed25519 for every handshake.
//!
//! Keyed by a SHA-512/256-style digest (first 32 bytes of SHA-512) of the whole token
//! string, so two different strings never share an entry. Valid tickets and refused ones
//! live in two separate bounded FIFO tables, so a flood of garbage tokens cannot push out
//! the valid entries. Only outcomes that do not depend on time or status are cached:
//! expiry, refresh and revocation are re-checked on every use by the caller.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use fastpubsub_core::pattern;
use fastpubsub_core::ticket::{Claims, TicketError};
use sha2::{Digest, Sha512};

/// Digest of a token string (cache key).
pub type TokenDigest = [u8; 32];

/// Hashes a token string for the cache.
pub fn digest(token: &str) -> TokenDigest {
    let full = Sha512::digest(token.as_bytes());
    let mut d = [0u8; 32];
    d.copy_from_slice(&full[..32]);
    d
}

/// One grant, owned, for the per-command checks (no claims decoding per publish).
#[derive(Debug)]
struct OwnedGrant {
    tenants: Box<[Box<str>]>,
    publish: Box<[Box<str>]>,
    subscribe: Box<[Box<str>]>,
}

fn owned(list: &[&str]) -> Box<[Box<str>]> {
    list.iter().map(|s| Box::from(*s)).collect()
}

/// A ticket whose signature and claims were checked once.
#[derive(Debug)]
pub struct VerifiedTicket {
    claims: Box<[u8]>,
    grants: Box<[OwnedGrant]>,
    ticket_id: [u8; 16],
    issued_at: u64,
    expires_at: u64,
    ingress_kb_per_sec: u16,
    egress_kb_per_sec: u16,
}

impl VerifiedTicket {
    /// Keeps the (already verified and decoded) claims bytes.
    pub fn new(claims_bytes: &[u8], claims: &Claims<'_>) -> Self {
        Self {
            claims: claims_bytes.into(),
            grants: claims
                .grants()
                .iter()
                .map(|g| OwnedGrant {
                    tenants: owned(g.tenants()),
                    publish: owned(g.publish()),
                    subscribe: owned(g.subscribe()),
                })
                .collect(),
            ticket_id: *claims.ticket_id(),
            issued_at: claims.issued_at(),
            expires_at: claims.expires_at(),
            ingress_kb_per_sec: claims.ingress_kb_per_sec(),
            egress_kb_per_sec: claims.egress_kb_per_sec(),
        }
    }

    /// The claims (decoded again from the kept bytes: no signature work, no allocation).
    pub fn claims(&self) -> Result<Claims<'_>, TicketError> {
        Claims::decode(&self.claims)
    }

    /// Same answer as [`Claims::may_publish`] (some publish pattern of a grant listing
    /// `tenant` matches `channel`), from the owned copy: no decoding per publish.
    pub fn may_publish(&self, tenant: &str, channel: &str) -> bool {
        self.grants
            .iter()
            .filter(|g| g.tenants.iter().any(|t| &**t == tenant))
            .any(|g| g.publish.iter().any(|p| pattern::matches(p, channel)))
    }

    /// Same answer as [`Claims::may_subscribe`] (the pattern is contained in some subscribe
    /// pattern of a grant listing `tenant`), from the owned copy.
    pub fn may_subscribe(&self, tenant: &str, pat: &str) -> bool {
        self.grants
            .iter()
            .filter(|g| g.tenants.iter().any(|t| &**t == tenant))
            .any(|g| g.subscribe.iter().any(|p| pattern::contains(p, pat)))
    }

    /// The random ticket id.
    pub fn ticket_id(&self) -> &[u8; 16] {
        &self.ticket_id
    }
    /// Issue time, unix seconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
    /// Expiry as issued (before any refresh), unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
    /// Ingress limit, KB/s.
    pub fn ingress_kb_per_sec(&self) -> u16 {
        self.ingress_kb_per_sec
    }
    /// Egress limit, KB/s.
    pub fn egress_kb_per_sec(&self) -> u16 {
        self.egress_kb_per_sec
    }
}

/// A cached outcome.
#[derive(Debug, Clone)]
pub enum Cached {
    /// Signature and claims are good (time and status still to be checked).
    Valid(Arc<VerifiedTicket>),
    /// Refused for a reason that does not change with time.
    Refused(TicketError),
}

struct Fifo<V> {
    map: HashMap<TokenDigest, V>,
    order: VecDeque<TokenDigest>,
    capacity: usize,
    evicted: u64,
}

impl<V: Clone> Fifo<V> {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            evicted: 0,
        }
    }

    fn insert(&mut self, key: TokenDigest, value: V) {
        if self.capacity == 0 {
            return;
        }
        if self.map.insert(key, value).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
                self.evicted += 1;
            }
        }
    }
}

/// Counters of a [`VerifiedCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Valid entries held.
    pub valid: usize,
    /// Refused entries held.
    pub refused: usize,
    /// Entries pushed out because a table was full (oldest first).
    pub evicted: u64,
}

/// Bounded cache of verification outcomes.
pub struct VerifiedCache {
    valid: Fifo<Arc<VerifiedTicket>>,
    refused: Fifo<TicketError>,
}

impl VerifiedCache {
    /// A cache holding at most `valid` good tickets and `refused` bad ones.
    pub fn new(valid: usize, refused: usize) -> Self {
        Self {
            valid: Fifo::new(valid),
            refused: Fifo::new(refused),
        }
    }

    /// The cached outcome for a token digest.
    pub fn get(&self, key: &TokenDigest) -> Option<Cached> {
        if let Some(v) = self.valid.map.get(key) {
            return Some(Cached::Valid(Arc::clone(v)));
        }
        self.refused.map.get(key).map(|e| Cached::Refused(*e))
    }

    /// Stores an outcome (the oldest entry of that kind goes when full).
    pub fn insert(&mut self, key: TokenDigest, value: Cached) {
        match value {
            Cached::Valid(t) => self.valid.insert(key, t),
            Cached::Refused(e) => self.refused.insert(key, e),
        }
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            valid: self.valid.map.len(),
            refused: self.refused.map.len(),
            evicted: self.valid.evicted + self.refused.evicted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_grant_checks_agree_with_claims() {
        use fastpubsub_core::ticket::{ClaimsSpec, Grant, Protocols};
        let grants = [
            Grant::new(
                &["t1", "t2"],
                &["public.#", "rooms.*.chat"],
                &["public.#", "a.*"],
            )
            .expect("caps"),
            Grant::new(&["t3"], &["*"], &["#"]).expect("caps"),
        ];
        let spec = ClaimsSpec {
            ticket_id: [1; 16],
            issued_at: 10,
            expires_at: 20,
            grants: &grants,
            ip_masks: &[],
            origins: &[],
            protocols: Protocols::ALL,
            ingress_kb_per_sec: 8,
            egress_kb_per_sec: 8,
        };
        let claims = Claims::new(&spec).expect("valid");
        let mut buf = [0u8; 2048];
        let bytes = claims.encode(&mut buf).expect("fits").to_vec();
        let v = VerifiedTicket::new(&bytes, &claims);
        let names = [
            "public",
            "public.x",
            "public.#",
            "public.*",
            "rooms.a.chat",
            "rooms.*.chat",
            "a.b",
            "a.*",
            "a.#",
            "#",
            "*",
            "x",
            "x.y",
            "private.x",
        ];
        let mut checked = 0;
        for tenant in ["t1", "t2", "t3", "t4", ""] {
            for n in names {
                if pattern::validate_channel(n).is_ok() {
                    assert_eq!(
                        v.may_publish(tenant, n),
                        claims.may_publish(tenant, n),
                        "{tenant} {n}"
                    );
                }
                assert_eq!(
                    v.may_subscribe(tenant, n),
                    claims.may_subscribe(tenant, n),
                    "{tenant} {n}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 70);
        assert!(v.may_publish("t1", "rooms.x.chat") && !v.may_publish("t4", "public.x"));
    }

    #[test]
    fn bounded_fifo_and_separate_tables() {
        let mut c = VerifiedCache::new(2, 2);
        for i in 0..5u8 {
            c.insert([i; 32], Cached::Refused(TicketError::BadSignature));
        }
        let s = c.stats();
        assert_eq!((s.valid, s.refused, s.evicted), (0, 2, 3));
        assert!(c.get(&[0; 32]).is_none(), "oldest evicted");
        assert!(matches!(
            c.get(&[4; 32]),
            Some(Cached::Refused(TicketError::BadSignature))
        ));
        assert_ne!(digest("AT_a_b"), digest("AT_a_c"));
        assert_eq!(digest("x"), digest("x"));
    }
}
