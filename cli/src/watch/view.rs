//! Drawing a [`Model`]: a pure function of the model, the frame size and
//! the first device to show (the scroll position).
//!
//! Top to bottom: a header (what is shown, the keys, rate, records, ring),
//! the loss counters, the rings stopped at a corrupt slot (a line only
//! when there are some), one section per device (a row per kind: its bar, used
//! / total or used and peak, buffers, and a sparkline of its own history
//! scaled to its own peak), the processes, and the latest
//! anomalies and marks. Every section gets whole rows from [`Plan`]: the
//! processes, anomalies and marks keep at least their title and one line
//! whatever the size (they shorten, never vanish), the devices get what is
//! left from the scroll position on, and the header says which devices are
//! on screen ("devices 1-15 of 32"). No widget is ever given a rectangle
//! outside the frame, which ratatui would panic on.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, LineGauge, Paragraph, RenderDirection, Row, Sparkline, Table};

use super::model::{Device, KindRow, Model};
use crate::engine::{Anomaly, AnomalyKind, ProcState};
use crate::units::{human_bytes, human_ns, kind_name, printable};

/// From this width on, the anomalies and marks are side by side.
const SIDE_BY_SIDE: u16 = 160;

/// Below this width, kind rows have no sparkline.
const SPARK_FROM_WIDTH: u16 = 60;

/// Widest sparkline (samples shown).
const SPARK_MAX_WIDTH: u16 = 48;

/// Which devices a frame showed, for the next scroll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown {
    /// Index (in `Model::devices`) of the first device on screen.
    pub first: usize,
    /// Devices on screen, at least 1 when there are any.
    pub count: usize,
}

/// Draws `model` over the whole frame, devices from index `first` on
/// (clamped to the last device); returns which devices it showed.
pub fn render(frame: &mut Frame, model: &Model, first: usize) -> Shown {
    let area = frame.area();
    let plan = Plan::new(area, model, first);
    let shown = Shown { first: plan.first, count: plan.devices.len() };
    let mut rows = Rows { area, y: area.y };

    frame.render_widget(Paragraph::new(header(model, shown, area.width)), rows.take(plan.header));
    frame.render_widget(Paragraph::new(losses(model, area.width)), rows.take(plan.losses));
    frame.render_widget(Paragraph::new(stopped(model, area.width)), rows.take(plan.stopped));
    for (device, &height) in model.devices[plan.first..].iter().zip(&plan.devices) {
        render_device(frame, rows.take(height), device);
    }
    render_processes(frame, rows.take(plan.processes), model);
    render_events(frame, rows.take(plan.events), model);
    shown
}

/// Rows of the screen per section; 0 leaves a section out.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The header line.
    pub header: u16,
    /// The loss line.
    pub losses: u16,
    /// The line naming the rings stopped at a corrupt slot (0 rows when
    /// there are none).
    pub stopped: u16,
    /// Index of the first device shown.
    pub first: usize,
    /// Per device shown, from `first` on: its title and kind rows.
    pub devices: Vec<u16>,
    /// Title, column names and process rows.
    pub processes: u16,
    /// Anomalies and marks.
    pub events: u16,
}

/// Rows left to hand out.
struct Budget(u16);

impl Budget {
    /// Up to `want` rows.
    fn take(&mut self, want: u16) -> u16 {
        let got = want.min(self.0);
        self.0 -= got;
        got
    }
}

