//! `memtrack watch`: a live view of a ring (like `top`). It attaches as
//! the ring's consumer through a [`Session`] (optionally writing a record
//! file too), samples the session into a [`Model`] once per interval and
//! draws it with ratatui; `view` is a pure function of the model so the
//! screen is tested with ratatui's test backend.

mod model;
mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::session::Session;
use crate::{ring_arg, signals};
use model::Model;

#[derive(Args)]
#[command(after_help = "Keys: q, Esc or Ctrl-C quit; Up/Down (or k/j) scroll the devices by one, \
                  PgUp/PgDn (or Space) by a page, Home/End to the first/last.\n\nExamples:\n  memtrack watch\n  \
                  memtrack watch --ring prod --record prod.mtr\n\nWithout a terminal, use \
                  `memtrack status --ring NAME --interval MS` (or `memtrack record`).")]
pub struct WatchArgs {
    /// Ring name (/dev/shm/memtrack-NAME) or path. Default: $MEMTRACK_RING,
    /// else "default". It must exist (start the workload first).
    #[arg(long, value_name = "NAME")]
    ring: Option<String>,
    /// Refresh the screen every MS milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..))]
    interval: u64,
    /// Also write every record consumed into this record file.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

pub fn run(args: &WatchArgs) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!(
            "watch draws on a terminal and stdout is not one; use `memtrack status --ring NAME --interval MS` \
             (--json for machine output) or `memtrack record`"
        );
    }
    let path = ring_arg::resolve(args.ring.as_deref())?;
    // Attach before taking over the terminal: a refusal (no such ring,
    // another consumer, a corrupt ring) prints as the usual one-line error.
    // Attach only: a mistyped name must not make a ring nobody writes to.
    let mut session = Session::start_existing(&path, args.record.as_deref())?;
    signals::install();
    let recording = args.record.as_ref().map(|f| f.display().to_string());
    let mut model = Model::new(path.display().to_string(), recording, std::process::id(), Instant::now());
    // Installs a panic hook that restores the terminal before the message.
    let terminal = ratatui::try_init().inspect_err(|_| ratatui::restore())?;
    let shown = show(terminal, &mut session, &mut model, Duration::from_millis(args.interval));
    ratatui::restore();
    // Complete the record file even if drawing failed.
    let finished = session.finish();
    shown?;
    finished.map(drop)
}

/// Terminal events handled between two polls of the ring.
const MAX_EVENTS_PER_PASS: usize = 64;

/// Consumes and redraws until a quit key or a termination signal.
fn show(
    mut terminal: DefaultTerminal,
    session: &mut Session,
    model: &mut Model,
    interval: Duration,
) -> Result<()> {
    let mut next_sample = Instant::now();
    // The scroll position (first device on screen) and how many the last
    // frame showed (a page).
    let mut shown = view::Shown { first: 0, count: 1 };
    loop {
        let handled = session.poll()?;
        model.count(handled);
        let mut redraw = false;
        let now = Instant::now();
        if now >= next_sample {
            let snapshot = session.ring().snapshot();
            model.sample(session.engine(), session.losses(), &snapshot, now);
            next_sample = now + interval;
            redraw = true;
        }
        // A bounded number per pass: a terminal that went away (a closed
        // ssh or tmux session) can report events without end, and the
        // SIGHUP that comes with it is checked below.
        if terminal_hung_up() {
            return Ok(());
        }
        for _ in 0..MAX_EVENTS_PER_PASS {
            if !event::poll(Duration::ZERO)? {
                break;
            }
            match event::read()? {
                Event::Key(key) if quits(&key) => return Ok(()),
                Event::Key(key) => {
                    if let Some(first) = scrolled(&key, shown, model.devices.len()) {
                        shown.first = first;
                        redraw = true;
                    }
                }
                Event::Resize(..) => redraw = true,
                _ => {}
            }
        }
        if signals::take().is_some() {
            return Ok(());
        }
        if redraw {
            terminal.draw(|frame| shown = view::render(frame, model, shown.first))?;
        }
        // Keep draining at the consumer's pace: the pause is at most 1 ms.
        session.pause_if_idle(handled);
    }
}

/// Whether the terminal went away (its ssh or tmux session closed).
/// crossterm's `poll` would then spin inside on end-of-file and never
/// return, so ask the kernel first.
fn terminal_hung_up() -> bool {
    let mut stdin = libc::pollfd { fd: libc::STDIN_FILENO, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(&mut stdin, 1, 0) };
    ready > 0 && stdin.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// The first device to show after `key`, if it scrolls: by one (Up/Down,
/// k/j), by a page (PgUp/PgDn, Space), to either end (Home/End).
fn scrolled(key: &KeyEvent, shown: view::Shown, devices: usize) -> Option<usize> {
    if key.kind != KeyEventKind::Press {
        return None;
    }
    let page = shown.count.max(1);
    let first = shown.first;
    let wanted = match key.code {
        KeyCode::Down | KeyCode::Char('j') => first + 1,
        KeyCode::Up | KeyCode::Char('k') => first.saturating_sub(1),
        KeyCode::PageDown | KeyCode::Char(' ') => first + page,
        KeyCode::PageUp => first.saturating_sub(page),
        KeyCode::Home | KeyCode::Char('g') => 0,
        KeyCode::End | KeyCode::Char('G') => devices.saturating_sub(page),
        _ => return None,
    };
    // The last page ends with the last device.
    Some(wanted.min(devices.saturating_sub(page)))
}

/// `q`, Esc and Ctrl-C (raw mode turns it into a key).
fn quits(key: &KeyEvent) -> bool {
    key.kind == KeyEventKind::Press
        && match key.code {
            KeyCode::Char('q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

#[cfg(test)]
mod tests;
