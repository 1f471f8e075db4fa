//! The values the protocol core takes in and gives out.

use bytes::Bytes;

use super::membership::Membership;

/// A member's id: its StatefulSet ordinal.
pub type NodeId = u32;
/// A Raft term.
pub type Term = u64;
/// A log index. Index 0 is the empty prefix; the first entry has index 1.
pub type Index = u64;

/// What a log entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A command proposed by a client, opaque to the core.
    Normal,
    /// The empty entry a new leader appends at the start of its term, so that
    /// it can commit (and learn the commit point of) everything before it.
    Noop,
    /// A new configuration (the data is [`Membership::encode`]d). It takes
    /// effect on each member as soon as it is in its log, committed or not.
    Config,
}

impl EntryKind {
    /// The kind from its stored flags (a no-op flag, a config flag).
    pub fn from_flags(noop: bool, config: bool) -> Self {
        match (noop, config) {
            (_, true) => EntryKind::Config,
            (true, false) => EntryKind::Noop,
            (false, false) => EntryKind::Normal,
        }
    }
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The entry's position in the log; also the revision of its changes.
    pub index: Index,
    /// The term of the leader that created the entry.
    pub term: Term,
    /// Normal command or leader no-op.
    pub kind: EntryKind,
    /// The command, opaque to the core (empty for a no-op).
    pub data: Bytes,
}

/// Whether this member may vote and campaign.
///
/// A member whose data dir is new does not know whether it has voted or
/// acknowledged entries before (its volume may have been lost), so it neither
/// votes nor campaigns until it is safe; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Voting {
    /// An ordinary voter.
    Enabled,
    /// A new data dir: asking every peer for its term and whether its log is
    /// empty.
    AwaitingPeers,
    /// A new data dir in an existing cluster: waiting to catch up with a
    /// leader whose term is at least `min_term`.
    AwaitingLeader {
        /// The highest term any peer reported when asked.
        min_term: Term,
    },
}

/// The state that must be durable before any message that depends on it is
/// sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HardState {
    /// The current term.
    pub term: Term,
    /// Who this member voted for in `term`.
    pub vote: Option<NodeId>,
    /// Whether the member may vote.
    pub voting: Voting,
}

impl HardState {
    /// The hard state of a member whose data dir is new.
    pub fn fresh() -> Self {
        HardState {
            term: 0,
            vote: None,
            voting: Voting::AwaitingPeers,
        }
    }
}

/// Where a snapshot ends: the log before and at `index` is replaced by it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// The configuration as of `index` (empty: none was ever recorded, the
    /// bootstrap voters apply).
    pub membership: Membership,
}

impl SnapshotMeta {
    /// A snapshot point with no recorded configuration.
    pub fn at(index: Index, term: Term) -> Self {
        SnapshotMeta {
            index,
            term,
            membership: Membership::default(),
        }
    }
}

/// A message between members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's term (for a pre-vote request: the term it would campaign
    /// in).
    pub term: Term,
    /// What the message says.
    pub body: Body,
}

