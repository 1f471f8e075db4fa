//! A live view of a kvstore cluster, for `kvctl top` and `kvstore demo
//! --top`.
//!
//! Several times a second every member is asked for its status (by a
//! [`Source`]: `kvstore_client::poll::StatusPoller` finds the members from
//! the endpoints given and the peers they report). Each poll is compared
//! with the one before, which gives the events: a new leader elected, a
//! leadership transfer, no leader, a pod down and back, a pod caught up, a
//! change of membership ([`model`]). The leader's commit revision rises by
//! one per write, so its rise between polls is the rate of acknowledged
//! writes.
//!
//! On a terminal the view is a table of the pods, a sparkline of writes per
//! second and the event log (`tui`); otherwise, or when asked, plain
//! lines: one per event and, every few seconds, one per pod (`plain`).
//! A caller may pass lines of its own (the demo's narration), which go
//! into the event log among the events; the view ends when their sender
//! is dropped, when the duration given is over, or when the user quits.
//!
//! Modules: [`model`] is the cluster and its events, pure and unit-tested;
//! `session` is one poll after another, shared by both modes; [`log`] is
//! the event log; `rows` a pod as figures; `tui` and `plain` are the two
//! ways to show them.

pub mod log;
pub mod model;
mod plain;
mod rows;
mod session;
mod tui;

use std::future::Future;
use std::io::IsTerminal;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use kvstore_proto::kv::StatusResponse;

/// One member's answer to one poll.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The client endpoint asked (`host:port`).
    pub endpoint: String,
    /// Its status, or why it gave none (short: it is shown in a table).
    pub status: Result<StatusResponse, String>,
}

/// Where the answers come from: every member known, asked once per call.
pub trait Source {
    /// Asks every member once; members that do not answer within a short
    /// timeout are answered for with an error.
    fn poll(&mut self) -> impl Future<Output = Vec<Answer>>;
}

/// How the view runs.
#[derive(Clone, Debug)]
pub struct TopOptions {
    /// Time between polls.
    pub interval: Duration,
    /// Stop after this long (`None`: until the user quits or the
    /// narration ends).
    pub duration: Option<Duration>,
    /// Plain lines even when the output is a terminal.
    pub plain: bool,
    /// Plain mode: one line per pod this often (`Duration::ZERO`: never).
    pub pods_every: Duration,
    /// The view's title (what runs it).
    pub title: String,
}

/// Why the view ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The duration was over, or the narration's sender was dropped.
    Finished,
    /// The user quit (`q`, Esc or Ctrl-C).
    Quit,
}

/// Why the view could not run.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The terminal could not be set up, drawn on or read.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// The runtime the polls run on could not be started.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// How long a member may take to answer a poll before it is shown down:
/// the interval between polls, but at least half a second, which a pod
/// behind a port-forward answers well within. (A pod that is frozen slows
/// the polls down to this.)
pub fn status_timeout(interval: Duration) -> Duration {
    interval.max(Duration::from_millis(500))
}

/// Runs the view until it ends (see [`Ended`]): the terminal view when the
/// standard output is a terminal and `opts.plain` is not set, plain lines
/// otherwise. `narration`, if given, is shown among the events, and the
/// view ends once its sender is dropped.
pub fn run(
    opts: &TopOptions,
    source: &mut impl Source,
    narration: Option<&Receiver<String>>,
) -> Result<Ended, TopError> {
    // One member at a time would do; the polls ask them all at once, on
    // this thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TopError::Runtime)?;
    let session = session::Session::new(opts, source, narration);
    if opts.plain || !std::io::stdout().is_terminal() {
        Ok(runtime.block_on(plain::run(session, opts.pods_every)))
    } else {
        tui::run(&runtime, session, &opts.title)
    }
}
