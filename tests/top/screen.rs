//! Reading the view's figures back from its text: the rows of the pods'
//! table (on a terminal), the event lines and the plain pod lines. Only
//! the structure is relied on (a kind, a pod, `key=value` figures; the
//! table's columns), never the wording.

use std::collections::BTreeMap;

/// One pod as the terminal's table shows it.
#[derive(Clone, Debug)]
pub struct TableRow {
    pub ordinal: u32,
    pub role: String,
    pub term: Option<u64>,
    pub health: String,
}

/// The rows of the pods' table: lines of ten cells whose first is an
/// ordinal and whose second a pod name.
pub fn table_rows(screen: &str) -> Vec<TableRow> {
    screen
        .lines()
        .filter_map(|line| {
            let line = unframed(line);
            let cells: Vec<&str> = line.split_whitespace().collect();
            if cells.len() != 10 || !cells[1].starts_with("kvstore-") {
                return None;
            }
            Some(TableRow {
                ordinal: cells[0].parse().ok()?,
                role: cells[2].to_string(),
                term: cells[4].parse().ok(),
                health: cells[9].to_string(),
            })
        })
        .collect()
}

/// The ordinal and term of the row whose role is leader, if one is.
pub fn table_leader(rows: &[TableRow]) -> Option<(u32, u64)> {
    rows.iter()
        .find(|r| r.role == "leader")
        .map(|r| (r.ordinal, r.term.unwrap_or(0)))
}

/// One stamped line: `[   1.234s] KIND [POD] key=value ...`.
#[derive(Clone, Debug)]
pub struct Line {
    pub kind: String,
    pub pod: Option<String>,
    pub figures: BTreeMap<String, String>,
}

impl Line {
    /// The figure `key` as a number.
    pub fn number(&self, key: &str) -> Option<u64> {
        self.figures.get(key)?.parse().ok()
    }

    /// Whether this is a `kind` line about `pod`.
    pub fn is(&self, kind: &str, pod: &str) -> bool {
        self.kind == kind && self.pod.as_deref() == Some(pod)
    }
}

/// Every stamped line of one of the view's kinds (events, and `pod`
/// lines), in order; the demo's own lines are left out.
pub fn lines(text: &str) -> Vec<Line> {
    const KINDS: [&str; 8] = [
        "elected",
        "transfer",
        "no-leader",
        "down",
        "back",
        "caught-up",
        "members",
        "pod",
    ];
    text.lines()
        .filter_map(|line| {
            let line = unframed(line);
            let (_, rest) = line.split_once("s] ")?;
            let mut words = rest.split_whitespace();
            let kind = words.next().filter(|k| KINDS.contains(k))?.to_string();
            let words: Vec<&str> = words.collect();
            let pod = words
                .first()
                .filter(|w| !w.contains('='))
                .map(|w| w.to_string());
            let figures = words
                .iter()
                .filter_map(|w| w.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some(Line { kind, pod, figures })
        })
        .collect()
}

/// The position of the first line after `from` that `matches`.
pub fn find_after(lines: &[Line], from: usize, matches: impl Fn(&Line) -> bool) -> Option<usize> {
    lines.iter().skip(from).position(matches).map(|i| i + from)
}

/// A line without the frame the terminal draws around panels.
fn unframed(line: &str) -> String {
    line.replace('│', " ").trim().to_string()
}
