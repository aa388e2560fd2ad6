//! Presence and routing: who holds a name, and where a message to a name goes.
//!
//! The seam between sessions and wherever users are: the users of this
//! server (the [`Registry`]), and in a cluster the users of the other nodes
//! ([`Remote`]). A message to a user of this server never touches the cluster.

use std::sync::Arc;

use super::mailbox::Mailbox;
use super::registry::{self, ClaimError, Registry};
use super::remote::{Remote, RemoteClaim};
use crate::protocol::{codec, NameKey};

/// Where a message to a name goes.
#[derive(Debug)]
pub(crate) enum Route<'a> {
    /// The user is connected to this server.
    Local(Arc<Mailbox>),
    /// Not connected here: ask the cluster (the user may be on another node).
    Elsewhere(&'a Remote),
    /// No connected user has the name.
    Unknown,
}

/// Who is online, and how to reach them. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Presence {
    local: Registry,
    remote: Option<Arc<Remote>>,
}

/// Proof that a name is held (here, and in the cluster if there is one).
/// Dropping it frees the name: first here, then in the cluster.
#[derive(Debug)]
pub(crate) struct Registration {
    local: registry::Registration,
    /// Boxed: only cluster nodes have one, and every connection's task
    /// holds the registration.
    _remote: Option<Box<RemoteClaim>>,
}

impl Registration {
    /// The registered user's mailbox.
    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        self.local.mailbox()
    }
}

/// A successful claim.
#[derive(Debug)]
pub(crate) struct Claimed {
    /// Proof that the name is held.
    pub(crate) registration: Registration,
    /// Users online (in the whole cluster), including this one.
    pub(crate) online: usize,
    /// The mailbox this claim replaced on this server (an account connecting again).
    pub(crate) replaced: Option<Arc<Mailbox>>,
}

impl Presence {
    /// Presence for a server that holds at most `capacity` users, in the
    /// cluster of `remote` if there is one.
    pub(crate) fn new(local: Registry, remote: Option<Arc<Remote>>) -> Self {
        Presence { local, remote }
    }

    /// The users of this server.
    pub(crate) fn local_registry(&self) -> &Registry {
        &self.local
    }

    /// This node's part in its cluster, if it is in one.
    pub(crate) fn remote(&self) -> Option<&Arc<Remote>> {
        self.remote.as_ref()
    }

    /// Hold `key` for `mailbox`: a guest needs the name free, an account
    /// takes it over from its older connection (see [`Registry::claim`]),
    /// here and then in the cluster.
    pub(crate) async fn claim(
        &self,
        key: NameKey,
        mailbox: Arc<Mailbox>,
    ) -> Result<Claimed, ClaimError> {
        if self.remote.as_ref().is_some_and(|remote| !remote.serving()) {
            return Err(ClaimError::Unavailable);
        }
        let claimed = self.local.claim(key, Arc::clone(&mailbox))?;
        let remote = match &self.remote {
            Some(remote) => match remote.claim(key, &mailbox.name, mailbox.is_account()).await {
                Ok(claim) => Some(claim),
                Err(e) => {
                    // Dropping the local registration frees the name here; an
                    // older connection it replaced (already closed to senders)
                    // must not linger unregistered.
                    if let Some(older) = &claimed.replaced {
                        older.disconnect(
                            crate::protocol::CloseCode::Replaced,
                            "signed in elsewhere",
                        );
                    }
                    return Err(e);
                }
            },
            None => None,
        };
        let elsewhere = self.remote.as_ref().map_or(0, |remote| {
            let cluster = remote.cluster();
            cluster.roster().count_elsewhere(cluster.node_id().as_str())
        });
        Ok(Claimed {
            online: claimed.online + elsewhere,
            replaced: claimed.replaced,
            registration: Registration {
                local: claimed.registration,
                _remote: remote.map(Box::new),
            },
        })
    }

    /// The user with this name connected to this server, if any (for the
    /// operator and the account checks; senders use [`Presence::locate`]).
    pub(crate) fn connected(&self, key: &NameKey) -> Option<Arc<Mailbox>> {
        self.local.lookup(key)
    }

    /// How many users are connected to this server.
    pub(crate) fn connected_here(&self) -> usize {
        self.local.len()
    }

    /// Where a message to `key` goes. Called once per Send: no allocation, one read lock.
    pub(crate) fn locate(&self, key: &NameKey) -> Route<'_> {
        match (self.local.lookup(key), &self.remote) {
            (Some(mailbox), _) => Route::Local(mailbox),
            (None, Some(remote)) => Route::Elsewhere(remote),
            (None, None) => Route::Unknown,
        }
    }

    /// The first online names (in the whole cluster), sorted by their
    /// lowercased form, that fit in a `Users` frame of at most
    /// `frame_bytes` bytes (a large server lists a prefix).
    pub(crate) fn list(&self, frame_bytes: usize) -> Vec<String> {
        // Copied out under the lock, sorted after releasing it.
        let mut entries: Vec<(String, String)> = self
            .local
            .names()
            .into_iter()
            .map(|(key, name)| (key.as_str().to_owned(), name.to_string()))
            .collect();
        if let Some(remote) = &self.remote {
            let cluster = remote.cluster();
            let here: std::collections::HashSet<String> =
                entries.iter().map(|(key, _)| key.clone()).collect();
            let elsewhere = cluster.roster().elsewhere(cluster.node_id().as_str());
            entries.extend(
                elsewhere
                    .into_iter()
                    .map(|(_, name)| (name.to_ascii_lowercase(), name))
                    .filter(|(key, _)| !here.contains(key)),
            );
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        let fit =
            codec::users_frame_prefix(entries.iter().map(|(_, name)| name.as_str()), frame_bytes);
        entries
            .into_iter()
            .take(fit)
            .map(|(_, name)| name)
            .collect()
    }
}
