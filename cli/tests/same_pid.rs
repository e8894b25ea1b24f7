//! One process is one track, whatever its pid: recordings made by two
//! writers that are both pid 2 — of two PID namespaces (two containers
//! sharing /dev/shm), or one after the other in one namespace (a reused
//! pid) — exported as Perfetto timelines (JSON and protobuf) give each
//! writer its own process track, with its own phases, its own anomaly
//! and its own death, named by its pid, its process key and its host pid.
//! `unshare --pid --fork --mount-proc` stands in for a container (root
//! needed: without it the tests say `SKIPPED` and check nothing); the
//! writers are `ffi_tests/ns_writer.c` with a tag: each marks "TAG alloc"
//! and "TAG free" and frees a buffer it never allocated.

#[path = "../../tests/common/cc.rs"]
mod cc;
mod common;
#[path = "common/namespace.rs"]
mod namespace;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use common::{TempFile, decode_with_perfetto_schema, memtrack, report_json};
use memtrack::format::MAX_PROCESSES;
use memtrack::{Ring, RingOptions, ring_path};
use namespace::{
    Recorder, children, in_namespace, namespaces_available, success, wait_ready, writer, writer_line,
};
use serde_json::Value;

/// What a writer of the recording is, by the report.
#[derive(Debug)]
struct Writer {
    /// Its process key.
    key: String,
    tag: &'static str,
    /// `exited` or `died`.
    state: String,
    host_pid: Option<u64>,
    /// Buffers it left.
    remaining: u64,
}

