//! The membership calls: list, add (as a learner), promote, remove.

use tonic::transport::Channel;
use tonic::Status;

use super::{Client, ClientError, Request};
use kvstore_proto::kv::cluster_client::ClusterClient;
use kvstore_proto::kv::{
    MemberChangeRequest, MemberChangeResponse, MemberListRequest, MemberListResponse,
    ResponseHeader,
};

impl Client {
    /// The members (voters and learners) and the desired replica count.
    ///
    /// Only the leader knows how far each member has replicated and whether
    /// it answers, so an answer from a follower is followed by asking the
    /// other endpoints (the leader's first, when an endpoint names it) until
    /// one leads; if none does, the first answer is returned, its progress
    /// fields unknown (zero).
    pub async fn member_list(&mut self) -> Result<MemberListResponse, ClientError> {
        let first = self.member_list_once().await?;
        if answered_by_leader(first.header.as_ref()) {
            return Ok(first);
        }
        for _ in 1..self.channels.len() {
            let hint = first.header.as_ref().map(|h| h.leader.clone());
            self.rotate(hint.as_deref());
            // An endpoint that fails now is no reason to drop the answer
            // already in hand.
            match self.member_list_once().await {
                Ok(resp) if answered_by_leader(resp.header.as_ref()) => return Ok(resp),
                _ => {}
            }
        }
        Ok(first)
    }

    /// One MemberList, retried as any read.
    async fn member_list_once(&mut self) -> Result<MemberListResponse, ClientError> {
        self.retrying(Request::Read, Client::cluster, |mut c| async move {
            c.member_list(MemberListRequest {}).await
        })
        .await
    }

    /// Adds the pod `name` (`<set>-<ordinal>`, e.g. `kvstore-3`) as a
    /// learner: it receives the log but does not vote until promoted.
    /// Answers with the configuration after the change. Retried only when
    /// certainly not applied (see the module docs); FAILED_PRECONDITION (a
    /// member already, another change in flight) and INVALID_ARGUMENT (not a
    /// pod of this StatefulSet) come back as [`ClientError::Status`].
    pub async fn member_add(&mut self, name: &str) -> Result<MemberChangeResponse, ClientError> {
        self.member_change(name, |mut c, req| async move { c.member_add(req).await })
            .await
    }

    /// Makes the learner `name` a voter; refused (FAILED_PRECONDITION) while
    /// it has not caught up with the log. Retried as [`Client::member_add`].
    pub async fn member_promote(
        &mut self,
        name: &str,
    ) -> Result<MemberChangeResponse, ClientError> {
        self.member_change(
            name,
            |mut c, req| async move { c.member_promote(req).await },
        )
        .await
    }

    /// Removes the voter or learner `name`; refused (FAILED_PRECONDITION)
    /// for the last voter, or when fewer live voters than a quorum would
    /// remain. Retried as [`Client::member_add`].
    pub async fn member_remove(&mut self, name: &str) -> Result<MemberChangeResponse, ClientError> {
        self.member_change(name, |mut c, req| async move { c.member_remove(req).await })
            .await
    }

    /// Sends one membership change for `name` with `call`.
    async fn member_change<F, Fut>(
        &mut self,
        name: &str,
        call: F,
    ) -> Result<MemberChangeResponse, ClientError>
    where
        F: Fn(ClusterClient<Channel>, MemberChangeRequest) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<MemberChangeResponse>, Status>>,
    {
        let req = MemberChangeRequest {
            name: name.to_string(),
        };
        self.retrying(Request::MembershipChange, Client::cluster, |c| {
            call(c, req.clone())
        })
        .await
    }
}

/// Whether an answer was given by the leader itself, whose member list
/// carries each member's progress.
fn answered_by_leader(header: Option<&ResponseHeader>) -> bool {
    header.is_some_and(|h| !h.leader.is_empty() && h.leader == h.node)
}
