//! The operator console on stdin: `EXIT` shuts the server down. End of input
//! (a server run by a service manager, or with `</dev/null`) is not a shutdown.

use std::io::BufRead;

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
    let spawned = std::thread::Builder::new()
        .name("console".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match stdin.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                // A line that is not UTF-8 is just an unknown command.
                let line = String::from_utf8_lossy(&raw);
                match parse(&line) {
                    ConsoleCommand::Exit => {
                        shutdown.cancel();
                        return;
                    }
                    ConsoleCommand::Nothing => {}
                    ConsoleCommand::Unknown => {
                        tracing::warn!("unknown console command {line:?}; type EXIT to shut down")
                    }
                }
            }
            tracing::debug!("console input closed; still serving (stop with SIGINT or SIGTERM)");
        });
    if let Err(e) = spawned {
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