/// The report's writers, all pid 2, tagged by state: `tags` maps
/// `exited`/`died` to the tag that writer was given.
fn writers(file: &TempFile, tags: &[(&str, &'static str)]) -> Vec<Writer> {
    let report = report_json(file);
    // The writers; other processes (a test's fillers) aside.
    let processes: Vec<&Value> =
        report["processes"].as_array().unwrap().iter().filter(|p| p["name"] == "w").collect();
    assert_eq!(processes.len(), 2, "{processes:#?}");
    assert!(processes.iter().all(|p| p["pid"] == 2), "one pid for both: {processes:#?}");
    let writers: Vec<Writer> = processes
        .iter()
        .map(|p| {
            let state = p["state"].as_str().unwrap().to_owned();
            let tag = tags.iter().find(|(s, _)| *s == state).unwrap_or_else(|| panic!("{p}")).1;
            Writer {
                key: p["process"].as_str().unwrap().to_owned(),
                tag,
                state,
                host_pid: p["host_pid"].as_u64(),
                remaining: p["remaining_buffers"].as_u64().unwrap(),
            }
        })
        .collect();
    assert_ne!(writers[0].key, writers[1].key, "{writers:?}");
    assert_ne!(writers[0].tag, writers[1].tag, "{writers:?}");
    writers
}

fn export(file: &TempFile, format: &str) -> TempFile {
    let out = TempFile::new(&format!("same-pid-{format}"));
    success(&memtrack(&["export", file.str(), "--format", format, "-o", out.str()]));
    out
}

fn ts(e: &Value) -> f64 {
    e["ts"].as_f64().unwrap()
}

fn end_of(e: &Value) -> f64 {
    ts(e) + e["dur"].as_f64().unwrap()
}

/// Checks the JSON timeline of `file`: each writer's own process track,
/// named with its pid, key and host pid, holding its phases (which no
/// other writer's mark ends), its anomaly and, if it died, its death; its
/// buffers name it. `overlap`: (tag, tag) of a writer whose last phase
/// spans the other's marks. Returns each writer's Perfetto pid, by key.
fn check_json(file: &TempFile, writers: &[Writer], overlap: Option<(&str, &str)>) -> BTreeMap<String, u64> {
    let trace = export(file, "perfetto");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(trace.path()).unwrap()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    let names: BTreeMap<u64, &str> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| (e["pid"].as_u64().unwrap(), e["args"]["name"].as_str().unwrap()))
        .collect();
    let mut track = BTreeMap::new();
    for w in writers {
        let named: Vec<(&u64, &&str)> =
            names.iter().filter(|(_, n)| n.contains(&format!("(process {}", w.key))).collect();
        assert_eq!(named.len(), 1, "one track named by process {}: {names:?}", w.key);
        let (&pid, name) = named[0];
        assert!(name.starts_with("w pid 2 (process "), "{name}");
        if let Some(host) = w.host_pid {
            assert!(name.ends_with(&format!(", host pid {host})")), "{name}");
        }
        track.insert(w.key.clone(), pid);
    }
    assert_eq!(track.values().collect::<BTreeSet<_>>().len(), 2, "two tracks: {track:?}");
    let key_of = |pid: u64| track.iter().find(|(_, p)| **p == pid).map(|(k, _)| k.clone());

    // Phases: on a `phases` thread of their own process, each mark to the
    // same process's next mark, the last to the process's end.
    let phases: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X" && e["cat"] == "phase").collect();
    let deaths: Vec<&Value> = events.iter().filter(|e| e["ph"] == "i" && e["cat"] == "process").collect();
    let anomalies: Vec<&Value> = events.iter().filter(|e| e["ph"] == "i" && e["cat"] == "anomaly").collect();
    for w in writers {
        let pid = track[&w.key];
        let mut own: Vec<&&Value> = phases.iter().filter(|p| p["pid"] == pid).collect();
        own.sort_by(|a, b| ts(a).total_cmp(&ts(b)));
        let labels: Vec<&str> = own.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(labels, [format!("{} alloc", w.tag), format!("{} free", w.tag)], "phases of {}", w.key);
        assert!(own.iter().all(|p| p["args"]["process"] == w.key.as_str()), "{own:?}");
        assert!((end_of(own[0]) - ts(own[1])).abs() < 1.0, "{own:?}");
        let phase_threads: Vec<&Value> = events
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "thread_name" && e["pid"] == pid)
            .filter(|e| e["args"]["name"] == "phases")
            .collect();
        assert_eq!(phase_threads.len(), 1);
        assert!(own.iter().all(|p| p["tid"] == phase_threads[0]["tid"]));

        let own_anomalies: Vec<&&Value> = anomalies.iter().filter(|a| a["pid"] == pid).collect();
        assert_eq!(own_anomalies.len(), 1, "{} has its unknown free: {anomalies:?}", w.key);
        assert_eq!(own_anomalies[0]["name"], "unknown_free DRAM buffer 999");
        assert_eq!(own_anomalies[0]["args"]["process"], w.key.as_str());
        assert_eq!(own_anomalies[0]["args"]["pid"], 2);

        let own_deaths: Vec<&&Value> = deaths.iter().filter(|d| d["pid"] == pid).collect();
        if w.state == "died" {
            assert_eq!(own_deaths.len(), 1, "{deaths:?}");
            assert_eq!(own_deaths[0]["args"]["process"], w.key.as_str());
            assert_eq!(own_deaths[0]["args"]["buffers_left"], w.remaining);
            // Its last phase ends at its death, not at the end of the trace.
            assert!((end_of(own[1]) - ts(own_deaths[0])).abs() < 1.0, "{own:?} {own_deaths:?}");
        } else {
            assert!(own_deaths.is_empty(), "{deaths:?}");
        }
    }
    assert_eq!(deaths.len(), 1, "{deaths:?}");
    assert!(anomalies.iter().all(|a| key_of(a["pid"].as_u64().unwrap()).is_some()), "{anomalies:?}");
    if let Some((first, second)) = overlap {
        // No phase of one writer is cut short by the other's marks: the
        // first writer's last phase lasts past the other's first mark.
        let phase = |name: String| phases.iter().find(|p| p["name"] == name.as_str()).copied().unwrap();
        let (last_of_first, first_of_second) =
            (phase(format!("{first} free")), phase(format!("{second} alloc")));
        assert!(end_of(last_of_first) > ts(first_of_second), "{last_of_first} ended at {first_of_second}");
    }

    // Buffers (on the device tracks) name their process: pid and key.
    let buffers: Vec<&Value> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"].as_str().unwrap().starts_with("buffer"))
        .collect();
    for w in writers {
        let own: Vec<&&Value> = buffers.iter().filter(|b| b["args"]["process"] == w.key.as_str()).collect();
        assert!(own.iter().all(|b| b["args"]["pid"] == 2), "{own:?}");
        let left: Vec<&&&Value> = own
            .iter()
            .filter(|b| b["args"]["leaked"] == true || b["args"]["freed_by"] == "process died")
            .collect();
        assert_eq!(left.len() as u64, w.remaining, "{} left {}: {own:?}", w.key, w.remaining);
    }
    track
}

