//! Golden scripts of the replication core: each file in `tests/scripts/`
//! is a scenario written as commands, with the trace each command produced
//! (the messages sent and dropped, and every change of role, term, leader,
//! voting state and commit index) checked in beside it, so that a rule and
//! its trace read side by side (toydb's testscripts, etcd's
//! `testdata/*.txt`). The cluster is the deterministic one of the
//! simulation, its safety checker on, delivering messages in the order they
//! were sent.
//!
//! After a change to the core, regenerate the traces with
//! `UPDATE_GOLDENFILES=1 cargo test --test raft_scripts` and read the diff:
//! it is the change in behaviour. The `assert` lines state what a scenario
//! is about and hold whatever the trace.
//!
//! Commands (member ids are ordinals):
//!
//! * `cluster voters=N [seed=S] [max_append_entries=K] [jitter=J]`: a new
//!   cluster (J: the most random extra election ticks, 5 by default);
//! * `elect`: run until a leader is elected and every message is delivered;
//! * `tick [n=N]`: advance every member's clock, delivering nothing;
//! * `deliver`: deliver the messages in flight, in order (not those the
//!   deliveries cause);
//! * `stabilize`: deliver until no message is in flight;
//! * `run ticks=N`: tick and deliver for N ticks, tracing only changes;
//! * `run_until COND [max=TICKS]`: tick and deliver one message at a time
//!   until COND holds (see `Condition`), tracing only changes;
//! * `propose ID [n=N]`, `read ID`, `transfer ID to=T`;
//! * `crash ID [silent]` (silent: no connection reset is seen),
//!   `restart ID`, `wipe ID` (restart with an empty data dir);
//! * `isolate ID`, `block FROM TO`, `heal`, `compact ID`;
//! * `step FROM TO term=T vote last=I@T [transfer]` or
//!   `step FROM TO term=T heartbeat commit=C`: a hand-made message, stepped
//!   straight into member TO (what only a stale or forged peer sends);
//! * `status`: every member's state;
//! * `assert COND...`: fails unless each condition holds.

mod support;

use std::error::Error;
use std::fmt::Write as _;

use kvstore::raft::{Body, Config, Index, Message, NodeId, Role, Term, Voting};
use support::raft_cluster::{Cluster, Recorder};
use support::trace::{self, Event};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The most ticks any `elect` or `run_until` may take.
const MAX_TICKS: u64 = 5_000;

#[derive(Default)]
struct Runner {
    cluster: Option<Cluster>,
}

/// What `run_until` waits for and `assert` checks: `leader=ID|any|none`,
/// `not_leader=ID`, `reads=N`, or a member's `nID.term=T|max`,
/// `nID.role=ROLE`, `nID.voting=enabled|awaiting-peers|awaiting-leader`,
/// `nID.applied=I`, `nID.last=I`, `nID.commit=I`, `nID.snapshot=I` (each
/// index: at least I) or `nID.last_below=I`.
enum Condition {
    Leader(Option<NodeId>),
    AnyLeader,
    NotLeader(NodeId),
    ReadsServed(u64),
    Member(NodeId, MemberCondition),
}

enum MemberCondition {
    Term(Term),
    Role(String),
    Voting(String),
    Applied(Index),
    Last(Index),
    LastBelow(Index),
    Commit(Index),
    Snapshot(Index),
}

impl Condition {
    fn parse(key: &str, value: &str) -> Result<Condition> {
        Ok(match (key, value) {
            ("leader", "any") => Condition::AnyLeader,
            ("leader", "none") => Condition::Leader(None),
            ("leader", id) => Condition::Leader(Some(id.parse()?)),
            ("not_leader", id) => Condition::NotLeader(id.parse()?),
            ("reads", n) => Condition::ReadsServed(n.parse()?),
            _ => {
                let (id, what) = key
                    .strip_prefix('n')
                    .and_then(|k| k.split_once('.'))
                    .ok_or_else(|| format!("unknown condition {key}={value}"))?;
                let index = || value.parse::<Index>();
                let m = match what {
                    "term" if value == "max" => MemberCondition::Term(Term::MAX),
                    "term" => MemberCondition::Term(value.parse()?),
                    "role" => MemberCondition::Role(value.into()),
                    "voting" => MemberCondition::Voting(value.into()),
                    "applied" => MemberCondition::Applied(index()?),
                    "last" => MemberCondition::Last(index()?),
                    "last_below" => MemberCondition::LastBelow(index()?),
                    "commit" => MemberCondition::Commit(index()?),
                    "snapshot" => MemberCondition::Snapshot(index()?),
                    _ => return Err(format!("unknown condition {key}={value}").into()),
                };
                Condition::Member(id.parse()?, m)
            }
        })
    }

