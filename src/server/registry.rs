//! Who is online: the server's only shared state. Claim a name if it is free,
//! release it when the registration is dropped, look a recipient up, list names.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;

use crate::protocol::NameKey;

/// A registered user as the delivery path sees it.
#[derive(Debug)]
pub struct Recipient {
    /// The name as registered (original letter case).
    pub name: Arc<str>,
    /// The user's connection, on which deliveries are opened.
    pub connection: quinn::Connection,
    /// Backlog budget in cost units (see [`super::delivery`]); a full budget means `RecipientBusy`.
    pub backlog: Semaphore,
}

/// Why a name could not be claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    /// Someone connected has this name, in some letter case.
    #[error("that name is taken")]
    Taken,
    /// As many users are registered as the server allows.
    #[error("the server is full")]
    Full,
}

type Map = HashMap<NameKey, Arc<Recipient>>;

/// The map of online users. Cheap to clone; every clone sees the same users.
#[derive(Debug, Clone)]
pub struct Registry {
    users: Arc<RwLock<Map>>,
    capacity: usize,
}

impl Registry {
    /// An empty registry that holds at most `capacity` users.
    pub fn new(capacity: usize) -> Self {
        Registry {
            users: Arc::new(RwLock::new(HashMap::new())),
            capacity,
        }
    }

    /// Register `recipient` under `key` if the name is free and there is room.
    /// Returns the registration (dropping it frees the name) and the number online.
    pub fn claim(
        &self,
        key: NameKey,
        recipient: Recipient,
    ) -> Result<(Registration, usize), ClaimError> {
        let mut users = self.write();
        if users.contains_key(&key) {
            return Err(ClaimError::Taken);
        }
        if users.len() >= self.capacity {
            return Err(ClaimError::Full);
        }
        let recipient = Arc::new(recipient);
        users.insert(key, Arc::clone(&recipient));
        let online = users.len();
        drop(users);
        let registration = Registration {
            registry: self.clone(),
            key,
            recipient,
        };
        Ok((registration, online))
    }

    /// The online user with this name, if any.
    pub fn lookup(&self, key: &NameKey) -> Option<Arc<Recipient>> {
        self.read().get(key).cloned()
    }

    /// The first registered names, sorted by their lowercased form, that fit in
    /// a `Users` frame of at most `frame_bytes` bytes. With the longest names a
    /// 73,728-byte frame holds 2,234 of them; a larger server lists a prefix.
    pub fn names_fitting(&self, frame_bytes: usize) -> Vec<String> {
        // Copy out under the lock; sort after releasing it.
        let mut entries: Vec<(NameKey, Arc<str>)> = self
            .read()
            .iter()
            .map(|(key, recipient)| (*key, Arc::clone(&recipient.name)))
            .collect();
        entries.sort_unstable_by_key(|entry| entry.0);
        prefix_fitting(entries.into_iter().map(|(_, name)| name), frame_bytes)
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

/// Proof that a name is held. Dropping it frees the name (only if it is still
/// this registration's: a later owner of the name is never removed).
#[derive(Debug)]
pub struct Registration {
    registry: Registry,
    key: NameKey,
    recipient: Arc<Recipient>,
}

impl Registration {
    /// The registered user.
    pub fn recipient(&self) -> &Arc<Recipient> {
        &self.recipient
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut users = self.registry.write();
        if let Some(current) = users.get(&self.key) {
            if Arc::ptr_eq(current, &self.recipient) {
                users.remove(&self.key);
            }
        }
    }
}

/// The leading `names` that fit in a `Users` frame of at most `frame_bytes`.
fn prefix_fitting(names: impl Iterator<Item = Arc<str>>, frame_bytes: usize) -> Vec<String> {
    // Frame: variant (1 byte) + count (varint: 3 bytes covers every count that
    // fits) + per name a one-byte length (names are at most 32 bytes) and the name.
    const HEADER: usize = 1 + 3;
    let mut used = HEADER;
    names
        .take_while(|name| {
            used += 1 + name.len();
            used <= frame_bytes
        })
        .map(|name| name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{encode, Reply, MAX_FRAME_BYTES};

    #[test]
    fn the_longest_names_fill_but_never_overflow_a_frame() {
        let all: Vec<Arc<str>> = (0..5000).map(|i| Arc::from(format!("{i:032}"))).collect();
        let listed = prefix_fitting(all.iter().cloned(), MAX_FRAME_BYTES);
        let frame = encode(&Reply::Users {
            names: listed.clone(),
        })
        .expect("fits");
        assert!(frame.len() <= MAX_FRAME_BYTES);
        let mut one_more = listed.clone();
        one_more.push(all[listed.len()].to_string());
        let bigger = encode(&Reply::Users { names: one_more }).map(|f| f.len());
        assert!(
            !matches!(bigger, Ok(len) if len <= MAX_FRAME_BYTES),
            "the prefix is as long as fits"
        );
        assert_eq!(listed.len(), 2_234);
    }

    #[test]
    fn small_servers_list_everyone() {
        let names: Vec<Arc<str>> = ["a", "B", "c"].into_iter().map(Arc::from).collect();
        assert_eq!(
            prefix_fitting(names.into_iter(), MAX_FRAME_BYTES),
            ["a", "B", "c"]
        );
    }
}
