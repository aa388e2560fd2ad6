//! quic-chat: a self-hosted encrypted messenger over QUIC.
//!
//! Module map:
//! - [`protocol`]: the wire contract (protocol v1): frames, codec, close codes, usernames.
//! - [`net`]: UDP sockets with buffers sized for QUIC bursts.
//! - [`tls`]: the CA and server certificates, and the rustls configs of both sides.
//! - [`clock`]: the wall clock in Unix milliseconds.
//! - [`server`]: the chat server: accept loop, sessions, registry, delivery, console.
//! - [`client`]: the client library: connect, send, list users, incoming events, typed errors.
//! - [`chat`]: the terminal program on top of it: the loop, its looks, commands, line editor.
//! - [`bench`]: the load generator behind `quic-chat bench`.
//! - [`cli`]: the command line, turned into the config structs above.
//! - `stdin` (internal): reading stdin lines on a thread, for the console and the chat.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bench;
pub mod chat;
pub mod cli;
pub mod client;
pub mod clock;
pub mod net;
pub mod protocol;
pub mod server;
mod stdin;
pub mod tls;
