//! The wire contract in code: protocol versions, frames, their codec, close
//! codes and usernames.
//!
//! Everything that decides a byte on the wire lives below this module, so that a
//! later protocol version changes this module and nothing else.

pub mod close;
pub mod codec;
pub mod fingerprint;
pub mod frames;
pub mod username;
pub mod version;

pub use close::CloseCode;
pub use codec::{decode, encode, read_frame, write_frame, CodecError, FrameError};
pub use fingerprint::{Fingerprint, FingerprintError};
pub use frames::{
    Account, Device, DeviceOp, Failure, Push, RefuseReason, Reply, Request, RequestRef, Status,
};
pub use username::{NameKey, UsernameError};
pub use version::Version;

/// The largest frame either side may send on one stream direction, in bytes.
pub const MAX_FRAME_BYTES: usize = 73_728;

/// The largest message body, in UTF-8 bytes.
pub const MAX_BODY_BYTES: usize = 65_536;
