//! Crashes seen through the reader binary: a writer SIGKILLed at a random
//! point (in the middle of its hooks, or parked between claim and publish)
//! under `memtrack record -- CMD` is reported `died` with its remaining
//! buffers, out of device usage, beside an unaffected process; and a
//! `memtrack record --ring NAME` SIGKILLed mid-stream is replaced by a new
//! one that resumes exactly where the ring says the first one stopped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{TempFile, memtrack, report_json};
use memtrack::ffi::*;
use memtrack::{MemtrackBuffer, Ring, RingOptions, Writer, ring_path};
use memtrack_cli::recording::{Block, RecordReader};
use serde_json::Value;

const ROLE: &str = "MEMTRACK_TEST_ROLE";

/// Buffers the victim leaves: ids 1..=5 on device 0, L1, 1000 bytes each.
const VICTIM_BUFFERS: u64 = 5;
/// Buffers the survivor leaves after exiting cleanly: 2 of 100 bytes on
/// device 1, DRAM.
const SURVIVOR_LEFT: u64 = 2;

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    match role.as_str() {
        // Forks a survivor (fork without exec) that records through the C
        // ABI and exits cleanly; then records through the Rust API, says
        // "ready", and keeps writing (HELPER_MODE=loop) or parks a claim
        // (HELPER_MODE=park) until it is killed.
        "victim" => {
            // SAFETY: the child only records through memtrack and exits.
            let child = unsafe { libc::fork() };
            if child == 0 {
                for id in 0..3 {
                    memtrack_alloc(1, MEMTRACK_KIND_DRAM, id, 0, 100);
                }
                memtrack_free(1, MEMTRACK_KIND_DRAM, 0, 0, 100);
                std::process::exit(0); // The exit handler shuts memtrack down.
            }
            let mut status = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            let path = std::env::var("MEMTRACK_RING").unwrap();
            let writer = Writer::attach(Ring::open(Path::new(&path)).unwrap()).unwrap();
            let buffer = |id| MemtrackBuffer {
                buffer_id: id,
                size: 1000,
                kind: MEMTRACK_KIND_L1,
                ..Default::default()
            };
            for id in 1..=VICTIM_BUFFERS {
                writer.alloc(&buffer(id));
            }
            println!("HELPER ready {}", std::process::id());
            if std::env::var("HELPER_MODE").as_deref() == Ok("park") {
                assert!(writer.claim_without_publishing());
                std::thread::sleep(Duration::from_secs(60));
            }
            for id in 100.. {
                writer.alloc(&buffer(id));
                writer.free(&buffer(id));
            }
        }
        other => panic!("unknown helper role {other}"),
    }
}

fn seed() -> u64 {
    std::env::var("MEMTRACK_TEST_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() as u64
    })
}

/// `memtrack record -- helper victim`, the victim SIGKILLed `delay` after it
/// said it was ready.
fn record_a_killed_victim(mode: &str, delay: Duration, file: &TempFile) -> Value {
    let exe = std::env::current_exe().unwrap();
    let mut recorder = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(["record", "-o", file.str(), "--quiet", "--"])
        .arg(exe)
        .args(["--exact", "helper", "--nocapture", "--test-threads=1"])
        .env(ROLE, "victim")
        .env("HELPER_MODE", mode)
        .env_remove("MEMTRACK_RING")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(recorder.stdout.take().unwrap()).lines();
    let pid: i32 = loop {
        let line = lines.next().expect("the victim said it was ready").unwrap();
        if let Some((_, pid)) = line.split_once("HELPER ready ") {
            break pid.trim().parse().unwrap();
        }
    };
    std::thread::sleep(delay);
    // SAFETY: kill with the pid the victim printed (it is still running).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = recorder.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "memtrack record did not end after its command was killed");
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut recorder.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{stderr}");
    report_json(file)
}

