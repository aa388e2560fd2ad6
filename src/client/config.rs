//! What the client is told: where and as whom to connect, and its timeouts.

use std::path::PathBuf;
use std::time::Duration;

use crate::tls::ClientIdentity;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `HOST:PORT` or `IP:PORT`.
    pub server: String,
    /// The name to register.
    pub username: String,
    /// PEM file with the CA certificate the server's chain must verify against.
    pub ca_file: PathBuf,
    /// This device's key and certificate, presented in the handshake (protocol
    /// v2 binds the name to it); `None` connects as a guest, with no certificate.
    pub identity: Option<ClientIdentity>,
    /// The name to check the certificate against, instead of the host in `server`.
    pub server_name: Option<String>,
    /// How long connecting (handshake plus Hello) may take.
    pub connect_timeout: Duration,
    /// How long one request (Hello, Send, ListUsers) may wait for the server's answer.
    pub answer_timeout: Duration,
    /// How long a close may take: waiting for our BYE to be sent, or for the
    /// server's own close after it refused us.
    pub close_timeout: Duration,
    /// Resume TLS sessions on reconnects made by the same [`Connector`](super::Connector).
    pub tls_resumption: bool,
    /// How often to send a keep-alive while the chat is quiet.
    pub keep_alive: Duration,
    /// How long without hearing from the server before the connection counts as lost.
    pub idle_timeout: Duration,
    /// Use the defaults a third-party quinn client has instead of this
    /// project's settings: quinn's transport settings and rustls's default
    /// crypto provider, AES-256-GCM first (for `bench --client plain`).
    pub plain_defaults: bool,
}

impl ClientConfig {
    /// A config with the default timeouts, as a guest (no identity).
    pub fn new(
        server: impl Into<String>,
        username: impl Into<String>,
        ca_file: impl Into<PathBuf>,
    ) -> Self {
        ClientConfig {
            server: server.into(),
            username: username.into(),
            ca_file: ca_file.into(),
            identity: None,
            server_name: None,
            connect_timeout: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(15),
            close_timeout: Duration::from_secs(2),
            tls_resumption: true,
            keep_alive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            plain_defaults: false,
        }
    }
}