impl Plan {
    /// Hands out the rows of `area`: the header and the losses; the least
    /// the processes and the events need (a title and one line each); as
    /// many whole devices as fit from `first` on (the first one cut short
    /// if even it does not fit); then the rest of the processes and events.
    pub fn new(area: Rect, model: &Model, first: usize) -> Plan {
        let first = first.min(model.devices.len().saturating_sub(1));
        let mut budget = Budget(area.height);
        let header = budget.take(1);
        let losses = budget.take(1);
        let stopped = budget.take(u16::from(!model.corrupt.is_empty()));
        let events_min = if area.width >= SIDE_BY_SIDE { 2 } else { 4 };
        let panels_min = 2 + events_min;
        let device_rows = |d: &Device| rows(1 + d.kinds.len());
        // The devices get what the panels' least leaves, but at least the
        // first device's title and one kind.
        let first_min = model.devices.get(first).map_or(0, |d| device_rows(d).min(2));
        let for_devices = budget.0.saturating_sub(panels_min).max(first_min.min(budget.0));
        let mut devices_budget = Budget(for_devices);
        let mut devices = Vec::new();
        for device in &model.devices[first.min(model.devices.len())..] {
            let want = device_rows(device);
            if want <= devices_budget.0 {
                devices.push(devices_budget.take(want));
            } else {
                if devices.is_empty() && devices_budget.0 > 0 {
                    devices.push(devices_budget.take(want)); // Cut short.
                }
                break;
            }
        }
        budget.0 -= for_devices - devices_budget.0;
        let processes_want = 2 + rows(model.processes.len().max(1));
        let events_want = event_rows(area.width, model);
        let mut processes = budget.take(2);
        let mut events = budget.take(events_min);
        processes += budget.take(processes_want.saturating_sub(processes));
        events += budget.take(events_want.saturating_sub(events));
        if processes == 1 {
            processes = 0; // A title alone says nothing; give it back.
            budget.0 += 1;
            events += budget.take(events_want.saturating_sub(events));
        }
        Plan { header, losses, stopped, first, devices, processes, events }
    }
}

/// Rows the anomalies and marks want.
fn event_rows(width: u16, model: &Model) -> u16 {
    let anomalies = rows(model.anomalies.len().max(1));
    let marks = rows(model.marks.len().max(1));
    if width >= SIDE_BY_SIDE { 1 + anomalies.max(marks) } else { 2 + anomalies + marks }
}

fn rows(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// Hands out the frame's rows top down.
struct Rows {
    area: Rect,
    y: u16,
}

impl Rows {
    fn take(&mut self, height: u16) -> Rect {
        // The plan never hands out more rows than the frame has.
        debug_assert!(self.y + height <= self.area.bottom());
        let rect = Rect::new(self.area.x, self.y, self.area.width, height).intersection(self.area);
        self.y += rect.height;
        rect
    }
}

/// One header item: shown in display order, kept in priority order.
struct Item {
    priority: u8,
    text: String,
    style: Style,
    /// May be cut from the left (a path) rather than left out.
    shortenable: bool,
}

/// `memtrack watch  devices 1-15 of 32  ↑↓ PgUp PgDn  q quits  ring NAME
/// 2.0k records/s  1234 records`: what does not fit `width` is left out from
/// the least important on; a long ring path is cut from the left.
fn header(model: &Model, shown: Shown, width: u16) -> Line<'static> {
    let total = model.devices.len();
    let mut items = vec![Item {
        priority: 0,
        text: "memtrack watch".into(),
        style: Style::new().bold(),
        shortenable: false,
    }];
    if total > 0 {
        let range = if shown.count == 0 {
            format!("devices 0 of {total}")
        } else {
            format!("devices {}\u{2013}{} of {total}", shown.first + 1, shown.first + shown.count)
        };
        items.push(Item { priority: 1, text: range, style: Style::new().bold(), shortenable: false });
        if shown.count < total {
            items.push(Item {
                priority: 3,
                text: "\u{2191}\u{2193} PgUp PgDn".into(),
                style: Style::new().dim(),
                shortenable: false,
            });
        }
    }
    items.push(Item { priority: 2, text: "q quits".into(), style: Style::new().dim(), shortenable: false });
    // A ring in /dev/shm by its name, as --ring takes it.
    let shm_prefix = format!("{}/{}", memtrack::SHM_DIR, memtrack::RING_FILE_PREFIX);
    let ring = model.ring.strip_prefix(&shm_prefix).unwrap_or(&model.ring);
    items.push(Item {
        priority: 4,
        text: format!("ring {}", printable(ring)),
        style: Style::new(),
        shortenable: true,
    });
    items.push(Item { priority: 5, text: rate(model.rate), style: Style::new(), shortenable: false });
    items.push(Item {
        priority: 6,
        text: format!("{} records", model.records),
        style: Style::new(),
        shortenable: false,
    });
    if let Some(file) = &model.recording {
        items.push(Item {
            priority: 7,
            text: format!("recording {}", printable(file)),
            style: Style::new(),
            shortenable: true,
        });
    }
    const GAP: usize = 2;
    let width = width as usize;
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| items[i].priority);
    let mut keep_item = vec![false; items.len()];
    let mut used = 0;
    for i in order {
        let item = &mut items[i];
        let gap = if used == 0 { 0 } else { GAP };
        let len = item.text.chars().count();
        if used + gap + len <= width {
            keep_item[i] = true;
            used += gap + len;
        } else if item.shortenable && width.saturating_sub(used + gap) >= 16 {
            // `ring …end-of-the-name`: the first word stays.
            let room = width - used - gap;
            let (word, rest) = item.text.split_once(' ').unwrap_or(("", &item.text));
            let keep = room - word.chars().count() - 2; // The space and the ellipsis.
            let tail: String = rest.chars().skip(rest.chars().count().saturating_sub(keep)).collect();
            item.text = format!("{word} \u{2026}{tail}");
            keep_item[i] = true;
            used += gap + item.text.chars().count();
        }
    }
    let mut spans = Vec::new();
    for (item, _) in items.into_iter().zip(keep_item).filter(|(_, k)| *k) {
        if !spans.is_empty() {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::styled(item.text, item.style));
    }
    Line::from(spans)
}

