//! Start-up: open the data dir, check whose it is, reconcile the log with
//! the applied state after a crash (or rebuild a state that cannot be
//! read), and start the replication and apply threads.

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use super::applier::{Applier, Waiters};
use super::replication::ReplicationThread;
use super::{Node, NodeConfig, NodeHandle, NodeInbox, Peers, RaftStatus, Shared, StartError};
use crate::raft::{self, RaftCore, Restored, SnapshotMeta, Voting};
use crate::state::{Identity, KvState};
use crate::storage::wal::{Wal, WalState};
use crate::storage::DataDir;

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
) -> std::result::Result<(KvState, Wal, WalState), StartError> {
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
        log = WalState {
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
    log: WalState,
    applied: (u64, u64),
    installed: Option<(u64, u64)>,
    membership: raft::Membership,
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
        membership,
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
        // A pod beyond the bootstrap replicas starts too: it waits as a
        // non-member until the leader adds it (the StatefulSet scaled up).
        if cfg.name.ordinal >= raft::MAX_MEMBERS {
            return Err(StartError::OrdinalOutOfRange {
                name: cfg.name.to_string(),
                ordinal: cfg.name.ordinal,
                max: raft::MAX_MEMBERS - 1,
            });
        }
        let dirs = DataDir::new(&cfg.data_dir);
        std::fs::create_dir_all(&dirs.root)
            .map_err(|e| StartError::DataDir(dirs.root.clone(), e))?;
        if dirs.restoring().exists() {
            return Err(StartError::Inconsistent {
                dir: dirs.root.clone(),
                reason: "a `kvstore restore` into it did not finish; run the restore again (it starts over)".into(),
            });
        }
        let (state, mut wal, log) = open_storage(&cfg, &dirs)?;
        let state = Arc::new(state);
        check_identity(&state, &cfg)?;
        let restored = restore(
            &dirs.root,
            &mut wal,
            log,
            state.applied(),
            state.installed_snapshot()?,
            state.applied_membership()?,
        )?;
        tracing::info!(
            term = restored.hard_state.term,
            applied = restored.applied,
            last_index = restored.snapshot.index + restored.entries.len() as u64,
            voting = ?restored.hard_state.voting,
            "restored replication state"
        );
        let cluster_recorded = state
            .identity()?
            .is_some_and(|i| i.cluster_id != 0 && i.cluster_id == state.cluster_id());
        let core = RaftCore::new(raft_config(&cfg), restored, rand::random());
        spawn(cfg, core, (state, cluster_recorded), wal, peers, inbox)
            .map_err(|e| StartError::DataDir(dirs.root.clone(), e))
    }
}

/// The core's configuration: the node's timing in ticks.
fn raft_config(cfg: &NodeConfig) -> raft::Config {
    let timing = cfg.timing;
    let mut raft_cfg = raft::Config::new(cfg.name.ordinal, cfg.replicas);
    raft_cfg.probe_peers = cfg.probe_peers.max(cfg.replicas);
    raft_cfg.heartbeat_ticks = timing.ticks(timing.heartbeat);
    raft_cfg.election_ticks = timing.ticks(timing.election);
    raft_cfg.election_stagger_ticks = timing.ticks(timing.election_stagger);
    raft_cfg.election_jitter_ticks = (raft_cfg.election_stagger_ticks / 2).max(1);
    raft_cfg.priority_return_ticks = raft_cfg.election_ticks;
    raft_cfg.priority_return = cfg.priority_return;
    raft_cfg
}

/// Starts the apply thread and the replication thread around a restored
/// core and its state (and whether the state's identity record already
/// names its cluster), and builds the handle the services use.
fn spawn(
    cfg: NodeConfig,
    core: RaftCore,
    (state, cluster_recorded): (Arc<KvState>, bool),
    mut wal: Wal,
    peers: Arc<dyn Peers>,
    inbox: NodeInbox,
) -> std::io::Result<Node> {
    let metrics = Arc::new(crate::metrics::NodeMetrics::default());
    let fsync = metrics.wal_fsync.clone();
    wal.observe_syncs(move |took| fsync.observe(took.as_secs_f64()));
    let (status_tx, status_rx) = watch::channel(RaftStatus::of(&core));
    let (applied_tx, applied_rx) = watch::channel(state.applied().0);
    let (events_tx, _) = broadcast::channel(1024);
    let (apply_tx, apply_rx) = std::sync::mpsc::channel();
    let waiters = Arc::new(Waiters::default());
    let applier = Applier {
        state: state.clone(),
        rx: apply_rx,
        inbox: inbox.tx.clone(),
        waiters: waiters.clone(),
        applied: applied_tx,
        events: events_tx.clone(),
        cluster_recorded,
        metrics: metrics.clone(),
    };
    let span = tracing::Span::current();
    let apply_span = span.clone();
    let apply_thread = std::thread::Builder::new()
        .name("apply".into())
        .spawn(move || apply_span.in_scope(|| applier.run()))?;
    let replication = ReplicationThread::new(
        core,
        wal,
        inbox.rx,
        apply_tx,
        peers.clone(),
        waiters,
        status_tx,
        state.clone(),
        cfg.timing.tick,
        cfg.compaction.within_quota(cfg.space.quota),
        cfg.name.clone(),
    )
    .with_cluster_id(cfg.cluster_id)
    .with_metrics(metrics.clone());
    let raft_thread = std::thread::Builder::new()
        .name("raft".into())
        .spawn(move || span.in_scope(|| replication.run()))?;
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
        desired: std::sync::atomic::AtomicU32::new(0),
        metrics,
        pinned_cluster_id: cfg.cluster_id,
    }));
    Ok(Node {
        handle,
        raft_thread: Some(raft_thread),
        apply_thread: Some(apply_thread),
    })
}
