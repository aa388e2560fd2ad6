//! The built binary end to end: a server with `--port 0` and clients over pipes,
//! driven through stdin and read from stdout, exactly as a script would.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The built `quic-chat` binary.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_quic-chat");
/// How long to wait for a process to print a line or exit.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A running `quic-chat` process with its output read line by line on threads
/// (shared with the fault and terminal tests).
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
    fn spawn(args: &[&str], dir: &Path, stdin: Stdio) -> Proc {
        Self::spawn_with_env(args, dir, stdin, &[])
    }

    fn spawn_with_env(args: &[&str], dir: &Path, stdin: Stdio, env: &[(&str, &Path)]) -> Proc {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .env_remove("SSLKEYLOGFILE")
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

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().unwrap();
    }

    fn close_stdin(&mut self) {
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
    fn stderr_line_containing(&self, needle: &str) -> String {
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
    fn rest_of_stderr(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(WAIT) {
            lines.push(line);
        }
        lines
    }

    fn stderr_now(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// Wait for the process to exit, at most WAIT.
    fn exit(&mut self) -> ExitStatus {
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
    fn rest_of_stdout(&self) -> Vec<String> {
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
fn start_server_with_env(dir: &Path, stdin: Stdio, env: &[(&str, &Path)]) -> (Proc, u16, String) {
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

/// Start `quic-chat connect 127.0.0.1:PORT NAME --ca CA` in `dir`, with stdin piped.
pub(crate) fn connect(dir: &Path, port: u16, ca: &str, name: &str) -> Proc {
    Proc::spawn(
        &["connect", &format!("127.0.0.1:{port}"), name, "--ca", ca],
        dir,
        Stdio::piped(),
    )
}

#[test]
fn two_clients_chat_then_the_operator_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, ca) = start_server(dir.path(), Stdio::piped());
    assert!(
        dir.path().join(&ca).exists(),
        "the CA file exists at the printed path"
    );

    let mut alice = connect(dir.path(), port, &ca, "alice");
    let welcome = alice.line();
    assert!(
        welcome.contains("quic-chat") && welcome.contains("1 user(s) online"),
        "{welcome}"
    );
    server.stderr_line_containing(
        "{user=alice}: quic_chat::server::session: connected remote=127.0.0.1:",
    );

    let mut bob = connect(dir.path(), port, &ca, "bob");
    assert!(bob.line().contains("2 user(s) online"));

    alice.type_line("send bob hello   world ");
    assert_eq!(bob.line(), "alice: hello   world ");
    bob.type_line("users");
    assert_eq!(bob.line(), "online (2): alice, bob");
    bob.type_line("send alice \x1b[31mred");
    assert_eq!(alice.line(), "bob: ^[[31mred");
    alice.type_line("send nobody hi");
    assert_eq!(alice.line(), "nobody is not connected to this server");
    alice.type_line("dance");
    assert!(alice.line().contains("unknown command"));

    alice.type_line("EXIT");
    assert!(alice.exit().success(), "EXIT exits 0");
    server.stderr_line_containing(
        "{user=alice}: quic_chat::server::session: left reason=said goodbye",
    );

    server.type_line("EXIT");
    assert_eq!(bob.line(), "Server has shut down, exiting...");
    assert!(bob.exit().success(), "a server shutdown exits 0");
    assert!(server.exit().success(), "the server exits 0 on EXIT");
}

#[test]
fn end_of_input_leaves_like_exit_and_delivers_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, ca) = start_server(dir.path(), Stdio::piped());
    let mut bob = connect(dir.path(), port, &ca, "bob");
    bob.line();
    let mut alice = connect(dir.path(), port, &ca, "alice");
    alice.line();
    // Typed and closed at once: the message must still arrive before alice leaves.
    alice.type_line("send bob last words");
    alice.close_stdin();
    assert!(alice.exit().success());
    assert_eq!(
        alice.rest_of_stdout(),
        Vec::<String>::new(),
        "a delivered send is quiet"
    );
    assert_eq!(bob.line(), "alice: last words");
    bob.close_stdin();
    assert!(bob.exit().success());
    server.type_line("EXIT");
    assert!(server.exit().success());
}

#[test]
fn the_server_keeps_running_without_stdin_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, ca) = start_server(dir.path(), Stdio::null());
    // stdin is at EOF from the start; the server must still serve.
    let mut alice = connect(dir.path(), port, &ca, "alice");
    assert!(alice.line().contains("Welcome"));
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    assert_eq!(alice.line(), "Server has shut down, exiting...");
    assert!(alice.exit().success());
    assert!(server.exit().success(), "SIGTERM is a graceful shutdown");
}

#[test]
fn a_taken_name_is_one_line_on_stderr_and_a_failure_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port, ca) = start_server(dir.path(), Stdio::piped());
    let alice = connect(dir.path(), port, &ca, "alice");
    alice.line();
    let mut again = connect(dir.path(), port, &ca, "ALICE");
    let status = again.exit();
    assert!(!status.success());
    let errors = again.rest_of_stderr();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("error: ") && errors[0].contains("taken"),
        "{errors:?}"
    );
}

#[test]
fn a_wrong_ca_and_an_unreachable_server_fail_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port, _ca) = start_server(dir.path(), Stdio::piped());
    quic_chat::tls::load_or_create(&dir.path().join("other"), &[]).unwrap();
    let mut wrong = connect(dir.path(), port, "other/ca.pem", "alice");
    assert!(!wrong.exit().success());
    // The one place the words of a handshake failure are the contract: what the user reads.
    let line = wrong.stderr_line_containing("error:");
    assert!(
        line.starts_with(&format!("error: cannot connect to 127.0.0.1:{port}: "))
            && line
                .ends_with(" (the server's certificate is not signed by the given CA: check --ca)"),
        "{line}"
    );

    // Nothing listens on the port of a socket we hold but never read.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let mut nobody = connect(dir.path(), silent_port, "certs/ca.pem", "alice");
    assert!(!nobody.exit().success());
    let line = nobody.stderr_line_containing("error:");
    assert!(line.contains("no answer"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn help_describes_both_commands() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("server") && text.contains("connect"),
        "{text}"
    );
    let output = Command::new(BIN)
        .args(["connect", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("--ca") && text.contains("--server-name"),
        "{text}"
    );
}

#[test]
fn sigterm_right_after_startup_is_still_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _port, _ca) = start_server(dir.path(), Stdio::null());
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    assert!(server.exit().success(), "exit 0, not killed by the signal");
    server.stderr_line_containing("server stopped");
}

#[test]
fn sslkeylogfile_records_the_session_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let keylog = dir.path().join("keys.log");
    let (mut server, port, ca) =
        start_server_with_env(dir.path(), Stdio::piped(), &[("SSLKEYLOGFILE", &keylog)]);
    let mut alice = connect(dir.path(), port, &ca, "alice");
    assert!(alice.line().contains("Welcome"));
    alice.close_stdin();
    assert!(alice.exit().success());
    server.type_line("EXIT");
    assert!(server.exit().success());
    let log = std::fs::read_to_string(&keylog).expect("the key log was written");
    assert!(log.contains("CLIENT_HANDSHAKE_TRAFFIC_SECRET"), "{log}");
    assert!(log.contains("SERVER_TRAFFIC_SECRET_0"), "{log}");
}
