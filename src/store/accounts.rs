//! The account operations of protocol v2: registration on first use, device
//! management, and the operator's commands.
//!
//! Each write runs in one write transaction that reads what it decides on and
//! writes both the `accounts` record and the `devices` index, so the two
//! never disagree and two concurrent calls cannot both take a name or a key.
//! A refused operation (a [`Conflict`] or a [`Failure`]) commits nothing.
//!
//! The decisions themselves (the contract's order of failures) are written
//! once, over [`AccountTables`]: the store's redb tables here, and a
//! cluster's shared key-value bucket (`cluster/accounts.rs`) in cluster mode.

use redb::{ReadableTable, Table};

use crate::protocol::{Failure, Fingerprint, NameKey};

use super::record::{decode_account, encode_account};
use super::schema::{ACCOUNTS, DEVICES};
use super::{AccountRecord, Conflict, DeviceRecord, Store, StoreError};

/// The label of an account's first device, whoever registered it.
pub(crate) const FIRST_DEVICE_LABEL: &str = "first device";
/// The label of a device the operator added to an existing account.
pub(crate) const OPERATOR_DEVICE_LABEL: &str = "added by the operator";
/// The longest device label, in bytes.
pub(crate) const MAX_LABEL_BYTES: usize = 64;

/// What deleting an account removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deleted {
    /// The account as it was.
    pub(crate) account: AccountRecord,
    /// Who is owed an `Expired` receipt for its dropped mail.
    pub(crate) told: super::mail::Told,
}

/// The two tables an account operation reads and writes: accounts by
/// lowercased name, and the index of device keys to their account.
pub(crate) trait AccountTables {
    /// The account registered under `name`, if any.
    fn load(&self, name: &NameKey) -> Result<Option<AccountRecord>, StoreError>;
    /// The account the index says `fingerprint` belongs to.
    fn owner_of(&self, fingerprint: &Fingerprint) -> Result<Option<NameKey>, StoreError>;
    /// Write `account` under `name`.
    fn save(&mut self, name: &NameKey, account: &AccountRecord) -> Result<(), StoreError>;
    /// Remove the account `name`.
    fn remove(&mut self, name: &NameKey) -> Result<(), StoreError>;
    /// Index `fingerprint` to `name`.
    fn index(&mut self, fingerprint: &Fingerprint, name: &NameKey) -> Result<(), StoreError>;
    /// Remove `fingerprint` from the index.
    fn unindex(&mut self, fingerprint: &Fingerprint) -> Result<(), StoreError>;
}

/// The store's own account tables, in one write transaction.
struct RedbTables<'txn> {
    accounts: Table<'txn, &'static str, &'static [u8]>,
    devices: Table<'txn, [u8; 32], &'static str>,
}

impl<'txn> RedbTables<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<Self, StoreError> {
        Ok(RedbTables {
            accounts: txn.open_table(ACCOUNTS)?,
            devices: txn.open_table(DEVICES)?,
        })
    }
}

impl AccountTables for RedbTables<'_> {
    fn load(&self, name: &NameKey) -> Result<Option<AccountRecord>, StoreError> {
        load(&self.accounts, name)
    }
    fn owner_of(&self, fingerprint: &Fingerprint) -> Result<Option<NameKey>, StoreError> {
        owner_of(&self.devices, fingerprint)
    }
    fn save(&mut self, name: &NameKey, account: &AccountRecord) -> Result<(), StoreError> {
        self.accounts
            .insert(name.as_str(), encode_account(account).as_slice())?;
        Ok(())
    }
    fn remove(&mut self, name: &NameKey) -> Result<(), StoreError> {
        self.accounts.remove(name.as_str())?;
        Ok(())
    }
    fn index(&mut self, fingerprint: &Fingerprint, name: &NameKey) -> Result<(), StoreError> {
        self.devices.insert(fingerprint.as_bytes(), name.as_str())?;
        Ok(())
    }
    fn unindex(&mut self, fingerprint: &Fingerprint) -> Result<(), StoreError> {
        self.devices.remove(fingerprint.as_bytes())?;
        Ok(())
    }
}

impl Store {
    /// The account registered under `name`, if any.
    pub(crate) fn account(&self, name: &NameKey) -> Result<Option<AccountRecord>, StoreError> {
        self.read(|txn| load(&txn.open_table(ACCOUNTS)?, name))
    }

