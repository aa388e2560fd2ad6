//! The client at a terminal: the built binary under a pseudo-terminal, with a
//! message arriving while a line is half typed. Every wait has a timeout.

use std::process::Command;
use std::time::Duration;

use rexpect::process::WaitStatus;
use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};

use crate::harness::process::BIN;
use crate::harness::{within, TestServer, SCENARIO};

const WAIT_MS: u64 = 20_000;

/// `what` must appear on the terminal; fails with what was seen instead.
fn expect(session: &mut PtySession, what: &str) -> String {
    // rexpect reads the terminal byte by byte, one char per byte.
    let bytes: String = what.bytes().map(char::from).collect();
    session
        .exp_string(&bytes)
        .unwrap_or_else(|e| panic!("waiting for {what:?} on the terminal: {e}"))
}

/// Start `quic-chat connect SERVER NAME` under a pty, without colour.
fn spawn_client(server: &TestServer, name: &str, state: &std::path::Path) -> PtySession {
    let mut command = Command::new(BIN);
    command
        .args(["connect", &server.addr.to_string(), name, "--ca"])
        .arg(&server.ca)
        .env("XDG_STATE_HOME", state)
        .env("XDG_CONFIG_HOME", state.join("config"))
        .env("NO_COLOR", "1")
        .env("TERM", "xterm")
        .env("RUST_LOG", "warn")
        .env_remove("SSLKEYLOGFILE");
    let options = Options {
        timeout_ms: Some(WAIT_MS),
        strip_ansi_escape_codes: true,
    };
    spawn_with_options(command, options).expect("the binary starts under a pty")
}

fn exited_zero(session: &mut PtySession) {
    session.exp_eof().expect("the client exits");
    let status = session.process.wait().expect("exit status");
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{status:?}");
}

#[test]
fn a_message_arriving_mid_line_leaves_the_typed_line_intact() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(TestServer::start());
    let (bob, mut bob_incoming) = runtime.block_on(server.connect("bob"));
    let state = tempfile::tempdir().expect("temp dir");

    let mut alice = spawn_client(&server, "alice", state.path());

    expect(&mut alice, "Welcome to quic-chat");
    expect(&mut alice, "2 user(s) online");
    expect(&mut alice, "> ");

    // Half a line, then a message arrives.
    alice.send("send bob hel").expect("type");
    alice.flush().expect("flush");
    expect(&mut alice, "send bob hel");
    let receipt = runtime
        .block_on(within(
            SCENARIO,
            "bob's send",
            bob.send("alice", "ping from bob"),
        ))
        .expect("bob sends");
    assert_eq!(receipt.status, quic_chat::protocol::Status::Delivered);
    expect(&mut alice, "bob: ping from bob");
    // The prompt comes back below the message with the half-typed line on it.
    expect(&mut alice, "> send bob hel");

    // Finish the line: bob gets exactly what was typed.
    alice.send("lo  there \r").expect("type");
    alice.flush().expect("flush");
    let message = runtime
        .block_on(within(SCENARIO, "alice's message", bob_incoming.next()))
        .expect("bob receives")
        .into_message()
        .expect("a message");
    assert_eq!(message.from, "alice");
    assert_eq!(message.body, "hello  there ");
    expect(&mut alice, "you → bob: hello  there  ✓");

    // Tab completes the recipient's name.
    alice.send("send b\t").expect("type");
    alice.flush().expect("flush");
    expect(&mut alice, "send bob ");
    alice.send("again\r").expect("type");
    alice.flush().expect("flush");
    let message = runtime
        .block_on(within(SCENARIO, "the completed send", bob_incoming.next()))
        .expect("bob receives")
        .into_message()
        .expect("a message");
    assert_eq!(message.body, "again");

    alice.send("EXIT\r").expect("type");
    alice.flush().expect("flush");
    exited_zero(&mut alice);

    let history =
        std::fs::read_to_string(state.path().join("quic-chat/history")).expect("history is saved");
    assert!(history.contains("send bob hello  there "), "{history:?}");
    assert!(history.contains("send bob again"), "{history:?}");

    runtime.block_on(async {
        bob.close().await;
        within(Duration::from_secs(10), "server stop", server.stop()).await;
    });
}

#[test]
fn a_server_shutdown_while_typing_prints_the_shutdown_line_and_exits() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(TestServer::start());
    let state = tempfile::tempdir().expect("temp dir");
    let mut alice = spawn_client(&server, "alice", state.path());
    expect(&mut alice, "1 user(s) online");
    expect(&mut alice, "> ");
    alice.send("send nobody half").expect("type");
    alice.flush().expect("flush");
    expect(&mut alice, "send nobody half");
    runtime.block_on(within(
        Duration::from_secs(10),
        "server stop",
        server.stop(),
    ));
    expect(&mut alice, "Server has shut down, exiting...");
    exited_zero(&mut alice);
}

#[test]
fn ctrl_c_at_the_prompt_leaves_cleanly() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let server = runtime.block_on(TestServer::start());
    let state = tempfile::tempdir().expect("temp dir");
    let mut alice = spawn_client(&server, "alice", state.path());
    expect(&mut alice, "1 user(s) online");
    expect(&mut alice, "> ");
    alice.send_control('c').expect("Ctrl-C");
    exited_zero(&mut alice);
    runtime.block_on(within(
        Duration::from_secs(10),
        "server stop",
        server.stop(),
    ));
}
