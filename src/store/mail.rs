//! The mailboxes of registered accounts that are not connected: per
//! recipient, messages in acceptance order (a per-recipient `seq`), with
//! counters and the expiry index kept in the same transactions so the caps
//! can never drift.
//!
//! Every mail operation works on [`MailTables`], the tables of mail opened
//! once per write transaction; [`super::writer::MailWriter`] applies a whole
//! batch of operations to one of them and commits once (group commit).
//! Removing a message that came from an account makes its sender a late
//! receipt in the same transaction (`notices.rs`), so a crash can never lose
//! the receipt of a message it removed.

use redb::{ReadableTable, ReadableTableMetadata, Table, WriteTransaction};

use crate::protocol::NameKey;

use super::record::{decode_mail, encode_mail};
use super::schema::{
    ACCOUNTS, EXPIRES_MAIL, EXPIRY, MAIL, MAILBOXES, MAIL_BYTES_KEY, META, NOTICES, NOTICE_BOXES,
};
use super::{MailRecord, NoticeOutcome, NoticeRecord, Store, StoreError};

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

/// Who is owed a late receipt after messages were removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Told {
    /// The senders (lowercased account names, each once) who were kept a
    /// notice: the server rings those who are connected to read them.
    pub(crate) senders: Vec<String>,
    /// The removed messages that came from guests, with what became of
    /// them: nothing is kept for a guest; the server tells the connection
    /// that sent it, if that is still open.
    pub(crate) guests: Vec<(u64, NoticeOutcome)>,
}

/// What removing delivered messages did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Acked {
    /// Messages removed (those still there).
    pub(crate) removed: u64,
    /// Who is owed a late receipt.
    pub(crate) told: Told,
}

/// How much a mailbox holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MailboxCount {
    /// Messages.
    pub(crate) messages: u64,
    /// Bytes of their records.
    pub(crate) bytes: u64,
}

/// What the whole store holds, as the metrics show it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StoreTotals {
    /// Stored messages.
    pub(crate) messages: u64,
    /// Bytes of their records (`mail_bytes`).
    pub(crate) bytes: u64,
    /// Kept late receipts.
    pub(crate) notices: u64,
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
        self.write(|txn| {
            let mut tables = MailTables::open(txn)?;
            let out = batch
                .iter()
                .map(|item| tables.enqueue(item, caps))
                .collect::<Result<Vec<_>, _>>()?;
            tables.finish()?;
            Ok(Ok::<_, ()>(out))
        })
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
                out.push((seq, mail_record(key, seq, v.value())?));
            }
            Ok(out)
        })
    }

    /// Remove the delivered messages `seqs` of `recipient` (those still
    /// there), making their senders' late receipts at `now_ms`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn ack(
        &self,
        recipient: &NameKey,
        seqs: &[u64],
        now_ms: u64,
    ) -> Result<Acked, StoreError> {
        self.write(|txn| {
            let mut tables = MailTables::open(txn)?;
            let mut acked = Acked::default();
            tables.ack(recipient, seqs, now_ms, &mut acked)?;
            tables.finish()?;
            Ok(Ok::<_, ()>(acked))
        })
        .map(|outcome| outcome.unwrap_or_default())
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

    /// Messages, their bytes and kept notices in the whole store, in one
    /// read transaction: the table lengths redb keeps (no scan) and
    /// `mail_bytes`. Nothing in the schema changes for it.
    pub(crate) fn totals(&self) -> Result<StoreTotals, StoreError> {
        self.read(|txn| {
            let meta = txn.open_table(META)?;
            Ok(StoreTotals {
                messages: txn.open_table(MAIL)?.len()?,
                bytes: meta.get(MAIL_BYTES_KEY)?.map_or(0, |v| v.value()),
                notices: txn.open_table(NOTICES)?.len()?,
            })
        })
    }
}

/// The tables of mail and notices, open in one write transaction.
pub(crate) struct MailTables<'txn> {
    pub(super) accounts: Table<'txn, &'static str, &'static [u8]>,
    pub(super) mail: Table<'txn, (&'static str, u64), &'static [u8]>,
    pub(super) boxes: Table<'txn, &'static str, (u64, u64, u64)>,
    pub(super) meta: Table<'txn, &'static str, u64>,
    pub(super) expiry: Table<'txn, (u64, u8, &'static str, u64), ()>,
    pub(super) notices: Table<'txn, (&'static str, u64), &'static [u8]>,
    pub(super) notice_boxes: Table<'txn, &'static str, (u64, u64)>,
    /// The bytes of all mail, written back to `meta` by [`MailTables::finish`].
    pub(super) mail_bytes: u64,
}

