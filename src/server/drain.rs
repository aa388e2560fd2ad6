//! Draining an account's stored mail at the start of its v2 session: every
//! stored message, in acceptance order, as the same `Deliver` a live one is
//! (its original id, from and time), each on its own stream opened in order,
//! a window of them in flight; each is removed from the store once its
//! stream is acknowledged, and its sender, if connected, gets a late
//! `Push::Receipt{Delivered}`. Meanwhile the mailbox is Draining (Sends to it
//! are stored behind the backlog); it goes Live once the store is empty.

use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::delivery::{self, DeliveryOutcome, Envelope};
use super::mailbox::Mailbox;
use super::state::State;
use super::stored::Mail;
use crate::protocol::{NameKey, Status};

/// Messages read from the store at a time (one read transaction, and one
/// commit removing those acknowledged). 64 a page with 16 in flight drained
/// 10–28k messages/s at 0.3–0.5 server cores; 256 with 64 in flight drained
/// 47–74k/s, at half the server CPU per message (docs/BENCHMARKS.md). A page
/// holds at most a mailbox's bytes (`--mailbox-max-bytes`) in memory.
const PAGE: usize = 256;
/// Delivery streams in flight (unacknowledged) at once: as many as the
/// client library reads ahead, well within the 256 it allows the server.
const WINDOW: usize = 64;

/// Deliver `key`'s stored mail on `mailbox`'s connection, then make it live.
pub(crate) async fn run(state: Arc<State>, mail: Mail, mailbox: Arc<Mailbox>, key: NameKey) {
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
                return;
            }
            Err(_) => return,
        };
        if page.is_empty() {
            if mailbox.go_live().await {
                return;
            }
            continue;
        }
        let Some(&(last, _)) = page.last() else {
            return;
        };
        from_seq = last + 1;
        let (acked, go_on) = deliver_page(&state, &mailbox, page).await;
        if !acked.is_empty() {
            let (seqs, delivered): (Vec<u64>, Vec<_>) = acked
                .into_iter()
                .map(|acked| (acked.seq, (acked.id, acked.sender)))
                .unzip();
            match mail.writer.ack(key, seqs).await {
                Ok(_) => tell_senders(&state, delivered),
                Err(e) => tracing::error!("cannot remove delivered mail: {e}"),
            }
        }
        if !go_on {
            return;
        }
    }
}

/// Tell each connected sender of a delivered stored message so, with a late
/// `Push::Receipt{id, Delivered}` on a stream of its own. Only accounts'
/// mail is stored, and an account connects only on v2, so every such sender
/// speaks v2. (A sender who is offline is not told: kept notices are not
/// built yet.)
fn tell_senders(state: &State, delivered: Vec<(u64, Option<String>)>) {
    for (id, sender) in delivered {
        let Some(sender) = sender.and_then(|name| NameKey::new(&name).ok()) else {
            continue;
        };
        let Some(mailbox) = state.presence.connected(&sender) else {
            continue;
        };
        if !mailbox.is_account() {
            continue;
        }
        let connection = mailbox.connection().clone();
        let deadline = state.limits.delivery_timeout;
        tokio::spawn(async move {
            let sent = tokio::time::timeout(
                deadline,
                delivery::push_receipt(&connection, id, Status::Delivered),
            )
            .await;
            if !matches!(sent, Ok(DeliveryOutcome::Acked)) {
                tracing::debug!(id, "a late receipt did not reach its sender");
            }
        });
    }
}

/// A drained message its recipient acknowledged.
struct Acked {
    /// Its place in the mailbox.
    seq: u64,
    /// Its message id.
    id: u64,
    /// Its sender's account, to tell of the delivery.
    sender: Option<String>,
}

/// Deliver one page; the messages acknowledged, and whether to go on.
async fn deliver_page(
    state: &State,
    mailbox: &Mailbox,
    page: Vec<(u64, crate::store::MailRecord)>,
) -> (Vec<Acked>, bool) {
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
        let acked_as = Acked {
            seq,
            id: record.id,
            sender: record.sender_account,
        };
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
            (acked_as, outcome)
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
    outcome: Option<(Acked, DeliveryOutcome)>,
    acked: &mut Vec<Acked>,
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
