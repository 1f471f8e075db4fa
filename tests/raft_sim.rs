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
//! `SIM_SEEDS=N` runs N seeds per cluster size (default 1000);
//! `SIM_SEED=S` replays one seed with a trace on stdout
//! (`SIM_SEED=S cargo test --test raft_sim -- --nocapture`).

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};

use kvstore::raft::{Config, NodeId, Voting};
use support::raft_cluster::{Cluster, NetConfig};

/// Ticks of random schedule per seed, before the final convergence.
const SCHEDULE_TICKS: u64 = 600;

fn sim_config(voters: u32) -> Config {
    let mut cfg = Config::new(0, voters);
    // Small windows so that flow control and snapshots get exercised.
    cfg.max_append_entries = 8;
    cfg.max_inflight = 4;
    cfg.priority_return_ticks = 40;
    cfg
}

/// Runs one schedule. Panics (with the checker's message) on a violation.
fn run_schedule(voters: u32, seed: u64, trace: bool) -> (usize, u64) {
    let mut c = Cluster::with_config(sim_config(voters), seed);
    c.trace_to_stdout = trace;
    c.netcfg = NetConfig {
        loss: [0.0, 0.01, 0.05][c.rng.below(3) as usize],
        duplicate: [0.0, 0.02][c.rng.below(2) as usize],
        delay: [0.0, 0.1, 0.3][c.rng.below(3) as usize],
        max_delay: 1 + c.rng.below(8),
        vote_response_delay: [0, 0, 1, 3][c.rng.below(4) as usize],
    };
    let fault_rate = [0.01, 0.03, 0.06][c.rng.below(3) as usize];
    c.log(format!(
        "seed {seed}: {voters} members, {:?}, fault rate {fault_rate}",
        c.netcfg
    ));
    c.snapshot_failure = [0.0, 0.2][c.rng.below(2) as usize];
    for _ in 0..SCHEDULE_TICKS {
        c.tick();
        // Deliver one message at a time, and let faults strike between any
        // two deliveries, not only between ticks.
        let mut delivered = 0;
        while delivered < 10_000 && c.deliver_next() {
            delivered += 1;
            if let Some(n) = c.crash_leader_after {
                if n == 0 {
                    c.crash_leader_after = None;
                    if let Some(l) = c.leader() {
                        c.log(format!("t{}: crash leader {l}", c.now));
                        c.crash(l, true);
                    }
                } else {
                    c.crash_leader_after = Some(n - 1);
                }
            }
            if c.chance(fault_rate / 8.0) {
                inject_fault(&mut c, voters);
            }
        }
        // Client load.
        let proposals = c.rng.below(4);
        for _ in 0..proposals {
            if let Some(l) = c.leader() {
                c.propose(l);
            } else {
                let n = c.rng.below(u64::from(voters)) as NodeId;
                c.propose(n);
            }
        }
        if c.chance(0.2) {
            if let Some(l) = c.leader() {
                c.read(l);
            }
        }
        c.deliver_all();
        if c.chance(fault_rate) {
            inject_fault(&mut c, voters);
        }
    }
    c.log(format!("t{}: converge", c.now));
    c.converge_and_check(3_000);
    (c.acked.len(), c.reads_served)
}

/// One random fault: a crash (peers may or may not see the reset), a
/// restart, a lost volume, a partition, a heal, a spurious connection reset,
/// a leadership transfer, or log compaction.
fn inject_fault(c: &mut Cluster, voters: u32) {
    let f = (voters - 1) / 2;
    let down: Vec<NodeId> = (0..voters).filter(|&i| !c.is_up(i)).collect();
    let pick = c.rng.below(u64::from(voters)) as NodeId;
    match c.rng.below(10) {
        0 | 1 => {
            if (down.len() as u32) < f || c.chance(0.2) {
                let notice = c.chance(0.7);
                c.log(format!("t{}: crash {pick}", c.now));
                c.crash(pick, notice);
            }
        }
        2 => {
            if let Some(&d) = down.first() {
                c.log(format!("t{}: restart {d}", c.now));
                c.restart(d);
            }
        }
        3 => {
            // Lose a volume only while every other member is a voter and up,
            // so that the cluster can still recover it.
            let others_ok = (0..voters).all(|i| {
                i == pick
                    || (c.is_up(i)
                        && !c.nodes[i as usize].wiped
                        && c.core(i).voting() == Voting::Enabled)
            });
            if others_ok && !c.nodes[pick as usize].wiped {
                c.log(format!("t{}: wipe {pick}", c.now));
                c.wipe(pick);
                // Often crash the leader soon after, while the wiped member is
                // still catching up: the moment its vote must not count yet.
                if c.chance(0.5) {
                    c.crash_leader_after = Some(1 + c.rng.below(40) as u32);
                }
            }
        }
        4 => {
            if c.chance(0.5) {
                c.log(format!("t{}: isolate {pick}", c.now));
                c.isolate(pick);
            } else {
                // One direction only: the member falls behind but can still
                // answer (and be asked).
                let from = c.leader().unwrap_or(pick);
                if from != pick {
                    c.block(from, pick);
                }
            }
        }
        5 => {
            let other = (pick + 1 + c.rng.below(u64::from(voters - 1)) as NodeId) % voters;
            c.log(format!("t{}: partition {{{pick}, {other}}}", c.now));
            c.partition(&[pick, other]);
        }
        6 => {
            c.log(format!("t{}: heal", c.now));
            c.heal();
        }
        7 => {
            let peer = (pick + 1 + c.rng.below(u64::from(voters - 1)) as NodeId) % voters;
            c.log(format!("t{}: spurious reset {pick} -x- {peer}", c.now));
            c.spurious_disconnect(pick, peer);
        }
        8 => {
            if let Some(l) = c.leader() {
                c.log(format!("t{}: transfer {l} -> {pick}", c.now));
                let core = c.nodes[l as usize].core.as_mut().expect("leader is up");
                let _ = core.transfer_leadership(pick);
                c.process_ready(l);
            }
        }
        _ => {
            for id in 0..voters {
                if c.is_up(id) && c.core(id).log().entries().len() > 24 {
                    c.compact(id);
                }
            }
        }
    }
}

fn seeds() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000)
}

fn run_many(voters: u32, base: u64) {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        let (acked, reads) = run_schedule(voters, seed, true);
        println!("seed {seed}: {acked} proposals acknowledged, {reads} reads served");
        return;
    }
    let count = seeds();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let failures: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let mut failures = Vec::new();
                    let (mut acked, mut reads) = (0usize, 0u64);
                    let mut i = t;
                    while i < count {
                        let seed = base + i;
                        match catch_unwind(AssertUnwindSafe(|| run_schedule(voters, seed, false))) {
                            Ok((a, r)) => {
                                acked += a;
                                reads += r;
                            }
                            Err(e) => {
                                let msg = e
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                failures.push(format!(
                                    "seed {seed} ({voters} members) failed: {msg}\n  replay: SIM_SEED={seed} cargo test --test raft_sim sim_{voters}_members -- --nocapture"
                                ));
                            }
                        }
                        i += threads;
                    }
                    (failures, acked, reads)
                })
            })
            .collect();
        let mut all = Vec::new();
        let (mut acked, mut reads) = (0, 0);
        for h in handles {
            let (f, a, r) = h.join().expect("sim thread");
            all.extend(f);
            acked += a;
            reads += r;
        }
        println!("{count} schedules of {voters} members: {acked} proposals acknowledged, {reads} linearizable reads checked");
        all
    });
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

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
        let mut c = Cluster::with_config(sim_config(3), 7_000_000 + seed);
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
