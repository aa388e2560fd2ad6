//! The terminal program behind `quic-chat connect`, built on the
//! [`client`](crate::client) library: [`run`] connects, picks a look and an
//! input source, and runs the chat [`run_session`] loop until the user leaves,
//! the server shuts down, or the caller's shutdown token is cancelled.
//!
//! Files, bottom up: `sanitize.rs` (received text made harmless),
//! `command.rs` (the command table and the input line parsed purely),
//! `event.rs` (what the loop shows: the vocabulary of the looks), `look/`
//! (plain lines, the coloured terminal view, JSON), `names.rs` (online names
//! for completion), `session.rs` (the loop), `terminal.rs` (the rustyline
//! line editor), and here the wiring.

mod command;
mod event;
mod look;
mod names;
mod sanitize;
mod session;
mod terminal;

pub use look::{Look, Pretty};
pub use names::OnlineNames;
pub use session::{run_session, run_session_reconnecting, Frontend, Outcome, SessionError};
pub use terminal::TerminalError;

use std::ffi::OsString;
use std::ops::ControlFlow;

use time::UtcOffset;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientConfig, ClientError, Connector};
use terminal::Terminal;

/// Input lines waiting for the loop.
const LINES_BUFFER: usize = 64;

/// What the chat program needs to know about where it runs, read by the
/// caller (so that tests and `main` decide, not the library).
#[derive(Debug, Clone)]
pub struct TerminalEnv {
    /// One JSON object per event, and JSON commands accepted (`--json`).
    pub json: bool,
    /// Whether stdin is a terminal (if not, plain lines are read from it).
    pub stdin_is_terminal: bool,
    /// Whether stdout is a terminal (if not, no colour).
    pub stdout_is_terminal: bool,
    /// The value of `NO_COLOR`.
    pub no_color: Option<OsString>,
    /// The value of `XDG_STATE_HOME`, for the history file.
    pub xdg_state_home: Option<OsString>,
    /// The value of `HOME`, for the history file.
    pub home: Option<OsString>,
    /// The local time zone's offset from UTC, for timestamps.
    pub offset: UtcOffset,
}

impl TerminalEnv {
    /// This process's environment; `offset` must be read by the caller while
    /// it is still single-threaded.
    pub fn from_process(json: bool, offset: UtcOffset) -> TerminalEnv {
        use std::io::IsTerminal;
        TerminalEnv {
            json,
            stdin_is_terminal: std::io::stdin().is_terminal(),
            stdout_is_terminal: std::io::stdout().is_terminal(),
            no_color: std::env::var_os("NO_COLOR"),
            xdg_state_home: std::env::var_os("XDG_STATE_HOME"),
            home: std::env::var_os("HOME"),
            offset,
        }
    }
}

/// Why the chat program stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// Connecting or registering failed.
    #[error(transparent)]
    Connect(#[from] ClientError),
    /// The line editor could not start.
    #[error(transparent)]
    Terminal(#[from] TerminalError),
    /// The chat ended abnormally.
    #[error("chat ended")]
    Session(#[source] SessionError),
}

/// Connect as `config` says and chat on stdin and stdout: plain lines (or
/// JSON) over pipes, the line editor at a terminal. Cancelling `shutdown`
/// leaves the way EXIT does.
pub async fn run(
    config: &ClientConfig,
    env: TerminalEnv,
    shutdown: CancellationToken,
) -> Result<Outcome, ChatError> {
    let connect = async {
        let connector = Connector::new(config).await?;
        let (client, incoming) = connector.connect(&config.username).await?;
        Ok::<_, ClientError>((connector, client, incoming))
    };
    let (connector, client, incoming) = tokio::time::timeout(config.connect_timeout, connect)
        .await
        .map_err(|_| ClientError::Timeout(config.server.clone()))??;
    let result = chat(connector.clone(), client, incoming, env, shutdown).await;
    // Make sure the BYE is on the wire before the caller exits.
    connector.wait_idle(config.close_timeout).await;
    result
}

/// The chat on a connection made by `connector` (which reconnects it if lost).
async fn chat(
    connector: Connector,
    client: crate::client::Client,
    incoming: crate::client::Incoming,
    env: TerminalEnv,
    shutdown: CancellationToken,
) -> Result<Outcome, ChatError> {
    let (lines_tx, lines) = mpsc::channel(LINES_BUFFER);
    // Ctrl-C in the editor leaves too, without cancelling the caller's token.
    let leave = shutdown.child_token();
    if env.json || !env.stdin_is_terminal {
        spawn_stdin_lines(lines_tx);
        let frontend = if env.json {
            Frontend {
                look: Look::Json,
                names: None,
            }
        } else {
            Frontend::plain()
        };
        let mut out = std::io::stdout();
        return run_session_reconnecting(
            connector, client, incoming, lines, &mut out, &frontend, leave,
        )
        .await
        .map_err(ChatError::Session);
    }
    let colour = look::colour_wanted(env.no_color.as_deref(), env.stdout_is_terminal);
    let names = OnlineNames::default();
    let frontend = Frontend {
        look: Look::Pretty(Pretty::new(colour, env.offset)),
        names: Some(names.clone()),
    };
    let history = terminal::history_path(env.xdg_state_home, env.home);
    let mut terminal = Terminal::start(lines_tx, names, history, leave.clone())?;
    let result = run_session_reconnecting(
        connector,
        client,
        incoming,
        lines,
        terminal.out(),
        &frontend,
        leave,
    )
    .await;
    terminal.finish();
    result.map_err(ChatError::Session)
}

/// Hand stdin's lines to the loop; the channel closes at end of input.
fn spawn_stdin_lines(tx: mpsc::Sender<String>) {
    let on_line = move |line: String| match tx.blocking_send(line) {
        Ok(()) => ControlFlow::Continue(()),
        Err(_) => ControlFlow::Break(()),
    };
    if let Err(e) = crate::stdin::spawn_lines("stdin", on_line, drop) {
        tracing::warn!("cannot read stdin: {e}");
    }
}
