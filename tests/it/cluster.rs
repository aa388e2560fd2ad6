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

    // A NATS that is not there: one line, each cause once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let missing = output_within(
        std::process::Command::new(BIN)
            .args(["server", "--port", "0", "--bind", "127.0.0.1"])
            .args(["--data-dir", "data3", "--cluster", &url, "--node-id", "n3"])
            .current_dir(dir.path()),
        Duration::from_secs(20),
    );
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains(&format!("cannot reach NATS at {url}: ")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("refused").count(),
        1,
        "each cause once: {stderr}"
    );
}

fn name(text: &str) -> quic_chat::protocol::NameKey {
    quic_chat::protocol::NameKey::new(text).unwrap()
}

#[tokio::test]
async fn concurrent_claims_of_one_name_by_three_nodes_give_exactly_one() {
    // (Within a node, its registry lets one connection at a time claim a
    // name; the server-level test of 50 Hellos is in cluster_chat.rs.)
    let nats = NatsServer::start();
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(std::sync::Arc::new(join(&config(&nats, id)).await.unwrap()));
    }
    let mut claims = tokio::task::JoinSet::new();
    for (i, node) in nodes.iter().enumerate() {
        let node = std::sync::Arc::clone(node);
        claims.spawn(async move {
            let claimed = node
                .names()
                .claim(&name("Newbie"), "Newbie", node.lease())
                .await;
            (i, claimed)
        });
    }
    let mut winners = Vec::new();
    let mut taken = Vec::new();
    while let Some(done) = within(Duration::from_secs(20), "claims", claims.join_next()).await {
        match done.unwrap() {
            (node, Ok(_)) => winners.push(node),
            (_, Err(quic_chat::cluster::ClaimError::Taken { node, .. })) => taken.push(node),
            (_, Err(e)) => panic!("{e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim wins");
    let winner = format!("n{}", winners[0] + 1);
    assert_eq!(taken.len(), 2);
    assert!(taken.iter().all(|node| *node == winner), "{taken:?}");
    let holder = nodes[0].names().holder_of(&name("newbie")).await.unwrap();
    assert_eq!(holder.map(|holder| holder.node), Some(winner));
}

#[tokio::test]
async fn a_dead_nodes_claims_are_taken_over_and_its_late_release_frees_nothing() {
    let nats = NatsServer::start();
    let short = |node: &str| {
        let mut config = config(&nats, node);
        config.prefix = "dead".into();
        config.lease_ttl = Duration::from_secs(2);
        config
    };
    let n1 = join(&short("n1")).await.unwrap();
    let n2 = join(&short("n2")).await.unwrap();
    let bob = name("bob");
    let old = n1
        .names()
        .claim(&bob, "bob", n1.lease())
        .await
        .expect("n1 claims bob");
    match n2.names().claim(&bob, "bob", n2.lease()).await {
        Err(quic_chat::cluster::ClaimError::Taken { node, .. }) => assert_eq!(node, "n1"),
        other => panic!("bob is n1's: {other:?}"),
    }
    // n1 stops renewing (it hangs or dies); its claim stays, its lease ends.
    let n1_names = n1.names().clone();
    drop(n1);
    let started = Instant::now();
    let claim = within(Duration::from_secs(10), "the takeover", async {
        loop {
            match n2.names().claim(&bob, "bob", n2.lease()).await {
                Ok(claim) => return claim,
                Err(quic_chat::cluster::ClaimError::Taken { .. }) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
    println!(
        "a dead node's name was taken over after {:?}",
        started.elapsed()
    );
    // n1 wakes up and releases what it thinks it holds: nothing happens.
    n1_names.release(&old).await.unwrap();
    let holder = n2.names().holder_of(&bob).await.unwrap();
    assert_eq!(holder.map(|holder| holder.node).as_deref(), Some("n2"));
    // n2's own release frees it.
    n2.names().release(&claim).await.unwrap();
    assert_eq!(n2.names().holder_of(&bob).await.unwrap(), None);
    // Names with '.' and '-' are distinct keys.
    let dotted = n2
        .names()
        .claim(&name(".x.y"), ".x.y", n2.lease())
        .await
        .unwrap();
    let dashed = n2
        .names()
        .claim(&name("-x-y"), "-x-y", n2.lease())
        .await
        .unwrap();
    assert_ne!(dotted, dashed);
    n2.leave().await;
}

#[tokio::test]
async fn a_delivery_nobody_answers_times_out_and_leaves_nothing_waiting() {
    use bytes::Bytes;
    use futures_util::StreamExt;
    use quic_chat::cluster::RemoteAnswer;
    let nats = NatsServer::start();
    let n1 = join(&config(&nats, "n1")).await.expect("n1 joins");
    let n2 = std::sync::Arc::new(join(&config(&nats, "n2")).await.expect("n2 joins"));
    let bob = name("Bob.x-y");
    let frame = || Bytes::from_static(b"frame");
    // Online nowhere: NATS says so at once.
    assert_eq!(
        n1.deliver(&bob, frame(), Duration::from_secs(5)).await,
        RemoteAnswer::NobodyThere
    );
    // n2 takes bob's deliveries and does not answer (a paused node): every
    // wait ends at its timeout, and no slot is left behind.
    let mut subscriptions = n2.serve_name(&bob).await.expect("n2 serves bob");
    let waits = (0..20).map(|_| n1.deliver(&bob, frame(), Duration::from_millis(300)));
    let answers = futures_util::future::join_all(waits).await;
    assert!(
        answers.iter().all(|a| *a == RemoteAnswer::NoAnswer),
        "{answers:?}"
    );
    assert_eq!(n1.deliveries_waiting(), 0);
    // n2 wakes and answers everything: the twenty late answers find no
    // waiter and are dropped; a new delivery gets its own answer.
    let responder = std::sync::Arc::clone(&n2);
    let answering = tokio::spawn(async move {
        let mut answered = 0;
        while let Some(request) = subscriptions.deliveries.next().await {
            responder.respond(&request, Bytes::from_static(&[0])).await;
            answered += 1;
            if answered == 21 {
                return answered;
            }
        }
        answered
    });
    assert_eq!(
        n1.deliver(&bob, frame(), Duration::from_secs(5)).await,
        RemoteAnswer::Answered(0)
    );
    assert_eq!(
        within(Duration::from_secs(5), "n2 answers", answering)
            .await
            .unwrap(),
        21
    );
    assert_eq!(n1.deliveries_waiting(), 0);
    n1.leave().await;
    std::sync::Arc::into_inner(n2).unwrap().leave().await;
}
