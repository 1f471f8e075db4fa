//! The apply thread: applies committed entries to the state in order, answers
//! the proposals that made them, and tells watchers and readers.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, oneshot, watch};

use super::replication::Input;
use super::{WatchBatch, WriteResult};
use crate::error::{Error, Result};
use crate::raft::Entry;
use crate::state::apply::{event_bytes as event_bytes_of, Reads};
use crate::state::command::Applied;
use crate::state::snapshot::SnapshotWriter;
use crate::state::{KvState, StateError};

/// The most bytes of events one batch hands to watchers directly; a larger
/// batch is read by each watcher from the stored history instead, so the
/// watchers' shared queue stays small.
const MAX_BROADCAST_EVENT_BYTES: usize = 1 << 20;

/// The most bytes of entry data the apply thread folds into one batch from
/// several messages (a single larger message is applied as it is).
const COALESCE_BYTES: usize = 1 << 20;

/// Work for the apply thread, in log order.
pub enum ApplyMsg {
    /// Committed entries to apply.
    Entries(Vec<Entry>),
    /// Make a received snapshot the state.
    Install {
        writer: SnapshotWriter,
        expected: crate::raft::SnapshotMeta,
        done: std::sync::mpsc::Sender<Result<u64, StateError>>,
    },
    /// Make the applied state durable, then report the applied index.
    Checkpoint,
    /// Finish: make everything durable and stop.
    Stop,
}

/// The answer channel of one proposal.
type Answer = oneshot::Sender<Result<WriteResult>>;
/// index -> (term, answer).
type ProposalMap = HashMap<u64, (u64, Answer)>;

/// Proposals waiting for their entry to be applied.
#[derive(Default)]
pub struct Waiters {
    proposals: Mutex<ProposalMap>,
}

impl Waiters {
    /// Registers the proposal at (`index`, `term`). A proposal of an
    /// earlier term waiting at the same index was replaced: this member,
    /// leading again, proposes at `index` only because its log no longer
    /// holds that entry, and a leader's log holds every committed entry, so
    /// the earlier one was never committed and never will be.
    pub fn insert(&self, index: u64, term: u64, done: oneshot::Sender<Result<WriteResult>>) {
        if let Some((_, replaced)) = self.lock().insert(index, (term, done)) {
            let _ = replaced.send(Err(Error::NotApplied(
                "a new leader replaced the entry".into(),
            )));
        }
    }

    fn has(&self, index: u64) -> bool {
        self.lock().contains_key(&index)
    }

    fn take(&self, index: u64) -> Option<(u64, oneshot::Sender<Result<WriteResult>>)> {
        self.lock().remove(&index)
    }

