//! `kvstore restore`: seed an empty data dir from a backup (a snapshot
//! file of `Maintenance.Snapshot`), so that its member starts a **new
//! cluster** holding exactly the backup's state at its revision.
//!
//! # What the seeded dir holds
//!
//! * the state: every stored pair of the backup (data with create and mod
//!   revisions and versions, watch history, space counts), installed as a
//!   snapshot at the backup's revision R and term; a new random cluster id
//!   (or `--cluster-id`); the configuration **one voter, this member**;
//!   no space alarms;
//! * the identity record (this pod, the new cluster);
//! * the write-ahead log: compacted at R (term of R, no vote, voting on).
//!
//! So the member starts where a follower that installed a leader's
//! snapshot at R would, except that it is the only voter of its
//! configuration: it elects itself, and the next revision is above R.
//!
//! # The other members: empty volumes, caught up by Raft
//!
//! Only one member is restored. The others start on **empty** data dirs,
//! and the ordinary rules make them members:
//!
//! * a new data dir may not vote until every peer has answered (it may be
//!   a lost volume; module documentation of [`crate::raft`]). The restored
//!   member answers that its log is not empty and that its configuration
//!   is itself alone, so the empty members wait for a leader instead of
//!   starting a cluster of their own — and before it answers, they wait
//!   for it (it is one of the ordinals they probe). Two empty members can
//!   therefore never elect each other beside the restored one, whatever
//!   the order of starts: no split brain;
//! * the restored member leads its one-voter cluster; its scaling
//!   controller adds the ordinals the StatefulSet asks for as learners,
//!   each gets a Raft snapshot of the restored state, catches up and is
//!   promoted, one at a time, as in a scale-up.
//!
//! Why not restore on every member with the same cluster id: members
//! seeded separately would each need a configuration of all of them and
//! an agreed term and vote; a mistake there (two dirs seeded from
//! different backups, one restarted from an older file) gives members
//! with the same cluster id and different data at the same revision,
//! which Raft cannot detect. One seeded member and Raft's own snapshot
//! path cannot disagree. The cost is one snapshot transfer per member.
//!
//! A restore refuses a data dir that is not empty, and a backup whose
//! hash, length or records do not check out (read in full before the dir
//! is touched; a failure half-way removes what it wrote). While it writes,
//! a marker file says so: `serve` refuses a dir a restore did not finish
//! (a kill, a crash), and a new restore into it starts over.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use kvstore_client::snapshot_file::{self, SnapshotFileError, SnapshotReader, SnapshotSummary};

use crate::identity::PodName;
use crate::raft::{HardState, Membership, SnapshotMeta, Voting};
use crate::state::{Identity, KvState, StateError};
use crate::storage::wal::{Wal, WalError};
use crate::storage::DataDir;

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The data dir holds something already.
    #[error("the data dir {0} is not empty: a restore only seeds an empty one (a new volume)")]
    NotEmpty(PathBuf),
    /// The data dir cannot be read or created.
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    /// The backup is not a whole, valid snapshot file.
    #[error("snapshot {0}: {1}")]
    Snapshot(PathBuf, SnapshotFileError),
    /// The backup's pairs do not make a state this build can start from.
    #[error("snapshot {0}: {1}")]
    Unusable(PathBuf, String),
    /// Writing the state failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Writing the log failed.
    #[error(transparent)]
    Wal(#[from] WalError),
}

/// What to restore, and where.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// The snapshot file.
    pub snapshot: PathBuf,
    /// The empty data dir to seed.
    pub data_dir: PathBuf,
    /// The pod whose data dir this is (the new cluster's first member).
    pub name: PodName,
    /// The new cluster's id; `None`: a random one.
    pub cluster_id: Option<u64>,
    /// sled's cache while writing.
    pub cache_bytes: u64,
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The backup, as verified.
    pub summary: SnapshotSummary,
    /// The new cluster's id.
    pub cluster_id: u64,
}

/// Seeds `opts.data_dir` from `opts.snapshot` (see the module
/// documentation).
pub fn restore(opts: &RestoreOptions) -> Result<Restored, RestoreError> {
    let dirs = DataDir::new(&opts.data_dir);
    if dirs.restoring().exists() {
        // An earlier restore was cut short: what it wrote is not whole.
        tracing::info!(dir = %dirs.root.display(), "an earlier restore did not finish; starting over");
        clean(&dirs);
        remove_marker(&dirs)?;
    }
    ensure_empty(&opts.data_dir)?;
    // The whole file is checked before anything is written.
    let summary = snapshot_file::verify_file(&opts.snapshot)
        .map_err(|e| RestoreError::Snapshot(opts.snapshot.clone(), e))?;
    let cluster_id = opts.cluster_id.unwrap_or_else(|| rand::random::<u64>() | 1);
    write_marker(&dirs)?;
    match seed(opts, &dirs, cluster_id, &summary) {
        Ok(()) => {
            remove_marker(&dirs)?;
            Ok(Restored {
                summary,
                cluster_id,
            })
        }
        Err(e) => {
            // Leave the dir as empty as it was found.
            clean(&dirs);
            remove_marker(&dirs)?;
            Err(e)
        }
    }
}

