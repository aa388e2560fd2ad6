//! Delivering one message on one connection: open a unidirectional stream,
//! write the `Deliver` frame (the received body without copying it), and know
//! it arrived only once the recipient's QUIC stack acknowledged the whole stream.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::metrics::LatencyHistogram;
use crate::protocol::codec;

/// One message on its way to a recipient.
#[derive(Debug)]
pub(crate) struct Envelope<'a> {
    /// The id shared by the Receipt and the Deliver.
    pub(crate) id: u64,
    /// The sender's registered name.
    pub(crate) from: &'a str,
    /// Server clock, Unix milliseconds.
    pub(crate) sent_at_ms: u64,
    /// The message text: a slice of the received request, valid UTF-8.
    pub(crate) body: Bytes,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryOutcome {
    /// The recipient's QUIC stack acknowledged the whole delivery stream.
    Acked,
    /// The recipient stopped the delivery stream before acknowledging it.
    Stopped,
    /// The recipient's connection ended (or it left) before the acknowledgement.
    Lost,
    /// The delivery did not complete within its deadline.
    TimedOut,
    /// The recipient's backlog is full; nothing was sent.
    Busy,
    /// The frame would be over the frame limit; nothing was sent (only if the
    /// body was not checked against the body limit first).
    Oversized,
}

impl DeliveryOutcome {
    /// Every outcome, in declaration order.
    pub(crate) const ALL: [DeliveryOutcome; 6] = [
        DeliveryOutcome::Acked,
        DeliveryOutcome::Stopped,
        DeliveryOutcome::Lost,
        DeliveryOutcome::TimedOut,
        DeliveryOutcome::Busy,
        DeliveryOutcome::Oversized,
    ];

    /// The outcome as one byte (its place in [`DeliveryOutcome::ALL`]), as a
    /// node answers another's delivery request.
    pub(crate) fn to_byte(self) -> u8 {
        DeliveryOutcome::ALL
            .iter()
            .position(|outcome| *outcome == self)
            .unwrap_or(0) as u8
    }

    /// The outcome a node answered; `None` for a byte no node sends.
    pub(crate) fn from_byte(byte: u8) -> Option<DeliveryOutcome> {
        DeliveryOutcome::ALL.get(usize::from(byte)).copied()
    }

    /// The outcome's name in `snake_case`, as the metrics label it.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            DeliveryOutcome::Acked => "acked",
            DeliveryOutcome::Stopped => "stopped",
            DeliveryOutcome::Lost => "lost",
            DeliveryOutcome::TimedOut => "timed_out",
            DeliveryOutcome::Busy => "busy",
            DeliveryOutcome::Oversized => "oversized",
        }
    }
}

/// Send `frame` (a whole `Deliver` frame, in parts) on a new stream of
/// `connection`, within `deadline`; an acknowledged one's time from opening
/// the stream goes into `latency`.
///
/// This is every live message's path, and its future lives in the
/// request's task: it is written flat (no nested async fns, each of which
/// keeps its own copy of its arguments) to keep that task small.
pub(crate) async fn send_within(
    connection: &quinn::Connection,
    frame: [Bytes; 2],
    deadline: Duration,
    latency: &LatencyHistogram,
) -> DeliveryOutcome {
    let opened = Instant::now();
    let sent = async {
        let Ok(stream) = connection.open_uni().await else {
            return DeliveryOutcome::Lost;
        };
        write_and_wait(stream, frame).await
    };
    let outcome = tokio::time::timeout(deadline, sent)
        .await
        .unwrap_or(DeliveryOutcome::TimedOut);
    if outcome == DeliveryOutcome::Acked {
        latency.observe(opened.elapsed());
    }
    outcome
}

/// The `Deliver` frame of `envelope`, as the header and the body's own bytes.
pub(crate) fn frame(envelope: Envelope<'_>) -> Option<[Bytes; 2]> {
    let header = codec::encode_deliver_header(
        envelope.id,
        envelope.from,
        envelope.sent_at_ms,
        envelope.body.len(),
    )
    .ok()?;
    Some([header, envelope.body])
}

/// Send `Push::Receipt{id, status}` (v2's late receipt) on a new stream of
/// `connection` and wait for its acknowledgement.
pub(crate) async fn push_receipt(
    connection: &quinn::Connection,
    id: u64,
    status: crate::protocol::Status,
) -> DeliveryOutcome {
    let Ok(frame) = codec::encode_to_bytes(&crate::protocol::Push::Receipt { id, status }) else {
        return DeliveryOutcome::Oversized;
    };
    let Ok(stream) = connection.open_uni().await else {
        return DeliveryOutcome::Lost;
    };
    write_and_wait(stream, [frame, Bytes::new()]).await
}

/// Write `frame` on an opened stream, finish, and wait for the acknowledgement.
pub(crate) async fn write_and_wait(
    mut stream: quinn::SendStream,
    frame: [Bytes; 2],
) -> DeliveryOutcome {
    for part in frame {
        match stream.write_chunk(part).await {
            Ok(()) => {}
            Err(quinn::WriteError::Stopped(_)) => return DeliveryOutcome::Stopped,
            Err(_) => return DeliveryOutcome::Lost,
        }
    }
    if stream.finish().is_err() {
        return DeliveryOutcome::Lost;
    }
    match stream.stopped().await {
        // All data acknowledged.
        Ok(None) => DeliveryOutcome::Acked,
        Ok(Some(_)) => DeliveryOutcome::Stopped,
        Err(_) => DeliveryOutcome::Lost,
    }
}
