//! The token string `AT_<id>_<secret>`: issuing (signing) and verifying.
//!
//! `<id>` is the lowercase hex of the postcard-encoded [`Claims`]; `<secret>` is the
//! lowercase hex of the Ed25519 signature over `TICKET_DOMAIN || claims`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::claims::Claims;
use super::error::{Cap, IssueError, Malformed, TicketError};
use super::hex;
use super::limits::{MAX_CLAIMS_LEN, MAX_TOKEN_LEN, SIGNATURE_LEN, TICKET_DOMAIN};

const PREFIX: &str = "AT_";
const DOMAIN_LEN: usize = TICKET_DOMAIN.len();

/// Scratch space for one ticket's signed message (`TICKET_DOMAIN || claims`). The
/// verified [`Claims`] borrow their strings from it.
#[derive(Clone)]
pub struct TicketBuf {
    bytes: [u8; DOMAIN_LEN + MAX_CLAIMS_LEN],
}

impl Default for TicketBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl TicketBuf {
    /// An empty buffer.
    pub const fn new() -> Self {
        let mut bytes = [0u8; DOMAIN_LEN + MAX_CLAIMS_LEN];
        let mut i = 0;
        while i < DOMAIN_LEN {
            bytes[i] = TICKET_DOMAIN[i];
            i += 1;
        }
        Self { bytes }
    }
}

/// Splits a token into its hex id and hex secret, checking only the shape
/// (`AT_`, one `_` after the id, both parts non-empty).
pub fn split_token(token: &str) -> Result<(&str, &str), TicketError> {
    let rest = token
        .strip_prefix(PREFIX)
        .ok_or(TicketError::Malformed(Malformed::Prefix))?;
    let (id, secret) = rest
        .split_once('_')
        .ok_or(TicketError::Malformed(Malformed::Parts))?;
    if id.is_empty() || secret.is_empty() {
        return Err(TicketError::Malformed(Malformed::Parts));
    }
    Ok((id, secret))
}

/// Decodes the hex `<id>` of a token into `out` and returns the claims bytes.
fn decode_id<'o>(id: &str, out: &'o mut [u8]) -> Result<&'o [u8], TicketError> {
    if id.len() > 2 * MAX_CLAIMS_LEN {
        return Err(TicketError::Malformed(Malformed::IdTooLong));
    }
    hex::decode(id.as_bytes(), out).ok_or(TicketError::Malformed(Malformed::IdHex))
}

/// Decodes the `<id>` part of a token (as sent back by SDKs on refresh) into claims,
/// WITHOUT any signature check: use only where the caller is otherwise authorized (the
/// master token), never to admit a connection.
pub fn decode_token_id<'b>(
    id: &str,
    buf: &'b mut [u8; MAX_CLAIMS_LEN],
) -> Result<Claims<'b>, TicketError> {
    let bytes = decode_id(id, buf)?;
    Claims::decode(bytes)
}

/// Checks the shape and the signature of `token` with `key` and returns the signed claims
/// bytes (inside `buf`). Does not decode the claims nor look at time: see [`verify`].
pub fn verify_signature<'b>(
    token: &str,
    key: &VerifyingKey,
    buf: &'b mut TicketBuf,
) -> Result<&'b [u8], TicketError> {
    let (id, secret) = split_token(token)?;
    let mut sig = [0u8; SIGNATURE_LEN];
    if secret.len() != 2 * SIGNATURE_LEN {
        return Err(TicketError::Malformed(Malformed::SecretHex));
    }
    hex::decode(secret.as_bytes(), &mut sig).ok_or(TicketError::Malformed(Malformed::SecretHex))?;
    let (_, claims_area) = buf.bytes.split_at_mut(DOMAIN_LEN);
    let n = decode_id(id, claims_area)?.len();
    let message = buf
        .bytes
        .get(..DOMAIN_LEN + n)
        .ok_or(TicketError::Malformed(Malformed::IdTooLong))?;
    key.verify_strict(message, &Signature::from_bytes(&sig))
        .map_err(|_| TicketError::BadSignature)?;
    buf.bytes
        .get(DOMAIN_LEN..DOMAIN_LEN + n)
        .ok_or(TicketError::Malformed(Malformed::IdTooLong))
}

/// Verifies a presented ticket: shape, signature with `key`, claims decoding and the time
/// window at `now` (as issued; a relay with a status table uses
/// [`super::StatusTable::check`] instead of the time check here).
pub fn verify<'b>(
    token: &str,
    key: &VerifyingKey,
    buf: &'b mut TicketBuf,
    now: u64,
) -> Result<Claims<'b>, TicketError> {
    let bytes = verify_signature(token, key, buf)?;
    let claims = Claims::decode(bytes)?;
    claims.check_time(now, claims.expires_at())?;
    Ok(claims)
}

/// Signs `claims` with `key` and writes the token `AT_<id>_<secret>` into `out`, which
/// must hold [`MAX_TOKEN_LEN`] bytes. Claims over [`MAX_CLAIMS_LEN`] encoded bytes are
/// refused with [`Cap::EncodedSize`].
pub fn issue<'o>(
    claims: &Claims<'_>,
    key: &SigningKey,
    out: &'o mut [u8],
) -> Result<&'o str, IssueError> {
    claims.validate()?;
    let out = out
        .get_mut(..MAX_TOKEN_LEN)
        .ok_or(IssueError::BufferTooSmall)?;
    let mut message = TicketBuf::new();
    let (_, claims_area) = message.bytes.split_at_mut(DOMAIN_LEN);
    let n = claims
        .encode(claims_area)
        .ok_or(IssueError::OverCap(Cap::EncodedSize))?
        .len();
    let signed = message
        .bytes
        .get(..DOMAIN_LEN + n)
        .ok_or(IssueError::OverCap(Cap::EncodedSize))?;
    let sig = key.sign(signed).to_bytes();
    let claims_bytes = signed.get(DOMAIN_LEN..).ok_or(IssueError::BufferTooSmall)?;

    let (head, rest) = out.split_at_mut(PREFIX.len());
    head.copy_from_slice(PREFIX.as_bytes());
    let id_len = hex::encode(claims_bytes, rest)
        .ok_or(IssueError::BufferTooSmall)?
        .len();
    let (_, rest) = rest.split_at_mut(id_len);
    let (sep, rest) = rest.split_first_mut().ok_or(IssueError::BufferTooSmall)?;
    *sep = b'_';
    let sig_len = hex::encode(&sig, rest)
        .ok_or(IssueError::BufferTooSmall)?
        .len();
    let total = PREFIX.len() + id_len + 1 + sig_len;
    let written = out.get(..total).ok_or(IssueError::BufferTooSmall)?;
    // Only ASCII was written.
    core::str::from_utf8(written).map_err(|_| IssueError::BufferTooSmall)
}
