//! quic-chat: a self-hosted encrypted messenger over QUIC.
//!
//! Module map:
//! - [`protocol`]: the wire contract: versions, frames, codec, close codes, usernames.
//! - `transport` (internal): UDP sockets sized for QUIC bursts, and both sides' QUIC settings.
//! - [`tls`]: the CA and server certificates, and the rustls configs of both sides.
//! - [`clock`]: the wall clock in Unix milliseconds.
//! - `store` (internal): the server's durable database (redb): accounts, schema version, boot epoch.
//! - [`server`]: the chat server: accept loop, Hello, sessions, the Send router,
//!   presence, mailboxes, delivery, console.
//! - [`client`]: the client library: connect, send, list users, incoming events, typed errors.
//! - [`chat`]: the terminal program on top of it: the loop, its looks, commands, line editor.
//! - [`bench`](mod@bench): the load generator behind `quic-chat bench`.
//! - [`cli`]: the command line, turned into the config structs above.
//! - `stdin` (internal): reading stdin lines on a thread, for the console and the chat.
#![warn(missing_docs)]

pub mod bench;
pub mod chat;
pub mod cli;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod protocol;
pub mod server;
mod stdin;
mod store;
pub mod tls;
mod transport;
