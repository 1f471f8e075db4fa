//! The scaling controller: the configuration follows the replica count the
//! StatefulSet asks for (module documentation of [`crate::desired`] for
//! where that count comes from, and why nothing but `spec.replicas` is ever
//! taken for a scale-down).
//!
//! Every member runs it; only the leader acts, one change at a time, each
//! after the previous one committed:
//!
//! 1. a learner below the count that has caught up is promoted;
//! 2. a member at or above the count is removed, highest ordinal first
//!    (the core refuses a removal that would leave fewer live voters than a
//!    quorum; the controller retries later). The controller never has the
//!    leader remove itself: it hands leadership to the lowest caught-up
//!    voter first, and the new leader removes it (a leader removing itself
//!    is safe in the core, but a crash half-way through leaves the log's
//!    only copy of the change with the member that no longer counts, and
//!    only rule 7 of the core keeps that live). A leader stopped by a
//!    scale-down whose handover fails does remove itself on its way out;
//! 3. a missing ordinal below the count is added as a learner, lowest
//!    first. A learner costs nothing to quorum, so it is added before its
//!    pod even answers; it is promoted once it has caught up.
//!
//! A pod that is not a member and hears from no leader asks to join: it
//! sends the leader (found, like any peer, by its DNS name; a follower it
//! reaches first names the leader) a request to add it as a learner
//! ([`ask_to_join`]). The leader's controller would add it anyway once it
//! reads the new count; asking makes joining independent of that read.
//!
//! A member whose pod is being deleted by a scale-down also asks to be
//! removed on its way out ([`leave_if_scaled_away`]), so that the removal is
//! committed before it stops even if the leader's controller has not got to
//! it yet.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::status::RaftStatus;
use super::NodeHandle;
use crate::desired::ReplicaSource;
use crate::error::Error;
use crate::raft::{MembershipChange, NodeId, Role, CAUGHT_UP_LAG};

/// How often the desired count is read and the configuration compared.
const PERIOD: Duration = Duration::from_millis(250);
/// How long one change may take to commit.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the leader does next to bring the configuration to `desired`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// A membership change.
    Change(MembershipChange),
    /// Hand leadership to this voter: the leader itself is to be removed.
    HandOver(NodeId),
}

/// The next step toward `desired` replicas, seen from the leader's status;
/// `None` when the configuration matches or must wait (a change in flight,
/// a learner still catching up, no successor to hand over to).
pub fn next_step(me: NodeId, status: &RaftStatus, desired: u32) -> Option<Step> {
    if status.role != Role::Leader || !status.membership_committed || desired == 0 {
        return None;
    }
    let m = status.membership;
    let caught_up = |id: NodeId| {
        status.peers.iter().any(|p| {
            p.id == id
                && p.voter
                && p.reachable
                && p.replicating
                && p.match_index + CAUGHT_UP_LAG >= status.commit
        })
    };
    if let Some(l) = m.learners().find(|&l| l < desired && caught_up(l)) {
        return Some(Step::Change(MembershipChange::Promote(l)));
    }
    if let Some(extra) = m.members().filter(|&n| n >= desired).max() {
        if extra != me {
            return Some(Step::Change(MembershipChange::Remove(extra)));
        }
        let successor = m
            .voters()
            .filter(|&v| v != me && v < desired)
            .find(|&v| caught_up(v))?;
        return Some(Step::HandOver(successor));
    }
    (0..desired)
        .find(|&n| !m.contains(n))
        .map(|n| Step::Change(MembershipChange::AddLearner(n)))
}

/// Runs the controller until `stop`.
pub async fn run(node: NodeHandle, source: ReplicaSource, stop: CancellationToken) {
    let mut last_error: Option<String> = None;
    let mut last_refusal: Option<String> = None;
    let mut last_read: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        if node.is_stopping() {
            return;
        }
        let due = last_read.is_none_or(|t| t.elapsed() >= source.poll_interval());
        let read = if due {
            last_read = Some(Instant::now());
            Some(source.read().await)
        } else {
            None
        };
        match read {
            None => {}
            Some(Ok(n)) => {
                if node.desired_replicas() != Some(n) {
                    tracing::info!(desired = n, "desired replica count");
                }
                node.set_desired_replicas(n);
                last_error = None;
            }
            Some(Err(e)) => {
                let text = e.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!(error = %text, "cannot read the desired replica count; keeping the last one");
                }
                last_error = Some(text);
            }
        }
        let Some(desired) = node.desired_replicas() else {
            continue;
        };
        let status = node.status();
        let me = node.name().ordinal;
        if me < desired && !status.membership.contains(me) && status.leader.is_none() {
            if let Err(e) = ask_to_join(&node).await {
                tracing::debug!(error = %e, "asking to join");
            }
            continue;
        }
        let Some(step) = next_step(me, &status, desired) else {
            continue;
        };
        match take_step(&node, step).await {
            Ok(()) => last_refusal = None,
            Err(e) => {
                let text = format!("{step:?}: {e}");
                if last_refusal.as_ref() != Some(&text) {
                    tracing::info!(refused = %text, "membership step not taken yet; retrying");
                }
                last_refusal = Some(text);
            }
        }
    }
}

async fn take_step(node: &NodeHandle, step: Step) -> Result<(), Error> {
    let started = Instant::now();
    match step {
        Step::Change(change) => {
            let index = node.change_membership(change, CHANGE_TIMEOUT).await?;
            tracing::info!(
                %change,
                index,
                took_ms = started.elapsed().as_millis() as u64,
                membership = %node.status().membership,
                "membership change committed"
            );
        }
        Step::HandOver(to) => {
            tracing::info!(
                to,
                "this leader is beyond the desired replica count: handing over before it is removed"
            );
            node.transfer_leadership(to, CHANGE_TIMEOUT).await?;
        }
    }
    Ok(())
}

