//! `memtrack record` and `memtrack report` run as a user would: the built
//! binary recording real writer processes (this test binary re-executed in
//! a helper role, writing through the C ABI), then the report parsed back.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;

use common::{TempFile, frame_starts, memtrack, memtrack_env, report_json};
use memtrack::ffi::*;
use serde_json::Value;

const ROLE: &str = "MEMTRACK_TEST_ROLE";

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    match role.as_str() {
        // Two devices, ten buffers, eight freed, one unknown free, a mark,
        // exits with status 7.
        "leaky" => {
            // SAFETY: NULL: use $MEMTRACK_RING.
            assert_eq!(unsafe { memtrack_init(std::ptr::null()) }, 0);
            memtrack_set_capacity(1, MEMTRACK_KIND_DRAM, 1 << 30);
            for id in 0..10 {
                memtrack_alloc((id % 2) as u32, MEMTRACK_KIND_DRAM, id, 0x1000 * id, 1000 + id);
            }
            let label = c"after-alloc";
            // SAFETY: a NUL-terminated string.
            unsafe { memtrack_mark(label.as_ptr()) };
            for id in 0..8 {
                memtrack_free((id % 2) as u32, MEMTRACK_KIND_DRAM, id, 0x1000 * id, 1000 + id);
            }
            memtrack_free(0, MEMTRACK_KIND_L1, 999, 0, 64);
            std::process::exit(7);
        }
        // Leaves three buffers and is killed.
        "killed" => {
            for id in 0..3 {
                memtrack_alloc(0, MEMTRACK_KIND_L1, id, 0, 100);
            }
            memtrack_alloc(0, MEMTRACK_KIND_L1, 50, 0, 100);
            memtrack_free(0, MEMTRACK_KIND_L1, 50, 0, 100);
            // SAFETY: raising a signal at ourselves.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        // The parent exits at once; its forked child writes later.
        "forks" => {
            memtrack_alloc(0, MEMTRACK_KIND_DRAM, 1, 0, 100);
            // SAFETY: the child only calls memtrack, sleeps and exits.
            if unsafe { libc::fork() } == 0 {
                std::thread::sleep(Duration::from_millis(300));
                memtrack_alloc(0, MEMTRACK_KIND_DRAM, 2, 0, 200);
                memtrack_free(0, MEMTRACK_KIND_DRAM, 2, 0, 200);
                std::process::exit(0);
            }
            memtrack_free(0, MEMTRACK_KIND_DRAM, 1, 0, 100);
            std::process::exit(0);
        }
        // Holds a buffer on each of 200 devices (more than a 128-cell
        // counter pool holds), frees half of them, exits.
        "many_devices" => {
            for device in 0..200u32 {
                memtrack_alloc(device, MEMTRACK_KIND_DRAM, device.into(), 0, 4096);
            }
            for device in (0..200u32).step_by(2) {
                memtrack_free(device, MEMTRACK_KIND_DRAM, device.into(), 0, 4096);
            }
            std::process::exit(0);
        }
        // Allocates, then waits to be terminated.
        "sleeper" => {
            memtrack_alloc(0, MEMTRACK_KIND_DRAM, 1, 0, 100);
            println!("HELPER ready");
            std::thread::sleep(Duration::from_secs(30));
        }
        other => panic!("unknown helper role {other}"),
    }
}

fn helper_command() -> Vec<String> {
    let exe = std::env::current_exe().unwrap().to_str().unwrap().to_owned();
    vec![exe, "--exact".into(), "helper".into(), "--nocapture".into(), "--test-threads=1".into()]
}

/// `memtrack record -o FILE -- helper ROLE`.
fn record(role: &str, file: &Path) -> Output {
    let helper = helper_command();
    let mut args = vec!["record", "-o", file.to_str().unwrap(), "--"];
    args.extend(helper.iter().map(String::as_str));
    memtrack_env(&args, &[(ROLE, role)])
}

