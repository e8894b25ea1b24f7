//! A recording knows where it started and what it missed: real writer
//! processes (this test binary re-executed in a helper role, writing
//! through the C ABI) and the built `memtrack record --ring` attaching to
//! their ring late, stopped with a real SIGINT.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{TempFile, memtrack_env, report_json};
use memtrack::ffi::*;
use memtrack::{Ring, ring_path};
use serde_json::Value;

const ROLE: &str = "MEMTRACK_TEST_ROLE";
const MIB: u64 = 1 << 20;

/// Reads one line from the test on stdin.
fn wait_for_the_test() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
}

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    // SAFETY: NULL: use $MEMTRACK_RING.
    assert_eq!(unsafe { memtrack_init(std::ptr::null()) }, 0);
    match role.as_str() {
        // 100 buffers into a 16-slot ring nobody reads: 15 land, 85 are
        // dropped. Then, once a reader attached, frees all of them.
        "overflow" => {
            for id in 0..100 {
                memtrack_alloc(0, MEMTRACK_KIND_DRAM, id, 0x1000 * id, 1000);
            }
            println!("HELPER ready");
            wait_for_the_test();
            for id in 0..100 {
                memtrack_free(0, MEMTRACK_KIND_DRAM, id, 0x1000 * id, 1000);
            }
            println!("HELPER done");
            wait_for_the_test();
        }
        // Holds 4 × 64 MiB on device 0, frees one when told, exits when told.
        "holder" => {
            for id in 0..4 {
                memtrack_alloc(0, MEMTRACK_KIND_DRAM, id, id * 64 * MIB, 64 * MIB);
            }
            println!("HELPER ready");
            wait_for_the_test();
            memtrack_free(0, MEMTRACK_KIND_DRAM, 0, 0, 64 * MIB);
            println!("HELPER done");
            wait_for_the_test();
        }
        other => panic!("unknown helper role {other}"),
    }
}

