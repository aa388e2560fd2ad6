//! The frames of the protocol. The order of variants IS the wire format: never
//! reorder, insert or remove a variant; a new version only appends variants,
//! and says so with `since`, which gates what a connection may carry.

use serde::{Deserialize, Serialize};

use super::Version;

/// What a client sends on a bidirectional stream it opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Registration, on the first bidirectional stream only.
    Hello {
        /// Protocol version the client speaks (1).
        protocol: u32,
        /// The name the client wants to be known by.
        username: String,
    },
    /// A direct message to one connected user.
    Send {
        /// The recipient's username (matched case-insensitively).
        to: String,
        /// The message text.
        body: String,
    },
    /// Ask for the names of everyone online.
    ListUsers,
    // --- v2 ---
    /// Since v2: list, add or remove the account's devices.
    Devices(DeviceOp),
}

/// Since v2: what a `Request::Devices` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceOp {
    /// The account's devices.
    List,
    /// Bind another device's key to the account (or relabel one already on it).
    Add {
        /// The device fingerprint: 32 bytes.
        fingerprint: Vec<u8>,
        /// A name for the device: 1 to 64 bytes.
        label: String,
    },
    /// Unbind a device's key from the account.
    Remove {
        /// The device fingerprint: 32 bytes.
        fingerprint: Vec<u8>,
    },
}

/// The borrowed twin of [`Request`]: the same bytes on the wire, decoded
/// without copying names and bodies out of the received frame (the server's
/// per-message path) or encoded without owning them (the client's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestRef<'a> {
    /// See [`Request::Hello`].
    Hello {
        /// See [`Request::Hello`].
        protocol: u32,
        /// See [`Request::Hello`].
        username: &'a str,
    },
    /// See [`Request::Send`].
    Send {
        /// See [`Request::Send`].
        to: &'a str,
        /// See [`Request::Send`].
        body: &'a str,
    },
    /// See [`Request::ListUsers`].
    ListUsers,
    // --- v2 ---
    /// See [`Request::Devices`].
    Devices(DeviceOp),
}

/// What the server answers on the same bidirectional stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The Hello was accepted.
    Welcome {
        /// Server software name and version.
        server: String,
        /// Users online, including the new one.
        online: u32,
    },
    /// The Hello was refused; the server closes with code 3 afterwards.
    Refused {
        /// Why, as a machine-readable reason.
        reason: RefuseReason,
        /// Why, for a human.
        detail: String,
    },
    /// The outcome of one `Send`.
    Receipt {
        /// The message id, also carried by the matching `Deliver`.
        id: u64,
        /// What happened to the message.
        status: Status,
    },
    /// The answer to `ListUsers`.
    Users {
        /// Registered names, sorted by their lowercased form.
        names: Vec<String>,
    },
    // --- v2 ---
    /// Since v2: the answer to an accepted Hello (v1's `Welcome`).
    Session {
        /// Server software name and version.
        server: String,
        /// Users online, including this one.
        online: u32,
        /// What the Hello did to the account.
        account: Account,
        /// Stored messages that follow this reply as `Deliver` pushes.
        queued: u32,
    },
    /// Since v2: the account's devices after a `Devices` request, in the order added.
    Devices {
        /// The devices.
        devices: Vec<Device>,
    },
    /// Since v2: a `Devices` request that was not carried out.
    Failed {
        /// Why, as a machine-readable reason.
        reason: Failure,
        /// Why, for a human.
        detail: String,
    },
}

/// Since v2: the account state a `Session` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Account {
    /// No certificate, or accounts off: v1 rules, nothing stored for this user.
    Guest,
    /// This Hello registered the name to the presented key.
    Registered,
    /// The name was already registered to the presented key.
    Returning,
}

/// Since v2: one device of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device fingerprint: 32 bytes.
    pub fingerprint: Vec<u8>,
    /// The device's label.
    pub label: String,
    /// When it was added, server clock, Unix ms.
    pub added_ms: u64,
    /// Start of the device's latest session, Unix ms; 0 if never.
    pub last_seen_ms: u64,
    /// Whether it is the device of the connection asking.
    pub current: bool,
}

/// Since v2: why a `Devices` request was not carried out (checked in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Failure {
    /// The connection is a guest; guests have no devices.
    NotRegistered,
    /// The account already has the server's maximum number of devices.
    TooMany,
    /// That key belongs to another account.
    InUse,
    /// Remove of a fingerprint the account does not have.
    UnknownDevice,
    /// Remove of the account's only device.
    LastDevice,
    /// A fingerprint that is not 32 bytes, or a label that is empty or over 64 bytes.
    Invalid,
}

/// Why a Hello was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefuseReason {
    /// Another connected user has this name (compared case-insensitively).
    NameTaken,
    /// The name is not 1 to 32 characters of `A-Z a-z 0-9 _ . -`.
    InvalidName,
    /// The client speaks a protocol version this server does not.
    UnsupportedProtocol,
    /// The server holds as many connections as it allows.
    ServerFull,
    // --- v2 ---
    /// Since v2: this connection's key cannot be used for this name (the name is
    /// registered to other keys, or the key belongs to another account).
    KeyMismatch,
    /// Since v2: this server admits registered accounts only, and does not register this one.
    AccountRequired,
}

/// The outcome of one `Send`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Status {
    /// The recipient's QUIC stack acknowledged the whole delivery stream.
    Delivered,
    /// No such user is connected, and nothing was stored (a guest or unregistered
    /// name, a guest sender, or a server without a store).
    NotConnected,
    /// Stored on stable storage for delivery when the recipient (an account) connects.
    Queued,
    /// The body is over 65,536 bytes.
    TooLarge,
    /// The sender is over its rate limit; nothing was sent.
    RateLimited,
    /// The recipient's backlog is full or it did not take the message in time.
    RecipientBusy,
    /// `to` is not a valid username.
    InvalidRecipient,
    // --- v2 ---
    /// Since v2, only in `Push::Receipt`: a stored message was dropped unread.
    Expired,
}

