//! `memtrack report`: the analysis of a record file, as text, as one
//! JSON document (schema `memtrack.report/1`) or as a page ([`html`]).
//! `record` prints the same text when it finishes.

mod html;
mod remaining_json;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};

use crate::attribution::{self, peak_scopes, phases, scope_rows};
use crate::engine::{AnomalyKind, BufferKey, Cell, Engine, ProcState, ProcessId, Uncertainty};
use crate::filter::{Filter, FilterArgs};
use crate::recording::{FileHeader, RecordReader};
use crate::units::{
    difference, human_bytes, human_ns, json_number, kind_name, printable, printable_path, red, use_colour,
};

/// JSON schema name and version of `report --json`.
pub const REPORT_SCHEMA: &str = "memtrack.report/1";

/// Remaining buffers listed by the text report before it gives a count.
const TEXT_REMAINING_LIMIT: usize = 20;

#[derive(Args)]
pub struct ReportArgs {
    /// A record file written by `memtrack record`.
    file: PathBuf,
    /// One JSON document (schema memtrack.report/1) instead of text.
    #[arg(long)]
    json: bool,
    /// Write a self-contained HTML page (charts per device, sortable leak,
    /// anomaly and process tables) to FILE instead of printing. The page
    /// shows the whole recording: the filters are refused with it.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["json", "device", "kind", "process", "scope", "since_mark", "top"]
    )]
    html: Option<PathBuf>,
    /// Also read a recording that did not finish (its reader was killed):
    /// the records it holds, without the final process table, loss totals
    /// and cross-check.
    #[arg(long)]
    partial: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Where a report's data came from.
pub struct Source {
    /// Wall clock at `time_ns` 0, ns since the Unix epoch.
    pub origin_unix_ns: u64,
    /// The record file, if any.
    pub file: Option<PathBuf>,
    /// The recorded ring.
    pub ring: PathBuf,
    /// Whether the stream is complete (a record file's end block was read).
    pub finished: bool,
}

pub fn run(args: &ReportArgs) -> Result<()> {
    if let Some(page) = &args.html {
        html::write(&args.file, args.partial, page)?;
        eprintln!("memtrack report: wrote {}", page.display());
        return Ok(());
    }
    let (header, engine, finished) = load_with(&args.file, args.partial)?;
    let source = Source::of_file(&args.file, &header, finished);
    let filter = Filter::resolve(&args.filter, &engine)
        .map_err(|e| anyhow::anyhow!("memtrack: report {}: {e:#}", args.file.display()))?;
    for line in crate::filter::unmatched(&args.filter, &engine, &args.file) {
        eprintln!("{line}");
    }
    if args.json {
        // To the descriptor, not through `stdout()`: the document is one
        // line of up to gigabytes, and stdout's line buffering would scan
        // every 64 KiB written for a newline.
        let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
        let mut buffered = std::io::BufWriter::with_capacity(1 << 16, stdout);
        write_json(&mut buffered, &engine, &source, &filter)?;
        writeln!(buffered)?;
        buffered.flush()?;
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    write_text_filtered(&mut out, &engine, &source, use_colour(&std::io::stdout()), &filter)?;
    out.flush()?;
    Ok(())
}

impl Source {
    /// The record file `file`, with header `header`.
    pub fn of_file(file: &Path, header: &FileHeader, finished: bool) -> Source {
        Source {
            origin_unix_ns: header.origin_unix_ns(),
            file: Some(file.to_owned()),
            ring: header.ring_path(),
            finished,
        }
    }
}

/// Reads a whole record file through the engine.
///
/// # Errors
/// The file is missing, unreadable, truncated, or corrupt.
pub fn load(path: &Path) -> Result<(FileHeader, Engine)> {
    load_with(path, false).map(|(header, engine, _)| (header, engine))
}

/// As [`load`]; with `partial`, an unfinished recording is read too.
/// Returns whether the recording finished.
///
/// # Errors
/// As [`load`].
pub fn load_with(path: &Path, partial: bool) -> Result<(FileHeader, Engine, bool)> {
    let mut reader = if partial { RecordReader::open_unfinished(path)? } else { RecordReader::open(path)? };
    let header = *reader.header();
    let mut engine = Engine::new(header.time_base());
    while let Some(block) = reader.next_block()? {
        engine.apply_block(&block);
    }
    Ok((header, engine, reader.finished()))
}

/// The `memtrack.report/1` document.
pub fn to_json(engine: &Engine, source: &Source) -> Value {
    to_json_filtered(engine, source, &Filter::default())
}

/// The `memtrack.report/1` document of what `filter` selects, as a
/// value: for small recordings and tests ([`write_json`] streams it).
pub fn to_json_filtered(engine: &Engine, source: &Source, filter: &Filter) -> Value {
    let mut text = Vec::new();
    write_json(&mut text, engine, source, filter).expect("writing to memory does not fail");
    serde_json::from_slice(&text).expect("the report is JSON")
}

/// Writes the `memtrack.report/1` document of what `filter` selects to
/// `out`, compact, as `serde_json` prints it (keys in order), without
/// holding it: the remaining buffers, one row per buffer, are written one
/// at a time.
///
/// # Errors
/// Writing to `out` failed.
pub fn write_json(
    out: &mut impl Write,
    engine: &Engine,
    source: &Source,
    filter: &Filter,
) -> std::io::Result<()> {
    write_document(out, &document(engine, source, filter), engine, filter)
}

/// Writes `doc`, a [`document`], with its `remaining` slot filled: as
/// `serde_json` would print the whole document, one key at a time.
fn write_document(
    out: &mut impl Write,
    doc: &serde_json::Map<String, Value>,
    engine: &Engine,
    filter: &Filter,
) -> std::io::Result<()> {
    out.write_all(b"{")?;
    for (i, (key, value)) in doc.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b":")?;
        if key == REMAINING_SLOT {
            remaining_json::write(out, engine, filter)?;
        } else {
            serde_json::to_writer(&mut *out, value)?;
        }
    }
    out.write_all(b"}")
}

