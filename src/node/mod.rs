//! One member at run time: the replication thread (core + write-ahead log),
//! the apply thread (sled), and the handle the gRPC services use to write,
//! read and watch.
//!
//! Write path: `NodeHandle::write` -> the leader's replication thread proposes
//! the command -> one append and fdatasync per group -> replicated to a quorum
//! -> committed -> the apply thread applies it (data and applied index in one
//! sled batch) -> the proposal's waiter is answered. A follower forwards the
//! command to the leader over the peer transport.

pub mod applier;
mod config;
pub mod peers;
pub mod replication;
mod routing;
pub mod scaling;
pub mod space;
mod startup;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::identity::PodName;
use crate::proto::kv::Event;
use crate::state::{KvState, StateError};
pub use config::{NodeConfig, StartError, Timing};
pub use peers::{NoPeers, Peers, WriteResult};
pub use replication::{CompactionPolicy, Fatal, Input};
pub use status::{PeerProgress, RaftStatus};

/// The changes of one apply batch, for watchers.
#[derive(Debug)]
pub struct WatchBatch {
    /// The first index of the batch.
    pub first_index: u64,
    /// The last index of the batch: the applied index after it.
    pub last_index: u64,
    /// The revisions in the batch that changed keys, with their events.
    pub revisions: Vec<(u64, Vec<Event>)>,
    /// The changes are only in the stored history (a snapshot replaced the
    /// state, or the batch was too large to hand to every watcher): watchers
    /// read them from there.
    pub reset: bool,
}

struct Shared {
    name: PodName,
    replicas: u32,
    inbox: std::sync::mpsc::Sender<Input>,
    state: Arc<KvState>,
    status: watch::Receiver<RaftStatus>,
    applied: watch::Receiver<u64>,
    events: broadcast::Sender<Arc<WatchBatch>>,
    peers: Arc<dyn Peers>,
    data_dir: PathBuf,
    /// Set when the node starts shutting down: streams end, requests refuse.
    stopping: watch::Sender<bool>,
    /// The space bounds.
    space: space::SpacePolicy,
    /// The leader's commit index when this node first heard from a leader
    /// after starting: it has caught up once it has applied that.
    catch_up_to: std::sync::OnceLock<u64>,
    /// The replica count the StatefulSet asks for, as last read (0: not
    /// read yet).
    desired: std::sync::atomic::AtomicU32,
    /// What the node measures about itself.
    metrics: Arc<crate::metrics::NodeMetrics>,
    /// The cluster id the operator pinned (`--cluster-id`), if any.
    pinned_cluster_id: Option<u64>,
}

/// A running node.
pub struct Node {
    handle: NodeHandle,
    raft_thread: Option<std::thread::JoinHandle<std::result::Result<(), Fatal>>>,
    apply_thread: Option<std::thread::JoinHandle<std::result::Result<(), StateError>>>,
}

/// How the services use the node. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle(Arc<Shared>);

/// Where a newly started node's inputs come from, before it has a handle:
/// the transport is built around it.
pub struct NodeInbox {
    tx: std::sync::mpsc::Sender<Input>,
    rx: std::sync::mpsc::Receiver<Input>,
}

impl NodeInbox {
    /// A new inbox.
    pub fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        NodeInbox { tx, rx }
    }
}

impl Default for NodeInbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    /// The handle for services.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops the threads after making everything durable. Call after the
    /// servers have drained.
    pub async fn stop(mut self) -> std::result::Result<(), String> {
        self.handle.0.stopping.send_replace(true);
        let _ = self.handle.0.inbox.send(Input::Shutdown);
        let raft = self.raft_thread.take();
        let apply = self.apply_thread.take();
        tokio::task::spawn_blocking(move || {
            let mut problems = Vec::new();
            if let Some(t) = raft {
                match t.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => problems.push(format!("replication: {e}")),
                    Err(_) => problems.push("replication thread panicked".to_string()),
                }
            }
            if let Some(t) = apply {
                match t.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => problems.push(format!("apply: {e}")),
                    Err(_) => problems.push("apply thread panicked".to_string()),
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Resolves if the replication or apply thread stops on its own (a fatal
    /// storage error): the process should exit and be restarted.
    pub async fn failed(&self) -> String {
        loop {
            let raft_done = self.raft_thread.as_ref().is_none_or(|t| t.is_finished());
            let apply_done = self.apply_thread.as_ref().is_none_or(|t| t.is_finished());
            if raft_done || apply_done {
                return "a replication or apply thread stopped".to_string();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl NodeHandle {
    /// This node's name.
    pub fn name(&self) -> &PodName {
        &self.0.name
    }

    /// The bootstrap replica count (`--replicas`): the voters of a new
    /// cluster. The configuration in force is in [`NodeHandle::status`].
    pub fn replicas(&self) -> u32 {
        self.0.replicas
    }

    /// The replica count the StatefulSet asks for, once read.
    pub fn desired_replicas(&self) -> Option<u32> {
        match self.0.desired.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// Records the replica count the StatefulSet asks for.
    pub fn set_desired_replicas(&self, n: u32) {
        self.0
            .desired
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.0.data_dir
    }

    /// The space bounds.
    pub fn space_policy(&self) -> space::SpacePolicy {
        self.0.space
    }

    /// The replication state now.
    pub fn status(&self) -> RaftStatus {
        self.0.status.borrow().clone()
    }

    /// A receiver of replication state changes.
    pub fn status_changes(&self) -> watch::Receiver<RaftStatus> {
        self.0.status.clone()
    }

    /// The leader's name as this node knows it.
    pub fn leader_name(&self) -> Option<String> {
        self.status()
            .leader
            .map(|l| self.0.name.sibling(l).to_string())
    }

    /// The cluster this member belongs to, as far as it knows: its state's
    /// id, or before it has one (an empty volume) the id the operator
    /// pinned; 0 when neither is known.
    pub fn known_cluster_id(&self) -> u64 {
        match self.0.state.cluster_id() {
            0 => self.0.pinned_cluster_id.unwrap_or(0),
            id => id,
        }
    }

    /// What the node measures about itself.
    pub fn metrics(&self) -> &Arc<crate::metrics::NodeMetrics> {
        &self.0.metrics
    }

    /// The applied state.
    pub fn state(&self) -> &KvState {
        &self.0.state
    }

    /// The applied index now.
    pub fn applied(&self) -> u64 {
        *self.0.applied.borrow()
    }

    /// A receiver of applied-index changes.
    pub fn applied_changes(&self) -> watch::Receiver<u64> {
        self.0.applied.clone()
    }

    /// Subscribes to applied changes, for watches.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchBatch>> {
        self.0.events.subscribe()
    }

    /// Resolves when the node starts shutting down.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.0.stopping.subscribe()
    }

    /// Whether the node is shutting down.
    pub fn is_stopping(&self) -> bool {
        *self.0.stopping.borrow()
    }

    /// Marks the node as shutting down (streams end, new requests refuse).
    pub fn begin_stop(&self) {
        self.0.stopping.send_replace(true);
    }

    /// Delivers an input to the replication thread (used by the transport).
    pub fn deliver(&self, input: Input) {
        let _ = self.0.inbox.send(input);
    }
}
