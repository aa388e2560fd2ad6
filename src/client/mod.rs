//! The client: a typed API with no terminal I/O ([`Client`]), plus the pieces
//! of the terminal program: [`command`] parsing, [`sanitize`], the [`ui`] loop,
//! and its three looks: plain lines, [`render`] for a person at a terminal
//! (through the [`terminal`] line editor) and [`json`] for bots.

pub mod command;
pub mod json;
pub mod render;
pub mod sanitize;
pub mod terminal;
pub mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::protocol::frames::RequestRef;
use crate::protocol::{
    self, read_frame, write_frame, CloseCode, FrameError, Push, RefuseReason, Reply, Request,
    Status,
};
use crate::tls::{self, TlsError};

/// How long to wait for the server to answer before giving up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

/// Messages received but not yet taken by the application. When it is full the
/// client stops reading, which the server sees as a slow recipient.
const INCOMING_BUFFER: usize = 256;

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `HOST:PORT` or `IP:PORT`.
    pub server: String,
    /// The name to register.
    pub username: String,
    /// PEM file with the CA certificate the server's chain must verify against.
    pub ca_file: PathBuf,
    /// The name to check the certificate against, instead of the host in `server`.
    pub server_name: Option<String>,
    /// How long connecting (handshake plus Hello) may take.
    pub connect_timeout: Duration,
    /// Resume TLS sessions on reconnects made by the same [`Connector`].
    pub tls_resumption: bool,
    /// How often to send a keep-alive while the chat is quiet.
    pub keep_alive: Duration,
    /// How long without hearing from the server before the connection counts as lost.
    pub idle_timeout: Duration,
}

impl ClientConfig {
    /// A config with the default timeouts.
    pub fn new(
        server: impl Into<String>,
        username: impl Into<String>,
        ca_file: impl Into<PathBuf>,
    ) -> Self {
        ClientConfig {
            server: server.into(),
            username: username.into(),
            ca_file: ca_file.into(),
            server_name: None,
            connect_timeout: Duration::from_secs(5),
            tls_resumption: true,
            keep_alive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the client could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not `HOST:PORT`.
    #[error("'{0}' is not an address of the form HOST:PORT")]
    BadAddress(String),
    /// The host name could not be resolved.
    #[error("cannot resolve {host}")]
    Resolve {
        /// The address given.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The CA file or TLS setup failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The local UDP socket could not be opened.
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
    /// The connection could not be started.
    #[error("cannot connect to {server}")]
    Connect {
        /// The address given.
        server: String,
        /// quinn's reason.
        source: quinn::ConnectError,
    },
    /// The handshake or the connection failed.
    #[error("{0}")]
    Connection(String),
    /// The server did not answer in time.
    #[error("no answer from {0} in time (is the server running and reachable?)")]
    Timeout(String),
    /// The server refused the Hello.
    #[error("the server refused {username}: {detail}")]
    Refused {
        /// The name asked for.
        username: String,
        /// Machine-readable reason.
        reason: RefuseReason,
        /// The server's explanation.
        detail: String,
    },
    /// The server broke the protocol.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// A request stream failed.
    #[error(transparent)]
    Stream(#[from] FrameError),
    /// The connection is gone.
    #[error("{0}")]
    Disconnected(Disconnect),
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The server is shutting down (close code 1).
    ServerShutdown,
    /// The server closed us with another application code (protocol error, too slow, refused).
    ClosedByServer {
        /// The close code, when it is one of the protocol's.
        code: Option<CloseCode>,
        /// The server's reason text.
        reason: String,
    },
    /// This side closed the connection.
    Closed,
    /// The network or the peer failed (timeout, reset, transport error).
    Lost(String),
}

impl Disconnect {
    fn from_error(error: &quinn::ConnectionError) -> Self {
        match error {
            quinn::ConnectionError::ApplicationClosed(close) => {
                let code = CloseCode::from_code(close.error_code.into_inner());
                if code == Some(CloseCode::ServerShutdown) {
                    Disconnect::ServerShutdown
                } else {
                    Disconnect::ClosedByServer {
                        code,
                        reason: String::from_utf8_lossy(&close.reason).into_owned(),
                    }
                }
            }
            quinn::ConnectionError::LocallyClosed => Disconnect::Closed,
            quinn::ConnectionError::TimedOut => {
                Disconnect::Lost("connection lost: the server stopped answering".into())
            }
            other => Disconnect::Lost(format!("connection lost: {other}")),
        }
    }
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disconnect::ServerShutdown => write!(f, "the server has shut down"),
            Disconnect::ClosedByServer { code, reason } => {
                let what = match code {
                    Some(CloseCode::TooSlow) => "too far behind on messages".to_owned(),
                    Some(CloseCode::ProtocolError) => "protocol error".to_owned(),
                    Some(code) => code.to_string(),
                    None => "unknown reason".to_owned(),
                };
                if reason.is_empty() {
                    write!(f, "the server closed the connection ({what})")
                } else {
                    write!(f, "the server closed the connection ({what}: {reason})")
                }
            }
            Disconnect::Closed => write!(f, "connection closed"),
            Disconnect::Lost(why) => write!(f, "{why}"),
        }
    }
}

/// A message someone sent us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The id the sender's receipt carries.
    pub id: u64,
    /// The sender's registered name, as stamped by the server.
    pub from: String,
    /// Server clock when it accepted the message, Unix milliseconds.
    pub sent_at_ms: u64,
    /// The raw body (sanitise before showing it on a terminal).
    pub body: String,
}

/// The server's answer to one Send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The message id.
    pub id: u64,
    /// What happened to it.
    pub status: Status,
}

