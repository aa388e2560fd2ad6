//! Delivering one message: charge the recipient's bounded backlog, open a
//! unidirectional stream, write the `Deliver` frame, and report `Delivered` only
//! once the recipient's QUIC stack acknowledged the whole stream.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::TryAcquireError;

use super::config::DELIVERY_OVERHEAD_BYTES;
use super::registry::Recipient;
use crate::protocol::{codec, CloseCode, Status};

/// One message on its way to a recipient.
pub struct Delivery<'a> {
    /// The id shared by the Receipt and the Deliver.
    pub id: u64,
    /// The sender's registered name.
    pub from: &'a str,
    /// Server clock, Unix milliseconds.
    pub sent_at_ms: u64,
    /// The message text: a slice of the received request, valid UTF-8.
    pub body: Bytes,
}

/// Deliver `message` to `recipient` and say what happened, always within `deadline`.
pub async fn deliver(recipient: &Recipient, message: Delivery<'_>, deadline: Duration) -> Status {
    // Charge the backlog first, so a busy recipient costs nothing more. The fixed part of a Deliver frame (variant index 1 byte, id and
    // timestamp at most 9 each, name length 1, body length at most 5) is at
    // most 25 bytes.
    let frame_bytes = 25 + message.from.len() + message.body.len();
    let cost = u32::try_from(frame_bytes + DELIVERY_OVERHEAD_BYTES).unwrap_or(u32::MAX);
    let _permit = match recipient.backlog.try_acquire_many(cost) {
        Ok(permit) => permit,
        Err(TryAcquireError::NoPermits) => return Status::RecipientBusy,
        Err(TryAcquireError::Closed) => return Status::NotConnected,
    };
    // The body goes out as the very bytes it arrived in; only the header is new.
    let header = match codec::encode_deliver_header(
        message.id,
        message.from,
        message.sent_at_ms,
        message.body.len(),
    ) {
        Ok(header) => Bytes::from(header),
        // Only possible if the caller skipped the body size check.
        Err(_) => return Status::TooLarge,
    };
    let frame = [header, message.body];
    match tokio::time::timeout(deadline, send_on_new_stream(&recipient.connection, frame)).await {
        Ok(Ok(())) => Status::Delivered,
        Ok(Err(())) => Status::NotConnected,
        Err(_elapsed) => {
            // A recipient that cannot take a message in the whole delivery budget
            // is stuck; closing it frees its backlog for everyone else.
            CloseCode::TooSlow.close(&recipient.connection, "too far behind on deliveries");
            tracing::info!(user = %recipient.name, "closed: too slow to take deliveries");
            Status::RecipientBusy
        }
    }
}

/// Open a stream, write the frame, finish, and wait for the peer's acknowledgement.
/// `Err` means the recipient went away or refused the stream.
async fn send_on_new_stream(connection: &quinn::Connection, frame: [Bytes; 2]) -> Result<(), ()> {
    let mut stream = connection.open_uni().await.map_err(drop)?;
    codec::write_parts(&mut stream, frame).await.map_err(drop)?;
    match stream.stopped().await {
        // All data acknowledged.
        Ok(None) => Ok(()),
        // The recipient stopped the stream, or the connection went away first.
        Ok(Some(_)) | Err(_) => Err(()),
    }
}
