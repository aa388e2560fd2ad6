//! The server under test as a child process, so that its CPU time and memory
//! can be read apart from the load generator's.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// How long the child may take to print its address and CA path.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful stop may take before the child is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the child server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerProcessError {
    /// The process could not be spawned or its output read.
    #[error("cannot start the server process")]
    Io(#[from] std::io::Error),
    /// It did not print its address as expected.
    #[error("the server process did not report its address (got {0:?})")]
    NoAddress(String),
    /// It printed nothing (or not enough) in time.
    #[error("the server process did not report its address within {0:?}")]
    Silent(Duration),
}

/// A `quic-chat server` child on 127.0.0.1 with a temporary certificate directory.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The CA file to connect with.
    pub ca: PathBuf,
    _cert_dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Start this executable as `server --port 0`, with the human-oriented limits
    /// lifted and `extra_args` appended; fails if it does not announce itself
    /// within 20 s.
    pub async fn start(extra_args: &[String]) -> Result<Self, ServerProcessError> {
        let cert_dir = tempfile::tempdir()?;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["server", "--port", "0", "--bind", "127.0.0.1"])
            .arg("--cert-dir")
            .arg(cert_dir.path())
            .arg("--data-dir")
            .arg(cert_dir.path().join("data"))
            .args(["--rate-limit", "0", "--max-connections-per-ip", "0"])
            .args(["--max-connections", "100000"])
            .args(extra_args)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let (addr, ca) = announcement(&mut child, START_TIMEOUT).await?;
        let stdin = child.stdin.take();
        Ok(ServerProcess {
            child,
            stdin,
            addr,
            ca,
            _cert_dir: cert_dir,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// Ask for a graceful shutdown (EXIT on its console); kill it if it lingers.
    pub async fn stop(mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"EXIT\n").await;
            let _ = stdin.flush().await;
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.start_kill();
        }
    }
}

/// The address and CA path the child prints as its first two stdout lines,
/// waiting at most `limit` for both.
async fn announcement(
    child: &mut Child,
    limit: Duration,
) -> Result<(String, PathBuf), ServerProcessError> {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let read = async {
        let first = lines.next_line().await?.unwrap_or_default();
        let addr = first
            .strip_prefix("listening on ")
            .ok_or_else(|| ServerProcessError::NoAddress(first.clone()))?
            .to_owned();
        let second = lines.next_line().await?.unwrap_or_default();
        let ca = second
            .strip_prefix("CA certificate for clients: ")
            .ok_or_else(|| ServerProcessError::NoAddress(second.clone()))?
            .into();
        Ok((addr, ca))
    };
    tokio::time::timeout(limit, read)
        .await
        .map_err(|_| ServerProcessError::Silent(limit))?
}

/// Clock ticks per second of /proc/PID/stat times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// User + system CPU time of process `pid`, from /proc (Linux only).
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(Duration::from_secs_f64(ticks / USER_HZ))
}

/// Resident set size of process `pid` in bytes, from /proc (Linux only).
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh(script: &str) -> Child {
        Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("sh runs")
    }

    #[tokio::test]
    async fn a_child_that_prints_nothing_is_an_error_in_time() {
        let mut child = sh("sleep 30");
        let started = std::time::Instant::now();
        let error = announcement(&mut child, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(error, ServerProcessError::Silent(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn the_address_and_ca_lines_are_read() {
        let mut child =
            sh("echo 'listening on 127.0.0.1:9'; echo 'CA certificate for clients: /c/ca.pem'");
        let (addr, ca) = announcement(&mut child, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(
            (addr.as_str(), ca),
            ("127.0.0.1:9", PathBuf::from("/c/ca.pem"))
        );
    }

    #[tokio::test]
    async fn anything_else_is_reported() {
        let mut child = sh("echo hello");
        let error = announcement(&mut child, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ServerProcessError::NoAddress(ref got) if got == "hello"),
            "{error:?}"
        );
    }
}
