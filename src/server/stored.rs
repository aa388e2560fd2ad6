//! The server's side of store and forward: storing a message for an account
//! that is not connected (through the group-committing writer, or in a
//! cluster the shared mail stream), reading and removing what is drained,
//! and what the sender is told about it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::delivery::Envelope;
use super::guest_receipts::GuestReceipts;
use super::mailbox::Mailbox;
use super::metrics::MailMetrics;
use crate::cluster::Cluster;
use crate::protocol::{NameKey, Status};
use crate::store::{
    Acked, Enqueue, Enqueued, MailCaps, MailRecord, MailWriter, NoticeRecord, Store, StoreError,
    Told,
};

/// A stored message whose delivery was acknowledged, as its removal needs it.
#[derive(Debug, Clone)]
pub(crate) struct Drained {
    /// Its place in the store.
    pub(crate) seq: u64,
    /// Its message id.
    pub(crate) id: u64,
    /// Its sender's account (lowercased), owed a late receipt.
    pub(crate) sender_account: Option<String>,
}

/// Who `senders` are, as [`Told`] names them.
fn told_of(senders: &[NameKey]) -> Told {
    Told {
        senders: senders.iter().map(|key| key.as_str().to_owned()).collect(),
        guests: Vec::new(),
    }
}

/// Why stored mail could not be read or removed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MailError {
    /// This server's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This server's mail writer failed.
    #[error("{0}")]
    Writer(String),
    /// The cluster's mail stream failed.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// A stored record could not be read.
    #[error("a stored message is damaged: {0}")]
    Damaged(String),
}

/// How long a Send may wait for its message's commit before it is answered
/// `RecipientBusy` (a live attempt may have taken up to 5 s of the 10 s).
const STORE_DEADLINE: Duration = Duration::from_secs(4);

/// Stored mail: the store to read, the writer to write.
#[derive(Debug, Clone)]
pub(crate) struct Mail {
    pub(crate) store: Store,
    pub(crate) writer: MailWriter,
    /// Whether guests' messages are stored too.
    pub(crate) guest_mail: bool,
    /// How long stored messages and kept notices live.
    pub(crate) ttl: Duration,
    /// The guest connections waiting for late receipts.
    pub(crate) guests: Arc<GuestReceipts>,
    /// What becomes of stored mail, counted.
    pub(crate) metrics: MailMetrics,
    /// In a cluster: the shared mail stream (and the shared accounts) are
    /// used instead of this server's store.
    pub(crate) shared: Option<Arc<Cluster>>,
}

impl Mail {
    /// Start the writer of `store` with these caps; mail lives for `ttl`
    /// and is counted in `metrics`.
    pub(crate) fn start(
        store: Store,
        caps: MailCaps,
        guest_mail: bool,
        ttl: Duration,
        metrics: MailMetrics,
    ) -> Result<Mail, StoreError> {
        let writer = MailWriter::spawn(store.clone(), caps)?;
        Ok(Mail {
            store,
            writer,
            guest_mail,
            ttl,
            guests: Arc::default(),
            metrics,
            shared: None,
        })
    }

    /// Keep mail in `cluster`'s shared stream instead (a node of a cluster).
    pub(crate) fn shared_by(mut self, cluster: Arc<Cluster>) -> Mail {
        // A guest's late receipt goes to its connection, on whichever node
        // drained the message: not across nodes yet.
        self.guest_mail = false;
        self.shared = Some(cluster);
        self
    }

    /// The cluster and its shared mail stream, if this node keeps mail there.
    fn shared_mail(&self) -> Option<(&Arc<Cluster>, &crate::cluster::SharedMail)> {
        let cluster = self.shared.as_ref()?;
        Some((cluster, cluster.mail()?))
    }

    /// At `now_ms`, the latest time from which a lifetime has ended: what
    /// was accepted (or made) then or earlier has expired.
    pub(crate) fn expiry_cutoff(&self, now_ms: u64) -> u64 {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_sub(ttl_ms)
    }

