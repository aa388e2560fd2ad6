//! The built binary end to end: a server with `--port 0` and clients over pipes,
//! driven through stdin and read from stdout, exactly as a script would.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::process::{
    connect, output_within, start_server, start_server_with_env, welcome_of, BIN, WAIT,
};

#[test]
fn two_clients_chat_then_the_operator_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, ca) = start_server(dir.path(), Stdio::piped());
    assert!(
        dir.path().join(&ca).exists(),
        "the CA file exists at the printed path"
    );

    let mut alice = connect(dir.path(), port, &ca, "alice");
    let welcome = welcome_of(&alice);
    assert!(
        welcome.contains("quic-chat") && welcome.contains("1 user(s) online"),
        "{welcome}"
    );
    server.stderr_line_containing(
        "quic_chat::server::session: connected user=alice remote=127.0.0.1:",
    );

    let mut bob = connect(dir.path(), port, &ca, "bob");
    assert!(welcome_of(&bob).contains("2 user(s) online"));

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
    server
        .stderr_line_containing("quic_chat::server::session: left user=alice reason=said goodbye");

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
    welcome_of(&bob);
    let mut alice = connect(dir.path(), port, &ca, "alice");
    welcome_of(&alice);
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
    assert!(welcome_of(&alice).contains("Welcome"));
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
    welcome_of(&alice);
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
fn a_missing_ca_file_is_one_line_naming_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let output = output_within(
        Command::new(BIN)
            .args(["connect", "127.0.0.1:1", "alice", "--ca"])
            .arg(&missing)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env_remove("RUST_LOG")
            .env_remove("SSLKEYLOGFILE"),
        WAIT,
    );
    assert!(!output.status.success(), "{:?}", output.status);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "error: cannot read certificate file {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
}

#[test]
fn help_describes_both_commands() {
    let output = output_within(Command::new(BIN).arg("--help"), WAIT);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("server") && text.contains("connect"),
        "{text}"
    );
    let output = output_within(Command::new(BIN).args(["connect", "--help"]), WAIT);
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
