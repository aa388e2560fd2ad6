//! One client connection: the Hello with a deadline, registration, then each
//! request stream in its own task until the connection ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, Instrument};

use super::admission::ConnectionSlot;
use super::config::Limits;
use super::delivery::{deliver, Delivery};
use super::rate::TokenBucket;
use super::registry::{ClaimError, Recipient, Registration, Registry};
use crate::protocol::codec::{decode_borrowed, read_frame_bytes};
use crate::protocol::frames::RequestRef;
use crate::protocol::{
    close, read_frame, write_frame, CloseCode, FrameError, NameKey, RefuseReason, Reply, Request,
    Status, MAX_BODY_BYTES, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};

/// What every session of one server shares.
#[derive(Debug)]
pub struct Shared {
    /// Who is online.
    pub registry: Registry,
    /// The server's limits.
    pub limits: Limits,
    /// The next message id; ids are unique per server run.
    pub next_id: AtomicU64,
    /// Name and version sent in `Welcome`.
    pub server_name: String,
}

/// How long a `Refused` reply may wait for its acknowledgement before the close.
const REFUSED_LINGER: Duration = Duration::from_secs(1);

/// Serve one incoming connection until it ends.
pub async fn run(
    incoming: quinn::Incoming,
    slot: ConnectionSlot,
    shared: Arc<Shared>,
    tracker: TaskTracker,
) {
    let remote = canonical(incoming.remote_address());
    // The handshake and Hello phase is boxed: its state is large and short-lived,
    // and would otherwise stay part of every idle connection's task.
    let Some(Admitted {
        connection,
        registration,
        username,
        _slot,
    }) = Box::pin(admit(incoming, slot, &shared, remote)).await
    else {
        return;
    };
    let span = tracing::info_span!("session", user = %username);
    async {
        info!("{username} connected from {remote}");
        let session = Arc::new(Session {
            name: Arc::clone(&registration.recipient().name),
            connection,
            rate: (shared.limits.rate_limit > 0.0).then(|| {
                Mutex::new(TokenBucket::new(
                    shared.limits.rate_limit,
                    shared.limits.rate_burst,
                ))
            }),
            shared,
        });
        let reason = serve_requests(&session, &tracker).await;
        drop(registration);
        info!("{username} left: {reason}");
    }
    .instrument(span)
    .await
}

/// Handshake, Hello, registration and Welcome. `None` when the connection
/// ended or was refused (the reason is already logged and sent).
async fn admit(
    incoming: quinn::Incoming,
    mut slot: ConnectionSlot,
    shared: &Shared,
    remote: std::net::SocketAddr,
) -> Option<Admitted> {
    let handshake = incoming.await;
    slot.handshake_done();
    let connection = match handshake {
        Ok(connection) => connection,
        Err(e) => {
            debug!(%remote, "handshake failed: {e}");
            return None;
        }
    };
    // The Hello stream's send half lives here, not in the reading future: quinn
    // finishes a dropped send stream, and an empty answer must not reach the
    // client ahead of the close on the error paths below (timeout included).
    let mut hello_stream = None;
    let hello = tokio::time::timeout(
        shared.limits.hello_timeout,
        read_hello(&connection, &mut hello_stream),
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

    let key = match check_hello(protocol, &username) {
        Ok(key) => key,
        Err((reason, detail)) => {
            refuse(&connection, send, reason, detail).await;
            return None;
        }
    };
    let recipient = Recipient {
        name: Arc::from(username.as_str()),
        connection: connection.clone(),
        backlog: Semaphore::new(shared.limits.recipient_backlog_bytes),
    };
    let (registration, online) = match shared.registry.claim(key, recipient) {
        Ok(claimed) => claimed,
        Err(ClaimError::Taken) => {
            let detail = format!("the name {username} is taken");
            refuse(&connection, send, RefuseReason::NameTaken, detail).await;
            return None;
        }
        Err(ClaimError::Full) => {
            let detail = "the server is full; try again later".to_owned();
            refuse(&connection, send, RefuseReason::ServerFull, detail).await;
            return None;
        }
    };
    let welcome = Reply::Welcome {
        server: shared.server_name.clone(),
        online: u32::try_from(online).unwrap_or(u32::MAX),
    };
    if let Err(e) = write_frame(&mut send, &welcome).await {
        debug!(%remote, user = %username, "could not send Welcome: {e}");
        CloseCode::ProtocolError.close(&connection, "Hello stream failed");
        return None;
    }
    Some(Admitted {
        connection,
        registration,
        username,
        _slot: slot,
    })
}

/// A registered connection, and what must live as long as it does.
struct Admitted {
    connection: quinn::Connection,
    registration: Registration,
    username: String,
    /// The per-IP count of this connection, given back when it is dropped.
    _slot: ConnectionSlot,
}

enum HelloError {
    Protocol(&'static str),
    Connection(quinn::ConnectionError),
}

/// Wait for the first bidirectional stream and read the Hello on it; the
/// stream's send half goes to `send` as soon as the stream is accepted.
async fn read_hello(
    connection: &quinn::Connection,
    send: &mut Option<quinn::SendStream>,
) -> Result<(u32, String), HelloError> {
    let (stream, mut recv) = tokio::select! {
        stream = connection.accept_bi() => stream.map_err(HelloError::Connection)?,
        Ok(_) = connection.accept_uni() => {
            return Err(HelloError::Protocol("clients must not open unidirectional streams"));
        }
    };
    *send = Some(stream);
    match read_frame::<Request>(&mut recv).await {
        Ok(Request::Hello { protocol, username }) => Ok((protocol, username)),
        Ok(_) => Err(HelloError::Protocol("the first request must be Hello")),
        Err(FrameError::TooLong) => Err(HelloError::Protocol("frame over the size limit")),
        Err(FrameError::Codec(_)) => Err(HelloError::Protocol("malformed Hello")),
        Err(_) => Err(HelloError::Protocol("Hello stream failed")),
    }
}

/// The case-insensitive key of an acceptable Hello, or why it is refused.
fn check_hello(protocol: u32, username: &str) -> Result<NameKey, (RefuseReason, String)> {
    if protocol != PROTOCOL_VERSION {
        return Err((
            RefuseReason::UnsupportedProtocol,
            format!("this server speaks protocol {PROTOCOL_VERSION}, not {protocol}"),
        ));
    }
    NameKey::new(username).map_err(|e| (RefuseReason::InvalidName, e.to_string()))
}

/// Send `Refused`, give it a moment to be acknowledged, then close with REFUSED.
async fn refuse(
    connection: &quinn::Connection,
    mut send: quinn::SendStream,
    reason: RefuseReason,
    detail: String,
) {
    debug!(remote = %connection.remote_address(), ?reason, "refused: {detail}");
    let reply = Reply::Refused {
        reason,
        detail: detail.clone(),
    };
    // One deadline for writing the reply and its acknowledgement: a client that
    // grants no flow-control credit cannot hold the close back.
    let reply_acknowledged = async {
        if write_frame(&mut send, &reply).await.is_ok() {
            let _ = send.stopped().await;
        }
    };
    let _ = tokio::time::timeout(REFUSED_LINGER, reply_acknowledged).await;
    CloseCode::Refused.close(connection, &detail);
}

/// One registered user's connection, as its request tasks see it.
struct Session {
    name: Arc<str>,
    connection: quinn::Connection,
    rate: Option<Mutex<TokenBucket>>,
    shared: Arc<Shared>,
}

/// Accept request streams until the connection ends; returns why it ended.
async fn serve_requests(session: &Arc<Session>, tracker: &TaskTracker) -> String {
    loop {
        tokio::select! {
            stream = session.connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    tracker.spawn(handle_request(Arc::clone(session), send, recv));
                }
                Err(e) => return close::describe(&e),
            },
            Ok(_) = session.connection.accept_uni() => {
                CloseCode::ProtocolError
                    .close(&session.connection, "clients must not open unidirectional streams");
            }
        }
    }
}

