//! `memtrack`: the reader side of memtrack. The commands live in the
//! `memtrack_cli` library (so benchmarks and tests can drive them); this is
//! the command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use memtrack_cli::{bench, check, demo, diff, export, gc, record, report, serve, status, watch};

#[derive(Parser)]
#[command(
    name = "memtrack",
    version,
    about = "Allocation tracking for accelerator runtimes: inspect memtrack rings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a built-in tt_metal-like workload (8 devices, mesh buffers,
    /// programs, a planted leak and double free) and print its report.
    Demo(demo::DemoArgs),
    /// Run a command (or watch a named ring) and record every allocation
    /// event into a record file; print the summary report at the end.
    Record(record::RecordArgs),
    /// Analyse a record file: usage per device, remaining buffers (leaks),
    /// anomalies, marks, lost records.
    Report(report::ReportArgs),
    /// Check a record file as a CI gate: exit 0 clean, 1 with one line per
    /// violation (remaining buffers, anomalies, lost records, peak limits),
    /// 2 for usage errors.
    Check(check::CheckArgs),
    /// Compare two record files: peak and remaining per device and kind,
    /// allocated and remaining per scope, with deltas.
    Diff(diff::DiffArgs),
    /// Export a record file as a Perfetto/Chrome timeline, CSV or Parquet.
    Export(export::ExportArgs),
    /// Snapshot of a ring from its live counters, without consuming it
    /// (like nvidia-smi). Without --ring, lists the rings in /dev/shm.
    Status(status::StatusArgs),
    /// List rings no live process writes or reads (from their locks);
    /// --force removes them.
    Gc(gc::GcArgs),
    /// Live view of a ring (consumes it): usage per device and kind,
    /// processes, event rate, losses, anomalies and marks. q quits.
    Watch(watch::WatchArgs),
    /// Serve a ring's usage to Prometheus at /metrics, from the live
    /// counters (--consume adds totals, peaks and anomalies).
    Serve(serve::ServeArgs),
    /// Measure what tracking costs, side by side in one run: hooks
    /// disabled, memtrack with a reader attached, and the Unix-socket
    /// design it replaced.
    Bench(bench::BenchArgs),
    #[command(hide = true)]
    BenchRow(bench::BenchRowArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(args) => record::run(&args),
        Command::Bench(args) => bench::run(&args).map(|()| 0),
        Command::BenchRow(args) => bench::run_row(&args).map(|()| 0),
        Command::Check(args) => check::run(&args),
        Command::Diff(args) => diff::run(&args),
        Command::Demo(args) => demo::run(&args).map(|()| 0),
        Command::Export(args) => export::run(&args).map(|()| 0),
        Command::Gc(args) => gc::run(&args).map(|()| 0),
        Command::Report(args) => report::run(&args).map(|()| 0),
        Command::Serve(args) => serve::run(&args).map(|()| 0),
        Command::Status(args) => status::run(&args).map(|()| 0),
        Command::Watch(args) => watch::run(&args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        // Output piped into `head` and closed early: not an error.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the library's errors already name the file.
            let text = format!("{error:#}");
            let text = if text.starts_with("memtrack:") { text } else { format!("memtrack: {text}") };
            eprintln!("{text}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
