//! The command line: clap derive structs only, turned into the plain config
//! structs that tests build directly.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::bench::{BenchConfig, Workload};
use crate::client::ClientConfig;
use crate::cluster::ClusterConfig;
use crate::server::{AccountsConfig, AccountsMode, Limits, MailConfig, ServerConfig};
use crate::tls::{CertSource, ClientIdentity, TlsError};

/// quic-chat: a self-hosted encrypted messenger over QUIC.
#[derive(Debug, Parser)]
#[command(name = "quic-chat", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Run a chat server. Type EXIT on its console (or send SIGINT/SIGTERM) to stop it.
    Server(Box<ServerArgs>),
    /// Connect to a server and chat. Commands: send USER MESSAGE, users, devices, help, EXIT.
    ///
    /// At a terminal this is a line editor with history and Tab completion;
    /// over pipes it reads and prints plain lines; --json is for bots.
    Connect(ConnectArgs),
    /// Print this device's fingerprint (SHA256:…), creating its key on first use.
    ///
    /// The fingerprint names this device to servers: give it to `devices add`
    /// on a device already signed in to move or share your account.
    Whoami(WhoamiArgs),
    /// Measure a server: message throughput and latency, connection rate, idle memory.
    Bench(BenchArgs),
}

/// `quic-chat bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server to measure (HOST:PORT); without it, the bench starts this build's server as a child process.
    pub server: Option<String>,
    /// CA certificate of the server to measure (needed with SERVER).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Process id of SERVER on this machine, to report its CPU time per operation and memory (Linux).
    #[arg(long, value_name = "PID", requires = "server")]
    pub server_pid: Option<u32>,
    /// What to measure.
    #[arg(long, short, value_enum, default_value = "pairs")]
    pub workload: Workload,
    /// Senders (pairs, fanin, queued, drain), concurrent connectors (connect) or connections held (idle).
    #[arg(long, short = 'n', default_value_t = 50)]
    pub clients: usize,
    /// Sends in flight per sender.
    #[arg(long, default_value_t = 32)]
    pub in_flight: usize,
    /// Message body size in bytes (at least 20).
    #[arg(long, short = 'b', default_value_t = 64)]
    pub body: usize,
    /// Seconds to measure.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to run before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Messages stored for the account that then drains them (drain workload).
    #[arg(long, short = 'm', default_value_t = 20_000)]
    pub messages: u64,
    /// Make every connection a full TLS handshake (connect workload).
    #[arg(long)]
    pub no_resume: bool,
    /// Print one JSON object instead of a table (and no progress bar).
    #[arg(long)]
    pub json: bool,
    /// Extra argument for the child server (repeatable), e.g. --server-arg=--max-streams=200.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// The bench's client: `ours` (this project's transport and TLS
    /// settings) or `plain` (quinn's and rustls's defaults, as a
    /// third-party client would have).
    #[arg(long, value_enum, default_value = "ours")]
    pub client: crate::bench::ClientKind,
    /// Connect the receivers (pairs, fanin) to this server instead, e.g. a
    /// second node of a cluster, so every message crosses nodes.
    #[arg(long, value_name = "ADDR", requires_all = ["server", "receivers_ca"])]
    pub receivers_at: Option<String>,
    /// CA file for --receivers-at.
    #[arg(long, value_name = "FILE", requires = "receivers_at")]
    pub receivers_ca: Option<PathBuf>,
    /// Worker threads of the load generator (default 1, which leaves the other
    /// cores to a server on this machine; raise it to load a remote server).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl BenchArgs {
    /// The benchmark configuration these options describe.
    pub fn into_config(self) -> BenchConfig {
        BenchConfig {
            server: self.server,
            ca: self.ca,
            server_pid: self.server_pid,
            workload: self.workload,
            clients: self.clients.max(1),
            in_flight: self.in_flight.max(1),
            body_bytes: self.body.clamp(20, crate::protocol::MAX_BODY_BYTES),
            duration: Duration::from_secs_f64(self.duration.clamp(0.1, 3600.0)),
            warmup: Duration::from_secs_f64(self.warmup.clamp(0.0, 600.0)),
            messages: self.messages.max(1),
            tls_resumption: !self.no_resume,
            progress: !self.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            server_args: self.server_args,
            receivers_at: self.receivers_at.zip(self.receivers_ca),
            client: self.client,
        }
    }
}

