//! Refresh and revocation without a database: signed status records keyed by ticket id,
//! kept in a bounded table until the ticket's latest possible expiry.
//!
//! A relay that issues (it holds the signing key) creates a [`StatusRecord`] for each
//! `PUT /v1/refresh-token` and `DELETE /v1/revoke-token`, applies it to its own
//! [`StatusTable`] and floods the encoded record to the mesh; every relay checks the
//! signature with the overlay's public key before applying it. Records merge in any order:
//! a revocation is final; among refreshes the one signed last wins (ties: the later
//! expiry).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use heapless::index_map::FnvIndexMap;
use serde::{Deserialize, Serialize};

use super::claims::Claims;
use super::error::{IssueError, Malformed, StatusTableFull, TicketError};
use super::limits::{
    FORMAT_VERSION, MAX_CLOCK_SKEW_SECS, MAX_TTL_SECS, SIGNATURE_LEN, STATUS_DOMAIN, TICKET_ID_LEN,
};

/// Longest encoded [`StatusRecord`] (see the test that encodes the worst case).
pub const STATUS_RECORD_MAX_LEN: usize = 128;

/// What a status record does to its ticket.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusAction {
    /// The same token string is valid until `expires_at` (unix seconds).
    Refresh {
        /// New expiry.
        expires_at: u64,
    },
    /// The ticket is refused from now on.
    Revoke,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    version: u8,
    ticket_id: [u8; TICKET_ID_LEN],
    action: StatusAction,
    signed_at: u64,
    keep_until: u64,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    body: Body,
    sig: ([u8; 32], [u8; 32]),
}

/// A signed refresh or revocation of one ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRecord {
    body: Body,
    signature: [u8; SIGNATURE_LEN],
}

fn sign_body(body: &Body, key: &SigningKey) -> Result<[u8; SIGNATURE_LEN], IssueError> {
    let mut msg = [0u8; STATUS_DOMAIN.len() + STATUS_RECORD_MAX_LEN];
    let n = message(body, &mut msg)
        .ok_or(IssueError::BufferTooSmall)?
        .len();
    let signed = msg.get(..n).ok_or(IssueError::BufferTooSmall)?;
    Ok(key.sign(signed).to_bytes())
}

fn message<'m>(body: &Body, msg: &'m mut [u8]) -> Option<&'m [u8]> {
    let (domain, rest) = msg.split_at_mut_checked(STATUS_DOMAIN.len())?;
    domain.copy_from_slice(STATUS_DOMAIN);
    let n = postcard::to_slice(body, rest).ok()?.len();
    msg.get(..STATUS_DOMAIN.len() + n)
}

impl StatusRecord {
    /// A refresh: the ticket `ticket_id` is valid until `expires_at`, which must be after
    /// `now` and at most [`MAX_TTL_SECS`] after it.
    pub fn refresh(
        ticket_id: [u8; TICKET_ID_LEN],
        expires_at: u64,
        now: u64,
        key: &SigningKey,
    ) -> Result<Self, IssueError> {
        if expires_at <= now {
            return Err(IssueError::ExpiresBeforeIssue);
        }
        if expires_at - now > MAX_TTL_SECS {
            return Err(IssueError::TtlTooLong {
                ttl_secs: expires_at - now,
            });
        }
        let body = Body {
            version: FORMAT_VERSION,
            ticket_id,
            action: StatusAction::Refresh { expires_at },
            signed_at: now,
            keep_until: expires_at,
        };
        Ok(Self {
            body,
            signature: sign_body(&body, key)?,
        })
    }

    /// A revocation of `ticket_id`, kept until `keep_until` (the ticket's latest possible
    /// expiry; clamped to at most [`MAX_TTL_SECS`] after `now`, which no ticket outlives).
    pub fn revoke(
        ticket_id: [u8; TICKET_ID_LEN],
        keep_until: u64,
        now: u64,
        key: &SigningKey,
    ) -> Result<Self, IssueError> {
        let body = Body {
            version: FORMAT_VERSION,
            ticket_id,
            action: StatusAction::Revoke,
            signed_at: now,
            keep_until: keep_until.min(now.saturating_add(MAX_TTL_SECS)),
        };
        Ok(Self {
            body,
            signature: sign_body(&body, key)?,
        })
    }