/// `840 records/s`, `12.5k records/s`, `3.1M records/s`.
pub fn rate(per_second: f64) -> String {
    match per_second {
        r if r >= 1e6 => format!("{:.1}M records/s", r / 1e6),
        r if r >= 1e3 => format!("{:.1}k records/s", r / 1e3),
        r => format!("{r:.0} records/s"),
    }
}

/// Red and bold when nonzero.
fn count(n: u64) -> Span<'static> {
    let span = Span::raw(n.to_string());
    if n > 0 { span.style(Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)) } else { span }
}

/// `lost: dropped 0  writer died 0  reader died 0`; where that does not
/// fit, only the nonzero counters (or `lost: none`).
fn losses(model: &Model, width: u16) -> Line<'static> {
    let l = &model.losses;
    let counters = [
        ("dropped", l.dropped),
        ("writer died", l.lost_writer_died),
        ("reader died", l.lost_reader_died),
        ("untracked processes", l.untracked_processes),
        ("untracked events (counter pool full)", model.untracked_events),
    ];
    let line = |counters: &mut dyn Iterator<Item = &(&'static str, u64)>| {
        let mut spans: Vec<Span> = vec!["lost:".into()];
        for &(name, n) in counters {
            spans.extend([format!(" {name} ").into(), count(n), " ".into()]);
        }
        Line::from(spans)
    };
    // Untracked processes and events are not records: shown only when
    // there are some.
    let all = line(&mut counters.iter().filter(|(name, n)| *n > 0 || !name.starts_with("untracked")));
    if all.width() <= width as usize {
        return all;
    }
    let nonzero = line(&mut counters.iter().filter(|(_, n)| *n > 0));
    if nonzero.spans.len() > 1 { nonzero } else { Line::from("lost: none") }
}

