//! Soak: dozens of clients message each other at random for a bounded time
//! while some of them leave (in the middle of their own sends) and come back.
//! Every Send and every delivery is accounted for against the contract.
//!
//! `QUIC_CHAT_SOAK_SECS` sets the sending time (default 3 s, for a quick local
//! `cargo test`; `.ci/run` sets 15 s); `QUIC_CHAT_SOAK_SEED` replays a run.
//! The checks are named after docs/RELIABILITY.md's numbered list.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quic_chat::client::{
    Client, ClientConfig, ClientError, ClientEvent, Disconnect, Incoming, Message,
};
use quic_chat::protocol::{CloseCode, RefuseReason, Status};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::harness::*;

/// Users in the soak.
const USERS: usize = 30;
/// Concurrent senders per connected user.
const WORKERS: u64 = 2;
/// Every `CHURN_EVERY`-th user leaves and comes back over and over.
const CHURN_EVERY: usize = 3;

fn soak_time() -> Duration {
    let secs = std::env::var("QUIC_CHAT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    Duration::from_secs(secs)
}

fn soak_seed() -> u64 {
    std::env::var("QUIC_CHAT_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe)
}

/// xorshift64*: seeded, so that a run can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn name(user: usize) -> String {
    format!("soak{user:02}")
}

/// A body that names its sender, sequence number and intended recipient, so a
/// misdelivery or a forged `from` is visible; padded to a random length.
fn body(from: usize, to: usize, seq: u64, rng: &mut Rng) -> String {
    const PAD: [&str; 6] = ["x", "y", "é", "€", " ", "\t"];
    let len = match rng.below(10) {
        0 => rng.below(4000),
        _ => rng.below(40),
    };
    let pad: String = (0..len).map(|_| PAD[rng.below(6) as usize]).collect();
    format!("{}>{}#{seq}|{pad}", name(from), name(to))
}

/// `(from, to, seq)` from a body made by [`body`].
fn parse(body: &str) -> Option<(String, String, u64)> {
    let (head, _) = body.split_once('|')?;
    let (from, rest) = head.split_once('>')?;
    let (to, seq) = rest.split_once('#')?;
    Some((from.to_owned(), to.to_owned(), seq.parse().ok()?))
}

/// One Send as its sender saw it.
#[derive(Debug)]
struct Sent {
    from: usize,
    to: usize,
    seq: u64,
    body: String,
    started: Instant,
    finished: Instant,
    /// `None`: the sender's own connection was closed by us while the Send was in flight.
    receipt: Option<(u64, Status)>,
}

/// One time a user was not registered. A user's first gap runs from the start
/// of the test to its first Welcome.
#[derive(Debug, Clone, Copy)]
struct Gap {
    /// Just before the connection was closed (no earlier can the server have let the name go).
    closing: Instant,
    /// Just after `close` was called (no later can a delivery have been acknowledged).
    closed: Instant,
    /// After the next Welcome; `None` if the user never came back.
    back: Option<Instant>,
}

/// When each user was away.
type Gaps = Arc<Mutex<Vec<Vec<Gap>>>>;

/// What one user leaves behind: its sends, and its last connection, still open.
struct UserRun {
    sent: Vec<Sent>,
    client: Arc<Client>,
    reader: JoinHandle<Disconnect>,
}

/// Hand every message `incoming` yields to `got`, tagged with the user; end with the disconnect.
fn spawn_reader(
    user: usize,
    mut incoming: Incoming,
    got: mpsc::UnboundedSender<(usize, Message)>,
) -> JoinHandle<Disconnect> {
    tokio::spawn(async move {
        loop {
            match incoming.next().await {
                Ok(ClientEvent::Message(message)) => {
                    let _ = got.send((user, message));
                }
                Ok(other) => panic!("protocol v1 pushes only messages: {other:?}"),
                Err(ended) => return ended,
            }
        }
    })
}

/// Connect, retrying while the server still holds the name of our previous connection.
async fn connect_again(config: &ClientConfig) -> (Client, Incoming) {
    within(SCENARIO, "reconnect", async {
        loop {
            match Client::connect(config).await {
                Ok(connected) => return connected,
                Err(ClientError::Refused {
                    reason: RefuseReason::NameTaken,
                    ..
                }) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("{} cannot reconnect: {e}", config.username),
            }
        }
    })
    .await
}

/// Send at random until `until`, pacing a little; returns every Send's outcome.
async fn send_until(
    user: usize,
    client: Arc<Client>,
    until: Instant,
    closing: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    mut rng: Rng,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    while Instant::now() < until {
        let to = rng.below(USERS as u64) as usize;
        let seq = seq.fetch_add(1, Ordering::Relaxed);
        let body = body(user, to, seq, &mut rng);
        let started = Instant::now();
        let result = client.send(&name(to), &body).await;
        let finished = Instant::now();
        let receipt = match result {
            Ok(receipt) => Some((receipt.id, receipt.status)),
            // Only our own close may cut a Send short, and only as a local close.
            Err(ClientError::Disconnected(Disconnect::Closed))
                if closing.load(Ordering::SeqCst) =>
            {
                None
            }
            Err(e) => panic!("{} -> {}: send failed: {e}", name(user), name(to)),
        };
        sent.push(Sent {
            from: user,
            to,
            seq,
            body,
            started,
            finished,
            receipt,
        });
        tokio::time::sleep(Duration::from_millis(rng.below(12))).await;
    }
    sent
}

/// One user: connect, send from `WORKERS` tasks, and (for churning users)
/// close in the middle of the sends and come back, until `deadline`.
async fn run_user(
    user: usize,
    config: ClientConfig,
    deadline: Instant,
    seed: u64,
    gaps: Gaps,
    got: mpsc::UnboundedSender<(usize, Message)>,
) -> UserRun {
    let churns = user.is_multiple_of(CHURN_EVERY);
    let mut rng = Rng::new(seed ^ (user as u64).wrapping_mul(0x1000_0001));
    let seq = Arc::new(AtomicU64::new(0));
    let mut sent = Vec::new();
    loop {
        let (client, incoming) = connect_again(&config).await;
        gaps.lock().unwrap()[user].last_mut().unwrap().back = Some(Instant::now());
        let client = Arc::new(client);
        let reader = spawn_reader(user, incoming, got.clone());
        let until = if churns {
            deadline.min(Instant::now() + Duration::from_millis(300 + rng.below(2200)))
        } else {
            deadline
        };
        let closing = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                tokio::spawn(send_until(
                    user,
                    Arc::clone(&client),
                    until,
                    Arc::clone(&closing),
                    Arc::clone(&seq),
                    Rng::new(rng.below(u64::MAX) ^ w),
                ))
            })
            .collect();
        tokio::time::sleep_until(until.into()).await;
        if until >= deadline {
            for worker in workers {
                sent.extend(worker.await.expect("sender task"));
            }
            return UserRun {
                sent,
                client,
                reader,
            };
        }
        // Leave while the workers are in the middle of their sends.
        closing.store(true, Ordering::SeqCst);
        let closing_at = Instant::now();
        client
            .connection()
            .close(CloseCode::Bye.var_int(), b"bye for now");
        gaps.lock().unwrap()[user].push(Gap {
            closing: closing_at,
            closed: Instant::now(),
            back: None,
        });
        client.close_ref().await;
        for worker in workers {
            sent.extend(worker.await.expect("sender task"));
        }
        let ended = within(SCENARIO, "reader ends", reader).await.unwrap();
        assert_eq!(ended, Disconnect::Closed, "{} after leaving", name(user));
    }
}

