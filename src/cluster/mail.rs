//! Stored mail every node can drain: one JetStream stream, `<prefix>_mail`,
//! with one subject per recipient (`<prefix>.mail.<name key>`), each
//! message a mail record in the store's own format (`store/record.rs`).
//!
//! - **Queued means stored**: a message is `Queued` only once JetStream
//!   acknowledged the publish (with `sync_interval: always` on the NATS
//!   servers, that is on disk; docs/CLUSTER.md). The message id goes in
//!   `Nats-Msg-Id`, so a publish retried after a lost acknowledgement is
//!   stored once.
//! - **A full mailbox is refused, never evicted**: the stream keeps at most
//!   `mailbox_messages` per subject and discards *new* messages per subject,
//!   so the Send that would overflow it is `RecipientBusy`.
//! - **Drained in order on any node**: the recipient's node reads its
//!   subject from the stream leader in sequence order (no consumer per
//!   user: each would be a Raft group), and deletes each message once its
//!   delivery stream was acknowledged.
//! - Messages live the mail lifetime: the nodes' sweep removes expired
//!   ones (and keeps their senders' `Expired` receipts); JetStream's own
//!   `max_age`, a little longer, is the backstop.
//! - **Late receipts** go to a second stream, `<prefix>_notices`, one
//!   subject per sender account (`<prefix>.notice.<name key>`, at most
//!   `notices_per_sender` each, the oldest dropped beyond), a notice record
//!   each (`store/record.rs`); the sender's node serves them like mail.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;

use super::names::name_subject;
use super::{ClusterConfig, ClusterError};
use crate::protocol::NameKey;

/// How long JetStream remembers a `Nats-Msg-Id` (at most the streams' max_age).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// How long one publish or read may take.
const OP_TIMEOUT: Duration = Duration::from_secs(4);

/// The cluster's stored mail.
#[derive(Debug, Clone)]
pub struct SharedMail {
    js: jetstream::Context,
    stream: stream::Stream,
    notices: stream::Stream,
    prefix: String,
}

/// What became of a message handed to [`SharedMail::enqueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored at this stream sequence.
    Stored(u64),
    /// The recipient's mailbox is full.
    Full,
}

/// How stored mail is kept.
#[derive(Debug, Clone, Copy)]
pub struct MailLimits {
    /// Messages a mailbox holds at most.
    pub mailbox_messages: i64,
    /// Bytes one stored message may take at most.
    pub message_bytes: i32,
    /// Bytes all stored messages may take together (a full store refuses
    /// new ones: RecipientBusy).
    pub store_bytes: i64,
    /// How long a late receipt is kept.
    pub ttl: Duration,
    /// How long JetStream keeps a message: a little longer than the mail
    /// lifetime, so that the nodes' sweep finds it expired first and tells
    /// its sender.
    pub keep_for: Duration,
    /// Late receipts kept per sender at most.
    pub notices_per_sender: i64,
}

/// The error of opening (finding or creating) the stream `name`.
fn stream_error(name: &str, e: impl std::fmt::Display) -> ClusterError {
    let text = e.to_string();
    if super::not_ready(&text) {
        ClusterError::NotReady(format!("cannot create the stream {name} yet: {text}"))
    } else {
        ClusterError::Nats(format!("cannot open the stream {name}: {text}"))
    }
}

fn nats(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Nats(format!("stored mail: {e}"))
}

