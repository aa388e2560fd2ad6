//! Device fingerprints: how protocol v2 names a device's key. The SHA-256 of
//! the certificate's DER SubjectPublicKeyInfo (32 bytes), shown to people as
//! `SHA256:` and the unpadded standard base64 of the bytes, as OpenSSH shows keys.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;

/// The prefix of a fingerprint's text form.
pub const FINGERPRINT_PREFIX: &str = "SHA256:";

/// A device fingerprint: 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; Fingerprint::LEN]);

/// Why a text is not a fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a device fingerprint (expected SHA256: and 43 characters of base64)")]
pub struct FingerprintError;

impl Fingerprint {
    /// Bytes in a fingerprint.
    pub const LEN: usize = 32;

    /// The fingerprint whose bytes these are.
    pub const fn new(bytes: [u8; Fingerprint::LEN]) -> Self {
        Fingerprint(bytes)
    }

    /// The fingerprint in `bytes`, if they are exactly 32.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Fingerprint)
    }

    /// The 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; Fingerprint::LEN] {
        &self.0
    }

    /// Whether `text` starts this fingerprint's text form, with or without the
    /// `SHA256:` prefix (what a person types to name a device). Empty text
    /// matches nothing.
    pub fn starts_with(&self, text: &str) -> bool {
        let text = text.strip_prefix(FINGERPRINT_PREFIX).unwrap_or(text);
        !text.is_empty() && STANDARD_NO_PAD.encode(self.0).starts_with(text)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{FINGERPRINT_PREFIX}{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    /// Parse the text form, `SHA256:` and 43 characters of base64.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text
            .strip_prefix(FINGERPRINT_PREFIX)
            .ok_or(FingerprintError)?;
        if encoded.len() != 43 {
            return Err(FingerprintError);
        }
        let bytes = STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| FingerprintError)?;
        Fingerprint::from_slice(&bytes).ok_or(FingerprintError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_is_sha256_and_unpadded_base64() {
        let fingerprint = Fingerprint::new([0xfb; 32]);
        let text = fingerprint.to_string();
        assert_eq!(text, format!("SHA256:{}", "+/v7".repeat(10) + "+/s"));
        assert_eq!(text.len(), 7 + 43);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fingerprint));
        assert!(fingerprint.starts_with("SHA256:+/v7"));
        assert!(fingerprint.starts_with("+/v"));
        assert!(!fingerprint.starts_with("SHA256:"));
        assert!(!fingerprint.starts_with("A"));
    }

    #[test]
    fn anything_else_is_not_a_fingerprint() {
        for text in [
            "",
            "SHA256:",
            "sha256:+/v7",
            "SHA256:+/v7",
            "MD5:aa",
            &"A".repeat(50),
        ] {
            assert_eq!(text.parse::<Fingerprint>(), Err(FingerprintError), "{text}");
        }
        assert_eq!(Fingerprint::from_slice(&[0; 31]), None);
        assert!(Fingerprint::from_slice(&[0; 32]).is_some());
    }
}
