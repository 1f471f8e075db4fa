//! The members: each one's last answer, and the events of a new one
//! (down, back, caught up).

use kvstore_proto::kv::StatusResponse;

use super::{ClusterView, Event};
use crate::Answer;

/// One member, as the last poll left it.
#[derive(Clone, Debug)]
pub struct Member {
    /// The client endpoint it is asked at.
    pub endpoint: String,
    /// Its last answer, kept while it is down (for its name, its ordinal,
    /// and what it last said).
    pub last: Option<StatusResponse>,
    /// Why the last poll got no answer; `None` while it answers.
    pub down: Option<String>,
}

impl Member {
    /// Its name, or its endpoint until it has answered.
    pub fn name(&self) -> &str {
        self.last.as_ref().map_or(&self.endpoint, |s| &s.name)
    }

    /// Its ordinal, once it has answered.
    pub fn ordinal(&self) -> Option<u32> {
        self.last.as_ref().map(|s| s.ordinal)
    }

    /// Its answer to the last poll, if it answered.
    pub fn status(&self) -> Option<&StatusResponse> {
        self.last.as_ref().filter(|_| self.down.is_none())
    }
}

impl ClusterView {
    /// Updates the member `answer` is from; gives its events.
    pub(super) fn apply(&mut self, answer: &Answer) -> Vec<Event> {
        if self.moved_from.contains(&answer.endpoint) {
            if answer.status.is_err() {
                return Vec::new();
            }
            self.moved_from.retain(|e| e != &answer.endpoint);
        }
        let Some(i) = self.member_for(answer) else {
            // Another address reaches the same node: it is shown once.
            self.members.retain(|m| m.endpoint != answer.endpoint);
            return Vec::new();
        };
        let leader_name = self.last_leader.as_ref().map(|l| l.name.clone());
        let events = member_events(&self.members[i], &answer.status);
        let member = &mut self.members[i];
        if member.endpoint != answer.endpoint {
            let old = std::mem::replace(&mut member.endpoint, answer.endpoint.clone());
            self.moved_from.push(old);
        }
        let member = &mut self.members[i];
        match &answer.status {
            Ok(s) => {
                member.last = Some(s.clone());
                member.down = None;
            }
            Err(reason) => member.down = Some(reason.clone()),
        }
        if member.down.is_some() && leader_name.as_deref() == Some(member.name()) {
            self.last_leader_went_down = true;
        }
        events
    }

    /// The index of the member `answer` is about, added if new: the one at
    /// its endpoint, else one of the same name that is down (the pod came
    /// back at another address, as a rescheduled pod does). `None` when
    /// another member of the same name answers: a second address of the
    /// same node.
    fn member_for(&mut self, answer: &Answer) -> Option<usize> {
        let by_endpoint = self
            .members
            .iter()
            .position(|m| m.endpoint == answer.endpoint);
        let Ok(s) = &answer.status else {
            return Some(by_endpoint.unwrap_or_else(|| self.add(&answer.endpoint)));
        };
        let same_name = |m: &Member| m.endpoint != answer.endpoint && m.name() == s.name;
        if self
            .members
            .iter()
            .any(|m| same_name(m) && m.down.is_none())
        {
            return None;
        }
        if self.members.iter().any(same_name) {
            // Its old address is forgotten: it is not a member of its own.
            self.members.retain(|m| m.endpoint != answer.endpoint);
            return self.members.iter().position(|m| m.name() == s.name);
        }
        Some(by_endpoint.unwrap_or_else(|| self.add(&answer.endpoint)))
    }

    /// Adds a member that has not answered yet; gives its index.
    fn add(&mut self, endpoint: &str) -> usize {
        self.members.push(Member {
            endpoint: endpoint.to_string(),
            last: None,
            down: None,
        });
        self.members.len() - 1
    }
}

/// The events of one member's new answer, from what it was before.
fn member_events(before: &Member, now: &Result<StatusResponse, String>) -> Vec<Event> {
    // A member that never answered is not "down", nor "back" when it does.
    let Some(last) = &before.last else {
        return Vec::new();
    };
    let was_down = before.down.is_some();
    match now {
        Ok(s) => {
            let mut events = Vec::new();
            if was_down {
                events.push(Event::Back {
                    pod: s.name.clone(),
                });
            }
            if s.ready && (was_down || !last.ready) {
                events.push(Event::CaughtUp {
                    pod: s.name.clone(),
                    applied: s.applied_revision,
                });
            }
            events
        }
        Err(reason) if !was_down => vec![Event::Down {
            pod: last.name.clone(),
            reason: reason.clone(),
        }],
        Err(_) => Vec::new(),
    }
}
