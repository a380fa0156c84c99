//! The refresh/revoke records on disk: `<state dir>/ticket-status.bin`, so a relay that
//! restarts still refuses a revoked ticket (design principle 7).
//!
//! Format (all integers big-endian):
//!
//! ```text
//! magic   "FPS-TICKET-STATUS\n" (18 bytes)
//! version u8 = 1
//! key     32 bytes: the ticket public key the records are signed with
//! count   u32
//! count × (len u8, len bytes: a StatusRecord as the mesh carries it)
//! digest  32 bytes: SHA-512 of everything before it, first 32 bytes
//! ```
//!
//! Written whole, atomically: a temporary file in the same directory, `fsync`, `rename`
//! over the old file, `fsync` of the directory. A crash leaves the old or the new file,
//! never a mix. Bounded: at most two records per ticket id of a table of at most
//! `MAX_STATUS_CAPACITY` ids, so at most [`MAX_FILE_LEN`] bytes; a longer file is refused
//! before it is read.
//!
//! Loading: a file that is unreadable, truncated, over the bound, fails its digest or holds
//! a record whose signature does not verify is **corrupt**, and `run` refuses to start with
//! an error saying so (fail closed: starting without it would admit revoked tickets
//! again). Records for another public key (the ticket key changed) are dropped with a
//! warning: tickets of the old key are refused anyway. Records past their keep-until time
//! are dropped.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use fastpubsub_core::ticket::{STATUS_RECORD_MAX_LEN, StatusRecord};
use sha2::{Digest, Sha512};

/// File name inside the state directory.
pub const STATUS_FILE: &str = "ticket-status.bin";

const MAGIC: &[u8] = b"FPS-TICKET-STATUS\n";
const VERSION: u8 = 1;
const DIGEST_LEN: usize = 32;
const HEADER_LEN: usize = MAGIC.len() + 1 + 32 + 4;

/// Most records a file may hold: two per ticket id of the largest status table.
pub const MAX_RECORDS: usize = 2 * super::MAX_STATUS_CAPACITY;

/// Largest valid file.
pub const MAX_FILE_LEN: usize = HEADER_LEN + MAX_RECORDS * (1 + STATUS_RECORD_MAX_LEN) + DIGEST_LEN;

/// Why a status file was not loaded or saved. The text names the file, says what is wrong
/// and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistError {
    /// The file cannot be read, or its content is damaged (the operator decides).
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file cannot be written (disk full, permissions).
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        why: String,
    },
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Corrupt { path, why } => write!(
                f,
                "ticket status file {} is unusable: {why}. It holds the refresh/revoke records \
                 that must survive a restart, so the relay does not start without them: restore \
                 it from a backup, or move it aside to start without them (tickets revoked here \
                 are then accepted again until they expire, at most 24 h; in a mesh the other \
                 relays send their records when the links come up)",
                path.display()
            ),
            Self::Write { path, why } => {
                write!(
                    f,
                    "cannot save ticket status file {}: {why}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for PersistError {}

/// What [`decode`] found in a sound file.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Records signed with the expected key.
    pub records: Vec<StatusRecord>,
    /// Records written for another public key, dropped.
    pub other_key: usize,
}

/// Encodes `records` (each at most [`STATUS_RECORD_MAX_LEN`] bytes, at most
/// [`MAX_RECORDS`]; more are cut off) into the file format.
pub fn encode<'r>(key: &VerifyingKey, records: impl Iterator<Item = &'r StatusRecord>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + DIGEST_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(&[0; 4]);
    let mut count = 0u32;
    let mut buf = [0u8; STATUS_RECORD_MAX_LEN];
    for r in records.take(MAX_RECORDS) {
        if let Some(bytes) = r.encode(&mut buf) {
            // A record is at most STATUS_RECORD_MAX_LEN (128) bytes: its length fits a u8.
            out.push(bytes.len() as u8);
            out.extend_from_slice(bytes);
            count += 1;
        }
    }
    if let Some(c) = out.get_mut(HEADER_LEN - 4..HEADER_LEN) {
        c.copy_from_slice(&count.to_be_bytes());
    }
    let digest = Sha512::digest(&out);
    out.extend_from_slice(&digest[..DIGEST_LEN]);
    out
}

/// Decodes and verifies a file's bytes against the relay's public `key`. `Err` is the
/// reason the file is corrupt.
pub fn decode(bytes: &[u8], key: &VerifyingKey) -> Result<Decoded, String> {
    if bytes.len() > MAX_FILE_LEN {
        return Err(format!(
            "{} bytes, more than the {MAX_FILE_LEN} a full table needs",
            bytes.len()
        ));
    }
    let body_len = bytes
        .len()
        .checked_sub(DIGEST_LEN)
        .filter(|n| *n >= HEADER_LEN)
        .ok_or_else(|| format!("{} bytes, too short for a status file", bytes.len()))?;
    let (body, digest) = bytes.split_at(body_len);
    if !body.starts_with(MAGIC) {
        return Err("not a ticket status file (wrong magic)".into());
    }
    if Sha512::digest(body)[..DIGEST_LEN] != *digest {
        return Err("checksum mismatch (damaged or truncated)".into());
    }
    let mut rest = &body[MAGIC.len()..];
    let mut take = |n: usize| -> Result<&[u8], String> {
        let (head, tail) = rest
            .split_at_checked(n)
            .ok_or_else(|| String::from("truncated record list"))?;
        rest = tail;
        Ok(head)
    };
    let version = take(1)?[0];
    if version != VERSION {
        return Err(format!(
            "format version {version}, this relay reads version {VERSION}"
        ));
    }
    let file_key = take(32)?.to_vec();
    let mut count_be = [0u8; 4];
    count_be.copy_from_slice(take(4)?);
    let count = u32::from_be_bytes(count_be) as usize;
    if count > MAX_RECORDS {
        return Err(format!("{count} records, at most {MAX_RECORDS}"));
    }
    let mut out = Decoded::default();
    let same_key = file_key == key.as_bytes();
    for i in 0..count {
        let len = usize::from(take(1)?[0]);
        if len > STATUS_RECORD_MAX_LEN {
            return Err(format!(
                "record {i} is {len} bytes long, at most {STATUS_RECORD_MAX_LEN}"
            ));
        }
        let record = take(len)?;
        if !same_key {
            out.other_key += 1;
            continue;
        }
        let r =
            StatusRecord::decode_verified(record, key).map_err(|e| format!("record {i}: {e}"))?;
        out.records.push(r);
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last record", rest.len()));
    }
    Ok(out)
}

