//! [`TicketService`]: the relay's ticket state (public key, optional issuing keys, status
//! table, verified-ticket cache) and everything done with it: admitting a handshake,
//! re-checking a live connection, and the three REST calls of the token lifecycle.
//!
//! Every entry point takes `now` (unix seconds) and returns plain values, so it is tested
//! without HTTP or a clock: REST handlers return `(status, body)`.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ed25519_dalek::{SigningKey, VerifyingKey};
use fastpubsub_core::ticket::{
    self, Applied, HeapSlots, Malformed, Protocols, STATUS_RECORD_MAX_LEN, StatusRecord,
    StatusTable, StatusTableFull, TicketBuf, TicketError, TicketStatus, limits,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha512};

use super::cache::{self, Cached, VerifiedCache, VerifiedTicket};
use super::persist::{self, PersistError};
use super::request::{self, DEFAULT_EGRESS_KB_PER_SEC, DEFAULT_INGRESS_KB_PER_SEC, RequestError};
use super::rfc3339;

/// The largest status capacity a relay can be configured with (ticket ids with a live
/// refresh or revocation; about 300 bytes each when used).
pub const MAX_STATUS_CAPACITY: usize = 8192;

/// Tunables of a [`TicketService`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TicketConfig {
    /// Live refresh/revoke records kept (at most [`MAX_STATUS_CAPACITY`]).
    pub status_capacity: usize,
    /// Valid tickets kept in the verified cache.
    pub cache_valid: usize,
    /// Refused tokens kept in the verified cache.
    pub cache_refused: usize,
    /// Ingress limit for requests that do not set one, KB/s.
    pub default_ingress_kb_per_sec: u32,
    /// Egress limit for requests that do not set one, KB/s.
    pub default_egress_kb_per_sec: u32,
    /// Encoded status records created here that wait for the mesh to flood them
    /// ([`TicketService::drain_outgoing`]); 0 (the default, no mesh) keeps none.
    pub outbox_capacity: usize,
}

impl Default for TicketConfig {
    fn default() -> Self {
        Self {
            status_capacity: MAX_STATUS_CAPACITY,
            cache_valid: 4096,
            cache_refused: 1024,
            default_ingress_kb_per_sec: DEFAULT_INGRESS_KB_PER_SEC,
            default_egress_kb_per_sec: DEFAULT_EGRESS_KB_PER_SEC,
            outbox_capacity: 0,
        }
    }
}

/// Why a handshake is refused: HTTP status (401 or 403) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// 401 (missing/bad/expired/revoked/forged) or 403 (not allowed from here).
    pub status: u16,
    /// What and why.
    pub reason: String,
}

/// Counters, for `/stats` and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TicketStats {
    /// Ed25519 verifications done (cache misses).
    pub verified_cold: u64,
    /// Handshakes answered from the cache.
    pub cache_hits: u64,
    /// Handshakes refused (any reason).
    pub refused: u64,
    /// Refresh/revoke requests refused because the status table was full.
    pub status_full: u64,
    /// Live status records.
    pub status_records: usize,
    /// Cache entries pushed out when full.
    pub cache_evicted: u64,
    /// Outgoing records dropped because the mesh did not drain the outbox (oldest first).
    pub outbox_dropped: u64,
    /// Saves of the status file (see [`TicketService::attach_status_file`]).
    pub status_saved: u64,
    /// Failed saves of the status file (each is logged; retried on the next change).
    pub status_save_failed: u64,
}

/// What [`TicketService::attach_status_file`] loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusLoaded {
    /// Records applied.
    pub applied: usize,
    /// Records past their keep-until time, dropped.
    pub expired: usize,
    /// Records signed for another public key (the ticket key changed), dropped.
    pub other_key: usize,
    /// Records that did not fit the status table (it was made smaller), dropped.
    pub full: usize,
}

struct Issuing {
    signing: SigningKey,
    master_digest: [u8; 64],
}

