//! One online user as senders see them: where their deliveries go, and the
//! bounded backlog of messages on their way to them.
//!
//! A mailbox is Live (each message goes straight out on its own stream, the
//! zero-copy fast path), or Draining: an account's v2 session starts so while
//! its stored backlog is delivered, and every Send to it meanwhile is stored
//! behind the backlog instead, so no live message overtakes a stored one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError};

use super::config::DELIVERY_OVERHEAD_BYTES;
use super::delivery::{self, DeliveryOutcome, Envelope};
use super::metrics::DeliveryMetrics;
use crate::protocol::{codec, CloseCode, Fingerprint};

/// The deliveries of one connected user.
#[derive(Debug)]
pub(crate) struct Mailbox {
    /// The name as registered (original letter case).
    pub(crate) name: Arc<str>,
    /// The device key the connection proved, for an account; `None` for a guest.
    pub(crate) device: Option<Fingerprint>,
    /// The user's connection, on which deliveries are opened.
    connection: quinn::Connection,
    /// Backlog budget in bytes (each message costs its frame bound plus
    /// [`DELIVERY_OVERHEAD_BYTES`]); closed when the user leaves.
    backlog: Semaphore,
    /// Whether the stored backlog is still draining (checked without the lock
    /// on the fast path; changed only under `drain`).
    draining: AtomicBool,
    /// Sends being stored while draining, and the ids refused.
    drain: Mutex<DrainState>,
    /// Rung when a late receipt was kept for this account (`notices.rs`).
    notice_bell: tokio::sync::Notify,
    /// Rung when a message was stored for this account after its drain
    /// ended (a Send that found it offline, committed as it connected).
    mail_bell: tokio::sync::Notify,
    /// Rung (for every waiter) when the mailbox goes live, and when a Send
    /// stored during the drain is committed (one bell for both: each waiter
    /// checks what it waits for, and a mailbox is 32 bytes smaller).
    live_bell: tokio::sync::Notify,
}

/// Sends stored behind a draining backlog: how many are being stored now,
/// and how many have finished (so the drain can tell whether one was
/// committed after it last read the store).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DrainCount {
    pending: u32,
    finished: u64,
}

/// What the drain keeps under the mailbox's lock.
#[derive(Debug, Default)]
struct DrainState {
    /// Sends being stored while draining; the drain ends only at 0 pending.
    count: DrainCount,
    /// Ids of messages this connection refused (stopped) or lost: they wait
    /// for the next session, and a later drain on this one skips them.
    /// Made at the first: most connections refuse nothing, and an empty set
    /// is 48 bytes in every mailbox.
    #[expect(clippy::box_collection, reason = "boxed to be 8 bytes while empty")]
    refused: Option<Box<std::collections::HashSet<u64>>>,
}

/// The most refused ids a connection remembers (beyond it, a later drain on
/// the same connection may offer one again; the client drops repeats).
const MAX_REFUSED: usize = 4096;

/// A Send being stored behind a draining backlog; dropping it tells the drain.
pub(crate) struct Holding<'a>(&'a Mailbox);

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        let mut drain = self.0.drain.lock().unwrap_or_else(|e| e.into_inner());
        drain.count.pending -= 1;
        drain.count.finished += 1;
        drop(drain);
        self.0.live_bell.notify_waiters();
    }
}

impl Mailbox {
    /// The mailbox of `name` (an account's when `device` is set), connected
    /// on `connection`, with a backlog budget of `backlog_bytes`.
    pub(crate) fn new(
        name: Arc<str>,
        device: Option<Fingerprint>,
        connection: quinn::Connection,
        backlog_bytes: usize,
        draining: bool,
    ) -> Self {
        Mailbox {
            name,
            device,
            connection,
            backlog: Semaphore::new(backlog_bytes.min(Semaphore::MAX_PERMITS)),
            draining: AtomicBool::new(draining),
            drain: Mutex::new(DrainState::default()),
            notice_bell: tokio::sync::Notify::new(),
            mail_bell: tokio::sync::Notify::new(),
            live_bell: tokio::sync::Notify::new(),
        }
    }

