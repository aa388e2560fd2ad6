//! The vocabulary between the chat loop and its looks: every [`Event`] the
//! loop shows, and the wording the looks share.

use time::{OffsetDateTime, UtcOffset};

use super::sanitize::sanitize;
use crate::client::{ClientError, LateReceipt, Message, Receipt};
use crate::protocol::{Account, Device, Fingerprint, Status};

/// The line printed when the server shuts down.
pub(crate) const SHUTDOWN_LINE: &str = "Server has shut down, exiting...";

/// The line printed when the connection is lost and the chat reconnects.
pub(crate) const LOST_LINE: &str = "connection lost; reconnecting…";

/// The line printed once the chat is connected again.
pub(crate) const RECONNECTED_LINE: &str = "reconnected";

/// Why a message typed while reconnecting was not sent.
pub(crate) const OFFLINE_WHY: &str = "not connected (reconnecting…)";

/// The line printed when the account signed in elsewhere (close code 5).
pub(crate) const REPLACED_LINE: &str = "signed in elsewhere";

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
        /// What the Hello did to the account; `None` on a v1 server.
        account: Option<Account>,
    },
    /// This many stored messages follow the welcome (protocol v2's `queued`).
    Waited(u32),
    /// Someone sent us a message.
    Message(&'a Message),
    /// What finally became of a message we sent that was answered `Queued`.
    Late {
        /// The id and the outcome.
        receipt: LateReceipt,
        /// The recipient and the start of the body, if this chat sent it.
        sent: Option<(&'a str, &'a str)>,
    },
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
    /// The account's devices, after a `devices` command.
    Devices(&'a [Device]),
    /// A `devices` command failed; the text is one line saying why.
    DevicesFailed(&'a str),
    /// The answer to `help`.
    Help,
    /// An input line that is not a command; the text is a one-line hint.
    Invalid(&'a str),
    /// A send typed while the chat is reconnecting: not sent.
    Offline {
        /// The recipient as typed.
        to: &'a str,
        /// The message as typed.
        body: &'a str,
    },
    /// The connection was lost; the chat is reconnecting.
    Lost,
    /// The chat is connected again.
    Reconnected,
    /// Reconnecting was refused; the chat ends.
    ReconnectFailed(&'a ClientError),
    /// The server shut down.
    Shutdown,
    /// The account signed in elsewhere, or this device was removed (close code 5).
    Replaced,
}

/// The account state shown after the welcome line.
pub(crate) fn account_line(account: Option<Account>, username: &str) -> String {
    match account {
        Some(Account::Registered) => format!("registered as {}", sanitize(username)),
        Some(Account::Returning) => format!("welcome back, {}", sanitize(username)),
        Some(Account::Guest) | None => "guest".to_owned(),
    }
}

/// The account state's name, as the JSON `welcome` event carries it.
pub(crate) fn account_name(account: Option<Account>) -> &'static str {
    match account {
        Some(Account::Registered) => "registered",
        Some(Account::Returning) => "returning",
        Some(Account::Guest) | None => "guest",
    }
}

/// A device's fingerprint as text (a malformed one shows as such, not as bytes).
pub(crate) fn device_fingerprint(device: &Device) -> String {
    Fingerprint::from_slice(&device.fingerprint)
        .map_or_else(|| "(not a fingerprint)".to_owned(), |f| f.to_string())
}

/// The device list: a heading, then one line per device with `*` marking
/// this one; times at `offset`, followed by `zone` (labels sanitised).
pub(crate) fn device_lines(devices: &[Device], offset: UtcOffset, zone: &str) -> String {
    let when = |ms: u64| {
        let nanos = i128::from(ms) * 1_000_000;
        let at = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .to_offset(offset);
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}{zone}",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute()
        )
    };
    let mut text = format!("devices ({}):", devices.len());
    for device in devices {
        let mark = if device.current { '*' } else { ' ' };
        let seen = match device.last_seen_ms {
            0 => "never".to_owned(),
            ms => when(ms),
        };
        text.push_str(&format!(
            "\n{mark} {}  {}  added {}  last seen {seen}",
            device_fingerprint(device),
            sanitize(&device.label),
            when(device.added_ms)
        ));
    }
    text
}

/// The line before the stored messages that follow the welcome.
pub(crate) fn waited_line(count: u32) -> String {
    match count {
        1 => "1 message waited for you".to_owned(),
        n => format!("{n} messages waited for you"),
    }
}

/// What became of a queued message, in words: `delivered` or `expired`.
pub(crate) fn late_word(status: Status) -> &'static str {
    match status {
        Status::Expired => "expired",
        Status::Delivered => "delivered",
        other => other.name(),
    }
}

/// The plain line for a late receipt (the recipient sanitised).
pub(crate) fn late_line(receipt: LateReceipt, to: Option<&str>) -> String {
    let what = match to {
        Some(to) => format!("message to {}", sanitize(to)),
        None => format!("message {}", receipt.id),
    };
    match receipt.status {
        Status::Expired => format!("{what} expired unread"),
        status => format!("{what} was {}", late_word(status)),
    }
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
    fn account_states_have_their_lines() {
        assert_eq!(
            account_line(Some(Account::Registered), "alice"),
            "registered as alice"
        );
        assert_eq!(
            account_line(Some(Account::Returning), "alice"),
            "welcome back, alice"
        );
        assert_eq!(account_line(Some(Account::Guest), "alice"), "guest");
        assert_eq!(account_line(None, "alice"), "guest", "a v1 server");
        assert_eq!(account_name(Some(Account::Returning)), "returning");
    }

    #[test]
    fn devices_are_listed_with_this_one_marked() {
        let devices = [
            Device {
                fingerprint: vec![0xfb; 32],
                label: "first device".into(),
                added_ms: 1_700_000_000_000,
                last_seen_ms: 1_700_000_060_000,
                current: true,
            },
            Device {
                fingerprint: vec![0; 32],
                label: "ph\x1bone".into(),
                added_ms: 1_700_000_000_000,
                last_seen_ms: 0,
                current: false,
            },
        ];
        let fp = Fingerprint::new([0xfb; 32]);
        let zero = Fingerprint::new([0; 32]);
        assert_eq!(
            device_lines(&devices, UtcOffset::UTC, " UTC"),
            format!(
                "devices (2):\n\
                 * {fp}  first device  added 2023-11-14 22:13 UTC  last seen 2023-11-14 22:14 UTC\n  \
                 {zero}  ph^[one  added 2023-11-14 22:13 UTC  last seen never"
            )
        );
    }

    #[test]
    fn stored_messages_and_late_receipts_have_lines() {
        assert_eq!(waited_line(1), "1 message waited for you");
        assert_eq!(waited_line(3), "3 messages waited for you");
        let late = |status| LateReceipt { id: 7, status };
        assert_eq!(
            late_line(late(Status::Delivered), Some("bob")),
            "message to bob was delivered"
        );
        assert_eq!(
            late_line(late(Status::Expired), Some("b\x1bob")),
            "message to b^[ob expired unread"
        );
        assert_eq!(
            late_line(late(Status::Delivered), None),
            "message 7 was delivered"
        );
    }

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