/// Asks the leader to add this pod as a learner: each voter this pod knows
/// of in turn (a follower answers with the leader's name, which is asked
/// next). Done once the leader has added it (or it was a member already).
pub async fn ask_to_join(node: &NodeHandle) -> Result<(), Error> {
    let me = node.name().ordinal;
    let command =
        crate::state::command::MemberChange::from_change(MembershipChange::AddLearner(me));
    let mut candidates: Vec<NodeId> = node
        .status()
        .membership
        .voters()
        .filter(|&v| v != me)
        .collect();
    let mut last = Error::NoLeader;
    let mut asked = 0;
    while let Some(peer) = candidates.pop() {
        asked += 1;
        if asked > 8 {
            break;
        }
        match node.forward_write_to(peer, command.encode()).await {
            Ok(result) => {
                tracing::info!(
                    leader = peer,
                    index = result.revision,
                    "asked the leader to join: added as a learner"
                );
                return Ok(());
            }
            Err(Error::Unavailable {
                leader: Some(name), ..
            }) => {
                if let Ok(pod) = crate::identity::PodName::parse(&name) {
                    candidates.push(pod.ordinal);
                }
                last = Error::NoLeader;
            }
            // Already a member (the controller was first): done.
            Err(Error::FailedPrecondition(reason)) if reason.contains("already a member") => {
                return Ok(())
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// On a graceful stop: if this member's ordinal is at or above the desired
/// count (its pod is being deleted by a scale-down) and it is still a
/// member, has the leader remove it and waits, within `timeout`, for the
/// removal to commit. The count is read afresh: the StatefulSet deletes a
/// pod right after spec.replicas changes, before the controller's next
/// read, and the next pod only once this one has exited — so leaving here
/// is what keeps every removal ahead of the pod's exit.
pub async fn leave_if_scaled_away(node: &NodeHandle, source: &ReplicaSource, timeout: Duration) {
    let me = node.name().ordinal;
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), source.read()).await {
        node.set_desired_replicas(n);
    }
    let Some(desired) = node.desired_replicas() else {
        return;
    };
    if me < desired || !node.status().membership.contains(me) {
        return;
    }
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match node
            .change_membership(MembershipChange::Remove(me), left)
            .await
        {
            Ok(index) => {
                return tracing::info!(
                    index,
                    took_ms = started.elapsed().as_millis() as u64,
                    "removed from the configuration before stopping (scaled down)"
                )
            }
            // The leader's controller was first.
            Err(Error::NotMember(_)) => {
                return tracing::info!("already removed from the configuration (scaled down)")
            }
            // Another change is in flight: wait for it.
            Err(Error::FailedPrecondition(_)) if Instant::now() + PERIOD < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return tracing::warn!(error = %e, "could not leave the configuration before stopping")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::status::PeerProgress;
    use crate::raft::{Membership, Voting};

    fn status(m: Membership, peers: &[(NodeId, u64)]) -> RaftStatus {
        RaftStatus {
            role: Role::Leader,
            term: 2,
            leader: Some(0),
            commit: 1000,
            leader_commit: 1000,
            last_index: 1000,
            first_index: 1,
            voting: Voting::Enabled,
            transferee: None,
            peers: peers
                .iter()
                .map(|&(id, match_index)| PeerProgress {
                    id,
                    match_index,
                    replicating: true,
                    voter: true,
                    reachable: true,
                    learner: m.is_learner(id),
                })
                .collect(),
            membership: m,
            membership_committed: true,
        }
    }

    /// 3 -> 5: add 3, promote it once caught up, then 4.
    #[test]
    fn scaling_up_adds_learners_and_promotes_them_once_caught_up() {
        let m = Membership::first(3);
        let s = status(m, &[(1, 1000), (2, 1000)]);
        assert_eq!(
            next_step(0, &s, 5),
            Some(Step::Change(MembershipChange::AddLearner(3)))
        );
        let m = Membership::new([0, 1, 2], [3]);
        let behind = status(m, &[(1, 1000), (2, 1000), (3, 10)]);
        assert_eq!(
            next_step(0, &behind, 5),
            Some(Step::Change(MembershipChange::AddLearner(4))),
            "a learner still catching up is not promoted; the next one is added"
        );
        let caught_up = status(m, &[(1, 1000), (2, 1000), (3, 1000)]);
        assert_eq!(
            next_step(0, &caught_up, 5),
            Some(Step::Change(MembershipChange::Promote(3)))
        );
        let mut in_flight = caught_up.clone();
        in_flight.membership_committed = false;
        assert_eq!(next_step(0, &in_flight, 5), None, "one change at a time");
    }

    /// 5 -> 3: remove 4, then 3; a leader beyond the count hands over.
    #[test]
    fn scaling_down_removes_the_highest_ordinal_first() {
        let m = Membership::first(5);
        let s = status(m, &[(1, 1000), (2, 1000), (3, 1000), (4, 1000)]);
        assert_eq!(
            next_step(0, &s, 3),
            Some(Step::Change(MembershipChange::Remove(4)))
        );
        let led_by_4 = status(m, &[(0, 1000), (1, 1000), (2, 1000), (3, 1000)]);
        assert_eq!(next_step(4, &led_by_4, 3), Some(Step::HandOver(0)));
        let done = status(Membership::first(3), &[(1, 1000), (2, 1000)]);
        assert_eq!(next_step(0, &done, 3), None);
    }
}
