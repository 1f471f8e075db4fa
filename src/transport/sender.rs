//! The per-peer sender: one long-lived client stream to a peer at a time,
//! reconnecting through discovery with backoff.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{client, convert, Dialer};
use crate::discovery::Discovery;
use crate::node::{Input, NodeHandle};
use crate::proto::peer::{Envelope, RaftMessage};
use crate::raft::{Message, NodeId};
use kvstore_client::backoff::Backoff;

/// Messages per envelope.
const BATCH: usize = 256;
/// The first wait before reconnecting to a peer.
const MIN_RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between reconnection attempts: a restarted pod is
/// reached again soon after it is back.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_millis(250);

/// Sends the messages queued for one peer.
pub(super) struct StreamSender {
    peer: NodeId,
    discovery: Arc<Discovery>,
    dialer: Dialer,
    node: Arc<OnceLock<NodeHandle>>,
    queue: mpsc::Receiver<Message>,
    reconnect: Backoff,
    /// Whether a connection to the peer ever succeeded: until then, failures
    /// to connect are expected (the peer is starting) and not logged.
    connected_once: bool,
}

impl StreamSender {
    /// A sender of `queue` to `peer`, once `node` is set.
    pub(super) fn new(
        peer: NodeId,
        discovery: Arc<Discovery>,
        dialer: Dialer,
        node: Arc<OnceLock<NodeHandle>>,
        queue: mpsc::Receiver<Message>,
    ) -> Self {
        StreamSender {
            peer,
            discovery,
            dialer,
            node,
            queue,
            reconnect: Backoff::exact(MIN_RECONNECT_BACKOFF, MAX_RECONNECT_BACKOFF),
            connected_once: false,
        }
    }

    /// Connects, streams, and reconnects when the stream breaks, until the
    /// queue is closed.
    pub(super) async fn run(mut self) {
        loop {
            // Messages queued while disconnected are stale; drop them.
            while self.queue.try_recv().is_ok() {}
            let Some(node) = self.node.get().cloned() else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let Some(channel) = self.connect().await else {
                continue;
            };
            if !self.stream(&node, channel).await {
                return;
            }
            tracing::debug!(peer = self.peer, "stream to peer closed; reconnecting");
            // The connection broke: if the peer led, its process most likely
            // died (fast failure detection).
            node.deliver(Input::PeerDisconnected(self.peer));
        }
    }

    /// A connection to the peer, or `None` after waiting out the backoff.
    async fn connect(&mut self) -> Option<Channel> {
        let addr = match self.discovery.resolve(self.peer).await {
            Ok(addr) => addr,
            Err(_) => {
                tokio::time::sleep(self.reconnect.next_delay()).await;
                return None;
            }
        };
        let channel = match self.dialer.connect(self.peer, addr).await {
            Ok(c) => c,
            Err(e) => {
                // Only the end of an established stream is news (see `run`);
                // a peer that stays unreachable is reported once.
                if self.connected_once {
                    tracing::debug!(peer = self.peer, %addr, error = %e, "cannot connect to peer");
                }
                tokio::time::sleep(self.reconnect.next_delay()).await;
                return None;
            }
        };
        self.reconnect.reset();
        if !self.connected_once {
            tracing::info!(peer = self.peer, %addr, "connected to peer");
        }
        self.connected_once = true;
        Some(channel)
    }

    /// Streams queued messages over `channel` until the stream ends. False
    /// when the queue is closed: the transport is gone, nothing reconnects.
    async fn stream(&mut self, node: &NodeHandle, channel: Channel) -> bool {
        let (tx, rx) = mpsc::channel::<Envelope>(64);
        let mut call =
            tokio::spawn(async move { client(channel).stream(ReceiverStream::new(rx)).await });
        loop {
            tokio::select! {
                msg = self.queue.recv() => {
                    let Some(first) = msg else { return false };
                    let messages = self.batch(first);
                    let envelope = Envelope { cluster_id: node.known_cluster_id(), messages };
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
        true
    }

    /// `first` and whatever else is queued, up to [`BATCH`] messages.
    fn batch(&mut self, first: Message) -> Vec<RaftMessage> {
        let mut messages = Vec::with_capacity(8);
        messages.extend(convert::to_proto(first));
        while messages.len() < BATCH {
            match self.queue.try_recv() {
                Ok(m) => messages.extend(convert::to_proto(m)),
                Err(_) => break,
            }
        }
        messages
    }
}
