//! Protocol v2 accounts against the real server: the Hello outcome table,
//! registration that survives restarts, takeover, devices, resumed sessions,
//! the accounts modes, and v1 clients untouched.

use quic_chat::protocol::{Account, DeviceOp, Failure, RefuseReason, Reply, Request, Version};
use quic_chat::server::AccountsMode;

use crate::harness::v2::*;
use crate::harness::*;

const V2: &[u8] = b"quic-chat/2";
const V1: &[u8] = b"quic-chat/1";

fn account_of(reply: &Reply) -> Account {
    match reply {
        Reply::Session {
            account, queued, ..
        } => {
            assert_eq!(*queued, 0, "nothing stored yet");
            *account
        }
        other => panic!("Session expected, got {other:?}"),
    }
}

fn refusal_of(reply: &Reply) -> RefuseReason {
    match reply {
        Reply::Refused { reason, .. } => *reason,
        other => panic!("Refused expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_v2_client_registers_then_returns_also_after_a_restart() {
    let server = TestServer::start().await;
    let phone = DeviceKey::new();
    let client = RawClient::new(&server, V2, Some(&phone));
    let (first, reply) = hello_as(&client, &server, "Alice").await;
    assert_eq!(
        Version::of_connection(&first),
        Some(Version::V2),
        "a v2 server prefers quic-chat/2"
    );
    assert_eq!(account_of(&reply), Account::Registered);
    first.close(0u32.into(), b"bye");

    let (again, reply) = hello_as(&client, &server, "alice").await;
    assert_eq!(account_of(&reply), Account::Returning);
    again.close(0u32.into(), b"bye");

    let server = server.restart().await;
    let client = RawClient::new(&server, V2, Some(&phone));
    let (after, reply) = hello_as(&client, &server, "ALICE").await;
    assert_eq!(
        account_of(&reply),
        Account::Returning,
        "accounts are durable"
    );
    // Shown as first registered, whatever the case typed now.
    let users = ask(&after, &Request::ListUsers).await;
    assert_eq!(
        users,
        Reply::Users {
            names: vec!["Alice".into()]
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn nobody_else_can_take_a_registered_name_while_its_owner_is_away() {
    let server = TestServer::start().await;
    let owner = DeviceKey::new();
    let (connection, reply) =
        hello_as(&RawClient::new(&server, V2, Some(&owner)), &server, "alice").await;
    assert_eq!(account_of(&reply), Account::Registered);
    connection.close(0u32.into(), b"bye");

    // Another key, no key on v2, and a v1 client: all refused.
    let other = DeviceKey::new();
    let (thief, reply) =
        hello_as(&RawClient::new(&server, V2, Some(&other)), &server, "alice").await;
    assert_eq!(refusal_of(&reply), RefuseReason::KeyMismatch);
    assert_eq!(close_code(&thief).await, Some(3));
    let (guest, reply) = hello_as(&RawClient::new(&server, V2, None), &server, "alice").await;
    assert_eq!(refusal_of(&reply), RefuseReason::KeyMismatch);
    assert_eq!(close_code(&guest).await, Some(3));
    let v1 = RawClient::new(&server, V1, Some(&other));
    let connection = v1.connect(&server).await;
    let reply = ask(
        &connection,
        &Request::Hello {
            protocol: 1,
            username: "alice".into(),
        },
    )
    .await;
    match &reply {
        Reply::Refused { reason, detail } => {
            assert_eq!(*reason, RefuseReason::NameTaken, "v1 has no KeyMismatch");
            assert!(detail.contains("registered"), "{detail}");
        }
        other => panic!("Refused expected, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn one_key_cannot_register_two_names_and_a_guest_cannot_hold_a_registered_one() {
    let server = TestServer::start().await;
    let key = DeviceKey::new();
    let with_key = RawClient::new(&server, V2, Some(&key));
    let (alice, reply) = hello_as(&with_key, &server, "alice").await;
    assert_eq!(account_of(&reply), Account::Registered);
    let (_second, reply) = hello_as(&with_key, &server, "alias").await;
    assert_eq!(refusal_of(&reply), RefuseReason::KeyMismatch);

    // A guest takes a free name; a key cannot register it while the guest is there.
    let (guest, reply) = hello_as(&RawClient::new(&server, V2, None), &server, "carol").await;
    assert_eq!(account_of(&reply), Account::Guest);
    let newcomer = DeviceKey::new();
    let (_n, reply) = hello_as(
        &RawClient::new(&server, V2, Some(&newcomer)),
        &server,
        "carol",
    )
    .await;
    assert_eq!(refusal_of(&reply), RefuseReason::NameTaken);
    // Guests get v1 rules: no devices.
    let reply = ask(&guest, &Request::Devices(DeviceOp::List)).await;
    assert!(
        matches!(
            reply,
            Reply::Failed {
                reason: Failure::NotRegistered,
                ..
            }
        ),
        "{reply:?}"
    );
    drop(alice);
    server.stop().await;
}

#[tokio::test]
async fn signing_in_again_replaces_the_older_connection_with_code_5() {
    let server = TestServer::start().await;
    let key = DeviceKey::new();
    let client = RawClient::new(&server, V2, Some(&key));
    let (older, reply) = hello_as(&client, &server, "alice").await;
    assert_eq!(account_of(&reply), Account::Registered);
    let (newer, reply) = hello_as(&client, &server, "alice").await;
    assert_eq!(account_of(&reply), Account::Returning);
    assert_eq!(close_code(&older).await, Some(5), "REPLACED");
    // The newer connection is the one online.
    let users = ask(&newer, &Request::ListUsers).await;
    assert_eq!(
        users,
        Reply::Users {
            names: vec!["alice".into()]
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn hello_protocol_must_match_the_negotiated_alpn() {
    let server = TestServer::start().await;
    for (alpn, protocol) in [(V2, 1), (V1, 2)] {
        let connection = RawClient::new(&server, alpn, None).connect(&server).await;
        let reply = ask(
            &connection,
            &Request::Hello {
                protocol,
                username: "alice".into(),
            },
        )
        .await;
        assert_eq!(refusal_of(&reply), RefuseReason::UnsupportedProtocol);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_v2_request_on_a_v1_connection_is_a_protocol_error() {
    let server = TestServer::start().await;
    let connection = raw_registered(&server, "alice").await;
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(&[3, 0]).await.unwrap(); // Devices(List)
    send.finish().unwrap();
    assert_eq!(close_code(&connection).await, Some(2));
    server.stop().await;
}

#[tokio::test]
async fn devices_list_add_remove_and_every_failure() {
    let server = TestServer::start().await;
    let phone = DeviceKey::new();
    let (alice, _) = hello_as(&RawClient::new(&server, V2, Some(&phone)), &server, "alice").await;
    let devices = |reply: Reply| match reply {
        Reply::Devices { devices } => devices,
        other => panic!("Devices expected, got {other:?}"),
    };
    let failure = |reply: Reply| match reply {
        Reply::Failed { reason, .. } => reason,
        other => panic!("Failed expected, got {other:?}"),
    };
    let list = devices(ask(&alice, &Request::Devices(DeviceOp::List)).await);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].fingerprint, phone.fingerprint.as_bytes());
    assert_eq!(list[0].label, "first device");
    assert!(list[0].current && list[0].last_seen_ms > 0);

    let add = |key: &DeviceKey, label: &str| {
        Request::Devices(DeviceOp::Add {
            fingerprint: key.fingerprint.as_bytes().to_vec(),
            label: label.into(),
        })
    };
    let laptop = DeviceKey::new();
    let list = devices(ask(&alice, &add(&laptop, "laptop")).await);
    assert_eq!(list.len(), 2);
    assert_eq!((list[1].label.as_str(), list[1].current), ("laptop", false));
    // Adding it again relabels it.
    let list = devices(ask(&alice, &add(&laptop, "work laptop")).await);
    assert_eq!(list[1].label, "work laptop");
    // Invalid: a 31-byte fingerprint, an empty label, a 65-byte label.
    let short = Request::Devices(DeviceOp::Add {
        fingerprint: vec![1; 31],
        label: "x".into(),
    });
    assert_eq!(failure(ask(&alice, &short).await), Failure::Invalid);
    assert_eq!(
        failure(ask(&alice, &add(&DeviceKey::new(), "")).await),
        Failure::Invalid
    );
    let long = "l".repeat(65);
    assert_eq!(
        failure(ask(&alice, &add(&DeviceKey::new(), &long)).await),
        Failure::Invalid
    );
    // InUse: bob's key.
    let bob_key = DeviceKey::new();
    let (_bob, _) = hello_as(&RawClient::new(&server, V2, Some(&bob_key)), &server, "bob").await;
    assert_eq!(
        failure(ask(&alice, &add(&bob_key, "bob's")).await),
        Failure::InUse
    );
    // TooMany at five devices, even for bob's key; a known one still relabels.
    for n in 0..3 {
        devices(ask(&alice, &add(&DeviceKey::new(), &format!("spare {n}"))).await);
    }
    assert_eq!(
        failure(ask(&alice, &add(&DeviceKey::new(), "sixth")).await),
        Failure::TooMany
    );
    assert_eq!(
        failure(ask(&alice, &add(&bob_key, "bob's")).await),
        Failure::TooMany
    );
    assert_eq!(devices(ask(&alice, &add(&laptop, "laptop")).await).len(), 5);

    let remove = |fingerprint: Vec<u8>| Request::Devices(DeviceOp::Remove { fingerprint });
    assert_eq!(
        failure(ask(&alice, &remove(bob_key.fingerprint.as_bytes().to_vec())).await),
        Failure::InUse
    );
    assert_eq!(
        failure(ask(&alice, &remove(vec![9; 32])).await),
        Failure::UnknownDevice
    );
    let list = devices(ask(&alice, &remove(laptop.fingerprint.as_bytes().to_vec())).await);
    assert_eq!(list.len(), 4);
    // The removed laptop is refused now.
    let (_l, reply) = hello_as(
        &RawClient::new(&server, V2, Some(&laptop)),
        &server,
        "alice",
    )
    .await;
    assert_eq!(refusal_of(&reply), RefuseReason::KeyMismatch);

    // Bob, with one device, cannot remove it.
    let (bob, _) = hello_as(&RawClient::new(&server, V2, Some(&bob_key)), &server, "bob").await;
    assert_eq!(
        failure(ask(&bob, &remove(bob_key.fingerprint.as_bytes().to_vec())).await),
        Failure::LastDevice
    );
    server.stop().await;
}

#[tokio::test]
async fn a_new_device_added_here_signs_in_there_and_removing_your_own_device_closes_with_5() {
    let server = TestServer::start().await;
    let old = DeviceKey::new();
    let (here, _) = hello_as(&RawClient::new(&server, V2, Some(&old)), &server, "alice").await;
    let new = DeviceKey::new();
    let reply = ask(
        &here,
        &Request::Devices(DeviceOp::Add {
            fingerprint: new.fingerprint.as_bytes().to_vec(),
            label: "new phone".into(),
        }),
    )
    .await;
    assert!(matches!(reply, Reply::Devices { .. }), "{reply:?}");
    // The new device signs in (taking over from the old one's connection)...
    let (there, reply) = hello_as(&RawClient::new(&server, V2, Some(&new)), &server, "alice").await;
    assert_eq!(account_of(&reply), Account::Returning);
    assert_eq!(close_code(&here).await, Some(5));
    // ...and removes itself: the answer first, then REPLACED.
    let reply = ask(
        &there,
        &Request::Devices(DeviceOp::Remove {
            fingerprint: new.fingerprint.as_bytes().to_vec(),
        }),
    )
    .await;
    match reply {
        Reply::Devices { devices } => assert_eq!(devices.len(), 1),
        other => panic!("Devices expected, got {other:?}"),
    }
    assert_eq!(close_code(&there).await, Some(5));
    server.stop().await;
}

#[tokio::test]
async fn a_resumed_session_keeps_its_identity_and_an_unbound_key_is_refused_on_it() {
    let server = TestServer::start().await;
    let first = DeviceKey::new();
    let second = DeviceKey::new();
    // alice registers with `first` and adds `second`; `second` connects from
    // one endpoint twice (the second time resuming), is removed, and tries a
    // third, resumed, time.
    let (alice, _) = hello_as(&RawClient::new(&server, V2, Some(&first)), &server, "alice").await;
    let add = Request::Devices(DeviceOp::Add {
        fingerprint: second.fingerprint.as_bytes().to_vec(),
        label: "second".into(),
    });
    assert!(matches!(ask(&alice, &add).await, Reply::Devices { .. }));
    alice.close(0u32.into(), b"bye");

    let resuming = RawClient::new(&server, V2, Some(&second));
    let (on_second, reply) = hello_as(&resuming, &server, "alice").await;
    assert_eq!(account_of(&reply), Account::Returning);
    on_second.close(0u32.into(), b"bye");
    let resumed_before = server
        .tls
        .tickets_accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    let (again, reply) = hello_as(&resuming, &server, "alice").await;
    assert_eq!(
        server
            .tls
            .tickets_accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        resumed_before + 1,
        "the second connection resumed"
    );
    assert_eq!(
        account_of(&reply),
        Account::Returning,
        "the identity survives resumption"
    );
    again.close(0u32.into(), b"bye");

    // Unbind `second` (from `first`), then try the resumed session once more.
    let (alice, _) = hello_as(&RawClient::new(&server, V2, Some(&first)), &server, "alice").await;
    let remove = Request::Devices(DeviceOp::Remove {
        fingerprint: second.fingerprint.as_bytes().to_vec(),
    });
    assert!(matches!(ask(&alice, &remove).await, Reply::Devices { .. }));
    let resumed_before = server
        .tls
        .tickets_accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    let (_refused, reply) = hello_as(&resuming, &server, "alice").await;
    assert_eq!(
        server
            .tls
            .tickets_accepted
            .load(std::sync::atomic::Ordering::Relaxed),
        resumed_before + 1,
        "resumed again"
    );
    assert_eq!(refusal_of(&reply), RefuseReason::KeyMismatch);
    server.stop().await;
}

#[tokio::test]
async fn closed_accounts_admit_only_what_the_operator_made_and_off_is_v1_for_everyone() {
    let server = TestServer::start_with_accounts(AccountsMode::Closed).await;
    let key = DeviceKey::new();
    let (_c, reply) = hello_as(&RawClient::new(&server, V2, Some(&key)), &server, "alice").await;
    assert_eq!(refusal_of(&reply), RefuseReason::AccountRequired);
    let (_g, reply) = hello_as(&RawClient::new(&server, V2, None), &server, "guest").await;
    assert_eq!(refusal_of(&reply), RefuseReason::AccountRequired);
    let connection = RawClient::new(&server, V1, None).connect(&server).await;
    let reply = ask(
        &connection,
        &Request::Hello {
            protocol: 1,
            username: "old".into(),
        },
    )
    .await;
    assert_eq!(refusal_of(&reply), RefuseReason::UnsupportedProtocol);
    server.stop().await;

    let server = TestServer::start_with_accounts(AccountsMode::Off).await;
    let client = RawClient::new(&server, V2, Some(&key));
    let (first, reply) = hello_as(&client, &server, "alice").await;
    assert_eq!(
        account_of(&reply),
        Account::Guest,
        "certificates are ignored"
    );
    first.close(0u32.into(), b"bye");
    let (_other, reply) = hello_as(
        &RawClient::new(&server, V2, Some(&DeviceKey::new())),
        &server,
        "alice",
    )
    .await;
    assert_eq!(account_of(&reply), Account::Guest, "nothing was registered");
    server.stop().await;
}

/// Through the binary: a second server on the same data directory fails at
/// once with one clear line; the operator's console creates, shows, lists,
/// unbinds and deletes accounts, each answered in one line.
#[test]
fn the_data_directory_has_one_server_and_the_console_manages_accounts() {
    use crate::harness::process::{connect_with, output_within, start_server, Proc, BIN};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, ca) = start_server(dir.path(), Stdio::piped());
    let second = output_within(
        Command::new(BIN)
            .args([
                "server",
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--cert-dir",
                "certs",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null()),
        Duration::from_secs(10),
    );
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(
        stderr.trim_end(),
        "error: the data directory data is in use by another quic-chat server",
        "one line, naming the directory as given"
    );

    // A device made by `whoami`, bound by the operator to a new account.
    let whoami = output_within(
        Command::new(BIN)
            .args(["whoami", "--identity"])
            .arg(dir.path().join("phone"))
            .current_dir(dir.path()),
        Duration::from_secs(10),
    );
    let phone = String::from_utf8(whoami.stdout).unwrap().trim().to_owned();
    assert!(phone.starts_with("SHA256:"), "{phone}");
    let console = |server: &mut Proc, line: &str| {
        server.type_line(line);
        server.line()
    };
    assert_eq!(console(&mut server, "accounts"), "no accounts");
    assert_eq!(
        console(&mut server, &format!("account add Dana {phone}")),
        format!("created account Dana with device {phone}")
    );
    assert_eq!(
        console(&mut server, &format!("account add dana {phone}")),
        format!("added device {phone} to Dana"),
        "already bound: nothing changes"
    );
    let line = console(&mut server, "accounts");
    assert!(
        line.starts_with("Dana: 1 device, last seen never, offline"),
        "{line}"
    );

    // The device signs in as Dana.
    let identity = dir.path().join("phone");
    let mut dana = connect_with(
        dir.path(),
        port,
        &ca,
        "dana",
        &["--identity", identity.to_str().unwrap()],
    );
    assert!(dana.line().starts_with("Welcome to "));
    assert_eq!(dana.line(), "welcome back, dana");
    let line = console(&mut server, "account dana");
    assert!(line.starts_with("Dana: 1 device, last seen 2"), "{line}");
    assert!(line.ends_with(", online"), "{line}");
    let device = server.line();
    assert!(
        device.starts_with(&format!("  {phone} \"first device\", added ")),
        "{device}"
    );
    assert_eq!(
        server.line(),
        "  stored: 0 messages (0 bytes) for it, 0 late receipts for it as a sender"
    );

    // Removing the device closes its connection; deleting frees the name.
    assert_eq!(
        console(&mut server, &format!("account remove-device dana {phone}")),
        format!(
            "removed device {phone} from Dana; it has no devices left (add one with account add)"
        )
    );
    assert!(
        !dana.exit().success(),
        "a removed device is closed (REPLACED)"
    );
    assert_eq!(
        console(&mut server, "account delete dana"),
        "deleted account Dana"
    );
    assert_eq!(
        console(&mut server, "account delete dana"),
        "error: no account named dana"
    );
    assert_eq!(
        console(&mut server, "account add bad!name SHA256:x"),
        "error: 'bad!name': a username may only contain letters A-Z, digits, '_', '.' and '-'"
    );
    server.type_line("EXIT");
    assert!(server.exit().success());
}
