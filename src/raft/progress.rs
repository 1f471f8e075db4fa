//! What a leader knows of each follower's log, and the flow control of
//! appends to it.

use std::collections::VecDeque;

use super::types::Index;

/// How the leader is sending to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Looking for the point where the logs agree: one append at a time.
    Probe {
        /// An append is out and unanswered.
        paused: bool,
    },
    /// The logs agree up to `match_index`: appends are pipelined.
    Replicate,
    /// The follower needs entries that are compacted away; a snapshot is being
    /// sent.
    Snapshot,
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to be replicated on the follower.
    pub match_index: Index,
    /// The next index to send.
    pub next_index: Index,
    /// How appends are being sent.
    pub state: ReplicationState,
    /// The last index of each append in flight (Replicate state).
    inflight: VecDeque<Index>,
    /// Whether the follower answered since the last quorum check.
    pub recent_active: bool,
    /// Ticks since the follower last accepted an append while appends were
    /// in flight; used to notice lost appends.
    pub stalled_ticks: u32,
    /// Ticks since the follower last answered anything.
    pub silent_ticks: u32,
    /// The commit index last sent to the follower.
    pub sent_commit: Index,
    /// Whether the follower reports that it may vote.
    pub voter: bool,
    /// Ticks the follower has been continuously caught up and answering.
    pub healthy_ticks: u32,
    /// The highest read-index round the follower acknowledged.
    pub read_round: u64,
}

impl Progress {
    /// A follower the new leader knows nothing about yet.
    pub fn new(next_index: Index) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe { paused: false },
            inflight: VecDeque::new(),
            recent_active: true,
            stalled_ticks: 0,
            // Not heard from yet: not reachable (for the status, for
            // removals that need live voters, for promotion) until it
            // answers.
            silent_ticks: u32::MAX / 2,
            sent_commit: 0,
            // Unknown until it answers: no leadership is handed to a member
            // that has not said it may vote.
            voter: false,
            healthy_ticks: 0,
            read_round: 0,
        }
    }

    /// Whether another append may be sent now.
    pub fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ReplicationState::Probe { paused } => !paused,
            ReplicationState::Replicate => self.inflight.len() < max_inflight,
            ReplicationState::Snapshot => false,
        }
    }

    /// Records that an append ending at `last` was sent.
    pub fn sent(&mut self, last: Index, carried_entries: bool) {
        match self.state {
            ReplicationState::Probe { .. } => {
                self.state = ReplicationState::Probe { paused: true };
            }
            ReplicationState::Replicate if carried_entries => {
                self.next_index = last + 1;
                self.inflight.push_back(last);
            }
            ReplicationState::Replicate | ReplicationState::Snapshot => {}
        }
    }

    /// Records an accepted append. Returns whether `match_index` moved.
    pub fn accepted(&mut self, match_index: Index) -> bool {
        self.stalled_ticks = 0;
        let moved = match_index > self.match_index;
        if moved {
            self.match_index = match_index;
        }
        self.next_index = self.next_index.max(match_index + 1);
        while self.inflight.front().is_some_and(|&i| i <= match_index) {
            self.inflight.pop_front();
        }
        if let ReplicationState::Probe { .. } = self.state {
            self.become_replicate();
        }
        moved
    }

    /// Lowers `match_index` to `index`: the follower no longer holds what it
    /// acknowledged. Commitment already counted never goes back; only future
    /// counting uses the lower value.
    pub fn forget_match(&mut self, index: Index) {
        self.match_index = self.match_index.min(index);
        self.become_probe(index + 1);
        self.next_index = index + 1;
    }

    /// Starts probing again from `next_index`.
    pub fn become_probe(&mut self, next_index: Index) {
        self.state = ReplicationState::Probe { paused: false };
        self.next_index = next_index.max(self.match_index + 1);
        self.inflight.clear();
        self.stalled_ticks = 0;
    }

    /// Pipelines appends from `match_index + 1`.
    pub fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index + 1;
        self.inflight.clear();
    }

    /// Waits for a snapshot to be delivered.
    pub fn become_snapshot(&mut self) {
        self.state = ReplicationState::Snapshot;
        self.inflight.clear();
        self.stalled_ticks = 0;
    }

    /// The follower answered (an append or a heartbeat); `voter` is whether
    /// it may vote.
    pub fn heard_from(&mut self, voter: bool) {
        self.recent_active = true;
        self.silent_ticks = 0;
        self.voter = voter;
    }

    /// Whether appends are in flight.
    pub fn has_inflight(&self) -> bool {
        !self.inflight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe that is accepted turns into pipelined replication, and the
    /// in-flight window frees as answers arrive.
    #[test]
    fn probe_then_pipeline() {
        let mut p = Progress::new(5);
        assert!(p.can_send(2));
        p.sent(6, true);
        assert!(!p.can_send(2), "one probe at a time");
        p.accepted(6);
        assert_eq!(p.state, ReplicationState::Replicate);
        assert_eq!(p.next_index, 7);
        p.sent(8, true);
        p.sent(9, true);
        assert!(!p.can_send(2), "the window is full");
        p.accepted(8);
        assert!(p.can_send(2));
        assert_eq!(p.next_index, 10);
    }
}
