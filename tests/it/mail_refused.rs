//! A live delivery that never reaches the recipient's acknowledgement becomes
//! stored mail: stopped by the recipient, or lost with its connection, the
//! sender is told `Queued`, and the message arrives at the recipient's next
//! Session with its id, counted in `Session.queued`.
//!
//! The recipient's stream receive window is smaller than the delivery, so the
//! server cannot send all of it (and the recipient's QUIC stack cannot
//! acknowledge it) until the recipient reads: the STOP_SENDING or the close
//! always comes before the acknowledgement. With a window that holds the
//! whole frame, the QUIC stack acknowledges on receipt, before any
//! application could stop the stream, and the message counts as delivered.

use std::time::Duration;

use quic_chat::protocol::{decode, Push, Status};

use crate::harness::v2::*;
use crate::harness::*;
use crate::mail::{next_deliver, queued_of, receipt, register, V2};

/// Bytes of a stream bob's QUIC stack accepts before he reads.
const WINDOW: u32 = 64;

/// Transport settings that hold a large delivery back until it is read.
fn held_back() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_uni_streams(16u32.into());
    transport.stream_receive_window(WINDOW.into());
    transport
}

/// A body many times the window.
fn big_body() -> String {
    "not read yet ".repeat(80)
}

/// Alice (an account) online; bob (an account) online on a held-back
/// connection, his mailbox live; alice's Send of a big body to bob running. Returns alice,
/// bob's key and connection, the Send (its id and status), and the body.
async fn a_delivery_under_way(
    server: &TestServer,
) -> (
    quinn::Connection,
    DeviceKey,
    quinn::Connection,
    tokio::task::JoinHandle<(u64, Status)>,
    String,
) {
    let bob_key = register(server, "bob").await;
    let (alice, _) = hello_as(
        &RawClient::new(server, V2, Some(&DeviceKey::new())),
        server,
        "alice",
    )
    .await;
    let held = RawClient::with_transport(server, V2, Some(&bob_key), held_back());
    let (bob, reply) = hello_as(&held, server, "bob").await;
    assert_eq!(queued_of(&reply), 0);
    until_live(&alice, &bob).await;
    let body = big_body();
    let send = {
        let (alice, body) = (alice.clone(), body.clone());
        tokio::spawn(async move { receipt(&alice, "bob", &body).await })
    };
    (alice, bob_key, bob, send, body)
}

/// Probe until bob's mailbox is live: a session starts Draining (even with
/// nothing stored), and a Send meanwhile is stored and drained, answered
/// `Queued` for that reason. A probe answered `Delivered` went out live, and
/// a mailbox never drains again on the same connection.
async fn until_live(alice: &quinn::Connection, bob: &quinn::Connection) {
    within(SCENARIO, "bob's mailbox going live", async {
        loop {
            let probe = {
                let alice = alice.clone();
                tokio::spawn(async move { receipt(&alice, "bob", "probe").await })
            };
            // Live or drained, the probe reaches bob (it fits his window).
            let (got, _, _, body) = next_deliver(bob).await;
            let (id, status) = probe.await.unwrap();
            assert_eq!((got, body.as_str()), (id, "probe"));
            match status {
                Status::Delivered => return,
                Status::Queued => assert_eq!(
                    late_receipt(alice).await,
                    Push::Receipt {
                        id,
                        status: Status::Delivered
                    }
                ),
                other => panic!("a probe answered {other:?}"),
            }
        }
    })
    .await;
}

/// Bob's next Session on an ordinary connection: it counts one stored
/// message, and that message is alice's, with its id and body.
async fn drained_at_the_next_session(
    server: &TestServer,
    bob_key: &DeviceKey,
    id: u64,
    body: &str,
) {
    let (bob, reply) = hello_as(&RawClient::new(server, V2, Some(bob_key)), server, "bob").await;
    assert_eq!(queued_of(&reply), 1, "the refused delivery is stored");
    let (got, from, _, got_body) = next_deliver(&bob).await;
    assert_eq!((got, from.as_str(), got_body.as_str()), (id, "alice", body));
    bob.close(0u32.into(), b"bye");
}

/// The late receipt alice gets once bob's drain acknowledged `id`.
async fn late_receipt(alice: &quinn::Connection) -> Push {
    within(Duration::from_secs(10), "a late receipt", async {
        let mut recv = alice.accept_uni().await.expect("a push stream");
        let bytes = recv.read_to_end(1 << 10).await.expect("read the push");
        decode::<Push>(&bytes).expect("a Push")
    })
    .await
}

#[tokio::test]
async fn a_live_delivery_the_recipient_stops_is_queued_and_arrives_at_the_next_session() {
    let server = TestServer::start().await;
    let (alice, bob_key, bob, send, body) = a_delivery_under_way(&server).await;
    // Bob takes the delivery's stream and stops it unread.
    let mut delivery = within(SCENARIO, "the delivery stream", bob.accept_uni())
        .await
        .expect("a delivery stream");
    delivery.stop(0u32.into()).expect("stop the stream");
    let (id, status) = within(SCENARIO, "alice's receipt", send).await.unwrap();
    assert_eq!(status, Status::Queued, "stopped before acknowledging");

    // A later live message to bob, still connected, is not held back by it.
    let later = {
        let alice = alice.clone();
        tokio::spawn(async move { receipt(&alice, "bob", "later").await })
    };
    let (got, _, _, got_body) = next_deliver(&bob).await;
    let (later_id, later_status) = within(SCENARIO, "the later receipt", later).await.unwrap();
    assert_eq!(
        (later_status, got, got_body.as_str()),
        (Status::Delivered, later_id, "later")
    );
    bob.close(0u32.into(), b"bye");

    drained_at_the_next_session(&server, &bob_key, id, &body).await;
    assert_eq!(
        late_receipt(&alice).await,
        Push::Receipt {
            id,
            status: Status::Delivered
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn a_live_delivery_lost_with_the_recipients_connection_is_queued() {
    let server = TestServer::start().await;
    let (alice, bob_key, bob, send, body) = a_delivery_under_way(&server).await;
    // The delivery has begun (its stream is open), and bob's connection ends.
    within(SCENARIO, "the delivery stream", bob.accept_uni())
        .await
        .expect("a delivery stream");
    bob.close(0u32.into(), b"gone");
    let (id, status) = within(SCENARIO, "alice's receipt", send).await.unwrap();
    assert_eq!(status, Status::Queued, "lost before acknowledging");

    drained_at_the_next_session(&server, &bob_key, id, &body).await;
    assert_eq!(
        late_receipt(&alice).await,
        Push::Receipt {
            id,
            status: Status::Delivered
        }
    );
    server.stop().await;
}
