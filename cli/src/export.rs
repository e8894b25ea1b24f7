//! `memtrack export`: a record file as a Chrome trace-event JSON timeline
//! (opens in ui.perfetto.dev; see [`perfetto`]), as CSV, one row per
//! record, or as Apache Parquet, one typed row per record (`export/parquet.rs`,
//! the default feature `parquet`).

#[cfg(feature = "parquet")]
pub mod parquet;
mod perfetto;
mod perfetto_proto;

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use memtrack::Event;

use crate::columns::for_each_row;
use crate::engine::ProcessStats;
use crate::filter::{Filter, FilterArgs};
use crate::output::{Output, Protected};
use crate::recording::RecordReader;
use crate::units::kind_name;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Chrome trace-event JSON for ui.perfetto.dev: usage counters per
    /// device and kind that keep every peak, buffer lifetimes as slices
    /// (leaks marked), phases between marks, wall-clock timestamps.
    Perfetto,
    /// The same timeline as a native Perfetto protobuf trace (smaller,
    /// faster to load): open it in ui.perfetto.dev.
    PerfettoProto,
    /// One row per record, with a header line.
    Csv,
    /// One row per record with typed columns, processes and marks in the
    /// file's metadata: for pandas, polars, DuckDB.
    #[cfg(feature = "parquet")]
    Parquet,
}

impl Format {
    /// Whether the format is not text.
    fn is_binary(self) -> bool {
        match self {
            Format::Perfetto | Format::Csv => false,
            Format::PerfettoProto => true,
            #[cfg(feature = "parquet")]
            Format::Parquet => true,
        }
    }
}

#[derive(Args)]
pub struct ExportArgs {
    /// A record file written by `memtrack record`.
    file: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    format: Format,
    /// perfetto: counter samples are bucketed by this many microseconds;
    /// each bucket keeps its highest, lowest and last value (so no peak is
    /// lost). Larger buckets make smaller traces.
    #[arg(long, value_name = "US", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    bucket_us: u64,
    /// Output file (default: standard output, unless it is a terminal and
    /// the format binary): a new file renamed into place once complete; an
    /// existing one is kept as OUT.old. Never the input, never a ring,
    /// never through a symbolic link.
    #[arg(short, long, value_name = "OUT")]
    output: Option<PathBuf>,
    /// Also read a recording that did not finish (its reader was killed):
    /// the records it holds.
    #[arg(long)]
    partial: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    // As gzip and zstd: binary bytes on a terminal are garbage at best, and
    // at worst escape sequences. Checked before the file is read.
    if args.output.is_none()
        && args.format.is_binary()
        && std::io::IsTerminal::is_terminal(&std::io::stdout())
    {
        anyhow::bail!(
            "memtrack: export {}: --format {} is binary and standard output is a terminal; \
             give -o OUT or redirect it",
            crate::units::printable_path(&args.file),
            args.format.to_possible_value().map_or_else(String::new, |v| v.get_name().to_owned())
        );
    }
    let mut reader = if args.partial {
        RecordReader::open_unfinished(&args.file)?
    } else {
        RecordReader::open(&args.file)?
    };
    if Filter::is_set(&args.filter) {
        // A first pass resolves the filters (marks, process keys, scope
        // paths, the largest remaining buffers); the export is the second.
        let (_, engine, _) = crate::report::load_with(&args.file, args.partial)?;
        let filter = Filter::resolve(&args.filter, &engine)
            .map_err(|e| anyhow::anyhow!("memtrack: export {}: {e:#}", args.file.display()))?;
        for line in crate::filter::unmatched(&args.filter, &engine, &args.file) {
            eprintln!("{line}");
        }
        let time = reader.header().time_base();
        reader.keep_only(filter.blocks(&engine, time));
    }
    let Some(path) = &args.output else {
        let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        write(args, &mut reader, &mut out)?;
        return Ok(out.flush()?);
    };
    let input = Protected::of(&args.file, "the input");
    let mut out = BufWriter::with_capacity(1 << 20, Output::create(path, input.as_slice())?);
    let written = write(args, &mut reader, &mut out)
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

fn write(args: &ExportArgs, reader: &mut RecordReader, out: &mut impl Write) -> Result<()> {
    match args.format {
        Format::Perfetto => perfetto::write_json(reader, out, args.bucket_us.saturating_mul(1000)),
        Format::PerfettoProto => perfetto::write_proto(reader, out, args.bucket_us.saturating_mul(1000)),
        Format::Csv => csv(reader, out),
        #[cfg(feature = "parquet")]
        Format::Parquet => parquet::write(reader, out, &args.file),
    }
}

/// One row per record; `process` is the process key the state engine
/// resolved (as `report` and the parquet export name it; empty for a
/// capacity, which belongs to a device): pids repeat across PID
/// namespaces and are reused, and so do table entries. It comes before
/// `label`, which stays last (the one field that may be quoted).
fn csv(reader: &mut RecordReader, out: &mut impl Write) -> Result<()> {
    writeln!(
        out,
        "ticket,time_ns,event,pid,process_slot,device_id,kind,buffer_id,parent_id,address,size,flags,process,label"
    )?;
    // Each process's key, by ProcessId, made once.
    let mut keys: Vec<String> = Vec::new();
    for_each_row(reader, |row, engine, _| {
        let r = row.record;
        let event = r.event().map_or("unknown", Event::name);
        let labelled =
            matches!(r.event(), Some(Event::Mark | Event::ProcessStart | Event::Scope | Event::Text));
        let (buffer_id, parent_id, address, size, device_id, kind) = if labelled {
            Default::default()
        } else {
            (r.buffer_id, r.parent_id, r.address, r.size, r.device_id, kind_name(r.kind))
        };
        let label = match r.event() {
            Some(Event::Scope) => csv_field(&String::from_utf8_lossy(r.scope_name())),
            _ if labelled => csv_field(&String::from_utf8_lossy(r.label())),
            _ => String::new(),
        };
        let process = match row.process {
            Some(id) => {
                let known = keys.len();
                keys.extend(engine.processes()[known..].iter().map(ProcessStats::key));
                keys[id.0 as usize].as_str()
            }
            None => "",
        };
        writeln!(
            out,
            "{},{},{event},{},{},{device_id},{kind},{buffer_id},{parent_id},{address},{size},{},{process},{label}",
            r.ticket, row.time_ns, r.pid, r.process_slot, r.flags
        )?;
        Ok(())
    })?;
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