/// The relay's ticket state. Share it as `Arc<TicketService>`.
pub struct TicketService {
    public: VerifyingKey,
    issuing: Option<Issuing>,
    /// One table, one lock: its capacity is exactly the configured one (16 shards with a
    /// share each refused records well below it when ids fell unevenly). Every operation
    /// under the lock is one map lookup or insert.
    status: Mutex<StatusTable<HeapSlots>>,
    cache: Mutex<VerifiedCache>,
    outbox: Mutex<VecDeque<Vec<u8>>>,
    outbox_dropped: AtomicU64,
    config: TicketConfig,
    verified_cold: AtomicU64,
    cache_hits: AtomicU64,
    refused: AtomicU64,
    status_full: AtomicU64,
    /// Where the status table is saved; `None` keeps it in memory only.
    status_file: Option<PathBuf>,
    /// The table changed since the last save.
    status_dirty: AtomicBool,
    status_saved: AtomicU64,
    status_save_failed: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these tables inconsistent (every update
    // is a single insert), so keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn text(status: u16, body: impl Into<String>) -> (u16, String) {
    (status, body.into())
}

impl TicketService {
    /// A verifier only: checks tickets with `public`, cannot issue, refresh or revoke
    /// (it still applies records received from the mesh).
    pub fn verifier(public: VerifyingKey, config: TicketConfig) -> Self {
        Self::build(public, None, config)
    }

    /// An issuing relay: holds the signing key and the master token of the REST API.
    pub fn issuer(signing: SigningKey, master_token: &str, config: TicketConfig) -> Self {
        let issuing = Issuing {
            master_digest: Sha512::digest(master_token.as_bytes()).into(),
            signing: signing.clone(),
        };
        Self::build(signing.verifying_key(), Some(issuing), config)
    }

    fn build(public: VerifyingKey, issuing: Option<Issuing>, config: TicketConfig) -> Self {
        let cap = config.status_capacity.min(MAX_STATUS_CAPACITY);
        Self {
            public,
            issuing,
            status: Mutex::new(StatusTable::with_limit(cap)),
            cache: Mutex::new(VerifiedCache::new(config.cache_valid, config.cache_refused)),
            outbox: Mutex::new(VecDeque::new()),
            outbox_dropped: AtomicU64::new(0),
            config: TicketConfig {
                status_capacity: cap,
                ..config
            },
            verified_cold: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            status_full: AtomicU64::new(0),
            status_file: None,
            status_dirty: AtomicBool::new(false),
            status_saved: AtomicU64::new(0),
            status_save_failed: AtomicU64::new(0),
        }
    }

    /// Keeps the status table in `path` from now on: loads the records saved there (a
    /// missing file is an empty table), and from then on every change is saved (at once
    /// for a refresh or revoke made here, by [`Self::save_status`] for records from the
    /// mesh). A damaged file is an error: the caller must not start without it (see
    /// `persist`'s docs).
    pub fn attach_status_file(
        &mut self,
        path: &Path,
        now: u64,
    ) -> Result<StatusLoaded, PersistError> {
        let mut loaded = StatusLoaded::default();
        if let Some(bytes) = persist::read(path)? {
            let decoded =
                persist::decode(&bytes, &self.public).map_err(|why| PersistError::Corrupt {
                    path: path.to_owned(),
                    why,
                })?;
            loaded.other_key = decoded.other_key;
            let mut table = self.table();
            for r in decoded.records {
                match table.apply(r, now) {
                    Ok(Applied::Stale) => loaded.expired += 1,
                    Ok(_) => loaded.applied += 1,
                    Err(_) => loaded.full += 1,
                }
            }
        }
        self.status_file = Some(path.to_owned());
        // Rewrite at once when something was dropped, so the file matches the table.
        if loaded.expired + loaded.other_key + loaded.full > 0 {
            self.status_dirty.store(true, Ordering::Relaxed);
            self.save_status(now)?;
        }
        Ok(loaded)
    }

