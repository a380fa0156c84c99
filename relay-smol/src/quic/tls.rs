//! Mutual TLS for mesh links: rustls (ring provider) configured for the mesh CA, wrapped
//! into quinn-proto client and server configurations.
//!
//! - The server side requires a client certificate chaining to the mesh CA
//!   (`WebPkiClientVerifier`); a peer without one fails the handshake.
//! - The client side verifies the server against the mesh CA and the peer's relay name.
//! - Both sides offer only TLS 1.3 and the mesh's ALPN identifiers, [`MESH_ALPN_BATCH`]
//!   first, then [`MESH_ALPN`]: links between relays that read message batches carry them,
//!   a relay that does not gets one message per stream.
//! - [`cert_is_valid_for`] checks that a peer's (already verified) certificate names the
//!   relay it claims to be, so a relay cannot impersonate another one in its `Hello`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{ClientConfig, IdleTimeout, ServerConfig, TransportConfig, VarInt};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::certs::CertError;

/// The mesh's ALPN protocol identifier: one message per unidirectional stream.
pub const MESH_ALPN: &[u8] = b"fastpubsub-mesh/1";
/// The same protocol, and message streams may carry batches (`quic::framing`).
pub const MESH_ALPN_BATCH: &[u8] = b"fastpubsub-mesh/2";

/// ALPN identifiers offered and accepted, most preferred first.
fn alpn() -> Vec<Vec<u8>> {
    vec![MESH_ALPN_BATCH.to_vec(), MESH_ALPN.to_vec()]
}

/// Maximum concurrent unidirectional streams a peer may open (one per in-flight data
/// message).
pub const MAX_UNI_STREAMS: u32 = 256;
/// A link with no packet at all for this long is closed by QUIC itself; the mesh's own
/// probing declares it down much earlier.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC keep-alive, so NAT bindings and idle timers stay fresh even without probes.
pub const KEEP_ALIVE: Duration = Duration::from_secs(2);

/// Everything a relay needs to speak on the mesh: its chain and key, and the CA.
#[derive(Debug)]
pub struct MeshIdentity {
    /// The relay certificate, followed by any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The relay private key.
    pub key: PrivateKeyDer<'static>,
    /// The mesh CA certificate(s) trusted for peers.
    pub roots: Vec<CertificateDer<'static>>,
}

impl Clone for MeshIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
        }
    }
}

fn pem_err(path: &Path, what: &str, e: impl std::fmt::Display) -> CertError {
    CertError::Pem(path.to_owned(), format!("{what}: {e}"))
}

impl MeshIdentity {
    /// Load PEM files: `cert` (relay chain), `key` (its private key), `ca` (mesh CA).
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, CertError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_err(cert, "cannot read certificates", e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(cert, "bad certificate PEM", e))?;
        if chain.is_empty() {
            return Err(pem_err(
                cert,
                "no certificate",
                "the file holds no CERTIFICATE block",
            ));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| pem_err(key, "cannot read private key", e))?;
        let roots = CertificateDer::pem_file_iter(ca)
            .map_err(|e| pem_err(ca, "cannot read CA certificate", e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(ca, "bad CA certificate PEM", e))?;
        if roots.is_empty() {
            return Err(pem_err(
                ca,
                "no CA certificate",
                "the file holds no CERTIFICATE block",
            ));
        }
        Ok(Self {
            chain,
            key: key_der,
            roots,
        })
    }

    /// Build from PEM text held in memory (tests and tools).
    pub fn from_pem(chain: &str, key: &str, ca: &str) -> Result<Self, CertError> {
        let p = Path::new("<memory>");
        let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(p, "bad certificate PEM", e))?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| pem_err(p, "bad key PEM", e))?;
        let roots = CertificateDer::pem_slice_iter(ca.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(p, "bad CA PEM", e))?;
        if chain.is_empty() || roots.is_empty() {
            return Err(pem_err(p, "empty", "no CERTIFICATE block"));
        }
        Ok(Self { chain, key, roots })
    }
}

/// Why TLS configuration could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The CA certificate was rejected as a trust anchor.
    BadCa(String),
    /// The relay certificate or key was rejected.
    BadIdentity(String),
}

impl std::fmt::Display for TlsConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadCa(e) => write!(f, "mesh CA certificate unusable: {e}"),
            Self::BadIdentity(e) => write!(f, "relay certificate/key unusable: {e}"),
        }
    }
}

impl std::error::Error for TlsConfigError {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(id: &MeshIdentity) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    for c in &id.roots {
        store
            .add(c.clone())
            .map_err(|e| TlsConfigError::BadCa(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

fn transport() -> Arc<TransportConfig> {
    let mut t = TransportConfig::default();
    t.max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .max_concurrent_bidi_streams(VarInt::from_u32(2))
        .max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok())
        .keep_alive_interval(Some(KEEP_ALIVE))
        .initial_rtt(Duration::from_millis(100))
        .datagram_receive_buffer_size(Some(64 * 1024))
        .datagram_send_buffer_size(64 * 1024);
    Arc::new(t)
}

/// The QUIC server configuration: requires a client certificate from the mesh CA.
pub fn server_config(id: &MeshIdentity) -> Result<ServerConfig, TlsConfigError> {
    server_config_alpn(id, alpn())
}

/// Configurations of a relay that speaks only [`MESH_ALPN`] (tests of the fallback).
#[cfg(test)]
pub(crate) fn configs_without_batches(
    id: &MeshIdentity,
) -> Result<(ServerConfig, ClientConfig), TlsConfigError> {
    let v1 = vec![MESH_ALPN.to_vec()];
    Ok((
        server_config_alpn(id, v1.clone())?,
        client_config_alpn(id, v1)?,
    ))
}

fn server_config_alpn(
    id: &MeshIdentity,
    alpn: Vec<Vec<u8>>,
) -> Result<ServerConfig, TlsConfigError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(id)?, provider())
        .build()
        .map_err(|e| TlsConfigError::BadCa(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsConfigError::BadIdentity(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TlsConfigError::BadIdentity(e.to_string()))?;
    tls.alpn_protocols = alpn;
    let quic =
        QuicServerConfig::try_from(tls).map_err(|e| TlsConfigError::BadIdentity(e.to_string()))?;
    let mut cfg = ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// The QUIC client configuration: presents our certificate, trusts only the mesh CA.
pub fn client_config(id: &MeshIdentity) -> Result<ClientConfig, TlsConfigError> {
    client_config_alpn(id, alpn())
}

fn client_config_alpn(
    id: &MeshIdentity,
    alpn: Vec<Vec<u8>>,
) -> Result<ClientConfig, TlsConfigError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsConfigError::BadIdentity(e.to_string()))?
        .with_root_certificates(roots(id)?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| TlsConfigError::BadIdentity(e.to_string()))?;
    tls.alpn_protocols = alpn;
    let quic =
        QuicClientConfig::try_from(tls).map_err(|e| TlsConfigError::BadIdentity(e.to_string()))?;
    let mut cfg = ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// True when `cert` (a leaf the handshake already verified against the mesh CA) is valid
/// for relay name `name`.
pub fn cert_is_valid_for(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(server_name) = ServerName::try_from(name) else {
        return false;
    };
    match webpki::EndEntityCert::try_from(cert) {
        Ok(ee) => ee.verify_is_valid_for_subject_name(&server_name).is_ok(),
        Err(_) => false,
    }
}
