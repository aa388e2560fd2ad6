//! The single writer of mail, with group commit: request tasks hand it
//! enqueues and acks over a channel; the thread takes everything queued,
//! applies it in one write transaction, commits once (one fsync) and only
//! then answers each request. So a `Queued` is never said before its commit,
//! and many concurrent sends cost one fsync together.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::mail::{ack_in, enqueue_in};
use super::{Enqueue, Enqueued, MailCaps, Store, StoreError};
use crate::protocol::NameKey;

/// The most requests one transaction takes.
const MAX_BATCH: usize = 1024;

/// A failure of the store, as every request of a failed batch sees it.
pub(crate) type WriteError = String;

enum Job {
    Enqueue(Box<Enqueue>, oneshot::Sender<Result<Enqueued, WriteError>>),
    Ack(NameKey, Vec<u64>, oneshot::Sender<Result<u64, WriteError>>),
}

/// The handle on the writer thread. Cheap to clone; the thread ends when the
/// last clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct MailWriter {
    jobs: mpsc::Sender<Job>,
}

impl MailWriter {
    /// Start the writer thread of `store`, keeping mail within `caps`.
    pub(crate) fn spawn(store: Store, caps: MailCaps) -> Result<MailWriter, StoreError> {
        let (jobs, queue) = mpsc::channel();
        // The thread must not keep the database open: a server that stops
        // closes it (and may open it again) at once.
        let store = store.downgrade();
        std::thread::Builder::new()
            .name("mail-writer".into())
            .spawn(move || run(&store, caps, &queue))
            .map_err(|source| StoreError::Io {
                action: "cannot start the mail writer for",
                path: std::path::PathBuf::from(super::DB_FILE),
                source,
            })?;
        Ok(MailWriter { jobs })
    }

    /// Store one message; answered once its batch is committed.
    pub(crate) async fn enqueue(&self, item: Enqueue) -> Result<Enqueued, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Enqueue(Box::new(item), reply))
            .map_err(|_| "the mail writer has stopped".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the mail writer has stopped".to_owned()))
    }

    /// Remove delivered messages; answered once committed.
    pub(crate) async fn ack(&self, recipient: NameKey, seqs: Vec<u64>) -> Result<u64, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Ack(recipient, seqs, reply))
            .map_err(|_| "the mail writer has stopped".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the mail writer has stopped".to_owned()))
    }
}

fn run(store: &std::sync::Weak<super::Inner>, caps: MailCaps, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let Some(store) = Store::upgrade(store) else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        commit(&store, caps, jobs);
    }
}

/// Apply `jobs` in one transaction, commit, answer each.
fn commit(store: &Store, caps: MailCaps, jobs: Vec<Job>) {
    let outcome = store.write(|txn| {
        let mut answers = Vec::with_capacity(jobs.len());
        for job in &jobs {
            answers.push(match job {
                Job::Enqueue(item, _) => {
                    Answer::Enqueued(enqueue_in(txn, std::slice::from_ref(item), caps)?[0])
                }
                Job::Ack(to, seqs, _) => Answer::Acked(ack_in(txn, to, seqs)?),
            });
        }
        Ok(Ok::<_, ()>(answers))
    });
    match outcome {
        Ok(Ok(answers)) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                match (job, answer) {
                    (Job::Enqueue(_, reply), Answer::Enqueued(e)) => {
                        let _ = reply.send(Ok(e));
                    }
                    (Job::Ack(_, _, reply), Answer::Acked(n)) => {
                        let _ = reply.send(Ok(n));
                    }
                    _ => unreachable!("one answer per job, in order"),
                }
            }
        }
        Ok(Err(())) => unreachable!("the batch body never refuses"),
        Err(e) => {
            tracing::error!("storing mail failed: {e}");
            let text = e.to_string();
            for job in jobs {
                match job {
                    Job::Enqueue(_, reply) => {
                        let _ = reply.send(Err(text.clone()));
                    }
                    Job::Ack(_, _, reply) => {
                        let _ = reply.send(Err(text.clone()));
                    }
                }
            }
        }
    }
}

enum Answer {
    Enqueued(Enqueued),
    Acked(u64),
}
