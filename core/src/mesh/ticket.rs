//! Ticket status records (refresh, revoke), flooded through the mesh. The record itself
//! is opaque here: it is signed and checked by the tickets layer.
//!
//! - [`TicketStatus`]: one record, flooded when it is made (and passed on by every relay
//!   for which it was new).
//! - [`TicketSnapshot`]: part of a relay's table of still-valid records, sent once to a
//!   neighbour when their link comes up, so a relay that joins (or reconnects) late learns
//!   the records made before. Not flooded as such: a receiver floods on, as
//!   [`TicketStatus`], only the records that were new to it.

use serde::{Deserialize, Serialize};

use super::{MAX_NAME, TAG_LEN, U16_LEN, U64_LEN, bytes_len, check_name, varint_len};

/// Largest ticket status record, in bytes.
pub const MAX_TICKET_RECORD: usize = 1024;
/// Most records in one [`TicketSnapshot`] part.
pub const MAX_TICKET_SNAPSHOT_RECORDS: usize = 32;

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

/// Part `part` (from 0) of the sender's table of still-valid status records; the part
/// with `last` set completes it. Sent on the link's control stream, paced by the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketSnapshot<'a> {
    /// Part number, from 0 (saturates at `u16::MAX`).
    pub part: u16,
    /// True on the final part.
    pub last: bool,
    /// Up to [`MAX_TICKET_SNAPSHOT_RECORDS`] signed records, each at most
    /// [`MAX_TICKET_RECORD`] bytes.
    #[serde(borrow)]
    pub records: heapless::Vec<&'a [u8], MAX_TICKET_SNAPSHOT_RECORDS>,
}

impl TicketSnapshot<'_> {
    /// Largest encoding (including the message tag).
    pub const MAX_LEN: usize = TAG_LEN
        + U16_LEN
        + 1
        + varint_len(MAX_TICKET_SNAPSHOT_RECORDS)
        + MAX_TICKET_SNAPSHOT_RECORDS * bytes_len(MAX_TICKET_RECORD);

    pub(super) fn validate(&self) -> Result<(), &'static str> {
        if self.records.iter().any(|r| r.len() > MAX_TICKET_RECORD) {
            return Err("ticket snapshot: record too long");
        }
        if self.records.iter().any(|r| r.is_empty()) {
            return Err("ticket snapshot: empty record");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{roundtrip, s};
    use super::super::{DecodeError, Message, decode};
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

    #[test]
    fn snapshot_worst_case_and_rules() {
        let mut records = heapless::Vec::new();
        for _ in 0..MAX_TICKET_SNAPSHOT_RECORDS {
            let _ = records.push(s(MAX_TICKET_RECORD, b'z').as_bytes());
        }
        let n = roundtrip(&Message::TicketSnapshot(TicketSnapshot {
            part: u16::MAX,
            last: true,
            records,
        }));
        assert_eq!(n, TicketSnapshot::MAX_LEN);
        // The empty final part (a relay with no records) is valid too.
        roundtrip(&Message::TicketSnapshot(TicketSnapshot {
            part: 0,
            last: true,
            records: heapless::Vec::new(),
        }));

        // Over-long and empty records are refused when decoding (the peer's fault).
        for bad in [s(MAX_TICKET_RECORD + 1, b'a').as_bytes(), b"".as_slice()] {
            let mut records = heapless::Vec::<&[u8], MAX_TICKET_SNAPSHOT_RECORDS>::new();
            let _ = records.push(bad);
            let m = Message::TicketSnapshot(TicketSnapshot {
                part: 0,
                last: false,
                records,
            });
            let mut buf = [0u8; 2048];
            let n = postcard::to_slice(&m, &mut buf)
                .map(|b| b.len())
                .unwrap_or(0);
            assert!(n > 0);
            assert!(
                matches!(decode(&buf[..n]), Err(DecodeError::Invalid(_))),
                "{}",
                bad.len()
            );
        }
        // A part listing more records than allowed is malformed: encode a valid empty
        // part, then raise its record count and append the records by hand.
        let mut buf = [0u8; 256];
        let empty = Message::TicketSnapshot(TicketSnapshot {
            part: 0,
            last: false,
            records: heapless::Vec::new(),
        });
        let mut len = postcard::to_slice(&empty, &mut buf)
            .map(|b| b.len())
            .unwrap_or(0);
        assert_eq!(len, 4, "tag, part, last, count");
        buf[3] = (MAX_TICKET_SNAPSHOT_RECORDS + 1) as u8;
        for _ in 0..=MAX_TICKET_SNAPSHOT_RECORDS {
            buf[len] = 1;
            buf[len + 1] = b'x';
            len += 2;
        }
        buf[3] = MAX_TICKET_SNAPSHOT_RECORDS as u8;
        assert!(decode(&buf[..len - 2]).is_ok(), "the bound itself is fine");
        buf[3] = (MAX_TICKET_SNAPSHOT_RECORDS + 1) as u8;
        assert_eq!(decode(&buf[..len]), Err(DecodeError::Malformed));
    }
}
