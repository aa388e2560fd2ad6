//! Crash safety of store and forward: the server process is SIGKILLed at a
//! random point while alice sends 2,000 numbered messages to offline bob (32
//! in flight), restarted on the same data directory, and bob reads what was
//! kept. Seeds come from `QUIC_CHAT_CRASH_SEEDS` (default `1,2,3`).
//!
//! What it proves: a message answered `Queued` was on disk (fsync'd) before
//! the answer, survives the kill, arrives exactly once after dedup and in each
//! sender task's order, with the id its receipt carried; nothing answered
//! otherwise arrives. What it cannot prove: that data survives a power cut
//! (the kernel's page cache survives a process kill).

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quic_chat::client::{Client, ClientConfig};
use quic_chat::protocol::Status;
use quic_chat::tls::ClientIdentity;

use crate::harness::process::start_server_with;
use crate::harness::*;

const MESSAGES: usize = 2_000;
const IN_FLIGHT: usize = 32;
/// The human-oriented rate limit would answer most of the burst RateLimited,
/// and the default mailbox cap (1,000) would make the rest RecipientBusy.
const UNLIMITED: &[&str] = &["--rate-limit", "0", "--mailbox-max-messages", "5000"];

/// Per message index: its receipt's id and status, or `None` if unanswered.
type Outcomes = Arc<Mutex<Vec<Option<(u64, Status)>>>>;

