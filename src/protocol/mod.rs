//! The wire contract (protocol v1) in code: frames, their codec, close codes and usernames.
//!
//! Everything that decides a byte on the wire lives below this module, so that a
//! later protocol version changes this module and nothing else.

pub mod close;
pub mod codec;
pub mod frames;
pub mod username;

pub use close::CloseCode;
pub use codec::{decode, encode, read_frame, write_frame, CodecError, FrameError};
pub use frames::{Push, RefuseReason, Reply, Request, Status};
pub use username::{NameKey, UsernameError};

/// The protocol version this build speaks, sent in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The TLS ALPN identifier of protocol v1.
pub const ALPN: &[u8] = b"quic-chat/1";

/// The largest frame either side may send on one stream direction, in bytes.
pub const MAX_FRAME_BYTES: usize = 73_728;

/// The largest message body, in UTF-8 bytes.
pub const MAX_BODY_BYTES: usize = 65_536;
