//! Tests of late receipts kept for senders and of expiry: notices made with
//! the removal of a message, their cap, the sweep of messages and notices,
//! account deletion, the upgrade of a schema-2 database, and the counters
//! and the expiry index staying in step with the records.

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::expiry::Swept;
use super::schema::{
    EXPIRY, MAIL, MAILBOXES, MAIL_BYTES_KEY, META, NOTICES, NOTICE_BOXES, SCHEMA_VERSION_KEY,
};
use super::tests::{fp, fresh, key};
use super::*;

const CAPS: MailCaps = MailCaps {
    mailbox_messages: 10_000,
    mailbox_bytes: 16 << 20,
    store_bytes: 1 << 30,
};

/// A message from `sender` (an account, or a guest for `None`), accepted at
/// `sent_at_ms`, for `to`.
fn message(to: &str, id: u64, sent_at_ms: u64, sender: Option<&str>) -> Enqueue {
    Enqueue {
        to: key(to),
        mail: MailRecord {
            id,
            from: sender.unwrap_or("guest").into(),
            sent_at_ms,
            body: format!("m{id}"),
            sender_account: sender.map(str::to_owned),
        },
    }
}

fn notices(store: &Store, sender: &str) -> Vec<NoticeRecord> {
    store
        .peek_notices(&key(sender), 0, 10_000)
        .unwrap()
        .into_iter()
        .map(|(_, n)| n)
        .collect()
}

fn delivered(id: u64, made_ms: u64) -> NoticeRecord {
    NoticeRecord {
        id,
        outcome: NoticeOutcome::Delivered,
        made_ms,
    }
}

fn expired(id: u64, made_ms: u64) -> NoticeRecord {
    NoticeRecord {
        id,
        outcome: NoticeOutcome::Expired,
        made_ms,
    }
}

/// Recount everything from the records and check every counter and the
/// expiry index agree with them.
fn assert_consistent(store: &Store) {
    let txn = store.inner.db.begin_read().unwrap();
    let mail = txn.open_table(MAIL).unwrap();
    let boxes = txn.open_table(MAILBOXES).unwrap();
    let notices = txn.open_table(NOTICES).unwrap();
    let notice_boxes = txn.open_table(NOTICE_BOXES).unwrap();
    let expiry = txn.open_table(EXPIRY).unwrap();
    let meta = txn.open_table(META).unwrap();
    let mut per_box = std::collections::BTreeMap::<String, (u64, u64)>::new();
    let mut total = 0;
    for entry in mail.iter().unwrap() {
        let (k, v) = entry.unwrap();
        let (to, seq) = k.value();
        let record = record::decode_mail(v.value()).unwrap();
        let len = v.value().len() as u64;
        let counted = per_box.entry(to.to_owned()).or_default();
        counted.0 += 1;
        counted.1 += len;
        total += len;
        assert!(expiry
            .get((record.sent_at_ms, schema::EXPIRES_MAIL, to, seq))
            .unwrap()
            .is_some());
    }
    for entry in boxes.iter().unwrap() {
        let (k, v) = entry.unwrap();
        let (_, messages, bytes) = v.value();
        assert_eq!(
            per_box.remove(k.value()).unwrap_or_default(),
            (messages, bytes),
            "mailbox {}",
            k.value()
        );
    }
    assert!(per_box.is_empty(), "records without a mailbox: {per_box:?}");
    assert_eq!(meta.get(MAIL_BYTES_KEY).unwrap().unwrap().value(), total);
    let mut per_sender = std::collections::BTreeMap::<String, u64>::new();
    for entry in notices.iter().unwrap() {
        let (k, v) = entry.unwrap();
        let (sender, seq) = k.value();
        let notice = record::decode_notice(v.value()).unwrap();
        *per_sender.entry(sender.to_owned()).or_default() += 1;
        assert!(expiry
            .get((notice.made_ms, schema::EXPIRES_NOTICE, sender, seq))
            .unwrap()
            .is_some());
    }
    for entry in notice_boxes.iter().unwrap() {
        let (k, v) = entry.unwrap();
        assert_eq!(
            per_sender.remove(k.value()).unwrap_or_default(),
            v.value().1,
            "notices of {}",
            k.value()
        );
    }
    assert!(
        per_sender.is_empty(),
        "notices without a box: {per_sender:?}"
    );
    assert_eq!(
        expiry.len().unwrap(),
        mail.len().unwrap() + notices.len().unwrap(),
        "the expiry index has entries without records"
    );
}

