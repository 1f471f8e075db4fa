//! The terminal view: the table of pods, the sparkline of writes per
//! second and the event log, redrawn after every poll. The terminal is
//! restored when the view ends, returns early on an error, or panics
//! (ratatui's panic hook). `q`, Esc and Ctrl-C quit.

mod render;

use std::time::Instant;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::DefaultTerminal;
use tokio::runtime::Runtime;

use crate::session::Session;
use crate::{Ended, Source, TopError};

/// Runs the view on the terminal until the session ends or the user
/// quits.
pub(crate) fn run<S: Source>(
    runtime: &Runtime,
    mut session: Session<'_, S>,
    title: &str,
) -> Result<Ended, TopError> {
    let mut screen = Screen::enter()?;
    loop {
        let tick = runtime.block_on(session.tick());
        let shown = render::Shown {
            view: &session.view,
            log: &session.log,
            elapsed: session.elapsed(),
            title,
        };
        screen.terminal.draw(|frame| render::draw(frame, &shown))?;
        if tick.narration_over || session.over() {
            return Ok(Ended::Finished);
        }
        if quit_asked_before(session.next_poll())? {
            return Ok(Ended::Quit);
        }
    }
}

/// The terminal in raw mode on the alternate screen, given back as it was
/// when dropped.
struct Screen {
    terminal: DefaultTerminal,
}

impl Screen {
    fn enter() -> std::io::Result<Screen> {
        Ok(Screen {
            terminal: ratatui::try_init()?,
        })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Reads keys until `deadline`; whether one of them asks to quit. (In raw
/// mode Ctrl-C is a key, not a signal.)
fn quit_asked_before(deadline: Instant) -> std::io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !event::poll(left)? {
            return Ok(false);
        }
        if let Event::Key(key) = event::read()? {
            let ctrl_c =
                key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
            let quit = matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c;
            if key.kind == KeyEventKind::Press && quit {
                return Ok(true);
            }
        }
    }
}
