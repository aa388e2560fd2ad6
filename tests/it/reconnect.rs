//! The chat reconnects by itself after losing its connection (a server killed
//! with SIGKILL and started again on the same port), and a client whose UDP
//! socket moves to a new port keeps its connection (QUIC migration).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::block_in_place;

use quic_chat::chat::{run_session_reconnecting, Frontend, Look, Outcome};
use quic_chat::client::{ClientConfig, Connector};
use quic_chat::protocol::Status;

use crate::harness::process::Proc;
use crate::harness::{within, Lines, TestServer, SCENARIO};

/// The client's idle timeout here, so that the dead server is noticed quickly.
const IDLE: Duration = Duration::from_secs(2);

/// How long reconnecting may take: the loss noticed, then the first backoff
/// (at most 1.5 s) and a few attempts more on a loaded machine.
const BACK: Duration = Duration::from_secs(30);

async fn next_event(out: &mut mpsc::UnboundedReceiver<String>, limit: Duration) -> Value {
    let line = within(limit, "a JSON event", out.recv())
        .await
        .expect("an output line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
}

/// A server process on `port`, keeping its certificates and data in `dir`.
fn server_on(dir: &std::path::Path, port: u16) -> (Proc, String) {
    let port = port.to_string();
    let args = [
        "server",
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--cert-dir",
        "certs",
    ];
    let server = Proc::spawn(&args, dir, Stdio::piped());
    let listening = server.line();
    assert_eq!(listening, format!("listening on 127.0.0.1:{port}"));
    let ca_line = server.line();
    let ca = ca_line
        .strip_prefix("CA certificate for clients: ")
        .unwrap_or_else(|| panic!("unexpected second line {ca_line:?}"))
        .to_owned();
    (server, ca)
}

/// A UDP port that was free a moment ago (bound to port 0, then released), so
/// that a server can be started on it again after it is killed.
fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_reconnected_and_sends_work_again() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let (mut server, ca) = block_in_place(|| server_on(dir.path(), port));
    let mut config = ClientConfig::new(format!("127.0.0.1:{port}"), "alice", dir.path().join(ca));
    config.idle_timeout = IDLE;
    config.keep_alive = Duration::from_millis(300);
    let connector = within(SCENARIO, "connector", Connector::new(&config))
        .await
        .unwrap();
    let (client, incoming) = within(SCENARIO, "connect", connector.connect("alice"))
        .await
        .unwrap();
    let (input, lines) = mpsc::channel(8);
    let (out_tx, mut out) = mpsc::unbounded_channel();
    let chat = tokio::spawn(async move {
        let mut writer = Lines::new(out_tx);
        let frontend = Frontend {
            look: Look::Json,
            names: None,
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        run_session_reconnecting(
            connector,
            client,
            incoming,
            lines,
            &mut writer,
            &frontend,
            shutdown,
        )
        .await
    });
    assert_eq!(next_event(&mut out, SCENARIO).await["event"], "welcome");

    server.child.kill().expect("SIGKILL");
    block_in_place(|| server.child.wait()).unwrap();
    let lost = next_event(&mut out, IDLE + BACK).await;
    assert_eq!(lost["event"], "connection_lost", "{lost}");
    assert_eq!(lost["message"], "connection lost; reconnecting…");

    // Typed while disconnected: refused with a line, not lost silently.
    input.send("send alice hello?".into()).await.unwrap();
    let refused = next_event(&mut out, SCENARIO).await;
    assert_eq!(refused["event"], "error", "{refused}");
    assert_eq!(
        refused["message"],
        "message to alice not sent: not connected (reconnecting…)"
    );

    let (_server, _) = block_in_place(|| server_on(dir.path(), port));
    let back = next_event(&mut out, BACK).await;
    assert_eq!(back["event"], "reconnected", "{back}");

    input.send("send alice again".into()).await.unwrap();
    let mut events = vec![
        next_event(&mut out, SCENARIO).await,
        next_event(&mut out, SCENARIO).await,
    ];
    events.sort_by_key(|e| e["event"].as_str().unwrap_or_default().to_owned());
    assert_eq!(events[0]["event"], "message", "{events:?}");
    assert_eq!(events[0]["body"], "again");
    assert_eq!(events[1]["event"], "receipt", "{events:?}");
    assert_eq!(events[1]["status"], Status::Delivered.name());

    input.send("EXIT".into()).await.unwrap();
    let outcome = within(SCENARIO, "the chat to end", chat)
        .await
        .expect("the loop does not panic")
        .expect("a clean exit");
    assert_eq!(outcome, Outcome::Left);
}

#[tokio::test]
async fn a_client_moved_to_a_new_port_keeps_its_connection() {
    let server = TestServer::start().await;
    let (alice, mut alice_incoming) = server.connect("alice").await;
    let (bob, mut bob_incoming) = server.connect("bob").await;
    let connection = alice.connection().stable_id();
    let before = alice.local_addr().unwrap();

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    alice.rebind(socket).expect("rebind");
    let after = alice.local_addr().unwrap();
    assert_ne!(before.port(), after.port(), "a new local port");

    // Both ways, on the same connection: no reconnect.
    let receipt = within(SCENARIO, "alice sends", alice.send("bob", "moved"))
        .await
        .unwrap();
    assert_eq!(receipt.status, Status::Delivered);
    let got = within(SCENARIO, "bob receives", bob_incoming.next())
        .await
        .unwrap()
        .into_message()
        .unwrap();
    assert_eq!(got.body, "moved");
    let receipt = within(SCENARIO, "bob sends", bob.send("alice", "still here"))
        .await
        .unwrap();
    assert_eq!(receipt.status, Status::Delivered);
    let got = within(SCENARIO, "alice receives", alice_incoming.next())
        .await
        .unwrap()
        .into_message()
        .unwrap();
    assert_eq!(got.body, "still here");
    assert_eq!(alice.connection().stable_id(), connection);
    assert!(alice.connection().close_reason().is_none());
    // The old socket is gone (rebind drops it), so all of the above went
    // through the new port; the server's address is unchanged.
    assert_eq!(alice.connection().remote_address(), server.addr);
    alice.close().await;
    bob.close().await;
    server.stop().await;
}