/// A helper process writing to ring `ring`, driven through its stdin.
struct Helper {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Helper {
    /// A helper that creates RING with `capacity` shared slots and
    /// `subrings` sub-rings.
    fn spawn(role: &str, ring: &str, capacity: u64, subrings: u32) -> Helper {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args(["--exact", "helper", "--nocapture", "--test-threads=1"])
            .env(ROLE, role)
            .env("MEMTRACK_RING", ring)
            .env("MEMTRACK_CAPACITY", capacity.to_string())
            .env("MEMTRACK_SUBRINGS", subrings.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut helper = Helper { child, stdin, stdout };
        helper.expect("HELPER ready");
        helper
    }

    fn expect(&mut self, what: &str) {
        let mut line = String::new();
        while !line.contains(what) {
            line.clear();
            assert_ne!(self.stdout.read_line(&mut line).unwrap(), 0, "helper ended before {what:?}");
        }
    }

    /// Lets the helper go on to its next step and waits for `what`.
    fn step(&mut self, what: &str) {
        writeln!(self.stdin, "go").unwrap();
        self.expect(what);
    }

    fn finish(mut self) {
        writeln!(self.stdin, "go").unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

/// A named ring, removed on drop.
struct NamedRing(String, PathBuf);

impl NamedRing {
    fn new(tag: &str) -> NamedRing {
        let name = format!("test-start-{tag}-{}", std::process::id());
        let path = ring_path(&name);
        let _ = std::fs::remove_file(&path);
        NamedRing(name, path)
    }
}

impl Drop for NamedRing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.1);
    }
}

/// `memtrack record --ring NAME -o FILE` in the background, returned once
/// it is attached as the ring's consumer.
fn start_recording(ring: &NamedRing, file: &TempFile) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(["record", "--quiet", "--ring", &ring.0, "-o", file.str()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Ring::open(&ring.1).unwrap().snapshot().reader_pid != Some(child.id()) {
        assert!(Instant::now() < deadline, "memtrack record did not attach");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Ends a recording with Ctrl-C and reads its report.
fn stop_recording(mut recorder: Child, file: &TempFile) -> Value {
    // SAFETY: kill with the pid of our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(recorder.id() as libc::pid_t, libc::SIGINT) }, 0);
    assert!(recorder.wait().unwrap().success());
    report_json(file)
}

fn dram0(report: &Value) -> &Value {
    let devices = report["devices"].as_array().unwrap();
    &devices.iter().find(|d| d["device_id"] == 0).unwrap()["kinds"]["DRAM"]
}

#[test]
fn drops_before_the_reader_attached_are_lost_records_not_false_unknown_frees() {
    let ring = NamedRing::new("overflow");
    let file = TempFile::new("overflow");
    let mut helper = Helper::spawn("overflow", &ring.0, 16, 0);
    let recorder = start_recording(&ring, &file);
    helper.step("HELPER done");
    let report = stop_recording(recorder, &file);
    helper.finish();

    // No sub-rings: the helper's records all go to the 16-slot shared ring.
    // The 85 drops happened before the reader attached, while the ring
    // held records nobody had taken: they fall into this recording.
    assert_eq!(report["lost"], 85, "{report}");
    assert_eq!(report["lost_detail"]["dropped"], 85);
    assert_eq!(report["lost_detail"]["dropped_before_attach"], 85);
    // The writers' counters said 100 buffers; the ring held 15 of their
    // allocations: 85 were live before the stream began, and their frees
    // release those instead of being unknown frees.
    let start = &report["start"];
    assert_eq!(start["backlog_records"], 16, "the start record and 15 allocs");
    assert_eq!((start["opening_buffers"].as_u64(), start["opening_frees"].as_u64()), (Some(85), Some(85)));
    assert_eq!(report["anomalies"]["unknown_frees"], 0);
    assert_eq!(report["remaining"].as_array().unwrap().len(), 0);
    assert_eq!(report["unidentified_remaining"].as_array().unwrap().len(), 0);
    assert_eq!(dram0(&report)["live_bytes"], 0);
    assert_eq!(dram0(&report)["peak_bytes"], 100 * 1000, "usage started from the truth");
    // And the loss is visible where it matters.
    let uncertain = report["uncertain"].as_array().unwrap();
    assert_eq!(uncertain.len(), 1, "{uncertain:?}");
    assert_eq!(
        (uncertain[0]["kind"].as_str(), uncertain[0]["reason"].as_str()),
        (Some("DRAM"), Some("dropped"))
    );
    assert_eq!(dram0(&report)["uncertain"], true);
    assert_eq!(report["processes"][0]["dropped"], 85);
}

#[test]
fn a_recording_that_starts_mid_run_starts_from_the_writers_counters() {
    let ring = NamedRing::new("midrun");
    let (first, second) = (TempFile::new("midrun-first"), TempFile::new("midrun-second"));
    let mut helper = Helper::spawn("holder", &ring.0, 1024, 32);
    // A first recording takes the helper's records out of the ring.
    let recorder = start_recording(&ring, &first);
    std::thread::sleep(Duration::from_millis(500));
    let report = stop_recording(recorder, &first);
    assert_eq!(dram0(&report)["live_bytes"], 256 * MIB);

    let attached = Instant::now();
    let recorder = start_recording(&ring, &second);
    helper.step("HELPER done");
    let report = stop_recording(recorder, &second);
    let elapsed = attached.elapsed();
    helper.finish();

    assert_eq!(report["lost"], 0);
    let start = &report["start"];
    assert_eq!(start["mid_run"], true);
    assert_eq!(start["backlog_records"], 0);
    assert_eq!(
        (start["opening_buffers"].as_u64(), start["opening_bytes"].as_u64()),
        (Some(4), Some(256 * MIB))
    );
    assert_eq!(start["opening_frees"], 1);
    // 256 MiB from the start, 192 after the free; nothing anomalous.
    assert_eq!(dram0(&report)["peak_bytes"], 256 * MIB);
    assert_eq!(dram0(&report)["live_bytes"], 192 * MIB);
    assert_eq!(report["anomalies"]["unknown_frees"], 0);
    assert_eq!(report["uncertain"].as_array().unwrap().len(), 0);
    let unidentified = &report["unidentified_remaining"][0];
    assert_eq!(
        (unidentified["buffers"].as_u64(), unidentified["bytes"].as_u64()),
        (Some(3), Some(192 * MIB))
    );
    // The process began before the recording: its name comes from the
    // table, and it was running when the recording stopped.
    let process = &report["processes"][0];
    assert_eq!(process["state"], "running");
    assert!(!process["name"].as_str().unwrap().is_empty());
    // Times run from the recording's start, which the file dates.
    assert!(report["duration_ns"].as_u64().unwrap() <= elapsed.as_nanos() as u64, "{report}");
    let created = Ring::open(&ring.1).unwrap().created_unix_ns();
    assert!(report["started_unix_ns"].as_u64().unwrap() >= created + 500_000_000);
}

#[test]
fn a_recording_of_a_ring_from_its_creation_has_no_opening() {
    let ring = NamedRing::new("fresh");
    let file = TempFile::new("fresh");
    // The reader first: everything the helper does is in the stream.
    let out = memtrack_env(&["record", "--ring", &ring.0, "-o", file.str(), "--duration", "0.1"], &[]);
    assert!(out.status.success());
    let recorder = start_recording(&ring, &file);
    let mut helper = Helper::spawn("holder", &ring.0, 1024, 32);
    helper.step("HELPER done");
    helper.finish();
    let report = stop_recording(recorder, &file);
    assert_eq!(report["start"]["mid_run"], false);
    assert_eq!(report["start"]["opening_buffers"], 0);
    assert_eq!(report["start"]["opening_frees"], 0);
    assert_eq!(report["processes"][0]["state"], "exited");
    assert_eq!(dram0(&report)["live_bytes"], 0, "an exited process holds no device memory");
    let remaining: Vec<u64> =
        report["remaining"].as_array().unwrap().iter().map(|b| b["buffer_id"].as_u64().unwrap()).collect();
    assert_eq!(remaining, [1, 2, 3], "what it left is its leak");
}

#[test]
fn a_writer_that_exited_before_the_reader_attached_holds_no_device_memory() {
    // `MEMTRACK_RING=x ./prog` first, `memtrack record --ring x` after: the
    // ring still holds every record of a process that has exited. Its
    // buffers are its leaks, not device memory in use (the table said it
    // exited; its backlog records came after in the stream).
    let ring = NamedRing::new("exited");
    let file = TempFile::new("exited");
    let mut helper = Helper::spawn("holder", &ring.0, 1024, 32);
    helper.step("HELPER done");
    helper.finish();
    let out =
        memtrack_env(&["record", "--quiet", "--ring", &ring.0, "-o", file.str(), "--duration", "0.2"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report_json(&file);
    assert_eq!(report["start"]["backlog_records"], 7, "start, 4 allocs, 1 free, exit: {report}");
    assert_eq!(report["processes"][0]["state"], "exited");
    assert_eq!(dram0(&report)["live_bytes"], 0, "an exited process holds no device memory: {report}");
    assert_eq!(dram0(&report)["live_buffers"], 0);
    assert_eq!(dram0(&report)["peak_bytes"], 256 * MIB, "it held them while it ran");
    let remaining: Vec<u64> =
        report["remaining"].as_array().unwrap().iter().map(|b| b["buffer_id"].as_u64().unwrap()).collect();
    assert_eq!(remaining, [1, 2, 3], "what it left is its leak");
    assert_eq!(report["anomalies"]["unknown_frees"], 0);
}