    /// Saves the status table to its file if it changed since the last save (records past
    /// their keep-until time are dropped first). `Ok(false)`: nothing to do (no file, or
    /// no change). On failure the table stays marked changed, so the next call retries.
    pub fn save_status(&self, now: u64) -> Result<bool, PersistError> {
        let Some(path) = &self.status_file else {
            return Ok(false);
        };
        if !self.status_dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let bytes = {
            let mut table = self.table();
            table.prune(now);
            persist::encode(&self.public, table.records())
        };
        match persist::write_atomic(path, &bytes) {
            Ok(()) => {
                self.status_saved.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                self.status_dirty.store(true, Ordering::Release);
                self.status_save_failed.fetch_add(1, Ordering::Relaxed);
                log::warn!("{e}");
                Err(e)
            }
        }
    }

    /// The public key tickets are checked with.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The configuration in force (status capacity at most [`MAX_STATUS_CAPACITY`]).
    pub fn config(&self) -> &TicketConfig {
        &self.config
    }

    /// True when this relay can issue, refresh and revoke.
    pub fn can_issue(&self) -> bool {
        self.issuing.is_some()
    }

    fn table(&self) -> MutexGuard<'_, StatusTable<HeapSlots>> {
        lock(&self.status)
    }

    /// Counters.
    pub fn stats(&self) -> TicketStats {
        let c = lock(&self.cache).stats();
        TicketStats {
            verified_cold: self.verified_cold.load(Ordering::Relaxed),
            cache_hits: self.cache_hits.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            status_full: self.status_full.load(Ordering::Relaxed),
            status_records: self.table().len(),
            cache_evicted: c.evicted,
            outbox_dropped: self.outbox_dropped.load(Ordering::Relaxed),
            status_saved: self.status_saved.load(Ordering::Relaxed),
            status_save_failed: self.status_save_failed.load(Ordering::Relaxed),
        }
    }