impl SharedMail {
    /// Open (or create) the mail stream.
    pub(crate) async fn open(
        client: async_nats::Client,
        config: &ClusterConfig,
        limits: MailLimits,
    ) -> Result<SharedMail, ClusterError> {
        let js = jetstream::new(client);
        let name = format!("{}_mail", config.prefix);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                description: Some("quic-chat stored mail".to_owned()),
                subjects: vec![format!("{}.mail.>", config.prefix)],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                max_age: limits.keep_for,
                max_messages_per_subject: limits.mailbox_messages,
                max_message_size: limits.message_bytes,
                max_bytes: limits.store_bytes,
                discard: stream::DiscardPolicy::New,
                discard_new_per_subject: true,
                duplicate_window: DUPLICATE_WINDOW.min(limits.keep_for),
                ..Default::default()
            })
            .await
            .map_err(|e| stream_error(&name, e))?;
        let name = format!("{}_notices", config.prefix);
        let notices = js
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                description: Some("quic-chat late receipts".to_owned()),
                subjects: vec![format!("{}.notice.>", config.prefix)],
                storage: stream::StorageType::File,
                num_replicas: config.replicas,
                max_age: limits.ttl,
                max_messages_per_subject: limits.notices_per_sender,
                max_message_size: 1024,
                discard: stream::DiscardPolicy::Old,
                duplicate_window: DUPLICATE_WINDOW.min(limits.ttl),
                ..Default::default()
            })
            .await
            .map_err(|e| stream_error(&name, e))?;
        Ok(SharedMail {
            js,
            stream,
            notices,
            prefix: config.prefix.clone(),
        })
    }

    fn subject(&self, recipient: &NameKey) -> String {
        name_subject(&self.prefix, "mail", recipient)
    }

    fn notice_subject(&self, sender: &NameKey) -> String {
        name_subject(&self.prefix, "notice", sender)
    }

    /// Keep `notice` (an encoded notice record about message `id`) for the
    /// account `sender`; kept once JetStream acknowledged it.
    pub async fn keep_notice(
        &self,
        sender: &NameKey,
        id: u64,
        notice: Bytes,
    ) -> Result<(), ClusterError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("n{id}").as_str());
        tokio::time::timeout(OP_TIMEOUT, async {
            self.js
                .publish_with_headers(self.notice_subject(sender), headers, notice)
                .await?
                .await
        })
        .await
        .map_err(|_| nats("no acknowledgement in time"))?
        .map(drop)
        .map_err(nats)
    }

    /// Up to `limit` late receipts kept for `sender` from sequence
    /// `from_seq` on, in order.
    pub async fn peek_notices(
        &self,
        sender: &NameKey,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, ClusterError> {
        read_subject(&self.notices, self.notice_subject(sender), from_seq, limit).await
    }

    /// Remove the late receipts `seqs` (their sender's connection took them).
    pub async fn remove_notices(&self, seqs: &[u64]) -> Result<u64, ClusterError> {
        remove(&self.notices, seqs).await
    }

    /// Store `record` (an encoded mail record whose message id is `id`) for
    /// `recipient`; stored once JetStream acknowledged it.
    pub async fn enqueue(
        &self,
        recipient: &NameKey,
        id: u64,
        record: Bytes,
    ) -> Result<Enqueued, ClusterError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.to_string().as_str());
        let published = tokio::time::timeout(OP_TIMEOUT, async {
            self.js
                .publish_with_headers(self.subject(recipient), headers, record)
                .await?
                .await
        })
        .await
        .map_err(|_| nats("no acknowledgement in time"))?;
        match published {
            Ok(ack) => Ok(Enqueued::Stored(ack.sequence)),
            // The recipient's mailbox, or the whole store, is full.
            Err(e)
                if e.to_string().contains("maximum messages per subject")
                    || e.to_string().contains("maximum bytes") =>
            {
                Ok(Enqueued::Full)
            }
            Err(e) => Err(nats(e)),
        }
    }

    /// Up to `limit` messages stored for `recipient` from stream sequence
    /// `from_seq` on, in order, as (sequence, record).
    pub async fn peek(
        &self,
        recipient: &NameKey,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Bytes)>, ClusterError> {
        read_subject(&self.stream, self.subject(recipient), from_seq, limit).await
    }

    /// The oldest stored message, of any recipient, from sequence `from_seq`
    /// on: (sequence, record).
    pub async fn oldest(&self, from_seq: u64) -> Result<Option<(u64, Bytes)>, ClusterError> {
        let all = format!("{}.mail.>", self.prefix);
        Ok(read_subject(&self.stream, all, from_seq, 1).await?.pop())
    }

    /// Remove the delivered messages `seqs`; how many were still there.
    pub async fn remove(&self, seqs: &[u64]) -> Result<u64, ClusterError> {
        remove(&self.stream, seqs).await
    }

    /// How many messages are stored for `recipient`.
    pub async fn count(&self, recipient: &NameKey) -> Result<u64, ClusterError> {
        count_subject(&self.stream, self.subject(recipient)).await
    }

    /// How many late receipts are kept for `sender`.
    pub async fn count_notices(&self, sender: &NameKey) -> Result<u64, ClusterError> {
        count_subject(&self.notices, self.notice_subject(sender)).await
    }
}

/// How many messages `stream` holds on `subject` (its per-subject totals).
async fn count_subject(stream: &stream::Stream, subject: String) -> Result<u64, ClusterError> {
    use futures_util::StreamExt;
    let counting = async {
        let mut subjects = stream.info_with_subjects(subject.as_str()).await?;
        let mut total = 0u64;
        while let Some(entry) = subjects.next().await {
            let (_, count) = entry?;
            total += count as u64;
        }
        Ok::<_, async_nats::jetstream::stream::InfoError>(total)
    };
    tokio::time::timeout(OP_TIMEOUT, counting)
        .await
        .map_err(|_| nats("no answer in time"))?
        .map_err(nats)
}

/// Up to `limit` messages of `subject` in `stream` from sequence `from_seq`
/// on, in order, read from the stream's leader.
async fn read_subject(
    stream: &stream::Stream,
    subject: String,
    from_seq: u64,
    limit: usize,
) -> Result<Vec<(u64, Bytes)>, ClusterError> {
    let mut page = Vec::new();
    let mut next = from_seq.max(1);
    while page.len() < limit {
        let read = stream
            .raw_message_builder()
            .next_by_subject(subject.clone())
            .sequence(next)
            .send();
        match tokio::time::timeout(OP_TIMEOUT, read).await {
            Ok(Ok(message)) => {
                next = message.sequence + 1;
                page.push((message.sequence, message.payload));
            }
            Ok(Err(e)) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => break,
            Ok(Err(e)) => return Err(nats(e)),
            Err(_) => return Err(nats("no answer in time")),
        }
    }
    Ok(page)
}

/// Remove `seqs` from `stream`; how many were still there.
async fn remove(stream: &stream::Stream, seqs: &[u64]) -> Result<u64, ClusterError> {
    let deleting = seqs
        .iter()
        .map(|&seq| tokio::time::timeout(OP_TIMEOUT, stream.delete_message(seq)));
    let mut removed = 0;
    for deleted in futures_util::future::join_all(deleting).await {
        match deleted {
            Ok(Ok(true)) => removed += 1,
            Ok(Ok(false)) => {}
            // Already gone (expired, or removed by an earlier attempt).
            Ok(Err(e)) if e.to_string().contains("no message found") => {}
            Ok(Err(e)) => return Err(nats(e)),
            Err(_) => return Err(nats("no answer in time")),
        }
    }
    Ok(removed)
}