    /// Answers every proposal at or below `index` as of unknown outcome
    /// (a snapshot replaced those entries).
    fn fail_through(&self, index: u64) {
        let mut map = self.lock();
        let gone: Vec<u64> = map.keys().copied().filter(|&i| i <= index).collect();
        for i in gone {
            if let Some((_, done)) = map.remove(&i) {
                let _ = done.send(Err(Error::OutcomeUnknown(
                    "a snapshot replaced the log".into(),
                )));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProposalMap> {
        self.proposals.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The apply thread's state.
pub struct Applier {
    pub state: Arc<KvState>,
    pub rx: Receiver<ApplyMsg>,
    pub inbox: Sender<Input>,
    pub waiters: Arc<Waiters>,
    pub applied: watch::Sender<u64>,
    pub events: broadcast::Sender<Arc<WatchBatch>>,
    /// Whether the identity record already holds the cluster id.
    pub cluster_recorded: bool,
    /// Where the apply latency goes.
    pub metrics: Arc<crate::metrics::NodeMetrics>,
}

impl Applier {
    /// Runs until `Stop`. A storage failure is fatal: it is returned and the
    /// node stops.
    pub fn run(mut self) -> Result<(), StateError> {
        let mut next = None;
        while let Some(msg) = next.take().or_else(|| self.rx.recv().ok()) {
            match msg {
                ApplyMsg::Entries(mut entries) => {
                    // What was committed meanwhile goes into the same sled
                    // batch (sled writes out its buffers twice per batch,
                    // `Tree::apply_batch`, whatever its size), up to a
                    // bound, so that a member catching up does not hold a
                    // larger batch in memory than before.
                    let mut bytes: usize = entries.iter().map(|e| e.data.len()).sum();
                    while bytes < COALESCE_BYTES {
                        match self.rx.try_recv() {
                            Ok(ApplyMsg::Entries(more)) => {
                                bytes += more.iter().map(|e| e.data.len()).sum::<usize>();
                                entries.extend(more);
                            }
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    let started = std::time::Instant::now();
                    self.apply(entries)?;
                    self.metrics.apply.observe(started.elapsed().as_secs_f64());
                }
                ApplyMsg::Install {
                    writer,
                    expected,
                    done,
                } => {
                    let result = self
                        .state
                        .finish_install(writer, expected)
                        .map(|meta| meta.index);
                    if let Ok(index) = result {
                        self.waiters.fail_through(index);
                        self.applied.send_replace(index);
                        let _ = self.events.send(Arc::new(WatchBatch {
                            first_index: index,
                            last_index: index,
                            revisions: Vec::new(),
                            reset: true,
                        }));
                    }
                    let _ = done.send(result);
                }
                ApplyMsg::Checkpoint => {
                    self.state.checkpoint()?;
                    let _ = self.inbox.send(Input::Checkpointed(self.state.applied().0));
                }
                ApplyMsg::Stop => break,
            }
        }
        self.state.checkpoint()
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), StateError> {
        let mut rest = &entries[..];
        while !rest.is_empty() {
            // Only the member that proposed an entry answers its reads.
            let results = self.state.apply(rest, |index| {
                if self.waiters.has(index) {
                    Reads::Answer
                } else {
                    Reads::Skip
                }
            })?;
            rest = &rest[results.len()..];
            self.publish(results);
        }
        if !self.cluster_recorded {
            self.record_cluster_id()?;
        }
        Ok(())
    }

    /// Answers the proposals of one applied batch and tells watchers.
    fn publish(&mut self, results: Vec<Applied>) {
        let (Some(first), Some(last)) = (results.first(), results.last()) else {
            return;
        };
        let (first_index, last_index) = (first.index, last.index);
        let mut revisions = Vec::new();
        let mut event_bytes = 0;
        for applied in results {
            if let Some((term, done)) = self.waiters.take(applied.index) {
                let answer = if term == applied.term {
                    Ok(WriteResult {
                        revision: applied.index,
                        output: applied.output,
                    })
                } else {
                    Err(Error::NotApplied("a new leader replaced the entry".into()))
                };
                let _ = done.send(answer);
            }
            if !applied.events.is_empty() {
                event_bytes += applied.events.iter().map(event_bytes_of).sum::<usize>();
                revisions.push((applied.index, applied.events));
            }
        }
        self.applied.send_replace(last_index);
        // Large changes are not copied to every watcher's queue: watchers
        // read them from the stored history, in bounded steps.
        let in_history = event_bytes > MAX_BROADCAST_EVENT_BYTES;
        let _ = self.events.send(Arc::new(WatchBatch {
            first_index,
            last_index,
            revisions: if in_history { Vec::new() } else { revisions },
            reset: in_history,
        }));
    }

    /// Copies the cluster id, once applied, into the identity record, so that
    /// a volume can be recognised as this cluster's.
    fn record_cluster_id(&mut self) -> Result<(), StateError> {
        let id = self.state.cluster_id();
        if id == 0 {
            return Ok(());
        }
        if let Some(mut identity) = self.state.identity()? {
            if identity.cluster_id != id {
                identity.cluster_id = id;
                self.state.set_identity(&identity)?;
            }
        }
        self.cluster_recorded = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proposal whose index is proposed again in a later term is answered
    /// "not applied" (safe to retry), not dropped (which reads as "the node
    /// stopped", an unknown outcome).
    #[test]
    fn a_replaced_proposal_is_answered_not_applied() {
        let waiters = Waiters::default();
        let (first, mut first_answer) = oneshot::channel();
        waiters.insert(7, 2, first);
        let (second, mut second_answer) = oneshot::channel();
        waiters.insert(7, 3, second);
        assert!(matches!(
            first_answer.try_recv(),
            Ok(Err(Error::NotApplied(_)))
        ));
        assert!(second_answer.try_recv().is_err(), "the new proposal waits");
        assert!(waiters.has(7));
    }
}
