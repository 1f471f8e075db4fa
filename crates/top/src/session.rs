//! One poll after another: what both the terminal view and the plain
//! lines run on.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crate::log::{Entry, EventLog};
use crate::model::ClusterView;
use crate::{Source, TopOptions};

/// The view's state between polls.
pub(crate) struct Session<'a, S> {
    source: &'a mut S,
    narration: Option<&'a Receiver<String>>,
    /// The cluster as the polls show it.
    pub(crate) view: ClusterView,
    /// What happened, with the caller's lines.
    pub(crate) log: EventLog,
    epoch: Instant,
    ends_at: Option<Instant>,
    interval: Duration,
    next_poll: Instant,
}

/// What one tick added.
pub(crate) struct Tick {
    /// The new log entries, oldest first.
    pub(crate) added: Vec<Entry>,
    /// The narration's sender is gone: the view should end.
    pub(crate) narration_over: bool,
}

impl<'a, S: Source> Session<'a, S> {
    pub(crate) fn new(
        opts: &TopOptions,
        source: &'a mut S,
        narration: Option<&'a Receiver<String>>,
    ) -> Self {
        let epoch = Instant::now();
        Session {
            source,
            narration,
            view: ClusterView::default(),
            log: EventLog::default(),
            epoch,
            ends_at: opts.duration.map(|d| epoch + d),
            interval: opts.interval,
            next_poll: epoch,
        }
    }

    /// Takes the caller's lines said so far, then polls every member once
    /// and logs what changed.
    pub(crate) async fn tick(&mut self) -> Tick {
        let started = Instant::now();
        let (lines, narration_over) = self.drain_narration();
        let mut added: Vec<Entry> = lines.into_iter().map(Entry::Line).collect();
        let answers = self.source.poll().await;
        let now = Instant::now();
        let at = now.saturating_duration_since(self.epoch);
        added.extend(
            self.view
                .observe(&answers, now)
                .into_iter()
                .map(|event| Entry::Event { at, event }),
        );
        for entry in &added {
            self.log.push(entry.clone());
        }
        // A slow poll delays the next one rather than making up for it.
        self.next_poll = (self.next_poll + self.interval).max(started);
        Tick {
            added,
            narration_over,
        }
    }

    /// Whether the duration asked for is over.
    pub(crate) fn over(&self) -> bool {
        self.ends_at.is_some_and(|t| Instant::now() >= t)
    }

    /// When the next poll is due.
    pub(crate) fn next_poll(&self) -> Instant {
        self.next_poll
    }

    /// The time since the view started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The lines the caller sent since the last tick, and whether its
    /// sender is gone.
    fn drain_narration(&mut self) -> (Vec<String>, bool) {
        let Some(rx) = self.narration else {
            return (Vec::new(), false);
        };
        let mut lines = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(line) => lines.push(line),
                Err(TryRecvError::Empty) => return (lines, false),
                Err(TryRecvError::Disconnected) => return (lines, true),
            }
        }
    }
}
