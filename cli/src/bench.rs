//! `memtrack bench`: what tracking costs a workload, measured side by side
//! in one run: the hardware floor, hooks disabled, memtrack with a reader
//! attached, and the design memtrack replaces (a 128-byte message per event
//! over a Unix stream socket, under a mutex, to a server that reads it).
//!
//! The floor is what any design that stamps and stores a 64-byte record
//! must pay on this CPU: the clock the hook reads and one 64-byte slot
//! written with plain stores and a Release store, into a ring-sized buffer
//! of the thread's own, with no consumer and no claim. Every row's ratio to
//! it (one thread) says how far from the hardware the hook is on the machine
//! at hand (issue 14: the target is ≤ 1.5× with one thread, ≤ 2× per thread
//! with two). The floor and the enabled hook also run with two threads.
//!
//! Each row runs in a fresh child process (this binary, re-executed with
//! the hidden `bench-row` command), so the process-global hook state starts
//! clean and `MEMTRACK_RING` from the caller's environment cannot leak in.
//! The reader and the socket server run in this process, as they would in
//! production: in another process than the writers. Rounds are interleaved
//! (round 1 of every row, then round 2, ...), one child per row and round,
//! so a burst of load from elsewhere hits every row alike and the ratios
//! hold up better than the nanoseconds. Each row also reports thread CPU
//! time, which leaves out other processes' time slices. On a machine
//! shared with other work, `chrt -r 1 memtrack bench` keeps the writers and
//! the reader on the CPUs together, which is the cost under study
//! (docs/PERFORMANCE.md, "The hardware floor").

mod row;

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use memtrack::clock::ClockSource;
use memtrack::{BatchPolicy, Consumer, Ring, RingOptions, ring_path};
use serde_json::json;

pub use row::run_row;
use row::thread_cpu_time;

/// The socket baseline is ~100× slower per event; it runs this fraction of
/// the events so a round takes comparable time (ns/event is comparable).
const BASELINE_EVENT_DIVISOR: u64 = 20;

/// Size of one message in the socket design.
const SOCKET_MESSAGE: usize = 128;

/// The thread count of the second floor and hook rows: issue 14's target
/// is stated per thread with two threads.
const SECOND_THREAD_COUNT: u64 = 2;

/// Processes of the multi-process hook row: tt_metal hosts run several
/// processes per host (pytest-xdist workers, one per device group) writing
/// one ring, each hooking the same devices; the hook must scale across
/// them as across threads.
const PROCESS_COUNT: u64 = 2;

#[derive(Args)]
pub struct BenchArgs {
    /// Writer threads per row.
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Events per thread per round (the socket baseline runs 1/20 of them).
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Rounds per row; the table shows the median.
    #[arg(long, default_value_t = 5)]
    rounds: u64,
    /// One JSON document (schema memtrack.bench/1) instead of a table.
    #[arg(long)]
    json: bool,
    /// The reader's batch, in records (default: the consumer's, min(4096,
    /// capacity/8); 1: no batching). For measuring the batching policy.
    #[arg(long, hide = true)]
    reader_batch: Option<u64>,
    /// The multi-process row's process i hooks device i instead of all
    /// hooking device 0: for measuring what sharing a device costs.
    #[arg(long, hide = true)]
    processes_on_own_devices: bool,
}

/// What one child process measures.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Row {
    /// The clock and one 64-byte slot per event (plain stores and a Release
    /// store) into a private ring-sized buffer per thread: the hardware floor.
    Floor,
    /// An exported C function that does nothing: the cost of the call.
    EmptyCall,
    /// `memtrack_alloc`/`memtrack_free` with tracking off.
    Disabled,
    /// `memtrack_alloc`/`memtrack_free` into a ring a reader drains.
    Enabled,
    /// A 128-byte message per event over a Unix socket under a mutex.
    Socket,
}

