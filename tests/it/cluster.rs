//! Cluster mode's foundation against real nats-server processes: joining
//! (the NATS version and JetStream checked), node leases (a live node's id
//! is refused, a released one is free at once, a dead one's within its
//! lifetime), and clear errors for a NATS that is not there.

use std::process::Stdio;
use std::time::{Duration, Instant};

use quic_chat::cluster::{Cluster, ClusterConfig, ClusterError, NodeId};

use crate::harness::nats::NatsServer;
use crate::harness::process::{output_within, Proc, BIN};
use crate::harness::within;

fn config(nats: &NatsServer, node: &str) -> ClusterConfig {
    let mut config = ClusterConfig::new(vec![nats.url.clone()], node.parse::<NodeId>().unwrap());
    config.connect_timeout = Duration::from_secs(5);
    config
}

async fn join(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
    within(Duration::from_secs(10), "join", Cluster::join(config)).await
}

#[tokio::test]
async fn a_live_nodes_id_is_refused_and_a_released_one_is_free_at_once() {
    let nats = NatsServer::start();
    let n1 = join(&config(&nats, "n1")).await.expect("n1 joins");
    assert!(quic_chat::cluster::version_is_supported(
        n1.server_version()
    ));
    assert!(n1.lease().state().held);
    match join(&config(&nats, "n1")).await {
        Err(ClusterError::NodeIdInUse { node, .. }) => assert_eq!(node.as_str(), "n1"),
        other => panic!("a second n1 must be refused, got {other:?}"),
    }
    let n2 = join(&config(&nats, "n2")).await.expect("n2 joins");
    assert_eq!(n2.lease().nodes().await.unwrap(), ["n1", "n2"]);
    assert_ne!(n1.lease().incarnation(), n2.lease().incarnation());
    n1.leave().await;
    assert_eq!(n2.lease().nodes().await.unwrap(), ["n2"]);
    let again = join(&config(&nats, "n1"))
        .await
        .expect("n1 is free after leaving");
    again.leave().await;
    n2.leave().await;
}

#[tokio::test]
async fn a_lease_is_renewed_and_a_dead_nodes_lease_ends_within_its_lifetime() {
    let nats = NatsServer::start();
    let mut short = config(&nats, "n1");
    short.prefix = "short".into();
    short.lease_ttl = Duration::from_secs(2);
    let n1 = join(&short).await.expect("n1 joins");
    let first = n1.lease().state().revision;
    // Renewed every 400 ms: alive well past its 2 s lifetime.
    crate::harness::eventually(Duration::from_secs(10), "renewals", || async {
        n1.lease().state().revision > first + 5
    })
    .await;
    assert!(matches!(
        join(&short).await,
        Err(ClusterError::NodeIdInUse { .. })
    ));
    // It dies without releasing: its lease ends by itself.
    drop(n1);
    let died = Instant::now();
    let taken = within(Duration::from_secs(10), "the lease to end", async {
        loop {
            match Cluster::join(&short).await {
                Ok(cluster) => return cluster,
                Err(ClusterError::NodeIdInUse { .. }) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    let waited = died.elapsed();
    println!("a dead node's id was free again after {waited:?} (lease 2 s)");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    taken.leave().await;
}

#[tokio::test]
async fn nats_that_is_missing_or_without_jetstream_is_a_clear_error() {
    // Nothing listens on this port (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut missing = ClusterConfig::new(
        vec![format!("nats://127.0.0.1:{port}")],
        "n1".parse().unwrap(),
    );
    missing.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let error = join(&missing).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClusterError::Unreachable { .. } | ClusterError::TimedOut { .. }
        ),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let plain = NatsServer::start_with(&[]);
    match join(&config(&plain, "n1")).await {
        Err(ClusterError::NoJetStream(_)) => {}
        other => panic!("NoJetStream expected, got {other:?}"),
    }
}

#[test]
fn the_server_binary_joins_and_a_duplicate_node_id_exits_with_one_line() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let args = |data: &'static str| {
        vec![
            "server".to_owned(),
            "--port".into(),
            "0".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--data-dir".into(),
            data.into(),
            "--cluster".into(),
            nats.url.clone(),
            "--node-id".into(),
            "n1".into(),
        ]
    };
    let first_args = args("data1");
    let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
    let mut first = Proc::spawn(&first_args, dir.path(), Stdio::piped());
    let joined = first.line();
    assert!(
        joined.starts_with("joined the cluster as node n1 (NATS 2."),
        "{joined}"
    );
    assert!(first.line().starts_with("listening on 127.0.0.1:"));

    let second = output_within(
        std::process::Command::new(BIN)
            .args(args("data2"))
            .current_dir(dir.path()),
        Duration::from_secs(20),
    );
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("the node id n1 is in use by a live node"),
        "{stderr}"
    );

    first.type_line("EXIT");
    assert!(first.exit().success());
}
