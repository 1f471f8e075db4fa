//! Switches that each turn one safety rule of the core off, for tests only
//! (the `testing` feature, which only the test build enables). The suite
//! turns each on in `tests/raft_mutations.rs` and asserts that the
//! simulation finds a violation within a bounded number of seeds: a rule
//! whose removal no test notices is a rule no test checks.

/// One safety rule, switched off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// Votes and pre-votes are granted whatever the candidate's log (Raft
    /// §5.4.1 dropped).
    VoteIgnoresLogFreshness,
    /// An append is accepted without checking the term of the entry before
    /// it (the log matching check, §5.3, dropped).
    AppendSkipsPrevTermCheck,
    /// An entry of an earlier term is committed by counting replicas
    /// (§5.4.2, figure 8).
    CommitOlderTermByCount,
    /// A linearizable read is served without a heartbeat round confirming
    /// leadership (ReadIndex, thesis §6.4).
    ReadWithoutQuorumRound,
    /// A member with a lost volume votes at once.
    LostVolumeVotesAtOnce,
    /// A member with a lost volume votes once it holds an entry of the
    /// leader's term, before it has reached the commit index that leader
    /// announced (the partial catch-up bug a review found).
    LostVolumeVotesAfterPartialCatchUp,
    /// A Ready's messages leave before its hard state and entries are
    /// durable (the Ready loop's persist-then-send order dropped): a crash
    /// can make a member forget a vote or an entry it acknowledged.
    SendBeforePersist,
    /// A configuration takes effect when it commits instead of when it is
    /// appended: members switch at different times, and two disjoint
    /// majorities can exist.
    ConfigAtCommit,
    /// A second membership change is appended before the first commits.
    TwoChangesInFlight,
    /// A learner's acknowledgement and vote count toward a quorum.
    LearnerCountsTowardQuorum,
}

impl Mutation {
    /// Every mutation, each of which a test in `tests/raft_mutations.rs`
    /// must see caught.
    pub const ALL: [Mutation; 10] = [
        Mutation::VoteIgnoresLogFreshness,
        Mutation::AppendSkipsPrevTermCheck,
        Mutation::CommitOlderTermByCount,
        Mutation::ReadWithoutQuorumRound,
        Mutation::LostVolumeVotesAtOnce,
        Mutation::LostVolumeVotesAfterPartialCatchUp,
        Mutation::SendBeforePersist,
        Mutation::ConfigAtCommit,
        Mutation::TwoChangesInFlight,
        Mutation::LearnerCountsTowardQuorum,
    ];
}

/// Whether `$m` is switched on in the core `$node`: always false without the
/// `testing` feature, so the product build carries no switch at all.
#[cfg(feature = "testing")]
macro_rules! mutated {
    ($node:expr, $m:ident) => {
        $node.cfg.mutation == Some($crate::raft::mutations::Mutation::$m)
    };
}

#[cfg(not(feature = "testing"))]
macro_rules! mutated {
    ($node:expr, $m:ident) => {
        false
    };
}

pub(crate) use mutated;