/// Whether `user` began leaving at or after `t` (so a message acknowledged by
/// its QUIC stack may never have reached the application).
fn left_after(gaps: &[Vec<Gap>], user: usize, t: Instant) -> bool {
    gaps[user].iter().any(|gap| gap.closed >= t)
}

/// Checks 1 and 2 of docs/RELIABILITY.md: every Send was answered (or cut short
/// by its sender's own close), with a fresh id and a status the situation
/// allows. Returns how often each status was given.
fn check_receipts(sent: &[Sent], gaps: &[Vec<Gap>]) -> HashMap<Status, usize> {
    let mut receipt_ids = HashSet::new();
    let mut statuses: HashMap<Status, usize> = HashMap::new();
    for s in sent {
        let Some((id, status)) = s.receipt else {
            continue;
        };
        assert!(receipt_ids.insert(id), "receipt id {id} given twice");
        *statuses.entry(status).or_default() += 1;
        match status {
            Status::Delivered | Status::RecipientBusy => {}
            Status::NotConnected => {
                // Only while the recipient was away at some moment of the Send.
                let away = gaps[s.to].iter().any(|gap| {
                    gap.closing <= s.finished && !matches!(gap.back, Some(back) if back < s.started)
                });
                assert!(away, "NotConnected for an online recipient: {s:?}");
            }
            other => panic!("unexpected status {other:?}: {s:?}"),
        }
    }
    statuses
}

