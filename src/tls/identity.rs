//! Device identities: the fingerprint of a certificate's key, and reading the
//! fingerprint a peer proved in the TLS handshake.

use rustls::pki_types::CertificateDer;

use crate::protocol::Fingerprint;

/// The device fingerprint of a DER certificate: SHA-256 over its DER
/// SubjectPublicKeyInfo (the whole SEQUENCE). `None` if it does not parse.
pub fn fingerprint_of_cert(cert_der: &[u8]) -> Option<Fingerprint> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let spki = cert.tbs_certificate.subject_pki.raw;
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    Fingerprint::from_slice(digest.as_ref())
}

/// The fingerprint of the key the peer of `connection` proved in its TLS
/// handshake (or in the full handshake a resumed session continues); `None`
/// for a peer that sent no certificate.
pub fn peer_fingerprint(connection: &quinn::Connection) -> Option<Fingerprint> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    fingerprint_of_cert(chain.first()?)
}