fn seeds() -> Vec<u64> {
    std::env::var("QUIC_CHAT_CRASH_SEEDS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// A config for `name` on `port`, as the device whose key lives in `dir/name-key`.
fn device(dir: &std::path::Path, port: u16, ca: &str, name: &str) -> ClientConfig {
    // The server prints its CA path relative to its directory.
    let mut config = ClientConfig::new(format!("127.0.0.1:{port}"), name, dir.join(ca));
    config.server_name = Some("localhost".into());
    // A killed server sends no close: notice it in a second or two, not 15 s.
    config.keep_alive = Duration::from_millis(300);
    config.idle_timeout = Duration::from_secs(2);
    config.answer_timeout = Duration::from_secs(3);
    let identity = ClientIdentity::load_or_create(&dir.join(format!("{name}-key"))).unwrap();
    config.identity = Some(identity);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_burst_keeps_every_message_it_answered_queued() {
    for seed in seeds() {
        crash_once(seed).await;
    }
}

async fn crash_once(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, ca) = start_server_with(dir.path(), Stdio::piped(), UNLIMITED, &[]);
    // bob registers, then is away.
    let (bob, _) = within(
        SCENARIO,
        "bob registers",
        Client::connect(&device(dir.path(), port, &ca, "bob")),
    )
    .await
    .expect("bob connects");
    bob.close().await;
    let (alice, _alice_in) = within(
        SCENARIO,
        "alice connects",
        Client::connect(&device(dir.path(), port, &ca, "alice")),
    )
    .await
    .expect("alice connects");
    let alice = Arc::new(alice);

    // Kill after a seeded number of answers, somewhere in the burst.
    let kill_after = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize % MESSAGES;
    let answered = Arc::new(AtomicUsize::new(0));
    let outcomes: Outcomes = Arc::new(Mutex::new(vec![None; MESSAGES]));
    let pid = server.child.id();
    let killer = {
        let answered = Arc::clone(&answered);
        tokio::spawn(async move {
            while answered.load(Ordering::Relaxed) < kill_after {
                tokio::task::yield_now().await;
            }
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        })
    };
    let mut senders = tokio::task::JoinSet::new();
    for task in 0..IN_FLIGHT {
        let (alice, answered, outcomes) = (
            Arc::clone(&alice),
            Arc::clone(&answered),
            Arc::clone(&outcomes),
        );
        senders.spawn(async move {
            for index in (task..MESSAGES).step_by(IN_FLIGHT) {
                match alice.send("bob", &format!("m{index}")).await {
                    Ok(receipt) => {
                        outcomes.lock().unwrap()[index] = Some((receipt.id, receipt.status));
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // The server is gone: this and later sends are unanswered.
                    Err(_) => return,
                }
            }
        });
    }
    within(Duration::from_secs(60), "the burst ends", async {
        while senders.join_next().await.is_some() {}
    })
    .await;
    within(SCENARIO, "the kill", killer).await.unwrap();
    assert!(
        !server.exit().success(),
        "seed {seed}: the server was killed"
    );

    // Restart on the same data directory: it must be serving within 5 s.
    let restarted = Instant::now();
    let (mut server, port, ca) = start_server_with(dir.path(), Stdio::piped(), UNLIMITED, &[]);
    let reopen = restarted.elapsed();
    assert!(
        reopen < Duration::from_secs(5),
        "seed {seed}: reopened in {reopen:?}"
    );

    let (bob, mut bob_in) = within(
        SCENARIO,
        "bob returns",
        Client::connect(&device(dir.path(), port, &ca, "bob")),
    )
    .await
    .expect("bob connects again");
    let queued = bob.welcome().queued as usize;
    let mut received: Vec<(u64, usize)> = Vec::new();
    for _ in 0..queued {
        let message = next_within(&mut bob_in).await.expect("a stored message");
        let index: usize = message.body[1..].parse().expect("a numbered body");
        received.push((message.id, index));
    }

    let outcomes = outcomes.lock().unwrap().clone();
    let queued_ids: HashMap<usize, u64> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Some((id, Status::Queued)) => Some((i, *id)),
            _ => None,
        })
        .collect();
    let counted: usize = outcomes.iter().filter(|o| o.is_some()).count();
    assert!(
        counted >= kill_after.min(MESSAGES),
        "seed {seed}: {counted} answered before the kill at {kill_after}"
    );
    // Exactly once, with the id its receipt carried.
    let mut seen = HashSet::new();
    for (id, index) in &received {
        assert!(seen.insert(*index), "seed {seed}: m{index} arrived twice");
        match outcomes[*index] {
            Some((sent_id, Status::Queued)) => {
                assert_eq!(*id, sent_id, "seed {seed}: m{index}'s id")
            }
            Some((_, other)) => panic!("seed {seed}: m{index} was answered {other:?} but arrived"),
            None => {} // committed, but its answer was lost in the kill: allowed
        }
    }
    for index in queued_ids.keys() {
        assert!(
            seen.contains(index),
            "seed {seed}: m{index} was Queued but never arrived"
        );
    }
    // In each sender task's order.
    for task in 0..IN_FLIGHT {
        let order: Vec<usize> = received
            .iter()
            .map(|(_, i)| *i)
            .filter(|i| i % IN_FLIGHT == task)
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: task {task} out of order: {order:?}"
        );
    }
    eprintln!(
        "crash seed {seed}: killed after {kill_after} answers; {} Queued, {} kept, reopened in {reopen:?}",
        queued_ids.len(),
        received.len()
    );
    bob.close().await;
    server.type_line("EXIT");
    assert!(server.exit().success());
}