fn kind<'a>(report: &'a Value, device: u64, kind: &str) -> &'a Value {
    let device = report["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == device).unwrap();
    &device["kinds"][kind]
}

#[test]
fn record_runs_the_command_and_reports_what_it_left() {
    let file = TempFile::new("leaky");
    let out = record("leaky", &file.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "record exits with the command's status: {stderr}");
    assert!(stderr.contains("2 remaining buffers"), "summary on stderr: {stderr}");

    let report = report_json(&file.0);
    assert_eq!(report["schema"], "memtrack.report/1");
    // start + capacity + 10 allocs + mark + 8 frees + unknown free + exit.
    assert_eq!(report["records"], 23);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["lost_detail"]["dropped"], 0);
    let dram0 = kind(&report, 0, "DRAM");
    assert_eq!(dram0["allocs"], 5);
    assert_eq!(dram0["frees"], 4);
    // The process exited: its leftovers are its remaining buffers (below),
    // no longer device usage.
    assert_eq!(dram0["live_buffers"], 0);
    assert_eq!(dram0["live_bytes"], 0);
    assert_eq!(dram0["peak_bytes"], 1000 + 1002 + 1004 + 1006 + 1008);
    assert_eq!(kind(&report, 1, "DRAM")["capacity_bytes"], 1 << 30);
    assert_eq!(report["anomalies"]["unknown_frees"], 1);
    assert_eq!(report["anomalies"]["duplicate_allocs"], 0);
    assert_eq!(report["anomalies"]["size_mismatches"], 0);
    let remaining: Vec<u64> =
        report["remaining"].as_array().unwrap().iter().map(|b| b["buffer_id"].as_u64().unwrap()).collect();
    // Largest first.
    assert_eq!(remaining, [9, 8]);
    assert_eq!(report["remaining"][0]["size"], 1009);
    assert_eq!(report["remaining"][0]["device_id"], 1);
    assert_eq!(report["remaining"][0]["address"], 0x9000);
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 1);
    assert_eq!(processes[0]["state"], "exited");
    assert_eq!(processes[0]["remaining_buffers"], 2);
    assert_eq!(processes[0]["remaining_bytes"], 1008 + 1009);
    assert_eq!(report["marks"][0]["label"], "after-alloc");
    let usage_at_mark: u64 = report["marks"][0]["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["live_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(usage_at_mark, (1000..1010).sum::<u64>());
    // The records agree with the writers' own counters, the unknown free
    // included (the hooks count it too).
    assert_eq!(report["cross_check"]["checked"], true);
    assert_eq!(report["cross_check"]["mismatches"].as_array().unwrap().len(), 0);
}

