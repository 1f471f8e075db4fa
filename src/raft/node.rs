//! The Raft state machine of one member. See the module documentation of
//! [`crate::raft`] for the rules it follows and why they are safe.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::log::RaftLog;
use super::mutations::mutated;
use super::progress::{Progress, ReplicationState};
use super::rng::SplitMix64;
use super::types::*;

/// The timing and flow-control settings of the core, in ticks and counts.
#[derive(Clone, Debug)]
pub struct Config {
    /// This member's ordinal.
    pub id: NodeId,
    /// The number of voting members; their ids are `0..voters`.
    pub voters: u32,
    /// A leader sends a heartbeat every this many ticks.
    pub heartbeat_ticks: u32,
    /// The base election timeout. It is also the leader lease: a member that
    /// heard from a leader within it ignores vote requests, and a leader that
    /// heard from no quorum within it steps down.
    pub election_ticks: u32,
    /// Added to the election timeout per ordinal, so the lowest live ordinal
    /// campaigns first.
    pub election_stagger_ticks: u32,
    /// At most this much random extra timeout, so equal timeouts separate.
    pub election_jitter_ticks: u32,
    /// When the connection to the leader is reset (its process died), a
    /// member campaigns after `1 + id * fast_election_stagger_ticks` ticks
    /// instead of a whole election timeout.
    pub fast_election_stagger_ticks: u32,
    /// Whether a leader hands leadership to a lower ordinal that is caught up.
    pub priority_return: bool,
    /// How long a lower ordinal must stay caught up and answering before the
    /// leader hands over to it.
    pub priority_return_ticks: u32,
    /// The most entries in one append.
    pub max_append_entries: usize,
    /// About the most bytes of entry data in one append.
    pub max_append_bytes: usize,
    /// The most appends in flight to one follower.
    pub max_inflight: usize,
    /// One safety rule switched off, for the tests that prove the
    /// simulation notices.
    #[cfg(feature = "testing")]
    pub mutation: Option<super::mutations::Mutation>,
}

impl Config {
    /// The defaults for member `id` of `voters`, with 10 ms ticks in mind:
    /// heartbeat 50 ms, election 300 ms + 100 ms per ordinal + up to 50 ms.
    pub fn new(id: NodeId, voters: u32) -> Self {
        Config {
            id,
            voters,
            heartbeat_ticks: 5,
            election_ticks: 30,
            election_stagger_ticks: 10,
            election_jitter_ticks: 5,
            fast_election_stagger_ticks: 3,
            priority_return: true,
            priority_return_ticks: 30,
            max_append_entries: 1024,
            max_append_bytes: 4 << 20,
            max_inflight: 64,
            #[cfg(feature = "testing")]
            mutation: None,
        }
    }

    fn majority(&self) -> usize {
        self.voters as usize / 2 + 1
    }
}

/// How far (in entries) a lower-ordinal follower may trail the commit index
/// and still count as caught up for priority return.
const PRIORITY_LAG_ALLOWANCE: Index = 256;

/// What the core is restored from at start-up.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The persisted hard state ([`HardState::fresh`] for a new data dir).
    pub hard_state: HardState,
    /// The persisted snapshot point.
    pub snapshot: SnapshotMeta,
    /// The persisted entries after the snapshot.
    pub entries: Vec<Entry>,
    /// The index the state machine has applied (at least the snapshot's).
    pub applied: Index,
}

impl Restored {
    /// A new data dir.
    pub fn fresh() -> Self {
        Restored {
            hard_state: HardState::fresh(),
            snapshot: SnapshotMeta::default(),
            entries: Vec::new(),
            applied: 0,
        }
    }
}

/// A read waiting for a quorum to confirm the leader.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    id: u64,
    index: Index,
    round: u64,
}

