//! The event log: the events the polls gave and the caller's own lines
//! (the demo's narration), in the order they came.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::model::Event;

/// How many entries are kept: more than a screen shows.
const KEPT: usize = 1000;

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// An event the polls showed, at this time since the view started.
    Event {
        /// When the poll that showed it was made, since the view started.
        at: Duration,
        /// What changed.
        event: Event,
    },
    /// A line the caller gave, shown as it is (the demo's lines carry
    /// their own time).
    Line(String),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Event { at, event } => write!(f, "{} {event}", stamp(*at)),
            Entry::Line(line) => f.write_str(line),
        }
    }
}

/// A time since the start as the log shows it, like the demo's lines:
/// `[   2.456s]`.
pub fn stamp(at: Duration) -> String {
    format!("[{:>8.3}s]", at.as_secs_f64())
}

/// The latest entries, oldest first.
#[derive(Clone, Debug, Default)]
pub struct EventLog {
    entries: VecDeque<Entry>,
}

impl EventLog {
    /// Adds an entry, forgetting the oldest past [`KEPT`].
    pub fn push(&mut self, entry: Entry) {
        if self.entries.len() == KEPT {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &VecDeque<Entry> {
        &self.entries
    }
}
