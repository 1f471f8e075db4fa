//! A member whose data dir is new may have lost its volume: it asks every
//! peer before it votes, and votes again only once it holds what it could
//! have helped commit.

use super::*;

fn new_data_dir(id: NodeId, voters: u32) -> RaftCore {
    RaftCore::new(config(id, voters), Restored::fresh(), 7)
}

fn probe_answer(empty_log: bool) -> Body {
    Body::RejoinProbeResponse {
        empty_log,
        members: Membership::first(3),
    }
}

/// A new data dir asks every peer for its term and whether its log is
/// empty, and asks again every heartbeat interval; it never campaigns.
#[test]
fn a_new_data_dir_probes_every_peer_and_does_not_campaign() {
    let mut n = new_data_dir(1, 3);
    let rd = ready(&mut n);
    let probes = vec![
        msg(1, 0, 0, Body::RejoinProbe),
        msg(1, 2, 0, Body::RejoinProbe),
    ];
    assert_eq!((rd.hard_state, &rd.messages), (None, &probes));
    for _ in 0..20 {
        assert_eq!(tick_n(&mut n, 5).messages, probes);
    }
    assert_eq!(
        (n.role(), n.voting()),
        (Role::Follower, Voting::AwaitingPeers)
    );
}

/// Every peer is asked again each round, those that answered included:
/// their configuration may change meanwhile (a voter removed stops being
/// waited for), so answers are kept fresh.
#[test]
fn every_peer_is_asked_again_so_answers_stay_fresh() {
    let mut n = new_data_dir(1, 3);
    ready(&mut n);
    let rd = step(&mut n, 0, 0, probe_answer(true));
    assert_eq!((rd.hard_state, n.voting()), (None, Voting::AwaitingPeers));
    assert_eq!(
        tick_n(&mut n, 5).messages,
        vec![
            msg(1, 0, 0, Body::RejoinProbe),
            msg(1, 2, 0, Body::RejoinProbe)
        ]
    );
}

/// Only voters are waited for: a learner whose pod never answers (stuck
/// Pending) does not keep a new member from completing its probes.
#[test]
fn learners_are_not_waited_for() {
    let mut n = new_data_dir(3, 3);
    ready(&mut n);
    let reported = Membership::new([0, 1, 2], [3, 4]);
    for peer in 0..3 {
        let body = Body::RejoinProbeResponse {
            empty_log: false,
            members: reported,
        };
        step(&mut n, peer, 2, body);
    }
    assert_eq!(
        n.voting(),
        Voting::AwaitingLeader { min_term: 2 },
        "learner 4 never answered, and need not"
    );
}

/// Every log empty: nothing was ever committed, so this is a new cluster
/// and the member may vote (after a fenced vote for itself).
#[test]
fn every_log_empty_means_a_new_cluster() {
    let mut n = new_data_dir(1, 3);
    ready(&mut n);
    step(&mut n, 0, 0, probe_answer(true));
    let rd = step(&mut n, 2, 0, probe_answer(true));
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 0,
            vote: Some(1),
            voting: Voting::Enabled
        })
    );
}

/// The election timer runs while a new member awaits its peers, so it has
/// long expired when the last answer arrives. It starts over then: the
/// member waits its whole, ordinal-staggered timeout, so ordinal 0 and not
/// whichever member heard from its peers first leads a new cluster.
#[test]
fn a_new_cluster_member_waits_its_whole_timeout_once_it_may_vote() {
    let mut n = new_data_dir(1, 3);
    ready(&mut n);
    tick_n(&mut n, 200);
    step(&mut n, 0, 0, probe_answer(true));
    step(&mut n, 2, 0, probe_answer(true));
    let cfg = config(1, 3);
    let (ticks, rd) = tick_until_output(&mut n, 1000);
    assert_eq!(
        (ticks, n.role()),
        (
            cfg.election_ticks + cfg.election_stagger_ticks,
            Role::PreCandidate
        )
    );
    assert_eq!(rd.messages.len(), 2, "a pre-vote request to each peer");
}

/// A non-empty log anywhere: the volume was lost. The member enters the
/// highest term reported with a vote for itself (it may have voted in that
/// term before the loss) and waits for a leader of at least that term.
#[test]
fn a_non_empty_peer_means_a_lost_volume() {
    let mut n = new_data_dir(1, 3);
    ready(&mut n);
    step(&mut n, 0, 3, probe_answer(false));
    let rd = step(&mut n, 2, 4, probe_answer(true));
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 4,
            vote: Some(1),
            voting: Voting::AwaitingLeader { min_term: 4 }
        })
    );
    let rd = step(
        &mut n,
        0,
        5,
        Body::Vote {
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    );
    assert_eq!(
        rd.messages,
        vec![msg(1, 0, 5, Body::VoteResponse { granted: false })],
        "no vote while awaiting a leader"
    );
    assert!(tick_n(&mut n, 1000).messages.is_empty(), "no campaign");
}

/// It votes again once its commit index reaches the commit index the
/// leader announced and is an entry of the leader's term; an append that
/// brings only part of the log leaves it a non-voter.
#[test]
fn it_votes_again_once_it_holds_what_the_leader_committed() {
    let mut n = new_data_dir(1, 3);
    ready(&mut n);
    step(&mut n, 0, 4, probe_answer(false));
    step(&mut n, 2, 4, probe_answer(false));
    let partial = Body::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![entry(1, 1)],
        commit: 2,
    };
    let rd = step(&mut n, 0, 4, partial);
    let not_yet = Body::AppendResponse {
        result: AppendResult::Accepted { match_index: 1 },
        voter: false,
    };
    assert_eq!(rd.messages, vec![msg(1, 0, 4, not_yet)]);
    let rest = Body::Append {
        prev_index: 1,
        prev_term: 1,
        entries: vec![noop(2, 4)],
        commit: 2,
    };
    let rd = step(&mut n, 0, 4, rest);
    assert_eq!(rd.messages, vec![msg(1, 0, 4, accepted(2))]);
    assert_eq!(
        rd.hard_state,
        Some(HardState {
            term: 4,
            vote: Some(1),
            voting: Voting::Enabled
        })
    );
}
