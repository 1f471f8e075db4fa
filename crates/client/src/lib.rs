//! A client for kvstore clusters, used by `kvctl`, the demo, the benchmarks
//! and the tests.
//!
//! It holds a list of endpoints and talks to one at a time. When a node
//! answers UNAVAILABLE (no leader yet, shutting down, catching up) or cannot
//! be reached, the client retries with capped exponential backoff, moving to
//! the endpoint that names the leader in its hint if it has one, else to the
//! next endpoint. Host names are resolved again at every reconnect, so a pod
//! that comes back with a new IP is found by its name.
//!
//! Retried writes: UNAVAILABLE can mean that a write's outcome is unknown
//! (the leader was lost mid-commit, or the connection broke after the request
//! was sent); the write may have been applied. By default
//! ([`WriteRetry::Safe`]) a write is retried only when it certainly did not
//! apply, and an unknown outcome is returned to the caller
//! ([`ClientError::outcome_unknown`]), who knows whether repeating it is
//! harmless (a put of the same value) or not (a compare-and-swap).
//!
//! Membership changes ([`Client::member_add`], [`Client::member_promote`],
//! [`Client::member_remove`]) are never harmless to repeat: a second add of
//! a member that was added is refused. They are retried only when the answer
//! says that nothing changed (UNAVAILABLE from a node that does not lead or
//! knows no leader, or no connection at all), whatever
//! [`RetryPolicy::writes`] says short of [`WriteRetry::Never`]; every other
//! error, DEADLINE_EXCEEDED included, goes back to the caller as it came.

use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Status};

pub mod backoff;
mod classify;
mod error;
mod members;
pub mod peers;
pub mod poll;
pub mod snapshot_file;
mod tls;
mod watch;

pub use classify::{certainly_not_applied, connect_failed, membership_change_retryable};
pub use error::ClientError;
pub use tls::{endpoint, TlsOptions};
pub use watch::ResumingWatch;

use backoff::Backoff;
use kvstore_proto::kv::cluster_client::ClusterClient;
use kvstore_proto::kv::kv_client::KvClient;
use kvstore_proto::kv::maintenance_client::MaintenanceClient;
use kvstore_proto::kv::{
    request_op, Compare, CompareResult, CompareTarget, Consistency, DeleteRequest, DeleteResponse,
    GetRequest, GetResponse, KeyValue, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
    TransferLeadershipRequest, TxnRequest, TxnResponse, WatchRequest, WatchResponse,
};
use kvstore_proto::LEADER_METADATA;

/// When a failed write is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteRetry {
    /// Only when it certainly did not apply (no leader yet, the node could not
    /// be reached, a new leader replaced the entry).
    Safe,
    /// Also when its outcome is unknown: it may apply twice.
    Always,
    /// Never.
    Never,
}

/// What a request does, which decides which of its failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    /// Changes nothing: every retryable failure is retried.
    Read,
    /// A key-value write: retried as [`RetryPolicy::writes`] says.
    Write,
    /// A membership change: retried only when it certainly changed nothing
    /// ([`membership_change_retryable`]), since repeating one that was made
    /// is refused (a member already, not a member).
    MembershipChange,
}

/// When to retry.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Give up after this long.
    pub budget: Duration,
    /// The first backoff.
    pub initial_backoff: Duration,
    /// The largest backoff.
    pub max_backoff: Duration,
    /// Which failed writes to retry (see the module docs).
    pub writes: WriteRetry,
}

impl RetryPolicy {
    /// The delays between retries: from `initial_backoff` up to
    /// `max_backoff`, jittered so that clients that lost the same leader do
    /// not come back in lockstep.
    fn backoff(&self) -> Backoff {
        Backoff::new(
            self.initial_backoff,
            self.max_backoff.max(self.initial_backoff),
        )
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
            writes: WriteRetry::Safe,
        }
    }
}

/// A connection to a kvstore cluster.
#[derive(Clone)]
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    current: usize,
    policy: RetryPolicy,
    request_timeout: Duration,
    tls: Option<TlsOptions>,
}

pub(crate) fn retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    ) || (status.code() == Code::Internal && status.message().contains("transport"))
}

