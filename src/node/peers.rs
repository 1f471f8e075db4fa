//! What the node needs from the peer transport. The gRPC transport
//! (`crate::transport`) implements it; a single-member cluster uses
//! [`NoPeers`].

use futures::future::BoxFuture;

use crate::error::{Error, Result};
use crate::raft::{Message, NodeId};
use crate::state::command::Output;

/// The answer to a write forwarded to the leader.
#[derive(Clone, Debug)]
pub struct WriteResult {
    /// The revision the write was committed at.
    pub revision: u64,
    /// What the write returned (responses without headers).
    pub output: Output,
}

/// Sending to peers. Every method returns at once; sends are best-effort (the
/// protocol retries what is lost).
pub trait Peers: Send + Sync + 'static {
    /// Sends a protocol message.
    fn send(&self, msg: Message);
    /// Streams a snapshot of the applied state to `to` (the leader being in
    /// `term`), then reports the outcome to the node as `SnapshotSent`.
    fn send_snapshot(&self, to: NodeId, term: u64);
    /// Forwards an encoded command to the leader and waits for its result.
    fn forward_write(
        &self,
        leader: NodeId,
        command: bytes::Bytes,
    ) -> BoxFuture<'static, Result<WriteResult>>;
    /// Asks the leader for a read index.
    fn forward_read_index(&self, leader: NodeId) -> BoxFuture<'static, Result<u64>>;
    /// Asks the leader to transfer leadership to `to`.
    fn forward_transfer(&self, leader: NodeId, to: NodeId) -> BoxFuture<'static, Result<()>>;
}

/// The transport of a one-member cluster: there is no one to talk to.
#[derive(Debug, Default)]
pub struct NoPeers;

fn no_peer() -> Error {
    Error::Unavailable {
        reason: "this node has no peers".into(),
        leader: None,
    }
}

impl Peers for NoPeers {
    fn send(&self, _msg: Message) {}
    fn send_snapshot(&self, _to: NodeId, _term: u64) {}
    fn forward_write(
        &self,
        _leader: NodeId,
        _command: bytes::Bytes,
    ) -> BoxFuture<'static, Result<WriteResult>> {
        Box::pin(async { Err(no_peer()) })
    }
    fn forward_read_index(&self, _leader: NodeId) -> BoxFuture<'static, Result<u64>> {
        Box::pin(async { Err(no_peer()) })
    }
    fn forward_transfer(&self, _leader: NodeId, _to: NodeId) -> BoxFuture<'static, Result<()>> {
        Box::pin(async { Err(no_peer()) })
    }
}
