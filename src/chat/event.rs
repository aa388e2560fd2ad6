//! The vocabulary between the chat loop and its looks: every [`Event`] the
//! loop shows, and the wording the looks share.

use super::sanitize::sanitize;
use crate::client::{ClientError, Message, Receipt};
use crate::protocol::Status;

/// The line printed when the server shuts down.
pub(crate) const SHUTDOWN_LINE: &str = "Server has shut down, exiting...";

/// Something the chat loop shows.
#[derive(Debug)]
pub(crate) enum Event<'a> {
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

/// The greeting once the server accepted us (names sanitised).
pub(crate) fn welcome_line(server: &str, online: u32, username: &str) -> String {
    format!(
        "Welcome to {}, {}! {online} user(s) online. Type help for commands.",
        sanitize(server),
        sanitize(username)
    )
}

/// The line shown for a receipt; `None` for a delivered message (silence is success).
pub(crate) fn status_line(to: &str, status: Status) -> Option<String> {
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
        Status::Expired => format!("message to {to} expired unread"),
    })
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