    fn holds(&self, c: &Cluster) -> Result<bool> {
        Ok(match self {
            Condition::Leader(id) => c.leader() == *id,
            Condition::AnyLeader => c.leader().is_some(),
            Condition::NotLeader(id) => !c.is_up(*id) || c.core(*id).role() != Role::Leader,
            Condition::ReadsServed(n) => c.reads_served == *n,
            Condition::Member(id, m) => {
                if !c.is_up(*id) {
                    return Ok(false);
                }
                let (n, applied) = (c.core(*id), c.nodes[*id as usize].sm.index);
                match m {
                    MemberCondition::Term(t) => n.term() == *t,
                    MemberCondition::Role(r) => trace::role(n.role()) == r,
                    MemberCondition::Voting(v) => match (v.as_str(), n.voting()) {
                        ("enabled", now) => now == Voting::Enabled,
                        ("awaiting-peers", now) => now == Voting::AwaitingPeers,
                        ("awaiting-leader", now) => matches!(now, Voting::AwaitingLeader { .. }),
                        (other, _) => return Err(format!("no voting state {other}").into()),
                    },
                    MemberCondition::Applied(i) => applied >= *i,
                    MemberCondition::Last(i) => n.log().last_index() >= *i,
                    MemberCondition::LastBelow(i) => n.log().last_index() < *i,
                    MemberCondition::Commit(i) => n.log().commit() >= *i,
                    MemberCondition::Snapshot(i) => n.log().snapshot().index >= *i,
                }
            }
        })
    }
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(
        &mut self,
        command: &goldenscript::Command,
        _context: &goldenscript::Context,
    ) -> Result<String> {
        if command.name == "cluster" {
            return self.new_cluster(command);
        }
        let c = self
            .cluster
            .as_mut()
            .ok_or("no cluster yet: start with `cluster`")?;
        let mut args = command.consume_args();
        let mut out = String::new();
        match command.name.as_str() {
            "elect" => {
                let start = c.now;
                run_until(c, &Condition::AnyLeader, MAX_TICKS)?;
                while c.deliver_next() {}
                let leader = c.leader().ok_or("no leader")?;
                write_changes(c, &mut out);
                writeln!(out, "n{leader} leads after {} ticks", c.now - start)?;
            }
            "tick" => {
                let n: u64 = args.take_key("n").map_or(Ok(1), str::parse)?;
                for _ in 0..n {
                    c.tick();
                }
                write_events(c, &mut out);
            }
            "deliver" => {
                let in_flight = c.in_flight();
                for _ in 0..in_flight {
                    c.deliver_next();
                }
                write_events(c, &mut out);
            }
            "stabilize" => {
                while c.deliver_next() {}
                write_events(c, &mut out);
            }
            "run" => {
                let ticks: u64 = args.take_key("ticks").ok_or("ticks=N")?.parse()?;
                c.run(ticks);
                write_changes(c, &mut out);
            }
            "run_until" => {
                let max: u64 = args.take_key("max").map_or(Ok(MAX_TICKS), str::parse)?;
                let (key, value) = args.next_key().ok_or("a condition")?;
                let cond = Condition::parse(key, value)?;
                let start = c.now;
                run_until(c, &cond, max)?;
                write_changes(c, &mut out);
                writeln!(out, "after {} ticks", c.now - start)?;
            }
            "propose" => {
                let id = member(args.next_pos())?;
                let n: u32 = args.take_key("n").map_or(Ok(1), str::parse)?;
                for _ in 0..n {
                    if c.propose(id).is_none() {
                        writeln!(out, "n{id} refused the proposal")?;
                    }
                }
                write_events(c, &mut out);
            }
            "read" => {
                c.read(member(args.next_pos())?);
                write_events(c, &mut out);
            }
            "transfer" => {
                let id = member(args.next_pos())?;
                let to = member(args.take_key("to"))?;
                c.transfer(id, to)?;
                write_events(c, &mut out);
            }
            "crash" => {
                let id = member(args.next_pos())?;
                let silent = args.next_pos() == Some("silent");
                c.crash(id, !silent);
                writeln!(out, "n{id} crashed")?;
                write_events(c, &mut out);
            }
            "restart" | "wipe" => {
                let id = member(args.next_pos())?;
                if command.name == "wipe" {
                    c.wipe(id);
                } else {
                    c.restart(id);
                }
                writeln!(out, "{}", describe_member(c, id))?;
                write_events(c, &mut out);
            }
            "isolate" => c.isolate(member(args.next_pos())?),
            "block" => {
                let from = member(args.next_pos())?;
                c.block(from, member(args.next_pos())?);
            }
            "heal" => c.heal(),
            "compact" => {
                let id = member(args.next_pos())?;
                c.compact(id);
                writeln!(out, "{}", describe_member(c, id))?;
            }
            "step" => {
                let msg = hand_made_message(&mut args)?;
                let to = msg.to;
                writeln!(out, "{} (stepped into n{to})", trace::message(&msg))?;
                c.step_directly(msg);
                write_events(c, &mut out);
            }
            "status" => {
                for id in 0..c.size() {
                    writeln!(out, "{}", describe_member(c, id))?;
                }
                writeln!(out, "reads served: {}", c.reads_served)?;
            }
            "assert" => {
                while let Some((key, value)) = args.next_key() {
                    check(c, key, value)?;
                }
            }
            name => return Err(format!("unknown command {name}").into()),
        }
        args.reject_next()?;
        Ok(out)
    }
}

