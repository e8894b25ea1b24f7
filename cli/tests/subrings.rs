//! The reader binary on a format 3 ring whose writer threads each hold a
//! sub-ring: `memtrack record --ring` in its own process while three
//! threads hand buffers to one another (ALLOC on one thread, FREE on the
//! next); the report must find no unknown free, no duplicate, no phantom
//! leak, and the record file's merged tickets must increase.

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;

use common::{TempFile, report_json};
use memtrack::{MemtrackBuffer, Ring, RingOptions, Writer, ring_path};
use memtrack_cli::recording::{Block, RecordReader};

const THREADS: u64 = 3;
const BUFFERS_PER_THREAD: u64 = 10_000;

#[test]
fn buffers_handed_between_threads_with_sub_rings_leave_no_anomaly_or_phantom_leak() {
    let name = format!("cli-subrings-{}", std::process::id());
    let path = ring_path(&name);
    let _ = std::fs::remove_file(&path);
    let _ring = TempFile(path.clone());
    // Small sub-rings: busy threads fall back to the shared ring as well.
    let options =
        RingOptions { capacity: 4096, subrings: 4, subring_capacity: 256, ..RingOptions::default() };
    let writer = Writer::attach_named(Ring::create(&path, options).unwrap(), b"handover").unwrap();
    writer.use_subrings(true);
    let file = TempFile::new("subrings.mtr");
    let recorder = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(["record", "--ring", &name, "-o", file.str(), "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while writer.ring().snapshot().reader_pid != Some(recorder.id()) {
        assert!(Instant::now() < deadline, "the recorder did not attach");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The session has read where the backlog ends and the live counters
    // once a record of ours is committed: only then start the threads. A
    // hook caught between those two reads is counted twice (the counter
    // cross-check marks its cell uncertain: docs/READER.md), which is not
    // what this test is about.
    writer.mark(b"go");
    while writer.ring().snapshot().progress.committed < 2 {
        assert!(Instant::now() < deadline, "the recorder did not take the first records");
        std::thread::sleep(Duration::from_millis(1));
    }
    let buffer =
        |id: u64| MemtrackBuffer { buffer_id: id, size: 256, address: id << 8, ..Default::default() };
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<u64>()).unzip();
    std::thread::scope(|s| {
        for (t, receiver) in receivers.into_iter().enumerate() {
            let next = senders[(t + 1) % THREADS as usize].clone();
            let writer = &writer;
            s.spawn(move || {
                let first = (t as u64 + 1) << 32;
                for id in first..first + BUFFERS_PER_THREAD {
                    writer.alloc(&buffer(id));
                    next.send(id).unwrap(); // handed over through memory
                    while let Ok(handed) = receiver.try_recv() {
                        writer.free(&buffer(handed));
                    }
                }
                drop(next);
                for handed in receiver {
                    writer.free(&buffer(handed));
                }
            });
        }
        drop(senders);
    });
    // Everything written: the start record, the mark, the allocations and frees.
    let attempts = 2 + 2 * THREADS * BUFFERS_PER_THREAD;
    loop {
        let snapshot = writer.ring().snapshot();
        let p = snapshot.progress;
        if p.committed + snapshot.dropped >= attempts {
            break;
        }
        assert!(Instant::now() < deadline, "the recorder did not catch up: {p:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGINT) };
    let out = recorder.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let mut reader = RecordReader::open(&file.0).unwrap();
    let mut tickets = Vec::new();
    while let Some(block) = reader.next_block().unwrap() {
        if let Block::Record(record) = block {
            tickets.push(record.ticket);
        }
    }
    assert!(tickets.windows(2).all(|w| w[0] < w[1]), "merged tickets increase in the file");
    let report = report_json(&file.0);
    let dropped = report["lost_detail"]["dropped"].as_u64().unwrap();
    if dropped != 0 {
        eprintln!("{dropped} records dropped (a starved reader): anomalies not checked");
        return;
    }
    assert_eq!(report["records"].as_u64().unwrap(), attempts);
    assert_eq!(report["anomalies"]["unknown_frees"], 0, "{:#}", report["anomalies"]);
    assert_eq!(report["anomalies"]["duplicate_allocs"], 0);
    assert_eq!(report["remaining"].as_array().unwrap().len(), 0, "phantom leaks: {:#}", report["remaining"]);
    let kinds = &report["devices"][0]["kinds"]["DRAM"];
    assert_eq!(
        (kinds["live_buffers"].as_u64(), kinds["allocs"].as_u64()),
        (Some(0), Some(THREADS * BUFFERS_PER_THREAD))
    );
}