    /// The account `fingerprint` belongs to, if any.
    pub(crate) fn account_of(
        &self,
        fingerprint: &Fingerprint,
    ) -> Result<Option<AccountRecord>, StoreError> {
        self.read(|txn| {
            let Some(owner) = owner_of(&txn.open_table(DEVICES)?, fingerprint)? else {
                return Ok(None);
            };
            let account = load(&txn.open_table(ACCOUNTS)?, &owner)?;
            match account {
                Some(account) if account.has_device(fingerprint) => Ok(Some(account)),
                _ => Err(dangling(fingerprint, &owner)),
            }
        })
    }

    /// See [`register`].
    pub(crate) fn register(
        &self,
        name: &str,
        fingerprint: Fingerprint,
        now_ms: u64,
    ) -> Result<Result<AccountRecord, Conflict>, StoreError> {
        self.write(|txn| register(&mut RedbTables::open(txn)?, name, fingerprint, now_ms))
    }

    /// See [`add_device`].
    pub(crate) fn add_device(
        &self,
        name: &NameKey,
        fingerprint: &[u8],
        label: &str,
        max_devices: usize,
        now_ms: u64,
    ) -> Result<Result<AccountRecord, Failure>, StoreError> {
        self.write(|txn| {
            add_device(
                &mut RedbTables::open(txn)?,
                name,
                fingerprint,
                label,
                max_devices,
                now_ms,
            )
        })
    }

    /// See [`remove_device`].
    pub(crate) fn remove_device(
        &self,
        name: &NameKey,
        fingerprint: &[u8],
    ) -> Result<Result<AccountRecord, Failure>, StoreError> {
        self.write(|txn| remove_device(&mut RedbTables::open(txn)?, name, fingerprint))
    }

    /// See [`bind`].
    pub(crate) fn bind(
        &self,
        name: &str,
        fingerprint: Fingerprint,
        max_devices: usize,
        now_ms: u64,
    ) -> Result<Result<(AccountRecord, bool), Failure>, StoreError> {
        self.write(|txn| {
            bind(
                &mut RedbTables::open(txn)?,
                name,
                fingerprint,
                max_devices,
                now_ms,
            )
        })
    }

    /// See [`unbind`].
    pub(crate) fn unbind(
        &self,
        name: &NameKey,
        fingerprint: &Fingerprint,
    ) -> Result<Result<AccountRecord, Failure>, StoreError> {
        self.write(|txn| unbind(&mut RedbTables::open(txn)?, name, fingerprint))
    }

    /// See [`touch`].
    pub(crate) fn touch(
        &self,
        name: &NameKey,
        fingerprint: &Fingerprint,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.write(|txn| touch(&mut RedbTables::open(txn)?, name, fingerprint, now_ms))
            .map(|_| ())
    }

    /// Delete the account `name`: the name and all its keys are free again.
    /// Returns the account as it was, or `None` if there was none.
    /// Its mailbox is deleted in the same transaction.
    ///
    /// The mailbox's messages are dropped unread: their senders get an
    /// `Expired` notice made at `now_ms`; the account's own notices go too.
    pub(crate) fn delete_account(
        &self,
        name: &NameKey,
        now_ms: u64,
    ) -> Result<Option<Deleted>, StoreError> {
        self.write(|txn| {
            let Ok(account) = delete(&mut RedbTables::open(txn)?, name)? else {
                return Ok(Err(()));
            };
            let told = delete_mail_in(txn, name, now_ms)?;
            Ok(Ok(Deleted { account, told }))
        })
        .map(Result::ok)
    }

    /// Drop the mailbox and the kept notices of `name` (an account deleted
    /// elsewhere: a cluster's shared accounts): its messages' senders get
    /// an `Expired` notice made at `now_ms`. Returns who is to be told.
    pub(crate) fn delete_mail_of(
        &self,
        name: &NameKey,
        now_ms: u64,
    ) -> Result<super::mail::Told, StoreError> {
        self.write(|txn| delete_mail_in(txn, name, now_ms).map(Ok::<_, ()>))
            .map(|told| told.unwrap_or_default())
    }

