//! The demonstration's timeline: what the load acknowledged, what role each
//! pod had, and the moments the narration measured (the kill, the election,
//! the longest write gap, the restart, the catch-up, the priority return),
//! recorded while the demo runs and drawn afterwards as `demo-timeline.svg`.
//!
//! Recording is cheap and shared: the phases add marks through `&Timeline`,
//! a sampler polls every pod's role a few dozen times a second, and the
//! load's acknowledgement times are handed over at the end. `layout` turns
//! that into what a picture needs (buckets, lanes, label rows) without any
//! drawing, so it is unit-tested; `draw` is the plotters side.

mod draw;
mod layout;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvstore_client::TlsOptions;
use kvstore_proto::kv::{Role, StatusResponse};

use super::probe::statuses;

pub(super) use layout::PodState;

/// How often the sampler asks every pod for its role.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// A measured moment, labelled with what happened and its measure.
#[derive(Clone, Debug)]
pub(super) struct Mark {
    pub(super) at: Instant,
    pub(super) label: String,
    pub(super) kind: MarkKind,
}

/// What a mark is, which decides its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MarkKind {
    /// A fault the demo caused: a kill, a SIGTERM, a change of the
    /// desired replica count.
    Fault,
    /// The cluster's answer: an election, a restart, a catch-up, a return.
    Recovery,
}

/// One fault followed through, drawn as a zoomed panel of its own when
/// the demo has several.
#[derive(Clone, Debug)]
pub(super) struct Episode {
    pub(super) title: String,
    pub(super) from: Instant,
    pub(super) to: Instant,
}

/// What was recorded.
#[derive(Default)]
struct Recorded {
    marks: Vec<Mark>,
    /// Longest write gaps: (start, end).
    gaps: Vec<(Instant, Instant)>,
    episodes: Vec<Episode>,
    /// Role samples: (when, ordinal, state).
    samples: Vec<(Instant, u32, PodState)>,
    /// When each acknowledged write completed.
    acks: Vec<Instant>,
}

/// The timeline being recorded.
pub(super) struct Timeline {
    epoch: Instant,
    recorded: Mutex<Recorded>,
    sampling: AtomicBool,
}

impl Timeline {
    /// A timeline whose times count from `epoch`, the demo's start.
    pub(super) fn new(epoch: Instant) -> Timeline {
        Timeline {
            epoch,
            recorded: Mutex::new(Recorded::default()),
            sampling: AtomicBool::new(true),
        }
    }

    /// The record; entries are only ever added whole, so one poisoned by a
    /// panicking task is still worth drawing.
    fn recorded(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a fault at `at`.
    pub(super) fn fault(&self, at: Instant, label: impl Into<String>) {
        self.mark(at, label.into(), MarkKind::Fault);
    }

    /// Marks the cluster's answer at `at`.
    pub(super) fn recovery(&self, at: Instant, label: impl Into<String>) {
        self.mark(at, label.into(), MarkKind::Recovery);
    }

    fn mark(&self, at: Instant, label: String, kind: MarkKind) {
        self.recorded().marks.push(Mark { at, label, kind });
    }

    /// Records the longest write gap of a fault.
    pub(super) fn gap(&self, start: Instant, end: Instant) {
        self.recorded().gaps.push((start, end));
    }

    /// Records a fault's whole course, from `from` until `to`.
    pub(super) fn episode(&self, title: impl Into<String>, from: Instant, to: Instant) {
        self.recorded().episodes.push(Episode {
            title: title.into(),
            from,
            to,
        });
    }

    /// Polls the pods at `endpoints` (by ordinal) for their roles until
    /// [`Timeline::stop_sampling`]; each pod is polled on its own, so one
    /// that does not answer does not delay the others' samples.
    pub(super) async fn sample_roles(&self, tls: Option<&TlsOptions>, endpoints: &[String]) {
        let per_pod = endpoints.iter().enumerate().map(|(n, e)| async move {
            let one = std::slice::from_ref(e);
            while self.sampling.load(Ordering::Relaxed) {
                let status = statuses(tls, one).await.into_iter().flatten().next();
                let state = PodState::of(status.as_ref());
                self.recorded()
                    .samples
                    .push((Instant::now(), n as u32, state));
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        futures::future::join_all(per_pod).await;
    }

    /// Hands over the load's acknowledgement times.
    pub(super) fn set_acks(&self, acks: Vec<Instant>) {
        self.recorded().acks = acks;
    }

    /// Ends [`Timeline::sample_roles`].
    pub(super) fn stop_sampling(&self) {
        self.sampling.store(false, Ordering::Relaxed);
    }

    /// Draws the timeline as an SVG at `path`, up to `end`; `title` heads
    /// the picture.
    pub(super) fn write_svg(&self, path: &Path, title: &str, end: Instant) -> Result<(), String> {
        let rec = self.recorded();
        let secs = |t: Instant| t.saturating_duration_since(self.epoch).as_secs_f64();
        let picture = layout::Picture::new(layout::Inputs {
            title: title.to_string(),
            end: secs(end),
            acks: rec.acks.iter().map(|&t| secs(t)).collect(),
            samples: rec
                .samples
                .iter()
                .map(|&(t, n, s)| (secs(t), n, s))
                .collect(),
            marks: rec
                .marks
                .iter()
                .map(|m| layout::MarkAt {
                    at: secs(m.at),
                    label: m.label.clone(),
                    fault: m.kind == MarkKind::Fault,
                })
                .collect(),
            gaps: rec.gaps.iter().map(|&(a, b)| (secs(a), secs(b))).collect(),
            episodes: rec
                .episodes
                .iter()
                .map(|e| (e.title.clone(), secs(e.from), secs(e.to)))
                .collect(),
        });
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        draw::svg(&picture, path)
    }
}

impl PodState {
    /// A pod's state from its status, or `Down` if it did not answer.
    fn of(status: Option<&StatusResponse>) -> PodState {
        let Some(s) = status else {
            return PodState::Down;
        };
        match Role::try_from(s.role).unwrap_or(Role::Unspecified) {
            Role::Leader => PodState::Leader,
            Role::Candidate | Role::PreCandidate => PodState::Candidate,
            _ if !s.voter => PodState::Learner,
            _ if !s.ready => PodState::CatchingUp,
            _ => PodState::Follower,
        }
    }
}