/// What the server said when it accepted us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Server software name and version.
    pub server: String,
    /// Users online, including us.
    pub online: u32,
}

/// Received messages, in the order the server opened their streams.
#[derive(Debug)]
pub struct Incoming {
    messages: mpsc::Receiver<Result<Message, Disconnect>>,
    ended: Option<Disconnect>,
}

impl Incoming {
    /// A message that has already arrived, if any, without waiting.
    pub fn try_next(&mut self) -> Option<Message> {
        if self.ended.is_some() {
            return None;
        }
        match self.messages.try_recv() {
            Ok(Ok(message)) => Some(message),
            Ok(Err(ended)) => {
                self.ended = Some(ended);
                None
            }
            Err(_) => None,
        }
    }

    /// The next message, or why the connection ended. Cancel-safe.
    pub async fn next(&mut self) -> Result<Message, Disconnect> {
        if let Some(ended) = &self.ended {
            return Err(ended.clone());
        }
        let next = self
            .messages
            .recv()
            .await
            .unwrap_or(Err(Disconnect::Closed));
        if let Err(ended) = &next {
            self.ended = Some(ended.clone());
        }
        next
    }
}

/// A registered connection to a chat server.
#[derive(Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    welcome: Welcome,
    username: String,
    /// Whether closing this client should also wait for its endpoint to go idle.
    owns_endpoint: bool,
}

impl Client {
    /// Connect, verify the server against the CA file, and register.
    pub async fn connect(config: &ClientConfig) -> Result<(Client, Incoming), ClientError> {
        let timeout = config.connect_timeout;
        let connect = async {
            let connector = Connector::new(config).await?;
            let (mut client, incoming) = connector.connect(&config.username).await?;
            client.owns_endpoint = true;
            Ok((client, incoming))
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout(config.server.clone()))?
    }

    async fn register(
        connection: quinn::Connection,
        endpoint: quinn::Endpoint,
        username: &str,
    ) -> Result<(Client, Incoming), ClientError> {
        let hello = Request::Hello {
            protocol: protocol::PROTOCOL_VERSION,
            username: username.to_owned(),
        };
        let reply = request(&connection, &hello).await.map_err(|e| match e {
            ClientError::Disconnected(Disconnect::ClosedByServer { reason, .. }) => {
                ClientError::Connection(format!("the server closed the connection: {reason}"))
            }
            other => other,
        })?;
        let welcome = match reply {
            Reply::Welcome { server, online } => Welcome { server, online },
            Reply::Refused { reason, detail } => {
                // The server closes with REFUSED once it sees our acknowledgement;
                // wait briefly for that rather than closing with a code of our own.
                let _ = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
                return Err(ClientError::Refused {
                    username: username.to_owned(),
                    reason,
                    detail,
                });
            }
            other => {
                return Err(protocol_violation(
                    &connection,
                    format!("unexpected answer to Hello: {other:?}"),
                ))
            }
        };
        let (tx, rx) = mpsc::channel(INCOMING_BUFFER);
        tokio::spawn(read_deliveries(connection.clone(), tx));
        let client = Client {
            endpoint,
            connection,
            welcome,
            username: username.to_owned(),
            owns_endpoint: false,
        };
        let incoming = Incoming {
            messages: rx,
            ended: None,
        };
        Ok((client, incoming))
    }

