//! Ticket status records (refresh, revoke), flooded through the mesh. The record itself
//! is opaque here: it is signed and checked by the tickets layer.

use serde::{Deserialize, Serialize};

use super::{MAX_NAME, TAG_LEN, U64_LEN, bytes_len, check_name};

/// Largest ticket status record, in bytes.
pub const MAX_TICKET_RECORD: usize = 1024;

/// One signed status record and where it entered the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketStatus<'a> {
    /// The relay that first flooded it.
    pub origin: &'a str,
    /// The origin's sequence number for flooding dedup.
    pub seq: u64,
    /// The signed record.
    pub record: &'a [u8],
}

impl TicketStatus<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize =
        TAG_LEN + bytes_len(MAX_NAME) + U64_LEN + bytes_len(MAX_TICKET_RECORD);

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        check_name(self.origin, "ticket status: bad origin name")?;
        if self.record.len() > MAX_TICKET_RECORD {
            return Err("ticket status: record too long");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Message;
    use super::super::test_util::{roundtrip, s};
    use super::*;

    #[test]
    fn worst_case() {
        let n = roundtrip(&Message::TicketStatus(TicketStatus {
            origin: s(MAX_NAME, b'a'),
            seq: u64::MAX,
            record: s(MAX_TICKET_RECORD, b'z').as_bytes(),
        }));
        assert_eq!(n, TicketStatus::MAX_LEN);
    }
}
