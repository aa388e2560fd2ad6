//! Shared test fixtures: an in-process server on port 0, connected clients,
//! raw QUIC connections for byte-level checks, and time bounds.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quic_chat::client::{Client, ClientConfig, ClientError, Disconnect, Incoming, Message};
use quic_chat::server::{AccountsConfig, AccountsMode, Limits, MailConfig, Server, ServerConfig};
use quic_chat::tls::CertSource;
use tokio_util::sync::CancellationToken;

pub mod nats;
pub mod process;
pub mod proxy;
pub mod v2;

/// The bound every scenario runs in unless it says otherwise.
pub const SCENARIO: Duration = Duration::from_secs(20);

/// Await `future`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// The next delivery on `incoming`, failing the test if none comes within
/// [`SCENARIO`] (`Incoming::next` has no deadline of its own).
pub async fn next_within(incoming: &mut Incoming) -> Result<Message, Disconnect> {
    loop {
        let event = within(SCENARIO, "the next delivery", incoming.next()).await?;
        // Late receipts are not deliveries; tests of them read events directly.
        if let Some(message) = event.into_message() {
            return Ok(message);
        }
    }
}

/// An in-process server on 127.0.0.1 with its own directory.
pub struct TestServer {
    pub addr: SocketAddr,
    pub ca: PathBuf,
    /// The server's directory: its certificates today (its data next); kept
    /// across [`TestServer::restart`].
    pub dir: PathBuf,
    pub admission: Arc<quic_chat::server::AdmissionStats>,
    pub tls: Arc<quic_chat::tls::TlsStats>,
    /// Where the server serves metrics over HTTP, if it was started with them.
    pub metrics: Option<SocketAddr>,
    /// The operator's handle (what the console runs its commands against).
    pub operator: quic_chat::server::Operator,
    /// The cluster this server is a node of, if it was started as one.
    pub cluster: Option<Arc<quic_chat::cluster::Cluster>>,
    cluster_config: Option<quic_chat::cluster::ClusterConfig>,
    limits: Limits,
    accounts_mode: AccountsMode,
    mail: MailConfig,
    /// The temporary directory `dir` is, when the harness made it.
    _temp_dir: Option<Arc<tempfile::TempDir>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// Limits for tests: the defaults without the human-oriented rate limit.
pub fn test_limits() -> Limits {
    Limits {
        rate_limit: 0.0,
        ..Limits::default()
    }
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(test_limits()).await
    }

    pub async fn start_with(limits: Limits) -> Self {
        let temp_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn(
            temp_dir.path().to_owned(),
            Some(temp_dir),
            limits,
            AccountsMode::Open,
            MailConfig::default(),
            false,
        )
    }

    /// A server whose store and forward is configured as `mail`.
    pub async fn start_with_mail(mail: MailConfig) -> Self {
        let temp_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn(
            temp_dir.path().to_owned(),
            Some(temp_dir),
            test_limits(),
            AccountsMode::Open,
            mail,
            false,
        )
    }

    /// A server whose accounts are run as `mode`.
    pub async fn start_with_accounts(mode: AccountsMode) -> Self {
        let temp_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn(
            temp_dir.path().to_owned(),
            Some(temp_dir),
            test_limits(),
            mode,
            MailConfig::default(),
            false,
        )
    }

    /// A server that also serves its metrics over HTTP on 127.0.0.1 (port 0).
    pub async fn start_with_metrics() -> Self {
        let temp_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn(
            temp_dir.path().to_owned(),
            Some(temp_dir),
            test_limits(),
            AccountsMode::Open,
            MailConfig::default(),
            true,
        )
    }

    /// A server keeping its files in `dir` (which the caller owns).
    pub async fn start_in(dir: impl Into<PathBuf>) -> Self {
        Self::spawn(
            dir.into(),
            None,
            test_limits(),
            AccountsMode::Open,
            MailConfig::default(),
            false,
        )
    }

    /// Shut down, then start again on the same directory and limits (on a new port).
    pub async fn restart(self) -> Self {
        let (dir, temp_dir, limits, mode) = (
            self.dir.clone(),
            self._temp_dir.clone(),
            self.limits.clone(),
            self.accounts_mode,
        );
        let mail = self.mail;
        let metrics = self.metrics.is_some();
        let cluster = self.cluster_config.clone();
        self.stop().await;
        Self::spawn_in(dir, temp_dir, limits, mode, mail, metrics, cluster).await
    }

