//! Replication and commitment: the leader's state and its appends,
//! heartbeats and commit rule; a follower's handling of them (module
//! documentation of [`crate::raft`], "Replication and commitment").

use std::collections::BTreeMap;

use bytes::Bytes;

use super::config::CAUGHT_UP_LAG;
use super::core::{RaftCore, RoleState};
use super::log::RaftLog;
use super::mutations::mutated;
use super::progress::{Progress, ReplicationState};
use super::reads::ReadQueue;
use super::types::*;
use super::validate::Malformed;

/// What only a leader has.
#[derive(Debug)]
pub(super) struct LeaderState {
    /// Each follower's progress.
    pub(super) progress: BTreeMap<NodeId, Progress>,
    /// The member leadership is being handed to, and for how many ticks.
    pub(super) transferee: Option<(NodeId, u32)>,
    heartbeat_elapsed: u32,
    quorum_elapsed: u32,
    /// Linearizable reads waiting for a quorum round.
    pub(super) reads: ReadQueue,
    /// New entries or a new commit index to send to followers.
    pub(super) replicate_pending: bool,
}

impl LeaderState {
    /// A new leader whose next entry is `next`: it knows nothing of its
    /// followers yet, and has its no-op to send.
    pub(super) fn new(peers: impl Iterator<Item = NodeId>, next: Index) -> Self {
        LeaderState {
            progress: peers.map(|p| (p, Progress::new(next))).collect(),
            transferee: None,
            heartbeat_elapsed: 0,
            quorum_elapsed: 0,
            reads: ReadQueue::default(),
            replicate_pending: true,
        }
    }

    /// Whether the leader has output for the next Ready.
    pub(super) fn has_work(&self, log: &RaftLog, term: Term) -> bool {
        self.replicate_pending
            || (self.reads.has_unassigned() && log.term(log.commit()) == Some(term))
    }

    /// The connection to `peer` broke: appends in flight may be lost, so
    /// find the match point again.
    pub(super) fn peer_disconnected(&mut self, peer: NodeId) {
        if let Some(pr) = self.progress.get_mut(&peer) {
            if pr.state == ReplicationState::Replicate {
                let next = pr.match_index + 1;
                pr.become_probe(next);
            }
        }
    }
}

impl RaftCore {
    /// The leader's state, when leading.
    pub(super) fn leading(&mut self) -> Option<&mut LeaderState> {
        match &mut self.role {
            RoleState::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// Proposes a command. Returns its index and term; it is committed when an
    /// entry with that index and term is handed out in `Ready::committed`.
    pub fn propose(&mut self, data: Bytes) -> Result<(Index, Term), ProposeError> {
        let leader = self.leader;
        let RoleState::Leader(l) = &mut self.role else {
            return Err(ProposeError::NotLeader { leader });
        };
        if l.transferee.is_some() {
            return Err(ProposeError::Transferring);
        }
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term: self.term,
            kind: EntryKind::Normal,
            data,
        });
        l.replicate_pending = true;
        Ok((index, self.term))
    }

    /// A leader's tick: heartbeats, the quorum check (a leader that heard
    /// from no quorum for an election timeout steps down), lost appends,
    /// the handover's timeout and priority return.
    pub(super) fn tick_leader(&mut self) {
        let (heartbeat, election) = (self.cfg.heartbeat_ticks, self.cfg.election_ticks);
        let membership = self.membership();
        let me = self.cfg.id;
        let Some(l) = self.leading() else { return };
        l.heartbeat_elapsed += 1;
        let beat = l.heartbeat_elapsed >= heartbeat;
        if beat {
            l.heartbeat_elapsed = 0;
        }
        l.quorum_elapsed += 1;
        let mut lost_quorum = false;
        if l.quorum_elapsed >= election {
            l.quorum_elapsed = 0;
            let active = l
                .progress
                .iter()
                .filter(|(_, p)| p.recent_active && p.voter)
                .map(|(&id, _)| id)
                .chain(std::iter::once(me));
            lost_quorum = !membership.is_quorum(active);
            for pr in l.progress.values_mut() {
                pr.recent_active = false;
            }
        }
        if beat {
            self.broadcast_heartbeat();
        }
        if lost_quorum {
            // Cut off from a quorum: stop acting as leader so clients go
            // elsewhere, rather than wait for a higher term to arrive.
            let term = self.term;
            self.become_follower(term, None);
            return;
        }
        self.tick_transfer();
        self.prune_departed();
        for peer in self.tick_progress() {
            self.maybe_send_append(peer);
        }
        self.maybe_return_priority();
    }