    /// Encodes for the mesh; `None` when `out` is too small ([`STATUS_RECORD_MAX_LEN`] is
    /// always enough).
    pub fn encode<'o>(&self, out: &'o mut [u8]) -> Option<&'o mut [u8]> {
        let (a, b) = self.signature.split_at(32);
        let wire = Wire {
            body: self.body,
            sig: (a.try_into().ok()?, b.try_into().ok()?),
        };
        postcard::to_slice(&wire, out).ok()
    }

    /// Decodes a record received from a peer and checks its signature with `key`.
    pub fn decode_verified(bytes: &[u8], key: &VerifyingKey) -> Result<Self, TicketError> {
        let (wire, rest) = postcard::take_from_bytes::<Wire>(bytes)
            .map_err(|_| TicketError::Malformed(Malformed::Claims))?;
        if !rest.is_empty() {
            return Err(TicketError::Malformed(Malformed::Claims));
        }
        if wire.body.version != FORMAT_VERSION {
            return Err(TicketError::UnsupportedVersion(wire.body.version));
        }
        let mut signature = [0u8; SIGNATURE_LEN];
        let (a, b) = signature.split_at_mut(32);
        a.copy_from_slice(&wire.sig.0);
        b.copy_from_slice(&wire.sig.1);
        let mut msg = [0u8; STATUS_DOMAIN.len() + STATUS_RECORD_MAX_LEN];
        let signed =
            message(&wire.body, &mut msg).ok_or(TicketError::Malformed(Malformed::Claims))?;
        key.verify_strict(signed, &Signature::from_bytes(&signature))
            .map_err(|_| TicketError::BadSignature)?;
        Ok(Self {
            body: wire.body,
            signature,
        })
    }

    /// The ticket this record is about.
    pub fn ticket_id(&self) -> &[u8; TICKET_ID_LEN] {
        &self.body.ticket_id
    }
    /// What it does.
    pub fn action(&self) -> StatusAction {
        self.body.action
    }
    /// When it was signed, unix seconds.
    pub fn signed_at(&self) -> u64 {
        self.body.signed_at
    }
    /// Until when a relay keeps it, unix seconds.
    pub fn keep_until(&self) -> u64 {
        self.body.keep_until
    }
}

/// The status of one ticket id in a [`StatusTable`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketStatus {
    /// No record: the ticket's own expiry applies.
    Unknown,
    /// Refreshed: valid until this expiry.
    Refreshed {
        /// Effective expiry, unix seconds.
        expires_at: u64,
    },
    /// Revoked.
    Revoked,
}

/// What [`StatusTable::apply`] did.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new ticket id was added.
    Added,
    /// The status of a known ticket id changed.
    Updated,
    /// Nothing changed (a duplicate or an older refresh): no need to flood it further.
    Unchanged,
    /// The record is already past its keep-until time: not stored.
    Stale,
}

/// Where a [`StatusTable`] keeps its entries: [`FixedSlots`] (no allocation, `N` slots
/// reserved up front) or [`HeapSlots`] (feature `alloc`: memory follows the live entries).
/// Sealed: the two are the only implementations.
pub trait StatusSlots: slots::Slots {}

/// Fixed storage for `N` ticket ids (`N` a power of two), allocated with the table.
pub struct FixedSlots<const N: usize>(FnvIndexMap<[u8; TICKET_ID_LEN], slots::Entry, N>);

impl<const N: usize> StatusSlots for FixedSlots<N> {}

/// Heap storage (a `BTreeMap`): nothing reserved, one node per live ticket id; bounded by
/// the table's limit alone, which is then exact.
#[cfg(feature = "alloc")]
pub struct HeapSlots(alloc::collections::BTreeMap<[u8; TICKET_ID_LEN], slots::Entry>);

#[cfg(feature = "alloc")]
impl StatusSlots for HeapSlots {}

mod slots {
    use super::{FnvIndexMap, StatusRecord, TICKET_ID_LEN};

