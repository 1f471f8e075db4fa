//! What the demo measured, and the summary table printed at its end.

use std::time::Duration;

use super::load::SHARED_KEYS;
use kvstore_lincheck::Verdict;

/// One leader kill and what followed.
#[derive(Clone, Debug)]
pub struct Failover {
    /// The ordinal killed.
    pub killed: u32,
    /// Who took over.
    pub new_leader: u32,
    /// The new leader's term.
    pub term: u64,
    /// From the kill until a new leader was known.
    pub election: Duration,
    /// The longest gap between acknowledged writes around the kill.
    pub write_gap: Duration,
    /// From the kill until the pod was running again.
    pub restarted: Duration,
    /// From the restart until it had applied the leader's commit index.
    pub catch_up: Duration,
    /// From catching up until it led again (when it has the lowest ordinal).
    pub leadership_back: Option<Duration>,
}

/// One pod of the rolling restart.
#[derive(Clone, Debug)]
pub struct RollingStep {
    /// The pod's ordinal.
    pub ordinal: u32,
    /// The longest gap between acknowledged writes while it restarted.
    pub write_gap: Duration,
    /// How its process ended ("exit code 0" for a clean stop).
    pub exit: String,
    /// Whether it led when it was asked to stop.
    pub was_leader: bool,
    /// Whether it handed leadership over before stopping (its log says so).
    pub handed_over: bool,
}

/// One scale step and what followed.
#[derive(Clone, Debug)]
pub struct ScaleStep {
    /// Replicas before.
    pub from: u32,
    /// Replicas after.
    pub to: u32,
    /// From the change of the desired count until the configuration was
    /// exactly the voters `0..to` (new pods running and voting, removed pods
    /// gone).
    pub took: Duration,
    /// The longest gap between acknowledged writes meanwhile.
    pub write_gap: Duration,
    /// What happened, in order (pods created or deleted, members joining,
    /// catching up, promoted, leaving).
    pub events: Vec<String>,
}

/// The demo's outcome.
#[derive(Clone, Debug)]
pub struct Report {
    /// Each leader kill.
    pub failovers: Vec<Failover>,
    /// Each pod restarted in the rolling restart, in order.
    pub rolling: Vec<RollingStep>,
    /// Each scale step.
    pub scaling: Vec<ScaleStep>,
    /// Writes acknowledged.
    pub acked: usize,
    /// Writes whose outcome is unknown (the client got an error that does not
    /// say whether they applied).
    pub unknown: usize,
    /// Acknowledged writes not readable at the end.
    pub lost: Vec<String>,
    /// The verdict on the shared keys' history.
    pub linearizable: Verdict,
    /// Operations in that history.
    pub history_ops: usize,
    /// Wall time of the whole demo.
    pub elapsed: Duration,
}

impl Report {
    /// The median write gap over the kills.
    pub fn median_write_gap(&self) -> Option<Duration> {
        median(self.failovers.iter().map(|f| f.write_gap).collect())
    }
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

/// A duration as the narration and the summary print it.
pub(super) fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// The summary table.
pub fn summary(report: &Report) -> String {
    let mut lines = vec!["summary".to_string()];
    lines.push(row(
        "leader kills (SIGKILL)",
        report.failovers.len().to_string(),
    ));
    if !report.failovers.is_empty() {
        lines.extend(failover_rows(&report.failovers));
    }
    if !report.rolling.is_empty() {
        let worst = report
            .rolling
            .iter()
            .map(|r| r.write_gap)
            .max()
            .unwrap_or_default();
        lines.push(row("rolling restart: longest write gap", ms(worst)));
    }
    for step in &report.scaling {
        lines.push(row(
            &format!("scale {} -> {}", step.from, step.to),
            format!(
                "{} (longest write gap {})",
                ms(step.took),
                ms(step.write_gap)
            ),
        ));
    }
    lines.push(row("writes acknowledged", report.acked.to_string()));
    lines.push(row("writes of unknown outcome", report.unknown.to_string()));
    lines.push(row(
        "acknowledged writes lost",
        report.lost.len().to_string(),
    ));
    lines.push(row(
        "linearizable history",
        format!(
            "{} ({} operations on {SHARED_KEYS} keys)",
            match report.linearizable {
                Verdict::Linearizable => "yes",
                Verdict::Violation { .. } => "NO",
                Verdict::Undecided { .. } => "undecided",
            },
            report.history_ops
        ),
    ));
    lines.push(row(
        "demo took",
        format!("{:.1} s", report.elapsed.as_secs_f64()),
    ));
    lines.join("\n")
}

/// The heading of the demo's timeline picture: what was done, and the
/// outcome.
pub(super) fn picture_title(report: &Report) -> String {
    let mut done = Vec::new();
    match report.failovers.len() {
        0 => {}
        1 => done.push("a leader kill (SIGKILL)".to_string()),
        n => done.push(format!("{n} leader kills (SIGKILL)")),
    }
    if !report.rolling.is_empty() {
        done.push("a rolling restart".into());
    }
    for s in &report.scaling {
        done.push(format!("scale {} -> {}", s.from, s.to));
    }
    format!(
        "kvstore demo: {} under load; {} writes acknowledged, {} lost",
        done.join(", "),
        report.acked,
        report.lost.len()
    )
}

/// One line of the summary table.
fn row(name: &str, value: String) -> String {
    format!("  {name:<38} {value}")
}

/// The summary's timings of the leader kills, one row per phase.
fn failover_rows(failovers: &[Failover]) -> Vec<String> {
    let of = |phase: fn(&Failover) -> Duration| failovers.iter().map(phase).collect();
    vec![
        row(
            "failover window (longest write gap)",
            spread(of(|f| f.write_gap)),
        ),
        row("kill -> new leader elected", spread(of(|f| f.election))),
        row("kill -> pod running again", spread(of(|f| f.restarted))),
        row("restart -> caught up", spread(of(|f| f.catch_up))),
        row(
            "caught up -> kvstore-0 leads again",
            spread(failovers.iter().filter_map(|f| f.leadership_back).collect()),
        ),
    ]
}

/// Durations as one number when there is one, else their median and range.
fn spread(v: Vec<Duration>) -> String {
    let Some(m) = median(v.clone()) else {
        return "-".into();
    };
    let (min, max) = (
        v.iter().min().copied().unwrap_or_default(),
        v.iter().max().copied().unwrap_or_default(),
    );
    if v.len() == 1 {
        ms(m)
    } else {
        format!(
            "median {} (min {}, max {}, n = {})",
            ms(m),
            ms(min),
            ms(max),
            v.len()
        )
    }
}
