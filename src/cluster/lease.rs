//! A node's lease: one key per live node in the `<prefix>_nodes` key-value
//! bucket, whose `max_age` is the lease lifetime. A node takes its key with
//! a create-only write (so a node id held by a live node is refused), renews
//! it every fifth of the lifetime with a compare-and-set on its revision (so
//! a lease someone else took over is noticed, never overwritten), and
//! deletes it when it stops gracefully (the id is free at once). A node that
//! dies stops renewing; NATS drops its key when the lifetime ends.
//!
//! The value is this run's incarnation, a random `u64` in decimal: later
//! parts (name claims) point at (node, incarnation), so a claim of an earlier
//! run of the same id is recognisably stale.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{ClusterConfig, ClusterError, NodeId};

/// The lease as this node last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    /// The key's revision after the last successful write.
    pub revision: u64,
    /// When the lease was last written (taken or renewed).
    pub renewed: Instant,
    /// False once a renewal found the key changed by someone else: the
    /// lease is lost and this node must stop serving as this id.
    pub held: bool,
}

/// This node's lease, renewed in the background until released.
#[derive(Debug)]
pub struct NodeLease {
    bucket: kv::Store,
    node: NodeId,
    incarnation: u64,
    ttl: Duration,
    state: Arc<Mutex<LeaseState>>,
    stop: CancellationToken,
}

impl NodeLease {
    /// Take the lease of `config.node_id` (creating the bucket if needed) and
    /// start renewing it.
    pub(crate) async fn take(
        client: async_nats::Client,
        config: &ClusterConfig,
    ) -> Result<NodeLease, ClusterError> {
        let bucket = super::open_bucket(
            client,
            format!("{}_nodes", config.prefix),
            "quic-chat node leases",
            config.lease_ttl,
        )
        .await?;
        let incarnation = incarnation()?;
        let revision = bucket
            .create(config.node_id.as_str(), incarnation.to_string().into())
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => ClusterError::NodeIdInUse {
                    node: config.node_id.clone(),
                    ttl: config.lease_ttl,
                },
                _ => ClusterError::Nats(format!("cannot take the node lease: {e}")),
            })?;
        let state = Arc::new(Mutex::new(LeaseState {
            revision,
            renewed: Instant::now(),
            held: true,
        }));
        let lease = NodeLease {
            bucket,
            node: config.node_id.clone(),
            incarnation,
            ttl: config.lease_ttl,
            state,
            stop: CancellationToken::new(),
        };
        tokio::spawn(lease.renewing());
        Ok(lease)
    }

    /// The renewal loop, until released or lost.
    fn renewing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (bucket, node, value, state, stop) = (
            self.bucket.clone(),
            self.node.clone(),
            self.incarnation.to_string(),
            Arc::clone(&self.state),
            self.stop.clone(),
        );
        let every = self.ttl / 5;
        async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let revision = lock(&state).revision;
                let renewed = tokio::time::timeout(
                    every,
                    bucket.update(node.as_str(), value.clone().into(), revision),
                )
                .await;
                match renewed {
                    Ok(Ok(revision)) => {
                        let mut state = lock(&state);
                        state.revision = revision;
                        state.renewed = Instant::now();
                    }
                    Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        // A renewal whose answer was lost may have landed:
                        // the key is still ours if it holds our incarnation.
                        match bucket.entry(node.as_str()).await {
                            Ok(Some(entry))
                                if entry.operation == kv::Operation::Put
                                    && entry.value == value.as_bytes() =>
                            {
                                lock(&state).revision = entry.revision;
                            }
                            Ok(_) => {
                                tracing::error!(%node, "the node lease was taken over; this node lost it");
                                lock(&state).held = false;
                                return;
                            }
                            Err(e) => tracing::warn!(%node, "cannot read the node lease: {e}"),
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(%node, "cannot renew the node lease: {e}"),
                    Err(_) => tracing::warn!(%node, "renewing the node lease timed out"),
                }
            }
        }
    }

    /// The lease as last seen.
    pub fn state(&self) -> LeaseState {
        *lock(&self.state)
    }

    /// This run's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether `node` has a live lease held by its run `incarnation`.
    pub async fn is_live(&self, node: &str, incarnation: u64) -> Result<bool, ClusterError> {
        let entry = self
            .bucket
            .entry(node)
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        Ok(entry.is_some_and(|entry| {
            entry.operation == kv::Operation::Put
                && entry.value == incarnation.to_string().as_bytes()
        }))
    }

    /// The ids of the nodes whose lease is live, sorted.
    pub async fn nodes(&self) -> Result<Vec<String>, ClusterError> {
        let mut keys = self
            .bucket
            .keys()
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        let mut nodes = Vec::new();
        while let Some(key) = keys.next().await {
            nodes.push(key.map_err(|e| ClusterError::Nats(e.to_string()))?);
        }
        nodes.sort();
        Ok(nodes)
    }

    /// Stop renewing and delete the key (if still ours), so the id is free.
    pub async fn release(&self) {
        self.stop.cancel();
        let state = self.state();
        if state.held {
            let deleted = self
                .bucket
                .delete_expect_revision(self.node.as_str(), Some(state.revision))
                .await;
            if let Err(e) = deleted {
                tracing::warn!(node = %self.node, "cannot release the node lease: {e}");
            }
        }
    }
}

impl Drop for NodeLease {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A random incarnation for this run.
fn incarnation() -> Result<u64, ClusterError> {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| ClusterError::Nats("no randomness for the incarnation".into()))?;
    Ok(u64::from_le_bytes(bytes))
}

fn lock(state: &Mutex<LeaseState>) -> std::sync::MutexGuard<'_, LeaseState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}
