//! The peer transport: replication traffic over gRPC on the peer port.
//!
//! Outbound, each peer has one task that owns a long-lived client stream
//! (`Peer.Stream`) to it: it resolves the peer's name through discovery at
//! every (re)connect, batches queued messages into envelopes, and reconnects
//! with capped exponential backoff when the stream breaks. HTTP/2 keepalive
//! runs on every channel, so a silent peer is noticed within seconds.
//!
//! Inbound, the server hands each message to the replication thread. When a
//! stream breaks — a peer's process died and the kernel reset the connection
//! — the node is told at once (`PeerDisconnected`): that is the fast failure
//! detection that lets a follower campaign without waiting for an election
//! timeout (see `crate::raft`).
//!
//! Writes and linearizable reads on followers, snapshots and leadership
//! transfers use unary or client-streaming calls on cached channels that are
//! rebuilt whenever the peer's name resolves to a new address.

pub mod convert;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

use crate::discovery::Discovery;
use crate::error::{Error, Result};
use crate::node::{Input, NodeHandle, Peers, WriteResult};
use crate::proto::peer::peer_client::PeerClient;
use crate::proto::peer::peer_server::{Peer, PeerServer};
use crate::proto::peer::{
    forward_response, Empty, Envelope, ForwardRequest, ForwardResponse, Pair, ReadIndexRequest,
    ReadIndexResponse, SnapshotAck, SnapshotChunk, SnapshotHeader, StreamEnd, TransferRequest,
    TransferResponse,
};
use crate::raft::{Body, Message, NodeId, SnapshotMeta};
use crate::state::command::Output;

/// Messages queued per peer before new ones are dropped (the protocol
/// resends what matters).
const QUEUE: usize = 4096;
/// Messages per envelope.
const BATCH: usize = 256;
/// The largest message on the peer port: a batch of entries at their size
/// limit.
const MAX_PEER_MESSAGE: usize = 64 << 20;
/// The longest wait between reconnection attempts: a restarted pod is
/// reached again within this.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_millis(250);
/// The longest a whole snapshot transfer may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest a follower waits for the next chunk of a snapshot.
const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of state per snapshot chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("an address is a valid URI")
        .connect_timeout(Duration::from_millis(1000))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
}

fn client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE)
}

/// The gRPC implementation of [`Peers`].
pub struct GrpcPeers {
    me: NodeId,
    discovery: Arc<Discovery>,
    node: Arc<OnceLock<NodeHandle>>,
    queues: BTreeMap<NodeId, mpsc::Sender<Message>>,
    channels: Mutex<BTreeMap<NodeId, (SocketAddr, Channel)>>,
    runtime: tokio::runtime::Handle,
    /// One snapshot is frozen and sent at a time.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    /// Per follower: when the next snapshot may start, and the last backoff.
    snapshot_retry: Mutex<BTreeMap<NodeId, (Instant, Duration)>>,
}

impl GrpcPeers {
    /// Starts a sender task per peer. Call [`GrpcPeers::attach`] once the
    /// node exists.
    pub fn new(me: NodeId, replicas: u32, discovery: Arc<Discovery>) -> Arc<GrpcPeers> {
        let node = Arc::new(OnceLock::new());
        let mut queues = BTreeMap::new();
        for peer in (0..replicas).filter(|&p| p != me) {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.insert(peer, tx);
            let sender = StreamSender {
                peer,
                discovery: discovery.clone(),
                node: node.clone(),
                queue: rx,
            };
            tokio::spawn(sender.run());
        }
        Arc::new(GrpcPeers {
            me,
            discovery,
            node,
            queues,
            channels: Mutex::new(BTreeMap::new()),
            runtime: tokio::runtime::Handle::current(),
            snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
            snapshot_retry: Mutex::new(BTreeMap::new()),
        })
    }

    /// Connects the transport to its node.
    pub fn attach(&self, node: NodeHandle) {
        let _ = self.node.set(node);
    }

    fn cluster_id(&self) -> u64 {
        self.node.get().map_or(0, |n| n.state().cluster_id())
    }

    /// A channel to `peer`, rebuilt when its name resolves to a new address.
    async fn channel(&self, peer: NodeId) -> Result<Channel> {
        let addr = match self.discovery.last_address(peer) {
            Some(addr) => addr,
            None => self
                .discovery
                .resolve(peer)
                .await
                .map_err(|e| Error::Unavailable {
                    reason: e.to_string(),
                    leader: None,
                })?,
        };
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, channel)) = channels.get(&peer) {
            if *cached == addr {
                return Ok(channel.clone());
            }
        }
        let channel = endpoint(addr).connect_lazy();
        channels.insert(peer, (addr, channel.clone()));
        Ok(channel)
    }

    fn forget_channel(&self, peer: NodeId) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer);
    }

    fn peer_error(self: &Arc<Self>, peer: NodeId, status: Status) -> Error {
        if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ) {
            self.forget_channel(peer);
        }
        Error::from_peer_status(status)
    }
}

