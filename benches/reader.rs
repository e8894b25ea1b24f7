//! The reader's throughput, measured with criterion (built by the
//! memtrack-cli package, which owns the reader):
//!
//! * `reader/drain_to_file`: records per second through a recording
//!   session (into a record file, flushed before each commit, as `memtrack
//!   record` does) while a writer thread runs flat out (in the shared
//!   ring, or with `MEMTRACK_BENCH_SUBRINGS=1` in its own sub-ring);
//! * `reader/report_10m`: `memtrack report`'s analysis of a 10 M-record file
//!   (5 rounds of 1 M allocations then 1 M frees: 1 M live buffers at the
//!   peak).
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use memtrack::{Event, MemtrackBuffer, Record, Ring, RingOptions, Writer, ring_path};
use memtrack_cli::recording::{FileHeader, RecordWriter};
use memtrack_cli::report;
use memtrack_cli::session::Session;

const RING_CAPACITY: u64 = 1 << 16;
const REPORT_RECORDS: u64 = 10_000_000;

struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_file(tag: &str) -> Temp {
    Temp(std::env::temp_dir().join(format!("memtrack-bench-{tag}-{}.mtr", std::process::id())))
}

/// Records per iteration of `drain_to_file`.
const DRAIN_RECORDS: u64 = 1 << 20;

fn drain_to_file(c: &mut Criterion) {
    let ring = Temp(ring_path(&format!("bench-reader-{}", std::process::id())));
    let _ = std::fs::remove_file(&ring.0);
    let writer = Writer::attach(
        Ring::create(&ring.0, RingOptions { capacity: RING_CAPACITY, ..RingOptions::default() }).unwrap(),
    )
    .unwrap();
    // MEMTRACK_BENCH_SUBRINGS=1: the writer thread writes its own sub-ring
    // (format 3), which the reader merges with the shared ring.
    writer.use_subrings(std::env::var_os("MEMTRACK_BENCH_SUBRINGS").is_some_and(|v| v == "1"));
    let writers: u64 = std::env::var("MEMTRACK_BENCH_WRITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let writers = writers.clamp(1, 16);
    let file = temp_file("drain");
    let mut group = c.benchmark_group("reader");
    group.sample_size(10).throughput(Throughput::Elements(DRAIN_RECORDS));
    // A writer thread runs flat out while a recording session drains into
    // a new file, as under `memtrack record`: the time until every record
    // is in the file. (A new file each round: one file growing for the
    // whole benchmark reaches gigabytes, and the page cache's reclaim then
    // dominates, which no real recording sees.)
    group.bench_function("drain_to_file", |b| {
        b.iter_custom(|rounds| {
            let mut total = Duration::ZERO;
            for round in 0..rounds {
                let mut session = Session::recorder(&ring.0, &file.0).unwrap();
                let done = AtomicUsize::new(0);
                let start = Instant::now();
                std::thread::scope(|s| {
                    for w in 0..writers {
                        let (writer, done) = (&writer, &done);
                        s.spawn(move || {
                            for i in (w..DRAIN_RECORDS).step_by(writers as usize) {
                                writer.alloc(&MemtrackBuffer {
                                    buffer_id: round << 32 | i,
                                    size: 64,
                                    ..Default::default()
                                });
                            }
                            done.fetch_add(1, Ordering::Release);
                        });
                    }
                    // Until the writers are done and all they wrote is taken.
                    loop {
                        let finished = done.load(Ordering::Acquire) == writers as usize;
                        let handled = session.poll().unwrap();
                        if finished && handled == 0 && session.caught_up() {
                            break;
                        }
                        session.pause_if_idle(handled);
                    }
                });
                total += start.elapsed();
                session.finish().unwrap();
            }
            total
        })
    });
    group.finish();
    let s = Ring::open(&ring.0).unwrap().snapshot();
    eprintln!(
        "reader/drain_to_file: delivered {} dropped {} lost {}",
        s.progress.delivered,
        s.dropped,
        s.progress.lost_writer_died + s.progress.lost_reader_died
    );
}

/// A record file like a recording of 5 × (1 M allocs, 1 M frees).
fn write_report_input(path: &Path) {
    let ring = Temp(ring_path(&format!("bench-report-{}", std::process::id())));
    let _ = std::fs::remove_file(&ring.0);
    let header = FileHeader::new(&Ring::create(&ring.0, RingOptions::default()).unwrap(), 0, 0);
    let mut file = RecordWriter::create(path, &header).unwrap();
    let mut start = Record { pid: 1, event: Event::ProcessStart as u8, ..Default::default() };
    start.set_label(b"model");
    file.records(&[start]);
    let live = REPORT_RECORDS / 10;
    let mut chunk = Vec::with_capacity(4096);
    let mut ticket = 1;
    for round in 0..5 {
        for event in [Event::Alloc, Event::Free] {
            for i in 0..live {
                chunk.push(Record {
                    ticket,
                    timestamp: ticket * 100,
                    buffer_id: round * live + i,
                    address: 0x1000 * (i % 4096),
                    size: 4096,
                    device_id: (i % 8) as u32,
                    pid: 1,
                    event: event as u8,
                    ..Default::default()
                });
                ticket += 1;
                if chunk.len() == chunk.capacity() {
                    file.records(&chunk);
                    chunk.clear();
                }
            }
        }
    }
    file.records(&chunk);
    file.finish().unwrap();
}

fn report_10m(c: &mut Criterion) {
    let file = temp_file("report");
    write_report_input(&file.0);
    let mut group = c.benchmark_group("reader");
    group.sample_size(10).throughput(Throughput::Elements(REPORT_RECORDS + 1));
    group.bench_function("report_10m", |b| {
        b.iter(|| {
            let (_, engine) = report::load(&file.0).unwrap();
            assert_eq!(engine.records(), REPORT_RECORDS + 1);
            engine
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = drain_to_file, report_10m
}
criterion_main!(benches);
