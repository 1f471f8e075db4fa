//! What the replication thread does after each round of the Ready loop:
//! log role changes, give a new cluster its id, settle leadership
//! transfers, compact the log and ask for checkpoints, publish status.

use std::time::{Duration, Instant};

use super::{Fatal, ReplicationThread};
use crate::error::Error;
use crate::node::applier::ApplyMsg;
use crate::node::RaftStatus;
use crate::raft::{NodeId, RaftCore, Role, Term};
use crate::state::command::{Bootstrap, Command, Op};

/// A follower heard from within this long keeps the entries it needs from
/// being compacted away (within four times the compaction limits).
const PROTECT_FOLLOWERS_HEARD_WITHIN: Duration = Duration::from_secs(30);

/// Who leads, as this member last logged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Leadership {
    pub(super) role: Role,
    pub(super) term: Term,
    pub(super) leader: Option<NodeId>,
}

impl Leadership {
    pub(super) fn of(core: &RaftCore) -> Self {
        Leadership {
            role: core.role(),
            term: core.term(),
            leader: core.leader(),
        }
    }
}

impl ReplicationThread {
    /// Housekeeping after each round.
    pub(super) fn after_ready(&mut self) -> std::result::Result<(), Fatal> {
        self.note_leadership();
        self.propose_cluster_id();
        self.settle_transfer();
        self.compact_to_checkpoint()?;
        self.checkpoint_when_log_too_big()?;
        self.publish_status();
        Ok(())
    }

    /// Logs a change of role, term or leader; a new term gets a new span.
    fn note_leadership(&mut self) {
        let now = Leadership::of(&self.core);
        if now == self.leadership {
            return;
        }
        if now.term != self.leadership.term {
            self.span = tracing::info_span!(parent: &self.parent_span, "raft", ordinal = self.core.id(), term = now.term);
        }
        tracing::info!(term = now.term, role = ?now.role, leader = ?now.leader, "replication role changed");
        self.leadership = now;
    }

    /// The first leader of a new cluster proposes its id (once per term).
    fn propose_cluster_id(&mut self) {
        if self.core.role() != Role::Leader
            || self.state.cluster_id() != 0
            || self.bootstrap_term == self.core.term()
        {
            return;
        }
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

    /// Answers a leadership transfer once leadership moved, or once it
    /// cannot any more (the deadline passed, or the core gave up).
    fn settle_transfer(&mut self) {
        let Some(t) = self.transfer.take() else {
            return;
        };
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

    /// The apply thread made the state durable: drop the log before it
    /// (and rewrite the log's segment when it has grown past its bound).
    fn compact_to_checkpoint(&mut self) -> std::result::Result<(), Fatal> {
        let Some(index) = self.compact_to.take() else {
            return Ok(());
        };
        let before = self.core.log().snapshot().index;
        let target = self.compaction_target(index);
        self.core.compact(target);
        // The next checkpoint waits for the log to grow from what is left.
        self.checkpoint_after_bytes =
            self.core.log().data_bytes() + (self.compaction.max_bytes / 4).max(1);
        let snapshot = self.core.log().snapshot();
        if snapshot.index > before || self.wal.active_len() > self.compaction.max_segment_bytes() {
            self.wal
                .compact(self.core.hard_state(), snapshot, self.core.log().entries())?;
            tracing::debug!(index = snapshot.index, "compacted the log");
        }
        Ok(())
    }

    /// Asks the apply thread for a checkpoint when the log has grown past
    /// its limits (one at a time, and not again before the log has grown).
    fn checkpoint_when_log_too_big(&mut self) -> std::result::Result<(), Fatal> {
        let log = self.core.log();
        let too_big = log.entries().len() as u64 > self.compaction.max_entries
            || log.data_bytes() > self.compaction.max_bytes
            || self.wal.active_len() > self.compaction.max_segment_bytes();
        let grown = log.last_index() >= self.checkpoint_after
            || log.data_bytes() >= self.checkpoint_after_bytes;
        if too_big && !self.checkpoint_in_flight && grown {
            self.checkpoint_in_flight = true;
            self.checkpoint_after = log.last_index() + (self.compaction.max_entries / 4).max(1);
            self.checkpoint_after_bytes = log.data_bytes() + (self.compaction.max_bytes / 4).max(1);
            self.apply_tx
                .send(ApplyMsg::Checkpoint)
                .map_err(|_| Fatal::ApplierGone)?;
        }
        Ok(())
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
        self.core
            .membership()
            .members()
            .filter_map(|p| self.core.progress(p))
            .filter(|pr| pr.silent_ticks <= recent)
            .map(|pr| pr.match_index)
            .fold(target, u64::min)
    }

    /// Publishes the core's status when it changed.
    pub(super) fn publish_status(&self) {
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
