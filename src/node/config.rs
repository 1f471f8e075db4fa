//! What a node is started with, and why it may refuse to start.

use std::path::PathBuf;
use std::time::Duration;

use super::space::SpacePolicy;
use super::CompactionPolicy;
use crate::identity::PodName;
use crate::state::StateError;
use crate::storage::wal::WalError;

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
    pub(super) fn ticks(&self, d: Duration) -> u32 {
        (d.as_micros() / self.tick.as_micros().max(1)).max(1) as u32
    }
}

/// What a node is started with.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `<set>-<ordinal>`.
    pub name: PodName,
    /// The number of voting members.
    pub replicas: u32,
    /// The ordinals `0..probe_peers` a new data dir asks before it takes
    /// the cluster for new: the desired replica count read at start-up (at
    /// least `replicas`; every possible ordinal when it could not be read).
    pub probe_peers: u32,
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
    /// The space bounds of the data dir's volume (see [`super::space`]).
    pub space: SpacePolicy,
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
    /// The ordinal can never be a member.
    #[error("{name} has ordinal {ordinal}: members are ordinals 0..={max}")]
    OrdinalOutOfRange {
        /// The pod name.
        name: String,
        /// Its ordinal.
        ordinal: u32,
        /// The highest ordinal a member can have.
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
