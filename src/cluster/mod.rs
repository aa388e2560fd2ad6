//! Cluster mode (`docs/CLUSTER.md`): quic-chat nodes that share users,
//! names, accounts and mail through NATS, an existing engine, never a
//! protocol of our own between nodes. This module knows nothing of QUIC;
//! `server/remote.rs` ties it to the server's mailboxes.
//!
//! What is here:
//! - [`ClusterConfig`] and [`NodeId`]: which NATS servers, which node, which
//!   subject and bucket prefix;
//! - [`Cluster::join`]: the connection to NATS (its version checked), and
//!   this node's lease in the `<prefix>_nodes` key-value bucket
//!   (`lease.rs`): a node id held by a live node is refused, the lease is
//!   renewed in the background and released on a graceful stop, and a node
//!   that cannot renew it stops serving (fencing);
//! - [`Names`]: names unique in the whole cluster (`names.rs`), claimed
//!   and released by compare-and-set, stale claims of dead nodes taken over;
//! - [`Roster`]: a watched replica of the claims and leases, for lists;
//! - deliveries, bells and questions between nodes by request/reply
//!   (`routes.rs`), deliveries' answers on a reply subscription of this
//!   node's own (`replies.rs`);
//! - the accounts every node shares (`accounts.rs`), and stored mail and
//!   late receipts in JetStream ([`SharedMail`], `mail.rs`);
//! - the cluster-wide run counter that prefixes message ids.
//!
//! Nothing in this module runs unless the server is started with
//! `--cluster`: a single node never connects to anything.

mod accounts;
mod lease;
mod mail;
mod names;
mod replies;
mod roster;
mod routes;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use lease::{LeaseState, NodeLease};
pub use mail::{Enqueued, MailLimits, SharedMail};
pub use names::{name_key, Claim, ClaimError, Holder, Names, TakeOverError};
pub use roster::{Roster, MAX_NAMES};
pub use routes::{Control, ControlAnswer, NameSubscriptions, RemoteAnswer, NOTICE_BELL};

/// The oldest nats-server cluster mode accepts: per-key TTLs and limit
/// markers in key-value buckets, and `sync_interval: always`, arrived in 2.11.
pub const MIN_NATS_SERVER: (u64, u64) = (2, 11);

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs, e.g. `nats://127.0.0.1:4222` (several for a NATS cluster).
    pub urls: Vec<String>,
    /// This node's id, unique among the live nodes.
    pub node_id: NodeId,
    /// The prefix of every subject and bucket (several clusters may share
    /// one NATS).
    pub prefix: String,
    /// How long a node's lease lives without renewal; it is renewed every
    /// fifth of it.
    pub lease_ttl: Duration,
    /// How long joining may take before the start fails.
    pub connect_timeout: Duration,
    /// Copies NATS keeps of each bucket (1, or 3 on a NATS cluster).
    pub replicas: usize,
    /// A NATS credentials file, if the servers ask for one.
    pub credentials: Option<std::path::PathBuf>,
    /// A CA certificate to check the NATS servers' TLS certificates with.
    pub tls_ca: Option<std::path::PathBuf>,
    /// How stored mail is kept, if the cluster keeps any (the server sets it
    /// from its own mail settings).
    pub mail: Option<MailLimits>,
}

impl ClusterConfig {
    /// Join the NATS servers at `urls` as `node_id`, with the defaults: prefix
    /// `qc`, a 15 s lease, 10 s to connect, one copy of each bucket, no
    /// credentials, the system's TLS roots.
    pub fn new(urls: Vec<String>, node_id: NodeId) -> Self {
        ClusterConfig {
            urls,
            node_id,
            prefix: "qc".to_owned(),
            lease_ttl: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            replicas: 1,
            credentials: None,
            tls_ca: None,
            mail: None,
        }
    }
}

/// A node id: 1 to 32 of `a-z`, `0-9` and `-` (it names a key and subjects).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl std::str::FromStr for NodeId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = (1..=32).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(NodeId(text.to_owned()))
        } else {
            Err("a node id is 1 to 32 of a-z, 0-9 and -".to_owned())
        }
    }
}