    /// Tell this account's connection that a message was stored for it
    /// while it was connected.
    pub(crate) fn ring_mail(&self) {
        self.mail_bell.notify_one();
    }

    /// Wait until [`Mailbox::ring_mail`] is called.
    pub(crate) async fn mail_rung(&self) {
        self.mail_bell.notified().await;
    }

    /// Go back to Draining (stored mail turned up after the drain): Sends
    /// are stored behind it again until the drain finds the store empty.
    pub(crate) fn drain_again(&self) {
        let _count = self.drain.lock().unwrap_or_else(|e| e.into_inner());
        self.draining.store(true, Ordering::Release);
    }

    /// Tell this account's connection that a late receipt was kept for it.
    /// A ring while nobody waits is kept (once) for the next wait.
    pub(crate) fn ring_notices(&self) {
        self.notice_bell.notify_one();
    }

    /// Wait until [`Mailbox::ring_notices`] is called.
    pub(crate) async fn notices_rung(&self) {
        self.notice_bell.notified().await;
    }

    /// While the backlog drains: a hold that makes the caller store its
    /// message (the drain waits for it). `None` once the mailbox is live.
    pub(crate) fn hold_if_draining(&self) -> Option<Holding<'_>> {
        if !self.draining.load(Ordering::Acquire) {
            return None;
        }
        let mut drain = self.drain.lock().unwrap_or_else(|e| e.into_inner());
        if !self.draining.load(Ordering::Acquire) {
            return None;
        }
        drain.count.pending += 1;
        Some(Holding(self))
    }

    /// Where the Sends stored behind the drain stand; taken before each read
    /// of the store and handed to [`Mailbox::go_live`].
    pub(crate) fn drain_mark(&self) -> DrainCount {
        self.drain.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    /// The drain's read (which began at `mark`) found the store empty: go
    /// live unless a Send is still being stored (then wait for it) or one
    /// finished since `mark` (its message may be newer than the read). False
    /// means: read again.
    pub(crate) async fn go_live(&self, mark: DrainCount) -> bool {
        // Listening before the count is read: a Send that finishes after the
        // read rings after this.
        let finished = self.live_bell.notified();
        tokio::pin!(finished);
        finished.as_mut().enable();
        {
            let drain = self.drain.lock().unwrap_or_else(|e| e.into_inner());
            let count = drain.count;
            if count.pending == 0 {
                if count.finished == mark.finished {
                    self.draining.store(false, Ordering::Release);
                    self.live_bell.notify_waiters();
                    return true;
                }
                return false;
            }
        }
        finished.await;
        false
    }

    /// Go live without the stored backlog (it could not be read): live
    /// messages flow; stored ones wait for the next session.
    pub(crate) fn force_live(&self) {
        let _count = self.drain.lock().unwrap_or_else(|e| e.into_inner());
        self.draining.store(false, Ordering::Release);
        self.live_bell.notify_waiters();
    }

    /// Remember that this connection refused (or lost) the message `id`.
    pub(crate) fn refuse(&self, id: u64) {
        let mut drain = self.drain.lock().unwrap_or_else(|e| e.into_inner());
        let refused = drain.refused.get_or_insert_default();
        if refused.len() < MAX_REFUSED {
            refused.insert(id);
        }
    }

    /// Whether this connection refused (or lost) the message `id`.
    pub(crate) fn refused(&self, id: u64) -> bool {
        self.drain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .refused
            .as_ref()
            .is_some_and(|refused| refused.contains(&id))
    }

    /// The connection deliveries go out on.
    pub(crate) fn connection(&self) -> &quinn::Connection {
        &self.connection
    }

    /// Deliver `envelope` and say what happened (also to `metrics`), always
    /// within `deadline`. A recipient that cannot take it in time is closed
    /// with TOO_SLOW.
    ///
    /// Every live message's path, its future inside the request's task: one
    /// async layer over [`delivery::send_within`], to keep that task small.
    pub(crate) async fn deliver(
        &self,
        envelope: Envelope<'_>,
        deadline: Duration,
        metrics: &DeliveryMetrics,
    ) -> DeliveryOutcome {
        let outcome = match self.charge(envelope) {
            Ok((frame, _permit)) => {
                let outcome =
                    delivery::send_within(&self.connection, frame, deadline, &metrics.latency)
                        .await;
                self.close_if_timed_out(outcome);
                outcome
            }
            Err(refused) => refused,
        };
        metrics.ended(outcome);
        outcome
    }

    /// The `Deliver` frame of `envelope`, with its cost charged to the
    /// backlog first, so a busy recipient costs nothing more; or why not.
    fn charge(
        &self,
        envelope: Envelope<'_>,
    ) -> Result<([bytes::Bytes; 2], SemaphorePermit<'_>), DeliveryOutcome> {
        let bound = codec::deliver_frame_len_bound(envelope.from.len(), envelope.body.len());
        let frame = delivery::frame(envelope).ok_or(DeliveryOutcome::Oversized)?;
        let cost = u32::try_from(bound + DELIVERY_OVERHEAD_BYTES).unwrap_or(u32::MAX);
        match self.backlog.try_acquire_many(cost) {
            Ok(permit) => Ok((frame, permit)),
            Err(TryAcquireError::NoPermits) => Err(DeliveryOutcome::Busy),
            // The user left: the mailbox was closed.
            Err(TryAcquireError::Closed) => Err(DeliveryOutcome::Lost),
        }
    }

    /// Deliver `frame`, a whole `Deliver` frame another node built, as
    /// [`Mailbox::deliver`] does; while the stored backlog drains, it waits
    /// (within `deadline`) until the mailbox is live, so it never overtakes
    /// stored mail.
    pub(crate) async fn deliver_frame(
        &self,
        frame: bytes::Bytes,
        deadline: Duration,
        metrics: &DeliveryMetrics,
    ) -> DeliveryOutcome {
        let started = tokio::time::Instant::now();
        // Charged before waiting, so what waits is bounded by the backlog.
        let cost = u32::try_from(frame.len() + DELIVERY_OVERHEAD_BYTES).unwrap_or(u32::MAX);
        let outcome = match self.backlog.try_acquire_many(cost) {
            Err(TryAcquireError::NoPermits) => DeliveryOutcome::Busy,
            Err(TryAcquireError::Closed) => DeliveryOutcome::Lost,
            Ok(_permit) => match tokio::time::timeout(deadline, self.until_live()).await {
                Ok(()) => {
                    let left = deadline.saturating_sub(started.elapsed());
                    let frame = [frame, bytes::Bytes::new()];
                    let outcome =
                        delivery::send_within(&self.connection, frame, left, &metrics.latency)
                            .await;
                    self.close_if_timed_out(outcome);
                    outcome
                }
                Err(_) => DeliveryOutcome::TimedOut,
            },
        };
        metrics.ended(outcome);
        outcome
    }

    /// Wait until the mailbox is live (at once if it is).
    async fn until_live(&self) {
        loop {
            let live = self.live_bell.notified();
            tokio::pin!(live);
            live.as_mut().enable();
            if !self.draining.load(Ordering::Acquire) || self.backlog.is_closed() {
                return;
            }
            live.await;
        }
    }

    /// A delivery the recipient could not take in the whole budget closes it.
    fn close_if_timed_out(&self, outcome: DeliveryOutcome) {
        if outcome == DeliveryOutcome::TimedOut {
            self.close_too_slow();
        }
    }

    /// A recipient that cannot take a message in the whole delivery budget is
    /// stuck: close it with TOO_SLOW, which frees its backlog for everyone else.
    pub(crate) fn close_too_slow(&self) {
        CloseCode::TooSlow.close(&self.connection, "too far behind on deliveries");
        tracing::info!(user = %self.name, "closed: too slow to take deliveries");
    }

    /// The user left: sends still waiting to be charged fail over at once.
    pub(crate) fn close(&self) {
        self.backlog.close();
        self.live_bell.notify_waiters();
    }

    /// Whether this is an account's connection (not a guest's).
    pub(crate) fn is_account(&self) -> bool {
        self.device.is_some()
    }

    /// Close the user's connection with `code`.
    pub(crate) fn disconnect(&self, code: CloseCode, reason: &str) {
        code.close(&self.connection, reason);
    }
}
