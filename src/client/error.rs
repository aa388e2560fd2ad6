//! Why the client could not do what was asked ([`ClientError`]), why a
//! connection ended ([`Disconnect`]), and what kind of handshake failure
//! happened ([`HandshakeFailure`]), classified from quinn's and rustls' codes.

use quinn::{ConnectionError, TransportErrorCode};
use rustls::AlertDescription;

use crate::protocol::{self, CloseCode, FrameError, RefuseReason};
use crate::tls::TlsError;

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
    /// The QUIC or TLS handshake failed.
    #[error("{}", handshake_text(.server, *.kind, .error))]
    Handshake {
        /// The address given.
        server: String,
        /// What kind of failure it was, for callers to branch on.
        kind: HandshakeFailure,
        /// quinn's error, shown in the message (not a `source`: it is already in the text).
        error: ConnectionError,
    },
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

/// What kind of handshake failure a [`ClientError::Handshake`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// We rejected the server's certificate: it does not chain to the given CA
    /// (TLS alert `unknown_ca`, or `decrypt_error` for a bad signature).
    UntrustedCertificate,
    /// We rejected the server's certificate as not valid for the name dialled
    /// (TLS alert `bad_certificate`, which rustls sends for a name mismatch;
    /// also for an undecodable certificate, which no quic-chat server presents).
    WrongName,
    /// No common application protocol: the server does not speak ours, or we not its
    /// (TLS alert `no_application_protocol`, from either side).
    UnsupportedProtocol,
    /// The server refused the connection (QUIC `CONNECTION_REFUSED`), for example
    /// because of its per-address connection cap.
    Refused,
    /// Nothing answered before the idle timeout.
    TimedOut,
    /// Anything else; the error text says what.
    Other,
}

impl HandshakeFailure {
    /// Classify a failed handshake by quinn's error variant and its QUIC or TLS
    /// error code, never by message text.
    pub fn of(error: &ConnectionError) -> HandshakeFailure {
        // TLS alerts travel as QUIC CRYPTO_ERROR codes, 0x100 + the alert.
        let alert = |alert: AlertDescription| TransportErrorCode::crypto(alert.into());
        match error {
            ConnectionError::TimedOut => HandshakeFailure::TimedOut,
            // We closed the handshake ourselves: our TLS stack rejected the server.
            ConnectionError::TransportError(local) => match local.code {
                code if code == alert(AlertDescription::UnknownCA)
                    || code == alert(AlertDescription::DecryptError) =>
                {
                    HandshakeFailure::UntrustedCertificate
                }
                code if code == alert(AlertDescription::BadCertificate) => {
                    HandshakeFailure::WrongName
                }
                code if code == alert(AlertDescription::NoApplicationProtocol) => {
                    HandshakeFailure::UnsupportedProtocol
                }
                _ => HandshakeFailure::Other,
            },
            // The server closed it.
            ConnectionError::ConnectionClosed(close) => match close.error_code {
                TransportErrorCode::CONNECTION_REFUSED => HandshakeFailure::Refused,
                code if code == alert(AlertDescription::NoApplicationProtocol) => {
                    HandshakeFailure::UnsupportedProtocol
                }
                _ => HandshakeFailure::Other,
            },
            _ => HandshakeFailure::Other,
        }
    }

    /// A hint a user can act on, to follow the error text (empty if none).
    fn hint(self) -> String {
        match self {
            HandshakeFailure::UntrustedCertificate => {
                " (the server's certificate is not signed by the given CA: check --ca)".into()
            }
            HandshakeFailure::WrongName => " (the server's certificate does not cover this name: \
                connect by a name it has, or use --server-name)"
                .into(),
            HandshakeFailure::UnsupportedProtocol => format!(
                " (the server does not speak {})",
                String::from_utf8_lossy(protocol::Version::LATEST.alpn())
            ),
            HandshakeFailure::Refused | HandshakeFailure::TimedOut | HandshakeFailure::Other => {
                String::new()
            }
        }
    }
}

/// A handshake error in words a user can act on.
fn handshake_text(server: &str, kind: HandshakeFailure, error: &ConnectionError) -> String {
    match kind {
        HandshakeFailure::TimedOut => {
            format!("no answer from {server} (is the server running and reachable?)")
        }
        _ => format!("cannot connect to {server}: {error}{}", kind.hint()),
    }
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
    /// How quinn's reason for a closed connection reads to the client.
    pub(crate) fn from_error(error: &ConnectionError) -> Self {
        match error {
            ConnectionError::ApplicationClosed(close) => {
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
            ConnectionError::LocallyClosed => Disconnect::Closed,
            ConnectionError::TimedOut => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_classified_by_variant() {
        assert_eq!(
            HandshakeFailure::of(&ConnectionError::TimedOut),
            HandshakeFailure::TimedOut
        );
        assert_eq!(
            HandshakeFailure::of(&ConnectionError::Reset),
            HandshakeFailure::Other
        );
    }

    #[test]
    fn closes_by_the_server_are_classified_by_code() {
        let closed = |error_code| {
            ConnectionError::ConnectionClosed(quinn::ConnectionClose {
                error_code,
                frame_type: None,
                reason: bytes::Bytes::new(),
            })
        };
        assert_eq!(
            HandshakeFailure::of(&closed(TransportErrorCode::CONNECTION_REFUSED)),
            HandshakeFailure::Refused
        );
        assert_eq!(
            HandshakeFailure::of(&closed(TransportErrorCode::crypto(0x78))),
            HandshakeFailure::UnsupportedProtocol
        );
        // An alert about certificates from the server is about ours, not its.
        assert_eq!(
            HandshakeFailure::of(&closed(TransportErrorCode::crypto(0x30))),
            HandshakeFailure::Other
        );
    }
}
