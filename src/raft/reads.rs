//! Linearizable reads by ReadIndex (thesis §6.4; module documentation of
//! [`crate::raft`], "Reads").

use std::collections::VecDeque;

use super::core::{RaftCore, RoleState};
use super::mutations::mutated;
use super::types::*;

/// A read waiting for its quorum round.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    id: u64,
    /// The commit index when the read arrived: what it must observe.
    index: Index,
    /// The heartbeat round whose acknowledgement by a quorum confirms that
    /// this member still led when the read arrived.
    round: u64,
}

/// A leader's reads: those waiting for a round, and those in one.
#[derive(Debug, Default)]
pub(super) struct ReadQueue {
    /// The last heartbeat round started for reads.
    round: u64,
    unassigned: Vec<u64>,
    pending: VecDeque<PendingRead>,
}

impl ReadQueue {
    /// The last round started (heartbeats carry it; followers echo it).
    pub(super) fn round(&self) -> u64 {
        self.round
    }

    /// Whether reads wait for a round to start.
    pub(super) fn has_unassigned(&self) -> bool {
        !self.unassigned.is_empty()
    }

    /// Leadership is lost: no read can be confirmed any more.
    pub(super) fn drop_all(self, dropped: &mut Vec<u64>) {
        dropped.extend(self.unassigned);
        dropped.extend(self.pending.into_iter().map(|r| r.id));
    }
}

impl RaftCore {
    /// Asks for a linearizable read point. The answer comes in
    /// `Ready::read_states` (or `dropped_reads` when this member cannot
    /// confirm its leadership).
    pub fn read_index(&mut self, id: u64) {
        match &mut self.role {
            RoleState::Leader(l) => l.reads.unassigned.push(id),
            _ => self.out.dropped_reads.push(id),
        }
    }

    /// Starts one quorum round for every read that arrived since the last
    /// Ready, once this leader knows the commit point (it has committed an
    /// entry of its term); a single voter needs no round.
    pub(super) fn assign_reads(&mut self) {
        let index = self.log.commit();
        let committed_in_term = self.log.term(index) == Some(self.term);
        let membership = self.membership();
        let alone = membership.voters().all(|v| v == self.cfg.id);
        let no_round = alone || mutated!(self, ReadWithoutQuorumRound);
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if l.reads.unassigned.is_empty() || !committed_in_term {
            return;
        }
        let reads = &mut l.reads;
        if no_round {
            self.out
                .read_states
                .extend(reads.unassigned.drain(..).map(|id| ReadState { id, index }));
            return;
        }
        reads.round += 1;
        let round = reads.round;
        reads.pending.extend(
            reads
                .unassigned
                .drain(..)
                .map(|id| PendingRead { id, index, round }),
        );
        self.broadcast_heartbeat();
    }

    /// Hands out the reads whose round a quorum has acknowledged.
    pub(super) fn resolve_reads(&mut self) {
        let membership = self.membership();
        let me = self.cfg.id;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        while let Some(read) = l.reads.pending.front().copied() {
            let acks = l
                .progress
                .iter()
                .filter(|(_, p)| p.read_round >= read.round && p.voter)
                .map(|(&id, _)| id)
                .chain(std::iter::once(me));
            if !membership.is_quorum(acks) {
                break;
            }
            l.reads.pending.pop_front();
            self.out.read_states.push(ReadState {
                id: read.id,
                index: read.index,
            });
        }
    }
}
