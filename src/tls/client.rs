//! The client's rustls + quinn config: TLS 1.3 only, ALPN `quic-chat/1`,
//! trusting only the CA certificates it is given.

use std::path::Path;
use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;

use super::provider::provider;
use super::{read_chain, TlsError};
use crate::protocol::ALPN;

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
    let quic = QuicClientConfig::try_from(config)?;
    Ok(Arc::new(quic))
}
