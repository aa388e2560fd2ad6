//! Cluster mode (under construction; see `docs/CLUSTER.md`): quic-chat nodes
//! that share users, names and mail through NATS, an existing engine, never
//! a protocol of our own between nodes.
//!
//! What is here so far is the foundation every later part stands on:
//! - [`ClusterConfig`] and [`NodeId`]: which NATS servers, which node, which
//!   subject and bucket prefix;
//! - [`Cluster::join`]: the connection to NATS (its version checked), and
//!   this node's lease in the `<prefix>_nodes` key-value bucket
//!   (`lease.rs`): a node id held by a live node is refused, the lease is
//!   renewed in the background and released on a graceful stop;
//! - [`Names`]: names unique in the whole cluster (`names.rs`), claimed
//!   and released by compare-and-set, stale claims of dead nodes taken over.
//!
//! Nothing in this module runs unless the server is started with
//! `--cluster`: a single node never connects to anything.

mod lease;
mod names;

use std::time::Duration;

pub use lease::{LeaseState, NodeLease};
pub use names::{name_key, Claim, ClaimError, Names};

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
}

impl ClusterConfig {
    /// Join the NATS servers at `urls` as `node_id`, with the defaults: prefix
    /// `qc`, a 15 s lease, 10 s to connect.
    pub fn new(urls: Vec<String>, node_id: NodeId) -> Self {
        ClusterConfig {
            urls,
            node_id,
            prefix: "qc".to_owned(),
            lease_ttl: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
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

/// A node that joined the cluster: its NATS connection and its lease.
#[derive(Debug)]
pub struct Cluster {
    client: async_nats::Client,
    lease: NodeLease,
    names: Names,
    server_version: String,
}

impl Cluster {
    /// Connect to NATS and take this node's lease, within the config's
    /// connect timeout. Fails with a clear error when NATS is unreachable,
    /// too old or without JetStream, or when a live node has this id.
    pub async fn join(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
        let urls = config.urls.join(",");
        let joined = tokio::time::timeout(config.connect_timeout, async {
            let client = async_nats::ConnectOptions::new()
                .name(format!("quic-chat {}", config.node_id))
                .ping_interval(Duration::from_secs(5))
                .connection_timeout(config.connect_timeout)
                .request_timeout(Some(Duration::from_secs(6)))
                .connect(config.urls.as_slice())
                .await
                .map_err(|e| ClusterError::Unreachable {
                    urls: urls.clone(),
                    reason: e.to_string(),
                })?;
            let server_version = client.server_info().version;
            if !version_is_supported(&server_version) {
                return Err(ClusterError::TooOld {
                    found: server_version,
                });
            }
            let lease = NodeLease::take(client.clone(), config).await?;
            let names = Names::open(client.clone(), config, &lease).await?;
            Ok(Cluster {
                client,
                lease,
                names,
                server_version,
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

    /// The time of one round trip to NATS now.
    pub async fn round_trip(&self) -> Result<Duration, ClusterError> {
        let start = std::time::Instant::now();
        self.client
            .flush()
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        Ok(start.elapsed())
    }

    /// Leave the cluster: release the lease (so the id is free at once) and
    /// close the connection.
    pub async fn leave(self) {
        self.lease.release().await;
        let _ = self.client.drain().await;
    }
}

/// The key-value bucket `name`, created (one history entry, on disk, keys
/// living `max_age`, zero for ever) if it does not exist yet.
async fn open_bucket(
    client: async_nats::Client,
    name: String,
    description: &str,
    max_age: Duration,
) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
    use async_nats::jetstream::{self, kv};
    let js = jetstream::new(client);
    if let Ok(bucket) = js.get_key_value(name.as_str()).await {
        return Ok(bucket);
    }
    js.create_key_value(kv::Config {
        bucket: name.clone(),
        description: description.to_owned(),
        history: 1,
        max_age,
        storage: jetstream::stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| {
        let text = e.to_string();
        if text.to_ascii_lowercase().contains("jetstream") {
            ClusterError::NoJetStream(text)
        } else {
            ClusterError::Nats(format!("cannot create the bucket {name}: {text}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
