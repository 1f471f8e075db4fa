//! A deterministic in-memory cluster of Raft cores: a simulated network (loss,
//! duplication, delay, reordering, partitions), simulated disks (crash loses
//! what was not persisted; a wipe loses everything), a toy state machine (a
//! hash chain of applied entries), and a checker of Raft's safety properties
//! that runs after every step.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use bytes::Bytes;
use kvstore::raft::*;

use super::trace::{self, Event, Seen};

/// The toy state machine: how far it has applied and a hash of everything
/// applied, so that two states compare in O(1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmState {
    pub index: Index,
    pub hash: u64,
}

fn chain(hash: u64, e: &Entry) -> u64 {
    // FNV-1a over (previous hash, term, kind, data): order-sensitive.
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ hash;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    for b in e.term.to_le_bytes() {
        eat(b);
    }
    eat(matches!(e.kind, EntryKind::Noop) as u8);
    for &b in e.data.iter() {
        eat(b);
    }
    h
}

/// What survives a crash.
#[derive(Clone, Debug)]
pub struct Disk {
    pub hard_state: HardState,
    pub snapshot: SnapshotMeta,
    /// The state machine as of `snapshot` (and, since applied state is
    /// written to disk too, possibly later: `sm_durable`).
    pub snapshot_state: SmState,
    pub entries: Vec<Entry>,
}

impl Disk {
    fn fresh() -> Self {
        Disk {
            hard_state: HardState::fresh(),
            snapshot: SnapshotMeta::default(),
            snapshot_state: SmState::default(),
            entries: Vec::new(),
        }
    }
}

/// One simulated member.
pub struct SimNode {
    pub core: Option<RaftCore>,
    pub disk: Disk,
    /// The live state machine.
    pub sm: SmState,
    /// Bumped at every restart, so that proposals of an earlier life are not
    /// acknowledged by a later one.
    pub incarnation: u64,
    /// Snapshot data received and waiting for the core to accept it.
    incoming_snapshots: BTreeMap<Index, SmState>,
    /// Proposals made in this incarnation: (index, term) -> data.
    proposals: BTreeMap<(Index, Term), Bytes>,
    /// The wiped member has not yet been allowed to vote again.
    pub wiped: bool,
    last_role: Role,
}

/// A message on the wire.
#[derive(Clone, Debug)]
struct InFlight {
    msg: Message,
    snapshot: Option<SmState>,
    deliver_at: u64,
}

/// A proposal that was acknowledged to its client.
#[derive(Clone, Debug)]
pub struct Acked {
    pub index: Index,
    pub term: Term,
    pub data: Bytes,
}

/// Network behaviour.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    pub loss: f64,
    pub duplicate: f64,
    /// Probability that a message is delayed by 1..=max_delay ticks.
    pub delay: f64,
    pub max_delay: u64,
    /// Extra ticks before every vote and pre-vote answer arrives: a voter's
    /// disk takes that long to make its vote durable.
    pub vote_response_delay: u64,
}

impl NetConfig {
    pub fn reliable() -> Self {
        NetConfig {
            loss: 0.0,
            duplicate: 0.0,
            delay: 0.0,
            max_delay: 0,
            vote_response_delay: 0,
        }
    }
}

