//! Elections: the ordinal-staggered timer, fast failover, pre-vote, votes
//! and the role changes they cause (module documentation of
//! [`crate::raft`], "Elections").

use std::collections::BTreeMap;

use super::config::Config;
use super::core::{RaftCore, RoleState};
use super::mutations::mutated;
use super::replication::LeaderState;
use super::rng::SplitMix64;
use super::types::*;

/// When this member campaigns if it hears no leader.
#[derive(Debug)]
pub(super) struct ElectionTimer {
    /// Ticks since the timer was last reset.
    pub(super) elapsed: u32,
    /// Ticks after which the member campaigns.
    timeout: u32,
    /// Ticks left in fast-failover mode (the leader's connection reset):
    /// pre-campaign after a short, ordinal-staggered delay, and leave the
    /// field to a lower ordinal with a log at least as up to date.
    pub(super) fast_ticks_left: u32,
    rng: SplitMix64,
}

impl ElectionTimer {
    pub(super) fn new(seed: u64) -> Self {
        ElectionTimer {
            elapsed: 0,
            timeout: 0,
            fast_ticks_left: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// Starts a new wait. A candidate has raised its term and waits for
    /// votes that its peers answer only after their disks have made them
    /// durable: the fast delay (one tick for ordinal 0) would give up on
    /// them and raise the term again, over and over. Only pre-campaigning
    /// is fast.
    fn reset(&mut self, cfg: &Config, candidate: bool) {
        self.elapsed = 0;
        if self.fast_ticks_left > 0 && !candidate {
            self.timeout = 1 + cfg.id * cfg.fast_election_stagger_ticks;
            return;
        }
        let jitter = self.rng.below(u64::from(cfg.election_jitter_ticks) + 1) as u32;
        self.timeout = cfg.election_ticks + cfg.id * cfg.election_stagger_ticks + jitter;
    }

    fn expired(&self) -> bool {
        self.elapsed >= self.timeout
    }
}

impl RaftCore {
    pub(super) fn reset_election_timer(&mut self) {
        let candidate = matches!(self.role, RoleState::Candidate { .. });
        self.timer.reset(&self.cfg, candidate);
    }

    /// A tick of a member that does not lead.
    pub(super) fn tick_election(&mut self) {
        self.timer.elapsed += 1;
        self.timer.fast_ticks_left = self.timer.fast_ticks_left.saturating_sub(1);
        if self.voting == Voting::Enabled && self.timer.expired() && self.may_campaign() {
            self.pre_campaign();
        }
    }

    /// Whether this member is under a leader's lease: it leads, or heard
    /// from its leader within the minimum election timeout.
    pub(super) fn in_lease(&self) -> bool {
        match self.role {
            RoleState::Leader(_) => true,
            _ => self.leader.is_some() && self.timer.elapsed < self.cfg.election_ticks,
        }
    }

    /// Fast failure detection: the connection to our leader reset, so its
    /// process most likely died. Forget it and campaign soon, staggered by
    /// ordinal; pre-vote keeps this safe if the leader is in fact alive.
    pub(super) fn leader_disconnected(&mut self, peer: NodeId) {
        if self.leader == Some(peer) && self.voting == Voting::Enabled {
            self.leader = None;
            self.timer.fast_ticks_left = self.cfg.election_ticks;
            self.reset_election_timer();
        }
    }

    /// Asks every peer whether it would vote for us in the next term,
    /// without raising ours (pre-vote, thesis §9.6).
    pub(super) fn pre_campaign(&mut self) {
        let Some(term) = self.term.checked_add(1) else {
            // The last term there is: no election can ever be won again
            // (only a forged message can bring a cluster here). Never wrap
            // around, and never vote twice in this term.
            self.timer.elapsed = 0;
            return;
        };
        let peers = self.other_voters();
        if peers.is_empty() {
            self.campaign(false);
            return;
        }
        self.role = RoleState::PreCandidate {
            votes: BTreeMap::from([(self.cfg.id, true)]),
        };
        self.leader = None;
        self.reset_election_timer();
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in peers {
            self.send(
                peer,
                term,
                Body::PreVote {
                    last_index,
                    last_term,
                },
            );
        }
    }

    /// Raises the term, votes for itself and asks every peer for its vote;
    /// `transfer` marks an election the leader asked for (TimeoutNow).
    pub(super) fn campaign(&mut self, transfer: bool) {
        let Some(term) = self.term.checked_add(1) else {
            return;
        };
        self.term = term;
        self.vote = Some(self.cfg.id);
        self.role = RoleState::Candidate {
            votes: BTreeMap::from([(self.cfg.id, true)]),
        };
        self.leader = None;
        self.reset_election_timer();
        let peers = self.other_voters();
        if peers.is_empty() {
            self.become_leader();
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in peers {
            self.send(
                peer,
                term,
                Body::Vote {
                    last_index,
                    last_term,
                    transfer,
                },
            );
        }
    }

    /// A peer asks whether we would vote for it in `term` (which it has not
    /// entered). Answering changes nothing.
    pub(super) fn on_pre_vote(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
    ) {
        // Just after the leader's connection reset, a lower ordinal that
        // could win as well leaves the field to itself: the lowest live
        // ordinal leads. (Bounded by the fast mode; pre-votes change no
        // state, so this only decides who wins.)
        let candidate_ahead = last_term > self.log.last_term()
            || (last_term == self.log.last_term() && last_index > self.log.last_index());
        let defer_to_self = self.timer.fast_ticks_left > 0
            && from > self.cfg.id
            && self.voting == Voting::Enabled
            && !candidate_ahead;
        let grant = term > self.term
            && self.voting == Voting::Enabled
            && !self.in_lease()
            && !defer_to_self
            && (self.log.is_up_to_date(last_index, last_term)
                || mutated!(self, VoteIgnoresLogFreshness));
        let reply_term = if grant { term } else { self.term };
        self.send(from, reply_term, Body::PreVoteResponse { granted: grant });
    }

    /// A candidate of our term asks for our vote: one vote per term, only
    /// for a log at least as up to date as ours (§5.2, §5.4.1); durable
    /// before the answer leaves (the Ready order).
    pub(super) fn on_vote(&mut self, from: NodeId, last_index: Index, last_term: Term) {
        let can = self.voting == Voting::Enabled
            && self.vote.is_none_or(|v| v == from)
            && (self.log.is_up_to_date(last_index, last_term)
                || mutated!(self, VoteIgnoresLogFreshness));
        if can {
            self.vote = Some(from);
            self.timer.elapsed = 0;
        }
        let term = self.term;
        self.send(from, term, Body::VoteResponse { granted: can });
    }

    /// A pre-vote answer: a grant carries our term + 1, a refusal ours.
    pub(super) fn on_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        let expected = if granted {
            self.term.checked_add(1)
        } else {
            Some(self.term)
        };
        if let RoleState::PreCandidate { votes } = &mut self.role {
            if Some(term) == expected {
                votes.insert(from, granted);
                self.tally_votes();
            }
        }
    }

    /// A vote answer in our term.
    pub(super) fn on_vote_response(&mut self, from: NodeId, granted: bool) {
        if let RoleState::Candidate { votes } = &mut self.role {
            votes.insert(from, granted);
            self.tally_votes();
        }
    }

    /// Counts the answers of the voters of the configuration in force; a
    /// learner's answer never counts.
    fn tally_votes(&mut self) {
        let membership = self.membership();
        let learners_count = mutated!(self, LearnerCountsTowardQuorum);
        let (pre, votes) = match &self.role {
            RoleState::PreCandidate { votes } => (true, votes),
            RoleState::Candidate { votes } => (false, votes),
            _ => return,
        };
        let counted = |g: bool| {
            votes
                .iter()
                .filter(|&(&id, &v)| v == g && (membership.is_voter(id) || learners_count))
                .count()
        };
        let (granted, refused) = (counted(true), counted(false));
        let majority = membership.majority();
        if granted >= majority {
            if pre {
                self.campaign(false);
            } else {
                self.become_leader();
            }
        } else if refused >= majority {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// Won the election: lead, starting with a no-op of this term, which
    /// lets the term commit, and with it every earlier entry (§5.4.2). When
    /// the log has never recorded a configuration, that first entry records
    /// the bootstrap one instead, so that from then on the configuration
    /// lives in the log and not in anybody's flags.
    pub(super) fn become_leader(&mut self) {
        self.timer.fast_ticks_left = 0;
        self.leader = Some(self.cfg.id);
        let next = self.log.last_index() + 1;
        let me = self.cfg.id;
        let members: Vec<NodeId> = self.membership().members().filter(|&p| p != me).collect();
        self.role = RoleState::Leader(Box::new(LeaderState::new(members.into_iter(), next)));
        let (kind, data) = if self.log.membership().is_empty() {
            (EntryKind::Config, self.membership().encode())
        } else {
            (EntryKind::Noop, bytes::Bytes::new())
        };
        self.log.append(Entry {
            index: next,
            term: self.term,
            kind,
            data,
        });
    }

    /// Follows `leader` (if known) in `term`, entering the term if it is
    /// newer; a leader stepping down drops the reads it could not confirm.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if let RoleState::Leader(l) = std::mem::replace(&mut self.role, RoleState::Follower) {
            l.reads.drop_all(&mut self.out.dropped_reads);
        }
        self.leader = leader;
        self.reset_election_timer();
    }

    /// A leader of our term spoke: follow it.
    pub(super) fn follow(&mut self, leader: NodeId) {
        self.timer.fast_ticks_left = 0;
        if !matches!(self.role, RoleState::Follower) || self.leader != Some(leader) {
            let term = self.term;
            self.become_follower(term, Some(leader));
        }
        self.timer.elapsed = 0;
    }
}
