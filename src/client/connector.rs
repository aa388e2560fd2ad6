//! Making connections: [`Connector`] resolves the server, loads the CA and
//! opens the UDP socket once, then handshakes as often as asked. The
//! client's QUIC transport settings live here too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{Client, ClientConfig, ClientError, HandshakeFailure, Incoming, SeenIds};
use crate::tls;

/// Makes connections to one server: the CA, TLS settings (and so TLS session
/// tickets for resumption), the identity and the UDP socket are set up once
/// and shared. Every connection it makes presents the same identity, so a
/// session resumed here is always one of that identity. The ids of messages
/// and late receipts received are kept per username across its connections
/// (see [`SeenIds`]), so one delivered again after a reconnect is dropped;
/// connections of different users share nothing on their delivery path.
#[derive(Debug, Clone)]
pub struct Connector {
    endpoint: quinn::Endpoint,
    seen: Arc<Mutex<HashMap<String, SeenIds>>>,
    addr: SocketAddr,
    server: String,
    server_name: String,
    timeouts: Timeouts,
}

/// The timeouts each [`Client`] made by a [`Connector`] keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// How long a request waits for its answer.
    pub(crate) answer: Duration,
    /// How long a close may take.
    pub(crate) close: Duration,
}

impl Connector {
    /// Resolve the server, load the CA file and open a UDP socket.
    pub async fn new(config: &ClientConfig) -> Result<Connector, ClientError> {
        let (addr, host) = resolve(&config.server).await?;
        let crypto = if config.plain_defaults {
            tls::plain_client_crypto(
                &config.ca_file,
                config.tls_resumption,
                config.identity.as_ref(),
            )?
        } else {
            tls::client_crypto(
                &config.ca_file,
                config.tls_resumption,
                config.identity.as_ref(),
            )?
        };
        let mut client_config = quinn::ClientConfig::new(crypto);
        client_config.transport_config(if config.plain_defaults {
            crate::transport::plain_client()
        } else {
            crate::transport::client(config.keep_alive, config.idle_timeout)
        });
        let local: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = crate::transport::bind_udp(local).map_err(ClientError::Socket)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| ClientError::Socket(std::io::Error::other("no async runtime")))?;
        let mut endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
                .map_err(ClientError::Socket)?;
        endpoint.set_default_client_config(client_config);
        Ok(Connector {
            endpoint,
            seen: Arc::default(),
            addr,
            server: config.server.clone(),
            server_name: config.server_name.clone().unwrap_or(host),
            timeouts: Timeouts {
                answer: config.answer_timeout,
                close: config.close_timeout,
            },
        })
    }

    /// Handshake and register as `username` on a new connection.
    pub async fn connect(&self, username: &str) -> Result<(Client, Incoming), ClientError> {
        let connection = self
            .endpoint
            .connect(self.addr, &self.server_name)
            .map_err(|source| ClientError::Connect {
                server: self.server.clone(),
                source,
            })?
            .await
            .map_err(|error| ClientError::Handshake {
                server: self.server.clone(),
                kind: HandshakeFailure::of(&error),
                error,
            })?;
        Client::register(
            connection.clone(),
            self.endpoint.clone(),
            username,
            self.timeouts,
            self.seen_ids(username),
        )
        .await
        .map_err(|error| self.handshake_failure(&connection, error))
    }

    /// The ids `username`'s connections made here have received.
    fn seen_ids(&self, username: &str) -> SeenIds {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.entry(username.to_ascii_lowercase())
            .or_default()
            .clone()
    }

    /// A Hello that failed because the server closed the connection at the
    /// transport level (a TLS alert: it rejected our certificate after our
    /// side of the handshake was done) is a handshake failure, reported as one.
    fn handshake_failure(&self, connection: &quinn::Connection, error: ClientError) -> ClientError {
        match connection.close_reason() {
            Some(close @ quinn::ConnectionError::ConnectionClosed(_)) => ClientError::Handshake {
                server: self.server.clone(),
                kind: HandshakeFailure::of(&close),
                error: close,
            },
            _ => error,
        }
    }

    /// Wait (at most `limit`) until every connection made here has finished closing.
    pub async fn wait_idle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }
}

/// Split `HOST:PORT` (or `[IPv6]:PORT`) and resolve it; returns the address and the host part.
async fn resolve(server: &str) -> Result<(SocketAddr, String), ClientError> {
    if let Ok(addr) = server.parse::<SocketAddr>() {
        return Ok((addr, addr.ip().to_string()));
    }
    let host = server
        .rsplit_once(':')
        .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        .map(|(host, _)| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .ok_or_else(|| ClientError::BadAddress(server.to_owned()))?;
    let mut addrs =
        tokio::net::lookup_host(server)
            .await
            .map_err(|source| ClientError::Resolve {
                host: host.clone(),
                source,
            })?;
    let addr = addrs.next().ok_or_else(|| ClientError::Resolve {
        host: host.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses found"),
    })?;
    Ok((addr, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_are_host_and_port() {
        let (addr, host) = resolve("127.0.0.1:4433").await.unwrap();
        assert_eq!(
            (addr.to_string().as_str(), host.as_str()),
            ("127.0.0.1:4433", "127.0.0.1")
        );
        let (addr, host) = resolve("[::1]:4433").await.unwrap();
        assert_eq!((addr.port(), host.as_str()), (4433, "::1"));
        let (addr, host) = resolve("localhost:4433").await.unwrap();
        assert!(addr.ip().is_loopback());
        assert_eq!(
            host, "localhost",
            "the certificate is checked against the name dialled"
        );
        for bad in ["localhost", "localhost:", ":4433", "localhost:99999", "a:b"] {
            assert!(
                matches!(resolve(bad).await, Err(ClientError::BadAddress(_))),
                "{bad}"
            );
        }
    }
}