    /// Every account, sorted by lowercased name.
    pub(crate) fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(ACCOUNTS)?;
            let mut all = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                all.push(decode(key.value(), value.value())?);
            }
            Ok(all)
        })
    }
}

/// Delete `name`'s mailbox and notices in `txn`.
fn delete_mail_in(
    txn: &redb::WriteTransaction,
    name: &NameKey,
    now_ms: u64,
) -> Result<super::mail::Told, StoreError> {
    let mut tables = super::mail::MailTables::open(txn)?;
    let mut told = super::mail::Told::default();
    tables.delete_mailbox(name, now_ms, &mut told)?;
    tables.delete_notices(name)?;
    tables.finish()?;
    Ok(told)
}

/// Registration on first use: register `name` (kept as given, for display)
/// to `fingerprint`, if the name is free (compared case-insensitively) and
/// the key is on no account; checked in that order. The first device's
/// label is [`FIRST_DEVICE_LABEL`], and it counts as seen at `now_ms`
/// (registration happens at the Hello of its first session).
pub(crate) fn register(
    tables: &mut impl AccountTables,
    name: &str,
    fingerprint: Fingerprint,
    now_ms: u64,
) -> Result<Result<AccountRecord, Conflict>, StoreError> {
    let key = name_key(name)?;
    if let Some(existing) = tables.load(&key)? {
        return Ok(Err(Conflict::NameRegistered(existing)));
    }
    if let Some(owner) = tables.owner_of(&fingerprint)? {
        let account = tables
            .load(&owner)?
            .filter(|account| account.has_device(&fingerprint))
            .ok_or_else(|| dangling(&fingerprint, &owner))?;
        return Ok(Err(Conflict::KeyInUse {
            account: account.name,
        }));
    }
    let account = AccountRecord {
        name: name.to_owned(),
        created_ms: now_ms,
        devices: vec![DeviceRecord {
            fingerprint,
            label: FIRST_DEVICE_LABEL.to_owned(),
            added_ms: now_ms,
            last_seen_ms: now_ms,
        }],
    };
    tables.index(&fingerprint, &key)?;
    tables.save(&key, &account)?;
    Ok(Ok(account))
}

/// `Request::Devices(Add)` for the account `name`: bind `fingerprint` to it
/// with `label`, or relabel it if it is already on this account (even at
/// the maximum). Failures, the first that applies in the contract's order:
/// - `NotRegistered`: there is no such account (any more);
/// - `TooMany`: the account has `max_devices` and this fingerprint is not on it;
/// - `InUse`: the fingerprint is on another account;
/// - `Invalid`: the fingerprint is not 32 bytes, or the label is empty or
///   over [`MAX_LABEL_BYTES`].
///
/// Returns the account after the change.
pub(crate) fn add_device(
    tables: &mut impl AccountTables,
    name: &NameKey,
    fingerprint: &[u8],
    label: &str,
    max_devices: usize,
    now_ms: u64,
) -> Result<Result<AccountRecord, Failure>, StoreError> {
    let Some(mut account) = tables.load(name)? else {
        return Ok(Err(Failure::NotRegistered));
    };
    let fingerprint = Fingerprint::from_slice(fingerprint);
    let (position, owner) = locate(tables, name, &account, fingerprint.as_ref())?;
    if position.is_none() && account.devices.len() >= max_devices {
        return Ok(Err(Failure::TooMany));
    }
    if owner.is_some_and(|owner| owner != *name) {
        return Ok(Err(Failure::InUse));
    }
    // UnknownDevice and LastDevice are about Remove.
    let Some(fingerprint) = fingerprint.filter(|_| valid_label(label)) else {
        return Ok(Err(Failure::Invalid));
    };
    match position {
        Some(index) => label.clone_into(&mut account.devices[index].label),
        None => {
            account.devices.push(DeviceRecord {
                fingerprint,
                label: label.to_owned(),
                added_ms: now_ms,
                last_seen_ms: 0,
            });
            tables.index(&fingerprint, name)?;
        }
    }
    tables.save(name, &account)?;
    Ok(Ok(account))
}

