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
use crate::client::{Client, ClientError, ClientEvent, Disconnect, Incoming, Receipt};
use crate::protocol::{Device, DeviceOp};

/// How often the list of online names (for completion) is refreshed.
const NAMES_REFRESH: Duration = Duration::from_secs(60);

/// Requests (sends, user lists) in flight at once before input waits.
const MAX_PENDING: usize = 256;

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
    mut incoming: Incoming,
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
    let client = Arc::new(client);
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
                Some(line) => match look.parse(&line) {
                    Command::Exit => leaving = true,
                    command => act(command, &client, &mut pending, look, out)?,
                },
            },
            _ = shutdown.cancelled(), if !leaving => leaving = true,
            Some(answer) = pending.join_next(), if !pending.is_empty() => {
                if let Ok(answer) = answer {
                    show_answer(answer, frontend, out)?;
                }
            }
            event = incoming.next() => match event {
                Ok(event) => show_event(&event, frontend, out)?,
                Err(disconnect) => break Some(disconnect),
            },
            _ = refresh.tick(), if tracking && !leaving => {
                let client = Arc::clone(&client);
                pending.spawn(async move {
                    Answer::Users { shown: false, result: client.list_users().await }
                });
            }
        }
    };
    match ended {
        None => {
            // Show what has already arrived before leaving.
            while let Some(event) = incoming.try_next() {
                show_event(&event, frontend, out)?;
            }
            client.close_ref().await;
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
    out: &mut W,
) -> std::io::Result<()> {
    match event {
        ClientEvent::Message(message) => {
            if let Some(names) = &frontend.names {
                names.insert(&message.from);
            }
            show(&frontend.look, out, &Event::Message(message))
        }
        // Events a later protocol adds are not shown by this version.
        #[allow(unreachable_patterns)]
        _ => Ok(()),
    }
}

fn show_answer<W: Write>(answer: Answer, frontend: &Frontend, out: &mut W) -> std::io::Result<()> {
    let look = &frontend.look;
    match answer {
        Answer::Sent {
            to,
            body,
            result: Ok(receipt),
        } => show(
            look,
            out,
            &Event::Sent {
                to: &to,
                body: &body,
                receipt,
            },
        ),
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
