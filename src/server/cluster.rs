//! The `kvstore.v1.Cluster` service: status and leadership transfer.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::kv::header;
use super::members;
use crate::node::NodeHandle;
use crate::proto::kv::cluster_server::Cluster;
use crate::proto::kv::{
    MemberChangeRequest, MemberChangeResponse, MemberListRequest, MemberListResponse, PeerStatus,
    Role as ProtoRole, StatusRequest, StatusResponse, TransferLeadershipRequest,
    TransferLeadershipResponse,
};
use crate::raft::{MembershipChange, Role, Voting};

/// What discovery knows of one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirectoryEntry {
    /// The peer's ordinal.
    pub ordinal: u32,
    /// The DNS name it is reached at.
    pub dns_name: String,
    /// The address the name last resolved to.
    pub address: Option<String>,
    /// Whether it is listed in the SRV records now.
    pub in_srv: bool,
}

/// Where the status view learns peers' names and addresses (discovery).
pub trait PeerDirectory: Send + Sync + 'static {
    /// Every peer (not this node), by ordinal.
    fn entries(&self) -> Vec<DirectoryEntry>;
    /// The DNS name of `ordinal` (this node's too), without a trailing dot.
    fn dns_name(&self, ordinal: u32) -> String;
}

/// The Cluster service of one node.
#[derive(Clone)]
pub struct ClusterService {
    node: NodeHandle,
    directory: Option<Arc<dyn PeerDirectory>>,
    timeout: Duration,
    /// The lag (in revisions) within which a node counts as ready.
    ready_lag: u64,
    /// The client port every pod listens on.
    client_port: u16,
}

impl ClusterService {
    /// The service over `node`.
    pub fn new(
        node: NodeHandle,
        directory: Option<Arc<dyn PeerDirectory>>,
        timeout: Duration,
        ready_lag: u64,
        client_port: u16,
    ) -> Self {
        ClusterService {
            node,
            directory,
            timeout,
            ready_lag,
            client_port,
        }
    }
}

/// The wire form of a role.
pub fn proto_role(role: Role) -> ProtoRole {
    match role {
        Role::Follower => ProtoRole::Follower,
        Role::PreCandidate => ProtoRole::PreCandidate,
        Role::Candidate => ProtoRole::Candidate,
        Role::Leader => ProtoRole::Leader,
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let node = &self.node;
        let status = node.status();
        let dir = node.data_dir().to_path_buf();
        let data_size = tokio::task::spawn_blocking(move || crate::storage::disk_usage(&dir))
            .await
            .unwrap_or(0);
        let state = node.state();
        let directory = self
            .directory
            .as_ref()
            .map(|d| d.entries())
            .unwrap_or_default();
        let leader_last = status.last_index;
        // The members, and the pods discovery sees beyond them.
        let mut ordinals: std::collections::BTreeSet<u32> = status.membership.members().collect();
        ordinals.extend(directory.iter().filter(|e| e.in_srv).map(|e| e.ordinal));
        let peers = ordinals
            .into_iter()
            .filter(|&o| o != node.name().ordinal)
            .map(|ordinal| {
                let entry = directory.iter().find(|e| e.ordinal == ordinal);
                let progress = status.peers.iter().find(|p| p.id == ordinal);
                PeerStatus {
                    name: node.name().sibling(ordinal).to_string(),
                    ordinal,
                    dns_name: entry.map(|e| e.dns_name.clone()).unwrap_or_default(),
                    address: entry.and_then(|e| e.address.clone()).unwrap_or_default(),
                    in_srv: entry.is_some_and(|e| e.in_srv),
                    role: if status.leader == Some(ordinal) {
                        ProtoRole::Leader as i32
                    } else if status.role == Role::Leader {
                        ProtoRole::Follower as i32
                    } else {
                        ProtoRole::Unspecified as i32
                    },
                    match_revision: progress.map_or(0, |p| p.match_index),
                    lag: progress.map_or(0, |p| leader_last.saturating_sub(p.match_index)),
                    reachable: progress.is_some_and(|p| p.reachable),
                    voter: status.membership.is_voter(ordinal) && progress.is_none_or(|p| p.voter),
                    learner: status.membership.is_learner(ordinal),
                    client_address: entry
                        .and_then(|e| e.address.as_deref())
                        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                        .map(|a| std::net::SocketAddr::new(a.ip(), self.client_port).to_string())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let cluster_id = state.cluster_id();
        Ok(Response::new(StatusResponse {
            header: Some(header(node, node.applied())),
            name: node.name().to_string(),
            ordinal: node.name().ordinal,
            set_name: node.name().set.clone(),
            cluster_id: if cluster_id == 0 {
                String::new()
            } else {
                format!("{cluster_id:016x}")
            },
            role: proto_role(status.role) as i32,
            term: status.term,
            leader: node.leader_name().unwrap_or_default(),
            commit_revision: status.commit,
            applied_revision: node.applied(),
            last_revision: status.last_index,
            data_size_bytes: data_size,
            version: env!("CARGO_PKG_VERSION").to_string(),
            replicas: node.replicas(),
            peers,
            ready: node.is_ready(self.ready_lag),
            voter: status.voting == Voting::Enabled,
            oldest_revision: state.history_floor(),
            nospace_alarms: state.alarms().into_iter().collect(),
            stored_bytes: state.stored_bytes(),
            quota_bytes: node.space_policy().quota,
            voters: status.membership.voters().collect(),
            learners: status.membership.learners().collect(),
            desired_replicas: node.desired_replicas().unwrap_or(0),
            member: status.membership.contains(node.name().ordinal),
        }))
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferLeadershipRequest>,
    ) -> Result<Response<TransferLeadershipResponse>, Status> {
        let to = request.into_inner().to_ordinal;
        self.node.transfer_leadership(to, self.timeout).await?;
        Ok(Response::new(TransferLeadershipResponse {
            header: Some(header(&self.node, self.node.applied())),
        }))
    }

    async fn member_list(
        &self,
        _request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(members::list(&self.node)))
    }

    async fn member_add(
        &self,
        request: Request<MemberChangeRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let name = request.into_inner().name;
        let make = MembershipChange::AddLearner;
        members::change(&self.node, &name, make, self.timeout)
            .await
            .map(Response::new)
    }

    async fn member_promote(
        &self,
        request: Request<MemberChangeRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let name = request.into_inner().name;
        let make = MembershipChange::Promote;
        members::change(&self.node, &name, make, self.timeout)
            .await
            .map(Response::new)
    }

    async fn member_remove(
        &self,
        request: Request<MemberChangeRequest>,
    ) -> Result<Response<MemberChangeResponse>, Status> {
        let name = request.into_inner().name;
        let make = MembershipChange::Remove;
        members::change(&self.node, &name, make, self.timeout)
            .await
            .map(Response::new)
    }
}
