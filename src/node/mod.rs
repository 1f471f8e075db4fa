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
pub mod peers;
pub mod replication;
pub mod space;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{broadcast, oneshot, watch};

use crate::error::{Error, Result};
use crate::identity::NodeName;
use crate::proto::kv::Event;
use crate::raft::{self, NodeId, RaftNode, Restored, Role, SnapshotMeta, Voting};
use crate::state::command::Command;
use crate::state::{Identity, KvState, StateError};
use crate::storage::wal::{Wal, WalError};
use crate::storage::DataDir;
use applier::{Applier, Waiters};
pub use peers::{NoPeers, Peers, WriteResult};
pub use replication::{CompactionPolicy, Fatal, Input};

/// Timing of the protocol, in wall-clock terms.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// One tick of the core's clock.
    pub tick: Duration,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Base election timeout (also the leader lease).
    pub election: Duration,
    /// Extra election timeout per ordinal.
    pub election_stagger: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick: Duration::from_millis(10),
            heartbeat: Duration::from_millis(50),
            election: Duration::from_millis(300),
            election_stagger: Duration::from_millis(100),
        }
    }
}

impl Timing {
    fn ticks(&self, d: Duration) -> u32 {
        (d.as_micros() / self.tick.as_micros().max(1)).max(1) as u32
    }
}

/// What a node is started with.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `<set>-<ordinal>`.
    pub name: NodeName,
    /// The number of voting members.
    pub replicas: u32,
    /// The data dir (the pod's volume).
    pub data_dir: PathBuf,
    /// sled's cache size.
    pub cache_bytes: u64,
    /// Revisions of watch history to keep.
    pub history_revisions: u64,
    /// Protocol timing.
    pub timing: Timing,
    /// When to compact the log.
    pub compaction: CompactionPolicy,
    /// Whether leadership returns to the lowest caught-up ordinal.
    pub priority_return: bool,
    /// Added after every fdatasync of the log: zero, except in tests that
    /// play a slow disk.
    pub wal_sync_delay: Duration,
    /// The cluster this member belongs to, if the operator pinned it: a
    /// data dir of another cluster is refused at start-up, and a new
    /// cluster takes this id instead of a random one.
    pub cluster_id: Option<u64>,
    /// The space bounds of the data dir's volume (see [`space`]).
    pub space: space::SpacePolicy,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data dir belongs to another pod or cluster.
    #[error("data dir {dir} belongs to {owner}, this pod is {this}: refusing to start (was a volume attached to the wrong pod?)")]
    WrongOwner {
        /// The data dir.
        dir: PathBuf,
        /// Who the identity record names.
        owner: String,
        /// Who we are.
        this: String,
    },
    /// The data dir holds another cluster's data.
    #[error("data dir {dir} belongs to cluster {found:016x}, but {expected}: refusing to start (was a volume from another cluster attached to this pod?)")]
    OtherCluster {
        /// The data dir.
        dir: PathBuf,
        /// The cluster the data dir names.
        found: u64,
        /// What it was expected to be, and why.
        expected: String,
    },
    /// The ordinal is not a member.
    #[error("{name} has ordinal {ordinal}, but --replicas is {replicas}: members are ordinals 0..={max}")]
    OrdinalOutOfRange {
        /// The node name.
        name: String,
        /// Its ordinal.
        ordinal: u32,
        /// The replica count.
        replicas: u32,
        /// The highest ordinal.
        max: u32,
    },
    /// The data dir cannot be created or read.
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    /// The applied state failed to open.
    #[error(transparent)]
    State(#[from] StateError),
    /// The log failed to open.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The log and the applied state disagree beyond repair.
    #[error("data dir {dir} is inconsistent: {reason}")]
    Inconsistent {
        /// The data dir.
        dir: PathBuf,
        /// What disagrees.
        reason: String,
    },
}

/// A peer's replication progress, as the leader sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    /// The peer's ordinal.
    pub id: NodeId,
    /// The highest index known replicated on it.
    pub match_index: u64,
    /// Whether appends are pipelined to it (it is caught up to the probe).
    pub replicating: bool,
    /// Whether it may vote.
    pub voter: bool,
    /// Whether it answered recently.
    pub reachable: bool,
}

