//! The random schedules of the deterministic simulation, shared by
//! `raft_sim.rs` (safety under faults) and `raft_mutations.rs` (each safety
//! rule switched off must be caught).
//!
//! Each seed gives one random schedule of ticks, proposals, reads, crashes and
//! restarts (losing what was not durable), lost volumes, partitions, message
//! loss, duplication, delay and reordering, slow vote answers, leadership
//! transfers and log compactions. Proposals and reads sometimes go to any
//! member that believes it leads, a stale leader in a minority included (the
//! read-index hazard). After every step the checker in `raft_cluster.rs`
//! asserts the safety properties; at the end the network heals, every member
//! restarts, and every acknowledged proposal must be applied everywhere.

#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use kvstore::raft::mutations::Mutation;
use kvstore::raft::{Config, MembershipChange, NodeId, Role, Voting};

use super::raft_cluster::{Cluster, NetConfig};

/// Ticks of random schedule per seed, before the final convergence.
pub const SCHEDULE_TICKS: u64 = 600;

/// What one schedule did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Work {
    /// Proposals acknowledged.
    pub acked: usize,
    /// Linearizable reads served (and checked).
    pub reads: u64,
    /// Configuration entries committed.
    pub configs: usize,
}

pub fn sim_config(voters: u32, mutation: Option<Mutation>) -> Config {
    let mut cfg = Config::new(0, voters);
    // Small windows so that flow control and snapshots get exercised.
    cfg.max_append_entries = 8;
    cfg.max_inflight = 4;
    cfg.priority_return_ticks = 40;
    cfg.mutation = mutation;
    cfg
}

/// A member that believes it leads: usually the leader of the highest
/// term, sometimes any member in the leader role (a stale one cut off in a
/// minority, say).
fn some_leader(c: &mut Cluster) -> Option<NodeId> {
    let believers: Vec<NodeId> = (0..c.size())
        .filter(|&i| c.is_up(i) && c.core(i).role() == Role::Leader)
        .collect();
    if believers.len() > 1 && c.chance(0.3) {
        let pick = c.rng.below(believers.len() as u64) as usize;
        return Some(believers[pick]);
    }
    c.leader()
}

/// The processes of a schedule: `voters` bootstrap the cluster, and with
/// `reconfig` the schedule also changes the configuration among `slots`
/// processes (adding learners, promoting, removing).
#[derive(Clone, Copy, Debug)]
struct Shape {
    voters: u32,
    slots: u32,
    reconfig: bool,
}

/// Runs one schedule. Panics (with the checker's message) on a violation.
pub fn run_schedule(voters: u32, seed: u64, trace: bool, mutation: Option<Mutation>) -> Work {
    let shape = Shape {
        voters,
        slots: voters,
        reconfig: false,
    };
    schedule(shape, seed, trace, mutation)
}

/// Runs one schedule of 5 processes, 3 of which bootstrap, that interleaves
/// membership changes (one at a time, as the leader allows) with every
/// other fault.
pub fn run_reconfig_schedule(seed: u64, trace: bool, mutation: Option<Mutation>) -> Work {
    let shape = Shape {
        voters: 3,
        slots: 5,
        reconfig: true,
    };
    schedule(shape, seed, trace, mutation)
}

fn schedule(shape: Shape, seed: u64, trace: bool, mutation: Option<Mutation>) -> Work {
    let Shape { voters, slots, .. } = shape;
    let mut c = Cluster::with_slots(sim_config(voters, mutation), slots, seed);
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
        "seed {seed}: {shape:?}, {:?}, fault rate {fault_rate}",
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
                inject_fault(&mut c, shape);
            }
        }
        // Client load.
        let proposals = c.rng.below(4);
        for _ in 0..proposals {
            match some_leader(&mut c) {
                Some(l) => {
                    c.propose(l);
                }
                None => {
                    let n = c.rng.below(u64::from(slots)) as NodeId;
                    c.propose(n);
                }
            }
        }
        if c.chance(0.25) {
            if let Some(l) = some_leader(&mut c) {
                c.read(l);
            }
        }
        c.deliver_all();
        if c.chance(fault_rate) {
            inject_fault(&mut c, shape);
        }
        if shape.reconfig && c.chance(0.02) {
            change_membership(&mut c, slots);
        }
    }
    c.log(format!("t{}: converge", c.now));
    c.converge_and_check(3_000);
    Work {
        acked: c.acked.len(),
        reads: c.reads_served,
        configs: c.configs_committed,
    }
}

