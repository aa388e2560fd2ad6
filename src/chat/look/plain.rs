//! The plain look: the lines the line client has always printed.

use crate::chat::command;
use crate::chat::event::{
    account_line, device_lines, late_line, status_line, waited_line, welcome_line, Event,
    REPLACED_LINE, SHUTDOWN_LINE,
};
use crate::chat::event::{LOST_LINE, OFFLINE_WHY, RECONNECTED_LINE};
use crate::chat::sanitize::sanitize;

/// The plain line for `event`; `None` shows nothing.
pub(super) fn format(event: &Event<'_>) -> Option<String> {
    Some(match event {
        Event::Welcome {
            server,
            online,
            username,
            account,
        } => format!(
            "{}\n{}",
            welcome_line(server, *online, username),
            account_line(*account, username)
        ),
        Event::Waited(count) => waited_line(*count),
        Event::Message(message) => {
            format!("{}: {}", sanitize(&message.from), sanitize(&message.body))
        }
        Event::Late { receipt, sent } => late_line(*receipt, sent.map(|(to, _)| to)),
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
        Event::Devices(devices) => device_lines(devices, time::UtcOffset::UTC, " UTC"),
        Event::DevicesFailed(why) => format!("devices: {}", sanitize(why)),
        Event::Help => command::help().to_owned(),
        Event::Invalid(hint) => sanitize(hint).into_owned(),
        Event::Offline { to, .. } => format!("message to {} not sent: {OFFLINE_WHY}", sanitize(to)),
        Event::Lost => LOST_LINE.to_owned(),
        Event::Reconnected => RECONNECTED_LINE.to_owned(),
        Event::ReconnectFailed(error) => {
            format!("cannot reconnect: {}", sanitize(&error.to_string()))
        }
        Event::Shutdown => SHUTDOWN_LINE.to_owned(),
        Event::Replaced => REPLACED_LINE.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Message, Receipt};
    use crate::protocol::Status;

    #[test]
    fn plain_lines_are_the_line_clients() {
        let message = Message {
            id: 1,
            from: "alice".into(),
            sent_at_ms: 0,
            body: "hi\x1b[2J".into(),
        };
        assert_eq!(
            format(&Event::Welcome {
                server: "quic-chat 0.1.0",
                online: 2,
                username: "bob",
                account: None,
            }),
            Some(
                "Welcome to quic-chat 0.1.0, bob! 2 user(s) online. Type help for commands.\nguest"
                    .into()
            )
        );
        let welcome = |account| {
            format(&Event::Welcome {
                server: "s",
                online: 1,
                username: "bob",
                account: Some(account),
            })
            .unwrap()
        };
        use crate::protocol::Account;
        assert!(welcome(Account::Registered).ends_with("commands.\nregistered as bob"));
        assert!(welcome(Account::Returning).ends_with("commands.\nwelcome back, bob"));
        assert!(welcome(Account::Guest).ends_with("commands.\nguest"));
        assert_eq!(format(&Event::Replaced), Some("signed in elsewhere".into()));
        assert_eq!(
            format(&Event::DevicesFailed("guests have no\x1b devices")),
            Some("devices: guests have no^[ devices".into())
        );
        assert_eq!(
            format(&Event::Message(&message)),
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
        assert_eq!(format(&sent), None, "a delivered send is quiet");
        let names = ["alice".to_owned(), "bob".to_owned()];
        assert_eq!(
            format(&Event::Users(&names)),
            Some("online (2): alice, bob".into())
        );
        assert_eq!(format(&Event::Shutdown), Some(SHUTDOWN_LINE.to_owned()));
    }

    #[test]
    fn reconnecting_and_stored_messages_have_plain_lines() {
        assert_eq!(
            format(&Event::Lost),
            Some("connection lost; reconnecting…".into())
        );
        assert_eq!(format(&Event::Reconnected), Some("reconnected".into()));
        assert_eq!(
            format(&Event::Offline {
                to: "bob",
                body: "hi"
            }),
            Some("message to bob not sent: not connected (reconnecting…)".into())
        );
        assert_eq!(
            format(&Event::Waited(1)),
            Some("1 message waited for you".into())
        );
        let late = Event::Late {
            receipt: crate::client::LateReceipt {
                id: 7,
                status: Status::Delivered,
            },
            sent: Some(("bob", "hi")),
        };
        assert_eq!(format(&late), Some("message to bob was delivered".into()));
        let queued = Event::Sent {
            to: "bob",
            body: "hi",
            receipt: Receipt {
                id: 7,
                status: Status::Queued,
            },
        };
        assert_eq!(
            format(&queued),
            Some("bob is offline; the message will be delivered when they connect".into())
        );
    }
}
