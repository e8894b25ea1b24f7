//! What a hook costs, measured side by side in one run:
//!
//! * `off/empty_c_call` vs `off/memtrack_alloc`: tracking off, both called
//!   through an opaque function pointer (the disabled hook must be within
//!   1 ns of the empty call);
//! * `on/...`: tracking on, one thread, a consumer thread draining;
//! * `on_2_threads`: per-event cost with two writer threads;
//! * `consumer/drain`: records per second a consumer takes out of a ring.
//!
//! The process-global C ABI state cannot go back to "off" once a ring is
//! attached, so the "off" group runs first.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memtrack::ffi::{
    MEMTRACK_KIND_DRAM, memtrack_alloc, memtrack_free, memtrack_init, memtrack_scope_begin,
    memtrack_scope_end,
};
use memtrack::{Consumer, MemtrackBuffer, Record, Ring, RingOptions, Writer, ring_path};

type Hook = extern "C" fn(u32, u8, u64, u64, u64);

#[inline(never)]
extern "C" fn empty_hook(_: u32, _: u8, _: u64, _: u64, _: u64) {}

fn ring_for(tag: &str) -> PathBuf {
    let path = ring_path(&format!("bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// A consumer thread that drains `path` until stopped, in whole batches as
/// the CLI's readers do (`Consumer::drain_due`), and once stopped takes
/// everything left, so that [`report_losses`] after it counts every record
/// the benchmark wrote (in `--test` mode one tiny iteration runs, and no
/// batch is due yet when it ends: "delivered 0" said nothing).
struct Drainer {
    stop: Arc<AtomicBool>,
    /// Says whether the final drain caught up.
    thread: Option<JoinHandle<bool>>,
}

impl Drainer {
    fn start(path: &Path) -> Drainer {
        let mut consumer = Consumer::attach(path).expect("attach consumer");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = Vec::with_capacity(4096);
            while !flag.load(Ordering::Relaxed) {
                let n = consumer.drain_due(usize::MAX, &mut buf, |_| Ok::<(), ()>(())).unwrap();
                consumer.pause_if_idle(n);
            }
            // The writers are done: take the rest, due or not (a few
            // rounds at most: each waits out the merge's slack once).
            for _ in 0..100 {
                if consumer.caught_up() {
                    break;
                }
                consumer.drain(usize::MAX, &mut buf, |_| Ok::<(), ()>(())).unwrap();
            }
            consumer.caught_up()
        });
        Drainer { stop, thread: Some(thread) }
    }

    /// Stops the drainer once it has taken everything: whether it did.
    fn finish(mut self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().is_some_and(|t| t.join().unwrap_or(false))
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.take().map(JoinHandle::join);
    }
}

/// One alloc/free pair per two iterations, so live counters stay bounded.
fn call_pairs(hook_alloc: Hook, hook_free: Hook, iters: u64) -> Duration {
    let (alloc, free) = (black_box(hook_alloc), black_box(hook_free));
    let start = Instant::now();
    for i in 0..iters / 2 {
        alloc(0, MEMTRACK_KIND_DRAM, i, 0x1000, 4096);
        free(0, MEMTRACK_KIND_DRAM, i, 0x1000, 4096);
    }
    start.elapsed()
}

type ScopeBegin = unsafe extern "C" fn(*const std::ffi::c_char);
type ScopeEnd = extern "C" fn();

/// One `memtrack_scope_begin("op")` / `memtrack_scope_end()` pair per two
/// iterations (a name used before: the interned path).
fn scope_pairs(iters: u64) -> Duration {
    let (begin, end): (ScopeBegin, ScopeEnd) =
        (black_box(memtrack_scope_begin), black_box(memtrack_scope_end));
    let name = c"ttnn::operations::matmul";
    let start = Instant::now();
    for _ in 0..iters / 2 {
        // SAFETY: a NUL-terminated name.
        unsafe { begin(name.as_ptr()) };
        end();
    }
    start.elapsed()
}

fn off(c: &mut Criterion) {
    // SAFETY: criterion runs benchmarks on this one thread; nothing else
    // reads the environment concurrently.
    unsafe { std::env::remove_var("MEMTRACK_RING") };
    let mut group = c.benchmark_group("off");
    group.bench_function("empty_c_call", |b| b.iter_custom(|n| call_pairs(empty_hook, empty_hook, n)));
    group.bench_function("memtrack_alloc", |b| {
        b.iter_custom(|n| call_pairs(memtrack_alloc, memtrack_free, n))
    });
    group.bench_function("memtrack_scope_begin_end", |b| b.iter_custom(scope_pairs));
    group.finish();
}

fn on(c: &mut Criterion) {
    let path = ring_for("on");
    let ring = Ring::create(&path, RingOptions::default()).expect("create ring");
    let drainer = Drainer::start(&path);
    let writer = Writer::attach(ring).expect("attach writer");
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { memtrack_init(c_path.as_ptr()) }, 0);

    let mut group = c.benchmark_group("on");
    group.bench_function("empty_c_call", |b| b.iter_custom(|n| call_pairs(empty_hook, empty_hook, n)));
    group.bench_function("memtrack_alloc", |b| {
        b.iter_custom(|n| call_pairs(memtrack_alloc, memtrack_free, n))
    });
    group.bench_function("memtrack_scope_begin_end", |b| b.iter_custom(scope_pairs));
    group.bench_function("memtrack_alloc_in_scope", |b| {
        // SAFETY: a NUL-terminated name.
        unsafe { memtrack_scope_begin(c"bench".as_ptr()) };
        b.iter_custom(|n| call_pairs(memtrack_alloc, memtrack_free, n));
        memtrack_scope_end();
    });
    group.bench_function("writer_alloc", |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            for i in 0..n / 2 {
                let buffer =
                    MemtrackBuffer { buffer_id: i, address: 0x1000, size: 4096, ..Default::default() };
                writer.alloc(black_box(&buffer));
                writer.free(black_box(&buffer));
            }
            start.elapsed()
        })
    });
    group.finish();
    report_losses("on", &path, drainer.finish());
    let _ = std::fs::remove_file(&path);
}

