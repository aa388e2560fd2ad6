//! A node's lease: one key per live node in the `<prefix>_nodes` key-value
//! bucket, whose `max_age` is the lease lifetime (with limit markers, so a
//! lease that ends is seen by every watcher as a removal). A node takes its
//! key with a create-only write (so a node id held by a live node is
//! refused), renews it every fifth of the lifetime with a compare-and-set on
//! its revision (so a lease someone else took over is noticed, never
//! overwritten), and deletes it when it stops gracefully (the id is free at
//! once). A node that dies stops renewing; NATS drops its key when the
//! lifetime ends.
//!
//! The value is this run's incarnation, a random `u64` in decimal: name
//! claims point at (node, incarnation), so a claim of an earlier run of the
//! same id is recognisably stale.
//!
//! **Fencing.** A node whose last renewal is older than two thirds of the
//! lifetime is not *serving* ([`NodeLease::serving`]): the server closes its
//! users' connections and admits nobody, before the lease can end and
//! another node can take their names. When NATS answers again the node
//! renews under a new incarnation, so every claim it made before (whose
//! release may not have reached NATS) is stale at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{ClusterConfig, ClusterError, NodeId};

/// The lease as this node last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseState {
    /// The key's revision after the last successful write.
    pub revision: u64,
    /// When the lease was last written (taken or renewed).
    pub renewed: Instant,
    /// False while this node does not hold its key (someone else took it
    /// over, or it ended while NATS was out of reach): it serves nobody
    /// until it has taken it again.
    pub held: bool,
    /// The run's incarnation the key holds now.
    pub incarnation: u64,
}

/// This node's lease, renewed in the background until released.
#[derive(Debug)]
pub struct NodeLease {
    bucket: kv::Store,
    node: NodeId,
    ttl: Duration,
    state: Arc<Mutex<LeaseState>>,
    serving: watch::Receiver<bool>,
    stop: CancellationToken,
}

