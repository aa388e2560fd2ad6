//! Decode arbitrary bytes as each frame type of protocol v1. Nothing may panic,
//! and whatever decodes must re-encode (in shortest form, so never longer than
//! the input) to bytes that decode to the same value. The server's own
//! decoder, `RequestRef` through `decode_borrowed`, must accept exactly what
//! `Request` accepts, with the same fields and the same re-encoding.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use quic_chat::protocol::codec::decode_borrowed;
use quic_chat::protocol::frames::RequestRef;
use quic_chat::protocol::{decode, encode, Push, Reply, Request};
use serde::{de::DeserializeOwned, Serialize};

fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    if let Ok(value) = decode::<T>(data) {
        let again = encode(&value).expect("a decoded frame re-encodes");
        assert!(again.len() <= data.len(), "{value:?} re-encoded longer");
        let back: T = decode(&again).expect("a re-encoded frame decodes");
        assert_eq!(back, value);
    }
}

fn check_borrowed_request(data: &[u8]) {
    let owned = decode::<Request>(data);
    let borrowed = decode_borrowed::<RequestRef<'_>>(data);
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
                _ => false,
            };
            assert!(same, "{owned:?} decoded as {borrowed:?}");
            assert_eq!(encode(owned).ok(), encode(borrowed).ok());
        }
        (Err(_), Err(_)) => {}
        _ => panic!("Request gave {owned:?} but RequestRef gave {borrowed:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Request>(data);
    check_borrowed_request(data);
    check::<Reply>(data);
    check::<Push>(data);
});