impl Runner {
    fn new_cluster(&mut self, command: &goldenscript::Command) -> Result<String> {
        let mut args = command.consume_args();
        let voters: u32 = args.take_key("voters").ok_or("voters=N")?.parse()?;
        let seed: u64 = args.take_key("seed").map_or(Ok(42), str::parse)?;
        let mut cfg = Config::new(0, voters);
        if let Some(max) = args.take_key("max_append_entries") {
            cfg.max_append_entries = max.parse()?;
        }
        if let Some(jitter) = args.take_key("jitter") {
            cfg.election_jitter_ticks = jitter.parse()?;
        }
        args.reject_next()?;
        let mut c = Cluster::with_config(cfg, seed);
        c.in_order = true;
        c.recorder = Some(Recorder::default());
        for id in 0..voters {
            c.record_changes(id);
        }
        let mut out = String::new();
        for id in 0..voters {
            writeln!(out, "{}", describe_member(&c, id))?;
        }
        // The first Ready of each member was handled before recording
        // began: report what is in flight.
        for msg in c.messages_in_flight() {
            writeln!(out, "{}", trace::message(&msg))?;
        }
        self.cluster = Some(c);
        Ok(out)
    }
}

fn member(arg: Option<&str>) -> Result<NodeId> {
    Ok(arg.ok_or("a member id")?.parse()?)
}

/// Ticks and delivers one message at a time until `cond` holds.
fn run_until(c: &mut Cluster, cond: &Condition, max_ticks: u64) -> Result<()> {
    let start = c.now;
    while !cond.holds(c)? {
        if c.now - start >= max_ticks {
            return Err(format!("not within {max_ticks} ticks").into());
        }
        if !c.deliver_next() {
            c.tick();
        }
    }
    Ok(())
}

