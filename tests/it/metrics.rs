//! `--metrics`: real traffic through a real server, then a scrape over real
//! HTTP, asserting exact counts (Sends by status, live deliveries and their
//! latency histogram, registrations, stored mail, failed TLS handshakes);
//! 404 and 405; and a server without the flag opens no TCP listener.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use quic_chat::client::Client;
use quic_chat::protocol::{Reply, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::process::{start_server_with, WAIT};
use crate::harness::v2::*;
use crate::harness::*;
use crate::mail::{next_deliver, queued_of, receipt, register, V2};

/// An HTTP answer: status code, head, body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Split a whole HTTP/1.1 response.
fn answer_of(bytes: Vec<u8>) -> Answer {
    let text = String::from_utf8(bytes).expect("a text response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn request(method: &str, path: &str, addr: SocketAddr) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

/// One HTTP/1.1 request over a plain tokio TCP stream.
async fn http(addr: SocketAddr, method: &str, path: &str) -> Answer {
    within(Duration::from_secs(10), "an HTTP answer", async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = request(method, path, addr);
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).await.expect("read");
        answer_of(bytes)
    })
    .await
}

/// Every sample of a scrape: `name{labels}` to its value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').expect("name value");
            (key.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// Scrape `/metrics` of `server`.
pub(crate) async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let addr = server.metrics.expect("metrics are on");
    let answer = http(addr, "GET", "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert!(
        answer
            .head
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        answer.head
    );
    samples(&answer.body)
}

/// The value of `key` in `samples` (a missing one fails the test).
pub(crate) fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {samples:#?}"))
}

fn sends(samples: &HashMap<String, f64>, status: Status) -> f64 {
    value(
        samples,
        &format!("quic_chat_sends_total{{status=\"{}\"}}", status.name()),
    )
}

#[tokio::test]
async fn sends_deliveries_registrations_and_stored_mail_are_counted_exactly() {
    let server = TestServer::start_with_metrics().await;
    let before = scrape(&server).await;
    for status in Status::ALL {
        assert_eq!(sends(&before, status), 0.0, "{status:?}");
    }
    assert_eq!(value(&before, "quic_chat_delivery_seconds_count"), 0.0);
    assert_eq!(value(&before, "quic_chat_connections_open"), 0.0);
    assert!(
        before.keys().all(|key| !key.contains("cluster")),
        "no cluster metrics without --cluster"
    );

    // bob registers and leaves; alice and carol stay.
    let bob_key = register(&server, "bob").await;
    let alice_key = DeviceKey::new();
    let (alice, _) = hello_as(
        &RawClient::new(&server, V2, Some(&alice_key)),
        &server,
        "alice",
    )
    .await;
    let carol_key = DeviceKey::new();
    let (carol, _) = hello_as(
        &RawClient::new(&server, V2, Some(&carol_key)),
        &server,
        "carol",
    )
    .await;
    // Another device asking for carol's name is refused.
    let (_intruder, reply) = hello_as(
        &RawClient::new(&server, V2, Some(&DeviceKey::new())),
        &server,
        "carol",
    )
    .await;
    assert!(matches!(reply, Reply::Refused { .. }), "{reply:?}");

    let (_, delivered) = receipt(&alice, "carol", "hello carol").await;
    assert_eq!(delivered, Status::Delivered);
    assert_eq!(next_deliver(&carol).await.3, "hello carol");
    let (_, absent) = receipt(&alice, "nobody", "anyone there?").await;
    assert_eq!(absent, Status::NotConnected);
    let (_, queued) = receipt(&alice, "bob", "see you tomorrow").await;
    assert_eq!(queued, Status::Queued);

    let after = scrape(&server).await;
    for status in Status::ALL {
        let expected = match status {
            Status::Delivered | Status::NotConnected | Status::Queued => 1.0,
            _ => 0.0,
        };
        assert_eq!(sends(&after, status), expected, "{status:?}");
    }
    assert_eq!(
        value(&after, "quic_chat_deliveries_total{outcome=\"acked\"}"),
        1.0
    );
    assert_eq!(
        value(&after, "quic_chat_delivery_seconds_count"),
        sends(&after, Status::Delivered),
        "one latency per delivered message"
    );
    assert_eq!(
        value(&after, "quic_chat_delivery_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    let seconds = value(&after, "quic_chat_delivery_seconds_sum");
    assert!(seconds > 0.0 && seconds < 5.0, "{seconds}");
    assert_eq!(
        value(&after, "quic_chat_registrations_total{outcome=\"session\"}"),
        3.0
    );
    assert_eq!(
        value(
            &after,
            "quic_chat_registrations_total{outcome=\"key_mismatch\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&after, "quic_chat_registrations_total{outcome=\"welcome\"}"),
        0.0
    );
    assert_eq!(value(&after, "quic_chat_connections_accepted_total"), 4.0);
    assert_eq!(value(&after, "quic_chat_mail_queued_total"), 1.0);
    assert_eq!(value(&after, "quic_chat_mail_stored_messages"), 1.0);
    assert!(value(&after, "quic_chat_mail_stored_bytes") > 0.0);
    assert_eq!(value(&after, "quic_chat_mail_drained_total"), 0.0);

    // bob comes back: his message is drained, and alice is told.
    let (bob, reply) = hello_as(&RawClient::new(&server, V2, Some(&bob_key)), &server, "bob").await;
    assert_eq!(queued_of(&reply), 1);
    assert_eq!(next_deliver(&bob).await.3, "see you tomorrow");
    eventually(SCENARIO, "the late receipt acknowledged", || async {
        value(&scrape(&server).await, "quic_chat_late_receipts_sent_total") == 1.0
    })
    .await;
    let drained = scrape(&server).await;
    assert_eq!(value(&drained, "quic_chat_mail_drained_total"), 1.0);
    assert_eq!(value(&drained, "quic_chat_mail_stored_messages"), 0.0);
    assert_eq!(value(&drained, "quic_chat_mail_stored_bytes"), 0.0);
    assert_eq!(
        value(&drained, "quic_chat_delivery_seconds_count"),
        1.0,
        "drained mail is not a live delivery"
    );

    // The refused connection and bob's first one have ended: alice, carol
    // and bob are open.
    eventually(SCENARIO, "three connections open", || async {
        value(&scrape(&server).await, "quic_chat_connections_open") == 3.0
    })
    .await;
    for connection in [alice, carol, bob] {
        connection.close(0u32.into(), b"bye");
    }
    eventually(SCENARIO, "no connection open", || async {
        value(&scrape(&server).await, "quic_chat_connections_open") == 0.0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_rejects_the_certificate_is_a_failed_tls_handshake() {
    let server = TestServer::start_with_metrics().await;
    let other = tempfile::tempdir().unwrap();
    quic_chat::tls::load_or_create(other.path(), &[]).unwrap();
    let mut config = server.client_config("alice");
    config.ca_file = other.path().join("ca.pem");
    within(SCENARIO, "refused handshake", Client::connect(&config))
        .await
        .expect_err("an untrusted server must be rejected");
    eventually(SCENARIO, "the failed handshake counted", || async {
        value(
            &scrape(&server).await,
            "quic_chat_handshakes_failed_total{reason=\"tls\"}",
        ) == 1.0
    })
    .await;
    let samples = scrape(&server).await;
    assert_eq!(value(&samples, "quic_chat_connections_accepted_total"), 0.0);
    for reason in ["timed_out", "closed", "other"] {
        let key = format!("quic_chat_handshakes_failed_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&samples, &key), 0.0, "{reason}");
    }
    server.stop().await;
}

#[tokio::test]
async fn only_get_of_the_metrics_path_is_served() {
    let server = TestServer::start_with_metrics().await;
    let addr = server.metrics.unwrap();
    assert_eq!(http(addr, "GET", "/").await.status, 404);
    assert_eq!(http(addr, "GET", "/metrics/x").await.status, 404);
    let post = http(addr, "POST", "/metrics").await;
    assert_eq!(post.status, 405);
    assert!(post.head.contains("allow: GET"), "{}", post.head);
    let get = http(addr, "GET", "/metrics").await;
    assert_eq!(get.status, 200);
    assert!(
        get.body
            .contains("# HELP quic_chat_sends_total Send requests answered, by status"),
        "{}",
        get.body
    );
    server.stop().await;

    let plain = TestServer::start().await;
    assert_eq!(plain.metrics, None, "metrics are off by default");
    plain.stop().await;
}

/// The TCP ports `pid` listens on (Linux: its socket inodes in /proc/net/tcp*).
#[cfg(target_os = "linux")]
fn listening_tcp_ports(pid: u32) -> Vec<u16> {
    use std::collections::HashSet;
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process's fds")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), ..., inode
            if fields[3] == "0A" && inodes.contains(fields[9]) {
                let port = fields[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

/// One HTTP/1.1 request over a blocking std TCP stream.
fn http_blocking(addr: SocketAddr, path: &str) -> Answer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
        .write_all(request("GET", path, addr).as_bytes())
        .unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read");
    answer_of(bytes)
}

#[cfg(target_os = "linux")]
#[test]
fn the_binary_serves_metrics_where_it_says_and_without_the_flag_listens_on_no_tcp_port() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _port, _ca) = start_server_with(
        dir.path(),
        Stdio::piped(),
        &["--metrics", "127.0.0.1:0"],
        &[],
    );
    let line = server.line();
    let addr: SocketAddr = line
        .strip_prefix("metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("unexpected third line {line:?}"))
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(listening_tcp_ports(server.child.id()), vec![addr.port()]);
    let answer = http_blocking(addr, "/metrics");
    assert_eq!(answer.status, 200);
    assert_eq!(
        value(&samples(&answer.body), "quic_chat_connections_open"),
        0.0
    );
    server.type_line("EXIT");
    assert!(server.exit().success());

    let other = tempfile::tempdir().unwrap();
    let (mut plain, _port, _ca) = start_server_with(other.path(), Stdio::piped(), &[], &[]);
    // The server is bound (it said where it listens): no TCP port is open.
    assert_eq!(listening_tcp_ports(plain.child.id()), Vec::<u16>::new());
    plain.type_line("EXIT");
    assert!(plain.exit().success());
    assert!(
        !plain.rest_of_stdout().iter().any(|l| l.contains("metrics")),
        "no metrics line without the flag"
    );
}

#[tokio::test]
async fn a_metrics_address_in_use_fails_the_start_with_its_own_error() {
    use quic_chat::server::{AccountsConfig, Server, ServerConfig, ServerError};
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert: quic_chat::tls::CertSource::Generated {
            dir: dir.path().to_owned(),
            names: Vec::new(),
        },
        limits: test_limits(),
        accounts: AccountsConfig::new(dir.path().join("data")),
        metrics: Some(addr),
    };
    match Server::bind(config) {
        Err(ServerError::MetricsBind { addr: asked, .. }) => assert_eq!(asked, addr),
        other => panic!("MetricsBind expected, got {other:?}"),
    }
}

#[tokio::test]
async fn four_scrapers_at_once_at_most_and_a_silent_one_is_cut_off() {
    let server = TestServer::start_with_metrics().await;
    let addr = server.metrics.unwrap();
    // Four connections that say nothing hold every slot.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut fifth = tokio::spawn(async move { http(addr, "GET", "/metrics").await.status });
    // A bounded look for something that must not happen: not served yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut fifth)
            .await
            .is_err(),
        "a fifth scrape was served while four connections held every slot"
    );
    // Closing one frees its slot: the waiting scrape is served.
    drop(silent.pop());
    let status = within(SCENARIO, "the fifth scrape", fifth).await.unwrap();
    assert_eq!(status, 200);
    // A connection that never sends its request is closed by the server
    // (headers within 5 s, the whole connection within 10 s).
    let mut quiet = silent.pop().unwrap();
    let mut byte = [0u8; 1];
    let read = within(
        Duration::from_secs(12),
        "the server to cut a silent scraper off",
        async { quiet.read(&mut byte).await },
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    server.stop().await;
}
