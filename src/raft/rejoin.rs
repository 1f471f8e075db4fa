//! A member whose data dir is new: it may have lost a volume, so it asks
//! every peer before it votes again (module documentation of
//! [`crate::raft`], "A member whose data dir is new").

use std::collections::BTreeMap;

use super::core::RaftCore;
use super::membership::Membership;
use super::mutations::mutated;
use super::types::*;

/// What a member with a new data dir has learnt while it may not vote.
#[derive(Debug, Default)]
pub(super) struct Rejoin {
    /// Replies to our probes (term, empty log, the responder's
    /// configuration), while awaiting peers.
    replies: BTreeMap<NodeId, (Term, bool, Membership)>,
    /// While awaiting a leader: the highest commit index a leader of a
    /// recent enough term announced. Our log must reach it before we vote:
    /// it covers every entry committed with our help before the volume was
    /// lost.
    catch_up: Option<Index>,
    /// Ticks since the last round of probes.
    probe_elapsed: u32,
}

impl RaftCore {
    /// Probes again, every heartbeat interval.
    pub(super) fn tick_rejoin(&mut self) {
        if self.voting != Voting::AwaitingPeers {
            return;
        }
        self.rejoin.probe_elapsed += 1;
        if self.rejoin.probe_elapsed >= self.cfg.heartbeat_ticks {
            self.rejoin.probe_elapsed = 0;
            self.send_rejoin_probes();
        }
    }

    /// Whose answers decide: the *voters* — only a voter campaigns, so only
    /// a voter can know a term this member voted in. When some peer's log is
    /// not empty, the voters of the configurations those peers reported in
    /// their latest answers (a cluster exists); otherwise the voters of this
    /// member's own (bootstrap) configuration. Learners are never waited
    /// for (a pod stuck Pending must not keep the others from joining), and
    /// answers are refreshed every round, so a voter removed meanwhile stops
    /// being waited for.
    fn rejoin_targets(&self) -> Vec<NodeId> {
        let me = self.cfg.id;
        let reported = self
            .rejoin
            .replies
            .values()
            .filter(|r| !r.1)
            .fold(Membership::default(), |acc, r| acc.union(&r.2));
        if reported.is_empty() {
            // No answer shows a cluster yet: everyone who could be in one
            // must say its log is empty, the pods the StatefulSet asks for
            // included (a cluster that grew past its bootstrap voters).
            let own = self.membership();
            let asked = (0..self.cfg.probe_peers.min(super::membership::MAX_MEMBERS))
                .chain(own.voters())
                .filter(|&p| p != me);
            let mut all: Vec<NodeId> = asked.collect();
            all.sort_unstable();
            all.dedup();
            return all;
        }
        reported.voters().filter(|&p| p != me).collect()
    }

    /// Asks for its term, whether its log is empty and its configuration:
    /// every member of our own configuration and of every configuration
    /// reported so far, answered or not (answers are refreshed).
    pub(super) fn send_rejoin_probes(&mut self) {
        let me = self.cfg.id;
        let everyone = self
            .rejoin
            .replies
            .values()
            .fold(self.membership(), |acc, r| acc.union(&r.2));
        let seeds = 0..self.cfg.probe_peers.min(super::membership::MAX_MEMBERS);
        let mut peers: Vec<NodeId> = everyone
            .members()
            .chain(seeds)
            .filter(|&p| p != me)
            .collect();
        peers.sort_unstable();
        peers.dedup();
        let term = self.term;
        for peer in peers {
            self.send(peer, term, Body::RejoinProbe);
        }
    }

    /// A peer with a new data dir asks for our term and whether our log is
    /// empty: answered in any term and role.
    pub(super) fn on_rejoin_probe(&mut self, from: NodeId) {
        // A member that probes has lost its volume: it cannot vote until it
        // has caught up, whatever it said before (a removal that counts it
        // as a live voter could leave the cluster without a quorum).
        if let Some(pr) = self.leading().and_then(|l| l.progress.get_mut(&from)) {
            pr.voter = false;
        }
        let empty_log = self.log.is_empty();
        let term = self.term;
        let members = self.membership();
        self.send(from, term, Body::RejoinProbeResponse { empty_log, members });
    }

    /// A peer's answer to our probe.
    pub(super) fn on_rejoin_probe_response(
        &mut self,
        from: NodeId,
        term: Term,
        empty_log: bool,
        members: Membership,
    ) {
        if self.voting == Voting::AwaitingPeers {
            self.rejoin.replies.insert(from, (term, empty_log, members));
            self.check_rejoin_probes_complete();
        }
    }

    /// Once every peer has answered: if all logs are empty this is a new
    /// cluster and we may vote; otherwise wait for a leader at least as new
    /// as any term a peer reported. Either way, never vote again in the
    /// highest reported term: we may have voted in it before our volume was
    /// lost.
    pub(super) fn check_rejoin_probes_complete(&mut self) {
        if self.voting != Voting::AwaitingPeers
            || !self
                .rejoin_targets()
                .iter()
                .all(|p| self.rejoin.replies.contains_key(p))
        {
            return;
        }
        let replies = std::mem::take(&mut self.rejoin.replies);
        let max_term = replies.values().map(|r| r.0).fold(self.term, Term::max);
        let all_empty = self.log.is_empty() && replies.values().all(|r| r.1);
        if max_term > self.term {
            self.become_follower(max_term, None);
        }
        if self.vote.is_none() {
            // A fence: a vote we cannot give again in this term.
            self.vote = Some(self.cfg.id);
        }
        self.voting = if all_empty {
            Voting::Enabled
        } else {
            Voting::AwaitingLeader { min_term: max_term }
        };
        if all_empty {
            // The timer ran while we awaited the peers, so it has expired
            // on every member of a new cluster: start it over, so that the
            // ordinal stagger, not whose peers answered first, decides who
            // campaigns first (ordinal 0 leads a new cluster).
            self.reset_election_timer();
        }
    }

    /// Records the commit index a leader announced; while awaiting a leader,
    /// also as the point to catch up to, if that leader's term is recent
    /// enough.
    pub(super) fn note_leader_commit(&mut self, leader_commit: Index) {
        self.leader_commit = self.leader_commit.max(leader_commit);
        if let Voting::AwaitingLeader { min_term } = self.voting {
            if self.term >= min_term {
                let catch_up = self.rejoin.catch_up.get_or_insert(leader_commit);
                *catch_up = (*catch_up).max(leader_commit);
            }
        }
    }

    /// A member awaiting a leader may vote once its commit index has reached
    /// the commit index a leader (of a term at least `min_term`) announced,
    /// and is an entry of the current term. The first covers entries
    /// committed with this member's acknowledgement in that leader's own
    /// term; the second every entry committed before the current term.
    /// Returns whether this member may vote.
    pub(super) fn check_caught_up(&mut self) -> bool {
        if let Voting::AwaitingLeader { min_term } = self.voting {
            let commit = self.log.commit();
            if self.leader.is_some()
                && self.term >= min_term
                && (self.rejoin.catch_up.is_some_and(|c| commit >= c)
                    || mutated!(self, LostVolumeVotesAfterPartialCatchUp))
                && self.log.term(commit) == Some(self.term)
            {
                self.voting = Voting::Enabled;
                self.rejoin.catch_up = None;
            }
        }
        self.voting == Voting::Enabled
    }
}
