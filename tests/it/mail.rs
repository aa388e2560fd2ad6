//! Store and forward against the real server: Queued for an offline account,
//! the drain at its next Session (count, order, original ids and times, then
//! an empty store), mail kept across a graceful restart, ordering while a
//! backlog drains, guests get NotConnected.

use std::collections::HashSet;
use std::time::Duration;

use quic_chat::protocol::{decode, Push, Reply, Request, Status};

use crate::harness::v2::*;
use crate::harness::*;

pub const V2: &[u8] = b"quic-chat/2";

fn send(to: &str, body: &str) -> Request {
    Request::Send {
        to: to.into(),
        body: body.into(),
    }
}

pub async fn receipt(connection: &quinn::Connection, to: &str, body: &str) -> (u64, Status) {
    match ask(connection, &send(to, body)).await {
        Reply::Receipt { id, status } => (id, status),
        other => panic!("Receipt expected, got {other:?}"),
    }
}

pub fn queued_of(reply: &Reply) -> u32 {
    match reply {
        Reply::Session { queued, .. } => *queued,
        other => panic!("Session expected, got {other:?}"),
    }
}

/// The next delivery: (id, from, sent_at_ms, body).
pub async fn next_deliver(connection: &quinn::Connection) -> (u64, String, u64, String) {
    within(Duration::from_secs(10), "a delivery", async {
        let mut recv = connection.accept_uni().await.expect("a delivery stream");
        let bytes = recv.read_to_end(1 << 20).await.expect("read delivery");
        match decode::<Push>(&bytes).expect("a Push") {
            Push::Deliver {
                id,
                from,
                sent_at_ms,
                body,
            } => (id, from, sent_at_ms, body),
            other => panic!("Deliver expected, got {other:?}"),
        }
    })
    .await
}

/// Register `name` with a new device key and leave; the key for later.
pub async fn register(server: &TestServer, name: &str) -> DeviceKey {
    let key = DeviceKey::new();
    let (connection, reply) = hello_as(&RawClient::new(server, V2, Some(&key)), server, name).await;
    assert_eq!(queued_of(&reply), 0);
    connection.close(0u32.into(), b"bye");
    key
}

#[tokio::test]
async fn mail_for_an_offline_account_is_queued_then_drained_in_order_after_a_restart() {
    let server = TestServer::start().await;
    let bob_key = register(&server, "Bob").await;
    let alice_key = DeviceKey::new();
    let (alice, _) = hello_as(
        &RawClient::new(&server, V2, Some(&alice_key)),
        &server,
        "Alice",
    )
    .await;
    let mut sent = Vec::new();
    for i in 0..5 {
        let body = format!("message {i}");
        let (id, status) = receipt(&alice, "bob", &body).await;
        assert_eq!(status, Status::Queued, "{body}");
        sent.push((id, body));
    }
    // A name with no account, and a guest's mail to an account: not stored.
    assert_eq!(receipt(&alice, "nobody", "x").await.1, Status::NotConnected);
    let guest = RawClient::new(&server, V2, None);
    let (guest, _) = hello_as(&guest, &server, "guest").await;
    assert_eq!(receipt(&guest, "bob", "x").await.1, Status::NotConnected);
    guest.close(0u32.into(), b"bye");
    alice.close(0u32.into(), b"bye");

    // A graceful restart keeps the mail.
    let server = server.restart().await;
    let bob_client = RawClient::new(&server, V2, Some(&bob_key));
    let (bob, reply) = hello_as(&bob_client, &server, "bob").await;
    assert_eq!(queued_of(&reply), 5);
    let mut times = Vec::new();
    for (id, body) in &sent {
        let (got_id, from, sent_at_ms, got_body) = next_deliver(&bob).await;
        assert_eq!((got_id, &from, &got_body), (*id, &"Alice".to_owned(), body));
        times.push(sent_at_ms);
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    bob.close(0u32.into(), b"bye");

    // Each was removed once acknowledged: nothing left.
    eventually(Duration::from_secs(10), "the store is empty", || async {
        let (bob, reply) = hello_as(&bob_client, &server, "bob").await;
        bob.close(0u32.into(), b"bye");
        queued_of(&reply) == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn sends_during_a_drain_arrive_after_the_backlog_in_order_and_once() {
    let server = TestServer::start().await;
    let bob_key = register(&server, "Bob").await;
    let alice_key = DeviceKey::new();
    let (alice, _) = hello_as(
        &RawClient::new(&server, V2, Some(&alice_key)),
        &server,
        "Alice",
    )
    .await;
    let mut order = Vec::new();
    for i in 0..40 {
        let (id, status) = receipt(&alice, "bob", &format!("stored {i}")).await;
        assert_eq!(status, Status::Queued);
        order.push(id);
    }
    let (bob, reply) = hello_as(&RawClient::new(&server, V2, Some(&bob_key)), &server, "bob").await;
    assert_eq!(queued_of(&reply), 40);
    // Alice keeps sending while the backlog drains.
    let sender = {
        let alice = alice.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..20 {
                let (id, status) = receipt(&alice, "bob", &format!("later {i}")).await;
                assert!(
                    matches!(status, Status::Queued | Status::Delivered),
                    "{status:?}"
                );
                ids.push(id);
            }
            ids
        })
    };
    let mut seen = Vec::new();
    while seen.len() < 60 {
        seen.push(next_deliver(&bob).await.0);
    }
    order.extend(sender.await.unwrap());
    assert_eq!(seen, order, "acceptance order, each once");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 60);
    // A later one still arrives (live once the drain has gone live).
    let status = receipt(&alice, "bob", "later").await.1;
    assert!(
        matches!(status, Status::Queued | Status::Delivered),
        "{status:?}"
    );
    assert_eq!(next_deliver(&bob).await.3, "later");
    server.stop().await;
}

#[tokio::test]
async fn message_ids_never_repeat_across_three_restarts() {
    let mut server = TestServer::start().await;
    let mut ids = HashSet::new();
    for run in 0..3 {
        let (connection, _) = hello_as(&RawClient::new(&server, V2, None), &server, "guest").await;
        for i in 0..5 {
            let (id, _) = receipt(&connection, "nobody", &format!("{run}/{i}")).await;
            assert!(ids.insert(id), "id {id} repeated in run {run}");
        }
        connection.close(0u32.into(), b"bye");
        server = server.restart().await;
    }
    assert_eq!(ids.len(), 15);
    server.stop().await;
}

/// Through the binary, as two people would: bob registers and leaves; alice
/// (an account too) sends while he is away and is told it is queued; bob
/// comes back and is told a message waited, then reads it.
#[test]
fn two_people_never_online_together_still_talk() {
    use crate::harness::process::{connect_with, start_server};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, ca) = start_server(dir.path(), Stdio::piped());
    // Each person on a device of their own.
    let bob_key = ["--identity", "bob-key"];
    let alice_key = ["--identity", "alice-key"];

    let mut bob = connect_with(dir.path(), port, &ca, "bob", &bob_key);
    assert!(bob.line().starts_with("Welcome to "));
    assert_eq!(bob.line(), "registered as bob");
    bob.type_line("EXIT");
    assert!(bob.exit().success());

    let mut alice = connect_with(dir.path(), port, &ca, "alice", &alice_key);
    assert!(alice.line().starts_with("Welcome to "));
    assert_eq!(alice.line(), "registered as alice");
    alice.type_line("send bob are you there?");
    assert_eq!(
        alice.line(),
        "bob is offline; the message will be delivered when they connect"
    );
    alice.type_line("EXIT");
    assert!(alice.exit().success());

    let mut bob = connect_with(dir.path(), port, &ca, "bob", &bob_key);
    assert!(bob.line().starts_with("Welcome to "));
    assert_eq!(bob.line(), "welcome back, bob");
    assert_eq!(bob.line(), "1 message waited for you");
    assert_eq!(bob.line(), "alice: are you there?");
    bob.type_line("EXIT");
    assert!(bob.exit().success());
    server.type_line("EXIT");
    assert!(server.exit().success());
}

