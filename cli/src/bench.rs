//! `memtrack bench`: what tracking costs a workload, measured side by side
//! in one run: hooks disabled, memtrack with a reader attached, and the
//! design memtrack replaces (a 128-byte message per event over a Unix
//! stream socket, under a mutex, to a server that reads it).
//!
//! Each row runs in a fresh child process (this binary, re-executed with
//! the hidden `bench-row` command), so the process-global hook state starts
//! clean and `MEMTRACK_RING` from the caller's environment cannot leak in.
//! The reader and the socket server run in this process, as they would in
//! production: in another process than the writers.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use memtrack::ffi::{MEMTRACK_KIND_DRAM, memtrack_alloc, memtrack_free};
use memtrack::{Consumer, Ring, RingOptions, ring_path};
use serde_json::json;

/// The socket baseline is ~100× slower per event; it runs this fraction of
/// the events so a round takes comparable time (ns/event is comparable).
const BASELINE_EVENT_DIVISOR: u64 = 20;

/// Size of one message in the socket design.
const SOCKET_MESSAGE: usize = 128;

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
}

/// What one child process measures.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Row {
    /// An exported C function that does nothing: the floor.
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
            Row::EmptyCall => "empty C call",
            Row::Disabled => "hooks disabled",
            Row::Enabled => "memtrack, reader attached",
            Row::Socket => "socket baseline",
        }
    }

    fn key(self) -> &'static str {
        match self {
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
}

struct Measured {
    row: Row,
    /// ns per event per thread, one per round.
    rounds_ns: Vec<f64>,
    lost: Option<u64>,
}

impl Measured {
    fn median(&self) -> f64 {
        let mut sorted = self.rounds_ns.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    if args.threads == 0 || args.events < 2 || args.rounds == 0 {
        bail!("--threads and --rounds must be at least 1, --events at least 2");
    }
    let rows = [Row::EmptyCall, Row::Disabled, Row::Enabled, Row::Socket];
    let mut measured = Vec::new();
    for row in rows {
        measured.push(measure(row, args)?);
    }
    let baseline = measured.iter().find(|m| m.row == Row::Socket).map(Measured::median);
    let mut out = std::io::stdout().lock();
    if args.json {
        let rows: Vec<_> = measured
            .iter()
            .map(|m| {
                json!({
                    "name": m.row.key(), "ns_per_event": m.median(),
                    "events_per_second": 1e9 / m.median() * args.threads as f64,
                    "speedup_vs_socket": baseline.map(|b| b / m.median()),
                    "lost": m.lost, "rounds_ns_per_event": m.rounds_ns,
                })
            })
            .collect();
        let doc = json!({
            "schema": "memtrack.bench/1", "threads": args.threads, "events": args.events,
            "socket_events": socket_events(args.events), "rounds": args.rounds, "rows": rows,
        });
        writeln!(out, "{doc}")?;
        return Ok(());
    }
    writeln!(
        out,
        "memtrack bench: {} thread(s), {} events per thread per round ({} for the socket), median of {} rounds",
        args.threads,
        args.events,
        socket_events(args.events),
        args.rounds
    )?;
    writeln!(out, "{:<28} {:>12} {:>14} {:>12} {:>8}", "row", "ns/event", "events/s", "vs socket", "lost")?;
    for m in &measured {
        let speedup = baseline.map_or_else(|| "-".to_owned(), |b| format!("{:.0}x", b / m.median()));
        let lost = m.lost.map_or_else(|| "-".to_owned(), |l| l.to_string());
        writeln!(
            out,
            "{:<28} {:>12.1} {:>14.0} {speedup:>12} {lost:>8}",
            m.row.name(),
            m.median(),
            1e9 / m.median() * args.threads as f64
        )?;
    }
    writeln!(out, "ns/event is per thread: the time of the slowest thread divided by its events.")?;
    Ok(())
}

fn socket_events(events: u64) -> u64 {
    (events / BASELINE_EVENT_DIVISOR).max(2)
}

/// Runs one row in a child process, with its reader or server here.
fn measure(row: Row, args: &BenchArgs) -> Result<Measured> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let events = if row == Row::Socket { socket_events(args.events) } else { args.events };
    let mut cmd = Command::new(exe);
    cmd.arg("bench-row")
        .arg(match row {
            Row::EmptyCall => "empty-call",
            Row::Disabled => "disabled",
            Row::Enabled => "enabled",
            Row::Socket => "socket",
        })
        .args(["--threads", &args.threads.to_string(), "--events", &events.to_string()])
        .args(["--rounds", &args.rounds.to_string()])
        .env_remove("MEMTRACK_RING")
        .stdout(Stdio::piped());
    let tag = format!("bench-{}-{}", std::process::id(), row.key());
    let mut helper: Option<Box<dyn FnOnce() -> Result<Option<u64>>>> = None;
    match row {
        Row::Enabled => {
            let path = ring_path(&tag);
            let _ = std::fs::remove_file(&path);
            Ring::create(&path, RingOptions::from_env(&path)?)?;
            cmd.env("MEMTRACK_RING", &path);
            let reader = Reader::start(&path)?;
            helper = Some(Box::new(move || reader.stop()));
        }
        Row::Socket => {
            let path = std::env::temp_dir().join(format!("memtrack-{tag}.sock"));
            let _ = std::fs::remove_file(&path);
            let server = SocketServer::start(&path)?;
            cmd.args(["--socket".as_ref(), path.as_os_str()]);
            let expected = events / 2 * 2 * args.threads * args.rounds;
            helper = Some(Box::new(move || server.stop(expected)));
        }
        Row::EmptyCall | Row::Disabled => {}
    }
    let output = cmd.output().context("cannot run the benchmark child")?;
    let lost = match helper {
        Some(stop) => stop()?,
        None => None,
    };
    if !output.status.success() {
        bail!("benchmark row {:?} failed ({})", row.name(), output.status);
    }
    let rounds_ns = BufReader::new(&output.stdout[..])
        .lines()
        .map_while(|line| line.ok()?.parse::<f64>().ok())
        .collect::<Vec<_>>();
    if rounds_ns.len() as u64 != args.rounds {
        bail!("benchmark row {:?} reported {} rounds, not {}", row.name(), rounds_ns.len(), args.rounds);
    }
    Ok(Measured { row, rounds_ns, lost })
}

