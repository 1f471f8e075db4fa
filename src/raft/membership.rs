//! The configuration: which ordinals vote and which only learn (module
//! documentation of [`crate::raft`], "Membership changes").

use bytes::Bytes;

use super::types::NodeId;

/// Ordinals are below this: a configuration is two 64-bit sets, so that it
/// is `Copy` and travels inside a snapshot point. (etcd advises at most 7
/// voters; a StatefulSet of this store is far below 64 pods.)
pub const MAX_MEMBERS: u32 = 64;

/// The voters and the learners, by ordinal. The empty configuration means
/// "not known": a log that never held one (a new data dir, or a log written
/// before configurations were recorded) falls back to the bootstrap voters
/// `0..Config::voters`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    voters: u64,
    learners: u64,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl std::fmt::Display for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let voters: Vec<NodeId> = self.voters().collect();
        let learners: Vec<NodeId> = self.learners().collect();
        write!(f, "voters {voters:?}")?;
        if !learners.is_empty() {
            write!(f, " learners {learners:?}")?;
        }
        Ok(())
    }
}

fn bits(set: u64) -> impl Iterator<Item = NodeId> {
    (0..MAX_MEMBERS).filter(move |&i| set & (1 << i) != 0)
}

fn bit(id: NodeId) -> u64 {
    if id < MAX_MEMBERS {
        1 << id
    } else {
        0
    }
}

impl Membership {
    /// The bootstrap configuration of a new cluster: voters `0..n`.
    pub fn first(n: u32) -> Self {
        Membership {
            voters: (0..n.min(MAX_MEMBERS)).fold(0, |s, i| s | (1 << i)),
            learners: 0,
        }
    }

    /// A configuration from its voters and learners (ordinals of
    /// `MAX_MEMBERS` or more are left out).
    pub fn new(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
    ) -> Self {
        let voters = voters.into_iter().fold(0, |s, i| s | bit(i));
        let learners = learners.into_iter().fold(0, |s, i| s | bit(i)) & !voters;
        Membership { voters, learners }
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.voters == 0 && self.learners == 0
    }
    /// The voters, in ordinal order.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> {
        bits(self.voters)
    }
    /// The learners, in ordinal order.
    pub fn learners(&self) -> impl Iterator<Item = NodeId> {
        bits(self.learners)
    }
    /// Voters and learners, in ordinal order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> {
        bits(self.voters | self.learners)
    }
    /// Whether `id` votes.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters & bit(id) != 0
    }
    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners & bit(id) != 0
    }
    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        (self.voters | self.learners) & bit(id) != 0
    }
    /// The number of voters.
    pub fn voter_count(&self) -> usize {
        self.voters.count_ones() as usize
    }
    /// A quorum: half the voters, plus one. Learners never count.
    pub fn majority(&self) -> usize {
        self.voter_count() / 2 + 1
    }
    /// Whether the voters among `acks` form a quorum.
    pub fn is_quorum(&self, acks: impl IntoIterator<Item = NodeId>) -> bool {
        let set = acks.into_iter().fold(0, |s, i| s | bit(i));
        (set & self.voters).count_ones() as usize >= self.majority()
    }
    /// Every member of either configuration.
    pub fn union(&self, other: &Membership) -> Membership {
        Membership::new(
            self.voters().chain(other.voters()),
            self.learners().chain(other.learners()),
        )
    }

    /// The configuration after `change`, or why the change does not apply
    /// to this one. (Whether it is *safe* now is the leader's question:
    /// `RaftCore::propose_membership_change`.)
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, MembershipError> {
        let mut next = *self;
        match change {
            MembershipChange::AddLearner(id) => {
                if id >= MAX_MEMBERS {
                    return Err(MembershipError::OrdinalOutOfRange(id));
                }
                if self.contains(id) {
                    return Err(MembershipError::AlreadyMember(id));
                }
                next.learners |= bit(id);
            }
            MembershipChange::Promote(id) => {
                if !self.is_learner(id) {
                    return Err(MembershipError::NotLearner(id));
                }
                next.learners &= !bit(id);
                next.voters |= bit(id);
            }
            MembershipChange::Remove(id) => {
                if !self.contains(id) {
                    return Err(MembershipError::NotMember(id));
                }
                if self.is_voter(id) && self.voter_count() == 1 {
                    return Err(MembershipError::LastVoter(id));
                }
                next.voters &= !bit(id);
                next.learners &= !bit(id);
            }
        }
        Ok(next)
    }

    /// The configuration as a config entry's data.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.voters.to_le_bytes());
        out.extend_from_slice(&self.learners.to_le_bytes());
        Bytes::from(out)
    }

    /// A config entry's data; `None` if it is not one.
    pub fn decode(data: &[u8]) -> Option<Membership> {
        let voters = u64::from_le_bytes(data.get(0..8)?.try_into().ok()?);
        let learners = u64::from_le_bytes(data.get(8..16)?.try_into().ok()?);
        (data.len() == 16).then_some(Membership {
            voters,
            learners: learners & !voters,
        })
    }

    /// The two sets as stored (voters, learners).
    pub fn to_bits(&self) -> (u64, u64) {
        (self.voters, self.learners)
    }

    /// The two sets as stored.
    pub fn from_bits(voters: u64, learners: u64) -> Membership {
        Membership {
            voters,
            learners: learners & !voters,
        }
    }
}

