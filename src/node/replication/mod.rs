//! The replication thread: the one owner of the protocol core and the
//! write-ahead log.
//!
//! It waits for input or the next tick, feeds everything that is waiting into
//! the core (so concurrent proposals share one append), and then runs the
//! Ready loop in the order the core's documentation gives: persist (one
//! write, one fdatasync), advance, send, hand committed entries to the apply
//! thread, answer reads. Disk I/O blocks only this thread.

mod housekeeping;
mod malformed;
mod ready;
#[cfg(test)]
mod tests;

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use super::applier::{ApplyMsg, Waiters};
use super::peers::Peers;
use super::{RaftStatus, WriteResult};
use crate::error::{Error, Result};
use crate::identity::PodName;
use crate::raft::{Body, Message, NodeId, ProposeError, RaftCore, TransferError};
use crate::state::snapshot::SnapshotWriter;
use crate::state::KvState;
use crate::storage::wal::Wal;
use housekeeping::Leadership;
use malformed::MalformedLog;
use ready::{PendingReads, ReceivedSnapshot};

/// Input to the replication thread.
pub enum Input {
    /// Propose an encoded command; `done` gets its result once applied.
    Propose {
        data: Bytes,
        done: oneshot::Sender<Result<WriteResult>>,
    },
    /// Ask for a linearizable read index (leader only).
    ReadIndex { done: oneshot::Sender<Result<u64>> },
    /// A message from a peer.
    Step(Message),
    /// The connection to a peer was reset or refused.
    PeerDisconnected(NodeId),
    /// A snapshot from the leader has arrived in full; `msg` is its
    /// `Body::Snapshot` message.
    SnapshotReceived {
        msg: Message,
        writer: SnapshotWriter,
        done: oneshot::Sender<Result<()>>,
    },
    /// Sending a snapshot to `to` finished (`Some(index)`) or failed.
    SnapshotSent { to: NodeId, index: Option<u64> },
    /// Hand leadership to `to`; `done` answers once it has moved.
    Transfer {
        to: NodeId,
        done: oneshot::Sender<Result<()>>,
    },
    /// The apply thread made the state durable up to this index.
    Checkpointed(u64),
    /// Stop after making everything durable.
    Shutdown,
}

/// When to compact the log.
#[derive(Clone, Copy, Debug)]
pub struct CompactionPolicy {
    /// Compact when the log holds more entries than this.
    pub max_entries: u64,
    /// ...or more bytes of entry data than this.
    pub max_bytes: u64,
    /// Entries to keep after the compaction point, for followers that are a
    /// little behind.
    pub keep_entries: u64,
}

impl CompactionPolicy {
    /// The byte size of a write-ahead segment beyond which the log is
    /// rewritten even if it holds few entries (truncations and hard-state
    /// records).
    pub fn max_segment_bytes(&self) -> u64 {
        4 * self.max_bytes
    }

    /// The policy scaled down to a space quota: the log (and its segment)
    /// stays a small part of what the volume may hold.
    pub fn within_quota(self, quota: u64) -> Self {
        CompactionPolicy {
            max_bytes: self.max_bytes.min((quota / 16).max(64 << 10)),
            ..self
        }
    }
}

/// A fatal failure of the replication thread: the node must stop.
#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    /// The log could not be made durable.
    #[error(transparent)]
    Wal(#[from] crate::storage::wal::WalError),
    /// The applied state failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// The apply thread is gone.
    #[error("the apply thread stopped unexpectedly")]
    ApplierGone,
    /// A snapshot arrived that does not match what the leader announced.
    #[error("snapshot mismatch: {0}")]
    Snapshot(String),
}

/// The times proposals entered the leader's log, oldest first, bounded so
/// that a leader without a quorum does not collect them without end.
#[derive(Default)]
struct ProposalTimes(std::collections::VecDeque<(u64, Instant)>);

impl ProposalTimes {
    /// The most proposals remembered; older ones go unmeasured.
    const MAX: usize = 1 << 16;

    fn proposed(&mut self, index: u64, at: Instant) {
        // An index not above the last one: this member lost the lead and
        // leads again, and the entries it remembered may never commit.
        if self.0.back().is_some_and(|&(last, _)| last >= index) {
            self.0.clear();
        }
        if self.0.len() == Self::MAX {
            self.0.pop_front();
        }
        self.0.push_back((index, at));
    }

    /// The proposals committed through `index`, with when they entered.
    fn committed(&mut self, index: u64) -> impl Iterator<Item = Instant> + '_ {
        let n = self.0.partition_point(|&(i, _)| i <= index);
        self.0.drain(..n).map(|(_, at)| at)
    }
}

struct PendingTransfer {
    to: NodeId,
    done: oneshot::Sender<Result<()>>,
    deadline: Instant,
}