/// `stopped at a corrupt slot: sub-ring 3 at ticket 2 (2 records behind)
/// the shared ring at ticket 0 (5 records behind)`, the label in red: the
/// consumer stops there for good, so the stream (and this screen) gets
/// nothing of those rings from there on. Where that does not fit,
/// `stopped at a corrupt slot: 2 rings, 7 records behind`. Nothing when no
/// ring is stopped.
fn stopped(model: &Model, width: u16) -> Line<'static> {
    const LABEL: &str = "stopped at a corrupt slot:";
    if model.corrupt.is_empty() {
        return Line::default();
    }
    let red = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    let records = |n: u64| if n == 1 { "1 record".to_owned() } else { format!("{n} records") };
    let rings: Vec<String> = model
        .corrupt
        .iter()
        .map(|c| {
            let ring = c.subring.map_or_else(|| "the shared ring".to_owned(), |i| format!("sub-ring {i}"));
            format!("{ring} at ticket {} ({} behind)", c.ticket, records(c.behind))
        })
        .collect();
    let all = format!(" {}", rings.join("  "));
    if LABEL.len() + all.chars().count() <= width as usize {
        return Line::from(vec![Span::styled(LABEL, red), all.into()]);
    }
    let behind = model.corrupt.iter().map(|c| c.behind).fold(0, u64::saturating_add);
    let n = model.corrupt.len();
    let rings = if n == 1 { "1 ring".to_owned() } else { format!("{n} rings") };
    Line::from(vec![Span::styled(LABEL, red), format!(" {rings}, {} behind", records(behind)).into()])
}

fn section(title: Line<'_>) -> Block<'_> {
    Block::new().borders(Borders::TOP).title(title).border_style(Style::new().dim())
}

fn render_device(frame: &mut Frame, area: Rect, device: &Device) {
    if area.is_empty() {
        return;
    }
    let total = match device.capacity() {
        Some(total) if total > 0 => {
            format!(" / {}", human_bytes(total as i64))
        }
        _ => String::new(),
    };
    let title = Line::from(vec![
        format!(" device {} ", device.device_id).bold(),
        format!("{}{total} in {} ", human_bytes(device.live_bytes() as i64), buffers(device.live_buffers()))
            .into(),
    ]);
    let block = section(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);

    let label_width = device.kinds.iter().map(|k| kind_name(k.kind).len()).max().unwrap_or(0).max(5);
    // The numbers in one column, so the bars line up.
    let texts: Vec<String> = device.kinds.iter().map(kind_text).collect();
    let text_width = texts.iter().map(|t| t.chars().count()).max().unwrap_or(0);
    for ((row, kind), text) in inner.rows().zip(&device.kinds).zip(&texts) {
        let history = device.history.get(&kind.kind);
        render_kind(frame, row, kind, history, label_width, &format!("{text:<text_width$}"));
    }
}

/// `1 buffer`, `3 buffers`.
fn buffers(n: u64) -> String {
    if n == 1 { "1 buffer".to_owned() } else { format!("{n} buffers") }
}

/// ` 1.0 MiB / 2.0 MiB  3 buffers`, or used and peak without a total.
fn kind_text(kind: &KindRow) -> String {
    let used = human_bytes(kind.live_bytes as i64);
    let amount = match kind.capacity {
        Some(total) if total > 0 => format!("{used} / {}", human_bytes(total as i64)),
        _ => format!("{used} (peak {})", human_bytes(kind.peak_bytes as i64)),
    };
    format!(" {amount}  {}", buffers(kind.live_buffers))
}

/// `L1     ━━━━━━━━────────  1.0 MiB / 2.0 MiB  3 buffers  ▁▂▄▆█`: the
/// sparkline is this kind's own history, scaled to its total (else its
/// peak); the bar goes first when the row is narrow, then the sparkline.
fn render_kind(
    frame: &mut Frame,
    area: Rect,
    kind: &KindRow,
    history: Option<&std::collections::VecDeque<u64>>,
    label_width: usize,
    text: &str,
) {
    let label = format!("{:<label_width$}", kind_name(kind.kind));
    let spark_width = if area.width >= SPARK_FROM_WIDTH { (area.width / 4).min(SPARK_MAX_WIDTH) } else { 0 };
    let [main, spark] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(spark_width)]).spacing(1).areas(area);
    render_spark(frame, spark, kind, history);
    let bar_width = (main.width as usize).saturating_sub(label_width + 1 + text.chars().count());
    if bar_width < 8 {
        frame.render_widget(Paragraph::new(format!("{label}{text}")), main);
        return;
    }
    let fill = kind.fill();
    let colour = match kind.capacity {
        Some(total) if total > 0 && fill >= 0.9 => Color::Red,
        Some(total) if total > 0 && fill >= 0.7 => Color::Yellow,
        Some(total) if total > 0 => Color::Green,
        _ => Color::Cyan,
    };
    let [bar, numbers] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(rows(text.chars().count()))]).areas(main);
    let gauge = LineGauge::default()
        .label(label)
        .ratio(fill)
        .filled_symbol(symbols::line::THICK_HORIZONTAL)
        .unfilled_symbol(symbols::line::HORIZONTAL)
        .filled_style(Style::new().fg(colour))
        .unfilled_style(Style::new().dim());
    frame.render_widget(gauge, bar);
    frame.render_widget(Paragraph::new(text), numbers);
}

