//! The client library: a typed API with no terminal I/O. [`Client::connect`]
//! (or a [`Connector`], to reuse one socket and TLS session cache) handshakes
//! and registers; the [`Client`] sends and lists users; [`Incoming`] yields
//! what the server pushes as [`ClientEvent`]s until the connection ends with
//! a [`Disconnect`]. Failures are [`ClientError`]s; handshake failures carry
//! a [`HandshakeFailure`] to branch on. The terminal program is [`crate::chat`].
//!
//! Files: `config.rs` (what to connect to, timeouts), `error.rs` (the error
//! types and handshake classification), `connector.rs` (sockets, TLS and the
//! QUIC transport settings), `incoming.rs` (reading pushed frames), and here
//! the registered [`Client`] and its request helper.

mod config;
mod connector;
mod error;
mod incoming;

pub use config::ClientConfig;
pub use connector::Connector;
pub use error::{ClientError, Disconnect, HandshakeFailure};
pub use incoming::{ClientEvent, Incoming, LateReceipt, Message, SeenIds, SEEN_IDS};

use connector::Timeouts;

use crate::protocol::frames::RequestRef;
use crate::protocol::{
    read_frame, write_frame, Account, CloseCode, Device, DeviceOp, FrameError, Reply, Request,
    Status, Version,
};

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
    /// What the Hello did to the account (protocol v2's `Session`); `None`
    /// on a v1 connection, where everyone is a guest.
    pub account: Option<Account>,
    /// Stored messages that follow as deliveries (0 on a v1 connection).
    pub queued: u32,
}

/// A registered connection to a chat server.
#[derive(Debug)]
pub struct Client {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    welcome: Welcome,
    username: String,
    /// The protocol version the connection negotiated and the Hello asked for.
    version: Version,
    timeouts: Timeouts,
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

    /// Say Hello on a fresh connection and, once welcomed, start reading deliveries.
    async fn register(
        connection: quinn::Connection,
        endpoint: quinn::Endpoint,
        username: &str,
        timeouts: Timeouts,
        seen: SeenIds,
    ) -> Result<(Client, Incoming), ClientError> {
        let Some(version) = Version::of_connection(&connection) else {
            return Err(protocol_violation(
                &connection,
                "the server negotiated no protocol version we speak".to_owned(),
            ));
        };
        let hello = Request::Hello {
            protocol: version.number(),
            username: username.to_owned(),
        };
        let reply = request(&connection, &hello, version, timeouts).await?;
        let welcome = match (version, reply) {
            (Version::V1, Reply::Welcome { server, online }) => Welcome {
                server,
                online,
                account: None,
                queued: 0,
            },
            (
                Version::V2,
                Reply::Session {
                    server,
                    online,
                    account,
                    queued,
                },
            ) => Welcome {
                server,
                online,
                account: Some(account),
                queued,
            },
            (_, Reply::Refused { reason, detail }) => {
                // The server closes with REFUSED once it sees our acknowledgement;
                // wait briefly for that rather than closing with a code of our own.
                let _ = tokio::time::timeout(timeouts.close, connection.closed()).await;
                return Err(ClientError::Refused {
                    username: username.to_owned(),
                    reason,
                    detail,
                });
            }
            (version, other) => {
                return Err(protocol_violation(
                    &connection,
                    format!("unexpected answer to a protocol {version} Hello: {other:?}"),
                ))
            }
        };
        let incoming = Incoming::spawn(connection.clone(), version, seen);
        let client = Client {
            endpoint,
            connection,
            welcome,
            username: username.to_owned(),
            version,
            timeouts,
            owns_endpoint: false,
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

    /// The protocol version the connection negotiated and we registered with.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Send one message and wait for its receipt.
    pub async fn send(&self, to: &str, body: &str) -> Result<Receipt, ClientError> {
        let frame = RequestRef::Send { to, body };
        match request(&self.connection, &frame, self.version, self.timeouts).await? {
            Reply::Receipt { id, status } => Ok(Receipt { id, status }),
            other => Err(protocol_violation(
                &self.connection,
                format!("unexpected answer to Send: {other:?}"),
            )),
        }
    }

    /// The names of everyone online, sorted by lowercased name.
    pub async fn list_users(&self) -> Result<Vec<String>, ClientError> {
        match request(
            &self.connection,
            &Request::ListUsers,
            self.version,
            self.timeouts,
        )
        .await?
        {
            Reply::Users { names } => Ok(names),
            other => Err(protocol_violation(
                &self.connection,
                format!("unexpected answer to ListUsers: {other:?}"),
            )),
        }
    }

    /// List, add or remove this account's devices (protocol v2); the answer
    /// is the account's devices after the operation, in the order added. A
    /// refusal is [`ClientError::DeviceRefused`]; on a v1 connection nothing
    /// is sent and the answer is [`ClientError::NeedsVersion`].
    pub async fn devices(&self, op: DeviceOp) -> Result<Vec<Device>, ClientError> {
        let frame = Request::Devices(op);
        if frame.since() > self.version {
            return Err(ClientError::NeedsVersion {
                what: "managing devices",
                needs: frame.since(),
                speaks: self.version,
            });
        }
        match request(&self.connection, &frame, self.version, self.timeouts).await? {
            Reply::Devices { devices } => Ok(devices),
            Reply::Failed { reason, detail } => Err(ClientError::DeviceRefused { reason, detail }),
            other => Err(protocol_violation(
                &self.connection,
                format!("unexpected answer to Devices: {other:?}"),
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
            let _ = tokio::time::timeout(self.timeouts.close, self.endpoint.wait_idle()).await;
        }
    }

    /// Move this client's endpoint (and with it every connection of its
    /// [`Connector`]) to a new UDP socket, as when the network changes: QUIC
    /// migrates the connection to the new address, and the chat goes on.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> std::io::Result<()> {
        self.endpoint.rebind(socket)
    }

    /// The local address of this client's UDP socket.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.endpoint.local_addr()
    }

    /// The underlying QUIC connection (for tests and tools that need transport details).
    pub fn connection(&self) -> &quinn::Connection {
        &self.connection
    }
}

/// One request on its own bidirectional stream, and its reply; a reply that
/// the connection's `version` does not have is a protocol violation.
async fn request<F: serde::Serialize>(
    connection: &quinn::Connection,
    frame: &F,
    version: Version,
    timeouts: Timeouts,
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
    let reply = tokio::time::timeout(timeouts.answer, exchange)
        .await
        .map_err(|_| ClientError::Timeout("the server".into()))??;
    if reply.since() > version {
        return Err(protocol_violation(
            connection,
            format!("a reply that protocol {version} does not have: {reply:?}"),
        ));
    }
    Ok(reply)
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