/// Checks the protobuf timeline of `file` as [`check_json`] does the JSON
/// one, with the Perfetto pids it found there.
fn check_proto(file: &TempFile, writers: &[Writer], json_pids: &BTreeMap<String, u64>) {
    let trace = export(file, "perfetto-proto");
    let decoded = decode_with_perfetto_schema(trace.path());
    let tracks = decoded["tracks"].as_object().unwrap();
    let events = decoded["events"].as_array().unwrap();
    for w in writers {
        let pid = json_pids[&w.key];
        let processes: Vec<(&String, &Value)> =
            tracks.iter().filter(|(_, t)| t["pid"] == pid && !t["process_name"].is_null()).collect();
        let named: BTreeSet<&str> =
            processes.iter().filter_map(|(_, t)| t["process_name"].as_str()).collect();
        assert!(
            named
                .iter()
                .any(|n| n.starts_with("w pid 2 (process ") && n.contains(&format!("(process {}", w.key))),
            "{} is named on its track: {named:?}",
            w.key
        );
        let uuids: BTreeSet<&str> = processes.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(uuids.len(), 1, "one process track per pid: {processes:?}");
        let uuid = *uuids.iter().next().unwrap();
        // Its phases track, under it, with its own two phases.
        let phase_tracks: Vec<&String> = tracks
            .iter()
            .filter(|(_, t)| t["name"] == "phases" && t["parent"] == uuid)
            .map(|(u, _)| u)
            .collect();
        assert_eq!(phase_tracks.len(), 1, "{tracks:?}");
        let mut labels: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "TYPE_SLICE_BEGIN" && e["track"] == phase_tracks[0].as_str())
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        labels.sort();
        assert_eq!(labels, [format!("{} alloc", w.tag), format!("{} free", w.tag)]);
        // Its instants: its anomaly, and its death if it died.
        let mut instants: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "TYPE_INSTANT" && e["track"] == uuid)
            .inspect(|e| assert_eq!(e["args"]["process"], w.key.as_str(), "{e}"))
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        instants.sort();
        let mut want = vec!["unknown_free DRAM buffer 999"];
        if w.state == "died" {
            want.insert(0, "process 2 died");
        }
        assert_eq!(instants, want, "instants of {}", w.key);
    }
}

#[test]
fn two_pid_2_writers_of_two_namespaces_have_their_own_tracks_phases_anomalies_and_death() {
    if !namespaces_available(
        "two_pid_2_writers_of_two_namespaces_have_their_own_tracks_phases_anomalies_and_death",
    ) {
        return;
    }
    let ring = TempFile(ring_path(&format!("cli-same-pid-{}", std::process::id())));
    let file = TempFile::new("same-pid");
    let recorder = Recorder::start_creating(ring.path(), &file);
    // Both writers are pid 2 of their namespaces. The first marks, leaves
    // two buffers and exits 500 ms after it is ready; the second starts
    // once the first is ready (so its marks fall inside the first's last
    // phase), leaves one buffer and is SIGKILLed.
    let spawn = |args: &str| {
        let mut child = in_namespace(&["sh", "-c", &writer_line(args)])
            .env("MEMTRACK_RING", ring.path())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let ready = wait_ready(child.stdout.take().unwrap());
        (child, ready)
    };
    let (mut exits, _a) = spawn("3 2 exit a");
    let (mut killed, _b) = spawn("3 1 kill b");
    let host_pids: BTreeSet<u64> =
        [&exits, &killed].iter().map(|c| children(children(c.id())[0])[0] as u64).collect();
    assert!(exits.wait().unwrap().success());
    assert!(killed.wait().unwrap().success(), "the shell outlives its killed writer");
    recorder.stop();

    let writers = writers(&file, &[("exited", "a"), ("died", "b")]);
    let found: BTreeSet<u64> = writers.iter().filter_map(|w| w.host_pid).collect();
    assert_eq!(found, host_pids, "the recorder found both in its namespace: {writers:?}");
    let pids = check_json(&file, &writers, Some(("a", "b")));
    check_proto(&file, &writers, &pids);
}

