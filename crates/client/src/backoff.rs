//! The one retry backoff: capped exponential with jitter, from `backon`.
//!
//! Jitter keeps three pods that lost the same peer (or three clients that
//! lost the same leader) from retrying in lockstep.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays that double from `min` up to `max`, each plus a random jitter of
/// up to itself (so a delay lies in `[d, 2d)`), and never run out.
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
}

impl Backoff {
    /// A backoff whose first delay is at least `min` and whose delays stop
    /// growing at `max` (before jitter).
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Backoff {
            builder,
            delays: builder.build(),
        }
    }

    /// Delays that double from `min` up to `max`, without jitter: for a
    /// retry whose phase matters more than lockstep does. A pod's stream to
    /// a peer is one of R - 1, each to a different peer, so there is no herd
    /// to spread; and the demonstration's restart-to-caught-up figure
    /// depends on when the leader retries a restarted pod.
    pub fn exact(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .without_max_times();
        Backoff {
            builder,
            delays: builder.build(),
        }
    }

    /// The next delay to wait before retrying.
    pub fn next_delay(&mut self) -> Duration {
        match self.delays.next() {
            Some(delay) => delay,
            // Never reached without a limit on times; start over rather
            // than stop retrying.
            None => {
                self.reset();
                self.builder.build().next().unwrap_or(Duration::ZERO)
            }
        }
    }

    /// Starts over at the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_below_twice_the_delay() {
        let mut b = Backoff::new(ms(100), ms(800));
        let mut bases = Vec::new();
        for _ in 0..8 {
            let d = b.next_delay();
            // The base is the largest power-of-two multiple of 100 ms, up
            // to 800 ms, that the delay reaches.
            let base = [800, 400, 200, 100]
                .into_iter()
                .map(ms)
                .find(|base| d >= *base)
                .expect("never below the minimum");
            assert!(d < base * 2, "{d:?} is more than twice its base {base:?}");
            bases.push(base.as_millis());
        }
        assert_eq!(bases[..4], [100, 200, 400, 800]);
        assert!(bases[4..].iter().all(|b| *b == 800), "{bases:?}");
    }

    #[test]
    fn exact_delays_double_up_to_the_cap() {
        let mut b = Backoff::exact(ms(50), ms(250));
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [50, 100, 200, 250, 250, 250]);
    }

    #[test]
    fn reset_starts_over_at_the_minimum() {
        let mut b = Backoff::new(ms(100), ms(800));
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() < ms(200));
    }

    #[test]
    fn two_backoffs_do_not_move_in_lockstep() {
        let mut a = Backoff::new(ms(100), ms(10_000));
        let mut b = Backoff::new(ms(100), ms(10_000));
        let same = (0..10).filter(|_| a.next_delay() == b.next_delay()).count();
        assert!(same < 10, "jitter makes the delays differ");
    }
}
