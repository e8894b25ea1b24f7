//! `memtrack export`: a record file as a Chrome trace-event JSON timeline
//! (opens in ui.perfetto.dev and Tracy) or as CSV, one row per record.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use memtrack::{Event, Record};
use serde_json::{Value, json};

use crate::engine::{Engine, ProcState};
use crate::output::{Output, Protected};
use crate::recording::{Block, RecordReader};
use crate::units::kind_name;

/// Perfetto groups counter tracks by process; devices get these pseudo
/// process ids, far above any real pid (pid_max is at most 2^22).
const DEVICE_PID_BASE: u64 = 1 << 30;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Chrome trace-event JSON: counter tracks per device and kind, marks,
    /// anomalies and remaining buffers as instant events.
    Perfetto,
    /// One row per record, with a header line.
    Csv,
}

#[derive(Args)]
pub struct ExportArgs {
    /// A record file written by `memtrack record`.
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    format: Format,
    /// Output file (default: standard output): a new file renamed into
    /// place once complete; an existing one is kept as OUT.old. Never the
    /// input, never a ring, never through a symbolic link.
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Also read a recording that did not finish (its reader was killed):
    /// the records it holds.
    #[arg(long)]
    partial: bool,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let mut reader = if args.partial {
        RecordReader::open_unfinished(&args.file)?
    } else {
        RecordReader::open(&args.file)?
    };
    let Some(path) = &args.output else {
        let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        write(args.format, &mut reader, &mut out)?;
        return Ok(out.flush()?);
    };
    let input = Protected::of(&args.file, "the input");
    let mut out = BufWriter::with_capacity(1 << 20, Output::create(path, input.as_slice())?);
    let written = write(args.format, &mut reader, &mut out)
        .and_then(|()| out.flush().with_context(|| format!("memtrack: output file {}", path.display())));
    // Without flushing again: after a failure, only the temporary file matters.
    let (output, _) = out.into_parts();
    match written {
        // Complete: in place; else nothing half-written is left behind.
        Ok(()) => {
            if let Some(replaced) = output.commit()? {
                eprintln!("{replaced}");
            }
            Ok(())
        }
        Err(error) => {
            output.discard();
            Err(error)
        }
    }
}

fn write(format: Format, reader: &mut RecordReader, out: &mut impl Write) -> Result<()> {
    match format {
        Format::Perfetto => perfetto(reader, out),
        Format::Csv => csv(reader, out),
    }
}

fn csv(reader: &mut RecordReader, out: &mut impl Write) -> Result<()> {
    let time = reader.header().time_base();
    writeln!(
        out,
        "ticket,time_ns,event,pid,process_slot,device_id,kind,buffer_id,parent_id,address,size,flags,label"
    )?;
    while let Some(block) = reader.next_block()? {
        let Block::Record(r) = block else { continue };
        let event = r.event().map_or("unknown", Event::name);
        let labelled = matches!(r.event(), Some(Event::Mark | Event::ProcessStart));
        let (buffer_id, parent_id, address, size, device_id, kind) = if labelled {
            Default::default()
        } else {
            (r.buffer_id, r.parent_id, r.address, r.size, r.device_id, kind_name(r.kind))
        };
        let label = if labelled { csv_field(&String::from_utf8_lossy(r.label())) } else { String::new() };
        writeln!(
            out,
            "{},{},{event},{},{},{device_id},{kind},{buffer_id},{parent_id},{address},{size},{},{label}",
            r.ticket,
            time.ns(r.timestamp),
            r.pid,
            r.process_slot,
            r.flags
        )?;
    }
    Ok(())
}