    /// Ages each follower's progress; returns the followers whose appends
    /// were lost (already back to probing).
    fn tick_progress(&mut self) -> Vec<NodeId> {
        let commit = self.log.commit();
        let (heartbeat, election) = (self.cfg.heartbeat_ticks, self.cfg.election_ticks);
        let membership = self.membership();
        let Some(l) = self.leading() else {
            return Vec::new();
        };
        let mut reprobe = Vec::new();
        for (&peer, pr) in l.progress.iter_mut() {
            pr.silent_ticks = pr.silent_ticks.saturating_add(1);
            if pr.state == ReplicationState::Replicate && pr.has_inflight() {
                pr.stalled_ticks += 1;
                if pr.stalled_ticks >= election {
                    // Appends were lost: find the match point again.
                    let next = pr.match_index + 1;
                    pr.become_probe(next);
                    reprobe.push(peer);
                }
            }
            let healthy = pr.voter
                && membership.is_voter(peer)
                && pr.state == ReplicationState::Replicate
                && pr.match_index + CAUGHT_UP_LAG >= commit
                && pr.silent_ticks <= 2 * heartbeat;
            pr.healthy_ticks = if healthy {
                pr.healthy_ticks.saturating_add(1)
            } else {
                0
            };
        }
        reprobe
    }

