//! One typed input line, parsed purely.

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
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

/// One line per command, for `help`.
pub const HELP: &str = "\
commands:
  send USER MESSAGE   send MESSAGE to USER (the rest of the line, as typed)
  users               list who is online
  help                show this list
  EXIT                leave the chat (end of input does the same)";

/// Parse one input line (without or with its line ending).
pub fn parse(line: &str) -> Command {
    let line = line.trim_end_matches(['\n', '\r']);
    let trimmed = line.trim_start();
    let (word, rest) = match trimmed.find(char::is_whitespace) {
        Some(at) => (&trimmed[..at], &trimmed[at..]),
        None => (trimmed, ""),
    };
    if word.is_empty() {
        return Command::Nothing;
    }
    let lone = rest.trim().is_empty();
    match word.to_ascii_lowercase().as_str() {
        "send" => parse_send(rest),
        "users" | "list" if lone => Command::Users,
        "help" | "?" if lone => Command::Help,
        "exit" | "quit" if lone => Command::Exit,
        "users" | "list" | "help" | "?" | "exit" | "quit" => {
            Command::Invalid(format!("'{word}' takes no arguments"))
        }
        _ => Command::Invalid(format!(
            "unknown command '{}'; type help for the list",
            truncate(word, 40)
        )),
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
    }
}
