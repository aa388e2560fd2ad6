//! Transport settings that users feel: path-MTU discovery.

use std::time::Duration;

use crate::harness::*;

/// Loopback carries any datagram size, so discovery must reach the 1,452-byte
/// ceiling, and in two probes (1,326 then 1,452), not quinn's default four.
#[tokio::test]
async fn path_mtu_reaches_the_ethernet_ceiling_in_two_probes() {
    let server = TestServer::start().await;
    let (alice, _incoming) = server.connect("alice").await;
    let connection = alice.connection().clone();
    eventually(Duration::from_secs(5), "MTU discovery to finish", || {
        let connection = connection.clone();
        async move { connection.stats().path.current_mtu == 1_452 }
    })
    .await;
    let path = connection.stats().path;
    assert_eq!(path.sent_plpmtud_probes, 2, "{path:?}");
    assert_eq!(path.lost_plpmtud_probes, 0, "{path:?}");
    server.stop().await;
}
