//! What a valid username is, and the case-insensitive key names are compared by.

use std::fmt;

/// The longest valid username, in characters (all ASCII, so also bytes).
pub const MAX_USERNAME_LEN: usize = 32;

/// Why a string is not a valid username.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// The empty string.
    #[error("a username cannot be empty")]
    Empty,
    /// More than 32 characters.
    #[error("a username has at most {MAX_USERNAME_LEN} characters")]
    TooLong,
    /// A character outside `A-Z a-z 0-9 _ . -`.
    #[error("a username may only contain letters A-Z, digits, '_', '.' and '-'")]
    BadCharacter,
}

/// A valid username folded to lower case: the identity two names share when they
/// differ only in ASCII letter case. Fixed size and `Copy`, so looking a user up
/// allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey {
    bytes: [u8; MAX_USERNAME_LEN],
    len: u8,
}

impl NameKey {
    /// The key of `name`, or why `name` is not a valid username.
    pub fn new(name: &str) -> Result<Self, UsernameError> {
        let raw = name.as_bytes();
        if raw.is_empty() {
            return Err(UsernameError::Empty);
        }
        if raw.len() > MAX_USERNAME_LEN {
            return Err(UsernameError::TooLong);
        }
        let mut bytes = [0u8; MAX_USERNAME_LEN];
        for (slot, &byte) in bytes.iter_mut().zip(raw) {
            if !is_name_byte(byte) {
                return Err(UsernameError::BadCharacter);
            }
            *slot = byte.to_ascii_lowercase();
        }
        Ok(NameKey {
            bytes,
            len: raw.len() as u8,
        })
    }

    /// The lowercased name.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for NameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NameKey({:?})", self.as_str())
    }
}

fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(name: &str) -> Result<(), UsernameError> {
        NameKey::new(name).map(|_| ())
    }

    #[test]
    fn accepts_the_allowed_alphabet() {
        assert!(validate("a").is_ok());
        assert!(validate("Alice_B.c-9").is_ok());
        assert!(validate(&"x".repeat(32)).is_ok());
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(validate(""), Err(UsernameError::Empty));
        assert_eq!(validate(&"x".repeat(33)), Err(UsernameError::TooLong));
        for bad in ["a b", "a/b", "é", "a\nb", "a\0", "ä", "a+b", "@me"] {
            assert_eq!(validate(bad), Err(UsernameError::BadCharacter), "{bad:?}");
        }
        // 17 characters but 34 bytes: over the 32-byte limit, which is checked first.
        assert_eq!(validate(&"é".repeat(17)), Err(UsernameError::TooLong));
    }

    #[test]
    fn keys_ignore_ascii_case() {
        assert_eq!(
            NameKey::new("Alice").unwrap(),
            NameKey::new("aLICE").unwrap()
        );
        assert_ne!(
            NameKey::new("alice").unwrap(),
            NameKey::new("alice2").unwrap()
        );
        assert_eq!(NameKey::new("BoB").unwrap().as_str(), "bob");
    }
}
