//! The closed-loop workers of put, get and txn: each a tokio task with one
//! request in flight, picking a random key for every request, until the
//! run's operations are used up or its time is over. Requests during the
//! warm-up are sent but not counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tonic::Status;

use super::args::Plan;
use super::backend::{error_kind, Cas, Conn, Connections};
use super::cas::CasBook;
use super::data::{self, Keyspace};
use super::progress::{Progress, Snapshot};
use super::report::Measured;
use super::tally::{self, Shared, Tally};
use crate::cli::Consistency;

/// Pause after a failed request, so that a failing cluster gets no retry
/// storm from the bench.
pub(crate) const ERROR_PAUSE: Duration = Duration::from_millis(25);

/// When measuring starts and when the run must end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    /// The end of the warm-up.
    pub(crate) start: Instant,
    /// The end of the measured time.
    pub(crate) deadline: Instant,
}

impl Clock {
    /// A clock starting now: the plan's warm-up, then its duration.
    pub(crate) fn new(plan: &Plan) -> Clock {
        let start = Instant::now() + plan.warmup;
        Clock {
            start,
            deadline: start + plan.duration,
        }
    }
}

/// The measured operations left to start (`None`: no limit).
pub(crate) struct Budget {
    limit: Option<u64>,
    taken: AtomicU64,
}

impl Budget {
    /// A budget of `limit` operations.
    pub(crate) fn new(limit: Option<u64>) -> Budget {
        Budget {
            limit,
            taken: AtomicU64::new(0),
        }
    }

    /// Takes one operation; false once they are all taken.
    pub(crate) fn take(&self) -> bool {
        let n = self.taken.fetch_add(1, Ordering::Relaxed);
        self.limit.is_none_or(|limit| n < limit)
    }
}

/// What the workers send.
pub(crate) enum Workload {
    /// Puts of this value.
    Put(Bytes),
    /// Reads at this consistency.
    Get(Consistency),
    /// Compare-and-swaps from these beliefs, writing unique values of this
    /// size.
    Txn(Arc<CasBook>, usize),
}

/// What every worker shares.
struct Work {
    workload: Workload,
    keyspace: Keyspace,
    clock: Clock,
    budget: Budget,
    request_timeout: Duration,
}

/// How an answered request ended.
enum Answer {
    /// As asked.
    Done,
    /// A compare-and-swap whose compare failed.
    CompareFailed,
}

/// Runs the plan's workers over `conns`, sending `workload`, and measures
/// them.
pub(crate) async fn run<C: Conn>(
    plan: &Plan,
    conns: &Connections<C>,
    workload: Workload,
    label: String,
) -> Measured {
    let clock = Clock::new(plan);
    let work = Arc::new(Work {
        workload,
        keyspace: plan.keyspace.clone(),
        clock,
        budget: Budget::new(plan.ops),
        request_timeout: plan.request_timeout,
    });
    let tallies: Vec<Shared> = (0..plan.concurrency).map(|_| Shared::default()).collect();
    let progress = {
        let tallies = tallies.clone();
        Progress::start(label, move || {
            let sum = tally::merged(&tallies);
            Snapshot {
                ops: sum.answered(),
                p99_us: (sum.answered() > 0).then(|| sum.hist.value_at_quantile(0.99)),
                measuring: Instant::now() >= clock.start,
                note: String::new(),
            }
        })
    };
    let mut workers = JoinSet::new();
    for (id, tally) in tallies.iter().enumerate() {
        workers.spawn(worker(
            id,
            conns.for_worker(id),
            work.clone(),
            tally.clone(),
        ));
    }
    let mut lost = 0u64;
    while let Some(done) = workers.join_next().await {
        if done.is_err() {
            lost += 1;
        }
    }
    let end = Instant::now();
    progress.finish().await;
    let mut sum = tally::merged(&tallies);
    if lost > 0 {
        // A worker that panicked: counted, so that a report never hides it.
        *sum.errors.entry("WorkerPanicked".to_string()).or_default() += lost;
    }
    Measured {
        ops: sum.answered(),
        elapsed: end.saturating_duration_since(clock.start),
        tally: sum,
        events: None,
    }
}

/// One closed-loop worker: a request, its answer, the next request.
async fn worker<C: Conn>(id: usize, mut conn: C, work: Arc<Work>, tally: Shared) {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut seq = 0u64;
    loop {
        let now = Instant::now();
        if now >= work.clock.deadline {
            break;
        }
        let measured = now >= work.clock.start;
        if measured && !work.budget.take() {
            break;
        }
        let i = rng.random_range(0..work.keyspace.len());
        seq += 1;
        let started = Instant::now();
        let answer =
            tokio::time::timeout(work.request_timeout, request(&work, &mut conn, i, id, seq))
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("request timed out")));
        let latency = started.elapsed();
        let failed = answer.is_err();
        if measured {
            count(&mut tally::lock(&tally), answer, latency);
        }
        if failed {
            tokio::time::sleep(ERROR_PAUSE).await;
        }
    }
}

/// Adds one request's outcome to a tally.
fn count(t: &mut Tally, answer: Result<Answer, Status>, latency: Duration) {
    match answer {
        Ok(Answer::Done) => t.record(latency),
        Ok(Answer::CompareFailed) => {
            t.record(latency);
            t.compare_failed += 1;
        }
        Err(status) => t.error(error_kind(&status)),
    }
}

/// Sends one request of the run's operation on key `i`.
async fn request<C: Conn>(
    work: &Work,
    conn: &mut C,
    i: u64,
    worker: usize,
    seq: u64,
) -> Result<Answer, Status> {
    let key = work.keyspace.key(i);
    match &work.workload {
        Workload::Put(value) => conn.put(key, value.clone()).await.map(|()| Answer::Done),
        Workload::Get(consistency) => conn.get(key, *consistency).await.map(|()| Answer::Done),
        Workload::Txn(book, value_size) => {
            let new = data::unique(*value_size, worker, seq);
            let outcome = conn.cas(key, book.expected(i), new.clone()).await?;
            book.learn(i, &outcome, new);
            Ok(match outcome {
                Cas::Swapped => Answer::Done,
                Cas::CompareFailed(_) => Answer::CompareFailed,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_gives_out_its_limit_only() {
        let b = Budget::new(Some(2));
        assert!(b.take() && b.take());
        assert!(!b.take() && !b.take());
        let unlimited = Budget::new(None);
        assert!((0..1000).all(|_| unlimited.take()));
    }

    #[test]
    fn failed_compares_are_answers_and_errors_are_counted_by_code() {
        let mut t = Tally::new();
        count(&mut t, Ok(Answer::Done), Duration::from_millis(1));
        count(&mut t, Ok(Answer::CompareFailed), Duration::from_millis(2));
        count(
            &mut t,
            Err(Status::unavailable("no leader")),
            Duration::ZERO,
        );
        assert_eq!(t.answered(), 2);
        assert_eq!(t.compare_failed, 1);
        assert_eq!(t.errors.get("Unavailable"), Some(&1));
    }
}