    /// What the server said when it accepted us.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The name we registered.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Send one message and wait for its receipt.
    pub async fn send(&self, to: &str, body: &str) -> Result<Receipt, ClientError> {
        let frame = RequestRef::Send { to, body };
        match request(&self.connection, &frame).await? {
            Reply::Receipt { id, status } => Ok(Receipt { id, status }),
            other => Err(protocol_violation(
                &self.connection,
                format!("unexpected answer to Send: {other:?}"),
            )),
        }
    }

    /// The names of everyone online, sorted by lowercased name.
    pub async fn list_users(&self) -> Result<Vec<String>, ClientError> {
        match request(&self.connection, &Request::ListUsers).await? {
            Reply::Users { names } => Ok(names),
            other => Err(protocol_violation(
                &self.connection,
                format!("unexpected answer to ListUsers: {other:?}"),
            )),
        }
    }

    /// Wait until the connection ends, and say why.
    pub async fn closed(&self) -> Disconnect {
        Disconnect::from_error(&self.connection.closed().await)
    }

    /// Leave with BYE and wait (briefly) until the close is sent.
    pub async fn close(self) {
        self.close_ref().await
    }

    /// [`Client::close`] for a shared client.
    pub async fn close_ref(&self) {
        self.connection.close(CloseCode::Bye.var_int(), b"bye");
        if self.owns_endpoint {
            // Make sure the BYE is on the wire before the caller exits.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        }
    }

    /// The underlying QUIC connection (for tests and tools that need transport details).
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }
}

/// Makes connections to one server: the CA, TLS settings (and so TLS session
/// tickets for resumption) and the UDP socket are set up once and shared.
#[derive(Debug, Clone)]
pub struct Connector {
    endpoint: quinn::Endpoint,
    addr: SocketAddr,
    server: String,
    server_name: String,
}

impl Connector {
    /// Resolve the server, load the CA file and open a UDP socket.
    pub async fn new(config: &ClientConfig) -> Result<Connector, ClientError> {
        let (addr, host) = resolve(&config.server).await?;
        let crypto = tls::client_crypto(&config.ca_file, config.tls_resumption)?;
        let mut client_config = quinn::ClientConfig::new(crypto);
        client_config.transport_config(client_transport(config));
        let local: SocketAddr = if addr.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = crate::net::bind_udp(local).map_err(ClientError::Socket)?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| ClientError::Socket(std::io::Error::other("no async runtime")))?;
        let mut endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
                .map_err(ClientError::Socket)?;
        endpoint.set_default_client_config(client_config);
        Ok(Connector {
            endpoint,
            addr,
            server: config.server.clone(),
            server_name: config.server_name.clone().unwrap_or(host),
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
            .map_err(|e| ClientError::Connection(explain_handshake_error(&self.server, &e)))?;
        Client::register(connection, self.endpoint.clone(), username).await
    }

    /// Wait (at most `limit`) until every connection made here has finished closing.
    pub async fn wait_idle(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }
}

/// The client's transport settings: keep-alives so an idle chat stays up, room
/// for many deliveries in flight, and prompt ACKs so `Delivered` comes quickly.
fn client_transport(config: &ClientConfig) -> Arc<quinn::TransportConfig> {
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000)));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(256u32.into())
        .keep_alive_interval(Some(config.keep_alive))
        .max_idle_timeout(Some(idle))
        // Support the ACK-frequency extension, so the server can ask us to
        // acknowledge deliveries promptly; and ask the server to acknowledge our
        // requests sparingly, since its Receipt acknowledges them anyway.
        .ack_frequency_config(Some(sparse_acks()))
        .mtu_discovery_config(Some(crate::net::mtu_discovery()));
    Arc::new(transport)
}

