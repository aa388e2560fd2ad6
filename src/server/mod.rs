//! The chat server: bind a QUIC endpoint, accept connections, shut down gracefully.

mod account_book;
mod accounts;
mod admission;
mod config;
pub mod console;
mod delivery;
mod drain;
mod guest_receipts;
mod hello;
mod ids;
mod mailbox;
mod metrics;
mod notices;
mod presence;
mod rate;
mod registry;
mod remote;
mod router;
mod session;
mod state;
mod stored;
mod sweeper;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use crate::store::StoreError;
pub use accounts::Operator;
pub use admission::AdmissionStats;
use admission::{Admission, Decision};
pub use config::{
    AccountsConfig, AccountsMode, Limits, MailConfig, ServerConfig, DEFAULT_MAIL_TTL,
};
use state::State;

use crate::protocol::CloseCode;
use crate::tls::{self, ServerIdentity, TlsError};

/// Name and version the server announces in `Welcome`.
pub const SERVER_SOFTWARE: &str = concat!("quic-chat ", env!("CARGO_PKG_VERSION"));

/// The reason sent with SERVER_SHUTDOWN.
pub const SHUTDOWN_REASON: &str = "server shutting down";

/// How long shutdown waits for sessions to wind down and close frames to go out.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Certificates could not be loaded or created.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The database could not be opened (for example, another server uses it).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The metrics listener (TCP) could not be bound.
    #[error("cannot serve metrics on {addr}")]
    MetricsBind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A bound, not yet running, chat server.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    admission: Arc<Admission>,
    state: Arc<State>,
    ca_path: Option<PathBuf>,
    tls_stats: Arc<tls::TlsStats>,
    metrics_listener: Option<tokio::net::TcpListener>,
}