    /// A node of the cluster `cluster` (its own directory, default limits).
    pub async fn start_node(cluster: quic_chat::cluster::ClusterConfig) -> Self {
        Self::start_node_with(cluster, test_limits(), MailConfig::default(), false).await
    }

    /// A node of `cluster` with these limits and mail, serving metrics if asked.
    pub async fn start_node_with(
        cluster: quic_chat::cluster::ClusterConfig,
        limits: Limits,
        mail: MailConfig,
        metrics: bool,
    ) -> Self {
        let temp_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn_in(
            temp_dir.path().to_owned(),
            Some(temp_dir),
            limits,
            AccountsMode::Open,
            mail,
            metrics,
            Some(cluster),
        )
        .await
    }

    fn spawn(
        dir: PathBuf,
        temp_dir: Option<Arc<tempfile::TempDir>>,
        limits: Limits,
        accounts_mode: AccountsMode,
        mail: MailConfig,
        metrics: bool,
    ) -> Self {
        let config = Self::config(&dir, &limits, accounts_mode, mail, metrics);
        let server = Server::bind(config).expect("server binds");
        Self::run(server, dir, temp_dir, limits, accounts_mode, mail, None)
    }

    async fn spawn_in(
        dir: PathBuf,
        temp_dir: Option<Arc<tempfile::TempDir>>,
        limits: Limits,
        accounts_mode: AccountsMode,
        mail: MailConfig,
        metrics: bool,
        cluster: Option<quic_chat::cluster::ClusterConfig>,
    ) -> Self {
        let config = Self::config(&dir, &limits, accounts_mode, mail, metrics);
        let server = match &cluster {
            Some(cluster) => within(
                Duration::from_secs(15),
                "node joins",
                Server::bind_clustered(config, cluster),
            )
            .await
            .expect("node joins the cluster"),
            None => Server::bind(config).expect("server binds"),
        };
        Self::run(server, dir, temp_dir, limits, accounts_mode, mail, cluster)
    }

    fn config(
        dir: &std::path::Path,
        limits: &Limits,
        accounts_mode: AccountsMode,
        mail: MailConfig,
        metrics: bool,
    ) -> ServerConfig {
        ServerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            cert: CertSource::Generated {
                dir: dir.to_owned(),
                names: Vec::new(),
            },
            limits: limits.clone(),
            accounts: AccountsConfig {
                mode: accounts_mode,
                mail,
                ..AccountsConfig::new(dir.join("data"))
            },
            metrics: metrics.then(|| "127.0.0.1:0".parse().unwrap()),
        }
    }

    fn run(
        server: Server,
        dir: PathBuf,
        temp_dir: Option<Arc<tempfile::TempDir>>,
        limits: Limits,
        accounts_mode: AccountsMode,
        mail: MailConfig,
        cluster_config: Option<quic_chat::cluster::ClusterConfig>,
    ) -> Self {
        let metrics = server.metrics_addr();
        let cluster = server.cluster().cloned();
        let addr = server.local_addr();
        let ca = server.ca_path().expect("generated CA").to_owned();
        let admission = server.admission_stats();
        let tls = server.tls_stats();
        let operator = server.operator();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        TestServer {
            addr,
            ca,
            dir,
            admission,
            tls,
            metrics,
            operator,
            cluster,
            cluster_config,
            limits,
            accounts_mode,
            mail,
            _temp_dir: temp_dir,
            shutdown,
            task,
        }
    }

    pub fn client_config(&self, name: &str) -> ClientConfig {
        ClientConfig::new(self.addr.to_string(), name, &self.ca)
    }

    pub async fn try_connect(&self, name: &str) -> Result<(Client, Incoming), ClientError> {
        within(
            SCENARIO,
            "connect",
            Client::connect(&self.client_config(name)),
        )
        .await
    }

    pub async fn connect(&self, name: &str) -> (Client, Incoming) {
        self.try_connect(name)
            .await
            .unwrap_or_else(|e| panic!("{name} connects: {e}"))
    }

    /// Shut down (as EXIT would) and wait until the server has finished.
    pub async fn stop(self) {
        self.shutdown.cancel();
        within(Duration::from_secs(10), "server shutdown", self.task)
            .await
            .expect("server task");
    }

    /// What the operator console prints for `line`.
    pub async fn console(&self, line: &str) -> String {
        quic_chat::server::console::run_command(&self.operator, line).await
    }

    /// Start shutting down without waiting.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }
}

