//! [`GrpcPeers`]: the node's outbound side of the peer transport.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::Status;

use super::convert::output_from;
use super::sender::StreamSender;
use super::snapshot_send::SnapshotRetry;
use super::{client, Dialer};
use crate::discovery::Discovery;
use crate::error::{Error, Result};
use crate::node::{NodeHandle, Peers, WriteResult};
use crate::proto::peer::{ForwardRequest, ReadIndexRequest, TransferRequest};
use crate::raft::{Message, NodeId};

/// Messages queued per peer before new ones are dropped (the protocol
/// resends what matters).
const QUEUE: usize = 4096;

/// The gRPC implementation of [`Peers`].
pub struct GrpcPeers {
    pub(super) me: NodeId,
    pub(super) discovery: Arc<Discovery>,
    pub(super) dialer: Dialer,
    pub(super) node: Arc<OnceLock<NodeHandle>>,
    /// One queue (and sender task) per peer, started when the first message
    /// to it is sent: the configuration, not a flag, decides who the peers
    /// are, and it changes as the StatefulSet scales.
    queues: Mutex<BTreeMap<NodeId, mpsc::Sender<Message>>>,
    channels: Mutex<BTreeMap<NodeId, (SocketAddr, Channel)>>,
    runtime: tokio::runtime::Handle,
    /// One snapshot is frozen and sent at a time.
    pub(super) snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    /// Per follower: when the next snapshot may start, and its backoff.
    pub(super) snapshot_retry: Mutex<BTreeMap<NodeId, SnapshotRetry>>,
}

impl GrpcPeers {
    /// The outbound transport of member `me`. Call [`GrpcPeers::attach`]
    /// once the node exists. With `tls`, every connection to a peer is
    /// mutual TLS. Must run inside a tokio runtime.
    pub fn new(
        me: NodeId,
        discovery: Arc<Discovery>,
        tls: Option<crate::tls::ClientTls>,
    ) -> Arc<GrpcPeers> {
        let node = Arc::new(OnceLock::new());
        Arc::new(GrpcPeers {
            me,
            dialer: Dialer {
                discovery: discovery.clone(),
                tls,
            },
            discovery,
            node,
            queues: Mutex::new(BTreeMap::new()),
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
        self.node.get().map_or(0, |n| n.known_cluster_id())
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
        let channel = self
            .dialer
            .lazy(peer, addr)
            .map_err(|e| Error::Unavailable {
                reason: e.to_string(),
                leader: None,
            })?;
        channels.insert(peer, (addr, channel.clone()));
        Ok(channel)
    }

    fn forget_channel(&self, peer: NodeId) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer);
    }

    pub(super) fn peer_error(self: &Arc<Self>, peer: NodeId, status: Status) -> Error {
        if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown
        ) {
            self.forget_channel(peer);
        }
        Error::from_peer_status(status)
    }
}

impl Peers for Arc<GrpcPeers> {
    fn send(&self, msg: Message) {
        if msg.to == self.me || msg.to >= crate::raft::MAX_MEMBERS {
            return;
        }
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = queues.entry(msg.to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let sender = StreamSender::new(
                msg.to,
                self.discovery.clone(),
                self.dialer.clone(),
                self.node.clone(),
                rx,
            );
            self.runtime.spawn(sender.run());
            tx
        });
        {
            // A full queue means the peer is unreachable or slow: drop, the
            // protocol retries.
            let _ = queue.try_send(msg);
        }
    }

    fn send_snapshot(&self, to: NodeId, term: u64) {
        self.runtime
            .spawn(self.clone().send_snapshot_task(to, term));
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