/// What the server pushes on a unidirectional stream it opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Push {
    /// One delivered message.
    Deliver {
        /// The id the sender's `Receipt` carries.
        id: u64,
        /// The sender's registered name, stamped by the server.
        from: String,
        /// The server's clock when it accepted the message, Unix milliseconds.
        sent_at_ms: u64,
        /// The message text.
        body: String,
    },
    // --- v2 ---
    /// Since v2: the final outcome of a message that was answered `Queued`.
    Receipt {
        /// The message's id.
        id: u64,
        /// `Delivered` or `Expired`.
        status: Status,
    },
}

impl Request {
    /// The first protocol version that has this variant.
    pub fn since(&self) -> Version {
        match self {
            Request::Hello { .. } | Request::Send { .. } | Request::ListUsers => Version::V1,
            Request::Devices(_) => Version::V2,
        }
    }
}

impl RequestRef<'_> {
    /// The first protocol version that has this variant.
    pub fn since(&self) -> Version {
        match self {
            RequestRef::Hello { .. } | RequestRef::Send { .. } | RequestRef::ListUsers => {
                Version::V1
            }
            RequestRef::Devices(_) => Version::V2,
        }
    }
}

impl Reply {
    /// The first protocol version that has this variant (and its fields' variants).
    pub fn since(&self) -> Version {
        match self {
            Reply::Welcome { .. } | Reply::Users { .. } => Version::V1,
            Reply::Refused { reason, .. } => reason.since(),
            Reply::Receipt { status, .. } => status.since(),
            Reply::Session { .. } | Reply::Devices { .. } | Reply::Failed { .. } => Version::V2,
        }
    }
}

impl Push {
    /// The first protocol version that has this variant.
    pub fn since(&self) -> Version {
        match self {
            Push::Deliver { .. } => Version::V1,
            Push::Receipt { .. } => Version::V2,
        }
    }
}

impl RefuseReason {
    /// Every reason, in wire order.
    pub const ALL: [RefuseReason; 6] = [
        RefuseReason::NameTaken,
        RefuseReason::InvalidName,
        RefuseReason::UnsupportedProtocol,
        RefuseReason::ServerFull,
        RefuseReason::KeyMismatch,
        RefuseReason::AccountRequired,
    ];

    /// The reason's name in `snake_case`, as metrics and reports show it.
    pub const fn name(self) -> &'static str {
        match self {
            RefuseReason::NameTaken => "name_taken",
            RefuseReason::InvalidName => "invalid_name",
            RefuseReason::UnsupportedProtocol => "unsupported_protocol",
            RefuseReason::ServerFull => "server_full",
            RefuseReason::KeyMismatch => "key_mismatch",
            RefuseReason::AccountRequired => "account_required",
        }
    }

    /// The first protocol version that has this reason.
    pub fn since(self) -> Version {
        match self {
            RefuseReason::NameTaken
            | RefuseReason::InvalidName
            | RefuseReason::UnsupportedProtocol
            | RefuseReason::ServerFull => Version::V1,
            RefuseReason::KeyMismatch | RefuseReason::AccountRequired => Version::V2,
        }
    }
}

impl Failure {
    /// Every failure, in wire order (also the order they are checked in).
    pub const ALL: [Failure; 6] = [
        Failure::NotRegistered,
        Failure::TooMany,
        Failure::InUse,
        Failure::UnknownDevice,
        Failure::LastDevice,
        Failure::Invalid,
    ];
}

impl Status {
    /// Every status, in wire order.
    pub const ALL: [Status; 8] = [
        Status::Delivered,
        Status::NotConnected,
        Status::Queued,
        Status::TooLarge,
        Status::RateLimited,
        Status::RecipientBusy,
        Status::InvalidRecipient,
        Status::Expired,
    ];

    /// The first protocol version that has this status.
    pub fn since(self) -> Version {
        match self {
            Status::Delivered
            | Status::NotConnected
            | Status::Queued
            | Status::TooLarge
            | Status::RateLimited
            | Status::RecipientBusy
            | Status::InvalidRecipient => Version::V1,
            Status::Expired => Version::V2,
        }
    }

    /// The status's name in `snake_case`, as JSON output and reports show it.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::NotConnected => "not_connected",
            Status::Queued => "queued",
            Status::TooLarge => "too_large",
            Status::RateLimited => "rate_limited",
            Status::RecipientBusy => "recipient_busy",
            Status::InvalidRecipient => "invalid_recipient",
            Status::Expired => "expired",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decode, encode};

    /// `ALL` lists every variant once, in wire order: the index of each is its
    /// encoding, and the index after the last is not a status.
    #[test]
    fn all_lists_every_variant_in_wire_order() {
        for (index, status) in Status::ALL.into_iter().enumerate() {
            assert_eq!(encode(&status).unwrap(), [index as u8]);
        }
        assert!(decode::<Status>(&[Status::ALL.len() as u8]).is_err());
        for (index, reason) in RefuseReason::ALL.into_iter().enumerate() {
            assert_eq!(encode(&reason).unwrap(), [index as u8]);
        }
        assert!(decode::<RefuseReason>(&[RefuseReason::ALL.len() as u8]).is_err());
    }

    #[test]
    fn status_names_are_distinct() {
        let names: std::collections::BTreeSet<_> = Status::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Status::ALL.len());
        let reasons: std::collections::BTreeSet<_> =
            RefuseReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(reasons.len(), RefuseReason::ALL.len());
    }
}
