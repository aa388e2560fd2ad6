//! The single writer of mail, with group commit: request tasks hand it
//! enqueues, acks and sweeps over a channel; the thread takes everything queued,
//! applies it in one write transaction, commits once (one fsync) and only
//! then answers each request. So a `Queued` is never said before its commit,
//! and many concurrent sends cost one fsync together.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::expiry::Swept;
use super::mail::{Acked, MailTables};
use super::{Enqueue, Enqueued, MailCaps, Store, StoreError};
use crate::protocol::NameKey;

/// The most requests one transaction takes.
const MAX_BATCH: usize = 1024;

/// A failure of the store, as every request of a failed batch sees it.
pub(crate) type WriteError = String;

/// Where one job's answer goes.
type Reply<T> = oneshot::Sender<Result<T, WriteError>>;

enum Job {
    Enqueue(Box<Enqueue>, Reply<Enqueued>),
    Ack {
        recipient: NameKey,
        seqs: Vec<u64>,
        now_ms: u64,
        reply: Reply<Acked>,
    },
    AckNotices(NameKey, Vec<u64>, Reply<u64>),
    Sweep {
        cutoff_ms: u64,
        now_ms: u64,
        limit: usize,
        reply: Reply<Swept>,
    },
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

    /// Hand the writer a job made with `reply`, and wait for its answer.
    async fn ask<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(job(reply))
            .map_err(|_| "the mail writer has stopped".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the mail writer has stopped".to_owned()))
    }

    /// Store one message; answered once its batch is committed.
    pub(crate) async fn enqueue(&self, item: Enqueue) -> Result<Enqueued, WriteError> {
        self.ask(|reply| Job::Enqueue(Box::new(item), reply)).await
    }

    /// Remove delivered messages, making their senders' late receipts at
    /// `now_ms`; answered once committed.
    pub(crate) async fn ack(
        &self,
        recipient: NameKey,
        seqs: Vec<u64>,
        now_ms: u64,
    ) -> Result<Acked, WriteError> {
        self.ask(|reply| Job::Ack {
            recipient,
            seqs,
            now_ms,
            reply,
        })
        .await
    }

    /// Remove notices their sender's connection acknowledged; answered once
    /// committed.
    pub(crate) async fn ack_notices(
        &self,
        sender: NameKey,
        seqs: Vec<u64>,
    ) -> Result<u64, WriteError> {
        self.ask(|reply| Job::AckNotices(sender, seqs, reply)).await
    }

    /// Remove up to `limit` messages and notices whose lifetime counts from
    /// `cutoff_ms` or earlier (see [`Store::sweep`]); answered once committed.
    pub(crate) async fn sweep(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Swept, WriteError> {
        self.ask(|reply| Job::Sweep {
            cutoff_ms,
            now_ms,
            limit,
            reply,
        })
        .await
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

/// One job's answer, until the commit lets it be sent.
enum Answer {
    Enqueued(Enqueued),
    Acked(Acked),
    Count(u64),
    Swept(Swept),
    /// Nobody waits for it any more: not applied.
    Abandoned,
}

/// Apply `jobs` in one transaction, commit, answer each.
fn commit(store: &Store, caps: MailCaps, jobs: Vec<Job>) {
    let outcome = store.write(|txn| {
        let mut tables = MailTables::open(txn)?;
        let mut answers = Vec::with_capacity(jobs.len());
        for job in &jobs {
            answers.push(match job {
                // A sender that stopped waiting (its Send was answered
                // RecipientBusy at the deadline) must not have it stored.
                Job::Enqueue(_, reply) if reply.is_closed() => Answer::Abandoned,
                Job::Enqueue(item, _) => Answer::Enqueued(tables.enqueue(item, caps)?),
                Job::Ack {
                    recipient,
                    seqs,
                    now_ms,
                    ..
                } => {
                    let mut acked = Acked::default();
                    tables.ack(recipient, seqs, *now_ms, &mut acked)?;
                    Answer::Acked(acked)
                }
                Job::AckNotices(sender, seqs, _) => {
                    Answer::Count(tables.ack_notices(sender.as_str(), seqs)?)
                }
                Job::Sweep {
                    cutoff_ms,
                    now_ms,
                    limit,
                    ..
                } => Answer::Swept(tables.sweep(*cutoff_ms, *now_ms, *limit)?),
            });
        }
        tables.finish()?;
        Ok(Ok::<_, ()>(answers))
    });
    match outcome {
        Ok(Ok(answers)) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                answer_job(job, Ok(answer));
            }
        }
        Ok(Err(())) => unreachable!("the batch body never refuses"),
        Err(e) => {
            tracing::error!("storing mail failed: {e}");
            let text = e.to_string();
            for job in jobs {
                answer_job(job, Err(text.clone()));
            }
        }
    }
}

/// Send `job` its answer (or the batch's error).
fn answer_job(job: Job, answer: Result<Answer, WriteError>) {
    // A requester that stopped waiting has gone; its answer is not needed.
    match (job, answer) {
        (Job::Enqueue(_, reply), Ok(Answer::Enqueued(e))) => drop(reply.send(Ok(e))),
        (Job::Enqueue(..), Ok(Answer::Abandoned)) => {}
        (Job::Ack { reply, .. }, Ok(Answer::Acked(a))) => drop(reply.send(Ok(a))),
        (Job::AckNotices(_, _, reply), Ok(Answer::Count(n))) => drop(reply.send(Ok(n))),
        (Job::Sweep { reply, .. }, Ok(Answer::Swept(s))) => drop(reply.send(Ok(s))),
        (Job::Enqueue(_, reply), Err(e)) => drop(reply.send(Err(e))),
        (Job::Ack { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (Job::AckNotices(_, _, reply), Err(e)) => drop(reply.send(Err(e))),
        (Job::Sweep { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        _ => unreachable!("one answer per job, of its kind"),
    }
}
