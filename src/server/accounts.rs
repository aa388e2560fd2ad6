//! Accounts: names bound to device keys. Decides what a Hello may do with a
//! name (protocol v2's outcome table), and carries out `Devices` requests and
//! the operator's account commands, against the durable [`Store`].
//!
//! Every store call runs on tokio's blocking pool: each write is a committed
//! (fsync'd) transaction, and nothing here is on the per-message path.

use super::account_book::AccountBook;
use super::config::AccountsMode;
use super::presence::Presence;
use super::stored::Mail;
use crate::clock::unix_ms;
use crate::protocol::{self, DeviceOp, Failure, Fingerprint, NameKey, Version};
use crate::store::{AccountRecord, Conflict, StoreError};

/// Who a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Principal {
    /// No account: v1's rules, no devices, nothing stored.
    Guest,
    /// The account named `key`, on the device whose key is `device`.
    Member {
        /// The account's name key.
        key: NameKey,
        /// The key this connection proved.
        device: Fingerprint,
    },
}

/// What an accepted Hello did to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// A guest (no certificate, a v1 connection, or accounts off).
    Guest,
    /// This Hello registered the name to `device`.
    Registered(Fingerprint),
    /// The name was already registered to `device`.
    Returning(Fingerprint),
}

impl Admitted {
    /// The session's principal for the name `key`.
    pub(crate) fn principal(self, key: NameKey) -> Principal {
        match self {
            Admitted::Guest => Principal::Guest,
            Admitted::Registered(device) | Admitted::Returning(device) => {
                Principal::Member { key, device }
            }
        }
    }

    /// The account state as `Reply::Session` reports it.
    pub(crate) fn account(self) -> protocol::Account {
        match self {
            Admitted::Guest => protocol::Account::Guest,
            Admitted::Registered(_) => protocol::Account::Registered,
            Admitted::Returning(_) => protocol::Account::Returning,
        }
    }
}

/// Why the accounts refuse a Hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The name is registered to other keys, or the key belongs to another account.
    KeyMismatch(String),
    /// A v1 Hello (no key) for a registered name: v1's NameTaken.
    Registered,
    /// A guest holds the (free) name.
    GuestHolds,
    /// This server admits operator-made accounts only.
    AccountRequired(String),
    /// This server admits accounts only, which v1 clients cannot have.
    NeedsVersion2,
    /// The accounts could not be read or written.
    Unavailable,
}

/// The accounts of one server (or of its cluster). Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Accounts {
    book: AccountBook,
    mode: AccountsMode,
    max_devices: usize,
}

impl Accounts {
    /// Accounts kept in `book`, admitted as `mode` says.
    pub(crate) fn new(book: AccountBook, mode: AccountsMode, max_devices: usize) -> Self {
        Accounts {
            book,
            mode,
            max_devices: max_devices.max(5),
        }
    }

    /// The outcome of a Hello for the valid name `key` (`name` as typed) on a
    /// connection of `version` that proved `device` (`None`: no certificate),
    /// in the order of the contract's table. A guest outcome still has to
    /// claim the name; see [`Accounts::still_free`].
    pub(crate) async fn admit(
        &self,
        version: Version,
        key: NameKey,
        name: &str,
        device: Option<Fingerprint>,
        presence: &Presence,
    ) -> Result<(Admitted, String), Refusal> {
        let typed = || name.to_owned();
        if self.mode == AccountsMode::Off {
            return Ok((Admitted::Guest, typed()));
        }
        if version == Version::V1 {
            if self.mode == AccountsMode::Closed {
                return Err(Refusal::NeedsVersion2);
            }
            return match self.lookup(self.book.account(key)).await? {
                Some(_) => Err(Refusal::Registered),
                None => Ok((Admitted::Guest, typed())),
            };
        }
        if let Some(account) = self.lookup(self.book.account(key)).await? {
            return match device {
                Some(device) if has_device(&account, &device) => {
                    self.touch(key, device).await;
                    // Shown as first registered, whatever the letter case typed now.
                    Ok((Admitted::Returning(device), account.name))
                }
                Some(_) => Err(Refusal::KeyMismatch(format!(
                    "the name {} is registered to other device keys",
                    account.name
                ))),
                None => Err(Refusal::KeyMismatch(format!(
                    "the name {} is registered; connect with one of its devices",
                    account.name
                ))),
            };
        }
        if presence.connected(&key).is_some() {
            return Err(Refusal::GuestHolds);
        }
        let Some(device) = device else {
            return match self.mode {
                AccountsMode::Closed => Err(Refusal::AccountRequired(
                    "this server admits registered accounts only".into(),
                )),
                _ => Ok((Admitted::Guest, typed())),
            };
        };
        if let Some(other) = self.lookup(self.book.account_of(device)).await? {
            return Err(Refusal::KeyMismatch(format!(
                "this device's key belongs to the account {}",
                other.name
            )));
        }
        if self.mode == AccountsMode::Closed {
            return Err(Refusal::AccountRequired(
                "this server admits accounts its operator created only".into(),
            ));
        }
        let registered = self
            .lookup(self.book.register(name.to_owned(), device, unix_ms()))
            .await?;
        match registered {
            Ok(account) => {
                self.touch(key, device).await;
                Ok((Admitted::Registered(device), account.name))
            }
            // Someone registered the name or the key a moment ago.
            Err(Conflict::NameRegistered(account)) => Err(Refusal::KeyMismatch(format!(
                "the name {} is registered to other device keys",
                account.name
            ))),
            Err(Conflict::KeyInUse { account }) => Err(Refusal::KeyMismatch(format!(
                "this device's key belongs to the account {account}"
            ))),
        }
    }

