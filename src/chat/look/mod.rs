//! How the chat looks: each [`Look`] turns an [`Event`] into text and reads
//! input lines its own way. Plain lines for scripts over pipes, a coloured
//! view for a person at a terminal (`pretty.rs`), or JSON for bots (`json.rs`).
//! A look never reads the clock: the loop passes the time in.

mod json;
mod plain;
mod pretty;

pub(crate) use pretty::colour_wanted;
pub use pretty::Pretty;

use super::command::{self, Command};
use super::event::Event;

/// How events are shown and input lines are read.
#[derive(Debug, Clone)]
pub enum Look {
    /// Plain lines, as scripts over pipes have always seen them.
    Plain,
    /// For a person at a terminal: colours, timestamps, echoes and marks.
    Pretty(Pretty),
    /// One JSON object per event; input lines may be JSON commands too.
    Json,
}

impl Look {
    /// The output for `event` (without a final line break), with `now_ms` as
    /// the time of local events such as receipts; `None` shows nothing.
    pub(crate) fn format(&self, event: &Event<'_>, now_ms: u64) -> Option<String> {
        match self {
            Look::Plain => plain::format(event),
            Look::Pretty(pretty) => pretty.format(event, now_ms),
            Look::Json => Some(json::event(event)),
        }
    }

    /// The command an input line asks for.
    pub(crate) fn parse(&self, line: &str) -> Command {
        match self {
            Look::Json => json::parse_input(line),
            Look::Plain | Look::Pretty(_) => command::parse(line),
        }
    }
}
