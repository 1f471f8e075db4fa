//! One frame drawn on ratatui's test backend, read back as text.

use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::{draw, Shown};
use crate::log::{Entry, EventLog};
use crate::model::fixtures::{down, steady};
use crate::model::ClusterView;

/// The screen's rows as text, frame characters and all.
fn drawn(view: &ClusterView, log: &EventLog, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    let shown = Shown {
        view,
        log,
        elapsed: Duration::from_secs(3),
        title: "test",
    };
    terminal
        .draw(|frame| draw(frame, &shown))
        .expect("draw on the test backend");
    let buffer = terminal.backend().buffer();
    (0..height)
        .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect())
        .collect()
}

/// The cells of the table row that starts with `ordinal`.
fn row(screen: &[String], ordinal: &str) -> Vec<String> {
    screen
        .iter()
        .map(|l| l.replace('│', " "))
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.len() == 10 && cells[0] == ordinal)
        .unwrap_or_default()
}

/// The table shows each pod's figures (a pod down as such), the event log
/// shows the events and the caller's lines, wrapped, newest last.
#[test]
fn a_frame_shows_the_pods_the_writes_and_the_events() {
    let t0 = Instant::now();
    let mut view = ClusterView::default();
    let mut log = EventLog::default();
    view.observe(&steady(0, 4, 100), t0);
    let mut polled = steady(0, 4, 350);
    polled[2] = down(2);
    for event in view.observe(&polled, t0 + Duration::from_millis(250)) {
        log.push(Entry::Event {
            at: Duration::from_millis(250),
            event,
        });
    }
    let long = format!("[   0.300s] {}", "narrated ".repeat(15));
    log.push(Entry::Line(long.clone()));

    let screen = drawn(&view, &log, 110, 24);
    let leader = row(&screen, "0");
    assert_eq!(leader[1..3], ["kvstore-0", "leader"]);
    assert_eq!(leader[4..9], ["4", "kvstore-0", "350", "350", "0"]);
    let gone = row(&screen, "2");
    assert_eq!(gone[1..3], ["kvstore-2", "down"]);
    assert_eq!(gone[9], "down");

    let text = screen.join("\n");
    assert!(text.contains("peak 1000"), "{text}");
    let down_at = text.find("down kvstore-2").expect("the event");
    let narrated_at = text.find("[   0.300s]").expect("the caller's line");
    assert!(down_at < narrated_at, "newest last:\n{text}");
    // Wrapped at the panel's edge, not cut: every word is there once the
    // frame and the line breaks are taken out.
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '│')
        .collect();
    assert_eq!(compact.matches("narrated").count(), 15, "{text}");
}