/// The kinds of message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Would you vote for me in `term` (which the sender has not entered)?
    PreVote {
        /// The sender's last log index.
        last_index: Index,
        /// The term of the sender's last log entry.
        last_term: Term,
    },
    /// The answer to a pre-vote.
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// Vote for me in `term`.
    Vote {
        /// The sender's last log index.
        last_index: Index,
        /// The term of the sender's last log entry.
        last_term: Term,
        /// The election was asked for by the leader (TimeoutNow): voters that
        /// still hear that leader vote anyway.
        transfer: bool,
    },
    /// The answer to a vote request.
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Append `entries` after (`prev_index`, `prev_term`).
    Append {
        /// The index before the first entry.
        prev_index: Index,
        /// The term of the entry at `prev_index`.
        prev_term: Term,
        /// The entries, in index order; possibly none.
        entries: Vec<Entry>,
        /// The leader's commit index.
        commit: Index,
    },
    /// The answer to an append (or to an installed snapshot).
    AppendResponse {
        /// Accepted or rejected.
        result: AppendResult,
        /// Whether the responder may vote.
        voter: bool,
    },
    /// The leader is alive; `commit` is capped at what the follower is known
    /// to hold.
    Heartbeat {
        /// min(leader commit, follower's match index).
        commit: Index,
        /// The leader's own commit index (not to commit by: a member with a
        /// new data dir must catch up to it before it votes).
        leader_commit: Index,
        /// The read-index round this heartbeat confirms (0: none).
        read_round: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// The read-index round being acknowledged.
        read_round: u64,
        /// Whether the responder may vote.
        voter: bool,
    },
    /// Campaign now, skipping pre-vote: the leader hands over leadership.
    TimeoutNow,
    /// Install the snapshot ending at `meta`. Its data travels beside the
    /// message; the core only sees that it has arrived in full.
    Snapshot {
        /// Where the snapshot ends.
        meta: SnapshotMeta,
    },
    /// From a member with a new data dir: tell me your term and whether your
    /// log is empty.
    RejoinProbe,
    /// The answer to a rejoin probe; the message's term is the responder's.
    RejoinProbeResponse {
        /// Whether the responder's log (and snapshot) is empty.
        empty_log: bool,
        /// The responder's configuration (its bootstrap voters if its log
        /// holds none), so that a member that knows none learns whom else
        /// to ask.
        members: Membership,
    },
}

/// How a follower answered an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`.
    Accepted {
        /// The highest index known to match.
        match_index: Index,
    },
    /// The follower's log does not hold (`rejected_index`, its term). The
    /// hint is the highest index at or below it whose term is at most the
    /// leader's term there, so that the leader can skip a whole term of
    /// conflicting entries at once.
    Rejected {
        /// The `prev_index` of the rejected append.
        rejected_index: Index,
        /// Where the leader should probe next.
        hint_index: Index,
        /// The follower's term at `hint_index` (0 if unknown).
        hint_term: Term,
    },
}

/// This member's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Following a leader, or waiting for one.
    Follower,
    /// Polling peers before starting an election.
    PreCandidate,
    /// Asking for votes.
    Candidate,
    /// Leading.
    Leader,
}

/// A linearizable read that may now be served once the state machine has
/// applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The id the driver gave the read.
    pub id: u64,
    /// The commit index the read must wait for.
    pub index: Index,
}

/// Why a proposal was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This member does not lead; `leader` is the one it knows, if any.
    #[error("not the leader")]
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// Leadership is being handed over; retry at the new leader.
    #[error("leadership transfer in progress")]
    Transferring,
}

/// Why a leadership transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader can hand over leadership.
    #[error("not the leader")]
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// The target is not a member.
    #[error("no member with ordinal {0}")]
    UnknownMember(NodeId),
    /// The target cannot vote yet (new data dir still catching up).
    #[error("member {0} cannot vote yet")]
    NotVoter(NodeId),
}

/// Everything the driver must do after feeding the core some input, in this
/// order: persist (`snapshot`, then `hard_state` and `entries`), call
/// [`RaftCore::advance`](super::RaftCore::advance), send `messages`, start
/// `send_snapshots`, apply `committed`, answer `read_states`.
#[derive(Debug, Default)]
pub struct Ready {
    /// The hard state, when it changed.
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader, to install before `entries`. The
    /// log up to and including its index is replaced.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries to append. The first may overwrite (and so truncate) entries
    /// persisted before.
    pub entries: Vec<Entry>,
    /// Messages to send once the above is durable.
    pub messages: Vec<Message>,
    /// Followers that need a snapshot: send them one taken at the state
    /// machine's applied index, then call `snapshot_sent`.
    pub send_snapshots: Vec<NodeId>,
    /// Committed entries to apply, in index order.
    pub committed: Vec<Entry>,
    /// Reads that may be served once their index is applied.
    pub read_states: Vec<ReadState>,
    /// Reads that can no longer be confirmed here (leadership lost).
    pub dropped_reads: Vec<u64>,
}

impl Ready {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.send_snapshots.is_empty()
            && self.committed.is_empty()
            && self.read_states.is_empty()
            && self.dropped_reads.is_empty()
    }
}
