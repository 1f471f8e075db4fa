//! Deterministic simulation of the replication core.
//!
//! Each seed gives one random schedule of ticks, proposals, reads, crashes and
//! restarts (losing what was not durable), lost volumes, partitions, message
//! loss, duplication, delay and reordering, leadership transfers and log
//! compactions, on 3 or 5 members. After every step the checker in
//! `support/raft_cluster.rs` asserts: at most one leader per term; log
//! matching; committed entries never change and are in every new leader's
//! log; applied sequences never diverge; reads see every committed write. At
//! the end the network heals, every member restarts, and every acknowledged
//! proposal must be applied everywhere.
//!
//! `SIM_SEEDS=N` runs N fixed seeds per cluster size (default 1000), and
//! `SIM_RANDOM_SEEDS=M` (default 200) more from a base chosen at random each
//! run and printed, so that CI explores new schedules over time;
//! `SIM_SEED=S` replays one seed with a trace on stdout
//! (`SIM_SEED=S cargo test --test raft_sim sim_3_members -- --nocapture`).

mod support;

use kvstore::raft::mutations::Mutation;
use support::raft_cluster::Cluster;
use support::sim::{
    figure_8_schedule, run_reconfig_schedule, run_reconfig_seeds, run_schedule, run_seeds,
    sim_config,
};

fn seeds() -> u64 {
    env_u64("SIM_SEEDS").unwrap_or(1000)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// A seed base no earlier run used, so that every run explores new
/// schedules on top of the fixed ones.
fn random_base() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    10_000_000_000 + nanos % 1_000_000_000_000
}

/// Runs the fixed seeds from `base`, then `SIM_RANDOM_SEEDS` (default 200)
/// from a random base, and asserts that none fails and that the schedules
/// did work: a core that refused every proposal and read would pass the
/// safety checks and fail these floors.
fn run_many(voters: u32, base: u64) {
    if let Some(seed) = env_u64("SIM_SEED") {
        let work = run_schedule(voters, seed, true, None::<Mutation>);
        println!("seed {seed}: {work:?}");
        return;
    }
    let random = random_base();
    let random_count = env_u64("SIM_RANDOM_SEEDS").unwrap_or(200);
    println!(
        "{voters} members: seeds {base}..{} and, this run, {random}..{}",
        base + seeds(),
        random + random_count
    );
    let mut failures = Vec::new();
    for (base, count) in [(base, seeds()), (random, random_count)] {
        let outcome = run_seeds(voters, base, count, None, usize::MAX);
        let per = |n: u64| n as f64 / outcome.schedules.max(1) as f64;
        println!(
            "{} schedules of {voters} members from seed {base}: {} proposals acknowledged ({:.0} a schedule), {} linearizable reads checked ({:.1} a schedule)",
            outcome.schedules,
            outcome.work.acked,
            per(outcome.work.acked as u64),
            outcome.work.reads,
            per(outcome.work.reads)
        );
        assert!(
            per(outcome.work.acked as u64) >= ACKED_FLOOR && per(outcome.work.reads) >= READS_FLOOR,
            "the schedules did too little work to check anything: {:?}",
            outcome.work
        );
        failures.extend(outcome.failures.into_iter().map(|(seed, msg)| {
            format!(
                "seed {seed} ({voters} members) failed: {msg}\n  replay: SIM_SEED={seed} cargo test --test raft_sim sim_{voters}_members -- --nocapture"
            )
        }));
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Acknowledged proposals per schedule below which a run proves nothing
/// (runs acknowledge several hundred).
const ACKED_FLOOR: f64 = 100.0;
/// Linearizable reads served per schedule below which the read checks prove
/// nothing.
const READS_FLOOR: f64 = 10.0;

/// Thousands of random schedules on three members keep every safety property.
#[test]
fn sim_3_members() {
    run_many(3, 0);
}

/// Random schedules on five members keep every safety property.
#[test]
fn sim_5_members() {
    run_many(5, 1_000_000);
}

/// Figure 8 of the Raft paper, 200 times with random details: the entry of
/// an old term that reaches a majority late is never committed by counting,
/// so the leader that overwrites it breaks nothing. (With that rule switched
/// off, `raft_mutations` shows these schedules fail.)
/// Membership changes interleaved with crashes, partitions, lost volumes,
/// transfers and compaction, on 5 processes of which 3 bootstrap: election
/// safety across configurations after every step, every acknowledged entry
/// kept at the end.
#[test]
fn sim_membership_changes() {
    if let Some(seed) = env_u64("SIM_SEED") {
        let work = run_reconfig_schedule(seed, true, None);
        println!("seed {seed}: {work:?}");
        return;
    }
    let count = seeds();
    let outcome = run_reconfig_seeds(2_000_000, count, None, usize::MAX);
    let per = |n: u64| n as f64 / outcome.schedules.max(1) as f64;
    println!(
        "{} reconfiguration schedules: {:.0} proposals acknowledged, {:.1} configuration changes committed, {:.1} reads checked a schedule",
        outcome.schedules,
        per(outcome.work.acked as u64),
        per(outcome.work.configs as u64),
        per(outcome.work.reads)
    );
    let failures: Vec<String> = outcome
        .failures
        .iter()
        .map(|(seed, msg)| {
            format!("seed {seed} failed: {msg}\n  replay: SIM_SEED={seed} cargo test --test raft_sim sim_membership_changes -- --nocapture")
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        per(outcome.work.configs as u64) >= 2.0 && per(outcome.work.acked as u64) >= ACKED_FLOOR,
        "the schedules changed too little to check anything: {:?}",
        outcome.work
    );
}

#[test]
fn figure_8_schedules_keep_committed_entries() {
    if let Some(seed) = env_u64("SIM_SEED") {
        figure_8_schedule(seed, true, None);
        return;
    }
    for seed in 0..200 {
        figure_8_schedule(seed, false, None);
    }
}

/// Fast failover with slow disks: every vote answer arrives one to three
/// ticks late (the voter's fdatasync). The leader is killed over and over
/// (its connections reset), the old one restarted at once, and the next kill
/// often comes before leadership has returned to ordinal 0, so that ordinal
/// 0 (whose fast delay is one tick) is the candidate. Each failover raises
/// the term by at most two: a candidate does not give up its candidacy while
/// its votes are on their way.
#[test]
fn fast_failover_with_slow_votes_raises_the_term_by_at_most_two() {
    let count = seeds().min(200);
    for seed in 0..count {
        let mut c = Cluster::with_config(sim_config(3, None), 7_000_000 + seed);
        c.netcfg.vote_response_delay = 1 + c.rng.below(3);
        assert!(
            c.run_until(500, |c| c.leader().is_some()),
            "seed {seed}: no first leader"
        );
        for kill in 0..6 {
            let settle = c.rng.below(30);
            c.run(settle);
            c.restart_all_down();
            let Some(leader) = c.leader() else { continue };
            let before = c.core(leader).term();
            c.crash(leader, true);
            let elected = c.run_until(500, |c| c.leader().is_some_and(|l| l != leader));
            assert!(elected, "seed {seed}, kill {kill}: no new leader");
            let after = c.core(c.leader().expect("elected")).term();
            assert!(
                after <= before + 2,
                "seed {seed}, kill {kill}: the term went from {before} to {after} in one failover (vote answers {} ticks late)",
                c.netcfg.vote_response_delay
            );
            c.restart(leader);
        }
        c.converge_and_check(3_000);
    }
}
