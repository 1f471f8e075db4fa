//! Messages no correct peer sends (module documentation of [`crate::raft`],
//! "Not handled": peers are trusted, but a broken or confused one must not
//! bring a member down). [`RaftCore::try_step`](super::RaftCore::try_step)
//! refuses them before they change anything, and says why, so that the
//! driver can log the peer and the reason.
//!
//! What a message alone shows is checked here ([`check_body`]); what only
//! the receiver's state shows (a leader's own log end, its read round, a
//! second leader in its term) is checked where that state is.

use super::membership::{Membership, MAX_MEMBERS};
use super::types::*;

/// No log ever reaches this index (at a million entries a second it takes
/// 290,000 years), so an index beyond it can only come from a broken peer.
/// Refusing those keeps every `index + 1`, `prev_index + entries`, and
/// `match_index + lag` in the core far from overflowing.
pub const MAX_INDEX: Index = u64::MAX >> 1;

/// Why a peer's message was refused. Nothing in the member changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The sender's ordinal cannot be a member.
    #[error("sender ordinal {0} is out of range (members are below {MAX_MEMBERS})")]
    SenderOutOfRange(NodeId),
    /// The message claims to come from the receiver itself.
    #[error("the message claims to come from this member")]
    FromSelf,
    /// The message is addressed to another member.
    #[error("the message is addressed to member {0}")]
    Misdirected(NodeId),
    /// An index no log reaches.
    #[error("{field} {value} is beyond any log (at most {MAX_INDEX})")]
    IndexOutOfRange {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: Index,
    },
    /// Append entries that do not follow `prev_index` one by one.
    #[error("entry {position} of the append has index {index}, not {expected}")]
    EntriesNotContiguous {
        /// The entry's position in the append.
        position: usize,
        /// Its index.
        index: Index,
        /// `prev_index + 1 + position`.
        expected: Index,
    },
    /// A term the sender cannot have had: an entry (or a snapshot point, or
    /// a last log term) of a later term than the message's own. A leader
    /// writes only entries of its term, after entries of earlier ones.
    #[error("{field} {term} is later than the message's term {msg_term}")]
    TermAhead {
        /// Which field.
        field: &'static str,
        /// Its value.
        term: Term,
        /// The message's term.
        msg_term: Term,
    },
    /// Log terms never decrease along a log, and no entry has term 0 (the
    /// first leader is elected in term 1).
    #[error("entry {index} has term {term}, below the term {before} of the entry before it")]
    EntryTermDecreases {
        /// The entry's index.
        index: Index,
        /// Its term.
        term: Term,
        /// The term of the entry before it (`prev_term` for the first; at
        /// least 1).
        before: Term,
    },
    /// A config entry whose data is not a configuration with a voter.
    #[error("config entry {index} holds no configuration with a voter")]
    BadConfigEntry {
        /// The entry's index.
        index: Index,
    },
    /// A snapshot point no leader has: of term 0, or with a configuration
    /// without voters.
    #[error("snapshot point {index} (term {term}, {membership}) is not one a leader takes")]
    BadSnapshot {
        /// The snapshot's index.
        index: Index,
        /// Its term.
        term: Term,
        /// Its configuration.
        membership: Membership,
    },
    /// An answer about entries this leader never had.
    #[error("{field} {value} is beyond this leader's log (last index {last})")]
    BeyondLeaderLog {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: Index,
        /// The leader's last index.
        last: Index,
    },
    /// The acknowledgement of a read round this leader has not started.
    #[error("read round {round} acknowledged, this leader is at round {current}")]
    ReadRoundAhead {
        /// The round acknowledged.
        round: u64,
        /// The last round started.
        current: u64,
    },
    /// A leader's message to the leader of the same term: two leaders in
    /// one term, impossible in Raft.
    #[error("a second leader in term {0}")]
    SecondLeader(Term),
}

fn index_in_range(field: &'static str, value: Index) -> Result<(), Malformed> {
    if value > MAX_INDEX {
        return Err(Malformed::IndexOutOfRange { field, value });
    }
    Ok(())
}

fn term_not_ahead(field: &'static str, term: Term, msg_term: Term) -> Result<(), Malformed> {
    if term > msg_term {
        return Err(Malformed::TermAhead {
            field,
            term,
            msg_term,
        });
    }
    Ok(())
}

/// Whether a config entry's data is a configuration with a voter (an empty
/// one would mean "none recorded", which only a log without config entries
/// says).
fn is_configuration(data: &[u8]) -> bool {
    Membership::decode(data).is_some_and(|m| m.voter_count() > 0)
}

/// What `body` alone (with its message's term) shows to be impossible.
pub(super) fn check_body(term: Term, body: &Body) -> Result<(), Malformed> {
    match body {
        Body::PreVote {
            last_index,
            last_term,
        }
        | Body::Vote {
            last_index,
            last_term,
            ..
        } => {
            index_in_range("last_index", *last_index)?;
            // A pre-vote carries the term the sender would campaign in,
            // which is after its last entry's too.
            term_not_ahead("last_term", *last_term, term)
        }
        Body::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => check_append(term, *prev_index, *prev_term, entries, *commit),
        Body::AppendResponse { result, .. } => match *result {
            AppendResult::Accepted { match_index } => index_in_range("match_index", match_index),
            AppendResult::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            } => {
                index_in_range("rejected_index", rejected_index)?;
                index_in_range("hint_index", hint_index)?;
                term_not_ahead("hint_term", hint_term, term)
            }
        },
        Body::Heartbeat {
            commit,
            leader_commit,
            ..
        } => {
            index_in_range("commit", *commit)?;
            index_in_range("leader_commit", *leader_commit)
        }
        Body::Snapshot { meta } => {
            index_in_range("snapshot index", meta.index)?;
            term_not_ahead("snapshot term", meta.term, term)?;
            let no_voters = !meta.membership.is_empty() && meta.membership.voter_count() == 0;
            if (meta.index > 0 && meta.term == 0) || no_voters {
                return Err(Malformed::BadSnapshot {
                    index: meta.index,
                    term: meta.term,
                    membership: meta.membership,
                });
            }
            Ok(())
        }
        Body::PreVoteResponse { .. }
        | Body::VoteResponse { .. }
        | Body::HeartbeatResponse { .. }
        | Body::TimeoutNow
        | Body::RejoinProbe
        | Body::RejoinProbeResponse { .. } => Ok(()),
    }
}