/// `quic-chat server` options.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// UDP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 4433)]
    pub port: u16,
    /// Address to listen on; the default `::` means every interface, IPv6 and IPv4.
    #[arg(long, default_value = "::")]
    pub bind: IpAddr,
    /// Directory for the generated CA and server certificate.
    #[arg(long, value_name = "DIR", default_value = "certs")]
    pub cert_dir: PathBuf,
    /// Extra host name or IP address for the generated server certificate (repeatable).
    #[arg(long = "name", value_name = "HOST")]
    pub names: Vec<String>,
    /// Serve this PEM certificate chain instead of a generated one (needs --key).
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Most users connected at once; further users are refused as ServerFull.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Most connections from one IP address at once (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections_per_ip)]
    pub max_connections_per_ip: usize,
    /// Concurrent request streams one connection may have open (a connection
    /// starts with 4 and gets them all once it has 2 requests in flight or has
    /// made 8).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_streams_per_connection)]
    pub max_streams: u32,
    /// Handshakes in progress above which new clients must first pass a QUIC
    /// address-validation Retry (0 = always).
    #[arg(long, value_name = "N", default_value_t = Limits::default().retry_above_handshakes)]
    pub retry_above: usize,
    /// Sustained messages per second one user may send (0 = unlimited).
    #[arg(long, value_name = "PER_SEC", default_value_t = Limits::default().rate_limit)]
    pub rate_limit: f64,
    /// Messages one user may send in a burst before --rate-limit applies.
    #[arg(long, value_name = "N", default_value_t = Limits::default().rate_burst)]
    pub rate_burst: u32,
    /// Turn off UDP segmentation offload (GSO): smaller per-connection buffers.
    #[arg(long)]
    pub no_gso: bool,
    /// Worker threads serving connections (default: one per CPU core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Seconds a new connection has to register with a Hello (at most 10, the protocol's promise to clients).
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().hello_timeout.as_secs_f64())]
    pub hello_timeout: f64,
    /// Directory of the server's database: accounts and their devices (created
    /// owner-only). One server at a time may use it.
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Who may hold a name: `open` registers a free name to the first device
    /// key that asks (protocol v2); `closed` admits only accounts the operator
    /// created on the console; `off` makes everyone a guest, as in protocol v1.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = AccountsArg::Open)]
    pub accounts: AccountsArg,
    /// Devices one account may have (at least 5).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(5..))]
    pub max_devices: u16,
    /// Keep no mail for offline accounts: a Send to one is `NotConnected`, as
    /// in protocol v1 (accounts are still kept).
    #[arg(long)]
    pub no_store: bool,
    /// Messages one offline account's mailbox may hold.
    #[arg(long, value_name = "N", default_value_t = MailConfig::default().mailbox_max_messages)]
    pub mailbox_max_messages: u64,
    /// Bytes one offline account's mailbox may hold.
    #[arg(long, value_name = "BYTES", default_value_t = MailConfig::default().mailbox_max_bytes)]
    pub mailbox_max_bytes: u64,
    /// Bytes all mailboxes together may hold.
    #[arg(long, value_name = "BYTES", default_value_t = MailConfig::default().store_max_bytes)]
    pub store_max_bytes: u64,
    /// Let guests (users without an account) leave messages for offline
    /// accounts too. Off by default: stored mail then always comes from an
    /// account, and nobody can fill mailboxes anonymously.
    #[arg(long)]
    pub guest_mail: bool,
    /// How long a stored message waits for its offline recipient, and a late
    /// receipt for its offline sender, before it is dropped (the sender is
    /// told `expired`), e.g. `7d`, `12h`, `90s`. At least 1 s; the protocol
    /// asks for a day at least, shorter is for trying it out.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = parse_mail_ttl)]
    pub mail_ttl: Duration,
    /// Run as a node of a cluster that shares users, names, accounts and
    /// mail through these NATS servers (comma-separated URLs, nats-server
    /// 2.11+ with JetStream; docs/CLUSTER.md). Without it, nothing connects
    /// to NATS.
    #[arg(long, value_name = "URLS", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This node's id in the cluster (1 to 32 of a-z, 0-9, -).
    #[arg(long, value_name = "ID", requires = "cluster")]
    pub node_id: Option<crate::cluster::NodeId>,
    /// Prefix of the cluster's NATS subjects and key-value buckets (1 to 32
    /// of a-z, 0-9, _ and -), so several clusters can share one NATS.
    #[arg(long, value_name = "PREFIX", default_value = "qc", value_parser = parse_prefix)]
    pub cluster_prefix: String,
    /// How long a node's lease lives without renewal: a node killed without
    /// warning frees its users' names this long after, and a node that
    /// cannot reach NATS for two thirds of it closes its connections first.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_lease)]
    pub cluster_lease: Duration,
    /// Copies NATS keeps of each of the cluster's buckets: 1 on a single
    /// NATS server, 3 on a NATS cluster of three or more.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub cluster_replicas: u8,
    /// A NATS credentials file (.creds: user JWT and NKey seed), if the NATS
    /// servers ask for one.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_credentials: Option<std::path::PathBuf>,
    /// Require TLS to NATS and check the servers' certificates against this
    /// CA certificate (PEM).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_tls_ca: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics over HTTP at http://ADDR/metrics, e.g.
    /// 127.0.0.1:9464 (port 0 picks a free one). Off by default: without it
    /// no TCP port is opened. Anyone who can reach ADDR can read them.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

