//! The line-oriented chat loop, generic over its input and output so tests
//! (and scripts over pipes) drive it exactly as a person at a terminal would.
//! What each event looks like is the [`Look`]'s business.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::command::{resolve_device, Command, DevicesCommand};
use super::event::Event;
use super::look::Look;
use super::names::OnlineNames;
use crate::client::{Client, ClientError, ClientEvent, Connector, Disconnect, Incoming, Receipt};
use crate::protocol::RefuseReason;
use crate::protocol::{Device, DeviceOp, Status};

/// How often the list of online names (for completion) is refreshed.
const NAMES_REFRESH: Duration = Duration::from_secs(60);

/// Requests (sends, user lists) in flight at once before input waits.
const MAX_PENDING: usize = 256;

/// Queued sends remembered for their late receipts; the oldest is forgotten
/// first (its late receipt then shows by id).
const QUEUED_REMEMBERED: usize = 1024;

/// Characters of a queued message's body shown again with its late receipt.
const PREVIEW_CHARS: usize = 40;

/// The recipient and body preview of each send answered `Queued`, by id, so
/// its late receipt can say which message it is about. Bounded.
#[derive(Debug, Default)]
struct QueuedSends {
    sent: std::collections::HashMap<u64, (String, String)>,
    order: std::collections::VecDeque<u64>,
}

impl QueuedSends {
    fn remember(&mut self, id: u64, to: &str, body: &str) {
        let mut preview: String = body.chars().take(PREVIEW_CHARS).collect();
        if body.chars().nth(PREVIEW_CHARS).is_some() {
            preview.push('…');
        }
        if self.sent.insert(id, (to.to_owned(), preview)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > QUEUED_REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.sent.remove(&oldest);
            }
        }
    }

    /// The send `id` was, forgotten now that its outcome is known (its id
    /// stays in `order` until it ages out, which keeps the bound).
    fn take(&mut self, id: u64) -> Option<(String, String)> {
        self.sent.remove(&id)
    }
}

/// How the chat session ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The user typed EXIT, input ended, or the session was told to shut down.
    Left,
    /// The server shut down.
    ServerShutdown,
    /// The account signed in elsewhere, or this device was removed (close
    /// code 5); the chat shows so and does not reconnect.
    Replaced,
}

/// How the chat session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The connection ended for a reason other than shutdown or our EXIT.
    #[error("{0}")]
    Disconnected(Disconnect),
    /// Output could not be written (for example, a closed pipe).
    #[error("cannot write output")]
    Output(#[from] std::io::Error),
}

/// How the loop presents itself: the look, and the names to keep up to date
/// for completion (`None` asks the server for nothing it was not told to).
#[derive(Debug, Clone)]
pub struct Frontend {
    /// How events look and input is read.
    pub look: Look,
    /// Online names to maintain, for a completer.
    pub names: Option<OnlineNames>,
}

impl Frontend {
    /// The plain line client: no extra requests, byte-for-byte the old output.
    pub fn plain() -> Self {
        Frontend {
            look: Look::Plain,
            names: None,
        }
    }
}

/// A request answered while the loop went on.
enum Answer {
    Sent {
        to: String,
        body: String,
        result: Result<Receipt, ClientError>,
    },
    Users {
        shown: bool,
        result: Result<Vec<String>, ClientError>,
    },
    /// The account's devices after a `devices` command, or why not.
    Devices(Result<Vec<Device>, String>),
}

/// Run the chat: show the welcome, then treat each input line as a command and
/// show each received event, until EXIT, end of input, `shutdown` (which
/// leaves as EXIT does), or the connection ends.
pub async fn run_session<W: Write>(
    client: Client,
    incoming: Incoming,
    lines: mpsc::Receiver<String>,
    out: &mut W,
    frontend: &Frontend,
    shutdown: CancellationToken,
) -> Result<Outcome, SessionError> {
    session(client, incoming, None, lines, out, frontend, shutdown).await
}

/// [`run_session`], except that when the connection is lost (not closed by
/// the server, by us, or as replaced) the chat says so and reconnects through
/// `connector` (which the first connection came from, so received ids are
/// still known and repeats dropped) with backoff, until it is back or
/// refused. Sends typed meanwhile are refused with a line each.
pub async fn run_session_reconnecting<W: Write>(
    connector: Connector,
    client: Client,
    incoming: Incoming,
    lines: mpsc::Receiver<String>,
    out: &mut W,
    frontend: &Frontend,
    shutdown: CancellationToken,
) -> Result<Outcome, SessionError> {
    session(
        client,
        incoming,
        Some(connector),
        lines,
        out,
        frontend,
        shutdown,
    )
    .await
}