fn accounts(store: &Store, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let byte = u8::try_from(i + 1).unwrap();
        store.register(name, fp(byte), 0).unwrap().unwrap();
    }
}

#[test]
fn a_delivered_message_makes_its_sender_one_notice() {
    let (_dir, store) = fresh();
    accounts(&store, &["Alice", "Bob", "Carol"]);
    store
        .enqueue_batch(
            &[
                message("bob", 11, 100, Some("alice")),
                message("bob", 12, 101, None),
                message("bob", 13, 102, Some("carol")),
                message("bob", 14, 103, Some("alice")),
            ],
            CAPS,
        )
        .unwrap();
    let acked = store.ack(&key("bob"), &[1, 2, 3, 4, 4], 500).unwrap();
    assert_eq!(acked.removed, 4);
    assert_eq!(acked.told.senders, ["alice", "carol"]);
    // The guest's message is noted for its connection, and nothing is kept.
    assert_eq!(acked.told.guests, [(12, NoticeOutcome::Delivered)]);
    assert_eq!(
        notices(&store, "alice"),
        [delivered(11, 500), delivered(14, 500)]
    );
    assert_eq!(notices(&store, "carol"), [delivered(13, 500)]);
    assert_eq!(store.notice_count(&key("alice")).unwrap(), 2);
    // A second ack of the same seqs removes nothing and makes nothing.
    assert_eq!(
        store.ack(&key("bob"), &[1, 4], 600).unwrap(),
        Acked::default()
    );
    assert_consistent(&store);
    let seqs: Vec<u64> = store
        .peek_notices(&key("alice"), 0, 10)
        .unwrap()
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(store.ack_notices(&key("alice"), &seqs).unwrap(), 2);
    assert_eq!(store.ack_notices(&key("alice"), &seqs).unwrap(), 0);
    assert!(notices(&store, "alice").is_empty());
    assert_eq!(store.notice_count(&key("alice")).unwrap(), 0);
    assert_consistent(&store);
}

#[test]
fn a_full_notice_box_drops_its_oldest() {
    let (_dir, store) = fresh();
    accounts(&store, &["Alice", "Bob"]);
    let extra = 5;
    let n = NOTICES_PER_SENDER + extra;
    let batch: Vec<Enqueue> = (1..=n)
        .map(|id| message("bob", id, id, Some("alice")))
        .collect();
    store.enqueue_batch(&batch, CAPS).unwrap();
    let seqs: Vec<u64> = (1..=n).collect();
    for chunk in seqs.chunks(97) {
        store.ack(&key("bob"), chunk, 7).unwrap();
    }
    let kept = notices(&store, "alice");
    assert_eq!(kept.len() as u64, NOTICES_PER_SENDER);
    assert_eq!(
        store.notice_count(&key("alice")).unwrap(),
        NOTICES_PER_SENDER
    );
    assert_eq!(kept[0].id, extra + 1, "the oldest were dropped");
    assert_eq!(kept.last().unwrap().id, n);
    assert_consistent(&store);
}

