//! The watch fan-out: `--watchers` streams on one prefix, and one writer
//! putting under it at `--rate` puts per second, each value carrying its
//! send time. A delivery's latency is its receive time minus that send
//! time; every acknowledged put should reach every watcher.
//!
//! The writer is paced, not closed-loop (a put's answer does not hold back
//! the next one, up to [`WRITER_IN_FLIGHT`] in flight), so that the rate
//! asked for is the rate sent. The streams are read by a few tasks, each
//! polling many streams, so that a thousand watchers do not need a
//! thousand histograms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::SelectAll;
use futures::StreamExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::args::Plan;
use super::backend::{error_kind, Conn, Connections, EventStream, SetupError};
use super::data::{self, Keyspace};
use super::progress::{Progress, Snapshot};
use super::report::{Events, Measured};
use super::runner::{Budget, Clock};
use super::tally::{self, Shared, Tally};

/// Puts the writer may have in flight.
const WRITER_IN_FLIGHT: usize = 256;
/// Tasks reading the watch streams, at most.
const READERS: usize = 64;
/// Streams opened at once.
const OPENING: usize = 32;
/// How often the drain checks whether every event has arrived.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Nanoseconds since the UNIX epoch now (0 if the clock is before it).
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Runs the fan-out: opens the streams, writes, waits for the deliveries
/// (at most the request timeout after the last put), and measures.
pub(crate) async fn run<C: Conn>(
    plan: &Plan,
    conns: &Connections<C>,
    label: String,
) -> Result<Measured, SetupError> {
    let streams = open(plan, conns).await?;
    let clock = Clock::new(plan);
    // Puts sent from here on are measured, and so are their events.
    let start_nanos = unix_nanos() + u64::try_from(plan.warmup.as_nanos()).unwrap_or(u64::MAX);

    let delivered = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let readers = READERS.min(streams.len());
    let mut groups: Vec<SelectAll<EventStream>> = (0..readers).map(|_| SelectAll::new()).collect();
    for (i, s) in streams.into_iter().enumerate() {
        groups[i % readers].push(s);
    }
    let tallies: Vec<Shared> = (0..readers).map(|_| Shared::default()).collect();
    let mut reading = JoinSet::new();
    for (group, t) in groups.into_iter().zip(&tallies) {
        reading.spawn(read(
            group,
            start_nanos,
            t.clone(),
            delivered.clone(),
            stopped.clone(),
        ));
    }

    let acked = Arc::new(AtomicU64::new(0));
    let progress = {
        let (tallies, acked, delivered) = (tallies.clone(), acked.clone(), delivered.clone());
        Progress::start(label, move || {
            let sum = tally::merged(&tallies);
            Snapshot {
                ops: acked.load(Ordering::Relaxed),
                p99_us: (sum.answered() > 0).then(|| sum.hist.value_at_quantile(0.99)),
                measuring: Instant::now() >= clock.start,
                note: format!(", {} events delivered", delivered.load(Ordering::Relaxed)),
            }
        })
    };
    let writer = Writer {
        keyspace: plan.keyspace.clone(),
        value_size: plan.value_size,
        interval: Duration::from_secs_f64(1.0 / plan.rate),
        clock,
        start_nanos,
        budget: Budget::new(plan.ops),
        request_timeout: plan.request_timeout,
        acked: acked.clone(),
        tally: Shared::default(),
    };
    writer.write(conns.for_worker(0)).await;
    let end = Instant::now();

    let expected = acked.load(Ordering::Relaxed) * plan.watchers as u64;
    let drain_until = Instant::now() + plan.request_timeout;
    while delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_until {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    let _ = stop.send(true);
    while reading.join_next().await.is_some() {}
    progress.finish().await;

    let mut sum = tally::merged(&tallies);
    sum.merge(&tally::lock(&writer.tally));
    Ok(Measured {
        ops: acked.load(Ordering::Relaxed),
        elapsed: end.saturating_duration_since(clock.start),
        tally: sum,
        events: Some(Events {
            expected,
            delivered: delivered.load(Ordering::Relaxed),
        }),
    })
}

/// Opens the plan's watch streams on its prefix, spread over the
/// connections; each is in place when this returns.
async fn open<C: Conn>(
    plan: &Plan,
    conns: &Connections<C>,
) -> Result<Vec<EventStream>, SetupError> {
    let prefix = plan.keyspace.prefix().clone();
    let timeout = plan.request_timeout;
    let opened: Vec<_> = futures::stream::iter(0..plan.watchers)
        .map(|i| {
            let mut conn = conns.for_worker(i);
            let prefix = prefix.clone();
            async move {
                let answer = tokio::time::timeout(timeout, conn.watch(prefix)).await;
                (i, answer)
            }
        })
        .buffer_unordered(OPENING)
        .collect()
        .await;
    let mut streams = Vec::with_capacity(opened.len());
    for (index, answer) in opened {
        match answer {
            Ok(Ok(s)) => streams.push(s),
            Ok(Err(status)) => {
                return Err(SetupError::Watch {
                    index,
                    reason: status.to_string(),
                })
            }
            Err(_) => {
                return Err(SetupError::Watch {
                    index,
                    reason: "timed out".to_string(),
                })
            }
        }
    }
    Ok(streams)
}

/// Reads a group of streams until told to stop, counting the measured
/// events (sent at or after `start_nanos`) and their delivery latency.
async fn read(
    mut streams: SelectAll<EventStream>,
    start_nanos: u64,
    tally: Shared,
    delivered: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let batch = tokio::select! {
            _ = stop.wait_for(|&s| s) => return,
            batch = streams.next() => batch,
        };
        match batch {
            Some(Ok(values)) => {
                let received = unix_nanos();
                let n = count_batch(&mut tally::lock(&tally), &values, start_nanos, received);
                delivered.fetch_add(n, Ordering::Relaxed);
            }
            Some(Err(status)) => tally::lock(&tally).error(error_kind(&status)),
            // Every stream ended: nothing more will come (the drain
            // counts what is missing).
            None => return,
        }
    }
}

