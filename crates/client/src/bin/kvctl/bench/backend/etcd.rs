//! The etcd backend: etcd's v3 API (`etcdserverpb`), through clients
//! generated from the etcd protos vendored under `proto/etcd/`.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::Channel;
use tonic::Status;

use kvstore_proto::etcd::etcdserverpb::cluster_client::ClusterClient;
use kvstore_proto::etcd::etcdserverpb::kv_client::KvClient;
use kvstore_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use kvstore_proto::etcd::etcdserverpb::watch_client::WatchClient;
use kvstore_proto::etcd::etcdserverpb::{
    compare, request_op, response_op, watch_request, Compare, MemberListRequest, PutRequest,
    RangeRequest, RequestOp, StatusRequest, TxnRequest, WatchCreateRequest, WatchRequest,
};
use kvstore_proto::etcd::mvccpb::event::EventType;

use super::{connect, poll_for_leader, Cas, Conn, EventStream, Expected, SetupError, View};
use crate::cli::Consistency;

/// A handle on an etcd member.
#[derive(Clone)]
pub(crate) struct Etcd {
    kv: KvClient<Channel>,
    watch: WatchClient<Channel>,
}

impl Conn for Etcd {
    fn new(channel: Channel) -> Self {
        Etcd {
            kv: KvClient::new(channel.clone()),
            watch: WatchClient::new(channel),
        }
    }

    /// Asks each endpoint's `Maintenance.Status`: the endpoint whose member
    /// id is the leader id, else the leader's first client URL from
    /// `Cluster.MemberList`.
    async fn find_leader(endpoints: &[String], timeout: Duration) -> Result<String, SetupError> {
        poll_for_leader(endpoints, timeout, |endpoint, timeout| async move {
            leader_view(&endpoint, timeout).await
        })
        .await
    }

    async fn put(&mut self, key: Bytes, value: Bytes) -> Result<(), Status> {
        self.kv
            .put(PutRequest {
                key,
                value,
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn get(&mut self, key: Bytes, consistency: Consistency) -> Result<(), Status> {
        self.kv
            .range(RangeRequest {
                key,
                serializable: matches!(consistency, Consistency::Serializable),
                ..Default::default()
            })
            .await?;
        Ok(())
    }

    async fn cas(&mut self, key: Bytes, expected: Expected, new: Bytes) -> Result<Cas, Status> {
        let compare = match expected {
            Expected::Value(value) => Compare {
                key: key.clone(),
                target: compare::CompareTarget::Value as i32,
                result: compare::CompareResult::Equal as i32,
                target_union: Some(compare::TargetUnion::Value(value)),
                ..Default::default()
            },
            // A missing key is one created at revision 0.
            Expected::Absent => Compare {
                key: key.clone(),
                target: compare::CompareTarget::Create as i32,
                result: compare::CompareResult::Equal as i32,
                target_union: Some(compare::TargetUnion::CreateRevision(0)),
                ..Default::default()
            },
        };
        let put = RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value: new,
                ..Default::default()
            })),
        };
        let read = RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key,
                ..Default::default()
            })),
        };
        let resp = self
            .kv
            .txn(TxnRequest {
                compare: vec![compare],
                success: vec![put],
                failure: vec![read],
            })
            .await?
            .into_inner();
        if resp.succeeded {
            return Ok(Cas::Swapped);
        }
        let now = resp
            .responses
            .into_iter()
            .find_map(|r| match r.response {
                Some(response_op::Response::ResponseRange(range)) => range.kvs.into_iter().next(),
                _ => None,
            })
            .map_or(Expected::Absent, |kv| Expected::Value(kv.value));
        Ok(Cas::CompareFailed(now))
    }

    /// One Watch stream per call (etcd's own client would multiplex
    /// watchers on one stream; one each is what kvstore's watchers get).
    async fn watch(&mut self, prefix: Bytes) -> Result<EventStream, Status> {
        let range_end = kvstore_proto::prefix_end(&prefix)
            .map(Bytes::from)
            // Every key: etcd's range_end of "\0".
            .unwrap_or_else(|| Bytes::from_static(b"\0"));
        let create = WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    key: prefix,
                    range_end,
                    ..Default::default()
                },
            )),
        };
        // The request side stays open: closing it could end the watch.
        let requests = futures::stream::iter([create]).chain(futures::stream::pending());
        let mut stream = self.watch.watch(requests).await?.into_inner();
        // etcd answers a create with an event-less "created" message once
        // the watcher is registered.
        match stream.message().await? {
            Some(resp) if resp.created && !resp.canceled => {}
            Some(resp) => {
                return Err(Status::failed_precondition(format!(
                    "watch not created: {}",
                    resp.cancel_reason
                )))
            }
            None => return Err(Status::unavailable("watch stream ended before created")),
        }
        Ok(Box::pin(stream.map(|batch| {
            batch.map(|resp| {
                resp.events
                    .into_iter()
                    .filter(|ev| ev.r#type == EventType::Put as i32)
                    .filter_map(|ev| ev.kv.map(|kv| kv.value))
                    .collect()
            })
        })))
    }
}

/// Asks `endpoint` who leads.
async fn leader_view(endpoint: &str, timeout: Duration) -> Result<View, SetupError> {
    let channel = connect(endpoint, timeout).await?;
    let unreachable = |s: Status| SetupError::Unreachable {
        endpoint: endpoint.to_string(),
        reason: s.to_string(),
    };
    let status = within(
        timeout,
        MaintenanceClient::new(channel.clone()).status(StatusRequest {}),
    )
    .await
    .map_err(unreachable)?;
    let member = status.header.as_ref().map_or(0, |h| h.member_id);
    if status.leader == 0 {
        return Ok(View::NoLeader);
    }
    if status.leader == member {
        return Ok(View::Leads);
    }
    let members = within(
        timeout,
        ClusterClient::new(channel).member_list(MemberListRequest::default()),
    )
    .await
    .map_err(unreachable)?;
    let url = members
        .members
        .iter()
        .find(|m| m.id == status.leader)
        .and_then(|m| m.client_ur_ls.first().cloned());
    Ok(View::Names(url))
}

/// A unary call's answer, or DEADLINE_EXCEEDED after `timeout`.
async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(timeout, call).await {
        Ok(answer) => answer.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("timed out")),
    }
}
