//! The operator console on stdin: `EXIT` shuts the server down, and the
//! account commands manage who holds which name. End of input (a server run
//! by a service manager, or with `</dev/null`) is not a shutdown.

use std::io::Write;
use std::ops::ControlFlow;

use tokio_util::sync::CancellationToken;

use super::accounts::Operator;
use crate::protocol::{Failure, Fingerprint, NameKey};
use crate::store::{AccountRecord, DeviceRecord};

/// What the operator typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConsoleCommand {
    /// Shut the server down.
    Exit,
    /// Nothing (an empty line).
    Nothing,
    /// List the console's commands.
    Help,
    /// List every account.
    Accounts,
    /// Show one account.
    Account(NameKey),
    /// Create an account with a device, or add the device to it.
    AddDevice(String, Fingerprint),
    /// Unbind a device from an account.
    RemoveDevice(NameKey, Fingerprint),
    /// Delete an account.
    Delete(NameKey),
    /// Show the cluster: nodes, this node's lease, the NATS round trip.
    Cluster,
    /// Disconnect a user wherever in the cluster it is.
    Kick(NameKey),
    /// A line that is none of these, with what is wrong with it.
    Invalid(String),
}

/// The console's commands, as `help` lists them.
const HELP: &str = "commands: accounts | account NAME | account add NAME SHA256:... | \
account remove-device NAME SHA256:... | account delete NAME | cluster | cluster kick NAME | EXIT";

/// Parse one console line.
pub(crate) fn parse(line: &str) -> ConsoleCommand {
    let words: Vec<&str> = line.split_whitespace().collect();
    let name = |text: &str| NameKey::new(text).map_err(|e| format!("'{text}': {e}"));
    let device = |text: &str| {
        text.parse::<Fingerprint>()
            .map_err(|e| format!("'{text}': {e}"))
    };
    let parsed = match words.as_slice() {
        [] => Ok(ConsoleCommand::Nothing),
        [word] if word.eq_ignore_ascii_case("exit") => Ok(ConsoleCommand::Exit),
        ["help"] => Ok(ConsoleCommand::Help),
        ["accounts"] => Ok(ConsoleCommand::Accounts),
        ["account", "add", who, fp] => {
            name(who).and_then(|_| Ok(ConsoleCommand::AddDevice((*who).to_owned(), device(fp)?)))
        }
        ["account", "remove-device", who, fp] => {
            name(who).and_then(|key| Ok(ConsoleCommand::RemoveDevice(key, device(fp)?)))
        }
        ["account", "delete", who] => name(who).map(ConsoleCommand::Delete),
        ["account", "add" | "remove-device" | "delete", ..] => {
            Err(format!("wrong number of words; {HELP}"))
        }
        ["account", who] => name(who).map(ConsoleCommand::Account),
        ["cluster"] => Ok(ConsoleCommand::Cluster),
        ["cluster", "kick", who] => name(who).map(ConsoleCommand::Kick),
        _ => Err(format!("unknown command; {HELP}")),
    };
    parsed.unwrap_or_else(ConsoleCommand::Invalid)
}

