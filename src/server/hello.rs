//! The start of a connection: the handshake, the Hello with its deadline, the
//! checks a Hello must pass, the claim of the name, and the answer (Welcome, or
//! Refused and a close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::accounts::{self, Admitted as Account, Principal};
use super::admission::ConnectionSlot;
use super::mailbox::Mailbox;
use super::metrics::{Metrics, OpenConnection};
use super::presence::Registration;
use super::registry::ClaimError;
use super::state::State;
use crate::protocol::codec::{decode_request, read_frame_bytes, write_reply};
use crate::protocol::{
    CloseCode, FrameError, NameKey, RefuseReason, Reply, RequestRef, UsernameError, Version,
};
use crate::tls::peer_fingerprint;

/// How long a `Refused` reply may wait for its acknowledgement before the close.
const REFUSED_LINGER: Duration = Duration::from_secs(1);

/// A registered connection, and what must live as long as it does.
pub(crate) struct Admitted {
    /// The protocol version the connection negotiated.
    pub(crate) version: Version,
    /// The held name; dropping it frees the name.
    pub(crate) registration: Registration,
    /// Who the connection is.
    pub(crate) principal: Principal,
    /// The per-IP count of this connection, given back when it is dropped.
    pub(crate) _slot: ConnectionSlot,
    /// The connection's place in the open-connections gauge.
    pub(crate) _open: OpenConnection,
    /// Whether the account's stored mail is to be drained now.
    pub(crate) drain: bool,
}

/// Why a Hello is refused, before it is said in a version's words.
#[derive(Debug)]
enum Refusal {
    /// The Hello names a protocol other than the connection's.
    WrongProtocol { negotiated: Version, asked: u32 },
    /// The name is not a valid username.
    InvalidName(UsernameError),
    /// Someone connected has the name.
    NameTaken(String),
    /// The server holds as many users as it allows.
    ServerFull,
    /// The cluster could not confirm the name now.
    ClusterUnavailable,
    /// The accounts refuse the name to this connection.
    Account {
        name: String,
        refusal: accounts::Refusal,
    },
}

impl Refusal {
    /// The wire reason and the human detail of this refusal, in `version`'s words.
    fn reply(&self, version: Version) -> (RefuseReason, String) {
        match self {
            Refusal::WrongProtocol { negotiated, asked } => (
                RefuseReason::UnsupportedProtocol,
                format!("this connection speaks protocol {negotiated}, not {asked}"),
            ),
            Refusal::InvalidName(e) => (RefuseReason::InvalidName, e.to_string()),
            Refusal::NameTaken(name) => {
                (RefuseReason::NameTaken, format!("the name {name} is taken"))
            }
            Refusal::ServerFull => (
                RefuseReason::ServerFull,
                "the server is full; try again later".to_owned(),
            ),
            Refusal::ClusterUnavailable => (
                RefuseReason::ServerFull,
                "the server cannot reach its cluster to confirm the name; try again later"
                    .to_owned(),
            ),
            Refusal::Account { name, refusal } => match refusal {
                accounts::Refusal::KeyMismatch(detail) => (RefuseReason::KeyMismatch, detail.clone()),
                // v1 has no KeyMismatch: a registered name is simply taken there.
                accounts::Refusal::Registered if version == Version::V1 => (
                    RefuseReason::NameTaken,
                    format!("the name {name} is registered to an account"),
                ),
                accounts::Refusal::Registered => (
                    RefuseReason::KeyMismatch,
                    format!("the name {name} is registered; connect with one of its devices"),
                ),
                accounts::Refusal::GuestHolds => {
                    (RefuseReason::NameTaken, format!("the name {name} is taken"))
                }
                accounts::Refusal::AccountRequired(detail) => {
                    (RefuseReason::AccountRequired, detail.clone())
                }
                accounts::Refusal::NeedsVersion2 => (
                    RefuseReason::UnsupportedProtocol,
                    "this server admits registered accounts only: protocol 2 and an account are required"
                        .to_owned(),
                ),
                accounts::Refusal::Unavailable => (
                    RefuseReason::ServerFull,
                    "the server cannot check accounts right now; try again later".to_owned(),
                ),
            },
        }
    }
}

