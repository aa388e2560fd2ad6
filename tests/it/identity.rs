//! Device identities (protocol v2, Transport): the identity files, `whoami`,
//! client certificates in real QUIC handshakes (accepted self-signed, proved
//! by the key, carried across resumption, refused when garbage or signed by
//! another key), the client's `--identity`/`--guest`, and the client's v2
//! paths against a tiny fake server on raw quinn with the real `server_crypto`.
//!
//! While `Version::SUPPORTED` is `[V1]` our client offers only `quic-chat/1`,
//! so the fake server's v2 scenarios (Session, devices) run only once the
//! server side flips SUPPORTED to `[V2, V1]`; until then they return early,
//! saying so. Everything else runs in both states.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use quic_chat::client::{ClientConfig, ClientError, Connector, Disconnect, HandshakeFailure};
use quic_chat::protocol::{
    read_frame, write_frame, Account, CloseCode, Device, DeviceOp, Fingerprint, Reply, Request,
    Version,
};
use quic_chat::tls::{self, ClientIdentity, TlsError, TlsStats};
use tokio::sync::mpsc;

use crate::harness::process::{self, output_within, BIN, WAIT};
use crate::harness::*;

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo, computed here with
/// webpki's parser (the library uses x509-parser), checked against the SPKI
/// rcgen derives from the key file itself.
fn expected_fingerprint(dir: &Path) -> String {
    use base64::Engine;
    let cert = tls::read_chain(&dir.join(tls::IDENTITY_CERT_FILE)).unwrap();
    let parsed = rustls::server::ParsedCertificate::try_from(&cert[0]).unwrap();
    let spki = parsed.subject_public_key_info();
    let key_pem = std::fs::read_to_string(dir.join(tls::IDENTITY_KEY_FILE)).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    use rcgen::PublicKeyData;
    assert_eq!(
        spki.as_ref(),
        key.subject_public_key_info().as_slice(),
        "the certificate is the key's"
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, spki.as_ref());
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
    )
}

#[test]
fn identity_files_are_owner_only_and_reused() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("a").join("quic-chat");
    let first = ClientIdentity::load_or_create(&dir).unwrap();
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.join(tls::IDENTITY_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }
    assert!(dir.join(tls::IDENTITY_CERT_FILE).exists());
    assert_eq!(first.fingerprint.to_string(), expected_fingerprint(&dir));
    let key_before = std::fs::read(dir.join(tls::IDENTITY_KEY_FILE)).unwrap();
    let second = ClientIdentity::load_or_create(&dir).unwrap();
    assert_eq!(second.fingerprint, first.fingerprint);
    assert_eq!(second.cert, first.cert);
    assert_eq!(
        std::fs::read(dir.join(tls::IDENTITY_KEY_FILE)).unwrap(),
        key_before
    );
}

#[cfg(unix)]
#[test]
fn a_key_others_can_read_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    ClientIdentity::load_or_create(dir.path()).unwrap();
    let key = dir.path().join(tls::IDENTITY_KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = ClientIdentity::load_or_create(dir.path()).expect_err("a readable key");
    assert!(
        matches!(&error, TlsError::KeyNotPrivate { mode: 0o644, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "{} is accessible by other users (mode 644); a private key must be owner-only: \
             run chmod 600 {}",
            key.display(),
            key.display()
        )
    );
    assert_eq!(mode(&key), 0o644, "the key is left as it was");

    // Through the binary: one error line, a failure exit, nothing on stdout.
    let output = output_within(
        Command::new(BIN)
            .args(["whoami", "--identity"])
            .arg(dir.path())
            .env_remove("RUST_LOG"),
        WAIT,
    );
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains(&format!("chmod 600 {}", key.display())),
        "{stderr}"
    );
}

