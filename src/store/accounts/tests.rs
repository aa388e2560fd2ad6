//! Tests of the account operations against a real database file.

use super::*;
use crate::store::tests::{fp, fresh, key};

/// The most devices an account may have in these tests.
const MAX: usize = 5;

/// The fingerprints of an account, in order.
fn fingerprints(account: &AccountRecord) -> Vec<Fingerprint> {
    account.devices.iter().map(|d| d.fingerprint).collect()
}

#[test]
fn register_then_look_up_by_name_and_by_key() {
    let (_dir, store) = fresh();
    let alice = store.register("Alice", fp(1), 1_000).unwrap().unwrap();
    assert_eq!(
        alice,
        AccountRecord {
            name: "Alice".into(),
            created_ms: 1_000,
            devices: vec![DeviceRecord {
                fingerprint: fp(1),
                label: FIRST_DEVICE_LABEL.into(),
                added_ms: 1_000,
                last_seen_ms: 1_000,
            }],
        }
    );
    assert_eq!(store.account(&key("alice")).unwrap(), Some(alice.clone()));
    assert_eq!(store.account(&key("ALICE")).unwrap(), Some(alice.clone()));
    assert_eq!(store.account_of(&fp(1)).unwrap(), Some(alice));
    assert_eq!(store.account(&key("bob")).unwrap(), None);
    assert_eq!(store.account_of(&fp(2)).unwrap(), None);
}

#[test]
fn names_are_registered_case_insensitively() {
    let (_dir, store) = fresh();
    let alice = store.register("Alice", fp(1), 1).unwrap().unwrap();
    assert_eq!(
        store.register("alice", fp(2), 2).unwrap(),
        Err(Conflict::NameRegistered(alice.clone()))
    );
    // The name is taken even for its own key: registration is only for free names.
    assert_eq!(
        store.register("ALICE", fp(1), 2).unwrap(),
        Err(Conflict::NameRegistered(alice))
    );
    // Nothing was written for the refused key.
    assert_eq!(store.account_of(&fp(2)).unwrap(), None);
}

#[test]
fn one_key_cannot_register_two_names() {
    let (_dir, store) = fresh();
    store.register("Alice", fp(1), 1).unwrap().unwrap();
    assert_eq!(
        store.register("bob", fp(1), 2).unwrap(),
        Err(Conflict::KeyInUse {
            account: "Alice".into()
        })
    );
    assert_eq!(store.account(&key("bob")).unwrap(), None);
}

#[test]
fn invalid_names_are_an_error_of_the_caller() {
    let (_dir, store) = fresh();
    for name in ["", "a b", &"x".repeat(33)] {
        assert!(matches!(
            store.register(name, fp(1), 1),
            Err(StoreError::InvalidName { .. })
        ));
        assert!(matches!(
            store.bind(name, fp(1), MAX, 1),
            Err(StoreError::InvalidName { .. })
        ));
    }
}

#[test]
fn add_devices_up_to_the_maximum() {
    let (_dir, store) = fresh();
    let alice = key("alice");
    store.register("alice", fp(1), 1).unwrap().unwrap();
    for n in 2..=MAX as u8 {
        let account = store
            .add_device(&alice, &[n; 32], &format!("device {n}"), MAX, u64::from(n))
            .unwrap()
            .unwrap();
        assert_eq!(account.devices.len(), usize::from(n));
        let added = account.devices.last().unwrap();
        assert_eq!(added.fingerprint, fp(n));
        assert_eq!(added.label, format!("device {n}"));
        assert_eq!((added.added_ms, added.last_seen_ms), (u64::from(n), 0));
        assert_eq!(store.account_of(&fp(n)).unwrap(), Some(account));
    }
    let account = store.account(&alice).unwrap().unwrap();
    assert_eq!(
        fingerprints(&account),
        (1..=MAX as u8).map(fp).collect::<Vec<_>>()
    );

    // At the maximum: a new key is TooMany, even one on another account, and
    // even a malformed one (TooMany comes first in the order).
    store.register("bob", fp(50), 1).unwrap().unwrap();
    for fingerprint in [&[60; 32][..], &[50; 32], &[60; 31]] {
        assert_eq!(
            store
                .add_device(&alice, fingerprint, "new", MAX, 9)
                .unwrap(),
            Err(Failure::TooMany)
        );
    }
    // ...but a key already on the account is relabelled.
    let relabelled = store
        .add_device(&alice, &[3; 32], "phone", MAX, 9)
        .unwrap()
        .unwrap();
    assert_eq!(relabelled.devices.len(), MAX);
    assert_eq!(relabelled.devices[2].label, "phone");
    assert_eq!(
        relabelled.devices[2].added_ms, 3,
        "relabelling keeps the rest"
    );
    assert_eq!(store.account(&alice).unwrap(), Some(relabelled));
}

