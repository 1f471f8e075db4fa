//! One session: a client that writes a new value of its own key and reads
//! it straight back, in a loop, in one of the three ways.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use super::report::WayFigures;
use kvstore_client::{Client, RetryPolicy, TlsOptions, WriteRetry};
use kvstore_proto::kv::{Consistency, GetRequest};

/// Bounds each session's loop, should nobody tell it to stop.
const MAX_ROUNDS: u64 = 1_000_000;

/// How long one request of a session may take, retries on the session's
/// endpoints included, before the session counts it as an error: what an
/// application would wait before it gives its own user an error. A pod
/// down for longer gives a session tied to it at least one error.
pub const SESSION_REQUEST_BUDGET: Duration = Duration::from_secs(1);

/// How a session reaches the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Every request to one pod, as a sticky session to one instance; its
    /// reads are SERIALIZABLE, served by that pod.
    Pinned,
    /// Reads SERIALIZABLE from any pod, without a token.
    Serializable,
    /// Reads SERIALIZABLE from any pod with `min_revision` = the revision
    /// the session's last write returned.
    Token,
}

impl Way {
    /// The three, in the summary's order.
    pub const ALL: [Way; 3] = [Way::Pinned, Way::Serializable, Way::Token];

    /// The way's short name, in the narration, the keys and the values.
    pub fn tag(self) -> &'static str {
        match self {
            Way::Pinned => "pinned",
            Way::Serializable => "serializable",
            Way::Token => "min_revision",
        }
    }
}

/// What a session leaves for the check after it stops: its key should
/// hold its last acknowledged value, or one written after it whose outcome
/// the session does not know.
pub(super) struct Expectation {
    pub(super) key: Bytes,
    pub(super) acked: Option<Bytes>,
    pub(super) unknown: Vec<Bytes>,
}

impl Expectation {
    /// Whether `found` (the key's value at the end) keeps the session's
    /// acknowledged write.
    pub(super) fn kept_by(&self, found: Option<&Bytes>) -> bool {
        match (&self.acked, found) {
            (None, _) => true,
            (Some(acked), Some(v)) => v == acked || self.unknown.contains(v),
            (Some(_), None) => false,
        }
    }
}

/// One client of one way.
pub(super) struct Session {
    way: Way,
    /// The session's number within its way: its key, and which pod its
    /// reads start from.
    id: usize,
    writer: Client,
    /// One client per pod, each with that pod first and the others after
    /// it (pinned: one client, of one pod); read `n` starts at pod
    /// `n % pods`, so reads go to every pod in turn and a dead pod is
    /// passed over.
    readers: Vec<Client>,
    figures: WayFigures,
    expectation: Expectation,
    /// Rounds done, for the narration.
    rounds: Arc<AtomicU64>,
}

/// A session's client of `endpoints`. Writes are retried also when their
/// outcome is unknown: a put of the session's own key with the same value
/// is harmless to repeat, since the session waits for it before it writes
/// again.
fn session_client(endpoints: &[String], tls: Option<&TlsOptions>) -> Result<Client, String> {
    let policy = RetryPolicy {
        budget: SESSION_REQUEST_BUDGET,
        writes: WriteRetry::Always,
        ..RetryPolicy::default()
    };
    Client::with_tls(endpoints, policy, SESSION_REQUEST_BUDGET, tls).map_err(|e| e.to_string())
}

/// `endpoints` starting at the `first`-th.
fn starting_at(endpoints: &[String], first: usize) -> Vec<String> {
    let n = endpoints.len();
    (0..n).map(|i| endpoints[(first + i) % n].clone()).collect()
}

