//! The one integration-test crate: real QUIC over loopback, every scenario bounded in time.

mod backpressure;
mod cli;

mod handshake;
mod harness;
mod limits;
mod messaging;
mod shutdown;
mod tls;
mod wire;
