//! Server shutdown closes every client with SERVER_SHUTDOWN.

use quic_chat::client::Disconnect;

use crate::harness::*;

#[tokio::test]
async fn shutdown_closes_every_client_with_code_1() {
    let server = TestServer::start().await;
    let (_alice, mut alice_in) = server.connect("alice").await;
    let (_bob, mut bob_in) = server.connect("bob").await;
    let raw = raw_registered(&server, "raw").await;
    server.begin_shutdown();
    assert_eq!(
        within(SCENARIO, "alice told", alice_in.next()).await,
        Err(Disconnect::ServerShutdown)
    );
    assert_eq!(
        within(SCENARIO, "bob told", bob_in.next()).await,
        Err(Disconnect::ServerShutdown)
    );
    match within(SCENARIO, "raw close", raw.closed()).await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), 1);
            assert_eq!(
                &close.reason[..],
                quic_chat::server::SHUTDOWN_REASON.as_bytes()
            );
        }
        other => panic!("expected an application close, got {other}"),
    }
    server.stop().await;
}
