//! The client's rustls + quinn config: TLS 1.3 only, the ALPN list of
//! [`Version::SUPPORTED`], trusting only the CA certificates it is given, and
//! presenting this device's certificate when it has an identity.

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;

use super::provider::provider;
use super::{read_chain, ClientIdentity, TlsError};
use crate::protocol::Version;

/// The rustls + quinn client crypto trusting only the CA certificates in
/// `ca_file`; with `resume`, TLS sessions are resumed on reconnects; with an
/// `identity`, its certificate is sent when the server asks for one (`None`
/// is a guest: no certificate at all). Sessions are cached per config, so
/// one config (one identity) never resumes another identity's session.
pub fn client_crypto(
    ca_file: &Path,
    resume: bool,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<QuicClientConfig>, TlsError> {
    client_crypto_with(provider(), ca_file, resume, identity)
}

/// [`client_crypto`] with rustls's own default crypto provider (ring, as
/// quinn's default features choose it), whose cipher suites put
/// AES-256-GCM first: what a client that never chose a provider offers
/// (`bench --client plain`).
pub fn plain_client_crypto(
    ca_file: &Path,
    resume: bool,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<QuicClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    client_crypto_with(provider, ca_file, resume, identity)
}

fn client_crypto_with(
    provider: Arc<rustls::crypto::CryptoProvider>,
    ca_file: &Path,
    resume: bool,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<QuicClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_chain(ca_file)? {
        roots.add(cert).map_err(|e| TlsError::BadPem {
            path: ca_file.to_owned(),
            what: format!("not a usable CA certificate ({e})"),
        })?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(identity) => {
            builder.with_client_auth_cert(vec![identity.cert.clone()], identity.key.clone_key())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = Version::alpn_list();
    config.key_log = Arc::new(rustls::KeyLogFile::new());
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let quic = QuicClientConfig::try_from(config)?;
    Ok(Arc::new(quic))
}
