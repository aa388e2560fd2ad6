//! Where accounts are kept: this server's own store, or, for a node of a
//! cluster, the bucket every node shares (`cluster/accounts.rs`). Both run
//! the same decisions (the store's account operations); this module only
//! says where.

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::protocol::{Failure, Fingerprint, NameKey};
use crate::store::accounts::{self as ops, Deleted};
use crate::store::{AccountRecord, Conflict, Store, StoreError};

/// The accounts' home. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AccountBook {
    store: Store,
    shared: Option<Arc<Cluster>>,
}

impl AccountBook {
    /// Accounts in `store`, or in `cluster`'s shared bucket if there is one
    /// (`store` still keeps this node's mail).
    pub(crate) fn new(store: Store, cluster: Option<Arc<Cluster>>) -> Self {
        AccountBook {
            store,
            shared: cluster,
        }
    }

    /// Run `work` against the store on the blocking pool.
    pub(crate) async fn with_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .unwrap_or_else(|_| Err(StoreError::Database("the store task failed".into())))
    }

    /// The account registered under `key`, if any.
    pub(crate) async fn account(&self, key: NameKey) -> Result<Option<AccountRecord>, StoreError> {
        match &self.shared {
            Some(cluster) => cluster.accounts().account(&key).await,
            None => self.with_store(move |store| store.account(&key)).await,
        }
    }

    /// The account `device` belongs to, if any.
    pub(crate) async fn account_of(
        &self,
        device: Fingerprint,
    ) -> Result<Option<AccountRecord>, StoreError> {
        match &self.shared {
            Some(cluster) => cluster.accounts().account_of(&device).await,
            None => {
                self.with_store(move |store| store.account_of(&device))
                    .await
            }
        }
    }

    /// Every account, sorted by lowercased name.
    pub(crate) async fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        match &self.shared {
            Some(cluster) => cluster.accounts().accounts().await,
            None => self.with_store(|store| store.accounts()).await,
        }
    }

    /// See [`ops::register`].
    pub(crate) async fn register(
        &self,
        name: String,
        device: Fingerprint,
        now_ms: u64,
    ) -> Result<Result<AccountRecord, Conflict>, StoreError> {
        match &self.shared {
            Some(cluster) => {
                let key = key_of(&name)?;
                cluster
                    .accounts()
                    .write(&[key], &[device], |t| {
                        ops::register(t, &name, device, now_ms)
                    })
                    .await
            }
            None => {
                self.with_store(move |store| store.register(&name, device, now_ms))
                    .await
            }
        }
    }

    /// See [`ops::add_device`].
    pub(crate) async fn add_device(
        &self,
        key: NameKey,
        fingerprint: Vec<u8>,
        label: String,
        max: usize,
        now_ms: u64,
    ) -> Result<Result<AccountRecord, Failure>, StoreError> {
        match &self.shared {
            Some(cluster) => {
                let devices: Vec<Fingerprint> =
                    Fingerprint::from_slice(&fingerprint).into_iter().collect();
                cluster
                    .accounts()
                    .write(&[key], &devices, |t| {
                        ops::add_device(t, &key, &fingerprint, &label, max, now_ms)
                    })
                    .await
            }
            None => {
                self.with_store(move |store| {
                    store.add_device(&key, &fingerprint, &label, max, now_ms)
                })
                .await
            }
        }
    }

    /// See [`ops::remove_device`].
    pub(crate) async fn remove_device(
        &self,
        key: NameKey,
        fingerprint: Vec<u8>,
    ) -> Result<Result<AccountRecord, Failure>, StoreError> {
        match &self.shared {
            Some(cluster) => {
                let devices: Vec<Fingerprint> =
                    Fingerprint::from_slice(&fingerprint).into_iter().collect();
                cluster
                    .accounts()
                    .write(&[key], &devices, |t| {
                        ops::remove_device(t, &key, &fingerprint)
                    })
                    .await
            }
            None => {
                self.with_store(move |store| store.remove_device(&key, &fingerprint))
                    .await
            }
        }
    }

    /// See [`ops::bind`].
    pub(crate) async fn bind(
        &self,
        name: String,
        device: Fingerprint,
        max: usize,
        now_ms: u64,
    ) -> Result<Result<(AccountRecord, bool), Failure>, StoreError> {
        match &self.shared {
            Some(cluster) => {
                let key = key_of(&name)?;
                cluster
                    .accounts()
                    .write(&[key], &[device], |t| {
                        ops::bind(t, &name, device, max, now_ms)
                    })
                    .await
            }
            None => {
                self.with_store(move |store| store.bind(&name, device, max, now_ms))
                    .await
            }
        }
    }

    /// See [`ops::unbind`].
    pub(crate) async fn unbind(
        &self,
        key: NameKey,
        device: Fingerprint,
    ) -> Result<Result<AccountRecord, Failure>, StoreError> {
        match &self.shared {
            Some(cluster) => {
                cluster
                    .accounts()
                    .write(&[key], &[device], |t| ops::unbind(t, &key, &device))
                    .await
            }
            None => {
                self.with_store(move |store| store.unbind(&key, &device))
                    .await
            }
        }
    }

    /// See [`ops::touch`]. Nothing happens if the account no longer has the device.
    pub(crate) async fn touch(
        &self,
        key: NameKey,
        device: Fingerprint,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        match &self.shared {
            Some(cluster) => cluster
                .accounts()
                .write(&[key], &[], |t| ops::touch(t, &key, &device, now_ms))
                .await
                .map(|_| ()),
            None => {
                self.with_store(move |store| store.touch(&key, &device, now_ms))
                    .await
            }
        }
    }

    /// Delete the account `key` and this server's mail for it; `None` if
    /// there was no such account.
    pub(crate) async fn delete(
        &self,
        key: NameKey,
        now_ms: u64,
    ) -> Result<Option<Deleted>, StoreError> {
        match &self.shared {
            Some(cluster) => {
                let deleted = cluster
                    .accounts()
                    .write(&[key], &[], |t| ops::delete(t, &key))
                    .await?;
                let Ok(account) = deleted else {
                    return Ok(None);
                };
                let told = self
                    .with_store(move |store| store.delete_mail_of(&key, now_ms))
                    .await?;
                Ok(Some(Deleted { account, told }))
            }
            None => {
                self.with_store(move |store| store.delete_account(&key, now_ms))
                    .await
            }
        }
    }
}

fn key_of(name: &str) -> Result<NameKey, StoreError> {
    NameKey::new(name).map_err(|source| StoreError::InvalidName {
        name: name.to_owned(),
        source,
    })
}
