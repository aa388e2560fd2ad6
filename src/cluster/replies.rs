//! The answers to this node's requests to other nodes (deliveries and
//! control questions), on one wildcard
//! subscription of its own (`<inbox prefix>.<nuid>.*`).
//!
//! async-nats's own request multiplexer keeps a request's reply slot until
//! an answer comes, even after the caller gave up: every delivery to a node
//! that died or paused without answering would leave one behind for the
//! life of the connection. Here a slot lives exactly as long as its waiter
//! (dropping the wait removes it), so pending slots are bounded by the
//! deliveries in flight. It also makes a request one reply-subject string
//! and one oneshot, not an inbox, a token copy and a subject besides.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, Message, StatusCode};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::ClusterError;

/// Waiters by request token.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Message>>>>;

/// This node's reply subscription and the requests waiting on it.
#[derive(Debug)]
pub(crate) struct Replies {
    /// `<inbox prefix>.<nuid>.`: a request's reply subject is this and its token.
    prefix: String,
    pending: Pending,
    next: AtomicU64,
}

/// What became of one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Its answer's payload.
    Answered(Bytes),
    /// NATS said nobody subscribes to the subject.
    NoResponders,
    /// No answer within the timeout, or the request could not be sent.
    NoAnswer,
}

/// A waiting request's slot, removed when the wait ends, however it ends.
struct Slot<'a> {
    pending: &'a Pending,
    token: u64,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.token);
    }
}

fn lock(pending: &Pending) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Message>>> {
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replies {
    /// Subscribe to this node's replies (in place at NATS when this
    /// returns; kept across reconnects by the client) until `stop`.
    pub(crate) async fn open(
        client: &Client,
        stop: CancellationToken,
    ) -> Result<Replies, ClusterError> {
        let prefix = format!("{}.", client.new_inbox());
        let nats = |e: &dyn std::fmt::Display| ClusterError::Nats(e.to_string());
        let mut answers = client
            .subscribe(format!("{prefix}*"))
            .await
            .map_err(|e| nats(&e))?;
        client.flush().await.map_err(|e| nats(&e))?;
        let pending = Pending::default();
        let (waiting, prefix_len) = (Arc::clone(&pending), prefix.len());
        tokio::spawn(async move {
            loop {
                let answer = tokio::select! {
                    () = stop.cancelled() => break,
                    answer = answers.next() => answer,
                };
                let Some(answer) = answer else { break };
                // A token this node never made (or one whose waiter left)
                // finds no slot and is dropped.
                let token = answer
                    .subject
                    .get(prefix_len..)
                    .and_then(|token| token.parse::<u64>().ok());
                let waiter = token.and_then(|token| lock(&waiting).remove(&token));
                if let Some(waiter) = waiter {
                    let _ = waiter.send(answer);
                }
            }
        });
        Ok(Replies {
            prefix,
            pending,
            next: AtomicU64::new(0),
        })
    }

    /// Publish `payload` to `subject` and wait at most `timeout` for its answer.
    pub(crate) async fn request(
        &self,
        client: &Client,
        subject: String,
        payload: Bytes,
        timeout: Duration,
    ) -> Reply {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, answer) = oneshot::channel();
        lock(&self.pending).insert(token, sender);
        let _slot = Slot {
            pending: &self.pending,
            token,
        };
        let mut reply = String::with_capacity(self.prefix.len() + 20);
        reply.push_str(&self.prefix);
        let _ = write!(reply, "{token}");
        let asked = tokio::time::timeout(timeout, async {
            client
                .publish_with_reply(subject, reply, payload)
                .await
                .ok()?;
            answer.await.ok()
        })
        .await;
        match asked {
            Ok(Some(message)) if message.status == Some(StatusCode::NO_RESPONDERS) => {
                Reply::NoResponders
            }
            Ok(Some(message)) => Reply::Answered(message.payload),
            Ok(None) | Err(_) => Reply::NoAnswer,
        }
    }

    /// How many requests are waiting now.
    pub(crate) fn waiting(&self) -> usize {
        lock(&self.pending).len()
    }
}
