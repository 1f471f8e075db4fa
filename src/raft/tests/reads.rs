//! ReadIndex (thesis §6.4): a read point is handed out only after a
//! heartbeat round shows a quorum still follows this leader.

use super::*;

fn beat(commit: Index, leader_commit: Index, read_round: u64) -> Body {
    Body::Heartbeat {
        commit,
        leader_commit,
        read_round,
    }
}

/// The leader records its commit index, starts a heartbeat round, and
/// hands the read out once a quorum (itself and one follower) answered it.
#[test]
fn a_read_waits_for_a_quorum_round() {
    let mut n = leader(0, 3, 2, &[1]);
    n.read_index(7);
    let rd = ready(&mut n);
    assert_eq!(rd.read_states, vec![]);
    assert_eq!(
        rd.messages,
        vec![msg(0, 1, 2, beat(2, 2, 1)), msg(0, 2, 2, beat(2, 2, 1))]
    );
    let rd = step(&mut n, 2, 2, heartbeat_response(1));
    assert_eq!(rd.read_states, vec![ReadState { id: 7, index: 2 }]);
}

/// An answer to an earlier round confirms nothing about a later read.
#[test]
fn an_answer_to_an_earlier_round_confirms_nothing() {
    let mut n = leader(0, 3, 2, &[1]);
    n.read_index(7);
    ready(&mut n);
    let rd = step(&mut n, 1, 2, heartbeat_response(0));
    assert_eq!(rd.read_states, vec![]);
}

/// A member that does not lead cannot confirm a read: it is dropped at
/// once (the server forwards reads to the leader instead).
#[test]
fn a_follower_drops_reads() {
    let mut n = member(1, 3, 2, &[1]);
    n.read_index(7);
    let rd = ready(&mut n);
    assert_eq!((rd.dropped_reads, rd.messages), (vec![7], vec![]));
}

/// A new leader does not know the commit point until an entry of its term
/// commits: it holds reads until then, then starts their round.
#[test]
fn a_new_leader_holds_reads_until_its_term_commits() {
    let mut n = new_leader(0, 3, 2, &[1]);
    n.read_index(7);
    let rd = ready(&mut n);
    assert_eq!((rd.messages, rd.read_states), (vec![], vec![]));
    let rd = step(&mut n, 1, 2, accepted(2));
    let commit = Body::Append {
        prev_index: 2,
        prev_term: 2,
        entries: vec![],
        commit: 2,
    };
    assert_eq!(
        rd.messages,
        vec![
            msg(0, 1, 2, commit),
            msg(0, 1, 2, beat(2, 2, 1)),
            msg(0, 2, 2, beat(0, 2, 1)),
        ]
    );
}

/// A single voter is its own quorum: no round.
#[test]
fn a_single_voter_serves_reads_at_once() {
    let mut n = member_with(config(0, 1), 1, &[], 0);
    n.tick_until_campaign();
    ready(&mut n);
    n.read_index(7);
    let rd = ready(&mut n);
    assert_eq!(rd.messages, vec![]);
    assert_eq!(rd.read_states, vec![ReadState { id: 7, index: 1 }]);
}

/// A leader that steps down drops the reads it could not confirm.
#[test]
fn stepping_down_drops_unconfirmed_reads() {
    let mut n = leader(0, 3, 2, &[1]);
    n.read_index(7);
    ready(&mut n);
    n.read_index(8);
    let rd = step(&mut n, 1, 5, heartbeat_response(0));
    assert_eq!(rd.dropped_reads, vec![8, 7]);
    assert_eq!(n.role(), Role::Follower);
}
