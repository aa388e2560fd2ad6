//! Message ids: one source for the whole server, unique per run today and
//! laid out so that they can be made unique across restarts (a persisted boot
//! epoch) and across the nodes of a cluster (a node number) without changing
//! any caller.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of an id given to the per-run counter; the bits above hold the run's
/// prefix (boot epoch, and later a node number).
pub(crate) const COUNTER_BITS: u32 = 40;

/// Hands out message ids: `prefix << 40 | counter`, the counter starting at 1.
/// 2^40 ids per run (twelve days at a million messages a second) before the
/// counter would run into the prefix.
#[derive(Debug)]
pub(crate) struct MessageIds {
    next: AtomicU64,
}

impl MessageIds {
    /// Ids for a run whose prefix is `prefix` (0 for a server that keeps no
    /// state across restarts; at most 2^24 - 1).
    pub(crate) fn new(prefix: u32) -> Self {
        let prefix = u64::from(prefix) & ((1 << (64 - COUNTER_BITS)) - 1);
        MessageIds {
            next: AtomicU64::new(prefix << COUNTER_BITS | 1),
        }
    }

    /// A fresh id.
    pub(crate) fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_and_carry_their_prefix() {
        let ids = MessageIds::new(0);
        assert_eq!((ids.next(), ids.next()), (1, 2));
        let ids = MessageIds::new(7);
        let id = ids.next();
        assert_eq!(id >> COUNTER_BITS, 7);
        assert_eq!(id & ((1 << COUNTER_BITS) - 1), 1);
        assert!(ids.next() > id);
        let top = MessageIds::new(u32::MAX).next();
        assert_eq!(
            top >> COUNTER_BITS,
            (1 << 24) - 1,
            "the prefix is cut to its 24 bits"
        );
    }
}
