//! The transport under both ends: UDP sockets (dual-stack where asked, with
//! kernel buffers large enough that bursts are not dropped before quinn reads
//! them) and each side's QUIC transport settings, every knob set once, here,
//! with its reason.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use quinn::{AckFrequencyConfig, IdleTimeout, TransportConfig, VarInt};

use socket2::{Domain, Protocol, Socket, Type};

/// The kernel socket buffer size asked for, in each direction. The kernel caps
/// it at `net.core.rmem_max` / `wmem_max`; the default (about 208 KiB on Linux)
/// drops datagrams under bursts of traffic, which QUIC then has to retransmit.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Bind a UDP socket at `addr`. The unspecified IPv6 address is bound dual-stack,
/// so one socket serves IPv4 too; where IPv6 is unavailable, it falls back to
/// the unspecified IPv4 address on the same port.
pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    if let SocketAddr::V6(v6) = addr {
        if v6.ip().is_unspecified() {
            match bind_with_buffers(addr, true) {
                Ok(socket) => return Ok(socket),
                Err(e) => {
                    tracing::debug!("IPv6 unavailable ({e}); using IPv4 only");
                    let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
                    return bind_with_buffers(v4, false);
                }
            }
        }
    }
    bind_with_buffers(addr, false)
}

fn bind_with_buffers(addr: SocketAddr, dual_stack: bool) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    // Best effort: a smaller buffer still works, just with more drops under load.
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!("cannot enlarge the UDP receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!("cannot enlarge the UDP send buffer: {e}");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Path-MTU discovery settings shared by server and client: probe the usual
/// Ethernet ceiling (1,452-byte UDP payloads) in two steps instead of quinn's
/// default four.
///
/// quinn starts at 1,200 bytes and binary-searches up to the ceiling until a
/// step is smaller than `minimum_change` (20 bytes by default): probes of 1,326,
/// 1,389, 1,420 and 1,452 bytes, each way, on every connection, each one padded
/// and acknowledged. With the minimum change at half the range the
/// search probes 1,326 and then the ceiling, and settles on 1,452 where the path
/// allows it (nearly everywhere) and on 1,326 where it does not. That halves the
/// probing every new connection pays for; see docs/BENCHMARKS.md. The price:
/// a path whose limit lies between 1,327 and 1,451 bytes (IPv6 over PPPoE,
/// many VPN tunnels) gets 1,326 where the four-step search would find more,
/// a few percent more packets for large messages on such paths.
fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    /// quinn's starting MTU (`TransportConfig::initial_mtu`, left at its default).
    const INITIAL: u16 = 1_200;
    const CEILING: u16 = 1_452;
    let mut config = quinn::MtuDiscoveryConfig::default();
    config
        .upper_bound(CEILING)
        .minimum_change((CEILING - INITIAL) / 2);
    config
}

/// The idle timeout both sides allow at most (the contract: at most 30 s).
const MAX_IDLE: Duration = Duration::from_secs(30);

/// `timeout` as quinn's idle timeout, capped at [`MAX_IDLE`].
fn idle(timeout: Duration) -> IdleTimeout {
    IdleTimeout::try_from(timeout.min(MAX_IDLE))
        .unwrap_or_else(|_| IdleTimeout::from(VarInt::from_u32(30_000)))
}

/// What the server's transport settings depend on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerTransport {
    /// Concurrent request streams per connection.
    pub(crate) max_streams: u32,
    /// How long a silent connection lives.
    pub(crate) idle_timeout: Duration,
    /// Let quinn batch several packets to one peer into one send call (GSO).
    pub(crate) segmentation_offload: bool,
    /// The largest frame a client may send on one stream.
    pub(crate) max_frame_bytes: usize,
}

/// The server's transport settings.
///
/// Memory budget per connection: at most `receive_window` (1 MiB) of request
/// data buffered, at most `send_window` (1 MiB) of delivery data unacknowledged,
/// plus quinn's per-stream state for the streams the client may open (a
/// [`StreamCredit`] that starts small).
pub(crate) fn server(settings: ServerTransport) -> Arc<TransportConfig> {
    let frame_window = u32::try_from(settings.max_frame_bytes + 8192).unwrap_or(u32::MAX);
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(StreamCredit::initial(settings.max_streams).into())
        // Clients never open unidirectional streams; allowing one lets the server
        // see the violation and close with PROTOCOL_ERROR instead of the client hanging.
        .max_concurrent_uni_streams(1u32.into())
        // Room for one whole frame, plus a little so an oversized one is noticed at once.
        .stream_receive_window(VarInt::from_u32(frame_window))
        .receive_window(VarInt::from_u32(1 << 20))
        .send_window(1 << 20)
        .max_idle_timeout(Some(idle(settings.idle_timeout)))
        .ack_frequency_config(Some(prompt_acks()))
        .mtu_discovery_config(Some(mtu_discovery()))
        .enable_segmentation_offload(settings.segmentation_offload);
    Arc::new(transport)
}

