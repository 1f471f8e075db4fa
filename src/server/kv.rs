//! The `kvstore.v1.KV` service.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tonic::{Request, Response, Status};

use super::error_info::LeaderHint;
use super::validate::{self, Limits};
use super::watch::watch_stream;
use crate::error::Error;
use crate::node::{NodeHandle, WriteResult};
use crate::proto::kv::kv_server::Kv;
use crate::proto::kv::{
    Consistency, DeleteRequest, DeleteResponse, GetRequest, GetResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse, WatchRequest,
    WatchResponse,
};
use crate::state::apply::RANGE_MAX_BYTES;
use crate::state::command::{Command, Op, Output};
use crate::state::keys::KeyRange;

/// The KV service of one node.
#[derive(Clone)]
pub struct KvService {
    node: NodeHandle,
    limits: Limits,
    timeout: Duration,
    hint: LeaderHint,
}

impl KvService {
    /// The service over `node`, with request limits and a time limit per
    /// request.
    pub fn new(node: NodeHandle, limits: Limits, timeout: Duration) -> Self {
        KvService {
            hint: LeaderHint::new(node.clone(), None, 7379),
            node,
            limits,
            timeout,
        }
    }

    /// Errors name the leader by its DNS name and address from
    /// `directory` (discovery), on `client_port`.
    pub fn with_directory(
        mut self,
        directory: Option<std::sync::Arc<dyn super::cluster::PeerDirectory>>,
        client_port: u16,
    ) -> Self {
        self.hint = LeaderHint::new(self.node.clone(), directory, client_port);
        self
    }

    async fn write(&self, op: Op) -> Result<WriteResult, Error> {
        self.node.write(&Command::new(op), self.timeout).await
    }
}

/// Waits until a read may be served on `node`: a linearizable read
/// confirms the leader's commit index and waits to apply it; a
/// serializable one waits until this member has caught up since it started
/// (a member back on an empty volume answers UNAVAILABLE, never "not
/// found", for data it has not received yet); any read waits for
/// `min_revision`. Backups (`Maintenance.Snapshot`) wait the same way.
pub(super) async fn read_barrier(
    node: &NodeHandle,
    consistency: Consistency,
    min_revision: u64,
    timeout: Duration,
) -> Result<(), Error> {
    let mut wait_for = min_revision;
    if consistency == Consistency::Linearizable {
        wait_for = wait_for.max(node.read_index(timeout).await?);
    } else {
        node.wait_caught_up(timeout).await?;
    }
    if wait_for > node.applied() {
        node.wait_applied(wait_for, timeout).await?;
    }
    Ok(())
}

/// The header of a response answered at `revision`.
pub fn header(node: &NodeHandle, revision: u64) -> ResponseHeader {
    let status = node.status();
    ResponseHeader {
        revision,
        node: node.name().to_string(),
        leader: status
            .leader
            .map(|l| node.name().sibling(l).to_string())
            .unwrap_or_default(),
        term: status.term,
    }
}

/// Runs a read of the state on a blocking thread: a snapshot being copied
/// holds the state for a while, and must not stall the async workers that
/// carry replication traffic.
async fn off_the_runtime<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, crate::state::StateError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => result.map_err(|e| Error::from(e).into()),
        Err(e) => Err(Status::internal(format!("read task failed: {e}"))),
    }
}

/// The most bytes of previous values a Delete with `prev_kv` returns: what
/// a range page holds.
pub const DELETE_PREV_KV_BYTES: usize = RANGE_MAX_BYTES;

fn prev_kv_limit(deleted: u64) -> String {
    let done = if deleted > 0 {
        format!("; {deleted} keys were deleted before the limit was reached")
    } else {
        String::new()
    };
    format!(
        "a delete with prev_kv returns at most {} MiB of previous values, and this range holds more: delete without prev_kv, or read the range first{done}",
        DELETE_PREV_KV_BYTES >> 20
    )
}

fn unexpected(output: &Output) -> Status {
    Status::internal(format!(
        "the write produced an unexpected result: {output:?}"
    ))
}