impl NodeId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a node could not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server answered in time.
    #[error("cannot reach NATS at {urls}: {reason}")]
    Unreachable {
        /// The URLs tried.
        urls: String,
        /// What the client said (its text already names its cause, so it
        /// is not a `source`: each cause is printed once).
        reason: String,
    },
    /// Joining took longer than the connect timeout.
    #[error("NATS at {urls} did not answer within {timeout:?}")]
    TimedOut {
        /// The URLs tried.
        urls: String,
        /// The limit.
        timeout: Duration,
    },
    /// The NATS server is older than cluster mode needs.
    #[error(
        "NATS server {found} is too old: cluster mode needs {}.{} or newer \
         (scripts/nats-server.sh installs a current one)",
        MIN_NATS_SERVER.0,
        MIN_NATS_SERVER.1
    )]
    TooOld {
        /// The version the server announced.
        found: String,
    },
    /// The NATS server has no JetStream (start it with `-js`).
    #[error("NATS has no JetStream (start nats-server with -js): {0}")]
    NoJetStream(String),
    /// Another live node holds this node id.
    #[error(
        "the node id {node} is in use by a live node (if that node died, its \
         lease ends within {ttl:?})"
    )]
    NodeIdInUse {
        /// The id.
        node: NodeId,
        /// The lease lifetime.
        ttl: Duration,
    },
    /// JetStream answered that it cannot do this yet, or did not answer in
    /// time: a NATS cluster still forming, or placing a new bucket's copies.
    /// Joining tries such a step again.
    #[error("JetStream is not ready: {0}")]
    NotReady(String),
    /// Any other NATS error, as its text.
    #[error("NATS: {0}")]
    Nats(String),
}

/// Whether the version a NATS server announced (`2.15.1`, `2.11.0-RC.1`) is
/// at least [`MIN_NATS_SERVER`]. Unparsable text is too old.
pub fn version_is_supported(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= MIN_NATS_SERVER,
        _ => false,
    }
}

/// A node that joined the cluster: its NATS connection, its lease, the
/// name claims and the replica of who is online elsewhere.
#[derive(Debug)]
pub struct Cluster {
    client: async_nats::Client,
    lease: NodeLease,
    names: Names,
    accounts: accounts::SharedAccounts,
    mail: Option<SharedMail>,
    roster: Roster,
    replies: replies::Replies,
    server_version: String,
    node: NodeId,
    prefix: String,
    epoch: u32,
    /// The last measured NATS round trip, in microseconds.
    round_trip_us: std::sync::atomic::AtomicU64,
    stop: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Cluster {
    /// Connect to NATS and take this node's lease, within the config's
    /// connect timeout. Fails with a clear error when NATS is unreachable,
    /// too old or without JetStream, or when a live node has this id.
    pub async fn join(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        let urls = config.urls.join(",");
        let joined = tokio::time::timeout(config.connect_timeout, async {
            let mut options = async_nats::ConnectOptions::new()
                .name(format!("quic-chat {}", config.node_id))
                .ping_interval(Duration::from_secs(2))
                .connection_timeout(config.connect_timeout)
                .request_timeout(Some(Duration::from_secs(6)))
                // Keep trying for ever: a node fences itself while NATS is
                // away and serves again when it is back.
                .max_reconnects(None);
            if let Some(path) = &config.credentials {
                options = options.credentials_file(path).await.map_err(|e| {
                    ClusterError::Nats(format!(
                        "cannot read the NATS credentials {}: {e}",
                        path.display()
                    ))
                })?;
            }
            if let Some(path) = &config.tls_ca {
                options = options
                    .add_root_certificates(path.clone())
                    .require_tls(true);
            }
            let client = options.connect(config.urls.as_slice()).await.map_err(|e| {
                ClusterError::Unreachable {
                    urls: urls.clone(),
                    reason: e.to_string(),
                }
            })?;
            let server_version = client.server_info().version;
            if !version_is_supported(&server_version) {
                return Err(ClusterError::TooOld {
                    found: server_version,
                });
            }
            let lease = until_ready(|| NodeLease::take(client.clone(), config)).await?;
            let names = until_ready(|| Names::open(client.clone(), config)).await?;
            let epoch = until_ready(|| next_epoch(client.clone(), config)).await?;
            let accounts =
                until_ready(|| accounts::SharedAccounts::open(client.clone(), config)).await?;
            let mail = match config.mail {
                Some(limits) => {
                    Some(until_ready(|| SharedMail::open(client.clone(), config, limits)).await?)
                }
                None => None,
            };
            let stop = CancellationToken::new();
            let roster =
                Roster::watch(names.bucket().clone(), lease.bucket().clone(), stop.clone());
            let replies = replies::Replies::open(&client, stop.clone()).await?;
            Ok(Cluster {
                client,
                lease,
                names,
                accounts,
                mail,
                roster,
                replies,
                server_version,
                node: config.node_id.clone(),
                prefix: config.prefix.clone(),
                epoch,
                round_trip_us: std::sync::atomic::AtomicU64::new(0),
                stop,
            })
        })
        .await;
        joined.unwrap_or(Err(ClusterError::TimedOut {
            urls,
            timeout: config.connect_timeout,
        }))
    }

    /// The version of the NATS server this node is connected to.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// This node's lease.
    pub fn lease(&self) -> &NodeLease {
        &self.lease
    }

    /// The cluster-wide name claims.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The accounts every node shares.
    pub(crate) fn accounts(&self) -> &accounts::SharedAccounts {
        &self.accounts
    }

    /// The stored mail every node can drain, if the cluster keeps mail.
    pub fn mail(&self) -> Option<&SharedMail> {
        self.mail.as_ref()
    }

    /// Who is online on the other nodes.
    pub fn roster(&self) -> &Roster {
        &self.roster
    }

    /// This run's number in the whole cluster: 1 for the first node run
    /// ever, one more for every run of any node after (the prefix of the
    /// node's message ids, so they are unique across nodes and restarts).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node
    }

