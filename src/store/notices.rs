//! Late receipts kept for their senders: when a stored message is delivered
//! or dropped unread, its sender (an account) is owed a
//! `Push::Receipt{id, Delivered | Expired}`. The notice is made in the same
//! transaction that removes the message and kept here, per sender in the
//! order made, until the sender's connection acknowledges it: a sender who
//! is connected reads it at once, one who is not at its next session, after
//! its stored messages.
//!
//! Each sender keeps at most [`NOTICES_PER_SENDER`]; a new notice beyond that
//! drops the oldest. Notices expire like messages (`expiry.rs`), counted from
//! when they were made.

use redb::ReadableTable;

use crate::protocol::NameKey;

use super::mail::MailTables;
use super::record::{decode_notice, encode_notice};
use super::schema::{EXPIRES_NOTICE, NOTICES, NOTICE_BOXES};
use super::{NoticeRecord, Store, StoreError};

/// The most notices kept for one sender; a new one beyond it drops the oldest.
pub(crate) const NOTICES_PER_SENDER: u64 = 1000;

impl Store {
    /// Up to `n` notices kept for `sender` with a seq of at least `from_seq`,
    /// in the order they were made, with their seqs.
    pub(crate) fn peek_notices(
        &self,
        sender: &NameKey,
        from_seq: u64,
        n: usize,
    ) -> Result<Vec<(u64, NoticeRecord)>, StoreError> {
        self.read(|txn| {
            let notices = txn.open_table(NOTICES)?;
            let key = sender.as_str();
            let mut out = Vec::new();
            for entry in notices.range((key, from_seq)..=(key, u64::MAX))?.take(n) {
                let (k, v) = entry?;
                let seq = k.value().1;
                out.push((seq, notice_record(key, seq, v.value())?));
            }
            Ok(out)
        })
    }

    /// How many notices are kept for `sender`.
    pub(crate) fn notice_count(&self, sender: &NameKey) -> Result<u64, StoreError> {
        self.read(|txn| {
            let boxes = txn.open_table(NOTICE_BOXES)?;
            Ok(boxes.get(sender.as_str())?.map_or(0, |v| v.value().1))
        })
    }

    /// Remove the notices `seqs` of `sender` (those still there); how many.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn ack_notices(&self, sender: &NameKey, seqs: &[u64]) -> Result<u64, StoreError> {
        self.write(|txn| {
            let mut tables = MailTables::open(txn)?;
            let removed = tables.ack_notices(sender.as_str(), seqs)?;
            tables.finish()?;
            Ok(Ok::<_, ()>(removed))
        })
        .map(|outcome| outcome.unwrap_or(0))
    }
}

impl MailTables<'_> {
    /// Keep `notice` for the account `sender`, dropping its oldest notice if
    /// it has [`NOTICES_PER_SENDER`]. False (nothing kept) if `sender` is no
    /// longer an account.
    pub(crate) fn keep_notice(
        &mut self,
        sender: &str,
        notice: NoticeRecord,
    ) -> Result<bool, StoreError> {
        if !self.is_account(sender)? {
            return Ok(false);
        }
        let (next, mut count) = self.notice_boxes.get(sender)?.map_or((1, 0), |v| v.value());
        if count >= NOTICES_PER_SENDER {
            let oldest = self
                .notices
                .range((sender, 0)..=(sender, u64::MAX))?
                .next()
                .transpose()?
                .map(|(k, _)| k.value().1);
            if let Some(seq) = oldest {
                if self.remove_notice(sender, seq)? {
                    count -= 1;
                }
            }
        }
        self.notices
            .insert((sender, next), encode_notice(&notice).as_slice())?;
        self.expiry
            .insert((notice.made_ms, EXPIRES_NOTICE, sender, next), ())?;
        self.notice_boxes.insert(sender, (next + 1, count + 1))?;
        Ok(true)
    }

    /// Remove the notices `seqs` of `sender` (those still there); how many.
    pub(crate) fn ack_notices(&mut self, sender: &str, seqs: &[u64]) -> Result<u64, StoreError> {
        let mut removed = 0;
        for &seq in seqs {
            if self.remove_notice(sender, seq)? {
                removed += 1;
            }
        }
        if removed > 0 {
            let key = sender;
            let (next, count) = self.notice_boxes.get(key)?.map_or((1, 0), |v| v.value());
            self.notice_boxes
                .insert(key, (next, count.saturating_sub(removed)))?;
        }
        Ok(removed)
    }

    /// Delete every notice kept for `sender` (its account is deleted).
    pub(crate) fn delete_notices(&mut self, sender: &NameKey) -> Result<(), StoreError> {
        let key = sender.as_str();
        let mut seqs = Vec::new();
        for entry in self.notices.range((key, 0)..=(key, u64::MAX))? {
            seqs.push(entry?.0.value().1);
        }
        for seq in seqs {
            self.remove_notice(key, seq)?;
        }
        // The seq counter stays, as for mailboxes (`MailTables::delete_mailbox`).
        let next = self.notice_boxes.get(key)?.map_or(1, |v| v.value().0);
        self.notice_boxes.insert(key, (next, 0))?;
        Ok(())
    }

    /// Remove one notice and its index entry, leaving the box's count to the
    /// caller; whether it was there.
    pub(super) fn remove_notice(&mut self, sender: &str, seq: u64) -> Result<bool, StoreError> {
        let Some(old) = self.notices.remove((sender, seq))? else {
            return Ok(false);
        };
        let notice = notice_record(sender, seq, old.value());
        drop(old);
        match notice {
            Ok(notice) => {
                self.expiry
                    .remove((notice.made_ms, EXPIRES_NOTICE, sender, seq))?;
            }
            // Removed all the same (see `MailTables::remove_mail`).
            Err(e) => tracing::error!("removed a damaged kept receipt: {e}"),
        }
        Ok(true)
    }
}

/// Decode the notice `sender/seq`; damaged bytes are [`StoreError::Corrupt`].
fn notice_record(sender: &str, seq: u64, bytes: &[u8]) -> Result<NoticeRecord, StoreError> {
    decode_notice(bytes).map_err(|e| StoreError::Corrupt(format!("the notice {sender}/{seq}: {e}")))
}