    /// Store `envelope` for the account `to` from `sender_account` (`None`:
    /// a guest); the status once committed (or why not). A guest's
    /// `reply_to` connection is told the message's late receipt.
    pub(crate) async fn store(
        &self,
        to: NameKey,
        envelope: &Envelope<'_>,
        sender_account: Option<NameKey>,
        reply_to: Option<&Weak<Mailbox>>,
    ) -> Status {
        let mail = MailRecord {
            id: envelope.id,
            from: envelope.from.to_owned(),
            sent_at_ms: envelope.sent_at_ms,
            body: String::from_utf8_lossy(&envelope.body).into_owned(),
            sender_account: sender_account.map(|key| key.as_str().to_owned()),
        };
        if let Some((cluster, stream)) = self.shared_mail() {
            return self.store_shared(cluster, stream, to, &mail).await;
        }
        // Watched before the commit, so that a drain right after it finds
        // the guest's connection.
        let guest = sender_account.is_none();
        if let (true, Some(reply_to)) = (guest, reply_to) {
            self.guests.watch(envelope.id, reply_to.clone());
        }
        let stored =
            tokio::time::timeout(STORE_DEADLINE, self.writer.enqueue(Enqueue { to, mail }));
        let status = match stored.await {
            Ok(Ok(Enqueued::Stored(_))) => {
                self.metrics.queued.inc();
                Status::Queued
            }
            Ok(Ok(Enqueued::NotRegistered)) => Status::NotConnected,
            Ok(Ok(Enqueued::Full)) => Status::RecipientBusy,
            Ok(Err(e)) => {
                tracing::error!("cannot store a message: {e}");
                Status::RecipientBusy
            }
            Err(_elapsed) => {
                tracing::error!("storing a message took over {STORE_DEADLINE:?}");
                Status::RecipientBusy
            }
        };
        if guest && status != Status::Queued {
            self.guests.forget(envelope.id);
        }
        status
    }

    /// Store `mail` for `to` in the cluster's stream, if `to` is an account.
    async fn store_shared(
        &self,
        cluster: &Arc<Cluster>,
        stream: &crate::cluster::SharedMail,
        to: NameKey,
        mail: &MailRecord,
    ) -> Status {
        match tokio::time::timeout(STORE_DEADLINE, cluster.accounts().exists(&to)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => return Status::NotConnected,
            Ok(Err(e)) => {
                tracing::error!("cannot look the recipient's account up: {e}");
                return Status::RecipientBusy;
            }
            Err(_) => return Status::RecipientBusy,
        }
        let record = bytes::Bytes::from(crate::store::encode_mail_record(mail));
        match stream.enqueue(&to, mail.id, record).await {
            Ok(crate::cluster::Enqueued::Stored(_)) => {
                self.metrics.queued.inc();
                // Its node (if it just connected) drains again; the sender
                // does not wait for that.
                let cluster = Arc::clone(cluster);
                tokio::spawn(async move { cluster.ring(&to).await });
                Status::Queued
            }
            Ok(crate::cluster::Enqueued::Full) => Status::RecipientBusy,
            Err(e) => {
                tracing::error!("cannot store a message: {e}");
                Status::RecipientBusy
            }
        }
    }

    /// Up to `n` messages stored for `key` from sequence `from_seq` on, in
    /// the order they were accepted.
    pub(crate) async fn peek(
        &self,
        key: NameKey,
        from_seq: u64,
        n: usize,
    ) -> Result<Vec<(u64, MailRecord)>, MailError> {
        if let Some(stream) = self.shared_mail().map(|(_, stream)| stream) {
            let page = stream.peek(&key, from_seq, n).await?;
            let mut records = Vec::with_capacity(page.len());
            for (seq, bytes) in page {
                match crate::store::decode_mail_record(&bytes) {
                    Ok(record) => records.push((seq, record)),
                    // Left for the stream's lifetime to drop.
                    Err(e) => tracing::error!("skipping damaged stored message {seq}: {e}"),
                }
            }
            return Ok(records);
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.peek(&key, from_seq, n))
            .await
            .map_err(|_| MailError::Damaged("the store task failed".into()))?
            .map_err(MailError::from)
    }

    /// Remove the delivered messages of `key` at `now_ms`; who is owed a
    /// late receipt. In a cluster, each sender account's receipt is kept
    /// (and its node rung) before the message is removed, so a crash in
    /// between sends both again rather than neither.
    pub(crate) async fn ack(
        &self,
        key: NameKey,
        drained: Vec<Drained>,
        now_ms: u64,
    ) -> Result<Acked, MailError> {
        let Some((cluster, stream)) = self.shared_mail() else {
            let seqs = drained.iter().map(|drained| drained.seq).collect();
            return self
                .writer
                .ack(key, seqs, now_ms)
                .await
                .map_err(MailError::Writer);
        };
        let mut senders: Vec<NameKey> = Vec::new();
        let mut keeping = Vec::new();
        for drained in &drained {
            let Some(sender) = drained.sender_account.as_deref() else {
                continue;
            };
            let Ok(sender) = NameKey::new(sender) else {
                continue;
            };
            let notice = crate::store::NoticeRecord {
                id: drained.id,
                outcome: crate::store::NoticeOutcome::Delivered,
                made_ms: now_ms,
            };
            let record =
                bytes::Bytes::copy_from_slice(&crate::store::encode_notice_record(&notice));
            keeping.push(async move { stream.keep_notice(&sender, drained.id, record).await });
            if !senders.contains(&sender) {
                senders.push(sender);
            }
        }
        // A page's receipts all at once (each acknowledged by JetStream
        // before any message is removed).
        for kept in futures_util::future::join_all(keeping).await {
            kept?;
        }
        for sender in &senders {
            cluster.ring_notices(sender).await;
        }
        let seqs: Vec<u64> = drained.iter().map(|drained| drained.seq).collect();
        let removed = stream.remove(&seqs).await?;
        Ok(Acked {
            removed,
            told: Told {
                senders: senders.iter().map(|key| key.as_str().to_owned()).collect(),
                guests: Vec::new(),
            },
        })
    }