/// The key of the remaining buffers, which [`document`] leaves null for
/// [`write_document`] to stream.
const REMAINING_SLOT: &str = "remaining";

/// The report document, its `remaining` slot null (one value per buffer
/// would take kilobytes each): [`write_document`] fills it.
fn document(engine: &Engine, source: &Source, filter: &Filter) -> serde_json::Map<String, Value> {
    let losses = engine.losses();
    let mut devices: BTreeMap<u32, serde_json::Map<String, Value>> = BTreeMap::new();
    for (&(device, kind), s) in engine.devices().iter().filter(|((d, k), _)| filter.cell(*d, *k)) {
        let mut stats = json!({
            "live_bytes": s.live_bytes, "live_buffers": s.live_buffers,
            "peak_bytes": s.peak_bytes, "peak_time_ns": s.peak_time_ns,
            "peak_scopes": peak_scopes(engine, (device, kind), filter).into_iter()
                .map(|(scope, bytes)| json!({"scope": scope, "bytes": bytes})).collect::<Vec<_>>(),
            "allocs": s.allocs, "frees": s.frees,
        });
        if let Some(capacity) = s.capacity {
            stats["capacity_bytes"] = json!(capacity);
        }
        devices.entry(device).or_default().insert(kind_name(kind), stats);
    }
    let counts = engine.anomaly_counts();
    let remaining_totals = engine.remaining_by_process();
    let key = |id: ProcessId| engine.process(id).key();
    let uncertain = engine.uncertain_cells();
    let is_uncertain = |key: &BufferKey| uncertain.contains_key(&(key.process, key.device_id, key.kind));
    for &(_, device, kind) in uncertain.keys() {
        if let Some(stats) = devices.get_mut(&device).and_then(|kinds| kinds.get_mut(&kind_name(kind))) {
            stats["uncertain"] = json!(true);
        }
    }
    let doc = json!({
        "schema": REPORT_SCHEMA,
        "file": source.file,
        "finished": source.finished,
        "ring": source.ring,
        "started_unix_ns": source.origin_unix_ns,
        "start": engine.start().map(|s| json!({
            "mid_run": s.mid_run,
            "first_ticket": s.first_ticket,
            "backlog_records": s.backlog_records,
            "opening_buffers": s.opening_buffers,
            "opening_bytes": s.opening_bytes,
            "opening_frees": s.opening_frees,
        })),
        "duration_ns": engine.last_time_ns(),
        "records": engine.records(),
        "lost": losses.total(),
        "lost_detail": {
            "dropped": losses.all_dropped(),
            "dropped_before_attach": losses.dropped_before_attach,
            "writer_died": losses.lost_writer_died,
            "reader_died": losses.lost_reader_died,
        },
        "uncertain": uncertain.iter().map(|(&(process, device, kind), reason)| json!({
            "process": key(process), "pid": engine.process(process).pid,
            "device_id": device, "kind": kind_name(kind), "reason": reason.name(),
        })).collect::<Vec<_>>(),
        "untracked_processes": losses.untracked_processes,
        "devices": devices.into_iter().map(|(device, kinds)| json!({
            "device_id": device, "kinds": kinds,
        })).collect::<Vec<_>>(),
        "anomalies": {
            "unknown_frees": counts.unknown_frees,
            "duplicate_allocs": counts.duplicate_allocs,
            "size_mismatches": counts.size_mismatches,
            "details": engine.anomalies().iter().filter(|a| filter.unscoped(engine, &a.key, a.time_ns)).map(|a| json!({
                "type": a.kind.name(), "time_ns": a.time_ns,
                "process": key(a.key.process), "pid": a.key.pid,
                "device_id": a.key.device_id, "kind": kind_name(a.key.kind),
                "buffer_id": a.key.buffer_id, "size": a.size, "expected_size": a.expected_size,
                "uncertain": is_uncertain(&a.key),
            })).collect::<Vec<_>>(),
        },
        REMAINING_SLOT: Value::Null,
        "scopes": scope_rows(engine, filter).iter().map(|r| json!({
            "scope": r.scope, "allocs": r.allocs, "frees": r.frees, "allocated_bytes": r.allocated_bytes,
            "remaining_buffers": r.remaining_buffers, "remaining_bytes": r.remaining_bytes,
        })).collect::<Vec<_>>(),
        "unidentified_remaining": engine.unidentified_remaining().iter()
            .filter(|((process, device, kind), _)| filter.cell(*device, *kind) && filter.process(engine, *process)
                && filter.selects_all_times_and_scopes())
            .map(|&((process, device, kind), (bytes, buffers))| json!({
            "process": key(process), "pid": engine.process(process).pid,
            "device_id": device, "kind": kind_name(kind), "buffers": buffers, "bytes": bytes,
            "uncertain": uncertain.contains_key(&(process, device, kind)),
        })).collect::<Vec<_>>(),
        "processes": engine.processes().iter().enumerate()
            .filter(|(id, _)| filter.process(engine, ProcessId(*id as u32))).map(|(id, p)| {
            let id = ProcessId(id as u32);
            let (buffers, bytes) = remaining_totals.get(&id).copied().unwrap_or_default();
            json!({
                "process": p.key(), "pid": p.pid, "host_pid": p.host_pid, "start_time": p.start_time,
                "name": p.name, "state": p.state.name(),
                "remaining_buffers": buffers, "remaining_bytes": bytes,
                "allocs": p.allocs, "frees": p.frees, "dropped": p.dropped,
                "end_time_ns": p.end_time_ns,
            })
        }).collect::<Vec<_>>(),
        "marks": engine.marks().iter().filter(|m| filter.time(m.time_ns)).map(|m| json!({
            "label": m.label, "time_ns": m.time_ns, "process": key(m.process), "pid": m.pid,
            "usage": m.usage.iter().filter(|((device, kind), _)| filter.cell(*device, *kind))
                .map(|&((device, kind), (bytes, buffers))| json!({
                "device_id": device, "kind": kind_name(kind), "live_bytes": bytes, "live_buffers": buffers,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "phases": phases(engine, filter).iter().map(|p| json!({
            "from": p.from, "to": p.to, "start_ns": p.start_ns, "end_ns": p.end_ns,
            "usage": p.usage.iter().map(|u| json!({
                "device_id": u.cell.0, "kind": kind_name(u.cell.1),
                "start_bytes": u.start_bytes, "end_bytes": u.end_bytes,
                "delta_bytes": json_number(difference(u.start_bytes, u.end_bytes)),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "cross_check": {
            "checked": engine.cross_checked(),
            "mismatches": engine.counter_mismatches().iter().map(|m| json!({
                "process": key(m.process), "pid": m.pid, "device_id": m.device_id, "kind": kind_name(m.kind),
                "reader_bytes": json_number(m.reader.0), "reader_buffers": m.reader.1,
                "writer_bytes": json_number(m.writers.0), "writer_buffers": m.writers.1,
            })).collect::<Vec<_>>(),
        },
    });
    let Value::Object(doc) = doc else { unreachable!("a JSON object") };
    doc
}

/// The human report.
pub fn write_text(out: &mut impl Write, engine: &Engine, source: &Source, colour: bool) -> Result<()> {
    write_text_filtered(out, engine, source, colour, &Filter::default())
}

/// The human report of what `filter` selects.
pub fn write_text_filtered(
    out: &mut impl Write,
    engine: &Engine,
    source: &Source,
    colour: bool,
    filter: &Filter,
) -> Result<()> {
    let losses = engine.losses();
    match &source.file {
        Some(file) => writeln!(
            out,
            "memtrack report: {} (ring {})",
            printable_path(file),
            printable_path(&source.ring)
        )?,
        None => writeln!(out, "memtrack report: ring {}", printable_path(&source.ring))?,
    }
    if !source.finished {
        let text = "UNFINISHED recording: its reader stopped before the end, so the process table, \
                    loss totals and cross-check are missing";
        writeln!(out, "{}", red(text, colour))?;
    }
    writeln!(out, "{} records over {}", engine.records(), human_ns(engine.last_time_ns()))?;
    if let Some(start) = engine.start().filter(|s| s.mid_run) {
        writeln!(
            out,
            "started mid-run: {} buffers ({}) were live before the recording began; {} of them freed during it",
            start.opening_buffers,
            human_bytes(start.opening_bytes),
            start.opening_frees
        )?;
    }
    if losses.total() > 0 {
        let before = match losses.dropped_before_attach {
            0 => String::new(),
            n => format!(", {n} of them before this recording attached"),
        };
        let text = format!(
            "LOST {} records: {} dropped (ring full{before}), {} lost (writer died), {} lost (reader died)",
            losses.total(),
            losses.all_dropped(),
            losses.lost_writer_died,
            losses.lost_reader_died
        );
        writeln!(out, "{}", red(&text, colour))?;
    } else if source.finished {
        writeln!(out, "0 records lost")?;
    } else {
        // The loss totals are among the blocks written at the end.
        writeln!(
            out,
            "{}",
            red("records lost: unknown (the loss totals are written when a recording finishes)", colour)
        )?;
    }
    let uncertain = engine.uncertain_cells();
    if !uncertain.is_empty() {
        let text = format!(
            "UNCERTAIN: records are missing for {} (process, device, kind) cells; their remaining buffers and \
             anomalies are marked ? and may be artefacts of the loss",
            uncertain.len()
        );
        writeln!(out, "{}", red(&text, colour))?;
    }
    if losses.untracked_processes > 0 {
        let text = format!("{} process(es) ran untracked (process table full)", losses.untracked_processes);
        writeln!(out, "{}", red(&text, colour))?;
    }

    writeln!(out, "\nDevices")?;
    writeln!(
        out,
        "{:>6}  {:<13} {:>11} {:>11} {:>11} {:>8} {:>8} {:>8}",
        "device", "kind", "live", "peak", "capacity", "buffers", "allocs", "frees"
    )?;
    for (&(device, kind), s) in engine.devices().iter().filter(|((d, k), _)| filter.cell(*d, *k)) {
        let capacity = s.capacity.map_or_else(|| "-".to_owned(), human_bytes);
        let mark = if uncertain.keys().any(|c| (c.1, c.2) == (device, kind)) { "?" } else { "" };
        writeln!(
            out,
            "{device:>6}  {:<13} {:>11} {:>11} {capacity:>11} {:>8} {:>8} {:>8}",
            format!("{}{mark}", kind_name(kind)),
            human_bytes(s.live_bytes),
            human_bytes(s.peak_bytes),
            s.live_buffers,
            s.allocs,
            s.frees
        )?;
    }

    write_peaks(out, engine, filter)?;

    let totals = engine.remaining_by_process();
    writeln!(out, "\nProcesses")?;
    writeln!(
        out,
        "{:>8}  {:>8} {:>8}  {:<16} {:<8} {:>10} {:>12}",
        "process", "pid", "host pid", "name", "state", "remaining", "bytes"
    )?;
    for (id, p) in engine.processes().iter().enumerate() {
        if !filter.process(engine, ProcessId(id as u32)) {
            continue;
        }
        let (buffers, bytes) = totals.get(&ProcessId(id as u32)).copied().unwrap_or_default();
        let state = if p.state == ProcState::Died { red("died", colour) } else { p.state.name().to_owned() };
        let host_pid = p.host_pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string());
        writeln!(
            out,
            "{:>8}  {:>8} {host_pid:>8}  {:<16} {state:<8} {buffers:>10} {:>12}",
            p.key(),
            p.pid,
            printable(&p.name),
            human_bytes(bytes)
        )?;
    }

    write_remaining(out, engine, &uncertain, filter)?;
    write_scopes(out, engine, filter)?;

    let counts = engine.anomaly_counts();
    writeln!(
        out,
        "\nAnomalies: {} unknown frees, {} duplicate allocs, {} size mismatches",
        counts.unknown_frees, counts.duplicate_allocs, counts.size_mismatches
    )?;
    for a in engine.anomalies().iter().filter(|a| filter.unscoped(engine, &a.key, a.time_ns)).take(10) {
        let mark =
            if uncertain.contains_key(&(a.key.process, a.key.device_id, a.key.kind)) { "?" } else { "" };
        let size = match a.kind {
            AnomalyKind::SizeMismatch => {
                format!("allocated {} freed {}", human_bytes(a.expected_size), human_bytes(a.size))
            }
            _ => format!("size {}", human_bytes(a.size)),
        };
        writeln!(
            out,
            "  {:>12}  {:<16} process {} pid {} device {} {} buffer {} {size}",
            human_ns(a.time_ns),
            format!("{}{mark}", a.kind.name()),
            engine.process(a.key.process).key(),
            a.key.pid,
            a.key.device_id,
            kind_name(a.key.kind),
            a.key.buffer_id,
        )?;
    }

    write_marks(out, engine, filter)?;

    let mismatches = engine.counter_mismatches();
    if !mismatches.is_empty() {
        writeln!(out, "\n{}", red("Records disagree with the writers' live counters:", colour))?;
        for m in &mismatches {
            writeln!(
                out,
                "  process {} pid {} device {} {}: records say {} in {} buffers, writers say {} in {}",
                engine.process(m.process).key(),
                m.pid,
                m.device_id,
                kind_name(m.kind),
                human_bytes(m.reader.0),
                m.reader.1,
                human_bytes(m.writers.0),
                m.writers.1
            )?;
        }
    }
    Ok(())
}

/// ((device, kind), (live bytes, live buffers)) at a mark.
type MarkUsage = ((u32, u8), (u64, u64));

/// Usage of each (device, kind) at a mark, `0:DRAM 1.0 KiB, 0:L1 300 B`.
fn usage_text(usage: &[MarkUsage], filter: &Filter) -> String {
    let parts: Vec<String> = usage
        .iter()
        .filter(|((device, kind), _)| filter.cell(*device, *kind))
        .map(|&((device, kind), (bytes, _))| format!("{device}:{} {}", kind_name(kind), human_bytes(bytes)))
        .collect();
    if parts.is_empty() { "nothing in use".to_owned() } else { parts.join(", ") }
}

/// Marks with usage per (device, kind), and what changed from each mark to
/// the next.
fn write_marks(out: &mut impl Write, engine: &Engine, filter: &Filter) -> Result<()> {
    let marks: Vec<_> = engine.marks().iter().filter(|m| filter.time(m.time_ns)).collect();
    if marks.is_empty() {
        return Ok(());
    }
    writeln!(out, "\nMarks (usage per device:kind)")?;
    for m in &marks {
        let (time, label) = (human_ns(m.time_ns), printable(&m.label));
        writeln!(out, "  {time:>12}  {label}: {}", usage_text(&m.usage, filter))?;
    }
    let phases = phases(engine, filter);
    if !phases.is_empty() {
        writeln!(out, "\nPhases (change per device:kind from mark to mark)")?;
        for p in &phases {
            let changes: Vec<String> = p
                .usage
                .iter()
                .filter(|u| u.start_bytes != u.end_bytes)
                .map(|u| {
                    let delta = difference(u.start_bytes, u.end_bytes);
                    let sign = if delta >= 0 { "+" } else { "" };
                    format!("{}:{} {sign}{}", u.cell.0, kind_name(u.cell.1), human_bytes(delta))
                })
                .collect();
            let changes = if changes.is_empty() { "no change".to_owned() } else { changes.join(", ") };
            writeln!(
                out,
                "  {} -> {} ({}): {changes}",
                printable(&p.from),
                printable(&p.to),
                human_ns(p.end_ns.saturating_sub(p.start_ns))
            )?;
        }
    }
    Ok(())
}

/// What filled each (device, kind) at its peak, by scope.
fn write_peaks(out: &mut impl Write, engine: &Engine, filter: &Filter) -> Result<()> {
    let mut header = false;
    for (&(device, kind), s) in engine.devices().iter().filter(|((d, k), _)| filter.cell(*d, *k)) {
        let scopes = peak_scopes(engine, (device, kind), filter);
        if s.peak_bytes == 0 || scopes.is_empty() || scopes.iter().all(|(path, _)| path.is_empty()) {
            continue;
        }
        if !header {
            writeln!(out, "\nAt the peak, by scope")?;
            header = true;
        }
        let parts: Vec<String> = scopes
            .iter()
            .take(5)
            .map(|(path, bytes)| format!("{} {}", scope_text(path), human_bytes(*bytes)))
            .collect();
        let more = if scopes.len() > 5 { format!(", and {} more", scopes.len() - 5) } else { String::new() };
        writeln!(
            out,
            "  device {device} {} peak {} at {}: {}{more}",
            kind_name(kind),
            human_bytes(s.peak_bytes),
            human_ns(s.peak_time_ns),
            parts.join(", ")
        )?;
    }
    Ok(())
}

/// A scope path for text: `(no scope)` for "", control characters escaped
/// (names come from the writers).
fn scope_text(path: &str) -> std::borrow::Cow<'_, str> {
    if path.is_empty() { "(no scope)".into() } else { printable(path) }
}

/// Scopes with the most remaining bytes, then the most allocated.
fn write_scopes(out: &mut impl Write, engine: &Engine, filter: &Filter) -> Result<()> {
    let rows = scope_rows(engine, filter);
    if rows.iter().all(|r| r.scope.is_empty()) {
        return Ok(());
    }
    writeln!(out, "\nScopes")?;
    writeln!(
        out,
        "  {:>8} {:>8} {:>11} {:>10} {:>11}  scope",
        "allocs", "frees", "allocated", "remaining", "bytes"
    )?;
    for r in rows.iter().take(TEXT_REMAINING_LIMIT) {
        writeln!(
            out,
            "  {:>8} {:>8} {:>11} {:>10} {:>11}  {}",
            r.allocs,
            r.frees,
            human_bytes(r.allocated_bytes),
            r.remaining_buffers,
            human_bytes(r.remaining_bytes),
            scope_text(&r.scope)
        )?;
    }
    if rows.len() > TEXT_REMAINING_LIMIT {
        writeln!(out, "  ... and {} more", rows.len() - TEXT_REMAINING_LIMIT)?;
    }
    Ok(())
}

/// Remaining buffers, largest first: the first few with sizes and scopes,
/// then a count.
fn write_remaining(
    out: &mut impl Write,
    engine: &Engine,
    uncertain: &BTreeMap<Cell, Uncertainty>,
    filter: &Filter,
) -> Result<()> {
    let unidentified: Vec<_> = engine
        .unidentified_remaining()
        .into_iter()
        .filter(|((process, device, kind), _)| {
            filter.cell(*device, *kind)
                && filter.process(engine, *process)
                && filter.selects_all_times_and_scopes()
        })
        .collect();
    if !unidentified.is_empty() {
        writeln!(out, "\nRemaining buffers allocated before the recording began (ids unknown)")?;
        for ((process, device, kind), (bytes, buffers)) in unidentified {
            let mark = if uncertain.contains_key(&(process, device, kind)) { " ?" } else { "" };
            writeln!(
                out,
                "  process {} (pid {}) device {device} {:<13} {buffers} buffers, {}{mark}",
                engine.process(process).key(),
                engine.process(process).pid,
                kind_name(kind),
                human_bytes(bytes)
            )?;
        }
    }
    let limit = filter.top.unwrap_or(TEXT_REMAINING_LIMIT);
    let (count, remaining) = attribution::largest_remaining(engine, filter, limit);
    if count == 0 {
        writeln!(out, "\n0 remaining buffers")?;
        return Ok(());
    }
    writeln!(out, "\n{count} remaining buffers, largest first")?;
    for (b, scope) in remaining.iter() {
        let alias = if b.flags & memtrack::format::FLAG_ALIAS != 0 { " (alias)" } else { "" };
        let mark =
            if uncertain.contains_key(&(b.key.process, b.key.device_id, b.key.kind)) { " ?" } else { "" };
        writeln!(
            out,
            "  {:>11}  process {} device {} {:<8} buffer {:<10} scope {}  parent {} address {:#x}{alias}{mark}",
            human_bytes(b.size),
            engine.process(b.key.process).key(),
            b.key.device_id,
            kind_name(b.key.kind),
            b.key.buffer_id,
            scope_text(scope),
            b.parent_id,
            b.address
        )?;
    }
    if count > remaining.len() {
        writeln!(out, "  ... and {} more", count - remaining.len())?;
    }
    Ok(())
}