impl ServerArgs {
    /// The cluster this server joins, if `--cluster` was given.
    pub fn cluster_config(&self) -> Result<Option<ClusterConfig>, String> {
        if self.cluster.is_empty() {
            return Ok(None);
        }
        let node_id = self
            .node_id
            .clone()
            .ok_or("--cluster needs --node-id (1 to 32 of a-z, 0-9, -)")?;
        let mut config = ClusterConfig::new(self.cluster.clone(), node_id);
        config.prefix = self.cluster_prefix.clone();
        config.lease_ttl = self.cluster_lease;
        config.replicas = usize::from(self.cluster_replicas);
        config.credentials = self.cluster_credentials.clone();
        config.tls_ca = self.cluster_tls_ca.clone();
        Ok(Some(config))
    }
}

/// Parse `--cluster-prefix`: it names subjects and buckets.
fn parse_prefix(text: &str) -> Result<String, String> {
    let valid = (1..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(text.to_owned())
    } else {
        Err("a prefix is 1 to 32 of a-z, 0-9, _ and -".into())
    }
}

/// Parse `--cluster-lease`: a duration of at least 2 s and at most 5 min.
fn parse_lease(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{e} (try 15s)"))?;
    if !(Duration::from_secs(2)..=Duration::from_secs(300)).contains(&ttl) {
        return Err("must be between 2s and 5m".into());
    }
    Ok(ttl)
}

/// Parse `--mail-ttl`: a duration such as `7d` or `90s`, at least a second.
fn parse_mail_ttl(text: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(text).map_err(|e| format!("{e} (try 7d, 12h or 90s)"))?;
    if ttl < Duration::from_secs(1) {
        return Err("must be at least 1s".into());
    }
    Ok(ttl)
}

/// `--accounts` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccountsArg {
    /// Register a free name to the first device key that asks.
    Open,
    /// Admit only accounts the operator created.
    Closed,
    /// No accounts: everyone is a guest.
    Off,
}