impl Session {
    /// Session `id` of `way`; `pinned` is the pod a pinned session sticks
    /// to, by ordinal (an index into `endpoints`).
    pub(super) fn new(
        way: Way,
        id: usize,
        endpoints: &[String],
        pinned: usize,
        tls: Option<&TlsOptions>,
        rounds: Arc<AtomicU64>,
    ) -> Result<Session, String> {
        let (writer, readers) = if way == Way::Pinned {
            let only = session_client(&endpoints[pinned..=pinned], tls)?;
            (only.clone(), vec![only])
        } else {
            let writer = session_client(&starting_at(endpoints, id), tls)?;
            let readers = (0..endpoints.len())
                .map(|first| session_client(&starting_at(endpoints, first), tls))
                .collect::<Result<_, _>>()?;
            (writer, readers)
        };
        let key = Bytes::from(format!("sessions/{}/{id}", way.tag()));
        Ok(Session {
            way,
            id,
            writer,
            readers,
            figures: WayFigures::one_session(),
            expectation: Expectation {
                key,
                acked: None,
                unknown: Vec::new(),
            },
            rounds,
        })
    }

    /// Writes and reads back until `stopped` says so; gives what the
    /// session saw and what its key should hold.
    pub(super) async fn run(mut self, stopped: watch::Receiver<bool>) -> (WayFigures, Expectation) {
        let mut last_progress = Instant::now();
        for seq in 0..MAX_ROUNDS {
            // Told to stop, or the demo gone (it failed and dropped its
            // side): either way the session ends.
            if *stopped.borrow() || stopped.has_changed().is_err() {
                break;
            }
            if self.round(seq).await {
                let now = Instant::now();
                self.stalled(now - last_progress);
                last_progress = now;
                self.rounds.fetch_add(1, Ordering::Relaxed);
            } else {
                // Some errors come at once (a refused connection to the
                // only endpoint): don't spin on them.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        self.stalled(last_progress.elapsed());
        (self.figures, self.expectation)
    }

    /// Notes a time without progress.
    fn stalled(&mut self, gap: Duration) {
        self.figures.longest_stall = self.figures.longest_stall.max(gap);
    }

    /// One write and its read back; whether both were answered.
    async fn round(&mut self, seq: u64) -> bool {
        match self.write(seq).await {
            Some((value, revision)) => self.read_back(seq, value, revision).await,
            None => false,
        }
    }

    /// Writes the session's next value; gives it and the revision the
    /// write's response returned, or `None` on an error.
    async fn write(&mut self, seq: u64) -> Option<(Bytes, u64)> {
        let value = Bytes::from(format!("{}-{}-{seq}", self.way.tag(), self.id));
        let key = self.expectation.key.clone();
        match self.writer.put(key, value.clone()).await {
            Ok(resp) => {
                self.figures.writes_acked += 1;
                self.expectation.acked = Some(value.clone());
                self.expectation.unknown.clear();
                Some((value, resp.header.map_or(0, |h| h.revision)))
            }
            Err(e) => {
                self.figures.write_errors += 1;
                if e.outcome_unknown() {
                    self.expectation.unknown.push(value);
                }
                None
            }
        }
    }

    /// Reads the key back as the session's way does, and counts a read that
    /// does not return `value` as a miss; whether the read was answered.
    async fn read_back(&mut self, seq: u64, value: Bytes, revision: u64) -> bool {
        let req = GetRequest {
            key: self.expectation.key.clone(),
            consistency: Consistency::Serializable as i32,
            min_revision: if self.way == Way::Token { revision } else { 0 },
        };
        // A fresh copy starts at its first endpoint: the pod this read
        // prefers, whichever pod the last read ended on.
        let first = (seq as usize + self.id) % self.readers.len();
        let mut reader = self.readers[first].clone();
        match reader.get_request(req).await {
            Ok(resp) => {
                let node = resp.header.map(|h| h.node).unwrap_or_default();
                *self.figures.served_by.entry(node).or_default() += 1;
                self.figures.reads += 1;
                if resp.kv.map(|kv| kv.value) != Some(value) {
                    self.figures.missed += 1;
                }
                true
            }
            Err(_) => {
                self.figures.read_errors += 1;
                false
            }
        }
    }
}
