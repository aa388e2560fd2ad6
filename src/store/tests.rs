//! Tests of opening the store: files and permissions, the lock, the schema
//! version, the boot epoch, and damaged records. Also the helpers the other
//! store tests use.

use redb::{Database, ReadableDatabase};
use tempfile::TempDir;

use super::schema::{ACCOUNTS, DEVICES, META, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use super::*;
use crate::protocol::NameKey;

/// A new store in a new temporary directory (kept alive by the `TempDir`).
pub(super) fn fresh() -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// A fingerprint made of one repeated byte.
pub(super) fn fp(byte: u8) -> Fingerprint {
    Fingerprint::new([byte; 32])
}

/// The key of a valid name.
pub(super) fn key(name: &str) -> NameKey {
    NameKey::new(name).unwrap()
}

/// Open the database file with redb itself, as no `Store` would.
fn raw(dir: &Path) -> Database {
    Database::open(dir.join(DB_FILE)).unwrap()
}

#[test]
fn store_is_send_sync_and_cheap_to_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Store>();
}

#[cfg(unix)]
#[test]
fn the_directory_and_the_file_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data").join("server");
    let store = Store::open(&dir).unwrap();
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&parent.path().join("data")), 0o700);
    assert_eq!(store.path(), dir.join(DB_FILE));
    assert_eq!(mode(&dir.join(DB_FILE)), 0o600);

    // A file left readable by others (by hand, or an older build) is tightened.
    drop(store);
    fs::set_permissions(dir.join(DB_FILE), fs::Permissions::from_mode(0o644)).unwrap();
    let _store = Store::open(&dir).unwrap();
    assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
}

#[test]
fn every_open_bumps_the_boot_epoch_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.boot_epoch(), 1);
    let alice = store.register("Alice", fp(1), 10).unwrap().unwrap();
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.boot_epoch(), 2);
    assert_eq!(store.account(&key("alice")).unwrap(), Some(alice.clone()));
    assert_eq!(store.account_of(&fp(1)).unwrap(), Some(alice));
    drop(store);

    assert_eq!(Store::open(dir.path()).unwrap().boot_epoch(), 3);
    let meta = raw(dir.path());
    let read = meta.begin_read().unwrap();
    let table = read.open_table(META).unwrap();
    let version = table.get(SCHEMA_VERSION_KEY).unwrap().unwrap().value();
    assert_eq!(version, u64::from(SCHEMA_VERSION));
}

#[test]
fn a_second_open_in_this_process_is_in_use() {
    let (dir, store) = fresh();
    let clone = store.clone();
    drop(store);
    // The clone keeps the database open.
    let error = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(&error, StoreError::InUse { path } if path == dir.path()),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "the data directory {} is in use by another quic-chat server",
            dir.path().display()
        )
    );
    drop(clone);
    assert_eq!(Store::open(dir.path()).unwrap().boot_epoch(), 2);
}

#[test]
fn a_newer_schema_is_refused_and_nothing_is_written() {
    let (dir, store) = fresh();
    drop(store);
    let set_version = |version: u64| {
        let db = raw(dir.path());
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, version)
            .unwrap();
        txn.commit().unwrap();
    };
    set_version(u64::from(SCHEMA_VERSION) + 1);
    let error = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::NewerSchema { found, supported: SCHEMA_VERSION } if found == SCHEMA_VERSION + 1
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "the database has schema version 4, newer than the 3 this build supports"
    );

    // The refused open bumped no boot epoch.
    set_version(u64::from(SCHEMA_VERSION));
    assert_eq!(Store::open(dir.path()).unwrap().boot_epoch(), 2);
}

#[test]
fn tables_without_a_schema_version_are_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join(DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(ACCOUNTS).unwrap();
    txn.commit().unwrap();
    drop(db);
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
}

#[test]
fn a_file_that_is_not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(DB_FILE), vec![0x5a; 8192]).unwrap();
    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
}

#[test]
fn a_damaged_record_is_corrupt_not_a_panic() {
    let (dir, store) = fresh();
    store.register("alice", fp(1), 1).unwrap().unwrap();
    store.register("bob", fp(2), 1).unwrap().unwrap();
    drop(store);
    {
        let db = raw(dir.path());
        let txn = db.begin_write().unwrap();
        {
            let mut accounts = txn.open_table(ACCOUNTS).unwrap();
            accounts.insert("alice", &b"\x01garbage"[..]).unwrap();
            let mut devices = txn.open_table(DEVICES).unwrap();
            devices.insert([3; 32], "Not A Key!").unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let corrupt = |result: Result<_, StoreError>| match result {
        Err(StoreError::Corrupt(what)) => what,
        other => panic!("expected Corrupt, got {other:?}"),
    };
    let what = corrupt(store.account(&key("alice")).map(drop));
    assert!(what.contains("\"alice\""), "{what}");
    corrupt(store.account_of(&fp(1)).map(drop));
    corrupt(store.accounts().map(drop));
    corrupt(store.register("Alice", fp(9), 2).map(drop));
    corrupt(
        store
            .add_device(&key("alice"), &[9; 32], "x", 5, 2)
            .map(drop),
    );
    corrupt(store.account_of(&fp(3)).map(drop));
    // Undamaged records still read.
    assert_eq!(store.account(&key("bob")).unwrap().unwrap().name, "bob");
}
