//! One pod as a row of figures, for the terminal's table and the plain
//! lines alike.

use kvstore_proto::{membership, role_name};

use crate::model::{ClusterView, Member};

/// The columns, in order.
pub const HEADER: [&str; 10] = [
    "ORD", "NAME", "ROLE", "MEMBER", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG", "HEALTH",
];

/// One pod's figures as text; `-` where there is nothing to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRow {
    /// The cells, in the order of [`HEADER`].
    pub cells: [String; 10],
    /// Why the pod did not answer the last poll, if it did not.
    pub down: Option<String>,
}

/// The row of `member`. A pod that does not answer shows its ordinal and
/// name (from its last answer) and `down`; the rest is not known.
pub fn pod_row(view: &ClusterView, member: &Member) -> PodRow {
    let ordinal = member.ordinal().map_or("-".to_string(), |o| o.to_string());
    let name = member.name().to_string();
    let Some(s) = member.status() else {
        let dash = || "-".to_string();
        return PodRow {
            cells: [
                ordinal,
                name,
                "down".into(),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                "down".into(),
            ],
            down: member.down.clone(),
        };
    };
    let lag = view.lag(member).unwrap_or(0);
    PodRow {
        cells: [
            ordinal,
            name,
            role_name(s.role).into(),
            membership(s).into(),
            s.term.to_string(),
            if s.leader.is_empty() {
                "-".into()
            } else {
                s.leader.clone()
            },
            s.commit_revision.to_string(),
            s.applied_revision.to_string(),
            lag.to_string(),
            if s.ready { "ready" } else { "not-ready" }.into(),
        ],
        down: None,
    }
}

/// The row as one plain line of `key=value` figures:
/// `pod kvstore-0 ord=0 role=leader ... health=ready`.
pub fn plain_line(row: &PodRow) -> String {
    let [ord, name, rest @ ..] = &row.cells;
    let mut line = format!("pod {name} ord={ord}");
    for (key, value) in HEADER[2..].iter().zip(rest) {
        line.push_str(&format!(" {}={value}", key.to_lowercase()));
    }
    if let Some(reason) = &row.down {
        line.push_str(&format!(" ({reason})"));
    }
    line
}

/// The cluster as one plain line: who leads, in which term, and the
/// latest writes per second (`-` where not known).
pub fn cluster_line(view: &ClusterView) -> String {
    let (leader, term) = match view.leader() {
        Some(l) => (l.name.clone(), l.term.to_string()),
        None => ("-".into(), "-".into()),
    };
    let writes = view.writes().now().map_or("-".into(), |w| w.to_string());
    format!("cluster leader={leader} term={term} writes_per_s={writes}")
}
