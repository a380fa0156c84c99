//! Mesh identity: the mesh CA and the relay certificates it signs.
//!
//! `fastpubsub-relay mesh-ca --dir DIR` creates `DIR/ca.pem` and `DIR/ca.key` (0600).
//! `fastpubsub-relay mesh-cert --name NAME --ca-dir DIR --out OUT` writes `OUT/NAME.pem`
//! (the relay certificate followed by the CA certificate) and `OUT/NAME.key` (0600).
//! The relay certificate carries `NAME` as its only DNS subject-alternative name and is
//! valid for both TLS server and client authentication: relays authenticate each other
//! with mutual TLS on every mesh link.
//!
//! The CA's distinguished name is fixed ([`CA_COMMON_NAME`]); what makes two meshes
//! distinct is the CA key, so a certificate from another mesh's CA never verifies.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use argh::FromArgs;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// Common name of every mesh CA certificate.
pub const CA_COMMON_NAME: &str = "fastpubsub mesh CA";
/// File name of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Longest relay name, in bytes.
pub const MAX_RELAY_NAME: usize = 32;
/// Years a CA certificate stays valid.
const CA_VALID_YEARS: i32 = 10;
/// Years a relay certificate stays valid.
const RELAY_VALID_YEARS: i32 = 2;

/// Create a mesh certificate authority (CA key and self-signed CA certificate).
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "mesh-ca")]
pub struct MeshCaArgs {
    /// directory to write ca.pem and ca.key into (created if missing)
    #[argh(option, default = "PathBuf::from(\"mesh-ca\")")]
    pub dir: PathBuf,
    /// overwrite an existing CA in that directory
    #[argh(switch)]
    pub force: bool,
}

/// Issue a relay certificate signed by the mesh CA.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "mesh-cert")]
pub struct MeshCertArgs {
    /// relay name (1-32 of a-z, 0-9, '-'; not starting or ending with '-'); becomes the certificate's DNS name
    #[argh(option)]
    pub name: String,
    /// directory holding ca.pem and ca.key (from `mesh-ca`)
    #[argh(option, default = "PathBuf::from(\"mesh-ca\")")]
    pub ca_dir: PathBuf,
    /// directory to write NAME.pem and NAME.key into (created if missing)
    #[argh(option, default = "PathBuf::from(\".\")")]
    pub out: PathBuf,
}

/// Why creating or loading mesh identity material failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CertError {
    /// The relay name is not a valid mesh name.
    BadName(String),
    /// A file could not be read or written.
    Io(PathBuf, std::io::Error),
    /// The target file exists and `--force` was not given.
    Exists(PathBuf),
    /// Certificate generation or parsing failed.
    Rcgen(rcgen::Error),
    /// A PEM file did not hold what was expected.
    Pem(PathBuf, String),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadName(n) => write!(
                f,
                "invalid relay name {n:?}: use 1-{MAX_RELAY_NAME} characters of a-z, 0-9 and '-', not starting or ending with '-'"
            ),
            Self::Io(p, e) => write!(f, "{}: {e}", p.display()),
            Self::Exists(p) => write!(
                f,
                "{} already exists; pass --force to replace it (every relay certificate signed by the old CA stops working)",
                p.display()
            ),
            Self::Rcgen(e) => write!(f, "certificate generation failed: {e}"),
            Self::Pem(p, why) => write!(f, "{}: {why}", p.display()),
        }
    }
}

impl std::error::Error for CertError {}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        Self::Rcgen(e)
    }
}

/// Check that `name` is a valid relay name: 1..=32 bytes of `a-z0-9-`, no leading or
/// trailing `-` (so it is also a valid DNS label for the certificate).
pub fn validate_relay_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_RELAY_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName(name.to_owned()))
    }
}