    /// Signature and claims of `token`, from the cache when seen before. Does not look at
    /// time or status.
    pub fn verify_cached(&self, token: &str) -> Result<Arc<VerifiedTicket>, TicketError> {
        if token.len() > limits::MAX_TOKEN_LEN {
            return Err(TicketError::Malformed(Malformed::IdTooLong));
        }
        let key = cache::digest(token);
        if let Some(hit) = lock(&self.cache).get(&key) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return match hit {
                Cached::Valid(t) => Ok(t),
                Cached::Refused(e) => Err(e),
            };
        }
        self.verified_cold.fetch_add(1, Ordering::Relaxed);
        let outcome = self.verify_cold(token);
        let cached = match &outcome {
            Ok(t) => Cached::Valid(Arc::clone(t)),
            Err(e) => Cached::Refused(*e),
        };
        lock(&self.cache).insert(key, cached);
        outcome
    }

    fn verify_cold(&self, token: &str) -> Result<Arc<VerifiedTicket>, TicketError> {
        let mut buf = Box::new(TicketBuf::new());
        let bytes = ticket::verify_signature(token, &self.public, &mut buf)?;
        let claims = ticket::Claims::decode(bytes)?;
        Ok(Arc::new(VerifiedTicket::new(bytes, &claims)))
    }

    /// Is a verified ticket still usable at `now` (revoked, refreshed, expired)? Returns the
    /// effective expiry. Cheap: one lock and a map lookup.
    pub fn check_live(&self, t: &VerifiedTicket, now: u64) -> Result<u64, TicketError> {
        self.table()
            .check_parts(t.ticket_id(), t.issued_at(), t.expires_at(), now)
    }

    /// Decides a WebSocket handshake: 401 for a missing, malformed, forged, expired or
    /// revoked token; 403 for a valid one not allowed from this IP, Origin or protocol.
    pub fn admit(
        &self,
        token: Option<&str>,
        peer: IpAddr,
        origin: Option<&str>,
        protocol: Protocols,
        now: u64,
    ) -> Result<Arc<VerifiedTicket>, Denied> {
        let out = self.admit_inner(token, peer, origin, protocol, now);
        if let Err(d) = &out {
            self.refused.fetch_add(1, Ordering::Relaxed);
            log::debug!("handshake from {peer} refused: {} {}", d.status, d.reason);
        }
        out
    }

    fn admit_inner(
        &self,
        token: Option<&str>,
        peer: IpAddr,
        origin: Option<&str>,
        protocol: Protocols,
        now: u64,
    ) -> Result<Arc<VerifiedTicket>, Denied> {
        let unauthorized = |e: TicketError| Denied {
            status: 401,
            reason: e.to_string(),
        };
        let token = token.ok_or_else(|| Denied {
            status: 401,
            reason: "missing access token: send Sec-WebSocket-Protocol: llps.v1,at.<TOKEN> \
                     (or Authorization: Bearer <TOKEN>)"
                .into(),
        })?;
        let t = self.verify_cached(token).map_err(unauthorized)?;
        self.check_live(&t, now).map_err(unauthorized)?;
        t.claims()
            .map_err(unauthorized)?
            .check_access(peer, origin, protocol)
            .map_err(|e| Denied {
                status: 403,
                reason: e.to_string(),
            })?;
        Ok(t)
    }

    /// The master token check, then the JSON body: what refresh and revoke both start with.
    fn master_and_json(
        &self,
        auth_header: Option<&str>,
        body: &[u8],
    ) -> Result<(&Issuing, Value), (u16, String)> {
        let issuing = self.master_ok(auth_header)?;
        let v = serde_json::from_slice(body)
            .map_err(|e| text(400, format!("body is not valid JSON: {e}")))?;
        Ok((issuing, v))
    }

    fn master_ok(&self, auth_header: Option<&str>) -> Result<&Issuing, (u16, String)> {
        let Some(issuing) = &self.issuing else {
            return Err(text(
                403,
                "this relay does not issue tickets (it has no signing key and master token); \
                 call the issuing relay",
            ));
        };
        let presented = auth_header
            .map(str::trim)
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| text(401, "missing Authorization: Bearer <MASTER_TOKEN>"))?;
        // Compare digests, folding every byte: the time does not depend on where they differ.
        let d: [u8; 64] = Sha512::digest(presented.as_bytes()).into();
        let diff = d
            .iter()
            .zip(issuing.master_digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if std::hint::black_box(diff) != 0 {
            return Err(text(401, "wrong master token"));
        }
        Ok(issuing)
    }

    /// `POST /v1/get-token`: `(status, body)`.
    pub fn get_token(&self, auth_header: Option<&str>, body: &[u8], now: u64) -> (u16, String) {
        let issuing = match self.master_ok(auth_header) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let req = match request::parse_get_token(body, now) {
            Ok(r) => r,
            Err(RequestError { status, message }) => return (status, message),
        };
        let ticket_id = match super::keys::random::<16>() {
            Ok(id) => id,
            Err(e) => return text(500, e.to_string()),
        };
        let defaults = (
            self.config.default_ingress_kb_per_sec,
            self.config.default_egress_kb_per_sec,
        );
        match request::sign(&req, ticket_id, now, defaults, &issuing.signing) {
            Ok(token) => {
                log::info!(
                    "issued ticket {} (created_by {:?}, expires {})",
                    super::keys::to_hex(&ticket_id),
                    req.created_by.as_deref().unwrap_or("-"),
                    rfc3339::format(req.expires_at)
                );
                (200, json!({ "token": token }).to_string())
            }
            Err(RequestError { status, message }) => (status, message),
        }
    }

    /// `PUT /v1/refresh-token`: `(status, body)`. The same token string stays valid until
    /// the new `expires_at` (≤ 24 h ahead) on every relay that gets the signed record.
    pub fn refresh_token(&self, auth_header: Option<&str>, body: &[u8], now: u64) -> (u16, String) {
        let (issuing, v) = match self.master_and_json(auth_header, body) {
            Ok(x) => x,
            Err(e) => return e,
        };
        let Some(token_id) = v.get("token_id").and_then(Value::as_str) else {
            return text(
                400,
                "token_id: missing or not a string (the <id> part of AT_<id>_<secret>)",
            );
        };
        let Some(expires_text) = v.get("expires_at").and_then(Value::as_str) else {
            return text(
                400,
                "expires_at: missing or not a string (RFC 3339, e.g. 2026-11-27T12:00:00Z)",
            );
        };
        let expires_at = match rfc3339::parse(expires_text) {
            Ok(t) => t,
            Err(e) => return text(400, format!("expires_at: {e}")),
        };
        if let Err(e) = request::check_expiry(expires_at, now, "expires_at") {
            return (e.status, e.message);
        }
        let mut raw = Box::new([0u8; limits::MAX_CLAIMS_LEN]);
        let claims = match ticket::decode_token_id(token_id, &mut raw) {
            Ok(c) => c,
            Err(e) => {
                return text(
                    400,
                    format!("token_id: not the id of a ticket of this overlay ({e})"),
                );
            }
        };
        let id = *claims.ticket_id();
        let current = match self.table().check(&claims, now) {
            Ok(exp) => exp,
            Err(TicketError::Revoked) => {
                return text(409, "token was revoked; it cannot be refreshed");
            }
            Err(TicketError::Expired { expired_at }) => {
                return text(
                    410,
                    format!(
                        "token already expired at {}; get a new one with POST /v1/get-token",
                        rfc3339::format(expired_at)
                    ),
                );
            }
            Err(e) => return text(400, format!("token_id: {e}")),
        };
        let record = match StatusRecord::refresh(id, expires_at, now, &issuing.signing) {
            Ok(r) => r,
            Err(e) => return text(400, format!("expires_at: {e}")),
        };
        if let Err(e) = self.apply_local(record, now) {
            return text(503, e.to_string());
        }
        if let Err(e) = self.save_status(now) {
            return text(
                500,
                format!("token refreshed on this relay, but not saved for a restart: {e}"),
            );
        }
        log::info!(
            "refreshed ticket {}: expiry {} -> {}",
            super::keys::to_hex(&id),
            rfc3339::format(current),
            rfc3339::format(expires_at)
        );
        (
            200,
            json!({ "message": "token refreshed", "new_expires_at": rfc3339::format(expires_at) })
                .to_string(),
        )
    }

    /// `DELETE /v1/revoke-token`: `(status, body)`. Connections using the token are closed
    /// within a second on every relay that gets the signed record.
    pub fn revoke_token(&self, auth_header: Option<&str>, body: &[u8], now: u64) -> (u16, String) {
        let (issuing, v) = match self.master_and_json(auth_header, body) {
            Ok(x) => x,
            Err(e) => return e,
        };
        let Some(token) = v.get("token").and_then(Value::as_str) else {
            return text(
                400,
                "token: missing or not a string (the whole AT_<id>_<secret>)",
            );
        };
        let t = match self.verify_cached(token) {
            Ok(t) => t,
            Err(e) => return text(400, format!("token: {e}")),
        };
        let id = *t.ticket_id();
        let latest = match self.table().status(&id) {
            TicketStatus::Revoked => {
                return (
                    200,
                    json!({ "message": "token was already revoked" }).to_string(),
                );
            }
            TicketStatus::Refreshed { expires_at } => expires_at.max(t.expires_at()),
            _ => t.expires_at(),
        };
        if latest <= now {
            return (
                200,
                json!({ "message": "token already expired; nothing to revoke" }).to_string(),
            );
        }
        let record = match StatusRecord::revoke(id, latest, now, &issuing.signing) {
            Ok(r) => r,
            Err(e) => return text(500, e.to_string()),
        };
        if let Err(e) = self.apply_local(record, now) {
            return text(503, e.to_string());
        }
        if let Err(e) = self.save_status(now) {
            return text(
                500,
                format!("token revoked on this relay, but not saved for a restart: {e}"),
            );
        }
        log::info!("revoked ticket {}", super::keys::to_hex(&id));
        (200, json!({ "message": "token revoked" }).to_string())
    }

    /// Applies a status record (ours or a peer's, already verified).
    pub fn apply(&self, record: StatusRecord, now: u64) -> Result<Applied, StatusTableFull> {
        let out = self.table().apply(record, now);
        match out {
            Ok(Applied::Added | Applied::Updated) => {
                self.status_dirty.store(true, Ordering::Release);
            }
            Ok(_) => {}
            Err(_) => {
                self.status_full.fetch_add(1, Ordering::Relaxed);
            }
        }
        out
    }

    /// Applies a record made here and queues its encoding for the mesh.
    fn apply_local(&self, record: StatusRecord, now: u64) -> Result<Applied, StatusTableFull> {
        let applied = self.apply(record, now)?;
        if self.config.outbox_capacity > 0 {
            let mut buf = [0u8; STATUS_RECORD_MAX_LEN];
            if let Some(bytes) = record.encode(&mut buf) {
                let mut q = lock(&self.outbox);
                if q.len() >= self.config.outbox_capacity {
                    q.pop_front();
                    self.outbox_dropped.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "ticket status outbox full: dropped the oldest record (mesh not draining)"
                    );
                }
                q.push_back(bytes.to_vec());
            }
        }
        Ok(applied)
    }

    /// Takes up to `max` encoded status records made here (refreshes, revocations), oldest
    /// first, for the mesh to flood to every relay (which calls [`Self::apply_remote`]).
    pub fn drain_outgoing(&self, max: usize) -> Vec<Vec<u8>> {
        let mut q = lock(&self.outbox);
        let n = max.min(q.len());
        q.drain(..n).collect()
    }

    /// Encodes up to `max` of the stored status records still in force at `now` (keep-until
    /// after `now`), for a neighbour whose mesh link just came up: it learns the refreshes
    /// and revocations made before it joined. At most two records per ticket id, so at
    /// most twice the status capacity.
    pub fn snapshot(&self, now: u64, max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; STATUS_RECORD_MAX_LEN];
        let table = self.table();
        for r in table.records().filter(|r| r.keep_until() > now) {
            if out.len() >= max {
                break;
            }
            if let Some(bytes) = r.encode(&mut buf) {
                out.push(bytes.to_vec());
            }
        }
        out
    }

    /// Verifies and applies an encoded status record received from a peer relay.
    pub fn apply_remote(&self, bytes: &[u8], now: u64) -> Result<Applied, RemoteRecordError> {
        let r =
            StatusRecord::decode_verified(bytes, &self.public).map_err(RemoteRecordError::Bad)?;
        self.apply(r, now).map_err(RemoteRecordError::Full)
    }

    /// Drops status records past their keep-until time; returns how many.
    pub fn prune(&self, now: u64) -> usize {
        let n = self.table().prune(now);
        if n > 0 {
            self.status_dirty.store(true, Ordering::Release);
        }
        n
    }
}

/// Why a peer's status record was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteRecordError {
    /// Garbage or a bad signature (the peer's fault).
    Bad(TicketError),
    /// The status table is full (capacity).
    Full(StatusTableFull),
}

impl std::fmt::Display for RemoteRecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bad(e) => write!(f, "refused a peer's ticket status record: {e}"),
            Self::Full(e) => write!(f, "could not apply a peer's ticket status record: {e}"),
        }
    }
}

impl std::error::Error for RemoteRecordError {}