    /// In a cluster: remove up to `limit` stored messages accepted at or
    /// before `cutoff`, oldest first, keeping each sender account's
    /// `Expired` receipt (made at `now_ms`) first and ringing its node.
    /// Several nodes may sweep at once: a receipt kept twice is stored once
    /// (its `Nats-Msg-Id`). Returns how many were removed, who was told,
    /// and whether more may be expired.
    pub(crate) async fn sweep_shared(
        &self,
        cutoff: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<(u64, Told, bool), MailError> {
        let Some((cluster, stream)) = self.shared_mail() else {
            return Ok((0, Told::default(), false));
        };
        let (mut removed, mut senders, mut from) = (0, Vec::<NameKey>::new(), 1);
        for _ in 0..limit {
            let Some((seq, bytes)) = stream.oldest(from).await? else {
                return Ok((removed, told_of(&senders), false));
            };
            from = seq + 1;
            let sender = match crate::store::decode_mail_record(&bytes) {
                Ok(record) if record.sent_at_ms > cutoff => {
                    return Ok((removed, told_of(&senders), false));
                }
                Ok(record) => record
                    .sender_account
                    .as_deref()
                    .and_then(|sender| NameKey::new(sender).ok())
                    .map(|sender| (sender, record.id)),
                // A damaged record has no sender to tell; it goes too.
                Err(_) => None,
            };
            // Removed first, told only by the node that removed it: a drain
            // that delivered it meanwhile has kept its Delivered receipt
            // (under the same message id, so the first of the two stands).
            let gone = stream.remove(&[seq]).await?;
            removed += gone;
            if let (1, Some((sender, id))) = (gone, sender) {
                let notice = crate::store::NoticeRecord {
                    id,
                    outcome: crate::store::NoticeOutcome::Expired,
                    made_ms: now_ms,
                };
                let record =
                    bytes::Bytes::copy_from_slice(&crate::store::encode_notice_record(&notice));
                stream.keep_notice(&sender, id, record).await?;
                if !senders.contains(&sender) {
                    cluster.ring_notices(&sender).await;
                    senders.push(sender);
                }
            }
        }
        Ok((removed, told_of(&senders), true))
    }

    /// Up to `n` late receipts kept for the account `sender` from sequence
    /// `from_seq` on, in order.
    pub(crate) async fn peek_notices(
        &self,
        sender: NameKey,
        from_seq: u64,
        n: usize,
    ) -> Result<Vec<(u64, NoticeRecord)>, MailError> {
        if let Some(stream) = self.shared_mail().map(|(_, stream)| stream) {
            let page = stream.peek_notices(&sender, from_seq, n).await?;
            let mut notices = Vec::with_capacity(page.len());
            for (seq, bytes) in page {
                match crate::store::decode_notice_record(&bytes) {
                    Ok(notice) => notices.push((seq, notice)),
                    Err(e) => tracing::error!("skipping damaged late receipt {seq}: {e}"),
                }
            }
            return Ok(notices);
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.peek_notices(&sender, from_seq, n))
            .await
            .map_err(|_| MailError::Damaged("the store task failed".into()))?
            .map_err(MailError::from)
    }

    /// Remove the late receipts `seqs` of `sender` (its connection took them).
    pub(crate) async fn ack_notices(
        &self,
        sender: NameKey,
        seqs: Vec<u64>,
    ) -> Result<(), MailError> {
        if let Some(stream) = self.shared_mail().map(|(_, stream)| stream) {
            stream.remove_notices(&seqs).await?;
            return Ok(());
        }
        self.writer
            .ack_notices(sender, seqs)
            .await
            .map(drop)
            .map_err(MailError::Writer)
    }

    /// Messages waiting for `key` (0 if the store cannot tell).
    pub(crate) async fn waiting(&self, key: NameKey) -> u64 {
        if let Some(stream) = self.shared_mail().map(|(_, stream)| stream) {
            return match stream.count(&key).await {
                Ok(count) => count,
                Err(e) => {
                    tracing::error!("cannot count stored mail: {e}");
                    0
                }
            };
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.mailbox_count(&key)).await {
            Ok(Ok(count)) => count.messages,
            Ok(Err(e)) => {
                tracing::error!("cannot count stored mail: {e}");
                0
            }
            Err(_) => 0,
        }
    }
}