/// `Request::Devices(Remove)` for the account `name`. Failures, the first
/// that applies in the contract's order:
/// - `NotRegistered`: there is no such account (any more);
/// - `InUse`: the fingerprint belongs to another account;
/// - `UnknownDevice`: it is not on this account (a fingerprint that is not
///   32 bytes is on no account, so this answers it: `Invalid`, which comes
///   later in the order, is never reached);
/// - `LastDevice`: it is the account's only device.
///
/// Returns the account after the change.
pub(crate) fn remove_device(
    tables: &mut impl AccountTables,
    name: &NameKey,
    fingerprint: &[u8],
) -> Result<Result<AccountRecord, Failure>, StoreError> {
    let Some(mut account) = tables.load(name)? else {
        return Ok(Err(Failure::NotRegistered));
    };
    let fingerprint = Fingerprint::from_slice(fingerprint);
    let (position, owner) = locate(tables, name, &account, fingerprint.as_ref())?;
    // TooMany is about Add.
    if owner.is_some_and(|owner| owner != *name) {
        return Ok(Err(Failure::InUse));
    }
    let (Some(index), Some(fingerprint)) = (position, fingerprint) else {
        return Ok(Err(Failure::UnknownDevice));
    };
    if account.devices.len() == 1 {
        return Ok(Err(Failure::LastDevice));
    }
    account.devices.remove(index);
    tables.save(name, &account)?;
    tables.unindex(&fingerprint)?;
    Ok(Ok(account))
}

/// The operator's `account add NAME FP`: create the account `name` with
/// this first device (label [`FIRST_DEVICE_LABEL`], never seen), or add
/// the device to the existing account (label [`OPERATOR_DEVICE_LABEL`]).
/// Failures as for [`add_device`]: `TooMany` (the account has
/// `max_devices` and not this fingerprint), then `InUse` (it is on another
/// account). A fingerprint already on the account is left as it is (its
/// label is not overwritten). Returns the account and whether it was
/// created.
pub(crate) fn bind(
    tables: &mut impl AccountTables,
    name: &str,
    fingerprint: Fingerprint,
    max_devices: usize,
    now_ms: u64,
) -> Result<Result<(AccountRecord, bool), Failure>, StoreError> {
    let key = name_key(name)?;
    let device = |label: &str| DeviceRecord {
        fingerprint,
        label: label.to_owned(),
        added_ms: now_ms,
        last_seen_ms: 0,
    };
    let Some(mut account) = tables.load(&key)? else {
        if let Some(owner) = tables.owner_of(&fingerprint)? {
            if owner == key {
                return Err(dangling(&fingerprint, &owner));
            }
            return Ok(Err(Failure::InUse));
        }
        let account = AccountRecord {
            name: name.to_owned(),
            created_ms: now_ms,
            devices: vec![device(FIRST_DEVICE_LABEL)],
        };
        tables.index(&fingerprint, &key)?;
        tables.save(&key, &account)?;
        return Ok(Ok((account, true)));
    };
    let (position, owner) = locate(tables, &key, &account, Some(&fingerprint))?;
    if position.is_none() && account.devices.len() >= max_devices {
        return Ok(Err(Failure::TooMany));
    }
    if owner.is_some_and(|owner| owner != key) {
        return Ok(Err(Failure::InUse));
    }
    if position.is_none() {
        account.devices.push(device(OPERATOR_DEVICE_LABEL));
        tables.index(&fingerprint, &key)?;
        tables.save(&key, &account)?;
    }
    Ok(Ok((account, false)))
}

/// The operator's `account remove-device NAME FP`: like [`remove_device`],
/// but it may remove the account's last device. The account then has no
/// device and stays registered: nobody can sign in as it (nor register the
/// name) until the operator binds a key to it or deletes it. Failures:
/// `NotRegistered` (no such account), `UnknownDevice` (the fingerprint is
/// not on this account, wherever else it is). Returns the account after
/// the change.
pub(crate) fn unbind(
    tables: &mut impl AccountTables,
    name: &NameKey,
    fingerprint: &Fingerprint,
) -> Result<Result<AccountRecord, Failure>, StoreError> {
    let Some(mut account) = tables.load(name)? else {
        return Ok(Err(Failure::NotRegistered));
    };
    let (position, _) = locate(tables, name, &account, Some(fingerprint))?;
    let Some(index) = position else {
        return Ok(Err(Failure::UnknownDevice));
    };
    account.devices.remove(index);
    tables.save(name, &account)?;
    tables.unindex(fingerprint)?;
    Ok(Ok(account))
}

