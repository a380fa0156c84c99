//! The WebTransport edge's certificate: from files (`--wt-cert`/`--wt-key`, e.g. one that
//! chains to a public CA, which the SDK needs without `FASTPUBSUB_WT_INSECURE`), or
//! generated: ECDSA P-256, valid 13 days and 1 hour (browsers accept a self-signed
//! certificate through `serverCertificateHashes` only when it is ECDSA and valid for at most
//! 14 days), replaced every [`ROTATE_AFTER`]. Its SHA-256 is printed at start and served at
//! `GET /v1/wt-cert-hash` ([`CertRest`]).

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn_proto::crypto::rustls::QuicServerConfig;
use quinn_proto::{IdleTimeout, ServerConfig, TransportConfig, VarInt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::rest::{HttpRequest, HttpResponse, RestHandler};

/// Validity of a generated certificate, from one hour before its creation (clock skew).
pub const GENERATED_VALIDITY: Duration = Duration::from_secs(13 * 86_400);
/// A generated certificate is replaced this long after its creation, so the one in use
/// always has a week left.
pub const ROTATE_AFTER: Duration = Duration::from_secs(6 * 86_400);
/// The longest validity browsers accept with `serverCertificateHashes`.
pub const BROWSER_MAX_VALIDITY: Duration = Duration::from_secs(14 * 86_400);
/// QUIC keep-alive: the SDK sends none, and both sides' idle timeout is 30 s.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Idle timeout of client sessions.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A certificate and key for the WebTransport listener.
#[derive(Debug)]
pub struct WtCert {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf (DER).
    pub sha256: [u8; 32],
    /// Generated here (and so rotated), or loaded from files.
    pub generated: bool,
    /// Unix seconds: when it was made (generated) or loaded.
    pub created_unix: u64,
    /// Unix seconds: end of validity (generated certificates only; 0 when unknown).
    pub not_after_unix: u64,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl WtCert {
    /// Generates a self-signed ECDSA P-256 certificate for `names` (DNS names or IP
    /// addresses), valid from one hour before `now` for [`GENERATED_VALIDITY`].
    pub fn generate(names: &[String], now: SystemTime) -> Result<Self, String> {
        let names = if names.is_empty() {
            vec!["localhost".to_owned()]
        } else {
            names.to_vec()
        };
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot generate a WebTransport key: {e}"))?;
        let mut params = rcgen::CertificateParams::new(names)
            .map_err(|e| format!("bad name for the WebTransport certificate: {e}"))?;
        let start = unix(now).saturating_sub(3600);
        let end = unix(now) + GENERATED_VALIDITY.as_secs();
        let at = |s: u64| {
            time::OffsetDateTime::from_unix_timestamp(i64::try_from(s).unwrap_or(i64::MAX))
                .map_err(|e| format!("bad certificate date: {e}"))
        };
        params.not_before = at(start)?;
        params.not_after = at(end)?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| format!("cannot sign the WebTransport certificate: {e}"))?;
        let der = cert.der().clone();
        Ok(WtCert {
            sha256: sha256(&der),
            chain: vec![der],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            generated: true,
            created_unix: unix(now),
            not_after_unix: end,
        })
    }

    /// Loads a PEM chain (leaf first) and key.
    pub fn load(cert: &Path, key: &Path, now: SystemTime) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("cannot read --wt-cert {}: {e}", cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad PEM in --wt-cert {}: {e}", cert.display()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| format!("no CERTIFICATE block in --wt-cert {}", cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            format!(
                "cannot read a private key from --wt-key {}: {e}",
                key.display()
            )
        })?;
        Ok(WtCert {
            sha256: sha256(leaf),
            chain,
            key,
            generated: false,
            created_unix: unix(now),
            not_after_unix: 0,
        })
    }

    /// Is a generated certificate due for replacement at `now`?
    pub fn due(&self, now: SystemTime) -> bool {
        self.generated && unix(now) >= self.created_unix + ROTATE_AFTER.as_secs()
    }

    /// The QUIC server configuration: TLS 1.3, ALPN `h3`, keep-alive, limits on streams.
    pub fn server_config(&self) -> Result<ServerConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| format!("the WebTransport certificate and key do not match: {e}"))?;
        tls.alpn_protocols = vec![b"h3".to_vec()];
        tls.max_early_data_size = 0;
        let quic = QuicServerConfig::try_from(tls).map_err(|e| format!("QUIC TLS setup: {e}"))?;
        let mut cfg = ServerConfig::with_crypto(Arc::new(quic));
        cfg.transport_config(transport());
        // Clients keep their session when their address changes (NAT rebinding, Wi-Fi to
        // mobile): QUIC path validation does the rest.
        cfg.migration(true);
        Ok(cfg)
    }

    /// `GET /v1/wt-cert-hash` body.
    pub fn hash_json(&self) -> String {
        serde_json::json!({
            "algorithm": "sha-256",
            "hex": hex(&self.sha256),
            "value": self.sha256.to_vec(),
            "generated": self.generated,
            "not_after_unix": self.not_after_unix,
        })
        .to_string()
    }
}

