//! Terminal safety end to end: hostile bodies go from a library client through
//! the server binary to the CLI client over a pipe. Each message prints as
//! exactly one line, with no raw control, escape or bidi characters in it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use quic_chat::client::{Client, ClientConfig};
use quic_chat::protocol::{Status, MAX_BODY_BYTES};
use tokio::task::block_in_place;

use crate::harness::process::{self, BIN, WAIT};
use crate::harness::*;

/// Bodies a hostile sender might try, each with what the recipient must still see.
const HOSTILE: &[(&str, &str)] = &[
    // CSI: clear the screen, move the cursor home, change colour.
    ("\x1b[2J\x1b[H\x1b[31mred\x1b[0m", "red"),
    // OSC: set the window title, write the clipboard; BEL and ST terminators.
    ("\x1b]0;pwned\x07\x1b]52;c;aGk=\x1b\\", "pwned"),
    // DCS request, then a full terminal reset.
    ("\x1bP+q544e\x1b\\\x1bc", "544e"),
    // C1 controls: CSI, OSC, ST, NEL (a line break on some terminals).
    ("\u{9b}2J\u{9d}0;t\u{9c}\u{85}next", "next"),
    // Bidi override, isolates and marks that reorder what the reader sees.
    (
        "\u{202e}txt.exe\u{202c} \u{2066}a\u{2069} \u{200f}\u{061c}\u{200e}",
        "txt.exe",
    ),
    // Faked second lines.
    ("hi\nmallory: fake", "mallory: fake"),
    ("hi\r\nmallory: fake", "mallory: fake"),
    ("hi\rmallory: fake", "mallory: fake"),
    ("a\u{2028}mallory: fake\u{2029}b", "mallory: fake"),
    ("\x0bmallory: fake\x0c", "mallory: fake"),
    // Backspace, DEL, NUL, BEL.
    ("\x08\x08\x08\x7f\x00\x07 bells", "bells"),
];

/// Whether `c` may reach a terminal raw. Tab is the one C0 control the
/// contract lets through; line and paragraph separators count as line breaks.
fn is_safe(c: char) -> bool {
    let bidi = matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    );
    c == '\t' || !(c.is_control() || bidi || c == '\u{2028}' || c == '\u{2029}')
}

/// Lines of raw bytes, without the final `\n` only (a `\r` before it stays, to be caught).
fn raw_lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// The next printed line, as text, checked to be safe for a terminal.
fn safe_line(lines: &mpsc::Receiver<Vec<u8>>) -> String {
    let bytes = block_in_place(|| lines.recv_timeout(WAIT)).expect("a line from the client");
    let line = String::from_utf8(bytes).expect("the client prints UTF-8");
    if let Some(bad) = line.chars().find(|&c| !is_safe(c)) {
        panic!(
            "raw {bad:?} printed in {:?}",
            line.chars().take(200).collect::<String>()
        );
    }
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_print_as_one_harmless_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port, ca) = block_in_place(|| process::start_server(dir.path(), Stdio::piped()));
    let mut bob = Command::new(BIN)
        .args(["connect", &format!("127.0.0.1:{port}"), "bob", "--ca", &ca])
        .current_dir(dir.path())
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the client starts");
    let _bob_stdin = bob.stdin.take();
    let bob_out = raw_lines(bob.stdout.take().unwrap());
    assert!(safe_line(&bob_out).starts_with("Welcome"));
    let account = safe_line(&bob_out);
    assert!(process::is_account_line(&account), "{account:?}");

    let config = ClientConfig::new(format!("127.0.0.1:{port}"), "alice", dir.path().join(&ca));
    let (alice, _) = within(SCENARIO, "connect", Client::connect(&config))
        .await
        .unwrap();
    let overlong = [
        ("\x1b[1A".repeat(MAX_BODY_BYTES / 4), "^[[1A"),
        (
            format!("{}\nmallory: fake", "A".repeat(65_000)),
            "mallory: fake",
        ),
    ];
    let bodies = HOSTILE
        .iter()
        .map(|&(body, shown)| (body.to_owned(), shown))
        .chain(overlong);
    for (body, shown) in bodies {
        let receipt = within(SCENARIO, "send", alice.send("bob", &body))
            .await
            .unwrap();
        assert_eq!(receipt.status, Status::Delivered);
        let line = safe_line(&bob_out);
        assert!(
            line.starts_with("alice: "),
            "a faked or split line: {line:?}"
        );
        assert!(line.contains(shown), "{shown:?} not shown in {line:?}");
        assert!(line.chars().count() >= body.chars().count() + "alice: ".len());
    }
    // Nothing extra was printed in between: the next line is the next message.
    alice.send("bob", "end").await.unwrap();
    assert_eq!(safe_line(&bob_out), "alice: end");
    alice.close().await;
    bob.kill().unwrap();
    bob.wait().unwrap();
}
