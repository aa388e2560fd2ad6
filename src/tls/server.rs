//! The server's rustls + quinn config: TLS 1.3 only, ALPN `quic-chat/1`,
//! stateless session tickets counted in [`TlsStats`], no client certificates
//! (yet), and no 0-RTT.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quinn::crypto::rustls::QuicServerConfig;

use super::provider::provider;
use super::{ServerIdentity, TlsError};
use crate::protocol::ALPN;

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
) -> Result<rustls::ServerConfig, TlsError> {
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
    // No 0-RTT: early data is replayable, and a replayed Send would deliver a
    // message twice. rustls' default `max_early_data_size` is 0 and is left
    // alone here (quinn's own `ServerConfig::with_single_cert` sets u32::MAX;
    // do not build the config that way). Tested below.
    Ok(config)
}

/// The rustls + quinn server crypto for `identity`: TLS 1.3 only, ALPN
/// `quic-chat/1`; resumption is counted in `stats`.
pub fn server_crypto(
    identity: ServerIdentity,
    stats: Arc<TlsStats>,
) -> Result<Arc<QuicServerConfig>, TlsError> {
    let quic = QuicServerConfig::try_from(rustls_config(identity, stats)?)?;
    Ok(Arc::new(quic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_early_data_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let identity = super::super::load_or_create(dir.path(), &[]).unwrap();
        let config = rustls_config(identity, Arc::default()).unwrap();
        // rustls' default; quinn's `with_single_cert` would make it u32::MAX.
        assert_eq!(config.max_early_data_size, 0, "0-RTT must stay off");
        assert_eq!(config.alpn_protocols, vec![ALPN.to_vec()]);
    }
}