/// `step FROM TO term=T vote last=I@T [transfer]` or
/// `step FROM TO term=T heartbeat commit=C`.
fn hand_made_message(args: &mut goldenscript::ArgumentConsumer) -> Result<Message> {
    let from = member(args.next_pos())?;
    let to = member(args.next_pos())?;
    let term: Term = match args.take_key("term").ok_or("term=T")? {
        "max" => Term::MAX,
        t => t.parse()?,
    };
    let body = match args.next_pos().ok_or("a message kind")? {
        "vote" => {
            let (last_index, last_term) = args
                .take_key("last")
                .and_then(|l| l.split_once('@'))
                .ok_or("last=INDEX@TERM")?;
            Body::Vote {
                last_index: last_index.parse()?,
                last_term: last_term.parse()?,
                transfer: args.next_pos() == Some("transfer"),
            }
        }
        "heartbeat" => {
            let commit: Index = args.take_key("commit").ok_or("commit=C")?.parse()?;
            Body::Heartbeat {
                commit,
                leader_commit: commit,
                read_round: 0,
            }
        }
        kind => return Err(format!("cannot make a {kind} message").into()),
    };
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

fn check(c: &Cluster, key: &str, value: &str) -> Result<()> {
    if Condition::parse(key, value)?.holds(c)? {
        return Ok(());
    }
    let members: Vec<String> = (0..c.size()).map(|id| describe_member(c, id)).collect();
    Err(format!("{key}={value} does not hold:\n{}", members.join("\n")).into())
}

/// `n0 leader term=2 vote=n0 voting=enabled log=1..5@2 commit=5 applied=5`
fn describe_member(c: &Cluster, id: NodeId) -> String {
    if !c.is_up(id) {
        return format!("n{id} down");
    }
    let n = c.core(id);
    let log = n.log();
    let snapshot = log.snapshot();
    let snapshot = if snapshot.index > 0 {
        format!(" snapshot={}@{}", snapshot.index, snapshot.term)
    } else {
        String::new()
    };
    format!(
        "n{id} {} term={} vote={} voting={} last={}@{} commit={} applied={}{snapshot}",
        trace::role(n.role()),
        n.term(),
        n.vote().map_or("none".into(), |v| format!("n{v}")),
        trace::voting(n.voting()),
        log.last_index(),
        log.last_term(),
        log.commit(),
        c.nodes[id as usize].sm.index,
    )
}

/// Writes every event since the last command.
fn write_events(c: &mut Cluster, out: &mut String) {
    for event in take_events(c) {
        let _ = match event {
            Event::Sent(line) => writeln!(out, "{line}"),
            Event::Dropped(line) => writeln!(out, "✗ {line}"),
            Event::Changed(line) => writeln!(out, "» {line}"),
        };
    }
}

/// Writes the changes since the last command, and how many messages.
fn write_changes(c: &mut Cluster, out: &mut String) {
    let events = take_events(c);
    let (mut sent, mut dropped) = (0, 0);
    for event in events {
        match event {
            Event::Sent(_) => sent += 1,
            Event::Dropped(_) => dropped += 1,
            Event::Changed(line) => {
                let _ = writeln!(out, "» {line}");
            }
        }
    }
    let _ = writeln!(out, "({sent} messages sent, {dropped} dropped)");
}

fn take_events(c: &mut Cluster) -> Vec<Event> {
    c.recorder
        .as_mut()
        .map(|r| std::mem::take(&mut r.events))
        .unwrap_or_default()
}

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() -> std::io::Result<()> {
            goldenscript::run(
                &mut Runner::default(),
                concat!("tests/scripts/", stringify!($name)),
            )
        }
    )*};
}

scripts!(
    new_cluster_elects_ordinal_zero,
    silent_leader_failure_elects_next_ordinal,
    connection_reset_triggers_fast_failover,
    pre_vote_keeps_an_isolated_member_from_raising_its_term,
    followers_that_hear_a_leader_ignore_vote_requests,
    leadership_transfer_hands_over_to_the_target,
    priority_returns_leadership_to_ordinal_zero,
    isolated_leader_steps_down,
    member_with_lost_volume_votes_only_after_catching_up,
    member_with_lost_volume_waits_for_every_peer,
    lagging_member_is_brought_up_by_snapshot,
    read_index_needs_a_quorum,
    lost_volume_does_not_vote_before_holding_what_it_acknowledged,
    the_last_term_is_never_wrapped,
);