/// Reads `path`: `Ok(None)` when it does not exist. Reads at most [`MAX_FILE_LEN`] + 1
/// bytes, so an oversized file costs no more memory than the bound.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, PersistError> {
    let corrupt = |why: String| PersistError::Corrupt {
        path: path.to_owned(),
        why,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(corrupt(format!("cannot open it: {e}"))),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| corrupt(format!("cannot read it: {e}")))?;
    Ok(Some(bytes))
}

/// Replaces `path` with `bytes` atomically (temporary file, `fsync`, `rename`, `fsync` of
/// the directory); the file is created with mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let fail = |what: &str, e: std::io::Error| PersistError::Write {
        path: path.to_owned(),
        why: format!("{what}: {e}"),
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    // Unique per process and call, so two writers (two relays sharing a state directory)
    // never write into one temporary file.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".{}.{seq}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .map_err(|e| fail("cannot create the temporary file", e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("cannot write the temporary file", e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| fail("cannot rename the temporary file over it", e))?;
    // The rename itself is durable once the directory is synced.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| fail("cannot sync the directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    const NOW: u64 = 1_780_000_000;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    fn records(n: u8) -> Vec<StatusRecord> {
        (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    StatusRecord::revoke([i; 16], NOW + 100, NOW, &key()).expect("sign")
                } else {
                    StatusRecord::refresh([i; 16], NOW + 200, NOW, &key()).expect("sign")
                }
            })
            .collect()
    }

    #[test]
    fn round_trip() {
        let rs = records(5);
        let bytes = encode(&key().verifying_key(), rs.iter());
        let back = decode(&bytes, &key().verifying_key()).expect("decode");
        assert_eq!(back.records, rs);
        assert_eq!(back.other_key, 0);
        let empty = encode(&key().verifying_key(), [].iter());
        assert_eq!(empty.len(), HEADER_LEN + DIGEST_LEN);
        assert!(
            decode(&empty, &key().verifying_key())
                .expect("empty")
                .records
                .is_empty()
        );
    }

    #[test]
    fn another_key_drops_the_records() {
        let bytes = encode(&key().verifying_key(), records(3).iter());
        let other = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let back = decode(&bytes, &other).expect("sound file");
        assert!(back.records.is_empty());
        assert_eq!(back.other_key, 3);
    }

    /// Every single-bit change and every truncation is detected (never a silent partial
    /// load), and nothing panics.
    #[test]
    fn any_damage_is_corrupt() {
        let bytes = encode(&key().verifying_key(), records(3).iter());
        for pos in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[pos] ^= bit;
                assert!(
                    decode(&bad, &key().verifying_key()).is_err(),
                    "bit {bit:#x} at {pos} accepted"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len], &key().verifying_key()).is_err(),
                "cut at {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, &key().verifying_key()).is_err());
    }

    /// A record with a bad signature inside a file whose checksum was recomputed (a forged
    /// file) is refused too.
    #[test]
    fn forged_record_with_a_fixed_checksum_is_corrupt() {
        let mut bytes = encode(&key().verifying_key(), records(1).iter());
        let body_len = bytes.len() - DIGEST_LEN;
        // Flip a byte of the record's signature, then recompute the digest.
        bytes[body_len - 1] ^= 1;
        let digest = Sha512::digest(&bytes[..body_len]);
        bytes[body_len..].copy_from_slice(&digest[..DIGEST_LEN]);
        let err = decode(&bytes, &key().verifying_key()).expect_err("forged");
        assert!(err.contains("record 0"), "{err}");
    }

    #[test]
    fn the_largest_table_fits_the_bound() {
        // The worst-case record length times the most records, plus header and digest.
        assert_eq!(
            MAX_FILE_LEN,
            HEADER_LEN + 2 * super::super::MAX_STATUS_CAPACITY * 129 + DIGEST_LEN
        );
        let too_big = vec![0u8; MAX_FILE_LEN + 1];
        assert!(
            decode(&too_big, &key().verifying_key())
                .unwrap_err()
                .contains("more than")
        );
    }

    #[test]
    fn write_is_atomic_and_read_gives_it_back() {
        let dir = std::env::temp_dir().join(format!("fps-persist-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(STATUS_FILE);
        assert_eq!(read(&path), Ok(None));
        let bytes = encode(&key().verifying_key(), records(2).iter());
        write_atomic(&path, &bytes).expect("write");
        assert_eq!(read(&path), Ok(Some(bytes.clone())));
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [STATUS_FILE], "the temporary file was renamed");
        let newer = encode(&key().verifying_key(), records(4).iter());
        write_atomic(&path, &newer).expect("overwrite");
        assert_eq!(read(&path), Ok(Some(newer)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
