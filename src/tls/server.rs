//! The server's rustls + quinn config: TLS 1.3 only, ALPN from
//! [`Version::SUPPORTED`] (in its order of preference), optional self-signed
//! client certificates checked by [`SelfSignedClients`], stateless session
//! tickets counted in [`TlsStats`], and no 0-RTT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::provider::provider;
use super::{ServerIdentity, TlsError};
use crate::protocol::Version;

/// The server's client-certificate policy (protocol v2, Transport): ask every
/// full handshake for a certificate, make it optional (a client without one
/// is a guest, and v1 clients send none), and check only that the client
/// holds the key of the one self-signed certificate it sends: no chain, no
/// validity dates, no names. Which account a key may use is decided at Hello,
/// not here.
#[derive(Debug)]
pub struct SelfSignedClients {
    algorithms: WebPkiSupportedAlgorithms,
}

impl SelfSignedClients {
    /// A verifier checking signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> Self {
        SelfSignedClients {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for SelfSignedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No certificate-authority names: a client sends whatever certificate it has.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    /// Parse the certificate, nothing more. A chain is refused: the contract
    /// says a client sends exactly one self-signed certificate, and only the
    /// first one's key would count, so extra certificates are a client bug
    /// better reported at once than carried (and stored in every session
    /// ticket) unread.
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        rustls::server::ParsedCertificate::try_from(end_entity)?;
        if !intermediates.is_empty() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    /// QUIC is TLS 1.3 only; this is never called.
    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    /// The proof of possession: the CertificateVerify signature must verify
    /// with the certificate's public key.
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
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

/// The rustls server config for `identity`, before quinn wraps it.
fn rustls_config(
    identity: ServerIdentity,
    stats: Arc<TlsStats>,
    versions: &[Version],
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(SelfSignedClients::new(&provider));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    // rustls picks the first of its own list that the client offers, so a
    // client offering every version gets the most preferred.
    config.alpn_protocols = versions.iter().map(|v| v.alpn().to_vec()).collect();
    // Our cipher-suite order, not the client's: rustls's own default client
    // (and others) put AES-256-GCM first, which costs the server more per
    // packet than AES-128-GCM and buys nothing here; every TLS 1.3 client
    // supports AES-128-GCM (RFC 8446 §9.1).
    config.ignore_client_order = true;
    config.key_log = Arc::new(rustls::KeyLogFile::new());
    // Stateless session tickets: returning clients resume without a full
    // handshake, and the server keeps no per-client session state. A ticket
    // carries the client's certificate, so a resumed connection has the
    // peer identity of the full handshake it continues (tested in
    // tests/it/identity.rs); nothing else shares this ticketer.
    config.ticketer = Arc::new(CountingTicketer {
        inner: rustls::crypto::ring::Ticketer::new()?,
        stats,
    });
    // One ticket per connection is enough for a client that reconnects one
    // connection at a time, and each ticket costs an encryption and ~200 bytes.
    config.send_tls13_tickets = 1;
    // No 0-RTT: early data is replayable, and a replayed Send would deliver a
    // message twice. rustls' default `max_early_data_size` is 0 and is left
    // alone here (quinn's own `ServerConfig::with_single_cert` sets u32::MAX;
    // do not build the config that way). Tested below.
    Ok(config)
}

/// The rustls + quinn server crypto for `identity`: TLS 1.3 only, the ALPN
/// list of [`Version::SUPPORTED`], optional client certificates
/// ([`SelfSignedClients`]); resumption is counted in `stats`.
pub fn server_crypto(
    identity: ServerIdentity,
    stats: Arc<TlsStats>,
) -> Result<Arc<QuicServerConfig>, TlsError> {
    server_crypto_for(identity, stats, &Version::SUPPORTED)
}

/// [`server_crypto`] offering only `versions`, in that order of preference
/// (for example a server, or a test double, that speaks v1 alone).
pub fn server_crypto_for(
    identity: ServerIdentity,
    stats: Arc<TlsStats>,
    versions: &[Version],
) -> Result<Arc<QuicServerConfig>, TlsError> {
    let quic = QuicServerConfig::try_from(rustls_config(identity, stats, versions)?)?;
    Ok(Arc::new(quic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_early_data_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let identity = super::super::load_or_create(dir.path(), &[]).unwrap();
        let config = rustls_config(identity, Arc::default(), &Version::SUPPORTED).unwrap();
        // rustls' default; quinn's `with_single_cert` would make it u32::MAX.
        assert_eq!(config.max_early_data_size, 0, "0-RTT must stay off");
        assert_eq!(config.alpn_protocols, Version::alpn_list());
    }

    /// rustls's own default client (ring) offers AES-256-GCM first; the
    /// server still picks AES-128-GCM, the cheaper of the two.
    #[test]
    fn the_servers_cipher_order_wins() {
        let dir = tempfile::tempdir().unwrap();
        let identity = super::super::load_or_create(dir.path(), &[]).unwrap();
        let server_config = rustls_config(identity, Arc::default(), &Version::SUPPORTED).unwrap();
        let default = rustls::crypto::ring::default_provider();
        assert_eq!(
            default.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
            "the test's premise: a default client prefers AES-256"
        );
        let mut roots = rustls::RootCertStore::empty();
        for cert in super::super::read_chain(&dir.path().join(super::super::CA_CERT_FILE)).unwrap()
        {
            roots.add(cert).unwrap();
        }
        let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(default))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client_config.alpn_protocols = Version::alpn_list();
        let mut client =
            rustls::ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
                .unwrap();
        let mut server = rustls::ServerConnection::new(Arc::new(server_config)).unwrap();
        // Shuttle the flights in memory until both sides are done.
        for _ in 0..10 {
            let mut flight = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut flight).unwrap();
            }
            server.read_tls(&mut flight.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut flight = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut flight).unwrap();
            }
            client.read_tls(&mut flight.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!server.is_handshaking(), "the handshake finished");
        assert_eq!(
            server.negotiated_cipher_suite().map(|suite| suite.suite()),
            Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
    }

    #[test]
    fn the_verifier_parses_and_checks_no_chain() {
        use rustls::pki_types::UnixTime;
        let verifier = SelfSignedClients::new(&provider());
        assert!(verifier.offer_client_auth() && !verifier.client_auth_mandatory());
        assert!(verifier.root_hint_subjects().is_empty());
        assert!(verifier
            .supported_verify_schemes()
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256));
        let dir = tempfile::tempdir().unwrap();
        let identity = super::super::ClientIdentity::load_or_create(dir.path()).unwrap();
        // Long expired by this date, or not yet valid: dates are not checked.
        for now in [
            UnixTime::since_unix_epoch(std::time::Duration::ZERO),
            UnixTime::now(),
        ] {
            assert!(verifier
                .verify_client_cert(&identity.cert, &[], now)
                .is_ok());
        }
        let garbage = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        assert!(verifier
            .verify_client_cert(&garbage, &[], UnixTime::now())
            .is_err());
        let chain = [identity.cert.clone()];
        assert!(
            verifier
                .verify_client_cert(&identity.cert, &chain, UnixTime::now())
                .is_err(),
            "one certificate, no chain"
        );
    }
}
