//! The one rustls crypto provider both sides use.

use std::sync::Arc;

/// ring, with aws-lc-rs's key exchange, preferring AES-128-GCM with SHA-256.
///
/// aws-lc-rs's X25519 costs the server about half of ring's per handshake;
/// ring's AES-GCM keys are smaller, and a connection holds four for its life;
/// AES-128/SHA-256 is as secure here and cheaper than AES-256/SHA-384. The
/// figures are in docs/BENCHMARKS.md ("Changes made for performance").
/// Our client offers X25519 first; a client preferring X25519MLKEM768 gets it.
pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
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
