//! One Raft member: its state, the dispatch of inputs to the role it has,
//! and the Ready it hands the driver. See the module documentation of
//! [`crate::raft`] for the rules it follows and why they are safe; the rules
//! themselves live by concern in `election.rs`, `replication.rs`,
//! `reads.rs`, `rejoin.rs` and `transfer.rs`.

use std::collections::BTreeMap;

use super::config::{Config, Restored};
use super::election::ElectionTimer;
use super::log::RaftLog;
use super::membership::{Membership, MAX_MEMBERS};
use super::mutations::mutated;
use super::progress::Progress;
use super::rejoin::Rejoin;
use super::replication::LeaderState;
use super::types::*;
use super::validate::{check_body, Malformed};

/// What this member is in its term, with the state only that role has: a
/// field's owner is its type, not a comment.
#[derive(Debug)]
pub(super) enum RoleState {
    /// Following a leader, or waiting for one.
    Follower,
    /// Asking whether a quorum would vote for it; the answers so far.
    PreCandidate { votes: BTreeMap<NodeId, bool> },
    /// Asking for votes in its term; the answers so far.
    Candidate { votes: BTreeMap<NodeId, bool> },
    /// Leading its term.
    Leader(Box<LeaderState>),
}

impl RoleState {
    pub(super) fn role(&self) -> Role {
        match self {
            RoleState::Follower => Role::Follower,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Candidate { .. } => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }
}

/// What the core has for the driver's next Ready, besides the log.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    pub(super) msgs: Vec<Message>,
    pub(super) send_snapshots: Vec<NodeId>,
    pub(super) read_states: Vec<ReadState>,
    pub(super) dropped_reads: Vec<u64>,
}

impl Outbox {
    /// Queues a message from `from`.
    pub(super) fn send(&mut self, from: NodeId, to: NodeId, term: Term, body: Body) {
        self.msgs.push(Message {
            from,
            to,
            term,
            body,
        });
    }
}

/// One Raft member: a deterministic state machine with no I/O of its own.
#[derive(Debug)]
pub struct RaftCore {
    pub(super) cfg: Config,
    pub(super) term: Term,
    pub(super) vote: Option<NodeId>,
    pub(super) voting: Voting,
    pub(super) log: RaftLog,
    pub(super) role: RoleState,
    /// The leader this member knows of in its term (itself when leading).
    pub(super) leader: Option<NodeId>,
    /// The highest commit index a leader has announced to this member
    /// (uncapped: what the leader itself has committed).
    pub(super) leader_commit: Index,
    pub(super) timer: ElectionTimer,
    /// The state of a member whose data dir is new (a lost volume).
    pub(super) rejoin: Rejoin,
    pub(super) out: Outbox,
    /// The hard state the driver last persisted (or was handed).
    pub(super) last_hard_state: HardState,
    /// The last index handed out in a Ready, made stable by `advance`.
    pub(super) unadvanced_stable: Option<Index>,
}

impl RaftCore {
    /// Restores a member from its durable state; `seed` drives the election
    /// jitter.
    pub fn new(cfg: Config, restored: Restored, seed: u64) -> Self {
        assert!(
            cfg.voters >= 1 && cfg.id < MAX_MEMBERS,
            "id {} or bootstrap voters {} out of range",
            cfg.id,
            cfg.voters
        );
        let log = RaftLog::restore(restored.snapshot, restored.entries, restored.applied);
        let hs = restored.hard_state;
        let mut node = RaftCore {
            term: hs.term,
            vote: hs.vote,
            voting: hs.voting,
            log,
            role: RoleState::Follower,
            leader: None,
            leader_commit: 0,
            timer: ElectionTimer::new(seed ^ (u64::from(cfg.id) << 32)),
            rejoin: Rejoin::default(),
            out: Outbox::default(),
            last_hard_state: hs,
            unadvanced_stable: None,
            cfg,
        };
        node.reset_election_timer();
        if node.voting == Voting::AwaitingPeers && mutated!(node, LostVolumeVotesAtOnce) {
            node.voting = Voting::Enabled;
        }
        if node.voting == Voting::AwaitingPeers {
            node.send_rejoin_probes();
            node.check_rejoin_probes_complete();
        }
        node
    }