/// ACK-frequency settings asking the server to acknowledge up to 8 packets at once.
fn sparse_acks() -> quinn::AckFrequencyConfig {
    let mut config = quinn::AckFrequencyConfig::default();
    config.ack_eliciting_threshold(quinn::VarInt::from_u32(8));
    config
}

/// One request on its own bidirectional stream, and its reply.
async fn request<F: serde::Serialize>(
    connection: &quinn::Connection,
    frame: &F,
) -> Result<Reply, ClientError> {
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(disconnected)?;
        write_frame(&mut send, frame)
            .await
            .map_err(|e| stream_error(connection, e))?;
        read_frame::<Reply>(&mut recv)
            .await
            .map_err(|e| stream_error(connection, e))
    };
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout("the server".into()))?
}

fn disconnected(error: quinn::ConnectionError) -> ClientError {
    ClientError::Disconnected(Disconnect::from_error(&error))
}

/// A stream failure caused by the connection ending is reported as that ending.
fn stream_error(connection: &quinn::Connection, error: FrameError) -> ClientError {
    match connection.close_reason() {
        Some(reason) => disconnected(reason),
        None if error.is_protocol_violation() => protocol_violation(connection, error.to_string()),
        None => ClientError::Stream(error),
    }
}

/// The server broke the protocol: close with PROTOCOL_ERROR and say why.
fn protocol_violation(connection: &quinn::Connection, what: String) -> ClientError {
    CloseCode::ProtocolError.close(connection, "unexpected frame");
    ClientError::Protocol(what)
}

/// Delivery streams being read at once, ahead of the one handed on next.
const READS_AHEAD: usize = 64;

/// Read delivery streams concurrently (one slow stream must not hold up the
/// rest) and hand the messages to [`Incoming`] in the order the server opened
/// them. All reads are polled by this one task: no task per message.
async fn read_deliveries(
    connection: quinn::Connection,
    tx: mpsc::Sender<Result<Message, Disconnect>>,
) {
    use futures_util::stream::{FuturesOrdered, StreamExt};
    let mut reads = FuturesOrdered::new();
    let mut accepting = true;
    let ended = loop {
        tokio::select! {
            accepted = connection.accept_uni(), if accepting && reads.len() < READS_AHEAD => {
                match accepted {
                    Ok(mut recv) => {
                        reads.push_back(async move { read_frame::<Push>(&mut recv).await });
                    }
                    Err(e) => {
                        accepting = false;
                        if reads.is_empty() {
                            break Disconnect::from_error(&e);
                        }
                    }
                }
            }
            Some(read) = reads.next(), if !reads.is_empty() => {
                let message = match read {
                    Ok(Push::Deliver { id, from, sent_at_ms, body }) => Message { id, from, sent_at_ms, body },
                    Err(e) if e.is_protocol_violation() => {
                        CloseCode::ProtocolError.close(&connection, "malformed delivery");
                        break Disconnect::Lost(format!("the server sent a malformed message: {e}"));
                    }
                    // The stream failed: the connection is ending; accept says why.
                    Err(_) => continue,
                };
                if tx.send(Ok(message)).await.is_err() {
                    return; // nobody is listening any more
                }
            }
            else => {
                // Not accepting any more and every read is done.
                break connection
                    .close_reason()
                    .map(|e| Disconnect::from_error(&e))
                    .unwrap_or(Disconnect::Closed);
            }
        }
    };
    let _ = tx.send(Err(ended)).await;
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

/// A handshake error in words a user can act on.
fn explain_handshake_error(server: &str, error: &quinn::ConnectionError) -> String {
    let text = error.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        " (the server's certificate is not signed by the given CA: check --ca)"
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        " (the server's certificate does not cover this name: connect by a name it has, or use --server-name)"
    } else if text.contains("no_application_protocol") || text.contains("NoApplicationProtocol") {
        " (the server does not speak quic-chat/1)"
    } else {
        ""
    };
    match error {
        quinn::ConnectionError::TimedOut => {
            format!("no answer from {server} (is the server running and reachable?)")
        }
        _ => format!("cannot connect to {server}: {text}{hint}"),
    }
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
