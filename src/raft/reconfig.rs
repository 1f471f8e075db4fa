//! Membership changes, one server at a time (module documentation of
//! [`crate::raft`], "Membership changes"): the leader's checks before it
//! appends a config entry, its followers' progress following the
//! configuration, and a removed leader's step-down.

use super::config::CAUGHT_UP_LAG;
use super::core::{RaftCore, RoleState};
use super::membership::{Membership, MembershipChange, MembershipError};
use super::mutations::mutated;
use super::progress::Progress;
use super::types::*;

impl RaftCore {
    /// Appends a config entry for `change`, which takes effect at once on
    /// this leader (and on each follower when its log receives it). Refused,
    /// with nothing changed, when this member does not lead, a change is
    /// still uncommitted, the leader has not yet committed an entry of its
    /// term, or the change is unsafe now (see [`MembershipError`]). Returns
    /// the entry's index and term; the change is committed when that entry
    /// is handed out in `Ready::committed`.
    pub fn propose_membership_change(
        &mut self,
        change: MembershipChange,
    ) -> Result<(Index, Term), MembershipError> {
        let current = self.membership();
        let next = self.check_membership_change(current, change)?;
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term: self.term,
            kind: EntryKind::Config,
            data: next.encode(),
        });
        self.sync_progress();
        if let Some(l) = self.leading() {
            l.replicate_pending = true;
        }
        // A leader alone commits at once (once durable).
        self.maybe_commit();
        Ok((index, self.term))
    }

    /// Whether `change` may be appended now, and the configuration after it.
    fn check_membership_change(
        &self,
        current: Membership,
        change: MembershipChange,
    ) -> Result<Membership, MembershipError> {
        let RoleState::Leader(l) = &self.role else {
            return Err(MembershipError::NotLeader {
                leader: self.leader,
            });
        };
        if l.transferee.is_some() {
            return Err(MembershipError::Transferring);
        }
        let in_flight = self.log.membership_index();
        if in_flight > self.log.commit() && !mutated!(self, TwoChangesInFlight) {
            return Err(MembershipError::InProgress(in_flight));
        }
        if self.log.term(self.log.commit()) != Some(self.term) {
            return Err(MembershipError::LeaderNotSettled);
        }
        let next = current.apply(change)?;
        let commit = self.log.commit();
        match change {
            MembershipChange::Promote(id) => {
                // Caught up, answering, and allowed to vote (a learner
                // whose volume was lost acknowledges entries long before
                // it may vote again).
                let caught_up = l.progress.get(&id).is_some_and(|p| {
                    p.match_index + CAUGHT_UP_LAG >= commit
                        && p.silent_ticks <= self.cfg.election_ticks
                        && p.voter
                });
                if !caught_up {
                    return Err(MembershipError::NotCaughtUp(id));
                }
            }
            MembershipChange::Remove(id) if current.is_voter(id) => {
                let me = self.cfg.id;
                let live = next
                    .voters()
                    .filter(|&v| {
                        v == me
                            || l.progress.get(&v).is_some_and(|p| {
                                p.silent_ticks <= self.cfg.election_ticks && p.voter
                            })
                    })
                    .count();
                if live < next.majority() {
                    return Err(MembershipError::QuorumAtRisk {
                        member: id,
                        live,
                        voters: next.voter_count(),
                        needed: next.majority(),
                    });
                }
            }
            _ => {}
        }
        Ok(next)
    }

    /// A leader's followers are the members of the configuration in force:
    /// a new member gets a progress (probing from the end of the log), a
    /// removed one keeps its progress only until it has its removal
    /// ([`RaftCore::prune_departed`]).
    pub(super) fn sync_progress(&mut self) {
        let membership = self.membership();
        let (me, next) = (self.cfg.id, self.log.last_index() + 1);
        self.prune_departed();
        let Some(l) = self.leading() else { return };
        for id in membership.members().filter(|&id| id != me) {
            l.progress.entry(id).or_insert_with(|| Progress::new(next));
        }
        if l.transferee.is_some_and(|(to, _)| !membership.is_voter(to)) {
            l.transferee = None;
        }
    }

    /// A member the configuration removed still gets appends from the leader
    /// that removed it until it holds its removal, committed: it then knows it is no longer a member, stops
    /// campaigning and says so in its status, instead of pre-campaigning in
    /// vain until its pod stops. Its answers never count (quorums count the
    /// configuration's voters only). One that does not answer for a few
    /// election timeouts (its pod is gone) is forgotten.
    pub(super) fn prune_departed(&mut self) {
        let membership = self.membership();
        let config_index = self.log.membership_index();
        let committed = self.log.commit() >= config_index;
        let gone_after = 4 * self.cfg.election_ticks;
        let Some(l) = self.leading() else { return };
        l.progress.retain(|&id, pr| {
            membership.contains(id)
                || (pr.silent_ticks <= gone_after
                    && !(committed
                        && pr.match_index >= config_index
                        && pr.sent_commit >= config_index))
        });
    }

    /// Called when the leader's commit index moves: a leader whose own
    /// removal (or the change that made it a non-voter) is now committed
    /// hands leadership to the lowest fully caught-up voter and steps down.
    pub(super) fn on_commit_advanced(&mut self) {
        if mutated!(self, ConfigAtCommit) {
            // The mutated core switches configuration only now.
            self.sync_progress();
        }
        let membership = self.membership();
        if membership.is_voter(self.cfg.id) || self.log.membership_index() > self.log.commit() {
            return;
        }
        let last = self.log.last_index();
        let successor = match &self.role {
            RoleState::Leader(l) => l
                .progress
                .iter()
                .find(|(&id, p)| membership.is_voter(id) && p.match_index == last && p.voter)
                .map(|(&id, _)| id),
            _ => return,
        };
        let term = self.term;
        if let Some(to) = successor {
            self.send(to, term, Body::TimeoutNow);
        }
        self.become_follower(term, None);
    }

    /// Whether this member campaigns when its timer expires: a voter does;
    /// so does a member that voted in the configuration before the last
    /// one while that last one is uncommitted here (thesis §4.2.2). A
    /// leader that removed itself and then crashed is the only member
    /// holding its removal; if it could not campaign, the remaining voter
    /// that lacks the entry could never win either (its log is behind), and
    /// the cluster would stall. As a candidate it counts only the votes of
    /// its configuration's voters, never its own.
    pub(super) fn may_campaign(&self) -> bool {
        let me = self.cfg.id;
        if self.is_voter() {
            return true;
        }
        let latest = self.log.membership_index();
        latest > self.log.commit()
            && latest > self.log.snapshot().index
            && !self.log.membership().is_empty()
            && {
                let before = self.log.membership_at(latest - 1);
                let before = if before.is_empty() {
                    Membership::first(self.cfg.voters)
                } else {
                    before
                };
                before.is_voter(me)
            }
    }

    /// Whether this member may answer `from`'s (pre-)vote request at all:
    /// the candidate must be a member (voter or learner) of the
    /// configuration in force here. A removed member is refused without a
    /// term change. A learner here may be a voter in a configuration this
    /// member has not received yet, and refusing it could leave no member
    /// able to win (thesis §4.2.2), so it gets the ordinary checks. This
    /// member's own place in its configuration is not consulted either.
    pub(super) fn may_grant_votes_to(&self, from: NodeId) -> bool {
        self.membership().contains(from)
    }
}