fn whoami(args: &[&str], config_home: &Path) -> (String, String) {
    let output = output_within(
        Command::new(BIN)
            .arg("whoami")
            .args(args)
            .env("XDG_CONFIG_HOME", config_home)
            .env_remove("RUST_LOG"),
        WAIT,
    );
    assert!(output.status.success(), "{output:?}");
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn whoami_prints_the_fingerprint_of_the_certificates_key() {
    let home = tempfile::tempdir().unwrap();
    // The default directory is $XDG_CONFIG_HOME/quic-chat.
    let (stdout, stderr) = whoami(&[], home.path());
    let dir = home.path().join("quic-chat");
    let printed = stdout.strip_suffix('\n').expect("one line");
    assert!(!printed.contains('\n'));
    let encoded = printed.strip_prefix("SHA256:").expect("SHA256: first");
    assert_eq!(encoded.len(), 43, "{printed}");
    assert!(encoded
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/'));
    assert_eq!(printed, expected_fingerprint(&dir));
    let key = dir.join(tls::IDENTITY_KEY_FILE);
    assert_eq!(
        stderr,
        format!("created this device's identity: {}\n", key.display())
    );

    // The second run reuses it.
    let (again, stderr) = whoami(&[], home.path());
    assert_eq!(again, stdout);
    assert_eq!(
        stderr,
        format!("this device's identity: {}\n", key.display())
    );

    // --identity DIR names another directory: another device.
    let other = home.path().join("other");
    let (elsewhere, _) = whoami(&["--identity", other.to_str().unwrap()], home.path());
    assert_ne!(elsewhere, stdout);
    assert_eq!(elsewhere.trim_end(), expected_fingerprint(&other));
}

/// A client config for `server` as `name` with the identity kept in `dir`.
fn with_identity(server: &TestServer, name: &str, dir: &Path) -> (ClientConfig, Fingerprint) {
    let identity = ClientIdentity::load_or_create(dir).unwrap();
    let fingerprint = identity.fingerprint;
    let mut config = server.client_config(name);
    config.identity = Some(identity);
    (config, fingerprint)
}

#[tokio::test]
async fn a_client_with_a_certificate_connects_to_the_real_server() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = with_identity(&server, "alice", dir.path());
    let (alice, _incoming) = within(
        SCENARIO,
        "connect",
        quic_chat::client::Client::connect(&config),
    )
    .await
    .expect("a self-signed client certificate is accepted");
    assert_eq!(
        alice.version(),
        Version::V2,
        "a v2 client and server speak v2"
    );
    assert_eq!(alice.welcome().account, Some(Account::Registered));
    assert_eq!(alice.welcome().queued, 0);
    alice.close().await;
    server.stop().await;
}

/// Against a server that speaks v1 only, the client falls back to v1: a
/// Welcome, no account (its certificate is ignored), and no devices.
#[tokio::test]
async fn against_a_v1_server_the_client_speaks_v1() {
    let mut server = FakeServer::start_speaking(Script::Welcome, &[Version::V1]);
    let dir = tempfile::tempdir().unwrap();
    let identity = ClientIdentity::load_or_create(dir.path()).unwrap();
    let connector = Connector::new(&server.config("alice", Some(identity)))
        .await
        .unwrap();
    let (alice, _incoming) = within(SCENARIO, "connect", connector.connect("alice"))
        .await
        .expect("a v1 server welcomes a v2 client");
    assert_eq!(server.next_peer().await.version, Some(Version::V1));
    assert_eq!(alice.version(), Version::V1);
    assert_eq!(alice.welcome().account, None);
    let error = alice.devices(DeviceOp::List).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::NeedsVersion {
                needs: Version::V2,
                speaks: Version::V1,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "managing devices needs protocol 2, and this server speaks protocol 1"
    );
    alice.close().await;
}

// --- a fake server on raw quinn, with the real server_crypto ---

/// What the fake server does after an accepted Hello.
#[derive(Debug, Clone)]
enum Script {
    /// Welcome (v1) or Session (v2, Registered with a certificate, else Guest), then serve.
    Welcome,
    /// Answer a v1 Hello with v2's Session: a protocol violation.
    SessionOnV1,
    /// Welcome, then close with code 5 (REPLACED).
    ReplaceAfterWelcome,
}

/// One connection the fake server accepted: what it proved and negotiated.
#[derive(Debug)]
struct Peer {
    fingerprint: Option<Fingerprint>,
    version: Option<Version>,
}

struct FakeServer {
    addr: SocketAddr,
    ca: PathBuf,
    stats: Arc<TlsStats>,
    peers: mpsc::UnboundedReceiver<Peer>,
    endpoint: quinn::Endpoint,
    _dir: tempfile::TempDir,
}

impl FakeServer {
    fn start(script: Script) -> FakeServer {
        Self::start_speaking(script, &Version::SUPPORTED)
    }

    /// A fake server that offers only `versions`.
    fn start_speaking(script: Script, versions: &[Version]) -> FakeServer {
        let dir = tempfile::tempdir().unwrap();
        let identity = tls::load_or_create(dir.path(), &[]).unwrap();
        let ca = identity.ca_path.clone().unwrap();
        let stats = Arc::new(TlsStats::default());
        let crypto = tls::server_crypto_for(identity, Arc::clone(&stats), versions).unwrap();
        let config = quinn::ServerConfig::with_crypto(crypto);
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let (tx, peers) = mpsc::unbounded_channel();
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let tx = tx.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    // A failed handshake is the client's test to check.
                    let Ok(connection) = incoming.await else {
                        return;
                    };
                    let peer = Peer {
                        fingerprint: tls::peer_fingerprint(&connection),
                        version: Version::of_connection(&connection),
                    };
                    let (fingerprint, version) = (peer.fingerprint, peer.version);
                    let _ = tx.send(peer);
                    serve(connection, version.unwrap(), fingerprint, script).await;
                });
            }
        });
        FakeServer {
            addr,
            ca,
            stats,
            peers,
            endpoint,
            _dir: dir,
        }
    }

    fn config(&self, name: &str, identity: Option<ClientIdentity>) -> ClientConfig {
        let mut config = ClientConfig::new(self.addr.to_string(), name, &self.ca);
        config.server_name = Some("localhost".into());
        config.identity = identity;
        config
    }

    async fn next_peer(&mut self) -> Peer {
        within(SCENARIO, "an accepted connection", self.peers.recv())
            .await
            .expect("the fake server runs")
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.endpoint
            .close(CloseCode::ServerShutdown.var_int(), b"");
    }
}

