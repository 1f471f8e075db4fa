//! The events derived from hand-built polls.

use std::time::{Duration, Instant};

use kvstore_proto::kv::Role;

use super::fixtures::{down, name, pod, steady, up};
use super::{ClusterView, Event};
use crate::Answer;

/// The first poll names the leader and the configuration.
#[test]
fn the_first_poll_names_the_leader_and_the_members() {
    let mut view = ClusterView::default();
    let events = view.observe(&steady(0, 1, 10), Instant::now());
    assert_eq!(
        events,
        vec![
            Event::Elected {
                leader: name(0),
                term: 1
            },
            Event::Members {
                voters: vec![0, 1, 2],
                learners: vec![],
                desired: 3
            },
        ]
    );
    assert_eq!(view.leader().map(|l| l.ordinal), Some(0));
    assert_eq!(view.members().count(), 3);
}

/// A leader killed, a new one elected, the old one back, caught up and
/// handed leadership again: each step gives its own events.
#[test]
fn a_leader_kill_and_the_recovery_give_each_event_once() {
    let t0 = Instant::now();
    let at = |n: u64| t0 + Duration::from_millis(250 * n);
    let mut view = ClusterView::default();
    view.observe(&steady(0, 1, 10), at(0));

    let killed = vec![
        down(0),
        up(pod(1, Role::Follower, 1, 10)),
        up(pod(2, Role::Follower, 1, 10)),
    ];
    let events = view.observe(&killed, at(1));
    assert_eq!(
        events,
        vec![
            Event::Down {
                pod: name(0),
                reason: "connection refused".into()
            },
            Event::NoLeader { term: 1 },
        ]
    );

    let elected = vec![
        down(0),
        up(pod(1, Role::Leader, 2, 12)),
        up(pod(2, Role::Follower, 2, 12)),
    ];
    let events = view.observe(&elected, at(2));
    assert_eq!(
        events,
        vec![Event::Elected {
            leader: name(1),
            term: 2
        }]
    );
    // Nothing changed: nothing to say.
    assert!(view.observe(&elected, at(3)).is_empty());

    let mut returning = pod(0, Role::Follower, 2, 12);
    returning.applied_revision = 5;
    returning.ready = false;
    let back = vec![
        up(returning),
        up(pod(1, Role::Leader, 2, 20)),
        up(pod(2, Role::Follower, 2, 20)),
    ];
    let events = view.observe(&back, at(4));
    assert_eq!(events, vec![Event::Back { pod: name(0) }]);
    let member0 = view.members().next().expect("kvstore-0 is shown");
    assert_eq!(view.lag(member0), Some(15));

    let events = view.observe(&steady(1, 2, 20), at(5));
    assert_eq!(
        events,
        vec![Event::CaughtUp {
            pod: name(0),
            applied: 20
        }]
    );

    let events = view.observe(&steady(0, 3, 21), at(6));
    assert_eq!(
        events,
        vec![Event::Transfer {
            from: name(1),
            to: name(0),
            term: 3
        }]
    );
}

/// A new leader seen in the same poll as the old one's death is an
/// election, with no "no leader" in between.
#[test]
fn a_leader_replaced_within_one_poll_is_an_election() {
    let mut view = ClusterView::default();
    view.observe(&steady(0, 1, 10), Instant::now());
    let polled = vec![
        down(0),
        up(pod(1, Role::Leader, 2, 11)),
        up(pod(2, Role::Follower, 2, 11)),
    ];
    let events = view.observe(&polled, Instant::now());
    assert!(matches!(events[0], Event::Down { .. }));
    assert_eq!(
        events[1..],
        [Event::Elected {
            leader: name(1),
            term: 2
        }]
    );
}

/// A former leader that went down and came back is not the source of a
/// transfer: the next leader was elected.
#[test]
fn a_leader_that_was_down_hands_over_nothing() {
    let mut view = ClusterView::default();
    view.observe(&steady(1, 2, 10), Instant::now());
    let gone = vec![
        up(pod(0, Role::Follower, 2, 10)),
        down(1),
        up(pod(2, Role::Follower, 2, 10)),
    ];
    view.observe(&gone, Instant::now());
    let events = view.observe(&steady(0, 3, 12), Instant::now());
    assert!(events.contains(&Event::Back { pod: name(1) }));
    assert!(events.contains(&Event::Elected {
        leader: name(0),
        term: 3
    }));
    assert!(!events.iter().any(|e| matches!(e, Event::Transfer { .. })));
}

/// The leader missed by one poll and found again in the same term is the
/// same leadership: no election is reported.
#[test]
fn the_same_leadership_after_a_missed_poll_is_no_election() {
    let mut view = ClusterView::default();
    view.observe(&steady(0, 1, 10), Instant::now());
    let mut missed = steady(0, 1, 10);
    missed[0] = down(0);
    view.observe(&missed, Instant::now());
    let events = view.observe(&steady(0, 1, 11), Instant::now());
    assert!(events.contains(&Event::Back { pod: name(0) }));
    assert!(!events.iter().any(|e| matches!(e, Event::Elected { .. })));
}

