//! Process identity across PID namespaces (containers sharing the host's
//! /dev/shm, `docker --ipc=host`), with `unshare --pid --fork --mount-proc`
//! standing in for a container: writers that call themselves by one pid,
//! pid reuse, recorders that are all pid 1, a consumer another namespace
//! cannot name; and a reader that attaches late to a reused table entry.
//! The writers are `ffi_tests/ns_writer.c`, built with the system compiler
//! against libmemtrack; the namespace tests need root (for `unshare`), and
//! without it say `SKIPPED` and check nothing. `same_pid.rs` checks the
//! timelines and other outputs of such recordings.

#[path = "../../tests/common/cc.rs"]
mod cc;
mod common;
#[path = "common/namespace.rs"]
mod namespace;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TempFile, memtrack, report_json};
use memtrack::{Ring, ring_path};
use namespace::{
    Recorder, children, in_namespace, namespaces_available, success, wait_ready, wait_until, writer,
    writer_line,
};
use serde_json::Value;

fn processes(report: &Value) -> Vec<Value> {
    report["processes"].as_array().unwrap().clone()
}

#[test]
fn two_recorders_in_two_namespaces_both_pid_1_keep_their_own_rings() {
    if !namespaces_available("two_recorders_in_two_namespaces_both_pid_1_keep_their_own_rings") {
        return;
    }
    let writer = writer();
    let (first, second) = (TempFile::new("ns-first"), TempFile::new("ns-second"));
    // Both recorders are pid 1 and create their private rings before their
    // writers attach; the second starts while the first runs, and the
    // first ends (removing its ring) while the second's writer has not
    // attached yet.
    let record = |file: &TempFile, delay: &str, total: &str| {
        let script = format!("sleep {delay}; exec {} {total} {total} exit", writer.display());
        in_namespace(&[env!("CARGO_BIN_EXE_memtrack"), "record", "-q", "-o", file.str(), "--", "sh", "-c"])
            .arg(script)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = record(&first, "0.2", "3");
    std::thread::sleep(Duration::from_millis(50));
    let b = record(&second, "0.8", "5");
    success(&a.wait_with_output().unwrap());
    success(&b.wait_with_output().unwrap());
    let (a, b) = (report_json(&first), report_json(&second));
    for (report, total) in [(&a, 3), (&b, 5)] {
        // Its own writer's start, allocations and exit; nothing lost.
        assert_eq!(report["records"], total + 2, "{report}");
        assert_eq!(report["lost"], 0);
        let processes = processes(report);
        assert_eq!(processes.len(), 1, "{processes:?}");
        assert_eq!(
            (&processes[0]["state"], &processes[0]["remaining_buffers"]),
            (&"exited".into(), &total.into())
        );
        let ring = report["ring"].as_str().unwrap();
        assert!(ring.starts_with("/dev/shm/memtrack-record-1-"), "the recorder was pid 1: {ring}");
        assert!(!Path::new(ring).exists(), "{ring} was left behind");
    }
    assert_ne!(a["ring"], b["ring"], "two recorders with one pid share no ring");
}

#[test]
fn one_pid_in_two_namespaces_is_two_processes_with_their_own_leaks() {
    if !namespaces_available("one_pid_in_two_namespaces_is_two_processes_with_their_own_leaks") {
        return;
    }
    let ring = TempFile(ring_path(&format!("cli-ns-one-pid-{}", std::process::id())));
    let file = TempFile::new("ns-one-pid");
    let recorder = Recorder::start_creating(ring.path(), &file);
    // Both writers are pid 2 of their namespaces: one exits leaking three
    // 4 KiB buffers, the other is SIGKILLed leaking one.
    let spawn = |args: &str| {
        in_namespace(&["sh", "-c", &writer_line(args)])
            .env("MEMTRACK_RING", ring.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (mut exits, mut killed) = (spawn("3 3 exit"), spawn("3 1 kill"));
    let mut host_pids = BTreeSet::new();
    for child in [&mut exits, &mut killed] {
        let _ready = wait_ready(child.stdout.take().unwrap());
        // unshare -> sh (pid 1) -> the writer (pid 2).
        let shell = children(child.id());
        let writer = children(shell[0]);
        host_pids.insert(writer[0] as u64);
    }
    assert!(exits.wait().unwrap().success());
    assert!(killed.wait().unwrap().success(), "the shell outlives its killed writer");
    recorder.stop();

    let report = report_json(&file);
    let processes = processes(&report);
    assert_eq!(processes.len(), 2, "{processes:#?}");
    assert!(processes.iter().all(|p| p["pid"] == 2 && p["name"] == "w"), "{processes:#?}");
    let keys: BTreeSet<&str> = processes.iter().map(|p| p["process"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 2, "two process keys: {processes:#?}");
    let found: BTreeSet<u64> = processes.iter().filter_map(|p| p["host_pid"].as_u64()).collect();
    assert_eq!(found, host_pids, "each one's pid in our namespace: {processes:#?}");
    let by_state = |state: &str| processes.iter().find(|p| p["state"] == state).cloned().unwrap();
    let (exited, died) = (by_state("exited"), by_state("died"));
    assert_eq!((&exited["remaining_buffers"], &exited["remaining_bytes"]), (&3.into(), &12288.into()));
    assert_eq!((&died["remaining_buffers"], &died["remaining_bytes"]), (&1.into(), &4096.into()));
    // Each remaining buffer is its own process's.
    let remaining: Vec<(&str, u64)> = report["remaining"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["process"].as_str().unwrap(), b["buffer_id"].as_u64().unwrap()))
        .collect();
    let (e, d) = (exited["process"].as_str().unwrap(), died["process"].as_str().unwrap());
    let mut want = vec![(e, 1), (e, 2), (e, 3), (d, 1)];
    want.sort();
    let mut got = remaining.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(report["anomalies"]["duplicate_allocs"], 0, "no invented duplicates");
    assert_eq!(report["anomalies"]["unknown_frees"], 0);
    assert_eq!(report["cross_check"]["mismatches"], Value::Array(Vec::new()), "{report}");
}

#[test]
fn a_reused_pid_is_a_new_process_and_the_dead_one_stays_died() {
    if !namespaces_available("a_reused_pid_is_a_new_process_and_the_dead_one_stays_died") {
        return;
    }
    let file = TempFile::new("ns-reuse");
    // In one namespace: the first writer (pid 2) leaves two buffers and is
    // SIGKILLed; the namespace's next pid is forced back to 2 for the
    // second, which leaves one buffer (id 1, as the first's) and exits.
    let script = format!(
        "{} 2 2 kill; echo 1 > /proc/sys/kernel/ns_last_pid; {} 1 1 exit; true",
        writer().display(),
        writer().display()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args([
            "record",
            "-q",
            "-o",
            file.str(),
            "--",
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
        ])
        .arg(&script)
        .env_remove("MEMTRACK_RING")
        .output()
        .unwrap();
    success(&out);
    let report = report_json(&file);
    let processes = processes(&report);
    assert_eq!(processes.len(), 2, "{processes:#?}");
    assert!(processes.iter().all(|p| p["pid"] == 2), "the pid was reused: {processes:#?}");
    assert_ne!(processes[0]["process"], processes[1]["process"]);
    assert_eq!((&processes[0]["state"], &processes[0]["remaining_buffers"]), (&"died".into(), &2.into()));
    assert_eq!((&processes[1]["state"], &processes[1]["remaining_buffers"]), (&"exited".into(), &1.into()));
    assert_eq!(report["anomalies"]["duplicate_allocs"], 0, "{report}");
    assert_eq!(report["remaining"].as_array().unwrap().len(), 3);
}

/// Scrapes `memtrack serve` at `address` once; the body.
fn scrape(address: &str) -> String {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

#[test]
fn status_and_serve_tell_two_pid_1_writers_apart() {
    if !namespaces_available("status_and_serve_tell_two_pid_1_writers_apart") {
        return;
    }
    let ring = TempFile(ring_path(&format!("cli-ns-serve-{}", std::process::id())));
    let _ = std::fs::remove_file(ring.path());
    // Two writers, each pid 1 of its namespace, holding 2 and 1 buffers
    // until their input closes.
    let spawn = |keep: &str| {
        let mut child = in_namespace(&[writer().to_str().unwrap(), keep, keep, "hold"])
            .env("MEMTRACK_RING", ring.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let _ready = wait_ready(child.stdout.take().unwrap());
        child
    };
    let writers = [spawn("2"), spawn("1")];
    let host_pids: BTreeSet<u64> = writers.iter().map(|w| children(w.id())[0] as u64).collect();

    let status = memtrack(&["status", "--ring", ring.str(), "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let table = status["processes"].as_array().unwrap();
    assert_eq!(table.len(), 2, "{status}");
    assert!(table.iter().all(|p| p["pid"] == 1), "{status}");
    let found: BTreeSet<u64> = table.iter().filter_map(|p| p["host_pid"].as_u64()).collect();
    assert_eq!(found, host_pids, "{status}");
    let keys: BTreeSet<&str> = table.iter().map(|p| p["process"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 2);
    let usage: BTreeMap<&str, i64> = status["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["process"].as_str().unwrap(), u["live_bytes"].as_i64().unwrap()))
        .collect();
    assert_eq!(usage.values().copied().collect::<BTreeSet<_>>(), [4096, 8192].into(), "{status}");

    let mut server = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(["serve", "--ring", ring.str(), "--listen", "127.0.0.1:0", "--per-process"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let address = line.split("http://").nth(1).unwrap().trim_end().trim_end_matches("/metrics").to_owned();
    let body = scrape(&address);
    let _ = server.kill();
    let _ = server.wait();
    let series: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("memtrack_process_"))
        .map(|l| l.rsplit_once(' ').unwrap().0)
        .collect();
    let unique: BTreeSet<&str> = series.iter().copied().collect();
    assert_eq!(unique.len(), series.len(), "two series with one label set:\n{body}");
    let used: Vec<&&str> = series.iter().filter(|s| s.starts_with("memtrack_process_memory_used")).collect();
    assert_eq!(used.len(), 2, "{body}");
    for key in &keys {
        assert!(
            used.iter().any(|s| s.contains(&format!("process=\"{key}\",pid=\"1\""))),
            "no series of process {key}:\n{body}"
        );
    }
    for mut w in writers {
        drop(w.stdin.take());
        assert!(w.wait().unwrap().success());
    }
}

#[test]
fn a_consumer_in_another_namespace_is_not_named_by_a_pid_of_ours() {
    if !namespaces_available("a_consumer_in_another_namespace_is_not_named_by_a_pid_of_ours") {
        return;
    }
    let ring = TempFile(ring_path(&format!("cli-ns-reader-{}", std::process::id())));
    let _ = std::fs::remove_file(ring.path());
    let file = TempFile::new("ns-reader");
    // The consumer is pid 1 of its namespace.
    let inside = in_namespace(&[
        env!("CARGO_BIN_EXE_memtrack"),
        "record",
        "-q",
        "--ring",
        ring.str(),
        "-o",
        file.str(),
        "--duration",
        "1.5",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_until("the consumer in the namespace attached", || {
        Ring::open(ring.path()).is_ok_and(|r| r.snapshot().reader_pid == Some(1))
    });
    let second = TempFile::new("ns-reader-second");
    let out = memtrack(&["record", "-q", "--ring", ring.str(), "-o", second.str(), "--duration", "0.1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already consumed by pid 1 of another PID namespace"), "{stderr}");
    let status = memtrack(&["status", "--ring", ring.str()]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("consumer pid 1 of another PID namespace"), "{text}");
    success(&inside.wait_with_output().unwrap());
}

#[test]
fn a_late_reader_names_an_entrys_owner_as_the_table_does() {
    // No namespace needed: the question is which owner of a reused table
    // entry records belong to when the reader never saw that owner start.
    let ring = TempFile(ring_path(&format!("cli-ns-late-{}", std::process::id())));
    let _ = std::fs::remove_file(ring.path());
    Ring::create(ring.path(), memtrack::RingOptions { capacity: 1024, ..memtrack::RingOptions::default() })
        .unwrap();
    let attach =
        |name: &[u8]| memtrack::Writer::attach_named(Ring::open(ring.path()).unwrap(), name).unwrap();
    // Fill the table, then free entry 0: the next writer is its second owner.
    let mut table: Vec<memtrack::Writer> =
        (0..memtrack::format::MAX_PROCESSES).map(|_| attach(b"filler")).collect();
    let first = table.remove(0);
    assert_eq!(first.owner().slot, 0);
    first.shutdown();
    drop(first);
    // Another test of this binary forking at that moment holds the ring's
    // file, and with it entry 0's lock, until its child execs: retry.
    let second = (0..200)
        .find_map(|_| {
            let attached = memtrack::Writer::attach_named(Ring::open(ring.path()).unwrap(), b"second").ok();
            attached.or_else(|| {
                std::thread::sleep(Duration::from_millis(10));
                None
            })
        })
        .expect("entry 0 freed once its writer is gone");
    assert_eq!((second.owner().slot, second.owner().generation), (0, 2));
    // An earlier consumer took every start record, the second owner's too.
    let mut earlier = memtrack::Consumer::attach(ring.path()).unwrap();
    let mut buf = Vec::new();
    earlier.drain(usize::MAX, &mut buf, |_| Ok::<(), ()>(())).unwrap();
    drop(earlier);
    let buffer = |id| common::l1_buffer(id);
    second.alloc(&buffer(1));
    second.alloc(&buffer(2));
    let file = TempFile::new("ns-late");
    let recorder = Recorder::start(ring.path(), &file);
    second.free(&buffer(1));
    wait_until("the recorder took the free", || {
        let s = second.ring().snapshot();
        s.progress.committed >= s.tail
    });
    recorder.stop();

    let report = report_json(&file);
    let owner = processes(&report).into_iter().find(|p| p["allocs"] == 2).expect("the second owner");
    assert_eq!(owner["process"], "0.2", "the generation the table gives: {owner}");
    assert_eq!(
        (&owner["name"], &owner["frees"], &owner["remaining_buffers"]),
        (&"second".into(), &1.into(), &1.into())
    );
    assert_eq!(owner["host_pid"], std::process::id());
    let status = memtrack(&["status", "--ring", ring.str(), "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let entry =
        status["processes"].as_array().unwrap().iter().find(|p| p["name"] == "second").cloned().unwrap();
    assert_eq!(entry["process"], owner["process"], "status and report name it alike");
    assert_eq!(report["anomalies"]["unknown_frees"], 0);
    drop(table);
}
