//! Plain lines, for an output that is not a terminal (or `--plain`): one
//! line per event as it happens, the caller's lines as they come, and
//! every few seconds one line for the cluster (leader, term, writes per
//! second) and one per pod. Every line is greppable and made of
//! `key=value` figures after its kind.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::log::stamp;
use crate::rows::{cluster_line, plain_line, pod_row};
use crate::session::Session;
use crate::{Ended, Source};

/// Runs until the session ends, the reader goes away (a closed pipe), or
/// Ctrl-C.
pub(crate) async fn run<S: Source>(mut session: Session<'_, S>, pods_every: Duration) -> Ended {
    let mut interrupt = std::pin::pin!(interrupted());
    let mut next_pods = Instant::now();
    loop {
        let tick = session.tick().await;
        let mut lines: Vec<String> = tick.added.iter().map(ToString::to_string).collect();
        // Pods that have never answered (the view may start before them)
        // make no table yet.
        let due = Instant::now() >= next_pods && session.view.any_answered();
        if !pods_every.is_zero() && due {
            lines.extend(pod_lines(&session));
            next_pods = (next_pods + pods_every).max(Instant::now());
        }
        if write_lines(&lines).is_err() {
            return Ended::Finished;
        }
        if tick.narration_over || session.over() {
            return Ended::Finished;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(session.next_poll().into()) => {}
            _ = &mut interrupt => return Ended::Quit,
        }
    }
}

/// A line for the cluster and one per pod shown, stamped with the time
/// since the start.
fn pod_lines<S: Source>(session: &Session<'_, S>) -> Vec<String> {
    let at = stamp(session.elapsed());
    let view = &session.view;
    let pods = view
        .members()
        .map(|m| format!("{at} {}", plain_line(&pod_row(view, m))));
    std::iter::once(format!("{at} {}", cluster_line(view)))
        .chain(pods)
        .collect()
}

/// Writes and flushes `lines` on the standard output.
fn write_lines(lines: &[String]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// Completes on Ctrl-C; never, if the handler cannot be installed (the
/// default one then ends the process, which is what Ctrl-C asks).
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