/// Record that the device `fingerprint` of the account `name` started a
/// session at `now_ms`. Nothing happens (an `Err(())`) if the account no
/// longer has that device (an operator may have just removed it).
pub(crate) fn touch(
    tables: &mut impl AccountTables,
    name: &NameKey,
    fingerprint: &Fingerprint,
    now_ms: u64,
) -> Result<Result<(), ()>, StoreError> {
    let Some(mut account) = tables.load(name)? else {
        return Ok(Err(()));
    };
    let Some(index) = account.position(fingerprint) else {
        return Ok(Err(()));
    };
    account.devices[index].last_seen_ms = now_ms;
    tables.save(name, &account)?;
    Ok(Ok(()))
}

/// Delete the account `name` and free its keys; `Err(())` if there is none.
pub(crate) fn delete(
    tables: &mut impl AccountTables,
    name: &NameKey,
) -> Result<Result<AccountRecord, ()>, StoreError> {
    let Some(account) = tables.load(name)? else {
        return Ok(Err(()));
    };
    for device in &account.devices {
        match tables.owner_of(&device.fingerprint)? {
            Some(owner) if owner == *name => {}
            _ => return Err(dangling(&device.fingerprint, name)),
        }
    }
    tables.remove(name)?;
    for device in &account.devices {
        tables.unindex(&device.fingerprint)?;
    }
    Ok(Ok(account))
}

/// The key of a name handed to the store.
fn name_key(name: &str) -> Result<NameKey, StoreError> {
    NameKey::new(name).map_err(|source| StoreError::InvalidName {
        name: name.to_owned(),
        source,
    })
}

/// Whether `label` is 1 to 64 bytes.
fn valid_label(label: &str) -> bool {
    (1..=MAX_LABEL_BYTES).contains(&label.len())
}

/// The account stored under `name`.
fn load(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &NameKey,
) -> Result<Option<AccountRecord>, StoreError> {
    match table.get(name.as_str())? {
        Some(value) => decode(name.as_str(), value.value()).map(Some),
        None => Ok(None),
    }
}

/// Decode the record stored under `key`, and check that it is that name's.
pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<AccountRecord, StoreError> {
    let account = decode_account(bytes)
        .map_err(|e| StoreError::Corrupt(format!("the account record {key:?}: {e}")))?;
    match NameKey::new(&account.name) {
        Ok(name) if name.as_str() == key => Ok(account),
        _ => Err(StoreError::Corrupt(format!(
            "the account record {key:?} holds the name {:?}",
            account.name
        ))),
    }
}

/// The account the `devices` index says `fingerprint` belongs to.
fn owner_of(
    table: &impl ReadableTable<[u8; 32], &'static str>,
    fingerprint: &Fingerprint,
) -> Result<Option<NameKey>, StoreError> {
    let Some(value) = table.get(fingerprint.as_bytes())? else {
        return Ok(None);
    };
    let owner = value.value();
    NameKey::new(owner)
        .ok()
        .filter(|key| key.as_str() == owner)
        .map(Some)
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the device {fingerprint} is indexed to {owner:?}, not a lowercased name"
            ))
        })
}

/// Where `fingerprint` is on `account` (the account of `name`), and which
/// account the index says it belongs to; an error if the two disagree.
fn locate(
    tables: &impl AccountTables,
    name: &NameKey,
    account: &AccountRecord,
    fingerprint: Option<&Fingerprint>,
) -> Result<(Option<usize>, Option<NameKey>), StoreError> {
    let Some(fingerprint) = fingerprint else {
        return Ok((None, None));
    };
    let position = account.position(fingerprint);
    let owner = tables.owner_of(fingerprint)?;
    if position.is_some() != (owner == Some(*name)) {
        return Err(dangling(fingerprint, owner.as_ref().unwrap_or(name)));
    }
    Ok((position, owner))
}

/// The error for a `devices` entry and an account record that disagree.
fn dangling(fingerprint: &Fingerprint, name: &NameKey) -> StoreError {
    StoreError::Corrupt(format!(
        "the device index and the account {:?} disagree about {fingerprint}",
        name.as_str()
    ))
}

#[cfg(test)]
mod tests;