/// Bytes a client may send on one stream before the relay reads them: two full LLPS frames
/// on its control stream (quinn's default is 1.25 MB per stream).
pub const STREAM_RECEIVE_WINDOW: u32 = 2 * (65_536 + 5);
/// Bytes a client may send on all its streams together before the relay reads them
/// (quinn's default: unlimited, so up to the stream window on every stream).
pub const RECEIVE_WINDOW: u32 = 256 * 1024;
/// Bytes of stream data written to QUIC and not yet acknowledged, per session (quinn's
/// default is 10 MB): beyond it the session's broker queues hold deliveries, within the
/// connection budget, and a client that does not keep up is a slow consumer. At 100 ms RTT
/// it allows about 10 MB/s to one session.
pub const SEND_WINDOW: u64 = 1024 * 1024;
/// Bytes of HTTP datagrams QUIC holds for sending, per session; beyond it datagrams are
/// dropped and counted (`Stats::dropped_wt_datagram_buffer`).
pub const DATAGRAM_SEND_BUFFER: usize = 64 * 1024;
/// Bytes of received datagrams kept (clients send none the relay uses).
pub const DATAGRAM_RECEIVE_BUFFER: usize = 16 * 1024;

/// Transport limits of client sessions on the relay: the client opens its HTTP/3 control and
/// QPACK streams (uni) and the CONNECT and LLPS control stream (bidi); nothing else. The
/// windows and buffers bound what QUIC holds for one session beyond the broker's budget (see
/// docs/webtransport.md, "Memory per session").
pub fn transport() -> Arc<TransportConfig> {
    let mut t = base_transport();
    t.stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(RECEIVE_WINDOW))
        .send_window(SEND_WINDOW)
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    Arc::new(t)
}

/// Transport settings of our own client (`wt::client`): the relay's stream limits, idle
/// timeout and keep-alive, with quinn's default windows, so a client that reads in bursts
/// (the CLI, tests) does not hold the relay's deliveries back in the relay's queues.
pub fn client_transport() -> Arc<TransportConfig> {
    Arc::new(base_transport())
}

fn base_transport() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.max_concurrent_uni_streams(VarInt::from_u32(8))
        .max_concurrent_bidi_streams(VarInt::from_u32(4))
        .max_idle_timeout(IdleTimeout::try_from(IDLE_TIMEOUT).ok())
        .keep_alive_interval(Some(KEEP_ALIVE))
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BUFFER));
    t
}

/// The certificate hash as served, shared between the endpoint (which rotates) and REST.
pub type SharedHash = Rc<RefCell<String>>;

/// Serves `GET /v1/wt-cert-hash` (CORS open: a page on any origin needs it for
/// `serverCertificateHashes`).
pub struct CertRest {
    hash: SharedHash,
}

impl CertRest {
    /// Routes over `hash`.
    pub fn new(hash: SharedHash) -> Self {
        CertRest { hash }
    }
}

impl RestHandler for CertRest {
    fn handle(&self, req: &HttpRequest, _now: SystemTime) -> Option<HttpResponse> {
        if req.path != "/v1/wt-cert-hash" {
            return None;
        }
        if req.method != "GET" {
            return Some(HttpResponse::text(
                405,
                "use GET /v1/wt-cert-hash".to_owned(),
            ));
        }
        let mut r = HttpResponse::json(200, self.hash.borrow().clone());
        r.headers
            .push(("Access-Control-Allow-Origin", "*".to_owned()));
        r.headers.push(("Cache-Control", "no-store".to_owned()));
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_fits_browsers_and_rotates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let c = WtCert::generate(&["localhost".into(), "127.0.0.1".into()], now).unwrap();
        assert!(c.generated);
        let ee = webpki::EndEntityCert::try_from(&c.chain[0]).unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        assert!(ee.verify_is_valid_for_subject_name(&name).is_ok());
        // ECDSA P-256 SPKI OID and total validity ≤ 14 days.
        let der = c.chain[0].as_ref();
        let p256 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(der.windows(p256.len()).any(|w| w == p256));
        assert!(c.not_after_unix - (c.created_unix - 3600) <= BROWSER_MAX_VALIDITY.as_secs());
        assert_eq!(c.sha256, sha256(der));
        assert!(!c.due(now + Duration::from_secs(5 * 86_400)));
        assert!(c.due(now + ROTATE_AFTER));
        assert!(c.server_config().is_ok());
        let j: serde_json::Value = serde_json::from_str(&c.hash_json()).unwrap();
        assert_eq!(j["hex"].as_str().unwrap().len(), 64);
        assert_eq!(j["value"].as_array().unwrap().len(), 32);
    }
}