/// One random fault: a crash (peers may or may not see the reset), a
/// restart, a lost volume, a partition, a heal, a spurious connection reset,
/// a leadership transfer, or log compaction.
fn inject_fault(c: &mut Cluster, shape: Shape) {
    let slots = shape.slots;
    // The voters as the newest leader sees them (the bootstrap ones before
    // any leader): crashes leave a quorum of them up, mostly.
    let voters: Vec<NodeId> = match c.leader() {
        Some(l) => c.core(l).membership().voters().collect(),
        None => (0..shape.voters).collect(),
    };
    let f = (voters.len() - 1) / 2;
    let down = voters.iter().filter(|&&i| !c.is_up(i)).count();
    let pick = c.rng.below(u64::from(slots)) as NodeId;
    match c.rng.below(10) {
        0 | 1 => {
            if down < f || c.chance(0.2) {
                let notice = c.chance(0.7);
                c.log(format!("t{}: crash {pick}", c.now));
                c.crash(pick, notice);
            }
        }
        2 => {
            if let Some(d) = (0..slots).find(|&i| !c.is_up(i)) {
                c.log(format!("t{}: restart {d}", c.now));
                c.restart(d);
            }
        }
        3 => {
            // Lose a volume only while every other process is up, voting
            // and not itself wiped, so that the cluster can still recover it.
            // A voter's volume only while the other voters are a quorum
            // without it (losing the volume of one of two voters loses
            // data in any Raft).
            let others_ok = (0..slots).all(|i| {
                i == pick
                    || (c.is_up(i)
                        && !c.nodes[i as usize].wiped
                        && c.core(i).voting() == Voting::Enabled)
            });
            let quorum_without = (0..slots).filter(|&i| c.is_up(i)).all(|i| {
                let m = c.core(i).membership();
                m.voters().filter(|&v| v != pick).count() >= m.majority()
            });
            if others_ok && quorum_without && !c.nodes[pick as usize].wiped {
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
            let other = (pick + 1 + c.rng.below(u64::from(slots - 1)) as NodeId) % slots;
            c.log(format!("t{}: partition {{{pick}, {other}}}", c.now));
            c.partition(&[pick, other]);
        }
        6 => {
            c.log(format!("t{}: heal", c.now));
            c.heal();
        }
        7 => {
            let peer = (pick + 1 + c.rng.below(u64::from(slots - 1)) as NodeId) % slots;
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
            for id in 0..slots {
                if c.is_up(id) && c.core(id).log().entries().len() > 24 {
                    c.compact(id);
                }
            }
        }
    }
}

/// Asks a member that believes it leads (a stale one sometimes) for one
/// random membership change among the `slots` processes: add a learner,
/// promote one, or remove a member. The core refuses what is unsafe now
/// (a change in flight, a quorum at risk); a refusal changes nothing.
fn change_membership(c: &mut Cluster, slots: u32) {
    let Some(l) = some_leader(c) else { return };
    let m = c.core(l).membership();
    let mut options: Vec<MembershipChange> = Vec::new();
    options.extend(
        (0..slots)
            .filter(|&i| !m.contains(i))
            .map(MembershipChange::AddLearner),
    );
    options.extend(m.learners().map(MembershipChange::Promote));
    // No removal while a process is recovering a lost volume: the leader
    // cannot know of the loss before it hears from the process, and a
    // removal in that instant can leave two voters, one of which cannot
    // vote (a stall, not a safety violation; operators shrink a cluster
    // that is whole).
    if (0..slots).all(|i| !c.nodes[i as usize].wiped) {
        options.extend(m.members().map(MembershipChange::Remove));
    }
    if options.is_empty() {
        return;
    }
    let change = options[c.rng.below(options.len() as u64) as usize];
    let core = c.nodes[l as usize].core.as_mut().expect("leader is up");
    let outcome = core.propose_membership_change(change);
    c.log(format!("t{}: {l} proposes {change}: {outcome:?}", c.now));
    c.process_ready(l);
}

/// The outcome of many schedules.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Each failing seed with the checker's message.
    pub failures: Vec<(u64, String)>,
    /// The work of the schedules that passed.
    pub work: Work,
    /// Schedules run.
    pub schedules: u64,
}

/// Runs the seeds `base..base + count` on all cores, stopping early once
/// `stop_after` failures are found.
pub fn run_seeds(
    voters: u32,
    base: u64,
    count: u64,
    mutation: Option<Mutation>,
    stop_after: usize,
) -> Outcome {
    run_seeds_of(
        |seed| run_schedule(voters, seed, false, mutation),
        base,
        count,
        stop_after,
    )
}

/// Runs the reconfiguration schedules of the seeds `base..base + count`.
pub fn run_reconfig_seeds(
    base: u64,
    count: u64,
    mutation: Option<Mutation>,
    stop_after: usize,
) -> Outcome {
    run_seeds_of(
        |seed| run_reconfig_schedule(seed, false, mutation),
        base,
        count,
        stop_after,
    )
}

