//! Each safety rule of the replication core, switched off, must make the
//! deterministic simulation fail: a rule whose removal no seed notices is a
//! rule nothing checks. Each test turns one rule off (the `mutations`
//! feature, on only in test builds) and asserts that some seed among the
//! first `MUTATION_SEEDS` (default 1,500) fails, printing the first one;
//! replay it with `SIM_SEED=S MUTATION=Name cargo test --test
//! raft_mutations replay -- --nocapture`.

mod support;

use kvstore::raft::mutations::Mutation;
use support::sim::{
    figure_8_schedule, run_reconfig_schedule, run_reconfig_seeds, run_schedule, run_seeds,
};

fn seeds() -> u64 {
    std::env::var("MUTATION_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500)
}

/// Asserts that the simulation catches `mutation` on 3 members within the
/// seed budget.
fn caught(mutation: Mutation) {
    caught_within(mutation, seeds());
}

/// Asserts that the simulation catches `mutation` within `budget` seeds.
fn caught_within(mutation: Mutation, budget: u64) {
    let outcome = run_seeds(3, 0, budget, Some(mutation), 1);
    let (seed, msg) = outcome.failures.first().unwrap_or_else(|| {
        panic!(
            "{mutation:?}: {} seeds ran with the rule switched off and none failed",
            outcome.schedules
        )
    });
    let first_line = msg.lines().next().unwrap_or_default();
    println!(
        "{mutation:?}: caught by seed {seed} ({} schedules run): {first_line}",
        outcome.schedules
    );
}

/// Votes and pre-votes that ignore whether the candidate's log is up to
/// date elect leaders that lack committed entries.
#[test]
fn vote_ignoring_log_freshness_is_caught() {
    caught(Mutation::VoteIgnoresLogFreshness);
}

/// Appends accepted without the previous term check break log matching.
#[test]
fn append_without_prev_term_check_is_caught() {
    caught(Mutation::AppendSkipsPrevTermCheck);
}

/// Committing an entry of an earlier term by counting replicas lets a
/// committed entry be overwritten. Random schedules rarely line up the
/// figure 8 sequence this takes, so it has schedules of its own.
#[test]
fn committing_an_older_term_by_count_is_caught() {
    let found = (0..200).find(|&seed| {
        std::panic::catch_unwind(|| {
            figure_8_schedule(seed, false, Some(Mutation::CommitOlderTermByCount))
        })
        .is_err()
    });
    let seed =
        found.expect("200 figure 8 schedules ran with the rule switched off and none failed");
    println!("CommitOlderTermByCount: caught by figure 8 seed {seed}");
}

/// A read served without a quorum round, by a leader cut off in a
/// minority, misses writes committed by the new leader.
#[test]
fn read_without_quorum_round_is_caught() {
    caught(Mutation::ReadWithoutQuorumRound);
}

/// A member whose volume was lost voting at once can vote twice in a term
/// or elect a leader without acknowledged entries.
#[test]
fn lost_volume_voting_at_once_is_caught() {
    caught(Mutation::LostVolumeVotesAtOnce);
}

/// A member whose volume was lost voting after catching up only partway
/// (the bug a review found) can elect a leader without acknowledged entries.
/// It takes a lost volume, a leader crash during the catch-up and an
/// election the wiped member decides all lining up: about one schedule in
/// two thousand, so this one has a budget of its own.
#[test]
fn lost_volume_voting_after_partial_catch_up_is_caught() {
    caught_within(
        Mutation::LostVolumeVotesAfterPartialCatchUp,
        seeds().max(5000),
    );
}

/// Messages sent before their Ready is durable: the simulation checks, as
/// each message leaves, that the vote or entries it promises are on the
/// simulated disk.
#[test]
fn sending_before_persisting_is_caught() {
    caught(Mutation::SendBeforePersist);
}

/// Replays `SIM_SEED` with `MUTATION` switched on, with a trace (does
/// nothing without both).
#[test]
fn replay() {
    let (Some(seed), Ok(name)) = (
        std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()),
        std::env::var("MUTATION"),
    ) else {
        return;
    };
    let mutation = Mutation::ALL
        .into_iter()
        .find(|m| format!("{m:?}") == name)
        .unwrap_or_else(|| panic!("no mutation named {name}"));
    if std::env::var("RECONFIG").is_ok() {
        run_reconfig_schedule(seed, true, Some(mutation));
    } else {
        run_schedule(3, seed, true, Some(mutation));
    }
}

/// Asserts that the reconfiguration schedules catch `mutation` by a
/// safety violation (two leaders in a term, a committed entry lost or
/// changed), not merely by a cluster that stalls.
fn caught_in_reconfig(mutation: Mutation) {
    caught_in_reconfig_within(mutation, seeds());
}

/// [`caught_in_reconfig`] with a budget of `budget` seeds.
fn caught_in_reconfig_within(mutation: Mutation, budget: u64) {
    // In batches, so that the search stops at the first safety violation
    // rather than running every seed of the budget.
    const BATCH: u64 = 50;
    let (mut ran, mut stalls) = (0, 0);
    let mut base = 0;
    while base < budget {
        let outcome =
            run_reconfig_seeds(base, BATCH.min(budget - base), Some(mutation), usize::MAX);
        ran += outcome.schedules;
        let (stalled, broke): (Vec<_>, Vec<_>) = outcome
            .failures
            .into_iter()
            .partition(|(_, m)| m.starts_with("the cluster did not converge"));
        stalls += stalled.len();
        if let Some((seed, msg)) = broke.first() {
            let first_line = msg.lines().next().unwrap_or_default();
            println!(
                "{mutation:?}: caught by reconfiguration seed {seed} ({ran} schedules run, {stalls} stalled first): {first_line}\n  replay: RECONFIG=1 SIM_SEED={seed} MUTATION={mutation:?} cargo test --test raft_mutations replay -- --nocapture"
            );
            return;
        }
        base += BATCH;
    }
    panic!(
        "{mutation:?}: {ran} reconfiguration seeds ran with the rule switched off and none broke a safety property ({stalls} stalled)"
    );
}

/// A configuration used only once committed lets members switch at
/// different times.
#[test]
fn config_at_commit_is_caught() {
    // Members switching at different times must line up with a leader
    // change at the wrong moment: about one schedule in two thousand.
    caught_in_reconfig_within(Mutation::ConfigAtCommit, seeds().max(4000));
}

/// Two changes in flight can leave two disjoint majorities.
#[test]
fn two_changes_in_flight_are_caught() {
    caught_in_reconfig(Mutation::TwoChangesInFlight);
}

/// A learner counted toward a quorum commits entries no voter majority
/// holds.
#[test]
fn learner_counted_toward_quorum_is_caught() {
    caught_in_reconfig(Mutation::LearnerCountsTowardQuorum);
}
