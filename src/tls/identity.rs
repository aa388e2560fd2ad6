//! Device identities: this device's key and self-signed certificate
//! ([`ClientIdentity`], kept in an owner-only directory), the fingerprint of a
//! certificate's key, and reading the fingerprint a peer proved in the TLS
//! handshake.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::certs::{read_chain, write_private};
use super::TlsError;
use crate::protocol::Fingerprint;

/// File name of this device's private key (PKCS#8 PEM, owner-only).
pub const IDENTITY_KEY_FILE: &str = "identity.key";
/// File name of this device's self-signed certificate (PEM).
pub const IDENTITY_CERT_FILE: &str = "identity.crt";

/// This device's identity: a P-256 key and a self-signed end-entity
/// certificate for it, presented to servers in the TLS handshake. Its
/// [`Fingerprint`] is what an account binds.
#[derive(Debug)]
pub struct ClientIdentity {
    /// The self-signed certificate.
    pub cert: CertificateDer<'static>,
    /// The private key (its `Debug` output elides the key).
    pub key: PrivateKeyDer<'static>,
    /// The fingerprint of the certificate's key.
    pub fingerprint: Fingerprint,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            fingerprint: self.fingerprint,
        }
    }
}

impl ClientIdentity {
    /// Load the identity kept in `dir`, creating what is missing: the
    /// directory (owner-only, 0700), a P-256 key (`identity.key`, written
    /// owner-only from its first byte) and a self-signed certificate for it
    /// (`identity.crt`; reissued from the key when missing or not the key's,
    /// which keeps the fingerprint). A key file that others can read is
    /// refused, as OpenSSH refuses one, with the `chmod` that fixes it.
    pub fn load_or_create(dir: &Path) -> Result<ClientIdentity, TlsError> {
        create_private_dir(dir)?;
        let key_path = dir.join(IDENTITY_KEY_FILE);
        let cert_path = dir.join(IDENTITY_CERT_FILE);
        let key = if key_path.exists() {
            check_owner_only(&key_path)?;
            let pem = fs::read_to_string(&key_path).map_err(|source| TlsError::Io {
                action: "cannot read key file",
                path: key_path.clone(),
                source,
            })?;
            KeyPair::from_pem(&pem).map_err(|e| TlsError::BadPem {
                path: key_path.clone(),
                what: format!("not a usable private key ({e})"),
            })?
        } else {
            let key = KeyPair::generate()?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            key
        };
        let wanted = spki_fingerprint(&key.subject_public_key_info());
        let existing = if cert_path.exists() {
            read_chain(&cert_path)?.into_iter().next()
        } else {
            None
        };
        let cert = match existing {
            Some(cert) if super::fingerprint_of_cert(&cert) == Some(wanted) => cert,
            _ => {
                let cert = self_signed(&key)?;
                fs::write(&cert_path, cert.pem()).map_err(|source| TlsError::Io {
                    action: "cannot write",
                    path: cert_path.clone(),
                    source,
                })?;
                cert.der().clone()
            }
        };
        Ok(ClientIdentity {
            cert,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            fingerprint: wanted,
        })
    }
}

impl ClientIdentity {
    /// A new identity (a fresh P-256 key) kept in memory only, never on
    /// disk: for load generators and tests that need many accounts.
    pub fn ephemeral() -> Result<ClientIdentity, TlsError> {
        let key = KeyPair::generate()?;
        let cert = self_signed(&key)?;
        Ok(ClientIdentity {
            cert: cert.der().clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            fingerprint: spki_fingerprint(&key.subject_public_key_info()),
        })
    }
}

/// Where this device's identity lives by default:
/// `$XDG_CONFIG_HOME/quic-chat/`, or `~/.config/quic-chat/`; `None` when
/// neither variable is set.
pub fn default_identity_dir() -> Option<PathBuf> {
    identity_dir_in(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`default_identity_dir`] for the given values of `XDG_CONFIG_HOME` and
/// `HOME`. A relative or empty `XDG_CONFIG_HOME` is ignored, as the XDG base
/// directory specification says.
pub fn identity_dir_in(
    xdg_config_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let config = xdg_config_home
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| {
            home.filter(|home| !home.is_empty())
                .map(|home| PathBuf::from(home).join(".config"))
        })?;
    Some(config.join("quic-chat"))
}

