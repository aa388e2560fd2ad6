//! The command line: clap derive structs only, turned into the plain config
//! structs that tests build directly.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::ClientConfig;
use crate::server::{Limits, ServerConfig};
use crate::tls::CertSource;

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
    Server(ServerArgs),
    /// Connect to a server and chat. Commands: send USER MESSAGE, users, help, EXIT.
    ///
    /// At a terminal this is a line editor with history and Tab completion;
    /// over pipes it reads and prints plain lines; --json is for bots.
    Connect(ConnectArgs),
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
    /// Sustained messages per second one user may send (0 = unlimited).
    #[arg(long, value_name = "PER_SEC", default_value_t = Limits::default().rate_limit)]
    pub rate_limit: f64,
    /// Messages one user may send in a burst before --rate-limit applies.
    #[arg(long, value_name = "N", default_value_t = Limits::default().rate_burst)]
    pub rate_burst: u32,
    /// Seconds a new connection has to register with a Hello (at most 10, the protocol's promise to clients).
    #[arg(long, value_name = "SECS", default_value_t = Limits::default().hello_timeout.as_secs_f64())]
    pub hello_timeout: f64,
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
            rate_limit: self.rate_limit.max(0.0),
            rate_burst: self.rate_burst,
            hello_timeout: Duration::from_secs_f64(self.hello_timeout.clamp(0.1, 10.0)),
            ..Limits::default()
        };
        ServerConfig {
            bind: (self.bind, self.port).into(),
            cert,
            limits,
        }
    }
}

/// `quic-chat connect` options.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server, as HOST:PORT or IP:PORT (IPv6 as [ADDR]:PORT).
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
}

impl ConnectArgs {
    /// The client configuration these options describe.
    pub fn into_config(self) -> ClientConfig {
        let mut config = ClientConfig::new(self.server, self.username, self.ca);
        config.server_name = self.server_name;
        config
    }
}