#[test]
fn the_sweep_expires_messages_and_notices_by_their_own_clocks() {
    let (_dir, store) = fresh();
    accounts(&store, &["Alice", "Bob"]);
    let batch: Vec<Enqueue> = (1..=6)
        .map(|id| message("bob", id, 1_000 + id, Some("alice")))
        .collect();
    store.enqueue_batch(&batch, CAPS).unwrap();
    store
        .enqueue_batch(&[message("bob", 7, 1_000, None)], CAPS)
        .unwrap();
    // Message 6 is delivered at 1,010: a notice made then.
    store.ack(&key("bob"), &[6], 1_010).unwrap();

    // Nothing is older than 999.
    assert_eq!(store.sweep(999, 2_000, 100).unwrap(), Swept::default());
    // Accepted at 1,003 or earlier: messages 1, 2, 3 and the guest's 7.
    let swept = store.sweep(1_003, 2_000, 100).unwrap();
    assert_eq!(swept.messages, 4);
    assert_eq!(swept.notices, 0);
    assert_eq!(swept.told.senders, ["alice"]);
    assert_eq!(swept.told.guests, [(7, NoticeOutcome::Expired)]);
    assert!(!swept.more);
    let left: Vec<u64> = store
        .peek(&key("bob"), 0, 10)
        .unwrap()
        .iter()
        .map(|(_, m)| m.id)
        .collect();
    assert_eq!(left, [4, 5]);
    assert_eq!(
        notices(&store, "alice"),
        [
            delivered(6, 1_010),
            expired(1, 2_000),
            expired(2, 2_000),
            expired(3, 2_000)
        ]
    );
    assert_consistent(&store);

    // A limit of 1 takes one at a time and says there is more.
    let swept = store.sweep(1_010, 3_000, 1).unwrap();
    assert_eq!((swept.messages, swept.notices, swept.more), (1, 0, true));
    // Up to 1,010: message 5 and the notice made at 1,010 (the notices made
    // at 2,000 and 3,000 are younger).
    let swept = store.sweep(1_010, 3_000, 100).unwrap();
    assert_eq!((swept.messages, swept.notices, swept.more), (1, 1, false));
    assert!(store.peek(&key("bob"), 0, 10).unwrap().is_empty());
    assert_eq!(
        notices(&store, "alice")
            .iter()
            .map(|n| (n.id, n.outcome))
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5].map(|id| (id, NoticeOutcome::Expired))
    );
    // Everything made by 3,000 goes; the store is empty.
    let swept = store.sweep(3_000, 9_000, 100).unwrap();
    assert_eq!((swept.messages, swept.notices), (0, 5));
    assert!(notices(&store, "alice").is_empty());
    assert_eq!(store.mail_bytes().unwrap(), 0);
    assert_consistent(&store);
}

#[test]
fn deleting_accounts_expires_their_mail_and_drops_their_notices() {
    let (_dir, store) = fresh();
    accounts(&store, &["Alice", "Bob", "Carol"]);
    store
        .enqueue_batch(
            &[
                message("bob", 1, 10, Some("alice")),
                message("bob", 2, 11, Some("carol")),
                message("alice", 3, 12, Some("carol")),
            ],
            CAPS,
        )
        .unwrap();
    // Bob's account goes: both senders are told his mail expired.
    let deleted = store.delete_account(&key("bob"), 50).unwrap().unwrap();
    assert_eq!(deleted.account.name, "Bob");
    assert_eq!(deleted.told.senders, ["alice", "carol"]);
    assert_eq!(notices(&store, "alice"), [expired(1, 50)]);
    assert_eq!(notices(&store, "carol"), [expired(2, 50)]);
    assert_consistent(&store);
    // Alice's account goes: her notices go, and her mailbox's message from
    // carol is expired to carol.
    let deleted = store.delete_account(&key("alice"), 60).unwrap().unwrap();
    assert_eq!(deleted.told.senders, ["carol"]);
    assert_eq!(store.notice_count(&key("alice")).unwrap(), 0);
    assert_eq!(notices(&store, "carol"), [expired(2, 50), expired(3, 60)]);
    // Deleting carol leaves nothing at all.
    store.delete_account(&key("carol"), 70).unwrap().unwrap();
    assert_consistent(&store);
    let txn = store.inner.db.begin_read().unwrap();
    assert_eq!(txn.open_table(EXPIRY).unwrap().len().unwrap(), 0);
    // A sender whose account is gone is made no notice.
    drop(txn);
    accounts(&store, &["Dan"]);
    store.register("Eve", fp(9), 0).unwrap().unwrap();
    store
        .enqueue_batch(&[message("dan", 4, 80, Some("zed"))], CAPS)
        .unwrap();
    assert_eq!(
        store.ack(&key("dan"), &[1], 90).unwrap().told.senders.len(),
        0
    );
}