fn output_from(resp: ForwardResponse) -> Output {
    match resp.output {
        Some(forward_response::Output::Put(p)) => Output::Put(p),
        Some(forward_response::Output::Delete(response)) => Output::Delete {
            response,
            more: resp.delete_more,
        },
        Some(forward_response::Output::Txn(t)) => Output::Txn(t),
        Some(forward_response::Output::Refused(reason)) => Output::Refused(reason),
        Some(forward_response::Output::None(_)) | None => Output::None,
    }
}

/// The forwarded form of an output: (output, delete_more).
fn output_to(output: Output) -> (Option<forward_response::Output>, bool) {
    let mut more = false;
    let output = match output {
        Output::Put(p) => forward_response::Output::Put(p),
        Output::Delete { response, more: m } => {
            more = m;
            forward_response::Output::Delete(response)
        }
        Output::Txn(t) => forward_response::Output::Txn(t),
        Output::Refused(reason) => forward_response::Output::Refused(reason),
        Output::None | Output::Undecodable => forward_response::Output::None(Empty {}),
    };
    (Some(output), more)
}

impl Peers for Arc<GrpcPeers> {
    fn send(&self, msg: Message) {
        if let Some(queue) = self.queues.get(&msg.to) {
            // A full queue means the peer is unreachable or slow: drop, the
            // protocol retries.
            let _ = queue.try_send(msg);
        }
    }

    fn send_snapshot(&self, to: NodeId, term: u64) {
        let me = self.clone();
        self.runtime.spawn(async move {
            let Some(node) = me.node.get().cloned() else {
                return;
            };
            // A follower that keeps failing (down, crash-looping) is not sent
            // a full copy of the state every second: back off.
            let wait = me
                .snapshot_backoff(to)
                .saturating_duration_since(Instant::now());
            tokio::time::sleep(wait).await;
            let _guard = me.snapshot_lock.lock().await;
            let result =
                tokio::time::timeout(SNAPSHOT_TIMEOUT, me.stream_snapshot(&node, to, term))
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::Unavailable {
                            reason: format!("the transfer took longer than {SNAPSHOT_TIMEOUT:?}"),
                            leader: None,
                        })
                    });
            let index = match result {
                Ok(index) => {
                    tracing::info!(peer = to, index, "snapshot sent");
                    me.snapshot_done(to, true);
                    Some(index)
                }
                Err(e) => {
                    tracing::warn!(peer = to, error = %e, "sending a snapshot failed; will retry");
                    me.snapshot_done(to, false);
                    None
                }
            };
            node.deliver(Input::SnapshotSent { to, index });
        });
    }

    fn forward_write(
        &self,
        leader: NodeId,
        command: Bytes,
    ) -> BoxFuture<'static, Result<WriteResult>> {
        let me = self.clone();
        Box::pin(async move {
            let channel = me.channel(leader).await?;
            let req = ForwardRequest {
                cluster_id: me.cluster_id(),
                command,
            };
            match client(channel).forward(req).await {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    Ok(WriteResult {
                        revision: resp.revision,
                        output: output_from(resp),
                    })
                }
                Err(status) => Err(me.peer_error(leader, status)),
            }
        })
    }

    fn forward_read_index(&self, leader: NodeId) -> BoxFuture<'static, Result<u64>> {
        let me = self.clone();
        Box::pin(async move {
            let channel = me.channel(leader).await?;
            let req = ReadIndexRequest {
                cluster_id: me.cluster_id(),
            };
            match client(channel).read_index(req).await {
                Ok(resp) => Ok(resp.into_inner().index),
                Err(status) => match me.peer_error(leader, status) {
                    // A read changes nothing: any failure is safe to retry.
                    Error::OutcomeUnknown(reason) => Err(Error::Unavailable {
                        reason,
                        leader: None,
                    }),
                    other => Err(other),
                },
            }
        })
    }

    fn forward_transfer(&self, leader: NodeId, to: NodeId) -> BoxFuture<'static, Result<()>> {
        let me = self.clone();
        Box::pin(async move {
            let channel = me.channel(leader).await?;
            match client(channel)
                .transfer_leadership(TransferRequest { to })
                .await
            {
                Ok(_) => Ok(()),
                Err(status) => Err(me.peer_error(leader, status)),
            }
        })
    }
}