/// Read stdin on a plain thread and act on each line: `EXIT` cancels
/// `shutdown`; account commands run on `runtime` against `operator`, and
/// their results go to stdout, one line each.
pub fn spawn(shutdown: CancellationToken, operator: Operator, runtime: tokio::runtime::Handle) {
    let on_line = move |line: String| {
        let command = parse(&line);
        if command == ConsoleCommand::Exit {
            shutdown.cancel();
            return ControlFlow::Break(());
        }
        let mut out = std::io::stdout().lock();
        let written = runtime.block_on(execute(command, &operator, &mut out));
        if written.and_then(|()| out.flush()).is_err() {
            tracing::warn!("cannot write console output");
        }
        ControlFlow::Continue(())
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

/// Run one console line (not `EXIT`) against `operator` and return what it
/// printed: the console's commands for embedders and tests.
pub async fn run_command(operator: &Operator, line: &str) -> String {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = execute(parse(line), operator, &mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Carry out `command` and write its result to `out`: one line, or one line
/// per account or device for the listings. `Exit` writes nothing.
pub(crate) async fn execute(
    command: ConsoleCommand,
    operator: &Operator,
    out: &mut impl Write,
) -> std::io::Result<()> {
    match command {
        ConsoleCommand::Exit | ConsoleCommand::Nothing => Ok(()),
        ConsoleCommand::Help => writeln!(out, "{HELP}"),
        ConsoleCommand::Invalid(why) => writeln!(out, "error: {why}"),
        ConsoleCommand::Accounts => match operator.list().await {
            Ok(accounts) if accounts.is_empty() => writeln!(out, "no accounts"),
            Ok(accounts) => {
                for account in &accounts {
                    writeln!(out, "{}", account_line(account, operator))?;
                }
                Ok(())
            }
            Err(e) => writeln!(out, "error: {e}"),
        },
        ConsoleCommand::Account(key) => match operator.show(key).await {
            Ok(Some(account)) => {
                writeln!(out, "{}", account_line(&account, operator))?;
                for device in &account.devices {
                    writeln!(out, "  {}", device_line(device))?;
                }
                match operator.waiting(key).await {
                    Ok(Some(waiting)) => writeln!(out, "  {}", waiting_line(waiting)),
                    Ok(None) => Ok(()),
                    Err(e) => writeln!(out, "  stored mail unknown: {e}"),
                }
            }
            Ok(None) => writeln!(out, "error: no account named {}", key.as_str()),
            Err(e) => writeln!(out, "error: {e}"),
        },
        ConsoleCommand::AddDevice(name, device) => match operator.bind(&name, device).await {
            Ok(Ok((account, true))) => {
                writeln!(out, "created account {} with device {device}", account.name)
            }
            Ok(Ok((account, false))) => {
                writeln!(out, "added device {device} to {}", account.name)
            }
            Ok(Err(failure)) => writeln!(out, "error: {}", bind_failure(failure, &name)),
            Err(e) => writeln!(out, "error: {e}"),
        },
        ConsoleCommand::RemoveDevice(key, device) => match operator.unbind(key, device).await {
            Ok(Ok(account)) if account.devices.is_empty() => writeln!(
                out,
                "removed device {device} from {}; it has no devices left (add one with account add)",
                account.name
            ),
            Ok(Ok(account)) => writeln!(out, "removed device {device} from {}", account.name),
            Ok(Err(_)) => writeln!(
                out,
                "error: {} has no device {device} (or no such account)",
                key.as_str()
            ),
            Err(e) => writeln!(out, "error: {e}"),
        },
        ConsoleCommand::Delete(key) => match operator.delete(key).await {
            Ok(Some(account)) => writeln!(out, "deleted account {}", account.name),
            Ok(None) => writeln!(out, "error: no account named {}", key.as_str()),
            Err(e) => writeln!(out, "error: {e}"),
        },
        ConsoleCommand::Cluster => match operator.remote() {
            None => writeln!(out, "not in a cluster (start with --cluster)"),
            Some(remote) => {
                for line in remote.status_lines(operator.connected_here()).await {
                    writeln!(out, "{line}")?;
                }
                Ok(())
            }
        },
        ConsoleCommand::Kick(key) => {
            let line = match operator.remote() {
                Some(remote) => remote.kick(key).await,
                None => match operator.kick_here(key) {
                    true => format!("disconnected {}", key.as_str()),
                    false => format!("{} is not online", key.as_str()),
                },
            };
            writeln!(out, "{line}")
        }
    }
}

/// `alice: 2 devices, last seen 2026-12-01 21:05 UTC, online`.
fn account_line(account: &AccountRecord, operator: &Operator) -> String {
    let last_seen = account
        .devices
        .iter()
        .map(|d| d.last_seen_ms)
        .max()
        .unwrap_or(0);
    let online = NameKey::new(&account.name).is_ok_and(|key| operator.is_online(&key));
    format!(
        "{}: {} device{}, last seen {}, {}",
        account.name,
        account.devices.len(),
        if account.devices.len() == 1 { "" } else { "s" },
        when(last_seen),
        if online { "online" } else { "offline" }
    )
}

/// `stored: 3 messages (1,204 bytes) waiting for it, 2 receipts for its sender`.
fn waiting_line(waiting: super::accounts::Waiting) -> String {
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    // A cluster's stream counts messages per recipient, not their bytes.
    let bytes = waiting
        .bytes
        .map(|bytes| format!(" ({bytes} bytes)"))
        .unwrap_or_default();
    format!(
        "stored: {} message{}{bytes} for it, {} late receipt{} for it as a sender",
        waiting.messages,
        plural(waiting.messages),
        waiting.receipts,
        plural(waiting.receipts)
    )
}

/// `SHA256:… "phone", added …, last seen …`.
fn device_line(device: &DeviceRecord) -> String {
    format!(
        "{} {:?}, added {}, last seen {}",
        device.fingerprint,
        device.label,
        when(device.added_ms),
        when(device.last_seen_ms)
    )
}

/// Why `account add` failed.
fn bind_failure(failure: Failure, name: &str) -> String {
    match failure {
        Failure::TooMany => format!("{name} already has the most devices an account may have"),
        Failure::InUse => "that key belongs to another account".to_owned(),
        other => format!("cannot add the device to {name}: {other:?}"),
    }
}

/// A Unix-ms time as `2026-12-01 21:05 UTC`, or `never` for 0.
fn when(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "never".to_owned();
    }
    let nanos = i128::from(unix_ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => "unknown".to_owned(),
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
        assert!(matches!(parse("EXIT now"), ConsoleCommand::Invalid(_)));
    }

    #[test]
    fn account_commands_parse_and_bad_ones_say_why() {
        let fp = Fingerprint::new([7; 32]);
        let key = NameKey::new("alice").unwrap();
        assert_eq!(parse("accounts"), ConsoleCommand::Accounts);
        assert_eq!(parse("account Alice"), ConsoleCommand::Account(key));
        assert_eq!(
            parse(&format!("account add Alice {fp}")),
            ConsoleCommand::AddDevice("Alice".into(), fp)
        );
        assert_eq!(
            parse(&format!("account remove-device alice {fp}")),
            ConsoleCommand::RemoveDevice(key, fp)
        );
        assert_eq!(parse("account delete alice"), ConsoleCommand::Delete(key));
        for bad in [
            "account add alice SHA256:nope",
            "account add bad!name SHA256:x",
            "account delete",
            "account add alice",
            "frobnicate",
        ] {
            assert!(matches!(parse(bad), ConsoleCommand::Invalid(_)), "{bad}");
        }
    }

    #[test]
    fn times_show_in_utc_and_zero_is_never() {
        assert_eq!(when(0), "never");
        assert_eq!(when(1_764_623_100_000), "2025-12-01 21:05 UTC");
    }
}