/// The replication state, published by the replication thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    /// This member's role.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The known leader.
    pub leader: Option<NodeId>,
    /// The commit index.
    pub commit: u64,
    /// The leader's commit index as this member knows it (its own when it
    /// leads).
    pub leader_commit: u64,
    /// The last log index.
    pub last_index: u64,
    /// The first index still in the log.
    pub first_index: u64,
    /// Whether this member may vote.
    pub voting: Voting,
    /// Where leadership is being handed, if anywhere.
    pub transferee: Option<NodeId>,
    /// Followers' progress (leader only).
    pub peers: Vec<PeerProgress>,
}

impl RaftStatus {
    /// The status of `core` now.
    pub fn of(core: &RaftNode) -> RaftStatus {
        let heartbeat = core.config().heartbeat_ticks;
        let peers = (0..core.config().voters)
            .filter(|&p| p != core.id())
            .filter_map(|p| core.progress(p).map(|pr| (p, pr)))
            .map(|(id, pr)| PeerProgress {
                id,
                match_index: pr.match_index,
                replicating: pr.state == raft::ReplicationState::Replicate,
                voter: pr.voter,
                reachable: pr.silent_ticks <= 4 * heartbeat,
            })
            .collect();
        RaftStatus {
            role: core.role(),
            term: core.term(),
            leader: core.leader(),
            commit: core.log().commit(),
            leader_commit: core.leader_commit(),
            last_index: core.log().last_index(),
            first_index: core.log().first_index(),
            voting: core.voting(),
            transferee: core.transferee(),
            peers,
        }
    }
}

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
    name: NodeName,
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

/// Refuses a data dir that belongs to another pod or another cluster: the
/// identity record names the pod and (once known) the cluster, and the
/// applied state names the cluster its data came from.
fn check_identity(state: &KvState, cfg: &NodeConfig) -> std::result::Result<(), StartError> {
    let this = cfg.name.to_string();
    let other_cluster = |found: u64, expected: String| StartError::OtherCluster {
        dir: cfg.data_dir.clone(),
        found,
        expected,
    };
    let data_cluster = state.cluster_id();
    if let Some(pinned) = cfg.cluster_id {
        if data_cluster != 0 && data_cluster != pinned {
            return Err(other_cluster(
                data_cluster,
                format!("this pod is configured for cluster {pinned:016x} (--cluster-id)"),
            ));
        }
    }
    match state.identity()? {
        Some(identity) => {
            if identity.set_name != cfg.name.set || identity.ordinal != cfg.name.ordinal {
                return Err(StartError::WrongOwner {
                    dir: cfg.data_dir.clone(),
                    owner: identity.name(),
                    this,
                });
            }
            if identity.cluster_id != 0 && data_cluster != 0 && identity.cluster_id != data_cluster
            {
                return Err(other_cluster(
                    data_cluster,
                    format!(
                        "its identity record names cluster {:016x}",
                        identity.cluster_id
                    ),
                ));
            }
            if let Some(pinned) = cfg.cluster_id {
                if identity.cluster_id != 0 && identity.cluster_id != pinned {
                    return Err(other_cluster(
                        identity.cluster_id,
                        format!("this pod is configured for cluster {pinned:016x} (--cluster-id)"),
                    ));
                }
            }
        }
        None => {
            state.set_identity(&Identity {
                set_name: cfg.name.set.clone(),
                ordinal: cfg.name.ordinal,
                cluster_id: 0,
            })?;
            tracing::info!(dir = %cfg.data_dir.display(), "new data dir: identity record written");
        }
    }
    Ok(())
}