#[test]
fn a_writer_killed_at_a_random_point_is_reported_died_with_its_buffers() {
    let seed = seed();
    eprintln!("MEMTRACK_TEST_SEED={seed}");
    let soak = std::env::var("MEMTRACK_SOAK").ok().and_then(|v| v.parse().ok()).unwrap_or(1u64).max(1);
    for i in 0..4 * soak {
        let mode = ["loop", "park"][i as usize % 2];
        let delay = Duration::from_micros(seed.rotate_right(8 * i as u32) % 20_000);
        let file = TempFile::new(&format!("victim-{i}"));
        let report = record_a_killed_victim(mode, delay, &file);
        let processes = report["processes"].as_array().unwrap();
        assert_eq!(processes.len(), 2, "{processes:?}");
        let victim = processes.iter().find(|p| p["state"] == "died").expect("the victim died");
        let survivor = processes.iter().find(|p| p["pid"] != victim["pid"]).unwrap();
        assert_eq!(survivor["state"], "exited", "the forked survivor is unaffected");
        assert_eq!(survivor["remaining_buffers"], SURVIVOR_LEFT);
        // The victim's buffers: its five, plus at most the one whose free
        // was in flight when it was killed.
        let left = victim["remaining_buffers"].as_u64().unwrap();
        assert!((VICTIM_BUFFERS..=VICTIM_BUFFERS + 1).contains(&left), "{mode}: {left} remaining: {report}");
        let remaining: Vec<u64> = report["remaining"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["pid"] == victim["pid"])
            .map(|b| b["buffer_id"].as_u64().unwrap())
            .collect();
        assert_eq!(&remaining[..VICTIM_BUFFERS as usize], (1..=VICTIM_BUFFERS).collect::<Vec<_>>(), "{mode}");
        // Both ended: device usage holds neither's leftovers; each one's
        // are its remaining buffers.
        let device =
            |id: u64| report["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == id).cloned();
        let l1 = &device(0).unwrap()["kinds"]["L1"];
        assert_eq!((l1["live_bytes"].as_u64(), l1["live_buffers"].as_u64()), (Some(0), Some(0)), "{mode}");
        assert!(l1["peak_bytes"].as_u64().unwrap() >= 1000 * VICTIM_BUFFERS);
        let dram = &device(1).unwrap()["kinds"]["DRAM"];
        assert_eq!(dram["live_bytes"], 0);
        assert!(dram["peak_bytes"].as_u64().unwrap() >= 100 * SURVIVOR_LEFT);
        assert_eq!(survivor["remaining_bytes"], 100 * SURVIVOR_LEFT);
        // A parked claim is counted lost, once; a victim killed mid-hook
        // loses at most its one in-flight record.
        let writer_died = report["lost_detail"]["writer_died"].as_u64().unwrap();
        if mode == "park" {
            assert_eq!(writer_died, 1, "the parked claim");
        } else {
            assert!(writer_died <= 1, "{writer_died}");
        }
        assert_eq!(report["lost_detail"]["reader_died"], 0);
    }
}

/// The tickets of the ring records in a record file, complete or not (a
/// recorder killed mid-stream leaves no end block): everything up to its
/// last complete frame.
fn tickets_in(path: &Path) -> Vec<u64> {
    let Ok(mut reader) = RecordReader::open_unfinished(path) else { return Vec::new() };
    let mut tickets = Vec::new();
    while let Some(block) = reader.next_block().unwrap() {
        if let Block::Record(record) = block {
            tickets.push(record.ticket);
        }
    }
    tickets
}

#[test]
fn a_recorder_killed_mid_stream_is_replaced_without_repeats_or_silent_gaps() {
    let seed = seed();
    eprintln!("MEMTRACK_TEST_SEED={seed}");
    let name = format!("cli-crash-recorder-{}", std::process::id());
    let path = ring_path(&name);
    let _ = std::fs::remove_file(&path);
    let _ring = TempFile(path.clone()); // removed however the test ends
    let writer = Writer::attach_named(
        Ring::create(&path, RingOptions { capacity: 1024, ..RingOptions::default() }).unwrap(),
        b"w",
    )
    .unwrap();
    let (first, second) = (TempFile::new("first"), TempFile::new("second"));
    let spawn = |file: &TempFile| {
        Command::new(env!("CARGO_BIN_EXE_memtrack"))
            .args(["record", "--ring", &name, "-o", file.str(), "--quiet"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let attached = |pid: u32| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while writer.ring().snapshot().reader_pid != Some(pid) {
            assert!(Instant::now() < deadline, "the recorder did not attach");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let events = 40_000u64;
    let mut recorder = spawn(&first);
    attached(recorder.id());
    let mut killed_at = None;
    let mut first_pid = 0;
    for id in 0..events {
        writer.alloc(&MemtrackBuffer { buffer_id: id, size: 1, ..Default::default() });
        if id % 512 == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
        if id == events / 4 + seed % (events / 2) && killed_at.is_none() {
            first_pid = recorder.id();
            recorder.kill().unwrap(); // SIGKILL, mid-stream
            recorder.wait().unwrap();
            // What the ring says the dead recorder took and handed on.
            let progress = writer.ring().snapshot().progress;
            killed_at = Some(progress);
            recorder = spawn(&second);
            attached(recorder.id());
        }
    }
    let before = killed_at.unwrap();
    // Let the second recorder take everything, then stop it with Ctrl-C.
    let deadline = Instant::now() + Duration::from_secs(20);
    while writer.ring().snapshot().progress.committed < writer.ring().snapshot().tail {
        assert!(Instant::now() < deadline, "the second recorder did not catch up");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(recorder.id() as i32, libc::SIGINT) };
    let out = recorder.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // SIGKILL let the first recorder neither finish nor rename its file:
    // what it wrote is in FILE.PID-0.unfinished, incomplete, and says so
    // in one line.
    assert!(!first.0.exists(), "an unfinished recording never takes the destination's name");
    let unfinished = TempFile(first.0.with_file_name(format!(
        "{}.{}-0.unfinished",
        first.0.file_name().unwrap().to_str().unwrap(),
        first_pid
    )));
    let refused = memtrack(&["report", unfinished.str()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("did not finish"));
    let first = unfinished;
    let report = report_json(&second);
    let after = writer.ring().snapshot();
    // The second recorder holds exactly the tickets from where the first
    // one's progress ended: none it had taken again, none skipped.
    let tickets = tickets_in(&second.0);
    assert_eq!(tickets.first().copied(), Some(before.taken), "resumes at the first one's taken");
    assert!(tickets.windows(2).all(|w| w[0] + 1 == w[1]), "no gap, no repeat");
    assert_eq!(*tickets.last().unwrap() + 1, after.progress.taken);
    assert_eq!(report["records"].as_u64().unwrap(), after.progress.delivered - before.delivered);
    // What the first one took but never committed is counted once.
    assert_eq!(report["lost_detail"]["reader_died"].as_u64().unwrap(), before.taken - before.committed);
    // Whatever reached the first file was taken before the kill, and
    // nothing in it is in the second.
    let early = tickets_in(&first.0);
    assert!(early.iter().all(|&t| t < before.taken));
    // And nothing it acknowledged is missing: every ticket it committed is
    // in its file's complete frames, which `report --partial` reads.
    assert!(early.windows(2).all(|w| w[0] + 1 == w[1]), "no gap, no repeat in the killed one's file");
    assert!(
        early.first() == Some(&0) && early.len() as u64 >= before.committed,
        "{} < {before:?}",
        early.len()
    );
    let partial = memtrack(&["report", first.str(), "--partial", "--json"]);
    assert!(partial.status.success(), "{}", String::from_utf8_lossy(&partial.stderr));
    let partial: Value = serde_json::from_slice(&partial.stdout).unwrap();
    assert_eq!(
        (partial["finished"].as_bool(), partial["records"].as_u64()),
        (Some(false), Some(early.len() as u64))
    );
    // Every attempt: the start record and the events.
    let p = after.progress;
    assert_eq!(p.delivered + p.lost_reader_died + p.lost_writer_died + after.dropped, events + 1);
    drop(writer);
}
