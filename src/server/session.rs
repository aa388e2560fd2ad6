//! One client connection after its Hello was accepted: its request streams
//! served concurrently, within the connection's own task, until it ends.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::{FutureExt, OptionFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, Instrument};

use super::accounts::Principal;
use super::admission::ConnectionSlot;
use super::hello::{admit, Admitted};
use super::router::{route_send, Sender};
use super::state::State;
use crate::protocol::codec::{decode_request, read_frame_bytes, slice_of, write_reply};
use crate::protocol::{
    close, CloseCode, DeviceOp, FrameError, Reply, RequestRef, Version, MAX_FRAME_BYTES,
};
use crate::transport::StreamCredit;

/// Serve one incoming connection until it ends.
///
/// Not an `async fn`: one would keep room for its arguments (the large
/// `Incoming` among them) for the connection's whole life, and an async block
/// awaiting the two phases in turn keeps room for both of them and for what
/// the first hands the second (1,784 bytes, measured). The handshake and
/// Hello phase is boxed and owns its arguments; `then` holds either that box
/// or the serving phase, never both, so an idle connection's task holds only
/// what serving it needs.
pub(crate) fn run(
    incoming: quinn::Incoming,
    slot: ConnectionSlot,
    state: Arc<State>,
    tracker: TaskTracker,
) -> impl Future<Output = ()> + Send {
    let remote = canonical(incoming.remote_address());
    let admission = {
        let state = Arc::clone(&state);
        Box::pin(async move { admit(incoming, slot, &state, remote).await })
    };
    admission
        .then(move |admitted| {
            OptionFuture::from(admitted.map(|admitted| serve(admitted, state, tracker, remote)))
        })
        .map(|_served| ())
}

/// Serve an admitted user until the connection ends. The set-up is done
/// here, at once; what is returned holds only what serving needs.
fn serve(
    admitted: Admitted,
    state: Arc<State>,
    tracker: TaskTracker,
    remote: SocketAddr,
) -> impl Future<Output = ()> + Send {
    let Admitted {
        version,
        registration,
        principal,
        _slot,
        _open,
        drain,
    } = admitted;
    // No span for the session: an enabled one costs every idle connection
    // about 0.3 KiB in the subscriber's registry and its task 40 bytes, so
    // the lines that concern one user name it themselves.
    let name = Arc::clone(&registration.mailbox().name);
    info!(user = %name, %remote, %version, "connected");
    let account = match principal {
        Principal::Member { key, .. } => Some(key),
        Principal::Guest => None,
    };
    if let (true, Some(key)) = (drain && state.mail.is_some(), account) {
        let mailbox = Arc::clone(registration.mailbox());
        let drain = super::drain::run(Arc::clone(&state), mailbox, key)
            .instrument(tracing::debug_span!("drain", user = %name));
        tracker.spawn(drain);
    }
    // A v2 guest hears of its stored messages on this connection.
    let reply_to = (account.is_none() && version >= Version::V2)
        .then(|| Arc::downgrade(registration.mailbox()));
    let session = Arc::new(Session {
        sender: Sender::new(name, account, reply_to, &state),
        mailbox: Arc::clone(registration.mailbox()),
        version,
        state,
    });
    async move {
        let (reason, pending) = serve_requests(&session).await;
        drop(registration);
        info!(user = %session.sender.name, %reason, "left");
        // Requests still in flight finish here (their deliveries and stores
        // complete, as the sender left), the name already free.
        if let Some(mut requests) = pending {
            while requests.next().await.is_some() {}
        }
        drop((_slot, _open));
    }
}

/// The requests of one connection in flight, each boxed: the set's own stub
/// node has room for one future, and a request's is 1.6 KB that every idle
/// connection would otherwise hold.
type Requests = FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>>;

/// One registered user's connection, as its requests see it.
struct Session {
    sender: Sender,
    /// The user's mailbox: its connection, and an account's device key.
    mailbox: Arc<super::mailbox::Mailbox>,
    version: Version,
    state: Arc<State>,
}

impl Session {
    /// The connection the requests come on.
    fn connection(&self) -> &quinn::Connection {
        self.mailbox.connection()
    }

    /// Who the connection is.
    fn principal(&self) -> Principal {
        match (self.sender.account, self.mailbox.device) {
            (Some(key), Some(device)) => Principal::Member { key, device },
            _ => Principal::Guest,
        }
    }
}

