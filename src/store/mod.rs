//! The server's durable database: one redb file in the data directory, holding
//! the accounts of protocol v2 and the mailboxes of offline accounts.
//!
//! - `schema`: the tables, the schema version and the boot epoch, checked and
//!   bumped by [`Store::open`].
//! - `record`: the on-disk encoding of an account, with its own version byte.
//! - `accounts`: the account operations, each in one write transaction that
//!   keeps the `accounts` table and its `devices` index consistent.
//! - `mail`: the mailboxes (enqueue in batches, peek, ack, counts).
//! - `notices`: late receipts kept for their senders.
//! - `expiry`: the sweep that drops messages and notices past their lifetime.
//! - `writer`: the one thread that writes mail, with group commit.
//!
//! Every operation is synchronous (the server calls them from
//! `spawn_blocking`), and every write commits with redb's default durability:
//! it is on stable storage (fsync'd) before the call returns.
//!
//! Only one [`Store`] may have the database open at a time, in this process or
//! any other. redb 4.6 enforces it with locks on the file: on Linux and macOS
//! `fcntl` open-file-description locks (`F_OFD_SETLK`, redb
//! `file_backend/range_lock.rs`), on Linux also a `flock` for redb before 4.3,
//! and `LockFileEx` on Windows. Both kinds belong to the open file description,
//! not to the process, so a second open in the same process is refused exactly
//! as one from another process is, and the lock is released when the file is
//! closed, also when the process dies (a crashed server never leaves a stale
//! lock behind). The refusal is [`StoreError::InUse`], at once, without waiting.

pub(crate) mod accounts;
mod expiry;
mod mail;
mod notices;
mod record;
mod schema;
mod writer;

pub(crate) use accounts::AccountTables;
#[cfg_attr(not(test), allow(unused_imports))]
pub(crate) use mail::{Acked, Enqueue, Enqueued, MailCaps, MailboxCount, Told};
#[cfg_attr(not(test), allow(unused_imports))]
pub(crate) use notices::NOTICES_PER_SENDER;
pub(crate) use writer::MailWriter;

/// An account record from its bytes, checked to be the account `key`'s
/// (the record format is the store's, `record.rs`; a cluster keeps the
/// same records in NATS).
pub(crate) fn decode_account_record(key: &str, bytes: &[u8]) -> Result<AccountRecord, StoreError> {
    accounts::decode(key, bytes)
}

/// A stored message's record bytes (a cluster keeps the same records in NATS).
pub(crate) fn encode_mail_record(mail: &MailRecord) -> Vec<u8> {
    record::encode_mail(mail)
}

/// A stored message from its record bytes.
pub(crate) fn decode_mail_record(bytes: &[u8]) -> Result<MailRecord, StoreError> {
    record::decode_mail(bytes).map_err(|e| StoreError::Corrupt(format!("a mail record: {e}")))
}

/// A late receipt's record bytes.
pub(crate) fn encode_notice_record(notice: &NoticeRecord) -> [u8; 18] {
    record::encode_notice(notice)
}

/// A late receipt from its record bytes.
pub(crate) fn decode_notice_record(bytes: &[u8]) -> Result<NoticeRecord, StoreError> {
    record::decode_notice(bytes).map_err(|e| StoreError::Corrupt(format!("a notice record: {e}")))
}

/// An account record's bytes.
pub(crate) fn encode_account_record(account: &AccountRecord) -> Vec<u8> {
    record::encode_account(account)
}

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::backends::FileBackend;
use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

use crate::protocol::{Fingerprint, UsernameError};

/// The database file's name inside the data directory.
pub(crate) const DB_FILE: &str = "quic-chat.redb";

/// The most memory redb may use to cache pages (its default is 1 GiB).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A handle on the open database. Cheap to clone (an `Arc`), and usable from
/// several threads at once: reads run concurrently, writes one at a time.
#[derive(Clone)]
pub(crate) struct Store {
    /// What every clone shares.
    inner: Arc<Inner>,
}