/// Check 3: a Delivered message must reach the recipient's application unless
/// the recipient left after it was sent (it may then have been acknowledged by
/// QUIC but not yet read). Waits, bounded, for all of those, while everyone is
/// still connected; returns what arrived meanwhile and how many were required.
async fn check_delivered_arrive(
    sent: &[Sent],
    gaps: &[Vec<Gap>],
    got_rx: &mut mpsc::UnboundedReceiver<(usize, Message)>,
) -> (Vec<(usize, Message)>, usize) {
    let mut must_arrive: HashSet<u64> = sent
        .iter()
        .filter(|s| s.receipt.map(|r| r.1) == Some(Status::Delivered))
        .filter(|s| !left_after(gaps, s.to, s.started))
        .map(|s| s.receipt.unwrap().0)
        .collect();
    let required = must_arrive.len();
    let mut got = Vec::new();
    within(SCENARIO, "every Delivered message", async {
        while !must_arrive.is_empty() {
            let (user, message) = got_rx.recv().await.expect("readers still running");
            must_arrive.remove(&message.id);
            got.push((user, message));
        }
    })
    .await;
    (got, required)
}

/// Every user leaves with BYE; each reader must end with a local close. Adds
/// anything still on its way to `got`.
async fn leave_and_collect(
    last_connections: Vec<(Arc<Client>, JoinHandle<Disconnect>)>,
    mut got_rx: mpsc::UnboundedReceiver<(usize, Message)>,
    got: &mut Vec<(usize, Message)>,
) {
    let leaving: Vec<_> = last_connections
        .into_iter()
        .map(|(client, reader)| {
            tokio::spawn(async move {
                client.close_ref().await;
                reader.await
            })
        })
        .collect();
    for left in leaving {
        let ended = within(SCENARIO, "reader ends", left).await.unwrap();
        assert_eq!(ended.unwrap(), Disconnect::Closed);
    }
    while let Some(extra) = got_rx.recv().await {
        got.push(extra);
    }
}

/// Checks 4 and 5: every delivery matches exactly one Send, to the right user,
/// from the right sender, with the right body and id, and never twice; and a
/// delivery without a Delivered receipt has a status that allows it. Returns
/// the `(sender, seq)` of every delivered Send.
fn check_deliveries(
    sent: &[Sent],
    gaps: &[Vec<Gap>],
    got: &[(usize, Message)],
) -> HashSet<(usize, u64)> {
    let by_sender: HashMap<(usize, u64), &Sent> =
        sent.iter().map(|s| ((s.from, s.seq), s)).collect();
    let mut seen = HashSet::new();
    let mut delivery_ids = HashSet::new();
    for (user, message) in got {
        let (from, to, seq) = parse(&message.body)
            .unwrap_or_else(|| panic!("{} got a body nobody sent: {message:?}", name(*user)));
        assert_eq!(to, name(*user), "misdelivered: {message:?}");
        assert_eq!(message.from, from, "wrong sender stamped: {message:?}");
        let from = from[4..].parse::<usize>().unwrap();
        let s = by_sender
            .get(&(from, seq))
            .unwrap_or_else(|| panic!("delivered but never sent: {message:?}"));
        assert_eq!(message.body, s.body, "body changed");
        assert!(seen.insert((from, seq)), "delivered twice: {message:?}");
        assert!(
            delivery_ids.insert(message.id),
            "id {} delivered twice",
            message.id
        );
        match s.receipt {
            // The sender left mid-Send; the message may well have gone through.
            None => {}
            Some((id, status)) => {
                assert_eq!(message.id, id, "the Deliver carries the Receipt's id");
                match status {
                    Status::Delivered | Status::RecipientBusy => {}
                    // Read, then the recipient left before its acknowledgement went out.
                    Status::NotConnected => assert!(
                        left_after(gaps, s.to, s.started),
                        "delivered although NotConnected: {s:?}"
                    ),
                    other => panic!("delivered with status {other:?}: {s:?}"),
                }
            }
        }
    }
    seen
}

