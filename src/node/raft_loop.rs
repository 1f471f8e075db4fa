//! The replication thread: the one owner of the protocol core and the
//! write-ahead log.
//!
//! It waits for input or the next tick, feeds everything that is waiting into
//! the core (so concurrent proposals share one append), and then runs the
//! Ready loop in the order the core's documentation gives: persist (one
//! write, one fdatasync), advance, send, hand committed entries to the apply
//! thread, answer reads. Disk I/O blocks only this thread.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use super::applier::{ApplyMsg, Waiters};
use super::peers::Peers;
use super::{RaftStatus, WriteResult};
use crate::error::{Error, Result};
use crate::identity::NodeName;
use crate::raft::{Body, Message, NodeId, ProposeError, RaftNode, Role, TransferError};
use crate::state::command::{Bootstrap, Command, Op};
use crate::state::snapshot::SnapshotWriter;
use crate::state::KvState;
use crate::storage::wal::Wal;

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

struct PendingTransfer {
    to: NodeId,
    done: oneshot::Sender<Result<()>>,
    deadline: Instant,
}

/// The replication thread's state.
pub struct RaftLoop {
    pub core: RaftNode,
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
    reads: HashMap<u64, oneshot::Sender<Result<u64>>>,
    next_read: u64,
    pending_snapshot: Option<(SnapshotWriter, oneshot::Sender<Result<()>>)>,
    transfer: Option<PendingTransfer>,
    checkpoint_in_flight: bool,
    /// No new checkpoint before the log reaches this index (so a log that
    /// cannot shrink further is not checkpointed over and over).
    checkpoint_after: u64,
    compact_to: Option<u64>,
    bootstrap_term: u64,
    /// The id a new cluster takes, when the operator pinned one.
    pinned_cluster_id: Option<u64>,
    /// Send before persisting: a mutation, for the test that proves no
    /// message leaves before the sync it depends on.
    #[cfg(feature = "testing")]
    pub send_before_persist: bool,
    last_role: (Role, u64, Option<NodeId>),
    /// `raft{ordinal, term}`: every log line of this thread carries both.
    span: tracing::Span,
    /// This node's name (leader hints are given as pod names).
    name: NodeName,
    /// The node's span, parent of each term's span.
    parent_span: tracing::Span,
}

/// A follower heard from within this long keeps the entries it needs from
/// being compacted away (within four times the compaction limits).
const PROTECT_FOLLOWERS_HEARD_WITHIN: Duration = Duration::from_secs(30);

