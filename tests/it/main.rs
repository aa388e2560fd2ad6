//! The one integration-test crate: real QUIC over loopback, every scenario bounded in time.
#![allow(unreachable_pub)] // test helpers are pub within this crate

mod accounts;
mod backpressure;
mod bench;
mod cli;
mod cluster;
mod cluster_chat;
mod cluster_faults;
mod codec_props;
mod crash;
mod faults;
mod handshake;
mod harness;
mod identity;
mod json;
mod limits;
mod mail;
mod mail_delete;
mod mail_refused;
mod messaging;
mod metrics;
mod receipts;
mod reconnect;
mod shutdown;
mod soak;
mod terminal;
mod terminal_safety;
mod tls;
mod transport;
mod wire;