#[test]
fn a_reused_pid_in_a_reused_table_entry_is_a_second_track_and_a_process_of_its_own_in_csv_and_filters() {
    if !namespaces_available(
        "a_reused_pid_in_a_reused_table_entry_is_a_second_track_and_a_process_of_its_own_in_csv_and_filters",
    ) {
        return;
    }
    let ring = TempFile(ring_path(&format!("cli-same-pid-reuse-{}", std::process::id())));
    let _ = std::fs::remove_file(ring.path());
    Ring::create(ring.path(), RingOptions { capacity: 4096, ..RingOptions::default() }).unwrap();
    // The table full but for one entry, which no live process holds: both
    // writers below get it, so their records carry one entry and one pid.
    let mut fillers: Vec<memtrack::Writer> = (0..MAX_PROCESSES)
        .map_while(|_| memtrack::Writer::attach_named(Ring::open(ring.path()).unwrap(), b"filler").ok())
        .collect();
    assert_eq!(fillers.len(), MAX_PROCESSES);
    let last = fillers.pop().unwrap();
    last.shutdown();
    drop(last);
    let file = TempFile::new("same-pid-reuse");
    let recorder = Recorder::start(ring.path(), &file);
    // In one namespace: the first writer (pid 2) leaves two buffers and is
    // SIGKILLed; the namespace's next pid is forced back to 2 for the
    // second, which leaves one and exits.
    let script = format!(
        "{} 2 2 kill first; echo 1 > /proc/sys/kernel/ns_last_pid; {} 1 1 exit second; true",
        writer().display(),
        writer().display()
    );
    let out = in_namespace(&["sh", "-c", &script]).env("MEMTRACK_RING", ring.path()).output().unwrap();
    success(&out);
    recorder.stop();
    drop(fillers);

    let writers = writers(&file, &[("died", "first"), ("exited", "second")]);
    let entry = |w: &Writer| w.key.split('.').next().unwrap().to_owned();
    assert_eq!(entry(&writers[0]), entry(&writers[1]), "one table entry, reused: {writers:?}");
    let slot = entry(&writers[0]);
    let pids = check_json(&file, &writers, None);
    check_proto(&file, &writers, &pids);

    // CSV rows name their process; `--process KEY` takes that process's
    // records only, though both have one pid and one table entry.
    let buffer_rows = |filters: &[&str]| -> Vec<(String, String)> {
        csv(&file, filters)
            .into_iter()
            .filter(|r| r["event"] == "alloc" || r["event"] == "free")
            .inspect(|r| assert_eq!((r["pid"].as_str(), &r["process_slot"]), ("2", &slot), "{r:?}"))
            .map(|r| (r["process"].clone(), format!("{} {}", r["event"], r["buffer_id"])))
            .collect()
    };
    let (first, second) = (&writers[0].key, &writers[1].key);
    let mut all = buffer_rows(&[]);
    all.sort();
    let mut want: Vec<(String, String)> = [
        (first, "alloc 1"),
        (first, "alloc 2"),
        (first, "free 999"),
        (second, "alloc 1"),
        (second, "free 999"),
    ]
    .iter()
    .map(|(k, e)| (k.to_string(), e.to_string()))
    .collect();
    want.sort();
    assert_eq!(all, want);
    for key in [first, second] {
        let only: Vec<(String, String)> = want.iter().filter(|(k, _)| k == key).cloned().collect();
        let mut got = buffer_rows(&["--process", key]);
        got.sort();
        assert_eq!(got, only, "export --process {key}");
    }
}

/// `memtrack export FILE --format csv FILTERS`: rows of column -> text.
fn csv(file: &TempFile, filters: &[&str]) -> Vec<BTreeMap<String, String>> {
    let mut args = vec!["export", file.str(), "--format", "csv"];
    args.extend_from_slice(filters);
    let out = memtrack(&args);
    success(&out);
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.last(), Some(&"label"), "the label stays last");
    // The label is last and the only field that may be quoted: not read here.
    lines
        .map(|l| {
            header.iter().map(|h| h.to_string()).zip(l.splitn(header.len(), ',').map(str::to_owned)).collect()
        })
        .collect()
}
