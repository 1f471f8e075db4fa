//! Leadership transfer (thesis §3.10) and priority return.

use super::*;

/// To a follower that holds the whole log: TimeoutNow at once, and no
/// proposals while the handover runs.
#[test]
fn a_transfer_to_a_caught_up_follower_sends_timeout_now() {
    let mut n = leader(0, 3, 2, &[1]);
    n.transfer_leadership(2).expect("leads");
    assert_eq!(n.propose("x".into()), Err(ProposeError::Transferring));
    let rd = ready(&mut n);
    assert_eq!(rd.messages, vec![msg(0, 2, 2, Body::TimeoutNow)]);
}

/// To a follower that lags: TimeoutNow only once it holds the whole log.
#[test]
fn a_lagging_target_gets_timeout_now_once_it_has_caught_up() {
    let mut n = leader(0, 3, 2, &[1]);
    n.propose("x".into()).expect("leads");
    ready(&mut n);
    step(&mut n, 1, 2, accepted(3));
    n.transfer_leadership(2).expect("leads");
    let rd = ready(&mut n);
    assert!(
        !rd.messages.iter().any(|m| m.body == Body::TimeoutNow),
        "{rd:?}"
    );
    let rd = step(&mut n, 2, 2, accepted(3));
    assert_eq!(rd.messages, vec![msg(0, 2, 2, Body::TimeoutNow)]);
}

/// Only a member that said it may vote, of the cluster, can be the target.
#[test]
fn a_transfer_needs_a_known_voter() {
    let mut n = new_leader(0, 3, 2, &[1]);
    assert_eq!(n.transfer_leadership(2), Err(TransferError::NotVoter(2)));
    assert_eq!(
        n.transfer_leadership(5),
        Err(TransferError::UnknownMember(5))
    );
    let mut f = member(1, 3, 2, &[1]);
    assert_eq!(
        f.transfer_leadership(2),
        Err(TransferError::NotLeader { leader: None })
    );
}

/// The target campaigns at once, skipping pre-vote, in a new term, and
/// marks its requests as a transfer (so peers under the lease vote).
#[test]
fn timeout_now_starts_a_transfer_election() {
    let mut n = member(2, 3, 2, &[1, 2]);
    step(
        &mut n,
        0,
        2,
        Body::Heartbeat {
            commit: 0,
            leader_commit: 0,
            read_round: 0,
        },
    );
    let rd = step(&mut n, 1, 2, Body::TimeoutNow);
    assert_eq!(rd.messages, vec![], "only the leader may ask");
    let rd = step(&mut n, 0, 2, Body::TimeoutNow);
    let vote = Body::Vote {
        last_index: 2,
        last_term: 2,
        transfer: true,
    };
    assert_eq!(
        rd.messages,
        vec![msg(2, 0, 3, vote.clone()), msg(2, 1, 3, vote)]
    );
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 3,
            vote: Some(2),
            voting: Voting::Enabled
        })
    );
}

/// A handover that has not happened within an election timeout is
/// abandoned and proposals resume.
#[test]
fn an_unfinished_transfer_is_abandoned_after_an_election_timeout() {
    let mut n = leader(0, 3, 2, &[1]);
    n.transfer_leadership(2).expect("leads");
    tick_n(&mut n, 29);
    assert_eq!(n.propose("x".into()), Err(ProposeError::Transferring));
    tick_n(&mut n, 1);
    assert_eq!(n.transferee(), None);
    assert!(n.propose("x".into()).is_ok());
}

/// Runs leader `n` for up to `ticks` ticks with every follower answering
/// its heartbeats; returns the tick at which it sent TimeoutNow, if it did,
/// and to whom.
fn answer_heartbeats(n: &mut RaftCore, ticks: u32) -> Option<(u32, NodeId)> {
    for t in 1..=ticks {
        n.tick();
        let rd = ready(n);
        for m in rd.messages {
            match m.body {
                Body::TimeoutNow => return Some((t, m.to)),
                Body::Heartbeat { read_round, .. } => {
                    n.step(msg(m.to, m.from, m.term, heartbeat_response(read_round)))
                }
                _ => {}
            }
        }
    }
    None
}

/// Priority return: a leader hands leadership to the lowest ordinal below
/// its own that has been caught up and answering for
/// priority_return_ticks.
#[test]
fn priority_returns_leadership_to_a_lower_ordinal() {
    let mut n = leader(2, 3, 2, &[1]);
    assert_eq!(answer_heartbeats(&mut n, 100), Some((30, 0)));
}

/// Priority only moves leadership down: ordinal 0 keeps it.
#[test]
fn priority_never_moves_leadership_up() {
    let mut n = leader(0, 3, 2, &[1]);
    assert_eq!(answer_heartbeats(&mut n, 300), None);
}
