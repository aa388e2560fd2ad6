//! Tests of opening the store: files and permissions, the lock, the schema
//! version, the boot epoch, and damaged records. Also the helpers the other
//! store tests use.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

/// The environment variable that tells [`hold_open_for_parent`] which
/// directory to open.
const HOLD_ENV: &str = "QUIC_CHAT_TEST_HOLD_STORE";
/// The line [`hold_open_for_parent`] prints once the store is open.
const HELD: &str = "store-held-open";

#[test]
fn a_second_process_is_refused_while_one_has_it_open() {
    let dir = tempfile::tempdir().unwrap();
    // This test binary again, running only the holder below.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::hold_open_for_parent",
            "--ignored",
            "--test-threads=1",
        ])
        .env(HOLD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the child's word on a thread, so that a child that never
    // says it fails this test instead of hanging it.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (held_tx, held_rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end: the child must not write into a closed pipe.
        for line in stdout.lines().map_while(Result::ok) {
            if line.contains(HELD) {
                let _ = held_tx.send(true);
            }
        }
        let _ = held_tx.send(false);
    });
    let held = held_rx.recv_timeout(Duration::from_secs(60));
    if held != Ok(true) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the child process did not open the store: {held:?}");
    }

    let error = Store::open(dir.path()).unwrap_err();
    assert!(matches!(error, StoreError::InUse { .. }), "{error:?}");

    // Closing its stdin lets the child close the store and exit.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(Store::open(dir.path()).unwrap().boot_epoch(), 2);
}

/// Not a test by itself: the child process of the test above. It opens the
/// store in the directory `HOLD_ENV` names, says so, and holds it until its
/// stdin closes.
#[test]
#[ignore = "run by a_second_process_is_refused_while_one_has_it_open"]
fn hold_open_for_parent() {
    let Some(dir) = std::env::var_os(HOLD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&dir)).unwrap();
    // Straight to the file descriptor: the test harness captures `println!`.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{HELD}").unwrap();
    stdout.flush().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest).unwrap();
    drop(store);
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
        "the database has schema version 2, newer than the 1 this build supports"
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

/// Not an assertion: how long one `register` (one fsync'd commit) takes here.
/// `cargo test -q --lib store::tests::register_cost -- --ignored --nocapture`
#[test]
#[ignore = "a measurement, not a test"]
fn register_cost() {
    let (_dir, store) = fresh();
    let rounds = 500u16;
    let start = std::time::Instant::now();
    for i in 0..rounds {
        let mut bytes = [0u8; 32];
        bytes[..2].copy_from_slice(&i.to_le_bytes());
        let name = format!("user{i}");
        store
            .register(&name, Fingerprint::new(bytes), 1)
            .unwrap()
            .unwrap();
    }
    let each = start.elapsed() / u32::from(rounds);
    println!("register: {each:?} per call ({rounds} calls)");
}