    /// Sends `peer` the entries it is missing (or the new commit index), if
    /// flow control allows; asks for a snapshot when they are compacted away.
    pub(super) fn maybe_send_append(&mut self, peer: NodeId) {
        let commit = self.log.commit();
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let Some(pr) = l.progress.get_mut(&peer) else {
            return;
        };
        if !pr.can_send(self.cfg.max_inflight) {
            return;
        }
        let prev_index = pr.next_index - 1;
        let probing = matches!(pr.state, ReplicationState::Probe { .. });
        let Some(prev_term) = self.log.term(prev_index) else {
            pr.become_snapshot();
            self.out.send_snapshots.push(peer);
            return;
        };
        let entries = self
            .log
            .entries_from(
                pr.next_index,
                self.cfg.max_append_entries,
                self.cfg.max_append_bytes,
            )
            .expect("next_index is after the snapshot");
        if entries.is_empty() && !probing && commit <= pr.sent_commit {
            return;
        }
        let last = entries.last().map_or(prev_index, |e| e.index);
        pr.sent(last, !entries.is_empty());
        pr.sent_commit = commit;
        self.out.send(
            self.cfg.id,
            peer,
            self.term,
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
    }

    /// A heartbeat to every follower, carrying `min(commit, its match)`: a
    /// follower must not commit entries the leader has not confirmed it
    /// holds.
    pub(super) fn broadcast_heartbeat(&mut self) {
        let commit = self.log.commit();
        let RoleState::Leader(l) = &self.role else {
            return;
        };
        let round = l.reads.round();
        let targets: Vec<(NodeId, Index)> = l
            .progress
            .iter()
            .map(|(&p, pr)| (p, pr.match_index.min(commit)))
            .collect();
        for (peer, capped) in targets {
            self.out.send(
                self.cfg.id,
                peer,
                self.term,
                Body::Heartbeat {
                    commit: capped,
                    leader_commit: commit,
                    read_round: round,
                },
            );
        }
    }

    /// Commits the highest index stored on a majority of the voters, if it
    /// is of this term (Raft §5.4.2: an older term's entry is committed only
    /// indirectly). The leader counts itself only while it votes (it may be
    /// removing itself), and a learner never counts.
    pub(super) fn maybe_commit(&mut self) {
        let membership = self.membership();
        let learners_count = mutated!(self, LearnerCountsTowardQuorum);
        let (me, stable) = (self.cfg.id, self.log.stable());
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let counted =
            |id: NodeId| membership.is_voter(id) || (learners_count && membership.contains(id));
        // A member that may not vote yet (its volume was lost and it has
        // not caught up) does not count either: before the loss it may have
        // acknowledged, in a later term, an entry this (stale) leader's
        // entry at that index would replace.
        let mut matches: Vec<Index> = l
            .progress
            .iter()
            .filter(|(&id, p)| counted(id) && (p.voter || learners_count))
            .map(|(_, p)| p.match_index)
            .collect();
        if counted(me) {
            matches.push(stable);
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&quorum_index) = matches.get(membership.majority() - 1) else {
            return;
        };
        let of_this_term = self.log.term(quorum_index) == Some(self.term)
            || mutated!(self, CommitOlderTermByCount);
        if quorum_index > self.log.commit() && of_this_term {
            self.log.commit_to(quorum_index);
            l.replicate_pending = true;
            self.on_commit_advanced();
        }
    }

    /// What a leader adds to a Ready: appends for new entries or commit, and
    /// a quorum round for new reads.
    pub(super) fn flush_leader_output(&mut self) {
        let Some(l) = self.leading() else { return };
        if std::mem::take(&mut l.replicate_pending) {
            for peer in l.progress.keys().copied().collect::<Vec<_>>() {
                self.maybe_send_append(peer);
            }
        }
        self.assign_reads();
    }

    /// A follower's answer to an append (or to an installed snapshot).
    /// Refused if it speaks of entries past this leader's log: in its term
    /// a follower holds only what this leader sent it (and a leader's log
    /// only grows), so only a broken peer says so, and taking it would
    /// count entries nobody holds.
    pub(super) fn on_append_response(
        &mut self,
        from: NodeId,
        result: AppendResult,
        voter: bool,
    ) -> Result<(), Malformed> {
        let snapshot_index = self.log.snapshot().index;
        let last = self.log.last_index();
        let claimed = match result {
            AppendResult::Accepted { match_index } => [("match_index", match_index); 2],
            AppendResult::Rejected {
                rejected_index,
                hint_index,
                ..
            } => [
                ("rejected_index", rejected_index),
                ("hint_index", hint_index),
            ],
        };
        if let Some((field, value)) = claimed.into_iter().find(|&(_, v)| v > last) {
            return Err(Malformed::BeyondLeaderLog { field, value, last });
        }
        let RoleState::Leader(l) = &mut self.role else {
            return Ok(());
        };
        let Some(pr) = l.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.heard_from(voter);
        match result {
            AppendResult::Accepted { match_index } => {
                if pr.state == ReplicationState::Snapshot {
                    if match_index < snapshot_index {
                        return Ok(());
                    }
                    pr.become_probe(match_index + 1);
                }
                let moved = pr.accepted(match_index);
                let caught_up = pr.match_index == last;
                let transferring_to_it = l.transferee.map(|(t, _)| t) == Some(from);
                if moved {
                    self.maybe_commit();
                }
                if caught_up && transferring_to_it {
                    let term = self.term;
                    self.send(from, term, Body::TimeoutNow);
                }
            }
            AppendResult::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            } => {
                if hint_index < pr.match_index && pr.state != ReplicationState::Snapshot {
                    // The follower's log is shorter than what it once
                    // acknowledged: its volume was lost (or this answer is
                    // old). Either way, probing from the hint is safe.
                    pr.forget_match(hint_index);
                } else {
                    let stale = match pr.state {
                        ReplicationState::Replicate => rejected_index <= pr.match_index,
                        ReplicationState::Probe { .. } => rejected_index + 1 != pr.next_index,
                        ReplicationState::Snapshot => true,
                    };
                    if stale {
                        return Ok(());
                    }
                    let probe_at = if hint_term > 0 {
                        self.log.find_conflict_by_term(hint_index, hint_term).0
                    } else {
                        hint_index
                    };
                    pr.become_probe((probe_at + 1).min(rejected_index));
                }
            }
        }
        self.maybe_send_append(from);
        Ok(())
    }

