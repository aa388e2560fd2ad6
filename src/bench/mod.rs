//! `quic-chat bench`: a load generator. It measures any conforming server at
//! an address, or starts this build's server as a child process (with a fresh
//! temporary data directory) so that the server's CPU time and memory can be
//! read apart from its own. The live workloads connect as guests; the store's
//! (`store.rs`) as registered protocol-v2 accounts.

pub mod report;
pub mod server_process;
pub mod store;
pub mod workloads;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::{ClientConfig, ClientError, Connector};
pub use report::Report;
use server_process::{ServerProcess, ServerProcessError};

/// Which client the bench is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClientKind {
    /// This project's client settings (ACK frequency, sparse ACKs, path-MTU
    /// discovery, AES-128-GCM first).
    #[default]
    Ours,
    /// The defaults a third-party quinn client written from
    /// docs/PROTOCOL.md would have: quinn's transport settings (no
    /// ACK-frequency negotiation, the default ACK delay) and rustls's default
    /// cipher order (AES-256-GCM first). Like every bench client it carries
    /// many users on one UDP socket with 4 MiB buffers, standing in for as
    /// many independent clients with a socket each.
    Plain,
}

impl ClientKind {
    /// The kind's name, as reports show it.
    pub fn name(self) -> &'static str {
        match self {
            ClientKind::Ours => "ours",
            ClientKind::Plain => "plain",
        }
    }
}

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// N senders, each to its own receiver.
    Pairs,
    /// N senders, all to one receiver.
    Fanin,
    /// New connections per second (handshake, Hello, BYE).
    Connect,
    /// N registered connections held open: server memory per connection.
    Idle,
    /// N v2 accounts (each its own device key) held open: server memory
    /// per connection, as for `idle`.
    IdleAccounts,
    /// N registered accounts, each sending to its own offline account: `Queued` per second.
    Queued,
    /// Messages stored for one offline account, then drained when it connects: per second.
    Drain,
}

impl Workload {
    /// The workload's name as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Pairs => "pairs",
            Workload::Fanin => "fanin",
            Workload::Connect => "connect",
            Workload::Idle => "idle",
            Workload::IdleAccounts => "idle-accounts",
            Workload::Queued => "queued",
            Workload::Drain => "drain",
        }
    }
}