/// Records the measured events of one batch received at `received`, and
/// gives how many there were.
fn count_batch(t: &mut Tally, values: &[Bytes], start_nanos: u64, received: u64) -> u64 {
    let mut n = 0;
    for sent in values.iter().filter_map(|v| data::timestamp_of(v)) {
        if sent >= start_nanos {
            t.record(Duration::from_nanos(received.saturating_sub(sent)));
            n += 1;
        }
    }
    n
}

/// The one writer of the fan-out.
struct Writer {
    keyspace: Keyspace,
    value_size: usize,
    interval: Duration,
    clock: Clock,
    start_nanos: u64,
    budget: Budget,
    request_timeout: Duration,
    /// Measured puts acknowledged.
    acked: Arc<AtomicU64>,
    /// Measured puts that failed.
    tally: Shared,
}

impl Writer {
    /// Puts at the writer's pace over `conn` until its budget or time is
    /// used up, and waits for the puts in flight.
    async fn write<C: Conn>(&self, conn: C) {
        let in_flight = Arc::new(Semaphore::new(WRITER_IN_FLIGHT));
        // A tick missed (all puts in flight) is made up at once, so the
        // rate holds on average.
        let mut tick = tokio::time::interval(self.interval);
        let mut puts = JoinSet::new();
        for n in 0u64.. {
            tick.tick().await;
            if Instant::now() >= self.clock.deadline {
                break;
            }
            let sent = unix_nanos();
            let measured = sent >= self.start_nanos;
            if measured && !self.budget.take() {
                break;
            }
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let (mut conn, key) = (conn.clone(), self.keyspace.key(n));
            let value = data::timestamped(self.value_size, sent);
            let (acked, tally, timeout) =
                (self.acked.clone(), self.tally.clone(), self.request_timeout);
            puts.spawn(async move {
                let answer = tokio::time::timeout(timeout, conn.put(key, value)).await;
                drop(permit);
                if !measured {
                    return;
                }
                match answer {
                    Ok(Ok(())) => {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(status)) => tally::lock(&tally).error(error_kind(&status)),
                    Err(_) => tally::lock(&tally).error("DeadlineExceeded".to_string()),
                }
            });
            // Reap the finished ones as we go.
            while puts.try_join_next().is_some() {}
        }
        while puts.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_measured_events_count_with_their_latency() {
        let mut t = Tally::new();
        let values = [
            data::timestamped(64, 1_000_000),
            data::timestamped(64, 3_000_000),
            data::timestamped(64, 500_000),
            data::filler(64),
        ];
        // Measured from 1 ms; received at 5 ms: latencies 4 ms and 2 ms.
        let n = count_batch(&mut t, &values, 1_000_000, 5_000_000);
        assert_eq!(n, 2);
        assert_eq!(t.answered(), 2);
        assert_eq!(t.hist.max(), t.hist.highest_equivalent(4_000));
        assert_eq!(t.hist.min(), t.hist.lowest_equivalent(2_000));
    }
}