/// Read one request, act on it, and answer on the same stream.
async fn handle_request(
    session: Arc<Session>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let limits = &session.shared.limits;
    let bytes =
        match tokio::time::timeout(limits.request_timeout, read_frame_bytes(&mut recv)).await {
            Ok(Ok(bytes)) => Bytes::from(bytes),
            Ok(Err(FrameError::TooLong)) => {
                debug!("request over the frame limit");
                return CloseCode::ProtocolError
                    .close(&session.connection, "frame over the size limit");
            }
            // The stream or connection failed; nothing to answer.
            Ok(Err(_)) => return,
            Err(_elapsed) => {
                debug!("request not finished in time");
                return CloseCode::ProtocolError.close(&session.connection, "request too slow");
            }
        };
    let reply = match decode_borrowed::<RequestRef>(&bytes) {
        Ok(RequestRef::Send { to, body }) => {
            let (id, status) = session.send(to, bytes.slice_ref(body.as_bytes())).await;
            Reply::Receipt { id, status }
        }
        Ok(RequestRef::ListUsers) => Reply::Users {
            names: session.shared.registry.names_fitting(MAX_FRAME_BYTES),
        },
        Ok(RequestRef::Hello { .. }) => {
            return CloseCode::ProtocolError.close(&session.connection, "Hello sent twice");
        }
        Err(e) => {
            debug!("protocol error: {e}");
            return CloseCode::ProtocolError.close(&session.connection, "malformed request");
        }
    };
    // A failed write means the client went away; it will not miss the answer.
    let _ = write_frame(&mut send, &reply).await;
}

impl Session {
    /// Handle one Send: every Send gets a fresh id and exactly one status.
    /// `body` is valid UTF-8: a slice of the decoded request.
    async fn send(&self, to: &str, body: Bytes) -> (u64, Status) {
        let shared = &*self.shared;
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        // The contract gives an over-long body TooLarge whatever else is wrong.
        if body.len() > MAX_BODY_BYTES {
            return (id, Status::TooLarge);
        }
        if let Some(rate) = &self.rate {
            let allowed = rate.lock().unwrap_or_else(|e| e.into_inner()).try_take();
            if !allowed {
                return (id, Status::RateLimited);
            }
        }
        let Ok(key) = NameKey::new(to) else {
            return (id, Status::InvalidRecipient);
        };
        let Some(recipient) = shared.registry.lookup(&key) else {
            return (id, Status::NotConnected);
        };
        let message = Delivery {
            id,
            from: &self.name,
            sent_at_ms: unix_millis(),
            body,
        };
        let status = deliver(&recipient, message, shared.limits.delivery_timeout).await;
        (id, status)
    }
}

/// IPv4 peers reach the dual-stack socket as IPv4-mapped IPv6; show them as IPv4.
fn canonical(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    std::net::SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
