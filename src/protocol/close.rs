//! Application close codes: the only place they are numbers.

use quinn::{ConnectionError, VarInt};

/// An application close code (CONNECTION_CLOSE, application variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// The user left (client).
    Bye,
    /// The server is shutting down.
    ServerShutdown,
    /// A malformed, oversized, unexpected or late frame (either side).
    ProtocolError,
    /// Sent by the server after a `Refused` reply.
    Refused,
    /// The client fell too far behind on deliveries.
    TooSlow,
    /// Since v2: the account connected again elsewhere, or this device was removed.
    Replaced,
}

impl CloseCode {
    /// The code as it goes on the wire.
    pub const fn code(self) -> u32 {
        match self {
            CloseCode::Bye => 0,
            CloseCode::ServerShutdown => 1,
            CloseCode::ProtocolError => 2,
            CloseCode::Refused => 3,
            CloseCode::TooSlow => 4,
            CloseCode::Replaced => 5,
        }
    }

    /// The code as a QUIC variable-length integer.
    pub fn var_int(self) -> VarInt {
        VarInt::from_u32(self.code())
    }

    /// The close code for a wire value, if it is one of ours.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => CloseCode::Bye,
            1 => CloseCode::ServerShutdown,
            2 => CloseCode::ProtocolError,
            3 => CloseCode::Refused,
            4 => CloseCode::TooSlow,
            5 => CloseCode::Replaced,
            _ => return None,
        })
    }

    /// Close `connection` with this code and a short human-readable reason.
    pub fn close(self, connection: &quinn::Connection, reason: &str) {
        connection.close(self.var_int(), reason.as_bytes());
    }
}

/// A short human description of why a connection ended.
pub fn describe(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ApplicationClosed(close) => {
            let code = close.error_code.into_inner();
            let reason = String::from_utf8_lossy(&close.reason);
            match CloseCode::from_code(code) {
                Some(CloseCode::Bye) => "said goodbye".to_owned(),
                Some(known) if reason.is_empty() => format!("peer closed with {known}"),
                Some(known) => format!("peer closed with {known}: {reason}"),
                None => format!("peer closed with unknown code {code}"),
            }
        }
        ConnectionError::LocallyClosed => "closed by this side".to_owned(),
        ConnectionError::TimedOut => "timed out (no answer from the peer)".to_owned(),
        other => other.to_string(),
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            CloseCode::Bye => "BYE",
            CloseCode::ServerShutdown => "SERVER_SHUTDOWN",
            CloseCode::ProtocolError => "PROTOCOL_ERROR",
            CloseCode::Refused => "REFUSED",
            CloseCode::TooSlow => "TOO_SLOW",
            CloseCode::Replaced => "REPLACED",
        };
        write!(f, "{name} ({})", self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_match_the_contract() {
        let all = [
            (CloseCode::Bye, 0),
            (CloseCode::ServerShutdown, 1),
            (CloseCode::ProtocolError, 2),
            (CloseCode::Refused, 3),
            (CloseCode::TooSlow, 4),
            (CloseCode::Replaced, 5),
        ];
        for (code, wire) in all {
            assert_eq!(code.code(), wire);
            assert_eq!(CloseCode::from_code(u64::from(wire)), Some(code));
        }
        assert_eq!(CloseCode::from_code(6), None);
    }
}
