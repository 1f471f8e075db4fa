//! Elections: the ordinal-staggered timer, pre-vote, votes, the lease,
//! fast failover and the role changes they cause.

use super::*;

fn pre_vote(last_index: Index, last_term: Term) -> Body {
    Body::PreVote {
        last_index,
        last_term,
    }
}

fn vote(last_index: Index, last_term: Term, transfer: bool) -> Body {
    Body::Vote {
        last_index,
        last_term,
        transfer,
    }
}

fn heartbeat(commit: Index) -> Body {
    Body::Heartbeat {
        commit,
        leader_commit: commit,
        read_round: 0,
    }
}

/// Member 1 times out after the base timeout plus one stagger, and asks for
/// pre-votes in the next term without entering it.
#[test]
fn a_timeout_asks_for_pre_votes_without_raising_the_term() {
    let mut n = member(1, 3, 2, &[1, 2]);
    let (ticks, rd) = tick_until_output(&mut n, 1000);
    assert_eq!(
        ticks,
        30 + 10,
        "election_ticks + 1 * election_stagger_ticks"
    );
    assert_eq!(rd.hard_state, None, "the term is not raised");
    assert_eq!(
        rd.messages,
        vec![msg(1, 0, 3, pre_vote(2, 2)), msg(1, 2, 3, pre_vote(2, 2)),]
    );
    assert_eq!((n.role(), n.term()), (Role::PreCandidate, 2));
}

/// Ordinal 0 times out a stagger before ordinal 1, which times out a
/// stagger before ordinal 2: the lowest live ordinal campaigns first.
#[test]
fn the_timeout_grows_with_the_ordinal() {
    let ticks: Vec<u32> = (0..3)
        .map(|id| tick_until_output(&mut member(id, 3, 2, &[1, 2]), 1000).0)
        .collect();
    assert_eq!(ticks, vec![30, 40, 50]);
}

/// A quorum of pre-votes starts the real election: the term is raised, the
/// vote for itself is in the same Ready as the requests.
#[test]
fn a_quorum_of_pre_votes_starts_the_election() {
    let mut n = member(1, 3, 2, &[1, 2]);
    n.tick_until_campaign();
    ready(&mut n);
    let rd = step(&mut n, 0, 3, Body::PreVoteResponse { granted: true });
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 3,
            vote: Some(1),
            voting: Voting::Enabled
        })
    );
    assert_eq!(
        rd.messages,
        vec![
            msg(1, 0, 3, vote(2, 2, false)),
            msg(1, 2, 3, vote(2, 2, false)),
        ]
    );
    assert_eq!(n.role(), Role::Candidate);
}

/// A quorum of pre-vote refusals: back to following, in the same term.
#[test]
fn a_quorum_of_pre_vote_refusals_ends_the_attempt() {
    let mut n = member(1, 3, 2, &[1, 2]);
    n.tick_until_campaign();
    ready(&mut n);
    step(&mut n, 0, 2, Body::PreVoteResponse { granted: false });
    let rd = step(&mut n, 2, 2, Body::PreVoteResponse { granted: false });
    assert!(rd.messages.is_empty() && rd.hard_state.is_none());
    assert_eq!((n.role(), n.term()), (Role::Follower, 2));
}

/// One vote per term, to a log at least as up to date; the vote is in the
/// Ready with the answer, so it is durable before the answer leaves.
#[test]
fn one_vote_per_term_made_durable_with_the_answer() {
    let mut n = member(0, 3, 2, &[1, 2]);
    let rd = step(&mut n, 1, 3, vote(2, 2, false));
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 3,
            vote: Some(1),
            voting: Voting::Enabled
        })
    );
    assert_eq!(
        rd.messages,
        vec![msg(0, 1, 3, Body::VoteResponse { granted: true })]
    );
    let rd = step(&mut n, 2, 3, vote(5, 2, false));
    assert_eq!(rd.hard_state, None);
    assert_eq!(
        rd.messages,
        vec![msg(0, 2, 3, Body::VoteResponse { granted: false })],
        "a second candidate in the term is refused"
    );
}

/// A candidate whose log is behind (lower last term, however long) is
/// refused, but its term is taken.
#[test]
fn a_less_up_to_date_log_gets_no_vote() {
    let mut n = member(0, 3, 2, &[1, 2]);
    let rd = step(&mut n, 1, 3, vote(5, 1, false));
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 3,
            vote: None,
            voting: Voting::Enabled
        })
    );
    assert_eq!(
        rd.messages,
        vec![msg(0, 1, 3, Body::VoteResponse { granted: false })]
    );
}

/// Stickiness: a follower that hears its leader ignores a vote request of
/// a higher term entirely, unless it is a leadership transfer.
#[test]
fn a_follower_under_lease_ignores_higher_term_votes_but_not_transfers() {
    let mut n = member(1, 3, 2, &[1, 2]);
    step(&mut n, 0, 2, heartbeat(0));
    let rd = step(&mut n, 2, 7, vote(2, 2, false));
    assert!(rd.messages.is_empty() && rd.hard_state.is_none());
    assert_eq!(n.term(), 2);
    let rd = step(&mut n, 2, 7, vote(2, 2, true));
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 7,
            vote: Some(2),
            voting: Voting::Enabled
        })
    );
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 7, Body::VoteResponse { granted: true })]
    );
}

