//! Acknowledged writes per second, from the rise of the leader's commit
//! revision: every write is one revision (a new leader's no-op entry and a
//! membership change are one too, a rounding error under load).

use std::collections::VecDeque;
use std::time::Instant;

/// How many rates are kept: more than any terminal is wide.
const KEPT: usize = 512;

/// The rate of writes, one figure per poll, oldest first.
#[derive(Clone, Debug, Default)]
pub struct WriteRate {
    /// The leader's commit revision at the last poll that had a leader.
    last: Option<(u64, Instant)>,
    /// Writes per second, one per poll.
    history: VecDeque<u64>,
}

impl WriteRate {
    /// A poll at `at` whose leader reported `commit`: the rise since the
    /// last such poll, per second, joins the history.
    pub fn sample(&mut self, commit: u64, at: Instant) {
        if let Some((before, then)) = self.last {
            let seconds = at.saturating_duration_since(then).as_secs_f64();
            if seconds > 0.0 {
                let rate = commit.saturating_sub(before) as f64 / seconds;
                self.push(rate.round() as u64);
            }
        }
        self.last = Some((commit, at));
    }

    /// A poll with no leader: nothing is acknowledged. The next leader's
    /// commit is measured from its own first poll, not across the gap.
    pub fn no_leader(&mut self) {
        self.push(0);
        self.last = None;
    }

    /// Writes per second, one figure per poll, oldest first.
    pub fn history(&self) -> &VecDeque<u64> {
        &self.history
    }

    /// The latest rate, if any was measured.
    pub fn now(&self) -> Option<u64> {
        self.history.back().copied()
    }

    fn push(&mut self, rate: u64) {
        if self.history.len() == KEPT {
            self.history.pop_front();
        }
        self.history.push_back(rate);
    }
}
