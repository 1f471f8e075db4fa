//! The membership calls of the `kvstore.v1.Cluster` service: list, add (as
//! a learner), promote and remove, by pod name.

use std::time::Duration;

use tonic::Status;

use super::kv::header;
use crate::identity::PodName;
use crate::node::NodeHandle;
use crate::proto::kv::{Member, MemberChangeResponse, MemberListResponse};
use crate::raft::{MembershipChange, NodeId};

/// The members as `node` knows them, with the leader's view of each one's
/// progress when `node` leads.
pub fn members(node: &NodeHandle) -> Vec<Member> {
    let status = node.status();
    status
        .membership
        .members()
        .map(|ordinal| {
            let progress = status.peers.iter().find(|p| p.id == ordinal);
            let is_me = ordinal == node.name().ordinal;
            Member {
                name: node.name().sibling(ordinal).to_string(),
                ordinal,
                learner: status.membership.is_learner(ordinal),
                match_revision: progress.map_or(0, |p| p.match_index),
                reachable: is_me || progress.is_some_and(|p| p.reachable),
                leader: status.leader == Some(ordinal),
            }
        })
        .collect()
}

/// `MemberList`.
pub fn list(node: &NodeHandle) -> MemberListResponse {
    MemberListResponse {
        header: Some(header(node, node.applied())),
        members: members(node),
        desired_replicas: node.desired_replicas().unwrap_or(0),
    }
}

/// The ordinal `name` names, if it is a pod of this node's StatefulSet.
fn ordinal_of(node: &NodeHandle, name: &str) -> Result<NodeId, Status> {
    let pod = PodName::parse(name).map_err(|e| {
        Status::invalid_argument(format!(
            "{name:?} is not a pod name of the form {}-<ordinal>: {e}",
            node.name().set
        ))
    })?;
    if pod.set != node.name().set {
        return Err(Status::invalid_argument(format!(
            "{name:?} is not a pod of StatefulSet {:?} (its pods are {}-0, {}-1, ...)",
            node.name().set,
            node.name().set,
            node.name().set
        )));
    }
    Ok(pod.ordinal)
}

/// `MemberAdd`, `MemberPromote` and `MemberRemove`: the change `make`
/// builds for the named pod, committed through the leader.
pub async fn change(
    node: &NodeHandle,
    name: &str,
    make: fn(NodeId) -> MembershipChange,
    timeout: Duration,
) -> Result<MemberChangeResponse, Status> {
    let change = make(ordinal_of(node, name)?);
    let index = node.change_membership(change, timeout).await?;
    // The change is committed. Answer with the configuration it made, as
    // this node sees it once its log holds the change (a follower may lag
    // a moment); if that takes too long, answer with what it has rather
    // than an error a client could take for "not done".
    let mut status = node.status_changes();
    let _ = tokio::time::timeout(timeout, status.wait_for(|s| s.last_index >= index)).await;
    Ok(MemberChangeResponse {
        header: Some(header(node, index)),
        members: members(node),
    })
}