fn run_seeds_of(
    schedule: impl Fn(u64) -> Work + Sync,
    base: u64,
    count: u64,
    stop_after: usize,
) -> Outcome {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let found = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (found, schedule) = (&found, &schedule);
                s.spawn(move || {
                    let mut out = Outcome::default();
                    let mut i = t;
                    while i < count && found.load(std::sync::atomic::Ordering::Relaxed) < stop_after
                    {
                        let seed = base + i;
                        match catch_unwind(AssertUnwindSafe(|| schedule(seed))) {
                            Ok(w) => {
                                out.work.acked += w.acked;
                                out.work.reads += w.reads;
                                out.work.configs += w.configs;
                            }
                            Err(e) => {
                                let msg = e
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                found.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                out.failures.push((seed, msg));
                            }
                        }
                        out.schedules += 1;
                        i += threads;
                    }
                    out
                })
            })
            .collect();
        let mut all = Outcome::default();
        for h in handles {
            let o = h.join().expect("sim thread");
            all.failures.extend(o.failures);
            all.work.acked += o.work.acked;
            all.work.reads += o.work.reads;
            all.work.configs += o.work.configs;
            all.schedules += o.schedules;
        }
        all.failures.sort();
        all
    })
}

/// Delivers messages one at a time (ticking when none is due) until `stop`
/// holds after a delivery, for at most `max_ticks` ticks. Returns whether it
/// held.
fn deliver_until(c: &mut Cluster, max_ticks: u64, mut stop: impl FnMut(&Cluster) -> bool) -> bool {
    for _ in 0..max_ticks {
        while c.deliver_next() {
            if stop(c) {
                return true;
            }
        }
        if stop(c) {
            return true;
        }
        c.tick();
    }
    stop(c)
}

/// Figure 8 of the Raft paper, on five members, with random details: an
/// entry of an old term reaches a majority only after a later leader has
/// put a different entry at its index. Committing it then by counting
/// replicas (the rule §5.4.2 forbids) lets that later leader overwrite a
/// committed entry. Appends carry one entry each, so that the old entry is
/// acknowledged before the new leader's own no-op.
///
/// Roles, by ordinal (elections go to the lowest live ordinal): 0 writes the
/// old entry X with only 1 hearing it; 2, elected by 2, 3 and 4, writes its
/// no-op at X's index and is cut off before sending it; 0, back, brings X to
/// 3 and (mutated) commits it; 0 and 1 go down; 2, back, is elected by 2, 3
/// and 4 and overwrites X.
pub fn figure_8_schedule(seed: u64, trace: bool, mutation: Option<Mutation>) -> Work {
    let mut cfg = sim_config(5, mutation);
    cfg.max_append_entries = 1;
    cfg.priority_return = false;
    let mut c = Cluster::with_config(cfg, seed);
    c.trace_to_stdout = trace;
    let settled = |c: &Cluster| {
        c.leader() == Some(0)
            && (0..5).all(|i| c.core(i).log().commit() == c.core(0).log().last_index())
    };
    assert!(c.run_until(1_000, settled), "seed {seed}: no first leader");
    for _ in 0..1 + c.rng.below(4) {
        c.propose(0);
    }
    assert!(
        c.run_until(500, settled),
        "seed {seed}: the first entries did not commit"
    );
    // X reaches 1 only.
    c.partition(&[0, 1]);
    let (x, _) = c.propose(0).expect("0 leads");
    c.run_until(100, |c| c.core(1).log().last_index() >= x);
    let notice = c.chance(0.5);
    c.crash(0, notice);
    c.isolate(1);
    // 2 is elected by 2, 3 and 4; its no-op, at X's index, goes nowhere.
    let elected = deliver_until(&mut c, 2_000, |c| {
        c.is_up(2) && c.core(2).role() == Role::Leader
    });
    assert!(elected, "seed {seed}: 2 was not elected");
    c.isolate(2);
    let extra = c.rng.below(20);
    c.run(extra);
    c.crash(2, false);
    // 0 is back, and 0 or 1 (both hold X) is elected by 0, 1, 3 and 4; the
    // moment the leader's commit index reaches X (by counting, mutated; or
    // with its own no-op), 0 and 1 go down.
    c.heal();
    c.restart(0);
    deliver_until(&mut c, 2_000, |c| {
        [0, 1].iter().any(|&l| {
            c.is_up(l) && c.core(l).role() == Role::Leader && c.core(l).log().commit() >= x
        })
    });
    // What they had sent is lost with them.
    c.isolate(0);
    c.isolate(1);
    let notice = c.chance(0.5);
    c.crash(0, notice);
    c.crash(1, false);
    // 2 is back; 2, 3 and 4 elect a leader.
    c.restart(2);
    c.run_until(2_000, |c| c.leader().is_some());
    c.converge_and_check(3_000);
    Work {
        acked: c.acked.len(),
        reads: c.reads_served,
        configs: c.configs_committed,
    }
}