/// The server is killed while bob drains his mailbox: after the restart he
/// gets the rest. Each message answered Queued arrives at least once over
/// both sessions and, after dropping repeated ids (as a client must), exactly
/// once; a repeat carries the same body as the first time. Each session
/// delivers in send order. (Across the crash, order cannot hold: the kill may
/// cut off one delivery of the window in flight while later ones complete;
/// the cut-off one was never acknowledged, so it comes again from the store,
/// after them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_drain_delivers_the_rest_after_its_restart() {
    const STORED: usize = 400;
    for seed in seeds() {
        let dir = tempfile::tempdir().unwrap();
        let (server, port, ca) = start_server_with(dir.path(), Stdio::piped(), UNLIMITED, &[]);
        let bob_config = device(dir.path(), port, &ca, "bob");
        let (bob, _) = within(SCENARIO, "bob registers", Client::connect(&bob_config))
            .await
            .expect("bob connects");
        bob.close().await;
        let alice_config = device(dir.path(), port, &ca, "alice");
        let (alice, _in) = within(SCENARIO, "alice connects", Client::connect(&alice_config))
            .await
            .expect("alice connects");
        let mut ids = Vec::new();
        for index in 0..STORED {
            let receipt = alice
                .send("bob", &format!("m{index}"))
                .await
                .expect("answered");
            assert_eq!(receipt.status, Status::Queued, "seed {seed}: m{index}");
            ids.push(receipt.id);
        }
        alice.close().await;

        // bob reads part of his mail, then the server dies.
        let read_before =
            1 + (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize % (STORED - 1);
        let (bob, mut bob_in) = within(SCENARIO, "bob drains", Client::connect(&bob_config))
            .await
            .expect("bob connects");
        assert_eq!(bob.welcome().queued as usize, STORED, "seed {seed}");
        let mut arrived: Vec<(u64, String)> = Vec::new();
        for _ in 0..read_before {
            let message = next_within(&mut bob_in).await.expect("a stored message");
            arrived.push((message.id, message.body));
        }
        let pid = server.child.id();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
        let mut server = server;
        assert!(!server.exit().success(), "seed {seed}: killed");
        // What bob's QUIC stack acknowledged counts as delivered (the server
        // may have removed it): his client still hands him every delivery
        // that had fully arrived, then ends. Closing makes that immediate.
        bob.close().await;
        while let Ok(event) = within(SCENARIO, "the rest bob had", bob_in.next()).await {
            if let Some(message) = event.into_message() {
                arrived.push((message.id, message.body));
            }
        }
        let had = arrived.len();

        let (mut server, port, ca) = start_server_with(dir.path(), Stdio::piped(), UNLIMITED, &[]);
        let (bob, mut bob_in) = within(
            SCENARIO,
            "bob returns",
            Client::connect(&device(dir.path(), port, &ca, "bob")),
        )
        .await
        .expect("bob connects again");
        let left = bob.welcome().queued as usize;
        // Removal after acknowledgement is committed a page at a time, so
        // some already delivered may come again (at least once): dedup below.
        assert!(left <= STORED, "seed {seed}: {left} left");
        for _ in 0..left {
            let message = next_within(&mut bob_in).await.expect("a stored message");
            arrived.push((message.id, message.body));
        }
        let index = |body: &str| body[1..].parse::<usize>().expect("m<index>");
        let sessions = [&arrived[..had], &arrived[had..]];
        for (n, session) in sessions.iter().enumerate() {
            assert!(
                session.windows(2).all(|w| index(&w[0].1) < index(&w[1].1)),
                "seed {seed}: session {n} in send order: {session:?}"
            );
        }
        // Dedup by id, as the contract asks of clients.
        let mut first: HashMap<u64, String> = HashMap::new();
        let mut order = Vec::new();
        for (id, body) in arrived {
            match first.get(&id) {
                Some(earlier) => assert_eq!(earlier, &body, "seed {seed}: id {id} with two bodies"),
                None => {
                    first.insert(id, body.clone());
                    order.push(body);
                }
            }
        }
        let expected: Vec<String> = (0..STORED).map(|i| format!("m{i}")).collect();
        order.sort_by_key(|body| index(body));
        assert_eq!(order, expected, "seed {seed}: every message once");
        let want: HashSet<u64> = ids.into_iter().collect();
        assert_eq!(
            first.keys().copied().collect::<HashSet<_>>(),
            want,
            "seed {seed}: the ids"
        );
        eprintln!(
            "drain crash seed {seed}: read {read_before} before the kill ({had} had arrived), {left} after"
        );
        bob.close().await;
        server.type_line("EXIT");
        assert!(server.exit().success());
    }
}
