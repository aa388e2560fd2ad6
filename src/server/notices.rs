//! Late receipts: the server's side of the notices kept in the store. When a
//! stored message is delivered or dropped unread, the store keeps its
//! sender's notice in the same transaction; the sender's connection, if there
//! is one, is rung ([`ring`]) and reads it from the store ([`serve`]), and a
//! sender who is not connected reads it after the stored messages of its
//! next session. Each notice goes out as `Push::Receipt{id, Delivered |
//! Expired}` on a stream of its own and is removed once that stream is
//! acknowledged, so a crash between the two sends it again (clients drop a
//! repeated receipt).

use std::time::Duration;

use tokio::task::JoinSet;

use super::delivery::{self, DeliveryOutcome};
use super::mailbox::Mailbox;
use super::presence::Presence;
use super::state::State;
use super::stored::Mail;
use crate::protocol::{NameKey, Status};
use crate::store::{NoticeOutcome, NoticeRecord, Told};

/// Notices read from the store at a time.
const PAGE: usize = 64;
/// Receipt streams in flight (unacknowledged) at once.
const WINDOW: usize = 16;

/// Tell those `told` names: ring each sender account's connection (a notice
/// was kept for it), and push guests' receipts to the guest connections
/// that sent the messages, if still open.
pub(crate) fn tell(presence: &Presence, mail: &Mail, told: &Told, deadline: Duration) {
    ring(presence, &told.senders);
    let guests: Vec<(u64, Status)> = told
        .guests
        .iter()
        .map(|&(id, outcome)| (id, status_of(outcome)))
        .collect();
    mail.guests
        .tell(&guests, deadline, &mail.metrics.receipts_sent);
}

/// Ring the connection of each of `senders` (lowercased account names) that
/// is connected: a notice was kept for it.
fn ring(presence: &Presence, senders: &[String]) {
    for sender in senders {
        let Ok(key) = NameKey::new(sender) else {
            continue;
        };
        if let Some(mailbox) = presence.connected(&key) {
            if mailbox.is_account() {
                mailbox.ring_notices();
            }
        }
    }
}

/// Deliver the notices kept for `key` on `mailbox`'s connection, then each
/// new one as it is rung, until the connection ends. `from_seq` is where to
/// go on from (kept by the caller across calls on one connection, so a
/// notice this connection refused is not offered to it again).
pub(crate) async fn serve(
    state: &State,
    mail: &Mail,
    mailbox: &Mailbox,
    key: NameKey,
    from_seq: &mut u64,
) {
    // What reads and delivers is boxed, each while it runs: this future
    // lives as long as an account's connection, and idle it holds only its
    // wait for the bell.
    loop {
        let page = match Box::pin(mail.peek_notices(key, *from_seq, PAGE)).await {
            Ok(page) => page,
            Err(e) => {
                // They stay kept, for the next session.
                tracing::error!("cannot read kept receipts: {e}");
                return;
            }
        };
        if let Some(&(last, _)) = page.last() {
            *from_seq = last + 1;
            let (acked, go_on) = Box::pin(deliver_page(state, mailbox, page)).await;
            mail.metrics.receipts_sent.inc_by(acked.len() as u64);
            if !acked.is_empty() {
                if let Err(e) = Box::pin(mail.ack_notices(key, acked)).await {
                    tracing::error!("cannot remove delivered receipts: {e}");
                }
            }
            if !go_on {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = mailbox.notices_rung() => {}
            _ = mailbox.connection().closed() => return,
        }
    }
}

/// Push one page of notices; the seqs acknowledged, and whether to go on.
async fn deliver_page(
    state: &State,
    mailbox: &Mailbox,
    page: Vec<(u64, NoticeRecord)>,
) -> (Vec<u64>, bool) {
    let deadline = state.limits.delivery_timeout;
    let mut in_flight = JoinSet::new();
    let mut acked = Vec::new();
    let mut go_on = true;
    for (seq, notice) in page {
        while go_on && in_flight.len() >= WINDOW {
            go_on = settle(mailbox, in_flight.join_next().await, &mut acked);
        }
        if !go_on {
            break;
        }
        let connection = mailbox.connection().clone();
        in_flight.spawn(async move {
            let status = status_of(notice.outcome);
            let pushed = tokio::time::timeout(
                deadline,
                delivery::push_receipt(&connection, notice.id, status),
            )
            .await
            .unwrap_or(DeliveryOutcome::TimedOut);
            (seq, pushed)
        });
    }
    while let Some(done) = in_flight.join_next().await {
        go_on &= settle(mailbox, Some(done), &mut acked);
    }
    (acked, go_on)
}

/// Record what became of one pushed notice; whether to go on.
fn settle(
    mailbox: &Mailbox,
    done: Option<Result<(u64, DeliveryOutcome), tokio::task::JoinError>>,
    acked: &mut Vec<u64>,
) -> bool {
    match done {
        Some(Ok((seq, DeliveryOutcome::Acked))) => {
            acked.push(seq);
            true
        }
        // Refused on this connection: kept for the next session.
        Some(Ok((_, DeliveryOutcome::Stopped))) => true,
        Some(Ok((_, DeliveryOutcome::TimedOut))) => {
            // Not taken within the delivery budget: stuck, as for messages.
            mailbox.close_too_slow();
            false
        }
        _ => false,
    }
}

/// The wire status of a notice.
fn status_of(outcome: NoticeOutcome) -> Status {
    match outcome {
        NoticeOutcome::Delivered => Status::Delivered,
        NoticeOutcome::Expired => Status::Expired,
    }
}