/// The answers, before their errors get the leader hint.
impl KvService {
    async fn answer_put(
        &self,
        request: Request<PutRequest>,
    ) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        validate::put(&self.limits, &req)?;
        let result = self.write(Op::Put(req)).await?;
        match result.output {
            Output::Put(mut resp) => {
                resp.header = Some(header(&self.node, result.revision));
                Ok(Response::new(resp))
            }
            // The NOSPACE alarm went up between the check and the commit.
            Output::Refused(refusal) => Err(Error::ResourceExhausted(refusal).into()),
            other => Err(unexpected(&other)),
        }
    }

    async fn answer_get(
        &self,
        request: Request<GetRequest>,
    ) -> Result<Response<GetResponse>, Status> {
        let req = request.into_inner();
        validate::key(&self.limits, &req.key)?;
        let consistency = validate::consistency(req.consistency)?;
        read_barrier(&self.node, consistency, req.min_revision, self.timeout).await?;
        let node = self.node.clone();
        let (kv, revision) = off_the_runtime(move || node.state().get(&req.key)).await?;
        Ok(Response::new(GetResponse {
            header: Some(header(&self.node, revision)),
            kv,
        }))
    }

    /// Deletes in steps of at most
    /// [`DELETE_STEP_KEYS`](crate::state::apply::DELETE_STEP_KEYS) keys and
    /// about [`DELETE_STEP_BYTES`](crate::state::apply::DELETE_STEP_BYTES)
    /// each (one log entry each, each atomic), so that a delete of any size
    /// takes bounded memory on every replica.
    async fn answer_delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        validate::delete(&self.limits, &req)?;
        if req.prev_kv {
            let node = self.node.clone();
            let range = KeyRange::from_request(&req.key, &req.range_end, req.prefix, true);
            let over =
                off_the_runtime(move || node.state().range_exceeds(&range, DELETE_PREV_KV_BYTES))
                    .await?;
            if over {
                return Err(Error::ResourceExhausted(prev_kv_limit(0)).into());
            }
        }
        let mut total = DeleteResponse::default();
        let mut prev_bytes = 0;
        loop {
            let result = self.write(Op::Delete(req.clone())).await?;
            let Output::Delete { response, more } = result.output else {
                return Err(unexpected(&result.output));
            };
            total.deleted += response.deleted;
            prev_bytes += response
                .prev_kvs
                .iter()
                .map(|kv| kv.key.len() + kv.value.len())
                .sum::<usize>();
            total.prev_kvs.extend(response.prev_kvs);
            total.header = Some(header(&self.node, result.revision));
            if prev_bytes > DELETE_PREV_KV_BYTES {
                // The range grew after the check above.
                return Err(Error::ResourceExhausted(prev_kv_limit(total.deleted)).into());
            }
            if !more {
                return Ok(Response::new(total));
            }
        }
    }

    async fn answer_range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        let consistency = validate::range(&self.limits, &req)?;
        read_barrier(&self.node, consistency, req.min_revision, self.timeout).await?;
        let node = self.node.clone();
        let (mut resp, revision) = off_the_runtime(move || node.state().range(&req)).await?;
        resp.header = Some(header(&self.node, revision));
        Ok(Response::new(resp))
    }

    async fn answer_txn(
        &self,
        request: Request<TxnRequest>,
    ) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        validate::txn(&self.limits, &req)?;
        if validate::txn_may_pass_bounds(&self.limits, &req) {
            // Refuse up front what the replicas would refuse, judged on
            // this member's state, so that nothing is committed for it.
            let node = self.node.clone();
            let probe = req.clone();
            if let Some(refusal) = off_the_runtime(move || node.state().dry_run_txn(&probe)).await?
            {
                return Err(Error::ResourceExhausted(refusal).into());
            }
        }
        let result = self.write(Op::Txn(req)).await?;
        match result.output {
            Output::Txn(mut resp) => {
                resp.header = Some(header(&self.node, result.revision));
                Ok(Response::new(resp))
            }
            // The state changed between the check and the commit; the
            // entry changed nothing.
            Output::Refused(refusal) => Err(Error::ResourceExhausted(refusal).into()),
            other => Err(unexpected(&other)),
        }
    }

    async fn answer_watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<<Self as Kv>::WatchStream>, Status> {
        let req = request.into_inner();
        validate::key_range(&self.limits, &req.key, &req.range_end, req.prefix)?;
        if req.key.is_empty() && !req.prefix && req.range_end.is_empty() {
            return Err(Error::InvalidArgument(
                "key is empty: name a key, a range, or set prefix".into(),
            )
            .into());
        }
        let stream = watch_stream(self.node.clone(), req)?;
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let answer = self.answer_put(request).await;
        answer.map_err(|status| self.hint.enrich(status))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let answer = self.answer_get(request).await;
        answer.map_err(|status| self.hint.enrich(status))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let answer = self.answer_delete(request).await;
        answer.map_err(|status| self.hint.enrich(status))
    }

    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let answer = self.answer_range(request).await;
        answer.map_err(|status| self.hint.enrich(status))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let answer = self.answer_txn(request).await;
        answer.map_err(|status| self.hint.enrich(status))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Errors inside the stream (OUT_OF_RANGE of a compacted start) are
        // the stream's own; the refusal to open one gets the hint.
        let answer = self.answer_watch(request).await;
        answer.map_err(|status| self.hint.enrich(status))
    }
}
