//! Who is online on the other nodes: a replica of the names bucket and of
//! the leases, kept by two key-value watches, for `ListUsers` and the
//! `online` count. A claim counts only while its holder's lease is live with
//! the claim's incarnation, so the users of a node that died drop out of
//! every list when its lease ends (a lease that ends leaves a marker every
//! watch sees), even though nobody deleted their claims.
//!
//! The replica lags NATS by a round trip or so; nothing that must be exact
//! uses it (claims and deliveries ask NATS itself). It holds at most
//! [`MAX_NAMES`] claims, whatever NATS sends.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::names::{holder, Holder};

/// The most claims the replica holds (far more than a cluster of nodes of
/// 20,000 users each has); beyond it, new claims are left out.
pub const MAX_NAMES: usize = 1 << 20;

/// The most leases the replica holds.
const MAX_NODES: usize = 4096;

/// How long a broken watch waits before it is opened again.
const REWATCH_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
struct Replica {
    /// Claims by bucket key.
    names: HashMap<String, Holder>,
    /// Live leases: node id to incarnation.
    nodes: HashMap<String, u64>,
}

/// The replica of the cluster's names. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Roster {
    replica: Arc<RwLock<Replica>>,
}

impl Roster {
    /// Start watching `names` and `nodes`, until `stop`.
    pub(crate) fn watch(names: kv::Store, nodes: kv::Store, stop: CancellationToken) -> Roster {
        let replica = Arc::new(RwLock::new(Replica::default()));
        tokio::spawn(follow(
            names,
            Arc::clone(&replica),
            Side::Names,
            stop.clone(),
        ));
        tokio::spawn(follow(nodes, Arc::clone(&replica), Side::Nodes, stop));
        Roster { replica }
    }

    /// The names held on live nodes other than `this_node`, as registered,
    /// with their bucket keys, in no particular order.
    pub fn elsewhere(&self, this_node: &str) -> Vec<(String, String)> {
        let replica = self.read();
        replica
            .names
            .iter()
            .filter(|(_, holder)| holder.node != this_node && replica.is_live(holder))
            .map(|(key, holder)| (key.clone(), holder.name.clone()))
            .collect()
    }

    /// How many names live nodes other than `this_node` hold.
    pub fn count_elsewhere(&self, this_node: &str) -> usize {
        let replica = self.read();
        replica
            .names
            .values()
            .filter(|holder| holder.node != this_node && replica.is_live(holder))
            .count()
    }

    /// The live nodes with how many names each holds, sorted by id.
    pub fn nodes(&self) -> Vec<(String, usize)> {
        let replica = self.read();
        let mut counts: HashMap<&str, usize> = replica
            .nodes
            .keys()
            .map(|node| (node.as_str(), 0))
            .collect();
        for holder in replica.names.values() {
            if replica.is_live(holder) {
                *counts.entry(holder.node.as_str()).or_default() += 1;
            }
        }
        let mut nodes: Vec<(String, usize)> = counts
            .into_iter()
            .map(|(node, count)| (node.to_owned(), count))
            .collect();
        nodes.sort();
        nodes
    }

    /// Up to `limit` bucket keys of claims whose holder's lease is gone (a
    /// node that died or fenced before it could release them).
    pub fn stale(&self, limit: usize) -> Vec<String> {
        let replica = self.read();
        replica
            .names
            .iter()
            .filter(|(_, holder)| !replica.is_live(holder))
            .take(limit)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The holder of the claim with bucket key `key`, if it is live.
    pub fn holder(&self, key: &str) -> Option<Holder> {
        let replica = self.read();
        replica
            .names
            .get(key)
            .filter(|holder| replica.is_live(holder))
            .cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Replica> {
        self.replica.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Replica {
    fn is_live(&self, holder: &Holder) -> bool {
        self.nodes.get(&holder.node) == Some(&holder.incarnation)
    }

    fn apply(&mut self, side: Side, entry: &kv::Entry) {
        let put = entry.operation == kv::Operation::Put;
        match side {
            Side::Names => match holder(&entry.value).filter(|_| put) {
                Some(holder) => {
                    if self.names.len() < MAX_NAMES || self.names.contains_key(&entry.key) {
                        self.names.insert(entry.key.clone(), holder);
                    } else {
                        tracing::warn!(
                            "more than {MAX_NAMES} names in the cluster; some are not listed"
                        );
                    }
                }
                None => {
                    self.names.remove(&entry.key);
                }
            },
            Side::Nodes => {
                let incarnation = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|text| text.parse::<u64>().ok())
                    .filter(|_| put);
                match incarnation {
                    Some(incarnation)
                        if self.nodes.len() < MAX_NODES || self.nodes.contains_key(&entry.key) =>
                    {
                        self.nodes.insert(entry.key.clone(), incarnation);
                    }
                    _ => {
                        self.nodes.remove(&entry.key);
                    }
                }
            }
        }
    }

    fn clear(&mut self, side: Side) {
        match side {
            Side::Names => self.names.clear(),
            Side::Nodes => self.nodes.clear(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Names,
    Nodes,
}

/// Keep one side of the replica up to date, opening the watch again when
/// it breaks (NATS restarted, JetStream lost its quorum).
async fn follow(
    bucket: kv::Store,
    replica: Arc<RwLock<Replica>>,
    side: Side,
    stop: CancellationToken,
) {
    loop {
        let watch = tokio::select! {
            () = stop.cancelled() => return,
            watch = bucket.watch_with_history(">") => watch,
        };
        match watch {
            Ok(mut watch) => {
                // A fresh watch replays every key: start from nothing.
                let mut fresh = true;
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        next = watch.next() => next,
                    };
                    match next {
                        Some(Ok(entry)) => {
                            let mut replica = replica.write().unwrap_or_else(|e| e.into_inner());
                            if std::mem::take(&mut fresh) {
                                replica.clear(side);
                            }
                            replica.apply(side, &entry);
                        }
                        Some(Err(e)) => {
                            tracing::warn!("the cluster's {side:?} watch failed: {e}");
                            break;
                        }
                        None => break,
                    }
                }
            }
            Err(e) => tracing::warn!("cannot watch the cluster's {side:?}: {e}"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(REWATCH_AFTER) => {}
        }
    }
}
