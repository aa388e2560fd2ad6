//! A token bucket: the per-user send rate limit.

use tokio::time::Instant;

/// Allows `rate` sends per second sustained, with bursts of up to `burst`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate_per_sec: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate_per_sec,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Take one token if there is one.
    pub(crate) fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate_per_sec;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn bursts_then_refills_at_the_rate() {
        let mut bucket = TokenBucket::new(2.0, 3);
        assert!(bucket.try_take() && bucket.try_take() && bucket.try_take());
        assert!(!bucket.try_take(), "burst spent");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.try_take(), "one token back after 1/rate");
        assert!(!bucket.try_take());
        tokio::time::advance(Duration::from_secs(60)).await;
        let taken = (0..10).filter(|_| bucket.try_take()).count();
        assert_eq!(taken, 3, "never more than the burst");
    }
}
