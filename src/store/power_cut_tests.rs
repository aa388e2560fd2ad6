//! The fsync proof: mail enqueued through the group-commit writer by many
//! concurrent tasks, the power cut at a seeded I/O operation while enqueues
//! are in flight, and the store reopened from what the disk kept. Every
//! message answered `Stored` must be there, in order, with one body per id,
//! and the counters must agree with the records. Companion tests show that
//! the disk really loses what was not synced, so the main test would fail if
//! the store answered before its data was on stable storage.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redb::{Durability, ReadableDatabase};

use super::power_cut::PowerCutDisk;
use super::record::encode_mail;
use super::schema::META;
use super::tests::{fp, key};
use super::*;
use crate::protocol::NameKey;

const CAPS: MailCaps = MailCaps {
    mailbox_messages: u64::MAX,
    mailbox_bytes: u64::MAX,
    store_bytes: u64::MAX,
};
/// Concurrent sending tasks.
const TASKS: u64 = 16;
/// Recipients the tasks spread their mail over.
const RECIPIENTS: usize = 4;
/// A bound on what one task sends if the power never fails (it does sooner).
const MAX_PER_TASK: u64 = 20_000;

/// The seeds: `QUIC_CHAT_POWER_SEEDS=1,2,...` for more.
fn seeds() -> Vec<u64> {
    std::env::var("QUIC_CHAT_POWER_SEEDS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// xorshift64*: seeded, so that a run can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn recipient(i: usize) -> NameKey {
    key(&format!("r{i}"))
}

/// What the sending tasks did.
#[derive(Default)]
struct Log {
    /// Every message handed to the writer, by id: (recipient, record).
    sent: HashMap<u64, (NameKey, MailRecord)>,
    /// Every message answered `Stored`: (recipient, seq, id).
    stored: Vec<(NameKey, u64, u64)>,
    /// Enqueues answered with an error (the power failed under them).
    failed: usize,
}

/// How the disk is found after the cut.
#[derive(Debug, Clone, Copy)]
enum Reboot {
    /// Everything not synced is lost.
    LoseUnsynced,
    /// A random half of the unsynced operations survived (a reordering disk).
    KeepSomeUnsynced,
}

/// What one run saw, for its report line.
#[derive(Debug)]
struct Outcome {
    stored: usize,
    failed: usize,
    present: usize,
    syncs: u64,
    ops: u64,
}

/// Open a store on a new disk, register the recipients, and start the
/// writer; returns them with the disk.
fn setup() -> (PowerCutDisk, Store, MailWriter) {
    let disk = PowerCutDisk::new();
    let store = Store::open_on(&disk).unwrap();
    for i in 0..RECIPIENTS {
        let name = format!("r{i}");
        store
            .register(&name, fp(u8::try_from(i + 1).unwrap()), 0)
            .unwrap()
            .unwrap();
    }
    let writer = MailWriter::spawn(store.clone(), CAPS).unwrap();
    (disk, store, writer)
}

/// `TASKS` tasks enqueue numbered messages (task `t`'s `i`th has id
/// `t * MAX_PER_TASK + i`, so ids grow with send order) to seeded recipients
/// until the writer fails them. Returns the log once all have stopped.
async fn send_until_the_power_fails(writer: &MailWriter, seed: u64) -> Log {
    let log = Arc::new(Mutex::new(Log::default()));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let writer = writer.clone();
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(seed * 1_000 + task);
            for i in 0..MAX_PER_TASK {
                let id = task * MAX_PER_TASK + i;
                let to = recipient(usize::try_from(rng.below(RECIPIENTS as u64)).unwrap());
                let pad = "x".repeat(usize::try_from(rng.below(300)).unwrap());
                let mail = MailRecord {
                    id,
                    from: format!("sender{task}"),
                    sent_at_ms: 1_000_000 + id,
                    body: format!("task {task} message {i} {pad}"),
                    sender_account: (task % 2 == 0).then(|| format!("sender{task}")),
                };
                log.lock().unwrap().sent.insert(id, (to, mail.clone()));
                let answer = writer.enqueue(Enqueue { to, mail }).await;
                let mut log = log.lock().unwrap();
                match answer {
                    Ok(Enqueued::Stored(seq)) => log.stored.push((to, seq, id)),
                    Ok(other) => panic!("seed {seed}: {id} was answered {other:?}"),
                    Err(_) => {
                        log.failed += 1;
                        return;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(log)
        .ok()
        .expect("every task has ended")
        .into_inner()
        .unwrap()
}

/// Check the reopened `store` against `log`: every `Stored` message present
/// at its seq; every present message one that was sent, to that recipient,
/// as sent, once; each task's messages in send order; the counters equal to
/// the records. Returns how many messages are present, or every violation.
fn check(store: &Store, log: &Log) -> Result<usize, Vec<String>> {
    let mut problems = Vec::new();
    let mut seen_ids = HashSet::new();
    let mut present: HashMap<(NameKey, u64), u64> = HashMap::new();
    let mut total_bytes = 0;
    for i in 0..RECIPIENTS {
        let to = recipient(i);
        let all = store.peek(&to, 0, usize::MAX).unwrap();
        let mut last_of_task: HashMap<u64, u64> = HashMap::new();
        let mut bytes = 0;
        for (seq, record) in &all {
            bytes += encode_mail(record).len() as u64;
            present.insert((to, *seq), record.id);
            if !seen_ids.insert(record.id) {
                problems.push(format!("id {} is stored twice", record.id));
            }
            match log.sent.get(&record.id) {
                Some((sent_to, sent)) if *sent_to == to && sent == record => {}
                Some(_) => problems.push(format!("{}/{seq}: not as sent: {record:?}", to.as_str())),
                None => problems.push(format!("{}/{seq}: never sent: {record:?}", to.as_str())),
            }
            let task = record.id / MAX_PER_TASK;
            if let Some(before) = last_of_task.insert(task, record.id) {
                if before > record.id {
                    problems.push(format!(
                        "{}: task {task}'s {} after its later {before}",
                        to.as_str(),
                        record.id
                    ));
                }
            }
        }
        let count = store.mailbox_count(&to).unwrap();
        if count.messages != all.len() as u64 || count.bytes != bytes {
            problems.push(format!(
                "{}: the counters say {count:?}, the records {} messages, {bytes} bytes",
                to.as_str(),
                all.len()
            ));
        }
        total_bytes += bytes;
    }
    let mail_bytes = store.mail_bytes().unwrap();
    if mail_bytes != total_bytes {
        problems.push(format!(
            "mail_bytes is {mail_bytes}, the records {total_bytes}"
        ));
    }
    let mut missing = 0;
    for (to, seq, id) in &log.stored {
        match present.get(&(*to, *seq)) {
            Some(found) if found == id => {}
            Some(found) => problems.push(format!(
                "{}/{seq}: answered Stored for {id}, holds {found}",
                to.as_str()
            )),
            None => missing += 1,
        }
    }
    if missing > 0 {
        problems.push(format!(
            "{missing} of {} messages answered Stored are missing",
            log.stored.len()
        ));
    }
    if problems.is_empty() {
        Ok(present.len())
    } else {
        Err(problems)
    }
}

/// One run: send, cut the power at a seeded I/O operation, reboot the disk
/// as `reboot` says, reopen and check. `lie` makes the disk's syncs lie once
/// the recipients are registered.
async fn run(seed: u64, reboot: Reboot, lie: bool) -> Result<Outcome, Vec<String>> {
    let mut rng = Rng::new(seed);
    let (disk, store, writer) = setup();
    if lie {
        disk.lie_about_syncs();
    }
    // A commit of this writer is a few writes and one sync, so the cut
    // comes after some tens to some hundreds of commits.
    let fuse = 50 + rng.below(2_000);
    disk.cut_after(fuse);
    let log = tokio::time::timeout(
        Duration::from_secs(60),
        send_until_the_power_fails(&writer, seed),
    )
    .await
    .expect("the power fails within 60 s");
    assert!(disk.is_cut(), "seed {seed}: the power never failed");
    assert_eq!(
        log.failed as u64, TASKS,
        "seed {seed}: every task ends on an enqueue the power cut failed"
    );
    let stats = disk.stats();
    drop(writer);
    drop(store);
    let after = match reboot {
        Reboot::LoseUnsynced => disk.after_cut(|_| false),
        Reboot::KeepSomeUnsynced => disk.after_cut(|_| rng.below(2) == 0),
    };
    let reopened = Store::open_on(&after).unwrap();
    assert_eq!(
        reopened.boot_epoch(),
        2,
        "seed {seed}: the first boot was synced"
    );
    let present = check(&reopened, &log)?;
    // No seq is reused after the reboot: a new message to r0 comes after
    // every seq r0 was ever answered and every one it holds.
    let r0 = recipient(0);
    let held = reopened.peek(&r0, 0, usize::MAX).unwrap();
    let newest = log
        .stored
        .iter()
        .filter(|(to, _, _)| *to == r0)
        .map(|(_, seq, _)| *seq)
        .chain(held.iter().map(|(seq, _)| *seq))
        .max()
        .unwrap_or(0);
    let any = log.sent.values().next().unwrap().1.clone();
    let again = reopened
        .enqueue_batch(&[Enqueue { to: r0, mail: any }], CAPS)
        .unwrap();
    match again[..] {
        [Enqueued::Stored(seq)] => assert!(seq > newest, "seed {seed}: seq {seq} reused"),
        _ => panic!("seed {seed}: {again:?}"),
    }
    Ok(Outcome {
        stored: log.stored.len(),
        failed: log.failed,
        present,
        syncs: stats.syncs,
        ops: stats.ops,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_answered_stored_survives_a_power_cut() {
    for seed in seeds() {
        for reboot in [Reboot::LoseUnsynced, Reboot::KeepSomeUnsynced] {
            let outcome = run(seed, reboot, false)
                .await
                .unwrap_or_else(|problems| panic!("seed {seed}, {reboot:?}: {problems:#?}"));
            assert!(outcome.stored > 0, "seed {seed}: nothing was stored");
            eprintln!(
                "power cut, seed {seed}, {reboot:?}: {} answered Stored, {} failed by the cut, \
                 {} present after it; {} syncs in {} I/O operations",
                outcome.stored, outcome.failed, outcome.present, outcome.syncs, outcome.ops
            );
        }
    }
}

/// The teeth of the test above: on a disk whose syncs lie, the same check
/// finds the messages answered `Stored` missing after the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_fails_when_syncs_do_not_reach_the_disk() {
    let problems = run(1, Reboot::LoseUnsynced, true)
        .await
        .expect_err("a lying disk loses Stored messages");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("answered Stored are missing")),
        "{problems:#?}"
    );
}

/// The disk loses a commit that was not synced (redb's `Durability::None`)
/// and keeps one that was, while both were visible before the cut.
#[test]
fn the_disk_loses_what_was_not_synced() {
    let disk = PowerCutDisk::new();
    let store = Store::open_on(&disk).unwrap();
    let commit = |name: &str, durability: Durability| {
        let mut txn = store.raw_db().begin_write().unwrap();
        txn.set_durability(durability).unwrap();
        txn.open_table(META).unwrap().insert(name, 1).unwrap();
        txn.commit().unwrap();
    };
    let syncs = disk.stats().syncs;
    commit("synced", Durability::Immediate);
    assert_eq!(disk.stats().syncs, syncs + 1, "an immediate commit syncs");
    commit("unsynced", Durability::None);
    assert_eq!(
        disk.stats().syncs,
        syncs + 1,
        "a commit without durability does not"
    );
    let visible = |store: &Store, name: &str| {
        let txn = store.raw_db().begin_read().unwrap();
        txn.open_table(META).unwrap().get(name).unwrap().is_some()
    };
    assert!(visible(&store, "synced") && visible(&store, "unsynced"));
    disk.cut();
    drop(store);
    let reopened = Store::open_on(&disk.after_cut(|_| false)).unwrap();
    assert!(visible(&reopened, "synced"));
    assert!(!visible(&reopened, "unsynced"), "lost with the power");
    assert_eq!(reopened.boot_epoch(), 2);
}

/// The disk itself: a write after the last sync is lost at a cut, or kept
/// when the reboot keeps it; a synced one is always kept; after the cut
/// nothing reads or writes.
#[test]
fn a_cut_keeps_the_synced_image_and_only_the_unsynced_writes_asked_for() {
    use redb::StorageBackend;
    let disk = PowerCutDisk::new();
    let backend = disk.backend();
    backend.write(0, b"synced").unwrap();
    backend.sync_data().unwrap();
    backend.write(0, b"SY").unwrap();
    backend.write(8, b"tail").unwrap();
    assert_eq!(disk.stats().pending, 2);
    let read = |backend: &dyn StorageBackend| {
        let mut out = vec![0; usize::try_from(backend.len().unwrap()).unwrap()];
        backend.read(0, &mut out).unwrap();
        out
    };
    assert_eq!(
        read(&backend),
        b"SYnced\0\0tail",
        "the process reads what it wrote"
    );
    disk.cut();
    assert!(backend.write(0, b"x").is_err() && backend.sync_data().is_err());
    assert!(backend.read(0, &mut [0; 1]).is_err());
    assert_eq!(read(&disk.after_cut(|_| false).backend()), b"synced");
    assert_eq!(
        read(&disk.after_cut(|i| i == 1).backend()),
        b"synced\0\0tail"
    );
    assert_eq!(read(&disk.after_cut(|_| true).backend()), b"SYnced\0\0tail");
}