/// Check 6: the run did what it claims: lots of traffic, and users really
/// came and went, so the checks above are not vacuous.
fn check_it_ran(soak: Duration, statuses: &HashMap<Status, usize>, comebacks: usize) {
    let delivered = statuses.get(&Status::Delivered).copied().unwrap_or(0);
    assert!(
        delivered as u64 >= 20 * soak.as_secs(),
        "too little traffic: {delivered}"
    );
    assert!(
        comebacks >= USERS / CHURN_EVERY,
        "too few comebacks: {comebacks}"
    );
}

/// What the sending phase leaves to check.
struct Sending {
    /// Every Send.
    sent: Vec<Sent>,
    /// When each user was away.
    gaps: Vec<Vec<Gap>>,
    /// Each user's last connection and its reader, still open.
    last_connections: Vec<(Arc<Client>, JoinHandle<Disconnect>)>,
    /// The deliveries, as they arrive.
    got_rx: mpsc::UnboundedReceiver<(usize, Message)>,
}

/// Run every user against `server` until `soak` has passed.
async fn run_everyone(server: &TestServer, soak: Duration, seed: u64) -> Sending {
    let start = Instant::now();
    let deadline = start + soak;
    let first_gap = Gap {
        closing: start,
        closed: start,
        back: None,
    };
    let gaps: Gaps = Arc::new(Mutex::new(vec![vec![first_gap]; USERS]));
    let (got_tx, got_rx) = mpsc::unbounded_channel();
    let users: Vec<_> = (0..USERS)
        .map(|user| {
            tokio::spawn(run_user(
                user,
                server.client_config(&name(user)),
                deadline,
                seed,
                Arc::clone(&gaps),
                got_tx.clone(),
            ))
        })
        .collect();
    drop(got_tx);
    let mut runs = Vec::new();
    within(soak + SCENARIO, "every user's sends", async {
        for user in users {
            runs.push(user.await.expect("user task"));
        }
    })
    .await;
    let gaps = gaps.lock().unwrap().clone();
    let mut sent = Vec::new();
    let mut last_connections = Vec::new();
    for run in runs {
        sent.extend(run.sent);
        last_connections.push((run.client, run.reader));
    }
    Sending {
        sent,
        gaps,
        last_connections,
        got_rx,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dozens_of_users_chat_at_random_while_some_come_and_go() {
    let soak = soak_time();
    let seed = soak_seed();
    let server = TestServer::start().await;
    let Sending {
        sent,
        gaps,
        last_connections,
        mut got_rx,
    } = run_everyone(&server, soak, seed).await;

    let statuses = check_receipts(&sent, &gaps);
    let (mut got, required) = check_delivered_arrive(&sent, &gaps, &mut got_rx).await;
    leave_and_collect(last_connections, got_rx, &mut got).await;
    let seen = check_deliveries(&sent, &gaps, &got);

    // Delivered (acknowledged by QUIC) but never read: allowed only as
    // `check_delivered_arrive` allows (the recipient left after the Send began).
    let unread = sent
        .iter()
        .filter(|s| {
            s.receipt
                .is_some_and(|(_, status)| status == Status::Delivered)
        })
        .filter(|s| !seen.contains(&(s.from, s.seq)))
        .count();
    let cut_short = sent.iter().filter(|s| s.receipt.is_none()).count();
    let comebacks: usize = gaps.iter().map(|g| g.len() - 1).sum();
    eprintln!(
        "soak {soak:?} seed {seed}: {} sends, statuses {statuses:?}, {cut_short} cut short by their \
         sender leaving, {} deliveries ({required} required, {unread} Delivered but left unread \
         by a recipient that then left), {comebacks} comebacks",
        sent.len(),
        got.len(),
    );
    check_it_ran(soak, &statuses, comebacks);
    server.stop().await;
}