/// The state behind a [`Store`].
pub(crate) struct Inner {
    /// The redb database; closed when the last clone is dropped.
    db: Database,
    /// The database file, for messages.
    path: PathBuf,
    /// This open's boot epoch, committed before `open` returned.
    boot_epoch: u32,
}

/// Why the store could not do what was asked.
///
/// Each variant's message names what failed; an underlying error is its
/// [`source`](std::error::Error::source), so `{e:#}` prints each cause once.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another server (or another open of the store), in this process or another, has the database open.
    #[error("the data directory {} is in use by another quic-chat server", path.display())]
    InUse {
        /// The data directory.
        path: PathBuf,
    },
    /// A file or directory could not be created, opened or restricted.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes in the database are not what this build wrote: a damaged record,
    /// or tables that disagree with each other.
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
    /// The accounts are kept elsewhere (a cluster's NATS) and could not be
    /// read or written now.
    #[error("{0}")]
    Unavailable(String),
    /// The database was written by a newer quic-chat whose schema this build
    /// does not know; opening it could lose or misread data.
    #[error(
        "the database has schema version {found}, newer than the {supported} this build supports"
    )]
    NewerSchema {
        /// The schema version in the database.
        found: u32,
        /// The newest schema version this build knows.
        supported: u32,
    },
    /// A name handed to the store is not a valid username (the caller checks
    /// names before; this is a bug there, not a state of the database).
    #[error("{name:?} cannot name an account")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is invalid.
        #[source]
        source: UsernameError,
    },
    /// Any other error of redb, as its text.
    #[error("database error: {0}")]
    Database(String),
}

/// An account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccountRecord {
    /// The name as first registered (its case is kept for display).
    pub(crate) name: String,
    /// When the account was created, server clock, Unix ms.
    pub(crate) created_ms: u64,
    /// Its devices, in the order they were added.
    pub(crate) devices: Vec<DeviceRecord>,
}

/// One device of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceRecord {
    /// The device's key fingerprint.
    pub(crate) fingerprint: Fingerprint,
    /// Its label, 1 to 64 bytes.
    pub(crate) label: String,
    /// When it was added, server clock, Unix ms.
    pub(crate) added_ms: u64,
    /// The start of its latest session, Unix ms; 0 if never.
    pub(crate) last_seen_ms: u64,
}

impl AccountRecord {
    /// The position of `fingerprint` among the devices, if it is one of them.
    pub(crate) fn position(&self, fingerprint: &Fingerprint) -> Option<usize> {
        self.devices
            .iter()
            .position(|device| device.fingerprint == *fingerprint)
    }

    /// Whether `fingerprint` is one of the account's devices.
    pub(crate) fn has_device(&self, fingerprint: &Fingerprint) -> bool {
        self.position(fingerprint).is_some()
    }
}

/// A stored message, as kept for its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MailRecord {
    /// The id its sender's Receipt carried.
    pub(crate) id: u64,
    /// The sender's name, as stamped on the delivery.
    pub(crate) from: String,
    /// When the server accepted it, Unix ms.
    pub(crate) sent_at_ms: u64,
    /// The text.
    pub(crate) body: String,
    /// The sender's account (lowercased name), if the sender was registered.
    pub(crate) sender_account: Option<String>,
}

/// What became of a stored message, as its sender is told later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoticeOutcome {
    /// The recipient's QUIC stack acknowledged its delivery.
    Delivered,
    /// It was dropped unread (its lifetime passed, or the operator deleted
    /// the recipient's account).
    Expired,
}

/// A late receipt kept for a sender who was not connected when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NoticeRecord {
    /// The id of the message it is about.
    pub(crate) id: u64,
    /// What became of the message.
    pub(crate) outcome: NoticeOutcome,
    /// When the notice was made, Unix ms (its lifetime counts from here).
    pub(crate) made_ms: u64,
}

/// Why a registration was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// The name is already registered (compared case-insensitively): the account.
    NameRegistered(AccountRecord),
    /// The key belongs to another account.
    KeyInUse {
        /// That account's name, as first registered.
        account: String,
    },
}