impl GrpcPeers {
    /// When the next snapshot to `to` may start.
    fn snapshot_backoff(&self, to: NodeId) -> Instant {
        let backoff = self
            .snapshot_retry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        backoff.get(&to).map_or_else(Instant::now, |(at, _)| *at)
    }

    fn snapshot_done(&self, to: NodeId, ok: bool) {
        let mut backoff = self
            .snapshot_retry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if ok {
            backoff.remove(&to);
        } else {
            let delay = backoff
                .get(&to)
                .map_or(Duration::from_millis(500), |(_, d)| {
                    (*d * 2).min(Duration::from_secs(30))
                });
            backoff.insert(to, (Instant::now() + delay, delay));
        }
    }

    async fn stream_snapshot(
        self: &Arc<Self>,
        node: &NodeHandle,
        to: NodeId,
        term: u64,
    ) -> Result<u64> {
        let task_error = |e: tokio::task::JoinError| Error::Unavailable {
            reason: format!("snapshot task: {e}"),
            leader: None,
        };
        // Reach the follower before copying the state for it.
        let addr = self
            .discovery
            .resolve(to)
            .await
            .map_err(|e| Error::Unavailable {
                reason: e.to_string(),
                leader: None,
            })?;
        let channel = endpoint(addr)
            .connect()
            .await
            .map_err(|e| Error::Unavailable {
                reason: format!("cannot reach {addr}: {e}"),
                leader: None,
            })?;
        let freezer = node.clone();
        let started = Instant::now();
        let frozen = tokio::task::spawn_blocking(move || freezer.state().freeze_snapshot())
            .await
            .map_err(task_error)??;
        let meta = frozen.meta;
        tracing::info!(
            peer = to,
            index = meta.index,
            froze_us = started.elapsed().as_micros() as u64,
            "froze a snapshot to send (no copy: applies go on)"
        );
        let header = SnapshotHeader {
            cluster_id: node.state().cluster_id(),
            from: self.me,
            to,
            term,
            index: meta.index,
            index_term: meta.term,
        };
        let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
        let producer = tokio::task::spawn_blocking(move || -> Result<()> {
            let mut header = Some(header);
            let mut total = 0u64;
            for chunk in frozen.chunks(SNAPSHOT_CHUNK) {
                let pairs: Vec<Pair> = chunk?
                    .into_iter()
                    .map(|(key, value)| Pair {
                        key: key.into(),
                        value: value.into(),
                    })
                    .collect();
                total += pairs.len() as u64;
                let msg = SnapshotChunk {
                    header: header.take(),
                    pairs,
                    last: false,
                    total_pairs: 0,
                };
                if tx.blocking_send(msg).is_err() {
                    return Ok(());
                }
            }
            // Only a stream that ends with this chunk is complete.
            let _ = tx.blocking_send(SnapshotChunk {
                header: header.take(),
                pairs: Vec::new(),
                last: true,
                total_pairs: total,
            });
            Ok(())
        });
        let sent = client(channel)
            .install_snapshot(ReceiverStream::new(rx))
            .await;
        producer.await.map_err(task_error)??;
        sent.map_err(|status| self.peer_error(to, status))?;
        Ok(meta.index)
    }
}

/// The per-peer sender: one client stream at a time, reconnecting through
/// discovery with backoff.
struct StreamSender {
    peer: NodeId,
    discovery: Arc<Discovery>,
    node: Arc<OnceLock<NodeHandle>>,
    queue: mpsc::Receiver<Message>,
}

