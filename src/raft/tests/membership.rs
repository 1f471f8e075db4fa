//! Membership changes (module documentation of [`crate::raft`],
//! "Membership changes"): the leader's refusals, each leaving the log as it
//! was; a learner's acknowledgement never counting toward a commit; and a
//! removed member's vote requests refused without a term change.

use super::*;

fn config_entry(index: Index, term: Term, m: Membership) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Config,
        data: m.encode(),
    }
}

/// Member `id` (of three bootstrap voters) restored in `term` with
/// `entries`, applied (and so committed) up to `applied`.
fn restored(id: NodeId, term: Term, entries: Vec<Entry>, applied: Index) -> RaftCore {
    let restored = Restored {
        hard_state: HardState {
            term,
            vote: None,
            voting: Voting::Enabled,
        },
        snapshot: SnapshotMeta::default(),
        entries,
        applied,
    };
    RaftCore::new(config(id, 3), restored, 7)
}

fn learner_accepted(match_index: Index) -> Body {
    // A learner says it may vote (its volume is fine): still a learner.
    accepted(match_index)
}

/// One change at a time: while a config entry is uncommitted every other
/// change is refused with InProgress and nothing is appended; once a voter
/// holds it (a quorum with the leader) it commits and the next is taken.
/// The change takes effect when appended.
#[test]
fn a_second_change_waits_for_the_first_to_commit() {
    let mut n = leader(0, 3, 2, &[1]);
    let (index, term) = n
        .propose_membership_change(MembershipChange::AddLearner(3))
        .expect("the first change");
    assert_eq!((index, term), (3, 2));
    assert!(n.membership().is_learner(3), "in force once appended");
    for change in [
        MembershipChange::AddLearner(4),
        MembershipChange::Remove(2),
        MembershipChange::Promote(3),
    ] {
        assert_eq!(
            n.propose_membership_change(change),
            Err(MembershipError::InProgress(3)),
            "{change}"
        );
    }
    assert_eq!(n.log().last_index(), 3, "nothing appended");
    ready(&mut n);
    step(&mut n, 1, 2, accepted(3));
    assert_eq!(n.log().commit(), 3);
    assert_eq!(
        n.propose_membership_change(MembershipChange::AddLearner(4)),
        Ok((4, 2))
    );
}

/// A new leader changes nothing before it has committed an entry of its
/// own term, even though the configuration in its log is committed
/// (Ongaro's 2015 fix to single-server changes).
#[test]
fn a_new_leader_changes_nothing_before_its_term_commits() {
    let entries = vec![entry(1, 1), config_entry(2, 1, Membership::first(3))];
    let mut n = elect(restored(0, 1, entries, 2), 2, 1);
    assert_eq!(n.log().commit(), 2, "the configuration is committed");
    assert_eq!(n.log().last_index(), 3, "the new leader's no-op");
    assert_eq!(
        n.propose_membership_change(MembershipChange::AddLearner(3)),
        Err(MembershipError::LeaderNotSettled)
    );
    assert_eq!(n.log().last_index(), 3, "nothing appended");
    step(&mut n, 1, 2, accepted(3));
    assert_eq!(n.log().commit(), 3);
    assert_eq!(
        n.propose_membership_change(MembershipChange::AddLearner(3)),
        Ok((4, 2))
    );
}

/// The only voter cannot be removed.
#[test]
fn the_last_voter_cannot_be_removed() {
    let mut n = leader(0, 1, 2, &[1]);
    let last = n.log().last_index();
    assert_eq!(
        n.propose_membership_change(MembershipChange::Remove(0)),
        Err(MembershipError::LastVoter(0))
    );
    assert_eq!(n.log().last_index(), last, "nothing appended");
}

/// With voter 2 silent for more than an election timeout, removing voter 1
/// would leave voters {0, 2} with one live member, fewer than their quorum
/// of two: refused. Removing the silent voter itself leaves {0, 1}, both
/// live: accepted.
#[test]
fn a_removal_that_leaves_too_few_live_voters_is_refused() {
    let mut n = leader(0, 3, 2, &[1]);
    let election = n.config().election_ticks;
    for t in 1..=election + 5 {
        n.tick();
        if t % n.config().heartbeat_ticks == 0 {
            step(&mut n, 1, 2, heartbeat_response(0));
        }
        ready(&mut n);
    }
    assert_eq!(n.role(), Role::Leader, "voter 1 keeps the quorum");
    let last = n.log().last_index();
    assert_eq!(
        n.propose_membership_change(MembershipChange::Remove(1)),
        Err(MembershipError::QuorumAtRisk {
            member: 1,
            live: 1,
            voters: 2,
            needed: 2
        })
    );
    assert_eq!(n.log().last_index(), last, "nothing appended");
    assert_eq!(
        n.propose_membership_change(MembershipChange::Remove(2)),
        Ok((last + 1, 2))
    );
}