/// One benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server to measure; `None` starts one as a child process.
    pub server: Option<String>,
    /// CA file for `server` (ignored when the bench starts its own).
    pub ca: Option<PathBuf>,
    /// Process id of `server`, to read its CPU time and memory (Linux).
    pub server_pid: Option<u32>,
    /// What to measure.
    pub workload: Workload,
    /// Senders (pairs, fanin), concurrent connectors (connect) or connections (idle).
    pub clients: usize,
    /// Sends in flight per sender.
    pub in_flight: usize,
    /// Body size in bytes (at least 20: the send timestamp).
    pub body_bytes: usize,
    /// Measured window.
    pub duration: Duration,
    /// Time before the window, not measured.
    pub warmup: Duration,
    /// Messages stored for the account that then drains them (drain workload).
    pub messages: u64,
    /// Resume TLS sessions on reconnects (connect workload).
    pub tls_resumption: bool,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Extra arguments for the child server.
    pub server_args: Vec<String>,
    /// Which client transport settings the bench's connections use.
    pub client: ClientKind,
    /// Another server (address and CA) the receivers of `pairs` and `fanin`
    /// connect to, for example a second node of a cluster: the messages
    /// then cross from `server`'s node to this one.
    pub receivers_at: Option<(String, PathBuf)>,
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The child server failed.
    #[error(transparent)]
    Server(#[from] ServerProcessError),
    /// A client could not connect.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// An address was given without `--ca`.
    #[error("measuring a running server needs --ca FILE")]
    NoCa,
    /// `--server-pid` names no process whose CPU time can be read.
    #[error("cannot read the CPU time of process {0} (is it running, on Linux?)")]
    NoProcess(u32),
    /// A device identity for an account could not be made.
    #[error(transparent)]
    Identity(#[from] crate::tls::TlsError),
    /// The server did not register a bench user as an account (accounts off
    /// or closed there): it keeps no mail for it.
    #[error("the server did not register {0} as an account (store workloads need open accounts)")]
    NotAnAccount(String),
}

/// Mailbox caps for the child server of the store workloads, unless the
/// caller's `--server-arg`s set them: the defaults (1,000 messages a
/// mailbox) would answer most of a run `RecipientBusy`.
const STORE_SERVER_ARGS: [(&str, &str); 2] = [
    ("--mailbox-max-messages", "1000000000"),
    ("--mailbox-max-bytes", "4294967296"),
];

/// The child server's arguments for `config`.
fn child_args(config: &BenchConfig) -> Vec<String> {
    let mut args = config.server_args.clone();
    if matches!(config.workload, Workload::Queued | Workload::Drain) {
        for (flag, value) in STORE_SERVER_ARGS {
            if !args.iter().any(|arg| arg.split('=').next() == Some(flag)) {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
    }
    args
}

/// Run one benchmark and report what it measured.
pub async fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    let child = match &config.server {
        Some(_) => None,
        None => Some(ServerProcess::start(&child_args(config)).await?),
    };
    let (addr, ca) = match (&child, &config.server, &config.ca) {
        (Some(child), _, _) => (child.addr.clone(), child.ca.clone()),
        (None, Some(addr), Some(ca)) => (addr.clone(), ca.clone()),
        _ => return Err(BenchError::NoCa),
    };
    let mut client_config = ClientConfig::new(addr, "bench", ca);
    client_config.tls_resumption = config.tls_resumption;
    client_config.plain_defaults = config.client == ClientKind::Plain;
    let connector = Connector::new(&client_config).await?;
    let server_pid = match (&child, config.server_pid) {
        (Some(child), _) => Some(child.pid()),
        (None, Some(pid)) if server_process::cpu_time_of(pid).is_some() => Some(pid),
        (None, Some(pid)) => return Err(BenchError::NoProcess(pid)),
        (None, None) => None,
    };
    let meter = Meter::new(server_pid, config.progress);
    let receivers = match &config.receivers_at {
        Some((addr, ca)) => {
            let mut rx_config = ClientConfig::new(addr.clone(), "bench", ca.clone());
            rx_config.tls_resumption = config.tls_resumption;
            rx_config.plain_defaults = config.client == ClientKind::Plain;
            Some(Connector::new(&rx_config).await?)
        }
        None => None,
    };
    let result = match config.workload {
        Workload::Pairs | Workload::Fanin => {
            let rx = receivers.as_ref().unwrap_or(&connector);
            workloads::messages(config, &connector, rx, &meter).await
        }
        Workload::Connect => workloads::connect(config, &connector, &meter).await,
        Workload::Idle => workloads::idle(config, &connector, &meter).await,
        Workload::IdleAccounts => store::idle_accounts(config, &client_config, &meter).await,
        Workload::Queued => store::queued(config, &client_config, &meter).await,
        Workload::Drain => store::drain(config, &client_config, &meter).await,
    };
    meter.finish();
    let mut report = result?;
    report.client = config.client.name().to_owned();
    if report.server_rss_kib.is_none() {
        report.server_rss_kib = meter.server_rss().map(|b| b / 1024);
    }
    connector.wait_idle(Duration::from_secs(3)).await;
    if let Some(receivers) = receivers {
        receivers.wait_idle(Duration::from_secs(3)).await;
    }
    if let Some(child) = child {
        child.stop().await;
    }
    Ok(report)
}

/// Progress display and the server process's meters.
pub struct Meter {
    /// The server's process id, when its CPU and memory can be read.
    server_pid: Option<u32>,
    bar: ProgressBar,
}

/// A point in time, with the server's and the generator's CPU time then.
pub struct Mark {
    wall: Instant,
    cpu: Option<Duration>,
    own_cpu: Option<Duration>,
}

/// A measured window: its length and the server CPU time spent in it.
pub struct Window {
    /// Wall-clock length.
    pub wall: Duration,
    /// Server CPU time (user + system) within it.
    pub server_cpu: Option<Duration>,
    /// The generator's own CPU time within it.
    pub generator_cpu: Option<Duration>,
}

impl Window {
    /// Put the server and generator CPU figures for `ops` operations into `report`.
    pub fn fill(&self, report: &mut Report, ops: u64) {
        if let Some(cpu) = self.generator_cpu.filter(|_| ops > 0) {
            report.generator_cpu_us_per_op = Some(cpu.as_secs_f64() * 1e6 / ops as f64);
        }
        if let Some(cpu) = self.server_cpu {
            if ops > 0 {
                report.server_cpu_us_per_op = Some(cpu.as_secs_f64() * 1e6 / ops as f64);
            }
            report.server_cores = Some(cpu.as_secs_f64() / self.wall.as_secs_f64());
        }
    }
}

impl Meter {
    fn new(server_pid: Option<u32>, progress: bool) -> Self {
        let bar = if progress {
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Meter { server_pid, bar }
    }

    /// Show `label` and wait `length`, advancing the bar.
    pub async fn phase(&self, label: &'static str, length: Duration) {
        let millis = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        self.bar.set_message(label);
        self.bar.set_length(millis / 100);
        self.bar.set_position(0);
        let started = Instant::now();
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        while started.elapsed() < length {
            ticks.tick().await;
            self.bar
                .set_position((started.elapsed().as_millis() / 100) as u64);
        }
    }

    /// Set the bar to count `len` items under `label`.
    pub fn progress_len(&self, len: u64, label: &'static str) {
        self.bar.set_message(label);
        self.bar.set_length(len);
        self.bar.set_position(0);
    }

    /// Items done so far.
    pub fn progress_set(&self, done: u64) {
        self.bar.set_position(done);
    }

    /// Now, for a window to start.
    pub fn mark(&self) -> Mark {
        Mark {
            wall: Instant::now(),
            cpu: self.server_pid.and_then(server_process::cpu_time_of),
            own_cpu: server_process::cpu_time_of(std::process::id()),
        }
    }

    /// The window since `mark`.
    pub fn elapsed_since(&self, mark: &Mark) -> Window {
        let cpu_now = self.server_pid.and_then(server_process::cpu_time_of);
        Window {
            wall: mark.wall.elapsed(),
            server_cpu: mark.cpu.zip(cpu_now).map(|(a, b)| b.saturating_sub(a)),
            generator_cpu: mark
                .own_cpu
                .zip(server_process::cpu_time_of(std::process::id()))
                .map(|(a, b)| b.saturating_sub(a)),
        }
    }

    /// The server's resident memory, in bytes.
    pub fn server_rss(&self) -> Option<u64> {
        self.server_pid.and_then(server_process::rss_of)
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
