//! One typed input line, parsed purely.

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
pub(crate) const COMMANDS: [Spec; 4] = [
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
        let mut text = String::from("commands:");
        for spec in &COMMANDS {
            let usage = match spec.args {
                Some(args) => format!("{} {args}", spec.word),
                None => spec.word.to_owned(),
            };
            text.push_str(&format!("\n  {usage:<19} {}", spec.help));
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

    #[test]
    fn help_is_drawn_from_the_table() {
        assert_eq!(
            help(),
            "\
commands:
  send USER MESSAGE   send MESSAGE to USER (the rest of the line, as typed)
  users               list who is online
  help                show this list
  EXIT                leave the chat (end of input does the same)"
        );
    }
}
