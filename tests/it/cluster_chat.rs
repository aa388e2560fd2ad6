//! Two and three quic-chat nodes on one real nats-server, in this process:
//! users on different nodes chat as if they shared one, names are unique in
//! the whole cluster, lists and counts cover every node, an account signing
//! in on another node takes its name over (code 5), and a message between
//! two users of one node sends nothing through NATS.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use quic_chat::cluster::{ClusterConfig, NodeId};
use quic_chat::protocol::{decode, encode, Push, RefuseReason, Reply, Request, Status};

use crate::harness::nats::NatsServer;
use crate::harness::v2::{ask, hello_as, DeviceKey, RawClient};
use crate::harness::{close_code, eventually, within, TestServer, SCENARIO};

const V2: &[u8] = b"quic-chat/2";

fn node_config(nats: &NatsServer, node: &str) -> ClusterConfig {
    let mut config = ClusterConfig::new(vec![nats.url.clone()], node.parse::<NodeId>().unwrap());
    config.connect_timeout = Duration::from_secs(5);
    config
}

async fn nodes(nats: &NatsServer, ids: &[&str]) -> Vec<TestServer> {
    let mut nodes = Vec::new();
    for id in ids {
        nodes.push(TestServer::start_node(node_config(nats, id)).await);
    }
    nodes
}

/// A v2 guest named `name` on `node`; panics unless it gets a Session.
async fn guest(node: &TestServer, name: &str) -> (quinn::Connection, u32) {
    let (connection, reply) = hello_as(&RawClient::new(node, V2, None), node, name).await;
    match reply {
        Reply::Session { online, .. } => (connection, online),
        other => panic!("{name} gets a session, not {other:?}"),
    }
}

async fn send(connection: &quinn::Connection, to: &str, body: &str) -> (u64, Status) {
    let request = Request::Send {
        to: to.into(),
        body: body.into(),
    };
    match ask(connection, &request).await {
        Reply::Receipt { id, status } => (id, status),
        other => panic!("a receipt, not {other:?}"),
    }
}

/// Nodes n1 and n2 on `nats` with these limits and mail settings.
async fn two_nodes_with(
    nats: &NatsServer,
    limits: quic_chat::server::Limits,
    mail: quic_chat::server::MailConfig,
) -> (TestServer, TestServer) {
    let n1 =
        TestServer::start_node_with(node_config(nats, "n1"), limits.clone(), mail, false).await;
    let n2 = TestServer::start_node_with(node_config(nats, "n2"), limits, mail, false).await;
    (n1, n2)
}

/// The accounts of a mail scenario: bob registered on n2 and gone again,
/// alice signed in on n1. Alice's connection, and both keys (alice's, bob's).
async fn alice_on_n1_bob_offline(
    n1: &TestServer,
    n2: &TestServer,
) -> (quinn::Connection, DeviceKey, DeviceKey) {
    let (alice_key, bob_key) = (DeviceKey::new(), DeviceKey::new());
    sign_in(n2, &bob_key, "bob")
        .await
        .close(0u32.into(), b"bye");
    let alice = sign_in(n1, &alice_key, "alice").await;
    (alice, alice_key, bob_key)
}

/// Send `body` from `sender` to `to` until it is Queued (`to` is leaving:
/// until then it is still online, or its name still held); its id.
async fn first_queued(sender: &quinn::Connection, to: &str, body: &str) -> u64 {
    within(SCENARIO, "the recipient offline", async {
        loop {
            let (id, status) = send(sender, to, body).await;
            if status == Status::Queued {
                return id;
            }
        }
    })
    .await
}

/// The next pushed frame's bytes.
async fn next_push(connection: &quinn::Connection) -> Vec<u8> {
    within(SCENARIO, "a push", async {
        let mut stream = connection.accept_uni().await.expect("a push stream");
        stream.read_to_end(1 << 20).await.expect("the push")
    })
    .await
}

async fn users(connection: &quinn::Connection) -> Vec<String> {
    match ask(connection, &Request::ListUsers).await {
        Reply::Users { names } => names,
        other => panic!("users, not {other:?}"),
    }
}

