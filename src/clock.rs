//! The wall clock as the protocol counts it: Unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// The time now, in Unix milliseconds (0 before 1970, saturating far in the future).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