/// Answer the Hello as `script` says, then every Devices request from a list
/// of one device (this connection's), until the client leaves.
async fn serve(
    connection: quinn::Connection,
    version: Version,
    fingerprint: Option<Fingerprint>,
    script: Script,
) {
    let mut devices: Vec<Device> = fingerprint
        .map(|f| Device {
            fingerprint: f.as_bytes().to_vec(),
            label: "first device".into(),
            added_ms: 1_700_000_000_000,
            last_seen_ms: 1_700_000_000_000,
            current: true,
        })
        .into_iter()
        .collect();
    while let Ok((mut send, mut recv)) = connection.accept_bi().await {
        let Ok(request) = read_frame::<Request>(&mut recv).await else {
            return;
        };
        let reply = match (request, version, &script) {
            (Request::Hello { .. }, Version::V1, Script::SessionOnV1) => Reply::Session {
                server: "fake".into(),
                online: 1,
                account: Account::Guest,
                queued: 0,
            },
            (Request::Hello { .. }, Version::V1, _) => Reply::Welcome {
                server: "fake".into(),
                online: 1,
            },
            (Request::Hello { .. }, Version::V2, _) => Reply::Session {
                server: "fake".into(),
                online: 1,
                account: if fingerprint.is_some() {
                    Account::Registered
                } else {
                    Account::Guest
                },
                queued: 0,
            },
            (Request::Devices(op), Version::V2, _) => match op {
                _ if fingerprint.is_none() => Reply::Failed {
                    reason: quic_chat::protocol::Failure::NotRegistered,
                    detail: "guests have no devices".into(),
                },
                DeviceOp::List => Reply::Devices {
                    devices: devices.clone(),
                },
                DeviceOp::Add { fingerprint, label } => {
                    devices.push(Device {
                        fingerprint,
                        label,
                        added_ms: 1_700_000_100_000,
                        last_seen_ms: 0,
                        current: false,
                    });
                    Reply::Devices {
                        devices: devices.clone(),
                    }
                }
                DeviceOp::Remove { fingerprint } => {
                    devices.retain(|d| d.fingerprint != fingerprint);
                    Reply::Devices {
                        devices: devices.clone(),
                    }
                }
            },
            _ => {
                CloseCode::ProtocolError.close(&connection, "unexpected");
                return;
            }
        };
        let hello_answered = matches!(reply, Reply::Welcome { .. } | Reply::Session { .. });
        if write_frame(&mut send, &reply).await.is_err() {
            return;
        }
        if hello_answered {
            if let Script::ReplaceAfterWelcome = script {
                // Once the client has the answer, take the connection over.
                let _ = send.stopped().await;
                CloseCode::Replaced.close(&connection, "signed in elsewhere");
                return;
            }
        }
    }
}