#[test]
fn add_failures_come_in_the_contract_order() {
    let (_dir, store) = fresh();
    let alice = key("alice");
    store.register("alice", fp(1), 1).unwrap().unwrap();
    store.register("bob", fp(2), 1).unwrap().unwrap();

    // NotRegistered: the account is gone (an operator deleted it).
    assert_eq!(
        store
            .add_device(&key("carol"), &[3; 32], "x", MAX, 1)
            .unwrap(),
        Err(Failure::NotRegistered)
    );
    // InUse: bob's key, even with a label that is invalid too.
    assert_eq!(
        store.add_device(&alice, &[2; 32], "x", MAX, 1).unwrap(),
        Err(Failure::InUse)
    );
    assert_eq!(
        store.add_device(&alice, &[2; 32], "", MAX, 1).unwrap(),
        Err(Failure::InUse)
    );
    // Invalid: a 31- or 33-byte fingerprint, an empty or a 65-byte label.
    for (fingerprint, label) in [
        (&[3; 31][..], "x"),
        (&[3; 33][..], "x"),
        (&[3; 32][..], ""),
        (&[3; 32][..], &"l".repeat(65)),
        // Relabelling a device of the account is checked too.
        (&[1; 32][..], ""),
    ] {
        assert_eq!(
            store
                .add_device(&alice, fingerprint, label, MAX, 1)
                .unwrap(),
            Err(Failure::Invalid),
            "{} bytes, label of {}",
            fingerprint.len(),
            label.len()
        );
    }
    // A 64-byte label is the longest allowed.
    let account = store
        .add_device(&alice, &[3; 32], &"l".repeat(64), MAX, 1)
        .unwrap()
        .unwrap();
    assert_eq!(fingerprints(&account), [fp(1), fp(3)]);
    // Refusals changed nothing.
    assert_eq!(
        fingerprints(&store.account(&key("bob")).unwrap().unwrap()),
        [fp(2)]
    );
    assert_eq!(store.account(&alice).unwrap().unwrap(), account);
}

#[test]
fn remove_failures_come_in_the_contract_order() {
    let (_dir, store) = fresh();
    let alice = key("alice");
    store.register("alice", fp(1), 1).unwrap().unwrap();
    store.register("bob", fp(2), 1).unwrap().unwrap();

    assert_eq!(
        store.remove_device(&key("carol"), &[1; 32]).unwrap(),
        Err(Failure::NotRegistered)
    );
    // Another account's key is InUse, not UnknownDevice.
    assert_eq!(
        store.remove_device(&alice, &[2; 32]).unwrap(),
        Err(Failure::InUse)
    );
    // A key on no account, and a malformed one, are UnknownDevice.
    assert_eq!(
        store.remove_device(&alice, &[3; 32]).unwrap(),
        Err(Failure::UnknownDevice)
    );
    assert_eq!(
        store.remove_device(&alice, &[1; 31]).unwrap(),
        Err(Failure::UnknownDevice)
    );
    // The only device cannot be removed.
    assert_eq!(
        store.remove_device(&alice, &[1; 32]).unwrap(),
        Err(Failure::LastDevice)
    );

    store
        .add_device(&alice, &[3; 32], "b", MAX, 2)
        .unwrap()
        .unwrap();
    let account = store.remove_device(&alice, &[1; 32]).unwrap().unwrap();
    assert_eq!(fingerprints(&account), [fp(3)]);
    assert_eq!(store.account_of(&fp(1)).unwrap(), None);
    assert_eq!(store.account(&alice).unwrap(), Some(account));
    assert_eq!(
        store.remove_device(&alice, &[3; 32]).unwrap(),
        Err(Failure::LastDevice)
    );
    // The removed key is free: it can register a name of its own.
    assert_eq!(
        store.register("dave", fp(1), 3).unwrap().unwrap().name,
        "dave"
    );
}

#[test]
fn bind_creates_an_account_or_adds_a_device() {
    let (_dir, store) = fresh();
    let (created, new) = store.bind("Carol", fp(1), MAX, 7).unwrap().unwrap();
    assert!(new);
    assert_eq!(created.name, "Carol");
    assert_eq!(created.created_ms, 7);
    assert_eq!(
        created.devices,
        [DeviceRecord {
            fingerprint: fp(1),
            label: FIRST_DEVICE_LABEL.into(),
            added_ms: 7,
            last_seen_ms: 0,
        }]
    );

    let (added, new) = store.bind("carol", fp(2), MAX, 8).unwrap().unwrap();
    assert!(!new);
    assert_eq!(added.name, "Carol", "the first spelling stays");
    assert_eq!(added.devices[1].label, OPERATOR_DEVICE_LABEL);
    assert_eq!(store.account_of(&fp(2)).unwrap(), Some(added.clone()));

    // Binding a key the account has changes nothing.
    let (same, new) = store.bind("CAROL", fp(1), MAX, 9).unwrap().unwrap();
    assert!(!new);
    assert_eq!(same, added);

    // InUse: the key is on another account, whether bind creates or adds.
    store.register("dave", fp(3), 1).unwrap().unwrap();
    assert_eq!(
        store.bind("erin", fp(3), MAX, 9).unwrap(),
        Err(Failure::InUse)
    );
    assert_eq!(store.account(&key("erin")).unwrap(), None);
    assert_eq!(
        store.bind("carol", fp(3), MAX, 9).unwrap(),
        Err(Failure::InUse)
    );
    // TooMany first, at the maximum.
    assert_eq!(
        store.bind("carol", fp(4), 2, 9).unwrap(),
        Err(Failure::TooMany)
    );
    assert_eq!(
        store.bind("carol", fp(3), 2, 9).unwrap(),
        Err(Failure::TooMany)
    );
    assert!(store.bind("carol", fp(1), 2, 9).unwrap().is_ok());
}

