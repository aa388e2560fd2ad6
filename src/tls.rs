//! Certificates and TLS: the CA and server certificate made with rcgen (loaded
//! when present, created otherwise, keys owner-only), and the rustls configs
//! both sides use, with ALPN `quic-chat/1` and `SSLKEYLOGFILE` support.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::protocol::ALPN;

/// File name of the CA certificate clients are given.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA's private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the server certificate.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// File name of the server's private key.
pub const SERVER_KEY_FILE: &str = "server.key";

/// Why certificates or TLS configuration could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{path}: {what}")]
    BadPem {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rcgen failed to make a certificate.
    #[error("could not generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// quinn rejected the rustls configuration.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// Where the server's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// A CA and server certificate kept in `dir`, created on first start.
    Generated {
        /// The directory holding `ca.pem`, `ca.key`, `server.pem`, `server.key`.
        dir: PathBuf,
        /// Extra host names or IP addresses the server certificate must cover.
        names: Vec<String>,
    },
    /// A certificate chain and key the operator brings (for example from a public CA).
    Provided {
        /// PEM file with the certificate chain, leaf first.
        cert: PathBuf,
        /// PEM file with the private key.
        key: PathBuf,
    },
}

/// The certificate chain and key the server presents.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// The CA file clients should be given, when the server made its own CA.
    pub ca_path: Option<PathBuf>,
}

impl ServerIdentity {
    /// Load or create the identity `source` describes.
    pub fn obtain(source: &CertSource) -> Result<Self, TlsError> {
        match source {
            CertSource::Generated { dir, names } => load_or_create(dir, names),
            CertSource::Provided { cert, key } => Ok(ServerIdentity {
                chain: read_chain(cert)?,
                key: read_key(key)?,
                ca_path: None,
            }),
        }
    }
}

/// The names every generated server certificate covers, plus `extra`.
pub fn default_server_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = gethostname::gethostname().to_str() {
        if is_plausible_dns_name(host) {
            names.push(host.to_owned());
        }
    }
    for name in extra {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.clone());
        }
    }
    names
}

fn is_plausible_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Load the CA and server certificate from `dir`, creating what is missing. A
/// server certificate that lacks one of `extra_names` is reissued from the same
/// CA, so clients that trust the CA keep trusting the server.
pub fn load_or_create(dir: &Path, extra_names: &[String]) -> Result<ServerIdentity, TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        action: "cannot create certificate directory",
        path: dir.to_owned(),
        source,
    })?;
    let ca_cert_path = dir.join(CA_CERT_FILE);
    let ca_key_path = dir.join(CA_KEY_FILE);
    let server_cert_path = dir.join(SERVER_CERT_FILE);
    let server_key_path = dir.join(SERVER_KEY_FILE);
    let names = default_server_names(extra_names);

    let (ca_cert_pem, ca_key, ca_is_new) = if ca_cert_path.exists() && ca_key_path.exists() {
        let pem = read_text(&ca_cert_path)?;
        let key = KeyPair::from_pem(&read_text(&ca_key_path)?).map_err(|e| TlsError::BadPem {
            path: ca_key_path.clone(),
            what: format!("not a usable private key ({e})"),
        })?;
        (pem, key, false)
    } else {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = distinguished_name("quic-chat CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        write_private(&ca_key_path, key.serialize_pem().as_bytes())?;
        write_public(&ca_cert_path, cert.pem().as_bytes())?;
        (cert.pem(), key, true)
    };

    let reuse_server = !ca_is_new
        && server_cert_path.exists()
        && server_key_path.exists()
        && cert_covers(&read_text(&server_cert_path)?, &names);
    if !reuse_server {
        let issuer =
            Issuer::from_ca_cert_pem(&ca_cert_pem, &ca_key).map_err(|e| TlsError::BadPem {
                path: ca_cert_path.clone(),
                what: format!("not a usable CA certificate ({e})"),
            })?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name = distinguished_name("quic-chat server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&server_key_path, key.serialize_pem().as_bytes())?;
        write_public(&server_cert_path, cert.pem().as_bytes())?;
    }
    // Keys written by an older run or by hand are tightened too.
    restrict_permissions(&ca_key_path)?;
    restrict_permissions(&server_key_path)?;

    Ok(ServerIdentity {
        chain: read_chain(&server_cert_path)?,
        key: read_key(&server_key_path)?,
        ca_path: Some(ca_cert_path),
    })
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "quic-chat");
    dn
}

/// Whether the PEM certificate's subject alternative names include every one of `names`.
fn cert_covers(pem: &str, names: &[String]) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = pem.parse_x509() else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let general_names = &san.value.general_names;
    names.iter().all(|name| {
        let wanted_ip = name.parse::<IpAddr>().ok();
        general_names
            .iter()
            .any(|general| match (general, wanted_ip) {
                (GeneralName::DNSName(dns), None) => dns.eq_ignore_ascii_case(name),
                (GeneralName::IPAddress(octets), Some(IpAddr::V4(ip))) => *octets == ip.octets(),
                (GeneralName::IPAddress(octets), Some(IpAddr::V6(ip))) => *octets == ip.octets(),
                _ => false,
            })
    })
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        action: "cannot read",
        path: path.to_owned(),
        source,
    })
}