impl ServerArgs {
    /// The server configuration these options describe.
    pub fn into_config(self) -> ServerConfig {
        let cert = match (self.cert, self.key) {
            (Some(cert), Some(key)) => CertSource::Provided { cert, key },
            _ => CertSource::Generated {
                dir: self.cert_dir,
                names: self.names,
            },
        };
        let limits = Limits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_streams_per_connection: self.max_streams.max(1),
            retry_above_handshakes: self.retry_above,
            segmentation_offload: !self.no_gso,
            rate_limit: self.rate_limit.max(0.0),
            rate_burst: self.rate_burst,
            hello_timeout: Duration::from_secs_f64(self.hello_timeout.clamp(0.1, 10.0)),
            ..Limits::default()
        };
        let mode = match self.accounts {
            AccountsArg::Open => AccountsMode::Open,
            AccountsArg::Closed => AccountsMode::Closed,
            AccountsArg::Off => AccountsMode::Off,
        };
        ServerConfig {
            bind: (self.bind, self.port).into(),
            cert,
            limits,
            accounts: AccountsConfig {
                mode,
                data_dir: self.data_dir,
                max_devices: usize::from(self.max_devices),
                mail: MailConfig {
                    enabled: !self.no_store,
                    mailbox_max_messages: self.mailbox_max_messages,
                    mailbox_max_bytes: self.mailbox_max_bytes,
                    store_max_bytes: self.store_max_bytes,
                    guest_mail: self.guest_mail,
                    ttl: self.mail_ttl,
                },
            },
            metrics: self.metrics,
        }
    }
}

/// `quic-chat connect` options.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server, as HOST:PORT or IP:PORT (an IPv6 address in brackets).
    pub server: String,
    /// Your name: 1 to 32 of A-Z a-z 0-9 _ . -
    pub username: String,
    /// CA certificate the server must be signed by (the server prints its path).
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// Check the server's certificate for this name instead of the host in SERVER.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Print every event as one JSON object per line, and accept JSON commands.
    #[arg(long)]
    pub json: bool,
    /// Directory of this device's key and certificate (default:
    /// $XDG_CONFIG_HOME/quic-chat, or ~/.config/quic-chat); created on first use.
    #[arg(long, value_name = "DIR", conflicts_with = "guest")]
    pub identity: Option<PathBuf>,
    /// Connect without a certificate: a guest, whose name is not registered.
    #[arg(long)]
    pub guest: bool,
}

impl ConnectArgs {
    /// The client configuration these options describe; loads (or creates)
    /// the identity unless `--guest`.
    pub fn into_config(self) -> Result<ClientConfig, TlsError> {
        let identity = if self.guest {
            None
        } else {
            Some(ClientIdentity::load_or_create(&identity_dir(
                self.identity,
            )?)?)
        };
        let mut config = ClientConfig::new(self.server, self.username, self.ca);
        config.server_name = self.server_name;
        config.identity = identity;
        Ok(config)
    }
}

/// `quic-chat whoami` options.
#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// Directory of this device's key and certificate (default:
    /// $XDG_CONFIG_HOME/quic-chat, or ~/.config/quic-chat); created on first use.
    #[arg(long, value_name = "DIR")]
    pub identity: Option<PathBuf>,
}

impl WhoamiArgs {
    /// The identity directory these options name.
    pub fn dir(&self) -> Result<PathBuf, TlsError> {
        identity_dir(self.identity.clone())
    }
}

/// `--identity DIR`, or the default directory.
fn identity_dir(given: Option<PathBuf>) -> Result<PathBuf, TlsError> {
    given
        .or_else(crate::tls::default_identity_dir)
        .ok_or(TlsError::NoIdentityDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn guest_and_identity_exclude_each_other() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(
                ["quic-chat", "connect", "h:1", "alice", "--ca", "ca.pem"]
                    .iter()
                    .chain(args),
            )
        };
        assert!(parse(&["--guest", "--identity", "dir"]).is_err());
        let Ok(Cli {
            command: CliCommand::Connect(args),
        }) = parse(&["--guest"])
        else {
            panic!("--guest parses");
        };
        assert!(args.guest);
        let config = args.into_config().unwrap();
        assert!(config.identity.is_none(), "a guest has no certificate");
    }
}