fn current_year() -> i32 {
    let secs = crate::clock::unix_secs(crate::clock::wall_now());
    // 365.2425 days per year; off by at most a day around new year, which only moves
    // `not_before` to the previous January 1st.
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn validity(params: &mut CertificateParams, years: i32) {
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

/// Mesh CA material as PEM text.
#[derive(Debug, Clone)]
pub struct CaPem {
    /// The self-signed CA certificate.
    pub cert: String,
    /// The CA private key (PKCS#8).
    pub key: String,
}

/// Relay identity as PEM text.
#[derive(Debug, Clone)]
pub struct RelayPem {
    /// The relay certificate followed by the CA certificate.
    pub chain: String,
    /// The relay private key (PKCS#8).
    pub key: String,
}

/// Generate a new mesh CA in memory.
pub fn generate_ca() -> Result<CaPem, CertError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    validity(&mut params, CA_VALID_YEARS);
    let cert = params.self_signed(&key)?;
    Ok(CaPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Issue a relay certificate for `name` signed by the CA (`ca_cert_pem` is appended to
/// the returned chain).
pub fn issue_relay_cert(
    name: &str,
    ca_cert_pem: &str,
    ca_key_pem: &str,
) -> Result<RelayPem, CertError> {
    validate_relay_name(name)?;
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, RELAY_VALID_YEARS);
    let cert = params.signed_by(&key, &issuer)?;
    let mut chain = cert.pem();
    chain.push_str(ca_cert_pem);
    Ok(RelayPem {
        chain,
        key: key.serialize_pem(),
    })
}

/// Write `contents` to `path`; with `secret`, the file is created with mode 0600.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), CertError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let io = |e| CertError::Io(path.to_owned(), e);
    let mut f = opts.open(path).map_err(io)?;
    #[cfg(unix)]
    if secret {
        // `mode` applies only when the file is created; tighten an existing one too.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    f.write_all(contents.as_bytes()).map_err(io)
}

fn read_file(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|e| CertError::Io(path.to_owned(), e))
}

/// `mesh-ca`: create the CA files; returns the paths written (certificate, key).
pub fn run_mesh_ca(args: &MeshCaArgs) -> Result<(PathBuf, PathBuf), CertError> {
    fs::create_dir_all(&args.dir).map_err(|e| CertError::Io(args.dir.clone(), e))?;
    let cert_path = args.dir.join(CA_CERT_FILE);
    let key_path = args.dir.join(CA_KEY_FILE);
    if !args.force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(CertError::Exists(p.clone()));
            }
        }
    }
    let ca = generate_ca()?;
    write_file(&key_path, &ca.key, true)?;
    write_file(&cert_path, &ca.cert, false)?;
    println!(
        "mesh CA written: {} (certificate, give to every relay) and {} (key, keep secret)\n\
         next: fastpubsub-relay mesh-cert --name <relay> --ca-dir {} --out <dir>",
        cert_path.display(),
        key_path.display(),
        args.dir.display()
    );
    Ok((cert_path, key_path))
}

/// `mesh-cert`: issue `OUT/NAME.pem` and `OUT/NAME.key`; returns the paths written.
pub fn run_mesh_cert(args: &MeshCertArgs) -> Result<(PathBuf, PathBuf), CertError> {
    validate_relay_name(&args.name)?;
    let ca_cert = read_file(&args.ca_dir.join(CA_CERT_FILE))?;
    let ca_key = read_file(&args.ca_dir.join(CA_KEY_FILE))?;
    let relay = issue_relay_cert(&args.name, &ca_cert, &ca_key)?;
    fs::create_dir_all(&args.out).map_err(|e| CertError::Io(args.out.clone(), e))?;
    let cert_path = args.out.join(format!("{}.pem", args.name));
    let key_path = args.out.join(format!("{}.key", args.name));
    write_file(&key_path, &relay.key, true)?;
    write_file(&cert_path, &relay.chain, false)?;
    println!(
        "relay certificate for {:?} written: {} and {} (key, keep secret)\n\
         run with: --name {} --mesh-cert {} --mesh-key {} --mesh-ca {}",
        args.name,
        cert_path.display(),
        key_path.display(),
        args.name,
        cert_path.display(),
        key_path.display(),
        args.ca_dir.join(CA_CERT_FILE).display()
    );
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_names() {
        for ok in ["t", "tokyo", "fra-1", "a0", &"x".repeat(32)] {
            assert!(validate_relay_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Tokyo", "a.b", "a b", "é", &"x".repeat(33)] {
            assert!(validate_relay_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_and_permissions() {
        let dir = std::env::temp_dir().join(format!("fps-certs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ca_args = MeshCaArgs {
            dir: dir.join("ca"),
            force: false,
        };
        let (ca_cert, ca_key) = run_mesh_ca(&ca_args).expect("ca");
        assert!(matches!(run_mesh_ca(&ca_args), Err(CertError::Exists(_))));
        let (cert, key) = run_mesh_cert(&MeshCertArgs {
            name: "tokyo".into(),
            ca_dir: dir.join("ca"),
            out: dir.join("relays"),
        })
        .expect("cert");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for k in [&ca_key, &key] {
                let mode = fs::metadata(k).expect("meta").permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", k.display());
            }
        }
        let chain = fs::read_to_string(&cert).expect("read");
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(chain.ends_with(&fs::read_to_string(&ca_cert).expect("read")));
        let _ = fs::remove_dir_all(&dir);
    }
}
