//! The child side of `memtrack bench`: one row's process (the hidden
//! `bench-row` command), its threads and what each times.

use std::hint::black_box;
use std::io::{BufRead, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use memtrack::clock::ClockSource;
use memtrack::ffi::{MEMTRACK_KIND_DRAM, memtrack_alloc, memtrack_free};

use super::{BenchRowArgs, Row, SOCKET_MESSAGE};

type Hook = extern "C" fn(u32, u8, u64, u64, u64);

#[inline(never)]
extern "C" fn empty_hook(_: u32, _: u8, _: u64, _: u64, _: u64) {}

/// Runs one row and prints one line per round: ns per event per thread,
/// in wall time and in thread CPU time, of the slowest thread.
pub fn run_row(args: &BenchRowArgs) -> Result<()> {
    let socket = match (&args.socket, args.row) {
        (Some(path), Row::Socket) => Some(Mutex::new(
            UnixStream::connect(path).with_context(|| format!("cannot connect to {}", path.display()))?,
        )),
        (None, Row::Socket) => bail!("the socket row needs --socket"),
        _ => None,
    };
    if !args.capacity.is_power_of_two() {
        bail!("--capacity must be a power of two, not {}", args.capacity);
    }
    let (alloc, free): (Hook, Hook) = match args.row {
        Row::EmptyCall => (empty_hook, empty_hook),
        _ => (memtrack_alloc, memtrack_free),
    };
    let clock = ClockSource::detect();
    // One untimed lap first: page faults and cold caches are not the cost
    // of an event (the socket row sends none: its server counts them).
    let warm_up = args.events.min(args.capacity);
    let mut out = std::io::stdout().lock();
    for _ in 0..args.rounds {
        let barrier = StartLine::new(args.threads as usize, args.start_gate);
        let slowest = std::thread::scope(|s| {
            let workers: Vec<_> = (0..args.threads)
                .map(|t| {
                    let (barrier, socket) = (&barrier, socket.as_ref());
                    // Named by row, so a profile tells the rows' threads apart
                    // (`perf report --comm bench-enabled`).
                    let name = format!(
                        "bench-{}",
                        args.row
                            .to_possible_value()
                            .map_or_else(|| "row".to_owned(), |v| v.get_name().to_owned())
                    );
                    let thread = std::thread::Builder::new().name(name);
                    thread
                        .spawn_scoped(s, move || match (args.row, socket) {
                            (_, Some(socket)) => {
                                barrier.wait();
                                with_cpu_time(|| send_messages(socket, t, args.events))
                            }
                            (Row::Floor, None) => {
                                let slots: Vec<FloorSlot> =
                                    (0..args.capacity).map(|_| FloorSlot::default()).collect();
                                write_floor(clock, &slots, t, warm_up);
                                barrier.wait();
                                with_cpu_time(|| write_floor(clock, &slots, t, args.events))
                            }
                            (_, None) => {
                                let device = args.device.wrapping_add(t as u32);
                                call_hooks(alloc, free, device, t, warm_up);
                                barrier.wait();
                                with_cpu_time(|| call_hooks(alloc, free, device, t, args.events))
                            }
                        })
                        .expect("cannot start a benchmark thread")
                })
                .collect();
            let gate = barrier.open_when_told(&mut out);
            let times: Vec<(Duration, Duration)> =
                workers.into_iter().map(|w| w.join().expect("bench thread")).collect();
            let slowest = times.iter().map(|t| t.0).max().unwrap_or_default();
            let most_cpu = times.iter().map(|t| t.1).max().unwrap_or_default();
            gate.map(|()| (slowest, most_cpu))
        })?;
        let per_event = |d: Duration| d.as_nanos() as f64 / (args.events / 2 * 2) as f64;
        writeln!(out, "{} {}", per_event(slowest.0), per_event(slowest.1))?;
    }
    Ok(())
}

/// Where a round's threads wait for each other after their untimed lap,
/// and, behind a start gate (`--start-gate`), for the parent's word: then
/// this process's threads start their timed events with those of the
/// other processes of the row.
struct StartLine {
    warmed: Barrier,
    go: Barrier,
    gated: bool,
}

impl StartLine {
    fn new(threads: usize, gated: bool) -> StartLine {
        // Behind a gate, the thread that runs the round is one more party.
        let parties = threads + usize::from(gated);
        StartLine { warmed: Barrier::new(parties), go: Barrier::new(parties), gated }
    }

    /// Called by each timed thread after its untimed lap.
    fn wait(&self) {
        self.warmed.wait();
        self.go.wait();
    }

    /// Behind a gate, called by the thread running the round: once every
    /// timed thread has done its untimed lap, prints `ready` to `out` and
    /// waits for a line on stdin, then lets the threads go (also when
    /// stdin fails, so none waits for good; the error is returned).
    fn open_when_told(&self, out: &mut impl Write) -> Result<()> {
        if !self.gated {
            return Ok(());
        }
        self.warmed.wait();
        let told = writeln!(out, "ready")
            .and_then(|()| out.flush())
            .and_then(|()| std::io::stdin().lock().read_line(&mut String::new()))
            .context("the start gate: cannot talk to the parent");
        self.go.wait();
        match told? {
            0 => bail!("the start gate: the parent closed stdin before saying go"),
            _ => Ok(()),
        }
    }
}

/// Runs `timed`, which returns the wall time it measured, and adds the
/// thread CPU time it took.
fn with_cpu_time(timed: impl FnOnce() -> Duration) -> (Duration, Duration) {
    let start = thread_cpu_time();
    let wall = timed();
    (wall, thread_cpu_time().saturating_sub(start))
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
pub(super) fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write; the clock id is Linux's
    // per-thread CPU clock, which every supported kernel has.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Alloc/free pairs through opaque function pointers, as a runtime's hook
/// calls into the shared library.
fn call_hooks(alloc: Hook, free: Hook, device: u32, thread: u64, events: u64) -> Duration {
    let (alloc, free) = (black_box(alloc), black_box(free));
    let start = Instant::now();
    for i in 0..events / 2 {
        let id = thread << 40 | i;
        alloc(device, MEMTRACK_KIND_DRAM, id, 0x1000, 4096);
        free(device, MEMTRACK_KIND_DRAM, id, 0x1000, 4096);
    }
    start.elapsed()
}

/// One slot of the floor's buffer: the shape of a ring slot (a state word
/// and seven payload words, one cache line), in this thread's own memory.
#[repr(C, align(64))]
#[derive(Default)]
struct FloorSlot {
    state: AtomicU64,
    payload: [AtomicU64; 7],
}

const _: () = assert!(std::mem::size_of::<FloorSlot>() == 64);
const _: () = assert!(std::mem::offset_of!(FloorSlot, payload) == 8);

/// The floor: per event, what any ring of stamped 64-byte records must do
/// (read the clock the hook reads, fill a slot, publish it with a Release
/// store) and nothing else: no claim, no counter, no consumer, no call.
/// Relaxed stores and Release stores of aligned words are plain `mov`s on
/// x86-64, as the hook's are.
fn write_floor(clock: ClockSource, slots: &[FloorSlot], thread: u64, events: u64) -> Duration {
    let mask = slots.len() as u64 - 1;
    let start = Instant::now();
    for i in 0..events / 2 * 2 {
        let timestamp = clock.now();
        let slot = &slots[(i & mask) as usize];
        let words = [timestamp, thread << 40 | i >> 1, 0x1000, 4096, i, thread, i & 1];
        for (cell, word) in slot.payload.iter().zip(words) {
            cell.store(word, Ordering::Relaxed);
        }
        // Release: as the hook's publish, which pairs with the consumer's
        // Acquire load; here nothing reads it, the store is what is timed.
        slot.state.store(i << 2 | 2, Ordering::Release);
    }
    black_box(slots);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_fills_and_publishes_one_slot_per_event_round_the_buffer() {
        let slots: Vec<FloorSlot> = (0..16).map(|_| FloorSlot::default()).collect();
        write_floor(ClockSource::Monotonic, &slots, 3, 40);
        for (index, slot) in slots.iter().enumerate() {
            // The last of events index, index + 16, index + 32 below 40.
            let last = (index as u64..40).step_by(16).last().unwrap();
            assert_eq!(slot.state.load(Ordering::Relaxed), last << 2 | 2, "slot {index}");
            let payload: Vec<u64> = slot.payload.iter().map(|w| w.load(Ordering::Relaxed)).collect();
            assert_ne!(payload[0], 0, "a timestamp");
            assert_eq!(payload[1..], [3 << 40 | last >> 1, 0x1000, 4096, last, 3, last & 1], "slot {index}");
        }
    }
}
