//! Property tests of the frame codec: hostile bytes never panic, every frame
//! round-trips, and a valid frame followed or cut short by anything is rejected.
//! The server's own decoder (`RequestRef` through `decode_borrowed`) agrees
//! with `Request`'s on every input.

use std::fmt::Debug;

use proptest::collection::vec;
use proptest::prelude::*;
use quic_chat::protocol::codec::decode_borrowed;
use quic_chat::protocol::frames::RequestRef;
use quic_chat::protocol::{
    decode, encode, Account, CodecError, Device, DeviceOp, Failure, Push, RefuseReason, Reply,
    Request, Status,
};
use serde::{de::DeserializeOwned, Serialize};

/// Any text: every Unicode scalar value, short or past the one-byte length
/// prefix (250 bytes) so that the longer varint forms are exercised too.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => vec(any::<char>(), 0..24).prop_map(String::from_iter),
        1 => vec(any::<char>(), 60..400).prop_map(String::from_iter),
    ]
}

/// Integers biased towards the varint marker boundaries (250/251, 2^16, 2^32).
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..300,
        (0u64..4, 0u64..8).prop_map(|(width, step)| match width {
            0 => 247 + step,
            1 => 65_532 + step,
            2 => 4_294_967_292 + step,
            _ => u64::MAX - step,
        }),
    ]
}

// Every variant of the small enums, from their `ALL` lists: a variant
// appended to the protocol is covered here without editing this file.
fn status() -> impl Strategy<Value = Status> {
    proptest::sample::select(Status::ALL.to_vec())
}

fn refuse_reason() -> impl Strategy<Value = RefuseReason> {
    proptest::sample::select(RefuseReason::ALL.to_vec())
}

fn failure() -> impl Strategy<Value = Failure> {
    proptest::sample::select(Failure::ALL.to_vec())
}

fn account() -> impl Strategy<Value = Account> {
    prop_oneof![
        Just(Account::Guest),
        Just(Account::Registered),
        Just(Account::Returning)
    ]
}

/// Fingerprints: usually the contract's 32 bytes, sometimes any length.
fn fingerprint() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 32..=32),
        1 => vec(any::<u8>(), 0..300),
    ]
}

fn device_op() -> impl Strategy<Value = DeviceOp> {
    prop_oneof![
        Just(DeviceOp::List),
        (fingerprint(), text())
            .prop_map(|(fingerprint, label)| DeviceOp::Add { fingerprint, label }),
        fingerprint().prop_map(|fingerprint| DeviceOp::Remove { fingerprint }),
    ]
}

fn device() -> impl Strategy<Value = Device> {
    (fingerprint(), text(), number(), number(), any::<bool>()).prop_map(
        |(fingerprint, label, added_ms, last_seen_ms, current)| Device {
            fingerprint,
            label,
            added_ms,
            last_seen_ms,
            current,
        },
    )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (number(), text()).prop_map(|(protocol, username)| Request::Hello {
            protocol: protocol as u32,
            username
        }),
        (text(), text()).prop_map(|(to, body)| Request::Send { to, body }),
        Just(Request::ListUsers),
        device_op().prop_map(Request::Devices),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (text(), number()).prop_map(|(server, online)| Reply::Welcome {
            server,
            online: online as u32
        }),
        (refuse_reason(), text()).prop_map(|(reason, detail)| Reply::Refused { reason, detail }),
        (number(), status()).prop_map(|(id, status)| Reply::Receipt { id, status }),
        vec(text(), 0..12).prop_map(|names| Reply::Users { names }),
        (text(), number(), account(), number()).prop_map(|(server, online, account, queued)| {
            Reply::Session {
                server,
                online: online as u32,
                account,
                queued: queued as u32,
            }
        }),
        vec(device(), 0..6).prop_map(|devices| Reply::Devices { devices }),
        (failure(), text()).prop_map(|(reason, detail)| Reply::Failed { reason, detail }),
    ]
}

fn push() -> impl Strategy<Value = Push> {
    prop_oneof![
        (number(), text(), number(), text()).prop_map(|(id, from, sent_at_ms, body)| {
            Push::Deliver {
                id,
                from,
                sent_at_ms,
                body,
            }
        }),
        (number(), status()).prop_map(|(id, status)| Push::Receipt { id, status }),
    ]
}

/// Any of the three frame types, encoded.
fn any_encoding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        request().prop_map(|v| encode(&v).unwrap()),
        reply().prop_map(|v| encode(&v).unwrap()),
        push().prop_map(|v| encode(&v).unwrap()),
    ]
}

/// Decoding `bytes` as `T` returns (never panics); whatever decodes re-encodes,
/// no longer than the input (senders use the shortest forms), to the same value.
fn decode_is_total<T>(bytes: &[u8]) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    if let Ok(value) = decode::<T>(bytes) {
        let again = encode(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(again.len() <= bytes.len(), "{value:?} re-encoded longer");
        prop_assert_eq!(decode::<T>(&again).ok(), Some(value));
    }
    Ok(())
}

