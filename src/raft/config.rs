//! The settings of the core, and what it is restored from.

use super::types::{Entry, HardState, Index, NodeId, SnapshotMeta};

/// How far (in entries) a follower may trail the commit index and still
/// count as caught up: for priority return (the leader hands leadership
/// down to it) and for a graceful stop's choice of successor. Under a steady
/// write load a healthy follower trails by a few entries at any instant;
/// the handover itself brings it fully up to date before TimeoutNow.
pub const CAUGHT_UP_LAG: Index = 256;

/// The timing and flow-control settings of the core, in ticks and counts.
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's ordinal.
    pub id: NodeId,
    /// The bootstrap voters `0..voters`: the configuration of a new cluster,
    /// and of a log that never recorded one. Once a configuration is in the
    /// log (or a snapshot) it alone counts.
    pub voters: u32,
    /// A member whose data dir is new also asks ordinals `0..probe_peers`
    /// before it may take every log for empty (a new cluster): the pods the
    /// StatefulSet asks for now, which may be more than the bootstrap
    /// voters (the cluster grew). The driver sets it from the desired
    /// replica count read at start-up.
    pub probe_peers: u32,
    /// A leader sends a heartbeat every this many ticks.
    pub heartbeat_ticks: u32,
    /// The base election timeout. It is also the leader lease: a member that
    /// heard from a leader within it ignores vote requests, and a leader that
    /// heard from no quorum within it steps down.
    pub election_ticks: u32,
    /// Added to the election timeout per ordinal, so the lowest live ordinal
    /// campaigns first.
    pub election_stagger_ticks: u32,
    /// At most this much random extra timeout, so equal timeouts separate.
    pub election_jitter_ticks: u32,
    /// When the connection to the leader is reset (its process died), a
    /// member pre-campaigns after `1 + id * fast_election_stagger_ticks`
    /// ticks instead of a whole election timeout.
    pub fast_election_stagger_ticks: u32,
    /// Whether a leader hands leadership to a lower ordinal that is caught up.
    pub priority_return: bool,
    /// How long a lower ordinal must stay caught up and answering before the
    /// leader hands over to it.
    pub priority_return_ticks: u32,
    /// The most entries in one append.
    pub max_append_entries: usize,
    /// About the most bytes of entry data in one append.
    pub max_append_bytes: usize,
    /// The most appends in flight to one follower.
    pub max_inflight: usize,
    /// One safety rule switched off, for the tests that prove the
    /// simulation notices.
    #[cfg(feature = "testing")]
    pub mutation: Option<super::mutations::Mutation>,
}

impl Config {
    /// The defaults for member `id` of `voters`, with 10 ms ticks in mind:
    /// heartbeat 50 ms, election 300 ms + 100 ms per ordinal + up to 50 ms.
    pub fn new(id: NodeId, voters: u32) -> Self {
        Config {
            id,
            voters,
            probe_peers: voters,
            heartbeat_ticks: 5,
            election_ticks: 30,
            election_stagger_ticks: 10,
            election_jitter_ticks: 5,
            fast_election_stagger_ticks: 3,
            priority_return: true,
            priority_return_ticks: 30,
            max_append_entries: 1024,
            max_append_bytes: 4 << 20,
            max_inflight: 64,
            #[cfg(feature = "testing")]
            mutation: None,
        }
    }
}

/// What the core is restored from at start-up.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The persisted hard state ([`HardState::fresh`] for a new data dir).
    pub hard_state: HardState,
    /// The persisted snapshot point.
    pub snapshot: SnapshotMeta,
    /// The persisted entries after the snapshot.
    pub entries: Vec<Entry>,
    /// The index the state machine has applied (at least the snapshot's).
    pub applied: Index,
}

impl Restored {
    /// A new data dir.
    pub fn fresh() -> Self {
        Restored {
            hard_state: HardState::fresh(),
            snapshot: SnapshotMeta::default(),
            entries: Vec::new(),
            applied: 0,
        }
    }
}
