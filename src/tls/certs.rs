//! The server's certificate files: a CA and a server certificate made with
//! rcgen (loaded when present, created otherwise), or a chain the operator
//! brings; PEM reading, and private keys written owner-only (0600).

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// File name of the CA certificate clients are given.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA's private key.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the server certificate.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// File name of the server's private key.
pub const SERVER_KEY_FILE: &str = "server.key";

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
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
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

pub(crate) fn restrict_permissions(path: &Path) -> Result<(), TlsError> {
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