/// Opens the log and the applied state. An applied state that cannot be read
/// (sled's files damaged, by a full disk say) is not a reason to stay down:
/// it is rebuilt, from the log alone when the log still holds every entry,
/// otherwise from the leader as a lost volume is (the term and vote in the
/// log are kept, and the member votes again only once it has caught up).
/// A one-member cluster has no one to rebuild from, and refuses to start.
fn open_storage(
    cfg: &NodeConfig,
    dirs: &DataDir,
) -> std::result::Result<(KvState, Wal, crate::storage::wal::WalState), StartError> {
    let (mut wal, mut log) = Wal::open(&dirs.wal())?;
    wal.set_sync_delay(cfg.wal_sync_delay);
    let open = || KvState::open(&dirs.state(), cfg.cache_bytes, cfg.history_revisions);
    // sled recovers damaged files to their last readable point, silently:
    // a state that ends before the log's compaction point lost data too.
    let problem = match open() {
        Ok(state) if state.applied().0 >= log.snapshot.index => {
            return Ok((state.with_history_budget(cfg.space.quota / 4), wal, log))
        }
        Ok(state) => format!(
            "it ends at index {}, before the log's compaction point {}: its files lost data",
            state.applied().0,
            log.snapshot.index
        ),
        Err(e) if e.is_unreadable() => e.to_string(),
        Err(e) => return Err(e.into()),
    };
    let whole_log = log.snapshot.index == 0;
    if !whole_log && cfg.replicas == 1 {
        return Err(StartError::Inconsistent {
            dir: dirs.root.clone(),
            reason: format!("the applied state cannot be read ({problem}), and the log no longer holds every entry, so it cannot be rebuilt (a one-member cluster has no peer to copy it from); restore the data dir from a backup"),
        });
    }
    tracing::error!(
        dir = %dirs.state().display(),
        problem,
        from = if whole_log { "the log" } else { "the leader (as a lost volume)" },
        "the applied state cannot be read: discarding it and rebuilding it"
    );
    std::fs::remove_dir_all(dirs.state()).map_err(|io| StartError::DataDir(dirs.state(), io))?;
    if !whole_log {
        let hard_state = raft::HardState {
            voting: Voting::AwaitingPeers,
            ..log.hard_state
        };
        wal.compact(hard_state, SnapshotMeta::default(), &[])?;
        log = crate::storage::wal::WalState {
            hard_state,
            snapshot: SnapshotMeta::default(),
            entries: Vec::new(),
        };
    }
    let state = open()?;
    Ok((state.with_history_budget(cfg.space.quota / 4), wal, log))
}

/// Reconciles the log with the applied state after a crash, returning what to
/// restore the core from.
fn restore(
    dir: &Path,
    wal: &mut Wal,
    log: crate::storage::wal::WalState,
    applied: (u64, u64),
    installed: Option<(u64, u64)>,
) -> std::result::Result<Restored, StartError> {
    let (applied_index, applied_term) = applied;
    let last = log.snapshot.index + log.entries.len() as u64;
    let term_at = |i: u64| {
        if i == log.snapshot.index {
            Some(log.snapshot.term)
        } else if i > log.snapshot.index && i <= last {
            Some(log.entries[(i - log.snapshot.index - 1) as usize].term)
        } else {
            None
        }
    };
    if applied_index < log.snapshot.index {
        return Err(StartError::Inconsistent {
            dir: dir.to_path_buf(),
            reason: format!(
                "the applied state ends at {applied_index}, before the log's compaction point {}",
                log.snapshot.index
            ),
        });
    }
    if applied_index == 0 || term_at(applied_index) == Some(applied_term) {
        return Ok(Restored {
            hard_state: log.hard_state,
            snapshot: log.snapshot,
            entries: log.entries,
            applied: applied_index,
        });
    }
    // The state is ahead of the log, or disagrees with it. That is
    // legitimate only if the state was installed from a snapshot at exactly
    // this point and the crash came before the log recorded it; anything
    // else means the log lost entries the state had applied.
    if installed != Some(applied) {
        return Err(StartError::Inconsistent {
            dir: dir.to_path_buf(),
            reason: format!(
                "the applied state is at index {applied_index} (term {applied_term}) but the write-ahead log ends at {last}{}, and the state was not installed from a snapshot there: the log has lost entries. To recover, empty this pod's data dir: it rejoins as a member whose volume was lost and is brought back by a snapshot from the leader",
                match term_at(applied_index) {
                    Some(t) => format!(" and holds index {applied_index} with term {t}"),
                    None => String::new(),
                }
            ),
        });
    }
    // The state holds a snapshot the log does not know of yet (a crash
    // between installing it and recording it): start the log at it.
    let meta = SnapshotMeta {
        index: applied_index,
        term: applied_term,
    };
    tracing::warn!(
        index = applied_index,
        "the log did not record the last snapshot install; recording it now"
    );
    wal.compact(log.hard_state, meta, &[])?;
    Ok(Restored {
        hard_state: log.hard_state,
        snapshot: meta,
        entries: Vec::new(),
        applied: applied_index,
    })
}