    // ----- accessors -----

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.cfg.id
    }
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The configuration in force: the last config entry in the log,
    /// committed or not (a change takes effect when appended), else the
    /// snapshot's, else the bootstrap voters.
    pub fn membership(&self) -> Membership {
        let m = if mutated!(self, ConfigAtCommit) {
            self.log.membership_at(self.log.commit())
        } else {
            self.log.membership()
        };
        if m.is_empty() {
            Membership::first(self.cfg.voters)
        } else {
            m
        }
    }
    /// Whether this member votes in the configuration in force.
    pub fn is_voter(&self) -> bool {
        self.membership().is_voter(self.cfg.id)
    }
    /// The other voters, in ordinal order (so runs repeat).
    pub(super) fn other_voters(&self) -> Vec<NodeId> {
        let me = self.cfg.id;
        self.membership().voters().filter(|&p| p != me).collect()
    }
    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// The vote in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }
    /// Whether this member may vote.
    pub fn voting(&self) -> Voting {
        self.voting
    }
    /// The current role.
    pub fn role(&self) -> Role {
        self.role.role()
    }
    /// The leader this member knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }
    /// The log.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }
    /// The hard state as it is now (durable once the next Ready is handled).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            voting: self.voting,
        }
    }
    /// A follower's progress, when leading.
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        match &self.role {
            RoleState::Leader(l) => l.progress.get(&peer),
            _ => None,
        }
    }
    /// The highest commit index known to be the leader's: this member's own
    /// when it leads, otherwise the highest a leader announced to it. A
    /// member whose applied index is far below it is behind, whatever its
    /// own commit index says (a follower's commit index is capped at what it
    /// holds, so an empty member has a commit index of 0).
    pub fn leader_commit(&self) -> Index {
        match &self.role {
            RoleState::Leader(_) => self.log.commit(),
            _ => self.leader_commit,
        }
    }
    /// The member leadership is being handed to.
    pub fn transferee(&self) -> Option<NodeId> {
        match &self.role {
            RoleState::Leader(l) => l.transferee.map(|(to, _)| to),
            _ => None,
        }
    }

    /// Queues a message from this member.
    pub(super) fn send(&mut self, to: NodeId, term: Term, body: Body) {
        self.out.send(self.cfg.id, to, term, body);
    }

    // ----- inputs -----

    /// Advances the clock by one tick.
    pub fn tick(&mut self) {
        self.tick_rejoin();
        match self.role {
            RoleState::Leader(_) => self.tick_leader(),
            _ => self.tick_election(),
        }
    }

    /// Handles a message from a peer: the term check first, then the role
    /// this member has (as etcd's `Step`, then `stepLeader`,
    /// `stepCandidate`, `stepFollower`). A malformed message is dropped;
    /// [`RaftCore::try_step`] says why.
    pub fn step(&mut self, msg: Message) {
        let _ = self.try_step(msg);
    }

    /// [`RaftCore::step`], returning why a message was refused: one that no
    /// correct peer sends (see [`Malformed`]) changes nothing here, not even
    /// the term, since nothing it says can be trusted. The driver logs the
    /// refusal with the peer's ordinal.
    pub fn try_step(&mut self, msg: Message) -> Result<(), Malformed> {
        if msg.to != self.cfg.id {
            return Err(Malformed::Misdirected(msg.to));
        }
        if msg.from >= MAX_MEMBERS {
            return Err(Malformed::SenderOutOfRange(msg.from));
        }
        if msg.from == self.cfg.id {
            return Err(Malformed::FromSelf);
        }
        check_body(msg.term, &msg.body)?;
        // Probes of a member with a lost volume are answered in any term and
        // role: they only ask for the term and whether the log is empty.
        match msg.body {
            Body::RejoinProbe => {
                self.on_rejoin_probe(msg.from);
                return Ok(());
            }
            Body::RejoinProbeResponse { empty_log, members } => {
                self.on_rejoin_probe_response(msg.from, msg.term, empty_log, members);
                return Ok(());
            }
            Body::PreVote { .. } | Body::Vote { .. } if !self.may_grant_votes_to(msg.from) => {
                // A removed member (or a learner) never disrupts: its
                // requests raise no term here and win no vote.
                let body = match msg.body {
                    Body::PreVote { .. } => Body::PreVoteResponse { granted: false },
                    _ => Body::VoteResponse { granted: false },
                };
                let term = self.term;
                self.send(msg.from, term, body);
                return Ok(());
            }
            _ => {}
        }
        let from_a_leader = matches!(
            msg.body,
            Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. }
        );
        if from_a_leader && msg.term == self.term && matches!(self.role, RoleState::Leader(_)) {
            // Another leader in our term: impossible in Raft (the simulation
            // checks it never happens). A message claiming it is a bug or a
            // misdirected peer; it must not bring this member down.
            return Err(Malformed::SecondLeader(msg.term));
        }
        if !self.check_term(&msg) {
            return Ok(());
        }
        match msg.body {
            Body::PreVote {
                last_index,
                last_term,
            } => self.on_pre_vote(msg.from, msg.term, last_index, last_term),
            Body::Vote {
                last_index,
                last_term,
                transfer: _,
            } => self.on_vote(msg.from, last_index, last_term),
            body => match self.role {
                RoleState::Leader(_) => return self.step_leader(msg.from, body),
                RoleState::PreCandidate { .. } | RoleState::Candidate { .. } => {
                    self.step_candidate(msg.from, msg.term, body)
                }
                RoleState::Follower => self.step_follower(msg.from, body),
            },
        }
        Ok(())
    }

    /// Raft's term rules: a higher term makes this member a follower of it
    /// (or is ignored: a pre-vote changes nothing, a vote request under a
    /// lease is not needed); a lower one is answered with ours and dropped.
    /// Returns whether to go on handling the message.
    fn check_term(&mut self, msg: &Message) -> bool {
        if msg.term > self.term {
            match &msg.body {
                // A pre-vote carries the term the sender would campaign in;
                // it changes nothing here.
                Body::PreVote { .. } | Body::PreVoteResponse { granted: true } => {}
                Body::Vote {
                    transfer: false, ..
                } if self.in_lease() => {
                    // Leader stickiness: we hear a leader, so a candidate
                    // cannot need our vote for the cluster to make progress.
                    return false;
                }
                Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                    self.become_follower(msg.term, Some(msg.from));
                }
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.term {
            let term = self.term;
            match msg.body {
                // Tell a stale leader or candidate about the newer term.
                Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                    let voter = self.voting == Voting::Enabled;
                    self.send(
                        msg.from,
                        term,
                        Body::HeartbeatResponse {
                            read_round: 0,
                            voter,
                        },
                    );
                }
                Body::PreVote { .. } => {
                    self.send(msg.from, term, Body::PreVoteResponse { granted: false })
                }
                Body::Vote { .. } => {
                    self.send(msg.from, term, Body::VoteResponse { granted: false })
                }
                _ => {}
            }
            return false;
        }
        true
    }

    /// A candidate (or pre-candidate) in its term: it counts answers, and
    /// follows a leader of its term as soon as one speaks.
    fn step_candidate(&mut self, from: NodeId, term: Term, body: Body) {
        match body {
            Body::PreVoteResponse { granted } => self.on_pre_vote_response(from, term, granted),
            Body::VoteResponse { granted } => self.on_vote_response(from, granted),
            Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                self.follow(from);
                self.step_follower(from, body);
            }
            _ => {}
        }
    }

    /// A follower: it takes the leader's entries, commit index and
    /// snapshots, and campaigns when the leader hands over.
    fn step_follower(&mut self, from: NodeId, body: Body) {
        match body {
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                // `try_step` checked that the entries follow prev_index.
                self.follow(from);
                self.on_append(from, prev_index, prev_term, &entries, commit);
            }
            Body::Heartbeat {
                commit,
                leader_commit,
                read_round,
            } => {
                self.follow(from);
                self.on_heartbeat(from, commit, leader_commit, read_round);
            }
            Body::Snapshot { meta } => {
                self.follow(from);
                self.on_snapshot(from, meta);
            }
            Body::TimeoutNow => self.on_timeout_now(from),
            _ => {}
        }
    }

    /// A leader: its followers' answers (refused if they speak of entries
    /// or read rounds this leader never had).
    fn step_leader(&mut self, from: NodeId, body: Body) -> Result<(), Malformed> {
        match body {
            Body::AppendResponse { result, voter } => self.on_append_response(from, result, voter),
            Body::HeartbeatResponse { read_round, voter } => {
                self.on_heartbeat_response(from, read_round, voter)
            }
            _ => Ok(()),
        }
    }

    /// The transport lost its connection to `peer`: fast failure detection
    /// for a follower whose leader it was, a reprobe for a leader.
    pub fn peer_disconnected(&mut self, peer: NodeId) {
        match &mut self.role {
            RoleState::Follower => self.leader_disconnected(peer),
            RoleState::Leader(l) => l.peer_disconnected(peer),
            _ => {}
        }
    }

    /// The state machine has applied and durably stored everything up to
    /// `index`: the log before it may be dropped.
    pub fn compact(&mut self, index: Index) {
        let index = index.min(self.log.handed_out()).min(self.log.stable());
        self.log.compact(index);
    }
}
