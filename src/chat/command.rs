//! One typed input line, parsed purely.

use crate::protocol::{Device, Fingerprint};

/// The longest device label, in bytes (the protocol's limit).
pub(crate) const MAX_LABEL_BYTES: usize = 64;

/// What a `devices` line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DevicesCommand {
    /// `devices`: list the account's devices.
    List,
    /// `devices add SHA256:… LABEL`: bind another device's key.
    Add {
        /// The other device's fingerprint, in full.
        fingerprint: Fingerprint,
        /// Its label: the rest of the line, trimmed.
        label: String,
    },
    /// `devices remove PREFIX`: unbind the one device whose fingerprint starts so.
    Remove {
        /// The start of the fingerprint, with or without `SHA256:`.
        prefix: String,
    },
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `send USER MESSAGE…`: the message is the rest of the line, verbatim.
    Send {
        /// The recipient.
        to: String,
        /// The message text.
        body: String,
    },
    /// `users`: list who is online.
    Users,
    /// `devices …`: list, add or remove the account's devices.
    Devices(DevicesCommand),
    /// `help`: list the commands.
    Help,
    /// `EXIT`: leave.
    Exit,
    /// An empty line.
    Nothing,
    /// Not a command; the text is a one-line hint.
    Invalid(String),
}

/// Which command a table row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Send,
    Users,
    Devices,
    Help,
    Exit,
}

/// One row of the command table.
#[derive(Debug)]
pub(crate) struct Spec {
    /// The word as help shows it and Tab completes it (matched ignoring case).
    pub(crate) word: &'static str,
    /// Other words for the same command (not shown or completed).
    aliases: &'static [&'static str],
    /// What follows the word, for help; `None` if the command takes no arguments.
    args: Option<&'static str>,
    /// What the command does, for help.
    help: &'static str,
    kind: Kind,
}

impl Spec {
    /// Whether the command takes arguments.
    pub(crate) fn takes_args(&self) -> bool {
        self.args.is_some()
    }
}

/// Every command: the one table behind [`parse`], [`help`] and Tab completion.
pub(crate) const COMMANDS: [Spec; 5] = [
    Spec {
        word: "send",
        aliases: &[],
        args: Some("USER MESSAGE"),
        help: "send MESSAGE to USER (the rest of the line, as typed)",
        kind: Kind::Send,
    },
    Spec {
        word: "users",
        aliases: &["list"],
        args: None,
        help: "list who is online",
        kind: Kind::Users,
    },
    Spec {
        word: "devices",
        aliases: &[],
        args: Some("[add|remove …]"),
        help: "list your account's devices (* is this one); add FP LABEL adds the \
               device whose quic-chat whoami printed FP; remove FP removes one (the \
               start of FP is enough)",
        kind: Kind::Devices,
    },
    Spec {
        word: "help",
        aliases: &["?"],
        args: None,
        help: "show this list",
        kind: Kind::Help,
    },
    Spec {
        word: "EXIT",
        aliases: &["quit"],
        args: None,
        help: "leave the chat (end of input does the same)",
        kind: Kind::Exit,
    },
];

/// One line per command, for `help`.
pub(crate) fn help() -> &'static str {
    static HELP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let usage = |spec: &Spec| match spec.args {
            Some(args) => format!("{} {args}", spec.word),
            None => spec.word.to_owned(),
        };
        let width = COMMANDS
            .iter()
            .map(|spec| usage(spec).chars().count())
            .max()
            .unwrap_or(0);
        let mut text = String::from("commands:");
        for spec in &COMMANDS {
            let usage = usage(spec);
            text.push_str(&format!("\n  {usage:<width$} {}", spec.help));
        }
        text
    });
    &HELP
}

/// Parse one input line (without or with its line ending).
pub(crate) fn parse(line: &str) -> Command {
    let line = line.trim_end_matches(['\n', '\r']);
    let trimmed = line.trim_start();
    let (word, rest) = match trimmed.find(char::is_whitespace) {
        Some(at) => (&trimmed[..at], &trimmed[at..]),
        None => (trimmed, ""),
    };
    if word.is_empty() {
        return Command::Nothing;
    }
    let Some(spec) = COMMANDS.iter().find(|spec| {
        std::iter::once(&spec.word)
            .chain(spec.aliases)
            .any(|name| name.eq_ignore_ascii_case(word))
    }) else {
        return Command::Invalid(format!(
            "unknown command '{}'; type help for the list",
            truncate(word, 40)
        ));
    };
    if !spec.takes_args() && !rest.trim().is_empty() {
        return Command::Invalid(format!("'{word}' takes no arguments"));
    }
    match spec.kind {
        Kind::Send => parse_send(rest),
        Kind::Users => Command::Users,
        Kind::Devices => parse_devices(rest),
        Kind::Help => Command::Help,
        Kind::Exit => Command::Exit,
    }
}