    /// The records of one ticket id. Public only inside this private module (the sealed
    /// trait needs it); not nameable outside the crate.
    #[derive(Debug, Clone, Copy)]
    pub struct Entry {
        pub refresh: Option<StatusRecord>,
        pub revoke: Option<StatusRecord>,
        pub keep_until: u64,
    }

    /// Map operations a [`super::StatusTable`] needs.
    pub trait Slots {
        /// Most ticket ids the storage itself can hold.
        const MAX: usize;
        fn empty() -> Self;
        fn get(&self, id: &[u8; TICKET_ID_LEN]) -> Option<&Entry>;
        fn get_mut(&mut self, id: &[u8; TICKET_ID_LEN]) -> Option<&mut Entry>;
        /// False when the storage is full (nothing stored).
        fn insert(&mut self, id: [u8; TICKET_ID_LEN], entry: Entry) -> bool;
        fn len(&self) -> usize;
        fn retain(&mut self, keep: impl FnMut(&Entry) -> bool);
        fn entries(&self) -> impl Iterator<Item = &Entry>;
    }

    impl<const N: usize> Slots for super::FixedSlots<N> {
        const MAX: usize = N;
        fn empty() -> Self {
            Self(FnvIndexMap::new())
        }
        fn get(&self, id: &[u8; TICKET_ID_LEN]) -> Option<&Entry> {
            self.0.get(id)
        }
        fn get_mut(&mut self, id: &[u8; TICKET_ID_LEN]) -> Option<&mut Entry> {
            self.0.get_mut(id)
        }
        fn insert(&mut self, id: [u8; TICKET_ID_LEN], entry: Entry) -> bool {
            self.0.insert(id, entry).is_ok()
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
            self.0.retain(|_, e| keep(e));
        }
        fn entries(&self) -> impl Iterator<Item = &Entry> {
            self.0.values()
        }
    }

    #[cfg(feature = "alloc")]
    impl Slots for super::HeapSlots {
        const MAX: usize = usize::MAX;
        fn empty() -> Self {
            Self(alloc::collections::BTreeMap::new())
        }
        fn get(&self, id: &[u8; TICKET_ID_LEN]) -> Option<&Entry> {
            self.0.get(id)
        }
        fn get_mut(&mut self, id: &[u8; TICKET_ID_LEN]) -> Option<&mut Entry> {
            self.0.get_mut(id)
        }
        fn insert(&mut self, id: [u8; TICKET_ID_LEN], entry: Entry) -> bool {
            self.0.insert(id, entry);
            true
        }
        fn len(&self) -> usize {
            self.0.len()
        }
        fn retain(&mut self, mut keep: impl FnMut(&Entry) -> bool) {
            self.0.retain(|_, e| keep(e));
        }
        fn entries(&self) -> impl Iterator<Item = &Entry> {
            self.0.values()
        }
    }
}

use slots::Entry;

/// A bounded table of status records keyed by ticket id, stored in `S` ([`FixedSlots`]
/// or [`HeapSlots`]). Its capacity is exact: it holds up to [`Self::capacity`] ticket ids
/// and refuses the next with [`StatusTableFull`] (after dropping records past their
/// keep-until time), storing nothing: a record is never dropped silently.
pub struct StatusTable<S: StatusSlots> {
    map: S,
    limit: usize,
}

impl<const N: usize> Default for StatusTable<FixedSlots<N>> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> StatusTable<FixedSlots<N>> {
    /// An empty table with capacity `N`.
    pub const fn new() -> Self {
        Self {
            map: FixedSlots(FnvIndexMap::new()),
            limit: N,
        }
    }
}

