//! The cluster as successive polls show it, and the events between two
//! polls. Pure: no I/O and no clock (each poll comes with its time), so
//! the tests build the answers by hand.
//!
//! Rules, from one poll to the next:
//! - a member that answered before and does not now is down; one that was
//!   down and answers is back (a member that never answered is shown, with
//!   why, but is not "down": the view may have started before it);
//! - a member is caught up when it reports itself ready after it was not,
//!   or after it was down;
//! - the leader is the answering member that says it leads, in the highest
//!   term. A new one is a transfer when the last leader still answers and
//!   has not been down since it led, else an election; no leader among the
//!   members that answer is an event of its own;
//! - the configuration is the leader's (a follower's may lag behind it);
//! - writes per second are the rise of the leader's commit revision.

mod event;
#[cfg(test)]
pub(crate) mod fixtures;
mod members;
#[cfg(test)]
mod tests;
mod writes;

pub use event::Event;
pub use members::Member;
pub use writes::WriteRate;

use std::time::Instant;

use kvstore_proto::kv::{Role, StatusResponse};

use crate::Answer;

/// Who leads, in which term.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leader's name.
    pub name: String,
    /// Its ordinal.
    pub ordinal: u32,
    /// Its term.
    pub term: u64,
}

/// The configuration, as the leader reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The voters' ordinals, in order.
    pub voters: Vec<u32>,
    /// The learners' ordinals, in order.
    pub learners: Vec<u32>,
    /// The replica count the StatefulSet asks for (0: not known).
    pub desired: u32,
}

/// The cluster as the polls so far show it.
#[derive(Clone, Debug, Default)]
pub struct ClusterView {
    /// Every member ever seen, by ordinal (those that never answered last).
    members: Vec<Member>,
    /// The leader at the last poll.
    leader: Option<Leader>,
    /// The last leader seen, kept through polls without one.
    last_leader: Option<Leader>,
    /// Whether the last leader has been down since it led.
    last_leader_went_down: bool,
    /// The configuration at the last poll that had a leader.
    config: Option<Config>,
    /// Acknowledged writes per second.
    writes: WriteRate,
    /// Addresses a member answered at before it moved to another: their
    /// failures say nothing about it.
    moved_from: Vec<String>,
}

impl ClusterView {
    /// Takes in one poll's answers, made at `at`, and gives what changed
    /// since the previous poll, in the order: members (down, back, caught
    /// up), leadership, configuration.
    pub fn observe(&mut self, answers: &[Answer], at: Instant) -> Vec<Event> {
        let mut events: Vec<Event> = answers.iter().flat_map(|a| self.apply(a)).collect();
        self.members
            .sort_by_key(|m| (m.ordinal().unwrap_or(u32::MAX), m.endpoint.clone()));
        events.extend(self.update_leader());
        events.extend(self.update_config());
        self.update_writes(at);
        events
    }

    /// Whether any member has answered any poll yet.
    pub fn any_answered(&self) -> bool {
        self.members.iter().any(|m| m.last.is_some())
    }

    /// The members to show: every one seen, but those down and out of the
    /// configuration (a pod a scale-down removed).
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| {
            let removed = match (&self.config, m.ordinal()) {
                (Some(c), Some(o)) => !c.voters.contains(&o) && !c.learners.contains(&o),
                _ => false,
            };
            m.down.is_none() || !removed
        })
    }

    /// The leader at the last poll.
    pub fn leader(&self) -> Option<&Leader> {
        self.leader.as_ref()
    }

    /// The configuration, as the leader last reported it.
    pub fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }

    /// Acknowledged writes per second.
    pub fn writes(&self) -> &WriteRate {
        &self.writes
    }

    /// The commit revision lag is measured from: the leader's, else the
    /// highest any member reported.
    pub fn reference_commit(&self) -> u64 {
        match self.leader.as_ref().and_then(|l| self.answering(&l.name)) {
            Some(s) => s.commit_revision,
            None => self
                .statuses()
                .map(|s| s.commit_revision)
                .max()
                .unwrap_or(0),
        }
    }

    /// How far `member` has applied behind [`ClusterView::reference_commit`],
    /// while it answers.
    pub fn lag(&self, member: &Member) -> Option<u64> {
        let s = member.status()?;
        Some(self.reference_commit().saturating_sub(s.applied_revision))
    }

    /// The leader now, and the event of a change of leader.
    fn update_leader(&mut self) -> Option<Event> {
        let now = self
            .statuses()
            .filter(|s| s.role == Role::Leader as i32)
            .max_by_key(|s| s.term)
            .map(|s| Leader {
                name: s.name.clone(),
                ordinal: s.ordinal,
                term: s.term,
            });
        let event = match &now {
            Some(n) if self.leader.as_ref() == Some(n) => None,
            // The same leadership, seen again after a poll that missed it.
            Some(n) if self.last_leader.as_ref() == Some(n) => None,
            Some(n) => Some(match &self.last_leader {
                Some(p)
                    if p.name != n.name
                        && !self.last_leader_went_down
                        && self.answering(&p.name).is_some() =>
                {
                    Event::Transfer {
                        from: p.name.clone(),
                        to: n.name.clone(),
                        term: n.term,
                    }
                }
                _ => Event::Elected {
                    leader: n.name.clone(),
                    term: n.term,
                },
            }),
            None => self.leader.as_ref().map(|lost| Event::NoLeader {
                // The members that answer may all be behind the lost
                // leader's term, or none may answer.
                term: self.statuses().map(|s| s.term).fold(lost.term, u64::max),
            }),
        };
        if let Some(n) = &now {
            if self.last_leader.as_ref() != Some(n) {
                self.last_leader = Some(n.clone());
                self.last_leader_went_down = false;
            }
        }
        self.leader = now;
        event
    }

    /// The configuration the leader reports, and the event of a change.
    fn update_config(&mut self) -> Option<Event> {
        let leader = self.leader.as_ref()?;
        let s = self.answering(&leader.name)?;
        let mut now = Config {
            voters: s.voters.clone(),
            learners: s.learners.clone(),
            desired: s.desired_replicas,
        };
        now.voters.sort_unstable();
        now.learners.sort_unstable();
        if self.config.as_ref() == Some(&now) {
            return None;
        }
        self.config = Some(now.clone());
        Some(Event::Members {
            voters: now.voters,
            learners: now.learners,
            desired: now.desired,
        })
    }

    /// One more figure of writes per second.
    fn update_writes(&mut self, at: Instant) {
        let commit = self
            .leader
            .as_ref()
            .and_then(|l| self.answering(&l.name))
            .map(|s| s.commit_revision);
        match commit {
            Some(commit) => self.writes.sample(commit, at),
            None => self.writes.no_leader(),
        }
    }

    /// The answers of the last poll.
    fn statuses(&self) -> impl Iterator<Item = &StatusResponse> {
        self.members.iter().filter_map(Member::status)
    }

    /// The last poll's answer of the member called `name`, if it answered.
    fn answering(&self, name: &str) -> Option<&StatusResponse> {
        self.statuses().find(|s| s.name == name)
    }
}
