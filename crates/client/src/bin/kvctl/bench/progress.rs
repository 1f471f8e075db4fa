//! The live progress line on stderr: operations done, the rate since the
//! last line, and p99 so far. Redrawn in place about once a second on a
//! terminal; elsewhere (a log, a pipe) a plain line every few seconds.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often the line is redrawn on a terminal...
const TERMINAL_EVERY: Duration = Duration::from_secs(1);
/// ...and how often a plain line is printed elsewhere.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// What the progress line shows at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// Measured operations done so far (0 while warming up).
    pub(crate) ops: u64,
    /// p99 latency so far, in microseconds (`None` before any answer).
    pub(crate) p99_us: Option<u64>,
    /// Whether the measured part has started.
    pub(crate) measuring: bool,
    /// Anything else worth a glance (a watch's deliveries), or empty.
    pub(crate) note: String,
}

/// A running progress line; [`Progress::finish`] stops and clears it.
pub(crate) struct Progress {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts redrawing the line for `label` from `snapshot`'s answers.
    pub(crate) fn start(
        label: String,
        snapshot: impl Fn() -> Snapshot + Send + 'static,
    ) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let every = if terminal {
            TERMINAL_EVERY
        } else {
            PLAIN_EVERY
        };
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                let now = Instant::now();
                let snap = snapshot();
                let rate = rate(snap.ops.saturating_sub(last.1), now - last.0);
                last = (now, snap.ops);
                let text = line(&label, &snap, rate);
                let mut err = std::io::stderr().lock();
                let _ = if terminal {
                    write!(err, "\r\x1b[2K{text}")
                } else {
                    writeln!(err, "{text}")
                };
                let _ = err.flush();
            }
            if terminal {
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }
        });
        Progress {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the line (clearing it on a terminal) before the report.
    pub(crate) async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Operations per second.
fn rate(ops: u64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        ops as f64 / over.as_secs_f64()
    }
}

/// The text of the line.
fn line(label: &str, snap: &Snapshot, rate: f64) -> String {
    if !snap.measuring {
        return format!("{label}: warming up");
    }
    let p99 = snap.p99_us.map_or("-".to_string(), |us| {
        format!("{:.2} ms", us as f64 / 1000.0)
    });
    format!(
        "{label}: {} ops, {rate:.0} ops/s, p99 {p99}{}",
        snap.ops, snap.note
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_ops_rate_and_p99() {
        let snap = Snapshot {
            ops: 1200,
            p99_us: Some(24_100),
            measuring: true,
            note: String::new(),
        };
        assert_eq!(
            line("kvstore put", &snap, 6800.4),
            "kvstore put: 1200 ops, 6800 ops/s, p99 24.10 ms"
        );
        let warming = Snapshot::default();
        assert_eq!(line("etcd get", &warming, 0.0), "etcd get: warming up");
        assert_eq!(rate(500, Duration::from_millis(500)), 1000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
    }
}
