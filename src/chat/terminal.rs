//! The line-editor front end for a person at a terminal, built on rustyline:
//! messages print above the prompt through rustyline's external printer so a
//! half-typed line is never garbled, history persists across sessions, and Tab
//! completes commands and online user names.
//!
//! rustyline's `readline` blocks, so it runs on its own thread and hands each
//! line to the chat loop over a channel, exactly like the plain stdin reader.
//!
//! Why rustyline: it has all three things needed in one small, well-kept crate
//! (an external printer that redraws the prompt and the half-typed line,
//! file-backed history, and a completion hook), with no extra features to
//! enable. rustyline-async fits tokio better but has no tab completion;
//! reedline has everything but pulls in crossterm and a much larger tree, and
//! its external printer is behind a feature flag.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use rustyline::completion::Completer;
use rustyline::config::{CompletionType, Config};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter, Helper};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::command::{self, Command, COMMANDS};
use super::names::OnlineNames;

/// The prompt shown while typing.
const PROMPT: &str = "> ";

/// Most history lines kept.
const HISTORY_SIZE: usize = 1000;

/// Where history is kept: `$XDG_STATE_HOME/quic-chat/history`, or
/// `$HOME/.local/state/quic-chat/history`. Relative or empty values are ignored,
/// as the XDG base directory specification asks.
pub(crate) fn history_path(
    xdg_state_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let absolute = |value: Option<std::ffi::OsString>| {
        value.map(PathBuf::from).filter(|path| path.is_absolute())
    };
    let state = absolute(xdg_state_home)
        .or_else(|| absolute(home).map(|home| home.join(".local").join("state")))?;
    Some(state.join("quic-chat").join("history"))
}

/// What Tab offers at `pos` in `line`: the start of the word being completed
/// and the candidates. Commands complete at the start of a line, online names
/// as the recipient of `send`.
fn complete(line: &str, pos: usize, names: &OnlineNames) -> (usize, Vec<String>) {
    let before = line.get(..pos).unwrap_or(line);
    let start = before.rfind(char::is_whitespace).map_or(0, |at| {
        at + before[at..].chars().next().map_or(1, char::len_utf8)
    });
    let word = &before[start..];
    let earlier: Vec<&str> = before[..start].split_whitespace().collect();
    let candidates = match earlier.as_slice() {
        // Command words as help shows them; a space after those that take arguments.
        [] => COMMANDS
            .iter()
            .filter(|spec| spec.word.to_lowercase().starts_with(&word.to_lowercase()))
            .map(|spec| {
                if spec.takes_args() {
                    format!("{} ", spec.word)
                } else {
                    spec.word.to_owned()
                }
            })
            .collect(),
        [devices] if devices.eq_ignore_ascii_case("devices") => ["add ", "remove "]
            .into_iter()
            .filter(|op| op.starts_with(&word.to_lowercase()))
            .map(str::to_owned)
            .collect(),
        [send] if send.eq_ignore_ascii_case("send") => names
            .matching(word)
            .into_iter()
            .map(|name| name + " ")
            .collect(),
        _ => Vec::new(),
    };
    (start, candidates)
}

/// rustyline's hooks: completion only.
struct ChatHelper {
    names: OnlineNames,
}

impl Completer for ChatHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(complete(line, pos, &self.names))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}
impl Highlighter for ChatHelper {}
impl Validator for ChatHelper {}
impl Helper for ChatHelper {}

/// Why the line editor could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the line editor")]
pub struct TerminalError(#[from] ReadlineError);

/// The running line editor: the output to print through, and what is needed
/// to leave the terminal as it was found.
pub(crate) struct Terminal {
    out: TerminalOut,
    reading: Arc<AtomicBool>,
    #[cfg(unix)]
    saved: Option<nix::sys::termios::Termios>,
}

/// Output that goes above the prompt while the editor is reading.
pub(crate) struct TerminalOut {
    printer: Option<Box<dyn ExternalPrinter + Send>>,
    buffer: Vec<u8>,
}

impl Write for TerminalOut {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buffer).into_owned();
        self.buffer.clear();
        match &mut self.printer {
            Some(printer) => printer.print(text).map_err(std::io::Error::other),
            None => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(text.as_bytes())?;
                stdout.flush()
            }
        }
    }
}

