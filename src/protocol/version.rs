//! Protocol versions: which one a connection speaks is decided once, by the
//! ALPN the TLS handshake negotiated, and every frame it may carry follows from it.

/// A version of the wire protocol, named on the wire by its ALPN identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// Protocol v1: `quic-chat/1`.
    V1,
    /// Protocol v2: `quic-chat/2` (accounts, devices, store and forward).
    V2,
}

impl Version {
    /// Every version this build speaks, in the server's order of preference
    /// (most preferred first); also the ALPN list a client offers.
    pub const SUPPORTED: [Version; 2] = [Version::V2, Version::V1];

    /// The newest version this build speaks.
    pub const LATEST: Version = Version::V2;

    /// The number a Hello carries for this version.
    pub const fn number(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
        }
    }

    /// The TLS ALPN identifier of this version.
    pub const fn alpn(self) -> &'static [u8] {
        match self {
            Version::V1 => b"quic-chat/1",
            Version::V2 => b"quic-chat/2",
        }
    }

    /// The version an ALPN identifier names, if this build speaks it.
    pub fn from_alpn(alpn: &[u8]) -> Option<Version> {
        Self::SUPPORTED.into_iter().find(|v| v.alpn() == alpn)
    }

    /// The ALPN identifiers of [`Version::SUPPORTED`], in order.
    pub fn alpn_list() -> Vec<Vec<u8>> {
        Self::SUPPORTED.iter().map(|v| v.alpn().to_vec()).collect()
    }

    /// The version a connection negotiated, from its TLS handshake data.
    /// `None` before the handshake completed or for an unknown ALPN (which
    /// a server never accepts).
    pub fn of_connection(connection: &quinn::Connection) -> Option<Version> {
        let data = connection.handshake_data()?;
        let data = data
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .ok()?;
        Version::from_alpn(data.protocol.as_deref()?)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_is_found_by_its_alpn() {
        for version in Version::SUPPORTED {
            assert_eq!(Version::from_alpn(version.alpn()), Some(version));
        }
        assert_eq!(Version::V1.alpn(), b"quic-chat/1");
        assert_eq!(Version::from_alpn(b"quic-chat/9"), None);
        assert_eq!(Version::from_alpn(b""), None);
        assert!(Version::SUPPORTED.contains(&Version::LATEST));
    }
}
