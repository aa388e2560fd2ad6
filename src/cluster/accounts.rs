//! Accounts shared by every node of a cluster, in the key-value bucket
//! `<prefix>_accounts`: `a.<name key>` holds an account record (the store's
//! own record format, `store/record.rs`), `d.<fingerprint hex>` the name of
//! the account a device key belongs to, and `lock` the cluster-wide lock
//! account writes take.
//!
//! The decisions (the protocol's order of failures, registration on first
//! use, the operator's commands) are the store's own functions, run over
//! [`Staged`]: what one operation read from the bucket, under the lock, and
//! the writes it made. The writes then go to NATS, each a compare-and-set on
//! the revision read, in an order that leaves nothing half-done but an
//! index entry its account does not list (a device key is indexed before an
//! account lists it, and unindexed after it stops): readers ignore such an
//! entry, and the next write over it replaces it. Account writes are rare
//! (a registration, a device change), so one lock for all is cheap.
//!
//! The lock is a key whose value is `free` or `held <node> <until ms>`,
//! taken and given back by compare-and-set; a holder that died is waited
//! out until its time passes (clocks of one cluster's nodes agree to well
//! under [`LOCK_LEASE`]). A holder that stalls past it cannot spoil
//! anything either: every write it makes is checked against the revision
//! it read.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;

use super::names::name_key;
use super::{ClusterConfig, ClusterError, NodeId};
use crate::clock::unix_ms;
use crate::protocol::{Fingerprint, NameKey};
use crate::store::{AccountRecord, AccountTables, StoreError};

/// The lock's key.
const LOCK_KEY: &str = "lock";

/// How long a lock holder may take before others may take the lock over.
const LOCK_LEASE: Duration = Duration::from_secs(10);

/// How long an operation waits for the lock before it fails.
const LOCK_WAIT: Duration = Duration::from_secs(4);

/// How long one read or write of the bucket may take.
const OP_TIMEOUT: Duration = Duration::from_secs(4);

/// The cluster's shared accounts.
#[derive(Debug, Clone)]
pub(crate) struct SharedAccounts {
    bucket: kv::Store,
    node: NodeId,
}

fn account_key(name: &NameKey) -> String {
    format!("a.{}", name_key(name))
}

fn device_key(fingerprint: &Fingerprint) -> String {
    let mut key = String::with_capacity(2 + 2 * Fingerprint::LEN);
    key.push_str("d.");
    for byte in fingerprint.as_bytes() {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("the cluster's accounts: {e}"))
}

/// One read: the value of `key` and its revision, `None` if deleted or absent.
async fn read(bucket: &kv::Store, key: &str) -> Result<Option<(bytes::Bytes, u64)>, StoreError> {
    let entry = tokio::time::timeout(OP_TIMEOUT, bucket.entry(key))
        .await
        .map_err(|_| unavailable("no answer"))?
        .map_err(unavailable)?;
    Ok(entry
        .filter(|entry| entry.operation == kv::Operation::Put)
        .map(|entry| (entry.value, entry.revision)))
}

impl SharedAccounts {
    /// Open (or create) the accounts bucket.
    pub(crate) async fn open(
        client: async_nats::Client,
        config: &ClusterConfig,
    ) -> Result<SharedAccounts, ClusterError> {
        let bucket = super::open_bucket(
            client,
            super::BucketSpec {
                name: format!("{}_accounts", config.prefix),
                description: "quic-chat accounts",
                max_age: Duration::ZERO,
                limit_markers: None,
                replicas: config.replicas,
            },
        )
        .await?;
        Ok(SharedAccounts {
            bucket,
            node: config.node_id.clone(),
        })
    }

    /// The account registered under `name`, if any.
    pub(crate) async fn account(
        &self,
        name: &NameKey,
    ) -> Result<Option<AccountRecord>, StoreError> {
        let mut staged = Staged::default();
        staged.read_account(&self.bucket, *name).await?;
        staged.load(name)
    }

    /// Whether an account is registered under `name` (one read).
    pub(crate) async fn exists(&self, name: &NameKey) -> Result<bool, StoreError> {
        Ok(read(&self.bucket, &account_key(name)).await?.is_some())
    }

