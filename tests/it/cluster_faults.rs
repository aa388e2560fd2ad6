//! Cluster mode under faults, against real nats-server processes: a node
//! cut off from NATS by a blackholing proxy (it must close its users before
//! another node can take their names, and serve again when NATS is back), a
//! node process killed with SIGKILL or stopped with SIGSTOP, and a cluster of
//! three nats-servers losing one server (chat goes on) or two (the nodes
//! fence, and serve again once the servers are back). No quic-chat node is
//! ever restarted. Every wait is bounded; the times that matter are printed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quic_chat::cluster::{Cluster, ClusterConfig};
use quic_chat::protocol::{decode, Push, RefuseReason, Reply, Request, Status};
use tokio::sync::mpsc;
use tokio::task::block_in_place;

use crate::harness::nats::{NatsCluster, NatsServer};
use crate::harness::process::{signal, start_cluster_node, Proc};
use crate::harness::proxy::Proxy;
use crate::harness::v2::{ask, hello2, RawClient};
use crate::harness::{eventually, within, TestServer, SCENARIO};

const V2: &[u8] = b"quic-chat/2";

/// The close code of a fenced node (SERVER_SHUTDOWN) and its reason.
const FENCED_CODE: u64 = 1;
const FENCED_REASON: &str = "this server lost contact with its cluster";

fn node_config(urls: Vec<String>, node: &str, lease: Duration, replicas: usize) -> ClusterConfig {
    let mut config = ClusterConfig::new(urls, node.parse().unwrap());
    config.lease_ttl = lease;
    config.connect_timeout = Duration::from_secs(5);
    config.replicas = replicas;
    config
}

/// Where a node takes clients: its address and its CA certificate.
#[derive(Debug, Clone)]
struct Door {
    addr: SocketAddr,
    ca: PathBuf,
}

impl Door {
    fn of(server: &TestServer) -> Door {
        Door {
            addr: server.addr,
            ca: server.ca.clone(),
        }
    }
}

/// Connect to `door` as a v2 guest and say Hello as `name`.
async fn hello(door: &Door, name: &str) -> (quinn::Connection, Reply) {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_uni_streams(64u32.into());
    let client = RawClient::trusting(&door.ca, V2, None, transport);
    let connection = client.connect_to(door.addr).await;
    let reply = ask(&connection, &hello2(name)).await;
    (connection, reply)
}

/// The first user of nodes on a fresh 3-server NATS cluster: the first
/// writes to its new three-copy buckets can stall while their Raft groups
/// elect leaders (seen on this loaded 2-core machine), so a ServerFull
/// "cannot reach its cluster" is tried again for a bounded time; any other
/// refusal fails.
async fn first_guest(door: &Door, name: &str) -> quinn::Connection {
    within(
        SCENARIO,
        "the first session on a fresh NATS cluster",
        async {
            loop {
                match hello(door, name).await {
                    (connection, Reply::Session { .. }) => return connection,
                    (
                        _,
                        Reply::Refused {
                            reason: RefuseReason::ServerFull,
                            detail,
                        },
                    ) if detail.contains("cannot reach its cluster") => {}
                    (_, other) => panic!("{name} gets a session at {}, not {other:?}", door.addr),
                }
            }
        },
    )
    .await
}

/// A v2 guest named `name` at `door`; panics unless it gets a Session.
async fn guest(door: &Door, name: &str) -> quinn::Connection {
    match hello(door, name).await {
        (connection, Reply::Session { .. }) => connection,
        (_, other) => panic!("{name} gets a session at {}, not {other:?}", door.addr),
    }
}

