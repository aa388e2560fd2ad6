//! Decode arbitrary bytes as each frame type of protocol v1. Nothing may panic,
//! and whatever decodes must re-encode (in shortest form, so never longer than
//! the input) to bytes that decode to the same value.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
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

fuzz_target!(|data: &[u8]| {
    check::<Request>(data);
    check::<Reply>(data);
    check::<Push>(data);
});
