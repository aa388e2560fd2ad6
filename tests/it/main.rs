//! The one integration-test crate: real QUIC over loopback, every scenario bounded in time.

mod backpressure;
mod cli;

mod handshake;
mod harness;
mod json;
mod limits;
mod messaging;
mod shutdown;
mod terminal;
mod tls;
mod wire;