/// A CSV field, quoted when it holds a separator, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Streams trace events: one counter sample per change of a (device,
/// kind) track (samples in the same microsecond coalesced), process and
/// device names as metadata, and instant events.
fn perfetto(reader: &mut RecordReader, out: &mut impl Write) -> Result<()> {
    let mut engine = Engine::new(reader.header().time_base());
    let mut events = TraceWriter::start(out)?;
    let mut named_devices = std::collections::BTreeSet::new();
    let mut pending = std::collections::BTreeMap::<(u32, u8), (u64, u64)>::new();
    while let Some(block) = reader.next_block()? {
        let anomalies_before = engine.anomalies().len();
        let marks_before = engine.marks().len();
        engine.apply_block(&block);
        let Block::Record(record) = block else { continue };
        match record.event() {
            Some(Event::Alloc | Event::Free) => {
                let track = (record.device_id, record.kind);
                // An unknown free touches no usage: no track to sample.
                if let Some(stats) = engine.devices().get(&track) {
                    if named_devices.insert(record.device_id) {
                        events.write(&device_metadata(record.device_id))?;
                    }
                    let ts_us = engine.last_time_ns() / 1000;
                    // Coalesce: flush the track's previous sample only when
                    // the microsecond changes.
                    if let Some((us, value)) = pending.insert(track, (ts_us, stats.live_bytes))
                        && us != ts_us
                    {
                        events.write(&counter(track, us, value))?;
                    }
                }
            }
            Some(Event::ProcessStart) => events.write(&process_metadata(&record))?,
            _ => {}
        }
        if let Some(m) = engine.marks().get(marks_before) {
            events.write(&json!({
                "ph": "i", "s": "g", "name": m.label, "cat": "mark",
                "ts": m.time_ns as f64 / 1000.0, "pid": m.pid, "tid": m.pid,
            }))?;
        }
        if let Some(a) = engine.anomalies().get(anomalies_before) {
            events.write(&json!({
                "ph": "i", "s": "p", "cat": "anomaly",
                "name": format!("{} {} buffer {}", a.kind.name(), kind_name(a.key.kind), a.key.buffer_id),
                "ts": a.time_ns as f64 / 1000.0, "pid": a.key.pid, "tid": a.key.pid,
                "args": { "device_id": a.key.device_id, "size": a.size, "expected_size": a.expected_size },
            }))?;
        }
    }
    for (track, (us, value)) in pending {
        events.write(&counter(track, us, value))?;
    }
    let end_us = engine.last_time_ns() as f64 / 1000.0;
    for p in engine.processes().iter().filter(|p| p.state == ProcState::Died) {
        let ts = p.end_time_ns.unwrap_or(engine.last_time_ns()) as f64 / 1000.0;
        events.write(&json!({
            "ph": "i", "s": "p", "cat": "process", "name": format!("process {} died", p.pid),
            "ts": ts, "pid": p.pid, "tid": p.pid,
        }))?;
    }
    for b in engine.remaining() {
        events.write(&json!({
            "ph": "i", "s": "p", "cat": "remaining",
            "name": format!("remaining {} buffer {} ({} B)", kind_name(b.key.kind), b.key.buffer_id, b.size),
            "ts": end_us, "pid": b.key.pid, "tid": b.key.pid,
            "args": {
                "device_id": b.key.device_id, "parent_id": b.parent_id, "address": b.address,
                "size": b.size, "flags": b.flags, "allocated_at_us": b.time_ns as f64 / 1000.0,
            },
        }))?;
    }
    events.finish()
}

fn counter((device, kind): (u32, u8), ts_us: u64, bytes: u64) -> Value {
    json!({
        "ph": "C", "name": format!("{} bytes", kind_name(kind)), "ts": ts_us,
        "pid": DEVICE_PID_BASE + device as u64, "args": { "bytes": bytes },
    })
}

fn device_metadata(device: u32) -> Value {
    json!({
        "ph": "M", "name": "process_name", "pid": DEVICE_PID_BASE + device as u64,
        "args": { "name": format!("device {device}") },
    })
}

fn process_metadata(record: &Record) -> Value {
    json!({
        "ph": "M", "name": "process_name", "pid": record.pid,
        "args": { "name": format!("{} ({})", String::from_utf8_lossy(record.label()), record.pid) },
    })
}

/// `{"traceEvents":[...]}`, written one event at a time.
struct TraceWriter<'a, W: Write> {
    out: &'a mut W,
    first: bool,
}

impl<'a, W: Write> TraceWriter<'a, W> {
    fn start(out: &'a mut W) -> Result<Self> {
        out.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
        Ok(TraceWriter { out, first: true })
    }

    fn write(&mut self, event: &Value) -> Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut *self.out, event)?;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        self.out.write_all(b"\n]}\n")?;
        Ok(())
    }
}
