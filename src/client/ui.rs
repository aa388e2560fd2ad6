//! The line-oriented terminal loop, generic over its input and output so tests
//! (and scripts over pipes) drive it exactly as a person at a terminal would.

use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::command::{self, Command};
use super::sanitize::sanitize;
use super::{Client, ClientError, Disconnect, Incoming, Message, Receipt};
use crate::protocol::Status;

/// The line printed when the server shuts down.
pub const SHUTDOWN_LINE: &str = "Server has shut down, exiting...";

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
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// A request answered while the loop went on.
enum Answer {
    Sent {
        to: String,
        result: Result<Receipt, ClientError>,
    },
    Users(Result<Vec<String>, ClientError>),
}

/// Run the chat: each input line is a command, each received message a line of
/// output, until EXIT, end of input, or the connection ends.
pub async fn run<W: Write>(
    client: Client,
    mut incoming: Incoming,
    mut lines: mpsc::Receiver<String>,
    out: &mut W,
) -> Result<Outcome, UiError> {
    let client = Arc::new(client);
    let mut pending: JoinSet<Answer> = JoinSet::new();
    let mut leaving = false;
    let ended = loop {
        if leaving && pending.is_empty() {
            break None;
        }
        tokio::select! {
            line = lines.recv(), if !leaving => match line {
                None => leaving = true,
                Some(line) => match command::parse(&line) {
                    Command::Exit => leaving = true,
                    command => act(command, &client, &mut pending, out)?,
                },
            },
            Some(answer) = pending.join_next(), if !pending.is_empty() => {
                if let Ok(answer) = answer {
                    show_answer(answer, out)?;
                }
            }
            message = incoming.next() => match message {
                Ok(message) => show_message(&message, out)?,
                Err(disconnect) => break Some(disconnect),
            },
        }
    };
    match ended {
        None => {
            client.close_ref().await;
            Ok(Outcome::Left)
        }
        Some(Disconnect::ServerShutdown) => {
            line(out, SHUTDOWN_LINE)?;
            Ok(Outcome::ServerShutdown)
        }
        Some(other) => Err(UiError::Disconnected(other)),
    }
}

fn act<W: Write>(
    command: Command,
    client: &Arc<Client>,
    pending: &mut JoinSet<Answer>,
    out: &mut W,
) -> std::io::Result<()> {
    match command {
        Command::Send { to, body } => {
            let client = Arc::clone(client);
            pending.spawn(async move {
                let result = client.send(&to, &body).await;
                Answer::Sent { to, result }
            });
        }
        Command::Users => {
            let client = Arc::clone(client);
            pending.spawn(async move { Answer::Users(client.list_users().await) });
        }
        Command::Help => line(out, command::HELP)?,
        Command::Invalid(hint) => line(out, &hint)?,
        Command::Nothing | Command::Exit => {}
    }
    Ok(())
}

fn show_message<W: Write>(message: &Message, out: &mut W) -> std::io::Result<()> {
    line(
        out,
        &format!("{}: {}", sanitize(&message.from), sanitize(&message.body)),
    )
}

fn show_answer<W: Write>(answer: Answer, out: &mut W) -> std::io::Result<()> {
    match answer {
        Answer::Sent {
            to,
            result: Ok(receipt),
        } => match status_line(&to, receipt.status) {
            Some(text) => line(out, &text),
            None => Ok(()),
        },
        Answer::Sent { to, result: Err(e) } => {
            line(out, &format!("message to {} not sent: {e}", sanitize(&to)))
        }
        Answer::Users(Ok(names)) => {
            let names: Vec<_> = names.iter().map(|n| sanitize(n)).collect();
            line(
                out,
                &format!("online ({}): {}", names.len(), names.join(", ")),
            )
        }
        Answer::Users(Err(e)) => line(out, &format!("cannot list users: {e}")),
    }
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

fn line<W: Write>(out: &mut W, text: &str) -> std::io::Result<()> {
    writeln!(out, "{text}")?;
    out.flush()
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
}
