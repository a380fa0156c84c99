//! Key material on disk: the ticket signing key, its public key, and the master token.
//!
//! Every file is one line of lowercase hex (the signing key: its 32-byte seed; the public
//! key: 32 bytes; the master token: 32 random bytes), written with mode 0600 and never
//! overwritten silently.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

/// File name of the signing key inside a state directory.
pub const SIGNING_KEY_FILE: &str = "ticket-signing.key";
/// File name of the public key inside a state directory.
pub const PUBLIC_KEY_FILE: &str = "ticket-public.key";
/// File name of the master token inside a state directory.
pub const MASTER_TOKEN_FILE: &str = "master.token";

/// A key file problem; the message names the file and what to do.
#[derive(Debug)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decodes hex (either case, surrounding whitespace ignored) of exactly `N` bytes.
pub fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let t = text.trim().as_bytes();
    if t.len() != 2 * N || !t.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(t.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *o = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Fills `N` bytes from the OS random source.
pub fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| KeyError(format!("OS random source failed: {e}")))?;
    Ok(b)
}

/// A new random signing key.
pub fn generate_signing_key() -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&random::<32>()?))
}

/// A new random master token (64 hex digits).
pub fn generate_master_token() -> Result<String, KeyError> {
    Ok(to_hex(&random::<32>()?))
}

/// Writes `text` + newline to a new file with mode 0600; refuses to overwrite.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), KeyError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError(format!(
                "{} already exists; not overwriting it",
                path.display()
            ))
        } else {
            KeyError(format!("cannot create {}: {e}", path.display()))
        }
    })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| KeyError(format!("cannot write {}: {e}", path.display())))
}

fn read(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path).map_err(|e| KeyError(format!("cannot read {}: {e}", path.display())))
}

/// Reads a signing key file.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let seed = from_hex::<32>(&read(path)?).ok_or_else(|| {
        KeyError(format!(
            "{} is not a ticket signing key (64 hex digits)",
            path.display()
        ))
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads a public key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let bytes = from_hex::<32>(&read(path)?).ok_or_else(|| {
        KeyError(format!(
            "{} is not a ticket public key (64 hex digits)",
            path.display()
        ))
    })?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| {
        KeyError(format!(
            "{} is not a valid Ed25519 public key",
            path.display()
        ))
    })
}

/// Reads a master token file (one line, at least 16 characters).
pub fn read_master_token(path: &Path) -> Result<String, KeyError> {
    let t = read(path)?.trim().to_owned();
    if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KeyError(format!(
            "{}: a master token is one line of at least 16 non-space characters",
            path.display()
        )));
    }
    Ok(t)
}

/// Paths of the key files written by [`keygen`].
#[derive(Debug, Clone)]
pub struct KeyPaths {
    /// Signing key (secret).
    pub signing: PathBuf,
    /// Public key (give it to every relay of the overlay).
    pub public: PathBuf,
}

/// Writes a new signing key and its public key into `dir` (created 0700 if missing).
pub fn keygen(dir: &Path) -> Result<(KeyPaths, VerifyingKey), KeyError> {
    create_private_dir(dir)?;
    let paths = KeyPaths {
        signing: dir.join(SIGNING_KEY_FILE),
        public: dir.join(PUBLIC_KEY_FILE),
    };
    for p in [&paths.signing, &paths.public] {
        if p.exists() {
            return Err(KeyError(format!(
                "{} already exists; not overwriting it",
                p.display()
            )));
        }
    }
    let key = generate_signing_key()?;
    write_secret_file(&paths.signing, &to_hex(key.as_bytes()))?;
    write_secret_file(&paths.public, &to_hex(key.verifying_key().as_bytes()))?;
    Ok((paths, key.verifying_key()))
}

/// Creates `dir` (and parents) with mode 0700 when missing.
pub fn create_private_dir(dir: &Path) -> Result<(), KeyError> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
        .map_err(|e| KeyError(format!("cannot create {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "fastpubsub-keys-{name}-{}-{}",
            std::process::id(),
            to_hex(&random::<4>().expect("must succeed"))
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keygen_writes_0600_and_reads_back() {
        let d = temp_dir("kg");
        let (paths, pk) = keygen(&d).expect("must succeed");
        #[cfg(unix)]
        for p in [&paths.signing, &paths.public] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(p).expect("must succeed").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
        let sk = read_signing_key(&paths.signing).expect("must succeed");
        assert_eq!(sk.verifying_key(), pk);
        assert_eq!(read_public_key(&paths.public).expect("must succeed"), pk);
        let again = keygen(&d).expect_err("must fail").to_string();
        assert!(again.contains("already exists"), "{again}");
        fs::write(d.join("bad"), "zz").expect("must succeed");
        assert!(read_public_key(&d.join("bad")).is_err());
        assert!(read_master_token(&d.join("bad")).is_err());
        fs::remove_dir_all(&d).expect("must succeed");
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(to_hex(&[0, 255, 16]), "00ff10");
        assert_eq!(from_hex::<3>(" 00FF10\n"), Some([0, 255, 16]));
        assert_eq!(from_hex::<3>("00ff1"), None);
        assert_eq!(from_hex::<2>("00ff10"), None);
        assert_eq!(from_hex::<1>("+f"), None);
    }
}
