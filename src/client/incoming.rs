//! What the server pushes to us: [`Incoming`] yields each [`ClientEvent`] in
//! the order the server opened its stream, then why the connection ended.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use super::Disconnect;
use crate::protocol::{read_frame, CloseCode, Push, Status, Version};

/// Events received but not yet taken by the application. When it is full the
/// client stops reading, which the server sees as a slow recipient.
pub(crate) const INCOMING_BUFFER: usize = 256;

/// Delivery streams being read at once, ahead of the one handed on next.
const READS_AHEAD: usize = 64;

/// A message someone sent us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The id the sender's receipt carries.
    pub id: u64,
    /// The sender's registered name, as stamped by the server.
    pub from: String,
    /// Server clock when it accepted the message, Unix milliseconds.
    pub sent_at_ms: u64,
    /// The raw body (sanitise before showing it on a terminal).
    pub body: String,
}

/// The final outcome of a message we sent that was answered `Queued`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LateReceipt {
    /// The message's id, as its `Queued` receipt carried it.
    pub id: u64,
    /// `Delivered` or `Expired`.
    pub status: Status,
}

/// Something the server pushed to us.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// Someone sent us a message.
    Message(Message),
    /// Since v2: what finally became of a message we sent that was queued.
    Receipt(LateReceipt),
}

impl ClientEvent {
    /// The message, if this event is one.
    pub fn into_message(self) -> Option<Message> {
        match self {
            ClientEvent::Message(message) => Some(message),
            ClientEvent::Receipt(_) => None,
        }
    }
}

/// Ids a [`SeenIds`] remembers of each kind (messages, late receipts): the
/// contract asks for at least the last 4,096.
pub const SEEN_IDS: usize = 4096;

/// The ids of the last [`SEEN_IDS`] messages and late receipts received, so
/// that one delivered again (the server's store delivers at least once) is
/// dropped. Clones share one set: a [`Connector`](super::Connector) keeps it
/// across the connections it makes, so a reconnecting client still knows what
/// it saw before. Each check is O(1) and the memory is bounded.
#[derive(Debug, Clone, Default)]
pub struct SeenIds {
    inner: Arc<Mutex<Seen>>,
}

#[derive(Debug, Default)]
struct Seen {
    messages: BoundedSet,
    receipts: BoundedSet,
}

/// A set of at most [`SEEN_IDS`] ids that forgets the oldest first.
#[derive(Debug, Default)]
struct BoundedSet {
    ids: HashSet<u64>,
    order: VecDeque<u64>,
}

