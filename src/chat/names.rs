//! The names of users known to be online, kept by the chat loop and read by
//! the line editor's Tab completion.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The names of users known to be online, shared with a tab completer. Kept
/// up to date from `users` answers, a periodic refresh and message senders.
#[derive(Debug, Clone, Default)]
pub struct OnlineNames(Arc<Mutex<BTreeSet<String>>>);

impl OnlineNames {
    /// Replace the set with a fresh list from the server.
    pub fn replace(&self, names: &[String]) {
        if let Ok(mut set) = self.0.lock() {
            *set = names.iter().cloned().collect();
        }
    }

    /// Add one name (for example, the sender of a message).
    pub fn insert(&self, name: &str) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(name.to_owned());
        }
    }

    /// The names starting with `prefix`, ignoring letter case, sorted.
    pub fn matching(&self, prefix: &str) -> Vec<String> {
        let prefix = prefix.to_lowercase();
        match self.0.lock() {
            Ok(set) => set
                .iter()
                .filter(|name| name.to_lowercase().starts_with(&prefix))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_names_match_case_insensitively() {
        let names = OnlineNames::default();
        names.replace(&["Alice".into(), "bob".into()]);
        names.insert("albert");
        assert_eq!(names.matching("AL"), vec!["Alice", "albert"]);
        assert_eq!(names.matching(""), vec!["Alice", "albert", "bob"]);
        names.replace(&["bob".into()]);
        assert_eq!(names.matching("a"), Vec::<String>::new());
    }
}