impl Client {
    /// A client for `endpoints` (`host:port`, comma lists split by the
    /// caller). Connections are made lazily.
    pub fn new(
        endpoints: &[String],
        policy: RetryPolicy,
        request_timeout: Duration,
    ) -> Result<Client, ClientError> {
        Self::with_tls(endpoints, policy, request_timeout, None)
    }

    /// A client for `endpoints` over TLS when `tls` is given.
    pub fn with_tls(
        endpoints: &[String],
        policy: RetryPolicy,
        request_timeout: Duration,
        tls: Option<&TlsOptions>,
    ) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::BadEndpoint(
                String::new(),
                "no endpoints given".into(),
            ));
        }
        let mut channels = Vec::new();
        for e in endpoints {
            let endpoint = endpoint(e, tls)?
                .connect_timeout(Duration::from_secs(2))
                .timeout(request_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true);
            channels.push(endpoint.connect_lazy());
        }
        Ok(Client {
            endpoints: endpoints.to_vec(),
            channels,
            current: 0,
            policy,
            request_timeout,
            tls: tls.cloned(),
        })
    }

    /// The TLS this client connects with, if any.
    pub fn tls(&self) -> Option<&TlsOptions> {
        self.tls.as_ref()
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channels[self.current].clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// A Cluster client for endpoint `i`.
    pub fn cluster_at(&self, i: usize) -> ClusterClient<Channel> {
        ClusterClient::new(self.channels[i].clone())
    }

    /// Moves to the endpoint that names `leader`, or to the next one.
    fn rotate(&mut self, leader_hint: Option<&str>) {
        if let Some(leader) = leader_hint.filter(|l| !l.is_empty()) {
            if let Some(i) = self.endpoints.iter().position(|e| host_names(e, leader)) {
                if i != self.current {
                    self.current = i;
                    return;
                }
            }
        }
        self.current = (self.current + 1) % self.channels.len();
    }

    /// A Cluster client for the current endpoint.
    fn cluster(&self) -> ClusterClient<Channel> {
        self.cluster_at(self.current)
    }

    /// Runs a KV `call` (a write if `write`) with [`Client::retrying`].
    async fn with_retry<T, F, Fut>(&mut self, write: bool, call: F) -> Result<T, ClientError>
    where
        F: FnMut(KvClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let request = if write { Request::Write } else { Request::Read };
        self.retrying(request, Client::kv, call).await
    }

    /// Whether a `request` that failed with `status` may be sent again.
    fn may_retry(&self, request: Request, status: &Status) -> bool {
        match request {
            Request::Read => retryable(status),
            Request::Write => {
                retryable(status)
                    && match self.policy.writes {
                        WriteRetry::Always => true,
                        WriteRetry::Safe => certainly_not_applied(status),
                        WriteRetry::Never => false,
                    }
            }
            Request::MembershipChange => {
                self.policy.writes != WriteRetry::Never && membership_change_retryable(status)
            }
        }
    }

    /// Runs `call` on the service `stub` makes for the current endpoint,
    /// retrying the failures [`Client::may_retry`] allows on other endpoints
    /// with backoff until the budget runs out.
    async fn retrying<S, T, F, Fut>(
        &mut self,
        request: Request,
        stub: fn(&Client) -> S,
        mut call: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(S) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + self.policy.budget;
        let mut backoff = self.policy.backoff();
        let mut delay = backoff.next_delay();
        let mut attempts = 0usize;
        loop {
            attempts += 1;
            // Bound each attempt as a whole: a name lookup is not covered by
            // the channel's own timeouts.
            let attempt = match tokio::time::timeout(self.request_timeout, call(stub(self))).await {
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded("the request timed out")),
            };
            match attempt {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) => {
                    if !self.may_retry(request, &status) || Instant::now() + delay > deadline {
                        return Err(self.final_error(status, attempts));
                    }
                    let hint = status
                        .metadata()
                        .get(LEADER_METADATA)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    self.rotate(hint.as_deref());
                    // Try each endpoint once quickly before backing off.
                    if attempts.is_multiple_of(self.channels.len()) {
                        tokio::time::sleep(delay).await;
                        delay = backoff.next_delay();
                    }
                }
            }
        }
    }

    fn final_error(&self, status: Status, attempts: usize) -> ClientError {
        if status.code() == Code::Unavailable
            && connect_failed(&status)
            && attempts >= self.channels.len()
        {
            ClientError::Unreachable {
                endpoints: self.endpoints.join(","),
                last: connection_reason(&status),
            }
        } else {
            ClientError::Status(status)
        }
    }

    /// Sets `key` to `value`.
    pub async fn put(
        &mut self,
        key: impl Into<bytes::Bytes>,
        value: impl Into<bytes::Bytes>,
    ) -> Result<PutResponse, ClientError> {
        let req = PutRequest {
            key: key.into(),
            value: value.into(),
            prev_kv: false,
        };
        self.put_request(req).await
    }

    /// A put with every option.
    pub async fn put_request(&mut self, req: PutRequest) -> Result<PutResponse, ClientError> {
        self.with_retry(true, |mut kv| {
            let req = req.clone();
            async move { kv.put(req).await }
        })
        .await
    }

    /// Reads `key`.
    pub async fn get(
        &mut self,
        key: impl Into<bytes::Bytes>,
        consistency: Consistency,
    ) -> Result<GetResponse, ClientError> {
        let req = GetRequest {
            key: key.into(),
            consistency: consistency as i32,
            min_revision: 0,
        };
        self.get_request(req).await
    }

    /// A get with every option.
    pub async fn get_request(&mut self, req: GetRequest) -> Result<GetResponse, ClientError> {
        self.with_retry(false, |mut kv| {
            let req = req.clone();
            async move { kv.get(req).await }
        })
        .await
    }

    /// Deletes a key, range or prefix.
    pub async fn delete(&mut self, req: DeleteRequest) -> Result<DeleteResponse, ClientError> {
        self.with_retry(true, |mut kv| {
            let req = req.clone();
            async move { kv.delete(req).await }
        })
        .await
    }

    /// Reads a range.
    pub async fn range(&mut self, req: RangeRequest) -> Result<RangeResponse, ClientError> {
        self.with_retry(false, |mut kv| {
            let req = req.clone();
            async move { kv.range(req).await }
        })
        .await
    }

    /// Reads the keys in [`start`, `end`) (`end` empty: to the end of the
    /// keyspace), page by page, up to `limit` keys. Each page is read at its
    /// own revision.
    pub async fn scan(
        &mut self,
        start: bytes::Bytes,
        end: bytes::Bytes,
        limit: u64,
        consistency: Consistency,
        keys_only: bool,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let mut out = Vec::new();
        let mut next = start;
        while (out.len() as u64) < limit {
            let page = self
                .range(RangeRequest {
                    key: next.clone(),
                    range_end: end.clone(),
                    prefix: false,
                    limit: (limit - out.len() as u64).min(1000),
                    consistency: consistency as i32,
                    min_revision: 0,
                    keys_only,
                })
                .await?;
            let more = page.more;
            out.extend(page.kvs);
            match out.last() {
                Some(last) if more => {
                    let mut after = last.key.to_vec();
                    after.push(0);
                    next = after.into();
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// Runs a transaction.
    pub async fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, ClientError> {
        self.with_retry(true, |mut kv| {
            let req = req.clone();
            async move { kv.txn(req).await }
        })
        .await
    }

    /// Sets `key` to `new` if its value is `expected` (or, with `expected`
    /// `None`, if it does not exist). Returns whether it did.
    pub async fn compare_and_swap(
        &mut self,
        key: impl Into<bytes::Bytes>,
        expected: Option<bytes::Bytes>,
        new: impl Into<bytes::Bytes>,
    ) -> Result<TxnResponse, ClientError> {
        let key = key.into();
        let compare = match expected {
            Some(value) => Compare {
                key: key.clone(),
                target: CompareTarget::Value as i32,
                result: CompareResult::Equal as i32,
                value,
                number: 0,
            },
            None => Compare {
                key: key.clone(),
                target: CompareTarget::Version as i32,
                result: CompareResult::Equal as i32,
                value: Default::default(),
                number: 0,
            },
        };
        let req = TxnRequest {
            compare: vec![compare],
            success: vec![RequestOp {
                request: Some(request_op::Request::Put(PutRequest {
                    key: key.clone(),
                    value: new.into(),
                    prev_kv: false,
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::Range(RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        };
        self.txn(req).await
    }

    /// A watch that reopens itself on another node when its node goes
    /// away, and delivers every matching change exactly once and in order
    /// (see [`ResumingWatch`]). A watch "from now" (start revision 0) is
    /// pinned to the revision after the current one first.
    pub async fn watch_resuming(&self, req: WatchRequest) -> Result<ResumingWatch, ClientError> {
        ResumingWatch::start(self.clone(), req).await
    }

    /// Opens a watch stream (no retry: a broken stream is the caller's to
    /// resume; [`Client::watch_resuming`] does that).
    pub async fn watch(
        &mut self,
        req: WatchRequest,
    ) -> Result<tonic::Streaming<WatchResponse>, ClientError> {
        let mut attempts = 0;
        let mut backoff = self.policy.backoff();
        loop {
            attempts += 1;
            let mut kv = KvClient::new(self.channels[self.current].clone());
            match kv.watch(req.clone()).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(status) if retryable(&status) && attempts < self.channels.len() * 3 => {
                    self.rotate(None);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(status) => return Err(self.final_error(status, attempts)),
            }
        }
    }

    /// Opens a `Maintenance.Snapshot` stream on the first endpoint that
    /// takes it, trying the others (with backoff, within the retry budget)
    /// while they answer that they cannot now (no leader, another snapshot
    /// being sent). Returns the stream and the endpoint it comes from.
    pub async fn snapshot(
        &mut self,
        consistency: Consistency,
    ) -> Result<(tonic::Streaming<SnapshotResponse>, String), ClientError> {
        let deadline = Instant::now() + self.policy.budget;
        let mut backoff = self.policy.backoff();
        let mut attempts = 0usize;
        loop {
            attempts += 1;
            let mut maintenance = MaintenanceClient::new(self.channels[self.current].clone())
                .max_decoding_message_size(16 << 20);
            let request = SnapshotRequest {
                consistency: consistency as i32,
            };
            match maintenance.snapshot(request).await {
                Ok(resp) => return Ok((resp.into_inner(), self.endpoints[self.current].clone())),
                Err(status) if retryable(&status) && Instant::now() < deadline => {
                    self.rotate(None);
                    if attempts.is_multiple_of(self.channels.len()) {
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
                Err(status) => return Err(self.final_error(status, attempts)),
            }
        }
    }

    /// The status of the node at endpoint `i`.
    pub async fn status_of(&self, i: usize) -> Result<StatusResponse, ClientError> {
        let mut c = self.cluster_at(i);
        c.status(StatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|status| self.final_error(status, self.channels.len()))
    }

    /// Asks the cluster to move leadership to `ordinal`.
    pub async fn transfer_leadership(&mut self, ordinal: u32) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.policy.budget;
        let mut backoff = self.policy.backoff();
        loop {
            let mut c = self.cluster_at(self.current);
            match c
                .transfer_leadership(TransferLeadershipRequest {
                    to_ordinal: ordinal,
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(status) if retryable(&status) && Instant::now() < deadline => {
                    self.rotate(None);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(status) => return Err(self.final_error(status, self.channels.len())),
            }
        }
    }
}

/// Whether the endpoint's host is (or starts with) the node name, as in
/// `kvstore-1.kvstore-headless.default.svc.cluster.local:7379`.
fn host_names(endpoint: &str, node: &str) -> bool {
    let host = endpoint.rsplit("://").next().unwrap_or(endpoint);
    host == node || host.starts_with(&format!("{node}.")) || host.starts_with(&format!("{node}:"))
}

/// The most useful words of a connection failure, without the stack of
/// wrapped errors.
pub(crate) fn connection_reason(status: &Status) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    let mut deepest = status.message().to_string();
    while let Some(err) = source {
        deepest = err.to_string();
        source = err.source();
    }
    deepest
}

#[cfg(test)]
mod tests;
