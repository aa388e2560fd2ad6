//! The server's protective limits: per-IP connections, address validation,
//! the send rate, and deadlines for requests that never finish.

use std::sync::atomic::Ordering;
use std::time::Duration;

use quic_chat::client::{ClientError, HandshakeFailure};
use quic_chat::protocol::Status;
use quic_chat::server::Limits;

use crate::harness::*;

#[tokio::test]
async fn connections_per_ip_are_capped() {
    let limits = Limits {
        max_connections_per_ip: 2,
        ..test_limits()
    };
    let server = TestServer::start_with(limits).await;
    let (a, _) = server.connect("a").await;
    let (_b, _) = server.connect("b").await;
    let error = server
        .try_connect("c")
        .await
        .expect_err("a third connection from one IP");
    assert!(
        matches!(
            &error,
            ClientError::Handshake {
                kind: HandshakeFailure::Refused,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(server.admission.refused.load(Ordering::Relaxed), 1);
    a.close().await;
    eventually(SCENARIO, "a slot freed by a's BYE", || async {
        server.try_connect("c").await.is_ok()
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn zero_means_unlimited_connections_per_ip() {
    let limits = Limits {
        max_connections_per_ip: 0,
        ..test_limits()
    };
    let server = TestServer::start_with(limits).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(server.connect(&format!("u{i}")).await);
    }
    assert_eq!(server.admission.refused.load(Ordering::Relaxed), 0);
    server.stop().await;
}

#[tokio::test]
async fn busy_servers_validate_addresses_with_a_retry() {
    // 0 handshakes allowed before validation: every new client is asked for a Retry.
    let limits = Limits {
        retry_above_handshakes: 0,
        ..test_limits()
    };
    let server = TestServer::start_with(limits).await;
    let (alice, _) = server.connect("alice").await;
    let (_bob, mut bob_in) = server.connect("bob").await;
    assert_eq!(
        server.admission.retries.load(Ordering::Relaxed),
        2,
        "one Retry per client"
    );
    assert_eq!(
        alice.send("bob", "validated").await.unwrap().status,
        Status::Delivered
    );
    assert_eq!(next_within(&mut bob_in).await.unwrap().body, "validated");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_server_skips_the_retry_round_trip() {
    let server = TestServer::start().await;
    server.connect("alice").await;
    assert_eq!(server.admission.retries.load(Ordering::Relaxed), 0);
    server.stop().await;
}

#[tokio::test]
async fn over_the_rate_limit_sends_are_refused_and_not_delivered() {
    let limits = Limits {
        // A refill far slower than the test, so only the burst counts.
        rate_limit: 0.001,
        rate_burst: 3,
        ..test_limits()
    };
    let server = TestServer::start_with(limits).await;
    let (alice, _) = server.connect("alice").await;
    let (_bob, mut bob_in) = server.connect("bob").await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(alice.send("bob", &format!("m{i}")).await.unwrap().status);
    }
    use Status::{Delivered, RateLimited};
    assert_eq!(
        statuses,
        [Delivered, Delivered, Delivered, RateLimited, RateLimited]
    );
    for i in 0..3 {
        assert_eq!(
            next_within(&mut bob_in).await.unwrap().body,
            format!("m{i}")
        );
    }
    // The limit is per user: bob can still talk.
    let (carol, _) = server.connect("carol").await;
    assert_eq!(carol.send("bob", "hi").await.unwrap().status, Delivered);
    assert_eq!(
        next_within(&mut bob_in).await.unwrap().body,
        "hi",
        "nothing rate-limited arrived"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_that_never_finishes_is_cut_off() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..test_limits()
    };
    let server = TestServer::start_with(limits).await;
    let slowloris = raw_registered(&server, "slowloris").await;
    let (mut send, _recv) = slowloris.open_bi().await.unwrap();
    // Half a Send, then nothing: no FIN ever comes.
    send.write_all(&[1, 3, b'b']).await.unwrap();
    assert_eq!(close_code(&slowloris).await, Some(2));
    server.stop().await;
}

#[tokio::test]
async fn a_hello_trickled_too_slowly_is_cut_off() {
    let limits = Limits {
        hello_timeout: Duration::from_millis(400),
        ..test_limits()
    };
    let server = TestServer::start_with(limits).await;
    let connection = raw_connect(&server).await;
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    // 7 bytes at one per 500 ms: 3.5 s in all, nearly nine times the
    // deadline, so a loaded machine still cannot get the Hello through in time.
    let trickle = async {
        for byte in hello_bytes(1, "slow") {
            if send.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    tokio::select! {
        code = close_code(&connection) => assert_eq!(code, Some(2)),
        _ = trickle => panic!("the whole Hello went through despite the deadline"),
    }
    server.stop().await;
}

#[tokio::test]
async fn request_streams_per_connection_are_capped() {
    let limits = Limits {
        max_streams_per_connection: 2,
        ..test_limits()
    };
    let server = TestServer::start_with(limits).await;
    let connection = raw_registered(&server, "greedy").await;
    // The Hello stream is finished; two more unfinished streams use up the credit.
    let (mut first, mut first_recv) = connection.open_bi().await.unwrap();
    first.write_all(&[2]).await.unwrap();
    let (mut second, _second_recv) = connection.open_bi().await.unwrap();
    second.write_all(&[2]).await.unwrap();
    let third = tokio::time::timeout(Duration::from_millis(300), connection.open_bi()).await;
    assert!(
        third.is_err(),
        "a third concurrent stream must wait for credit"
    );
    // Finishing one request returns its credit.
    first.finish().unwrap();
    let users = within(SCENARIO, "ListUsers answer", first_recv.read_to_end(1024))
        .await
        .unwrap();
    assert_eq!(users, b"\x03\x01\x06greedy");
    within(SCENARIO, "stream credit back", connection.open_bi())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn request_stream_credit_starts_small_and_grows_once_used() {
    let server = TestServer::start().await;
    let connection = raw_registered(&server, "pipeliner").await;
    // A new connection may open 4 request streams at once (the finished
    // Hello's credit comes back with a MAX_STREAMS, hence `within`).
    let mut streams = open_streams(&connection, 4, "initial credit").await;
    let fifth = tokio::time::timeout(Duration::from_millis(300), connection.open_bi()).await;
    assert!(
        fifth.is_err(),
        "a new connection starts with 4 streams of credit"
    );
    // Two requests in flight at the server: it grants the configured 100.
    for (send, _) in streams.iter_mut().take(2) {
        send.write_all(&[2]).await.unwrap();
    }
    streams.extend(open_streams(&connection, 40, "raised credit").await);
    // The streams work: one of them is answered.
    let (mut send, mut recv) = streams.swap_remove(0);
    send.finish().unwrap();
    let users = within(SCENARIO, "ListUsers answer", recv.read_to_end(1024))
        .await
        .unwrap();
    assert_eq!(users, b"\x03\x01\x09pipeliner");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_in_steady_use_gets_the_full_stream_credit() {
    let server = TestServer::start().await;
    let connection = raw_registered(&server, "steady").await;
    // Eight requests one at a time (never two in flight)...
    for _ in 0..8 {
        let (mut send, mut recv) = within(SCENARIO, "a stream", connection.open_bi())
            .await
            .unwrap();
        send.write_all(&[2]).await.unwrap();
        send.finish().unwrap();
        within(SCENARIO, "ListUsers answer", recv.read_to_end(1024))
            .await
            .unwrap();
    }
    // ...and the connection may have the configured 100 open at once.
    open_streams(&connection, 40, "full credit").await;
    server.stop().await;
}

/// Open `n` request streams at once on `connection`, each within the
/// scenario's deadline (named `what` if one does not open).
async fn open_streams(
    connection: &quinn::Connection,
    n: usize,
    what: &str,
) -> Vec<(quinn::SendStream, quinn::RecvStream)> {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(within(SCENARIO, what, connection.open_bi()).await.unwrap());
    }
    streams
}