/// The first wait before reconnecting, and the longest.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long one reconnection attempt may take.
const RECONNECT_ATTEMPT: Duration = Duration::from_secs(10);

/// A small xorshift64 generator for backoff jitter: no global state, seeded
/// from the clock (jitter needs to differ between clients, not be secret).
struct Jitter(u64);

impl Jitter {
    fn from_clock() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Jitter(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// `base` plus up to half of it again, at most [`BACKOFF_MAX`].
    fn spread(&mut self, base: Duration) -> Duration {
        let half = base.as_millis() as u64 / 2;
        let extra = if half == 0 {
            0
        } else {
            self.next() % (half + 1)
        };
        (base + Duration::from_millis(extra)).min(BACKOFF_MAX)
    }
}

/// The waits before each reconnection attempt: 1 s doubling to 30 s, jittered.
fn backoff(attempt: u32, jitter: &mut Jitter) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.min(5))
        .min(BACKOFF_MAX);
    jitter.spread(base)
}

/// Whether a failed reconnection attempt is worth another: everything but a
/// refusal (a name still held by our lost connection is worth waiting for).
fn worth_retrying(error: &ClientError) -> bool {
    match error {
        ClientError::Refused { reason, .. } => *reason == RefuseReason::NameTaken,
        _ => true,
    }
}

/// Reconnect as `username` with backoff until connected or refused.
async fn reconnect(
    connector: Connector,
    username: String,
) -> Result<(Client, Incoming), ClientError> {
    let mut jitter = Jitter::from_clock();
    let mut attempt = 0;
    loop {
        tokio::time::sleep(backoff(attempt, &mut jitter)).await;
        attempt = attempt.saturating_add(1);
        match tokio::time::timeout(RECONNECT_ATTEMPT, connector.connect(&username)).await {
            Ok(Ok(connected)) => return Ok(connected),
            Ok(Err(error)) if !worth_retrying(&error) => return Err(error),
            Ok(Err(error)) => tracing::debug!("reconnecting: {error}"),
            Err(_) => tracing::debug!("reconnecting: no answer"),
        }
    }
}

/// The next pushed event, or never while there is no connection.
async fn next_event(incoming: &mut Option<Incoming>) -> Result<ClientEvent, Disconnect> {
    match incoming {
        Some(incoming) => incoming.next().await,
        None => std::future::pending().await,
    }
}

type Reconnecting = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(Client, Incoming), ClientError>> + Send>,
>;