/// A raw QUIC connection that trusts the server's CA and speaks ALPN `alpn`.
pub async fn raw_connect_alpn(
    server: &TestServer,
    alpn: &[u8],
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in quic_chat::tls::read_chain(&server.ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_uni_streams(4u32.into());
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    within(
        SCENARIO,
        "raw handshake",
        endpoint.connect(server.addr, "localhost").unwrap(),
    )
    .await
}

/// A raw QUIC connection speaking `quic-chat/1`, with nothing sent yet.
pub async fn raw_connect(server: &TestServer) -> quinn::Connection {
    raw_connect_alpn(server, b"quic-chat/1")
        .await
        .expect("raw handshake")
}

/// Send `bytes` on a new bidirectional stream, finish it, and read the whole answer.
pub async fn raw_exchange(connection: &quinn::Connection, bytes: &[u8]) -> Vec<u8> {
    within(SCENARIO, "raw exchange", async {
        let (mut send, mut recv) = connection.open_bi().await.expect("open_bi");
        send.write_all(bytes).await.expect("write");
        send.finish().expect("finish");
        recv.read_to_end(1 << 20).await.expect("read answer")
    })
    .await
}

/// A raw connection that sent the Hello for `name` and checked it was welcomed.
pub async fn raw_registered(server: &TestServer, name: &str) -> quinn::Connection {
    let connection = raw_connect(server).await;
    let answer = raw_exchange(&connection, &hello_bytes(1, name)).await;
    assert_eq!(answer[0], 0, "Welcome expected, got {answer:?}");
    connection
}

/// Hello, encoded by hand from the contract: variant 0, protocol varint, name.
pub fn hello_bytes(protocol: u8, name: &str) -> Vec<u8> {
    assert!(protocol < 251 && name.len() < 251);
    let mut bytes = vec![0, protocol, name.len() as u8];
    bytes.extend_from_slice(name.as_bytes());
    bytes
}

/// Send, encoded by hand: variant 1, `to`, `body` (short strings only).
pub fn send_bytes(to: &str, body: &str) -> Vec<u8> {
    assert!(to.len() < 251 && body.len() < 251);
    let mut bytes = vec![1, to.len() as u8];
    bytes.extend_from_slice(to.as_bytes());
    bytes.push(body.len() as u8);
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// The application close code the peer closed `connection` with (waits for the close).
pub async fn close_code(connection: &quinn::Connection) -> Option<u64> {
    match within(SCENARIO, "connection close", connection.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
        _ => None,
    }
}

/// Read one varint (contract encoding) from the front of `bytes`; returns it and the rest.
pub fn take_varint(bytes: &[u8]) -> (u64, &[u8]) {
    match bytes[0] {
        b @ 0..=250 => (u64::from(b), &bytes[1..]),
        251 => (
            u64::from(u16::from_le_bytes(bytes[1..3].try_into().unwrap())),
            &bytes[3..],
        ),
        252 => (
            u64::from(u32::from_le_bytes(bytes[1..5].try_into().unwrap())),
            &bytes[5..],
        ),
        253 => (
            u64::from_le_bytes(bytes[1..9].try_into().unwrap()),
            &bytes[9..],
        ),
        other => panic!("not a varint marker: {other}"),
    }
}

/// Poll `check` until it is true, failing after `limit`. For state that changes
/// without an event we can await (a name freed after a close).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(limit, what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Chat output that hands each flushed line to the test as it is written.
pub struct Lines(tokio::sync::mpsc::UnboundedSender<String>, Vec<u8>);

impl Lines {
    pub fn new(lines: tokio::sync::mpsc::UnboundedSender<String>) -> Self {
        Lines(lines, Vec::new())
    }
}

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(&self.1).into_owned();
        self.1.clear();
        for line in text.lines() {
            let _ = self.0.send(line.to_owned());
        }
        Ok(())
    }
}