impl Terminal {
    /// Start the editor on its own thread. Each line typed goes to `lines`;
    /// `EXIT`, Ctrl-C and Ctrl-D end the reading (Ctrl-D by closing `lines`,
    /// Ctrl-C by cancelling `shutdown`). History is read from and appended to
    /// `history`, if given; failing to do so is never fatal.
    pub(crate) fn start(
        lines: mpsc::Sender<String>,
        names: OnlineNames,
        history: Option<PathBuf>,
        shutdown: CancellationToken,
    ) -> Result<Terminal, TerminalError> {
        #[cfg(unix)]
        let saved = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
        let config = Config::builder()
            .auto_add_history(false)
            .history_ignore_dups(true)?
            .max_history_size(HISTORY_SIZE)?
            .completion_type(CompletionType::List)
            .build();
        let mut editor: Editor<ChatHelper, FileHistory> = Editor::with_config(config)?;
        editor.set_helper(Some(ChatHelper { names }));
        if let Some(path) = &history {
            prepare_history_file(path);
            if let Err(e) = editor.load_history(path) {
                tracing::debug!("no history loaded from {}: {e}", path.display());
            }
        }
        // Without a terminal on stdout there is nothing to garble: print directly.
        let printer = editor
            .create_external_printer()
            .ok()
            .map(|printer| Box::new(printer) as Box<dyn ExternalPrinter + Send>);
        let reading = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reading);
        std::thread::spawn(move || read_lines(editor, lines, history, flag, shutdown));
        Ok(Terminal {
            out: TerminalOut {
                printer,
                buffer: Vec::new(),
            },
            reading,
            #[cfg(unix)]
            saved,
        })
    }

    /// Where the chat loop writes.
    pub(crate) fn out(&mut self) -> &mut TerminalOut {
        &mut self.out
    }

    /// The chat is over: make sure everything printed reached the screen, and
    /// if the editor is still waiting for a line, give the terminal back in the
    /// mode it was found in.
    pub(crate) fn finish(mut self) {
        if !self.reading.load(Ordering::SeqCst) {
            return;
        }
        if let Some(mut printer) = self.out.printer.take() {
            // The printer's channel holds one message: once a second empty one
            // is taken, everything before it has been printed.
            let (done_tx, done_rx) = std_mpsc::channel();
            std::thread::spawn(move || {
                let _ = printer.print(String::new());
                let _ = printer.print(String::new());
                let _ = done_tx.send(());
            });
            let _ = done_rx.recv_timeout(Duration::from_secs(1));
        }
        #[cfg(unix)]
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(b"\r\n");
        let _ = stdout.flush();
    }
}

/// The editor thread: read lines until EXIT, Ctrl-C, Ctrl-D or the chat is over.
fn read_lines(
    mut editor: Editor<ChatHelper, FileHistory>,
    lines: mpsc::Sender<String>,
    history: Option<PathBuf>,
    reading: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    loop {
        reading.store(true, Ordering::SeqCst);
        let read = editor.readline(PROMPT);
        reading.store(false, Ordering::SeqCst);
        match read {
            Ok(line) => {
                if !line.trim().is_empty() && editor.add_history_entry(line.as_str()).is_ok() {
                    if let Some(path) = &history {
                        if let Err(e) = editor.append_history(path) {
                            tracing::debug!("cannot save history to {}: {e}", path.display());
                        }
                    }
                }
                let exit = command::parse(&line) == Command::Exit;
                if lines.blocking_send(line).is_err() || exit {
                    return;
                }
            }
            Err(ReadlineError::Interrupted) => {
                shutdown.cancel();
                return;
            }
            Err(_) => return, // Ctrl-D or a terminal failure: end of input
        }
    }
}

/// Create the history file's directory, and the file itself readable by its
/// owner only (it holds the messages you typed). Failures are only logged.
fn prepare_history_file(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::debug!("cannot create {}: {e}", dir.display());
            return;
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    if let Err(e) = options.open(path) {
        tracing::debug!("cannot create {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_follows_xdg() {
        assert_eq!(
            history_path(Some("/state".into()), Some("/home/me".into())),
            Some(PathBuf::from("/state/quic-chat/history"))
        );
        assert_eq!(
            history_path(Some("relative".into()), Some("/home/me".into())),
            Some(PathBuf::from("/home/me/.local/state/quic-chat/history"))
        );
        assert_eq!(
            history_path(Some("".into()), Some("/home/me".into())),
            Some(PathBuf::from("/home/me/.local/state/quic-chat/history"))
        );
        assert_eq!(history_path(None, None), None);
    }

    #[test]
    fn tab_completes_commands_then_names() {
        let names = OnlineNames::default();
        names.replace(&["alice".into(), "Albert".into(), "bob".into()]);
        assert_eq!(complete("se", 2, &names), (0, vec!["send ".to_owned()]));
        assert_eq!(complete("ex", 2, &names), (0, vec!["EXIT".to_owned()]));
        assert_eq!(complete("", 0, &names).1.len(), COMMANDS.len());
        assert_eq!(
            complete("send al", 7, &names),
            (5, vec!["Albert ".to_owned(), "alice ".to_owned()])
        );
        assert_eq!(complete("SEND  b", 7, &names), (6, vec!["bob ".to_owned()]));
        assert_eq!(complete("send bob he", 11, &names).1, Vec::<String>::new());
        assert_eq!(complete("users b", 7, &names).1, Vec::<String>::new());
        assert_eq!(
            complete("devices r", 9, &names),
            (8, vec!["remove ".to_owned()])
        );
        assert_eq!(complete("devices ", 8, &names).1.len(), 2);
        assert_eq!(complete("send ü", 7, &names), (5, Vec::new()));
    }
}