/// What the server decodes requests with (`RequestRef` through
/// `decode_borrowed`, session.rs) accepts exactly the bytes `Request` accepts,
/// with the same fields, and re-encodes to the same bytes.
fn borrowed_request_agrees(bytes: &[u8]) -> Result<(), TestCaseError> {
    let owned = decode::<Request>(bytes);
    let borrowed = decode_borrowed::<RequestRef<'_>>(bytes);
    match (&owned, &borrowed) {
        (Ok(owned), Ok(borrowed)) => {
            let same = match (owned, borrowed) {
                (
                    Request::Hello { protocol, username },
                    RequestRef::Hello {
                        protocol: p,
                        username: u,
                    },
                ) => protocol == p && username == u,
                (Request::Send { to, body }, RequestRef::Send { to: t, body: b }) => {
                    to == t && body == b
                }
                (Request::ListUsers, RequestRef::ListUsers) => true,
                (Request::Devices(op), RequestRef::Devices(o)) => op == o,
                _ => false,
            };
            prop_assert!(same, "{:?} decoded as {:?}", owned, borrowed);
            prop_assert_eq!(encode(owned).ok(), encode(borrowed).ok());
        }
        (Err(_), Err(_)) => {}
        _ => prop_assert!(
            false,
            "Request gave {:?} but RequestRef gave {:?}",
            owned,
            borrowed
        ),
    }
    Ok(())
}

fn round_trips<T>(value: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let bytes = encode(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(
        &decode::<T>(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?,
        value
    );
    Ok(())
}

/// `bytes` plus `extra` decodes as `T` to nothing but `TrailingBytes(extra.len())`.
fn rejects_trailing<T>(bytes: &[u8], extra: &[u8]) -> Result<(), TestCaseError>
where
    T: DeserializeOwned + Debug,
{
    let mut longer = bytes.to_vec();
    longer.extend_from_slice(extra);
    match decode::<T>(&longer) {
        Err(CodecError::TrailingBytes(n)) => prop_assert_eq!(n, extra.len()),
        other => prop_assert!(false, "expected TrailingBytes, got {:?}", other),
    }
    Ok(())
}

/// Strict prefixes of `bytes` (the first 64, and the cuts sampled by `cuts`)
/// fail to decode as `T`: a frame cut short is never taken for another one.
fn rejects_prefixes<T: DeserializeOwned + Debug>(
    bytes: &[u8],
    cuts: &[prop::sample::Index],
) -> Result<(), TestCaseError> {
    let sampled = cuts.iter().map(|cut| cut.index(bytes.len()));
    for end in (0..bytes.len().min(64)).chain(sampled) {
        let cut = decode::<T>(&bytes[..end]);
        prop_assert!(
            matches!(cut, Err(CodecError::Malformed(_))),
            "prefix of {} bytes decoded: {:?}",
            end,
            cut
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        decode_is_total::<Request>(&bytes)?;
        borrowed_request_agrees(&bytes)?;
        decode_is_total::<Reply>(&bytes)?;
        decode_is_total::<Push>(&bytes)?;
    }

    #[test]
    fn bytes_after_a_valid_variant_never_panic(
        variant in 0u8..5,
        rest in vec(any::<u8>(), 0..300),
    ) {
        // Most random bytes fail at the variant index; start with a real one.
        let mut bytes = vec![variant];
        bytes.extend_from_slice(&rest);
        decode_is_total::<Request>(&bytes)?;
        borrowed_request_agrees(&bytes)?;
        decode_is_total::<Reply>(&bytes)?;
        decode_is_total::<Push>(&bytes)?;
    }

    #[test]
    fn mutated_encodings_never_panic(
        bytes in any_encoding(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = bytes;
        for (at, value) in edits {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        decode_is_total::<Request>(&bytes)?;
        borrowed_request_agrees(&bytes)?;
        decode_is_total::<Reply>(&bytes)?;
        decode_is_total::<Push>(&bytes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_round_trip_and_reject_extra_or_missing_bytes(
        value in request(),
        extra in vec(any::<u8>(), 1..16),
        cuts in vec(any::<prop::sample::Index>(), 8),
    ) {
        round_trips(&value)?;
        let bytes = encode(&value).unwrap();
        borrowed_request_agrees(&bytes)?;
        rejects_trailing::<Request>(&bytes, &extra)?;
        rejects_prefixes::<Request>(&bytes, &cuts)?;
    }

    #[test]
    fn replies_round_trip_and_reject_extra_or_missing_bytes(
        value in reply(),
        extra in vec(any::<u8>(), 1..16),
        cuts in vec(any::<prop::sample::Index>(), 8),
    ) {
        round_trips(&value)?;
        let bytes = encode(&value).unwrap();
        rejects_trailing::<Reply>(&bytes, &extra)?;
        rejects_prefixes::<Reply>(&bytes, &cuts)?;
    }

    #[test]
    fn pushes_round_trip_and_reject_extra_or_missing_bytes(
        value in push(),
        extra in vec(any::<u8>(), 1..16),
        cuts in vec(any::<prop::sample::Index>(), 8),
    ) {
        round_trips(&value)?;
        let bytes = encode(&value).unwrap();
        rejects_trailing::<Push>(&bytes, &extra)?;
        rejects_prefixes::<Push>(&bytes, &cuts)?;
    }
}
