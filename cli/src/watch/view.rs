//! Drawing a [`Model`]: a pure function of the model and the frame size.
//!
//! Top to bottom: a header (ring, records, rate), the loss counters, one
//! section per device (a bar per kind, then a usage sparkline), the
//! processes, and the latest anomalies and marks. Every section gets whole
//! rows from [`Plan`], which hands the screen out in order of importance
//! and leaves out what does not fit, so a small terminal shows less rather
//! than a garbled screen (and no widget is ever given a rectangle outside
//! the frame, which ratatui would panic on).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, LineGauge, Paragraph, Row, Sparkline, Table};

use super::model::{Device, KindRow, Model};
use crate::engine::{Anomaly, AnomalyKind, ProcState};
use crate::units::{human_bytes, human_ns, kind_name, printable};

/// Below this width the anomalies and marks are stacked, not side by side.
const SIDE_BY_SIDE: u16 = 160;

/// Rows of a sparkline, first and (room permitting) in full.
const SPARK_MIN: u16 = 2;
const SPARK_MAX: u16 = 4;

/// Draws `model` over the whole frame.
pub fn render(frame: &mut Frame, model: &Model) {
    let area = frame.area();
    let plan = Plan::new(area, model);
    let mut rows = Rows { area, y: area.y };

    frame.render_widget(Paragraph::new(header(model)), rows.take(plan.header));
    frame.render_widget(Paragraph::new(losses(model, area.width)), rows.take(plan.losses));
    for (device, &(kinds, spark)) in model.devices.iter().zip(&plan.devices) {
        render_device(frame, rows.take(kinds + spark), device, spark);
    }
    render_processes(frame, rows.take(plan.processes), model);
    render_events(frame, rows.take(plan.events), model);
}

/// Rows of the screen per section; 0 leaves a section out.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The header line.
    pub header: u16,
    /// The loss line.
    pub losses: u16,
    /// Per device: (title and kind rows, sparkline rows).
    pub devices: Vec<(u16, u16)>,
    /// Title, column names and process rows.
    pub processes: u16,
    /// Anomalies and marks.
    pub events: u16,
}

/// Rows left to hand out.
struct Budget(u16);

impl Budget {
    /// Up to `want` rows, or none if fewer than `min` are left.
    fn take(&mut self, want: u16, min: u16) -> u16 {
        if self.0 < min.max(1) {
            return 0;
        }
        let got = want.min(self.0);
        self.0 -= got;
        got
    }
}

impl Plan {
    /// Hands out the rows of `area`: header, losses, each device's kinds,
    /// a few processes, a few events, sparklines, then the rest of the
    /// processes and events, then taller sparklines.
    pub fn new(area: Rect, model: &Model) -> Plan {
        let mut budget = Budget(area.height);
        let header = budget.take(1, 1);
        let losses = budget.take(1, 1);
        let mut devices: Vec<(u16, u16)> =
            model.devices.iter().map(|d| (budget.take(rows(1 + d.kinds.len()), 2), 0)).collect();
        // Title, column names and one row (or "no processes").
        let process_rows = rows(model.processes.len().max(1));
        let mut processes = budget.take(3, 3);
        let (wanted_events, min_events) = event_rows(area.width, model);
        let mut events = budget.take(min_events, min_events);
        for (kinds, spark) in &mut devices {
            if *kinds > 0 {
                *spark = budget.take(SPARK_MIN, SPARK_MIN);
            }
        }
        if processes > 0 {
            processes += budget.take(process_rows - 1, 1);
        }
        if events > 0 {
            events += budget.take(wanted_events - events, 1);
        }
        for (_, spark) in &mut devices {
            if *spark > 0 {
                *spark += budget.take(SPARK_MAX - SPARK_MIN, 1);
            }
        }
        Plan { header, losses, devices, processes, events }
    }
}

