//! Drawing one frame: the pods, writes per second, the event log, and a
//! line of help.

use std::collections::VecDeque;
use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;

use crate::log::{stamp, Entry, EventLog};
use crate::model::{ClusterView, Event};
use crate::rows::{pod_row, HEADER};

/// The columns' widths, in the order of [`HEADER`]: names up to
/// `kvstore-999`, an endpoint (`127.0.0.1:7379`) before a pod answers,
/// revisions up to a billion.
const WIDTHS: [u16; 10] = [3, 16, 13, 7, 5, 12, 10, 10, 8, 9];

/// What one frame shows.
pub(super) struct Shown<'a> {
    pub(super) view: &'a ClusterView,
    pub(super) log: &'a EventLog,
    /// The time since the view started.
    pub(super) elapsed: Duration,
    pub(super) title: &'a str,
}

/// The columns of figures: ordinal, term, commit, applied, lag.
const NUMERIC: [usize; 5] = [0, 4, 6, 7, 8];

/// Draws the whole view.
pub(super) fn draw(frame: &mut Frame, shown: &Shown<'_>) {
    let view = shown.view;
    let pods = view.members().count() as u16;
    let [table, writes, log, help] = Layout::vertical([
        Constraint::Length(pods + 3),
        Constraint::Length(5),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(pods_table(view, shown.title), table);
    frame.render_widget(writes_sparkline(view, writes.width), writes);
    frame.render_widget(event_log(shown.log.entries(), log), log);
    let footer = format!(
        " q: quit   {} since the start",
        stamp(shown.elapsed).trim_matches(['[', ']', ' '])
    );
    frame.render_widget(Line::from(footer), help);
}

/// The table of pods, titled with the leader and its term.
fn pods_table<'a>(view: &ClusterView, title: &str) -> Table<'a> {
    let leader = match view.leader() {
        Some(l) => format!("leader {} (term {})", l.name, l.term),
        None => "no leader".to_string(),
    };
    let rows: Vec<Row> = view
        .members()
        .map(|m| {
            let row = pod_row(view, m);
            let style = row_style(&row.cells[2], &row.cells[9]);
            let cells = row.cells.into_iter().enumerate();
            Row::new(cells.map(|(i, text)| aligned(i, Line::from(text)))).style(style)
        })
        .collect();
    let header = HEADER.iter().enumerate();
    let header = Row::new(header.map(|(i, &title)| aligned(i, Line::from(title))))
        .style(Style::new().add_modifier(Modifier::BOLD));
    Table::new(rows, WIDTHS.map(Constraint::Length))
        .header(header)
        .block(Block::bordered().title(format!(" {title}: {leader} ")))
}

/// Column `column`'s text; figures to the right, so that their digits
/// line up.
fn aligned(column: usize, text: Line<'_>) -> Line<'_> {
    if NUMERIC.contains(&column) {
        text.right_aligned()
    } else {
        text
    }
}

/// The leader stands out; a pod down is red, one not ready yellow.
fn row_style(role: &str, health: &str) -> Style {
    match (role, health) {
        (_, "down") => Style::new().fg(Color::Red),
        (_, "not-ready") => Style::new().fg(Color::Yellow),
        ("leader", _) => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        _ => Style::new(),
    }
}

/// Writes per second, as many as fit, the latest at the right edge (blank
/// before the first).
fn writes_sparkline<'a>(view: &ClusterView, width: u16) -> Sparkline<'a> {
    let history = view.writes().history();
    let room = usize::from(width.saturating_sub(2));
    let shown = room.min(history.len());
    let recent = history.iter().skip(history.len() - shown).copied();
    let data: Vec<Option<u64>> = std::iter::repeat_n(None, room - shown)
        .chain(recent.map(Some))
        .collect();
    let peak = data.iter().flatten().copied().max().unwrap_or(0);
    let now = view.writes().now().unwrap_or(0);
    Sparkline::default()
        .data(data)
        .style(Style::new().fg(Color::Cyan))
        .block(Block::bordered().title(format!(
            " acknowledged writes/s (the leader's commit rise): now {now}, peak {peak} "
        )))
}

/// The newest entries that fit, newest last, long ones wrapped.
fn event_log<'a>(entries: &VecDeque<Entry>, area: Rect) -> Paragraph<'a> {
    let width = usize::from(area.width.saturating_sub(2)).max(1);
    let height = usize::from(area.height.saturating_sub(2));
    let mut lines: Vec<Line> = Vec::new();
    for entry in entries.iter().rev() {
        let style = entry_style(entry);
        let text = entry.to_string();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(width).rev() {
            lines.push(Line::styled(piece.iter().collect::<String>(), style));
        }
        if lines.len() >= height {
            break;
        }
    }
    lines.truncate(height);
    lines.reverse();
    Paragraph::new(lines).block(Block::bordered().title(" events "))
}

/// Narration in blue; leadership in green; a pod down in red.
fn entry_style(entry: &Entry) -> Style {
    match entry {
        Entry::Line(_) => Style::new().fg(Color::Blue),
        Entry::Event { event, .. } => match event {
            Event::Elected { .. } | Event::Transfer { .. } => Style::new().fg(Color::Green),
            Event::Down { .. } | Event::NoLeader { .. } => Style::new().fg(Color::Red),
            _ => Style::new(),
        },
    }
}

#[cfg(test)]
mod tests;
