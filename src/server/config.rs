//! The server's plain configuration (built by the CLI or directly by tests) and
//! the QUIC transport limits derived from it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::protocol::MAX_FRAME_BYTES;
use crate::tls::CertSource;

/// Everything `quic-chat server` needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address and port to listen on; `[::]` listens on IPv6 and IPv4 where the OS allows.
    pub bind: SocketAddr,
    /// Where the certificate comes from.
    pub cert: CertSource,
    /// Protective limits.
    pub limits: Limits,
}

/// The server's protective limits. See docs/RELIABILITY.md for what happens when each is hit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Registered users at most; further Hellos get `Refused{ServerFull}`.
    pub max_connections: usize,
    /// Connections from one IP address at once; 0 means unlimited.
    pub max_connections_per_ip: usize,
    /// Handshakes in progress above which new clients must first prove their
    /// address with a QUIC Retry; 0 means always.
    pub retry_above_handshakes: usize,
    /// Time from the end of the handshake until the Hello must have arrived.
    pub hello_timeout: Duration,
    /// Time a client has to send one whole request frame once it opened the stream.
    pub request_timeout: Duration,
    /// Time a delivery may take before the Send is answered `RecipientBusy` and the
    /// recipient is closed with TOO_SLOW. Must stay under the contract's 10 s.
    pub delivery_timeout: Duration,
    /// Bytes of undelivered messages one recipient may have in flight (each
    /// message costs its frame size plus [`DELIVERY_OVERHEAD_BYTES`]).
    pub recipient_backlog_bytes: usize,
    /// Sustained sends per second per user; 0 means unlimited.
    pub rate_limit: f64,
    /// Sends a user may make at once before the sustained rate applies.
    pub rate_burst: u32,
    /// Let quinn batch several packets to one peer into one send call (GSO).
    /// On by default: see docs/BENCHMARKS.md for what it costs and saves here.
    pub segmentation_offload: bool,
    /// Concurrent request streams per connection.
    pub max_streams_per_connection: u32,
    /// A connection that sends nothing for this long is dropped (at most 30 s per the contract).
    pub idle_timeout: Duration,
}

/// The bookkeeping cost charged to a recipient's backlog per message, on top of
/// its frame size, so that many tiny messages are bounded too.
pub const DELIVERY_OVERHEAD_BYTES: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            max_connections_per_ip: 64,
            retry_above_handshakes: 64,
            hello_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            delivery_timeout: Duration::from_secs(5),
            recipient_backlog_bytes: 1 << 20,
            rate_limit: 20.0,
            rate_burst: 60,
            max_streams_per_connection: 100,
            segmentation_offload: true,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// The QUIC transport parameters for these limits.
    ///
    /// Memory budget per connection: at most `receive_window` (1 MiB) of request
    /// data buffered, at most `send_window` (1 MiB) of delivery data unacknowledged,
    /// plus quinn's per-stream state for `max_streams_per_connection` streams.
    pub fn transport(&self) -> Arc<quinn::TransportConfig> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(self.max_streams_per_connection.into())
            // Clients never open unidirectional streams; allowing one lets the server
            // see the violation and close with PROTOCOL_ERROR instead of the client hanging.
            .max_concurrent_uni_streams(1u32.into())
            // Room for one whole frame, plus a little so an oversized one is noticed at once.
            .stream_receive_window(quinn::VarInt::from_u32((MAX_FRAME_BYTES + 8192) as u32))
            .receive_window(quinn::VarInt::from_u32(1 << 20))
            .send_window(1 << 20)
            .max_idle_timeout(Some(
                self.idle_timeout
                    .min(Duration::from_secs(30))
                    .try_into()
                    .unwrap_or(quinn::IdleTimeout::from(quinn::VarInt::from_u32(30_000))),
            ))
            .ack_frequency_config(Some(prompt_acks()))
            .mtu_discovery_config(Some(crate::net::mtu_discovery()))
            .enable_segmentation_offload(self.segmentation_offload);
        Arc::new(transport)
    }
}

/// Ask peers that support the ACK-frequency extension to acknowledge promptly,
/// so that `Delivered` receipts are not held up by the peer's delayed-ACK timer.
pub fn prompt_acks() -> quinn::AckFrequencyConfig {
    let mut config = quinn::AckFrequencyConfig::default();
    config
        .max_ack_delay(Some(Duration::from_millis(1)))
        .ack_eliciting_threshold(quinn::VarInt::from_u32(0));
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server probes the path MTU the same two-step way as the client
    /// (tests/it/transport.rs checks the client's probes on a real connection).
    #[test]
    fn the_server_uses_the_shared_mtu_discovery() {
        let transport = format!("{:?}", Limits::default().transport());
        let shared = format!("{:?}", crate::net::mtu_discovery());
        assert!(
            transport.contains(&format!("mtu_discovery_config: Some({shared})")),
            "{transport}"
        );
    }
}
