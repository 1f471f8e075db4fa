//! The load the demo runs through its faults: writers of unique keys (to
//! check none is lost) and of a few shared keys, and linearizable readers of
//! the shared keys (to check their history).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use kvstore_client::{Client, RetryPolicy, TlsOptions, WriteRetry};
use kvstore_lincheck::{Op, OpKind};
use kvstore_proto::kv::Consistency;

/// How many shared keys the writers and readers contend on.
pub(super) const SHARED_KEYS: u64 = 4;

/// Bounds each load task, should nobody tell it to stop.
const MAX_OPS_PER_TASK: u64 = 1_000_000;

/// What the load records.
#[derive(Default)]
pub(super) struct LoadLog {
    /// Completion times of acknowledged writes.
    acks: Vec<Instant>,
    /// Acknowledged unique writes: key -> value.
    pub(super) acked: BTreeMap<String, String>,
    /// Writes whose outcome is unknown.
    pub(super) unknown: usize,
    /// Operations on the shared keys.
    pub(super) history: Vec<Op>,
}

/// The running load.
pub(super) struct Load {
    log: Arc<Mutex<LoadLog>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A client that retries long enough to ride out a failover, and retries
/// only the writes that are safe to repeat.
pub(super) fn retrying_client(
    tls: Option<&TlsOptions>,
    endpoints: &[String],
) -> Result<Client, String> {
    let policy = RetryPolicy {
        budget: Duration::from_secs(15),
        writes: WriteRetry::Safe,
        ..RetryPolicy::default()
    };
    Client::with_tls(endpoints, policy, Duration::from_secs(3), tls).map_err(|e| e.to_string())
}

/// What every load task shares: the log, the stop signal, and the clock
/// the history's times count from.
#[derive(Clone)]
struct Recorder {
    log: Arc<Mutex<LoadLog>>,
    stopped: watch::Receiver<bool>,
    /// The keys' common prefix.
    prefix: String,
    epoch: Instant,
}

impl Recorder {
    /// Told to stop, or the load dropped without being finished (a phase
    /// failed): either way the task ends.
    fn stopped(&self) -> bool {
        *self.stopped.borrow() || self.stopped.has_changed().is_err()
    }

    /// The log. Entries are only ever added whole under the lock, so one
    /// poisoned by a task that panicked still holds a log worth checking.
    fn log(&self) -> MutexGuard<'_, LoadLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An instant as the history records it: nanoseconds since the epoch.
    fn nanos(&self, t: Instant) -> u64 {
        t.duration_since(self.epoch).as_nanos() as u64
    }

    /// The name of shared key number `n`.
    fn shared_key(&self, n: u64) -> String {
        format!("{}/reg/{}", self.prefix, n % SHARED_KEYS)
    }
}

impl Load {
    /// Starts `writers` writers and `readers` readers on keys under
    /// `prefix`; the history's times count from `epoch`.
    pub(super) fn start(
        tls: Option<&TlsOptions>,
        endpoints: &[String],
        writers: usize,
        readers: usize,
        epoch: Instant,
        prefix: String,
    ) -> Result<Load, String> {
        let log = Arc::new(Mutex::new(LoadLog::default()));
        let (stop, stopped) = watch::channel(false);
        let recorder = Recorder {
            log: log.clone(),
            stopped,
            prefix,
            epoch,
        };
        let mut tasks = Vec::new();
        for w in 0..writers {
            let c = retrying_client(tls, endpoints)?;
            tasks.push(tokio::spawn(write_loop(c, recorder.clone(), w)));
        }
        for r in 0..readers {
            let c = retrying_client(tls, endpoints)?;
            tasks.push(tokio::spawn(read_loop(c, recorder.clone(), r)));
        }
        Ok(Load { log, stop, tasks })
    }

    /// Where the longest gap between acknowledged writes since `since`
    /// lies: (the ack before it, the ack after it, or now if writes have
    /// not resumed). The gap that spans `since` counts whole, from the last
    /// ack before it, and gaps before that do not count at all, so a pause
    /// before a fault is not taken for the fault's.
    pub(super) fn longest_gap_span(&self, since: Instant) -> (Instant, Instant) {
        longest_gap_in(self.ack_times(), since, Instant::now())
    }

    /// When each acknowledged write completed, so far.
    pub(super) fn ack_times(&self) -> Vec<Instant> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .acks
            .clone()
    }

    /// How many unique writes were acknowledged so far.
    pub(super) fn acked_count(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .acked
            .len()
    }