/// The part of the lifetime after which a node without a renewal stops serving.
fn fence_after(ttl: Duration) -> Duration {
    ttl * 2 / 3
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
            super::BucketSpec {
                name: format!("{}_nodes", config.prefix),
                description: "quic-chat node leases",
                max_age: config.lease_ttl,
                limit_markers: Some(config.lease_ttl.max(Duration::from_secs(1))),
                replicas: config.replicas,
            },
        )
        .await?;
        let incarnation = incarnation()?;
        let revision = super::until_ready(|| claim(&bucket, config, incarnation)).await?;
        let state = Arc::new(Mutex::new(LeaseState {
            revision,
            renewed: Instant::now(),
            held: true,
            incarnation,
        }));
        let (serving_tx, serving) = watch::channel(true);
        let lease = NodeLease {
            bucket,
            node: config.node_id.clone(),
            ttl: config.lease_ttl,
            state,
            serving,
            stop: CancellationToken::new(),
        };
        tokio::spawn(lease.renewing(serving_tx));
        Ok(lease)
    }

    /// The renewal loop, until released.
    fn renewing(
        &self,
        serving: watch::Sender<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (bucket, node, state, stop, ttl) = (
            self.bucket.clone(),
            self.node.clone(),
            Arc::clone(&self.state),
            self.stop.clone(),
            self.ttl,
        );
        let every = ttl / 5;
        async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            // Set when this node stopped serving: it comes back under a new
            // incarnation.
            let mut fenced = false;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let attempt = tokio::time::timeout(every, renew(&bucket, &node, &state, fenced));
                tokio::pin!(attempt);
                // The fence does not wait for a slow attempt: when the lease
                // turns stale during one, this node stops serving then.
                let stale_at =
                    tokio::time::Instant::from_std(lock(&state).renewed + fence_after(ttl));
                let outcome = tokio::select! {
                    outcome = &mut attempt => outcome,
                    () = tokio::time::sleep_until(stale_at), if !fenced => {
                        serving.send_if_modified(|current| std::mem::replace(current, false));
                        attempt.await
                    }
                };
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(%node, "cannot renew the node lease: {e}"),
                    Err(_) => tracing::warn!(%node, "renewing the node lease timed out"),
                }
                let now = lock(&state);
                let serve = now.held && now.renewed.elapsed() < fence_after(ttl);
                drop(now);
                if !serve && !fenced {
                    tracing::error!(
                        %node,
                        "no lease renewal for {:?}: this node stops serving until NATS answers",
                        fence_after(ttl)
                    );
                    fenced = true;
                } else if serve && fenced {
                    tracing::info!(%node, "the node lease is held again: serving");
                    fenced = false;
                }
                serving.send_if_modified(|current| std::mem::replace(current, serve) != serve);
            }
        }
    }

    /// The lease as last seen.
    pub fn state(&self) -> LeaseState {
        *lock(&self.state)
    }

    /// The lease lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether this node may serve its users now, and the changes of it: false
    /// once its lease is lost or was not renewed for two thirds of its
    /// lifetime.
    pub fn serving(&self) -> watch::Receiver<bool> {
        self.serving.clone()
    }

    /// Whether this node may serve its users at this instant: its lease is
    /// held and was renewed less than two thirds of its lifetime ago. Unlike
    /// [`NodeLease::serving`], which the renewal loop updates after each
    /// attempt, this reads the clock, so a node that was suspended (SIGSTOP,
    /// a paused VM) and wakes with a stale lease knows it at once, before
    /// the loop has run again.
    pub fn serving_now(&self) -> bool {
        let state = self.state();
        state.held && state.renewed.elapsed() < fence_after(self.ttl)
    }

    /// This run's incarnation now (it changes when the node comes back from
    /// a fence).
    pub fn incarnation(&self) -> u64 {
        lock(&self.state).incarnation
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

    /// The bucket of leases (for the roster's watch).
    pub(crate) fn bucket(&self) -> &kv::Store {
        &self.bucket
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

/// One renewal: a compare-and-set at the last revision, under a new
/// incarnation when `fresh`; a lease that ended (or that this node never
/// saw renewed) is taken again with a create-only write.
async fn renew(
    bucket: &kv::Store,
    node: &NodeId,
    state: &Mutex<LeaseState>,
    fresh: bool,
) -> Result<(), String> {
    let before = *lock(state);
    let incarnation = if fresh || !before.held {
        incarnation().map_err(|e| e.to_string())?
    } else {
        before.incarnation
    };
    let value = incarnation.to_string();
    // The lease is as fresh as the moment the write left, not its answer.
    let sent = Instant::now();
    let written = if before.held {
        bucket
            .update(node.as_str(), value.clone().into(), before.revision)
            .await
            .map_err(|e| {
                (
                    e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                    e.to_string(),
                )
            })
    } else {
        bucket
            .create(node.as_str(), value.clone().into())
            .await
            .map_err(|e| {
                (
                    e.kind() == kv::CreateErrorKind::AlreadyExists,
                    e.to_string(),
                )
            })
    };
    match written {
        Ok(revision) => {
            *lock(state) = LeaseState {
                revision,
                renewed: sent,
                held: true,
                incarnation,
            };
            Ok(())
        }
        Err((true, _)) if before.held => {
            // A renewal whose answer was lost may have landed: the key is
            // still ours if it holds our incarnation.
            let entry = bucket
                .entry(node.as_str())
                .await
                .map_err(|e| e.to_string())?;
            match entry {
                Some(entry)
                    if entry.operation == kv::Operation::Put
                        && entry.value == before.incarnation.to_string().as_bytes() =>
                {
                    lock(state).revision = entry.revision;
                    Ok(())
                }
                Some(entry) if entry.operation == kv::Operation::Put => {
                    tracing::error!(%node, "the node lease was taken over; this node lost it");
                    lock(state).held = false;
                    Ok(())
                }
                _ => {
                    tracing::warn!(%node, "the node lease ended; taking it again");
                    lock(state).held = false;
                    Ok(())
                }
            }
        }
        Err((true, _)) => Err("a live node holds this node id".to_owned()),
        Err((false, e)) => Err(e),
    }
}

/// Create the key of `config.node_id` holding `incarnation`, and return
/// its revision. A bucket another node has only just created may not be
/// known yet to the NATS server this node is on ("no stream found"): that
/// is [`ClusterError::NotReady`], for the caller to try again. A try that
/// timed out may still have been written, so finding this run's own
/// incarnation under the key counts as taken.
async fn claim(
    bucket: &kv::Store,
    config: &ClusterConfig,
    incarnation: u64,
) -> Result<u64, ClusterError> {
    let value = incarnation.to_string();
    let error = match bucket
        .create(config.node_id.as_str(), value.clone().into())
        .await
    {
        Ok(revision) => return Ok(revision),
        Err(e) => e,
    };
    if error.kind() == kv::CreateErrorKind::AlreadyExists {
        return match bucket.entry(config.node_id.as_str()).await {
            Ok(Some(entry))
                if entry.operation == kv::Operation::Put && entry.value == value.as_bytes() =>
            {
                Ok(entry.revision)
            }
            _ => Err(ClusterError::NodeIdInUse {
                node: config.node_id.clone(),
                ttl: config.lease_ttl,
            }),
        };
    }
    let text = format!("cannot take the node lease: {error}");
    Err(if super::not_ready(&text) {
        ClusterError::NotReady(text)
    } else {
        ClusterError::Nats(text)
    })
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