impl BoundedSet {
    /// Note `id`; false if it was already there.
    fn insert(&mut self, id: u64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_IDS {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

impl SeenIds {
    /// Whether `event` is new (and note it); false for a message or late
    /// receipt whose id was seen already.
    pub fn first_time(&self, event: &ClientEvent) -> bool {
        let mut seen = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            ClientEvent::Message(message) => seen.messages.insert(message.id),
            ClientEvent::Receipt(receipt) => seen.receipts.insert(receipt.id),
        }
    }
}

/// Received events, in the order the server opened their streams.
#[derive(Debug)]
pub struct Incoming {
    events: mpsc::Receiver<Result<ClientEvent, Disconnect>>,
    ended: Option<Disconnect>,
}

impl Incoming {
    /// Start reading what the server pushes on `connection`.
    /// Events whose id is in `seen` already are dropped.
    pub(crate) fn spawn(
        connection: quinn::Connection,
        version: Version,
        seen: SeenIds,
    ) -> Incoming {
        let (tx, rx) = mpsc::channel(INCOMING_BUFFER);
        tokio::spawn(read_deliveries(connection, version, seen, tx));
        Incoming {
            events: rx,
            ended: None,
        }
    }

    /// An event that has already arrived, if any, without waiting.
    pub fn try_next(&mut self) -> Option<ClientEvent> {
        if self.ended.is_some() {
            return None;
        }
        match self.events.try_recv() {
            Ok(Ok(event)) => Some(event),
            Ok(Err(ended)) => {
                self.ended = Some(ended);
                None
            }
            Err(_) => None,
        }
    }

    /// The next event, or why the connection ended (every later call says
    /// the same). Cancel-safe, so it can be bounded with `tokio::time::timeout`.
    pub async fn next(&mut self) -> Result<ClientEvent, Disconnect> {
        if let Some(ended) = &self.ended {
            return Err(ended.clone());
        }
        let next = self.events.recv().await.unwrap_or(Err(Disconnect::Closed));
        if let Err(ended) = &next {
            self.ended = Some(ended.clone());
        }
        next
    }
}

/// Read delivery streams concurrently (one slow stream must not hold up the
/// rest) and hand the events to [`Incoming`] in the order the server opened
/// them. All reads are polled by this one task: no task per message.
async fn read_deliveries(
    connection: quinn::Connection,
    version: Version,
    seen: SeenIds,
    tx: mpsc::Sender<Result<ClientEvent, Disconnect>>,
) {
    use futures_util::stream::{FuturesOrdered, StreamExt};
    let mut reads = FuturesOrdered::new();
    let mut accepting = true;
    let ended = loop {
        tokio::select! {
            accepted = connection.accept_uni(), if accepting && reads.len() < READS_AHEAD => {
                match accepted {
                    Ok(mut recv) => {
                        reads.push_back(async move { read_frame::<Push>(&mut recv).await });
                    }
                    Err(e) => {
                        accepting = false;
                        if reads.is_empty() {
                            break Disconnect::from_error(&e);
                        }
                    }
                }
            }
            Some(read) = reads.next(), if !reads.is_empty() => {
                let event = match read {
                    Ok(push) if push.since() > version => {
                        CloseCode::ProtocolError.close(&connection, "push not in this protocol version");
                        break Disconnect::Lost(format!(
                            "the server sent a push that protocol {version} does not have"
                        ));
                    }
                    Ok(Push::Deliver { id, from, sent_at_ms, body }) => {
                        ClientEvent::Message(Message { id, from, sent_at_ms, body })
                    }
                    Ok(Push::Receipt { id, status }) => ClientEvent::Receipt(LateReceipt { id, status }),
                    Err(e) if e.is_protocol_violation() => {
                        CloseCode::ProtocolError.close(&connection, "malformed delivery");
                        break Disconnect::Lost(format!("the server sent a malformed message: {e}"));
                    }
                    // The stream failed: the connection is ending; accept says why.
                    Err(_) => continue,
                };
                if !seen.first_time(&event) {
                    continue; // delivered again (at least once): shown already
                }
                if tx.send(Ok(event)).await.is_err() {
                    return; // nobody is listening any more
                }
            }
            else => {
                // Not accepting any more and every read is done.
                break connection
                    .close_reason()
                    .map(|e| Disconnect::from_error(&e))
                    .unwrap_or(Disconnect::Closed);
            }
        }
    };
    let _ = tx.send(Err(ended)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: u64) -> ClientEvent {
        ClientEvent::Message(Message {
            id,
            from: "alice".into(),
            sent_at_ms: 0,
            body: "hi".into(),
        })
    }

    fn receipt(id: u64, status: Status) -> ClientEvent {
        ClientEvent::Receipt(LateReceipt { id, status })
    }

    #[test]
    fn a_repeated_message_or_late_receipt_is_dropped() {
        let seen = SeenIds::default();
        assert!(seen.first_time(&message(1)));
        assert!(!seen.first_time(&message(1)), "delivered again");
        assert!(seen.first_time(&message(2)));
        assert!(
            seen.first_time(&receipt(1, Status::Delivered)),
            "receipts and messages are counted apart"
        );
        assert!(!seen.first_time(&receipt(1, Status::Delivered)));
        assert!(!seen.first_time(&receipt(1, Status::Expired)));
        let clone = seen.clone();
        assert!(!clone.first_time(&message(2)), "clones share the set");
    }

    #[test]
    fn the_last_4096_ids_are_kept_and_no_more() {
        let seen = SeenIds::default();
        let total = SEEN_IDS as u64 + 10;
        for id in 0..total {
            assert!(seen.first_time(&message(id)));
        }
        for id in total - SEEN_IDS as u64..total {
            assert!(!seen.first_time(&message(id)), "{id} is remembered");
        }
        assert!(seen.first_time(&message(0)), "the oldest is forgotten");
        let inner = seen.inner.lock().unwrap();
        assert_eq!(inner.messages.ids.len(), SEEN_IDS);
        assert_eq!(inner.messages.order.len(), SEEN_IDS);
    }
}
