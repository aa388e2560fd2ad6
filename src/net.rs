//! UDP sockets for QUIC endpoints: dual-stack where asked, with kernel buffers
//! large enough that bursts are not dropped before quinn reads them; and the
//! path-MTU discovery settings both ends use.

use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// The kernel socket buffer size asked for, in each direction. The kernel caps
/// it at `net.core.rmem_max` / `wmem_max`; the default (about 208 KiB on Linux)
/// drops datagrams under bursts of traffic, which QUIC then has to retransmit.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Bind a UDP socket at `addr`. The unspecified IPv6 address is bound dual-stack,
/// so one socket serves IPv4 too; where IPv6 is unavailable, it falls back to
/// the unspecified IPv4 address on the same port.
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
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
pub fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    /// quinn's starting MTU (`TransportConfig::initial_mtu`, left at its default).
    const INITIAL: u16 = 1_200;
    const CEILING: u16 = 1_452;
    let mut config = quinn::MtuDiscoveryConfig::default();
    config
        .upper_bound(CEILING)
        .minimum_change((CEILING - INITIAL) / 2);
    config
}