/// Removes what a restore wrote into `dirs` (not the marker).
fn clean(dirs: &DataDir) {
    for dir in [dirs.state(), dirs.wal()] {
        if let Err(rm) = std::fs::remove_dir_all(&dir) {
            if rm.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %rm, "cleaning up after a failed restore");
            }
        }
    }
}

/// Writes the restore-in-progress marker durably, before anything else.
fn write_marker(dirs: &DataDir) -> Result<(), RestoreError> {
    let io = |e| RestoreError::DataDir(dirs.root.clone(), e);
    let marker = std::fs::File::create(dirs.restoring()).map_err(io)?;
    marker.sync_all().map_err(io)?;
    crate::storage::fsync_dir(&dirs.root).map_err(io)
}

/// Removes the marker durably: the dir is whole (or empty again).
fn remove_marker(dirs: &DataDir) -> Result<(), RestoreError> {
    let io = |e| RestoreError::DataDir(dirs.root.clone(), e);
    match std::fs::remove_file(dirs.restoring()) {
        Ok(()) => crate::storage::fsync_dir(&dirs.root).map_err(io),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(e)),
    }
}

/// Creates `dir` if it does not exist; refuses it if it holds anything.
fn ensure_empty(dir: &Path) -> Result<(), RestoreError> {
    let io = |e| RestoreError::DataDir(dir.to_path_buf(), e);
    std::fs::create_dir_all(dir).map_err(io)?;
    // A volume's root may hold lost+found, which ext4 makes: not data.
    let mut entries = std::fs::read_dir(dir).map_err(io)?;
    let occupied = entries.try_fold(false, |found, entry| {
        let entry = entry?;
        Ok::<_, std::io::Error>(found || entry.file_name() != "lost+found")
    });
    if occupied.map_err(io)? {
        return Err(RestoreError::NotEmpty(dir.to_path_buf()));
    }
    Ok(())
}

/// Pairs per write into the state.
const WRITE_BYTES: usize = 4 << 20;

/// Writes the state, the identity and the log.
fn seed(
    opts: &RestoreOptions,
    dirs: &DataDir,
    cluster_id: u64,
    summary: &SnapshotSummary,
) -> Result<(), RestoreError> {
    let unusable = |reason: String| RestoreError::Unusable(opts.snapshot.clone(), reason);
    let state = KvState::open(&dirs.state(), opts.cache_bytes, 1)?;
    let writer = state.begin_install()?;
    let file = std::fs::File::open(&opts.snapshot)
        .map_err(|e| RestoreError::Snapshot(opts.snapshot.clone(), e.into()))?;
    let mut reader = SnapshotReader::new(BufReader::with_capacity(1 << 20, file))
        .map_err(|e| RestoreError::Snapshot(opts.snapshot.clone(), e))?;
    let mut batch = Vec::new();
    let mut bytes = 0;
    loop {
        let pair = reader
            .next_pair()
            .map_err(|e| RestoreError::Snapshot(opts.snapshot.clone(), e));
        let pair = match pair {
            Ok(pair) => pair,
            Err(e) => {
                state.abort_install(writer)?;
                return Err(e);
            }
        };
        let done = pair.is_none();
        if let Some(pair) = pair {
            bytes += pair.key.len() + pair.value.len();
            batch.push((pair.key, pair.value));
        }
        if done || bytes >= WRITE_BYTES {
            writer.write(std::mem::take(&mut batch))?;
            bytes = 0;
        }
        if done {
            break;
        }
    }
    // The file read twice must be the file verified (not replaced
    // meanwhile).
    if reader.summary() != Some(summary) {
        state.abort_install(writer)?;
        return Err(unusable("the file changed while it was read".into()));
    }
    let membership = Membership::new([opts.name.ordinal], []);
    let meta = state.finish_restore(writer, cluster_id, membership)?;
    if (meta.index, meta.term) != (summary.info.revision, summary.info.term) {
        return Err(unusable(format!(
            "its state is at revision {} (term {}), its header says {} (term {})",
            meta.index, meta.term, summary.info.revision, summary.info.term
        )));
    }
    state.set_identity(&Identity {
        set_name: opts.name.set.clone(),
        ordinal: opts.name.ordinal,
        cluster_id,
    })?;
    state.checkpoint()?;
    drop(state);
    seed_log(&dirs.wal(), meta)?;
    Ok(())
}

/// A log that starts at the restored snapshot point: the member may vote
/// (it is the only voter of its new cluster), and has voted for no one.
fn seed_log(dir: &Path, meta: SnapshotMeta) -> Result<(), WalError> {
    let (mut wal, _) = Wal::open(dir)?;
    let hard_state = HardState {
        term: meta.term,
        vote: None,
        voting: Voting::Enabled,
    };
    wal.compact(hard_state, meta, &[])
}

#[cfg(test)]
mod tests;