/// Fast failover: the leader's connection reset, so member 1 pre-campaigns
/// after 1 + 1 * fast_election_stagger_ticks ticks, not 40.
#[test]
fn a_reset_leader_connection_makes_the_timeout_short() {
    let mut n = member(1, 3, 2, &[1, 2]);
    step(&mut n, 0, 2, heartbeat(0));
    n.peer_disconnected(0);
    let (ticks, rd) = tick_until_output(&mut n, 1000);
    assert_eq!(ticks, 1 + 3);
    assert_eq!(
        rd.messages,
        vec![msg(1, 0, 3, pre_vote(2, 2)), msg(1, 2, 3, pre_vote(2, 2)),]
    );
}

/// A reset of a connection to a member that is not the leader changes
/// nothing: no short timeout.
#[test]
fn a_reset_of_another_peer_changes_nothing() {
    let mut n = member(1, 3, 2, &[1, 2]);
    step(&mut n, 0, 2, heartbeat(0));
    n.peer_disconnected(2);
    let (ticks, _) = tick_until_output(&mut n, 1000);
    assert_eq!(ticks, 40, "the full timeout");
}

/// Fast failover, who wins: member 1 has just lost its leader, so it
/// refuses the pre-vote of member 2 whose log is no further ahead (it will
/// campaign itself, and the lowest live ordinal should lead).
#[test]
fn in_fast_mode_a_lower_ordinal_refuses_a_higher_ones_pre_vote() {
    let mut n = member(1, 3, 2, &[1, 2]);
    step(&mut n, 0, 2, heartbeat(0));
    n.peer_disconnected(0);
    let rd = step(&mut n, 2, 3, pre_vote(2, 2));
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 2, Body::PreVoteResponse { granted: false })],
        "refused, in its own term"
    );
    let rd = step(&mut n, 2, 3, pre_vote(3, 2));
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 3, Body::PreVoteResponse { granted: true })],
        "a log further ahead is granted: it must be able to win"
    );
    assert_eq!(n.term(), 2, "a pre-vote changes nothing");
}

/// Out of fast mode, the same pre-vote is granted; in fast mode, a lower
/// ordinal's pre-vote is granted too.
#[test]
fn out_of_fast_mode_or_from_a_lower_ordinal_the_pre_vote_is_granted() {
    let mut n = member(1, 3, 2, &[1, 2]);
    let rd = step(&mut n, 2, 3, pre_vote(2, 2));
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 3, Body::PreVoteResponse { granted: true })]
    );
    let mut n = member(2, 3, 2, &[1, 2]);
    step(&mut n, 0, 2, heartbeat(0));
    n.peer_disconnected(0);
    let rd = step(&mut n, 1, 3, pre_vote(2, 2));
    assert_eq!(
        rd.messages,
        vec![msg(2, 1, 3, Body::PreVoteResponse { granted: true })]
    );
}

/// A follower that hears its leader refuses pre-votes: a member cut off
/// and back cannot start an election the cluster does not need.
#[test]
fn a_follower_under_lease_refuses_pre_votes() {
    let mut n = member(1, 3, 2, &[1, 2]);
    step(&mut n, 0, 2, heartbeat(0));
    let rd = step(&mut n, 2, 3, pre_vote(2, 2));
    assert_eq!(
        rd.messages,
        vec![msg(1, 2, 2, Body::PreVoteResponse { granted: false })]
    );
}

/// Winning: the leader appends a no-op of its term and sends it to every
/// follower after the last entry it has.
#[test]
fn the_winner_appends_a_no_op_and_sends_it() {
    let mut n = member(1, 3, 2, &[1, 2]);
    n.tick_until_campaign();
    ready(&mut n);
    step(&mut n, 0, 3, Body::PreVoteResponse { granted: true });
    let rd = step(&mut n, 0, 3, Body::VoteResponse { granted: true });
    assert_eq!(n.role(), Role::Leader);
    assert_eq!(rd.entries, vec![bootstrap_config(3, 3)]);
    let append = Body::Append {
        prev_index: 2,
        prev_term: 2,
        entries: vec![bootstrap_config(3, 3)],
        commit: 0,
    };
    assert_eq!(
        rd.messages,
        vec![msg(1, 0, 3, append.clone()), msg(1, 2, 3, append)]
    );
}

/// A quorum of refusals ends the candidacy; the vote for itself stays.
#[test]
fn a_quorum_of_refusals_ends_the_candidacy() {
    let mut n = member(1, 3, 2, &[1, 2]);
    n.tick_until_campaign();
    ready(&mut n);
    step(&mut n, 0, 3, Body::PreVoteResponse { granted: true });
    step(&mut n, 0, 3, Body::VoteResponse { granted: false });
    let rd = step(&mut n, 2, 3, Body::VoteResponse { granted: false });
    assert!(rd.messages.is_empty() && rd.hard_state.is_none());
    assert_eq!((n.role(), n.term(), n.vote()), (Role::Follower, 3, Some(1)));
}

/// A leader that heard from no quorum during a whole election timeout
/// steps down (checked at each election-timeout boundary).
#[test]
fn a_leader_cut_off_from_a_quorum_steps_down() {
    let mut n = leader(0, 3, 2, &[1]);
    tick_n(&mut n, 59);
    assert_eq!(n.role(), Role::Leader, "heard from both at the first check");
    tick_n(&mut n, 1);
    assert_eq!((n.role(), n.leader()), (Role::Follower, None));
}

/// The last term there is: no pre-vote or election is ever started from
/// it (the term would wrap around to 0).
#[test]
fn the_last_term_starts_no_election() {
    let mut n = member(0, 3, Term::MAX, &[1]);
    let rd = tick_n(&mut n, 1000);
    assert!(rd.messages.is_empty() && rd.hard_state.is_none());
    assert_eq!((n.role(), n.term()), (Role::Follower, Term::MAX));
}
