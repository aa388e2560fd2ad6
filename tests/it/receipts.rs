//! Late receipts and expiry against the real server: a sender who is offline
//! when its queued message is read or dropped gets the receipt at its next
//! Session, after its own stored mail, once; kept receipts are removed once
//! acknowledged and expire like messages; an expired message gives its
//! sender `Expired`; deleting an account expires the mail waiting for it.

use std::collections::BTreeSet;
use std::time::Duration;

use quic_chat::protocol::{decode, Push, Status};
use quic_chat::server::MailConfig;

use crate::harness::v2::*;
use crate::harness::*;
use crate::mail::{next_deliver, queued_of, receipt, register, V2};

/// The next push on `connection`, whatever it is.
async fn next_push(connection: &quinn::Connection) -> Push {
    within(Duration::from_secs(10), "a push", async {
        let mut recv = connection.accept_uni().await.expect("a push stream");
        let bytes = recv.read_to_end(1 << 20).await.expect("read the push");
        decode::<Push>(&bytes).expect("a Push")
    })
    .await
}

/// The next push, which must be a late receipt: (id, status).
async fn next_receipt(connection: &quinn::Connection) -> (u64, Status) {
    match next_push(connection).await {
        Push::Receipt { id, status } => (id, status),
        other => panic!("a late receipt expected, got {other:?}"),
    }
}

/// Connect `name` with `key`; the connection and its Session's `queued`.
async fn session(server: &TestServer, name: &str, key: &DeviceKey) -> (quinn::Connection, u32) {
    let (connection, reply) = hello_as(&RawClient::new(server, V2, Some(key)), server, name).await;
    (connection, queued_of(&reply))
}

/// Wait until the console's `account NAME` says the store holds `what`
/// (for example `2 late receipts`).
async fn until_stored(server: &TestServer, name: &str, what: &str) {
    let line = format!("account {name}");
    eventually(Duration::from_secs(10), what, || async {
        server.console(&line).await.contains(what)
    })
    .await;
}

#[tokio::test]
async fn an_offline_sender_reads_its_late_receipts_after_its_mail_once() {
    let server = TestServer::start().await;
    let alice_key = register(&server, "alice").await;
    let bob_key = register(&server, "bob").await;
    let carol_key = register(&server, "carol").await;

    let (alice, _) = session(&server, "alice", &alice_key).await;
    let mut sent = BTreeSet::new();
    for body in ["one", "two", "three"] {
        let (id, status) = receipt(&alice, "bob", body).await;
        assert_eq!(status, Status::Queued);
        sent.insert(id);
    }
    alice.close(0u32.into(), b"bye");
    until_stored(&server, "bob", "stored: 3 messages").await;

    // Alice has mail of her own waiting.
    let (carol, _) = session(&server, "carol", &carol_key).await;
    let (carols, status) = receipt(&carol, "alice", "for alice").await;
    assert_eq!(status, Status::Queued);

    let (bob, queued) = session(&server, "bob", &bob_key).await;
    assert_eq!(queued, 3);
    for _ in 0..3 {
        next_deliver(&bob).await;
    }
    until_stored(&server, "alice", "3 late receipts").await;

    // Her Session counts messages only; her message comes first, then the
    // three receipts, each once.
    let (alice, queued) = session(&server, "alice", &alice_key).await;
    assert_eq!(queued, 1);
    let (id, from, _, body) = next_deliver(&alice).await;
    assert_eq!(
        (id, from.as_str(), body.as_str()),
        (carols, "carol", "for alice")
    );
    let mut told = BTreeSet::new();
    for _ in 0..3 {
        let (id, status) = next_receipt(&alice).await;
        assert_eq!(status, Status::Delivered);
        assert!(told.insert(id), "receipt {id} twice");
    }
    assert_eq!(told, sent);
    // Acknowledged receipts are removed; carol's own receipt was made
    // (she is online, so she was told at once).
    until_stored(&server, "alice", "0 late receipts").await;
    assert_eq!(next_receipt(&carol).await, (carols, Status::Delivered));
    until_stored(&server, "carol", "0 late receipts").await;
    server.stop().await;
}

