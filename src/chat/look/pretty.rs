//! The terminal view: the sender's name in a stable colour, a local timestamp,
//! your own messages echoed in a distinct style, and a mark for every receipt.
//! Everything from the network goes through [`sanitize`] first.

use anstyle::{AnsiColor, Color, Style};
use time::{OffsetDateTime, UtcOffset};

use crate::chat::command;
use crate::chat::event::{
    account_line, device_lines, late_word, status_line, waited_line, welcome_line, Event,
    REPLACED_LINE, SHUTDOWN_LINE,
};
use crate::chat::event::{LOST_LINE, OFFLINE_WHY, RECONNECTED_LINE};
use crate::chat::sanitize::sanitize;
use crate::protocol::Status;

/// Colours a name can get; dark blue and black are left out for readability.
const NAME_COLOURS: [AnsiColor; 10] = [
    AnsiColor::Red,
    AnsiColor::Green,
    AnsiColor::Yellow,
    AnsiColor::Magenta,
    AnsiColor::Cyan,
    AnsiColor::BrightRed,
    AnsiColor::BrightGreen,
    AnsiColor::BrightYellow,
    AnsiColor::BrightMagenta,
    AnsiColor::BrightCyan,
];

const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();
const MINE: Style = Style::new().italic();
const OK: Style = Style::new().fg_color(Some(Color::Ansi(AnsiColor::Green)));
const WARN: Style = Style::new().fg_color(Some(Color::Ansi(AnsiColor::Yellow)));
const FAIL: Style = Style::new()
    .fg_color(Some(Color::Ansi(AnsiColor::Red)))
    .bold();

/// Renders events for a person at a terminal.
#[derive(Debug, Clone)]
pub struct Pretty {
    colour: bool,
    offset: UtcOffset,
}

/// Whether to colour output: not when `NO_COLOR` has any non-empty value, and
/// not when stdout is not a terminal.
pub(crate) fn colour_wanted(no_color: Option<&std::ffi::OsStr>, stdout_is_terminal: bool) -> bool {
    stdout_is_terminal && !matches!(no_color, Some(value) if !value.is_empty())
}

impl Pretty {
    /// A renderer; `offset` is the local time zone's offset from UTC.
    pub fn new(colour: bool, offset: UtcOffset) -> Self {
        Pretty { colour, offset }
    }

    /// The text for `event` (possibly several lines), with `now_ms` as the time
    /// of local events such as receipts.
    pub(crate) fn format(&self, event: &Event<'_>, now_ms: u64) -> Option<String> {
        Some(match event {
            Event::Welcome {
                server,
                online,
                username,
                account,
            } => format!(
                "{}\n{}",
                self.paint(BOLD, &welcome_line(server, *online, username)),
                account_line(*account, username)
            ),
            Event::Waited(count) => self.paint(BOLD, &waited_line(*count)),
            Event::Late { receipt, sent } => {
                let what = match sent {
                    Some((to, body)) => self.echo(to, body, now_ms),
                    None => format!("{} message {}", self.time(now_ms), receipt.id),
                };
                let word = late_word(receipt.status);
                match receipt.status {
                    Status::Delivered => format!("{what} {}", self.paint(OK, &format!("✓ {word}"))),
                    _ => format!("{what} {}", self.paint(FAIL, &format!("✗ {word}"))),
                }
            }
            Event::Message(message) => format!(
                "{} {}: {}",
                self.time(message.sent_at_ms),
                self.name(&message.from),
                sanitize(&message.body)
            ),
            Event::Sent { to, body, receipt } => {
                let echo = self.echo(to, body, now_ms);
                match (receipt.status, status_line(to, receipt.status)) {
                    (Status::Delivered, _) | (_, None) => {
                        format!("{echo} {}", self.paint(OK, "✓"))
                    }
                    (Status::Queued, Some(why)) => {
                        format!("{echo} {}", self.paint(WARN, &format!("⌛ queued … {why}")))
                    }
                    (_, Some(why)) => format!("{echo} {}", self.paint(FAIL, &format!("✗ {why}"))),
                }
            }
            Event::SendFailed { to, body, error } => {
                let why = format!("✗ not sent: {}", sanitize(&error.to_string()));
                format!("{} {}", self.echo(to, body, now_ms), self.paint(FAIL, &why))
            }
            Event::Users(names) => {
                let names: Vec<_> = names.iter().map(|n| self.name(n)).collect();
                format!("online ({}): {}", names.len(), names.join(", "))
            }
            Event::UsersFailed(error) => self.paint(
                FAIL,
                &format!("✗ cannot list users: {}", sanitize(&error.to_string())),
            ),
            Event::Devices(devices) => device_lines(devices, self.offset, ""),
            Event::DevicesFailed(why) => self.paint(FAIL, &format!("✗ devices: {}", sanitize(why))),
            Event::Help => command::help().to_owned(),
            Event::Invalid(hint) => self.paint(WARN, &sanitize(hint)),
            Event::Offline { to, body } => {
                let why = format!("✗ not sent: {OFFLINE_WHY}");
                format!("{} {}", self.echo(to, body, now_ms), self.paint(FAIL, &why))
            }
            Event::Lost => self.paint(WARN, LOST_LINE),
            Event::Reconnected => self.paint(OK, RECONNECTED_LINE),
            Event::ReconnectFailed(error) => self.paint(
                FAIL,
                &format!("✗ cannot reconnect: {}", sanitize(&error.to_string())),
            ),
            Event::Shutdown => self.paint(BOLD, SHUTDOWN_LINE),
            Event::Replaced => self.paint(FAIL, REPLACED_LINE),
        })
    }

