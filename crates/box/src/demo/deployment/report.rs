//! What `--as-deployment` measured, and its two-column summary table.

use std::time::Duration;

use super::super::report::ms;
use kvstore_lincheck::Verdict;

/// What brings a killed pod back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    /// The same pod again: same name, same DNS name, same volume (its new
    /// address, in a cluster, is found through the name).
    StatefulSet,
    /// A new pod: a random name, a new address, an empty volume, and no
    /// DNS name of its own.
    Deployment,
}

impl Controller {
    /// Its name, as the table's column header.
    pub fn name(self) -> &'static str {
        match self {
            Controller::StatefulSet => "StatefulSet",
            Controller::Deployment => "Deployment",
        }
    }
}

/// Whether the pod that came back was taken as the member that was killed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acceptance {
    /// It answered as the killed ordinal, in the same cluster, and a member
    /// of its configuration.
    pub accepted: bool,
    /// Why, in a few words (the summary's cell).
    pub reason: String,
    /// What showed it: the Status it answered, or how its process ended and
    /// the last line it logged.
    pub evidence: String,
}

/// What a client of the killed pod's DNS name saw: one linearizable read at
/// a time, the name resolved through the box's DNS again after every
/// failure (as a client reconnecting does).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OldNameReads {
    /// Reads answered before the kill (the client worked).
    pub ok_before_kill: usize,
    /// Reads answered after the killed process was gone.
    pub ok_after_kill: usize,
    /// Look-ups of the name answered NXDOMAIN after the kill.
    pub nxdomain_after_kill: usize,
    /// Other failures after the kill: nothing listening, a read refused or
    /// timed out.
    pub errors_after_kill: usize,
    /// From the kill to the first read answered after it.
    pub first_ok_after_kill: Option<Duration>,
}

/// One kill of the leader, kvstore-0, and what followed under one
/// controller.
#[derive(Clone, Debug)]
pub struct ControllerRun {
    /// Which controller brought a pod back.
    pub controller: Controller,
    /// The pod that came back: kvstore-0 again, or the replacement.
    pub pod: String,
    /// Whether it was taken as the old member.
    pub acceptance: Acceptance,
    /// From the kill until every voter was up and caught up again (the
    /// leader reaches each, and each is ready at that address with the
    /// leader's commit revision applied); `None`: not within the window.
    pub restored_after: Option<Duration>,
    /// What the pod that came back lacked: the leader's stored bytes when
    /// it came back, minus what that pod held.
    pub bytes_to_copy: u64,
    /// The leader's stored bytes (keys and values, data and history) when
    /// the pod came back (or at the window's end, if it did not).
    pub leader_stored_bytes: u64,
    /// What the pod that came back held: for kvstore-0, its stored bytes
    /// just before the kill (its volume keeps them); for a replacement, its
    /// own stored bytes if it ran, else the bytes on its new volume.
    pub held_bytes: u64,
    /// What the client of the old name saw.
    pub old_name: OldNameReads,
    /// Writes acknowledged.
    pub acked: usize,
    /// Writes of unknown outcome.
    pub unknown: usize,
    /// Acknowledged writes not readable at the end.
    pub lost: Vec<String>,
    /// The verdict on the shared keys' history.
    pub linearizable: Verdict,
}

/// The same kill under a StatefulSet and under a Deployment.
#[derive(Clone, Debug)]
pub struct DeploymentReport {
    /// How long each run watched the cluster after the kill.
    pub window: Duration,
    /// The StatefulSet's run.
    pub statefulset: ControllerRun,
    /// The Deployment's run.
    pub deployment: ControllerRun,
    /// Wall time of both runs.
    pub elapsed: Duration,
}

impl DeploymentReport {
    /// Acknowledged writes lost in both runs.
    pub fn lost(&self) -> usize {
        self.statefulset.lost.len() + self.deployment.lost.len()
    }
}

/// The two-column summary: one row per measure, one column per controller.
pub fn deployment_summary(report: &DeploymentReport) -> String {
    let (s, d) = (&report.statefulset, &report.deployment);
    let window = report.window;
    let rows: Vec<(String, String, String)> = MEASURES
        .iter()
        .map(|(name, cell)| {
            (
                name.replace("{w}", &secs(window)),
                cell(s, window),
                cell(d, window),
            )
        })
        .collect();
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    let header = (
        String::new(),
        s.controller.name().to_string(),
        d.controller.name().to_string(),
    );
    let table = std::iter::once(&header)
        .chain(&rows)
        .map(|(a, b, c)| format!("  {a:<w0$}  {b:<w1$}  {c}"));
    let evidence = [s, d]
        .into_iter()
        .map(|r| format!("  {}: {}", r.controller.name(), r.acceptance.evidence));
    table
        .chain(std::iter::once(String::new()))
        .chain(evidence)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A cell of one row of the summary, for one run.
type Cell = fn(&ControllerRun, Duration) -> String;

/// The summary's rows: each measure's name (`{w}`: the window) and cell.
const MEASURES: [(&str, Cell); 8] = [
    ("pod that came back", |r, _| r.pod.clone()),
    ("accepted as the old member", |r, _| accepted(&r.acceptance)),
    ("time with less redundancy", |r, w| {
        r.restored_after
            .map_or_else(|| format!("not restored after {}", secs(w)), ms)
    }),
    ("bytes to copy when the pod came back", |r, _| {
        format!(
            "{} of {} stored",
            bytes(r.bytes_to_copy),
            bytes(r.leader_stored_bytes)
        )
    }),
    ("old-name reads OK in {w} after the kill", |r, _| {
        let first = r.old_name.first_ok_after_kill;
        let first = first.map_or("none".into(), |d| format!("first after {}", ms(d)));
        format!("{} ({first})", r.old_name.ok_after_kill)
    }),
    ("old-name failures: NXDOMAIN, other", |r, _| {
        format!(
            "{}, {}",
            r.old_name.nxdomain_after_kill, r.old_name.errors_after_kill
        )
    }),
    ("writes acknowledged", |r, _| r.acked.to_string()),
    ("acknowledged writes lost", |r, _| r.lost.len().to_string()),
];

fn accepted(a: &Acceptance) -> String {
    format!("{} ({})", if a.accepted { "yes" } else { "no" }, a.reason)
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Bytes with thousands separators.
fn bytes(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out} B")
}
