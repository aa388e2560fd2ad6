//! The store's workloads: `queued` (Sends to offline accounts, answered
//! `Queued` once committed, per second), `drain` (stored messages
//! delivered per second when their account connects), and `idle-accounts`
//! (the server's memory per connected account). Stored mail exists
//! only between registered accounts, so every user here is one: a fresh
//! in-memory device identity and a [`Connector`] of its own (a key belongs
//! to one account), registered by its first v2 Hello.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use super::report::{Latency, Report};
use super::workloads::{histogram, Phase, StampedBody};
use super::{BenchConfig, BenchError, Meter, Window};
use crate::client::{Client, ClientConfig, ClientEvent, Connector, Incoming};
use crate::protocol::{Account, Status};
use crate::tls::ClientIdentity;

/// Accounts registered at once while setting up.
const SETUP_CONCURRENCY: usize = 32;
/// How long the stored messages of a run may take to reach their recipients.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);
/// How long senders may take to finish their last sends after the window.
const TAIL_LIMIT: Duration = Duration::from_secs(15);

/// A registered account of this run: its name and its own connector.
struct BenchAccount {
    name: String,
    connector: Connector,
}

impl BenchAccount {
    /// A fresh identity, registered under `name` by a first connection,
    /// which is returned still open.
    async fn register(
        base: &ClientConfig,
        name: String,
    ) -> Result<(BenchAccount, Client, Incoming), BenchError> {
        let mut config = base.clone();
        config.identity = Some(ClientIdentity::ephemeral()?);
        config.username = name.clone();
        let connector = Connector::new(&config).await?;
        let (client, incoming) = connector.connect(&name).await?;
        if client.welcome().account != Some(Account::Registered) {
            client.close_ref().await;
            return Err(BenchError::NotAnAccount(name));
        }
        Ok((BenchAccount { name, connector }, client, incoming))
    }

    /// Connect again (a returning session, resuming TLS).
    async fn connect(&self) -> Result<(Client, Incoming), BenchError> {
        Ok(self.connector.connect(&self.name).await?)
    }

    /// Close `client` and wait until its close has left this connector, so
    /// that the server sees the account offline.
    async fn leave(&self, client: &Client) {
        client.close_ref().await;
        self.connector.wait_idle(Duration::from_secs(3)).await;
    }
}

/// A tag that makes this run's account names new on a server that keeps
/// the accounts of earlier runs.
fn run_tag() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() % 100_000_000)
        .unwrap_or_default();
    format!("{}-{secs}", std::process::id() % 100_000)
}

/// Register `n` accounts named `{prefix}{i}-{tag}`, each left connected.
async fn register_all(
    base: &ClientConfig,
    prefix: &str,
    n: usize,
    tag: &str,
) -> Result<Vec<(BenchAccount, Client, Incoming)>, BenchError> {
    stream::iter(0..n)
        .map(|i| BenchAccount::register(base, format!("{prefix}{i}-{tag}")))
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}

/// `idle-accounts`: hold `clients` connected v2 accounts and read the
/// server's memory per connection. Each has its own connector (a UDP
/// socket), so the file-descriptor limit bounds `clients`.
pub async fn idle_accounts(
    config: &BenchConfig,
    base: &ClientConfig,
    meter: &Meter,
) -> Result<Report, BenchError> {
    let before = meter.server_rss();
    let total = config.clients.max(1);
    let held = register_all(base, "idle", total, &run_tag()).await?;
    let mut report = super::workloads::hold_and_measure(config, meter, before, held.len()).await;
    for (_account, client, _incoming) in &held {
        client.close_ref().await;
    }
    report.workload = "idle-accounts".into();
    report.clients = total;
    Ok(report)
}

/// Register `n` accounts and take them offline again: the recipients.
async fn offline_accounts(
    base: &ClientConfig,
    prefix: &str,
    n: usize,
    tag: &str,
) -> Result<Vec<BenchAccount>, BenchError> {
    let mut accounts = Vec::with_capacity(n);
    for (account, client, _incoming) in register_all(base, prefix, n, tag).await? {
        account.leave(&client).await;
        accounts.push(account);
    }
    Ok(accounts)
}

