//! The replication thread's side of the Ready loop: the write-ahead log,
//! the transport, the apply thread and the reads waiting for an index. The
//! order of the steps is the core's ([`RaftCore::handle_ready`]).

use std::collections::HashMap;
use std::sync::mpsc::Sender;

use tokio::sync::oneshot;

use super::{Fatal, ReplicationThread};
use crate::error::{Error, Result};
use crate::identity::PodName;
use crate::node::applier::ApplyMsg;
use crate::node::peers::Peers;
use crate::raft::{
    Entry, HardState, Index, Message, NodeId, RaftCore, ReadState, ReadyHandler, SnapshotMeta,
};
use crate::state::snapshot::SnapshotWriter;
use crate::storage::wal::Wal;

/// Linearizable reads waiting for the core's answer, by read id.
pub(super) type PendingReads = HashMap<u64, oneshot::Sender<Result<u64>>>;

/// A snapshot received in full, waiting for the core to accept it.
pub(super) type ReceivedSnapshot = (SnapshotWriter, oneshot::Sender<Result<()>>);

/// What the replication thread lends the core's Ready loop.
struct ReadyIo<'a> {
    wal: &'a mut Wal,
    peers: &'a dyn Peers,
    apply_tx: &'a Sender<ApplyMsg>,
    reads: &'a mut PendingReads,
    received_snapshot: &'a mut Option<ReceivedSnapshot>,
    name: &'a PodName,
    metrics: &'a crate::metrics::NodeMetrics,
    proposed: &'a mut super::ProposalTimes,
    snapshots_started: &'a mut HashMap<NodeId, std::time::Instant>,
}

impl ReadyHandler for ReadyIo<'_> {
    type Error = Fatal;

    fn persist(
        &mut self,
        core: &RaftCore,
        snapshot: Option<SnapshotMeta>,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> std::result::Result<(), Fatal> {
        match snapshot {
            Some(meta) => self.install_snapshot(core, meta, entries),
            None => Ok(self.wal.append(hard_state, None, entries)?),
        }
    }

    fn send(&mut self, messages: Vec<Message>) -> std::result::Result<(), Fatal> {
        for msg in messages {
            self.peers.send(msg);
        }
        Ok(())
    }

    fn send_snapshots(
        &mut self,
        core: &RaftCore,
        peers: Vec<NodeId>,
    ) -> std::result::Result<Vec<(NodeId, Option<Index>)>, Fatal> {
        for peer in peers {
            tracing::info!(peer, "follower needs a snapshot; sending one");
            self.snapshots_started
                .insert(peer, std::time::Instant::now());
            self.peers.send_snapshot(peer, core.term());
        }
        // The transfers end later, as `Input::SnapshotSent`.
        Ok(Vec::new())
    }

    fn apply(&mut self, committed: Vec<Entry>) -> std::result::Result<(), Fatal> {
        if let Some(last) = committed.last() {
            let now = std::time::Instant::now();
            for at in self.proposed.committed(last.index) {
                self.metrics
                    .proposal_commit
                    .observe((now - at).as_secs_f64());
            }
        }
        self.apply_tx
            .send(ApplyMsg::Entries(committed))
            .map_err(|_| Fatal::ApplierGone)
    }

    fn answer_reads(
        &mut self,
        core: &RaftCore,
        ready: Vec<ReadState>,
        dropped: Vec<u64>,
    ) -> std::result::Result<(), Fatal> {
        for rs in ready {
            if let Some(done) = self.reads.remove(&rs.id) {
                let _ = done.send(Ok(rs.index));
            }
        }
        for id in dropped {
            if let Some(done) = self.reads.remove(&id) {
                let _ = done.send(Err(Error::Unavailable {
                    reason: "leadership changed while confirming a read".into(),
                    leader: core.leader().map(|l| self.name.sibling(l).to_string()),
                }));
            }
        }
        Ok(())
    }
}

impl ReadyIo<'_> {
    /// The core accepted the snapshot received with this Ready: the apply
    /// thread installs it, and the log starts a fresh segment after it.
    fn install_snapshot(
        &mut self,
        core: &RaftCore,
        meta: SnapshotMeta,
        entries: &[Entry],
    ) -> std::result::Result<(), Fatal> {
        let (writer, done) = self.received_snapshot.take().ok_or_else(|| {
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
        self.wal.compact(core.hard_state(), meta, entries)?;
        self.metrics.snapshots_installed.inc();
        let _ = done.send(Ok(()));
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "installed a snapshot from the leader"
        );
        Ok(())
    }
}

impl ReplicationThread {
    /// Runs the core's Ready loop until it has nothing more to do.
    pub(super) fn drive_ready(&mut self) -> std::result::Result<(), Fatal> {
        let mut io = ReadyIo {
            wal: &mut self.wal,
            peers: &*self.peers,
            apply_tx: &self.apply_tx,
            reads: &mut self.reads,
            received_snapshot: &mut self.received_snapshot,
            name: &self.name,
            metrics: &self.metrics,
            proposed: &mut self.proposed,
            snapshots_started: &mut self.snapshots_started,
        };
        while self.core.handle_ready(&mut io)? {}
        // A snapshot the core did not want (it already had those entries).
        if let Some((writer, done)) = self.received_snapshot.take() {
            self.state.abort_install(writer)?;
            let _ = done.send(Ok(()));
        }
        Ok(())
    }
}