fn parse_send(rest: &str) -> Command {
    // One run of blanks separates the command, the user and the message; the
    // message itself is kept exactly as typed, inner and trailing spaces included.
    let rest = rest.trim_start_matches([' ', '\t']);
    let (to, body) = match rest.find([' ', '\t']) {
        Some(at) => (&rest[..at], rest[at..].trim_start_matches([' ', '\t'])),
        None => (rest, ""),
    };
    if to.is_empty() || body.is_empty() {
        return Command::Invalid("usage: send USER MESSAGE".into());
    }
    Command::Send {
        to: to.to_owned(),
        body: body.to_owned(),
    }
}

/// How `devices` is used, for a line that is not.
pub(crate) const DEVICES_USAGE: &str =
    "usage: devices | devices add SHA256:… LABEL | devices remove FINGERPRINT-START";

fn parse_devices(rest: &str) -> Command {
    let rest = rest.trim();
    let (op, args) = match rest.find(char::is_whitespace) {
        Some(at) => (&rest[..at], rest[at..].trim_start()),
        None => (rest, ""),
    };
    let invalid = |hint: &str| Command::Invalid(hint.to_owned());
    match op.to_ascii_lowercase().as_str() {
        "" | "list" if args.is_empty() => Command::Devices(DevicesCommand::List),
        "add" => {
            let (fingerprint, label) = match args.find(char::is_whitespace) {
                Some(at) => (&args[..at], args[at..].trim()),
                None => (args, ""),
            };
            if fingerprint.is_empty() || label.is_empty() {
                return invalid("usage: devices add SHA256:… LABEL");
            }
            match devices_add(fingerprint, label) {
                Ok(command) => Command::Devices(command),
                Err(hint) => Command::Invalid(hint),
            }
        }
        "remove" if !args.is_empty() && !args.contains(char::is_whitespace) => {
            Command::Devices(DevicesCommand::Remove {
                prefix: args.to_owned(),
            })
        }
        "remove" => invalid("usage: devices remove FINGERPRINT-START"),
        _ => invalid(DEVICES_USAGE),
    }
}

/// `devices add` with its fingerprint (with or without `SHA256:`) and label
/// checked, as the JSON command shares it.
pub(crate) fn devices_add(fingerprint: &str, label: &str) -> Result<DevicesCommand, String> {
    let full = if fingerprint.starts_with(crate::protocol::fingerprint::FINGERPRINT_PREFIX) {
        fingerprint.to_owned()
    } else {
        format!(
            "{}{fingerprint}",
            crate::protocol::fingerprint::FINGERPRINT_PREFIX
        )
    };
    let fingerprint = full.parse::<Fingerprint>().map_err(|_| {
        format!(
            "'{}' is not a whole device fingerprint (SHA256: and 43 characters, \
             as quic-chat whoami prints it on the other device)",
            truncate(fingerprint, 60)
        )
    })?;
    let label = label.trim();
    if label.is_empty() || label.len() > MAX_LABEL_BYTES {
        return Err(format!(
            "a device label is 1 to {MAX_LABEL_BYTES} bytes, got {}",
            label.len()
        ));
    }
    Ok(DevicesCommand::Add {
        fingerprint,
        label: label.to_owned(),
    })
}

