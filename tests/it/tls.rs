//! TLS: a wrong CA, a wrong name and a wrong ALPN each fail as their own
//! `HandshakeFailure` (the words the CLI prints are checked in cli.rs); sessions resume.

use quic_chat::client::{Client, ClientError, HandshakeFailure};

use crate::harness::*;

#[tokio::test]
async fn a_wrong_ca_fails_with_a_clear_error() {
    let server = TestServer::start().await;
    let other = tempfile::tempdir().unwrap();
    quic_chat::tls::load_or_create(other.path(), &[]).unwrap();
    let mut config = server.client_config("alice");
    config.ca_file = other.path().join("ca.pem");
    let error = within(SCENARIO, "refused handshake", Client::connect(&config))
        .await
        .expect_err("an untrusted server must be rejected");
    // Measured: rustls sends decrypt_error (0x133) here, not unknown_ca (0x130),
    // because every generated CA has the same name: the chain is built and its
    // signature fails. Both count as untrusted.
    assert!(
        matches!(
            &error,
            ClientError::Handshake {
                kind: HandshakeFailure::UntrustedCertificate,
                ..
            }
        ),
        "{error:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_name_the_certificate_lacks_fails() {
    let server = TestServer::start().await;
    let mut config = server.client_config("alice");
    config.server_name = Some("chat.example.org".into());
    let error = within(SCENARIO, "refused handshake", Client::connect(&config))
        .await
        .expect_err("a certificate for other names must be rejected");
    assert!(
        matches!(
            &error,
            ClientError::Handshake {
                kind: HandshakeFailure::WrongName,
                ..
            }
        ),
        "{error:?}"
    );
    // The names it does have work, by DNS name and by IP.
    config.server_name = Some("localhost".into());
    within(SCENARIO, "connect", Client::connect(&config))
        .await
        .unwrap();
    server.connect("by_ip").await;
    server.stop().await;
}

#[tokio::test]
async fn a_missing_ca_file_is_a_clear_error() {
    let server = TestServer::start().await;
    let mut config = server.client_config("alice");
    config.ca_file = server.dir.join("missing.pem");
    let error = Client::connect(&config)
        .await
        .expect_err("no CA, no connection");
    assert!(matches!(error, ClientError::Tls(_)), "{error}");
    assert!(error.to_string().contains("missing.pem"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn another_alpn_is_refused() {
    let server = TestServer::start().await;
    let result = raw_connect_alpn(&server, b"quic-chat/3").await;
    let error = result.expect_err("the server speaks quic-chat/2 and quic-chat/1 only");
    assert_eq!(
        HandshakeFailure::of(&error),
        HandshakeFailure::UnsupportedProtocol,
        "{error:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_the_operator_brings_is_served() {
    use quic_chat::server::{Server, ServerConfig};
    use quic_chat::tls::CertSource;
    // A chain made elsewhere (here: by our own generator in another folder).
    let elsewhere = tempfile::tempdir().unwrap();
    quic_chat::tls::load_or_create(elsewhere.path(), &[]).unwrap();
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cert: CertSource::Provided {
            cert: elsewhere.path().join("server.pem"),
            key: elsewhere.path().join("server.key"),
        },
        limits: test_limits(),
        accounts: quic_chat::server::AccountsConfig::new(elsewhere.path().join("data")),
        metrics: None,
    };
    let server = Server::bind(config).unwrap();
    assert_eq!(server.ca_path(), None, "no CA of its own to hand out");
    let addr = server.local_addr();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));
    let config = quic_chat::client::ClientConfig::new(
        addr.to_string(),
        "alice",
        elsewhere.path().join("ca.pem"),
    );
    let (client, _) = within(SCENARIO, "connect", Client::connect(&config))
        .await
        .unwrap();
    assert_eq!(client.welcome().online, 1);
    shutdown.cancel();
    within(SCENARIO, "shutdown", task).await.unwrap();
}

/// Two connections in turn through one `Connector`, with or without resumption;
/// returns how many session tickets the server took back.
async fn tickets_taken_back(resume: bool) -> u64 {
    use std::sync::atomic::Ordering;
    let server = TestServer::start().await;
    let mut config = server.client_config("first");
    config.tls_resumption = resume;
    let connector = quic_chat::client::Connector::new(&config).await.unwrap();
    // The ticket travels with HANDSHAKE_DONE, ahead of the Welcome.
    let (first, _) = within(SCENARIO, "first connection", connector.connect("first"))
        .await
        .unwrap();
    first.close().await;
    let (second, _) = within(SCENARIO, "second connection", connector.connect("second"))
        .await
        .unwrap();
    let taken_back = server.tls.tickets_accepted.load(Ordering::Relaxed);
    second.close().await;
    server.stop().await;
    taken_back
}

#[tokio::test]
async fn a_reconnecting_client_resumes_its_tls_session() {
    assert_eq!(tickets_taken_back(true).await, 1);
}

#[tokio::test]
async fn without_resumption_every_handshake_is_full() {
    assert_eq!(tickets_taken_back(false).await, 0);
}

#[tokio::test]
async fn a_restarted_server_serves_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path()).await;
    // What a client was handed before the restart, kept apart from the server's files.
    let old_ca = dir.path().join("given-to-clients.pem");
    std::fs::copy(&server.ca, &old_ca).unwrap();
    let before = std::fs::read(&server.ca).unwrap();

    let server = server.restart().await;
    assert_eq!(server.dir, dir.path());
    assert_eq!(std::fs::read(&server.ca).unwrap(), before, "the CA is kept");
    let config = quic_chat::client::ClientConfig::new(server.addr.to_string(), "alice", &old_ca);
    let (client, _) = within(SCENARIO, "connect after restart", Client::connect(&config))
        .await
        .expect("a client with the old ca.pem connects");
    assert_eq!(client.welcome().online, 1);
    client.close().await;
    server.stop().await;
}