impl Row {
    fn name(self) -> &'static str {
        match self {
            Row::Floor => "floor: clock + 64-byte slot",
            Row::EmptyCall => "empty C call",
            Row::Disabled => "hooks disabled",
            Row::Enabled => "memtrack, reader attached",
            Row::Socket => "socket baseline",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Row::Floor => "floor",
            Row::EmptyCall => "empty_call",
            Row::Disabled => "disabled",
            Row::Enabled => "enabled",
            Row::Socket => "socket",
        }
    }
}

/// The hidden per-row command.
#[derive(Args)]
pub struct BenchRowArgs {
    #[arg(value_enum)]
    row: Row,
    #[arg(long)]
    threads: u64,
    #[arg(long)]
    events: u64,
    #[arg(long)]
    rounds: u64,
    /// The socket baseline's server.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Slots of the ring (the enabled row's, and the floor's buffers): one
    /// untimed lap of events runs first, so page faults are not measured.
    #[arg(long, default_value_t = 1 << 16)]
    capacity: u64,
    /// After the untimed lap, print `ready` and wait for a line on stdin
    /// before the timed events: how the parent starts several row
    /// processes at once (as the threads of one start at a barrier).
    #[arg(long)]
    start_gate: bool,
    /// Device id of thread 0's events (thread t hooks device `device + t`):
    /// the multi-process row gives every process device 0, the tt_metal
    /// case of processes sharing a device; other values are for
    /// experiments (processes on different devices).
    #[arg(long, default_value_t = 0, overrides_with = "device")]
    device: u32,
}

/// One line of the table: a row at a thread count, in one process or in
/// several at once (each with `threads` threads, all on one ring).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Line {
    row: Row,
    threads: u64,
    processes: u64,
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.key())
    }
}

impl Line {
    /// A line of one process.
    const fn single(row: Row, threads: u64) -> Line {
        Line { row, threads, processes: 1 }
    }

    /// The row's JSON name: the plain key at `--threads` (and for the
    /// one-thread floor), `<key>_<n>_threads` at another thread count,
    /// `<key>_<n>_processes` for one thread in each of n processes.
    fn key(self, threads: u64) -> String {
        let plain = if self.row == Row::Floor { 1 } else { threads };
        if self.processes > 1 {
            format!("{}_{}_processes", self.row.key(), self.processes)
        } else if self.threads == plain {
            self.row.key().to_owned()
        } else {
            format!("{}_{}_threads", self.row.key(), self.threads)
        }
    }

    /// The row's name in the table.
    fn name(self) -> String {
        match self.processes {
            1 => self.row.name().to_owned(),
            n => format!("{}, {n} processes", self.row.name()),
        }
    }
}

/// The table's lines for `--threads N`: the one-thread floor first (every
/// ratio's denominator), every row at N threads (the floor too), then the
/// floor and the enabled hook at two threads if N is not two, then the
/// enabled hook with one thread in each of two processes at once, one
/// ring, both hooking device 0.
fn lines(threads: u64) -> Vec<Line> {
    let mut lines = vec![Line::single(Row::Floor, 1)];
    if threads != 1 {
        lines.push(Line::single(Row::Floor, threads));
    }
    for row in [Row::EmptyCall, Row::Disabled, Row::Enabled, Row::Socket] {
        lines.push(Line::single(row, threads));
    }
    if threads != SECOND_THREAD_COUNT {
        for row in [Row::Floor, Row::Enabled] {
            lines.push(Line::single(row, SECOND_THREAD_COUNT));
        }
    }
    lines.push(Line { row: Row::Enabled, threads: 1, processes: PROCESS_COUNT });
    lines
}

struct Measured {
    line: Line,
    /// ns per event per thread, one per round.
    rounds_ns: Vec<f64>,
    /// The same in thread CPU time, one per round.
    rounds_cpu_ns: Vec<f64>,
    /// What the reader beside the row used, one per round (rows with a
    /// reader only).
    rounds_reader: Vec<ReaderUse>,
    lost: Option<u64>,
}

