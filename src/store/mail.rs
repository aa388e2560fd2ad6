//! The mailboxes of registered accounts that are not connected: per
//! recipient, messages in acceptance order (a per-recipient `seq`), with
//! counters kept in the same transactions so the caps can never drift.
//!
//! [`Store::enqueue_batch`] stores many messages in one write transaction
//! (one fsync): the group commit of [`super::writer::MailWriter`].

use redb::{ReadableTable, Table, WriteTransaction};

use crate::protocol::NameKey;

use super::record::{decode_mail, encode_mail};
use super::schema::{ACCOUNTS, MAIL, MAILBOXES, MAIL_BYTES_KEY, META};
use super::{MailRecord, Store, StoreError};

/// The bounds on what the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MailCaps {
    /// Messages in one mailbox.
    pub(crate) mailbox_messages: u64,
    /// Bytes (of mail records) in one mailbox.
    pub(crate) mailbox_bytes: u64,
    /// Bytes of every mailbox together.
    pub(crate) store_bytes: u64,
}

/// One message to store.
#[derive(Debug, Clone)]
pub(crate) struct Enqueue {
    /// The recipient's account.
    pub(crate) to: NameKey,
    /// The message.
    pub(crate) mail: MailRecord,
}

/// What became of one message handed to [`Store::enqueue_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enqueued {
    /// Stored under this seq (committed when the batch call returns).
    Stored(u64),
    /// The recipient has no account: nothing stored.
    NotRegistered,
    /// A cap would be passed: nothing stored.
    Full,
}

/// How much a mailbox holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MailboxCount {
    /// Messages.
    pub(crate) messages: u64,
    /// Bytes of their records.
    pub(crate) bytes: u64,
}

impl Store {
    /// Store every message of `batch` that its recipient's account exists for
    /// and that passes no cap, all in one write transaction, committed
    /// durably before this returns. One answer per message, in order.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn enqueue_batch(
        &self,
        batch: &[Enqueue],
        caps: MailCaps,
    ) -> Result<Vec<Enqueued>, StoreError> {
        self.write(|txn| Ok(Ok::<_, ()>(enqueue_in(txn, batch, caps)?)))
            .map(|outcome| outcome.unwrap_or_default())
    }

    /// Up to `n` stored messages of `recipient` with a seq of at least
    /// `from_seq`, in acceptance order, with their seqs.
    pub(crate) fn peek(
        &self,
        recipient: &NameKey,
        from_seq: u64,
        n: usize,
    ) -> Result<Vec<(u64, MailRecord)>, StoreError> {
        self.read(|txn| {
            let mail = txn.open_table(MAIL)?;
            let key = recipient.as_str();
            let mut out = Vec::new();
            for entry in mail.range((key, from_seq)..=(key, u64::MAX))?.take(n) {
                let (k, v) = entry?;
                let seq = k.value().1;
                let record = decode_mail(v.value())
                    .map_err(|e| StoreError::Corrupt(format!("the message {key}/{seq}: {e}")))?;
                out.push((seq, record));
            }
            Ok(out)
        })
    }

    /// Remove the messages `seqs` of `recipient` (those still there).
    /// Returns how many were removed.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn ack(&self, recipient: &NameKey, seqs: &[u64]) -> Result<u64, StoreError> {
        self.write(|txn| Ok(Ok::<_, ()>(ack_in(txn, recipient, seqs)?)))
            .map(|outcome| outcome.unwrap_or(0))
    }

    /// How much `recipient`'s mailbox holds.
    pub(crate) fn mailbox_count(&self, recipient: &NameKey) -> Result<MailboxCount, StoreError> {
        self.read(|txn| {
            let boxes = txn.open_table(MAILBOXES)?;
            Ok(boxes
                .get(recipient.as_str())?
                .map(|v| {
                    let (_, messages, bytes) = v.value();
                    MailboxCount { messages, bytes }
                })
                .unwrap_or_default())
        })
    }

    /// The bytes of every stored message together.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn mail_bytes(&self) -> Result<u64, StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(META)?;
            Ok(meta.get(MAIL_BYTES_KEY)?.map_or(0, |v| v.value()))
        })
    }
}