/// The newest samples of one kind that fit, newest at the right, scaled to
/// the kind's own peak: each kind's ups and downs show whatever its total
/// and whatever the other kinds hold (the bar beside it shows used/total).
fn render_spark(
    frame: &mut Frame,
    area: Rect,
    kind: &KindRow,
    history: Option<&std::collections::VecDeque<u64>>,
) {
    let Some(history) = history.filter(|_| !area.is_empty()) else { return };
    // Newest first, drawn from the right edge leftwards.
    let data: Vec<u64> = history.iter().rev().take(area.width as usize).copied().collect();
    let scale = kind.peak_bytes.max(data.iter().copied().max().unwrap_or(0));
    let sparkline = Sparkline::default()
        .data(&data)
        .max(scale.max(1))
        .direction(RenderDirection::RightToLeft)
        .style(Style::new().fg(Color::Cyan));
    frame.render_widget(sparkline, area);
}

fn state_style(state: ProcState) -> Style {
    match state {
        ProcState::Running => Style::new().fg(Color::Green),
        ProcState::Exited => Style::new().dim(),
        ProcState::Died => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

fn render_processes(frame: &mut Frame, area: Rect, model: &Model) {
    if area.is_empty() {
        return;
    }
    let total = model.processes.len();
    // The column names only when a process row fits below them.
    let with_header = area.height >= 3;
    let fit = (area.height as usize).saturating_sub(if with_header { 2 } else { 1 });
    let title = if fit < total {
        format!(" processes ({total}, {fit} shown) ")
    } else {
        format!(" processes ({total}) ")
    };
    let block = section(Line::from(title.bold()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if model.processes.is_empty() {
        frame.render_widget(Paragraph::new("no writer processes attached".dim()), inner);
        return;
    }
    // Narrow: the name gets the buffers column's room.
    let columns = if inner.width < 60 { 5 } else { 6 };
    let rows = model.processes.iter().map(|p| {
        let mut cells = vec![
            // The key: pids repeat across PID namespaces.
            Line::from(p.process.clone()).right_aligned(),
            Line::from(p.pid.to_string()).right_aligned(),
            Line::from(printable(&p.name).into_owned()),
            Line::from(Span::styled(p.state.name(), state_style(p.state))),
            Line::from(human_bytes(p.live_bytes)).right_aligned(),
            Line::from(p.live_buffers.to_string()).right_aligned(),
        ];
        cells.truncate(columns);
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Fill(1),
        Constraint::Length(7),
        Constraint::Length(10),
        Constraint::Length(8),
    ];
    widths.truncate(columns);
    let mut header = vec![
        Line::from("process").right_aligned(),
        Line::from("pid").right_aligned(),
        Line::from("name"),
        Line::from("state"),
        // A running process's usage; what an ended one left (its leaks).
        Line::from("used/left").right_aligned(),
        Line::from("buffers").right_aligned(),
    ];
    header.truncate(columns);
    let header = Row::new(header).style(Style::new().dim());
    let table = Table::new(rows, widths);
    let table = if with_header { table.header(header) } else { table };
    frame.render_widget(table, inner);
}

fn render_events(frame: &mut Frame, area: Rect, model: &Model) {
    if area.is_empty() {
        return;
    }
    let (anomalies, marks) = if area.width >= SIDE_BY_SIDE {
        let [a, m] = Layout::horizontal([Constraint::Fill(3), Constraint::Fill(2)]).spacing(1).areas(area);
        (a, m)
    } else if area.height >= 4 {
        // Stacked: the anomalies get their rows first, the marks the rest
        // (at least a title and one line each).
        let wanted = 1 + rows(model.anomalies.len().max(1));
        let first = wanted.min(area.height - 2).max(2);
        let [a, m] = Layout::vertical([Constraint::Length(first), Constraint::Fill(1)]).areas(area);
        (a, m)
    } else {
        (area, Rect::default())
    };
    render_anomalies(frame, anomalies, model);
    render_marks(frame, marks, model);
}

fn render_anomalies(frame: &mut Frame, area: Rect, model: &Model) {
    if area.is_empty() {
        return;
    }
    let c = model.anomaly_counts;
    let counts = [
        (c.unknown_frees, AnomalyKind::UnknownFree),
        (c.duplicate_allocs, AnomalyKind::DuplicateAlloc),
        (c.size_mismatches, AnomalyKind::SizeMismatch),
    ];
    let total: u64 = counts.iter().map(|(n, _)| n).sum();
    let mut title = vec![format!(" anomalies ({total})").bold()];
    let nonzero: Vec<String> =
        counts.iter().filter(|(n, _)| *n > 0).map(|(n, kind)| format!("{n} {}", kind.name())).collect();
    if !nonzero.is_empty() {
        let red = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
        title.push(Span::styled(format!(": {} ", nonzero.join(", ")), red));
    } else {
        title.push(" ".into());
    }
    let title = Line::from(title);
    let block = section(title);
    let lines: Vec<Line> = model.anomalies.iter().map(|a| anomaly_line(a, model)).collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// An anomaly, its process named by key and pid (pids repeat across PID
/// namespaces).
fn anomaly_line(a: &Anomaly, model: &Model) -> Line<'static> {
    let k = a.key;
    let what = match a.kind {
        AnomalyKind::SizeMismatch => {
            format!("freed {} of {}", human_bytes(a.size as i64), human_bytes(a.expected_size as i64))
        }
        _ => human_bytes(a.size as i64),
    };
    Line::from(vec![
        format!("{:>9} ", human_ns(a.time_ns)).dim(),
        Span::styled(a.kind.name(), Style::new().fg(Color::Red)),
        format!(
            " process {} pid {} device {} {} buffer {} {what}",
            model.process_key(k.process),
            k.pid,
            k.device_id,
            kind_name(k.kind),
            k.buffer_id
        )
        .into(),
    ])
}

fn render_marks(frame: &mut Frame, area: Rect, model: &Model) {
    if area.is_empty() {
        return;
    }
    let block = section(Line::from(format!(" marks ({}) ", model.mark_count).bold()));
    let lines: Vec<Line> = model
        .marks
        .iter()
        .map(|m| {
            let live: u64 = m.usage.iter().map(|(_, (bytes, _))| bytes).sum();
            Line::from(vec![
                format!("{:>9} ", human_ns(m.time_ns)).dim(),
                Span::styled(
                    printable(&m.label).into_owned(),
                    Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD),
                ),
                format!(
                    " process {} pid {}  {} live",
                    model.process_key(m.process),
                    m.pid,
                    human_bytes(live as i64)
                )
                .into(),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