#[tokio::test]
async fn the_server_reads_the_clients_fingerprint_also_on_a_resumed_session() {
    let mut server = FakeServer::start(Script::Welcome);
    let dir = tempfile::tempdir().unwrap();
    let identity = ClientIdentity::load_or_create(dir.path()).unwrap();
    let fingerprint = identity.fingerprint;
    let connector = Connector::new(&server.config("alice", Some(identity)))
        .await
        .unwrap();

    let (first, _) = within(SCENARIO, "first connection", connector.connect("alice"))
        .await
        .unwrap();
    let peer = server.next_peer().await;
    assert_eq!(peer.fingerprint, Some(fingerprint), "a full handshake");
    assert_eq!(peer.version, Some(first.version()));
    assert_eq!(
        first.version(),
        Version::SUPPORTED[0],
        "a client offering every version gets the server's first"
    );
    first.close().await;
    assert_eq!(server.stats.tickets_accepted.load(Ordering::Relaxed), 0);

    let (second, _) = within(SCENARIO, "second connection", connector.connect("alice"))
        .await
        .unwrap();
    let peer = server.next_peer().await;
    assert_eq!(
        server.stats.tickets_accepted.load(Ordering::Relaxed),
        1,
        "the second connection resumed the first's session"
    );
    assert_eq!(
        peer.fingerprint,
        Some(fingerprint),
        "a resumed session keeps the certificate of the handshake it resumes"
    );
    second.close().await;

    // A guest sends no certificate.
    let guest = Connector::new(&server.config("guest", None)).await.unwrap();
    let (third, _) = within(SCENARIO, "guest connection", guest.connect("guest"))
        .await
        .unwrap();
    assert_eq!(server.next_peer().await.fingerprint, None);
    if third.version() == Version::V2 {
        assert_eq!(third.welcome().account, Some(Account::Guest));
    }
    third.close().await;
}