    /// The account `fingerprint` belongs to, if any.
    pub(crate) async fn account_of(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Option<AccountRecord>, StoreError> {
        let mut staged = Staged::default();
        staged.read_device(&self.bucket, *fingerprint).await?;
        match staged.owner_of(fingerprint)? {
            Some(owner) => staged.load(&owner),
            None => Ok(None),
        }
    }

    /// Every account, sorted by lowercased name.
    pub(crate) async fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        let mut keys = self.bucket.keys().await.map_err(unavailable)?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            if let Some(name) = key.strip_prefix("a.") {
                names.push(name.replace('=', "."));
            }
        }
        let mut all = Vec::new();
        for name in names {
            let Ok(key) = NameKey::new(&name) else {
                continue;
            };
            if let Some(account) = self.account(&key).await? {
                all.push(account);
            }
        }
        all.sort_by_key(|account| account.name.to_ascii_lowercase());
        Ok(all)
    }

    /// Run `operation` (one of the store's account operations) on what the
    /// bucket holds for `names` and `devices`, under the cluster's lock, and
    /// write what it changed if it succeeded (`Ok(Ok(_))`).
    pub(crate) async fn write<T, E>(
        &self,
        names: &[NameKey],
        devices: &[Fingerprint],
        operation: impl FnOnce(&mut Staged) -> Result<Result<T, E>, StoreError>,
    ) -> Result<Result<T, E>, StoreError> {
        let lock = self.lock().await?;
        let outcome = async {
            let mut staged = Staged::default();
            for name in names {
                staged.read_account(&self.bucket, *name).await?;
            }
            for device in devices {
                staged.read_device(&self.bucket, *device).await?;
            }
            let outcome = operation(&mut staged)?;
            if outcome.is_ok() {
                staged.apply(&self.bucket).await?;
            }
            Ok(outcome)
        }
        .await;
        self.unlock(lock).await;
        outcome
    }

    /// Take the lock; returns its revision.
    async fn lock(&self) -> Result<u64, StoreError> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            let now = unix_ms();
            let held = format!("held {} {}", self.node, now + LOCK_LEASE.as_millis() as u64);
            let taken = match read(&self.bucket, LOCK_KEY).await? {
                None => self
                    .bucket
                    .create(LOCK_KEY, held.into())
                    .await
                    .map_err(|e| e.to_string()),
                Some((value, revision)) if lock_is_free(&value, now) => self
                    .bucket
                    .update(LOCK_KEY, held.into(), revision)
                    .await
                    .map_err(|e| e.to_string()),
                Some(_) => Err("held".to_owned()),
            };
            if let Ok(revision) = taken {
                return Ok(revision);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(unavailable("another node holds the accounts lock"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn unlock(&self, revision: u64) {
        let freed = self
            .bucket
            .update(LOCK_KEY, bytes::Bytes::from_static(b"free"), revision);
        if !matches!(tokio::time::timeout(OP_TIMEOUT, freed).await, Ok(Ok(_))) {
            tracing::warn!("cannot give the accounts lock back; it frees itself in {LOCK_LEASE:?}");
        }
    }
}

/// Write `value` under `key`: at `revision` if one was read (compare-and-set),
/// else only if the key does not exist.
async fn put_at(
    bucket: &kv::Store,
    key: String,
    value: bytes::Bytes,
    revision: Option<u64>,
) -> Result<(), StoreError> {
    let written = match revision {
        Some(revision) => bucket
            .update(key, value, revision)
            .await
            .map_err(unavailable),
        None => bucket.create(key, value).await.map_err(unavailable),
    };
    written.map(drop)
}

/// Whether a lock value lets a node take the lock at `now_ms`.
fn lock_is_free(value: &[u8], now_ms: u64) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return true;
    };
    match text.split(' ').collect::<Vec<_>>().as_slice() {
        ["held", _, until] => until.parse::<u64>().map_or(true, |until| until <= now_ms),
        _ => true,
    }
}

/// What one operation read from the bucket (with revisions) and the writes
/// it made, in order.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    accounts: HashMap<NameKey, (Option<AccountRecord>, Option<u64>)>,
    devices: HashMap<Fingerprint, (Option<NameKey>, Option<u64>)>,
    writes: Vec<Write>,
}

#[derive(Debug)]
enum Write {
    Index(Fingerprint, NameKey),
    Save(NameKey, AccountRecord),
    Remove(NameKey),
    Unindex(Fingerprint),
}

impl Staged {
    /// Read the account `name`, and the index entries of its devices.
    async fn read_account(&mut self, bucket: &kv::Store, name: NameKey) -> Result<(), StoreError> {
        if self.accounts.contains_key(&name) {
            return Ok(());
        }
        let key = account_key(&name);
        let (account, revision) = match read(bucket, &key).await? {
            Some((bytes, revision)) => (
                Some(crate::store::decode_account_record(name.as_str(), &bytes)?),
                Some(revision),
            ),
            None => (None, None),
        };
        let devices: Vec<Fingerprint> = account
            .iter()
            .flat_map(|account| account.devices.iter().map(|device| device.fingerprint))
            .collect();
        self.accounts.insert(name, (account, revision));
        for device in devices {
            self.read_index(bucket, device).await?;
        }
        Ok(())
    }

    /// Read the index entry of `fingerprint`, and the account it names.
    async fn read_device(
        &mut self,
        bucket: &kv::Store,
        fingerprint: Fingerprint,
    ) -> Result<(), StoreError> {
        self.read_index(bucket, fingerprint).await?;
        if let Some((Some(owner), _)) = self.devices.get(&fingerprint) {
            let owner = *owner;
            Box::pin(self.read_account(bucket, owner)).await?;
        }
        Ok(())
    }

