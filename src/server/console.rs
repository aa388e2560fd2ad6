//! The operator console on stdin: `EXIT` shuts the server down. End of input
//! (a server run by a service manager, or with `</dev/null`) is not a shutdown.

use std::ops::ControlFlow;

use tokio_util::sync::CancellationToken;

/// What the operator typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleCommand {
    /// Shut the server down.
    Exit,
    /// Nothing (an empty line).
    Nothing,
    /// Something else.
    Unknown,
}

/// Parse one console line.
pub fn parse(line: &str) -> ConsoleCommand {
    match line.trim() {
        "" => ConsoleCommand::Nothing,
        word if word.eq_ignore_ascii_case("exit") => ConsoleCommand::Exit,
        _ => ConsoleCommand::Unknown,
    }
}

/// Read stdin on a plain thread (a pending tokio stdin read would hold up
/// runtime shutdown) and cancel `shutdown` when the operator types `EXIT`.
pub fn spawn(shutdown: CancellationToken) {
    let on_line = move |line: String| match parse(&line) {
        ConsoleCommand::Exit => {
            shutdown.cancel();
            ControlFlow::Break(())
        }
        ConsoleCommand::Nothing => ControlFlow::Continue(()),
        ConsoleCommand::Unknown => {
            tracing::warn!("unknown console command {line:?}; type EXIT to shut down");
            ControlFlow::Continue(())
        }
    };
    let on_end = |input_ended: bool| {
        if input_ended {
            tracing::debug!("console input closed; still serving (stop with SIGINT or SIGTERM)");
        }
    };
    if let Err(e) = crate::stdin::spawn_lines("console", on_line, on_end) {
        tracing::warn!("no operator console: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_in_any_case_shuts_down() {
        assert_eq!(parse("EXIT"), ConsoleCommand::Exit);
        assert_eq!(parse("  exit \r"), ConsoleCommand::Exit);
        assert_eq!(parse(""), ConsoleCommand::Nothing);
        assert_eq!(parse("EXIT now"), ConsoleCommand::Unknown);
    }
}
