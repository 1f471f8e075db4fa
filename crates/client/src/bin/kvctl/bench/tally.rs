//! What one worker (or watch task) counted: a latency histogram in
//! microseconds, the failed requests by kind, and the compares that
//! failed. Each worker owns one; they are merged at the end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;

/// Significant figures the histograms keep.
const SIGFIG: u8 = 3;

/// Counts of one worker.
#[derive(Clone, Debug)]
pub(crate) struct Tally {
    /// Latencies of the answered requests, in microseconds.
    pub(crate) hist: Histogram<u64>,
    /// Failed requests by kind (the gRPC code's name).
    pub(crate) errors: BTreeMap<String, u64>,
    /// Compare-and-swaps whose compare failed (answered, not errors).
    pub(crate) compare_failed: u64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

impl Tally {
    /// An empty tally. Its histogram grows to the largest latency it
    /// records (from 1 µs), so a tally costs little until it is used.
    pub(crate) fn new() -> Tally {
        Tally {
            // Only a significant-figure count over 5 fails.
            hist: Histogram::new(SIGFIG).expect("3 significant figures are allowed"),
            errors: BTreeMap::new(),
            compare_failed: 0,
        }
    }

    /// Records one answered request that took `latency`.
    pub(crate) fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // At least 1 µs: the histogram's lowest value. `record` grows the
        // histogram to fit (`saturating_record` would clamp to its current
        // top instead); should growing ever fail, the value saturates.
        let micros = micros.max(1);
        if self.hist.record(micros).is_err() {
            self.hist.saturating_record(micros);
        }
    }

    /// Counts one failed request of this kind.
    pub(crate) fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// The requests answered.
    pub(crate) fn answered(&self) -> u64 {
        self.hist.len()
    }

    /// Adds `other`'s counts to this one's.
    pub(crate) fn merge(&mut self, other: &Tally) {
        // This histogram resizes to fit the other's range, so adding
        // cannot fail.
        let _ = self.hist.add(&other.hist);
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        self.compare_failed += other.compare_failed;
    }
}

/// A tally a worker writes and the progress line reads.
pub(crate) type Shared = Arc<Mutex<Tally>>;

/// Locks a shared tally; a worker that panicked mid-update left counts
/// that are still counts, so a poisoned lock is used as it is.
pub(crate) fn lock(t: &Shared) -> MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The sum of several shared tallies.
pub(crate) fn merged(tallies: &[Shared]) -> Tally {
    let mut sum = Tally::new();
    for t in tallies {
        sum.merge(&lock(t));
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_histograms_errors_and_compare_failures() {
        let mut a = Tally::new();
        for ms in 1..=100 {
            a.record(Duration::from_millis(ms));
        }
        a.error("Unavailable".into());
        a.compare_failed = 2;
        let mut b = Tally::new();
        // A larger range than `a` has seen: the merge must resize.
        b.record(Duration::from_secs(30));
        b.error("Unavailable".into());
        b.error("DeadlineExceeded".into());
        b.compare_failed = 1;
        let mut sum = Tally::new();
        sum.merge(&a);
        sum.merge(&b);
        assert_eq!(sum.answered(), 101);
        assert_eq!(sum.compare_failed, 3);
        assert_eq!(sum.errors.get("Unavailable"), Some(&2));
        assert_eq!(sum.errors.get("DeadlineExceeded"), Some(&1));
        // 3 significant figures: within 0.1 %.
        let p50 = sum.hist.value_at_quantile(0.5) as f64;
        assert!((p50 - 51_000.0).abs() <= 51.0, "p50 {p50}");
        let max = sum.hist.max() as f64;
        assert!((max - 30_000_000.0).abs() <= 30_000.0, "max {max}");
    }

    #[test]
    fn a_latency_under_a_microsecond_counts_as_one() {
        let mut t = Tally::new();
        t.record(Duration::from_nanos(10));
        assert_eq!((t.answered(), t.hist.min()), (1, 1));
    }

    #[test]
    fn shared_tallies_merge() {
        let shared: Vec<Shared> = (0..3).map(|_| Shared::default()).collect();
        for t in &shared {
            lock(t).record(Duration::from_millis(1));
        }
        assert_eq!(merged(&shared).answered(), 3);
    }
}