/// Say Hello as `name` at `door` until a Session comes (a refusal while the
/// name is held, or the cluster cannot confirm it, is tried again), at most
/// `limit`. Returns the connection, when its Session came, and how many
/// refusals of each kind came before.
async fn claim_when_free(
    door: &Door,
    name: &str,
    limit: Duration,
) -> (quinn::Connection, Instant, HashMap<String, usize>) {
    let mut refusals = HashMap::new();
    let what = format!("a session for {name} at {}", door.addr);
    let (connection, at) = within(limit, &what, async {
        loop {
            match hello(door, name).await {
                (connection, Reply::Session { .. }) => return (connection, Instant::now()),
                (_, Reply::Refused { reason, detail }) => {
                    assert!(
                        matches!(reason, RefuseReason::NameTaken | RefuseReason::ServerFull),
                        "{reason:?}: {detail}"
                    );
                    *refusals.entry(format!("{reason:?}: {detail}")).or_insert(0) += 1;
                }
                (_, other) => panic!("{other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    (connection, at, refusals)
}

/// One Send, with how long its answer took.
async fn send(connection: &quinn::Connection, to: &str, body: &str) -> (u64, Status, Duration) {
    let request = Request::Send {
        to: to.into(),
        body: body.into(),
    };
    let started = Instant::now();
    match ask(connection, &request).await {
        Reply::Receipt { id, status } => (id, status, started.elapsed()),
        other => panic!("a receipt, not {other:?}"),
    }
}

/// The ids of every delivery pushed to one connection, in order, read in
/// the background until the connection ends.
struct Inbox {
    ids: mpsc::UnboundedReceiver<u64>,
    task: tokio::task::JoinHandle<quinn::ConnectionError>,
}

impl Inbox {
    fn of(connection: &quinn::Connection) -> Inbox {
        let connection = connection.clone();
        let (tx, ids) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let mut stream = match connection.accept_uni().await {
                    Ok(stream) => stream,
                    Err(e) => return e,
                };
                let Ok(bytes) = stream.read_to_end(1 << 20).await else {
                    continue;
                };
                if let Ok(Push::Deliver { id, .. }) = decode(&bytes) {
                    let _ = tx.send(id);
                }
            }
        });
        Inbox { ids, task }
    }

    /// The next delivery's id.
    async fn next(&mut self) -> u64 {
        within(SCENARIO, "a delivery", self.ids.recv())
            .await
            .expect("a delivery before the connection ended")
    }

    /// Every id received so far.
    fn drain(&mut self) -> Vec<u64> {
        std::iter::from_fn(|| self.ids.try_recv().ok()).collect()
    }

    /// Every id received until the connection ended (at most `limit` more).
    async fn until_closed(self, limit: Duration) -> (Vec<u64>, quinn::ConnectionError) {
        let Inbox { mut ids, task } = self;
        let error = within(limit, "the connection to end", task)
            .await
            .expect("inbox task");
        (std::iter::from_fn(|| ids.try_recv().ok()).collect(), error)
    }
}

/// The application close code and reason of a connection the server closed.
fn closed_by_server(error: &quinn::ConnectionError) -> Option<(u64, String)> {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => Some((
            close.error_code.into_inner(),
            String::from_utf8_lossy(&close.reason).into_owned(),
        )),
        _ => None,
    }
}

fn assert_fenced(who: &str, error: &quinn::ConnectionError) {
    match closed_by_server(error) {
        Some((code, reason)) => {
            assert_eq!(code, FENCED_CODE, "{who}: {reason}");
            assert!(reason.contains(FENCED_REASON), "{who}: {reason}");
        }
        None => panic!("{who}'s connection was closed by its server, not {error:?}"),
    }
}

/// Whether `node`'s lease now counts as serving.
fn serving(cluster: &Cluster) -> bool {
    *cluster.lease().serving().borrow()
}

/// Wait (at most 20 s) until `cluster`'s node serves again.
async fn serving_again(cluster: &Arc<Cluster>) {
    eventually(Duration::from_secs(20), "the node to serve again", || {
        let cluster = Arc::clone(cluster);
        async move { serving(&cluster) }
    })
    .await;
}

async fn delivered(from: &quinn::Connection, to: &str, inbox: &mut Inbox) {
    let (id, status, _) = send(from, to, "hello").await;
    assert_eq!(status, Status::Delivered, "to {to}");
    assert_eq!(inbox.next().await, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_closes_its_users_before_its_names_move_and_serves_again() {
    const LEASE: Duration = Duration::from_secs(3);
    let nats = NatsServer::start();
    let proxy = Proxy::start(nats.addr()).await;
    let n1 = TestServer::start_node(node_config(vec![proxy.nats_url()], "n1", LEASE, 1)).await;
    let n2 = TestServer::start_node(node_config(vec![nats.url.clone()], "n2", LEASE, 1)).await;
    let (c1, c2) = (n1.cluster.clone().unwrap(), n2.cluster.clone().unwrap());
    let (d1, d2) = (Door::of(&n1), Door::of(&n2));
    let alice = guest(&d1, "alice").await;
    let bob = guest(&d2, "bob").await;
    let mut bob_inbox = Inbox::of(&bob);
    delivered(&alice, "bob", &mut bob_inbox).await;

    let incarnation = c1.lease().incarnation();
    let last_renewal = c1.lease().state().renewed;
    proxy.blackhole();
    let cut = Instant::now();
    // Three things, watched at once: n1 closing alice's connection, n2
    // seeing n1's lease end, and n2 giving the name alice to a new Hello.
    let closed = async {
        let error = within(LEASE * 2, "n1 to close alice's connection", alice.closed()).await;
        (Instant::now(), error)
    };
    let lease_ended = async {
        eventually(LEASE * 3, "n1's lease to end (seen from n2)", || {
            let c2 = Arc::clone(&c2);
            async move { matches!(c2.lease().is_live("n1", incarnation).await, Ok(false)) }
        })
        .await;
        Instant::now()
    };
    let claimed = claim_when_free(&d2, "alice", LEASE * 4);
    let ((closed_at, error), ended_at, (alice_on_n2, claimed_at, refusals)) =
        tokio::join!(closed, lease_ended, claimed);
    println!(
        "cut off (last renewal {:?} before): alice closed after {:?}, n1's lease ended after {:?}, \
         n2 gave alice a session after {:?} (n2 refused alice meanwhile: {refusals:?})",
        cut - last_renewal,
        closed_at - cut,
        ended_at - cut,
        claimed_at - cut
    );
    assert_fenced("alice", &error);
    assert!(
        closed_at < claimed_at,
        "n1 closed alice's connection before n2 gave her name to someone else"
    );
    assert!(
        ended_at - cut < LEASE + Duration::from_secs(2),
        "the lease ended within its lifetime (and a margin)"
    );
    // A Hello during the lease's last moment asks n1 (2 s without answer).
    assert!(
        claimed_at.saturating_duration_since(ended_at) < Duration::from_secs(3),
        "n2 gave the name soon after the lease ended: {:?}",
        claimed_at.saturating_duration_since(ended_at)
    );
    // n2's users were never disturbed.
    let mut alice2_inbox = Inbox::of(&alice_on_n2);
    delivered(&bob, "alice", &mut alice2_inbox).await;
    // A fenced node admits nobody.
    match hello(&d1, "carol").await {
        (_, Reply::Refused { reason, detail }) => {
            assert_eq!(reason, RefuseReason::ServerFull);
            assert!(detail.contains("cannot reach its cluster"), "{detail}");
        }
        (_, other) => panic!("a fenced node refuses Hellos, not {other:?}"),
    }

    // NATS is reachable again: n1 comes back by itself, under a new incarnation.
    proxy.restore();
    let restored = Instant::now();
    serving_again(&c1).await;
    println!("restored: n1 served again after {:?}", restored.elapsed());
    assert_ne!(c1.lease().incarnation(), incarnation);
    let carol = guest(&d1, "carol").await;
    let mut carol_inbox = Inbox::of(&carol);
    delivered(&carol, "bob", &mut bob_inbox).await;
    delivered(&bob, "carol", &mut carol_inbox).await;
    delivered(&carol, "alice", &mut alice2_inbox).await;

    // Cut off again, now until n1's NATS client gives its connection up and
    // dials again (held by the proxy too): n1 fences, and comes back on a
    // new connection once restored.
    let connections = proxy.accepted();
    let incarnation = c1.lease().incarnation();
    proxy.blackhole();
    let cut = Instant::now();
    let error = within(LEASE * 2, "n1 to close carol's connection", carol.closed()).await;
    let fenced_after = cut.elapsed();
    assert_fenced("carol", &error);
    eventually(
        Duration::from_secs(20),
        "n1's NATS client to dial again",
        || async { proxy.accepted() > connections },
    )
    .await;
    let redialled_after = cut.elapsed();
    proxy.restore();
    let restored = Instant::now();
    serving_again(&c1).await;
    println!(
        "cut off again: carol closed after {fenced_after:?}, n1 dialled NATS again after \
         {redialled_after:?}; restored: n1 served again after {:?}",
        restored.elapsed()
    );
    assert_ne!(c1.lease().incarnation(), incarnation);
    let dave = guest(&d1, "dave").await;
    let mut dave_inbox = Inbox::of(&dave);
    delivered(&dave, "bob", &mut bob_inbox).await;
    delivered(&bob, "dave", &mut dave_inbox).await;
    delivered(&dave, "alice", &mut alice2_inbox).await;
    n1.stop().await;
    n2.stop().await;
}

/// `quic-chat server` as node `node` in its own directory under `dir`.
fn node_process(dir: &Path, nats: &str, node: &str, lease: &str) -> (Proc, Door) {
    let home = dir.join(node);
    std::fs::create_dir_all(&home).unwrap();
    let (process, addr, ca) =
        block_in_place(|| start_cluster_node(&home, nats, node, &["--cluster-lease", lease]));
    (process, Door { addr, ca })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_is_not_connected_at_once_and_its_names_free_within_the_lease() {
    const LEASE: Duration = Duration::from_secs(3);
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut p1, d1) = node_process(dir.path(), &nats.url, "n1", "3s");
    let (_p2, d2) = node_process(dir.path(), &nats.url, "n2", "3s");
    let alice = guest(&d1, "alice").await;
    let bob = guest(&d2, "bob").await;
    let mut alice_inbox = Inbox::of(&alice);
    delivered(&bob, "alice", &mut alice_inbox).await;

    block_in_place(|| {
        p1.child.kill().unwrap();
        p1.child.wait().unwrap();
    });
    let killed = Instant::now();
    // NATS dropped n1's subscriptions with its connection: "no responders".
    // n1's lease lives on for up to 3 s, and while it does n2 asks again for
    // 300 ms (a live node may be moving to another NATS server) before it
    // answers NotConnected.
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let (_, status, took) = send(&bob, "alice", &format!("are you there? {i}")).await;
        assert_eq!(status, Status::NotConnected, "send {i}");
        slowest = slowest.max(took);
    }
    println!("after SIGKILL: bob's Sends to alice were NotConnected, the slowest in {slowest:?}");
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");

    let (_alice_on_n2, claimed_at, refusals) = claim_when_free(&d2, "alice", LEASE * 3).await;
    let took = claimed_at - killed;
    println!(
        "after SIGKILL: n2 gave alice a session after {took:?} (lease {LEASE:?}; refused \
         meanwhile: {refusals:?})"
    );
    assert!(took < LEASE + Duration::from_secs(2), "{took:?}");
}

/// What one Send of the cross-node chat saw.
struct Sent {
    from: &'static str,
    id: u64,
    status: Status,
    took: Duration,
    /// When it was answered, in seconds from the start of the chat.
    at: f64,
}

/// Chat both ways between alice (n1) and bob (n2) while `fault` happens
/// (after a second of chat), until both nodes renewed their lease after it
/// and at least `after` passed. Every Send must be Delivered, and
/// delivered once.
async fn chat_through(
    n1: &TestServer,
    n2: &TestServer,
    after: Duration,
    limit: Duration,
    fault: impl FnOnce(),
) {
    let (c1, c2) = (n1.cluster.clone().unwrap(), n2.cluster.clone().unwrap());
    let alice = first_guest(&Door::of(n1), "alice").await;
    let bob = first_guest(&Door::of(n2), "bob").await;
    let (mut alice_inbox, mut bob_inbox) = (Inbox::of(&alice), Inbox::of(&bob));
    let started = Instant::now();
    let mut fault = Some(fault);
    let mut faulted: Option<Instant> = None;
    let mut renewed: [Option<Instant>; 2] = [None, None];
    let mut sent = Vec::new();
    within(limit, "chat through the fault", async {
        loop {
            let now = Instant::now();
            if faulted.is_none() && now - started > Duration::from_secs(1) {
                block_in_place(fault.take().unwrap());
                faulted = Some(Instant::now());
            }
            for (from, connection, to) in [("alice", &alice, "bob"), ("bob", &bob, "alice")] {
                let (id, status, took) = send(connection, to, "ping").await;
                let at = (Instant::now() - started).as_secs_f64();
                sent.push(Sent {
                    from,
                    id,
                    status,
                    took,
                    at,
                });
            }
            if let Some(t) = faulted {
                for (i, cluster) in [&c1, &c2].into_iter().enumerate() {
                    let state = cluster.lease().state();
                    if renewed[i].is_none() && state.renewed > t {
                        renewed[i] = Some(state.renewed);
                    }
                    assert!(
                        serving(cluster),
                        "n{} fenced {:?} after the fault",
                        i + 1,
                        t.elapsed()
                    );
                }
                if renewed.iter().all(Option::is_some) && t.elapsed() > after {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let t = faulted.unwrap();
    let slowest = sent.iter().map(|s| s.took).max().unwrap();
    let failed: Vec<String> = sent
        .iter()
        .filter(|s| s.status != Status::Delivered)
        .map(|s| {
            format!(
                "{} #{}: {:?} in {:?} at {:.3} s",
                s.from, s.id, s.status, s.took, s.at
            )
        })
        .collect();
    println!(
        "{} Sends through the fault (at {:.3} s), the slowest answered in {slowest:?}; leases \
         renewed {:?} / {:?} after it; not Delivered: {failed:?}",
        sent.len(),
        (t - started).as_secs_f64(),
        renewed[0].map(|r| r - t),
        renewed[1].map(|r| r - t),
    );
    assert!(failed.is_empty(), "every Send Delivered");
    for (from, inbox) in [("alice", &mut bob_inbox), ("bob", &mut alice_inbox)] {
        let expected: Vec<u64> = sent
            .iter()
            .filter(|s| s.from == from)
            .map(|s| s.id)
            .collect();
        let mut got = inbox.drain();
        // A Delivered message's stream was acknowledged: it is read soon.
        while got.len() < expected.len() {
            got.push(inbox.next().await);
        }
        assert_eq!(got.len(), expected.len(), "from {from}: nothing twice");
        let got: HashSet<u64> = got.into_iter().collect();
        assert_eq!(got, expected.into_iter().collect(), "from {from}");
    }
}

/// Nodes n1 and n2 on `nats`, each given every server's URL, their buckets
/// kept in three copies. The first creates the buckets, which a fresh NATS
/// cluster places in a few seconds on a loaded machine (creating one once
/// outlasted the 6 s request timeout in CI, and was tried again): joining
/// may take up to 20 s.
async fn nodes_on(nats: &NatsCluster, lease: Duration) -> [TestServer; 2] {
    let mut nodes = Vec::new();
    for node in ["n1", "n2"] {
        let mut config = node_config(nats.urls.clone(), node, lease, 3);
        config.connect_timeout = Duration::from_secs(20);
        let started = Instant::now();
        nodes.push(TestServer::start_node(config).await);
        println!("{node} joined the NATS cluster in {:?}", started.elapsed());
    }
    nodes.try_into().ok().unwrap()
}

/// Two nodes on a three-server NATS cluster (each given all three URLs,
/// buckets with three copies); one server is killed.
async fn losing_one_nats_server(kill_the_one_n1_is_on: bool) {
    const LEASE: Duration = Duration::from_secs(15);
    let mut nats = block_in_place(|| NatsCluster::start(3));
    let [n1, n2] = nodes_on(&nats, LEASE).await;
    let on = |node: &str| {
        block_in_place(|| nats.serving_client(&format!("quic-chat {node}")))
            .unwrap_or_else(|| panic!("{node} is connected to one of the servers"))
    };
    let (s1, s2) = (on("n1"), on("n2"));
    let victim = if kill_the_one_n1_is_on {
        s1
    } else {
        (0..3).find(|s| *s != s1 && *s != s2).unwrap()
    };
    println!(
        "n1 is on s{}, n2 on s{}; killing s{} (JetStream meta leader: {:?})",
        s1 + 1,
        s2 + 1,
        victim + 1,
        nats.meta_leader(victim)
    );
    chat_through(
        &n1,
        &n2,
        Duration::from_secs(3),
        Duration::from_secs(25),
        || nats.kill(victim),
    )
    .await;
    if kill_the_one_n1_is_on {
        let now = block_in_place(|| nats.serving_client("quic-chat n1"));
        assert!(
            now.is_some_and(|s| s != victim),
            "n1 moved to another server: {now:?}"
        );
    }
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_goes_on_when_a_nats_server_no_node_is_on_dies() {
    losing_one_nats_server(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_goes_on_when_the_nats_server_a_node_is_on_dies() {
    losing_one_nats_server(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_losing_its_quorum_fences_the_nodes_and_they_serve_again_when_it_is_back() {
    const LEASE: Duration = Duration::from_secs(6);
    let mut nats = block_in_place(|| NatsCluster::start(3));
    let [n1, n2] = nodes_on(&nats, LEASE).await;
    let (c1, c2) = (n1.cluster.clone().unwrap(), n2.cluster.clone().unwrap());
    let (d1, d2) = (Door::of(&n1), Door::of(&n2));
    let alice = first_guest(&d1, "alice").await;
    let bob = first_guest(&d2, "bob").await;
    let mut bob_inbox = Inbox::of(&bob);
    delivered(&alice, "bob", &mut bob_inbox).await;

    block_in_place(|| {
        nats.kill(0);
        nats.kill(1);
    });
    let killed = Instant::now();
    let (alice_closed, bob_closed) = tokio::join!(
        async {
            let error = within(LEASE, "n1 to fence", alice.closed()).await;
            (killed.elapsed(), error)
        },
        async {
            let error = within(LEASE, "n2 to fence", bob.closed()).await;
            (killed.elapsed(), error)
        },
    );
    println!(
        "quorum lost: n1 closed alice after {:?}, n2 closed bob after {:?} (lease {LEASE:?})",
        alice_closed.0, bob_closed.0
    );
    assert_fenced("alice", &alice_closed.1);
    assert_fenced("bob", &bob_closed.1);
    assert!(!serving(&c1) && !serving(&c2));
    match hello(&d1, "carol").await {
        (_, Reply::Refused { reason, detail }) => {
            assert_eq!(reason, RefuseReason::ServerFull);
            assert!(detail.contains("cannot reach its cluster"), "{detail}");
        }
        (_, other) => panic!("a fenced node refuses Hellos, not {other:?}"),
    }

    block_in_place(|| {
        nats.restart(0);
        nats.restart(1);
    });
    let restarted = Instant::now();
    eventually(Duration::from_secs(60), "both nodes to serve again", || {
        let (c1, c2) = (Arc::clone(&c1), Arc::clone(&c2));
        async move { serving(&c1) && serving(&c2) }
    })
    .await;
    let serving_after = restarted.elapsed();
    // Claims need the names bucket, whose leader may come a moment later.
    let (carol, carol_at, refusals) = claim_when_free(&d1, "carol", Duration::from_secs(30)).await;
    println!(
        "servers back: both nodes served again after {serving_after:?}, carol had a session \
         on n1 after {:?} (refused before: {refusals:?})",
        carol_at - restarted
    );
    let dave = guest(&d2, "dave").await;
    let (mut carol_inbox, mut dave_inbox) = (Inbox::of(&carol), Inbox::of(&dave));
    delivered(&carol, "dave", &mut dave_inbox).await;
    delivered(&dave, "carol", &mut carol_inbox).await;
    // alice's claim from before (an old incarnation) is stale: hers again.
    let alice = guest(&d1, "alice").await;
    let mut alice_inbox = Inbox::of(&alice);
    delivered(&dave, "alice", &mut alice_inbox).await;
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_leaves_every_send_answered_in_time_and_nothing_delivered_twice() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (_p1, d1) = node_process(dir.path(), &nats.url, "n1", "3s");
    let (p2, d2) = node_process(dir.path(), &nats.url, "n2", "3s");
    let alice = guest(&d1, "alice").await;
    let bob = guest(&d2, "bob").await;
    let mut bob_inbox = Inbox::of(&bob);
    let mut sent: Vec<(u64, Status, Duration)> = Vec::new();
    for _ in 0..3 {
        let (id, status, took) = send(&alice, "bob", "before").await;
        assert_eq!(status, Status::Delivered);
        assert_eq!(bob_inbox.next().await, id);
        sent.push((id, status, took));
    }

    block_in_place(|| signal(&p2.child, "-STOP"));
    let stopped = Instant::now();
    // Sends while n2 is stopped, a quarter second apart, all in flight at once.
    let mut during = tokio::task::JoinSet::new();
    let mut pace = tokio::time::interval(Duration::from_millis(250));
    for i in 0..8 {
        pace.tick().await;
        let alice = alice.clone();
        during.spawn(async move { send(&alice, "bob", &format!("while stopped {i}")).await });
    }
    let mut answered_during = Vec::new();
    while let Some(done) = within(SCENARIO, "the Sends to a stopped node", during.join_next()).await
    {
        answered_during.push(done.unwrap());
    }
    let slowest = answered_during.iter().map(|s| s.2).max().unwrap();
    let statuses: Vec<Status> = answered_during.iter().map(|s| s.1).collect();
    println!(
        "n2 stopped: 8 Sends answered {statuses:?}, the slowest in {slowest:?}; n2 was stopped \
         for {:?}",
        stopped.elapsed()
    );
    assert!(slowest <= Duration::from_secs(10), "{slowest:?}");

    block_in_place(|| signal(&p2.child, "-CONT"));
    let resumed = Instant::now();
    // And Sends after it woke up (it finds its lease ended and fences).
    let mut after = Vec::new();
    for i in 0..3 {
        after.push(send(&alice, "bob", &format!("after {i}")).await);
    }
    let slowest_after = after.iter().map(|s| s.2).max().unwrap();
    assert!(
        slowest_after <= Duration::from_secs(10),
        "{slowest_after:?}"
    );
    let (mut got, error) = bob_inbox.until_closed(Duration::from_secs(15)).await;
    println!(
        "n2 resumed: closed bob after {:?} ({:?}); Sends after: {:?}",
        resumed.elapsed(),
        closed_by_server(&error),
        after.iter().map(|s| (s.1, s.2)).collect::<Vec<_>>()
    );
    assert_fenced("bob", &error);
    sent.extend(answered_during.iter().copied());
    sent.extend(after.iter().copied());
    // Everything bob got, before and after the stop.
    let mut all: Vec<u64> = sent.iter().take(3).map(|s| s.0).collect();
    all.append(&mut got);
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "nothing delivered twice: {all:?}");
    let ours: HashSet<u64> = sent.iter().map(|s| s.0).collect();
    assert!(unique.is_subset(&ours), "only what alice sent");
    let late: Vec<u64> = answered_during
        .iter()
        .filter(|s| s.1 != Status::Delivered && unique.contains(&s.0))
        .map(|s| s.0)
        .collect();
    println!(
        "bob got {} distinct messages, each once; {} of the Sends answered while n2 was stopped \
         were delivered after it resumed",
        unique.len(),
        late.len()
    );
    // n2 was stopped for longer than its lease: it woke with its lease ended,
    // so it must not deliver what waited for it (its senders were answered
    // long ago, and the name could be another node's by then).
    assert!(
        late.is_empty(),
        "a node whose lease had ended delivered {late:?}"
    );
    for (id, status, _) in &sent {
        if *status == Status::Delivered {
            assert!(unique.contains(id), "Delivered {id} reached bob");
        }
    }
}
