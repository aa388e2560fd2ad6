//! Tests of the mailboxes: enqueue in batches, peek, ack, counts, caps, the
//! writer's group commit, deletion with the account, and the upgrade of a
//! schema-1 database.

use redb::{Database, ReadableDatabase};

use super::schema::{ACCOUNTS, DEVICES, MAIL, META, SCHEMA_VERSION, SCHEMA_VERSION_KEY};
use super::tests::{fp, fresh, key};
use super::*;

const CAPS: MailCaps = MailCaps {
    mailbox_messages: 1000,
    mailbox_bytes: 16 << 20,
    store_bytes: 1 << 30,
};

fn mail(id: u64, body: &str) -> MailRecord {
    MailRecord {
        id,
        from: "Alice".into(),
        sent_at_ms: 1_000 + id,
        body: body.into(),
        sender_account: Some("alice".into()),
    }
}

fn to(name: &str, id: u64, body: &str) -> Enqueue {
    Enqueue {
        to: key(name),
        mail: mail(id, body),
    }
}

#[test]
fn enqueue_peek_ack_keep_order_and_counts() {
    let (_dir, store) = fresh();
    store.register("Bob", fp(1), 0).unwrap().unwrap();
    let batch: Vec<Enqueue> = (1..=5).map(|i| to("bob", i, &format!("m{i}"))).collect();
    let out = store.enqueue_batch(&batch, CAPS).unwrap();
    assert_eq!(out, (1..=5).map(Enqueued::Stored).collect::<Vec<_>>());
    // An unregistered recipient gets nothing stored.
    assert_eq!(
        store.enqueue_batch(&[to("carol", 9, "x")], CAPS).unwrap(),
        vec![Enqueued::NotRegistered]
    );
    let count = store.mailbox_count(&key("bob")).unwrap();
    assert_eq!(count.messages, 5);
    assert_eq!(store.mail_bytes().unwrap(), count.bytes);
    let all = store.peek(&key("bob"), 0, 100).unwrap();
    assert_eq!(
        all.iter().map(|(_, m)| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(all[0].1, mail(1, "m1"));
    assert_eq!(store.peek(&key("bob"), 3, 2).unwrap().len(), 2);
    assert_eq!(
        store.ack(&key("bob"), &[1, 2, 2, 77], 9).unwrap().removed,
        2
    );
    let left = store.peek(&key("bob"), 0, 100).unwrap();
    assert_eq!(
        left.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(store.mailbox_count(&key("bob")).unwrap().messages, 3);
    store.ack(&key("bob"), &[3, 4, 5], 9).unwrap();
    assert_eq!(
        store.mailbox_count(&key("bob")).unwrap(),
        MailboxCount::default()
    );
    assert_eq!(store.mail_bytes().unwrap(), 0);
    // Seqs are never reused.
    assert_eq!(
        store.enqueue_batch(&[to("bob", 6, "m6")], CAPS).unwrap(),
        vec![Enqueued::Stored(6)]
    );
}

#[test]
fn caps_refuse_and_store_nothing() {
    let (_dir, store) = fresh();
    store.register("Bob", fp(1), 0).unwrap().unwrap();
    store.register("Dan", fp(2), 0).unwrap().unwrap();
    let caps = MailCaps {
        mailbox_messages: 2,
        ..CAPS
    };
    let batch: Vec<Enqueue> = (1..=3).map(|i| to("bob", i, "x")).collect();
    let out = store.enqueue_batch(&batch, caps).unwrap();
    assert_eq!(
        out,
        vec![Enqueued::Stored(1), Enqueued::Stored(2), Enqueued::Full]
    );
    assert_eq!(store.mailbox_count(&key("bob")).unwrap().messages, 2);
    let one = store.mailbox_count(&key("bob")).unwrap().bytes / 2;
    let caps = MailCaps {
        mailbox_bytes: one,
        ..CAPS
    };
    assert_eq!(
        store
            .enqueue_batch(&[to("dan", 4, "x"), to("dan", 5, "x")], caps)
            .unwrap(),
        vec![Enqueued::Stored(1), Enqueued::Full]
    );
    let caps = MailCaps {
        store_bytes: 3 * one,
        ..CAPS
    };
    assert_eq!(
        store.enqueue_batch(&[to("dan", 6, "x")], caps).unwrap(),
        vec![Enqueued::Full]
    );
    assert_eq!(store.mail_bytes().unwrap(), 3 * one);
}

#[test]
fn deleting_the_account_deletes_its_mail() {
    let (_dir, store) = fresh();
    store.register("Bob", fp(1), 0).unwrap().unwrap();
    store.register("Dan", fp(2), 0).unwrap().unwrap();
    store
        .enqueue_batch(
            &[to("bob", 1, "a"), to("dan", 2, "b"), to("bob", 3, "c")],
            CAPS,
        )
        .unwrap();
    let dan = store.mailbox_count(&key("dan")).unwrap();
    store.delete_account(&key("bob"), 9).unwrap().unwrap();
    assert!(store.peek(&key("bob"), 0, 10).unwrap().is_empty());
    assert_eq!(
        store.mailbox_count(&key("bob")).unwrap(),
        MailboxCount::default()
    );
    assert_eq!(store.mail_bytes().unwrap(), dan.bytes);
    assert_eq!(store.peek(&key("dan"), 0, 10).unwrap().len(), 1);
    // A new account of the same name starts with an empty mailbox, whose
    // seqs go on after the old one's (a late ack of old mail matches nothing).
    store.register("bob", fp(3), 0).unwrap().unwrap();
    assert!(store.peek(&key("bob"), 0, 10).unwrap().is_empty());
    assert_eq!(
        store.enqueue_batch(&[to("bob", 9, "new")], CAPS).unwrap(),
        vec![Enqueued::Stored(3)]
    );
    assert_eq!(store.ack(&key("bob"), &[1, 2], 9).unwrap().removed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_answers_after_commit_and_keeps_order() {
    let (dir, store) = fresh();
    store.register("Bob", fp(1), 0).unwrap().unwrap();
    let writer = MailWriter::spawn(store.clone(), CAPS).unwrap();
    let mut tasks = Vec::new();
    for i in 1..=200u64 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            writer.enqueue(to("bob", i, "x")).await
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Enqueued::Stored(seq) => seqs.push(seq),
            other => panic!("{other:?}"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    // Committed: another open after the writer and store are gone sees all.
    let stored = store.peek(&key("bob"), 0, 1000).unwrap();
    assert_eq!(stored.len(), 200);
    let ack: Vec<u64> = stored.iter().map(|(s, _)| *s).take(150).collect();
    assert_eq!(writer.ack(key("bob"), ack, 9).await.unwrap().removed, 150);
    drop(writer);
    drop(store);
    // The thread holds a clone until it notices; reopen until it let go.
    let reopened = loop {
        match Store::open(dir.path()) {
            Ok(store) => break store,
            Err(StoreError::InUse { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(reopened.mailbox_count(&key("bob")).unwrap().messages, 50);
}

#[test]
fn a_schema_1_database_is_upgraded_with_its_accounts() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(SCHEMA_VERSION_KEY, 1).unwrap();
            meta.insert("boot_epoch", 4).unwrap();
            let account = AccountRecord {
                name: "Bob".into(),
                created_ms: 1,
                devices: vec![DeviceRecord {
                    fingerprint: fp(1),
                    label: "first device".into(),
                    added_ms: 1,
                    last_seen_ms: 1,
                }],
            };
            txn.open_table(ACCOUNTS)
                .unwrap()
                .insert("bob", record::encode_account(&account).as_slice())
                .unwrap();
            txn.open_table(DEVICES)
                .unwrap()
                .insert(fp(1).as_bytes(), "bob")
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.boot_epoch(), 5);
    assert_eq!(store.account(&key("bob")).unwrap().unwrap().name, "Bob");
    assert_eq!(
        store.enqueue_batch(&[to("bob", 1, "x")], CAPS).unwrap(),
        vec![Enqueued::Stored(1)]
    );
    drop(store);
    let db = Database::open(dir.path().join(DB_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let version = txn
        .open_table(META)
        .unwrap()
        .get(SCHEMA_VERSION_KEY)
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(version, u64::from(SCHEMA_VERSION));
    assert_eq!(SCHEMA_VERSION, 3);
    use redb::ReadableTableMetadata;
    assert_eq!(txn.open_table(MAIL).unwrap().len().unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_nobody_waits_for_any_more_is_not_stored() {
    let (_dir, store) = fresh();
    store.register("Bob", fp(1), 0).unwrap().unwrap();
    let writer = MailWriter::spawn(store.clone(), CAPS).unwrap();
    // Hold the database's write lock, so the writer cannot apply anything.
    let blocker = store.inner.db.begin_write().unwrap();
    let abandoned = writer.enqueue(to("bob", 1, "given up"));
    // The sender's deadline passes: it stops waiting.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(50), abandoned)
            .await
            .is_err()
    );
    blocker.abort().unwrap();
    // One that is waited for is stored, and the abandoned one is not.
    assert_eq!(
        writer.enqueue(to("bob", 2, "kept")).await.unwrap(),
        Enqueued::Stored(1)
    );
    let ids: Vec<u64> = store
        .peek(&key("bob"), 0, 10)
        .unwrap()
        .iter()
        .map(|(_, m)| m.id)
        .collect();
    assert_eq!(ids, [2]);
}