/// Presents `cert` but signs the handshake with `key`: rustls does not check
/// that they match unless asked, so this is how a forged proof looks.
#[derive(Debug)]
struct Forged(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Forged {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Handshake with the fake server presenting `cert`, signed by `key`, and
/// say Hello: `Ok` once answered, else the error the connection ended with
/// (our side of the handshake may finish before the server has judged our
/// certificate, so the failure can come right after it).
async fn handshake_presenting(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: &rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<(), quinn::ConnectionError> {
    let server = FakeServer::start(Script::Welcome);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .unwrap();
    let forged = Forged(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert],
        signing_key,
    )));
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::read_chain(&server.ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(forged));
    crypto.alpn_protocols = Version::alpn_list();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connecting = endpoint.connect(server.addr, "localhost").unwrap();
    within(SCENARIO, "a handshake and Hello", async {
        let connection = connecting.await?;
        let version = Version::of_connection(&connection).unwrap();
        let hello = async {
            let (mut send, mut recv) = connection.open_bi().await.ok()?;
            let hello = Request::Hello {
                protocol: version.number(),
                username: "alice".into(),
            };
            write_frame(&mut send, &hello).await.ok()?;
            read_frame::<Reply>(&mut recv).await.ok()
        };
        match hello.await {
            Some(_) => Ok(()),
            None => Err(connection.closed().await),
        }
    })
    .await
}

#[tokio::test]
async fn a_garbage_client_certificate_fails_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let identity = ClientIdentity::load_or_create(dir.path()).unwrap();
    let garbage = rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    let error = handshake_presenting(garbage, &identity.key)
        .await
        .expect_err("garbage is no certificate");
    assert_eq!(
        HandshakeFailure::of(&error),
        HandshakeFailure::CertificateRejected,
        "{error:?}"
    );
}

#[tokio::test]
async fn a_signature_by_another_key_fails_the_handshake() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let a = ClientIdentity::load_or_create(a.path()).unwrap();
    let b = ClientIdentity::load_or_create(b.path()).unwrap();
    // The same certificate signed with its own key is answered.
    handshake_presenting(a.cert.clone(), &a.key)
        .await
        .expect("a proof by the certificate's key");
    // A's certificate, B's signature.
    let error = handshake_presenting(a.cert.clone(), &b.key)
        .await
        .expect_err("a proof by another key");
    assert_eq!(
        HandshakeFailure::of(&error),
        HandshakeFailure::CertificateRejected,
        "{error:?}"
    );
}

#[tokio::test]
async fn a_v2_reply_on_a_v1_connection_is_a_protocol_violation() {
    if Version::SUPPORTED[0] != Version::V1 {
        // The fake server picks V2 once we speak it; Session is then right.
        return;
    }
    let server = FakeServer::start(Script::SessionOnV1);
    let config = server.config("alice", None);
    let connector = Connector::new(&config).await.unwrap();
    let error = within(SCENARIO, "connect", connector.connect("alice"))
        .await
        .expect_err("Session is not a v1 reply");
    assert!(matches!(error, ClientError::Protocol(_)), "{error:?}");
}

