//! The built binary as a child process: `Proc` reads its output line by line
//! on threads, and every wait on it is bounded (like ripgrep's `util.rs`).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The built `quic-chat` binary.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_quic-chat");
/// How long to wait for a process to print a line or exit.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A running `quic-chat` process with its output read line by line on threads
/// (used by the CLI, fault, terminal-safety and bench tests).
pub(crate) struct Proc {
    /// The process (tests kill it to simulate a crash).
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    pub(crate) fn spawn(args: &[&str], dir: &Path, stdin: Stdio) -> Proc {
        Self::spawn_with_env(args, dir, stdin, &[])
    }

    pub(crate) fn spawn_with_env(
        args: &[&str],
        dir: &Path,
        stdin: Stdio,
        env: &[(&str, &Path)],
    ) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env_remove("SSLKEYLOGFILE")
            // A client's identity is made in the test's directory, never in $HOME.
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            stdout,
            stderr,
        }
    }

    pub(crate) fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().unwrap();
    }

    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line, waiting at most WAIT.
    pub(crate) fn line(&self) -> String {
        self.stdout.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "no stdout line in {WAIT:?}; stderr: {:?}",
                self.stderr_now()
            )
        })
    }

    /// Wait for a stderr line containing `needle`.
    pub(crate) fn stderr_line_containing(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no stderr line containing {needle:?}"),
            }
        }
    }

    /// Every stderr line until the process closes it (after it exits), waiting at most WAIT.
    pub(crate) fn rest_of_stderr(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(WAIT) {
            lines.push(line);
        }
        lines
    }

    pub(crate) fn stderr_now(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// Wait for the process to exit, at most WAIT.
    pub(crate) fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("process did not exit in {WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything left on stdout once the process has exited.
    pub(crate) fn rest_of_stdout(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.stdout.recv_timeout(WAIT) {
            lines.push(line);
        }
        lines
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `quic-chat server --port 0` in `dir`; returns it with its port and CA path.
pub(crate) fn start_server(dir: &Path, stdin: Stdio) -> (Proc, u16, String) {
    start_server_with(dir, stdin, &[], &[])
}

/// [`start_server`] with extra environment variables.
pub(crate) fn start_server_with_env(
    dir: &Path,
    stdin: Stdio,
    env: &[(&str, &Path)],
) -> (Proc, u16, String) {
    start_server_with(dir, stdin, &[], env)
}

/// [`start_server`] with extra server arguments and environment variables.
pub(crate) fn start_server_with(
    dir: &Path,
    stdin: Stdio,
    extra_args: &[&str],
    env: &[(&str, &Path)],
) -> (Proc, u16, String) {
    let mut args = vec![
        "server",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--cert-dir",
        "certs",
    ];
    args.extend_from_slice(extra_args);
    let server = Proc::spawn_with_env(&args, dir, stdin, env);
    let listening = server.line();
    let port = listening
        .strip_prefix("listening on 127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {listening:?}"))
        .parse()
        .unwrap();
    let ca_line = server.line();
    let ca = ca_line
        .strip_prefix("CA certificate for clients: ")
        .unwrap_or_else(|| panic!("unexpected second line {ca_line:?}"))
        .to_owned();
    (server, port, ca)
}

/// Start `quic-chat connect 127.0.0.1:PORT NAME --ca CA` in `dir`, with stdin
/// piped (and its identity in `dir/config/quic-chat`).
/// As a guest (`--guest`): the v1 rules these tests are about, whatever
/// names other tests' identities registered; account tests use [`connect_with`].
pub(crate) fn connect(dir: &Path, port: u16, ca: &str, name: &str) -> Proc {
    connect_with(dir, port, ca, name, &["--guest"])
}

/// [`connect`] with extra arguments (`--guest`, `--identity DIR`, `--json`).
pub(crate) fn connect_with(dir: &Path, port: u16, ca: &str, name: &str, extra: &[&str]) -> Proc {
    let server = format!("127.0.0.1:{port}");
    let mut args = vec!["connect", &server, name, "--ca", ca];
    args.extend_from_slice(extra);
    Proc::spawn(&args, dir, Stdio::piped())
}

/// The welcome a plain client prints: the welcome line, then the account
/// state (`guest` on a v1 server; a client with an identity is registered
/// on a v2 one). Returns the welcome line.
pub(crate) fn welcome_of(client: &Proc) -> String {
    let welcome = client.line();
    assert!(welcome.starts_with("Welcome to "), "{welcome}");
    let account = client.line();
    assert!(
        is_account_line(&account),
        "the account line after {welcome:?}: {account:?}"
    );
    welcome
}

/// Whether `line` is one of the account states the chat prints after its welcome.
pub(crate) fn is_account_line(line: &str) -> bool {
    line == "guest" || line.starts_with("registered as ") || line.starts_with("welcome back, ")
}

/// Run `command` to completion with its output captured, at most `limit`: a
/// child that hangs is killed and the test fails, instead of hanging the suite.
pub(crate) fn output_within(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not exit in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_all(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Start `quic-chat server --port 0` as cluster node `node` (NATS at `nats`,
/// comma-separated, plus `extra` arguments) in `dir`, with its certificates
/// and data there; returns it, where it listens and its CA file.
pub(crate) fn start_cluster_node(
    dir: &Path,
    nats: &str,
    node: &str,
    extra: &[&str],
) -> (Proc, std::net::SocketAddr, std::path::PathBuf) {
    let mut args = vec![
        "server",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--cert-dir",
        "certs",
        "--data-dir",
        "data",
        "--cluster",
        nats,
        "--node-id",
        node,
    ];
    args.extend_from_slice(extra);
    let server = Proc::spawn(&args, dir, Stdio::piped());
    let joined = server.line();
    assert!(
        joined.starts_with(&format!("joined the cluster as node {node} (NATS ")),
        "{joined}"
    );
    let listening = server.line();
    let addr = listening
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected line {listening:?}"))
        .parse()
        .unwrap();
    let ca_line = server.line();
    let ca = ca_line
        .strip_prefix("CA certificate for clients: ")
        .unwrap_or_else(|| panic!("unexpected line {ca_line:?}"));
    (server, addr, dir.join(ca))
}

/// Send `signal` (`-STOP`, `-CONT`, `-KILL`, …) to `child` with kill(1).
pub(crate) fn signal(child: &Child, signal: &str) {
    let status = output_within(
        Command::new("kill").arg(signal).arg(child.id().to_string()),
        Duration::from_secs(5),
    )
    .status;
    assert!(status.success(), "kill {signal} {}", child.id());
}
