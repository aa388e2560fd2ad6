//! Certificates and TLS: the CA and server certificate made with rcgen (loaded
//! when present, created otherwise, keys owner-only), a device's own key and
//! self-signed client certificate, and the rustls configs both sides use, with
//! the ALPN list of [`Version::SUPPORTED`](crate::protocol::Version::SUPPORTED)
//! and `SSLKEYLOGFILE` support.
//!
//! - [`certs`]: the server's certificate files: [`CertSource`], [`ServerIdentity`],
//!   PEM reading and owner-only writing.
//! - `provider`: the one rustls crypto provider both sides use.
//! - [`server`]: the server's rustls config, its session tickets and [`TlsStats`].
//! - [`client`]: the client's rustls config.
//! - [`identity`]: this device's key and certificate ([`ClientIdentity`]),
//!   and device fingerprints of certificates and of a connection's peer.

use std::path::PathBuf;

pub mod certs;
pub mod client;
pub mod identity;
mod provider;
pub mod server;

pub use certs::{
    default_server_names, load_or_create, read_chain, CertSource, ServerIdentity, CA_CERT_FILE,
    CA_KEY_FILE, SERVER_CERT_FILE, SERVER_KEY_FILE,
};
pub use client::{client_crypto, plain_client_crypto};
pub use identity::{
    default_identity_dir, fingerprint_of_cert, peer_fingerprint, ClientIdentity,
    IDENTITY_CERT_FILE, IDENTITY_KEY_FILE,
};
pub use server::{server_crypto, server_crypto_for, SelfSignedClients, TlsStats};

/// Why certificates or TLS configuration could not be set up.
///
/// Each variant's message names what failed; the cause is its
/// [`source`](std::error::Error::source), so `{e:#}` prints each cause once.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{action} {path}")]
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
    /// A private key file that other users can read or write.
    #[error(
        "{path} is accessible by other users (mode {mode:03o}); a private key must be \
         owner-only: run chmod 600 {path}"
    )]
    KeyNotPrivate {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Neither `XDG_CONFIG_HOME` nor `HOME` says where the identity lives.
    #[error("no directory for this device's identity: set HOME, or pass --identity DIR")]
    NoIdentityDir,
    /// rcgen failed to make a certificate.
    #[error("could not generate a certificate")]
    Generate(#[from] rcgen::Error),
    /// rustls rejected the configuration.
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// quinn rejected the rustls configuration.
    #[error("QUIC TLS configuration")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
}