/// A counter pool too small for the workload costs the live counters, not
/// the records: the report is exact, and the process whose counters missed
/// events is left out of the cross-check instead of flagging its cells.
#[test]
fn a_full_counter_pool_leaves_the_records_exact_and_the_cross_check_quiet() {
    let file = TempFile::new("many-devices");
    let helper = helper_command();
    let mut args = vec!["record", "-o", file.str(), "--"];
    args.extend(helper.iter().map(String::as_str));
    let out = memtrack_env(&args, &[(ROLE, "many_devices"), ("MEMTRACK_COUNTER_CELLS", "128")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report_json(&file.0);
    assert_eq!(report["lost"], 0);
    assert_eq!(report["devices"].as_array().unwrap().len(), 200);
    assert_eq!(report["processes"][0]["remaining_buffers"], 100);
    assert_eq!(report["processes"][0]["remaining_bytes"], 100 * 4096);
    assert_eq!(report["anomalies"]["unknown_frees"], 0);
    assert_eq!(report["cross_check"]["mismatches"].as_array().unwrap().len(), 0, "{}", report["cross_check"]);
    assert_eq!(report["uncertain"].as_array().unwrap().len(), 0, "{}", report["uncertain"]);
}

#[test]
fn a_killed_process_is_reported_died_with_its_buffers() {
    let file = TempFile::new("killed");
    let out = record("killed", &file.0);
    assert_eq!(out.status.code(), Some(128 + libc::SIGKILL));
    let report = report_json(&file.0);
    let process = &report["processes"][0];
    assert_eq!(process["state"], "died");
    assert_eq!(process["remaining_buffers"], 3);
    assert_eq!(process["remaining_bytes"], 300);
    assert_eq!(report["remaining"].as_array().unwrap().len(), 3);
    // A dead process's buffers leave device usage.
    let l1 = kind(&report, 0, "L1");
    assert_eq!((l1["live_bytes"].as_u64(), l1["live_buffers"].as_u64()), (Some(0), Some(0)));
    assert_eq!((l1["peak_bytes"].as_u64(), l1["allocs"].as_u64()), (Some(400), Some(4)));
    assert_eq!(report["lost"], 0);
}

#[test]
fn record_waits_for_every_process_attached_to_the_ring() {
    let file = TempFile::new("forks");
    let out = record("forks", &file.0);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report_json(&file.0);
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 2, "parent and forked child: {processes:?}");
    assert!(processes.iter().all(|p| p["state"] == "exited"));
    let dram = kind(&report, 0, "DRAM");
    assert_eq!((dram["allocs"].as_u64(), dram["frees"].as_u64()), (Some(2), Some(2)));
    assert_eq!(dram["peak_bytes"], 200);
    assert_eq!(report["remaining"].as_array().unwrap().len(), 0);
}

#[test]
fn record_without_a_command_consumes_a_named_ring_for_a_duration() {
    let name = format!("cli-record-named-{}", std::process::id());
    let path = memtrack::ring_path(&name);
    let _ = std::fs::remove_file(&path);
    let ring = memtrack::Ring::create(
        &path,
        memtrack::RingOptions { capacity: 1024, ..memtrack::RingOptions::default() },
    )
    .unwrap();
    let writer = memtrack::Writer::attach_named(ring, b"early").unwrap();
    writer.alloc(&memtrack::MemtrackBuffer { buffer_id: 1, size: 64, ..Default::default() });
    let file = TempFile::new("named");
    let out = memtrack(&["record", "--ring", &name, "-o", file.0.to_str().unwrap(), "--duration", "0.3"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Without a command nothing else shows it runs: it says what it does.
    let says =
        format!("memtrack record: recording ring {} into {} for 0.3 s", path.display(), file.0.display());
    assert_eq!(stderr.lines().next(), Some(says.as_str()), "{stderr}");
    let report = report_json(&file.0);
    assert_eq!(report["records"], 2, "the start record and the alloc written before the reader came");
    assert_eq!(report["processes"][0]["name"], "early");
    assert_eq!(report["processes"][0]["state"], "running");
    assert!(path.exists(), "a named ring persists");
    drop(writer);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_second_reader_is_refused_with_the_first_ones_pid() {
    let name = format!("cli-record-busy-{}", std::process::id());
    let path = memtrack::ring_path(&name);
    let _ = std::fs::remove_file(&path);
    memtrack::Ring::create(&path, memtrack::RingOptions::default()).unwrap();
    let _first = memtrack::Consumer::attach(&path).unwrap();
    let file = TempFile::new("busy");
    let out = memtrack(&["record", "--ring", &name, "-o", file.0.to_str().unwrap(), "--duration", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&std::process::id().to_string()), "names the first reader: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_command_that_cannot_run_is_a_clear_error() {
    let file = TempFile::new("norun");
    let out = memtrack(&["record", "-o", file.0.to_str().unwrap(), "--", "/nonexistent/workload"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.starts_with("memtrack: cannot run /nonexistent/workload"), "{stderr}");
    assert!(!file.0.exists(), "no half-written record file is left");
}

#[test]
fn bad_record_files_are_refused_in_one_line() {
    let file = TempFile::new("bad");
    std::fs::write(&file.0, b"definitely not a record file, but long enough to hold a header...".repeat(5))
        .unwrap();
    for args in [vec!["report", file.0.to_str().unwrap()], vec!["report", "/nonexistent.mtr", "--json"]] {
        let out = memtrack(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(args[1]), "names the file: {stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn export_writes_a_perfetto_timeline_and_csv_rows() {
    let file = TempFile::new("export");
    assert_eq!(record("leaky", &file.0).status.code(), Some(7));

    let trace = TempFile::new("export-json");
    let out = memtrack(&["export", file.str(), "--format", "perfetto", "-o", trace.str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&std::fs::read(&trace.0).unwrap()).expect("valid JSON");
    let events = doc["traceEvents"].as_array().unwrap();
    let named = |name: &str| events.iter().any(|e| e["ph"] == "M" && e["args"]["name"] == name);
    assert!(named("device 0") && named("device 1"), "device tracks are named");
    // Device 0 DRAM: 5 allocs then 4 frees, then the process exits: the
    // last samples are the 1008 bytes it left, then 0 (an ended process
    // holds no device memory; cli/tests/export.rs checks the timeline in
    // depth).
    let device0_pid =
        events.iter().find(|e| e["ph"] == "M" && e["args"]["name"] == "device 0").unwrap()["pid"].clone();
    let samples: Vec<u64> = events
        .iter()
        .filter(|e| e["ph"] == "C" && e["pid"] == device0_pid && e["name"] == "DRAM")
        .map(|e| e["args"]["bytes"].as_u64().unwrap())
        .collect();
    assert!(!samples.is_empty(), "{samples:?}");
    assert_eq!(samples[samples.len() - 2..], [1008, 0], "{samples:?}");
    let slices = |cat: &str| events.iter().filter(|e| e["ph"] == "X" && e["cat"] == cat).count();
    assert_eq!((slices("phase"), slices("buffer"), slices("buffer,leak")), (1, 8, 2));
    assert_eq!(events.iter().filter(|e| e["ph"] == "i" && e["cat"] == "anomaly").count(), 1);

    let out = memtrack(&["export", file.0.to_str().unwrap(), "--format", "csv"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("ticket,time_ns,event,pid"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 23, "one row per record");
    assert!(rows.iter().any(|r| r.contains(",mark,") && r.ends_with(",after-alloc")));
    assert_eq!(rows.iter().filter(|r| r.contains(",alloc,")).count(), 10);
}

/// The report without what legitimately changes between runs: times
/// (`*_ns`, a process's `start_time`), pids (`pid`, `host_pid`) and the
/// ring's path (a unique name).
fn without_times_and_pids(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(key, _)| {
                    !(key.ends_with("_ns")
                        || ["pid", "host_pid", "start_time", "ring"].contains(&key.as_str()))
                })
                .map(|(key, v)| (key, without_times_and_pids(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_times_and_pids).collect()),
        other => other,
    }
}

/// One test, not two: the last check looks for any demo ring left in
/// /dev/shm, which a demo running in a parallel test would fail.
#[test]
fn demo_finds_the_planted_leak_and_double_free_the_same_way_every_run() {
    let reports: Vec<Value> = (0..5)
        .map(|_| {
            let out = memtrack(&["demo", "--json"]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let report = &reports[0];
    assert_eq!(report["lost"], 0);
    assert_eq!(report["anomalies"]["unknown_frees"], 1);
    let remaining = report["remaining"].as_array().unwrap();
    assert_eq!(remaining.len(), 8, "one mesh buffer's 8 device buffers");
    let devices: Vec<u64> = remaining.iter().map(|b| b["device_id"].as_u64().unwrap()).collect();
    assert_eq!(devices, (0..8).collect::<Vec<_>>());
    assert!(remaining.iter().all(|b| b["parent_id"] == remaining[0]["parent_id"] && b["kind"] == "DRAM"));
    assert!(remaining.iter().all(|b| b["address"] == remaining[0]["address"]), "one address on every device");
    assert!(remaining.iter().all(|b| b["size"] == 64 << 10), "each device's share, once");
    for device in &report["devices"].as_array().unwrap()[..] {
        // The demo process exited: what it left is in `remaining`, not in
        // device usage.
        assert_eq!(device["kinds"]["DRAM"]["live_bytes"], 0);
        assert_eq!(device["kinds"]["CB"]["live_bytes"], 0);
    }
    assert_eq!(report["devices"].as_array().unwrap().len(), 8);
    assert_eq!(report["cross_check"]["mismatches"].as_array().unwrap().len(), 0);
    let first = without_times_and_pids(report.clone());
    for (run, other) in reports.iter().enumerate().skip(1) {
        assert_eq!(without_times_and_pids(other.clone()), first, "run {run} differs from run 0");
    }
    let leftover = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("memtrack-demo-"));
    assert!(!leftover, "the demo removes its ring");
}

fn send(pid: u32, signal: i32) {
    // SAFETY: kill with a pid we spawned.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

#[test]
fn ctrl_c_ends_a_named_ring_recording_with_a_complete_file() {
    let name = format!("cli-record-sigint-{}", std::process::id());
    let path = memtrack::ring_path(&name);
    let _ = std::fs::remove_file(&path);
    let file = TempFile::new("sigint");
    let child = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(["record", "--ring", &name, "-o", file.0.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The ring appears once the reader is attached.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(std::time::Instant::now() < deadline, "the reader never created the ring");
        std::thread::sleep(Duration::from_millis(10));
    }
    let writer = memtrack::Writer::attach_named(memtrack::Ring::open(&path).unwrap(), b"late").unwrap();
    writer.alloc(&memtrack::MemtrackBuffer { buffer_id: 5, size: 640, ..Default::default() });
    std::thread::sleep(Duration::from_millis(100));
    send(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report_json(&file.0);
    assert_eq!(report["remaining"][0]["size"], 640);
    drop(writer);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn sigterm_is_passed_to_the_command_and_its_status_returned() {
    let file = TempFile::new("sigterm");
    let mut args: Vec<String> =
        vec!["record".into(), "-o".into(), file.0.to_str().unwrap().into(), "--".into()];
    args.extend(helper_command());
    let mut child = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(&args)
        .env(ROLE, "sleeper")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the helper to have written its record.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("HELPER ready") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0, "helper ended early");
    }
    send(child.id(), libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report_json(&file.0);
    assert_eq!(report["processes"][0]["state"], "died", "killed by the signal, without shutting down");
    assert_eq!(report["processes"][0]["remaining_buffers"], 1);
}

#[test]
fn an_unfinished_recording_is_refused_unless_partial() {
    let file = TempFile::new("unfinished");
    assert_eq!(record("leaky", &file.0).status.code(), Some(7));
    // What a reader killed mid-recording leaves: no end block, part of a
    // frame at the end. The last frame holds what the reader wrote when it
    // finished (the tables, the loss totals, the end); the 23 records are
    // in the frames before it, each written before its batch was committed.
    let bytes = std::fs::read(&file.0).unwrap();
    let last_frame = *frame_starts(&bytes).last().unwrap();
    std::fs::write(&file.0, &bytes[..last_frame + 30]).unwrap();

    let out = memtrack(&["report", file.0.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("--partial"), "points at --partial: {stderr}");

    let out = memtrack(&["report", file.0.to_str().unwrap(), "--partial", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["finished"], false);
    assert_eq!(report["records"], 23);
    assert_eq!(report["remaining"].as_array().unwrap().len(), 2);
    let text = memtrack(&["report", file.0.to_str().unwrap(), "--partial"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("UNFINISHED recording"));
    std::fs::write(&file.0, &bytes).unwrap();
    assert_eq!(report_json(&file.0)["finished"], true);
}
