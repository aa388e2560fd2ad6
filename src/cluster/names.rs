//! Names unique in the whole cluster: one key per claimed name in the
//! `<prefix>_names` key-value bucket, whose value names the holder and the
//! name as registered: `<node id> <incarnation> <Name>`. A claim is a
//! create-only write, so of any number of nodes claiming one free name at
//! once exactly one succeeds. A claim whose holder has no live lease
//! (`lease.rs`: its node died, or this is an earlier run of the same id) is
//! stale and is taken over with a compare-and-set on its revision, so two
//! nodes taking over one stale claim cannot both win; so is this node's own
//! (the caller already decided locally that the new connection may hold
//! it). A claim of another live node is [`ClaimError::Taken`], with the
//! revision the caller may take over at once the holder let go
//! ([`Names::take_over`]). A release deletes the key only at the claim's own
//! revision, never a later holder's.

use async_nats::jetstream::kv;

use super::lease::NodeLease;
use super::{ClusterConfig, ClusterError};
use crate::protocol::NameKey;

/// How often a claim retries when the key changed under it.
const CLAIM_ATTEMPTS: usize = 4;

/// The bucket of name claims.
#[derive(Debug, Clone)]
pub struct Names {
    bucket: kv::Store,
    node: super::NodeId,
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
        /// The claim's revision, for [`Names::take_over`].
        revision: u64,
    },
    /// NATS did not do what was asked (unreachable, or the claim kept
    /// changing under this node).
    #[error("cannot claim the name: {0}")]
    Unavailable(String),
}

/// Who holds a claim, as its value says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The holder's node id.
    pub node: String,
    /// The holder's run.
    pub incarnation: u64,
    /// The name as registered (original letter case).
    pub name: String,
}

/// The bucket key of a name: its lowercased form with `.` written as `=`
/// (a key may not start or end with `.`; `=` is in no username). Also the
/// last token of the name's delivery subject.
pub fn name_key(name: &NameKey) -> String {
    key_chars(name).collect()
}

/// The characters of `name`'s bucket key (see [`name_key`]).
fn key_chars(name: &NameKey) -> impl Iterator<Item = char> + '_ {
    name.as_str()
        .chars()
        .map(|c| if c == '.' { '=' } else { c })
}

/// The subject `<prefix>.<kind>.<name key>`, built in one allocation (a
/// delivery to another node builds one per message).
pub(crate) fn name_subject(prefix: &str, kind: &str, name: &NameKey) -> String {
    let len = prefix.len() + kind.len() + name.as_str().len() + 2;
    let mut subject = String::with_capacity(len);
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(kind);
    subject.push('.');
    subject.extend(key_chars(name));
    subject
}

