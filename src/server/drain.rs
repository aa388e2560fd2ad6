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
use super::stored::{Drained, Mail};
use crate::clock::unix_ms;
use crate::protocol::NameKey;

/// Messages read from the store at a time (one read transaction, and one
/// commit removing those acknowledged). 64 a page with 16 in flight drained
/// 10–28k messages/s at 0.3–0.5 server cores; 256 with 64 in flight drained
/// 47–74k/s, at half the server CPU per message (docs/BENCHMARKS.md). A page
/// holds at most a mailbox's bytes (`--mailbox-max-bytes`) in memory.
const PAGE: usize = 256;
/// Delivery streams in flight (unacknowledged) at once: as many as the
/// client library reads ahead, well within the 256 it allows the server.
const WINDOW: usize = 64;

/// Deliver `key`'s stored mail (`state` keeps mail) on `mailbox`'s
/// connection, make it live, then serve the late receipts kept for `key`
/// (after the stored messages, as the contract orders) until the connection
/// ends.
///
/// A message stored for `key` after the drain (a Send that found it offline
/// and was committed just as it connected) rings the mailbox: it is drained
/// then, so it waits for no later session.
///
/// A drain again goes on from where the last one stopped: what this
/// connection was offered before (and refused) waits for the next session.
///
/// The drain is boxed while it runs: this future lives as long as the
/// connection, and idle it holds only its waits (624 bytes; 3.2 KB when the
/// drain was inline).
pub(crate) async fn run(state: Arc<State>, mailbox: Arc<Mailbox>, key: NameKey) {
    let Some(mail) = state.mail.as_ref() else {
        return;
    };
    let (mut mail_from, mut notices_from) = (0, 0);
    loop {
        if !Box::pin(drain(&state, mail, &mailbox, key, &mut mail_from)).await {
            return;
        }
        let serving = notices::serve(&state, mail, &mailbox, key, &mut notices_from);
        tokio::select! {
            () = serving => return,
            () = mailbox.mail_rung() => mailbox.drain_again(),
        }
    }
}

/// Deliver `key`'s stored mail, then make the mailbox live; false if the
/// connection (or the store) failed first.
///
/// The mailbox goes live as soon as the last stored message's stream is
/// opened, before it is acknowledged: stream order is what keeps a live
/// message behind the stored ones, and waiting for acknowledgements would
/// let a sender who answers every message at once keep the mailbox draining
/// (each message stored, then drained) for as long as the chat goes on. At
/// most one page waits for its acknowledgements while the next is read.
async fn drain(
    state: &State,
    mail: &Mail,
    mailbox: &Mailbox,
    key: NameKey,
    from: &mut u64,
) -> bool {
    let mut from_seq = *from;
    let mut unsettled: Option<Opened> = None;
    loop {
        *from = from_seq;
        // Taken before the read: a Send stored behind the drain that
        // finishes after this is not in the page, and go_live then reads again.
        let mark = mailbox.drain_mark();
        let page = match mail.peek(key, from_seq, PAGE).await {
            Ok(page) => page,
            Err(e) => {
                tracing::error!("cannot read stored mail: {e}");
                // Mail stays stored for the next session; live messages
                // flow meanwhile (they cannot wait on a store that fails).
                mailbox.force_live();
                if let Some(opened) = unsettled.take() {
                    settle_page(state, mail, mailbox, key, opened).await;
                }
                return false;
            }
        };
        if page.is_empty() {
            if mailbox.go_live(mark).await {
                return match unsettled.take() {
                    Some(opened) => settle_page(state, mail, mailbox, key, opened).await,
                    None => true,
                };
            }
            continue;
        }
        let Some(&(last, _)) = page.last() else {
            return false;
        };
        from_seq = last + 1;
        *from = from_seq;
        // A message past its lifetime that the sweep has not reached yet is
        // not delivered: the sweep drops it and tells its sender.
        let cutoff = mail.expiry_cutoff(unix_ms());
        let page = page
            .into_iter()
            .filter(|(_, record)| record.sent_at_ms > cutoff && !mailbox.refused(record.id))
            .collect();
        if let Some(opened) = unsettled.take() {
            if !settle_page(state, mail, mailbox, key, opened).await {
                return false;
            }
        }
        let opened = open_page(state, mailbox, page).await;
        if !opened.go_on {
            settle_page(state, mail, mailbox, key, opened).await;
            return false;
        }
        unsettled = Some(opened);
    }
}

/// A page whose delivery streams are all opened, in order.
struct Opened {
    /// The deliveries not settled yet.
    in_flight: JoinSet<(Drained, DeliveryOutcome)>,
    /// The messages acknowledged so far.
    acked: Vec<Drained>,
    /// False once the connection failed or the recipient was too slow.
    go_on: bool,
}

/// Open one page's delivery streams in acceptance order, a window of them
/// in flight (waiting for the oldest when the window is full).
async fn open_page(
    state: &State,
    mailbox: &Mailbox,
    page: Vec<(u64, crate::store::MailRecord)>,
) -> Opened {
    let connection = mailbox.connection();
    let deadline = state.limits.delivery_timeout;
    let mut opened = Opened {
        in_flight: JoinSet::new(),
        acked: Vec::new(),
        go_on: true,
    };
    for (seq, record) in page {
        while opened.go_on && opened.in_flight.len() >= WINDOW {
            let outcome = opened.in_flight.join_next().await.and_then(Result::ok);
            opened.go_on = settle(mailbox, outcome, &mut opened.acked);
        }
        if !opened.go_on {
            break;
        }
        let drained = Drained {
            seq,
            id: record.id,
            sender_account: record.sender_account.clone(),
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
        let opening = tokio::time::timeout(deadline, connection.open_uni()).await;
        let Ok(Ok(stream)) = opening else {
            if opening.is_err() {
                // No stream credit within the delivery budget: stuck.
                mailbox.close_too_slow();
            }
            opened.go_on = false;
            break;
        };
        opened.in_flight.spawn(async move {
            let outcome = tokio::time::timeout(deadline, delivery::write_and_wait(stream, frame))
                .await
                .unwrap_or(DeliveryOutcome::TimedOut);
            (drained, outcome)
        });
    }
    opened
}

/// Wait for the rest of a page's deliveries, then remove the acknowledged
/// ones from the store (making their senders' late receipts); whether to go on.
async fn settle_page(
    state: &State,
    mail: &Mail,
    mailbox: &Mailbox,
    key: NameKey,
    mut opened: Opened,
) -> bool {
    while let Some(outcome) = opened.in_flight.join_next().await {
        opened.go_on &= settle(mailbox, outcome.ok(), &mut opened.acked);
    }
    if !opened.acked.is_empty() {
        match mail.ack(key, opened.acked, unix_ms()).await {
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
    opened.go_on
}

/// Record what became of one drained message; whether to go on draining.
fn settle(
    mailbox: &Mailbox,
    outcome: Option<(Drained, DeliveryOutcome)>,
    acked: &mut Vec<Drained>,
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