fn on_2_threads(c: &mut Criterion) {
    let path = ring_for("on2");
    let ring = Ring::create(&path, RingOptions::default()).expect("create ring");
    let drainer = Drainer::start(&path);
    let writer = Writer::attach(ring).expect("attach writer");
    c.bench_function("on_2_threads/writer_alloc", |b| {
        b.iter_custom(|n| {
            let barrier = std::sync::Barrier::new(2);
            let times: Vec<Duration> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..2u64)
                    .map(|t| {
                        let (writer, barrier) = (&writer, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            let start = Instant::now();
                            for i in 0..n / 2 {
                                let buffer =
                                    MemtrackBuffer { buffer_id: t << 40 | i, size: 64, ..Default::default() };
                                writer.alloc(&buffer);
                                writer.free(&buffer);
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            // Per-event time of one thread while the other runs too.
            times.into_iter().max().unwrap()
        })
    });
    report_losses("on_2_threads", &path, drainer.finish());
    let _ = std::fs::remove_file(&path);
}

fn consumer_drain(c: &mut Criterion) {
    const CAPACITY: u64 = 1 << 16;
    let path = ring_for("drain");
    let mut writer = Writer::attach(
        Ring::create(&path, RingOptions { capacity: CAPACITY, ..RingOptions::default() }).unwrap(),
    )
    .unwrap();
    // The consumer drains only between rounds: a writer whose sub-ring
    // fills must not wait for it (it would wait out its full wait each
    // round), but spill into the shared ring at once, as this bench measures.
    writer.set_full_wait(Duration::ZERO);
    let mut consumer = Consumer::attach(&path).unwrap();
    let mut buf = Vec::with_capacity(4096);
    // The writer's start record first: each round then drains exactly its
    // own records (in the thread's sub-ring and, past its 8192 slots, the
    // shared ring).
    consumer.drain(usize::MAX, &mut buf, |_| Ok::<_, ()>(())).unwrap();
    let mut group = c.benchmark_group("consumer");
    group.throughput(Throughput::Elements(CAPACITY));
    group.bench_function("drain", |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for _ in 0..rounds {
                for i in 0..CAPACITY {
                    writer.alloc(&MemtrackBuffer { buffer_id: i, size: 64, ..Default::default() });
                }
                let (n, took) = timed_drain(&mut consumer, &mut buf);
                total += took;
                assert_eq!(n as u64, CAPACITY);
            }
            total
        })
    });
    group.finish();
    drop(consumer);
    let _ = std::fs::remove_file(&path);
}