/// Request streams a new connection may have open at once until it shows it
/// needs more. quinn keeps an entry for every stream the peer may open (about
/// 40 bytes each, in tables that grow by doubling), and most connections have
/// one or two requests at a time.
const INITIAL_STREAM_CREDIT: u32 = 4;

/// Requests after which a connection gets the full credit even one at a
/// time: with a small credit quinn returns it with a `MAX_STREAMS` frame
/// after every request (it announces once an eighth of the credit is used),
/// two packets more per message, so a connection in steady use gets the
/// full credit and with it quinn's announcement every 13 requests.
const FULL_CREDIT_AFTER_REQUESTS: u32 = 8;

/// A connection's request-stream credit: [`INITIAL_STREAM_CREDIT`] at first,
/// raised once to the configured maximum as soon as the connection has half of
/// that in flight (before it runs out) or has made
/// [`FULL_CREDIT_AFTER_REQUESTS`] requests. A connection that is mostly idle
/// then holds quinn's stream tables for 4 streams instead of 100 (5 KiB
/// less); a busy one waits at most one round trip for the rest.
#[derive(Debug)]
pub(crate) struct StreamCredit {
    /// The configured maximum, still to be granted; `None` once it was.
    full: Option<u32>,
    /// Requests so far, until the full credit is granted.
    requests: u32,
}

impl StreamCredit {
    /// The credit a connection starts with, given the configured maximum.
    pub(crate) fn initial(max_streams: u32) -> u32 {
        max_streams.min(INITIAL_STREAM_CREDIT)
    }

    /// The credit of a new connection whose maximum is `max_streams`.
    pub(crate) fn new(max_streams: u32) -> Self {
        StreamCredit {
            full: (max_streams > Self::initial(max_streams)).then_some(max_streams),
            requests: 0,
        }
    }

    /// Note a new request, with `in_flight` now open on `connection`; grants
    /// the full credit when the connection has shown it uses it.
    #[inline]
    pub(crate) fn note_request(&mut self, in_flight: usize, connection: &quinn::Connection) {
        if let Some(full) = self.full {
            self.requests += 1;
            if in_flight >= (INITIAL_STREAM_CREDIT / 2) as usize
                || self.requests >= FULL_CREDIT_AFTER_REQUESTS
            {
                connection.set_max_concurrent_bi_streams(full.into());
                self.full = None;
            }
        }
    }
}

/// The client's transport settings: keep-alives so an idle chat stays up, room
/// for many deliveries in flight, and prompt ACKs so `Delivered` comes quickly.
pub(crate) fn client(keep_alive: Duration, idle_timeout: Duration) -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(256u32.into())
        .keep_alive_interval(Some(keep_alive))
        .max_idle_timeout(Some(idle(idle_timeout)))
        // Support the ACK-frequency extension, so the server can ask us to
        // acknowledge deliveries promptly; and ask the server to acknowledge our
        // requests sparingly, since its Receipt acknowledges them anyway.
        .ack_frequency_config(Some(sparse_acks()))
        .mtu_discovery_config(Some(mtu_discovery()));
    Arc::new(transport)
}

/// quinn's default client transport settings, untouched: what a third-party
/// client that never tuned them has (`bench --client plain`).
pub(crate) fn plain_client() -> Arc<TransportConfig> {
    Arc::new(TransportConfig::default())
}

/// Ask peers that support the ACK-frequency extension to acknowledge promptly,
/// so that `Delivered` receipts are not held up by the peer's delayed-ACK timer.
fn prompt_acks() -> AckFrequencyConfig {
    let mut config = AckFrequencyConfig::default();
    config
        .max_ack_delay(Some(Duration::from_millis(1)))
        .ack_eliciting_threshold(VarInt::from_u32(0));
    config
}

/// Ask the server to acknowledge up to 8 packets at once.
fn sparse_acks() -> AckFrequencyConfig {
    let mut config = AckFrequencyConfig::default();
    config.ack_eliciting_threshold(VarInt::from_u32(8));
    config
}