/// The replication thread's state.
pub struct ReplicationThread {
    pub core: RaftCore,
    pub wal: Wal,
    pub inbox: Receiver<Input>,
    pub apply_tx: Sender<ApplyMsg>,
    pub peers: Arc<dyn Peers>,
    pub waiters: Arc<Waiters>,
    pub status_tx: watch::Sender<RaftStatus>,
    pub state: Arc<KvState>,
    pub tick: Duration,
    pub compaction: CompactionPolicy,
    /// The transfer deadline, as a wall-clock bound.
    pub transfer_timeout: Duration,
    reads: PendingReads,
    next_read: u64,
    /// A snapshot received in full, for the core's next Ready to accept.
    received_snapshot: Option<ReceivedSnapshot>,
    transfer: Option<PendingTransfer>,
    checkpoint_in_flight: bool,
    /// No new checkpoint before the log reaches this index or holds this
    /// many bytes of entry data (so a log that cannot shrink further is not
    /// checkpointed over and over, and one of large entries still is).
    checkpoint_after: u64,
    checkpoint_after_bytes: u64,
    compact_to: Option<u64>,
    bootstrap_term: u64,
    /// The id a new cluster takes, when the operator pinned one.
    pinned_cluster_id: Option<u64>,
    /// Who leads, as last logged.
    leadership: Leadership,
    /// `raft{ordinal, term}`: every log line of this thread carries both.
    span: tracing::Span,
    /// This node's name (leader hints are given as pod names).
    name: PodName,
    /// The node's span, parent of each term's span.
    parent_span: tracing::Span,
    /// The peer messages the core refused, for rate-limited warnings.
    malformed: MalformedLog,
    /// What the thread measures.
    metrics: Arc<crate::metrics::NodeMetrics>,
    /// On the leader, when each proposal still uncommitted entered the log
    /// (index order), for the proposal-to-commit latency.
    proposed: ProposalTimes,
    /// When each snapshot transfer in flight began, by follower.
    snapshots_started: std::collections::HashMap<NodeId, Instant>,
}