/// Handshake, Hello, registration and Welcome. `None` when the connection
/// ended or was refused (the reason is already logged and sent).
pub(crate) async fn admit(
    incoming: quinn::Incoming,
    mut slot: ConnectionSlot,
    state: &State,
    remote: SocketAddr,
) -> Option<Admitted> {
    let handshake = incoming.await;
    slot.handshake_done();
    let connection = match handshake {
        Ok(connection) => connection,
        Err(e) => {
            state.metrics.connections.failed(&e);
            debug!(%remote, "handshake failed: {e}");
            return None;
        }
    };
    let open = state.metrics.connections.accepted();
    let metrics = &*state.metrics;
    let Some(version) = Version::of_connection(&connection) else {
        // The TLS config admits only the ALPNs of known versions.
        CloseCode::ProtocolError.close(&connection, "no protocol negotiated");
        return None;
    };
    // The Hello stream's send half lives here, not in the reading future: quinn
    // finishes a dropped send stream, and an empty answer must not reach the
    // client ahead of the close on the error paths below (timeout included).
    let mut hello_stream = None;
    let hello = tokio::time::timeout(
        state.limits.hello_timeout,
        read_hello(&connection, version, &mut hello_stream),
    )
    .await;
    let (protocol, username) = match hello {
        Ok(Ok(hello)) => hello,
        Ok(Err(HelloError::Protocol(why))) => {
            debug!(%remote, "protocol error before Hello: {why}");
            CloseCode::ProtocolError.close(&connection, why);
            return None;
        }
        Ok(Err(HelloError::Connection(e))) => {
            debug!(%remote, "connection ended before Hello: {e}");
            return None;
        }
        Err(_elapsed) => {
            debug!(%remote, "no Hello in time");
            CloseCode::ProtocolError.close(&connection, "no Hello in time");
            return None;
        }
    };
    let Some(mut send) = hello_stream else {
        CloseCode::ProtocolError.close(&connection, "Hello stream failed");
        return None;
    };

    let key = match check_hello(version, protocol, &username) {
        Ok(key) => key,
        Err(refusal) => {
            refuse(&connection, send, version, refusal, metrics).await;
            return None;
        }
    };
    // A fenced node (cut off from its cluster) admits nobody, at once.
    if presence_is_fenced(state) {
        refuse(
            &connection,
            send,
            version,
            Refusal::ClusterUnavailable,
            metrics,
        )
        .await;
        return None;
    }
    // A v1 connection's certificate is ignored: its user is a guest.
    let device = (version >= Version::V2)
        .then(|| peer_fingerprint(&connection))
        .flatten();
    let presence = &state.presence;
    let (account, name) = match state
        .accounts
        .admit(version, key, &username, device, presence)
        .await
    {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let refusal = Refusal::Account {
                name: username,
                refusal,
            };
            refuse(&connection, send, version, refusal, metrics).await;
            return None;
        }
    };
    let principal = account.principal(key);
    let member_device = match principal {
        Principal::Member { device, .. } => Some(device),
        Principal::Guest => None,
    };
    // A v2 account's session starts by draining its stored mail (v1 and
    // guests have none): Sends to it are stored behind the backlog until then.
    let drain = member_device.is_some() && version >= Version::V2 && state.mail.is_some();
    let mailbox = Arc::new(Mailbox::new(
        Arc::from(name.as_str()),
        member_device,
        connection.clone(),
        state.limits.recipient_backlog_bytes,
        drain,
    ));
    let claimed = match presence.claim(key, mailbox).await {
        Ok(claimed) => claimed,
        Err(ClaimError::Taken) => {
            refuse(
                &connection,
                send,
                version,
                Refusal::NameTaken(name),
                metrics,
            )
            .await;
            return None;
        }
        Err(ClaimError::Full) => {
            refuse(&connection, send, version, Refusal::ServerFull, metrics).await;
            return None;
        }
        Err(ClaimError::Unavailable) => {
            let refusal = Refusal::ClusterUnavailable;
            refuse(&connection, send, version, refusal, metrics).await;
            return None;
        }
    };
    if let Some(older) = &claimed.replaced {
        // The account's older connection goes first (REPLACED), then this one is welcomed.
        older.disconnect(CloseCode::Replaced, "signed in elsewhere");
    }
    if account == Account::Guest {
        // An account may have registered the name while this guest claimed it.
        if let Err(refusal) = state.accounts.still_free(key).await {
            drop(claimed.registration);
            let refusal = Refusal::Account { name, refusal };
            refuse(&connection, send, version, refusal, metrics).await;
            return None;
        }
    }
    let online = u32::try_from(claimed.online).unwrap_or(u32::MAX);
    let queued = match (&state.mail, drain) {
        (Some(mail), true) => u32::try_from(mail.waiting(key).await).unwrap_or(u32::MAX),
        _ => 0,
    };
    let server = state.server_name.clone();
    let answer = match version {
        Version::V1 => Reply::Welcome { server, online },
        Version::V2 => Reply::Session {
            server,
            online,
            account: account.account(),
            queued,
        },
    };
    if let Err(e) = write_reply(&mut send, version, &answer).await {
        debug!(%remote, user = %name, "could not send the answer to Hello: {e}");
        CloseCode::ProtocolError.close(&connection, "Hello stream failed");
        return None;
    }
    metrics.registrations.registered(version);
    Some(Admitted {
        version,
        registration: claimed.registration,
        principal,
        _slot: slot,
        _open: open,
        drain,
    })
}

