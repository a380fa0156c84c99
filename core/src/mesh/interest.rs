//! Subscription interest: which (tenant, pattern) each relay has local subscribers for.
//!
//! Each relay numbers the changes to its own interest (`seq`, per origin, starting at 1
//! in each `epoch`: the relay's start time, so a restarted relay is not taken for an old
//! one) and floods them as [`InterestUpdate`]s. `(epoch, seq)` compare lexicographically. A relay that sees a gap in an origin's numbers
//! asks a neighbour for the full set ([`InterestSnapshotRequest`]) and gets it back in
//! parts ([`InterestSnapshot`]), tagged with the `seq` it reflects.

use serde::{Deserialize, Serialize};

use super::{
    MAX_CHANNEL, MAX_NAME, MAX_TENANT, TAG_LEN, U16_LEN, U32_LEN, bytes_len, check_len, check_name,
    varint_len,
};

/// Most changes in one [`InterestUpdate`].
pub const MAX_INTEREST_CHANGES: usize = 16;
/// Most entries in one [`InterestSnapshot`] part.
pub const MAX_SNAPSHOT_ENTRIES: usize = 16;

/// One (tenant, pattern) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestEntry<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// The pattern (as the clients subscribed it).
    pub pattern: &'a str,
}

impl InterestEntry<'_> {
    const MAX_LEN: usize = bytes_len(MAX_TENANT) + bytes_len(MAX_CHANNEL);

    fn validate(&self) -> Result<(), &'static str> {
        check_len(self.tenant, MAX_TENANT, "interest: tenant too long")?;
        check_len(self.pattern, MAX_CHANNEL, "interest: pattern too long")?;
        if self.tenant.is_empty() || self.pattern.is_empty() {
            return Err("interest: empty tenant or pattern");
        }
        Ok(())
    }
}

/// One change: the origin gained (`added`) or lost its last subscriber for an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestChange<'a> {
    /// True = added, false = removed.
    pub added: bool,
    /// The entry.
    #[serde(borrow)]
    pub entry: InterestEntry<'a>,
}

/// Consecutive changes of one origin's interest: the first has number `seq`, the next
/// `seq + 1`, and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestUpdate<'a> {
    /// The relay whose interest changed.
    pub origin: &'a str,
    /// The origin's epoch (its start time, in seconds).
    pub epoch: u32,
    /// Number of the first change.
    pub seq: u32,
    /// Up to [`MAX_INTEREST_CHANGES`] changes.
    #[serde(borrow)]
    pub changes: heapless::Vec<InterestChange<'a>, MAX_INTEREST_CHANGES>,
}

impl InterestUpdate<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN
        + bytes_len(MAX_NAME)
        + 2 * U32_LEN
        + varint_len(MAX_INTEREST_CHANGES)
        + MAX_INTEREST_CHANGES * (1 + InterestEntry::MAX_LEN);

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        check_name(self.origin, "interest update: bad origin name")?;
        self.changes.iter().try_for_each(|c| c.entry.validate())
    }
}

/// Ask for the full interest of `origin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestSnapshotRequest<'a> {
    /// The relay whose interest is wanted.
    pub origin: &'a str,
}

impl InterestSnapshotRequest<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN + bytes_len(MAX_NAME);

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        check_name(self.origin, "snapshot request: bad origin name")
    }
}

/// Part `part` of the full interest of `origin` as of change number `seq`; the part with
/// `last` set completes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterestSnapshot<'a> {
    /// The relay whose interest this is.
    pub origin: &'a str,
    /// The origin's epoch.
    pub epoch: u32,
    /// The change number the snapshot reflects.
    pub seq: u32,
    /// Part number, from 0.
    pub part: u16,
    /// True on the final part.
    pub last: bool,
    /// Up to [`MAX_SNAPSHOT_ENTRIES`] entries.
    #[serde(borrow)]
    pub entries: heapless::Vec<InterestEntry<'a>, MAX_SNAPSHOT_ENTRIES>,
}

impl InterestSnapshot<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN
        + bytes_len(MAX_NAME)
        + 2 * U32_LEN
        + U16_LEN
        + 1
        + varint_len(MAX_SNAPSHOT_ENTRIES)
        + MAX_SNAPSHOT_ENTRIES * InterestEntry::MAX_LEN;

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        check_name(self.origin, "interest snapshot: bad origin name")?;
        self.entries.iter().try_for_each(InterestEntry::validate)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{roundtrip, s};
    use super::super::{DecodeError, Message, decode};
    use super::*;

    fn big_entry() -> InterestEntry<'static> {
        InterestEntry {
            tenant: s(MAX_TENANT, b'a'),
            pattern: s(MAX_CHANNEL, b'z'),
        }
    }

    #[test]
    fn worst_case() {
        let mut changes = heapless::Vec::new();
        for _ in 0..MAX_INTEREST_CHANGES {
            let _ = changes.push(InterestChange {
                added: true,
                entry: big_entry(),
            });
        }
        let n = roundtrip(&Message::InterestUpdate(InterestUpdate {
            origin: s(MAX_NAME, b'a'),
            epoch: u32::MAX,
            seq: u32::MAX,
            changes,
        }));
        assert_eq!(n, InterestUpdate::MAX_LEN);
        let mut entries = heapless::Vec::new();
        for _ in 0..MAX_SNAPSHOT_ENTRIES {
            let _ = entries.push(big_entry());
        }
        let n = roundtrip(&Message::InterestSnapshot(InterestSnapshot {
            origin: s(MAX_NAME, b'a'),
            epoch: u32::MAX,
            seq: u32::MAX,
            part: u16::MAX,
            last: true,
            entries,
        }));
        assert_eq!(n, InterestSnapshot::MAX_LEN);
        let n = roundtrip(&Message::InterestSnapshotRequest(InterestSnapshotRequest {
            origin: s(MAX_NAME, b'a'),
        }));
        assert_eq!(n, InterestSnapshotRequest::MAX_LEN);
    }

    #[test]
    fn rules() {
        let mut changes = heapless::Vec::new();
        let _ = changes.push(InterestChange {
            added: false,
            entry: InterestEntry {
                tenant: "",
                pattern: "a.#",
            },
        });
        let m = Message::InterestUpdate(InterestUpdate {
            origin: "n",
            epoch: 1,
            seq: 1,
            changes,
        });
        let mut buf = [0u8; 256];
        let n = postcard::to_slice(&m, &mut buf)
            .map(|b| b.len())
            .unwrap_or(0);
        assert!(matches!(decode(&buf[..n]), Err(DecodeError::Invalid(_))));
    }
}
