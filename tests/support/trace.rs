//! A readable trace of a simulated cluster, for the golden scripts: each
//! message as it is sent or dropped, and each change of a member's role,
//! term, leader, voting state or commit index as it happens.

#![allow(dead_code)]

use kvstore::raft::*;

/// Something that happened in the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message left its sender (after its Ready was durable).
    Sent(String),
    /// A message was lost on the way: a blocked link, or a member down.
    Dropped(String),
    /// A member's role, term, leader, voting state or commit index changed.
    Changed(String),
}

/// What the trace last reported of one member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub voting: Voting,
    pub commit: Index,
}

impl Seen {
    pub fn of(core: &RaftCore) -> Self {
        Seen {
            role: core.role(),
            term: core.term(),
            leader: core.leader(),
            voting: core.voting(),
            commit: core.log().commit(),
        }
    }

    /// The lines that describe how member `id` went from `before` to `self`.
    pub fn changes_since(&self, id: NodeId, before: &Seen) -> Vec<String> {
        let mut lines = Vec::new();
        if (self.role, self.term, self.leader) != (before.role, before.term, before.leader) {
            let leader = match (self.role, self.leader) {
                (Role::Leader, _) => String::new(),
                (_, Some(l)) => format!(", follows n{l}"),
                (Role::Follower, None) => ", no leader known".into(),
                (_, None) => String::new(),
            };
            lines.push(format!(
                "n{id} is {} in term {}{leader}",
                role(self.role),
                self.term
            ));
        }
        if self.voting != before.voting {
            lines.push(format!("n{id} voting: {}", voting(self.voting)));
        }
        if self.commit != before.commit {
            lines.push(format!("n{id} commit={}", self.commit));
        }
        lines
    }
}

pub fn role(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "pre-candidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

pub fn voting(voting: Voting) -> String {
    match voting {
        Voting::Enabled => "enabled".into(),
        Voting::AwaitingPeers => "awaiting every peer's answer".into(),
        Voting::AwaitingLeader { min_term } => {
            format!("awaiting a leader of term {min_term} or later")
        }
    }
}

/// `n0@2 → n1 Append prev=1@1 entries=[2@2 noop] commit=1`
pub fn message(msg: &Message) -> String {
    format!(
        "n{}@{} → n{} {}",
        msg.from,
        msg.term,
        msg.to,
        body(&msg.body)
    )
}

fn body(body: &Body) -> String {
    match body {
        Body::PreVote {
            last_index,
            last_term,
        } => format!("PreVote last={last_index}@{last_term}"),
        Body::PreVoteResponse { granted } => format!("PreVoteResponse {}", grant(*granted)),
        Body::Vote {
            last_index,
            last_term,
            transfer,
        } => format!(
            "Vote last={last_index}@{last_term}{}",
            if *transfer { " transfer" } else { "" }
        ),
        Body::VoteResponse { granted } => format!("VoteResponse {}", grant(*granted)),
        Body::Append {
            prev_index,
            prev_term,
            entries,
            commit,
        } => format!(
            "Append prev={prev_index}@{prev_term} entries=[{}] commit={commit}",
            entry_list(entries)
        ),
        Body::AppendResponse { result, voter } => {
            let result = match result {
                AppendResult::Accepted { match_index } => format!("accepted={match_index}"),
                AppendResult::Rejected {
                    rejected_index,
                    hint_index,
                    hint_term,
                } => format!("rejected={rejected_index} hint={hint_index}@{hint_term}"),
            };
            format!("AppendResponse {result}{}", non_voter(*voter))
        }
        Body::Heartbeat {
            commit,
            leader_commit,
            read_round,
        } => format!(
            "Heartbeat commit={commit} leader_commit={leader_commit}{}",
            round(*read_round)
        ),
        Body::HeartbeatResponse { read_round, voter } => format!(
            "HeartbeatResponse{}{}",
            round(*read_round),
            non_voter(*voter)
        ),
        Body::TimeoutNow => "TimeoutNow".into(),
        Body::Snapshot { meta } => format!("Snapshot {}@{}", meta.index, meta.term),
        Body::RejoinProbe => "RejoinProbe".into(),
        Body::RejoinProbeResponse { empty_log, members } => format!(
            "RejoinProbeResponse {} ({members})",
            if *empty_log { "empty" } else { "non-empty" }
        ),
    }
}

fn grant(granted: bool) -> &'static str {
    if granted {
        "granted"
    } else {
        "refused"
    }
}

fn non_voter(voter: bool) -> &'static str {
    if voter {
        ""
    } else {
        " non-voter"
    }
}

fn round(read_round: u64) -> String {
    if read_round == 0 {
        String::new()
    } else {
        format!(" round={read_round}")
    }
}

/// `2@2 noop, 3@2` — long runs shortened to their ends.
fn entry_list(entries: &[Entry]) -> String {
    let one = |e: &Entry| match e.kind {
        EntryKind::Noop => format!("{}@{} noop", e.index, e.term),
        EntryKind::Config => match Membership::decode(&e.data) {
            Some(m) => format!("{}@{} config({m})", e.index, e.term),
            None => format!("{}@{} config(?)", e.index, e.term),
        },
        EntryKind::Normal => format!("{}@{}", e.index, e.term),
    };
    if entries.len() <= 4 {
        return entries.iter().map(one).collect::<Vec<_>>().join(" ");
    }
    format!(
        "{} … {} ({} entries)",
        one(&entries[0]),
        one(&entries[entries.len() - 1]),
        entries.len()
    )
}