    /// For a guest that has just claimed `key`: whether the name is still
    /// unregistered (an account may have been registered in between; the
    /// guest must then give the name back).
    pub(crate) async fn still_free(&self, key: NameKey) -> Result<(), Refusal> {
        if self.mode == AccountsMode::Off {
            return Ok(());
        }
        match self.lookup(self.book.account(key)).await? {
            None => Ok(()),
            Some(_) => Err(Refusal::Registered),
        }
    }

    /// Carry out a `Devices` request of `principal`. Returns the account's
    /// devices after it (marking `principal`'s own), or why not; the outer
    /// error is a store that failed, for which the protocol has no answer.
    pub(crate) async fn devices(
        &self,
        principal: Principal,
        op: DeviceOp,
    ) -> Result<Result<Vec<protocol::Device>, (Failure, String)>, StoreError> {
        let Principal::Member { key, device } = principal else {
            return Ok(Err((
                Failure::NotRegistered,
                failure_detail(Failure::NotRegistered, 0),
            )));
        };
        let max = self.max_devices;
        let result = match op {
            DeviceOp::List => self
                .book
                .account(key)
                .await
                .map(|account| account.ok_or(Failure::NotRegistered)),
            DeviceOp::Add { fingerprint, label } => {
                self.book
                    .add_device(key, fingerprint, label, max, unix_ms())
                    .await
            }
            DeviceOp::Remove { fingerprint } => self.book.remove_device(key, fingerprint).await,
        };
        Ok(match result? {
            Ok(account) => Ok(devices_of(&account, Some(&device))),
            Err(failure) => Err((failure, failure_detail(failure, max))),
        })
    }

    /// Record that `device` of `key` started a session now. Best effort: a
    /// failed write only loses the "last seen" time.
    async fn touch(&self, key: NameKey, device: Fingerprint) {
        if let Err(e) = self.book.touch(key, device, unix_ms()).await {
            tracing::warn!("could not record the last-seen time: {e}");
        }
    }

    /// A store read or write during a Hello; a failure refuses the Hello.
    async fn lookup<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, Refusal> {
        work.await.map_err(|e| {
            tracing::error!("accounts unavailable: {e}");
            Refusal::Unavailable
        })
    }

    /// The operator's handle on the accounts.
    pub(crate) fn operator(&self, presence: Presence, mail: Option<Mail>) -> Operator {
        Operator {
            accounts: self.clone(),
            presence,
            mail,
        }
    }
}

/// Whether `device` is one of `account`'s.
fn has_device(account: &AccountRecord, device: &Fingerprint) -> bool {
    account.devices.iter().any(|d| &d.fingerprint == device)
}

/// `account`'s devices as `Reply::Devices` lists them, `current` marked.
fn devices_of(account: &AccountRecord, current: Option<&Fingerprint>) -> Vec<protocol::Device> {
    account
        .devices
        .iter()
        .map(|d| protocol::Device {
            fingerprint: d.fingerprint.as_bytes().to_vec(),
            label: d.label.clone(),
            added_ms: d.added_ms,
            last_seen_ms: d.last_seen_ms,
            current: current == Some(&d.fingerprint),
        })
        .collect()
}

/// The human detail of a `Failed` reply.
fn failure_detail(failure: Failure, max_devices: usize) -> String {
    match failure {
        Failure::NotRegistered => "guests have no devices".into(),
        Failure::TooMany => format!("an account has at most {max_devices} devices"),
        Failure::InUse => "that key belongs to another account".into(),
        Failure::UnknownDevice => "the account has no such device".into(),
        Failure::LastDevice => "that is the account's only device".into(),
        Failure::Invalid => "a fingerprint is 32 bytes, and a label 1 to 64 bytes".into(),
    }
}

/// What the operator can do to accounts, from the console.
#[derive(Debug, Clone)]
pub struct Operator {
    accounts: Accounts,
    presence: Presence,
    /// The server's mail, unless it keeps none (`--no-store`).
    mail: Option<Mail>,
}