impl Measured {
    fn median(&self) -> f64 {
        median(&self.rounds_ns)
    }

    fn median_cpu(&self) -> f64 {
        median(&self.rounds_cpu_ns)
    }

    /// The reader's CPU time per record it took, median of the rounds in
    /// which it took any; `None` for a row without a reader.
    fn reader_cpu_ns_per_record(&self) -> Option<f64> {
        let per_round: Vec<f64> = self.rounds_reader.iter().filter_map(|u| u.ns_per_record()).collect();
        (!per_round.is_empty()).then(|| median(&per_round))
    }
}

/// The reader thread's CPU time over one round and the records it took:
/// its cost per record, which on a machine with fewer CPUs than busy
/// threads adds to the writers' wall time (issue 14).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct ReaderUse {
    cpu: Duration,
    records: u64,
}

impl ReaderUse {
    fn ns_per_record(self) -> Option<f64> {
        (self.records > 0).then(|| self.cpu.as_nanos() as f64 / self.records as f64)
    }
}

/// A figure for the table, or "-" for none.
fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The first `model name` of /proc/cpuinfo (x86), else its `Hardware` or
/// `CPU part` line (Arm), else "unknown".
fn cpu_model(cpuinfo: &str) -> String {
    ["model name", "Hardware", "CPU part"]
        .iter()
        .find_map(|field| {
            cpuinfo.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == *field && !value.trim().is_empty()).then(|| value.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.threads == 0 || args.events < 2 || args.rounds == 0 {
        bail!("--threads and --rounds must be at least 1, --events at least 2");
    }
    let tag = format!("bench-{}", std::process::id());
    let options = RingOptions::from_env(&ring_path(&tag))?;
    let capacity = options.capacity;
    let mut measured: Vec<Measured> = lines(args.threads)
        .into_iter()
        .map(|line| Measured {
            line,
            rounds_ns: Vec::new(),
            rounds_cpu_ns: Vec::new(),
            rounds_reader: Vec::new(),
            lost: None,
        })
        .collect();
    for _ in 0..args.rounds {
        for m in &mut measured {
            let (round, helped) = measure(m.line, args, &tag, options)?;
            m.rounds_ns.push(round.wall_ns);
            m.rounds_cpu_ns.push(round.cpu_ns);
            m.lost = helped.lost.map(|l| l + m.lost.unwrap_or(0));
            m.rounds_reader.extend(helped.reader);
        }
    }
    let (floor, floor_cpu) = (measured[0].median(), measured[0].median_cpu());
    let ratio = |m: &Measured| (floor > 0.0).then(|| m.median() / floor);
    let ratio_cpu = |m: &Measured| (floor_cpu > 0.0).then(|| m.median_cpu() / floor_cpu);
    let baseline = |m: &Measured| {
        measured
            .iter()
            .find(|s| s.line == Line::single(Row::Socket, m.line.threads * m.line.processes))
            .map(Measured::median)
    };
    let cpu = cpu_model(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
    let clock = match ClockSource::detect() {
        ClockSource::Tsc => "tsc",
        ClockSource::Monotonic => "monotonic",
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<_> = measured
            .iter()
            .map(|m| {
                json!({
                    "name": m.line.key(args.threads), "threads": m.line.threads,
                    "processes": m.line.processes,
                    "ns_per_event": m.median(),
                    "events_per_second": 1e9 / m.median() * (m.line.threads * m.line.processes) as f64,
                    "speedup_vs_socket": baseline(m).map(|b| b / m.median()),
                    "ratio_to_floor": ratio(m),
                    "cpu_ns_per_event": m.median_cpu(), "ratio_to_floor_cpu": ratio_cpu(m),
                    "lost": m.lost, "rounds_ns_per_event": m.rounds_ns,
                    "reader_cpu_ns_per_record": m.reader_cpu_ns_per_record(),
                })
            })
            .collect();
        let doc = json!({
            "schema": "memtrack.bench/1", "threads": args.threads, "events": args.events,
            "socket_events": socket_events(args.events), "rounds": args.rounds,
            "cpu_model": cpu, "clock": clock, "capacity": capacity,
            "floor_ns_per_event": floor, "floor_cpu_ns_per_event": floor_cpu, "rows": rows,
        });
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    writeln!(
        out,
        "memtrack bench: {} thread(s), {} events per thread per round ({} for the socket), median of {} interleaved rounds",
        args.threads,
        args.events,
        socket_events(args.events),
        args.rounds
    )?;
    writeln!(out, "cpu: {cpu}; clock: {clock}; ring: {capacity} slots")?;
    writeln!(
        out,
        "{:<39} {:>7} {:>10} {:>14} {:>8} {:>10} {:>8} {:>8} {:>8} {:>12}",
        "row",
        "threads",
        "ns/event",
        "events/s",
        "x floor",
        "vs socket",
        "lost",
        "cpu ns",
        "x floor",
        "reader ns/rec"
    )?;
    let times = |r: Option<f64>| r.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
    for m in &measured {
        let speedup = baseline(m).map_or_else(|| "-".to_owned(), |b| format!("{:.0}x", b / m.median()));
        let lost = m.lost.map_or_else(|| "-".to_owned(), |l| l.to_string());
        writeln!(
            out,
            "{:<39} {:>7} {:>10.1} {:>14.0} {:>8} {speedup:>10} {lost:>8} {:>8.1} {:>8} {:>13}",
            m.line.name(),
            m.line.threads,
            m.median(),
            1e9 / m.median() * (m.line.threads * m.line.processes) as f64,
            times(ratio(m)),
            m.median_cpu(),
            times(ratio_cpu(m)),
            cell(m.reader_cpu_ns_per_record(), 1),
        )?;
    }
    let hook = |threads| measured.iter().find(|m| m.line == Line::single(Row::Enabled, threads));
    if let (Some(one), Some(two)) = (hook(1), hook(SECOND_THREAD_COUNT)) {
        let (one, one_cpu, two, two_cpu) =
            (times(ratio(one)), times(ratio_cpu(one)), times(ratio(two)), times(ratio_cpu(two)));
        writeln!(
            out,
            "hook with a reader, per thread, over the one-thread floor: {one}x with 1 thread (target 1.5x), \
             {two}x with {SECOND_THREAD_COUNT} threads (target 2x); in CPU time {one_cpu}x and {two_cpu}x"
        )?;
    }
    let processes = Line { row: Row::Enabled, threads: 1, processes: PROCESS_COUNT };
    if let Some(m) = measured.iter().find(|m| m.line == processes) {
        writeln!(
            out,
            "hook with a reader, one thread in each of {PROCESS_COUNT} processes on one ring and one device: \
             {}x the floor per process (as the threads' target, 2x); in CPU time {}x",
            times(ratio(m)),
            times(ratio_cpu(m))
        )?;
    }
    writeln!(
        out,
        "ns/event is per thread: the time of the slowest thread (of all processes) divided by its events."
    )?;
    writeln!(
        out,
        "cpu ns: the same in the threads' CPU time, which leaves out the time slices other processes \
         took while a thread waited to run (compare it with ns/event on a busy machine)."
    )?;
    writeln!(
        out,
        "reader ns/rec: the reader thread's CPU time (in this process, idle looks included) per record it \
         took; with more busy threads than CPUs it adds to the writers' wall time."
    )?;
    writeln!(
        out,
        "floor: the clock read and one 64-byte slot (7 plain stores, 1 Release store) per event, into a \
         {capacity}-slot buffer per thread, no claim, no consumer; x floor divides by its one-thread median."
    )?;
    Ok(())
}

fn socket_events(events: u64) -> u64 {
    (events / BASELINE_EVENT_DIVISOR).max(2)
}

/// One round of one line, per event per thread (the slowest thread's).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Round {
    wall_ns: f64,
    cpu_ns: f64,
}

/// What the reader or server beside a row reports after a round.
#[derive(Clone, Copy, Debug, Default)]
struct Helped {
    /// Records (or messages) lost; `None` for a row without either.
    lost: Option<u64>,
    /// The reader's CPU time and records (the enabled row).
    reader: Option<ReaderUse>,
}

/// Runs one round of one line in a child process (in as many as the line
/// has processes, started together), with its reader or server here: the
/// round (the slowest process's), and what the reader or server reports.
fn measure(line: Line, args: &BenchArgs, tag: &str, options: RingOptions) -> Result<(Round, Helped)> {
    let capacity = options.capacity;
    let Line { row, threads, processes } = line;
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let events = if row == Row::Socket { socket_events(args.events) } else { args.events };
    let mut cmd = Command::new(exe);
    cmd.arg("bench-row")
        .arg(match row {
            Row::Floor => "floor",
            Row::EmptyCall => "empty-call",
            Row::Disabled => "disabled",
            Row::Enabled => "enabled",
            Row::Socket => "socket",
        })
        .args(["--threads", &threads.to_string(), "--events", &events.to_string()])
        .args(["--rounds", "1", "--capacity", &capacity.to_string()])
        .env_remove("MEMTRACK_RING")
        .stdout(Stdio::piped());
    let tag = format!("{tag}-{}", line.key(args.threads));
    let mut helper: Option<Box<dyn FnOnce() -> Result<Helped>>> = None;
    match row {
        Row::Enabled => {
            let path = ring_path(&tag);
            let _ = std::fs::remove_file(&path);
            Ring::create(&path, options)?;
            cmd.env("MEMTRACK_RING", &path);
            let reader = Reader::start(&path, args.reader_batch)?;
            helper = Some(Box::new(move || reader.stop()));
        }
        Row::Socket => {
            let path = std::env::temp_dir().join(format!("memtrack-{tag}.sock"));
            let _ = std::fs::remove_file(&path);
            let server = SocketServer::start(&path)?;
            cmd.args(["--socket".as_ref(), path.as_os_str()]);
            let expected = events / 2 * 2 * threads;
            helper = Some(Box::new(move || Ok(Helped { lost: server.stop(expected)?, reader: None })));
        }
        Row::Floor | Row::EmptyCall | Row::Disabled => {}
    }
    let outputs = if processes == 1 {
        cmd.output().context("cannot run the benchmark child").map(|o| vec![o])
    } else {
        run_gated(&mut cmd, processes, args.processes_on_own_devices)
    };
    let helped = match helper {
        Some(stop) => stop()?,
        None => Helped::default(),
    };
    let mut slowest: Option<Round> = None;
    for output in outputs? {
        if !output.status.success() {
            bail!("benchmark row {:?} failed ({})", line.name(), output.status);
        }
        let rounds = BufReader::new(&output.stdout[..])
            .lines()
            .map_while(|line| {
                let line = line.ok()?;
                let (wall, cpu) = line.split_once(' ')?;
                Some(Round { wall_ns: wall.parse().ok()?, cpu_ns: cpu.parse().ok()? })
            })
            .collect::<Vec<_>>();
        let [round] = rounds[..] else {
            bail!("benchmark row {:?} reported {} rounds, not 1", line.name(), rounds.len());
        };
        slowest = Some(match slowest {
            None => round,
            Some(s) => Round { wall_ns: s.wall_ns.max(round.wall_ns), cpu_ns: s.cpu_ns.max(round.cpu_ns) },
        });
    }
    Ok((slowest.expect("at least one process"), helped))
}

/// Runs `processes` copies of the row command at once, behind a start
/// gate: each runs its untimed lap and says `ready`; once all have, each
/// is told to start (a line on its stdin), so their timed events overlap
/// as the threads of one process do behind their barrier.
fn run_gated(cmd: &mut Command, processes: u64, own_devices: bool) -> Result<Vec<std::process::Output>> {
    cmd.arg("--start-gate").stdin(Stdio::piped());
    let mut children = Vec::new();
    for process in 0..processes {
        // `--device` may be given again: the last one counts.
        let device = if own_devices { process } else { 0 };
        cmd.args(["--device", &device.to_string()]);
        children.push(cmd.spawn().context("cannot run the benchmark child")?);
    }
    let mut stdouts = Vec::new();
    for child in &mut children {
        let mut stdout = BufReader::new(child.stdout.take().context("the child's stdout")?);
        let mut ready = String::new();
        stdout.read_line(&mut ready).context("cannot read the benchmark child")?;
        if ready.trim_end() != "ready" {
            bail!("a benchmark child did not get ready (it said {ready:?})");
        }
        stdouts.push(stdout);
    }
    // Each child waits for this line; dropping the pipe after it is fine.
    for child in &mut children {
        let mut stdin = child.stdin.take().context("the child's stdin")?;
        stdin.write_all(b"go\n").context("cannot start a benchmark child")?;
    }
    let mut outputs = Vec::new();
    for (mut child, mut stdout) in children.into_iter().zip(stdouts) {
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).context("cannot read the benchmark child")?;
        let status = child.wait().context("cannot wait for the benchmark child")?;
        outputs.push(std::process::Output { status, stdout: rest, stderr: Vec::new() });
    }
    Ok(outputs)
}

/// The reader beside the enabled row: a consumer draining the ring in this
/// process, batched and paced as `memtrack record` batches and paces itself.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<ReaderUse>,
    path: PathBuf,
}

impl Reader {
    fn start(path: &Path, batch: Option<u64>) -> Result<Reader> {
        let mut consumer = Consumer::attach(path)?;
        if let Some(batch) = batch {
            consumer.set_batch_policy(BatchPolicy { batch, ..consumer.batch_policy() });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("bench-reader".into()).spawn(move || {
            // Measured from inside the thread: its own CPU clock, from
            // before its first look to after its last.
            let start = thread_cpu_time();
            let mut records = 0;
            let mut buf = Vec::with_capacity(4096);
            while !flag.load(Ordering::Relaxed) {
                let n = consumer.drain_due(usize::MAX, &mut buf, |records| {
                    black_box(records);
                    Ok::<(), ()>(())
                });
                let n = n.unwrap_or(0);
                records += n as u64;
                consumer.pause_if_idle(n);
            }
            // What the writers left that no batch was due for yet: a short
            // round (or a busy machine) can end before the first is due, and
            // these records cost the reader as much as the others.
            let rest = consumer.drain_claimed(&mut buf, |records| {
                black_box(records);
                Ok::<(), ()>(())
            });
            records += rest.unwrap_or(0) as u64;
            ReaderUse { cpu: thread_cpu_time().saturating_sub(start), records }
        })?;
        Ok(Reader { stop, thread, path: path.to_owned() })
    }

    /// Stops the reader; returns the records lost (dropped + lost) and
    /// what the reader used.
    fn stop(self) -> Result<Helped> {
        self.stop.store(true, Ordering::Relaxed);
        let reader = self.thread.join().ok();
        let snapshot = Ring::open(&self.path)?.snapshot();
        let _ = std::fs::remove_file(&self.path);
        let p = snapshot.progress;
        Ok(Helped { lost: Some(snapshot.dropped + p.lost_writer_died + p.lost_reader_died), reader })
    }
}

/// The socket design's server: accepts connections and reads 128-byte
/// messages until they close.
struct SocketServer {
    thread: std::thread::JoinHandle<u64>,
    path: PathBuf,
}

impl SocketServer {
    fn start(path: &Path) -> Result<SocketServer> {
        let listener =
            UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
        let thread = std::thread::spawn(move || {
            let mut received = 0;
            // One client connection per row child.
            if let Ok((mut stream, _)) = listener.accept() {
                let mut message = [0u8; SOCKET_MESSAGE];
                while stream.read_exact(&mut message).is_ok() {
                    black_box(&message);
                    received += 1;
                }
            }
            received
        });
        Ok(SocketServer { thread, path: path.to_owned() })
    }

    /// Waits for the client to hang up; returns the messages missing.
    fn stop(self, expected: u64) -> Result<Option<u64>> {
        let received = self.thread.join().unwrap_or(0);
        let _ = std::fs::remove_file(&self.path);
        Ok(Some(expected.saturating_sub(received)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_model_is_the_first_model_name_line() {
        let x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7R13 Processor\n\
                   processor\t: 1\nmodel name\t: something else\n";
        assert_eq!(cpu_model(x86), "AMD EPYC 7R13 Processor");
        assert_eq!(cpu_model("processor\t: 0\nCPU part\t: 0xd0c\n"), "0xd0c");
        assert_eq!(cpu_model("model name\t:\n"), "unknown", "an empty value is no model");
        assert_eq!(cpu_model(""), "unknown");
    }

    #[test]
    fn the_one_thread_floor_comes_first_and_every_line_has_its_own_key() {
        for threads in 1..=4 {
            let lines = lines(threads);
            assert_eq!(lines[0], Line::single(Row::Floor, 1), "every ratio's denominator");
            let keys: Vec<String> = lines.iter().map(|l| l.key(threads)).collect();
            let mut unique = keys.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), keys.len(), "{keys:?}");
            // The keys of the rows before this issue keep their names.
            for key in ["floor", "empty_call", "disabled", "enabled", "socket"] {
                assert!(keys.iter().any(|k| k == key), "{key} missing from {keys:?}");
            }
            for row in [Row::Floor, Row::Enabled] {
                let two = Line::single(row, SECOND_THREAD_COUNT);
                assert!(lines.contains(&two), "{threads} threads: no {two:?}");
            }
        }
        assert!(lines(1).iter().any(|l| l.key(1) == "enabled_2_threads"));
        for threads in 1..=4 {
            // Last, so the rows before it keep their places.
            let last = *lines(threads).last().unwrap();
            assert_eq!(last, Line { row: Row::Enabled, threads: 1, processes: 2 });
            assert_eq!(last.key(threads), "enabled_2_processes");
        }
        assert!(lines(3).iter().any(|l| l.key(3) == "floor_3_threads"));
    }

    #[test]
    fn the_reader_cost_is_the_median_over_rounds_that_took_records_and_none_without_a_reader() {
        let line = Line::single(Row::Enabled, 2);
        let used = |ns: u64, records| ReaderUse { cpu: Duration::from_nanos(ns), records };
        let mut m = Measured {
            line,
            rounds_ns: vec![1.0; 4],
            rounds_cpu_ns: vec![1.0; 4],
            rounds_reader: vec![used(3_000, 200), used(900, 0), used(1_000, 100), used(4_000, 100)],
            lost: Some(0),
        };
        // 15, 10 and 40 ns per record; the round that took nothing (idle
        // looks only) has no cost per record and is left out.
        assert_eq!(m.reader_cpu_ns_per_record(), Some(15.0));
        m.rounds_reader = vec![used(900, 0)];
        assert_eq!(m.reader_cpu_ns_per_record(), None, "a reader that took nothing");
        m.rounds_reader.clear();
        assert_eq!(m.reader_cpu_ns_per_record(), None, "no reader");
        assert_eq!(cell(None, 1), "-");
        assert_eq!(cell(Some(7.25), 1), "7.2");
    }
}
