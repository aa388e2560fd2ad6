//! Registration: Welcome, every RefuseReason, the Hello deadline, BYE.

use std::time::{Duration, Instant};

use quic_chat::client::ClientError;
use quic_chat::protocol::RefuseReason;
use quic_chat::server::{Limits, SERVER_SOFTWARE};

use crate::harness::*;

fn refusal(result: Result<impl Sized, ClientError>) -> RefuseReason {
    match result {
        Err(ClientError::Refused { reason, .. }) => reason,
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, got a welcome"),
    }
}

#[tokio::test]
async fn welcome_names_the_server_and_counts_users() {
    let server = TestServer::start().await;
    let (alice, _) = server.connect("alice").await;
    assert_eq!(alice.welcome().server, SERVER_SOFTWARE);
    assert_eq!(alice.welcome().online, 1);
    let (bob, _) = server.connect("bob").await;
    assert_eq!(bob.welcome().online, 2, "online includes the new user");
    server.stop().await;
}

#[tokio::test]
async fn a_name_in_other_letter_case_is_taken() {
    let server = TestServer::start().await;
    let (_alice, _) = server.connect("Alice").await;
    assert_eq!(
        refusal(server.try_connect("aLICE").await),
        RefuseReason::NameTaken
    );
    assert_eq!(
        refusal(server.try_connect("Alice").await),
        RefuseReason::NameTaken
    );
    server.stop().await;
}

#[tokio::test]
async fn invalid_names_are_refused() {
    let server = TestServer::start().await;
    for name in ["", "with space", "semi;colon", "ünïcode", &"x".repeat(33)] {
        assert_eq!(
            refusal(server.try_connect(name).await),
            RefuseReason::InvalidName,
            "{name:?}"
        );
    }
    // The longest valid name is fine.
    server.connect(&"x".repeat(32)).await;
    server.stop().await;
}

#[tokio::test]
async fn refused_then_closed_with_code_3() {
    let server = TestServer::start().await;
    let connection = raw_connect(&server).await;
    let answer = raw_exchange(&connection, &hello_bytes(2, "alice")).await;
    // Refused = 1, UnsupportedProtocol = 2, then the detail string.
    assert_eq!(&answer[..2], &[1, 2]);
    let (len, detail) = take_varint(&answer[2..]);
    assert_eq!(len as usize, detail.len(), "nothing after the detail");
    assert_eq!(close_code(&connection).await, Some(3));
    server.stop().await;
}

#[tokio::test]
async fn unsupported_protocol_is_refused() {
    let server = TestServer::start().await;
    let connection = raw_connect(&server).await;
    let answer = raw_exchange(&connection, &hello_bytes(0, "alice")).await;
    assert_eq!(&answer[..2], &[1, 2], "Refused{{UnsupportedProtocol}}");
    server.stop().await;
}

#[tokio::test]
async fn server_full_refuses_further_users() {
    let limits = Limits {
        max_connections: 2,
        ..test_limits()
    };
    let server = TestServer::start_with(limits).await;
    let (_a, _) = server.connect("a").await;
    let (b, _) = server.connect("b").await;
    assert_eq!(
        refusal(server.try_connect("c").await),
        RefuseReason::ServerFull
    );
    b.close().await;
    // Room again once b is gone.
    eventually(SCENARIO, "a free slot", || async {
        server.try_connect("c").await.is_ok()
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn no_hello_in_time_closes_with_code_2() {
    // The contract's deadline is 10 s, the default; shortened here to keep the test quick.
    assert_eq!(Limits::default().hello_timeout, Duration::from_secs(10));
    let limits = Limits {
        hello_timeout: Duration::from_millis(300),
        ..test_limits()
    };
    let server = TestServer::start_with(limits).await;
    let started = Instant::now();
    let connection = raw_connect(&server).await;
    assert_eq!(close_code(&connection).await, Some(2));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the deadline"
    );
    server.stop().await;
}

#[tokio::test]
async fn bye_frees_the_name_and_removes_the_user() {
    let server = TestServer::start().await;
    let (alice, _) = server.connect("alice").await;
    let (bob, _) = server.connect("bob").await;
    let connection = alice.connection().clone();
    alice.close().await;
    assert!(matches!(
        connection.close_reason(),
        Some(quinn::ConnectionError::LocallyClosed)
    ));
    eventually(SCENARIO, "alice gone from the list", || async {
        bob.list_users().await.unwrap() == ["bob"]
    })
    .await;
    server.connect("ALICE").await;
    server.stop().await;
}