    /// The NATS client's counters (messages and bytes in and out).
    pub fn statistics(&self) -> Arc<async_nats::Statistics> {
        self.client.statistics()
    }

    /// The time of one round trip to NATS now.
    pub async fn round_trip(&self) -> Result<Duration, ClusterError> {
        let start = std::time::Instant::now();
        self.client
            .flush()
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        Ok(start.elapsed())
    }

    /// Remember `took` as the last measured round trip.
    pub fn record_round_trip(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.round_trip_us
            .store(micros, std::sync::atomic::Ordering::Relaxed);
    }

    /// The last measured round trip (zero before the first).
    pub fn last_round_trip(&self) -> Duration {
        Duration::from_micros(
            self.round_trip_us
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Leave the cluster: release the lease (so the id is free at once) and
    /// close the connection.
    pub async fn leave(&self) {
        self.stop.cancel();
        self.lease.release().await;
        let _ = self.client.flush().await;
    }
}

/// How often a step of joining is tried while JetStream is not ready for it.
const READY_ATTEMPTS: usize = 50;

/// How long a step of joining waits before it is tried again.
const READY_PAUSE: Duration = Duration::from_millis(100);

/// Run a step of joining again while JetStream is not ready for it:
/// [`ClusterError::NotReady`] (see [`not_ready`]), or a NATS error saying
/// "no suitable peers" or "no responders" (a bucket another node has just
/// created is not served by every server of a NATS cluster yet, its copies
/// still being placed, which nodes starting together meet). Only steps that
/// trying again cannot do twice say NotReady: creating a bucket or stream,
/// and claiming the node's lease under one incarnation. Any other error is
/// returned at once, the last one after [`READY_ATTEMPTS`] (the join's own
/// timeout bounds it too).
async fn until_ready<T, F, Fut>(mut step: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClusterError>>,
{
    let mut attempt = 1;
    loop {
        match step().await {
            Err(ClusterError::NotReady(e)) if attempt < READY_ATTEMPTS => {
                tracing::debug!("{e}; trying again");
                attempt += 1;
                tokio::time::sleep(READY_PAUSE).await;
            }
            Err(ClusterError::Nats(e))
                if (e.contains("no responders") || e.contains("no suitable peers"))
                    && attempt < READY_ATTEMPTS =>
            {
                tracing::debug!("JetStream is not ready yet ({e}); trying again");
                attempt += 1;
                tokio::time::sleep(READY_PAUSE).await;
            }
            done => return done,
        }
    }
}

/// The key of the cluster's run counter in `<prefix>_ids`.
const EPOCH_KEY: &str = "epoch";

/// The largest run number (message ids give it 24 bits).
const MAX_EPOCH: u32 = (1 << 24) - 1;

/// Count this run in the cluster's run counter, by compare-and-set.
async fn next_epoch(
    client: async_nats::Client,
    config: &ClusterConfig,
) -> Result<u32, ClusterError> {
    use async_nats::jetstream::kv;
    let bucket = open_bucket(
        client,
        BucketSpec {
            name: format!("{}_ids", config.prefix),
            description: "quic-chat run counter",
            max_age: Duration::ZERO,
            limit_markers: None,
            replicas: config.replicas,
        },
    )
    .await?;
    let nats =
        |e: &dyn std::fmt::Display| ClusterError::Nats(format!("cannot count this run: {e}"));
    for _ in 0..32 {
        let entry = bucket.entry(EPOCH_KEY).await.map_err(|e| nats(&e))?;
        let written = match entry.filter(|entry| entry.operation == kv::Operation::Put) {
            None => bucket
                .create(EPOCH_KEY, "1".into())
                .await
                .map(|_| 1)
                .map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                }),
            Some(entry) => {
                let last: u32 = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| nats(&"the counter is not a number"))?;
                let Some(next) = last.checked_add(1).filter(|next| *next <= MAX_EPOCH) else {
                    return Err(nats(&"the counter is exhausted"));
                };
                bucket
                    .update(EPOCH_KEY, next.to_string().into(), entry.revision)
                    .await
                    .map(|_| next)
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    })
            }
        };
        match written {
            Ok(epoch) => return Ok(epoch),
            Err((true, _)) => continue,
            Err((false, e)) => return Err(nats(&e)),
        }
    }
    Err(nats(&"the counter kept changing"))
}