#[test]
fn unbind_may_remove_the_last_device() {
    let (_dir, store) = fresh();
    let alice = key("alice");
    store.register("alice", fp(1), 1).unwrap().unwrap();
    store
        .add_device(&alice, &[2; 32], "b", MAX, 2)
        .unwrap()
        .unwrap();
    store.register("bob", fp(3), 1).unwrap().unwrap();

    assert_eq!(
        store.unbind(&key("nobody"), &fp(1)).unwrap(),
        Err(Failure::NotRegistered)
    );
    assert_eq!(
        store.unbind(&alice, &fp(3)).unwrap(),
        Err(Failure::UnknownDevice)
    );
    assert_eq!(
        store.unbind(&alice, &fp(9)).unwrap(),
        Err(Failure::UnknownDevice)
    );
    assert_eq!(
        fingerprints(&store.unbind(&alice, &fp(1)).unwrap().unwrap()),
        [fp(2)]
    );
    let empty = store.unbind(&alice, &fp(2)).unwrap().unwrap();
    assert!(empty.devices.is_empty());
    assert_eq!(store.account(&alice).unwrap(), Some(empty.clone()));
    assert_eq!(store.account_of(&fp(2)).unwrap(), None);
    // The name stays registered, with no key to sign in with...
    assert_eq!(
        store.register("alice", fp(2), 3).unwrap(),
        Err(Conflict::NameRegistered(empty))
    );
    // ...until the operator binds one.
    let (account, new) = store.bind("alice", fp(2), MAX, 4).unwrap().unwrap();
    assert!(!new);
    assert_eq!(account.devices[0].label, OPERATOR_DEVICE_LABEL);
}

#[test]
fn touch_sets_last_seen() {
    let (_dir, store) = fresh();
    let alice = key("alice");
    store.register("alice", fp(1), 1).unwrap().unwrap();
    store
        .add_device(&alice, &[2; 32], "b", MAX, 2)
        .unwrap()
        .unwrap();
    store.touch(&alice, &fp(2), 77).unwrap();
    let account = store.account(&alice).unwrap().unwrap();
    assert_eq!(account.devices[0].last_seen_ms, 1);
    assert_eq!(account.devices[1].last_seen_ms, 77);
    // A device or an account that is gone: nothing happens.
    store.touch(&alice, &fp(9), 78).unwrap();
    store.touch(&key("nobody"), &fp(1), 78).unwrap();
    assert_eq!(store.account(&alice).unwrap(), Some(account));
}

#[test]
fn delete_frees_the_name_and_the_keys() {
    let (_dir, store) = fresh();
    let alice = key("alice");
    store.register("Alice", fp(1), 1).unwrap().unwrap();
    store
        .add_device(&alice, &[2; 32], "b", MAX, 2)
        .unwrap()
        .unwrap();
    let deleted = store.delete_account(&alice, 3).unwrap().unwrap().account;
    assert_eq!(deleted.name, "Alice");
    assert_eq!(fingerprints(&deleted), [fp(1), fp(2)]);
    assert_eq!(store.delete_account(&alice, 3).unwrap(), None);
    assert_eq!(store.account(&alice).unwrap(), None);
    assert_eq!(store.account_of(&fp(1)).unwrap(), None);
    assert_eq!(store.account_of(&fp(2)).unwrap(), None);

    let again = store.register("alice", fp(2), 5).unwrap().unwrap();
    assert_eq!(again.name, "alice");
    assert_eq!(
        store.register("bob", fp(1), 5).unwrap().unwrap().name,
        "bob"
    );
}

#[test]
fn accounts_are_listed_by_lowercased_name() {
    let (_dir, store) = fresh();
    assert_eq!(store.accounts().unwrap(), []);
    for (i, name) in ["bob", "Alice", "carol", "_x", "Zed", "alice2"]
        .into_iter()
        .enumerate()
    {
        store.register(name, fp(i as u8), 1).unwrap().unwrap();
    }
    let names: Vec<String> = store
        .accounts()
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["_x", "Alice", "alice2", "bob", "carol", "Zed"]);
}

#[test]
fn concurrent_registrations_of_one_name_have_one_winner() {
    let (_dir, store) = fresh();
    let threads: Vec<_> = (0..4u8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || store.register("alice", fp(i), 1).unwrap())
        })
        .collect();
    let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 1);
    let winner = store.account(&key("alice")).unwrap().unwrap();
    for outcome in outcomes {
        match outcome {
            Ok(account) => assert_eq!(account, winner),
            Err(conflict) => assert_eq!(conflict, Conflict::NameRegistered(winner.clone())),
        }
    }
}
