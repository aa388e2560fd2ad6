//! A latency histogram whose observation is a few atomic adds (no lock), so
//! that it can sit on the delivery hot path. prometheus-client's own
//! `Histogram` takes a mutex per observation; this one keeps one atomic
//! counter per bucket and hands the snapshot to the crate's encoder.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Upper bounds of the buckets, in microseconds: 100 µs (loopback) to 10 s
/// (past the 5 s delivery deadline), in 1-2.5-5 steps.
const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A histogram of durations with fixed buckets ([`BOUNDS_US`] and +Inf);
/// clones share their counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct LatencyHistogram(Arc<Buckets>);

#[derive(Debug, Default)]
struct Buckets {
    /// Observations per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    /// The sum of every observation, in nanoseconds.
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    /// Count one observation of `elapsed`.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US.partition_point(|&bound| bound < micros);
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.0.buckets)
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total, so a scrape during an observation
        // stays consistent (the sum may lag by that one observation).
        let count = buckets.iter().map(|&(_, n)| n).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_at_or_above_it() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(11));
        let counts: Vec<u64> =
            h.0.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
        assert_eq!(counts[0], 1, "100 µs is in le=0.0001");
        assert_eq!(counts[1], 1, "101 µs is in le=0.00025");
        assert_eq!(counts[BOUNDS_US.len()], 1, "11 s is only in +Inf");
        assert_eq!(h.count(), 3);
        assert_eq!(
            h.0.sum_ns.load(Ordering::Relaxed),
            100_000 + 101_000 + 11_000_000_000
        );
    }
}