/// The cluster and its checker.
pub struct Cluster {
    pub nodes: Vec<SimNode>,
    net: Vec<InFlight>,
    /// Links (a, b) that drop messages from a to b.
    blocked: BTreeSet<(NodeId, NodeId)>,
    pub rng: SplitMix64,
    pub now: u64,
    pub netcfg: NetConfig,
    cfg_template: Config,
    seed: u64,
    // ---- checker state ----
    /// term -> leader of that term.
    leaders: BTreeMap<Term, NodeId>,
    /// index -> term of every entry observed committed anywhere.
    committed: BTreeMap<Index, Term>,
    /// index -> state-machine hash after applying it, as first observed.
    applied: BTreeMap<Index, u64>,
    /// index -> term of the entry applied there, as first observed.
    applied_terms: BTreeMap<Index, Term>,
    checked_commit: Vec<Index>,
    pub acked: Vec<Acked>,
    /// read id -> (leader, highest commit anywhere when the read was asked).
    reads: BTreeMap<u64, (NodeId, Index)>,
    next_read: u64,
    pub reads_served: u64,
    /// Config entries applied (each index counted once).
    pub configs_committed: usize,
    next_proposal: u64,
    pub trace: Vec<String>,
    pub trace_to_stdout: bool,
    /// Probability that sending a snapshot fails.
    pub snapshot_failure: f64,
    /// Crash the leader after this many more deliveries (a fault schedule).
    pub crash_leader_after: Option<u32>,
    /// Deliver messages in the order they were sent (the golden scripts),
    /// instead of a random due one.
    pub in_order: bool,
    /// When set, what happens is recorded for the golden scripts.
    pub recorder: Option<Recorder>,
}

/// The events of a cluster, for a readable trace.
#[derive(Debug, Default)]
pub struct Recorder {
    pub events: Vec<Event>,
    /// What the trace last reported of each member.
    seen: BTreeMap<NodeId, Seen>,
}

impl Cluster {
    /// `n` members with fresh data dirs, default timing.
    pub fn new(n: u32, seed: u64) -> Self {
        Self::with_config(Config::new(0, n), seed)
    }

    /// `n` members built from a config template (its id is replaced).
    pub fn with_config(template: Config, seed: u64) -> Self {
        let n = template.voters;
        Self::with_slots(template, n, seed)
    }

    /// `n` processes with fresh data dirs, of which the template's
    /// `voters` bootstrap the cluster; the others are pods the cluster does
    /// not know yet (they can be added as learners).
    pub fn with_slots(template: Config, n: u32, seed: u64) -> Self {
        let mut c = Cluster {
            nodes: Vec::new(),
            net: Vec::new(),
            blocked: BTreeSet::new(),
            rng: SplitMix64::new(seed),
            now: 0,
            netcfg: NetConfig::reliable(),
            cfg_template: template,
            seed,
            leaders: BTreeMap::new(),
            committed: BTreeMap::new(),
            applied: BTreeMap::new(),
            applied_terms: BTreeMap::new(),
            checked_commit: vec![0; n as usize],
            acked: Vec::new(),
            reads: BTreeMap::new(),
            next_read: 1,
            reads_served: 0,
            configs_committed: 0,
            next_proposal: 0,
            trace: Vec::new(),
            trace_to_stdout: false,
            snapshot_failure: 0.0,
            crash_leader_after: None,
            in_order: false,
            recorder: None,
        };
        for id in 0..n {
            let core = c.make_core(id, Restored::fresh(), 0);
            c.nodes.push(SimNode {
                core: Some(core),
                disk: Disk::fresh(),
                sm: SmState::default(),
                incarnation: 0,
                incoming_snapshots: BTreeMap::new(),
                proposals: BTreeMap::new(),
                wiped: false,
                last_role: Role::Follower,
            });
        }
        for id in 0..n {
            c.process_ready(id);
        }
        c
    }

    fn make_core(&self, id: NodeId, restored: Restored, incarnation: u64) -> RaftCore {
        let mut cfg = self.cfg_template.clone();
        cfg.id = id;
        RaftCore::new(
            cfg,
            restored,
            self.seed
                .wrapping_mul(31)
                .wrapping_add(incarnation * 1000 + u64::from(id)),
        )
    }

    pub fn size(&self) -> u32 {
        self.nodes.len() as u32
    }

    pub fn log(&mut self, line: String) {
        if self.trace_to_stdout {
            println!("{line}");
        }
        self.trace.push(line);
        if self.trace.len() > 400 {
            self.trace.drain(..200);
        }
    }