/// Register `n` accounts that stay connected to send: the accounts, and
/// their clients to share among sending tasks.
async fn senders(
    base: &ClientConfig,
    prefix: &str,
    n: usize,
    tag: &str,
) -> Result<Vec<(BenchAccount, Arc<Client>)>, BenchError> {
    Ok(register_all(base, prefix, n, tag)
        .await?
        .into_iter()
        .map(|(account, client, _incoming)| (account, Arc::new(client)))
        .collect())
}

/// Take every sender offline.
async fn leave_all(senders: &[(BenchAccount, Arc<Client>)]) {
    for (account, client) in senders {
        account.leave(client).await;
    }
}

/// What one sending task saw.
#[derive(Default)]
struct Sent {
    /// Receipt statuses within the measured window.
    statuses: BTreeMap<Status, u64>,
    /// Send-to-receipt latency within the window, µs.
    latencies: Option<Histogram<u64>>,
    /// `Queued` receipts over the whole run.
    queued: u64,
    /// Requests that failed outright.
    errors: u64,
}

impl Sent {
    /// The report of a store workload whose `count` operations took
    /// `window`, with what the recipients' Sessions announced and what they
    /// then received.
    fn report(
        self,
        workload: &str,
        config: &BenchConfig,
        clients: usize,
        window: &Window,
        count: u64,
        (announced, drained): (u64, u64),
    ) -> Report {
        let mut report = Report {
            workload: workload.into(),
            clients,
            in_flight: config.in_flight,
            body_bytes: config.body_bytes,
            seconds: window.wall.as_secs_f64(),
            count,
            per_second: count as f64 / window.wall.as_secs_f64(),
            errors: self.errors,
            stored: Some(self.queued),
            announced: Some(announced),
            drained: Some(drained),
            ..Report::default()
        };
        for (status, count) in self.statuses {
            report.statuses.insert(status.name().into(), count);
        }
        window.fill(&mut report, count);
        report
    }

    fn add(&mut self, other: Sent) {
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        match (&mut self.latencies, other.latencies) {
            (Some(mine), Some(theirs)) => {
                let _ = mine.add(theirs);
            }
            (mine @ None, theirs) => *mine = theirs,
            _ => {}
        }
        self.queued += other.queued;
        self.errors += other.errors;
    }
}

