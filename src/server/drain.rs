//! Draining an account's stored mail at the start of its v2 session: every
//! stored message, in acceptance order, as the same `Deliver` a live one is
//! (its original id, from and time), each on its own stream opened in order,
//! a window of them in flight; each is removed from the store once its
//! stream is acknowledged, in the transaction that keeps its sender's late
//! receipt (`notices.rs`). Meanwhile the mailbox is Draining (Sends to it
//! are stored behind the backlog); it goes Live once the store is empty.

use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::delivery::{self, DeliveryOutcome, Envelope};
use super::mailbox::Mailbox;
use super::notices;
use super::state::State;
use super::stored::Mail;
use crate::clock::unix_ms;
use crate::protocol::NameKey;

/// Messages read from the store at a time.
const PAGE: usize = 64;
/// Delivery streams in flight (unacknowledged) at once.
const WINDOW: usize = 16;

/// Deliver `key`'s stored mail on `mailbox`'s connection, make it live, then
/// serve the late receipts kept for `key` (after the stored messages, as the
/// contract orders) until the connection ends.
///
/// A message stored for `key` after the drain (a Send that found it offline
/// and was committed just as it connected) rings the mailbox: it is drained
/// then, so it waits for no later session.
pub(crate) async fn run(state: Arc<State>, mail: Mail, mailbox: Arc<Mailbox>, key: NameKey) {
    loop {
        if !drain(&state, &mail, &mailbox, key).await {
            return;
        }
        tokio::select! {
            () = notices::serve(Arc::clone(&state), mail.clone(), Arc::clone(&mailbox), key) => return,
            () = mailbox.mail_rung() => mailbox.drain_again(),
        }
    }
}

/// Deliver `key`'s stored mail, then make the mailbox live; false if the
/// connection (or the store) failed first.
async fn drain(state: &State, mail: &Mail, mailbox: &Mailbox, key: NameKey) -> bool {
    let mut from_seq = 0;
    loop {
        let store = mail.store.clone();
        let page = tokio::task::spawn_blocking(move || store.peek(&key, from_seq, PAGE)).await;
        let page = match page {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => {
                tracing::error!("cannot read stored mail: {e}");
                // Mail stays stored; the mailbox stays Draining (Sends are
                // stored) until the next session tries again.
                return false;
            }
            Err(_) => return false,
        };
        if page.is_empty() {
            if mailbox.go_live().await {
                return true;
            }
            continue;
        }
        let Some(&(last, _)) = page.last() else {
            return false;
        };
        from_seq = last + 1;
        // A message past its lifetime that the sweep has not reached yet is
        // not delivered: the sweep drops it and tells its sender.
        let cutoff = mail.expiry_cutoff(unix_ms());
        let page = page
            .into_iter()
            .filter(|(_, record)| record.sent_at_ms > cutoff)
            .collect();
        let (acked, go_on) = deliver_page(state, mailbox, page).await;
        if !acked.is_empty() {
            match mail.writer.ack(key, acked, unix_ms()).await {
                Ok(acked) => {
                    mail.metrics.drained.inc_by(acked.removed);
                    notices::tell(
                        &state.presence,
                        mail,
                        &acked.told,
                        state.limits.delivery_timeout,
                    );
                }
                Err(e) => tracing::error!("cannot remove delivered mail: {e}"),
            }
        }
        if !go_on {
            return false;
        }
    }
}

/// Deliver one page; the seqs acknowledged, and whether to go on.
async fn deliver_page(
    state: &State,
    mailbox: &Mailbox,
    page: Vec<(u64, crate::store::MailRecord)>,
) -> (Vec<u64>, bool) {
    let connection = mailbox.connection();
    let deadline = state.limits.delivery_timeout;
    let mut in_flight = JoinSet::new();
    let mut acked = Vec::new();
    let mut go_on = true;
    for (seq, record) in page {
        while go_on && in_flight.len() >= WINDOW {
            let outcome = in_flight.join_next().await.and_then(Result::ok);
            go_on = settle(mailbox, outcome, &mut acked);
        }
        if !go_on {
            break;
        }
        let envelope = Envelope {
            id: record.id,
            from: &record.from,
            sent_at_ms: record.sent_at_ms,
            body: Bytes::from(record.body.into_bytes()),
        };
        let Some(frame) = delivery::frame(envelope) else {
            continue;
        };
        // Opened here, one after another: stream order is acceptance order.
        let Ok(Ok(stream)) = tokio::time::timeout(deadline, connection.open_uni()).await else {
            go_on = false;
            break;
        };
        in_flight.spawn(async move {
            let outcome = tokio::time::timeout(deadline, delivery::write_and_wait(stream, frame))
                .await
                .unwrap_or(DeliveryOutcome::TimedOut);
            (seq, outcome)
        });
    }
    while let Some(outcome) = in_flight.join_next().await {
        go_on &= settle(mailbox, outcome.ok(), &mut acked);
    }
    (acked, go_on)
}

/// Record what became of one drained message; whether to go on draining.
fn settle(
    mailbox: &Mailbox,
    outcome: Option<(u64, DeliveryOutcome)>,
    acked: &mut Vec<u64>,
) -> bool {
    match outcome {
        Some((message, DeliveryOutcome::Acked)) => {
            acked.push(message);
            true
        }
        // Refused on this connection: it waits for the next session.
        Some((_, DeliveryOutcome::Stopped | DeliveryOutcome::Oversized)) => true,
        Some((_, DeliveryOutcome::TimedOut)) => {
            mailbox.close_too_slow();
            false
        }
        _ => false,
    }
}