/// With no member answering at all, the leader lost is still named by its
/// term.
#[test]
fn no_leader_keeps_the_last_term_known() {
    let mut view = ClusterView::default();
    view.observe(&steady(1, 7, 10), Instant::now());
    let events = view.observe(&[down(0), down(1), down(2)], Instant::now());
    assert_eq!(events.last(), Some(&Event::NoLeader { term: 7 }));
    assert_eq!(view.members().count(), 3);
}

/// A member that never answered is listed but neither "down" nor "back".
#[test]
fn a_member_never_seen_is_not_down() {
    let mut view = ClusterView::default();
    let mut first = steady(0, 1, 10);
    first[2] = down(2);
    let events = view.observe(&first, Instant::now());
    assert!(!events.iter().any(|e| matches!(e, Event::Down { .. })));
    assert_eq!(view.members().count(), 3);
    let events = view.observe(&steady(0, 1, 10), Instant::now());
    assert!(events.is_empty(), "{events:?}");
}

/// Writes per second are the leader's commit rise over the time between
/// polls; a poll without a leader counts none, and the next leader is
/// measured from its own first poll.
#[test]
fn writes_per_second_follow_the_leaders_commit_revision() {
    let t0 = Instant::now();
    let mut view = ClusterView::default();
    view.observe(&steady(0, 1, 100), t0);
    assert_eq!(view.writes().now(), None);
    view.observe(&steady(0, 1, 600), t0 + Duration::from_millis(500));
    assert_eq!(view.writes().now(), Some(1000));
    let mut leaderless = steady(0, 1, 600);
    leaderless[0] = down(0);
    let events = view.observe(&leaderless, t0 + Duration::from_millis(750));
    assert!(events.contains(&Event::NoLeader { term: 1 }));
    assert_eq!(view.writes().now(), Some(0));
    view.observe(&steady(1, 2, 900), t0 + Duration::from_millis(1000));
    view.observe(&steady(1, 2, 1150), t0 + Duration::from_millis(1250));
    let history: Vec<u64> = view.writes().history().iter().copied().collect();
    assert_eq!(history, vec![1000, 0, 1000]);
}

/// A learner added, then a pod removed: each change of the leader's
/// configuration is an event, and a removed pod that stopped is no longer
/// shown.
#[test]
fn membership_changes_are_events_and_removed_pods_leave_the_table() {
    let mut view = ClusterView::default();
    view.observe(&steady(0, 1, 10), Instant::now());
    let mut grown = steady(0, 1, 11);
    let mut learner = pod(3, Role::Follower, 1, 11);
    learner.learners = vec![3];
    grown.push(up(learner));
    for a in &mut grown {
        if let Ok(s) = &mut a.status {
            s.learners = vec![3];
            s.desired_replicas = 4;
        }
    }
    let events = view.observe(&grown, Instant::now());
    assert_eq!(
        events,
        vec![Event::Members {
            voters: vec![0, 1, 2],
            learners: vec![3],
            desired: 4
        }]
    );
    assert_eq!(view.members().count(), 4);
    let mut shrunk = steady(0, 1, 12);
    shrunk.push(down(3));
    let events = view.observe(&shrunk, Instant::now());
    assert!(events.contains(&Event::Members {
        voters: vec![0, 1, 2],
        learners: vec![],
        desired: 3
    }));
    let shown: Vec<Option<u32>> = view.members().map(|m| m.ordinal()).collect();
    assert_eq!(shown, vec![Some(0), Some(1), Some(2)]);
}

/// Two addresses of one node make one member; a pod back at a new address
/// is the same member, back.
#[test]
fn members_are_told_apart_by_name_not_address() {
    let mut view = ClusterView::default();
    let mut polled = steady(0, 1, 10);
    polled.push(Answer {
        endpoint: "localhost:7379".into(),
        status: Ok(pod(0, Role::Leader, 1, 10)),
    });
    view.observe(&polled, Instant::now());
    assert_eq!(view.members().count(), 3);

    let mut moved = steady(0, 1, 10);
    moved[2] = down(2);
    view.observe(&moved, Instant::now());
    let mut elsewhere = steady(0, 1, 10);
    elsewhere[2] = down(2);
    elsewhere.push(Answer {
        endpoint: "127.0.0.99:7379".into(),
        status: Ok(pod(2, Role::Follower, 1, 10)),
    });
    let events = view.observe(&elsewhere, Instant::now());
    assert!(events.contains(&Event::Back { pod: name(2) }), "{events:?}");
    let pod2: Vec<&str> = view
        .members()
        .filter(|m| m.ordinal() == Some(2))
        .map(|m| m.endpoint.as_str())
        .collect();
    assert_eq!(pod2, vec!["127.0.0.99:7379"]);
    // The old address still fails: that is no member of its own.
    assert!(view.observe(&elsewhere, Instant::now()).is_empty());
    assert_eq!(view.members().count(), 3);
}
