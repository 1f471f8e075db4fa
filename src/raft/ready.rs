//! The Ready loop: what the core hands its driver, and the one order in
//! which every driver handles it (module documentation of [`crate::raft`],
//! "The Ready loop"). The server's replication thread and the simulation
//! both drive the core through [`RaftCore::handle_ready`], so the order the
//! durability rule needs is written once.

use super::core::{RaftCore, RoleState};
use super::mutations::mutated;
use super::types::*;

/// The driver's side of the Ready loop: each method is one step, and
/// [`RaftCore::handle_ready`] calls them in the order the durability rule
/// needs.
pub trait ReadyHandler {
    /// Why a step failed; the loop stops at the first failure.
    type Error;

    /// Step 1: make durable, ending in an fsync, the snapshot the leader
    /// sent (installed first: it replaces the log up to its index), then the
    /// hard state (when it changed) and the entries. `core` is the member as
    /// it is after the Ready was taken.
    fn persist(
        &mut self,
        core: &RaftCore,
        snapshot: Option<SnapshotMeta>,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), Self::Error>;

    /// Steps 0 and 3 (step 2 is the core's `advance`): send the messages.
    /// At step 0 only a leader's appends and heartbeats, which promise
    /// nothing; at step 3 the rest, every promise in which (a vote, an
    /// acknowledged entry) is durable by then.
    fn send(&mut self, messages: Vec<Message>) -> Result<(), Self::Error>;

    /// Step 4: start a snapshot transfer to each of `peers`, taken at the
    /// state machine's applied index. Returns the transfers that already
    /// ended (peer, `Some(index)` sent or `None` failed); a driver whose
    /// transfers end later reports them through
    /// [`RaftCore::snapshot_sent`].
    fn send_snapshots(
        &mut self,
        core: &RaftCore,
        peers: Vec<NodeId>,
    ) -> Result<Vec<(NodeId, Option<Index>)>, Self::Error>;

    /// Step 5: apply the committed entries, in index order.
    fn apply(&mut self, committed: Vec<Entry>) -> Result<(), Self::Error>;

    /// Step 6: answer the reads that are ready (served once their index is
    /// applied) and those that cannot be confirmed here any more.
    fn answer_reads(
        &mut self,
        core: &RaftCore,
        ready: Vec<ReadState>,
        dropped: Vec<u64>,
    ) -> Result<(), Self::Error>;
}

impl RaftCore {
    /// Takes one Ready, if there is one, and has `handler` carry it out in
    /// order: a leader's own requests, persist, advance, the other messages,
    /// snapshots, apply, reads. Returns whether there was one; drivers call
    /// it until it returns false.
    pub fn handle_ready<H: ReadyHandler>(&mut self, handler: &mut H) -> Result<bool, H::Error> {
        if !self.has_ready() {
            return Ok(false);
        }
        let mut rd = self.take_ready();
        let early = if mutated!(self, SendBeforePersist) {
            std::mem::take(&mut rd.messages)
        } else {
            self.take_leader_requests(&mut rd.messages)
        };
        if !early.is_empty() {
            handler.send(early)?;
        }
        handler.persist(self, rd.snapshot, rd.hard_state, &rd.entries)?;
        self.advance();
        handler.send(rd.messages)?;
        if !rd.send_snapshots.is_empty() {
            for (peer, sent) in handler.send_snapshots(self, rd.send_snapshots)? {
                self.snapshot_sent(peer, sent);
            }
        }
        if !rd.committed.is_empty() {
            handler.apply(rd.committed)?;
        }
        if !rd.read_states.is_empty() || !rd.dropped_reads.is_empty() {
            handler.answer_reads(self, rd.read_states, rd.dropped_reads)?;
        }
        Ok(true)
    }

    /// Takes out of `messages` the leader's own requests of its current term
    /// (appends and heartbeats), which may go out before this Ready is
    /// persisted: they promise nothing on the leader's behalf, and the leader
    /// counts its own log towards a commit only once `advance` says it is
    /// durable (thesis §10.2.1). The leader's fsync then runs while the
    /// followers write theirs, instead of before. Every other message (a
    /// vote, an acknowledgement, a campaign) waits for the fsync.
    fn take_leader_requests(&self, messages: &mut Vec<Message>) -> Vec<Message> {
        if !matches!(self.role, RoleState::Leader(_)) {
            return Vec::new();
        }
        let term = self.term;
        let (early, late): (Vec<Message>, Vec<Message>) =
            std::mem::take(messages).into_iter().partition(|m| {
                m.term == term && matches!(m.body, Body::Append { .. } | Body::Heartbeat { .. })
            });
        *messages = late;
        early
    }

    /// Collects what the driver must do now. Call [`RaftCore::advance`] once
    /// the hard state, snapshot and entries in it are durable.
    pub fn take_ready(&mut self) -> Ready {
        assert!(
            self.unadvanced_stable.is_none(),
            "take_ready called again before advance"
        );
        self.flush_leader_output();
        let hs = self.hard_state();
        let hard_state = (hs != self.last_hard_state).then_some(hs);
        self.last_hard_state = hs;
        let snapshot = self.log.take_pending_snapshot();
        let entries = self.log.unstable_entries();
        let stable_to = entries
            .last()
            .map(|e| e.index)
            .or(snapshot.map(|s| s.index));
        if let Some(index) = stable_to {
            self.unadvanced_stable = Some(index);
        }
        Ready {
            hard_state,
            snapshot,
            entries,
            messages: std::mem::take(&mut self.out.msgs),
            send_snapshots: std::mem::take(&mut self.out.send_snapshots),
            committed: self.log.take_committed(),
            read_states: std::mem::take(&mut self.out.read_states),
            dropped_reads: std::mem::take(&mut self.out.dropped_reads),
        }
    }

    /// The last Ready's hard state, snapshot and entries are durable.
    pub fn advance(&mut self) {
        if let Some(index) = self.unadvanced_stable.take() {
            self.log.stable_to(index);
        }
        self.maybe_commit();
    }

    /// Whether `take_ready` would return anything.
    pub fn has_ready(&self) -> bool {
        let leader_work = match &self.role {
            RoleState::Leader(l) => l.has_work(&self.log, self.term),
            _ => false,
        };
        self.hard_state() != self.last_hard_state
            || !self.out.msgs.is_empty()
            || !self.out.send_snapshots.is_empty()
            || !self.out.read_states.is_empty()
            || !self.out.dropped_reads.is_empty()
            || self.log.last_index() > self.log.stable()
            || self.log.commit() > self.log.handed_out()
            || leader_work
    }
}