/// Accept request streams until the connection ends; returns why it ended,
/// and the requests still in flight.
async fn serve_requests(session: &Arc<Session>) -> (String, Option<Requests>) {
    // A connection's requests run concurrently inside its session task, not
    // as tasks of their own: no spawn per request, and no hand-over of each
    // one to the other worker thread and back (docs/BENCHMARKS.md). The set
    // is made at the first request: a connection that only listens never
    // allocates one.
    let mut pending: Option<Requests> = None;
    let mut credit = StreamCredit::new(session.state.limits.max_streams_per_connection);
    loop {
        let in_flight = pending.as_ref().map_or(0, FuturesUnordered::len);
        tokio::select! {
            stream = session.connection().accept_bi() => match stream {
                Ok((send, recv)) => {
                    let requests = pending.get_or_insert_with(FuturesUnordered::new);
                    requests.push(Box::pin(handle_request(Arc::clone(session), send, recv)));
                    credit.note_request(requests.len(), session.connection());
                }
                Err(e) => return (close::describe(&e), pending),
            },
            Some(()) = next_finished(&mut pending), if in_flight > 0 => {}
            Ok(_) = session.connection().accept_uni() => {
                CloseCode::ProtocolError
                    .close(session.connection(), "clients must not open unidirectional streams");
            }
        }
    }
}

/// The next request of `pending` to finish; `None` when there are none.
async fn next_finished<F: Future<Output = ()>>(
    pending: &mut Option<FuturesUnordered<F>>,
) -> Option<()> {
    pending.as_mut()?.next().await
}

/// Read one request, act on it, and answer on the same stream.
async fn handle_request(
    session: Arc<Session>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let state = &*session.state;
    let bytes =
        match tokio::time::timeout(state.limits.request_timeout, read_frame_bytes(&mut recv)).await
        {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(FrameError::TooLong)) => {
                debug!(user = %session.sender.name, "request over the frame limit");
                return CloseCode::ProtocolError
                    .close(session.connection(), "frame over the size limit");
            }
            // The stream or connection failed; nothing to answer.
            Ok(Err(_)) => return,
            Err(_elapsed) => {
                debug!(user = %session.sender.name, "request not finished in time");
                return CloseCode::ProtocolError.close(session.connection(), "request too slow");
            }
        };
    let reply = match decode_request(session.version, &bytes) {
        Ok(RequestRef::Send { to, body }) => {
            let body = slice_of(&bytes, body);
            let (id, status) = route_send(state, &session.sender, to, body).await;
            state.metrics.sent(status);
            Reply::Receipt { id, status }
        }
        Ok(RequestRef::ListUsers) => Reply::Users {
            names: state.presence.list(MAX_FRAME_BYTES),
        },
        Ok(RequestRef::Hello { .. }) => {
            return CloseCode::ProtocolError.close(session.connection(), "Hello sent twice");
        }
        Ok(RequestRef::Devices(op)) => return Box::pin(devices(&session, send, op)).await,
        Err(e) => {
            debug!(user = %session.sender.name, "protocol error: {e}");
            return CloseCode::ProtocolError.close(session.connection(), "malformed request");
        }
    };
    // A failed write means the client went away; it will not miss the answer.
    let _ = write_reply(&mut send, session.version, &reply).await;
}

/// Answer a `Devices` request. A connection that removed its own device is
/// closed with REPLACED once the answer is acknowledged (or after at most 1 s).
async fn devices(session: &Session, mut send: quinn::SendStream, op: DeviceOp) {
    let removes_own = matches!(
        (&op, session.principal()),
        (DeviceOp::Remove { fingerprint }, Principal::Member { device, .. })
            if fingerprint[..] == device.as_bytes()[..]
    );
    let reply = match session
        .state
        .accounts
        .devices(session.principal(), op)
        .await
    {
        Ok(Ok(devices)) => Reply::Devices { devices },
        Ok(Err((reason, detail))) => Reply::Failed { reason, detail },
        Err(e) => {
            // The protocol has no answer for a failed disk: the request fails.
            tracing::error!("accounts unavailable: {e}");
            let _ = send.reset(quinn::VarInt::from_u32(0));
            return;
        }
    };
    let removed_own = removes_own && matches!(reply, Reply::Devices { .. });
    let answered = async {
        if write_reply(&mut send, session.version, &reply)
            .await
            .is_ok()
            && removed_own
        {
            let _ = send.stopped().await;
        }
    };
    if removed_own {
        let _ = tokio::time::timeout(REPLACED_LINGER, answered).await;
        CloseCode::Replaced.close(session.connection(), "this device was removed");
    } else {
        answered.await;
    }
}

/// How long the answer to a removal of the connection's own device may wait
/// for its acknowledgement before the connection is closed.
const REPLACED_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// IPv4 peers reach the dual-stack socket as IPv4-mapped IPv6; show them as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
