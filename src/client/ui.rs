//! The line-oriented chat loop, generic over its input and output so tests
//! (and scripts over pipes) drive it exactly as a person at a terminal would.
//! What each event looks like is the [`Style`]'s business: plain lines, a
//! coloured terminal view ([`render`](super::render)) or JSON ([`json`](super::json)).

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::command::{self, Command};
use super::render::Pretty;
use super::sanitize::sanitize;
use super::{json, Client, ClientError, Disconnect, Incoming, Message, Receipt};
use crate::protocol::Status;

/// The line printed when the server shuts down.
pub const SHUTDOWN_LINE: &str = "Server has shut down, exiting...";

/// How often the list of online names (for completion) is refreshed.
const NAMES_REFRESH: Duration = Duration::from_secs(60);

/// Requests (sends, user lists) in flight at once before input waits.
const MAX_PENDING: usize = 256;

/// How the chat session ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The user typed EXIT or input ended.
    Left,
    /// The server shut down.
    ServerShutdown,
}

/// How the chat session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The connection ended for a reason other than shutdown or our EXIT.
    #[error("{0}")]
    Disconnected(Disconnect),
    /// Output could not be written (for example, a closed pipe).
    #[error("cannot write output")]
    Output(#[from] std::io::Error),
}

/// Something the chat loop shows.
#[derive(Debug)]
pub enum Event<'a> {
    /// The server accepted us.
    Welcome {
        /// Server software name and version.
        server: &'a str,
        /// Users online, including us.
        online: u32,
        /// Our name.
        username: &'a str,
    },
    /// Someone sent us a message.
    Message(&'a Message),
    /// The server's receipt for a message we sent.
    Sent {
        /// The recipient as typed.
        to: &'a str,
        /// The message as typed.
        body: &'a str,
        /// The receipt.
        receipt: Receipt,
    },
    /// A message we sent got no receipt.
    SendFailed {
        /// The recipient as typed.
        to: &'a str,
        /// The message as typed.
        body: &'a str,
        /// What went wrong.
        error: &'a ClientError,
    },
    /// The answer to `users`.
    Users(&'a [String]),
    /// `users` failed.
    UsersFailed(&'a ClientError),
    /// The answer to `help`.
    Help,
    /// An input line that is not a command; the text is a one-line hint.
    Invalid(&'a str),
    /// The server shut down.
    Shutdown,
}

/// How events are shown and input lines are read.
#[derive(Debug, Clone)]
pub enum Style {
    /// Plain lines, as scripts over pipes have always seen them.
    Plain,
    /// For a person at a terminal: colours, timestamps, echoes and marks.
    Pretty(Pretty),
    /// One JSON object per event; input lines may be JSON commands too.
    Json,
}

impl Style {
    /// The output for `event` (without a final line break); `None` shows nothing.
    pub fn format(&self, event: &Event<'_>) -> Option<String> {
        match self {
            Style::Plain => plain(event),
            Style::Pretty(pretty) => pretty.format(event, super::render::now_ms()),
            Style::Json => Some(json::event(event)),
        }
    }

    /// The command an input line asks for.
    pub fn parse(&self, line: &str) -> Command {
        match self {
            Style::Json => json::parse_input(line),
            Style::Plain | Style::Pretty(_) => command::parse(line),
        }
    }
}

/// The names of users known to be online, shared with a tab completer. Kept
/// up to date from `users` answers, a periodic refresh and message senders.
#[derive(Debug, Clone, Default)]
pub struct OnlineNames(Arc<Mutex<BTreeSet<String>>>);

impl OnlineNames {
    /// Replace the set with a fresh list from the server.
    pub fn replace(&self, names: &[String]) {
        if let Ok(mut set) = self.0.lock() {
            *set = names.iter().cloned().collect();
        }
    }

    /// Add one name (for example, the sender of a message).
    pub fn insert(&self, name: &str) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(name.to_owned());
        }
    }

    /// The names starting with `prefix`, ignoring letter case, sorted.
    pub fn matching(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.to_lowercase();
        match self.0.lock() {
            Ok(set) => set
                .iter()
                .filter(|name| name.to_lowercase().starts_with(&prefix))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// How the loop presents itself: the style, and the names to keep up to date
/// for completion (`None` asks the server for nothing it was not told to).
#[derive(Debug, Clone)]
pub struct Frontend {
    /// How events look and input is read.
    pub style: Style,
    /// Online names to maintain, for a completer.
    pub names: Option<OnlineNames>,
}

impl Frontend {
    /// The plain line client: no extra requests, byte-for-byte the old output.
    pub fn plain() -> Self {
        Frontend {
            style: Style::Plain,
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
}

/// Run the chat: show the welcome, then treat each input line as a command and
/// show each received message, until EXIT, end of input, or the connection ends.
pub async fn run<W: Write>(
    client: Client,
    mut incoming: Incoming,
    mut lines: mpsc::Receiver<String>,
    out: &mut W,
    frontend: &Frontend,
) -> Result<Outcome, UiError> {
    let style = &frontend.style;
    let welcome = client.welcome();
    show(
        style,
        out,
        &Event::Welcome {
            server: &welcome.server,
            online: welcome.online,
            username: client.username(),
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
                Some(line) => match style.parse(&line) {
                    Command::Exit => leaving = true,
                    command => act(command, &client, &mut pending, style, out)?,
                },
            },
            Some(answer) = pending.join_next(), if !pending.is_empty() => {
                if let Ok(answer) = answer {
                    show_answer(answer, frontend, out)?;
                }
            }
            message = incoming.next() => match message {
                Ok(message) => {
                    if let Some(names) = &frontend.names {
                        names.insert(&message.from);
                    }
                    show(style, out, &Event::Message(&message))?;
                }
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
            while let Some(message) = incoming.try_next() {
                show(style, out, &Event::Message(&message))?;
            }
            client.close_ref().await;
            Ok(Outcome::Left)
        }
        Some(Disconnect::ServerShutdown) => {
            show(style, out, &Event::Shutdown)?;
            Ok(Outcome::ServerShutdown)
        }
        Some(other) => Err(UiError::Disconnected(other)),
    }
}

fn act<W: Write>(
    command: Command,
    client: &Arc<Client>,
    pending: &mut JoinSet<Answer>,
    style: &Style,
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
        Command::Help => show(style, out, &Event::Help)?,
        Command::Invalid(hint) => show(style, out, &Event::Invalid(&hint))?,
        Command::Nothing | Command::Exit => {}
    }
    Ok(())
}

fn show_answer<W: Write>(answer: Answer, frontend: &Frontend, out: &mut W) -> std::io::Result<()> {
    let style = &frontend.style;
    match answer {
        Answer::Sent {
            to,
            body,
            result: Ok(receipt),
        } => show(
            style,
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
            style,
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
                Ok(names) => show(style, out, &Event::Users(&names)),
                Err(error) => show(style, out, &Event::UsersFailed(&error)),
            }
        }
    }
}

/// The plain rendering: the lines the line client has always printed.
fn plain(event: &Event<'_>) -> Option<String> {
    Some(match event {
        Event::Welcome {
            server,
            online,
            username,
        } => format!(
            "Welcome to {}, {}! {online} user(s) online. Type help for commands.",
            sanitize(server),
            sanitize(username)
        ),
        Event::Message(message) => {
            format!("{}: {}", sanitize(&message.from), sanitize(&message.body))
        }
        Event::Sent { to, receipt, .. } => return status_line(to, receipt.status),
        Event::SendFailed { to, error, .. } => {
            format!(
                "message to {} not sent: {}",
                sanitize(to),
                sanitize(&error.to_string())
            )
        }
        Event::Users(names) => {
            let names: Vec<_> = names.iter().map(|n| sanitize(n)).collect();
            format!("online ({}): {}", names.len(), names.join(", "))
        }
        Event::UsersFailed(error) => {
            format!("cannot list users: {}", sanitize(&error.to_string()))
        }
        Event::Help => command::HELP.to_owned(),
        Event::Invalid(hint) => sanitize(hint).into_owned(),
        Event::Shutdown => SHUTDOWN_LINE.to_owned(),
    })
}

/// The line shown for a receipt; `None` for a delivered message (silence is success).
pub fn status_line(to: &str, status: Status) -> Option<String> {
    let to = sanitize(to);
    Some(match status {
        Status::Delivered => return None,
        Status::NotConnected => format!("{to} is not connected to this server"),
        Status::Queued => {
            format!("{to} is offline; the message will be delivered when they connect")
        }
        Status::TooLarge => "message not sent: it is over 65536 bytes".to_owned(),
        Status::RateLimited => {
            "message not sent: you are sending too fast; wait a moment".to_owned()
        }
        Status::RecipientBusy => format!("message not sent: {to} is not keeping up with messages"),
        Status::InvalidRecipient => format!("message not sent: '{to}' is not a valid username"),
    })
}

fn show<W: Write>(style: &Style, out: &mut W, event: &Event<'_>) -> std::io::Result<()> {
    match style.format(event) {
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
    fn every_failure_has_a_line_and_success_is_quiet() {
        assert_eq!(status_line("bob", Status::Delivered), None);
        assert_eq!(
            status_line("bob", Status::NotConnected).unwrap(),
            "bob is not connected to this server"
        );
        for status in [
            Status::Queued,
            Status::TooLarge,
            Status::RateLimited,
            Status::RecipientBusy,
            Status::InvalidRecipient,
        ] {
            let text = status_line("bob", status).unwrap();
            assert!(!text.contains('\n'), "{text}");
        }
        assert_eq!(
            status_line("b\x1bob", Status::InvalidRecipient).unwrap(),
            "message not sent: 'b^[ob' is not a valid username"
        );
    }

    #[test]
    fn plain_lines_are_the_line_clients() {
        let message = Message {
            id: 1,
            from: "alice".into(),
            sent_at_ms: 0,
            body: "hi\x1b[2J".into(),
        };
        let style = Style::Plain;
        assert_eq!(
            style.format(&Event::Welcome {
                server: "quic-chat 0.1.0",
                online: 2,
                username: "bob"
            }),
            Some(
                "Welcome to quic-chat 0.1.0, bob! 2 user(s) online. Type help for commands.".into()
            )
        );
        assert_eq!(
            style.format(&Event::Message(&message)),
            Some("alice: hi^[[2J".into())
        );
        let delivered = Receipt {
            id: 1,
            status: Status::Delivered,
        };
        let sent = Event::Sent {
            to: "bob",
            body: "hi",
            receipt: delivered,
        };
        assert_eq!(style.format(&sent), None, "a delivered send is quiet");
        let names = ["alice".to_owned(), "bob".to_owned()];
        assert_eq!(
            style.format(&Event::Users(&names)),
            Some("online (2): alice, bob".into())
        );
        assert_eq!(
            style.format(&Event::Shutdown),
            Some(SHUTDOWN_LINE.to_owned())
        );
    }

    #[test]
    fn online_names_match_case_insensitively() {
        let names = OnlineNames::default();
        names.replace(&["Alice".into(), "bob".into()]);
        names.insert("albert");
        assert_eq!(names.matching("AL"), vec!["Alice", "albert"]);
        assert_eq!(names.matching(""), vec!["Alice", "albert", "bob"]);
        names.replace(&["bob".into()]);
        assert_eq!(names.matching("a"), Vec::<String>::new());
    }
}
