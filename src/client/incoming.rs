//! What the server pushes to us: [`Incoming`] yields each [`ClientEvent`] in
//! the order the server opened its stream, then why the connection ended.

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

/// Received events, in the order the server opened their streams.
#[derive(Debug)]
pub struct Incoming {
    events: mpsc::Receiver<Result<ClientEvent, Disconnect>>,
    ended: Option<Disconnect>,
}

impl Incoming {
    /// Start reading what the server pushes on `connection`.
    pub(crate) fn spawn(connection: quinn::Connection, version: Version) -> Incoming {
        let (tx, rx) = mpsc::channel(INCOMING_BUFFER);
        tokio::spawn(read_deliveries(connection, version, tx));
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