    async fn read_index(
        &mut self,
        bucket: &kv::Store,
        fingerprint: Fingerprint,
    ) -> Result<(), StoreError> {
        if self.devices.contains_key(&fingerprint) {
            return Ok(());
        }
        let entry = match read(bucket, &device_key(&fingerprint)).await? {
            // An entry that names no valid account is as good as none.
            Some((bytes, revision)) => (
                std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|name| NameKey::new(name).ok()),
                Some(revision),
            ),
            None => (None, None),
        };
        self.devices.insert(fingerprint, entry);
        Ok(())
    }

    /// Send the writes to NATS: index entries first, then accounts, then
    /// removed index entries; each a compare-and-set on what was read.
    async fn apply(&mut self, bucket: &kv::Store) -> Result<(), StoreError> {
        let order = |write: &Write| match write {
            Write::Index(..) => 0,
            Write::Save(..) | Write::Remove(..) => 1,
            Write::Unindex(..) => 2,
        };
        let mut writes = std::mem::take(&mut self.writes);
        writes.sort_by_key(order);
        for write in writes {
            let done = match write {
                Write::Index(fingerprint, name) => {
                    let revision = self.devices.get(&fingerprint).and_then(|(_, r)| *r);
                    let value = bytes::Bytes::from(name.as_str().to_owned());
                    put_at(bucket, device_key(&fingerprint), value, revision).await
                }
                Write::Save(name, account) => {
                    let revision = self.accounts.get(&name).and_then(|(_, r)| *r);
                    let value = bytes::Bytes::from(crate::store::encode_account_record(&account));
                    put_at(bucket, account_key(&name), value, revision).await
                }
                Write::Remove(name) => {
                    let revision = self.accounts.get(&name).and_then(|(_, revision)| *revision);
                    bucket
                        .delete_expect_revision(account_key(&name), revision)
                        .await
                        .map_err(unavailable)
                }
                Write::Unindex(fingerprint) => {
                    let revision = self
                        .devices
                        .get(&fingerprint)
                        .and_then(|(_, revision)| *revision);
                    bucket
                        .delete_expect_revision(device_key(&fingerprint), revision)
                        .await
                        .map_err(unavailable)
                }
            };
            done?;
        }
        Ok(())
    }

    fn not_read(what: &str) -> StoreError {
        StoreError::Unavailable(format!(
            "the cluster's accounts changed while being read ({what}); try again"
        ))
    }
}

impl AccountTables for Staged {
    fn load(&self, name: &NameKey) -> Result<Option<AccountRecord>, StoreError> {
        match self.accounts.get(name) {
            Some((account, _)) => Ok(account.clone()),
            None => Err(Staged::not_read(name.as_str())),
        }
    }

    /// The index entry of `fingerprint`, if the account it names lists it
    /// (an entry left over by an interrupted write is ignored), or the
    /// account read that lists it.
    fn owner_of(&self, fingerprint: &Fingerprint) -> Result<Option<NameKey>, StoreError> {
        let lists = |name: &NameKey| {
            self.accounts
                .get(name)
                .and_then(|(account, _)| account.as_ref())
                .is_some_and(|account| account.has_device(fingerprint))
        };
        if let Some((Some(owner), _)) = self.devices.get(fingerprint) {
            if lists(owner) {
                return Ok(Some(*owner));
            }
        }
        Ok(self.accounts.keys().find(|name| lists(name)).copied())
    }

    fn save(&mut self, name: &NameKey, account: &AccountRecord) -> Result<(), StoreError> {
        let revision = self.accounts.get(name).and_then(|(_, revision)| *revision);
        self.accounts
            .insert(*name, (Some(account.clone()), revision));
        self.writes.push(Write::Save(*name, account.clone()));
        Ok(())
    }

    fn remove(&mut self, name: &NameKey) -> Result<(), StoreError> {
        let revision = self.accounts.get(name).and_then(|(_, revision)| *revision);
        self.accounts.insert(*name, (None, revision));
        self.writes.push(Write::Remove(*name));
        Ok(())
    }

    fn index(&mut self, fingerprint: &Fingerprint, name: &NameKey) -> Result<(), StoreError> {
        let revision = self
            .devices
            .get(fingerprint)
            .and_then(|(_, revision)| *revision);
        self.devices.insert(*fingerprint, (Some(*name), revision));
        self.writes.push(Write::Index(*fingerprint, *name));
        Ok(())
    }

    fn unindex(&mut self, fingerprint: &Fingerprint) -> Result<(), StoreError> {
        let revision = self
            .devices
            .get(fingerprint)
            .and_then(|(_, revision)| *revision);
        self.devices.insert(*fingerprint, (None, revision));
        self.writes.push(Write::Unindex(*fingerprint));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_values() {
        assert!(lock_is_free(b"free", 5));
        assert!(lock_is_free(b"held n1 4", 5));
        assert!(!lock_is_free(b"held n1 6", 5));
        assert!(lock_is_free(b"garbage", 5));
        assert!(lock_is_free(b"held n1 x", 5));
    }

    #[test]
    fn keys() {
        let fp = Fingerprint::from_slice(&[0xab; 32]).unwrap();
        assert_eq!(device_key(&fp), format!("d.{}", "ab".repeat(32)));
        assert_eq!(account_key(&NameKey::new("A.b").unwrap()), "a.a=b");
    }
}