impl<'txn> MailTables<'txn> {
    /// Open every table of mail in `txn`.
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        let meta = txn.open_table(META)?;
        let mail_bytes = meta.get(MAIL_BYTES_KEY)?.map_or(0, |v| v.value());
        Ok(MailTables {
            accounts: txn.open_table(ACCOUNTS)?,
            mail: txn.open_table(MAIL)?,
            boxes: txn.open_table(MAILBOXES)?,
            meta,
            expiry: txn.open_table(EXPIRY)?,
            notices: txn.open_table(NOTICES)?,
            notice_boxes: txn.open_table(NOTICE_BOXES)?,
            mail_bytes,
        })
    }

    /// Write back what is kept in memory; call before the commit.
    pub(crate) fn finish(mut self) -> Result<(), StoreError> {
        self.meta.insert(MAIL_BYTES_KEY, self.mail_bytes)?;
        Ok(())
    }

    /// Whether `name` is a registered account.
    pub(super) fn is_account(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.accounts.get(name)?.is_some())
    }

    /// Store one message (see [`Store::enqueue_batch`]).
    pub(crate) fn enqueue(
        &mut self,
        item: &Enqueue,
        caps: MailCaps,
    ) -> Result<Enqueued, StoreError> {
        let to = item.to.as_str();
        if !self.is_account(to)? {
            return Ok(Enqueued::NotRegistered);
        }
        let bytes = encode_mail(&item.mail);
        let len = bytes.len() as u64;
        let (next, count, used) = self.boxes.get(to)?.map_or((1, 0, 0), |v| v.value());
        if count + 1 > caps.mailbox_messages
            || used + len > caps.mailbox_bytes
            || self.mail_bytes + len > caps.store_bytes
        {
            return Ok(Enqueued::Full);
        }
        self.mail.insert((to, next), bytes.as_slice())?;
        self.boxes.insert(to, (next + 1, count + 1, used + len))?;
        self.expiry
            .insert((item.mail.sent_at_ms, EXPIRES_MAIL, to, next), ())?;
        self.mail_bytes += len;
        Ok(Enqueued::Stored(next))
    }

    /// Remove the delivered messages `seqs` of `recipient`; their senders
    /// get a `Delivered` notice made at `now_ms`. Adds to `acked`.
    pub(crate) fn ack(
        &mut self,
        recipient: &NameKey,
        seqs: &[u64],
        now_ms: u64,
        acked: &mut Acked,
    ) -> Result<(), StoreError> {
        for &seq in seqs {
            if let Some(record) = self.remove_mail(recipient.as_str(), seq)? {
                acked.removed += 1;
                if let Some(record) = record {
                    self.tell_sender(&record, NoticeOutcome::Delivered, now_ms, &mut acked.told)?;
                }
            }
        }
        Ok(())
    }

    /// Remove one stored message, with its counters and index entry. `None`
    /// if it was not there; `Some(None)` if it was, but its bytes were
    /// damaged: it is removed all the same (logged), so one bad record can
    /// never stall the acks or the sweep, and its index entry, if any, is
    /// dropped by the sweep when it comes due.
    pub(super) fn remove_mail(
        &mut self,
        to: &str,
        seq: u64,
    ) -> Result<Option<Option<MailRecord>>, StoreError> {
        let Some(old) = self.mail.remove((to, seq))? else {
            return Ok(None);
        };
        let bytes = old.value();
        let freed = bytes.len() as u64;
        let decoded = mail_record(to, seq, bytes);
        drop(old);
        let (next, count, used) = self.boxes.get(to)?.map_or((1, 0, 0), |v| v.value());
        self.boxes.insert(
            to,
            (next, count.saturating_sub(1), used.saturating_sub(freed)),
        )?;
        self.mail_bytes = self.mail_bytes.saturating_sub(freed);
        match decoded {
            Ok(record) => {
                self.expiry
                    .remove((record.sent_at_ms, EXPIRES_MAIL, to, seq))?;
                Ok(Some(Some(record)))
            }
            Err(e) => {
                tracing::error!("removed a damaged stored message: {e}");
                Ok(Some(None))
            }
        }
    }

    /// Make the sender of `record`, if it is an account, a notice of
    /// `outcome`; note who is owed a receipt in `told`.
    pub(super) fn tell_sender(
        &mut self,
        record: &MailRecord,
        outcome: NoticeOutcome,
        now_ms: u64,
        told: &mut Told,
    ) -> Result<(), StoreError> {
        let Some(sender) = record.sender_account.as_deref() else {
            told.guests.push((record.id, outcome));
            return Ok(());
        };
        let notice = NoticeRecord {
            id: record.id,
            outcome,
            made_ms: now_ms,
        };
        if self.keep_notice(sender, notice)? && !told.senders.iter().any(|s| s == sender) {
            told.senders.push(sender.to_owned());
        }
        Ok(())
    }

    /// Delete `recipient`'s whole mailbox: its messages are dropped unread,
    /// and their senders get an `Expired` notice made at `now_ms`.
    pub(crate) fn delete_mailbox(
        &mut self,
        recipient: &NameKey,
        now_ms: u64,
        told: &mut Told,
    ) -> Result<(), StoreError> {
        let to = recipient.as_str();
        let mut seqs = Vec::new();
        for entry in self.mail.range((to, 0)..=(to, u64::MAX))? {
            seqs.push(entry?.0.value().1);
        }
        for seq in seqs {
            if let Some(Some(record)) = self.remove_mail(to, seq)? {
                self.tell_sender(&record, NoticeOutcome::Expired, now_ms, told)?;
            }
        }
        // The seq counter stays: a late acknowledgement of the deleted
        // account's mail must never match a message of a new one.
        let next = self.boxes.get(to)?.map_or(1, |v| v.value().0);
        self.boxes.insert(to, (next, 0, 0))?;
        Ok(())
    }
}

/// Decode the mail record `to/seq`; damaged bytes are [`StoreError::Corrupt`].
fn mail_record(to: &str, seq: u64, bytes: &[u8]) -> Result<MailRecord, StoreError> {
    decode_mail(bytes).map_err(|e| StoreError::Corrupt(format!("the message {to}/{seq}: {e}")))
}