/// The consumer's merged take: two writer threads fill their sub-rings at
/// once (so their stamps interleave finely, as two threads flat out do),
/// then one drain merges them. Only the drain is timed: the reader's CPU
/// per record when two sub-rings are busy (issue 14; `memtrack bench`'s
/// `reader_cpu_ns_per_record` measures the same beside live writers).
fn consumer_drain_merged(c: &mut Criterion) {
    const PER_THREAD: u64 = 4096;
    let path = ring_for("drain-merged");
    let mut writer = Writer::attach(
        Ring::create(&path, RingOptions { capacity: 1 << 16, ..RingOptions::default() }).unwrap(),
    )
    .unwrap();
    writer.set_full_wait(Duration::ZERO);
    let mut consumer = Consumer::attach(&path).unwrap();
    let mut buf = Vec::with_capacity(4096);
    consumer.drain(usize::MAX, &mut buf, |_| Ok::<_, ()>(())).unwrap();
    let mut group = c.benchmark_group("consumer");
    group.throughput(Throughput::Elements(2 * PER_THREAD));
    group.bench_function("drain_merged", |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for round in 0..rounds {
                let barrier = std::sync::Barrier::new(2);
                std::thread::scope(|s| {
                    for t in 0..2u64 {
                        let (writer, barrier) = (&writer, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            for i in 0..PER_THREAD {
                                let buffer_id = round << 32 | t << 16 | i;
                                writer.alloc(&MemtrackBuffer { buffer_id, size: 64, ..Default::default() });
                            }
                        });
                    }
                });
                let (n, took) = timed_drain(&mut consumer, &mut buf);
                total += took;
                // (The threads' start and end records come out too.)
                assert!(n as u64 >= 2 * PER_THREAD, "{n}");
            }
            total
        })
    });
    group.finish();
    drop(consumer);
    let _ = std::fs::remove_file(&path);
}

/// What became of the records the benchmark wrote into `path`, once its
/// drainer took everything it could (`caught_up`: every record claimed in
/// the ring was taken; else the line says so).
fn report_losses(name: &str, path: &Path, caught_up: bool) {
    if let Ok(ring) = Ring::open(path) {
        let s = ring.snapshot();
        eprintln!(
            "{name}: delivered {} dropped {} lost {}{}",
            s.progress.delivered,
            s.dropped,
            s.progress.lost_writer_died + s.progress.lost_reader_died,
            if caught_up { "" } else { " (the final drain did not catch up: more remain in the ring)" }
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = off, on, on_2_threads, consumer_drain, consumer_drain_merged
}
criterion_main!(benches);

/// Drains everything `consumer` can take now: the records taken and the
/// time it took.
fn timed_drain(consumer: &mut Consumer, buf: &mut Vec<Record>) -> (usize, Duration) {
    let start = Instant::now();
    let n = consumer
        .drain(usize::MAX, buf, |r| {
            black_box(r);
            Ok::<_, ()>(())
        })
        .unwrap();
    (n, start.elapsed())
}