/// How long the operator's deletion waits for a guest to take its receipt.
const GUEST_RECEIPT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// What the store holds for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Waiting {
    /// Stored messages waiting for it.
    pub(crate) messages: u64,
    /// Their bytes, as stored (unknown for a cluster's shared mail).
    pub(crate) bytes: Option<u64>,
    /// Late receipts kept for it as a sender.
    pub(crate) receipts: u64,
}

impl Operator {
    /// What the store holds for `key`; `None` when the server keeps no mail.
    pub(crate) async fn waiting(&self, key: NameKey) -> Result<Option<Waiting>, StoreError> {
        let Some(mail) = &self.mail else {
            return Ok(None);
        };
        if let Some(stream) = mail.shared.as_ref().and_then(|cluster| cluster.mail()) {
            let unavailable =
                |e: crate::cluster::ClusterError| StoreError::Unavailable(e.to_string());
            return Ok(Some(Waiting {
                messages: stream.count(&key).await.map_err(unavailable)?,
                bytes: None,
                receipts: stream.count_notices(&key).await.map_err(unavailable)?,
            }));
        }
        self.accounts
            .book
            .with_store(move |store| {
                let mailbox = store.mailbox_count(&key)?;
                Ok(Some(Waiting {
                    messages: mailbox.messages,
                    bytes: Some(mailbox.bytes),
                    receipts: store.notice_count(&key)?,
                }))
            })
            .await
    }

    /// Every account, sorted by name.
    pub(crate) async fn list(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.accounts.book.accounts().await
    }

    /// One account.
    pub(crate) async fn show(&self, key: NameKey) -> Result<Option<AccountRecord>, StoreError> {
        self.accounts.book.account(key).await
    }

    /// Create the account `name` with `device`, or add `device` to it.
    /// Returns the account and whether it was created.
    pub(crate) async fn bind(
        &self,
        name: &str,
        device: Fingerprint,
    ) -> Result<Result<(AccountRecord, bool), Failure>, StoreError> {
        let (name, max) = (name.to_owned(), self.accounts.max_devices);
        self.accounts.book.bind(name, device, max, unix_ms()).await
    }

    /// Unbind `device` from the account `key`; its open connection is closed
    /// with REPLACED.
    pub(crate) async fn unbind(
        &self,
        key: NameKey,
        device: Fingerprint,
    ) -> Result<Result<AccountRecord, Failure>, StoreError> {
        let result = self.accounts.book.unbind(key, device).await?;
        if result.is_ok() {
            self.disconnect_if(key, |mailbox| mailbox.device == Some(device))
                .await;
        }
        Ok(result)
    }

    /// Delete the account `key` (its name and keys become free); its open
    /// connection is closed with REPLACED.
    pub(crate) async fn delete(&self, key: NameKey) -> Result<Option<AccountRecord>, StoreError> {
        let deleted = self.accounts.book.delete(key, unix_ms()).await?;
        let Some(deleted) = deleted else {
            return Ok(None);
        };
        self.disconnect_if(key, |mailbox| mailbox.is_account())
            .await;
        // The senders of its dropped mail are owed an Expired receipt.
        if let Some(mail) = &self.mail {
            super::notices::tell(&self.presence, mail, &deleted.told, GUEST_RECEIPT_DEADLINE);
        }
        Ok(Some(deleted.account))
    }

    /// Close the connection holding `key` with REPLACED if `test` says so.
    /// On another node of a cluster, it is closed whichever device it is.
    async fn disconnect_if(&self, key: NameKey, test: impl Fn(&super::mailbox::Mailbox) -> bool) {
        match (self.presence.connected(&key), self.presence.remote()) {
            (Some(mailbox), _) => {
                if test(&mailbox) {
                    mailbox.disconnect(protocol::CloseCode::Replaced, "this device was removed");
                }
            }
            (None, Some(remote)) => {
                let said = remote.kick(key).await;
                tracing::debug!("{said}");
            }
            (None, None) => {}
        }
    }

    /// This node's part in its cluster, if it is in one.
    pub(crate) fn remote(&self) -> Option<&std::sync::Arc<super::remote::Remote>> {
        self.presence.remote()
    }

    /// How many users are connected to this server.
    pub(crate) fn connected_here(&self) -> usize {
        self.presence.connected_here()
    }

    /// Disconnect `key` from this server (REPLACED, so its client does not
    /// come straight back); false if it is not connected here.
    pub(crate) fn kick_here(&self, key: NameKey) -> bool {
        super::remote::kick_local(self.presence.local_registry(), key, super::remote::KICKED)
    }

    /// Whether `key` is online now.
    pub(crate) fn is_online(&self, key: &NameKey) -> bool {
        self.presence.connected(key).is_some()
    }
}