/// A sender who is online when its queued message is finally acknowledged
/// gets a late `Push::Receipt{id, Delivered}`, once.
#[tokio::test]
async fn an_online_sender_gets_a_late_delivered_receipt() {
    let server = TestServer::start().await;
    let bob_key = register(&server, "bob").await;
    let alice_key = DeviceKey::new();
    let (alice, _) = hello_as(
        &RawClient::new(&server, V2, Some(&alice_key)),
        &server,
        "alice",
    )
    .await;
    let (id, status) = receipt(&alice, "bob", "see you later").await;
    assert_eq!(status, Status::Queued);
    let (bob, reply) = hello_as(&RawClient::new(&server, V2, Some(&bob_key)), &server, "bob").await;
    assert_eq!(queued_of(&reply), 1);
    let (got, _, _, body) = next_deliver(&bob).await;
    assert_eq!((got, body.as_str()), (id, "see you later"));
    let late = within(Duration::from_secs(10), "a late receipt", async {
        let mut recv = alice.accept_uni().await.expect("a push stream");
        let bytes = recv.read_to_end(1 << 10).await.expect("read the push");
        decode::<Push>(&bytes).expect("a Push")
    })
    .await;
    assert_eq!(
        late,
        Push::Receipt {
            id,
            status: Status::Delivered
        }
    );
    server.stop().await;
}

/// A mailbox at its cap answers RecipientBusy and stores nothing more;
/// `--no-store` keeps nothing (NotConnected, as v1); `--guest-mail` lets a
/// guest leave mail for an account.
#[tokio::test]
async fn caps_no_store_and_guest_mail_as_configured() {
    use quic_chat::server::MailConfig;
    let capped = MailConfig {
        mailbox_max_messages: 2,
        guest_mail: true,
        ..MailConfig::default()
    };
    let server = TestServer::start_with_mail(capped).await;
    let bob_key = register(&server, "bob").await;
    let (guest, _) = hello_as(&RawClient::new(&server, V2, None), &server, "visitor").await;
    let (first, status) = receipt(&guest, "bob", "one").await;
    assert_eq!(status, Status::Queued, "guests may leave mail here");
    assert_eq!(receipt(&guest, "bob", "two").await.1, Status::Queued);
    assert_eq!(
        receipt(&guest, "bob", "three").await.1,
        Status::RecipientBusy
    );
    let (bob, reply) = hello_as(&RawClient::new(&server, V2, Some(&bob_key)), &server, "bob").await;
    assert_eq!(queued_of(&reply), 2, "the third was not stored");
    let (id, from, _, body) = next_deliver(&bob).await;
    assert_eq!(
        (id, from.as_str(), body.as_str()),
        (first, "visitor", "one")
    );
    server.stop().await;

    let off = MailConfig {
        enabled: false,
        ..MailConfig::default()
    };
    let server = TestServer::start_with_mail(off).await;
    register(&server, "bob").await;
    let (alice, _) = hello_as(
        &RawClient::new(&server, V2, Some(&DeviceKey::new())),
        &server,
        "alice",
    )
    .await;
    assert_eq!(
        receipt(&alice, "bob", "hello?").await.1,
        Status::NotConnected
    );
    server.stop().await;
}