/// One Raft member: a deterministic state machine with no I/O of its own.
#[derive(Debug)]
pub struct RaftNode {
    cfg: Config,
    term: Term,
    vote: Option<NodeId>,
    voting: Voting,
    log: RaftLog,
    role: Role,
    leader: Option<NodeId>,
    /// Pre-vote or vote answers, while campaigning.
    votes: BTreeMap<NodeId, bool>,
    /// Followers' progress, while leading.
    progress: BTreeMap<NodeId, Progress>,
    election_elapsed: u32,
    election_timeout: u32,
    heartbeat_elapsed: u32,
    quorum_elapsed: u32,
    /// The member leadership is being handed to, and for how long.
    transferee: Option<(NodeId, u32)>,
    /// Replies to our fresh probes (term, empty log), while awaiting peers.
    fresh_replies: BTreeMap<NodeId, (Term, bool)>,
    /// While awaiting a leader: the highest commit index a leader of a
    /// recent enough term told us in an append. Our log must reach it before
    /// we vote: it covers every entry committed with our help before the
    /// volume was lost.
    fresh_catch_up: Option<Index>,
    /// The highest commit index a leader has announced to this member
    /// (uncapped: what the leader itself has committed).
    leader_commit: Index,
    /// Ticks left in fast-failover mode (the leader's connection reset):
    /// campaign after a short, ordinal-staggered delay, and leave the field to
    /// a lower ordinal with a log at least as up to date.
    fast_election: u32,
    probe_elapsed: u32,
    read_round: u64,
    reads_unassigned: Vec<u64>,
    reads_pending: VecDeque<PendingRead>,
    /// New entries or commit to send to followers.
    replicate_pending: bool,
    rng: SplitMix64,
    /// The hard state the driver last persisted (or was handed).
    last_hard_state: HardState,
    /// The last index handed out in a Ready, made stable by `advance`.
    unadvanced_stable: Option<Index>,
    msgs: Vec<Message>,
    send_snapshots: Vec<NodeId>,
    read_states: Vec<ReadState>,
    dropped_reads: Vec<u64>,
}

impl RaftNode {
    /// Restores a member from its durable state; `seed` drives the election
    /// jitter.
    pub fn new(cfg: Config, restored: Restored, seed: u64) -> Self {
        assert!(
            cfg.voters >= 1 && cfg.id < cfg.voters,
            "id {} outside 0..{}",
            cfg.id,
            cfg.voters
        );
        let log = RaftLog::restore(restored.snapshot, restored.entries, restored.applied);
        let hs = restored.hard_state;
        let mut node = RaftNode {
            term: hs.term,
            vote: hs.vote,
            voting: hs.voting,
            log,
            role: Role::Follower,
            leader: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            election_elapsed: 0,
            election_timeout: 0,
            heartbeat_elapsed: 0,
            quorum_elapsed: 0,
            transferee: None,
            fresh_replies: BTreeMap::new(),
            fresh_catch_up: None,
            leader_commit: 0,
            fast_election: 0,
            probe_elapsed: 0,
            read_round: 0,
            reads_unassigned: Vec::new(),
            reads_pending: VecDeque::new(),
            replicate_pending: false,
            rng: SplitMix64::new(seed ^ (u64::from(cfg.id) << 32)),
            last_hard_state: hs,
            unadvanced_stable: None,
            msgs: Vec::new(),
            send_snapshots: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            cfg,
        };
        node.reset_election_timeout();
        if node.voting == Voting::AwaitingPeers && mutated!(node, LostVolumeVotesAtOnce) {
            node.voting = Voting::Enabled;
        }
        if node.voting == Voting::AwaitingPeers {
            node.send_fresh_probes();
            node.check_fresh_probes_complete();
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
        self.role
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
        self.progress.get(&peer)
    }
    /// The highest commit index known to be the leader's: this member's own
    /// when it leads, otherwise the highest a leader announced to it. A
    /// member whose applied index is far below it is behind, whatever its
    /// own commit index says (a follower's commit index is capped at what it
    /// holds, so an empty member has a commit index of 0).
    pub fn leader_commit(&self) -> Index {
        if self.role == Role::Leader {
            self.log.commit()
        } else {
            self.leader_commit
        }
    }

    /// The member leadership is being handed to.
    pub fn transferee(&self) -> Option<NodeId> {
        self.transferee.map(|(to, _)| to)
    }

    fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        (0..self.cfg.voters).filter(move |&p| p != self.cfg.id)
    }

    fn send(&mut self, to: NodeId, term: Term, body: Body) {
        self.msgs.push(Message {
            from: self.cfg.id,
            to,
            term,
            body,
        });
    }

    // ----- inputs -----