impl RaftLoop {
    /// Builds the loop; `run` starts it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: RaftNode,
        wal: Wal,
        inbox: Receiver<Input>,
        apply_tx: Sender<ApplyMsg>,
        peers: Arc<dyn Peers>,
        waiters: Arc<Waiters>,
        status_tx: watch::Sender<RaftStatus>,
        state: Arc<KvState>,
        tick: Duration,
        compaction: CompactionPolicy,
        name: NodeName,
    ) -> Self {
        let transfer_timeout = tick * core.config().election_ticks * 2;
        let last_role = (core.role(), core.term(), core.leader());
        let span = tracing::info_span!("raft", ordinal = core.id(), term = core.term());
        RaftLoop {
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
            reads: HashMap::new(),
            next_read: 1,
            pending_snapshot: None,
            transfer: None,
            checkpoint_in_flight: false,
            checkpoint_after: 0,
            compact_to: None,
            bootstrap_term: 0,
            pinned_cluster_id: None,
            #[cfg(feature = "testing")]
            send_before_persist: false,
            span,
            parent_span: tracing::Span::current(),
            name,
            last_role,
        }
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
            Input::Propose { data, done } => match self.core.propose(data) {
                Ok((index, term)) => self.waiters.insert(index, term, done),
                Err(ProposeError::NotLeader { leader }) => {
                    let _ = done.send(Err(Error::Unavailable {
                        reason: "not the leader".into(),
                        leader: self.leader_name(leader),
                    }));
                }
                Err(ProposeError::Transferring) => {
                    let _ = done.send(Err(Error::Unavailable {
                        reason: "leadership transfer in progress".into(),
                        leader: None,
                    }));
                }
            },
            Input::ReadIndex { done } => {
                let id = self.next_read;
                self.next_read += 1;
                self.reads.insert(id, done);
                self.core.read_index(id);
            }
            Input::Step(msg) => self.core.step(msg),
            Input::PeerDisconnected(peer) => self.core.peer_disconnected(peer),
            Input::SnapshotReceived { msg, writer, done } => {
                if !matches!(msg.body, Body::Snapshot { .. }) {
                    let _ = done.send(Err(Error::InvalidArgument("not a snapshot message".into())));
                    return Ok(true);
                }
                // One snapshot per Ready: the core's answer (install this
                // point, or not) then always concerns the data received
                // with it, whatever order the snapshots arrive in.
                if self.pending_snapshot.is_some() {
                    self.drive_ready()?;
                }
                self.pending_snapshot = Some((writer, done));
                self.core.step(msg);
            }
            Input::SnapshotSent { to, index } => self.core.snapshot_sent(to, index),
            Input::Transfer { to, done } => match self.core.transfer_leadership(to) {
                Ok(()) if self.core.leader() == Some(to) || to == self.core.id() => {
                    let _ = done.send(Ok(()));
                }
                Ok(()) => {
                    if let Some(old) = self.transfer.replace(PendingTransfer {
                        to,
                        done,
                        deadline: Instant::now() + self.transfer_timeout,
                    }) {
                        let _ = old.done.send(Err(Error::Unavailable {
                            reason: "superseded by another transfer".into(),
                            leader: None,
                        }));
                    }
                }
                Err(e) => {
                    let err = match e {
                        TransferError::NotLeader { leader } => Error::Unavailable {
                            reason: "not the leader".into(),
                            leader: self.leader_name(leader),
                        },
                        other => Error::InvalidArgument(other.to_string()),
                    };
                    let _ = done.send(Err(err));
                }
            },
            Input::Checkpointed(index) => {
                self.checkpoint_in_flight = false;
                self.compact_to = Some(index);
            }
            Input::Shutdown => return Ok(false),
        }
        Ok(true)
    }

    /// The Ready loop: persist, advance, send, apply, answer reads.
    fn drive_ready(&mut self) -> std::result::Result<(), Fatal> {
        while self.core.has_ready() {
            #[cfg_attr(not(feature = "testing"), allow(unused_mut))]
            let mut rd = self.core.take_ready();
            if let Some(meta) = rd.snapshot {
                let (writer, done) = self.pending_snapshot.take().ok_or_else(|| {
                    Fatal::Snapshot("the core installed a snapshot that never arrived".into())
                })?;
                let (tx, rx) = std::sync::mpsc::channel();
                self.apply_tx
                    .send(ApplyMsg::Install {
                        writer,
                        expected: meta,
                        done: tx,
                    })
                    .map_err(|_| Fatal::ApplierGone)?;
                let installed = rx.recv().map_err(|_| Fatal::ApplierGone)??;
                if installed != meta.index {
                    return Err(Fatal::Snapshot(format!(
                        "received data ends at {installed}, the leader announced {}",
                        meta.index
                    )));
                }
                // The old log is garbage now: start a fresh segment.
                self.wal
                    .compact(self.core.hard_state(), meta, &rd.entries)?;
                let _ = done.send(Ok(()));
                tracing::info!(
                    index = meta.index,
                    term = meta.term,
                    "installed a snapshot from the leader"
                );
            } else {
                #[cfg(feature = "testing")]
                if self.send_before_persist {
                    for msg in rd.messages.drain(..) {
                        self.peers.send(msg);
                    }
                }
                self.wal.append(rd.hard_state, None, &rd.entries)?;
            }
            self.core.advance();
            for msg in rd.messages {
                self.peers.send(msg);
            }
            for peer in rd.send_snapshots {
                tracing::info!(peer, "follower needs a snapshot; sending one");
                self.peers.send_snapshot(peer, self.core.term());
            }
            if !rd.committed.is_empty() {
                self.apply_tx
                    .send(ApplyMsg::Entries(rd.committed))
                    .map_err(|_| Fatal::ApplierGone)?;
            }
            for rs in rd.read_states {
                if let Some(done) = self.reads.remove(&rs.id) {
                    let _ = done.send(Ok(rs.index));
                }
            }
            for id in rd.dropped_reads {
                if let Some(done) = self.reads.remove(&id) {
                    let _ = done.send(Err(Error::Unavailable {
                        reason: "leadership changed while confirming a read".into(),
                        leader: self.leader_name(self.core.leader()),
                    }));
                }
            }
        }
        // A snapshot the core did not want (it already had those entries).
        if let Some((writer, done)) = self.pending_snapshot.take() {
            self.state.abort_install(writer)?;
            let _ = done.send(Ok(()));
        }
        Ok(())
    }

    /// Housekeeping after each round: role changes, the cluster's first
    /// entry, leadership transfers, compaction, status.
    fn after_ready(&mut self) -> std::result::Result<(), Fatal> {
        let now = (self.core.role(), self.core.term(), self.core.leader());
        if now != self.last_role {
            if now.1 != self.last_role.1 {
                self.span = tracing::info_span!(parent: &self.parent_span, "raft", ordinal = self.core.id(), term = now.1);
            }
            tracing::info!(term = now.1, role = ?now.0, leader = ?now.2, "replication role changed");
            self.last_role = now;
        }
        if self.core.role() == Role::Leader
            && self.state.cluster_id() == 0
            && self.bootstrap_term != self.core.term()
        {
            self.bootstrap_term = self.core.term();
            let cluster_id = self
                .pinned_cluster_id
                .unwrap_or_else(|| rand::random::<u64>() | 1);
            let data = Command::new(Op::Bootstrap(Bootstrap { cluster_id })).encode();
            if self.core.propose(data).is_ok() {
                tracing::info!(
                    cluster_id = format!("{cluster_id:016x}"),
                    "new cluster: proposing its id"
                );
            }
        }
        if let Some(t) = self.transfer.take() {
            if self.core.leader() == Some(t.to) {
                let _ = t.done.send(Ok(()));
            } else if Instant::now() >= t.deadline
                || (self.core.role() == Role::Leader && self.core.transferee().is_none())
            {
                let _ = t.done.send(Err(Error::Unavailable {
                    reason: format!("leadership did not move to {} in time", t.to),
                    leader: self.leader_name(self.core.leader()),
                }));
            } else {
                self.transfer = Some(t);
            }
        }
        if let Some(index) = self.compact_to.take() {
            let before = self.core.log().snapshot().index;
            let target = self.compaction_target(index);
            self.core.compact(target);
            let snapshot = self.core.log().snapshot();
            if snapshot.index > before
                || self.wal.active_len() > self.compaction.max_segment_bytes()
            {
                self.wal
                    .compact(self.core.hard_state(), snapshot, self.core.log().entries())?;
                tracing::debug!(index = snapshot.index, "compacted the log");
            }
        }
        let log = self.core.log();
        let too_big = log.entries().len() as u64 > self.compaction.max_entries
            || log.data_bytes() > self.compaction.max_bytes
            || self.wal.active_len() > self.compaction.max_segment_bytes();
        if too_big && !self.checkpoint_in_flight && log.last_index() >= self.checkpoint_after {
            self.checkpoint_in_flight = true;
            self.checkpoint_after = log.last_index() + (self.compaction.max_entries / 4).max(1);
            self.apply_tx
                .send(ApplyMsg::Checkpoint)
                .map_err(|_| Fatal::ApplierGone)?;
        }
        self.publish_status();
        Ok(())
    }

    /// The pod name of a leader hint.
    fn leader_name(&self, leader: Option<NodeId>) -> Option<String> {
        leader.map(|l| self.name.sibling(l).to_string())
    }

    /// Where to compact to, given the state is durable up to `applied`: keep
    /// `keep_entries`, and, on a leader, keep what a follower heard from in
    /// the last half minute still needs, so a pod that restarts catches up
    /// from the log instead of by snapshot. Past four times the limits the
    /// log is compacted regardless.
    fn compaction_target(&self, applied: u64) -> u64 {
        let log = self.core.log();
        // Keep at most `keep_entries` entries and half the byte limit of
        // entry data after the compaction point (large values would
        // otherwise keep gigabytes in memory).
        let mut kept_bytes = 0u64;
        let mut byte_bound = log.snapshot().index;
        for e in log.entries().iter().rev() {
            kept_bytes += e.data.len() as u64;
            if kept_bytes > self.compaction.max_bytes / 2 {
                byte_bound = e.index;
                break;
            }
        }
        let target = applied
            .saturating_sub(self.compaction.keep_entries)
            .max(byte_bound.min(applied));
        if self.core.role() != Role::Leader {
            return target;
        }
        let oversized = log.entries().len() as u64 > 4 * self.compaction.max_entries
            || log.data_bytes() > 4 * self.compaction.max_bytes;
        if oversized {
            return target;
        }
        let recent =
            (PROTECT_FOLLOWERS_HEARD_WITHIN.as_millis() / self.tick.as_millis().max(1)) as u32;
        (0..self.core.config().voters)
            .filter_map(|p| self.core.progress(p))
            .filter(|pr| pr.silent_ticks <= recent)
            .map(|pr| pr.match_index)
            .fold(target, u64::min)
    }

    fn publish_status(&self) {
        let status = RaftStatus::of(&self.core);
        self.status_tx.send_if_modified(|current| {
            if *current == status {
                false
            } else {
                *current = status;
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::applier::Applier;
    use crate::node::NoPeers;
    use crate::raft::NodeId;
    use crate::raft::{Config, Entry, EntryKind, HardState, Restored, SnapshotMeta, Voting};
    use crate::state::command::{Command, Op};
    use crate::state::snapshot::SnapshotWriter;
    use tokio::sync::broadcast;

    fn state_with(dir: &std::path::Path, last: u64) -> KvState {
        let state = KvState::open(dir, 8 << 20, 10_000).expect("open state");
        let entries: Vec<Entry> = (1..=last)
            .map(|index| Entry {
                index,
                term: 1,
                kind: EntryKind::Normal,
                data: Command::new(Op::Put(crate::proto::kv::PutRequest {
                    key: format!("k{index}").into(),
                    value: "v".into(),
                    prev_kv: false,
                }))
                .encode(),
            })
            .collect();
        state.apply_all(&entries).expect("apply");
        state
    }

    /// The snapshot of `source`, received into `target`.
    fn received(source: &KvState, target: &KvState) -> (SnapshotWriter, SnapshotMeta) {
        let frozen = source.freeze_snapshot().expect("freeze");
        let writer = target.begin_install().expect("begin");
        for chunk in frozen.chunks(1 << 16) {
            writer.write(chunk.expect("chunk")).expect("write");
        }
        (writer, frozen.meta)
    }

    /// A replication thread for member 1 of 3 (term 1, voting), driven by
    /// hand, over `wal`, with a real apply thread; drop the fixture to stop
    /// it.
    struct Fixture {
        raft: Option<RaftLoop>,
        state: Arc<KvState>,
        apply_tx: Sender<ApplyMsg>,
        apply_thread:
            Option<std::thread::JoinHandle<std::result::Result<(), crate::state::StateError>>>,
        _dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new(wal: Wal, peers: Arc<dyn Peers>) -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let state =
                Arc::new(KvState::open(&dir.path().join("state"), 8 << 20, 10_000).expect("open"));
            let restored = Restored {
                hard_state: HardState {
                    term: 1,
                    vote: None,
                    voting: Voting::Enabled,
                },
                ..Restored::fresh()
            };
            let core = RaftNode::new(Config::new(1, 3), restored, 1);
            let (inbox_tx, inbox_rx) = std::sync::mpsc::channel();
            let (apply_tx, apply_rx) = std::sync::mpsc::channel();
            let waiters = Arc::new(Waiters::default());
            let (status_tx, _status_rx) = watch::channel(RaftStatus::of(&core));
            let (applied_tx, _applied_rx) = watch::channel(0);
            let (events, _) = broadcast::channel(16);
            let applier = Applier {
                state: state.clone(),
                rx: apply_rx,
                inbox: inbox_tx,
                waiters: waiters.clone(),
                applied: applied_tx,
                events,
                cluster_recorded: true,
            };
            let apply_thread = std::thread::spawn(move || applier.run());
            let raft = RaftLoop::new(
                core,
                wal,
                inbox_rx,
                apply_tx.clone(),
                peers,
                waiters,
                status_tx,
                state.clone(),
                Duration::from_millis(10),
                CompactionPolicy {
                    max_entries: 1000,
                    max_bytes: 1 << 30,
                    keep_entries: 100,
                },
                NodeName::parse("kvstore-1").expect("name"),
            );
            Fixture {
                raft: Some(raft),
                state,
                apply_tx,
                apply_thread: Some(apply_thread),
                _dir: dir,
            }
        }

        fn raft(&mut self) -> &mut RaftLoop {
            self.raft.as_mut().expect("running")
        }

        /// Feeds one input and runs the Ready loop.
        fn step(&mut self, input: Input) {
            assert!(self.raft().handle(input).expect("not fatal"));
            self.raft().drive_ready().expect("not fatal");
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            self.raft = None;
            let _ = self.apply_tx.send(ApplyMsg::Stop);
            if let Some(t) = self.apply_thread.take() {
                let _ = t.join();
            }
        }
    }

    /// Two snapshots arriving in one batch, the higher first: the lower one
    /// is an ordinary rejected snapshot, not a fatal mismatch, and the
    /// higher one is installed.
    #[test]
    fn a_lower_snapshot_after_a_higher_one_in_one_batch_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let high = state_with(&dir.path().join("high"), 100);
        let low = state_with(&dir.path().join("low"), 90);
        let (wal, _) = Wal::open(&dir.path().join("wal")).expect("wal");
        let mut fixture = Fixture::new(wal, Arc::new(NoPeers));
        let state = fixture.state.clone();
        let raft = fixture.raft();
        let mut answers = Vec::new();
        for source in [&high, &low] {
            let (writer, meta) = received(source, &state);
            let (done, answer) = oneshot::channel();
            let msg = Message {
                from: 0,
                to: 1,
                term: 1,
                body: Body::Snapshot { meta },
            };
            assert!(raft
                .handle(Input::SnapshotReceived { msg, writer, done })
                .expect("not fatal"));
            answers.push(answer);
        }
        raft.drive_ready().expect("not fatal");
        assert_eq!(
            state.applied(),
            (100, 1),
            "the higher snapshot is the state"
        );
        for mut answer in answers {
            assert!(matches!(answer.try_recv(), Ok(Ok(()))));
        }
    }

    /// A transport that checks, as each message leaves, that what the
    /// message promises is already durable: replaying what the simulated
    /// disk would keep through a power loss at that instant.
    struct DurabilityCheck {
        fs: crate::storage::sim_fs::SimFs,
        sent: std::sync::Mutex<Vec<String>>,
        broken: std::sync::Mutex<Vec<String>>,
    }

    impl DurabilityCheck {
        fn durable(&self) -> crate::storage::wal::WalState {
            let copy = self.fs.durable_copy();
            Wal::open_on(Arc::new(copy), std::path::Path::new("/wal"))
                .expect("replay the durable log")
                .1
        }
    }

    impl Peers for DurabilityCheck {
        fn send(&self, msg: Message) {
            let durable = self.durable();
            let hs = durable.hard_state;
            let last = durable.snapshot.index + durable.entries.len() as u64;
            let problem = match &msg.body {
                Body::VoteResponse { granted: true } => (hs.term < msg.term
                    || (hs.term == msg.term && hs.vote != Some(msg.to)))
                    .then(|| format!("a vote for {} in term {} left while the disk held {hs:?}", msg.to, msg.term)),
                Body::AppendResponse {
                    result: crate::raft::AppendResult::Accepted { match_index },
                    ..
                } => (last < *match_index).then(|| {
                    format!("an acknowledgement of {match_index} left while the disk held entries to {last}")
                }),
                _ => None,
            };
            self.sent
                .lock()
                .expect("lock")
                .push(format!("{:?}", msg.body));
            if let Some(p) = problem {
                self.broken.lock().expect("lock").push(p);
            }
        }
        fn send_snapshot(&self, _to: NodeId, _term: u64) {}
        fn forward_write(
            &self,
            _leader: NodeId,
            _command: Bytes,
        ) -> futures::future::BoxFuture<'static, Result<crate::node::WriteResult>> {
            Box::pin(async { Err(Error::NoLeader) })
        }
        fn forward_read_index(
            &self,
            _leader: NodeId,
        ) -> futures::future::BoxFuture<'static, Result<u64>> {
            Box::pin(async { Err(Error::NoLeader) })
        }
        fn forward_transfer(
            &self,
            _leader: NodeId,
            _to: NodeId,
        ) -> futures::future::BoxFuture<'static, Result<()>> {
            Box::pin(async { Err(Error::NoLeader) })
        }
    }

    /// Runs a follower through a vote and appends over a simulated disk,
    /// checking each message as it leaves; returns what the check found.
    fn votes_and_appends(send_before_persist: bool) -> (Vec<String>, Vec<String>) {
        let fs = crate::storage::sim_fs::SimFs::new();
        let (wal, _) =
            Wal::open_on(Arc::new(fs.clone()), std::path::Path::new("/wal")).expect("wal");
        let check = Arc::new(DurabilityCheck {
            fs,
            sent: Default::default(),
            broken: Default::default(),
        });
        let mut fixture = Fixture::new(wal, check.clone());
        fixture.raft().send_before_persist = send_before_persist;
        let from_leader = |term, body| {
            Input::Step(Message {
                from: 0,
                to: 1,
                term,
                body,
            })
        };
        fixture.step(from_leader(
            2,
            Body::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
        ));
        let mut prev = 0;
        for batch in 0..5u64 {
            let entries: Vec<Entry> = (prev + 1..=prev + 3)
                .map(|index| Entry {
                    index,
                    term: 2,
                    kind: if index == 1 {
                        EntryKind::Noop
                    } else {
                        EntryKind::Normal
                    },
                    data: if index == 1 {
                        Bytes::new()
                    } else {
                        Command::new(Op::Put(crate::proto::kv::PutRequest {
                            key: format!("k{index}").into(),
                            value: "v".into(),
                            prev_kv: false,
                        }))
                        .encode()
                    },
                })
                .collect();
            fixture.step(from_leader(
                2,
                Body::Append {
                    prev_index: prev,
                    prev_term: if prev == 0 { 0 } else { 2 },
                    entries,
                    commit: batch * 3,
                },
            ));
            prev += 3;
        }
        let sent = check.sent.lock().expect("lock").clone();
        let broken = check.broken.lock().expect("lock").clone();
        (sent, broken)
    }

    /// The real Ready loop persists before it sends: a granted vote leaves
    /// only once the vote is durable, an acknowledgement of entries only
    /// once they are; with the order reversed, the check sees it.
    #[test]
    fn no_message_leaves_before_the_sync_it_depends_on() {
        let (sent, broken) = votes_and_appends(false);
        assert!(broken.is_empty(), "{broken:?}");
        assert!(
            sent.iter()
                .any(|m| m.contains("VoteResponse { granted: true }")),
            "{sent:?}"
        );
        assert_eq!(
            sent.iter().filter(|m| m.contains("Accepted")).count(),
            5,
            "{sent:?}"
        );
        let (_, broken) = votes_and_appends(true);
        assert!(
            broken.len() >= 6,
            "sending before persisting must be caught: {broken:?}"
        );
    }
}
