//! Faults: a recipient process killed mid-deliveries, a server killed with
//! SIGKILL, and clients that vanish without closing. Nothing hangs, every Send
//! is answered with a proper status, and names come free within the idle timeout.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quic_chat::client::{Client, ClientConfig, ClientError, Disconnect};
use quic_chat::protocol::{RefuseReason, Status};
use quic_chat::server::Limits;
use tokio::task::block_in_place;

use crate::harness::process;
use crate::harness::*;

/// The idle timeout the in-process servers here use, so that dead peers are noticed quickly.
const IDLE: Duration = Duration::from_secs(2);

/// Slack on top of [`IDLE`] for the last packet before the death and for a
/// loaded machine: 3 s, or `QUIC_CHAT_FAULT_SLACK_SECS` (like the soak's
/// `QUIC_CHAT_SOAK_SECS`) on a slower one.
fn slack() -> Duration {
    std::env::var("QUIC_CHAT_FAULT_SLACK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(3), Duration::from_secs_f64)
}

fn short_idle_limits() -> Limits {
    Limits {
        idle_timeout: IDLE,
        ..test_limits()
    }
}

/// A library client config that keeps its connection alive under the short idle timeout.
fn lively(server: &TestServer, name: &str) -> ClientConfig {
    let mut config = server.client_config(name);
    config.keep_alive = Duration::from_millis(300);
    config
}

/// Try to register `name` until the server lets it; returns when it did.
async fn claim_when_free(server: &TestServer, name: &str, limit: Duration) -> Instant {
    let config = lively(server, name);
    within(limit, &format!("{name}'s name to come free"), async {
        loop {
            match Client::connect(&config).await {
                Ok((client, _)) => {
                    let freed = Instant::now();
                    client.close().await;
                    return freed;
                }
                Err(ClientError::Refused {
                    reason: RefuseReason::NameTaken,
                    ..
                }) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("probe for {name} failed: {e}"),
            }
        }
    })
    .await
}

/// The name of an abandoned connection stays taken (the server cannot know yet),
/// then comes free once the idle timeout has passed.
async fn assert_freed_by_idle_timeout(server: &TestServer, name: &str, abandoned: Instant) {
    let early = Client::connect(&lively(server, name)).await;
    assert!(
        matches!(
            early,
            Err(ClientError::Refused {
                reason: RefuseReason::NameTaken,
                ..
            })
        ),
        "an abandoned connection still holds its name until it times out: {early:?}"
    );
    let freed = claim_when_free(server, name, IDLE + slack() + SCENARIO).await;
    let took = freed - abandoned;
    assert!(
        took <= IDLE + slack(),
        "{name} freed {took:?} after it was abandoned"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_killed_mid_deliveries_leaves_senders_answered_and_frees_its_name() {
    let server = TestServer::start_with(short_idle_limits()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = server.ca.to_str().unwrap().to_owned();
    let mut victim = process::connect(dir.path(), server.addr.port(), &ca, "victim");
    let welcome = block_in_place(|| process::welcome_of(&victim));
    assert!(welcome.contains("Welcome"), "{welcome}");
    let (alice, _) = Client::connect(&lively(&server, "alice")).await.unwrap();
    let alice = Arc::new(alice);

    // Eight senders stream to the victim until told to stop; every Send's
    // status and time to answer is recorded, and an error fails the test.
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..8)
        .map(|w| {
            let alice = Arc::clone(&alice);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let asked = Instant::now();
                    let receipt = alice.send("victim", &format!("w{w} m{i}")).await;
                    let receipt = receipt.unwrap_or_else(|e| panic!("send failed: {e}"));
                    outcomes.push((asked, receipt.status, asked.elapsed()));
                    i += 1;
                }
                outcomes
            })
        })
        .collect();
    // Kill it once it is visibly taking messages.
    for _ in 0..20 {
        let line = block_in_place(|| victim.line());
        assert!(line.starts_with("alice: w"), "{line}");
    }
    victim.child.kill().expect("SIGKILL");
    victim.child.wait().unwrap();
    let killed = Instant::now();

    let freed = claim_when_free(&server, "victim", IDLE + slack() + SCENARIO).await;
    assert!(
        freed - killed <= IDLE + slack(),
        "the dead recipient's name was freed {:?} after the kill",
        freed - killed
    );
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    within(SCENARIO, "senders finish", async {
        for sender in senders {
            outcomes.extend(sender.await.expect("sender"));
        }
    })
    .await;
    for (_, status, took) in &outcomes {
        assert!(
            matches!(
                status,
                Status::Delivered | Status::NotConnected | Status::RecipientBusy
            ),
            "{status:?}"
        );
        assert!(*took < Duration::from_secs(10), "answered in {took:?}");
    }
    // Not necessarily all 20 shown lines: a message read just before the kill
    // whose acknowledgement never left is answered NotConnected, as the contract allows.
    let delivered_before_kill = outcomes
        .iter()
        .filter(|(asked, s, took)| *asked + *took < killed && *s == Status::Delivered)
        .count();
    assert!(
        delivered_before_kill > 0,
        "nothing was delivered before the kill"
    );
    // Sends in flight at the kill (or made after it) were answered, but not as Delivered.
    let undelivered_after_kill = outcomes
        .iter()
        .filter(|(asked, s, took)| *asked + *took >= killed && *s != Status::Delivered)
        .count();
    assert!(
        undelivered_after_kill > 0,
        "no send was answered as undelivered after the kill"
    );

    // The server is still serving: a new victim gets messages.
    let (_victim, mut victim_in) = Client::connect(&lively(&server, "victim")).await.unwrap();
    let receipt = within(SCENARIO, "send", alice.send("victim", "welcome back"))
        .await
        .unwrap();
    assert_eq!(receipt.status, Status::Delivered);
    let message = within(SCENARIO, "delivery", victim_in.next())
        .await
        .unwrap()
        .into_message()
        .expect("a message");
    assert_eq!(
        (message.id, message.body.as_str()),
        (receipt.id, "welcome back")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_with_sigkill_is_noticed_within_the_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, ca) =
        block_in_place(|| process::start_server(dir.path(), Stdio::piped()));
    let mut config = ClientConfig::new(format!("127.0.0.1:{port}"), "alice", dir.path().join(ca));
    config.idle_timeout = IDLE;
    config.keep_alive = Duration::from_millis(300);
    let (client, mut incoming) = within(SCENARIO, "connect", Client::connect(&config))
        .await
        .unwrap();
    assert_eq!(client.list_users().await.unwrap(), ["alice"]);

    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    let killed = Instant::now();
    let ended = within(IDLE + slack(), "the client to notice", incoming.next()).await;
    let noticed = killed.elapsed();
    let Err(Disconnect::Lost(why)) = ended else {
        panic!("expected a lost connection, got {ended:?}");
    };
    assert_eq!(why, "connection lost: the server stopped answering");
    assert!(noticed <= IDLE + slack(), "noticed after {noticed:?}");
    // Later calls fail at once with the same reason instead of hanging.
    let send = within(SCENARIO, "send after loss", client.send("alice", "hello?")).await;
    assert!(
        matches!(send, Err(ClientError::Disconnected(Disconnect::Lost(_)))),
        "{send:?}"
    );
    assert_eq!(incoming.next().await, Err(Disconnect::Lost(why)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_without_closing_frees_its_name_after_the_idle_timeout() {
    let server = TestServer::start_with(short_idle_limits()).await;
    // Register on a runtime of its own, then drop that runtime: the endpoint
    // stops without a CONNECTION_CLOSE, as in a crash or a pulled cable.
    block_in_place(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let connection = runtime.block_on(raw_registered(&server, "ghost"));
        drop(runtime);
        drop(connection);
    });
    assert_freed_by_idle_timeout(&server, "ghost", Instant::now()).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_silent_without_closing_frees_its_name_after_the_idle_timeout() {
    let server = TestServer::start_with(short_idle_limits()).await;
    // The connection is never closed nor dropped: its QUIC stack still answers,
    // but the application sends nothing and no keep-alives.
    let connection = raw_registered(&server, "mute").await;
    std::mem::forget(connection);
    assert_freed_by_idle_timeout(&server, "mute", Instant::now()).await;
    server.stop().await;
}