/// How a key-value bucket is made when it does not exist yet.
struct BucketSpec {
    name: String,
    description: &'static str,
    /// How long a key lives; zero for ever.
    max_age: Duration,
    /// Whether (and how long) markers of keys that `max_age` removed are
    /// kept, so watchers see the removal.
    limit_markers: Option<Duration>,
    /// Copies of the bucket in a NATS cluster.
    replicas: usize,
}

/// The key-value bucket of `spec`, created (one history entry, on disk) if
/// it does not exist yet.
async fn open_bucket(
    client: async_nats::Client,
    spec: BucketSpec,
) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
    use async_nats::jetstream::{self, kv};
    let js = jetstream::new(client);
    if let Ok(bucket) = js.get_key_value(spec.name.as_str()).await {
        return Ok(bucket);
    }
    let name = spec.name.clone();
    js.create_key_value(kv::Config {
        bucket: spec.name,
        description: spec.description.to_owned(),
        history: 1,
        max_age: spec.max_age,
        storage: jetstream::stream::StorageType::File,
        num_replicas: spec.replicas,
        limit_markers: spec.limit_markers,
        ..Default::default()
    })
    .await
    .map_err(|e| {
        let text = e.to_string();
        if not_ready(&text) {
            ClusterError::NotReady(format!("cannot create the bucket {name} yet: {text}"))
        } else if e.kind() == jetstream::context::CreateKeyValueErrorKind::JetStream {
            // Reading the account's JetStream limits failed outright.
            ClusterError::NoJetStream(text)
        } else {
            ClusterError::Nats(format!("cannot create the bucket {name}: {text}"))
        }
    })
}

/// Whether an error's text says JetStream is there but cannot do it yet: a
/// request that timed out (placing a stream's copies on a loaded NATS
/// cluster can outlast the request timeout; the stream may then exist, and
/// the next try finds it) or "no suitable peers" (a NATS cluster still
/// forming has not heard from all its servers, so three copies cannot be
/// placed) or "no stream found" (a stream just created elsewhere in the
/// NATS cluster that the server this node is on has not learnt of yet).
pub(crate) fn not_ready(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("timed out")
        || lower.contains("no suitable peers")
        || lower.contains("no stream found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_errors_are_told_apart_from_missing_jetstream() {
        for text in [
            "timed out: jetstream request timed out",
            "bucket creation failed: insufficient resources: no suitable peers for placement",
            "cannot take the node lease: other error: failed getting entry: no stream found for given subject",
        ] {
            assert!(not_ready(text), "{text}");
        }
        for text in [
            "JetStream error: no responders",
            "bucket creation failed: stream name already in use",
        ] {
            assert!(!not_ready(text), "{text}");
        }
    }

    #[test]
    fn versions() {
        for ok in ["2.11.0", "2.15.1", "v2.12.0-RC.2", "3.0.0"] {
            assert!(version_is_supported(ok), "{ok}");
        }
        for old in ["2.10.29", "2.9.10", "1.4.1", "", "garbage", "2"] {
            assert!(!version_is_supported(old), "{old}");
        }
    }

    #[test]
    fn node_ids() {
        for ok in ["n1", "node-2", "a", &"x".repeat(32)] {
            assert!(ok.parse::<NodeId>().is_ok(), "{ok}");
        }
        for bad in ["", "N1", "n.1", "n 1", "n_1", &"x".repeat(33)] {
            assert!(bad.parse::<NodeId>().is_err(), "{bad}");
        }
    }
}
