//! Tests of exactly what the core emits: for each rule in the module
//! documentation, the messages and the rest of the Ready that
//! [`RaftCore::take_ready`] returns, as openraft's engine tests assert the
//! commands its engine outputs. The members here are driven by hand, one
//! input at a time; the scenarios with whole clusters are the golden scripts
//! in `tests/scripts/`.

mod election;
mod malformed;
mod membership;
mod reads;
mod rejoin;
mod replication;
mod transfer;

use bytes::Bytes;

use super::*;

/// Member `id` of `voters` with default timing and no election jitter, so
/// that tick counts are exact.
fn config(id: NodeId, voters: u32) -> Config {
    let mut cfg = Config::new(id, voters);
    cfg.election_jitter_ticks = 0;
    cfg
}

/// A member that may vote, restored in `term` (no vote) with a log whose
/// entry `i + 1` has term `log_terms[i]`, applied (and so committed) up to
/// `applied`.
fn member_with(cfg: Config, term: Term, log_terms: &[Term], applied: Index) -> RaftCore {
    let entries = log_terms
        .iter()
        .enumerate()
        .map(|(i, &t)| entry(i as Index + 1, t))
        .collect();
    let restored = Restored {
        hard_state: HardState {
            term,
            vote: None,
            voting: Voting::Enabled,
        },
        snapshot: SnapshotMeta::default(),
        entries,
        applied,
    };
    RaftCore::new(cfg, restored, 7)
}

/// [`member_with`] the default configuration, nothing applied.
fn member(id: NodeId, voters: u32, term: Term, log_terms: &[Term]) -> RaftCore {
    member_with(config(id, voters), term, log_terms, 0)
}

/// A normal entry whose data names its index.
fn entry(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Normal,
        data: Bytes::from(format!("e{index}")),
    }
}

fn noop(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Noop,
        data: Bytes::new(),
    }
}

/// The first entry of a new leader whose log records no configuration yet:
/// the bootstrap configuration (three voters here) in place of the no-op.
fn bootstrap_config(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        kind: EntryKind::Config,
        data: Membership::first(3).encode(),
    }
}

fn msg(from: NodeId, to: NodeId, term: Term, body: Body) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Takes the Ready and reports it durable, as a driver does.
fn ready(n: &mut RaftCore) -> Ready {
    let rd = n.take_ready();
    n.advance();
    rd
}

/// Steps `n` with a message from `from` in `term` and returns its Ready.
fn step(n: &mut RaftCore, from: NodeId, term: Term, body: Body) -> Ready {
    let to = n.id();
    n.step(msg(from, to, term, body));
    ready(n)
}

/// Ticks `n` until it has output, at most `max` ticks; returns how many
/// ticks that took and the Ready.
fn tick_until_output(n: &mut RaftCore, max: u32) -> (u32, Ready) {
    for ticks in 1..=max {
        n.tick();
        if n.has_ready() {
            return (ticks, ready(n));
        }
    }
    panic!("no output within {max} ticks");
}

/// Ticks `n` `count` times and returns the Ready after them.
fn tick_n(n: &mut RaftCore, count: u32) -> Ready {
    for _ in 0..count {
        n.tick();
    }
    ready(n)
}

/// Member `id` of `voters` leading `term`, won over a log of `log_terms`
/// (restored in `term - 1`): it has appended its no-op and sent it, and no
/// follower has answered yet.
fn new_leader(id: NodeId, voters: u32, term: Term, log_terms: &[Term]) -> RaftCore {
    let n = member(id, voters, term - 1, log_terms);
    elect(n, term, (id + 1) % voters)
}

/// `n` elected in `term` with `granter`'s pre-vote and vote.
fn elect(mut n: RaftCore, term: Term, granter: NodeId) -> RaftCore {
    let id = n.id();
    n.tick_until_campaign();
    n.step(msg(
        granter,
        id,
        term,
        Body::PreVoteResponse { granted: true },
    ));
    ready(&mut n);
    n.step(msg(granter, id, term, Body::VoteResponse { granted: true }));
    ready(&mut n);
    assert_eq!((n.role(), n.term()), (Role::Leader, term));
    n
}

/// [`new_leader`] whose followers have all acknowledged its no-op (so its
/// term has committed) and said they may vote.
fn leader(id: NodeId, voters: u32, term: Term, log_terms: &[Term]) -> RaftCore {
    let mut n = new_leader(id, voters, term, log_terms);
    let last = n.log().last_index();
    for peer in (0..voters).filter(|&p| p != id) {
        n.step(msg(peer, id, term, accepted(last)));
    }
    ready(&mut n);
    assert_eq!(n.log().commit(), last);
    n
}

fn accepted(match_index: Index) -> Body {
    Body::AppendResponse {
        result: AppendResult::Accepted { match_index },
        voter: true,
    }
}

fn heartbeat_response(read_round: u64) -> Body {
    Body::HeartbeatResponse {
        read_round,
        voter: true,
    }
}

impl RaftCore {
    /// Ticks until the election timer fires (a pre-vote or a campaign).
    fn tick_until_campaign(&mut self) {
        for _ in 0..10_000 {
            self.tick();
            if self.role() != Role::Follower {
                return;
            }
        }
        panic!("member {} never campaigned", self.id());
    }
}