/// A learner is promoted only once it has answered, says it may vote, and
/// trails the commit index by at most CAUGHT_UP_LAG entries.
#[test]
fn a_learner_is_promoted_only_once_caught_up() {
    let mut n = leader(0, 3, 2, &[1]);
    n.propose_membership_change(MembershipChange::AddLearner(3))
        .expect("add");
    ready(&mut n);
    step(&mut n, 1, 2, accepted(3));
    let promote = MembershipChange::Promote(3);
    assert_eq!(
        n.propose_membership_change(promote),
        Err(MembershipError::NotCaughtUp(3)),
        "it never answered"
    );
    // More than CAUGHT_UP_LAG entries, committed by voter 1.
    for i in 0..CAUGHT_UP_LAG + 10 {
        n.propose(Bytes::from(format!("d{i}"))).expect("propose");
    }
    ready(&mut n);
    let last = n.log().last_index();
    step(&mut n, 1, 2, accepted(last));
    assert_eq!(n.log().commit(), last);
    step(&mut n, 3, 2, learner_accepted(3));
    assert_eq!(
        n.propose_membership_change(promote),
        Err(MembershipError::NotCaughtUp(3)),
        "it trails the commit index by more than CAUGHT_UP_LAG"
    );
    let not_voting = Body::AppendResponse {
        result: AppendResult::Accepted { match_index: last },
        voter: false,
    };
    step(&mut n, 3, 2, not_voting);
    assert_eq!(
        n.propose_membership_change(promote),
        Err(MembershipError::NotCaughtUp(3)),
        "it may not vote yet (a new data dir)"
    );
    step(&mut n, 3, 2, learner_accepted(last));
    assert_eq!(
        n.log().last_index(),
        last,
        "nothing appended by the refusals"
    );
    assert_eq!(n.propose_membership_change(promote), Ok((last + 1, 2)));
}

/// With voters {0, 1, 2} and learner 3, an entry held by the leader and
/// the learner is not committed (two of four members, but one of the
/// three voters besides the leader is needed); the same acknowledgement
/// from voter 2 commits it.
#[test]
fn a_learners_acknowledgement_does_not_commit_a_voters_does() {
    let mut n = leader(0, 3, 2, &[1]);
    n.propose_membership_change(MembershipChange::AddLearner(3))
        .expect("add");
    ready(&mut n);
    step(&mut n, 1, 2, accepted(3));
    assert_eq!(n.log().commit(), 3);
    let (index, _) = n.propose(Bytes::from("x")).expect("propose");
    assert_eq!(index, 4);
    ready(&mut n);
    let rd = step(&mut n, 3, 2, learner_accepted(4));
    assert_eq!(n.log().commit(), 3, "a learner's acknowledgement counted");
    assert!(rd.committed.is_empty());
    let rd = step(&mut n, 2, 2, accepted(4));
    assert_eq!(n.log().commit(), 4);
    assert_eq!(
        rd.committed.iter().map(|e| e.index).collect::<Vec<_>>(),
        [4]
    );
}

/// A member whose configuration no longer has voter 2 (it was removed)
/// refuses 2's pre-vote and vote requests of a much higher term, with a
/// more up-to-date log, and neither raises its term nor records a vote;
/// the same vote request from voter 0 does raise the term.
#[test]
fn a_removed_members_vote_requests_are_refused_without_a_term_change() {
    let entries = vec![
        entry(1, 1),
        config_entry(2, 1, Membership::first(3)),
        config_entry(3, 1, Membership::new([0, 1], [])),
    ];
    let mut n = restored(1, 1, entries, 3);
    let body = Body::PreVote {
        last_index: 10,
        last_term: 4,
    };
    let rd = step(&mut n, 2, 5, body);
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 1, Body::PreVoteResponse { granted: false })]
    );
    let vote = Body::Vote {
        last_index: 10,
        last_term: 4,
        transfer: false,
    };
    let rd = step(&mut n, 2, 5, vote.clone());
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 1, Body::VoteResponse { granted: false })]
    );
    assert_eq!(rd.hard_state, None, "nothing to persist");
    assert_eq!((n.term(), n.vote()), (1, None));
    // A voter's request of the same term is heard.
    step(&mut n, 0, 5, vote);
    assert_eq!(n.term(), 5);
}

/// With voters {0, 1, 2} and learner 3 in its log, candidate 0 is not
/// elected by its own vote and the learner's (two of four members, one of
/// three voters besides itself missing); voter 1's vote elects it. The same
/// holds for pre-votes.
#[test]
fn a_learners_vote_never_elects() {
    let m = Membership::new([0, 1, 2], [3]);
    let mut n = restored(0, 1, vec![config_entry(1, 1, m)], 1);
    n.tick_until_campaign();
    n.step(msg(3, 0, 2, Body::PreVoteResponse { granted: true }));
    ready(&mut n);
    assert_eq!(
        n.role(),
        Role::PreCandidate,
        "a learner's pre-vote counted toward the quorum"
    );
    n.step(msg(1, 0, 2, Body::PreVoteResponse { granted: true }));
    ready(&mut n);
    assert_eq!((n.role(), n.term()), (Role::Candidate, 2));
    n.step(msg(3, 0, 2, Body::VoteResponse { granted: true }));
    ready(&mut n);
    assert_eq!(
        n.role(),
        Role::Candidate,
        "a learner's vote counted toward the quorum"
    );
    n.step(msg(1, 0, 2, Body::VoteResponse { granted: true }));
    ready(&mut n);
    assert_eq!(n.role(), Role::Leader);
}