    /// Advances the clock by one tick.
    pub fn tick(&mut self) {
        if self.voting == Voting::AwaitingPeers {
            self.probe_elapsed += 1;
            if self.probe_elapsed >= self.cfg.heartbeat_ticks {
                self.probe_elapsed = 0;
                self.send_fresh_probes();
            }
        }
        match self.role {
            Role::Leader => self.tick_leader(),
            _ => {
                self.election_elapsed += 1;
                self.fast_election = self.fast_election.saturating_sub(1);
                if self.voting == Voting::Enabled && self.election_elapsed >= self.election_timeout
                {
                    self.pre_campaign();
                }
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        self.quorum_elapsed += 1;
        if self.quorum_elapsed >= self.cfg.election_ticks {
            self.quorum_elapsed = 0;
            let active = 1 + self.progress.values().filter(|p| p.recent_active).count();
            if active < self.cfg.majority() {
                // Cut off from a quorum: stop acting as leader so clients go
                // elsewhere, rather than wait for a higher term to arrive.
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
            for pr in self.progress.values_mut() {
                pr.recent_active = false;
            }
        }
        if let Some((to, elapsed)) = self.transferee {
            if elapsed + 1 >= self.cfg.election_ticks {
                self.transferee = None;
            } else {
                self.transferee = Some((to, elapsed + 1));
            }
        }
        let commit = self.log.commit();
        let mut reprobe = Vec::new();
        for (&peer, pr) in self.progress.iter_mut() {
            pr.silent_ticks = pr.silent_ticks.saturating_add(1);
            if pr.state == ReplicationState::Replicate && pr.has_inflight() {
                pr.stalled_ticks += 1;
                if pr.stalled_ticks >= self.cfg.election_ticks {
                    // Appends were lost: find the match point again.
                    reprobe.push(peer);
                }
            }
            // Under a steady write load a healthy follower's match trails the
            // commit index by a few entries at any instant; the handover
            // itself brings it fully up to date before TimeoutNow.
            let healthy = pr.voter
                && pr.state == ReplicationState::Replicate
                && pr.match_index + PRIORITY_LAG_ALLOWANCE >= commit
                && pr.silent_ticks <= 2 * self.cfg.heartbeat_ticks;
            pr.healthy_ticks = if healthy {
                pr.healthy_ticks.saturating_add(1)
            } else {
                0
            };
        }
        for peer in reprobe {
            if let Some(pr) = self.progress.get_mut(&peer) {
                let next = pr.match_index + 1;
                pr.become_probe(next);
            }
            self.maybe_send_append(peer);
        }
        self.maybe_return_priority();
    }

    /// Priority return: hand leadership to the lowest ordinal below ours that
    /// has been caught up and answering for a while.
    fn maybe_return_priority(&mut self) {
        if !self.cfg.priority_return || self.transferee.is_some() {
            return;
        }
        let target = self
            .progress
            .iter()
            .filter(|(&p, pr)| {
                p < self.cfg.id && pr.healthy_ticks >= self.cfg.priority_return_ticks
            })
            .map(|(&p, _)| p)
            .next();
        if let Some(to) = target {
            // Cannot fail: we lead, `to` is a member and a voter.
            let _ = self.transfer_leadership(to);
        }
    }

    /// Proposes a command. Returns its index and term; it is committed when an
    /// entry with that index and term is handed out in `Ready::committed`.
    pub fn propose(&mut self, data: Bytes) -> Result<(Index, Term), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transferee.is_some() {
            return Err(ProposeError::Transferring);
        }
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            index,
            term: self.term,
            kind: EntryKind::Normal,
            data,
        });
        self.replicate_pending = true;
        Ok((index, self.term))
    }

    /// Asks for a linearizable read point. The answer comes in
    /// `Ready::read_states` (or `dropped_reads` when this member cannot
    /// confirm its leadership).
    pub fn read_index(&mut self, id: u64) {
        if self.role != Role::Leader {
            self.dropped_reads.push(id);
            return;
        }
        self.reads_unassigned.push(id);
    }