/// The reader beside the enabled row: a consumer draining the ring in this
/// process, paced as `memtrack record` paces itself.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<()>>,
    path: PathBuf,
}

impl Reader {
    fn start(path: &Path) -> Result<Reader> {
        let mut consumer = Consumer::attach(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = Vec::with_capacity(4096);
            while !flag.load(Ordering::Relaxed) {
                let n = consumer.drain(usize::MAX, &mut buf, |records| {
                    black_box(records);
                    Ok::<(), ()>(())
                });
                consumer.pause_if_idle(n.unwrap_or(0));
            }
            Ok(())
        });
        Ok(Reader { stop, thread, path: path.to_owned() })
    }

    /// Stops the reader; returns the records lost (dropped + lost).
    fn stop(self) -> Result<Option<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let snapshot = Ring::open(&self.path)?.snapshot();
        let _ = std::fs::remove_file(&self.path);
        let p = snapshot.progress;
        Ok(Some(snapshot.dropped + p.lost_writer_died + p.lost_reader_died))
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

// ---- the child side ----------------------------------------------------

type Hook = extern "C" fn(u32, u8, u64, u64, u64);

#[inline(never)]
extern "C" fn empty_hook(_: u32, _: u8, _: u64, _: u64, _: u64) {}

/// Runs one row and prints one line per round: ns per event per thread.
pub fn run_row(args: &BenchRowArgs) -> Result<()> {
    let socket = match (&args.socket, args.row) {
        (Some(path), Row::Socket) => Some(Mutex::new(
            UnixStream::connect(path).with_context(|| format!("cannot connect to {}", path.display()))?,
        )),
        (None, Row::Socket) => bail!("the socket row needs --socket"),
        _ => None,
    };
    let (alloc, free): (Hook, Hook) = match args.row {
        Row::EmptyCall => (empty_hook, empty_hook),
        _ => (memtrack_alloc, memtrack_free),
    };
    let mut out = std::io::stdout().lock();
    for _ in 0..args.rounds {
        let barrier = Barrier::new(args.threads as usize);
        let slowest = std::thread::scope(|s| {
            let workers: Vec<_> = (0..args.threads)
                .map(|t| {
                    let (barrier, socket) = (&barrier, socket.as_ref());
                    s.spawn(move || {
                        barrier.wait();
                        match socket {
                            Some(socket) => send_messages(socket, t, args.events),
                            None => call_hooks(alloc, free, t, args.events),
                        }
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("bench thread")).max().unwrap_or_default()
        });
        writeln!(out, "{}", slowest.as_nanos() as f64 / (args.events / 2 * 2) as f64)?;
    }
    Ok(())
}

/// Alloc/free pairs through opaque function pointers, as a runtime's hook
/// calls into the shared library.
fn call_hooks(alloc: Hook, free: Hook, thread: u64, events: u64) -> Duration {
    let (alloc, free) = (black_box(alloc), black_box(free));
    let start = Instant::now();
    for i in 0..events / 2 {
        let id = thread << 40 | i;
        alloc(thread as u32, MEMTRACK_KIND_DRAM, id, 0x1000, 4096);
        free(thread as u32, MEMTRACK_KIND_DRAM, id, 0x1000, 4096);
    }
    start.elapsed()
}

/// The replaced design: a packed 128-byte message per event, sent with a
/// blocking write under one process-wide mutex.
fn send_messages(socket: &Mutex<UnixStream>, thread: u64, events: u64) -> Duration {
    let start = Instant::now();
    let mut message = [0u8; SOCKET_MESSAGE];
    for i in 0..events / 2 * 2 {
        message[..8].copy_from_slice(&((thread << 40) | (i / 2)).to_le_bytes());
        message[8] = (i % 2) as u8;
        message[16..24].copy_from_slice(&4096u64.to_le_bytes());
        let mut stream = socket.lock().unwrap_or_else(|e| e.into_inner());
        if stream.write_all(&message).is_err() {
            break;
        }
    }
    start.elapsed()
}