/// Receive `announced` stored messages (or until `limit`, or the connection
/// ends); how many arrived.
async fn receive_stored(incoming: &mut Incoming, announced: u64, limit: Duration) -> u64 {
    let mut received = 0;
    let reading = async {
        while received < announced {
            match incoming.next().await {
                Ok(ClientEvent::Message(_)) => received += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    };
    let _ = tokio::time::timeout(limit, reading).await;
    received
}

/// `queued`: N registered senders, each to its own registered recipient who
/// is offline, `in_flight` sends each; counts `Queued` receipts per second.
/// Afterwards every recipient connects and receives what was stored, so the
/// report says how many were stored, announced and delivered.
pub async fn queued(
    config: &BenchConfig,
    base: &ClientConfig,
    meter: &Meter,
) -> Result<Report, BenchError> {
    let n = config.clients.max(1);
    let tag = run_tag();
    let recipients = offline_accounts(base, "qrx", n, &tag).await?;
    let senders = senders(base, "qtx", n, &tag).await?;
    let phase = Phase::new();
    let mut sending = JoinSet::new();
    for ((_, client), to) in senders.iter().zip(&recipients) {
        for _ in 0..config.in_flight.max(1) {
            let (client, to, phase) = (Arc::clone(client), to.name.clone(), Arc::clone(&phase));
            sending.spawn(send_until_stopped(client, to, phase, config.body_bytes));
        }
    }
    let window = phase.run(config, meter).await;
    let mut sent = Sent::default();
    let tail = async {
        while let Some(done) = sending.join_next().await {
            if let Ok(one) = done {
                sent.add(one);
            }
        }
    };
    let _ = tokio::time::timeout(TAIL_LIMIT, tail).await;
    leave_all(&senders).await;

    let (announced, drained) = drain_all(&recipients).await?;
    let count = sent.statuses.get(&Status::Queued).copied().unwrap_or(0);
    let latency = sent.latencies.as_ref().and_then(Latency::of);
    let mut report = sent.report("queued", config, n, &window, count, (announced, drained));
    report.receipt_latency_us = latency;
    Ok(report)
}

/// Send to `to` until the phase stops; what the receipts said.
async fn send_until_stopped(
    client: Arc<Client>,
    to: String,
    phase: Arc<Phase>,
    size: usize,
) -> Sent {
    let mut sent = Sent {
        latencies: Some(histogram()),
        ..Sent::default()
    };
    let mut body = StampedBody::new(size);
    while !phase.stopped.load(Ordering::Relaxed) {
        let started = Instant::now();
        match client.send(&to, body.stamp(phase.epoch)).await {
            Ok(receipt) => {
                if receipt.status == Status::Queued {
                    sent.queued += 1;
                }
                if phase.measuring.load(Ordering::Relaxed) {
                    *sent.statuses.entry(receipt.status).or_default() += 1;
                    let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    if let Some(latencies) = &mut sent.latencies {
                        latencies.saturating_record(us.max(1));
                    }
                }
            }
            Err(_) => {
                sent.errors += 1;
                break;
            }
        }
    }
    sent
}

/// Connect every recipient and receive what its `Session` announces: the
/// sums of the announced and of the received counts.
async fn drain_all(recipients: &[BenchAccount]) -> Result<(u64, u64), BenchError> {
    let counts: Vec<(u64, u64)> = stream::iter(recipients)
        .map(|account| async move {
            let (client, mut incoming) = account.connect().await?;
            let announced = u64::from(client.welcome().queued);
            let received = receive_stored(&mut incoming, announced, DRAIN_LIMIT).await;
            account.leave(&client).await;
            Ok::<_, BenchError>((announced, received))
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(counts
        .into_iter()
        .fold((0, 0), |(a, r), (announced, received)| {
            (a + announced, r + received)
        }))
}

/// `drain`: N registered senders store `messages` messages for one offline
/// account; then it connects, and the time from its `Session` to the last
/// stored `Deliver` gives messages drained per second (`-d` and `--warmup`
/// do not apply).
pub async fn drain(
    config: &BenchConfig,
    base: &ClientConfig,
    meter: &Meter,
) -> Result<Report, BenchError> {
    let n = config.clients.max(1);
    let tag = run_tag();
    let recipient = offline_accounts(base, "drx", 1, &tag)
        .await?
        .pop()
        .ok_or_else(|| BenchError::NotAnAccount("drx".into()))?;
    let senders = senders(base, "dtx", n, &tag).await?;
    let tickets = Arc::new(AtomicU64::new(0));
    let total = config.messages;
    let mut filling = JoinSet::new();
    meter.progress_len(total, "storing");
    let epoch = Instant::now();
    for (_, client) in &senders {
        for _ in 0..config.in_flight.max(1) {
            let (client, tickets) = (Arc::clone(client), Arc::clone(&tickets));
            let to = recipient.name.clone();
            let size = config.body_bytes;
            filling.spawn(async move {
                let mut sent = Sent::default();
                let mut body = StampedBody::new(size);
                while tickets.fetch_add(1, Ordering::Relaxed) < total {
                    match client.send(&to, body.stamp(epoch)).await {
                        Ok(receipt) => {
                            if receipt.status == Status::Queued {
                                sent.queued += 1;
                            }
                            *sent.statuses.entry(receipt.status).or_default() += 1;
                        }
                        Err(_) => {
                            sent.errors += 1;
                            break;
                        }
                    }
                }
                sent
            });
        }
    }
    let mut sent = Sent::default();
    while let Some(done) = filling.join_next().await {
        if let Ok(one) = done {
            sent.add(one);
            meter.progress_set(sent.queued);
        }
    }
    leave_all(&senders).await;

    let (client, mut incoming) = recipient.connect().await?;
    let start = meter.mark();
    let announced = u64::from(client.welcome().queued);
    let drained = receive_stored(&mut incoming, announced, DRAIN_LIMIT).await;
    let window = meter.elapsed_since(&start);
    recipient.leave(&client).await;
    Ok(sent.report("drain", config, n, &window, drained, (announced, drained)))
}