impl Node {
    /// Opens the data dir, checks its identity, restores the log and starts
    /// the replication and apply threads.
    pub fn start(
        cfg: NodeConfig,
        peers: Arc<dyn Peers>,
        inbox: NodeInbox,
    ) -> std::result::Result<Node, StartError> {
        if cfg.name.ordinal >= cfg.replicas {
            return Err(StartError::OrdinalOutOfRange {
                name: cfg.name.to_string(),
                ordinal: cfg.name.ordinal,
                replicas: cfg.replicas,
                max: cfg.replicas.saturating_sub(1),
            });
        }
        let dirs = DataDir::new(&cfg.data_dir);
        std::fs::create_dir_all(&dirs.root)
            .map_err(|e| StartError::DataDir(dirs.root.clone(), e))?;
        let (state, mut wal, log) = open_storage(&cfg, &dirs)?;
        let state = Arc::new(state);
        check_identity(&state, &cfg)?;
        let restored = restore(
            &dirs.root,
            &mut wal,
            log,
            state.applied(),
            state.installed_snapshot()?,
        )?;
        let timing = cfg.timing;
        let mut raft_cfg = raft::Config::new(cfg.name.ordinal, cfg.replicas);
        raft_cfg.heartbeat_ticks = timing.ticks(timing.heartbeat);
        raft_cfg.election_ticks = timing.ticks(timing.election);
        raft_cfg.election_stagger_ticks = timing.ticks(timing.election_stagger);
        raft_cfg.election_jitter_ticks = (raft_cfg.election_stagger_ticks / 2).max(1);
        raft_cfg.priority_return_ticks = raft_cfg.election_ticks;
        raft_cfg.priority_return = cfg.priority_return;
        tracing::info!(
            term = restored.hard_state.term,
            applied = restored.applied,
            last_index = restored.snapshot.index + restored.entries.len() as u64,
            voting = ?restored.hard_state.voting,
            "restored replication state"
        );
        let core = RaftNode::new(raft_cfg, restored, rand::random());
        let (status_tx, status_rx) = watch::channel(RaftStatus::of(&core));
        let (applied_tx, applied_rx) = watch::channel(state.applied().0);
        let (events_tx, _) = broadcast::channel(1024);
        let (apply_tx, apply_rx) = std::sync::mpsc::channel();
        let waiters = Arc::new(Waiters::default());
        let cluster_recorded = state
            .identity()?
            .is_some_and(|i| i.cluster_id != 0 && i.cluster_id == state.cluster_id());
        let applier = Applier {
            state: state.clone(),
            rx: apply_rx,
            inbox: inbox.tx.clone(),
            waiters: waiters.clone(),
            applied: applied_tx,
            events: events_tx.clone(),
            cluster_recorded,
        };
        let span = tracing::Span::current();
        let apply_span = span.clone();
        let apply_thread = std::thread::Builder::new()
            .name("apply".into())
            .spawn(move || apply_span.in_scope(|| applier.run()))
            .map_err(|e| StartError::DataDir(dirs.root.clone(), e))?;
        let replication = replication::ReplicationThread::new(
            core,
            wal,
            inbox.rx,
            apply_tx,
            peers.clone(),
            waiters,
            status_tx,
            state.clone(),
            timing.tick,
            cfg.compaction.within_quota(cfg.space.quota),
            cfg.name.clone(),
        )
        .with_cluster_id(cfg.cluster_id);
        let raft_thread = std::thread::Builder::new()
            .name("raft".into())
            .spawn(move || span.in_scope(|| replication.run()))
            .map_err(|e| StartError::DataDir(dirs.root.clone(), e))?;
        let (stopping, _) = watch::channel(false);
        let handle = NodeHandle(Arc::new(Shared {
            name: cfg.name,
            replicas: cfg.replicas,
            inbox: inbox.tx,
            state,
            status: status_rx,
            applied: applied_rx,
            events: events_tx,
            peers,
            data_dir: cfg.data_dir,
            stopping,
            space: cfg.space,
            catch_up_to: std::sync::OnceLock::new(),
        }));
        Ok(Node {
            handle,
            raft_thread: Some(raft_thread),
            apply_thread: Some(apply_thread),
        })
    }

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
    pub fn name(&self) -> &NodeName {
        &self.0.name
    }

    /// The number of voting members.
    pub fn replicas(&self) -> u32 {
        self.0.replicas
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.0.data_dir
    }

    /// The space bounds.
    pub fn space_policy(&self) -> space::SpacePolicy {
        self.0.space
    }

