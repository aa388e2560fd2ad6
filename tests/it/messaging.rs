//! Sending and delivering: ids, server-stamped senders, every Send status,
//! stream credit, and many messages delivered exactly once.

use std::collections::HashSet;

use quic_chat::client::{Client, Incoming};
use quic_chat::protocol::{Status, MAX_BODY_BYTES};

use crate::harness::*;

#[tokio::test]
async fn delivered_message_carries_the_receipt_id_and_the_registered_name() {
    let server = TestServer::start().await;
    let (alice, _) = server.connect("Alice").await;
    let (_bob, mut bob_in) = server.connect("bob").await;
    // The recipient is matched case-insensitively.
    let receipt = within(SCENARIO, "receipt", alice.send("BOB", "hi  there "))
        .await
        .unwrap();
    assert_eq!(receipt.status, Status::Delivered);
    let message = within(SCENARIO, "delivery", bob_in.next())
        .await
        .unwrap()
        .into_message()
        .expect("a message");
    assert_eq!(message.id, receipt.id);
    assert_eq!(message.from, "Alice", "from is the name as registered");
    assert_eq!(message.body, "hi  there ");
    let now_ms = quic_chat::clock::unix_ms();
    assert!(message.sent_at_ms <= now_ms && message.sent_at_ms + 60_000 > now_ms);
    server.stop().await;
}

#[tokio::test]
async fn every_send_gets_a_fresh_id() {
    let server = TestServer::start().await;
    let (alice, _) = server.connect("alice").await;
    let mut ids = HashSet::new();
    for to in ["nobody", "bad name", "alice", "nobody"] {
        let receipt = within(SCENARIO, "receipt", alice.send(to, "x"))
            .await
            .unwrap();
        assert!(ids.insert(receipt.id), "id {} reused", receipt.id);
    }
    server.stop().await;
}

#[tokio::test]
async fn unknown_recipient_is_not_connected() {
    let server = TestServer::start().await;
    let (alice, _) = server.connect("alice").await;
    let receipt = alice.send("bob", "hi").await.unwrap();
    assert_eq!(receipt.status, Status::NotConnected);
    server.stop().await;
}