/// The body of [`Store::enqueue_batch`].
pub(crate) fn enqueue_in(
    txn: &WriteTransaction,
    batch: &[Enqueue],
    caps: MailCaps,
) -> Result<Vec<Enqueued>, StoreError> {
    let accounts = txn.open_table(ACCOUNTS)?;
    let mut mail = txn.open_table(MAIL)?;
    let mut boxes = txn.open_table(MAILBOXES)?;
    let mut meta = txn.open_table(META)?;
    let mut total = meta.get(MAIL_BYTES_KEY)?.map_or(0, |v| v.value());
    let mut out = Vec::with_capacity(batch.len());
    for item in batch {
        let to = item.to.as_str();
        if accounts.get(to)?.is_none() {
            out.push(Enqueued::NotRegistered);
            continue;
        }
        let bytes = encode_mail(&item.mail);
        let len = bytes.len() as u64;
        let (next, count, used) = boxes.get(to)?.map_or((1, 0, 0), |v| v.value());
        if count + 1 > caps.mailbox_messages
            || used + len > caps.mailbox_bytes
            || total + len > caps.store_bytes
        {
            out.push(Enqueued::Full);
            continue;
        }
        mail.insert((to, next), bytes.as_slice())?;
        boxes.insert(to, (next + 1, count + 1, used + len))?;
        total += len;
        out.push(Enqueued::Stored(next));
    }
    meta.insert(MAIL_BYTES_KEY, total)?;
    Ok(out)
}

/// The body of [`Store::ack`].
pub(crate) fn ack_in(
    txn: &WriteTransaction,
    recipient: &NameKey,
    seqs: &[u64],
) -> Result<u64, StoreError> {
    let mut mail = txn.open_table(MAIL)?;
    let mut boxes = txn.open_table(MAILBOXES)?;
    let mut meta = txn.open_table(META)?;
    let to = recipient.as_str();
    let mut removed = 0;
    let mut freed = 0;
    for &seq in seqs {
        if let Some(old) = mail.remove((to, seq))? {
            removed += 1;
            freed += old.value().len() as u64;
        }
    }
    if removed > 0 {
        let (next, count, used) = boxes.get(to)?.map_or((1, 0, 0), |v| v.value());
        boxes.insert(
            to,
            (
                next,
                count.saturating_sub(removed),
                used.saturating_sub(freed),
            ),
        )?;
        let total = meta.get(MAIL_BYTES_KEY)?.map_or(0, |v| v.value());
        meta.insert(MAIL_BYTES_KEY, total.saturating_sub(freed))?;
    }
    Ok(removed)
}

/// Delete `recipient`'s whole mailbox (in the caller's transaction).
pub(crate) fn delete_mailbox(
    txn: &WriteTransaction,
    recipient: &NameKey,
) -> Result<(), StoreError> {
    let mut mail = txn.open_table(MAIL)?;
    let mut boxes = txn.open_table(MAILBOXES)?;
    let mut meta = txn.open_table(META)?;
    let to = recipient.as_str();
    let freed = boxes.remove(to)?.map_or(0, |v| v.value().2);
    drain_range(&mut mail, to)?;
    let total = meta.get(MAIL_BYTES_KEY)?.map_or(0, |v| v.value());
    meta.insert(MAIL_BYTES_KEY, total.saturating_sub(freed))?;
    Ok(())
}

fn drain_range(mail: &mut Table<(&str, u64), &[u8]>, to: &str) -> Result<(), StoreError> {
    mail.retain_in((to, 0)..=(to, u64::MAX), |_, _| false)?;
    Ok(())
}
