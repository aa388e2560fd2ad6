//! The server's plain configuration, built by the CLI or directly by tests.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Accounts: who may register, and where the server keeps its data.
    pub accounts: AccountsConfig,
    /// Where to serve Prometheus metrics over HTTP (`GET /metrics`); `None`
    /// (the default) opens no listener.
    pub metrics: Option<SocketAddr>,
}

/// Who may hold a name, and where accounts are kept.
#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// Registration on first use, operator-made accounts only, or no accounts.
    pub mode: AccountsMode,
    /// The directory of the server's database (created owner-only).
    pub data_dir: PathBuf,
    /// Devices one account may have (at least 5, as the protocol requires).
    pub max_devices: usize,
    /// Store and forward for accounts that are not connected.
    pub mail: MailConfig,
}

/// Store and forward: whether mail is kept for offline accounts, and its bounds.
///
/// By default only a registered sender's messages are stored (a guest's Send
/// to an offline account is `NotConnected`): the stamped `from` of stored mail
/// then names an account, and nobody can fill mailboxes anonymously.
/// `guest_mail` lets guests leave mail too.
#[derive(Debug, Clone, Copy)]
pub struct MailConfig {
    /// Keep mail at all (`--no-store` turns it off: `NotConnected` as v1).
    pub enabled: bool,
    /// Messages one mailbox may hold.
    pub mailbox_max_messages: u64,
    /// Bytes one mailbox may hold.
    pub mailbox_max_bytes: u64,
    /// Bytes every mailbox together may hold.
    pub store_max_bytes: u64,
    /// Store guests' messages to offline accounts too (off by default).
    pub guest_mail: bool,
    /// How long a stored message waits for its recipient (from when it was
    /// accepted) and a kept late receipt for its sender (from when it was
    /// made) before it is dropped; 7 days by default.
    pub ttl: Duration,
}

/// The default lifetime of stored mail: 7 days.
pub const DEFAULT_MAIL_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            enabled: true,
            mailbox_max_messages: 1000,
            mailbox_max_bytes: 16 << 20,
            store_max_bytes: 1 << 30,
            guest_mail: false,
            ttl: DEFAULT_MAIL_TTL,
        }
    }
}

impl AccountsConfig {
    /// Open registration, at most 5 devices per account, data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        AccountsConfig {
            mode: AccountsMode::Open,
            data_dir: data_dir.into(),
            max_devices: 5,
            mail: MailConfig::default(),
        }
    }
}

/// Whether and how names are bound to device keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountsMode {
    /// A protocol-v2 client with a key registers a free name on first use.
    Open,
    /// Only accounts the operator created may connect; guests and v1 clients are refused.
    Closed,
    /// No accounts: every user is a guest, with v1's rules (certificates are ignored).
    Off,
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
    /// message costs its frame size plus 256 bytes of bookkeeping).
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
pub(crate) const DELIVERY_OVERHEAD_BYTES: usize = 256;

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
    /// The QUIC transport settings for these limits.
    pub(crate) fn transport(&self) -> Arc<quinn::TransportConfig> {
        crate::transport::server(crate::transport::ServerTransport {
            max_streams: self.max_streams_per_connection,
            idle_timeout: self.idle_timeout,
            segmentation_offload: self.segmentation_offload,
            max_frame_bytes: MAX_FRAME_BYTES,
        })
    }
}