#[tokio::test]
async fn an_expired_message_tells_its_online_sender_and_is_never_delivered() {
    let server = TestServer::start_with_mail(MailConfig {
        ttl: Duration::from_secs(1),
        ..MailConfig::default()
    })
    .await;
    let alice_key = register(&server, "alice").await;
    let bob_key = register(&server, "bob").await;
    let (alice, _) = session(&server, "alice", &alice_key).await;
    let (id, status) = receipt(&alice, "bob", "too late").await;
    assert_eq!(status, Status::Queued);
    assert_eq!(next_receipt(&alice).await, (id, Status::Expired));
    until_stored(&server, "bob", "stored: 0 messages").await;
    let (_bob, queued) = session(&server, "bob", &bob_key).await;
    assert_eq!(queued, 0, "an expired message is dropped unread");
    server.stop().await;
}

#[tokio::test]
async fn an_offline_sender_gets_expired_later_and_kept_receipts_expire_too() {
    // Three seconds: time enough to connect while the receipt is kept.
    let server = TestServer::start_with_mail(MailConfig {
        ttl: Duration::from_secs(3),
        ..MailConfig::default()
    })
    .await;
    let alice_key = register(&server, "alice").await;
    register(&server, "bob").await;
    let (alice, _) = session(&server, "alice", &alice_key).await;
    let (id, _) = receipt(&alice, "bob", "unread").await;
    alice.close(0u32.into(), b"bye");
    until_stored(&server, "alice", "1 late receipt").await;
    let (alice, queued) = session(&server, "alice", &alice_key).await;
    assert_eq!(queued, 0);
    assert_eq!(next_receipt(&alice).await, (id, Status::Expired));
    alice.close(0u32.into(), b"bye");
    server.stop().await;

    // A receipt nobody comes for expires a lifetime after it was made.
    let server = TestServer::start_with_mail(MailConfig {
        ttl: Duration::from_secs(1),
        ..MailConfig::default()
    })
    .await;
    let alice_key = register(&server, "alice").await;
    register(&server, "bob").await;
    let (alice, _) = session(&server, "alice", &alice_key).await;
    receipt(&alice, "bob", "unread").await;
    alice.close(0u32.into(), b"bye");
    until_stored(&server, "alice", "1 late receipt").await;
    until_stored(&server, "alice", "0 late receipts").await;
    server.stop().await;
}

#[tokio::test]
async fn deleting_an_account_expires_the_mail_waiting_for_it() {
    let server = TestServer::start().await;
    let alice_key = register(&server, "alice").await;
    register(&server, "bob").await;
    let (alice, _) = session(&server, "alice", &alice_key).await;
    let (id, status) = receipt(&alice, "bob", "never read").await;
    assert_eq!(status, Status::Queued);
    assert_eq!(
        server.console("account delete bob").await.trim(),
        "deleted account bob"
    );
    assert_eq!(next_receipt(&alice).await, (id, Status::Expired));
    // A new bob starts with an empty mailbox.
    let (_bob, queued) = session(&server, "bob", &DeviceKey::new()).await;
    assert_eq!(queued, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_guest_hears_of_its_stored_message_on_the_connection_that_sent_it() {
    let server = TestServer::start_with_mail(MailConfig {
        guest_mail: true,
        ..MailConfig::default()
    })
    .await;
    let bob_key = register(&server, "bob").await;
    let (guest, _) = hello_as(&RawClient::new(&server, V2, None), &server, "visitor").await;
    let (id, status) = receipt(&guest, "bob", "from a guest").await;
    assert_eq!(status, Status::Queued);
    let (bob, queued) = session(&server, "bob", &bob_key).await;
    assert_eq!(queued, 1);
    assert_eq!(next_deliver(&bob).await.0, id);
    assert_eq!(next_receipt(&guest).await, (id, Status::Delivered));
    // Nothing is kept for a guest.
    until_stored(&server, "bob", "stored: 0 messages").await;
    server.stop().await;
}