impl Server {
    /// Load or create certificates and bind the endpoint. Must be called inside a tokio runtime.
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        // First, so that a second server on the same data fails before anything else.
        let store = crate::store::Store::open(&config.accounts.data_dir)?;
        Self::assemble(config, store, None)
    }

    /// As [`Server::bind`], as a node of the cluster `cluster` joins (after
    /// the database is open, before anything is served).
    pub async fn bind_clustered(
        config: ServerConfig,
        cluster: &crate::cluster::ClusterConfig,
    ) -> Result<Server, ServerError> {
        let store = crate::store::Store::open(&config.accounts.data_dir)?;
        let mut cluster = cluster.clone();
        let mail = config.accounts.mail;
        if mail.enabled && config.accounts.mode != AccountsMode::Off {
            if mail.guest_mail {
                warn!(
                    "--guest-mail is ignored in cluster mode: guests' Sends to offline \
                     accounts are NotConnected (see docs/CLUSTER.md)"
                );
            }
            cluster.mail = Some(crate::cluster::MailLimits {
                mailbox_messages: i64::try_from(mail.mailbox_max_messages).unwrap_or(i64::MAX),
                // A stored message is at most a frame plus its record's header.
                message_bytes: 128 << 10,
                store_bytes: i64::try_from(mail.store_max_bytes).unwrap_or(i64::MAX),
                ttl: mail.ttl,
                keep_for: mail.ttl + 2 * sweeper::interval_for(mail.ttl) + Duration::from_secs(60),
                notices_per_sender: crate::store::NOTICES_PER_SENDER as i64,
            });
        }
        let cluster = Arc::new(crate::cluster::Cluster::join(&cluster).await?);
        // Nothing a client can see tells how the NATS servers sync to disk.
        warn!(
            "Queued mail is only as durable as JetStream: run the NATS servers with \
             sync_interval: always (see docs/CLUSTER.md), or a power cut can lose it"
        );
        Self::assemble(config, store, Some(cluster))
    }

    fn assemble(
        config: ServerConfig,
        store: crate::store::Store,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Result<Server, ServerError> {
        // In a cluster, ids carry the cluster-wide run number instead.
        let id_prefix = cluster
            .as_ref()
            .map_or(store.boot_epoch(), |cluster| cluster.epoch());
        debug!(path = %store.path().display(), boot = id_prefix, "database open");
        let identity = ServerIdentity::obtain(&config.cert)?;
        let ca_path = identity.ca_path.clone();
        let tls_stats = Arc::new(tls::TlsStats::default());
        let crypto = tls::server_crypto(identity, Arc::clone(&tls_stats))?;
        let mut server_config = quinn::ServerConfig::with_crypto(crypto);
        server_config.transport_config(config.limits.transport());
        // One address-validation token per connection (quinn sends two): a
        // client reconnecting later uses it to skip a Retry round trip when the
        // server is busy, and a client reconnects one connection at a time.
        let mut tokens = quinn::ValidationTokenConfig::default();
        tokens.sent(1);
        server_config.validation_token_config(tokens);
        let socket =
            crate::transport::bind_udp(config.bind).map_err(|source| ServerError::Bind {
                addr: config.bind,
                source,
            })?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| ServerError::Bind {
            addr: config.bind,
            source,
        })?;
        let admission = Admission::new(
            config.limits.max_connections_per_ip,
            config.limits.retry_above_handshakes,
        );
        let metrics_listener = config
            .metrics
            .map(|addr| {
                metrics::bind(addr).map_err(|source| ServerError::MetricsBind { addr, source })
            })
            .transpose()?;
        let metrics = Arc::new(metrics::Metrics::new(
            store.clone(),
            admission.stats(),
            Arc::clone(&tls_stats),
            cluster.clone(),
        ));
        let mail_config = config.accounts.mail;
        let mail = if mail_config.enabled && config.accounts.mode != AccountsMode::Off {
            let caps = crate::store::MailCaps {
                mailbox_messages: mail_config.mailbox_max_messages,
                mailbox_bytes: mail_config.mailbox_max_bytes,
                store_bytes: mail_config.store_max_bytes,
            };
            if mail_config.ttl < Duration::from_secs(24 * 60 * 60) {
                warn!(
                    "stored mail expires after {:?}, less than the day protocol v2 asks for",
                    mail_config.ttl
                );
            }
            let mail = stored::Mail::start(
                store.clone(),
                caps,
                mail_config.guest_mail,
                mail_config.ttl,
                metrics.mail.clone(),
            )?;
            // A node of a cluster keeps mail where every node can drain it.
            Some(
                match cluster.as_ref().filter(|cluster| cluster.mail().is_some()) {
                    Some(cluster) => mail.shared_by(Arc::clone(cluster)),
                    None => mail,
                },
            )
        } else {
            None
        };
        let book = account_book::AccountBook::new(store, cluster.clone());
        let accounts =
            accounts::Accounts::new(book, config.accounts.mode, config.accounts.max_devices);
        let state = Arc::new(State::new(
            config.limits,
            accounts,
            mail,
            id_prefix,
            SERVER_SOFTWARE.to_owned(),
            metrics,
            cluster,
        ));
        Ok(Server {
            endpoint,
            admission,
            state,
            ca_path,
            tls_stats,
            metrics_listener,
        })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound UDP socket has a local address")
    }

    /// Where metrics are served over HTTP (with the real port when bound to
    /// port 0), if `--metrics` asked for it.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|listener| listener.local_addr().ok())
    }

    /// Live admission counters (Retry packets sent, connections refused).
    pub fn admission_stats(&self) -> Arc<AdmissionStats> {
        self.admission.stats()
    }

    /// Live TLS counters (session tickets taken back for resumption).
    pub fn tls_stats(&self) -> Arc<tls::TlsStats> {
        Arc::clone(&self.tls_stats)
    }

    /// The operator's handle on accounts and connections (for the console).
    pub fn operator(&self) -> Operator {
        self.state
            .accounts
            .operator(self.state.presence.clone(), self.state.mail.clone())
    }

    /// The cluster this server is a node of, if any.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.state.presence.remote().map(|remote| remote.cluster())
    }

    /// The CA certificate clients need, when the server made its own CA.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// Serve until `shutdown` is cancelled, then close every connection with
    /// SERVER_SHUTDOWN and wait until the close frames are out.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let background = shutdown.child_token();
        if let Some(listener) = self.metrics_listener.take() {
            tracker.spawn(metrics::serve(
                listener,
                Arc::clone(&self.state.metrics),
                background.clone(),
                tracker.clone(),
            ));
        }
        if let Some(mail) = self.state.mail.clone() {
            tracker.spawn(sweeper::run(
                Arc::clone(&self.state),
                mail,
                background.clone(),
            ));
        }
        if let Some(remote) = self.state.presence.remote() {
            tracker.spawn(Arc::clone(remote).serve_control(background.clone()));
            tracker.spawn(Arc::clone(remote).fence(background.clone()));
            tracker.spawn(Arc::clone(remote).sample_round_trips(background.clone()));
            tracker.spawn(Arc::clone(remote).clear_stale_claims(background.clone()));
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => match self.admission.admit(&incoming) {
                        Decision::Accept(slot) => {
                            let session = session::run(incoming, slot, Arc::clone(&self.state), tracker.clone());
                            tracker.spawn(session);
                        }
                        Decision::Retry => {
                            if let Err(e) = incoming.retry() {
                                e.into_incoming().ignore();
                            }
                        }
                        Decision::Refuse => incoming.refuse(),
                    },
                    None => break,
                },
            }
        }
        info!(
            "shutting down: closing {} connection(s)",
            self.endpoint.open_connections()
        );
        self.endpoint.set_server_config(None);
        self.endpoint.close(
            CloseCode::ServerShutdown.var_int(),
            SHUTDOWN_REASON.as_bytes(),
        );
        background.cancel();
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!("some sessions did not finish in time");
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            debug!("endpoint not idle after the grace period");
        }
        if let Some(remote) = self.state.presence.remote() {
            // The lease goes last: once it is gone every claim of this run
            // is stale, whether or not its release reached NATS.
            remote.cluster().leave().await;
        }
        info!("server stopped");
    }
}