/// A reconnection under way, if any, to wait for.
async fn reconnected(
    reconnecting: &mut Option<Reconnecting>,
) -> Result<(Client, Incoming), ClientError> {
    match reconnecting {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn session<W: Write>(
    client: Client,
    incoming: Incoming,
    connector: Option<Connector>,
    mut lines: mpsc::Receiver<String>,
    out: &mut W,
    frontend: &Frontend,
    shutdown: CancellationToken,
) -> Result<Outcome, SessionError> {
    let look = &frontend.look;
    let welcome = client.welcome();
    show(
        look,
        out,
        &Event::Welcome {
            server: &welcome.server,
            online: welcome.online,
            username: client.username(),
            account: welcome.account,
        },
    )?;
    if welcome.queued > 0 {
        show(look, out, &Event::Waited(welcome.queued))?;
    }
    let mut queued = QueuedSends::default();
    let username = client.username().to_owned();
    let mut client = Some(Arc::new(client));
    let mut incoming = Some(incoming);
    let mut reconnecting: Option<Reconnecting> = None;
    let mut pending: JoinSet<Answer> = JoinSet::new();
    let mut refresh = tokio::time::interval(NAMES_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tracking = frontend.names.is_some();
    let mut leaving = false;
    let ended = loop {
        if leaving && pending.is_empty() {
            break None;
        }
        tokio::select! {
            // Past MAX_PENDING unanswered requests, stop reading input until answers come.
            line = lines.recv(), if !leaving && pending.len() < MAX_PENDING => match line {
                None => leaving = true,
                Some(line) => match (look.parse(&line), &client) {
                    (Command::Exit, _) => leaving = true,
                    (command, Some(client)) => act(command, client, &mut pending, look, out)?,
                    (command, None) => refuse_offline(command, look, out)?,
                },
            },
            _ = shutdown.cancelled(), if !leaving => leaving = true,
            Some(answer) = pending.join_next(), if !pending.is_empty() => {
                if let Ok(answer) = answer {
                    show_answer(answer, frontend, &mut queued, out)?;
                }
            }
            event = next_event(&mut incoming) => match (event, &connector) {
                (Ok(event), _) => show_event(&event, frontend, &mut queued, out)?,
                (Err(Disconnect::Lost(why)), Some(connector)) if !leaving => {
                    tracing::info!("{why}");
                    show(look, out, &Event::Lost)?;
                    client = None;
                    incoming = None;
                    reconnecting = Some(Box::pin(reconnect(connector.clone(), username.clone())));
                }
                (Err(disconnect), _) => break Some(disconnect),
            },
            back = reconnected(&mut reconnecting) => {
                reconnecting = None;
                match back {
                    Ok((new_client, new_incoming)) => {
                        show(look, out, &Event::Reconnected)?;
                        let queued = new_client.welcome().queued;
                        if queued > 0 {
                            show(look, out, &Event::Waited(queued))?;
                        }
                        client = Some(Arc::new(new_client));
                        incoming = Some(new_incoming);
                    }
                    Err(error) => {
                        show(look, out, &Event::ReconnectFailed(&error))?;
                        break Some(Disconnect::Lost(format!("cannot reconnect: {error}")));
                    }
                }
            }
            _ = refresh.tick(), if tracking && !leaving && client.is_some() => {
                let Some(client) = client.as_ref().map(Arc::clone) else { continue };
                pending.spawn(async move {
                    Answer::Users { shown: false, result: client.list_users().await }
                });
            }
        }
    };
    match ended {
        None => {
            // Show what has already arrived before leaving.
            if let Some(incoming) = &mut incoming {
                while let Some(event) = incoming.try_next() {
                    show_event(&event, frontend, &mut queued, out)?;
                }
            }
            if let Some(client) = client {
                client.close_ref().await;
            }
            Ok(Outcome::Left)
        }
        Some(Disconnect::ServerShutdown) => {
            show(look, out, &Event::Shutdown)?;
            Ok(Outcome::ServerShutdown)
        }
        Some(Disconnect::Replaced) => {
            show(look, out, &Event::Replaced)?;
            Ok(Outcome::Replaced)
        }
        Some(other) => Err(SessionError::Disconnected(other)),
    }
}

fn act<W: Write>(
    command: Command,
    client: &Arc<Client>,
    pending: &mut JoinSet<Answer>,
    look: &Look,
    out: &mut W,
) -> std::io::Result<()> {
    match command {
        Command::Send { to, body } => {
            let client = Arc::clone(client);
            pending.spawn(async move {
                let result = client.send(&to, &body).await;
                Answer::Sent { to, body, result }
            });
        }
        Command::Users => {
            let client = Arc::clone(client);
            pending.spawn(async move {
                Answer::Users {
                    shown: true,
                    result: client.list_users().await,
                }
            });
        }
        Command::Devices(command) => {
            let client = Arc::clone(client);
            pending.spawn(async move { Answer::Devices(devices(&client, command).await) });
        }
        Command::Help => show(look, out, &Event::Help)?,
        Command::Invalid(hint) => show(look, out, &Event::Invalid(&hint))?,
        Command::Nothing | Command::Exit => {}
    }
    Ok(())
}

/// A command typed while the chat is reconnecting: nothing can be sent, and
/// each send says so (none is lost silently).
fn refuse_offline<W: Write>(command: Command, look: &Look, out: &mut W) -> std::io::Result<()> {
    match command {
        Command::Send { to, body } => show(
            look,
            out,
            &Event::Offline {
                to: &to,
                body: &body,
            },
        ),
        Command::Users | Command::Devices(_) => show(look, out, &Event::Invalid(OFFLINE)),
        Command::Help => show(look, out, &Event::Help),
        Command::Invalid(hint) => show(look, out, &Event::Invalid(&hint)),
        Command::Nothing | Command::Exit => Ok(()),
    }
}

/// Why a command cannot be carried out while reconnecting.
const OFFLINE: &str = "not connected (reconnecting…); try again once reconnected";

/// Carry out a `devices` command: a removal names its device by a unique
/// start of the fingerprint, resolved against a fresh list.
async fn devices(client: &Client, command: DevicesCommand) -> Result<Vec<Device>, String> {
    let op = match command {
        DevicesCommand::List => DeviceOp::List,
        DevicesCommand::Add { fingerprint, label } => DeviceOp::Add {
            fingerprint: fingerprint.as_bytes().to_vec(),
            label,
        },
        DevicesCommand::Remove { prefix } => {
            let listed = client
                .devices(DeviceOp::List)
                .await
                .map_err(|e| e.to_string())?;
            DeviceOp::Remove {
                fingerprint: resolve_device(&listed, &prefix)?.as_bytes().to_vec(),
            }
        }
    };
    client.devices(op).await.map_err(|e| e.to_string())
}

/// Show what the server pushed, noting a sender's name for completion.
fn show_event<W: Write>(
    event: &ClientEvent,
    frontend: &Frontend,
    queued: &mut QueuedSends,
    out: &mut W,
) -> std::io::Result<()> {
    match event {
        ClientEvent::Message(message) => {
            if let Some(names) = &frontend.names {
                names.insert(&message.from);
            }
            show(&frontend.look, out, &Event::Message(message))
        }
        ClientEvent::Receipt(receipt) => {
            let sent = queued.take(receipt.id);
            let sent = sent.as_ref().map(|(to, body)| (to.as_str(), body.as_str()));
            show(
                &frontend.look,
                out,
                &Event::Late {
                    receipt: *receipt,
                    sent,
                },
            )
        }
        // Events a later protocol adds are not shown by this version.
        #[allow(unreachable_patterns)]
        _ => Ok(()),
    }
}

fn show_answer<W: Write>(
    answer: Answer,
    frontend: &Frontend,
    queued: &mut QueuedSends,
    out: &mut W,
) -> std::io::Result<()> {
    let look = &frontend.look;
    match answer {
        Answer::Sent {
            to,
            body,
            result: Ok(receipt),
        } => {
            if receipt.status == Status::Queued {
                queued.remember(receipt.id, &to, &body);
            }
            show(
                look,
                out,
                &Event::Sent {
                    to: &to,
                    body: &body,
                    receipt,
                },
            )
        }
        Answer::Sent {
            to,
            body,
            result: Err(error),
        } => show(
            look,
            out,
            &Event::SendFailed {
                to: &to,
                body: &body,
                error: &error,
            },
        ),
        Answer::Users { shown, result } => {
            if let (Some(names), Ok(list)) = (&frontend.names, &result) {
                names.replace(list);
            }
            if !shown {
                return Ok(());
            }
            match result {
                Ok(names) => show(look, out, &Event::Users(&names)),
                Err(error) => show(look, out, &Event::UsersFailed(&error)),
            }
        }
        Answer::Devices(Ok(devices)) => show(look, out, &Event::Devices(&devices)),
        Answer::Devices(Err(why)) => show(look, out, &Event::DevicesFailed(&why)),
    }
}

/// Write `event` in `look`, as of now.
fn show<W: Write>(look: &Look, out: &mut W, event: &Event<'_>) -> std::io::Result<()> {
    match look.format(event, crate::clock::unix_ms()) {
        Some(text) => {
            writeln!(out, "{text}")?;
            out.flush()
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_1_to_30_seconds_with_jitter() {
        let mut jitter = Jitter(42);
        let waits: Vec<_> = (0..10).map(|n| backoff(n, &mut jitter)).collect();
        assert!(
            waits[0] >= BACKOFF_FIRST && waits[0] <= BACKOFF_FIRST * 3 / 2,
            "{waits:?}"
        );
        assert!(waits[1] >= Duration::from_secs(2), "{waits:?}");
        assert!(waits.iter().all(|w| *w <= BACKOFF_MAX), "{waits:?}");
        assert!(waits[9] >= Duration::from_secs(30) / 1, "{waits:?}");
        let mut other = Jitter(43);
        let spread: std::collections::HashSet<_> = (0..20)
            .map(|_| other.spread(Duration::from_secs(4)))
            .collect();
        assert!(spread.len() > 1, "jittered");
        assert!(worth_retrying(&ClientError::Timeout("x".into())));
    }

    #[test]
    fn queued_sends_are_remembered_with_a_preview_and_bounded() {
        let mut queued = QueuedSends::default();
        let long = "x".repeat(100);
        queued.remember(1, "bob", &long);
        let (to, preview) = queued.take(1).unwrap();
        assert_eq!(to, "bob");
        assert_eq!(preview.chars().count(), PREVIEW_CHARS + 1);
        assert!(preview.ends_with('…'));
        assert_eq!(queued.take(1), None, "taken once");
        for id in 0..QUEUED_REMEMBERED as u64 + 5 {
            queued.remember(id, "bob", "hi");
        }
        assert!(queued.order.len() <= QUEUED_REMEMBERED);
        assert!(queued.sent.len() <= QUEUED_REMEMBERED);
        assert_eq!(queued.take(0), None, "the oldest is forgotten");
        assert_eq!(queued.take(10).unwrap().1, "hi");
    }
}
