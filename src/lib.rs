//! quic-chat: a self-hosted encrypted messenger over QUIC.
//!
//! Module map:
//! - [`protocol`]: the wire contract (protocol v1): frames, codec, close codes, usernames.
//! - [`net`]: UDP sockets with buffers sized for QUIC bursts.
//! - [`tls`]: the CA and server certificates, and the rustls configs of both sides.
//! - [`server`]: the chat server: accept loop, sessions, registry, delivery, console.
//! - [`bench`](mod@bench): the load generator behind `quic-chat bench`.
//! - [`client`]: the client library API, command parsing, sanitising and the terminal loop.
#![warn(missing_docs)]

pub mod bench;
pub mod cli;
pub mod client;
pub mod net;
pub mod protocol;
pub mod server;
pub mod tls;
