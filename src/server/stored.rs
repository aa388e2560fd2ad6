//! The server's side of store and forward: storing a message for an account
//! that is not connected (through the group-committing writer), and what
//! the sender is told about it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::delivery::Envelope;
use super::guest_receipts::GuestReceipts;
use super::mailbox::Mailbox;
use super::metrics::MailMetrics;
use crate::protocol::{NameKey, Status};
use crate::store::{Enqueue, Enqueued, MailCaps, MailRecord, MailWriter, Store, StoreError};

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
        })
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

    /// Messages waiting for `key` (0 if the store cannot tell).
    pub(crate) async fn waiting(&self, key: NameKey) -> u64 {
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