/// Read every certificate in a PEM file.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Io {
        action: "cannot read certificate file",
        path: path.to_owned(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: path.to_owned(),
            what: format!("not a PEM certificate file ({e})"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::BadPem {
            path: path.to_owned(),
            what: "holds no PEM certificate".into(),
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Io {
        action: "cannot read key file",
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::BadPem {
        path: path.to_owned(),
        what: format!("holds no usable PEM private key ({e})"),
    })
}

fn write_public(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    fs::write(path, contents).map_err(|source| TlsError::Io {
        action: "cannot write",
        path: path.to_owned(),
        source,
    })
}

/// Write a private key so that only its owner can read it, from the first byte on.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        action: "cannot write private key",
        path: path.to_owned(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    restrict_permissions(path)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

fn restrict_permissions(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
            TlsError::Io {
                action: "cannot restrict permissions of",
                path: path.to_owned(),
                source,
            }
        })?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The TLS provider: ring, with aws-lc-rs's key exchange, preferring
/// AES-128-GCM with SHA-256.
///
/// - Key exchange from aws-lc-rs: its X25519 (s2n-bignum) took 7-9% of the
///   server's handshake CPU where ring's took 18% (perf, connect workload).
///   Our client offers X25519; a client that prefers the post-quantum hybrid
///   X25519MLKEM768 gets it (a larger handshake, at that client's choice).
/// - Everything else from ring: its AES-GCM packet keys are smaller than
///   aws-lc-rs's, and a QUIC connection holds four of them for its whole life
///   (both directions, current and next key phase): 35.2 KiB of server memory
///   per idle connection against 36.2 KiB with aws-lc-rs throughout, and
///   handshakes were no slower (docs/BENCHMARKS.md).
/// - AES-128-GCM/SHA-256 first: as secure for this use, and cheaper than
///   AES-256/SHA-384 both per handshake (SHA-384's key schedule showed up at 9%
///   of handshake CPU) and per QUIC packet.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::kx_group;
    use rustls::crypto::ring::{cipher_suite, default_provider};
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::SECP384R1,
            kx_group::X25519MLKEM768,
        ],
        ..default_provider()
    })
}

/// TLS counters of a running server.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Session tickets that returning clients presented and the server could
    /// decrypt: resumption attempts it can honour.
    pub tickets_accepted: AtomicU64,
}

/// The server's ticketer, counting the tickets it takes back.
#[derive(Debug)]
struct CountingTicketer {
    inner: Arc<dyn rustls::server::ProducesTickets>,
    stats: Arc<TlsStats>,
}

impl rustls::server::ProducesTickets for CountingTicketer {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let plain = self.inner.decrypt(cipher);
        if plain.is_some() {
            self.stats.tickets_accepted.fetch_add(1, Ordering::Relaxed);
        }
        plain
    }
}

/// The rustls + quinn server crypto for `identity`: TLS 1.3 only, ALPN
/// `quic-chat/1`; resumption is counted in `stats`.
pub fn server_crypto(
    identity: ServerIdentity,
    stats: Arc<TlsStats>,
) -> Result<Arc<QuicServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.key_log = Arc::new(rustls::KeyLogFile::new());
    // Stateless session tickets: returning clients resume without a full
    // handshake, and the server keeps no per-client session state.
    config.ticketer = Arc::new(CountingTicketer {
        inner: rustls::crypto::ring::Ticketer::new()?,
        stats,
    });
    // One ticket per connection is enough for a client that reconnects one
    // connection at a time, and each ticket costs an encryption and ~200 bytes.
    config.send_tls13_tickets = 1;
    let quic = QuicServerConfig::try_from(config).map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(Arc::new(quic))
}

/// The rustls + quinn client crypto trusting only the CA certificates in
/// `ca_file`; with `resume`, TLS sessions are resumed on reconnects.
pub fn client_crypto(ca_file: &Path, resume: bool) -> Result<Arc<QuicClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_chain(ca_file)? {
        roots.add(cert).map_err(|e| TlsError::BadPem {
            path: ca_file.to_owned(),
            what: format!("not a usable CA certificate ({e})"),
        })?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.key_log = Arc::new(rustls::KeyLogFile::new());
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let quic = QuicClientConfig::try_from(config).map_err(|e| TlsError::Quic(e.to_string()))?;
    Ok(Arc::new(quic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses_and_reissues_for_new_names() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), &[]).unwrap();
        let ca_before = fs::read(dir.path().join(CA_CERT_FILE)).unwrap();
        #[cfg(unix)]
        for key in [CA_KEY_FILE, SERVER_KEY_FILE] {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }

        let second = load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(
            first.chain, second.chain,
            "an existing server cert is reused"
        );

        let third = load_or_create(dir.path(), &["chat.example.org".into()]).unwrap();
        assert_ne!(
            second.chain, third.chain,
            "a missing name reissues the cert"
        );
        assert_eq!(ca_before, fs::read(dir.path().join(CA_CERT_FILE)).unwrap());
        let pem = read_text(&dir.path().join(SERVER_CERT_FILE)).unwrap();
        assert!(cert_covers(
            &pem,
            &["chat.example.org".into(), "::1".into()]
        ));
        assert!(!cert_covers(&pem, &["other.example.org".into()]));
    }
}
