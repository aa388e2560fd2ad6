//! Protocol v2 fixtures: device keys made in the test, raw `quic-chat/2`
//! connections that present them, and frame exchanges through the codec.

use std::sync::Arc;

use quic_chat::protocol::{decode, encode, Fingerprint, Reply, Request};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{within, TestServer, SCENARIO};

/// A device: a P-256 key and a self-signed certificate for it.
pub struct DeviceKey {
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    pub fingerprint: Fingerprint,
}

impl DeviceKey {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().expect("P-256 key");
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        let cert = CertificateDer::from(cert.der().to_vec());
        let fingerprint = quic_chat::tls::fingerprint_of_cert(&cert).expect("fingerprint");
        DeviceKey {
            cert,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            fingerprint,
        }
    }
}

/// A client endpoint that speaks `alpn`, presenting `device` if given; its
/// TLS session cache lets a second connection resume the first one's session.
pub struct RawClient {
    endpoint: quinn::Endpoint,
}

impl RawClient {
    pub fn new(server: &TestServer, alpn: &[u8], device: Option<&DeviceKey>) -> Self {
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_uni_streams(16u32.into());
        Self::with_transport(server, alpn, device, transport)
    }

    /// [`RawClient::new`] with the given transport settings (say, a small
    /// receive window that holds a delivery back until it is read).
    pub fn with_transport(
        server: &TestServer,
        alpn: &[u8],
        device: Option<&DeviceKey>,
        transport: quinn::TransportConfig,
    ) -> Self {
        Self::trusting(&server.ca, alpn, device, transport)
    }

    /// A client of any server whose CA certificate is the file `ca` (say, a
    /// server process), with the given transport settings.
    pub fn trusting(
        ca: &std::path::Path,
        alpn: &[u8],
        device: Option<&DeviceKey>,
        transport: quinn::TransportConfig,
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in quic_chat::tls::read_chain(ca).unwrap() {
            roots.add(cert).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
        let mut crypto = match device {
            Some(device) => builder
                .with_client_auth_cert(
                    vec![device.cert.clone()],
                    PrivateKeyDer::Pkcs8(device.key.clone_key()),
                )
                .expect("client certificate"),
            None => builder.with_no_client_auth(),
        };
        crypto.alpn_protocols = vec![alpn.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(config);
        RawClient { endpoint }
    }

    /// A new connection to `server`, nothing sent yet.
    pub async fn connect(&self, server: &TestServer) -> quinn::Connection {
        self.connect_to(server.addr).await
    }

    /// A new connection to the server at `addr`, nothing sent yet.
    pub async fn connect_to(&self, addr: std::net::SocketAddr) -> quinn::Connection {
        within(
            SCENARIO,
            "raw handshake",
            self.endpoint.connect(addr, "localhost").unwrap(),
        )
        .await
        .expect("handshake")
    }
}

/// Send `request` on a new bidirectional stream and decode the reply.
pub async fn ask(connection: &quinn::Connection, request: &Request) -> Reply {
    let bytes = super::raw_exchange(connection, &encode(request).unwrap()).await;
    decode(&bytes).unwrap_or_else(|e| panic!("a reply, not {bytes:?}: {e}"))
}

/// A protocol-v2 Hello for `name`.
pub fn hello2(name: &str) -> Request {
    Request::Hello {
        protocol: 2,
        username: name.into(),
    }
}

/// Connect through `client` and say Hello as `name`; returns the connection and the reply.
pub async fn hello_as(
    client: &RawClient,
    server: &TestServer,
    name: &str,
) -> (quinn::Connection, Reply) {
    let connection = client.connect(server).await;
    let reply = ask(&connection, &hello2(name)).await;
    (connection, reply)
}
