//! The kvstore backend: kvstore's own API (`kvstore.v1`), through the
//! generated clients.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::Channel;
use tonic::Status;

use kvstore_proto::kv::cluster_client::ClusterClient;
use kvstore_proto::kv::kv_client::KvClient;
use kvstore_proto::kv::{
    request_op, response_op, Compare, CompareResult, CompareTarget,
    Consistency as ProtoConsistency, EventType, GetRequest, PutRequest, RangeRequest, RequestOp,
    Role, StatusRequest, TxnRequest, WatchRequest,
};

use super::{connect, poll_for_leader, Cas, Conn, EventStream, Expected, SetupError, View};
use crate::cli::Consistency;

/// A handle on a kvstore node.
#[derive(Clone)]
pub(crate) struct Kvstore {
    kv: KvClient<Channel>,
}

impl Conn for Kvstore {
    fn new(channel: Channel) -> Self {
        Kvstore {
            kv: KvClient::new(channel),
        }
    }

    /// Asks each endpoint's `Cluster.Status`: the endpoint that says it
    /// leads, else the client address a node gives for the leader it names.
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
                prev_kv: false,
            })
            .await?;
        Ok(())
    }

    async fn get(&mut self, key: Bytes, consistency: Consistency) -> Result<(), Status> {
        let consistency: ProtoConsistency = consistency.into();
        self.kv
            .get(GetRequest {
                key,
                consistency: consistency as i32,
                min_revision: 0,
            })
            .await?;
        Ok(())
    }

    async fn cas(&mut self, key: Bytes, expected: Expected, new: Bytes) -> Result<Cas, Status> {
        let compare = match expected {
            Expected::Value(value) => Compare {
                key: key.clone(),
                target: CompareTarget::Value as i32,
                result: CompareResult::Equal as i32,
                value,
                number: 0,
            },
            // Every VALUE compare on a missing key is false: a missing key
            // is one at version 0.
            Expected::Absent => Compare {
                key: key.clone(),
                target: CompareTarget::Version as i32,
                result: CompareResult::Equal as i32,
                value: Bytes::new(),
                number: 0,
            },
        };
        let put = RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: key.clone(),
                value: new,
                prev_kv: false,
            })),
        };
        let read = RequestOp {
            request: Some(request_op::Request::Range(RangeRequest {
                key,
                limit: 1,
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
                Some(response_op::Response::Range(range)) => range.kvs.into_iter().next(),
                _ => None,
            })
            .map_or(Expected::Absent, |kv| Expected::Value(kv.value));
        Ok(Cas::CompareFailed(now))
    }

    async fn watch(&mut self, prefix: Bytes) -> Result<EventStream, Status> {
        // The server registers the watch before it answers with the
        // stream's headers, so changes after this returns are delivered.
        let stream = self
            .kv
            .watch(WatchRequest {
                key: prefix,
                prefix: true,
                ..Default::default()
            })
            .await?
            .into_inner();
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
    let status = tokio::time::timeout(
        timeout,
        ClusterClient::new(channel).status(StatusRequest {}),
    )
    .await
    .map_err(|_| Status::deadline_exceeded("Cluster.Status timed out"))
    .and_then(|r| r)
    .map_err(|s| SetupError::Unreachable {
        endpoint: endpoint.to_string(),
        reason: s.to_string(),
    })?
    .into_inner();
    if status.role == Role::Leader as i32 {
        return Ok(View::Leads);
    }
    if status.leader.is_empty() {
        return Ok(View::NoLeader);
    }
    let addr = status
        .peers
        .iter()
        .find(|p| p.name == status.leader && !p.client_address.is_empty())
        .map(|p| p.client_address.clone());
    Ok(View::Names(addr))
}
