//! What each way of reaching the cluster saw, and the summary table that
//! sets them side by side.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::session::Way;

/// What the sessions of one way saw, added up.
#[derive(Clone, Debug, Default)]
pub struct WayFigures {
    /// Sessions (clients) of this way.
    pub sessions: usize,
    /// Writes acknowledged.
    pub writes_acked: u64,
    /// Reads answered.
    pub reads: u64,
    /// Reads that did not return the value the session had just written
    /// (and had been told was acknowledged).
    pub missed: u64,
    /// Writes that failed (after the session's retries).
    pub write_errors: u64,
    /// Reads that failed (after the session's retries).
    pub read_errors: u64,
    /// The longest time any one session went without a write acknowledged
    /// and read back.
    pub longest_stall: Duration,
    /// Reads answered, by the name of the pod that answered.
    pub served_by: BTreeMap<String, u64>,
    /// Sessions whose last acknowledged write was not in the store at the
    /// end (each write overwrites the session's key, so the last one is
    /// what can be checked).
    pub lost: u64,
}

impl WayFigures {
    /// The figures of a session that has done nothing yet.
    pub(super) fn one_session() -> WayFigures {
        WayFigures {
            sessions: 1,
            ..WayFigures::default()
        }
    }

    /// Adds another session's figures to these.
    pub(super) fn add(&mut self, other: &WayFigures) {
        self.sessions += other.sessions;
        self.writes_acked += other.writes_acked;
        self.reads += other.reads;
        self.missed += other.missed;
        self.write_errors += other.write_errors;
        self.read_errors += other.read_errors;
        self.longest_stall = self.longest_stall.max(other.longest_stall);
        self.lost += other.lost;
        for (pod, n) in &other.served_by {
            *self.served_by.entry(pod.clone()).or_default() += n;
        }
    }

    /// Errors of writes and reads together.
    pub fn errors(&self) -> u64 {
        self.write_errors + self.read_errors
    }

    /// How many pods answered reads.
    pub fn pods_serving(&self) -> usize {
        self.served_by.values().filter(|&&n| n > 0).count()
    }
}

/// The outcome of `kvstore demo --sessions`.
#[derive(Clone, Debug)]
pub struct SessionsReport {
    /// The pod the pinned sessions stuck to, and the one killed.
    pub pinned_pod: u32,
    /// Every pod's name, in ordinal order.
    pub pods: Vec<String>,
    /// From the kill until the pod was back and caught up.
    pub down: Duration,
    /// Sessions pinned to one pod.
    pub pinned: WayFigures,
    /// Sessions reading SERIALIZABLE from any pod.
    pub serializable: WayFigures,
    /// Sessions reading from any pod with their last write's revision.
    pub token: WayFigures,
    /// Wall time of the whole demo.
    pub elapsed: Duration,
}

impl SessionsReport {
    /// The figures of `way`.
    pub fn way(&self, way: Way) -> &WayFigures {
        match way {
            Way::Pinned => &self.pinned,
            Way::Serializable => &self.serializable,
            Way::Token => &self.token,
        }
    }

    /// Whether the demo showed what it claims: no read with the token missed
    /// its session's write, and no way lost an acknowledged write.
    pub fn passed(&self) -> bool {
        self.token.missed == 0 && Way::ALL.iter().all(|&w| self.way(w).lost == 0)
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let way = |w: Way| {
            let f = self.way(w);
            json!({
                "sessions": f.sessions, "writes_acked": f.writes_acked, "reads": f.reads,
                "missed": f.missed, "write_errors": f.write_errors, "read_errors": f.read_errors,
                "longest_stall_ms": f.longest_stall.as_millis() as u64,
                "served_by": f.served_by, "lost": f.lost,
            })
        };
        json!({
            "pinned_pod": self.pinned_pod,
            "down_ms": self.down.as_millis() as u64,
            "pinned": way(Way::Pinned),
            "serializable": way(Way::Serializable),
            "token": way(Way::Token),
            "passed": self.passed(),
        })
    }

    /// A column's heading.
    fn heading(&self, way: Way) -> String {
        match way {
            Way::Pinned => format!("pinned to kvstore-{}", self.pinned_pod),
            Way::Serializable => "serializable, any pod".into(),
            Way::Token => "min_revision, any pod".into(),
        }
    }
}

/// The summary table: one column per way.
pub fn sessions_summary(report: &SessionsReport) -> String {
    let mut lines = vec![format!(
        "summary (kvstore-{} killed with SIGKILL; back and caught up {} ms later)",
        report.pinned_pod,
        report.down.as_millis()
    )];
    let headings = Way::ALL.map(|w| report.heading(w));
    lines.push(row("", &headings));
    let figure = |f: fn(&WayFigures) -> String| Way::ALL.map(|w| f(report.way(w)));
    lines.push(row("sessions", &figure(|f| f.sessions.to_string())));
    lines.push(row(
        "writes acknowledged",
        &figure(|f| f.writes_acked.to_string()),
    ));
    lines.push(row("reads", &figure(|f| f.reads.to_string())));
    lines.push(row(
        "reads that missed the session's own write",
        &figure(|f| f.missed.to_string()),
    ));
    lines.push(row(
        "errors (writes + reads)",
        &figure(|f| format!("{} + {}", f.write_errors, f.read_errors)),
    ));
    lines.push(row(
        "longest time a session made no progress",
        &figure(|f| format!("{} ms", f.longest_stall.as_millis())),
    ));
    for pod in &report.pods {
        let served = Way::ALL.map(|w| {
            let n = report.way(w).served_by.get(pod).copied().unwrap_or(0);
            n.to_string()
        });
        lines.push(row(&format!("reads served by {pod}"), &served));
    }
    lines.push(row(
        "acknowledged writes lost",
        &figure(|f| f.lost.to_string()),
    ));
    lines.push(format!("  demo took {:.1} s", report.elapsed.as_secs_f64()));
    lines.join("\n")
}

/// One line of the table.
fn row(name: &str, cells: &[String]) -> String {
    let cells: Vec<String> = cells.iter().map(|c| format!("{c:<23}")).collect();
    format!("  {name:<42} {}", cells.join(""))
        .trim_end()
        .to_string()
}