    /// Our own message, as sent: `12:03 you → bob: hi`.
    fn echo(&self, to: &str, body: &str, now_ms: u64) -> String {
        let text = self.paint(MINE, &format!("you → {}: {}", sanitize(to), sanitize(body)));
        format!("{} {text}", self.time(now_ms))
    }

    /// `HH:MM` in local time.
    fn time(&self, unix_ms: u64) -> String {
        let nanos = i128::from(unix_ms) * 1_000_000;
        let at = OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
            .to_offset(self.offset);
        self.paint(DIM, &format!("{:02}:{:02}", at.hour(), at.minute()))
    }

    /// A user name in its own colour.
    fn name(&self, name: &str) -> String {
        let colour = NAME_COLOURS[name_hash(name) as usize % NAME_COLOURS.len()];
        self.paint(
            Style::new().fg_color(Some(Color::Ansi(colour))).bold(),
            &sanitize(name),
        )
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.colour {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }
}

/// FNV-1a of the lowercased name: stable across runs, platforms and versions,
/// so a user keeps their colour (names are unique regardless of case).
fn name_hash(name: &str) -> u32 {
    name.to_lowercase().bytes().fold(0x811c_9dc5, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientError, Message, Receipt};

    const NOON: u64 = 1_700_000_000_000; // 2023-11-14 22:13:20 UTC

    fn plain() -> Pretty {
        Pretty::new(false, UtcOffset::UTC)
    }

    fn sent(status: Status) -> String {
        let receipt = Receipt { id: 7, status };
        let event = Event::Sent {
            to: "bob",
            body: "hi  there",
            receipt,
        };
        plain().format(&event, NOON).unwrap()
    }

    #[test]
    fn messages_have_a_local_time_and_are_sanitised() {
        let message = Message {
            id: 1,
            from: "alice".into(),
            sent_at_ms: NOON,
            body: "hi\x1b[2J\nbob: fake".into(),
        };
        let text = plain().format(&Event::Message(&message), 0).unwrap();
        assert_eq!(text, "22:13 alice: hi^[[2J^Jbob: fake");
        let east = Pretty::new(false, UtcOffset::from_hms(2, 0, 0).unwrap());
        let text = east.format(&Event::Message(&message), 0).unwrap();
        assert!(text.starts_with("00:13 "), "{text}");
    }

    #[test]
    fn own_messages_are_echoed_with_a_mark_for_every_status() {
        assert_eq!(sent(Status::Delivered), "22:13 you → bob: hi  there ✓");
        assert_eq!(
            sent(Status::NotConnected),
            "22:13 you → bob: hi  there ✗ bob is not connected to this server"
        );
        assert!(sent(Status::Queued)
            .ends_with("… bob is offline; the message will be delivered when they connect"));
        for status in [
            Status::TooLarge,
            Status::RateLimited,
            Status::RecipientBusy,
            Status::InvalidRecipient,
        ] {
            let text = sent(status);
            assert!(text.contains(" ✗ message not sent: "), "{text}");
            assert!(!text.contains('\n'));
        }
        let error = ClientError::Timeout("the server".into());
        let event = Event::SendFailed {
            to: "bob",
            body: "hi",
            error: &error,
        };
        let text = plain().format(&event, NOON).unwrap();
        assert!(
            text.starts_with("22:13 you → bob: hi ✗ not sent: no answer"),
            "{text}"
        );
    }

    #[test]
    fn queued_sends_and_their_late_receipts_are_marked() {
        assert_eq!(
            sent(Status::Queued),
            "22:13 you → bob: hi  there ⌛ queued … bob is offline; the message will be delivered when they connect"
        );
        let late = |status, sent| {
            let receipt = crate::client::LateReceipt { id: 7, status };
            plain()
                .format(&Event::Late { receipt, sent }, NOON)
                .unwrap()
        };
        assert_eq!(
            late(Status::Delivered, Some(("bob", "hi"))),
            "22:13 you → bob: hi ✓ delivered"
        );
        assert_eq!(
            late(Status::Expired, Some(("bob", "hi"))),
            "22:13 you → bob: hi ✗ expired"
        );
        assert_eq!(late(Status::Delivered, None), "22:13 message 7 ✓ delivered");
        assert_eq!(
            plain().format(&Event::Waited(3), 0).unwrap(),
            "3 messages waited for you"
        );
    }

    #[test]
    fn colour_is_stable_per_user_and_off_without_a_terminal() {
        let coloured = Pretty::new(true, UtcOffset::UTC);
        assert_eq!(
            coloured.name("Alice"),
            coloured.name("alice").replace("alice", "Alice")
        );
        assert!(coloured.name("alice").starts_with("\x1b["));
        assert_ne!(coloured.name("x\x1b"), "");
        assert!(
            !coloured.name("x\x1b").contains("x\x1b"),
            "names are sanitised"
        );
        let names: std::collections::HashSet<_> = ["alice", "bob", "carol", "dave", "eve"]
            .iter()
            .map(|n| name_hash(n) as usize % NAME_COLOURS.len())
            .collect();
        assert!(names.len() > 1, "names spread over colours");
        assert_eq!(name_hash("bob"), name_hash("BOB"));

        assert!(colour_wanted(None, true));
        assert!(colour_wanted(Some("".as_ref()), true));
        assert!(!colour_wanted(Some("1".as_ref()), true));
        assert!(!colour_wanted(None, false));
    }

    #[test]
    fn account_states_and_replaced_have_their_lines() {
        use crate::protocol::Account;
        let welcome = |account| {
            plain()
                .format(
                    &Event::Welcome {
                        server: "quic-chat 0.1.0",
                        online: 1,
                        username: "alice",
                        account,
                    },
                    0,
                )
                .unwrap()
        };
        let first = "Welcome to quic-chat 0.1.0, alice! 1 user(s) online. Type help for commands.";
        assert_eq!(
            welcome(Some(Account::Registered)),
            format!("{first}\nregistered as alice")
        );
        assert_eq!(
            welcome(Some(Account::Returning)),
            format!("{first}\nwelcome back, alice")
        );
        assert_eq!(welcome(Some(Account::Guest)), format!("{first}\nguest"));
        assert_eq!(welcome(None), format!("{first}\nguest"));
        assert_eq!(
            plain().format(&Event::Replaced, 0).unwrap(),
            "signed in elsewhere"
        );
        let coloured = Pretty::new(true, UtcOffset::UTC);
        assert!(coloured
            .format(&Event::Replaced, 0)
            .unwrap()
            .contains("signed in elsewhere"));
    }

    #[test]
    fn help_lists_every_command() {
        let help = plain().format(&Event::Help, 0).unwrap();
        for command in ["send", "users", "devices", "help", "EXIT"] {
            assert!(
                help.lines().any(|l| l.trim_start().starts_with(command)),
                "{command}"
            );
        }
    }
}
