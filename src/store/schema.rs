//! The database's tables, its schema version and its boot epoch.
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | `&str`: `schema_version`, `boot_epoch` | `u64` |
//! | `accounts` | the lowercased name (`NameKey`) | an account record (`record.rs`) |
//! | `devices` | the 32 fingerprint bytes | the owner's lowercased name |
//! | `mail` | (recipient's lowercased name, seq) | a mail record (`record.rs`) |
//! | `mailboxes` | the recipient's lowercased name | (next seq, messages, bytes) |
//! | `notices` | (sender's lowercased name, seq) | a notice record (`record.rs`) |
//! | `notice_boxes` | the sender's lowercased name | (next seq, notices) |
//! | `expiry` | (since ms, kind: 0 mail / 1 notice, name, seq) | `()` |
//!
//! `meta` also holds `mail_bytes`, the bytes of every mail record together.
//! A message's `seq` is allocated from its mailbox's `next seq` in the
//! transaction that stores it, so `mail` in key order is acceptance order;
//! notices likewise. `expiry` indexes every stored message (by the time it
//! was accepted) and every notice (by the time it was made), so the sweep
//! finds what has outlived the lifetime without reading anything else; it is
//! changed in the same transactions as the records it points to.
//! Schema history: 1 = accounts; 2 = 1 plus `mail` and `mailboxes`; 3 = 2
//! plus `notices`, `notice_boxes` and `expiry`.
//!
//! The schema version says which tables exist and what their bytes mean. A
//! build refuses a database whose version is newer than its own (it would
//! ignore tables it does not know, and, say, delete an account but keep its
//! mail) and upgrades an older one in the transaction that opens it.

use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::StoreError;

/// The schema version this build writes and understands.
pub(crate) const SCHEMA_VERSION: u32 = 3;

/// Small values that describe the database itself.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Accounts by lowercased name.
pub(crate) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// Which account each device fingerprint belongs to (its lowercased name).
pub(crate) const DEVICES: TableDefinition<[u8; 32], &str> = TableDefinition::new("devices");
/// Stored messages by (recipient's lowercased name, seq).
pub(crate) const MAIL: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("mail");
/// Per recipient: (next seq, messages, bytes).
pub(crate) const MAILBOXES: TableDefinition<&str, (u64, u64, u64)> =
    TableDefinition::new("mailboxes");
/// Kept late receipts by (sender's lowercased name, seq).
pub(crate) const NOTICES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("notices");
/// Per sender: (next seq, notices).
pub(crate) const NOTICE_BOXES: TableDefinition<&str, (u64, u64)> =
    TableDefinition::new("notice_boxes");
/// What expires, by the time its lifetime counts from:
/// (since ms, [`EXPIRES_MAIL`] or [`EXPIRES_NOTICE`], name, seq).
pub(crate) const EXPIRY: TableDefinition<(u64, u8, &str, u64), ()> = TableDefinition::new("expiry");
/// The `expiry` kind of a stored message (name: its recipient).
pub(crate) const EXPIRES_MAIL: u8 = 0;
/// The `expiry` kind of a kept notice (name: its sender).
pub(crate) const EXPIRES_NOTICE: u8 = 1;
/// The `meta` key of the bytes of all stored messages.
pub(crate) const MAIL_BYTES_KEY: &str = "mail_bytes";

/// The `meta` key of the schema version.
pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";
/// The `meta` key of the boot epoch: how many times the database was opened.
pub(crate) const BOOT_EPOCH_KEY: &str = "boot_epoch";

/// Check the schema of a just-opened database (initialising a new one,
/// upgrading an older one), create any missing table, and bump and commit
/// the boot epoch. Returns the new epoch. On an error nothing is committed.
pub(crate) fn prepare(db: &Database) -> Result<u32, StoreError> {
    let txn = db.begin_write()?;
    let upgraded_from = check_version(&txn)?;
    let epoch = {
        let mut meta = txn.open_table(META)?;
        let previous = meta.get(BOOT_EPOCH_KEY)?.map(|v| v.value()).unwrap_or(0);
        let epoch = previous
            .checked_add(1)
            .and_then(|epoch| u32::try_from(epoch).ok())
            .ok_or_else(|| StoreError::Corrupt(format!("the boot epoch {previous} cannot grow")))?;
        meta.insert(BOOT_EPOCH_KEY, u64::from(epoch))?;
        epoch
    };
    // Opening a table in a write transaction creates it, so that readers
    // always find every table.
    txn.open_table(ACCOUNTS)?;
    txn.open_table(DEVICES)?;
    txn.open_table(MAIL)?;
    txn.open_table(MAILBOXES)?;
    txn.open_table(NOTICES)?;
    txn.open_table(NOTICE_BOXES)?;
    txn.open_table(EXPIRY)?;
    if upgraded_from.is_some_and(|version| version < 3) {
        index_stored_mail(&txn)?;
    }
    txn.commit()?;
    Ok(epoch)
}

/// Refuse a newer schema, upgrade an older one, and mark a new database with
/// this build's version. Returns the version upgraded from, if any.
fn check_version(txn: &WriteTransaction) -> Result<Option<u32>, StoreError> {
    let others: Vec<String> = txn
        .list_tables()?
        .map(|table| table.name().to_owned())
        .filter(|name| name != META.name())
        .collect();
    let mut meta = txn.open_table(META)?;
    let found = meta.get(SCHEMA_VERSION_KEY)?.map(|v| v.value());
    match found {
        None if others.is_empty() => {
            meta.insert(SCHEMA_VERSION_KEY, u64::from(SCHEMA_VERSION))?;
            Ok(None)
        }
        None => Err(StoreError::Corrupt(format!(
            "no schema version, but the tables {others:?}"
        ))),
        Some(0) => Err(StoreError::Corrupt("schema version 0".into())),
        Some(found) if found > u64::from(SCHEMA_VERSION) => Err(StoreError::NewerSchema {
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: SCHEMA_VERSION,
        }),
        // Version 1 had no mail, version 2 no notices or expiry index: the
        // missing tables are created (and the index built) by `prepare`, in
        // this same transaction, and the version says so.
        Some(old @ (1 | 2)) => {
            meta.insert(SCHEMA_VERSION_KEY, u64::from(SCHEMA_VERSION))?;
            if old == 1 {
                meta.insert(MAIL_BYTES_KEY, 0)?;
            }
            Ok(Some(old as u32))
        }
        Some(_) => Ok(None),
    }
}

/// Index every stored message in `expiry` (an upgrade from schema 2).
fn index_stored_mail(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mail = txn.open_table(MAIL)?;
    let mut expiry = txn.open_table(EXPIRY)?;
    for entry in mail.iter()? {
        let (key, value) = entry?;
        let (to, seq) = key.value();
        let record = super::record::decode_mail(value.value())
            .map_err(|e| StoreError::Corrupt(format!("the message {to}/{seq}: {e}")))?;
        expiry.insert((record.sent_at_ms, EXPIRES_MAIL, to, seq), ())?;
    }
    Ok(())
}