impl ReplicationThread {
    /// Builds the loop; `run` starts it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: RaftCore,
        wal: Wal,
        inbox: Receiver<Input>,
        apply_tx: Sender<ApplyMsg>,
        peers: Arc<dyn Peers>,
        waiters: Arc<Waiters>,
        status_tx: watch::Sender<RaftStatus>,
        state: Arc<KvState>,
        tick: Duration,
        compaction: CompactionPolicy,
        name: PodName,
    ) -> Self {
        let transfer_timeout = tick * core.config().election_ticks * 2;
        let leadership = Leadership::of(&core);
        let span = tracing::info_span!("raft", ordinal = core.id(), term = core.term());
        ReplicationThread {
            core,
            wal,
            inbox,
            apply_tx,
            peers,
            waiters,
            status_tx,
            state,
            tick,
            compaction,
            transfer_timeout,
            reads: PendingReads::new(),
            next_read: 1,
            received_snapshot: None,
            transfer: None,
            checkpoint_in_flight: false,
            checkpoint_after: 0,
            checkpoint_after_bytes: 0,
            compact_to: None,
            bootstrap_term: 0,
            pinned_cluster_id: None,
            span,
            parent_span: tracing::Span::current(),
            name,
            leadership,
            malformed: MalformedLog::default(),
            metrics: Arc::default(),
            proposed: ProposalTimes::default(),
            snapshots_started: std::collections::HashMap::new(),
        }
    }

    /// Measures into `metrics` (by default into a set nobody reads).
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::NodeMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// A new cluster takes `id` (when given) instead of a random id.
    pub fn with_cluster_id(mut self, id: Option<u64>) -> Self {
        self.pinned_cluster_id = id;
        self
    }

    /// Runs until shutdown or a fatal error. On the way out everything is
    /// made durable and the apply thread is stopped.
    pub fn run(mut self) -> std::result::Result<(), Fatal> {
        let result = self.run_inner();
        // Whatever happened, let the apply thread finish what it has and
        // make it durable.
        let _ = self.apply_tx.send(ApplyMsg::Stop);
        for (_, done) in self.reads.drain() {
            let _ = done.send(Err(Error::ShuttingDown));
        }
        if let Some(t) = self.transfer.take() {
            let _ = t.done.send(Err(Error::ShuttingDown));
        }
        result
    }

    fn run_inner(&mut self) -> std::result::Result<(), Fatal> {
        let mut next_tick = Instant::now() + self.tick;
        self.publish_status();
        loop {
            let span = self.span.clone();
            let _entered = span.enter();
            let wait = next_tick.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(wait) {
                Ok(input) => {
                    if !self.handle(input)? {
                        return self.drive_ready();
                    }
                    // Everything already waiting goes into the same Ready:
                    // one append, one fsync, one message per follower.
                    for _ in 0..4096 {
                        match self.inbox.try_recv() {
                            Ok(input) => {
                                if !self.handle(input)? {
                                    return self.drive_ready();
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self.drive_ready(),
            }
            let now = Instant::now();
            if now >= next_tick {
                self.core.tick();
                next_tick += self.tick;
                if next_tick < now {
                    // Fell behind (a slow disk): do not burst ticks.
                    next_tick = now + self.tick;
                }
            }
            self.drive_ready()?;
            self.after_ready()?;
        }
    }

    /// Feeds one input to the core. Returns false on shutdown.
    fn handle(&mut self, input: Input) -> std::result::Result<bool, Fatal> {
        match input {
            Input::Propose { data, done } => self.propose(data, done),
            Input::ReadIndex { done } => {
                let id = self.next_read;
                self.next_read += 1;
                self.reads.insert(id, done);
                self.core.read_index(id);
            }
            Input::Step(msg) => {
                let from = msg.from;
                if let Err(why) = self.core.try_step(msg) {
                    self.malformed.dropped(from, &why, Instant::now());
                }
            }
            Input::PeerDisconnected(peer) => self.core.peer_disconnected(peer),
            Input::SnapshotReceived { msg, writer, done } => {
                if !matches!(msg.body, Body::Snapshot { .. }) {
                    let _ = done.send(Err(Error::InvalidArgument("not a snapshot message".into())));
                    return Ok(true);
                }
                // One snapshot per Ready: the core's answer (install this
                // point, or not) then always concerns the data received
                // with it, whatever order the snapshots arrive in.
                if self.received_snapshot.is_some() {
                    self.drive_ready()?;
                }
                let from = msg.from;
                if let Err(why) = self.core.try_step(msg) {
                    // Refused before it changed anything: the data that
                    // arrived is dropped, and the sender hears why.
                    self.malformed.dropped(from, &why, Instant::now());
                    self.state.abort_install(writer)?;
                    let _ = done.send(Err(Error::InvalidArgument(format!(
                        "malformed snapshot message: {why}"
                    ))));
                    return Ok(true);
                }
                self.received_snapshot = Some((writer, done));
            }
            Input::SnapshotSent { to, index } => {
                let took = self.snapshots_started.remove(&to).map(|t| t.elapsed());
                self.metrics.snapshot_sent(index.is_some(), took);
                self.core.snapshot_sent(to, index)
            }
            Input::Transfer { to, done } => self.transfer(to, done),
            Input::Checkpointed(index) => {
                self.checkpoint_in_flight = false;
                self.compact_to = Some(index);
            }
            Input::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    /// Appends a membership change; `done` gets its index once applied.
    fn change_membership(
        &mut self,
        change: crate::raft::MembershipChange,
        done: oneshot::Sender<Result<WriteResult>>,
    ) {
        use crate::raft::MembershipError as E;
        match self.core.propose_membership_change(change) {
            Ok((index, term)) => {
                tracing::info!(%change, index, "membership change appended");
                self.waiters.insert(index, term, done)
            }
            Err(E::NotLeader { leader }) => {
                let _ = done.send(Err(Error::not_leader(self.leader_name(leader))));
            }
            // Certainly not appended, and soon possible: retried.
            Err(e @ (E::Transferring | E::LeaderNotSettled)) => {
                let _ = done.send(Err(Error::Unavailable {
                    reason: e.to_string(),
                    leader: None,
                }));
            }
            Err(e @ (E::NotMember(_) | E::NotLearner(_))) => {
                let _ = done.send(Err(Error::NotMember(format!("{change}: {e}"))));
            }
            Err(e) => {
                let _ = done.send(Err(Error::FailedPrecondition(format!("{change}: {e}"))));
            }
        }
    }

    /// Proposes a write; `done` gets its result once applied.
    fn propose(&mut self, data: Bytes, done: oneshot::Sender<Result<WriteResult>>) {
        if let Some(change) = crate::state::command::MemberChange::decode_change(&data) {
            return self.change_membership(change, done);
        }
        match self.core.propose(data) {
            Ok((index, term)) => {
                self.proposed.proposed(index, Instant::now());
                self.waiters.insert(index, term, done)
            }
            Err(ProposeError::NotLeader { leader }) => {
                let _ = done.send(Err(Error::not_leader(self.leader_name(leader))));
            }
            Err(ProposeError::Transferring) => {
                let _ = done.send(Err(Error::Unavailable {
                    reason: "leadership transfer in progress".into(),
                    leader: None,
                }));
            }
        }
    }

    /// Starts handing leadership to `to`; `done` answers once it moved
    /// (see `settle_transfer`).
    fn transfer(&mut self, to: NodeId, done: oneshot::Sender<Result<()>>) {
        match self.core.transfer_leadership(to) {
            Ok(()) if self.core.leader() == Some(to) || to == self.core.id() => {
                let _ = done.send(Ok(()));
            }
            Ok(()) => {
                let deadline = Instant::now() + self.transfer_timeout;
                let pending = PendingTransfer { to, done, deadline };
                if let Some(old) = self.transfer.replace(pending) {
                    let _ = old.done.send(Err(Error::Unavailable {
                        reason: "superseded by another transfer".into(),
                        leader: None,
                    }));
                }
            }
            Err(TransferError::NotLeader { leader }) => {
                let _ = done.send(Err(Error::not_leader(self.leader_name(leader))));
            }
            Err(other) => {
                let _ = done.send(Err(Error::InvalidArgument(other.to_string())));
            }
        }
    }

    /// The pod name of a leader hint.
    fn leader_name(&self, leader: Option<NodeId>) -> Option<String> {
        leader.map(|l| self.name.sibling(l).to_string())
    }
}