    /// Hands leadership to `to` (TimeoutNow once it is caught up). Proposals
    /// are refused until the handover completes or times out.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.cfg.id {
            return Ok(());
        }
        let Some(pr) = self.progress.get(&to) else {
            return Err(TransferError::UnknownMember(to));
        };
        if !pr.voter {
            return Err(TransferError::NotVoter(to));
        }
        if self.transferee.map(|(t, _)| t) == Some(to) {
            return Ok(());
        }
        self.transferee = Some((to, 0));
        if pr.match_index == self.log.last_index() {
            let term = self.term;
            self.send(to, term, Body::TimeoutNow);
        } else {
            self.maybe_send_append(to);
        }
        Ok(())
    }

    /// The transport lost its connection to `peer`. If `peer` is our leader
    /// its process most likely died: forget it and campaign soon, staggered by
    /// ordinal. Pre-vote keeps this safe if the leader is in fact alive.
    pub fn peer_disconnected(&mut self, peer: NodeId) {
        match self.role {
            Role::Follower if self.leader == Some(peer) && self.voting == Voting::Enabled => {
                self.leader = None;
                self.fast_election = self.cfg.election_ticks;
                self.election_elapsed = 0;
                self.reset_election_timeout();
            }
            Role::Leader => {
                if let Some(pr) = self.progress.get_mut(&peer) {
                    if pr.state == ReplicationState::Replicate {
                        let next = pr.match_index + 1;
                        pr.become_probe(next);
                    }
                }
            }
            _ => {}
        }
    }

    /// The driver finished sending a snapshot to `peer` (ending at `index`),
    /// or failed to (`None`).
    pub fn snapshot_sent(&mut self, peer: NodeId, index: Option<Index>) {
        if self.role != Role::Leader {
            return;
        }
        let Some(pr) = self.progress.get_mut(&peer) else {
            return;
        };
        if pr.state != ReplicationState::Snapshot {
            return;
        }
        let next = index.map_or(pr.match_index + 1, |i| i + 1);
        pr.become_probe(next);
        self.maybe_send_append(peer);
    }

    /// The state machine has applied and durably stored everything up to
    /// `index`: the log before it may be dropped.
    pub fn compact(&mut self, index: Index) {
        let index = index.min(self.log.handed_out()).min(self.log.stable());
        self.log.compact(index);
    }

    /// Handles a message from a peer.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.cfg.id || msg.from == self.cfg.id || msg.from >= self.cfg.voters {
            return;
        }
        match msg.body {
            Body::FreshProbe => {
                let empty = self.log.is_empty();
                let term = self.term;
                self.send(
                    msg.from,
                    term,
                    Body::FreshProbeResponse { empty_log: empty },
                );
                return;
            }
            Body::FreshProbeResponse { empty_log } => {
                if self.voting == Voting::AwaitingPeers {
                    self.fresh_replies.insert(msg.from, (msg.term, empty_log));
                    self.check_fresh_probes_complete();
                }
                return;
            }
            _ => {}
        }

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
                    return;
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
            return;
        }

        let from_a_leader = matches!(
            msg.body,
            Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. }
        );
        if from_a_leader && self.role == Role::Leader {
            // Another leader in our term: impossible in Raft (the simulation
            // checks it never happens). A message claiming it is a bug or a
            // misdirected peer; it must not bring this member down.
            return;
        }

        match msg.body {
            Body::PreVote {
                last_index,
                last_term,
            } => self.on_pre_vote(msg.from, msg.term, last_index, last_term),
            Body::PreVoteResponse { granted } => {
                // A grant carries our term + 1; a refusal carries ours.
                let expected = if granted {
                    self.term.checked_add(1)
                } else {
                    Some(self.term)
                };
                if self.role == Role::PreCandidate && Some(msg.term) == expected {
                    self.votes.insert(msg.from, granted);
                    self.tally_votes();
                }
            }
            Body::Vote {
                last_index,
                last_term,
                transfer: _,
            } => {
                let can = self.voting == Voting::Enabled
                    && self.vote.is_none_or(|v| v == msg.from)
                    && (self.log.is_up_to_date(last_index, last_term)
                        || mutated!(self, VoteIgnoresLogFreshness));
                if can {
                    self.vote = Some(msg.from);
                    self.election_elapsed = 0;
                }
                let term = self.term;
                self.send(msg.from, term, Body::VoteResponse { granted: can });
            }
            Body::VoteResponse { granted } => {
                if self.role == Role::Candidate {
                    self.votes.insert(msg.from, granted);
                    self.tally_votes();
                }
            }
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                let contiguous = entries
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.index == prev_index + 1 + i as Index);
                if !contiguous {
                    // Malformed: never sent by a correct leader.
                    return;
                }
                self.follow(msg.from);
                self.on_append(msg.from, prev_index, prev_term, &entries, commit);
            }
            Body::Heartbeat {
                commit,
                leader_commit,
                read_round,
            } => {
                self.follow(msg.from);
                self.note_leader_commit(leader_commit);
                let last = self.log.last_index();
                self.log.commit_to(commit.min(last));
                let voter = self.check_caught_up();
                let term = self.term;
                self.send(
                    msg.from,
                    term,
                    Body::HeartbeatResponse { read_round, voter },
                );
                if commit > last {
                    // The leader believes we hold entries we do not: our
                    // volume was lost. Say so, so that it probes again.
                    let result = AppendResult::Rejected {
                        rejected_index: commit,
                        hint_index: last,
                        hint_term: self.log.last_term(),
                    };
                    self.send(msg.from, term, Body::AppendResponse { result, voter });
                }
            }
            Body::Snapshot { meta } => {
                self.follow(msg.from);
                self.log.restore_snapshot(meta);
                let match_index = self.log.commit();
                let voter = self.check_caught_up();
                let term = self.term;
                self.send(
                    msg.from,
                    term,
                    Body::AppendResponse {
                        result: AppendResult::Accepted { match_index },
                        voter,
                    },
                );
            }
            Body::TimeoutNow => {
                if self.role == Role::Follower
                    && self.leader == Some(msg.from)
                    && self.voting == Voting::Enabled
                {
                    self.campaign(true);
                }
            }
            Body::AppendResponse { result, voter } => {
                self.on_append_response(msg.from, result, voter)
            }
            Body::HeartbeatResponse { read_round, voter } => {
                self.on_heartbeat_response(msg.from, read_round, voter)
            }
            Body::FreshProbe | Body::FreshProbeResponse { .. } => unreachable!("handled above"),
        }
    }

    // ----- output -----

    /// Collects what the driver must do now. Call [`RaftNode::advance`] once
    /// the hard state, snapshot and entries in it are durable.
    pub fn take_ready(&mut self) -> Ready {
        assert!(
            self.unadvanced_stable.is_none(),
            "take_ready called again before advance"
        );
        if self.role == Role::Leader {
            self.flush_leader_output();
        }
        let hs = self.hard_state();
        let hard_state = (hs != self.last_hard_state).then_some(hs);
        self.last_hard_state = hs;
        let snapshot = self.log.take_pending_snapshot();
        let entries = self.log.unstable_entries();
        let stable_to = entries
            .last()
            .map(|e| e.index)
            .or(snapshot.map(|s| s.index));
        if let Some(index) = stable_to {
            self.unadvanced_stable = Some(index);
        }
        Ready {
            hard_state,
            snapshot,
            entries,
            messages: std::mem::take(&mut self.msgs),
            send_snapshots: std::mem::take(&mut self.send_snapshots),
            committed: self.log.take_committed(),
            read_states: std::mem::take(&mut self.read_states),
            dropped_reads: std::mem::take(&mut self.dropped_reads),
        }
    }

    /// The last Ready's hard state, snapshot and entries are durable.
    pub fn advance(&mut self) {
        if let Some(index) = self.unadvanced_stable.take() {
            self.log.stable_to(index);
        }
        if self.role == Role::Leader {
            self.maybe_commit();
        }
    }

    /// Whether `take_ready` would return anything.
    pub fn has_ready(&self) -> bool {
        self.hard_state() != self.last_hard_state
            || !self.msgs.is_empty()
            || !self.send_snapshots.is_empty()
            || !self.read_states.is_empty()
            || !self.dropped_reads.is_empty()
            || self.log.last_index() > self.log.stable()
            || self.log.commit() > self.log.handed_out()
            || (self.role == Role::Leader
                && (self.replicate_pending
                    || (!self.reads_unassigned.is_empty() && self.committed_in_term())))
    }

    fn flush_leader_output(&mut self) {
        if self.replicate_pending {
            self.replicate_pending = false;
            let peers: Vec<NodeId> = self.peers().collect();
            for peer in peers {
                self.maybe_send_append(peer);
            }
        }
        if !self.reads_unassigned.is_empty() && self.committed_in_term() {
            let index = self.log.commit();
            if self.cfg.voters == 1 || mutated!(self, ReadWithoutQuorumRound) {
                for id in self.reads_unassigned.drain(..) {
                    self.read_states.push(ReadState { id, index });
                }
            } else {
                self.read_round += 1;
                let round = self.read_round;
                for id in self.reads_unassigned.drain(..) {
                    self.reads_pending
                        .push_back(PendingRead { id, index, round });
                }
                self.broadcast_heartbeat();
            }
        }
    }

    // ----- roles -----

    fn in_lease(&self) -> bool {
        match self.role {
            Role::Leader => true,
            _ => self.leader.is_some() && self.election_elapsed < self.cfg.election_ticks,
        }
    }

    fn reset_election_timeout(&mut self) {
        // A candidate has raised its term and waits for votes that its peers
        // answer only after their disks have made them durable: the fast
        // delay (one tick for ordinal 0) would give up on them and raise the
        // term again, over and over. Only pre-campaigning is fast.
        if self.fast_election > 0 && self.role != Role::Candidate {
            self.election_timeout = 1 + self.cfg.id * self.cfg.fast_election_stagger_ticks;
            return;
        }
        let jitter = self
            .rng
            .below(u64::from(self.cfg.election_jitter_ticks) + 1) as u32;
        self.election_timeout =
            self.cfg.election_ticks + self.cfg.id * self.cfg.election_stagger_ticks + jitter;
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            self.progress.clear();
            self.transferee = None;
            self.dropped_reads.append(&mut self.reads_unassigned);
            self.dropped_reads
                .extend(self.reads_pending.drain(..).map(|r| r.id));
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.election_elapsed = 0;
        self.reset_election_timeout();
    }

    /// A leader of our term spoke: follow it.
    fn follow(&mut self, leader: NodeId) {
        self.fast_election = 0;
        if self.role != Role::Follower || self.leader != Some(leader) {
            let term = self.term;
            self.become_follower(term, Some(leader));
        }
        self.election_elapsed = 0;
    }

    fn pre_campaign(&mut self) {
        let Some(term) = self.term.checked_add(1) else {
            // The last term there is: no election can ever be won again
            // (only a forged message can bring a cluster here). Never wrap
            // around, and never vote twice in this term.
            self.election_elapsed = 0;
            return;
        };
        if self.cfg.voters == 1 {
            self.campaign(false);
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.cfg.id, true);
        self.election_elapsed = 0;
        self.reset_election_timeout();
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for peer in self.peers().collect::<Vec<_>>() {
            self.send(
                peer,
                term,
                Body::PreVote {
                    last_index,
                    last_term,
                },
            );
        }
    }

    fn campaign(&mut self, transfer: bool) {
        let Some(term) = self.term.checked_add(1) else {
            return;
        };
        self.term = term;
        self.vote = Some(self.cfg.id);
        self.role = Role::Candidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.cfg.id, true);
        self.election_elapsed = 0;
        self.reset_election_timeout();
        if self.cfg.voters == 1 {
            self.become_leader();
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let term = self.term;
        for peer in self.peers().collect::<Vec<_>>() {
            self.send(
                peer,
                term,
                Body::Vote {
                    last_index,
                    last_term,
                    transfer,
                },
            );
        }
    }

    fn on_pre_vote(&mut self, from: NodeId, term: Term, last_index: Index, last_term: Term) {
        // Just after the leader's connection reset, a lower ordinal that
        // could win as well leaves the field to itself: the lowest live
        // ordinal leads. (Bounded by `fast_election`; pre-votes change no
        // state, so this only decides who wins.)
        let candidate_ahead = last_term > self.log.last_term()
            || (last_term == self.log.last_term() && last_index > self.log.last_index());
        let defer_to_self = self.fast_election > 0
            && from > self.cfg.id
            && self.voting == Voting::Enabled
            && !candidate_ahead;
        let grant = term > self.term
            && self.voting == Voting::Enabled
            && !self.in_lease()
            && !defer_to_self
            && (self.log.is_up_to_date(last_index, last_term)
                || mutated!(self, VoteIgnoresLogFreshness));
        let reply_term = if grant { term } else { self.term };
        self.send(from, reply_term, Body::PreVoteResponse { granted: grant });
    }

    fn tally_votes(&mut self) {
        let granted = self.votes.values().filter(|&&g| g).count();
        let refused = self.votes.len() - granted;
        if granted >= self.cfg.majority() {
            match self.role {
                Role::PreCandidate => self.campaign(false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if refused >= self.cfg.majority() {
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    fn become_leader(&mut self) {
        self.fast_election = 0;
        self.role = Role::Leader;
        self.leader = Some(self.cfg.id);
        self.votes.clear();
        self.heartbeat_elapsed = 0;
        self.quorum_elapsed = 0;
        self.transferee = None;
        let next = self.log.last_index() + 1;
        self.progress = self.peers().map(|p| (p, Progress::new(next))).collect();
        // The no-op lets this term commit, and with it every earlier entry.
        self.log.append(Entry {
            index: next,
            term: self.term,
            kind: EntryKind::Noop,
            data: Bytes::new(),
        });
        self.replicate_pending = true;
    }

    // ----- replication -----

    fn on_append(
        &mut self,
        from: NodeId,
        prev_index: Index,
        prev_term: Term,
        entries: &[Entry],
        commit: Index,
    ) {
        let term = self.term;
        self.note_leader_commit(commit);
        // (Mutated: whatever entry this log holds at prev_index passes.)
        let prev_term = match self.log.term(prev_index) {
            Some(held) if mutated!(self, AppendSkipsPrevTermCheck) => held,
            _ => prev_term,
        };
        let result = if prev_index < self.log.commit() {
            AppendResult::Accepted {
                match_index: self.log.commit(),
            }
        } else if let Some(last_new) = self.log.try_append(prev_index, prev_term, entries) {
            self.log.commit_to(commit.min(last_new));
            AppendResult::Accepted {
                match_index: last_new,
            }
        } else {
            let probe_at = prev_index.min(self.log.last_index());
            let (hint_index, hint_term) = self.log.find_conflict_by_term(probe_at, prev_term);
            AppendResult::Rejected {
                rejected_index: prev_index,
                hint_index,
                hint_term,
            }
        };
        let voter = self.check_caught_up();
        self.send(from, term, Body::AppendResponse { result, voter });
    }

    fn on_append_response(&mut self, from: NodeId, result: AppendResult, voter: bool) {
        if self.role != Role::Leader {
            return;
        }
        let snapshot_index = self.log.snapshot().index;
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.heard_from(voter);
        match result {
            AppendResult::Accepted { match_index } => {
                if pr.state == ReplicationState::Snapshot {
                    if match_index < snapshot_index {
                        return;
                    }
                    pr.become_probe(match_index + 1);
                }
                let moved = pr.accepted(match_index);
                let caught_up = pr.match_index == last;
                if moved {
                    self.maybe_commit();
                }
                if caught_up && self.transferee.map(|(t, _)| t) == Some(from) {
                    let term = self.term;
                    self.send(from, term, Body::TimeoutNow);
                }
            }
            AppendResult::Rejected {
                rejected_index,
                hint_index,
                hint_term,
            } => {
                if hint_index < pr.match_index && pr.state != ReplicationState::Snapshot {
                    // The follower's log is shorter than what it once
                    // acknowledged: its volume was lost (or this answer is
                    // old). Either way, probing from the hint is safe.
                    pr.forget_match(hint_index);
                } else {
                    let stale = match pr.state {
                        ReplicationState::Replicate => rejected_index <= pr.match_index,
                        ReplicationState::Probe { .. } => rejected_index + 1 != pr.next_index,
                        ReplicationState::Snapshot => true,
                    };
                    if stale {
                        return;
                    }
                    let probe_at = if hint_term > 0 {
                        self.log.find_conflict_by_term(hint_index, hint_term).0
                    } else {
                        hint_index
                    };
                    let pr = self.progress.get_mut(&from).expect("checked above");
                    pr.become_probe((probe_at + 1).min(rejected_index));
                }
            }
        }
        self.maybe_send_append(from);
    }

    fn on_heartbeat_response(&mut self, from: NodeId, read_round: u64, voter: bool) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.heard_from(voter);
        pr.read_round = pr.read_round.max(read_round);
        if let ReplicationState::Probe { paused: true } = pr.state {
            pr.state = ReplicationState::Probe { paused: false };
        }
        let behind = pr.match_index < last;
        if behind {
            self.maybe_send_append(from);
        }
        self.resolve_reads();
    }

    /// Sends `peer` the entries it is missing (or the new commit index), if
    /// flow control allows; asks for a snapshot when they are compacted away.
    fn maybe_send_append(&mut self, peer: NodeId) {
        let commit = self.log.commit();
        let (max_entries, max_bytes, max_inflight) = (
            self.cfg.max_append_entries,
            self.cfg.max_append_bytes,
            self.cfg.max_inflight,
        );
        let Some(pr) = self.progress.get(&peer) else {
            return;
        };
        if !pr.can_send(max_inflight) {
            return;
        }
        let prev_index = pr.next_index - 1;
        let probing = matches!(pr.state, ReplicationState::Probe { .. });
        let Some(prev_term) = self.log.term(prev_index) else {
            let pr = self.progress.get_mut(&peer).expect("checked above");
            pr.become_snapshot();
            self.send_snapshots.push(peer);
            return;
        };
        let entries = self
            .log
            .entries_from(pr.next_index, max_entries, max_bytes)
            .expect("next_index is after the snapshot");
        if entries.is_empty() && !probing && commit <= pr.sent_commit {
            return;
        }
        let last = entries.last().map_or(prev_index, |e| e.index);
        let carried = !entries.is_empty();
        let pr = self.progress.get_mut(&peer).expect("checked above");
        pr.sent(last, carried);
        pr.sent_commit = commit;
        let term = self.term;
        self.send(
            peer,
            term,
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
        );
    }

    fn broadcast_heartbeat(&mut self) {
        let commit = self.log.commit();
        let round = self.read_round;
        let term = self.term;
        let targets: Vec<(NodeId, Index)> = self
            .progress
            .iter()
            .map(|(&p, pr)| (p, pr.match_index.min(commit)))
            .collect();
        for (peer, capped) in targets {
            self.send(
                peer,
                term,
                Body::Heartbeat {
                    commit: capped,
                    leader_commit: commit,
                    read_round: round,
                },
            );
        }
    }

    /// Commits the highest index stored on a majority, if it is of this term
    /// (Raft §5.4.2: an older term's entry is committed only indirectly).
    fn maybe_commit(&mut self) {
        let mut matches: Vec<Index> = self.progress.values().map(|p| p.match_index).collect();
        matches.push(self.log.stable());
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let quorum_index = matches[self.cfg.majority() - 1];
        let of_this_term = self.log.term(quorum_index) == Some(self.term)
            || mutated!(self, CommitOlderTermByCount);
        if quorum_index > self.log.commit() && of_this_term {
            self.log.commit_to(quorum_index);
            self.replicate_pending = true;
        }
    }

    fn committed_in_term(&self) -> bool {
        self.log.term(self.log.commit()) == Some(self.term)
    }

    fn resolve_reads(&mut self) {
        while let Some(read) = self.reads_pending.front().copied() {
            let acks = 1 + self
                .progress
                .values()
                .filter(|p| p.read_round >= read.round)
                .count();
            if acks < self.cfg.majority() {
                break;
            }
            self.reads_pending.pop_front();
            self.read_states.push(ReadState {
                id: read.id,
                index: read.index,
            });
        }
    }

    // ----- members with a new data dir -----

    fn send_fresh_probes(&mut self) {
        let missing: Vec<NodeId> = self
            .peers()
            .filter(|p| !self.fresh_replies.contains_key(p))
            .collect();
        let term = self.term;
        for peer in missing {
            self.send(peer, term, Body::FreshProbe);
        }
    }

    /// Once every peer has answered: if all logs are empty this is a new
    /// cluster and we may vote; otherwise wait for a leader at least as new
    /// as any term a peer reported. Either way, never vote again in the
    /// highest reported term: we may have voted in it before our volume was
    /// lost.
    fn check_fresh_probes_complete(&mut self) {
        if self.voting != Voting::AwaitingPeers
            || self.fresh_replies.len() + 1 < self.cfg.voters as usize
        {
            return;
        }
        let max_term = self
            .fresh_replies
            .values()
            .map(|r| r.0)
            .fold(self.term, Term::max);
        let all_empty = self.log.is_empty() && self.fresh_replies.values().all(|r| r.1);
        if max_term > self.term {
            self.become_follower(max_term, None);
        }
        if self.vote.is_none() {
            // A fence: a vote we cannot give again in this term.
            self.vote = Some(self.cfg.id);
        }
        self.voting = if all_empty {
            Voting::Enabled
        } else {
            Voting::AwaitingLeader { min_term: max_term }
        };
        self.fresh_replies.clear();
    }

    /// Records the commit index a leader announced; while awaiting a leader,
    /// also as the point to catch up to, if that leader's term is recent
    /// enough.
    fn note_leader_commit(&mut self, leader_commit: Index) {
        self.leader_commit = self.leader_commit.max(leader_commit);
        if let Voting::AwaitingLeader { min_term } = self.voting {
            if self.term >= min_term {
                self.fresh_catch_up = Some(
                    self.fresh_catch_up
                        .map_or(leader_commit, |c| c.max(leader_commit)),
                );
            }
        }
    }

    /// A member awaiting a leader may vote once its commit index has reached
    /// the commit index a leader (of a term at least `min_term`) announced in
    /// an append, and is an entry of the current term. The first covers
    /// entries committed with this member's acknowledgement in that leader's
    /// own term; the second every entry committed before the current term.
    /// Returns whether this member may vote.
    fn check_caught_up(&mut self) -> bool {
        if let Voting::AwaitingLeader { min_term } = self.voting {
            let commit = self.log.commit();
            if self.leader.is_some()
                && self.term >= min_term
                && (self.fresh_catch_up.is_some_and(|c| commit >= c)
                    || mutated!(self, LostVolumeVotesAfterPartialCatchUp))
                && self.log.term(commit) == Some(self.term)
            {
                self.voting = Voting::Enabled;
                self.fresh_catch_up = None;
            }
        }
        self.voting == Voting::Enabled
    }
}