#[tokio::test]
async fn users_on_two_nodes_chat_as_on_one_and_same_node_messages_skip_nats() {
    let nats = NatsServer::start();
    let [n1, n2]: [TestServer; 2] = nodes(&nats, &["n1", "n2"]).await.try_into().ok().unwrap();
    let (alice, _) = guest(&n1, "Alice").await;
    let (carol, _) = guest(&n1, "carol").await;
    let (bob, _) = guest(&n2, "Bob.x-y").await;

    // Across nodes: Delivered, and the Deliver frame is exactly the one a
    // single node would write.
    let (id, status) = send(&alice, "bob.X-Y", "hi from n1 é").await;
    assert_eq!(status, Status::Delivered);
    let bytes = next_push(&bob).await;
    let push: Push = decode(&bytes).unwrap();
    match &push {
        Push::Deliver {
            id: got,
            from,
            body,
            ..
        } => {
            assert_eq!(
                (*got, from.as_str(), body.as_str()),
                (id, "Alice", "hi from n1 é")
            );
        }
        other => panic!("a delivery, not {other:?}"),
    }
    assert_eq!(
        encode(&push).unwrap(),
        bytes,
        "byte-identical Deliver frame"
    );
    // And back.
    let (_, status) = send(&bob, "alice", "hi from n2").await;
    assert_eq!(status, Status::Delivered);
    assert!(matches!(
        decode(&next_push(&alice).await).unwrap(),
        Push::Deliver { .. }
    ));

    // Same node: nothing goes through NATS. Background traffic (the lease
    // renewal) can fall in the window; then the window is tried again.
    let cluster = n1.cluster.as_ref().unwrap();
    let stats = cluster.statistics();
    let mut quiet = false;
    for _ in 0..5 {
        let (out, revision) = (
            stats.out_messages.load(Ordering::Relaxed),
            cluster.lease().state().revision,
        );
        for i in 0..50 {
            let (_, status) = send(&carol, "alice", &format!("local {i}")).await;
            assert_eq!(status, Status::Delivered);
            next_push(&alice).await;
        }
        if cluster.lease().state().revision == revision {
            assert_eq!(
                stats.out_messages.load(Ordering::Relaxed),
                out,
                "same-node messages published nothing to NATS"
            );
            quiet = true;
            break;
        }
    }
    assert!(quiet, "a window without lease renewals");
    // A cross-node message does publish (the counter is live).
    let out = stats.out_messages.load(Ordering::Relaxed);
    send(&carol, "bob.x-y", "remote").await;
    assert!(stats.out_messages.load(Ordering::Relaxed) > out);

    // A name online nowhere: NotConnected at once (no responders), not after a timeout.
    let started = Instant::now();
    let (_, status) = send(&alice, "nobody", "hello?").await;
    let took = started.elapsed();
    assert_eq!(status, Status::NotConnected);
    println!("NotConnected for a name online nowhere took {took:?}");
    assert!(took < Duration::from_millis(500), "{took:?}");

    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn names_are_unique_across_nodes_and_lists_cover_every_node() {
    let nats = NatsServer::start();
    let [n1, n2]: [TestServer; 2] = nodes(&nats, &["n1", "n2"]).await.try_into().ok().unwrap();
    let (alice, online) = guest(&n1, "alice").await;
    assert_eq!(online, 1);
    // The same name in another case, on the other node: taken.
    let (refused, reply) = hello_as(&RawClient::new(&n2, V2, None), &n2, "ALICE").await;
    match reply {
        Reply::Refused { reason, .. } => assert_eq!(reason, RefuseReason::NameTaken),
        other => panic!("ALICE is taken on n2 too, not {other:?}"),
    }
    drop(refused);
    let (bob, _) = guest(&n2, "bob").await;
    for connection in [&alice, &bob] {
        let connection = connection.clone();
        eventually(SCENARIO, "both nodes list both users", move || {
            let connection = connection.clone();
            async move { users(&connection).await == ["alice", "bob"] }
        })
        .await;
    }
    let (_, online) = guest(&n1, "carol").await;
    assert_eq!(online, 3, "online counts the whole cluster");

    // alice leaves n1: her name is free on n2 at once (her claim is released).
    alice.close(0u32.into(), b"bye");
    let left = Instant::now();
    let client = RawClient::new(&n2, V2, None);
    let again = within(SCENARIO, "alice's name freed", async {
        loop {
            match hello_as(&client, &n2, "alice").await {
                (connection, Reply::Session { .. }) => return connection,
                (
                    _,
                    Reply::Refused {
                        reason: RefuseReason::NameTaken,
                        ..
                    },
                ) => {}
                (_, other) => panic!("{other:?}"),
            }
        }
    })
    .await;
    println!(
        "a name left on n1 was free on n2 after {:?}",
        left.elapsed()
    );
    drop(again);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn an_account_signing_in_on_another_node_takes_its_name_over() {
    let nats = NatsServer::start();
    let [n1, n2]: [TestServer; 2] = nodes(&nats, &["n1", "n2"]).await.try_into().ok().unwrap();
    let key = DeviceKey::new();
    let (first, reply) = hello_as(&RawClient::new(&n1, V2, Some(&key)), &n1, "dana").await;
    assert!(matches!(reply, Reply::Session { .. }), "{reply:?}");
    let (second, reply) = hello_as(&RawClient::new(&n2, V2, Some(&key)), &n2, "Dana").await;
    assert!(matches!(reply, Reply::Session { .. }), "{reply:?}");
    assert_eq!(
        close_code(&first).await,
        Some(5),
        "REPLACED on the old node"
    );
    // Messages to dana now reach the new connection, from either node.
    let (sender, _) = guest(&n1, "erin").await;
    let (_, status) = send(&sender, "dana", "where are you?").await;
    assert_eq!(status, Status::Delivered);
    assert!(matches!(
        decode(&next_push(&second).await).unwrap(),
        Push::Deliver { .. }
    ));
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_hellos_for_one_name_over_three_nodes_give_one_session() {
    let nats = NatsServer::start();
    let nodes = nodes(&nats, &["n1", "n2", "n3"]).await;
    let clients: Vec<RawClient> = nodes
        .iter()
        .map(|node| RawClient::new(node, V2, None))
        .collect();
    let mut connecting = Vec::new();
    for i in 0..50 {
        connecting.push(hello_as(&clients[i % 3], &nodes[i % 3], "newbie"));
    }
    let replies = within(
        Duration::from_secs(30),
        "fifty hellos",
        futures_util::future::join_all(connecting),
    )
    .await;
    let sessions = replies
        .iter()
        .filter(|(_, reply)| matches!(reply, Reply::Session { .. }))
        .count();
    let taken = replies
        .iter()
        .filter(|(_, reply)| {
            matches!(reply, Reply::Refused { reason, .. } if *reason == RefuseReason::NameTaken)
        })
        .count();
    assert_eq!((sessions, taken), (1, 49), "exactly one session");
    for node in nodes {
        node.stop().await;
    }
}

fn account_of(reply: &Reply) -> Option<quic_chat::protocol::Account> {
    match reply {
        Reply::Session { account, .. } => Some(*account),
        _ => None,
    }
}

fn refusal(reply: &Reply) -> Option<RefuseReason> {
    match reply {
        Reply::Refused { reason, .. } => Some(*reason),
        _ => None,
    }
}

#[tokio::test]
async fn accounts_are_the_same_on_every_node() {
    use quic_chat::protocol::{Account, DeviceOp};
    let nats = NatsServer::start();
    let [n1, n2]: [TestServer; 2] = nodes(&nats, &["n1", "n2"]).await.try_into().ok().unwrap();
    let (key, stranger, second) = (DeviceKey::new(), DeviceKey::new(), DeviceKey::new());
    let (alice, reply) = hello_as(&RawClient::new(&n1, V2, Some(&key)), &n1, "Alice").await;
    assert_eq!(account_of(&reply), Some(Account::Registered));
    // Another key cannot have the name on the other node, online or not,
    let (_, reply) = hello_as(&RawClient::new(&n2, V2, Some(&stranger)), &n2, "alice").await;
    assert_eq!(
        refusal(&reply),
        Some(RefuseReason::KeyMismatch),
        "{reply:?}"
    );
    // nor can her key register a second name there, nor a v1 guest take it.
    let (_, reply) = hello_as(&RawClient::new(&n2, V2, Some(&key)), &n2, "alice2").await;
    assert_eq!(
        refusal(&reply),
        Some(RefuseReason::KeyMismatch),
        "{reply:?}"
    );
    alice.close(0u32.into(), b"bye");
    let v1 = RawClient::new(&n2, b"quic-chat/1", None).connect(&n2).await;
    let hello1 = Request::Hello {
        protocol: 1,
        username: "alice".into(),
    };
    let reply = ask(&v1, &hello1).await;
    assert_eq!(refusal(&reply), Some(RefuseReason::NameTaken), "{reply:?}");
    // Her own key is a returning account on n2; a device added there counts on n1.
    let (on_n2, reply) = hello_as(&RawClient::new(&n2, V2, Some(&key)), &n2, "ALICE").await;
    assert_eq!(account_of(&reply), Some(Account::Returning), "{reply:?}");
    let add = Request::Devices(DeviceOp::Add {
        fingerprint: second.fingerprint.as_bytes().to_vec(),
        label: "phone".into(),
    });
    match ask(&on_n2, &add).await {
        Reply::Devices { devices } => assert_eq!(devices.len(), 2),
        other => panic!("devices, not {other:?}"),
    }
    drop(on_n2);
    let (_, reply) = hello_as(&RawClient::new(&n1, V2, Some(&second)), &n1, "alice").await;
    assert_eq!(account_of(&reply), Some(Account::Returning), "{reply:?}");
    let listed = n2.console("accounts").await;
    assert!(listed.starts_with("Alice: 2 devices"), "{listed}");
    // Two keys registering one new name on two nodes at once: one account.
    let (k1, k2) = (DeviceKey::new(), DeviceKey::new());
    let (c1, c2) = (
        RawClient::new(&n1, V2, Some(&k1)),
        RawClient::new(&n2, V2, Some(&k2)),
    );
    let ((_, r1), (_, r2)) = tokio::join!(hello_as(&c1, &n1, "zoe"), hello_as(&c2, &n2, "zoe"));
    let registered = [&r1, &r2]
        .iter()
        .filter(|reply| account_of(reply) == Some(Account::Registered))
        .count();
    let mismatched = [&r1, &r2]
        .iter()
        .filter(|reply| refusal(reply) == Some(RefuseReason::KeyMismatch))
        .count();
    assert_eq!((registered, mismatched), (1, 1), "{r1:?} {r2:?}");
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn a_device_index_entry_left_by_an_interrupted_write_does_not_hold_the_key() {
    use quic_chat::protocol::Account;
    let nats = NatsServer::start();
    let n1 = TestServer::start_node(node_config(&nats, "n1")).await;
    let key = DeviceKey::new();
    // As if a node died between indexing the key and writing its account.
    let client = async_nats::connect(nats.url.as_str()).await.unwrap();
    let bucket = async_nats::jetstream::new(client)
        .get_key_value("qc_accounts")
        .await
        .unwrap();
    let hex: String = key
        .fingerprint
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    bucket
        .put(format!("d.{hex}"), "ghost".into())
        .await
        .unwrap();
    let (_, reply) = hello_as(&RawClient::new(&n1, V2, Some(&key)), &n1, "real").await;
    assert_eq!(account_of(&reply), Some(Account::Registered), "{reply:?}");
    let entry = bucket.get(format!("d.{hex}")).await.unwrap();
    assert_eq!(
        entry.as_deref(),
        Some(&b"real"[..]),
        "the index entry is replaced"
    );
    n1.stop().await;
}

/// The next pushed `Deliver`'s id and body.
async fn next_deliver(connection: &quinn::Connection) -> (u64, String) {
    match decode(&next_push(connection).await).unwrap() {
        Push::Deliver { id, body, .. } => (id, body),
        other => panic!("a delivery, not {other:?}"),
    }
}

#[tokio::test]
async fn mail_queued_on_one_node_is_drained_on_another_in_order_after_the_first_stops() {
    let nats = NatsServer::start();
    let [n1, n2]: [TestServer; 2] = nodes(&nats, &["n1", "n2"]).await.try_into().ok().unwrap();
    let (alice, _, bob_key) = alice_on_n1_bob_offline(&n1, &n2).await;
    let mut queued = Vec::new();
    let sending = within(SCENARIO, "bob's name released", async {
        loop {
            let (id, status) = send(&alice, "bob", "first").await;
            if status == Status::Queued {
                return id;
            }
            assert_eq!(status, Status::NotConnected, "bob is still leaving");
        }
    });
    queued.push(sending.await);
    for i in 1..20 {
        let (id, status) = send(&alice, "bob", &format!("message {i}")).await;
        assert_eq!(status, Status::Queued);
        queued.push(id);
    }
    // A guest's name is not an account: nothing is stored for it.
    assert_eq!(send(&alice, "nobody", "x").await.1, Status::NotConnected);
    // The node it was sent through goes away; the mail does not.
    drop(alice);
    n1.stop().await;
    let shown = n2.console("account bob").await;
    assert!(
        shown.contains("  stored: 20 messages for it, 0 late receipts for it as a sender"),
        "{shown}"
    );
    let (bob, reply) = hello_as(&RawClient::new(&n2, V2, Some(&bob_key)), &n2, "bob").await;
    match reply {
        Reply::Session {
            queued: waiting, ..
        } => assert_eq!(waiting, 20),
        other => panic!("{other:?}"),
    }
    let mut got = Vec::new();
    for _ in 0..20 {
        got.push(next_deliver(&bob).await);
    }
    let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, queued, "every message, once, in order");
    assert_eq!(got[0].1, "first");
    // Delivered mail is removed (once bob's QUIC stack acknowledged it).
    let stream = n2.cluster.as_ref().unwrap().mail().unwrap().clone();
    let bob_key_name = quic_chat::protocol::NameKey::new("bob").unwrap();
    eventually(SCENARIO, "delivered mail removed", || {
        let stream = stream.clone();
        async move { stream.count(&bob_key_name).await.unwrap() == 0 }
    })
    .await;
    bob.close(0u32.into(), b"bye");
    let client = RawClient::new(&n2, V2, Some(&bob_key));
    let waiting = within(SCENARIO, "bob again", async {
        loop {
            match hello_as(&client, &n2, "bob").await.1 {
                Reply::Session { queued, .. } => return queued,
                Reply::Refused { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    assert_eq!(waiting, 0);
    n2.stop().await;
}

#[tokio::test]
async fn a_login_on_another_node_while_the_sender_keeps_sending_loses_nothing() {
    let nats = NatsServer::start();
    let [n1, n2]: [TestServer; 2] = nodes(&nats, &["n1", "n2"]).await.try_into().ok().unwrap();
    let (alice, _, bob_key) = alice_on_n1_bob_offline(&n1, &n2).await;
    // Wait until bob is gone everywhere (his Sends are Queued).
    let first = first_queued(&alice, "bob", "before").await;
    let sender = tokio::spawn(async move {
        let mut answered = vec![(first, Status::Queued)];
        for i in 0..300 {
            answered.push(send(&alice, "bob", &format!("m{i}")).await);
        }
        answered
    });
    let bob_client = RawClient::new(&n2, V2, Some(&bob_key));
    let (bob, _) = hello_as(&bob_client, &n2, "bob").await;
    // bob reads as a client does, while alice sends.
    let (ids_tx, mut ids) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            let Ok(mut stream) = bob.accept_uni().await else {
                return;
            };
            let bytes = stream.read_to_end(1 << 20).await.unwrap();
            if let Push::Deliver { id, .. } = decode(&bytes).unwrap() {
                let _ = ids_tx.send(id);
            }
        }
    });
    let answered = within(SCENARIO, "the sender", sender).await.unwrap();
    let expected: Vec<u64> = answered
        .iter()
        .filter(|(_, status)| matches!(status, Status::Queued | Status::Delivered))
        .map(|(id, _)| *id)
        .collect();
    assert!(
        answered
            .iter()
            .all(|(_, status)| matches!(status, Status::Queued | Status::Delivered)),
        "{:?}",
        answered
            .iter()
            .filter(|(_, s)| !matches!(s, Status::Queued | Status::Delivered))
            .collect::<Vec<_>>()
    );
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(within(SCENARIO, "a delivery", ids.recv()).await.unwrap());
    }
    assert_eq!(
        got, expected,
        "every message once, stored ones never overtaken"
    );
    reader.abort();
    let delivered = answered
        .iter()
        .filter(|(_, s)| *s == Status::Delivered)
        .count();
    println!(
        "login race: {} queued, {delivered} delivered live",
        expected.len() - delivered
    );
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn cluster_metrics_show_remote_routes_the_lease_and_the_nodes() {
    use crate::metrics::{scrape, value};
    let nats = NatsServer::start();
    let n1 = TestServer::start_node_with(
        node_config(&nats, "n1"),
        crate::harness::test_limits(),
        quic_chat::server::MailConfig::default(),
        true,
    )
    .await;
    let n2 = TestServer::start_node(node_config(&nats, "n2")).await;
    let (alice, _) = guest(&n1, "alice").await;
    let (bob, _) = guest(&n2, "bob").await;
    let before = scrape(&n1).await;
    assert!(before
        .keys()
        .all(|key| !key.contains("cluster_remote_sends") || value(&before, key) == 0.0));
    for i in 0..3 {
        assert_eq!(
            send(&alice, "bob", &format!("{i}")).await.1,
            Status::Delivered
        );
        next_push(&bob).await;
    }
    assert_eq!(send(&alice, "nobody", "?").await.1, Status::NotConnected);
    let cluster = n1.cluster.as_ref().unwrap();
    eventually(SCENARIO, "the roster sees bob", || async {
        cluster.roster().count_elsewhere("n1") == 1
    })
    .await;
    let after = scrape(&n1).await;
    let remote = |outcome: &str| {
        value(
            &after,
            &format!("quic_chat_cluster_remote_sends_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(remote("answered"), 3.0);
    assert_eq!(remote("nobody_there"), 1.0);
    assert_eq!(remote("no_answer"), 0.0);
    assert_eq!(value(&after, "quic_chat_cluster_lease_held"), 1.0);
    assert_eq!(value(&after, "quic_chat_cluster_serving"), 1.0);
    assert_eq!(value(&after, "quic_chat_cluster_nodes"), 2.0);
    assert_eq!(value(&after, "quic_chat_cluster_users_elsewhere"), 1.0);
    assert!(value(&after, "quic_chat_cluster_lease_age_seconds") < 15.0);
    // The single-node metrics still count: three Delivered, one NotConnected.
    assert_eq!(
        value(&after, "quic_chat_sends_total{status=\"delivered\"}"),
        3.0
    );
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_recipient_on_another_node_gets_busy_then_too_slow_as_on_one() {
    let nats = NatsServer::start();
    let limits = quic_chat::server::Limits {
        delivery_timeout: Duration::from_millis(800),
        recipient_backlog_bytes: 16 * 1024,
        ..crate::harness::test_limits()
    };
    let mail = quic_chat::server::MailConfig::default();
    let (n1, n2) = two_nodes_with(&nats, limits, mail).await;
    // Registers on n2, then never accepts a delivery stream.
    let stuck = crate::harness::raw_registered(&n2, "stuck").await;
    let (alice, _) = guest(&n1, "alice").await;
    let started = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..120 {
        let alice = alice.clone();
        sends.spawn(async move {
            let sent = Instant::now();
            let body = format!("message {i} {}", "x".repeat(200));
            (send(&alice, "stuck", &body).await.1, sent.elapsed())
        });
    }
    let mut statuses = Vec::new();
    within(SCENARIO, "every send answered", async {
        while let Some(done) = sends.join_next().await {
            statuses.push(done.unwrap());
        }
    })
    .await;
    let busy = statuses
        .iter()
        .filter(|(s, _)| *s == Status::RecipientBusy)
        .count();
    assert!(busy > 0, "{statuses:?}");
    let slowest = statuses.iter().map(|(_, took)| *took).max().unwrap();
    println!("cross-node stuck recipient: {busy} of 120 busy, slowest answer {slowest:?}");
    for (status, _) in &statuses {
        assert!(
            matches!(
                status,
                Status::Delivered | Status::RecipientBusy | Status::NotConnected
            ),
            "{status:?}"
        );
    }
    assert!(slowest < Duration::from_secs(10));
    assert_eq!(close_code(&stuck).await, Some(4), "closed with TOO_SLOW");
    assert!(started.elapsed() < Duration::from_secs(10));
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn ids_are_unique_over_three_nodes_each_restarted_twice() {
    let nats = NatsServer::start();
    let mut nodes = nodes(&nats, &["n1", "n2", "n3"]).await;
    let mut prefixes = std::collections::HashSet::new();
    let mut ids = std::collections::HashSet::new();
    for run in 0..3 {
        for (i, node) in nodes.iter().enumerate() {
            let (connection, _) = guest(node, &format!("u{i}r{run}")).await;
            for _ in 0..5 {
                let (id, _) = send(&connection, "nobody", "x").await;
                assert!(ids.insert(id), "id {id} twice");
                prefixes.insert(id >> 40);
            }
        }
        if run < 2 {
            let mut restarted = Vec::new();
            for node in nodes {
                restarted.push(node.restart().await);
            }
            nodes = restarted;
        }
    }
    assert_eq!(
        prefixes.len(),
        9,
        "one run number per node run: {prefixes:?}"
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_users_over_three_nodes_are_listed_alike_on_every_node() {
    let nats = NatsServer::start();
    let limits = quic_chat::server::Limits {
        max_connections_per_ip: 0,
        ..crate::harness::test_limits()
    };
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let mail = quic_chat::server::MailConfig::default();
        nodes.push(
            TestServer::start_node_with(node_config(&nats, id), limits.clone(), mail, false).await,
        );
    }
    // Kept alive: on a slow machine signing everyone in can outlast the idle timeout.
    let clients: Vec<RawClient> = nodes
        .iter()
        .map(|node| {
            let mut transport = quinn::TransportConfig::default();
            transport.keep_alive_interval(Some(Duration::from_secs(5)));
            RawClient::with_transport(node, V2, None, transport)
        })
        .collect();
    let mut connections = Vec::new();
    let mut expected = Vec::new();
    let started = Instant::now();
    for batch in 0..30 {
        let mut names = Vec::new();
        for j in 0..100 {
            let i = batch * 100 + j;
            let name = if i % 7 == 0 {
                format!("u.{i:04}-x")
            } else {
                format!("u{i:04}")
            };
            expected.push(name.clone());
            names.push((i, name));
        }
        let hellos = names
            .iter()
            .map(|(i, name)| hello_as(&clients[i % 3], &nodes[i % 3], name));
        for (connection, reply) in futures_util::future::join_all(hellos).await {
            assert!(matches!(reply, Reply::Session { .. }), "{reply:?}");
            connections.push(connection);
        }
    }
    println!(
        "3,000 users signed in over three nodes in {:?}",
        started.elapsed()
    );
    expected.sort_by_key(|name| name.to_ascii_lowercase());
    for (i, _) in nodes.iter().enumerate() {
        let connection = connections[i].clone();
        let expected = expected.clone();
        eventually(SCENARIO, "every node lists all 3,000", move || {
            let (connection, expected) = (connection.clone(), expected.clone());
            async move { users(&connection).await == expected }
        })
        .await;
    }
    // A dotted, dashed name routes across nodes.
    let from = &connections[1]; // on n2
    let (_, status) = send(from, "U.0000-X", "hi").await;
    assert_eq!(status, Status::Delivered);
    drop(connections);
    for node in nodes {
        node.stop().await;
    }
}

/// The next pushed late receipt.
async fn next_receipt(connection: &quinn::Connection) -> (u64, Status) {
    match decode(&next_push(connection).await).unwrap() {
        Push::Receipt { id, status } => (id, status),
        other => panic!("a receipt, not {other:?}"),
    }
}

/// An account session on `node`, retried while its name is still held by
/// a session that is ending.
async fn sign_in(node: &TestServer, key: &DeviceKey, name: &str) -> quinn::Connection {
    let client = RawClient::new(node, V2, Some(key));
    within(SCENARIO, "sign in", async {
        loop {
            match hello_as(&client, node, name).await {
                (connection, Reply::Session { .. }) => return connection,
                (_, Reply::Refused { .. }) => {}
                (_, other) => panic!("{other:?}"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn late_receipts_reach_the_sender_on_its_node_now_or_at_its_next_session() {
    let nats = NatsServer::start();
    let [n1, n2]: [TestServer; 2] = nodes(&nats, &["n1", "n2"]).await.try_into().ok().unwrap();
    let (alice, alice_key, bob_key) = alice_on_n1_bob_offline(&n1, &n2).await;
    let first = first_queued(&alice, "bob", "one").await;
    // bob drains on n2 while alice is online on n1: her receipt comes at once.
    let bob = sign_in(&n2, &bob_key, "bob").await;
    assert_eq!(next_deliver(&bob).await.0, first);
    assert_eq!(next_receipt(&alice).await, (first, Status::Delivered));
    bob.close(0u32.into(), b"bye");
    // Now alice is offline when bob drains: her receipt waits for her next session.
    let second = first_queued(&alice, "bob", "two").await;
    alice.close(0u32.into(), b"bye");
    let bob = sign_in(&n1, &bob_key, "bob").await;
    assert_eq!(next_deliver(&bob).await.0, second);
    let alice = sign_in(&n2, &alice_key, "alice").await;
    assert_eq!(next_receipt(&alice).await, (second, Status::Delivered));
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn mail_past_its_lifetime_is_swept_and_its_sender_told_expired_across_nodes() {
    let nats = NatsServer::start();
    let mail = quic_chat::server::MailConfig {
        ttl: Duration::from_secs(2),
        ..Default::default()
    };
    let limits = crate::harness::test_limits();
    let (n1, n2) = two_nodes_with(&nats, limits, mail).await;
    let (alice, _, bob_key) = alice_on_n1_bob_offline(&n1, &n2).await;
    let id = first_queued(&alice, "bob", "too late").await;
    let queued_at = Instant::now();
    assert_eq!(next_receipt(&alice).await, (id, Status::Expired));
    let took = queued_at.elapsed();
    println!("a 2 s message was swept, its sender told Expired, after {took:?}");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    let bob = sign_in(&n2, &bob_key, "bob").await;
    // Nothing is left for bob: a message sent now is the first he gets.
    let (fresh, status) = send(&alice, "bob", "now").await;
    assert_eq!(status, Status::Delivered);
    assert_eq!(next_deliver(&bob).await.0, fresh);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_runs_pairs_across_two_nodes() {
    use crate::harness::process::{output_within, BIN};
    let nats = NatsServer::start();
    let limits = quic_chat::server::Limits {
        max_connections_per_ip: 0,
        ..crate::harness::test_limits()
    };
    let mail = quic_chat::server::MailConfig::default();
    let (n1, n2) = two_nodes_with(&nats, limits, mail).await;
    let (a1, ca1, a2, ca2) = (
        n1.addr.to_string(),
        n1.ca.display().to_string(),
        n2.addr.to_string(),
        n2.ca.display().to_string(),
    );
    let output = tokio::task::spawn_blocking(move || {
        output_within(
            std::process::Command::new(BIN).args([
                "bench",
                "-w",
                "pairs",
                "-n",
                "2",
                "--in-flight",
                "4",
                "-d",
                "1",
                "--warmup",
                "0.2",
                "--json",
                &a1,
                "--ca",
                &ca1,
                "--receivers-at",
                &a2,
                "--receivers-ca",
                &ca2,
            ]),
            Duration::from_secs(60),
        )
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8(output.stdout).unwrap().trim()).unwrap();
    assert!(report["count"].as_u64().unwrap() > 10, "{report}");
    // Every message crossed: n1's NATS client published them.
    let published = n1
        .cluster
        .as_ref()
        .unwrap()
        .statistics()
        .out_messages
        .load(Ordering::Relaxed);
    assert!(
        published >= report["count"].as_u64().unwrap(),
        "{published} {report}"
    );
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn a_node_that_exits_frees_its_users_names_at_once() {
    let nats = NatsServer::start();
    let [n1, n2]: [TestServer; 2] = nodes(&nats, &["n1", "n2"]).await.try_into().ok().unwrap();
    let (_alice, _) = guest(&n1, "alice").await;
    let (bob, _) = guest(&n2, "bob").await;
    // EXIT on n1's console (a graceful stop): its lease and claims go.
    let stopped = Instant::now();
    n1.stop().await;
    let (_, status) = send(&bob, "alice", "still there?").await;
    assert_eq!(status, Status::NotConnected);
    let client = RawClient::new(&n2, V2, None);
    let (_, reply) = hello_as(&client, &n2, "alice").await;
    println!(
        "a name of a node that exited was free after {:?}",
        stopped.elapsed()
    );
    assert!(
        matches!(reply, Reply::Session { .. }),
        "free at once: {reply:?}"
    );
    n2.stop().await;
}

#[tokio::test]
async fn a_full_mailbox_in_the_cluster_is_recipient_busy_not_evicted() {
    let nats = NatsServer::start();
    let mail = quic_chat::server::MailConfig {
        mailbox_max_messages: 3,
        ..Default::default()
    };
    let limits = crate::harness::test_limits();
    let (n1, n2) = two_nodes_with(&nats, limits, mail).await;
    let (alice, _, bob_key) = alice_on_n1_bob_offline(&n1, &n2).await;
    let first = first_queued(&alice, "bob", "0").await;
    let mut kept = vec![first];
    for i in 1..3 {
        let (id, status) = send(&alice, "bob", &i.to_string()).await;
        assert_eq!(status, Status::Queued);
        kept.push(id);
    }
    assert_eq!(
        send(&alice, "bob", "one too many").await.1,
        Status::RecipientBusy
    );
    let bob = sign_in(&n2, &bob_key, "bob").await;
    for id in kept {
        assert_eq!(
            next_deliver(&bob).await.0,
            id,
            "the first three, none evicted"
        );
    }
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test]
async fn claims_left_by_a_node_that_died_are_cleared() {
    let nats = NatsServer::start();
    let mut short = node_config(&nats, "n1");
    short.lease_ttl = Duration::from_secs(2);
    let n1 = TestServer::start_node(short.clone()).await;
    // A node that claims a name and dies without releasing it.
    let mut ghost_config = short;
    ghost_config.node_id = "n9".parse().unwrap();
    let ghost = quic_chat::cluster::Cluster::join(&ghost_config)
        .await
        .unwrap();
    let key = quic_chat::protocol::NameKey::new("ghost").unwrap();
    ghost
        .names()
        .claim(&key, "ghost", ghost.lease())
        .await
        .unwrap();
    drop(ghost);
    let died = Instant::now();
    let names = n1.cluster.as_ref().unwrap().names().clone();
    eventually(SCENARIO, "the dead node's claim cleared", || {
        let names = names.clone();
        async move { names.holder_of(&key).await.unwrap().is_none() }
    })
    .await;
    println!(
        "a dead node's claim was cleared after {:?} (2 s leases)",
        died.elapsed()
    );
    n1.stop().await;
}
