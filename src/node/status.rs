//! The replication state the services read: role, term, leader, progress;
//! whether this member has caught up and should receive traffic; who should
//! take over on a graceful stop.

use std::time::Duration;

use super::NodeHandle;
use crate::error::{Error, Result};
use crate::raft::{self, Membership, NodeId, RaftCore, Role, Voting};

/// A peer's replication progress, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// The peer's ordinal.
    pub id: NodeId,
    /// The highest index known replicated on it.
    pub match_index: u64,
    /// Whether appends are pipelined to it (it is caught up to the probe).
    pub replicating: bool,
    /// Whether it may vote.
    pub voter: bool,
    /// Whether it answered recently.
    pub reachable: bool,
    /// Whether it is a learner (receives the log, does not vote).
    pub learner: bool,
}

/// The replication state, published by the replication thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    /// This member's role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The known leader.
    pub leader: Option<NodeId>,
    /// The commit index.
    pub commit: u64,
    /// The leader's commit index as this member knows it (its own when it
    /// leads).
    pub leader_commit: u64,
    /// The last log index.
    pub last_index: u64,
    /// The first index still in the log.
    pub first_index: u64,
    /// Whether this member may vote.
    pub voting: Voting,
    /// Where leadership is being handed, if anywhere.
    pub transferee: Option<NodeId>,
    /// Followers' progress (leader only).
    pub peers: Vec<PeerProgress>,
    /// The configuration this member uses.
    pub membership: Membership,
    /// Whether the last configuration change in this member's log is
    /// committed (no change is in flight).
    pub membership_committed: bool,
}

impl RaftStatus {
    /// The status of `core` now.
    pub fn of(core: &RaftCore) -> RaftStatus {
        let heartbeat = core.config().heartbeat_ticks;
        let membership = core.membership();
        let peers = membership
            .members()
            .filter(|&p| p != core.id())
            .filter_map(|p| core.progress(p).map(|pr| (p, pr)))
            .map(|(id, pr)| PeerProgress {
                id,
                match_index: pr.match_index,
                replicating: pr.state == raft::ReplicationState::Replicate,
                voter: pr.voter,
                reachable: pr.silent_ticks <= 4 * heartbeat,
                learner: membership.is_learner(id),
            })
            .collect();
        RaftStatus {
            role: core.role(),
            term: core.term(),
            leader: core.leader(),
            commit: core.log().commit(),
            leader_commit: core.leader_commit(),
            last_index: core.log().last_index(),
            first_index: core.log().first_index(),
            voting: core.voting(),
            transferee: core.transferee(),
            peers,
            membership,
            membership_committed: core.log().membership_index() <= core.log().commit(),
        }
    }
}

impl NodeHandle {
    /// The lowest-ordinal follower that is a voter, reachable and (nearly)
    /// caught up (leader only): the target of a graceful handover.
    pub fn best_successor(&self) -> Option<NodeId> {
        let status = self.status();
        if status.role != Role::Leader {
            return None;
        }
        status
            .peers
            .iter()
            // Under load a healthy follower trails the commit index by a few
            // entries; the transfer brings it fully up to date first.
            .filter(|p| {
                p.voter
                    && !p.learner
                    && status.membership.is_voter(p.id)
                    && p.reachable
                    && p.replicating
                    && p.match_index + crate::raft::CAUGHT_UP_LAG >= status.commit
            })
            .map(|p| p.id)
            .min()
    }

    /// Whether this node has caught up since it started: it has applied the
    /// commit index the leader announced when this node first heard from it.
    /// A node that came back with an empty volume has not, until the
    /// leader's data has reached it; it must not answer reads as if the data
    /// it has not received did not exist.
    pub fn caught_up(&self) -> bool {
        let target = match self.0.catch_up_to.get() {
            Some(&target) => target,
            None => {
                let status = self.status();
                if status.leader.is_none() {
                    return false;
                }
                *self.0.catch_up_to.get_or_init(|| status.leader_commit)
            }
        };
        self.applied() >= target
    }

    /// Waits, until `timeout`, for this node to have caught up since it
    /// started (see [`NodeHandle::caught_up`]).
    pub async fn wait_caught_up(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut status = self.0.status.clone();
        let mut applied = self.0.applied.clone();
        loop {
            if self.caught_up() {
                return Ok(());
            }
            if self.is_stopping() {
                return Err(Error::ShuttingDown);
            }
            let changed = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    r = status.changed() => r.is_ok(),
                    r = applied.changed() => r.is_ok(),
                }
            })
            .await;
            match changed {
                Ok(true) => {}
                Ok(false) => return Err(Error::ShuttingDown),
                Err(_) => {
                    let status = self.status();
                    return Err(Error::Unavailable {
                        reason: format!(
                            "this member is catching up with the leader (applied {} of {}); retry, or read elsewhere",
                            self.applied(),
                            self.0.catch_up_to.get().copied().unwrap_or(status.leader_commit)
                        ),
                        leader: self.leader_name(),
                    });
                }
            }
        }
    }

    /// Whether this node should receive client traffic (readiness): it
    /// knows a leader, has caught up since it started, has applied to within
    /// `max_lag` revisions of the leader's commit index, and is not stopping.
    pub fn is_ready(&self, max_lag: u64) -> bool {
        let status = self.status();
        status.leader.is_some()
            && self.caught_up()
            && self.applied() + max_lag >= status.leader_commit
            && !self.is_stopping()
    }
}
