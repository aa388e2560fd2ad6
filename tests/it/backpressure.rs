//! A recipient that never reads: its senders get RecipientBusy, it is closed
//! with TOO_SLOW, every Send is answered in time, and others keep chatting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quic_chat::protocol::Status;
use quic_chat::server::Limits;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_recipient_gets_busy_then_closed_while_others_chat() {
    let limits = Limits {
        delivery_timeout: Duration::from_millis(800),
        recipient_backlog_bytes: 16 * 1024,
        ..test_limits()
    };
    let server = TestServer::start_with(limits).await;
    // Registers, then never accepts a delivery stream: after its few stream
    // credits are used up, nothing more can be opened to it.
    let stuck = raw_registered(&server, "stuck").await;
    let (alice, _) = server.connect("alice").await;
    let alice = Arc::new(alice);
    let (carol, _) = server.connect("carol").await;
    let (_dave, mut dave_in) = server.connect("dave").await;

    let started = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..120 {
        let alice = Arc::clone(&alice);
        sends.spawn(async move {
            let sent = Instant::now();
            let receipt = alice
                .send("stuck", &format!("message {i} {}", "x".repeat(200)))
                .await;
            (receipt.unwrap().status, sent.elapsed())
        });
    }
    let mut statuses = Vec::new();
    within(SCENARIO, "every send answered", async {
        while let Some(done) = sends.join_next().await {
            statuses.push(done.unwrap());
        }
    })
    .await;
    let busy = statuses
        .iter()
        .filter(|(s, _)| *s == Status::RecipientBusy)
        .count();
    assert!(
        busy > 0,
        "the stuck recipient made senders busy: {statuses:?}"
    );
    for (status, took) in &statuses {
        assert!(
            matches!(
                status,
                Status::Delivered | Status::RecipientBusy | Status::NotConnected
            ),
            "{status:?}"
        );
        assert!(*took < Duration::from_secs(10), "answered within 10 s");
    }
    assert_eq!(close_code(&stuck).await, Some(4), "closed with TOO_SLOW");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Everyone else is unaffected.
    let receipt = within(SCENARIO, "carol to dave", carol.send("dave", "still here"))
        .await
        .unwrap();
    assert_eq!(receipt.status, Status::Delivered);
    assert_eq!(next_within(&mut dave_in).await.unwrap().body, "still here");
    // And the stuck user's name is free again.
    eventually(SCENARIO, "stuck's name freed", || async {
        alice.send("stuck", "?").await.unwrap().status == Status::NotConnected
    })
    .await;
    server.stop().await;
}