    pub fn core(&self, id: NodeId) -> &RaftCore {
        self.nodes[id as usize].core.as_ref().expect("node is up")
    }

    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[id as usize].core.is_some()
    }

    /// The member that leads in the highest term, if any is up and leading.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.core.as_ref().map(|c| (i as NodeId, c)))
            .filter(|(_, c)| c.role() == Role::Leader)
            .max_by_key(|(_, c)| c.term())
            .map(|(i, _)| i)
    }

    // ----- driving one member -----

    /// Runs the Ready loop of a member until it has nothing left to do,
    /// through the core's own `handle_ready` (the order the server uses),
    /// checking the safety properties after each Ready.
    pub fn process_ready(&mut self, id: NodeId) {
        let Some(mut core) = self.nodes[id as usize].core.take() else {
            return;
        };
        loop {
            let handled = core.handle_ready(&mut SimReady { cluster: self, id });
            match handled {
                Ok(true) => {}
                Ok(false) => break,
                Err(never) => match never {},
            }
            self.nodes[id as usize].core = Some(core);
            self.check(id);
            self.record_changes(id);
            core = self.nodes[id as usize].core.take().expect("still up");
        }
        self.nodes[id as usize].core = Some(core);
        // Changes without output (a leader forgotten on a reset connection).
        self.record_changes(id);
    }

    /// Records how member `id` changed since the trace last reported it.
    pub fn record_changes(&mut self, id: NodeId) {
        let Some(core) = self.nodes[id as usize].core.as_ref() else {
            return;
        };
        let now = Seen::of(core);
        let Some(rec) = self.recorder.as_mut() else {
            return;
        };
        if let Some(before) = rec.seen.insert(id, now) {
            for line in now.changes_since(id, &before) {
                rec.events.push(Event::Changed(line));
            }
        }
    }

    fn record(&mut self, event: impl FnOnce() -> Event) {
        if let Some(rec) = self.recorder.as_mut() {
            rec.events.push(event());
        }
    }

    /// A message leaves `id`: whatever it promises must already be on the
    /// simulated disk, or a crash now would make the member forget it.
    fn check_promise_is_durable(&self, id: NodeId, msg: &Message) {
        let disk = &self.nodes[id as usize].disk;
        let hs = disk.hard_state;
        match msg.body {
            Body::VoteResponse { granted: true } => assert!(
                hs.term == msg.term && hs.vote == Some(msg.to),
                "member {id} grants {} its vote in term {} with {hs:?} on disk",
                msg.to,
                msg.term
            ),
            Body::AppendResponse {
                result: AppendResult::Accepted { match_index },
                ..
            } => {
                let last = disk.snapshot.index + disk.entries.len() as Index;
                assert!(
                    last >= match_index,
                    "member {id} acknowledges entries to {match_index} with entries to {last} on disk"
                );
            }
            _ => {}
        }
    }

    fn apply(&mut self, id: NodeId, e: &Entry) {
        let node = &mut self.nodes[id as usize];
        assert_eq!(
            e.index,
            node.sm.index + 1,
            "member {id} applies out of order"
        );
        node.sm.hash = chain(node.sm.hash, e);
        node.sm.index = e.index;
        let hash = node.sm.hash;
        let acked = node.proposals.remove(&(e.index, e.term));
        match self.applied.get(&e.index) {
            Some(&h) => assert_eq!(
                h, hash,
                "member {id} applied a different sequence up to index {}",
                e.index
            ),
            None => {
                self.applied.insert(e.index, hash);
                self.applied_terms.insert(e.index, e.term);
                if e.kind == EntryKind::Config {
                    self.configs_committed += 1;
                }
            }
        }
        if let Some(data) = acked {
            assert_eq!(
                data, e.data,
                "member {id} acknowledged the wrong data at {}",
                e.index
            );
            self.acked.push(Acked {
                index: e.index,
                term: e.term,
                data,
            });
        }
    }

    fn enqueue(&mut self, msg: Message, snapshot: Option<SmState>) {
        let mut delay = if self.netcfg.delay > 0.0 && self.chance(self.netcfg.delay) {
            1 + self.rng.below(self.netcfg.max_delay.max(1))
        } else {
            0
        };
        if matches!(
            msg.body,
            Body::VoteResponse { .. } | Body::PreVoteResponse { .. }
        ) {
            delay += self.netcfg.vote_response_delay;
        }
        self.net.push(InFlight {
            msg,
            snapshot,
            deliver_at: self.now + delay,
        });
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.rng.below(1_000_000) as f64) < p * 1_000_000.0
    }

    // ----- inputs -----

    /// Advances every live member's clock by one tick.
    pub fn tick(&mut self) {
        self.now += 1;
        for id in 0..self.size() {
            if let Some(core) = self.nodes[id as usize].core.as_mut() {
                core.tick();
                self.process_ready(id);
            }
        }
    }

    /// Delivers messages that are due, in random order, until none are.
    /// Returns how many were delivered.
    pub fn deliver_all(&mut self) -> usize {
        let mut delivered = 0;
        loop {
            let due: Vec<usize> = (0..self.net.len())
                .filter(|&i| self.net[i].deliver_at <= self.now)
                .collect();
            if due.is_empty() || delivered > 10_000 {
                return delivered;
            }
            let pick = if self.in_order {
                due[0]
            } else {
                due[self.rng.below(due.len() as u64) as usize]
            };
            self.deliver_one(pick);
            delivered += 1;
        }
    }

    /// Delivers one due message, chosen at random; false if none is due.
    pub fn deliver_next(&mut self) -> bool {
        let due: Vec<usize> = (0..self.net.len())
            .filter(|&i| self.net[i].deliver_at <= self.now)
            .collect();
        if due.is_empty() {
            return false;
        }
        let pick = if self.in_order {
            due[0]
        } else {
            due[self.rng.below(due.len() as u64) as usize]
        };
        self.deliver_one(pick);
        true
    }

    fn deliver_one(&mut self, i: usize) {
        let dup = self.netcfg.duplicate > 0.0 && self.chance(self.netcfg.duplicate);
        let item = if dup {
            self.net[i].clone()
        } else if self.in_order {
            self.net.remove(i)
        } else {
            self.net.swap_remove(i)
        };
        if self.netcfg.loss > 0.0 && self.chance(self.netcfg.loss) {
            return;
        }
        let (from, to) = (item.msg.from, item.msg.to);
        if self.blocked.contains(&(from, to)) || !self.is_up(to) {
            let why = if self.is_up(to) {
                "link blocked"
            } else {
                "member down"
            };
            self.record(|| Event::Dropped(format!("{} ({why})", trace::message(&item.msg))));
            return;
        }
        if let Some(state) = item.snapshot {
            self.nodes[to as usize]
                .incoming_snapshots
                .insert(state.index, state);
        }
        self.nodes[to as usize]
            .core
            .as_mut()
            .expect("up")
            .step(item.msg);
        self.process_ready(to);
    }

    /// Ticks and delivers for `ticks` rounds.
    pub fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick();
            self.deliver_all();
        }
    }

    /// Runs until `cond` holds, for at most `max_ticks` rounds. Returns
    /// whether it held.
    pub fn run_until(&mut self, max_ticks: u64, mut cond: impl FnMut(&Cluster) -> bool) -> bool {
        for _ in 0..max_ticks {
            if cond(self) {
                return true;
            }
            self.tick();
            self.deliver_all();
        }
        cond(self)
    }

    /// Proposes a command at member `id`; returns its (index, term) if `id`
    /// accepted it.
    pub fn propose(&mut self, id: NodeId) -> Option<(Index, Term)> {
        self.next_proposal += 1;
        let data = Bytes::from(format!("cmd-{}", self.next_proposal));
        let node = &mut self.nodes[id as usize];
        let core = node.core.as_mut()?;
        match core.propose(data.clone()) {
            Ok((index, term)) => {
                node.proposals.insert((index, term), data);
                self.process_ready(id);
                Some((index, term))
            }
            Err(_) => None,
        }
    }

    /// Asks member `id` to hand leadership to `to`.
    pub fn transfer(&mut self, id: NodeId, to: NodeId) -> Result<(), TransferError> {
        let Some(core) = self.nodes[id as usize].core.as_mut() else {
            return Ok(());
        };
        core.transfer_leadership(to)?;
        self.process_ready(id);
        Ok(())
    }

    /// Steps a message straight into its target, bypassing the network
    /// (what only a stale or forged peer sends).
    pub fn step_directly(&mut self, msg: Message) {
        let to = msg.to;
        if let Some(core) = self.nodes[to as usize].core.as_mut() {
            core.step(msg);
            self.process_ready(to);
        }
    }

    /// How many messages are on the wire.
    pub fn in_flight(&self) -> usize {
        self.net.len()
    }

    /// The messages on the wire, in the order they were sent.
    pub fn messages_in_flight(&self) -> Vec<Message> {
        self.net.iter().map(|m| m.msg.clone()).collect()
    }

    /// Asks member `id` for a read index.
    pub fn read(&mut self, id: NodeId) {
        let required = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref().map(|c| c.log().commit()))
            .chain(self.committed.keys().next_back().copied())
            .max()
            .unwrap_or(0);
        let rid = self.next_read;
        self.next_read += 1;
        self.reads.insert(rid, (id, required));
        if let Some(core) = self.nodes[id as usize].core.as_mut() {
            core.read_index(rid);
            self.process_ready(id);
        }
    }

    /// Crashes member `id`: its memory is lost, its disk stays. Peers whose
    /// connection to it resets are told (fast failure detection).
    pub fn crash(&mut self, id: NodeId, peers_notice: bool) {
        if self.nodes[id as usize].core.take().is_none() {
            return;
        }
        self.log(format!("  crash {id}"));
        let node = &mut self.nodes[id as usize];
        node.proposals.clear();
        node.incoming_snapshots.clear();
        // The applied state is on disk too; it may survive ahead of the
        // snapshot (sled made it durable) or not (a power loss).
        let keep_sm = self.rng.below(2) == 0;
        let node = &mut self.nodes[id as usize];
        if !keep_sm {
            node.sm = node.disk.snapshot_state;
        }
        // Messages already on the wire may still arrive, as delayed packets
        // of a dead process do.
        if peers_notice {
            for peer in 0..self.size() {
                if peer != id {
                    if let Some(core) = self.nodes[peer as usize].core.as_mut() {
                        core.peer_disconnected(id);
                        self.process_ready(peer);
                    }
                }
            }
        }
    }

    /// Tells `at` that its connection to `peer` reset although `peer` is
    /// alive (a network blip).
    pub fn spurious_disconnect(&mut self, at: NodeId, peer: NodeId) {
        if let Some(core) = self.nodes[at as usize].core.as_mut() {
            core.peer_disconnected(peer);
            self.process_ready(at);
        }
    }

    /// Restarts a crashed member from its disk.
    pub fn restart(&mut self, id: NodeId) {
        if self.is_up(id) {
            return;
        }
        let node = &mut self.nodes[id as usize];
        node.incarnation += 1;
        // Applied state can only be as far as the durable log goes.
        let last = node.disk.snapshot.index + node.disk.entries.len() as Index;
        if node.sm.index > last || node.sm.index < node.disk.snapshot.index {
            node.sm = node.disk.snapshot_state;
        }
        let restored = Restored {
            hard_state: node.disk.hard_state,
            snapshot: node.disk.snapshot,
            entries: node.disk.entries.clone(),
            applied: node.sm.index,
        };
        let incarnation = node.incarnation;
        let core = self.make_core(id, restored, incarnation);
        self.nodes[id as usize].core = Some(core);
        if let Some(rec) = self.recorder.as_mut() {
            // A new life: the trace starts again from what it restored.
            rec.seen.remove(&id);
        }
        self.nodes[id as usize].last_role = Role::Follower;
        self.checked_commit[id as usize] =
            self.checked_commit[id as usize].min(self.nodes[id as usize].sm.index);
        self.log(format!(
            "  restart {id} (applied {})",
            self.nodes[id as usize].sm.index
        ));
        self.process_ready(id);
    }

    /// Restarts every member that is down.
    pub fn restart_all_down(&mut self) {
        for id in 0..self.size() {
            self.restart(id);
        }
    }

    /// Crashes member `id` and restarts it with an empty data dir: its volume
    /// was lost.
    pub fn wipe(&mut self, id: NodeId) {
        self.crash(id, true);
        let node = &mut self.nodes[id as usize];
        node.disk = Disk::fresh();
        node.sm = SmState::default();
        node.wiped = true;
        self.checked_commit[id as usize] = 0;
        self.log(format!("  wipe {id}"));
        self.restart(id);
    }

    /// Cuts `a` off from everyone else, both ways.
    pub fn isolate(&mut self, a: NodeId) {
        for b in 0..self.size() {
            if b != a {
                self.blocked.insert((a, b));
                self.blocked.insert((b, a));
            }
        }
        self.log(format!("  isolate {a}"));
    }

    /// Splits the cluster into `group` and the rest.
    pub fn partition(&mut self, group: &[NodeId]) {
        for a in 0..self.size() {
            for b in 0..self.size() {
                if group.contains(&a) != group.contains(&b) {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.log(format!("  partition {group:?} from the rest"));
    }

    /// Drops messages from `a` to `b` (one direction only).
    pub fn block(&mut self, a: NodeId, b: NodeId) {
        self.blocked.insert((a, b));
        self.log(format!("  block {a} -> {b}"));
    }

    /// Heals every partition.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.log("  heal".to_string());
    }

    /// Compacts member `id`'s log up to its applied index.
    pub fn compact(&mut self, id: NodeId) {
        let node = &mut self.nodes[id as usize];
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let index = node.sm.index.min(core.log().stable());
        if index <= node.disk.snapshot.index {
            return;
        }
        core.compact(index);
        let meta = core.log().snapshot();
        let drop = (meta.index - node.disk.snapshot.index) as usize;
        node.disk.entries.drain(..drop.min(node.disk.entries.len()));
        node.disk.snapshot = meta;
        node.disk.snapshot_state = SmState {
            index: meta.index,
            hash: *self.applied.get(&meta.index).expect("applied before"),
        };
    }

    // ----- the checker -----

    /// Checks the safety properties that involve member `id`.
    fn check(&mut self, id: NodeId) {
        let Some(core) = self.nodes[id as usize].core.as_ref() else {
            return;
        };
        // Election safety: one leader per term.
        let role = core.role();
        let term = core.term();
        let became_leader =
            role == Role::Leader && self.nodes[id as usize].last_role != Role::Leader;
        if role == Role::Leader {
            if let Some(&other) = self.leaders.get(&term) {
                assert_eq!(other, id, "two leaders in term {term}: {other} and {id}");
            }
            self.leaders.insert(term, id);
        }
        // Committed entries never change, anywhere.
        let log = core.log();
        let commit = log.commit();
        let from = self.checked_commit[id as usize].max(log.snapshot().index) + 1;
        for i in from..=commit {
            let t = log
                .term(i)
                .expect("committed entries after the snapshot are held");
            match self.committed.get(&i) {
                Some(&c) => assert_eq!(
                    c, t,
                    "member {id} committed term {t} at {i}, but term {c} was committed there"
                ),
                None => {
                    self.committed.insert(i, t);
                }
            }
        }
        self.checked_commit[id as usize] = commit.max(self.checked_commit[id as usize]);
        // Leader completeness: a new leader holds every committed entry.
        if became_leader {
            for (&i, &t) in &self.committed {
                assert!(
                    i <= log.last_index(),
                    "leader {id} of term {term} lacks committed index {i}"
                );
                if i > log.snapshot().index {
                    assert_eq!(
                        log.term(i),
                        Some(t),
                        "leader {id} of term {term} has the wrong entry at committed index {i}"
                    );
                }
            }
        }
        // Log matching against every other live member.
        for other in 0..self.size() {
            if other == id {
                continue;
            }
            if let Some(o) = self.nodes[other as usize].core.as_ref() {
                check_log_matching(id, log, other, o.log());
            }
        }
        // A snapshot-installed state machine matches the history.
        let sm = self.nodes[id as usize].sm;
        if sm.index > 0 {
            if let Some(&h) = self.applied.get(&sm.index) {
                assert_eq!(h, sm.hash, "member {id}'s state at {} diverges", sm.index);
            }
        }
        if self.nodes[id as usize].wiped && core.voting() == Voting::Enabled {
            self.nodes[id as usize].wiped = false;
        }
        self.nodes[id as usize].last_role = role;
        if became_leader {
            self.log(format!("  {id} leads term {term}"));
        }
    }

    /// Heals everything, restarts every member, and runs until all have
    /// applied the same committed prefix with a leader in place. Then checks
    /// that every acknowledged proposal is applied everywhere.
    pub fn converge_and_check(&mut self, max_ticks: u64) {
        self.heal();
        self.netcfg = NetConfig::reliable();
        for id in 0..self.size() {
            self.restart(id);
        }
        let ok = self.run_until(max_ticks, |c| {
            let Some(l) = c.leader() else { return false };
            let lc = c.core(l);
            let commit = lc.log().commit();
            lc.log().term(commit) == Some(lc.term())
                && lc.log().last_index() == commit
                && lc.log().membership_index() <= commit
                && lc.membership().members().all(|i| {
                    c.nodes[i as usize].sm.index == commit && c.core(i).voting() == Voting::Enabled
                })
        });
        let mut state = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let c = n.core.as_ref().expect("restarted");
            let _ = write!(
                state,
                "\n  member {i}: {:?} term {} commit {} last {} applied {} voting {:?} ({})",
                c.role(),
                c.term(),
                c.log().commit(),
                c.log().last_index(),
                n.sm.index,
                c.voting(),
                c.membership()
            );
        }
        assert!(
            ok,
            "the cluster did not converge within {max_ticks} ticks:{state}"
        );
        let leader = self.leader().expect("converged under a leader");
        let members: Vec<NodeId> = self.core(leader).membership().members().collect();
        let final_index = self.nodes[leader as usize].sm.index;
        for a in &self.acked {
            assert!(
                a.index <= final_index,
                "acknowledged index {} is beyond the final state",
                a.index
            );
            // Every member's final log (or the snapshot it holds instead)
            // has the acknowledged entry.
            for &i in &members {
                let log = self.core(i).log();
                if a.index > log.snapshot().index {
                    assert_eq!(
                        log.term(a.index),
                        Some(a.term),
                        "acknowledged entry {} (term {}) is not in member {i}'s log",
                        a.index,
                        a.term
                    );
                } else {
                    assert_eq!(
                        self.applied_terms.get(&a.index),
                        Some(&a.term),
                        "acknowledged entry {} (term {}) is not what was applied",
                        a.index,
                        a.term
                    );
                }
            }
        }
    }
}