/// An append as a leader of `term` builds it from its log: entries that
/// follow `prev_index` one by one, of terms that never decrease from
/// `prev_term` and never pass `term`, config entries that are
/// configurations. The follower's log takes them as they are, so anything
/// else would break its own invariants (and the indexes could overflow).
fn check_append(
    term: Term,
    prev_index: Index,
    prev_term: Term,
    entries: &[Entry],
    commit: Index,
) -> Result<(), Malformed> {
    index_in_range("prev_index", prev_index)?;
    index_in_range("commit", commit)?;
    term_not_ahead("prev_term", prev_term, term)?;
    let mut before = prev_term.max(1);
    for (position, e) in entries.iter().enumerate() {
        // Cannot overflow: prev_index <= MAX_INDEX, and no append holds
        // 2^63 entries.
        let expected = prev_index.saturating_add(1 + position as Index);
        if e.index != expected {
            return Err(Malformed::EntriesNotContiguous {
                position,
                index: e.index,
                expected,
            });
        }
        index_in_range("entry index", e.index)?;
        term_not_ahead("entry term", e.term, term)?;
        if e.term < before {
            return Err(Malformed::EntryTermDecreases {
                index: e.index,
                term: e.term,
                before,
            });
        }
        before = e.term;
        if e.kind == EntryKind::Config && !is_configuration(&e.data) {
            return Err(Malformed::BadConfigEntry { index: e.index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: Bytes::new(),
        }
    }

    fn append(prev_index: Index, prev_term: Term, entries: Vec<Entry>) -> Body {
        Body::Append {
            prev_index,
            prev_term,
            entries,
            commit: 0,
        }
    }

    /// What a leader sends passes; each defect is named.
    #[test]
    fn appends_are_checked_entry_by_entry() {
        assert_eq!(check_body(3, &append(0, 0, vec![entry(1, 1)])), Ok(()));
        assert_eq!(
            check_body(3, &append(2, 2, vec![entry(3, 2), entry(4, 3)])),
            Ok(())
        );
        assert_eq!(
            check_body(3, &append(u64::MAX, 1, vec![entry(0, 1)])),
            Err(Malformed::IndexOutOfRange {
                field: "prev_index",
                value: u64::MAX
            })
        );
        assert_eq!(
            check_body(3, &append(2, 2, vec![entry(3, 2), entry(5, 2)])),
            Err(Malformed::EntriesNotContiguous {
                position: 1,
                index: 5,
                expected: 4
            })
        );
        assert_eq!(
            check_body(
                3,
                &append(
                    MAX_INDEX - 1,
                    2,
                    vec![entry(MAX_INDEX, 2), entry(MAX_INDEX + 1, 2)]
                )
            ),
            Err(Malformed::IndexOutOfRange {
                field: "entry index",
                value: MAX_INDEX + 1
            })
        );
        assert_eq!(
            check_body(3, &append(2, 2, vec![entry(3, 4)])),
            Err(Malformed::TermAhead {
                field: "entry term",
                term: 4,
                msg_term: 3
            })
        );
        assert_eq!(
            check_body(3, &append(2, 2, vec![entry(3, 1)])),
            Err(Malformed::EntryTermDecreases {
                index: 3,
                term: 1,
                before: 2
            })
        );
        assert_eq!(
            check_body(3, &append(0, 0, vec![entry(1, 0)])),
            Err(Malformed::EntryTermDecreases {
                index: 1,
                term: 0,
                before: 1
            })
        );
        let mut config = entry(1, 1);
        config.kind = EntryKind::Config;
        config.data = Bytes::from_static(b"garbage");
        assert_eq!(
            check_body(3, &append(0, 0, vec![config.clone()])),
            Err(Malformed::BadConfigEntry { index: 1 })
        );
        config.data = Membership::new([], [1]).encode();
        assert_eq!(
            check_body(3, &append(0, 0, vec![config.clone()])),
            Err(Malformed::BadConfigEntry { index: 1 })
        );
        config.data = Membership::first(3).encode();
        assert_eq!(check_body(3, &append(0, 0, vec![config])), Ok(()));
    }

    /// A snapshot point must be one a leader of the message's term has.
    #[test]
    fn snapshot_points_are_checked() {
        let snap = |meta| Body::Snapshot { meta };
        assert_eq!(check_body(3, &snap(SnapshotMeta::at(9, 3))), Ok(()));
        assert!(check_body(3, &snap(SnapshotMeta::at(u64::MAX, 3))).is_err());
        assert!(check_body(3, &snap(SnapshotMeta::at(9, 4))).is_err());
        assert!(check_body(3, &snap(SnapshotMeta::at(9, 0))).is_err());
        let no_voters = SnapshotMeta {
            index: 9,
            term: 2,
            membership: Membership::new([], [1]),
        };
        assert!(check_body(3, &snap(no_voters)).is_err());
    }
}