enum HelloError {
    Protocol(&'static str),
    Connection(quinn::ConnectionError),
}

/// Wait for the first bidirectional stream and read the Hello on it; the
/// stream's send half goes to `send` as soon as the stream is accepted.
async fn read_hello(
    connection: &quinn::Connection,
    version: Version,
    send: &mut Option<quinn::SendStream>,
) -> Result<(u32, String), HelloError> {
    let (stream, mut recv) = tokio::select! {
        stream = connection.accept_bi() => stream.map_err(HelloError::Connection)?,
        Ok(_) = connection.accept_uni() => {
            return Err(HelloError::Protocol("clients must not open unidirectional streams"));
        }
    };
    *send = Some(stream);
    let bytes = match read_frame_bytes(&mut recv).await {
        Ok(bytes) => bytes,
        Err(FrameError::TooLong) => return Err(HelloError::Protocol("frame over the size limit")),
        Err(_) => return Err(HelloError::Protocol("Hello stream failed")),
    };
    match decode_request(version, &bytes) {
        Ok(RequestRef::Hello { protocol, username }) => Ok((protocol, username.to_owned())),
        Ok(_) => Err(HelloError::Protocol("the first request must be Hello")),
        Err(_) => Err(HelloError::Protocol("malformed Hello")),
    }
}

/// Whether this server is a node of a cluster that stopped serving.
fn presence_is_fenced(state: &State) -> bool {
    state
        .presence
        .remote()
        .is_some_and(|remote| !remote.serving())
}

/// The case-insensitive key of an acceptable Hello, or why it is refused.
fn check_hello(version: Version, protocol: u32, username: &str) -> Result<NameKey, Refusal> {
    if protocol != version.number() {
        return Err(Refusal::WrongProtocol {
            negotiated: version,
            asked: protocol,
        });
    }
    NameKey::new(username).map_err(Refusal::InvalidName)
}

/// Send `Refused` (and count it), give it a moment to be acknowledged,
/// then close with REFUSED.
async fn refuse(
    connection: &quinn::Connection,
    mut send: quinn::SendStream,
    version: Version,
    refusal: Refusal,
    metrics: &Metrics,
) {
    let (reason, detail) = refusal.reply(version);
    metrics.registrations.refused(reason);
    debug!(remote = %connection.remote_address(), ?reason, "refused: {detail}");
    let reply = Reply::Refused {
        reason,
        detail: detail.clone(),
    };
    // One deadline for writing the reply and its acknowledgement: a client that
    // grants no flow-control credit cannot hold the close back.
    let reply_acknowledged = async {
        if write_reply(&mut send, version, &reply).await.is_ok() {
            let _ = send.stopped().await;
        }
    };
    let _ = tokio::time::timeout(REFUSED_LINGER, reply_acknowledged).await;
    CloseCode::Refused.close(connection, &detail);
}