/// The device fingerprint of a DER certificate: SHA-256 over its DER
/// SubjectPublicKeyInfo (the whole SEQUENCE). `None` if it does not parse.
pub fn fingerprint_of_cert(cert_der: &[u8]) -> Option<Fingerprint> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    Some(spki_fingerprint(cert.tbs_certificate.subject_pki.raw))
}

/// The fingerprint of a DER SubjectPublicKeyInfo.
fn spki_fingerprint(spki_der: &[u8]) -> Fingerprint {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    let mut bytes = [0; Fingerprint::LEN];
    bytes.copy_from_slice(digest.as_ref());
    Fingerprint::new(bytes)
}

/// The fingerprint of the key the peer of `connection` proved in its TLS
/// handshake (or in the full handshake a resumed session continues); `None`
/// for a peer that sent no certificate.
pub fn peer_fingerprint(connection: &quinn::Connection) -> Option<Fingerprint> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    fingerprint_of_cert(chain.first()?)
}

/// A self-signed end-entity certificate for `key`: no names (nothing checks
/// them), rcgen's validity of 1975 to 4096 (nothing checks that either).
fn self_signed(key: &KeyPair) -> Result<rcgen::Certificate, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "quic-chat device");
    params.distinguished_name = name;
    Ok(params.self_signed(key)?)
}

/// Create `dir` (and missing parents) owner-only; an existing directory is left as it is.
fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| TlsError::Io {
        action: "cannot create identity directory",
        path: dir.to_owned(),
        source,
    })
}

/// Refuse a key file that its group or others may read or write.
fn check_owner_only(path: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|source| TlsError::Io {
                action: "cannot read the permissions of",
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(TlsError::KeyNotPrivate {
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_directory_follows_xdg() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            identity_dir_in(some("/x/config"), some("/home/a")),
            Some(PathBuf::from("/x/config/quic-chat"))
        );
        assert_eq!(
            identity_dir_in(None, some("/home/a")),
            Some(PathBuf::from("/home/a/.config/quic-chat"))
        );
        assert_eq!(
            identity_dir_in(some("relative"), some("/home/a")),
            Some(PathBuf::from("/home/a/.config/quic-chat")),
            "a relative XDG_CONFIG_HOME is ignored"
        );
        assert_eq!(identity_dir_in(some(""), None), None);
    }

    #[test]
    fn a_missing_certificate_is_reissued_for_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClientIdentity::load_or_create(dir.path()).unwrap();
        fs::remove_file(dir.path().join(IDENTITY_CERT_FILE)).unwrap();
        let second = ClientIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(fingerprint_of_cert(&second.cert), Some(second.fingerprint));
        // A certificate of another key is replaced too.
        let other = tempfile::tempdir().unwrap();
        ClientIdentity::load_or_create(other.path()).unwrap();
        fs::copy(
            other.path().join(IDENTITY_CERT_FILE),
            dir.path().join(IDENTITY_CERT_FILE),
        )
        .unwrap();
        let third = ClientIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(third.fingerprint, first.fingerprint);
        assert_eq!(fingerprint_of_cert(&third.cert), Some(first.fingerprint));
    }

    #[test]
    fn the_key_text_never_shows_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let identity = ClientIdentity::load_or_create(dir.path()).unwrap();
        let debug = format!("{identity:?}");
        assert!(debug.contains("elided"), "{debug}");
    }

    #[test]
    fn ephemeral_identities_are_distinct_and_carry_their_keys_fingerprint() {
        let (a, b) = (
            ClientIdentity::ephemeral().unwrap(),
            ClientIdentity::ephemeral().unwrap(),
        );
        assert_ne!(a.fingerprint, b.fingerprint);
        assert_eq!(fingerprint_of_cert(&a.cert), Some(a.fingerprint));
        assert_eq!(fingerprint_of_cert(&b.cert), Some(b.fingerprint));
    }
}