/// A claim's holder, from its value; `None` for bytes no node writes.
pub(crate) fn holder(value: &[u8]) -> Option<Holder> {
    // A node id (32), an incarnation (20), a name (32) and two spaces.
    if value.len() > 86 {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.splitn(3, ' ');
    let node = parts.next()?;
    node.parse::<super::NodeId>().ok()?;
    let incarnation = parts.next()?.parse().ok()?;
    let name = parts.next()?;
    NameKey::new(name).ok()?;
    Some(Holder {
        node: node.to_owned(),
        incarnation,
        name: name.to_owned(),
    })
}

impl Names {
    /// Open (or create) the names bucket.
    pub(crate) async fn open(
        client: async_nats::Client,
        config: &ClusterConfig,
    ) -> Result<Names, ClusterError> {
        let bucket = super::open_bucket(
            client,
            super::BucketSpec {
                name: format!("{}_names", config.prefix),
                description: "quic-chat name claims",
                max_age: std::time::Duration::ZERO,
                limit_markers: None,
                replicas: config.replicas,
            },
        )
        .await?;
        Ok(Names {
            bucket,
            node: config.node_id.clone(),
        })
    }

    /// The bucket (for the roster's watch).
    pub(crate) fn bucket(&self) -> &kv::Store {
        &self.bucket
    }

    fn value(&self, display: &str, lease: &NodeLease) -> bytes::Bytes {
        format!("{} {} {display}", self.node, lease.incarnation()).into()
    }

    /// Claim `name` (registered as `display`) for this node; `lease` tells
    /// which holders are live.
    pub async fn claim(
        &self,
        name: &NameKey,
        display: &str,
        lease: &NodeLease,
    ) -> Result<Claim, ClaimError> {
        let key = name_key(name);
        let unavailable = |e: &dyn std::fmt::Display| ClaimError::Unavailable(e.to_string());
        for _ in 0..CLAIM_ATTEMPTS {
            let ours = self.value(display, lease);
            match self.bucket.create(key.as_str(), ours.clone()).await {
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
                if let Some(holder) = holder(&entry.value) {
                    let own = holder.node == self.node.as_str();
                    let live = !own
                        && lease
                            .is_live(&holder.node, holder.incarnation)
                            .await
                            .map_err(|e| unavailable(&e))?;
                    if live {
                        return Err(ClaimError::Taken {
                            node: holder.node,
                            revision: entry.revision,
                        });
                    }
                }
            }
            // Stale, ours, or unreadable: take it over, unless it changed since.
            match self.take_over(name, display, lease, entry.revision).await {
                Ok(claim) => return Ok(claim),
                Err(TakeOverError::Changed) => {}
                Err(TakeOverError::Unavailable(e)) => return Err(ClaimError::Unavailable(e)),
            }
        }
        Err(ClaimError::Unavailable(
            "the claim kept changing under this node".to_owned(),
        ))
    }

    /// Take `name` over from the claim at `revision` (a holder that let it
    /// go, or a stale one); fails with [`TakeOverError::Changed`] if the
    /// claim is no longer that one.
    pub async fn take_over(
        &self,
        name: &NameKey,
        display: &str,
        lease: &NodeLease,
        revision: u64,
    ) -> Result<Claim, TakeOverError> {
        let key = name_key(name);
        match self
            .bucket
            .update(key.as_str(), self.value(display, lease), revision)
            .await
        {
            Ok(revision) => Ok(Claim { key, revision }),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(TakeOverError::Changed)
            }
            Err(e) => Err(TakeOverError::Unavailable(e.to_string())),
        }
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

    /// Delete the claim under bucket key `key` if its holder's lease is
    /// still gone when read (at the revision read, so a claim made since
    /// stays). Whether it was deleted.
    pub async fn clear_stale(&self, key: &str, lease: &NodeLease) -> Result<bool, ClaimError> {
        let unavailable = |e: &dyn std::fmt::Display| ClaimError::Unavailable(e.to_string());
        let Some(entry) = self.bucket.entry(key).await.map_err(|e| unavailable(&e))? else {
            return Ok(false);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(false);
        }
        if let Some(holder) = holder(&entry.value) {
            let live = lease
                .is_live(&holder.node, holder.incarnation)
                .await
                .map_err(|e| unavailable(&e))?;
            if live {
                return Ok(false);
            }
        }
        match self
            .bucket
            .delete_expect_revision(key, Some(entry.revision))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// Who holds `name` now, by its claim (live or not).
    pub async fn holder_of(&self, name: &NameKey) -> Result<Option<Holder>, ClaimError> {
        let entry = self
            .bucket
            .entry(name_key(name))
            .await
            .map_err(|e| ClaimError::Unavailable(e.to_string()))?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .and_then(|entry| holder(&entry.value)))
    }
}

/// Why a take-over failed.
#[derive(Debug, thiserror::Error)]
pub enum TakeOverError {
    /// The claim changed since it was read: read it again.
    #[error("the claim changed")]
    Changed,
    /// NATS did not answer.
    #[error("cannot take the name over: {0}")]
    Unavailable(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_holders() {
        let key = |name: &str| name_key(&NameKey::new(name).unwrap());
        let dotted = NameKey::new("Bob.x-y").unwrap();
        assert_eq!(name_subject("qc", "dm", &dotted), "qc.dm.bob=x-y");
        assert_eq!(key("Alice"), "alice");
        assert_eq!(key(".dot.name-x_y"), "=dot=name-x_y");
        assert_eq!(
            holder(b"n1 42 Alice"),
            Some(Holder {
                node: "n1".into(),
                incarnation: 42,
                name: "Alice".into()
            })
        );
        for bad in [
            &b"n1 42"[..],
            b"n1 x Alice",
            b"",
            b"\xff 1 a",
            b"n1 -1 a",
            b"n1 1 a b",
        ] {
            assert_eq!(holder(bad), None, "{bad:?}");
        }
    }
}
