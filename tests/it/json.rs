//! `--json` style end to end in process: JSON and plain commands in, one JSON
//! object per event out, against a real server.

use serde_json::{json, Value};
use tokio::sync::mpsc;

use quic_chat::chat::{run_session, Frontend, Look, Outcome};

use crate::harness::{eventually, within, Lines, TestServer, SCENARIO};

async fn next_event(out: &mut mpsc::UnboundedReceiver<String>) -> Value {
    let line = within(SCENARIO, "a JSON event", out.recv())
        .await
        .expect("an output line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
}

#[tokio::test]
async fn json_mode_speaks_json_both_ways() {
    let server = TestServer::start().await;
    let (bob, mut bob_incoming) = server.connect("bob").await;
    let (alice, alice_incoming) = server.connect("alice").await;
    let (input, lines) = mpsc::channel(8);
    let (out_tx, mut out) = mpsc::unbounded_channel();
    let frontend = Frontend {
        look: Look::Json,
        names: None,
    };
    let chat = tokio::spawn(async move {
        let mut writer = Lines::new(out_tx);
        let shutdown = tokio_util::sync::CancellationToken::new();
        run_session(
            alice,
            alice_incoming,
            lines,
            &mut writer,
            &frontend,
            shutdown,
        )
        .await
    });

    let welcome = next_event(&mut out).await;
    assert_eq!(welcome["event"], "welcome");
    assert_eq!(welcome["username"], "alice");
    assert_eq!(welcome["online"], 2);

    bob.send("alice", "hi\x1b[31m\nthere")
        .await
        .expect("bob sends");
    let message = next_event(&mut out).await;
    assert_eq!(message["event"], "message");
    assert_eq!(message["from"], "bob");
    assert_eq!(message["body"], "hi\x1b[31m\nthere");

    let send = json!({"cmd": "send", "to": "bob", "body": " two\nlines "}).to_string();
    input.send(send).await.unwrap();
    let receipt = next_event(&mut out).await;
    assert_eq!(receipt["event"], "receipt");
    assert_eq!(receipt["to"], "bob");
    assert_eq!(receipt["status"], "delivered");
    let got = within(SCENARIO, "bob's message", bob_incoming.next())
        .await
        .expect("bob receives")
        .into_message()
        .expect("a message");
    assert_eq!(got.body, " two\nlines ");

    input.send("send nobody hi".into()).await.unwrap();
    let receipt = next_event(&mut out).await;
    assert_eq!(receipt["status"], "not_connected");

    input.send(r#"{"cmd":"users"}"#.into()).await.unwrap();
    assert_eq!(
        next_event(&mut out).await,
        json!({"event": "users", "names": ["alice", "bob"]})
    );

    input.send("dance".into()).await.unwrap();
    assert_eq!(next_event(&mut out).await["event"], "error");

    input.send(r#"{"cmd":"exit"}"#.into()).await.unwrap();
    let outcome = within(SCENARIO, "the chat to end", chat)
        .await
        .expect("the loop does not panic")
        .expect("a clean exit");
    assert_eq!(outcome, Outcome::Left);
    bob.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_cancelled_token_leaves_as_exit_does() {
    use quic_chat::protocol::Status;
    let server = TestServer::start().await;
    let (bob, _bob_incoming) = server.connect("bob").await;
    let (alice, alice_incoming) = server.connect("alice").await;
    // The input stays open: only the token ends the chat.
    let (_input, lines) = mpsc::channel::<String>(8);
    let (out_tx, mut out) = mpsc::unbounded_channel();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    let chat = tokio::spawn(async move {
        let mut writer = Lines::new(out_tx);
        let frontend = Frontend {
            look: Look::Json,
            names: None,
        };
        run_session(alice, alice_incoming, lines, &mut writer, &frontend, token).await
    });
    assert_eq!(next_event(&mut out).await["event"], "welcome");
    shutdown.cancel();
    let outcome = within(SCENARIO, "the chat to end", chat)
        .await
        .expect("the loop does not panic")
        .expect("a clean exit");
    assert_eq!(outcome, Outcome::Left);
    // alice said BYE: her name is free at once.
    eventually(SCENARIO, "alice to be gone", || async {
        bob.send("alice", "still there?").await.unwrap().status == Status::NotConnected
    })
    .await;
    bob.close().await;
    server.stop().await;
}