/// One single-server change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// A new member that receives the log but does not vote.
    AddLearner(NodeId),
    /// A learner becomes a voter.
    Promote(NodeId),
    /// A voter or learner leaves.
    Remove(NodeId),
}

impl MembershipChange {
    /// The member the change is about.
    pub fn member(&self) -> NodeId {
        match *self {
            MembershipChange::AddLearner(id)
            | MembershipChange::Promote(id)
            | MembershipChange::Remove(id) => id,
        }
    }
}

impl std::fmt::Display for MembershipChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MembershipChange::AddLearner(id) => write!(f, "add learner {id}"),
            MembershipChange::Promote(id) => write!(f, "promote {id}"),
            MembershipChange::Remove(id) => write!(f, "remove {id}"),
        }
    }
}

/// Why a membership change was refused. Nothing changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader changes the configuration.
    #[error("not the leader")]
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// Leadership is being handed over.
    #[error("leadership transfer in progress")]
    Transferring,
    /// One change at a time: the last one is not committed yet.
    #[error("a membership change (log index {0}) is still in progress; retry once it commits")]
    InProgress(u64),
    /// A new leader changes nothing before it has committed an entry of its
    /// term (the single-server change fix, Ongaro's group post of 2015).
    #[error("the new leader has not committed an entry of its term yet; retry shortly")]
    LeaderNotSettled,
    /// The ordinal cannot be a member.
    #[error("ordinal {0} is out of range: members are ordinals below 64")]
    OrdinalOutOfRange(NodeId),
    /// Adding a member twice.
    #[error("ordinal {0} is already a member")]
    AlreadyMember(NodeId),
    /// Removing a non-member.
    #[error("ordinal {0} is not a member")]
    NotMember(NodeId),
    /// Promoting a non-learner.
    #[error("ordinal {0} is not a learner")]
    NotLearner(NodeId),
    /// A learner too far behind to vote yet.
    #[error("learner {0} has not caught up with the log yet")]
    NotCaughtUp(NodeId),
    /// Removing the only voter.
    #[error("ordinal {0} is the last voter; a cluster needs at least one")]
    LastVoter(NodeId),
    /// The voters left would be fewer than a quorum of live members.
    #[error("removing {member} would leave {live} live voter(s) of {voters}, fewer than the {needed} a quorum needs")]
    QuorumAtRisk {
        /// The member to remove.
        member: NodeId,
        /// Live voters after the change.
        live: usize,
        /// Voters after the change.
        voters: usize,
        /// The quorum after the change.
        needed: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_and_encoding() {
        let m = Membership::first(3);
        assert_eq!(m.majority(), 2);
        let m = m.apply(MembershipChange::AddLearner(4)).unwrap();
        assert!(m.is_learner(4) && !m.is_voter(4));
        assert_eq!(m.majority(), 2, "a learner never counts");
        assert!(!m.is_quorum([0, 4]));
        assert!(m.is_quorum([0, 1]));
        let m = m.apply(MembershipChange::Promote(4)).unwrap();
        assert_eq!(m.majority(), 3);
        assert_eq!(Membership::decode(&m.encode()), Some(m));
        assert_eq!(
            m.apply(MembershipChange::AddLearner(4)),
            Err(MembershipError::AlreadyMember(4))
        );
        let one = Membership::first(1);
        assert_eq!(
            one.apply(MembershipChange::Remove(0)),
            Err(MembershipError::LastVoter(0))
        );
        assert_eq!(
            one.apply(MembershipChange::AddLearner(64)),
            Err(MembershipError::OrdinalOutOfRange(64))
        );
        assert_eq!(Membership::decode(b"short"), None);
    }
}