/// Rows the anomalies and marks want, and the fewest worth showing.
fn event_rows(width: u16, model: &Model) -> (u16, u16) {
    let anomalies = rows(model.anomalies.len().max(1));
    let marks = rows(model.marks.len().max(1));
    if width >= SIDE_BY_SIDE { (1 + anomalies.max(marks), 2) } else { (2 + anomalies + marks, 2) }
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

fn header(model: &Model) -> Line<'static> {
    let mut spans = vec![
        "memtrack watch".bold(),
        format!("  {}", rate(model.rate)).into(),
        format!("  {} records", model.records).into(),
        format!("  ring {}", printable(&model.ring)).into(),
    ];
    if let Some(file) = &model.recording {
        spans.push(format!("  recording {}", printable(file)).into());
    }
    spans.push("  q quits".dim());
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
    ];
    let line = |counters: &mut dyn Iterator<Item = &(&'static str, u64)>| {
        let mut spans: Vec<Span> = vec!["lost:".into()];
        for &(name, n) in counters {
            spans.extend([format!(" {name} ").into(), count(n), " ".into()]);
        }
        Line::from(spans)
    };
    // Untracked processes are not records: shown only when there are some.
    let all = line(&mut counters.iter().filter(|(name, n)| *n > 0 || !name.starts_with("untracked")));
    if all.width() <= width as usize {
        return all;
    }
    let nonzero = line(&mut counters.iter().filter(|(_, n)| *n > 0));
    if nonzero.spans.len() > 1 { nonzero } else { Line::from("lost: none") }
}

fn section(title: Line<'_>) -> Block<'_> {
    Block::new().borders(Borders::TOP).title(title).border_style(Style::new().dim())
}

fn render_device(frame: &mut Frame, area: Rect, device: &Device, spark: u16) {
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
    let [kinds, history] = Layout::vertical([Constraint::Fill(1), Constraint::Length(spark)]).areas(inner);
    for ((row, kind), text) in kinds.rows().zip(&device.kinds).zip(&texts) {
        render_kind(frame, row, kind, label_width, &format!("{text:<text_width$}"));
    }
    if !history.is_empty() {
        let [label, line] =
            Layout::horizontal([Constraint::Length(rows(label_width + 1)), Constraint::Fill(1)])
                .areas(history);
        frame.render_widget(Paragraph::new("usage".dim()), label);
        let shown = device.history.len().saturating_sub(line.width as usize);
        let data: Vec<u64> = device.history.iter().skip(shown).copied().collect();
        let mut sparkline = Sparkline::default().data(&data).style(Style::new().fg(Color::Cyan));
        if let Some(total) = device.capacity().filter(|&t| t > 0) {
            sparkline = sparkline.max(total);
        }
        frame.render_widget(sparkline, line);
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

/// `L1     ━━━━━━━━────────  1.0 MiB / 2.0 MiB  3 buffers`; the bar goes
/// first when the row is narrow.
fn render_kind(frame: &mut Frame, area: Rect, kind: &KindRow, label_width: usize, text: &str) {
    let label = format!("{:<label_width$}", kind_name(kind.kind));
    let bar_width = (area.width as usize).saturating_sub(label_width + 1 + text.chars().count());
    if bar_width < 8 {
        frame.render_widget(Paragraph::new(format!("{label}{text}")), area);
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
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(rows(text.chars().count()))]).areas(area);
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
    let block = section(Line::from(format!(" processes ({}) ", model.processes.len()).bold()));
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
        Line::from("used").right_aligned(),
        Line::from("buffers").right_aligned(),
    ];
    header.truncate(columns);
    let header = Row::new(header).style(Style::new().dim());
    frame.render_widget(Table::new(rows, widths).header(header), inner);
}

fn render_events(frame: &mut Frame, area: Rect, model: &Model) {
    if area.is_empty() {
        return;
    }
    let (anomalies, marks) = if area.width >= SIDE_BY_SIDE {
        let [a, m] = Layout::horizontal([Constraint::Fill(3), Constraint::Fill(2)]).spacing(1).areas(area);
        (a, m)
    } else if area.height >= 4 {
        // Stacked: the anomalies get their rows first, the marks the rest.
        let wanted = 1 + rows(model.anomalies.len().max(1));
        let first = wanted.min(area.height - 2);
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
    let lines: Vec<Line> = model.anomalies.iter().map(anomaly_line).collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn anomaly_line(a: &Anomaly) -> Line<'static> {
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
        format!(" pid {} device {} {} buffer {} {what}", k.pid, k.device_id, kind_name(k.kind), k.buffer_id)
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
                format!(" pid {}  {} live", m.pid, human_bytes(live as i64)).into(),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}