#[tokio::test]
async fn invalid_recipient_names_are_reported() {
    let server = TestServer::start().await;
    let (alice, _) = server.connect("alice").await;
    for to in ["", "b o b", &"b".repeat(33)] {
        let receipt = alice.send(to, "hi").await.unwrap();
        assert_eq!(receipt.status, Status::InvalidRecipient, "{to:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn body_limit_is_65536_bytes() {
    let server = TestServer::start().await;
    let (alice, _) = server.connect("alice").await;
    let (_bob, mut bob_in) = server.connect("bob").await;
    let too_large = "x".repeat(MAX_BODY_BYTES + 1);
    assert_eq!(
        alice.send("bob", &too_large).await.unwrap().status,
        Status::TooLarge
    );
    // Counted in bytes: 21,846 three-byte characters are 65,538 bytes.
    let multibyte = "€".repeat(21_846);
    assert_eq!(
        alice.send("bob", &multibyte).await.unwrap().status,
        Status::TooLarge
    );
    let largest = "y".repeat(MAX_BODY_BYTES);
    let receipt = alice.send("bob", &largest).await.unwrap();
    assert_eq!(receipt.status, Status::Delivered);
    let message = within(SCENARIO, "large delivery", bob_in.next())
        .await
        .unwrap()
        .into_message()
        .expect("a message");
    assert_eq!(message.body.len(), MAX_BODY_BYTES);
    assert_eq!(message.id, receipt.id);
    server.stop().await;
}

#[tokio::test]
async fn users_are_listed_sorted_by_lowercased_name() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for name in ["bob", "Zed", "alice", "Carol_1", "carol.0"] {
        clients.push(server.connect(name).await);
    }
    let names = clients[0].0.list_users().await.unwrap();
    assert_eq!(names, ["alice", "bob", "carol.0", "Carol_1", "Zed"]);
    server.stop().await;
}

#[tokio::test]
async fn more_than_a_hundred_sequential_messages_reach_one_client() {
    // Stream credit must come back, on both the request and the delivery side.
    let server = TestServer::start().await;
    let (alice, _) = server.connect("alice").await;
    let (_bob, mut bob_in) = server.connect("bob").await;
    within(SCENARIO, "300 messages", async {
        for i in 0..300 {
            let receipt = alice.send("bob", &format!("m{i}")).await.unwrap();
            assert_eq!(receipt.status, Status::Delivered, "message {i}");
            let message = bob_in.next().await.unwrap().into_message().unwrap();
            assert_eq!((message.id, message.body), (receipt.id, format!("m{i}")));
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_user_can_message_themself() {
    let server = TestServer::start().await;
    let (alice, mut alice_in) = server.connect("alice").await;
    let receipt = alice.send("alice", "note to self").await.unwrap();
    assert_eq!(receipt.status, Status::Delivered);
    let message = within(SCENARIO, "self delivery", alice_in.next())
        .await
        .unwrap()
        .into_message()
        .expect("a message");
    assert_eq!((message.from.as_str(), message.id), ("alice", receipt.id));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_messages_among_many_users_each_arrive_exactly_once() {
    const SENDERS: usize = 5;
    const RECIPIENTS: usize = 4;
    const PER_SENDER: usize = 200;
    let server = TestServer::start().await;
    let mut recipients: Vec<(Client, Incoming)> = Vec::new();
    for r in 0..RECIPIENTS {
        recipients.push(server.connect(&format!("r{r}")).await);
    }
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (client, _) = server.connect(&format!("s{s}")).await;
        let client = std::sync::Arc::new(client);
        senders.push(tokio::spawn(async move {
            // 16 in flight per sender.
            let mut receipts = Vec::new();
            for chunk in (0..PER_SENDER).collect::<Vec<_>>().chunks(16) {
                let mut in_flight = tokio::task::JoinSet::new();
                for &i in chunk {
                    let client = std::sync::Arc::clone(&client);
                    in_flight.spawn(async move {
                        let to = format!("r{}", i % RECIPIENTS);
                        let body = format!("s{s}-{i}");
                        let receipt = client.send(&to, &body).await.unwrap();
                        (to, body, receipt)
                    });
                }
                while let Some(done) = in_flight.join_next().await {
                    receipts.push(done.unwrap());
                }
            }
            client.close_ref().await;
            receipts
        }));
    }
    let mut expected = HashSet::new();
    within(SCENARIO, "all receipts", async {
        for sender in senders {
            for (to, body, receipt) in sender.await.unwrap() {
                assert_eq!(receipt.status, Status::Delivered, "{body}");
                assert!(expected.insert((to, body, receipt.id)), "duplicate receipt");
            }
        }
    })
    .await;
    assert_eq!(expected.len(), SENDERS * PER_SENDER);
    let mut received = HashSet::new();
    within(SCENARIO, "all deliveries", async {
        for (r, (_, incoming)) in recipients.iter_mut().enumerate() {
            let mine = expected
                .iter()
                .filter(|(to, _, _)| *to == format!("r{r}"))
                .count();
            for _ in 0..mine {
                let message = incoming.next().await.unwrap().into_message().unwrap();
                let from_ok = message.body.starts_with(&format!("{}-", message.from));
                assert!(from_ok, "{} stamped as {}", message.body, message.from);
                let key = (format!("r{r}"), message.body, message.id);
                assert!(received.insert(key), "delivered twice");
            }
        }
    })
    .await;
    assert_eq!(
        received, expected,
        "every Delivered receipt matches exactly one delivery"
    );
    // Nothing extra is waiting for anyone.
    for (client, incoming) in &mut recipients {
        let extra =
            tokio::time::timeout(std::time::Duration::from_millis(200), incoming.next()).await;
        assert!(extra.is_err(), "{} got an extra message", client.username());
    }
    server.stop().await;
}

#[tokio::test]
async fn an_over_long_body_is_too_large_whatever_the_recipient() {
    let server = TestServer::start().await;
    let (alice, _) = server.connect("alice").await;
    let too_large = "x".repeat(MAX_BODY_BYTES + 1);
    for to in ["not a name!", "nobody", "alice"] {
        let receipt = alice.send(to, &too_large).await.unwrap();
        assert_eq!(receipt.status, Status::TooLarge, "to {to:?}");
    }
    server.stop().await;
}
