//! Expiry: stored messages and kept notices live for the server's mail
//! lifetime (`--mail-ttl`), a message counted from when the server accepted
//! it, a notice from when it was made. The sweep reads the `expiry` index
//! from its oldest entry up to the cutoff, so it costs what it removes, not
//! what the store holds. An expired message is dropped unread and its sender
//! (an account) gets an `Expired` notice; an expired notice is dropped.

use redb::ReadableTable;

use super::mail::MailTables;
use super::schema::{EXPIRES_MAIL, EXPIRES_NOTICE};
use super::{NoticeOutcome, Store, StoreError};

/// What one sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Stored messages dropped unread.
    pub(crate) messages: u64,
    /// Kept notices dropped.
    pub(crate) notices: u64,
    /// Who is owed an `Expired` receipt.
    pub(crate) told: super::mail::Told,
    /// Whether more has expired than this sweep's limit took.
    pub(crate) more: bool,
}

impl Store {
    /// Remove up to `limit` messages and notices whose lifetime counts from
    /// `cutoff_ms` or earlier, in one transaction; new notices are made at
    /// `now_ms`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn sweep(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Swept, StoreError> {
        self.write(|txn| {
            let mut tables = MailTables::open(txn)?;
            let swept = tables.sweep(cutoff_ms, now_ms, limit)?;
            tables.finish()?;
            Ok(Ok::<_, ()>(swept))
        })
        .map(|outcome| outcome.unwrap_or_default())
    }
}

impl MailTables<'_> {
    /// The body of [`Store::sweep`].
    pub(crate) fn sweep(
        &mut self,
        cutoff_ms: u64,
        now_ms: u64,
        limit: usize,
    ) -> Result<Swept, StoreError> {
        let mut due = Vec::new();
        let mut swept = Swept::default();
        let end = cutoff_ms.saturating_add(1);
        for entry in self.expiry.range(..(end, 0, "", 0))? {
            if due.len() == limit {
                swept.more = true;
                break;
            }
            let (key, _) = entry?;
            let (since, kind, name, seq) = key.value();
            due.push((since, kind, name.to_owned(), seq));
        }
        for (since, kind, name, seq) in due {
            // Removing the record removes its entry; an entry whose record is
            // gone is removed all the same, so the sweep never sticks on it.
            self.expiry.remove((since, kind, name.as_str(), seq))?;
            match kind {
                EXPIRES_MAIL => {
                    if let Some(record) = self.remove_mail(&name, seq)? {
                        swept.messages += 1;
                        if let Some(record) = record {
                            self.tell_sender(
                                &record,
                                NoticeOutcome::Expired,
                                now_ms,
                                &mut swept.told,
                            )?;
                        }
                    }
                }
                EXPIRES_NOTICE => swept.notices += self.ack_notices(&name, &[seq])?,
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "expiry kind {other} for {name}/{seq}"
                    )))
                }
            }
        }
        Ok(swept)
    }
}
