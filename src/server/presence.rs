//! Presence and routing: who holds a name, and where a message to a name goes.
//!
//! The seam between sessions and wherever users are: today every user is on
//! this server (the [`Registry`] behind it). Later routes slot in here without
//! touching sessions: `Offline` (a registered account whose mail goes to the
//! store) and `Remote` (a user on another node of a cluster).

use std::sync::Arc;

use super::mailbox::Mailbox;
use super::registry::{ClaimError, Claimed, Registry};
use crate::protocol::{codec, NameKey};

/// Where a message to a name goes.
#[derive(Debug)]
pub(crate) enum Route {
    /// The user is connected to this server.
    Local(Arc<Mailbox>),
    /// No connected user has the name.
    Unknown,
}

/// Who is online, and how to reach them. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Presence {
    local: Registry,
}

impl Presence {
    /// Presence for a single server that holds at most `capacity` users.
    pub(crate) fn local(capacity: usize) -> Self {
        Presence {
            local: Registry::new(capacity),
        }
    }

    /// Hold `key` for `mailbox`: a guest needs the name free, an account
    /// takes it over from its older connection (see [`Registry::claim`]).
    pub(crate) async fn claim(
        &self,
        key: NameKey,
        mailbox: Arc<Mailbox>,
    ) -> Result<Claimed, ClaimError> {
        self.local.claim(key, mailbox)
    }

    /// The connected user with this name, if any (for the operator and the
    /// account checks; senders use [`Presence::locate`]).
    pub(crate) fn connected(&self, key: &NameKey) -> Option<Arc<Mailbox>> {
        self.local.lookup(key)
    }

    /// Where a message to `key` goes. Called once per Send: no allocation, one read lock.
    pub(crate) fn locate(&self, key: &NameKey) -> Route {
        match self.local.lookup(key) {
            Some(mailbox) => Route::Local(mailbox),
            None => Route::Unknown,
        }
    }

    /// The first online names, sorted by their lowercased form, that fit in a
    /// `Users` frame of at most `frame_bytes` bytes (a large server lists a prefix).
    pub(crate) fn list(&self, frame_bytes: usize) -> Vec<String> {
        // Copied out under the lock, sorted after releasing it.
        let mut entries = self.local.names();
        entries.sort_unstable_by_key(|entry| entry.0);
        let fit = codec::users_frame_prefix(entries.iter().map(|(_, name)| &**name), frame_bytes);
        entries
            .into_iter()
            .take(fit)
            .map(|(_, name)| name.to_string())
            .collect()
    }
}