impl<S: StatusSlots> StatusTable<S> {
    /// An empty table with capacity `min(limit, what S can hold)`.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            map: S::empty(),
            limit: limit.min(S::MAX),
        }
    }

    /// Configured capacity.
    pub fn capacity(&self) -> usize {
        self.limit
    }

    /// Number of ticket ids with a live record.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Drops every entry whose keep-until time is at or before `now`; returns how many.
    pub fn prune(&mut self, now: u64) -> usize {
        let before = self.map.len();
        self.map.retain(|e| e.keep_until > now);
        before - self.map.len()
    }

    /// Applies a (verified) record at `now`.
    pub fn apply(&mut self, record: StatusRecord, now: u64) -> Result<Applied, StatusTableFull> {
        if record.keep_until() <= now {
            return Ok(Applied::Stale);
        }
        if let Some(entry) = self.map.get_mut(record.ticket_id()) {
            return Ok(merge(entry, record));
        }
        if self.map.len() >= self.limit {
            self.prune(now);
        }
        if self.map.len() >= self.limit {
            return Err(StatusTableFull {
                capacity: self.limit,
            });
        }
        let mut entry = Entry {
            refresh: None,
            revoke: None,
            keep_until: record.keep_until(),
        };
        merge(&mut entry, record);
        if self.map.insert(*record.ticket_id(), entry) {
            Ok(Applied::Added)
        } else {
            Err(StatusTableFull {
                capacity: self.limit,
            })
        }
    }

    /// The status of a ticket id (entries past their keep-until time still answer until
    /// pruned; they only concern expired tickets).
    pub fn status(&self, ticket_id: &[u8; TICKET_ID_LEN]) -> TicketStatus {
        match self.map.get(ticket_id) {
            None => TicketStatus::Unknown,
            Some(Entry {
                revoke: Some(_), ..
            }) => TicketStatus::Revoked,
            Some(Entry {
                refresh: Some(r), ..
            }) => match r.action() {
                StatusAction::Refresh { expires_at } => TicketStatus::Refreshed { expires_at },
                StatusAction::Revoke => TicketStatus::Revoked,
            },
            Some(_) => TicketStatus::Unknown,
        }
    }

    /// Checks a verified ticket's claims at `now` against this table: revoked, not yet
    /// valid, or expired (after any refresh). Returns the effective expiry.
    pub fn check(&self, claims: &Claims<'_>, now: u64) -> Result<u64, TicketError> {
        let expires_at = match self.status(claims.ticket_id()) {
            TicketStatus::Revoked => return Err(TicketError::Revoked),
            TicketStatus::Refreshed { expires_at } => expires_at,
            TicketStatus::Unknown => claims.expires_at(),
        };
        claims.check_time(now, expires_at)?;
        Ok(expires_at)
    }

    /// Same as [`Self::check`] from the parts a cache keeps.
    pub fn check_parts(
        &self,
        ticket_id: &[u8; TICKET_ID_LEN],
        issued_at: u64,
        expires_at: u64,
        now: u64,
    ) -> Result<u64, TicketError> {
        let expires_at = match self.status(ticket_id) {
            TicketStatus::Revoked => return Err(TicketError::Revoked),
            TicketStatus::Refreshed { expires_at } => expires_at,
            TicketStatus::Unknown => expires_at,
        };
        if issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(TicketError::NotYetValid { issued_at });
        }
        if now >= expires_at {
            return Err(TicketError::Expired {
                expired_at: expires_at,
            });
        }
        Ok(expires_at)
    }

    /// Every stored record (for a full sync to a peer), at most two per ticket id.
    pub fn records(&self) -> impl Iterator<Item = &StatusRecord> {
        self.map
            .entries()
            .flat_map(|e| e.revoke.iter().chain(e.refresh.iter()))
    }
}

fn merge(entry: &mut Entry, record: StatusRecord) -> Applied {
    let changed = match record.action() {
        StatusAction::Revoke => {
            if entry.revoke.is_none() {
                entry.revoke = Some(record);
                true
            } else {
                false
            }
        }
        StatusAction::Refresh { expires_at } => {
            let newer = match entry.refresh.map(|r| (r.signed_at(), r.action())) {
                None => true,
                Some((signed_at, StatusAction::Refresh { expires_at: old })) => {
                    (record.signed_at(), expires_at) > (signed_at, old)
                }
                Some(_) => true,
            };
            if newer {
                entry.refresh = Some(record);
            }
            newer
        }
    };
    let keep = entry.keep_until.max(record.keep_until());
    let extended = keep != entry.keep_until;
    entry.keep_until = keep;
    if changed || extended {
        Applied::Updated
    } else {
        Applied::Unchanged
    }
}
