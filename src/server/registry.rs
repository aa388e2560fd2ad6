//! The users connected to this server: claim a name if it is free, release it
//! when the registration is dropped, look a mailbox up, list names. The local
//! backend of [`super::presence`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::mailbox::Mailbox;
use crate::protocol::NameKey;

/// Why a name could not be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ClaimError {
    /// Someone connected has this name, in some letter case.
    #[error("that name is taken")]
    Taken,
    /// As many users are registered as the server allows.
    #[error("the server is full")]
    Full,
    /// The cluster could not confirm the name (NATS is out of reach, or the
    /// node holding it does not answer).
    #[error("the cluster cannot confirm the name now")]
    Unavailable,
}

type Map = HashMap<NameKey, Arc<Mailbox>>;

/// The map of online users. Cheap to clone; every clone sees the same users.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    users: Arc<RwLock<Map>>,
    capacity: usize,
}

impl Registry {
    /// An empty registry that holds at most `capacity` users.
    pub(crate) fn new(capacity: usize) -> Self {
        Registry {
            users: Arc::new(RwLock::new(HashMap::new())),
            capacity,
        }
    }

    /// Register `mailbox` under `key`. A guest's mailbox needs the name free;
    /// an account's replaces whoever holds it (the account's older connection,
    /// or a guest who slipped in while the name was being registered), and the
    /// replaced mailbox is returned so its connection can be closed. Needs room
    /// unless it replaces. Returns the registration (dropping it frees the name),
    /// the number online, and the replaced mailbox.
    pub(crate) fn claim(&self, key: NameKey, mailbox: Arc<Mailbox>) -> Result<Claimed, ClaimError> {
        let mut users = self.write();
        let replaced = match users.get(&key) {
            Some(_) if !mailbox.is_account() => return Err(ClaimError::Taken),
            Some(current) => Some(Arc::clone(current)),
            None if users.len() >= self.capacity => return Err(ClaimError::Full),
            None => None,
        };
        users.insert(key, Arc::clone(&mailbox));
        let online = users.len();
        drop(users);
        if let Some(replaced) = &replaced {
            replaced.close();
        }
        let registration = Registration {
            registry: self.clone(),
            key,
            mailbox,
        };
        Ok(Claimed {
            registration,
            online,
            replaced,
        })
    }

    /// The online user with this name, if any.
    pub(crate) fn lookup(&self, key: &NameKey) -> Option<Arc<Mailbox>> {
        self.read().get(key).cloned()
    }

    /// Every online user's mailbox, in no particular order.
    pub(crate) fn mailboxes(&self) -> Vec<Arc<Mailbox>> {
        self.read().values().cloned().collect()
    }

    /// How many users are online.
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    /// Every online name with its key, in no particular order.
    pub(crate) fn names(&self) -> Vec<(NameKey, Arc<str>)> {
        self.read()
            .iter()
            .map(|(key, mailbox)| (*key, Arc::clone(&mailbox.name)))
            .collect()
    }

    // A poisoned lock only means another thread panicked while holding it; the
    // map itself is always left consistent, so keep serving.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        self.users.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Map> {
        self.users.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A successful claim.
#[derive(Debug)]
pub(crate) struct Claimed {
    /// Proof that the name is held.
    pub(crate) registration: Registration,
    /// Users online, including this one.
    pub(crate) online: usize,
    /// The mailbox this claim replaced (an account connecting again).
    pub(crate) replaced: Option<Arc<Mailbox>>,
}

/// Proof that a name is held. Dropping it frees the name (only if it is still
/// this registration's: a later owner of the name is never removed) and closes
/// the mailbox, so sends still on their way to it fail over at once.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Registry,
    key: NameKey,
    mailbox: Arc<Mailbox>,
}

impl Registration {
    /// The registered user's mailbox.
    pub(crate) fn mailbox(&self) -> &Arc<Mailbox> {
        &self.mailbox
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut users = self.registry.write();
        if let Some(current) = users.get(&self.key) {
            if Arc::ptr_eq(current, &self.mailbox) {
                users.remove(&self.key);
            }
        }
        drop(users);
        self.mailbox.close();
    }
}