impl StreamSender {
    async fn run(mut self) {
        let mut backoff = Duration::from_millis(50);
        let mut connected_once = false;
        loop {
            // Messages queued while disconnected are stale; drop them.
            while self.queue.try_recv().is_ok() {}
            let Some(node) = self.node.get().cloned() else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let addr = match self.discovery.resolve(self.peer).await {
                Ok(addr) => addr,
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                    continue;
                }
            };
            let channel = match endpoint(addr).connect().await {
                Ok(c) => c,
                Err(e) => {
                    // Only the end of an established stream is news (see
                    // below); a peer that stays unreachable is reported once.
                    if connected_once {
                        tracing::debug!(peer = self.peer, %addr, error = %e, "cannot connect to peer");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_millis(50);
            if !connected_once {
                tracing::info!(peer = self.peer, %addr, "connected to peer");
            }
            connected_once = true;
            let (tx, rx) = mpsc::channel::<Envelope>(64);
            let mut call =
                tokio::spawn(async move { client(channel).stream(ReceiverStream::new(rx)).await });
            loop {
                tokio::select! {
                    msg = self.queue.recv() => {
                        let Some(first) = msg else { return };
                        let mut messages = Vec::with_capacity(8);
                        messages.extend(convert::to_proto(first));
                        while messages.len() < BATCH {
                            match self.queue.try_recv() {
                                Ok(m) => messages.extend(convert::to_proto(m)),
                                Err(_) => break,
                            }
                        }
                        let envelope = Envelope { cluster_id: node.state().cluster_id(), messages };
                        if tx.send(envelope).await.is_err() {
                            break;
                        }
                    }
                    result = &mut call => {
                        if let Ok(Err(status)) = result {
                            if status.code() == tonic::Code::FailedPrecondition {
                                tracing::error!(peer = self.peer, error = %status.message(), "peer refused our messages");
                            }
                        }
                        break;
                    }
                }
            }
            call.abort();
            tracing::debug!(peer = self.peer, "stream to peer closed; reconnecting");
            // The connection broke: if the peer led, its process most likely
            // died (fast failure detection).
            node.deliver(Input::PeerDisconnected(self.peer));
        }
    }
}

/// The next chunk of a snapshot stream, waiting at most
/// [`SNAPSHOT_CHUNK_TIMEOUT`].
async fn next_chunk(
    stream: &mut tonic::Streaming<SnapshotChunk>,
) -> std::result::Result<Option<SnapshotChunk>, Status> {
    match tokio::time::timeout(SNAPSHOT_CHUNK_TIMEOUT, stream.message()).await {
        Ok(r) => r,
        Err(_) => Err(Status::deadline_exceeded("no snapshot chunk for a minute")),
    }
}

/// The peer gRPC service of one node.
pub struct PeerService {
    node: NodeHandle,
    timeout: Duration,
    /// One snapshot is received at a time.
    receiving: tokio::sync::Mutex<()>,
    /// Per peer, the number of its latest inbound stream: only the end of
    /// the latest one means the peer is gone.
    streams: Mutex<BTreeMap<NodeId, u64>>,
}

impl PeerService {
    fn check_cluster(&self, theirs: u64) -> std::result::Result<(), Status> {
        let ours = self.node.state().cluster_id();
        if theirs != 0 && ours != 0 && theirs != ours {
            tracing::error!(
                ours = format!("{ours:016x}"),
                theirs = format!("{theirs:016x}"),
                "refusing a peer from another cluster"
            );
            return Err(Status::failed_precondition(format!(
                "member of another cluster ({theirs:016x}, this one is {ours:016x})"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn stream(
        &self,
        request: Request<tonic::Streaming<Envelope>>,
    ) -> std::result::Result<Response<StreamEnd>, Status> {
        let mut stream = request.into_inner();
        let me = self.node.name().ordinal;
        // (peer, the number of this stream among the peer's streams)
        let mut from: Option<(NodeId, u64)> = None;
        let mut stopping = self.node.stopping();
        loop {
            let next = tokio::select! {
                m = stream.message() => m,
                _ = crate::server::watch::until_stopping(&mut stopping) => break,
            };
            match next {
                Ok(Some(envelope)) => {
                    self.check_cluster(envelope.cluster_id)?;
                    for msg in envelope
                        .messages
                        .into_iter()
                        .filter_map(convert::from_proto)
                    {
                        if msg.to != me {
                            continue;
                        }
                        if from.is_none() {
                            let mut streams =
                                self.streams.lock().unwrap_or_else(|e| e.into_inner());
                            let n = streams.entry(msg.from).or_insert(0);
                            *n += 1;
                            from = Some((msg.from, *n));
                        }
                        self.node.deliver(Input::Step(msg));
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        if let Some((peer, n)) = from {
            // The peer's connection ended: if it led, it is most likely gone.
            // An older stream replaced by a reconnection says nothing.
            let latest = self
                .streams
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&peer)
                .copied();
            if latest == Some(n) {
                self.node.deliver(Input::PeerDisconnected(peer));
            }
        }
        Ok(Response::new(StreamEnd {}))
    }

    async fn install_snapshot(
        &self,
        request: Request<tonic::Streaming<SnapshotChunk>>,
    ) -> std::result::Result<Response<SnapshotAck>, Status> {
        let Ok(_receiving) = self.receiving.try_lock() else {
            return Err(Status::unavailable("a snapshot is already being received"));
        };
        let mut stream = request.into_inner();
        let first = next_chunk(&mut stream)
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let header = first
            .header
            .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no header"))?;
        self.check_cluster(header.cluster_id)?;
        let node = self.node.clone();
        let mut writer = tokio::task::spawn_blocking(move || node.state().begin_install())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut next = Some(first);
        let mut pairs_total = 0u64;
        let mut complete = None;
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => match next_chunk(&mut stream).await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = self.node.state().abort_install(writer);
                        return Err(status);
                    }
                },
            };
            pairs_total += chunk.pairs.len() as u64;
            if chunk.last {
                complete = Some(chunk.total_pairs);
            }
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = chunk
                .pairs
                .into_iter()
                .map(|p| (p.key.to_vec(), p.value.to_vec()))
                .collect();
            let (back, written) = tokio::task::spawn_blocking(move || {
                let written = writer.write(pairs);
                (writer, written)
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
            writer = back;
            if let Err(e) = written {
                // A full disk, say: drop what arrived, so that every retry
                // does not leave another partial tree behind.
                let _ = self.node.state().abort_install(writer);
                return Err(Error::from(e).into());
            }
            if complete.is_some() {
                break;
            }
        }
        let meta = SnapshotMeta {
            index: header.index,
            term: header.index_term,
        };
        // Only a complete stream whose data ends where its header says is
        // handed on; anything else is thrown away, the state untouched.
        let verified = match complete {
            Some(total) if total == pairs_total => match writer.meta() {
                Ok(found) if found == meta => Ok(()),
                Ok(found) => Err(format!(
                    "the data ends at {found:?}, the header says {meta:?}"
                )),
                Err(e) => Err(e.to_string()),
            },
            Some(total) => Err(format!("{pairs_total} pairs arrived of {total}")),
            None => Err("the stream ended before its last chunk".to_string()),
        };
        if let Err(reason) = verified {
            let _ = self.node.state().abort_install(writer);
            tracing::warn!(from = header.from, %reason, "discarding an incomplete snapshot");
            return Err(Status::data_loss(format!("incomplete snapshot: {reason}")));
        }
        tracing::info!(
            from = header.from,
            index = header.index,
            pairs = pairs_total,
            "received a snapshot"
        );
        let msg = Message {
            from: header.from,
            to: self.node.name().ordinal,
            term: header.term,
            body: Body::Snapshot { meta },
        };
        let (done, answer) = oneshot::channel();
        self.node
            .deliver(Input::SnapshotReceived { msg, writer, done });
        match answer.await {
            Ok(Ok(())) => Ok(Response::new(SnapshotAck {})),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Status::unavailable("the node stopped")),
        }
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> std::result::Result<Response<ForwardResponse>, Status> {
        let req = request.into_inner();
        self.check_cluster(req.cluster_id)?;
        let result = self.node.write_as_leader(req.command, self.timeout).await?;
        let (output, delete_more) = output_to(result.output);
        Ok(Response::new(ForwardResponse {
            revision: result.revision,
            output,
            delete_more,
        }))
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> std::result::Result<Response<ReadIndexResponse>, Status> {
        self.check_cluster(request.into_inner().cluster_id)?;
        let index = self.node.read_index_as_leader(self.timeout).await?;
        Ok(Response::new(ReadIndexResponse { index }))
    }

    async fn transfer_leadership(
        &self,
        request: Request<TransferRequest>,
    ) -> std::result::Result<Response<TransferResponse>, Status> {
        let to = request.into_inner().to;
        self.node.transfer_as_leader(to, self.timeout).await?;
        Ok(Response::new(TransferResponse {}))
    }
}

/// Serves the peer API on `listener` until `shutdown` resolves.
pub async fn serve_peers(
    listener: tokio::net::TcpListener,
    node: NodeHandle,
    timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::result::Result<(), tonic::transport::Error> {
    let service = PeerServer::new(PeerService {
        node,
        timeout,
        receiving: tokio::sync::Mutex::new(()),
        streams: Mutex::new(BTreeMap::new()),
    })
    .max_decoding_message_size(MAX_PEER_MESSAGE)
    .max_encoding_message_size(MAX_PEER_MESSAGE);
    Server::builder()
        .http2_max_pending_accept_reset_streams(Some(
            crate::server::incoming::MAX_PENDING_ACCEPT_RESETS,
        ))
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(3)))
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .add_service(service)
        .serve_with_incoming_shutdown(crate::server::incoming::accepted(listener), shutdown)
        .await
}
