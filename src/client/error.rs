//! Why the client could not do what was asked ([`ClientError`]), why a
//! connection ended ([`Disconnect`]), and what kind of handshake failure
//! happened ([`HandshakeFailure`]), classified from quinn's and rustls' codes.

use quinn::{ConnectionError, TransportErrorCode};
use rustls::AlertDescription;

use crate::protocol::{self, CloseCode, Failure, FrameError, RefuseReason, Version};
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
    #[error("{}", refused_text(.username, *.reason, .detail))]
    Refused {
        /// The name asked for.
        username: String,
        /// Machine-readable reason.
        reason: RefuseReason,
        /// The server's explanation.
        detail: String,
    },
    /// The server did not carry out a `devices` request.
    #[error("{}", device_refused_text(*.reason, .detail))]
    DeviceRefused {
        /// Machine-readable reason.
        reason: Failure,
        /// The server's explanation.
        detail: String,
    },
    /// The request needs a protocol version this connection did not negotiate.
    #[error("{what} needs protocol {needs}, and this server speaks protocol {speaks}")]
    NeedsVersion {
        /// What was asked for.
        what: &'static str,
        /// The version that has it.
        needs: Version,
        /// The connection's version.
        speaks: Version,
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
    /// The server rejected this device's certificate: it does not parse, or
    /// the handshake's signature was not made with its key (TLS alert
    /// `bad_certificate`, `decrypt_error` or `access_denied` from the server).
    CertificateRejected,
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
                // Only a client certificate is the server's to judge.
                code if code == alert(AlertDescription::BadCertificate)
                    || code == alert(AlertDescription::DecryptError)
                    || code == alert(AlertDescription::AccessDenied) =>
                {
                    HandshakeFailure::CertificateRejected
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
            HandshakeFailure::CertificateRejected => " (the server rejected this device's \
                certificate: check the files in --identity, or connect with --guest)"
                .into(),
            HandshakeFailure::Refused | HandshakeFailure::TimedOut | HandshakeFailure::Other => {
                String::new()
            }
        }
    }
}

/// A refusal in words a user can act on, with the server's own detail.
fn refused_text(username: &str, reason: RefuseReason, detail: &str) -> String {
    let what = match reason {
        RefuseReason::KeyMismatch => format!(
            "the name {username} is registered to another device's key (or this device's \
             key belongs to another account); connect with that device, or pick another name"
        ),
        RefuseReason::AccountRequired => format!(
            "this server admits registered accounts only and does not register {username}; \
             ask its operator for an account, or have this device added to yours"
        ),
        _ => return format!("the server refused {username}: {detail}"),
    };
    if detail.is_empty() {
        what
    } else {
        format!("{what} (the server says: {detail})")
    }
}

/// A failed `devices` request in words a user can act on, with the server's detail.
fn device_refused_text(reason: Failure, detail: &str) -> String {
    let what = match reason {
        Failure::NotRegistered => {
            "this connection is a guest, and guests have no devices \
             (connect with an identity, without --guest)"
        }
        Failure::TooMany => {
            "the account already has as many devices as the server allows; remove one first"
        }
        Failure::InUse => "that device's key belongs to another account",
        Failure::UnknownDevice => "this account has no device with that fingerprint",
        Failure::LastDevice => "that is the account's only device; add another before removing it",
        Failure::Invalid => {
            "not a valid device: a fingerprint is SHA256: and 43 characters, \
             a label 1 to 64 bytes"
        }
    };
    if detail.is_empty() {
        what.to_owned()
    } else {
        format!("{what} (the server says: {detail})")
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
    /// Since v2: the account signed in on another connection, or this device
    /// was removed from it (close code 5). Do not reconnect on your own.
    Replaced,
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
                } else if code == Some(CloseCode::Replaced) {
                    Disconnect::Replaced
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
            Disconnect::Replaced => write!(f, "signed in elsewhere"),
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
        for alert in [0x2a, 0x31, 0x33] {
            assert_eq!(
                HandshakeFailure::of(&closed(TransportErrorCode::crypto(alert))),
                HandshakeFailure::CertificateRejected,
                "{alert:#x}"
            );
        }
    }

    #[test]
    fn account_refusals_say_what_to_do_and_keep_the_detail() {
        let refused = |reason, detail: &str| {
            ClientError::Refused {
                username: "alice".into(),
                reason,
                detail: detail.into(),
            }
            .to_string()
        };
        assert_eq!(
            refused(RefuseReason::KeyMismatch, "registered to other keys"),
            "the name alice is registered to another device's key (or this device's key \
             belongs to another account); connect with that device, or pick another name \
             (the server says: registered to other keys)"
        );
        assert!(refused(RefuseReason::AccountRequired, "")
            .starts_with("this server admits registered accounts only"));
        assert_eq!(
            refused(RefuseReason::NameTaken, "the name alice is taken"),
            "the server refused alice: the name alice is taken"
        );
        for reason in RefuseReason::ALL {
            assert!(!refused(reason, "x").contains('\n'));
        }
    }

    #[test]
    fn every_device_failure_has_its_own_line() {
        let lines: std::collections::BTreeSet<String> = Failure::ALL
            .into_iter()
            .map(|reason| {
                let text = ClientError::DeviceRefused {
                    reason,
                    detail: String::new(),
                }
                .to_string();
                assert!(!text.contains('\n') && !text.is_empty());
                text
            })
            .collect();
        assert_eq!(lines.len(), Failure::ALL.len());
        let with_detail = ClientError::DeviceRefused {
            reason: Failure::LastDevice,
            detail: "one left".into(),
        };
        assert!(with_detail
            .to_string()
            .ends_with(" (the server says: one left)"));
    }

    #[test]
    fn replaced_is_its_own_disconnect() {
        let closed = ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: CloseCode::Replaced.var_int(),
            reason: bytes::Bytes::from_static(b"replaced"),
        });
        assert_eq!(Disconnect::from_error(&closed), Disconnect::Replaced);
        assert_eq!(Disconnect::Replaced.to_string(), "signed in elsewhere");
    }
}
