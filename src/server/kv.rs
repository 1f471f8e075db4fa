//! The `kvstore.v1.KV` service.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tonic::{Request, Response, Status};

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
use crate::state::command::{Command, Op, Output};

/// The KV service of one node.
#[derive(Clone)]
pub struct KvService {
    node: NodeHandle,
    limits: Limits,
    timeout: Duration,
}

impl KvService {
    /// The service over `node`, with request limits and a time limit per
    /// request.
    pub fn new(node: NodeHandle, limits: Limits, timeout: Duration) -> Self {
        KvService {
            node,
            limits,
            timeout,
        }
    }

    async fn write(&self, op: Op) -> Result<WriteResult, Error> {
        self.node.write(&Command::new(op), self.timeout).await
    }

    /// Waits until a read may be served here: a linearizable read confirms
    /// the leader's commit index and waits to apply it; any read waits for
    /// `min_revision`.
    async fn read_barrier(&self, consistency: Consistency, min_revision: u64) -> Result<(), Error> {
        let mut wait_for = min_revision;
        if consistency == Consistency::Linearizable {
            wait_for = wait_for.max(self.node.read_index(self.timeout).await?);
        }
        if wait_for > self.node.applied() {
            self.node.wait_applied(wait_for, self.timeout).await?;
        }
        Ok(())
    }
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

fn unexpected(output: &Output) -> Status {
    Status::internal(format!(
        "the write produced an unexpected result: {output:?}"
    ))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        validate::put(&self.limits, &req)?;
        let result = self.write(Op::Put(req)).await?;
        match result.output {
            Output::Put(mut resp) => {
                resp.header = Some(header(&self.node, result.revision));
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let req = request.into_inner();
        validate::key(&self.limits, &req.key)?;
        let consistency = validate::consistency(req.consistency)?;
        self.read_barrier(consistency, req.min_revision).await?;
        let node = self.node.clone();
        let (kv, revision) = off_the_runtime(move || node.state().get(&req.key)).await?;
        Ok(Response::new(GetResponse {
            header: Some(header(&self.node, revision)),
            kv,
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let req = request.into_inner();
        validate::delete(&self.limits, &req)?;
        let result = self.write(Op::Delete(req)).await?;
        match result.output {
            Output::Delete(mut resp) => {
                resp.header = Some(header(&self.node, result.revision));
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        let consistency = validate::range(&self.limits, &req)?;
        self.read_barrier(consistency, req.min_revision).await?;
        let node = self.node.clone();
        let (mut resp, revision) = off_the_runtime(move || node.state().range(&req)).await?;
        resp.header = Some(header(&self.node, revision));
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        validate::txn(&self.limits, &req)?;
        let result = self.write(Op::Txn(req)).await?;
        match result.output {
            Output::Txn(mut resp) => {
                resp.header = Some(header(&self.node, result.revision));
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
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