#[tokio::test]
async fn replaced_ends_the_chat_with_signed_in_elsewhere() {
    use quic_chat::chat::{run_session, Frontend, Outcome};
    let server = FakeServer::start(Script::ReplaceAfterWelcome);
    let connector = Connector::new(&server.config("alice", None)).await.unwrap();
    let (client, incoming) = within(SCENARIO, "connect", connector.connect("alice"))
        .await
        .unwrap();
    let (_lines_tx, lines) = mpsc::channel(1);
    let mut out = Vec::new();
    let outcome = within(
        SCENARIO,
        "the chat to end",
        run_session(
            client,
            incoming,
            lines,
            &mut out,
            &Frontend::plain(),
            tokio_util::sync::CancellationToken::new(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Replaced);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "Welcome to fake, alice! 1 user(s) online. Type help for commands.\nguest\n\
         signed in elsewhere\n"
    );
}

#[tokio::test]
async fn replaced_is_a_disconnect_of_its_own() {
    let server = FakeServer::start(Script::ReplaceAfterWelcome);
    let connector = Connector::new(&server.config("alice", None)).await.unwrap();
    let (client, _incoming) = within(SCENARIO, "connect", connector.connect("alice"))
        .await
        .unwrap();
    assert_eq!(
        within(SCENARIO, "the takeover", client.closed()).await,
        Disconnect::Replaced
    );
}

#[tokio::test]
async fn devices_through_a_fake_v2_server() {
    let mut server = FakeServer::start(Script::Welcome);
    let dir = tempfile::tempdir().unwrap();
    let identity = ClientIdentity::load_or_create(dir.path()).unwrap();
    let me = identity.fingerprint;
    let connector = Connector::new(&server.config("alice", Some(identity)))
        .await
        .unwrap();
    let (alice, _) = within(SCENARIO, "connect", connector.connect("alice"))
        .await
        .unwrap();
    server.next_peer().await;
    assert_eq!(alice.version(), Version::V2);
    assert_eq!(alice.welcome().account, Some(Account::Registered));
    let listed = alice.devices(DeviceOp::List).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fingerprint, me.as_bytes().to_vec());
    let other = Fingerprint::new([7; 32]);
    let added = alice
        .devices(DeviceOp::Add {
            fingerprint: other.as_bytes().to_vec(),
            label: "phone".into(),
        })
        .await
        .unwrap();
    assert_eq!(added.len(), 2);

    // A guest is refused with its reason.
    let guest = Connector::new(&server.config("bob", None)).await.unwrap();
    let (bob, _) = within(SCENARIO, "connect", guest.connect("bob"))
        .await
        .unwrap();
    let error = bob.devices(DeviceOp::List).await.unwrap_err();
    assert!(
        matches!(
            error,
            ClientError::DeviceRefused {
                reason: quic_chat::protocol::Failure::NotRegistered,
                ..
            }
        ),
        "{error:?}"
    );
}

// --- the binary: --identity and --guest ---

#[test]
fn connect_with_an_identity_or_as_a_guest() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, ca) = process::start_server(dir.path(), Stdio::piped());

    // --identity DIR: created on first use, and the one whoami reports.
    let mut alice =
        process::connect_with(dir.path(), port, &ca, "alice", &["--identity", "alice-id"]);
    assert!(alice.line().starts_with("Welcome to "));
    assert_eq!(alice.line(), "registered as alice");
    let id_dir = dir.path().join("alice-id");
    #[cfg(unix)]
    assert_eq!(mode(&id_dir.join(tls::IDENTITY_KEY_FILE)), 0o600);
    let whoami = output_within(
        Command::new(BIN)
            .args(["whoami", "--identity"])
            .arg(&id_dir),
        WAIT,
    );
    assert_eq!(
        String::from_utf8(whoami.stdout).unwrap().trim_end(),
        expected_fingerprint(&id_dir)
    );
    alice.type_line("devices");
    assert_eq!(alice.line(), "devices (1):");
    let device = alice.line();
    assert!(device.contains("first device"), "{device}");
    alice.type_line("EXIT");
    assert!(alice.exit().success());

    // --guest: no certificate, and no identity made anywhere.
    let mut bob = process::connect_with(dir.path(), port, &ca, "bob", &["--guest"]);
    assert!(bob.line().starts_with("Welcome to "));
    assert_eq!(bob.line(), "guest");
    bob.close_stdin();
    assert!(bob.exit().success());
    assert!(
        !dir.path().join("config").join("quic-chat").exists(),
        "a guest writes no identity"
    );

    // The default identity lives in $XDG_CONFIG_HOME/quic-chat.
    let mut carol = process::connect_with(dir.path(), port, &ca, "carol", &[]);
    process::welcome_of(&carol);
    assert!(dir
        .path()
        .join("config/quic-chat")
        .join(tls::IDENTITY_KEY_FILE)
        .exists());
    carol.close_stdin();
    assert!(carol.exit().success());

    // --guest and --identity together are a usage error.
    let both = output_within(
        Command::new(BIN).args([
            "connect",
            "127.0.0.1:1",
            "dave",
            "--ca",
            &ca,
            "--guest",
            "--identity",
            "x",
        ]),
        WAIT,
    );
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("--guest"));

    server.type_line("EXIT");
    assert!(server.exit().success());
}