    /// Refuses, before it is proposed, a write that adds data while a
    /// NOSPACE alarm is raised or this member is past its quota.
    fn check_space(&self, command: &Command) -> Result<()> {
        if !command.adds_data() {
            return Ok(());
        }
        let alarms = self.0.state.alarms();
        if !alarms.is_empty() {
            return Err(Error::ResourceExhausted(
                crate::state::space::nospace_refusal(&alarms),
            ));
        }
        let stored = self.0.state.stored_bytes();
        if stored > self.0.space.quota {
            return Err(Error::ResourceExhausted(format!(
                "NOSPACE: this member stores {stored} bytes, over its space quota of {} (--quota-bytes): writes that add data are refused until data is deleted and the history compacted",
                self.0.space.quota
            )));
        }
        Ok(())
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

    /// Waits until some leader is known, until `deadline`.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId> {
        let mut status = self.0.status.clone();
        loop {
            if let Some(leader) = status.borrow_and_update().leader {
                return Ok(leader);
            }
            if self.is_stopping() {
                return Err(Error::ShuttingDown);
            }
            match tokio::time::timeout_at(deadline.into(), status.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::ShuttingDown),
                Err(_) => return Err(Error::NoLeader),
            }
        }
    }

    /// Waits for the replication state to change, or a short while.
    async fn wait_status_change(&self, deadline: Instant) {
        let mut status = self.0.status.clone();
        status.borrow_and_update();
        let until = deadline.min(Instant::now() + Duration::from_millis(50));
        let _ = tokio::time::timeout_at(until.into(), status.changed()).await;
    }

    /// Commits a command and returns its result, forwarding it to the leader
    /// when this node does not lead. Retries internally, within `timeout`,
    /// whatever is certain not to have been applied.
    pub async fn write(&self, command: &Command, timeout: Duration) -> Result<WriteResult> {
        self.check_space(command)?;
        let deadline = Instant::now() + timeout;
        let data = command.encode();
        loop {
            if self.is_stopping() {
                return Err(Error::ShuttingDown);
            }
            let leader = self.wait_for_leader(deadline).await?;
            let attempt = if leader == self.0.name.ordinal {
                self.propose_local(data.clone(), deadline).await
            } else {
                match tokio::time::timeout_at(
                    deadline.into(),
                    self.0.peers.forward_write(leader, data.clone()),
                )
                .await
                {
                    Ok(result) => result,
                    Err(_) => Err(Error::OutcomeUnknown(
                        "timed out waiting for the leader".into(),
                    )),
                }
            };
            match attempt {
                // Certainly not applied: try again while time remains.
                Err(Error::NotApplied(_))
                | Err(Error::Unavailable { .. })
                | Err(Error::NoLeader)
                    if Instant::now() < deadline =>
                {
                    self.wait_status_change(deadline).await;
                }
                other => return other,
            }
        }
    }

    async fn propose_local(&self, data: Bytes, deadline: Instant) -> Result<WriteResult> {
        let (done, answer) = oneshot::channel();
        self.0
            .inbox
            .send(Input::Propose { data, done })
            .map_err(|_| Error::ShuttingDown)?;
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::OutcomeUnknown(
                "the node stopped while committing".into(),
            )),
            Err(_) => Err(Error::OutcomeUnknown(
                "timed out waiting for the write to commit".into(),
            )),
        }
    }

    /// Commits an encoded command here, only if this node leads (the
    /// receiving end of a follower's forwarded write).
    pub async fn write_as_leader(&self, data: Bytes, timeout: Duration) -> Result<WriteResult> {
        if self.is_stopping() {
            return Err(Error::ShuttingDown);
        }
        if self.status().leader != Some(self.0.name.ordinal) {
            return Err(Error::not_leader(self.leader_name()));
        }
        self.propose_local(data, Instant::now() + timeout).await
    }

    /// Hands leadership to `to` (leader only; the receiving end of a
    /// forwarded transfer).
    pub async fn transfer_as_leader(&self, to: NodeId, timeout: Duration) -> Result<()> {
        if to >= self.0.replicas {
            return Err(Error::InvalidArgument(format!(
                "no member with ordinal {to}: members are 0..={}",
                self.0.replicas - 1
            )));
        }
        let (done, answer) = oneshot::channel();
        self.0
            .inbox
            .send(Input::Transfer { to, done })
            .map_err(|_| Error::ShuttingDown)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::Timeout("waiting for the leadership transfer".into())),
        }
    }

    /// Confirms leadership for a follower's read (leader only).
    pub async fn read_index_as_leader(&self, timeout: Duration) -> Result<u64> {
        if self.status().leader != Some(self.0.name.ordinal) {
            return Err(Error::not_leader(self.leader_name()));
        }
        let (done, answer) = oneshot::channel();
        self.0
            .inbox
            .send(Input::ReadIndex { done })
            .map_err(|_| Error::ShuttingDown)?;
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::Timeout("confirming leadership for a read".into())),
        }
    }

    /// Confirms leadership and returns the index a linearizable read must
    /// wait for (used locally and for followers' forwarded requests).
    pub async fn read_index(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self.wait_for_leader(deadline).await?;
            let attempt = if leader == self.0.name.ordinal {
                self.read_index_as_leader(deadline.saturating_duration_since(Instant::now()))
                    .await
            } else {
                match tokio::time::timeout_at(
                    deadline.into(),
                    self.0.peers.forward_read_index(leader),
                )
                .await
                {
                    Ok(result) => result,
                    Err(_) => Err(Error::Timeout("asking the leader for a read index".into())),
                }
            };
            match attempt {
                Err(Error::Unavailable { .. }) | Err(Error::NoLeader)
                    if Instant::now() < deadline =>
                {
                    self.wait_status_change(deadline).await;
                }
                other => return other,
            }
        }
    }

    /// Waits until this node has applied `index`, until `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> Result<()> {
        let mut applied = self.0.applied.clone();
        let reached = tokio::time::timeout(timeout, async {
            applied.wait_for(|&a| a >= index).await.map(|_| ())
        })
        .await;
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::ShuttingDown),
            Err(_) => Err(Error::Unavailable {
                reason: format!(
                    "this node has not applied revision {index} yet (it is at {})",
                    self.applied()
                ),
                leader: self.leader_name(),
            }),
        }
    }

    /// Asks the leader to hand leadership to `to` and waits until it has.
    pub async fn transfer_leadership(&self, to: NodeId, timeout: Duration) -> Result<()> {
        if to >= self.0.replicas {
            return Err(Error::InvalidArgument(format!(
                "no member with ordinal {to}: members are 0..={}",
                self.0.replicas - 1
            )));
        }
        let deadline = Instant::now() + timeout;
        let leader = self.wait_for_leader(deadline).await?;
        let fut = async {
            if leader == self.0.name.ordinal {
                self.transfer_as_leader(to, timeout).await
            } else {
                self.0.peers.forward_transfer(leader, to).await
            }
        };
        match tokio::time::timeout_at(deadline.into(), fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout("waiting for the leadership transfer".into())),
        }
    }

    /// The lowest-ordinal follower that is a voter, reachable and (nearly)
    /// caught up (leader only): the target of a graceful handover.
    pub fn best_successor(&self) -> Option<NodeId> {
        let status = self.status();
        if status.role != Role::Leader {
            return None;
        }
        status
            .peers
            .iter()
            // Under load a healthy follower trails the commit index by a few
            // entries; the transfer brings it fully up to date first.
            .filter(|p| {
                p.voter
                    && p.reachable
                    && p.replicating
                    && p.match_index + crate::raft::CAUGHT_UP_LAG >= status.commit
            })
            .map(|p| p.id)
            .min()
    }

    /// Whether this node has caught up since it started: it has applied the
    /// commit index the leader announced when this node first heard from it.
    /// A node that came back with an empty volume has not, until the
    /// leader's data has reached it; it must not answer reads as if the data
    /// it has not received did not exist.
    pub fn caught_up(&self) -> bool {
        let target = match self.0.catch_up_to.get() {
            Some(&target) => target,
            None => {
                let status = self.status();
                if status.leader.is_none() {
                    return false;
                }
                *self.0.catch_up_to.get_or_init(|| status.leader_commit)
            }
        };
        self.applied() >= target
    }

    /// Waits, until `timeout`, for this node to have caught up since it
    /// started (see [`NodeHandle::caught_up`]).
    pub async fn wait_caught_up(&self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut status = self.0.status.clone();
        let mut applied = self.0.applied.clone();
        loop {
            if self.caught_up() {
                return Ok(());
            }
            if self.is_stopping() {
                return Err(Error::ShuttingDown);
            }
            let changed = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    r = status.changed() => r.is_ok(),
                    r = applied.changed() => r.is_ok(),
                }
            })
            .await;
            match changed {
                Ok(true) => {}
                Ok(false) => return Err(Error::ShuttingDown),
                Err(_) => {
                    let status = self.status();
                    return Err(Error::Unavailable {
                        reason: format!(
                            "this member is catching up with the leader (applied {} of {}); retry, or read elsewhere",
                            self.applied(),
                            self.0.catch_up_to.get().copied().unwrap_or(status.leader_commit)
                        ),
                        leader: self.leader_name(),
                    });
                }
            }
        }
    }

    /// Whether this node should receive client traffic (readiness): it
    /// knows a leader, has caught up since it started, has applied to within
    /// `max_lag` revisions of the leader's commit index, and is not stopping.
    pub fn is_ready(&self, max_lag: u64) -> bool {
        let status = self.status();
        status.leader.is_some()
            && self.caught_up()
            && self.applied() + max_lag >= status.leader_commit
            && !self.is_stopping()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, EntryKind, HardState};

    fn log_of(last: u64) -> (tempfile::TempDir, Wal, crate::storage::wal::WalState) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = Wal::open(dir.path()).expect("open");
        let entries: Vec<Entry> = (1..=last)
            .map(|index| Entry {
                index,
                term: 1,
                kind: EntryKind::Normal,
                data: Bytes::from_static(b"x"),
            })
            .collect();
        wal.append(None, None, &entries).expect("append");
        drop(wal);
        let (wal, state) = Wal::open(dir.path()).expect("reopen");
        (dir, wal, state)
    }

    fn config_for(dir: &Path, name: &str, cluster_id: Option<u64>) -> NodeConfig {
        NodeConfig {
            name: NodeName::parse(name).expect("name"),
            replicas: 3,
            data_dir: dir.to_path_buf(),
            cache_bytes: 1 << 20,
            history_revisions: 100,
            timing: Timing::default(),
            compaction: CompactionPolicy {
                max_entries: 100,
                max_bytes: 1 << 20,
                keep_entries: 10,
            },
            priority_return: true,
            wal_sync_delay: Duration::ZERO,
            cluster_id,
            space: space::SpacePolicy {
                quota: 1 << 30,
                min_free: 0,
                reserve: 0,
            },
        }
    }

    /// A state that applied the bootstrap of cluster `id`.
    fn state_of_cluster(dir: &Path, id: u64) -> KvState {
        let state = KvState::open(dir, 1 << 20, 100).expect("open");
        let bootstrap = crate::state::command::Command::new(crate::state::command::Op::Bootstrap(
            crate::state::command::Bootstrap { cluster_id: id },
        ));
        state
            .apply_all(&[Entry {
                index: 1,
                term: 1,
                kind: EntryKind::Normal,
                data: bootstrap.encode(),
            }])
            .expect("apply");
        state
    }

    /// A data dir is refused when its identity record and its data name
    /// different clusters, or when either differs from a pinned cluster id;
    /// the message names both ids.
    #[test]
    fn data_of_another_cluster_is_refused_at_start_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state_of_cluster(dir.path(), 0xa);
        let cfg = config_for(dir.path(), "kvstore-1", None);
        check_identity(&state, &cfg).expect("a new identity is written");
        check_identity(&state, &cfg).expect("the same pod and cluster");
        let pinned = config_for(dir.path(), "kvstore-1", Some(0xb));
        match check_identity(&state, &pinned) {
            Err(e @ StartError::OtherCluster { found: 0xa, .. }) => {
                let text = e.to_string();
                assert!(text.contains("000000000000000b"), "{text}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        state
            .set_identity(&Identity {
                set_name: "kvstore".into(),
                ordinal: 1,
                cluster_id: 0xc,
            })
            .expect("identity");
        assert!(matches!(
            check_identity(&state, &cfg),
            Err(StartError::OtherCluster { found: 0xa, .. })
        ));
    }

    /// An applied state ahead of the log is accepted only when it was
    /// installed from a snapshot at exactly that point; otherwise the log
    /// lost entries, and start-up is refused with what to do.
    #[test]
    fn state_ahead_of_the_log_needs_a_recorded_install() {
        let (dir, mut wal, state) = log_of(5);
        match restore(dir.path(), &mut wal, state, (8, 2), None) {
            Err(StartError::Inconsistent { reason, .. }) => {
                assert!(reason.contains("log ends at 5"), "{reason}");
                assert!(reason.contains("empty this pod's data dir"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        let (dir, mut wal, state) = log_of(5);
        let restored =
            restore(dir.path(), &mut wal, state, (8, 2), Some((8, 2))).expect("an install");
        assert_eq!(restored.snapshot, SnapshotMeta { index: 8, term: 2 });
        assert!(restored.entries.is_empty());
        let (dir, mut wal, state) = log_of(5);
        let restored = restore(dir.path(), &mut wal, state, (4, 1), None).expect("in the log");
        assert_eq!((restored.applied, restored.entries.len()), (4, 5));
    }

    /// Damages the state's sled files the way a full disk did: the middle
    /// of its data file overwritten.
    fn damage_state(dir: &Path) {
        {
            let state = KvState::open(&dir.join("state"), 1 << 20, 100).expect("open");
            let entries: Vec<Entry> = (1..=50)
                .map(|index| Entry {
                    index,
                    term: 1,
                    kind: EntryKind::Normal,
                    data: crate::state::command::Command::new(crate::state::command::Op::Put(
                        crate::proto::kv::PutRequest {
                            key: format!("k{index}").into(),
                            value: vec![b'v'; 4000].into(),
                            prev_kv: false,
                        },
                    ))
                    .encode(),
                })
                .collect();
            state.apply_all(&entries).expect("apply");
            state.checkpoint().expect("checkpoint");
        }
        let db = dir.join("state").join("db");
        let mut bytes = std::fs::read(&db).expect("read db");
        // Every segment's second half: whatever sled reads first is hit.
        let segment = 512 << 10;
        for start in (segment / 2..bytes.len()).step_by(segment) {
            let end = (start + segment / 2).min(bytes.len());
            for b in &mut bytes[start..end] {
                *b = 0xa5;
            }
        }
        std::fs::write(&db, &bytes).expect("damage db");
        // sled either reports the damage or recovers to an earlier point.
        match KvState::open(&dir.join("state"), 1 << 20, 100) {
            Err(e) if e.is_unreadable() => {}
            Err(e) => panic!("the damage gave another error: {e:?}"),
            Ok(s) => assert!(s.applied().0 < 50, "the damage went unnoticed"),
        }
    }

    /// An applied state that cannot be read is rebuilt instead of keeping
    /// the member down: from the log when it holds every entry, else from
    /// the leader as a lost volume (the term and vote kept); a one-member
    /// cluster, with no one to rebuild from, refuses to start.
    #[test]
    fn an_unreadable_state_is_rebuilt() {
        // The log holds every entry: replayed.
        let dir = tempfile::tempdir().expect("tempdir");
        damage_state(dir.path());
        let (mut wal, _) = Wal::open(&dir.path().join("wal")).expect("wal");
        wal.append(
            Some(HardState {
                term: 3,
                vote: Some(1),
                voting: Voting::Enabled,
            }),
            None,
            &(1..=5)
                .map(|index| Entry {
                    index,
                    term: 1,
                    kind: EntryKind::Normal,
                    data: Bytes::from_static(b"x"),
                })
                .collect::<Vec<_>>(),
        )
        .expect("append");
        drop(wal);
        let cfg = config_for(dir.path(), "kvstore-1", None);
        let (state, _, log) = open_storage(&cfg, &DataDir::new(dir.path())).expect("rebuilt");
        assert_eq!(state.applied().0, 0, "a new state, to be replayed");
        assert_eq!(log.entries.len(), 5, "from the whole log");
        drop(state);
        // The log was compacted: a lost volume that keeps its term and vote.
        let dir = tempfile::tempdir().expect("tempdir");
        damage_state(dir.path());
        let (mut wal, _) = Wal::open(&dir.path().join("wal")).expect("wal");
        let hs = HardState {
            term: 3,
            vote: Some(1),
            voting: Voting::Enabled,
        };
        wal.compact(hs, SnapshotMeta { index: 40, term: 1 }, &[])
            .expect("compact");
        drop(wal);
        let (state, _, log) = open_storage(&cfg, &DataDir::new(dir.path())).expect("rebuilt");
        assert_eq!(state.applied().0, 0);
        assert_eq!(log.snapshot, SnapshotMeta::default());
        assert_eq!(
            log.hard_state,
            HardState {
                voting: Voting::AwaitingPeers,
                ..hs
            }
        );
        drop(state);
        let (_, again) = Wal::open(&dir.path().join("wal")).expect("wal");
        assert_eq!(again.hard_state.voting, Voting::AwaitingPeers, "durably");
        // One member: refused.
        let dir = tempfile::tempdir().expect("tempdir");
        damage_state(dir.path());
        let (mut wal, _) = Wal::open(&dir.path().join("wal")).expect("wal");
        wal.compact(hs, SnapshotMeta { index: 40, term: 1 }, &[])
            .expect("compact");
        drop(wal);
        let mut single = config_for(dir.path(), "kvstore-0", None);
        single.replicas = 1;
        match open_storage(&single, &DataDir::new(dir.path())) {
            Err(StartError::Inconsistent { reason, .. }) => {
                assert!(reason.contains("cannot be rebuilt"), "{reason}")
            }
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
}