#[test]
fn a_schema_2_database_gets_its_expiry_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        accounts(&store, &["Alice", "Bob"]);
        store
            .enqueue_batch(
                &[
                    message("bob", 1, 100, Some("alice")),
                    message("bob", 2, 200, Some("alice")),
                ],
                CAPS,
            )
            .unwrap();
    }
    // Make it what schema 2 was: no index, no notice tables, version 2.
    {
        let db = Database::open(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(EXPIRY).unwrap();
        txn.delete_table(NOTICES).unwrap();
        txn.delete_table(NOTICE_BOXES).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_consistent(&store);
    let swept = store.sweep(150, 1_000, 100).unwrap();
    assert_eq!(swept.messages, 1);
    assert_eq!(notices(&store, "alice"), [expired(1, 1_000)]);
    let txn = store.inner.db.begin_read().unwrap();
    let version = txn
        .open_table(META)
        .unwrap()
        .get(SCHEMA_VERSION_KEY)
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(version, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_acks_sweeps_and_removes_notices() {
    let (_dir, store) = fresh();
    accounts(&store, &["Alice", "Bob"]);
    let writer = MailWriter::spawn(store.clone(), CAPS).unwrap();
    for id in 1..=4 {
        writer
            .enqueue(message("bob", id, 100 + id, Some("alice")))
            .await
            .unwrap();
    }
    let acked = writer.ack(key("bob"), vec![1, 2], 300).await.unwrap();
    assert_eq!((acked.removed, acked.told.senders.len()), (2, 1));
    let swept = writer.sweep(104, 400, 10).await.unwrap();
    assert_eq!(swept.messages, 2);
    let kept: Vec<u64> = store
        .peek_notices(&key("alice"), 0, 10)
        .unwrap()
        .iter()
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(kept.len(), 4);
    assert_eq!(writer.ack_notices(key("alice"), kept).await.unwrap(), 4);
    assert!(notices(&store, "alice").is_empty());
    assert_consistent(&store);
}

#[test]
fn a_damaged_record_is_swept_all_the_same_and_stalls_nothing() {
    let (_dir, store) = fresh();
    accounts(&store, &["Alice", "Bob"]);
    store
        .enqueue_batch(
            &[
                message("bob", 1, 100, Some("alice")),
                message("bob", 2, 200, Some("alice")),
            ],
            CAPS,
        )
        .unwrap();
    store.ack(&key("bob"), &[2], 300).unwrap();
    // Damage message 1 and alice's notice in place (same lengths).
    {
        let txn = store.inner.db.begin_write().unwrap();
        {
            let mut mail = txn.open_table(MAIL).unwrap();
            let len = mail.get(("bob", 1)).unwrap().unwrap().value().len();
            mail.insert(("bob", 1), vec![0xee; len].as_slice()).unwrap();
            let mut notices = txn.open_table(NOTICES).unwrap();
            notices.insert(("alice", 1), [0xee; 18].as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let swept = store.sweep(1_000, 2_000, 100).unwrap();
    assert_eq!((swept.messages, swept.notices), (1, 1));
    assert!(
        swept.told.senders.is_empty(),
        "nothing to tell of a damaged record"
    );
    assert_eq!(
        store.mailbox_count(&key("bob")).unwrap(),
        MailboxCount::default()
    );
    assert_eq!(store.mail_bytes().unwrap(), 0);
    assert_eq!(store.notice_count(&key("alice")).unwrap(), 0);
    assert_consistent(&store);
    // And the writer goes on storing.
    assert_eq!(
        store
            .enqueue_batch(&[message("bob", 3, 3_000, Some("alice"))], CAPS)
            .unwrap(),
        vec![Enqueued::Stored(3)]
    );
}
