//! Leadership transfer and priority return (thesis §3.10; module
//! documentation of [`crate::raft`], "Leadership transfer and priority
//! return").

use super::core::{RaftCore, RoleState};
use super::types::*;

impl RaftCore {
    /// Hands leadership to `to` (TimeoutNow once it is caught up). Proposals
    /// are refused until the handover completes or times out.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        let last = self.log.last_index();
        let leader = self.leader;
        let target_votes = self.membership().is_voter(to);
        let RoleState::Leader(l) = &mut self.role else {
            return Err(TransferError::NotLeader { leader });
        };
        if to == self.cfg.id {
            return Ok(());
        }
        let Some(pr) = l.progress.get(&to) else {
            return Err(TransferError::UnknownMember(to));
        };
        if !pr.voter || !target_votes {
            return Err(TransferError::NotVoter(to));
        }
        if l.transferee.map(|(t, _)| t) == Some(to) {
            return Ok(());
        }
        l.transferee = Some((to, 0));
        if pr.match_index == last {
            let term = self.term;
            self.send(to, term, Body::TimeoutNow);
        } else {
            self.maybe_send_append(to);
        }
        Ok(())
    }

    /// A handover the target has not completed within an election timeout
    /// is abandoned, and proposals resume.
    pub(super) fn tick_transfer(&mut self) {
        let election = self.cfg.election_ticks;
        let Some(l) = self.leading() else { return };
        if let Some((to, elapsed)) = l.transferee {
            l.transferee = (elapsed + 1 < election).then_some((to, elapsed + 1));
        }
    }

    /// Priority return: hand leadership to the lowest ordinal below ours
    /// that has been caught up and answering for a while.
    pub(super) fn maybe_return_priority(&mut self) {
        let (id, ticks) = (self.cfg.id, self.cfg.priority_return_ticks);
        if !self.cfg.priority_return {
            return;
        }
        let RoleState::Leader(l) = &self.role else {
            return;
        };
        if l.transferee.is_some() {
            return;
        }
        let target = l
            .progress
            .iter()
            .find(|(&p, pr)| p < id && pr.healthy_ticks >= ticks)
            .map(|(&p, _)| p);
        if let Some(to) = target {
            // Cannot fail: we lead, `to` is a member and a voter.
            let _ = self.transfer_leadership(to);
        }
    }

    /// Our leader asks us to campaign now (it is handing over): skip
    /// pre-vote, and mark the vote requests as a transfer.
    pub(super) fn on_timeout_now(&mut self, from: NodeId) {
        if self.leader == Some(from) && self.voting == Voting::Enabled {
            self.campaign(true);
        }
    }
}
