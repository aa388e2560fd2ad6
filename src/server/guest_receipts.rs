//! Late receipts for guests. A guest has no account, so nothing is kept for
//! it: the contract gives a guest the late receipts of its stored messages
//! only on the connection that sent them, while that connection is open. The
//! server remembers, in memory, which v2 guest connection sent each stored
//! guest message, and pushes the receipt there when the message is
//! delivered or dropped. A restart forgets them (the connections are gone).

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use super::delivery::{self, DeliveryOutcome};
use prometheus_client::metrics::counter::Counter;

use super::mailbox::Mailbox;
use crate::protocol::Status;

/// The most guest messages watched at once. Beyond it, watches whose
/// connection has gone are dropped first; if all are live, a new message is
/// not watched (its guest gets no late receipt).
const MAX_WATCHED: usize = 65_536;

/// Which guest connection waits for the receipt of which stored message.
#[derive(Debug, Default)]
pub(crate) struct GuestReceipts {
    watched: Mutex<HashMap<u64, Weak<Mailbox>>>,
}

impl GuestReceipts {
    /// Remember that `sender`'s connection sent the stored message `id`.
    pub(crate) fn watch(&self, id: u64, sender: Weak<Mailbox>) {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if watched.len() >= MAX_WATCHED {
            watched.retain(|_, mailbox| mailbox.strong_count() > 0);
            if watched.len() >= MAX_WATCHED {
                tracing::debug!(
                    id,
                    "too many guest messages watched; no late receipt for this one"
                );
                return;
            }
        }
        watched.insert(id, sender);
    }

    /// Stop watching `id` (it was not stored after all).
    pub(crate) fn forget(&self, id: u64) {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        watched.remove(&id);
    }

    /// Push `Push::Receipt{id, status}` for each of `receipts` to the guest
    /// connection that sent it, if it is still open; forget them. Each one
    /// acknowledged is counted in `sent`.
    pub(crate) fn tell(&self, receipts: &[(u64, Status)], deadline: Duration, sent: &Counter) {
        if receipts.is_empty() {
            return;
        }
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let due: Vec<_> = receipts
            .iter()
            .filter_map(|&(id, status)| {
                let mailbox = watched.remove(&id)?.upgrade()?;
                Some((id, status, mailbox.connection().clone()))
            })
            .collect();
        drop(watched);
        for (id, status, connection) in due {
            let sent = sent.clone();
            tokio::spawn(async move {
                let pushed =
                    tokio::time::timeout(deadline, delivery::push_receipt(&connection, id, status))
                        .await;
                if matches!(pushed, Ok(DeliveryOutcome::Acked)) {
                    sent.inc();
                } else {
                    tracing::debug!(id, "a guest's late receipt did not reach it");
                }
            });
        }
    }
}