    /// A follower's answer to a heartbeat: it is alive, maybe confirms a
    /// read round, and may be behind. Refused if it confirms a round this
    /// leader has not started (followers echo the round of a heartbeat):
    /// taking it would confirm reads that no quorum was asked about.
    pub(super) fn on_heartbeat_response(
        &mut self,
        from: NodeId,
        read_round: u64,
        voter: bool,
    ) -> Result<(), Malformed> {
        let last = self.log.last_index();
        let RoleState::Leader(l) = &mut self.role else {
            return Ok(());
        };
        let current = l.reads.round();
        if read_round > current {
            return Err(Malformed::ReadRoundAhead {
                round: read_round,
                current,
            });
        }
        let Some(pr) = l.progress.get_mut(&from) else {
            return Ok(());
        };
        pr.heard_from(voter);
        pr.read_round = pr.read_round.max(read_round);
        if let ReplicationState::Probe { paused: true } = pr.state {
            pr.state = ReplicationState::Probe { paused: false };
        }
        if pr.match_index < last {
            self.maybe_send_append(from);
        }
        self.resolve_reads();
        Ok(())
    }

    /// The driver finished sending a snapshot to `peer` (ending at `index`),
    /// or failed to (`None`).
    pub fn snapshot_sent(&mut self, peer: NodeId, index: Option<Index>) {
        let Some(pr) = self.leading().and_then(|l| l.progress.get_mut(&peer)) else {
            return;
        };
        if pr.state != ReplicationState::Snapshot {
            return;
        }
        let next = index.map_or(pr.match_index + 1, |i| i + 1);
        pr.become_probe(next);
        self.maybe_send_append(peer);
    }

    // ----- the follower's side -----

    /// The leader's entries after (`prev_index`, `prev_term`): accepted only
    /// if our log holds that entry (log matching, §5.3); a committed entry is
    /// never truncated (asserted in the log). A rejection carries a hint so
    /// the leader skips a whole conflicting term per round trip.
    pub(super) fn on_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
        commit: Index,
    ) {
        let term = self.term;
        self.note_leader_commit(commit);
        // (Mutated: whatever entry this log holds at prev_index passes.)
        let prev_term = match self.log.term(prev_index) {
            Some(held) if mutated!(self, AppendSkipsPrevTermCheck) => held,
            _ => prev_term,
        };
        let result = if prev_index < self.log.commit() {
            AppendResult::Accepted {
                match_index: self.log.commit(),
            }
        } else if let Some(last_new) = self.log.try_append(prev_index, prev_term, entries) {
            self.log.commit_to(commit.min(last_new));
            AppendResult::Accepted {
                match_index: last_new,
            }
        } else {
            let probe_at = prev_index.min(self.log.last_index());
            let (hint_index, hint_term) = self.log.find_conflict_by_term(probe_at, prev_term);
            AppendResult::Rejected {
                rejected_index: prev_index,
                hint_index,
                hint_term,
            }
        };
        let voter = self.check_caught_up();
        self.send(from, term, Body::AppendResponse { result, voter });
    }

    /// The leader is alive; `commit` is capped at what we are known to hold.
    pub(super) fn on_heartbeat(
        &mut self,
        from: NodeId,
        commit: Index,
        leader_commit: Index,
        read_round: u64,
    ) {
        self.note_leader_commit(leader_commit);
        let last = self.log.last_index();
        self.log.commit_to(commit.min(last));
        let voter = self.check_caught_up();
        let term = self.term;
        self.send(from, term, Body::HeartbeatResponse { read_round, voter });
        if commit > last {
            // The leader believes we hold entries we do not: our volume was
            // lost. Say so, so that it probes again.
            let result = AppendResult::Rejected {
                rejected_index: commit,
                hint_index: last,
                hint_term: self.log.last_term(),
            };
            self.send(from, term, Body::AppendResponse { result, voter });
        }
    }

    /// A snapshot from the leader has arrived in full: the log is replaced
    /// by it (unless it already holds that entry), and the driver installs
    /// it from the Ready.
    pub(super) fn on_snapshot(&mut self, from: NodeId, meta: SnapshotMeta) {
        self.log.restore_snapshot(meta);
        let match_index = self.log.commit();
        let voter = self.check_caught_up();
        let term = self.term;
        self.send(
            from,
            term,
            Body::AppendResponse {
                result: AppendResult::Accepted { match_index },
                voter,
            },
        );
    }
}