/// The one device of `devices` whose fingerprint starts with `prefix` (with
/// or without `SHA256:`), or a one-line reason there is not exactly one.
pub(crate) fn resolve_device(devices: &[Device], prefix: &str) -> Result<Fingerprint, String> {
    let matching: Vec<Fingerprint> = devices
        .iter()
        .filter_map(|device| Fingerprint::from_slice(&device.fingerprint))
        .filter(|fingerprint| fingerprint.starts_with(prefix))
        .collect();
    let shown = truncate(prefix, 60);
    match matching.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!(
            "no device of this account has a fingerprint starting with '{shown}' \
             (devices lists them)"
        )),
        many => Err(format!(
            "'{shown}' starts {} devices' fingerprints; type more of it",
            many.len()
        )),
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(to: &str, body: &str) -> Command {
        Command::Send {
            to: to.into(),
            body: body.into(),
        }
    }

    #[test]
    fn send_keeps_the_message_verbatim() {
        assert_eq!(parse("send bob hi"), send("bob", "hi"));
        assert_eq!(
            parse("send bob  hello   there  \n"),
            send("bob", "hello   there  ")
        );
        assert_eq!(parse("SEND bob hi\r\n"), send("bob", "hi"));
        assert_eq!(parse("  send\tbob\thi\tthere"), send("bob", "hi\tthere"));
    }

    #[test]
    fn incomplete_sends_get_usage() {
        for line in ["send", "send bob", "send bob   ", "send   "] {
            assert_eq!(
                parse(line),
                Command::Invalid("usage: send USER MESSAGE".into()),
                "{line:?}"
            );
        }
    }

    #[test]
    fn simple_commands() {
        assert_eq!(parse("EXIT"), Command::Exit);
        assert_eq!(parse("exit\n"), Command::Exit);
        assert_eq!(parse("users"), Command::Users);
        assert_eq!(parse("help"), Command::Help);
        assert_eq!(parse("   "), Command::Nothing);
        assert_eq!(parse(""), Command::Nothing);
        assert!(matches!(parse("EXIT now"), Command::Invalid(_)));
        assert!(matches!(parse("dance"), Command::Invalid(hint) if hint.contains("help")));
        assert_eq!(parse("LIST"), Command::Users);
        assert_eq!(parse("?"), Command::Help);
        assert_eq!(parse("quit"), Command::Exit);
        assert_eq!(
            parse("users now"),
            Command::Invalid("'users' takes no arguments".into())
        );
    }

    fn device(byte: u8) -> Device {
        Device {
            fingerprint: vec![byte; 32],
            label: format!("d{byte}"),
            added_ms: 0,
            last_seen_ms: 0,
            current: false,
        }
    }

    #[test]
    fn devices_lists_adds_and_removes() {
        let fingerprint = Fingerprint::new([0xfb; 32]);
        let text = fingerprint.to_string();
        assert_eq!(parse("devices"), Command::Devices(DevicesCommand::List));
        assert_eq!(
            parse("DEVICES  list "),
            Command::Devices(DevicesCommand::List)
        );
        let add = Command::Devices(DevicesCommand::Add {
            fingerprint,
            label: "my  phone".into(),
        });
        assert_eq!(parse(&format!("devices add {text} my  phone ")), add);
        assert_eq!(
            parse(&format!("devices ADD {} my  phone", &text[7..])),
            add,
            "SHA256: may be left out"
        );
        assert_eq!(
            parse("devices remove SHA256:+/v7"),
            Command::Devices(DevicesCommand::Remove {
                prefix: "SHA256:+/v7".into()
            })
        );
        for (line, hint) in [
            ("devices add", "usage: devices add"),
            (&format!("devices add {text}"), "usage: devices add"),
            (
                "devices add SHA256:short phone",
                "not a whole device fingerprint",
            ),
            (
                &format!("devices add {text} {}", "x".repeat(65)),
                "1 to 64 bytes",
            ),
            ("devices remove", "usage: devices remove"),
            ("devices remove a b", "usage: devices remove"),
            ("devices list now", "usage: devices |"),
            ("devices dance", "usage: devices |"),
        ] {
            assert!(
                matches!(parse(line), Command::Invalid(ref h) if h.starts_with(hint) || h.contains(hint)),
                "{line:?}: {:?}",
                parse(line)
            );
        }
    }

    #[test]
    fn a_unique_prefix_names_a_device() {
        let mut devices = vec![device(0), device(1), device(2)];
        devices[2].fingerprint[0] = 0; // shares its first base64 character with device 0
        let first = Fingerprint::new([0; 32]);
        let one = Fingerprint::new([1; 32]);
        assert_eq!(resolve_device(&devices, &one.to_string()), Ok(one));
        assert_eq!(resolve_device(&devices, &one.to_string()[7..12]), Ok(one));
        assert_eq!(resolve_device(&devices, "SHA256:AAAAAA"), Ok(first));
        let ambiguous = resolve_device(&devices, "AA").unwrap_err();
        assert!(ambiguous.contains("starts 2 devices"), "{ambiguous}");
        let unknown = resolve_device(&devices, "SHA256:zzz").unwrap_err();
        assert!(unknown.starts_with("no device"), "{unknown}");
        assert!(resolve_device(&devices, "").is_err());
        assert!(resolve_device(&devices, "SHA256:").is_err());
    }

    #[test]
    fn help_is_drawn_from_the_table() {
        assert_eq!(
            help(),
            "\
commands:
  send USER MESSAGE      send MESSAGE to USER (the rest of the line, as typed)
  users                  list who is online
  devices [add|remove …] list your account's devices (* is this one); add FP LABEL adds the \
device whose quic-chat whoami printed FP; remove FP removes one (the start of FP is enough)
  help                   show this list
  EXIT                   leave the chat (end of input does the same)"
        );
    }
}
