//! Replication and commitment: appends, their answers, the commit rule,
//! heartbeats and snapshots.

use super::*;

fn append(prev_index: Index, prev_term: Term, entries: Vec<Entry>, commit: Index) -> Body {
    Body::Append {
        prev_index,
        prev_term,
        entries,
        commit,
    }
}

fn rejected(rejected_index: Index, hint_index: Index, hint_term: Term) -> Body {
    Body::AppendResponse {
        result: AppendResult::Rejected {
            rejected_index,
            hint_index,
            hint_term,
        },
        voter: true,
    }
}

/// A follower takes entries that follow one it holds, persists them,
/// applies what the leader says is committed, and acknowledges its new
/// last index.
#[test]
fn a_matching_append_is_persisted_applied_and_acknowledged() {
    let mut n = member(1, 3, 2, &[1, 2]);
    let rd = step(
        &mut n,
        0,
        2,
        append(2, 2, vec![entry(3, 2), entry(4, 2)], 3),
    );
    assert_eq!(rd.entries, vec![entry(3, 2), entry(4, 2)]);
    assert_eq!(rd.committed, vec![entry(1, 1), entry(2, 2), entry(3, 2)]);
    assert_eq!(rd.messages, vec![msg(1, 0, 2, accepted(4))]);
}

/// Log matching (§5.3): an append after an entry the follower holds with
/// another term is refused, with a hint that skips the whole conflicting
/// term: the highest index at or below the probe whose term is at most the
/// leader's there.
#[test]
fn a_mismatched_append_is_refused_with_a_hint() {
    let mut n = member(1, 3, 3, &[1, 1, 3, 3]);
    let rd = step(&mut n, 0, 4, append(5, 2, vec![], 0));
    assert_eq!(rd.entries, vec![]);
    assert_eq!(rd.messages, vec![msg(1, 0, 4, rejected(5, 2, 1))]);
}

/// The leader's side: it probes from the hint, sending everything after
/// the last entry both logs can share.
#[test]
fn the_leader_probes_again_from_the_hint() {
    let mut n = new_leader(0, 3, 4, &[1, 1, 2, 2, 2]);
    let rd = step(&mut n, 1, 4, rejected(5, 2, 1));
    let entries = vec![
        entry(3, 2),
        entry(4, 2),
        entry(5, 2),
        bootstrap_config(6, 4),
    ];
    assert_eq!(rd.messages, vec![msg(0, 1, 4, append(2, 1, entries, 0))]);
}

/// An entry stored on a quorum commits; the leader applies it and tells
/// the follower that stored it (the one that has not answered is still
/// being probed, one append at a time).
#[test]
fn a_quorum_commits_and_the_followers_are_told() {
    let mut n = new_leader(0, 3, 2, &[1]);
    let rd = step(&mut n, 1, 2, accepted(2));
    assert_eq!(rd.committed, vec![entry(1, 1), bootstrap_config(2, 2)]);
    assert_eq!(rd.messages, vec![msg(0, 1, 2, append(2, 2, vec![], 2))]);
}

/// Figure 8 of the Raft paper (§5.4.2): an entry of an earlier term
/// stored on a quorum is not committed by counting; it commits with the
/// first entry of the leader's own term.
#[test]
fn an_earlier_terms_entry_is_not_committed_by_counting() {
    let mut n = new_leader(0, 3, 3, &[1, 2]);
    let rd = step(&mut n, 1, 3, accepted(2));
    assert_eq!(rd.committed, vec![], "2@2 is on a quorum, but of term 2");
    assert_eq!(n.log().commit(), 0);
    let rd = step(&mut n, 1, 3, accepted(3));
    assert_eq!(
        rd.committed,
        vec![entry(1, 1), entry(2, 2), bootstrap_config(3, 3)]
    );
}

/// A heartbeat carries min(commit, the follower's match): a follower must
/// not commit entries the leader has not confirmed it holds.
#[test]
fn heartbeats_carry_the_commit_index_capped_at_each_followers_match() {
    let mut n = new_leader(0, 3, 2, &[1]);
    step(&mut n, 1, 2, accepted(2));
    let rd = tick_n(&mut n, 5);
    let beat = |commit| Body::Heartbeat {
        commit,
        leader_commit: 2,
        read_round: 0,
    };
    assert_eq!(
        rd.messages,
        vec![msg(0, 1, 2, beat(2)), msg(0, 2, 2, beat(0))]
    );
}

/// A follower told of a commit index beyond its log has lost entries it
/// acknowledged (a lost volume): it says so, so that the leader probes it.
#[test]
fn a_follower_behind_the_heartbeats_commit_asks_to_be_probed() {
    let mut n = member(1, 3, 2, &[1]);
    let rd = step(
        &mut n,
        0,
        2,
        Body::Heartbeat {
            commit: 5,
            leader_commit: 5,
            read_round: 0,
        },
    );
    assert_eq!(rd.committed, vec![entry(1, 1)]);
    assert_eq!(
        rd.messages,
        vec![
            msg(1, 0, 2, heartbeat_response(0)),
            msg(1, 0, 2, rejected(5, 1, 1)),
        ]
    );
}

/// A follower that needs entries compacted away gets a snapshot; once it
/// is sent, replication goes on after it.
#[test]
fn a_follower_needing_compacted_entries_gets_a_snapshot() {
    let mut n = leader(0, 3, 2, &[1, 1, 1]);
    n.compact(4);
    let rd = step(&mut n, 2, 2, rejected(4, 0, 0));
    assert_eq!(rd.send_snapshots, vec![2]);
    assert_eq!(rd.messages, vec![]);
    n.snapshot_sent(2, Some(4));
    let rd = ready(&mut n);
    assert_eq!(rd.messages, vec![msg(0, 2, 2, append(4, 2, vec![], 4))]);
}

/// A snapshot that arrived in full replaces the follower's log; the
/// driver installs it from the Ready, and the leader hears the new match.
#[test]
fn a_received_snapshot_replaces_the_log() {
    let mut n = member(1, 3, 2, &[1]);
    let meta = SnapshotMeta::at(10, 2);
    let rd = step(&mut n, 0, 2, Body::Snapshot { meta });
    assert_eq!(rd.snapshot, Some(meta));
    assert_eq!((rd.entries, rd.committed), (vec![], vec![]));
    assert_eq!(rd.messages, vec![msg(1, 0, 2, accepted(10))]);
    assert_eq!((n.log().first_index(), n.log().commit()), (11, 10));
}