impl Store {
    /// Open the database in `dir`, creating the directory (owner-only, 0700)
    /// and the file `dir/quic-chat.redb` (owner-only, 0600) if missing. An
    /// existing directory keeps its permissions; an existing file is
    /// restricted to 0600.
    ///
    /// Refused at once with [`StoreError::InUse`] while another `Store`, in
    /// this process or another, has it open; with [`StoreError::NewerSchema`]
    /// for a database of a newer build (nothing is written then). Otherwise it
    /// bumps the boot epoch and commits it durably before returning.
    ///
    /// The open checks the checksum of every page (redb's integrity check), so
    /// a file damaged outside redb is an error rather than a panic later.
    pub(crate) fn open(dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(dir)?;
        let path = dir.join(DB_FILE);
        let file = open_private_file(&path)?;
        let backend = FileBackend::new(file).map_err(|e| open_error(e, dir, &path))?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .set_check_integrity_on_open(true)
            .create_with_backend(backend)
            .map_err(|e| open_error(e, dir, &path))?;
        let boot_epoch = schema::prepare(&db)?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path,
                boot_epoch,
            }),
        })
    }

    /// This open's boot epoch: 1 on the first open of a new database, one more
    /// on each open after. Never repeats for a database, crashes included.
    pub(crate) fn boot_epoch(&self) -> u32 {
        self.inner.boot_epoch
    }

    /// A handle that does not keep the database open.
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The store behind a [`Store::downgrade`] handle, while it is open.
    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Store> {
        weak.upgrade().map(|inner| Store { inner })
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `body` in a read transaction (a snapshot of the last commit).
    fn read<T>(
        &self,
        body: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.inner.db.begin_read()?;
        body(&txn)
    }

    /// Run `body` in a write transaction, and commit it, durably, if `body`
    /// returns `Ok(Ok(_))`; anything else aborts it, so a refused operation
    /// changes nothing. Waits while another write transaction runs.
    fn write<T, E>(
        &self,
        body: impl FnOnce(&WriteTransaction) -> Result<Result<T, E>, StoreError>,
    ) -> Result<Result<T, E>, StoreError> {
        let txn = self.inner.db.begin_write()?;
        let outcome = body(&txn)?;
        if outcome.is_ok() {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(outcome)
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("boot_epoch", &self.inner.boot_epoch)
            .finish_non_exhaustive()
    }
}

/// Create `dir` and any missing parents, owner-only (0700) where created.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| StoreError::Io {
        action: "cannot create the data directory",
        path: dir.to_owned(),
        source,
    })
}

/// Open (or create, owner-only from the first byte on) the database file, and
/// restrict an existing one to its owner.
fn open_private_file(path: &Path) -> Result<fs::File, StoreError> {
    let io = |action| {
        move |source| StoreError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    };
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(io("cannot open the database"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io("cannot restrict permissions of"))?;
    }
    Ok(file)
}

/// What a failed open of the database means.
fn open_error(error: redb::DatabaseError, dir: &Path, path: &Path) -> StoreError {
    match error {
        // LockProtocolMismatch: another process has it open with a redb of
        // another locking generation; still another server.
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            StoreError::InUse {
                path: dir.to_owned(),
            }
        }
        // How redb says that the file holds no redb database.
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() == std::io::ErrorKind::InvalidData =>
        {
            StoreError::Corrupt(format!("{}: {source}", path.display()))
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(source)) => StoreError::Io {
            action: "cannot open the database",
            path: path.to_owned(),
            source,
        },
        other => StoreError::from(redb::Error::from(other)),
    }
}

impl From<redb::Error> for StoreError {
    fn from(error: redb::Error) -> Self {
        match error {
            redb::Error::Corrupted(what) => StoreError::Corrupt(what),
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// Every redb error type converts through [`redb::Error`].
macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(error: $error) -> Self {
                StoreError::from(redb::Error::from(error))
            }
        }
    )*};
}
from_redb!(
    redb::StorageError,
    redb::TransactionError,
    redb::TableError,
    redb::CommitError
);

#[cfg(test)]
mod mail_tests;
#[cfg(test)]
mod notice_tests;
#[cfg(test)]
mod power_cut;
#[cfg(test)]
mod power_cut_tests;
#[cfg(test)]
mod tests;