fn check_log_matching(a: NodeId, la: &RaftLog, b: NodeId, lb: &RaftLog) {
    let lo = la.first_index().max(lb.first_index());
    let hi = la.last_index().min(lb.last_index());
    let mut matched = false;
    let mut i = hi;
    while i >= lo && i > 0 {
        let (ea, eb) = (la.get(i).expect("in range"), lb.get(i).expect("in range"));
        if matched {
            assert_eq!(
                ea, eb,
                "log matching: members {a} and {b} agree above {i} but differ at {i}"
            );
        } else if ea.term == eb.term {
            assert_eq!(
                ea, eb,
                "log matching: members {a} and {b} have different entries of term {} at {i}",
                ea.term
            );
            matched = true;
        }
        i -= 1;
    }
}

/// The simulation's side of the Ready loop: a simulated disk, network and
/// state machine for member `id`.
struct SimReady<'a> {
    cluster: &'a mut Cluster,
    id: NodeId,
}

impl ReadyHandler for SimReady<'_> {
    type Error = std::convert::Infallible;

    fn persist(
        &mut self,
        _core: &RaftCore,
        snapshot: Option<SnapshotMeta>,
        hard_state: Option<HardState>,
        entries: &[Entry],
    ) -> Result<(), Self::Error> {
        let id = self.id;
        let node = &mut self.cluster.nodes[id as usize];
        if let Some(meta) = snapshot {
            let state = node
                .incoming_snapshots
                .remove(&meta.index)
                .expect("snapshot data arrived before the snapshot message");
            node.disk.snapshot = meta;
            node.disk.snapshot_state = state;
            node.disk.entries.clear();
            node.sm = state;
            node.incoming_snapshots.clear();
        }
        if let Some(hs) = hard_state {
            node.disk.hard_state = hs;
        }
        for e in entries {
            let keep = (e.index - node.disk.snapshot.index - 1) as usize;
            assert!(
                keep <= node.disk.entries.len(),
                "gap in persisted log of {id}"
            );
            node.disk.entries.truncate(keep);
            node.disk.entries.push(e.clone());
        }
        Ok(())
    }

    fn send(&mut self, messages: Vec<Message>) -> Result<(), Self::Error> {
        for msg in messages {
            self.cluster.check_promise_is_durable(self.id, &msg);
            self.cluster.record(|| Event::Sent(trace::message(&msg)));
            self.cluster.enqueue(msg, None);
        }
        Ok(())
    }

    fn send_snapshots(
        &mut self,
        core: &RaftCore,
        peers: Vec<NodeId>,
    ) -> Result<Vec<(NodeId, Option<Index>)>, Self::Error> {
        let id = self.id;
        let sm = self.cluster.nodes[id as usize].sm;
        let term = core
            .log()
            .term(sm.index)
            .expect("applied index is in the log or is the snapshot point");
        let mut outcomes = Vec::new();
        for peer in peers {
            let msg = Message {
                from: id,
                to: peer,
                term: core.term(),
                body: Body::Snapshot {
                    meta: SnapshotMeta {
                        index: sm.index,
                        term,
                        membership: core.log().membership_at(sm.index),
                    },
                },
            };
            // A transfer can fail (the stream breaks); the leader must cope.
            let c = &mut *self.cluster;
            let failed = c.snapshot_failure > 0.0 && c.chance(c.snapshot_failure);
            if !failed {
                c.record(|| Event::Sent(trace::message(&msg)));
                c.enqueue(msg, Some(sm));
            }
            outcomes.push((peer, (!failed).then_some(sm.index)));
            c.log(format!("  {id} sends snapshot at {} to {peer}", sm.index));
        }
        Ok(outcomes)
    }

    fn apply(&mut self, committed: Vec<Entry>) -> Result<(), Self::Error> {
        for e in &committed {
            self.cluster.apply(self.id, e);
        }
        Ok(())
    }

    fn answer_reads(
        &mut self,
        _core: &RaftCore,
        ready: Vec<ReadState>,
        dropped: Vec<u64>,
    ) -> Result<(), Self::Error> {
        let c = &mut *self.cluster;
        for rs in ready {
            let (leader, required) = c.reads.remove(&rs.id).expect("known read");
            assert_eq!(leader, self.id, "read answered by another member");
            assert!(
                rs.index >= required,
                "read {} at index {} misses writes committed up to {required}",
                rs.id,
                rs.index
            );
            c.reads_served += 1;
            let at = self.id;
            c.record(|| {
                Event::Changed(format!("n{at} serves read {} at index {}", rs.id, rs.index))
            });
        }
        for id in dropped {
            c.reads.remove(&id);
            let at = self.id;
            c.record(|| Event::Changed(format!("n{at} cannot confirm read {id}")));
        }
        Ok(())
    }
}
