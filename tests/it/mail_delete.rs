//! Through the built binary: the operator's `account delete` removes the
//! account's stored mail with it (its sender is told each expired), and
//! gives its bytes back to the store.

use std::process::Stdio;

use crate::harness::process::{connect_with, start_server_with, Proc};

/// Bodies of 1,000 bytes under a store bound of 3,500: three stored messages
/// fit (a record is its body plus well under 166 bytes), a fourth does not.
const STORE_MAX_BYTES: &str = "3500";

fn body(label: &str) -> String {
    format!("{label} {}", "x".repeat(1_000 - label.len() - 1))
}

/// Alice sends `body` to bob and gets `expect` as her line.
fn send(alice: &mut Proc, body: &str, expect: &str) {
    alice.type_line(&format!("send bob {body}"));
    assert_eq!(alice.line(), expect, "sending {}", &body[..8]);
}

const QUEUED: &str = "bob is offline; the message will be delivered when they connect";
const BUSY: &str = "message not sent: bob is not keeping up with messages";

/// Fill the store with three messages to offline bob; the fourth is refused.
fn fill(alice: &mut Proc, label: &str) {
    for i in 1..=3 {
        send(alice, &body(&format!("{label}{i}")), QUEUED);
    }
    send(alice, &body(&format!("{label}4")), BUSY);
}

/// Wait until alice's `users` no longer lists bob: his client has exited
/// once his close is sent, and the server unregisters him a moment later.
fn until_bob_is_offline(alice: &mut Proc) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        alice.type_line("users");
        let line = alice.line();
        let (_, names) = line.split_once(": ").unwrap_or_else(|| panic!("{line}"));
        if !names.split(", ").any(|name| name == "bob") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bob still online: {line}"
        );
    }
}

#[test]
fn account_delete_removes_the_mail_and_frees_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, port, ca) = start_server_with(
        dir.path(),
        Stdio::piped(),
        &["--store-max-bytes", STORE_MAX_BYTES],
        &[],
    );
    let connect = |name: &str| {
        let key = format!("{name}-key");
        connect_with(dir.path(), port, &ca, name, &["--identity", &key])
    };
    let mut bob = connect("bob");
    assert!(bob.line().starts_with("Welcome to "));
    assert_eq!(bob.line(), "registered as bob");
    bob.type_line("EXIT");
    assert!(bob.exit().success());

    let mut alice = connect("alice");
    assert!(alice.line().starts_with("Welcome to "));
    assert_eq!(alice.line(), "registered as alice");
    until_bob_is_offline(&mut alice);
    fill(&mut alice, "old");

    server.type_line("account delete bob");
    assert_eq!(server.line(), "deleted account bob");
    // Its mail is dropped unread, and alice, online, is told of each.
    for _ in 1..=3 {
        assert_eq!(alice.line(), "message to bob expired unread");
    }

    // Bob registers again with the same key: a new account, no mail. A live
    // message sent now is the first thing he gets: a stored one would have
    // come before it (the drain goes first).
    let mut bob = connect("bob");
    assert!(bob.line().starts_with("Welcome to "));
    assert_eq!(bob.line(), "registered as bob", "a new account");
    alice.type_line("send bob are you new here?");
    assert_eq!(bob.line(), "alice: are you new here?", "nothing waited");
    bob.type_line("EXIT");
    assert!(bob.exit().success());

    // The store has its bytes back: three fit again, as for a fresh account.
    until_bob_is_offline(&mut alice);
    fill(&mut alice, "new");
    alice.type_line("EXIT");
    assert!(alice.exit().success());
    let mut bob = connect("bob");
    assert!(bob.line().starts_with("Welcome to "));
    assert_eq!(bob.line(), "welcome back, bob");
    assert_eq!(bob.line(), "3 messages waited for you");
    for i in 1..=3 {
        assert_eq!(bob.line(), format!("alice: {}", body(&format!("new{i}"))));
    }
    bob.type_line("EXIT");
    assert!(bob.exit().success());
    server.type_line("EXIT");
    assert!(server.exit().success());
}