    /// Stops the load and returns its log; a load task that panicked or
    /// did not stop in time makes the log untrustworthy, and is an error.
    pub(super) async fn finish(self) -> Result<LoadLog, String> {
        let _ = self.stop.send(true);
        let mut problems = Vec::new();
        for t in self.tasks {
            let abort = t.abort_handle();
            match tokio::time::timeout(Duration::from_secs(20), t).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(format!("a load task failed: {e}")),
                Err(_) => {
                    abort.abort();
                    problems.push("a load task did not stop within 20 s".to_string());
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(std::mem::take(
            &mut *self.log.lock().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// [`Load::longest_gap_span`] over the acknowledgement times `acks`.
fn longest_gap_in(mut acks: Vec<Instant>, since: Instant, now: Instant) -> (Instant, Instant) {
    acks.sort();
    let from = acks.partition_point(|&t| t <= since).saturating_sub(1);
    let acks = &acks[from..];
    let mut span = match acks.first() {
        Some(&first) if first <= since => (first, first),
        Some(&first) => (since, first),
        None => (since, since),
    };
    // The gap still open at `now` counts too.
    let last = acks.last().copied().unwrap_or(since);
    for (a, b) in acks.windows(2).map(|w| (w[0], w[1])).chain([(last, now)]) {
        if b.saturating_duration_since(a) > span.1.saturating_duration_since(span.0) {
            span = (a, b);
        }
    }
    span
}

/// Writer `w`: alternately a put of a unique key and a put of a shared key,
/// until told to stop.
async fn write_loop(mut c: Client, rec: Recorder, w: usize) {
    for seq in 0..MAX_OPS_PER_TASK {
        if rec.stopped() {
            return;
        }
        let key = format!("{}/w{w}/{seq:08}", rec.prefix);
        let value = format!("{w}-{seq}");
        match c.put(key.clone(), value.clone()).await {
            Ok(_) => {
                let mut l = rec.log();
                l.acks.push(Instant::now());
                l.acked.insert(key, value);
            }
            Err(e) if e.outcome_unknown() => rec.log().unknown += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        put_shared(&mut c, &rec, w, seq).await;
    }
}

/// A write to a shared key, for the linearizability check. Its value names
/// the writer and the sequence number, so every value written is unique.
async fn put_shared(c: &mut Client, rec: &Recorder, w: usize, seq: u64) {
    let reg = rec.shared_key(seq);
    let v = ((w as u64) << 40) | seq;
    let invoked = Instant::now();
    let result = c.put(reg.clone(), v.to_string()).await;
    let completed = Instant::now();
    // A write that certainly failed did not happen, and is left out; one of
    // unknown outcome may have happened at any time after it was invoked.
    let done = match result {
        Ok(_) => Some(Some(rec.nanos(completed))),
        Err(e) if e.outcome_unknown() => Some(None),
        Err(_) => None,
    };
    if let Some(completed) = done {
        let mut l = rec.log();
        if completed.is_some() {
            l.acks.push(Instant::now());
        } else {
            l.unknown += 1;
        }
        l.history.push(Op {
            key: reg,
            kind: OpKind::Put(v),
            invoked: rec.nanos(invoked),
            completed,
        });
    }
}

/// Reader `r`: linearizable gets of the shared keys in turn, until told to
/// stop.
async fn read_loop(mut c: Client, rec: Recorder, r: usize) {
    for i in 0..MAX_OPS_PER_TASK {
        if rec.stopped() {
            return;
        }
        let reg = rec.shared_key(i + r as u64);
        let invoked = Instant::now();
        if let Ok(resp) = c.get(reg.clone(), Consistency::Linearizable).await {
            let completed = Instant::now();
            let value = resp.kv.and_then(|kv| {
                std::str::from_utf8(&kv.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
            });
            rec.log().history.push(Op {
                key: reg,
                kind: OpKind::Get(value),
                invoked: rec.nanos(invoked),
                completed: Some(rec.nanos(completed)),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_across_the_fault_counts_whole_and_earlier_pauses_do_not() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // A 100 ms pause before the fault at 300 ms, then acks at 280 and
        // 330 around it: the fault's gap is 280..330, not the earlier one.
        let acks = vec![at(0), at(10), at(110), at(280), at(330), at(340)];
        assert_eq!(
            longest_gap_in(acks.clone(), at(300), at(345)),
            (at(280), at(330))
        );
        // With no ack after the fault yet, the gap is still open: from the
        // last ack until now.
        assert_eq!(
            longest_gap_in(acks.clone(), at(400), at(900)),
            (at(340), at(900))
        );
        // With no ack before it, it runs from the fault to the first ack.
        assert_eq!(
            longest_gap_in(vec![at(50), at(60)], t0, at(61)),
            (t0, at(50))
        );
    }
}
