//! Names unique in the whole cluster: one key per claimed name in the
//! `<prefix>_names` key-value bucket, whose value names the holder as
//! `<node id> <incarnation>`. A claim is a create-only write, so of any
//! number of nodes claiming one free name at once exactly one succeeds. A
//! claim whose holder has no live lease (`lease.rs`: its node died, or this
//! is an earlier run of the same id) is stale and is taken over with a
//! compare-and-set on its revision, so two nodes taking over one stale claim
//! cannot both win. A release deletes the key only at the claim's own
//! revision, never a later holder's.
//!
//! Not yet used by the server's Hello (docs/CLUSTER.md, "Missing").

use async_nats::jetstream::kv;

use super::lease::NodeLease;
use super::{ClusterConfig, ClusterError, NodeId};
use crate::protocol::NameKey;

/// How often a claim retries when the key changed under it.
const CLAIM_ATTEMPTS: usize = 4;

/// The bucket of name claims.
#[derive(Debug, Clone)]
pub struct Names {
    bucket: kv::Store,
    node: NodeId,
    incarnation: u64,
}

/// A name this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The name's key in the bucket.
    key: String,
    /// The key's revision when this node wrote it.
    pub revision: u64,
}

/// Why a name could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// A live node holds it.
    #[error("the name is held on node {node}")]
    Taken {
        /// The holder's node id, as its claim says.
        node: String,
    },
    /// NATS did not do what was asked (unreachable, or the claim kept
    /// changing under this node).
    #[error("cannot claim the name: {0}")]
    Unavailable(String),
}

/// The bucket key of a name: its lowercased form with `.` written as `=`
/// (a key may not start or end with `.`; `=` is in no username).
pub fn name_key(name: &NameKey) -> String {
    name.as_str().replace('.', "=")
}

/// A claim's holder, from its value; `None` for bytes no node writes.
fn holder(value: &[u8]) -> Option<(&str, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (node, incarnation) = text.split_once(' ')?;
    Some((node, incarnation.parse().ok()?))
}

impl Names {
    /// Open (or create) the names bucket for `lease`'s node.
    pub(crate) async fn open(
        client: async_nats::Client,
        config: &ClusterConfig,
        lease: &NodeLease,
    ) -> Result<Names, ClusterError> {
        let bucket = super::open_bucket(
            client,
            format!("{}_names", config.prefix),
            "quic-chat name claims",
            std::time::Duration::ZERO,
        )
        .await?;
        Ok(Names {
            bucket,
            node: config.node_id.clone(),
            incarnation: lease.incarnation(),
        })
    }

    /// Claim `name` for this node; `lease` tells which holders are live.
    pub async fn claim(&self, name: &NameKey, lease: &NodeLease) -> Result<Claim, ClaimError> {
        let key = name_key(name);
        let ours = format!("{} {}", self.node, self.incarnation);
        let unavailable = |e: &dyn std::fmt::Display| ClaimError::Unavailable(e.to_string());
        for _ in 0..CLAIM_ATTEMPTS {
            match self.bucket.create(key.as_str(), ours.clone().into()).await {
                Ok(revision) => return Ok(Claim { key, revision }),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(unavailable(&e)),
            }
            let Some(entry) = self
                .bucket
                .entry(key.as_str())
                .await
                .map_err(|e| unavailable(&e))?
            else {
                continue;
            };
            if entry.operation == kv::Operation::Put {
                if let Some((node, incarnation)) = holder(&entry.value) {
                    let live = lease
                        .is_live(node, incarnation)
                        .await
                        .map_err(|e| unavailable(&e))?;
                    if live {
                        return Err(ClaimError::Taken {
                            node: node.to_owned(),
                        });
                    }
                }
            }
            // Stale (or unreadable): take it over, unless it changed since.
            match self
                .bucket
                .update(key.as_str(), ours.clone().into(), entry.revision)
                .await
            {
                Ok(revision) => return Ok(Claim { key, revision }),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(unavailable(&e)),
            }
        }
        Err(ClaimError::Unavailable(
            "the claim kept changing under this node".to_owned(),
        ))
    }

    /// Give `claim` up (if it is still this node's).
    pub async fn release(&self, claim: &Claim) -> Result<(), ClaimError> {
        match self
            .bucket
            .delete_expect_revision(claim.key.as_str(), Some(claim.revision))
            .await
        {
            Ok(()) => Ok(()),
            // Someone took it over meanwhile: it is theirs now.
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(()),
            Err(e) => Err(ClaimError::Unavailable(e.to_string())),
        }
    }

    /// Who holds `name` now, by its claim (live or not): (node, incarnation).
    pub async fn holder_of(&self, name: &NameKey) -> Result<Option<(String, u64)>, ClaimError> {
        let entry = self
            .bucket
            .entry(name_key(name))
            .await
            .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .and_then(|entry| holder(&entry.value).map(|(n, i)| (n.to_owned(), i))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_holders() {
        let key = |name: &str| name_key(&NameKey::new(name).unwrap());
        assert_eq!(key("Alice"), "alice");
        assert_eq!(key(".dot.name-x_y"), "=dot=name-x_y");
        assert_eq!(holder(b"n1 42"), Some(("n1", 42)));
        for bad in [&b"n1"[..], b"n1 x", b"", b"\xff 1", b"n1 -1"] {
            assert_eq!(holder(bad), None, "{bad:?}");
        }
    }
}
