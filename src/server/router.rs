//! The Send policy: which checks a message passes, where it goes, and the one
//! place where what happened to it becomes the `Status` its sender is told.

use std::sync::{Mutex, Weak};

use bytes::Bytes;

use super::delivery::{DeliveryOutcome, Envelope};
use super::mailbox::Mailbox;
use super::presence::Route;
use super::rate::TokenBucket;
use super::state::State;
use crate::clock::unix_ms;
use crate::protocol::{NameKey, Status, MAX_BODY_BYTES};

/// Every Send is answered within 10 s; a route through another node that
/// falls back to the store keeps inside this.
const SEND_BUDGET: std::time::Duration = std::time::Duration::from_millis(9_500);

/// The sending side of a Send, as the router needs it.
#[derive(Debug)]
pub(crate) struct Sender {
    /// The sender's registered name, stamped on every delivery.
    pub(crate) name: std::sync::Arc<str>,
    /// The sender's account, if registered: only then is its mail stored.
    pub(crate) account: Option<NameKey>,
    /// The sender's rate limit, if the server has one.
    pub(crate) rate: Option<Mutex<TokenBucket>>,
    /// A v2 guest's own connection, told the late receipts of its stored
    /// messages (an account's are kept for it instead; v1 gets none).
    pub(crate) reply_to: Option<Weak<Mailbox>>,
}

impl Sender {
    /// A sender named `name`, limited as `state`'s limits say.
    pub(crate) fn new(
        name: std::sync::Arc<str>,
        account: Option<NameKey>,
        reply_to: Option<Weak<Mailbox>>,
        state: &State,
    ) -> Self {
        let limits = &state.limits;
        Sender {
            name,
            account,
            rate: (limits.rate_limit > 0.0)
                .then(|| Mutex::new(TokenBucket::new(limits.rate_limit, limits.rate_burst))),
            reply_to,
        }
    }

    fn over_rate(&self) -> bool {
        self.rate
            .as_ref()
            .is_some_and(|rate| !rate.lock().unwrap_or_else(|e| e.into_inner()).try_take())
    }
}

/// Handle one Send: every Send gets a fresh id and exactly one status.
/// `body` is valid UTF-8 (a slice of the decoded request).
pub(crate) async fn route_send(
    state: &State,
    from: &Sender,
    to: &str,
    body: Bytes,
) -> (u64, Status) {
    let id = state.ids.next();
    // The contract gives an over-long body TooLarge whatever else is wrong.
    if body.len() > MAX_BODY_BYTES {
        return (id, Status::TooLarge);
    }
    if from.over_rate() {
        return (id, Status::RateLimited);
    }
    let Ok(key) = NameKey::new(to) else {
        return (id, Status::InvalidRecipient);
    };
    let sent_at_ms = unix_ms();
    let envelope = Envelope {
        id,
        from: &from.name,
        sent_at_ms,
        body,
    };
    // Mail is stored for accounts, from accounts (or from guests where the
    // operator allows it), and only if the server keeps mail.
    let mail = state
        .mail
        .as_ref()
        .filter(|mail| from.account.is_some() || mail.guest_mail)
        .map(|mail| (mail, from.account));
    let mailbox = match state.presence.locate(&key) {
        Route::Local(mailbox) => mailbox,
        Route::Elsewhere(remote) => {
            let accepted = std::time::Instant::now();
            let remote_envelope = Envelope {
                id,
                from: &from.name,
                sent_at_ms,
                body: envelope.body.clone(),
            };
            match Box::pin(remote.deliver(&key, remote_envelope)).await {
                // Refused there: stored for an account (the store says
                // NotConnected for anyone else), as on one node.
                Some(DeliveryOutcome::Stopped | DeliveryOutcome::Lost) if mail.is_some() => {}
                Some(outcome) => return (id, status_of(outcome)),
                None => {}
            }
            // Online nowhere in the cluster, or refused where it is: stored
            // within what is left of the Send's 10 s.
            let left = SEND_BUDGET.saturating_sub(accepted.elapsed());
            let stored = tokio::time::timeout(
                left,
                Box::pin(store_offline(state, mail, key, &envelope, from)),
            );
            return (id, stored.await.unwrap_or(Status::RecipientBusy));
        }
        Route::Unknown => {
            let stored = Box::pin(store_offline(state, mail, key, &envelope, from));
            return (id, stored.await);
        }
    };
    // Only what a refused delivery needs is kept across the delivery (this
    // future lives in every request's task): the mail store and the body.
    let kept = match mail {
        Some((mail, sender)) if mailbox.is_account() => {
            if let Some(_hold) = mailbox.hold_if_draining() {
                // Behind the backlog that is draining, never ahead of it.
                let stored = Box::pin(mail.store(key, &envelope, sender, from.reply_to.as_ref()));
                return (id, stored.await);
            }
            Some((mail, envelope.body.clone()))
        }
        _ => None,
    };
    let outcome = mailbox
        .deliver(
            envelope,
            state.limits.delivery_timeout,
            &state.metrics.deliveries,
        )
        .await;
    match (outcome, kept) {
        (DeliveryOutcome::Stopped | DeliveryOutcome::Lost, Some((mail, body))) => {
            // This connection refused it: it waits for the next session,
            // and a later drain on this connection skips it.
            mailbox.refuse(id);
            // Stored as it was sent: same id, same time.
            let envelope = Envelope {
                id,
                from: &from.name,
                sent_at_ms,
                body,
            };
            let stored = Box::pin(mail.store(key, &envelope, from.account, from.reply_to.as_ref()));
            (id, stored.await)
        }
        (outcome, _) => (id, status_of(outcome)),
    }
}

/// A Send to a name online nowhere: stored for an account if the server
/// keeps mail for this sender (the store answers NotConnected for a name
/// with no account), else NotConnected.
async fn store_offline(
    state: &State,
    mail: Option<(&super::stored::Mail, Option<NameKey>)>,
    key: NameKey,
    envelope: &Envelope<'_>,
    from: &Sender,
) -> Status {
    let Some((mail, sender)) = mail else {
        return Status::NotConnected;
    };
    let status = mail
        .store(key, envelope, sender, from.reply_to.as_ref())
        .await;
    // The recipient may have connected, and finished its drain, while this
    // was committed: have it drain again.
    if status == Status::Queued {
        if let Some(mailbox) = state.presence.connected(&key) {
            mailbox.ring_mail();
        }
    }
    status
}

/// What a sender is told about a live delivery that was not stored instead.
fn status_of(outcome: DeliveryOutcome) -> Status {
    match outcome {
        DeliveryOutcome::Acked => Status::Delivered,
        DeliveryOutcome::Stopped | DeliveryOutcome::Lost => Status::NotConnected,
        DeliveryOutcome::TimedOut | DeliveryOutcome::Busy => Status::RecipientBusy,
        DeliveryOutcome::Oversized => Status::TooLarge,
    }
}
