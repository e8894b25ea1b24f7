//! `memtrack export --format perfetto` checked against the Trace Event
//! Format: a strict validator written from the format's specification
//! (Google's "Trace Event Format" document, the JSON object form), then the
//! timeline's content against the report of the same recording: every
//! peak, every buffer lifetime, leaks to the end, phases, absolute time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

mod common;

use common::{TempFile, decode_with_perfetto_schema, memtrack, memtrack_env, report_json};
use memtrack::ffi::*;
use serde_json::{Map, Value};

const ROLE: &str = "MEMTRACK_TEST_ROLE";

/// Buffers of the "many" workload (more than the exporter's 20 000 limit
/// for showing every lifetime).
const MANY: u64 = 25_000;

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let mark = |label: &std::ffi::CStr| {
        // SAFETY: a NUL-terminated string.
        unsafe { memtrack_mark(label.as_ptr()) }
    };
    match role.as_str() {
        // Three phases on three devices; a TRACE buffer of 8 KiB allocated
        // and freed at once (a peak shorter than a microsecond); three
        // leaks; an unknown free; a forked child killed holding two L1
        // buffers.
        "timeline" => {
            // SAFETY: NULL: use $MEMTRACK_RING.
            assert_eq!(unsafe { memtrack_init(std::ptr::null()) }, 0);
            memtrack_set_capacity(0, MEMTRACK_KIND_DRAM, 1 << 30);
            mark(c"load");
            for id in 0..10 {
                memtrack_alloc((id % 2) as u32, MEMTRACK_KIND_DRAM, id, 0x1000 * id, 4096 * (id + 1));
            }
            mark(c"compute");
            memtrack_alloc(2, MEMTRACK_KIND_TRACE, 100, 0, 8192);
            memtrack_free(2, MEMTRACK_KIND_TRACE, 100, 0, 8192);
            for id in 200..205 {
                memtrack_alloc(1, MEMTRACK_KIND_L1, id, 0, 1024);
            }
            for id in 200..205 {
                memtrack_free(1, MEMTRACK_KIND_L1, id, 0, 1024);
            }
            // SAFETY: the child only calls memtrack and kills itself.
            let child = unsafe { libc::fork() };
            if child == 0 {
                memtrack_alloc(1, MEMTRACK_KIND_L1, 300, 0, 2048);
                memtrack_alloc(1, MEMTRACK_KIND_L1, 301, 0, 2048);
                // SAFETY: raising a signal at ourselves.
                unsafe { libc::raise(libc::SIGKILL) };
            }
            let mut status = 0;
            // SAFETY: our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            std::thread::sleep(std::time::Duration::from_millis(50));
            mark(c"teardown");
            for id in 0..7 {
                memtrack_free((id % 2) as u32, MEMTRACK_KIND_DRAM, id, 0x1000 * id, 4096 * (id + 1));
            }
            memtrack_free(0, MEMTRACK_KIND_L1, 999, 0, 64); // unknown free
            std::process::exit(0);
        }
        // MANY buffers of sizes 1..=MANY on device 0, each freed, and 5 on
        // device 1 never freed.
        "many" => {
            for id in 0..MANY {
                // Sizes in a scrambled order, so the largest are not simply the last.
                let size = (id * 7919) % MANY + 1;
                memtrack_alloc(0, MEMTRACK_KIND_DRAM, id, 0, size);
                memtrack_free(0, MEMTRACK_KIND_DRAM, id, 0, size);
            }
            for id in 0..5 {
                memtrack_alloc(1, MEMTRACK_KIND_L1, id, 0, 100 + id);
            }
            std::process::exit(0);
        }
        other => panic!("unknown helper role {other}"),
    }
}

/// `memtrack record -o FILE -- helper ROLE`.
fn record(role: &str, file: &Path) -> Output {
    let exe = std::env::current_exe().unwrap();
    let args = ["record", "-o", file.to_str().unwrap(), "--", exe.to_str().unwrap()];
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--exact", "helper", "--nocapture", "--test-threads=1"]);
    memtrack_env(&args, &[(ROLE, role)])
}

/// Records `role` and exports it; returns (trace, report).
fn export(role: &str) -> (Value, Value) {
    let file = TempFile::new(&format!("export-{role}"));
    let out = record(role, file.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (export_file(&file, &[]), report_json(file.path()))
}

/// `memtrack export FILE --format perfetto EXTRA`, validated.
fn export_file(file: &TempFile, extra: &[&str]) -> Value {
    let trace = TempFile::new("export-json");
    let mut args = vec!["export", file.str(), "--format", "perfetto", "-o", trace.str()];
    args.extend_from_slice(extra);
    let out = memtrack(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(trace.path()).unwrap();
    let doc: Value = serde_json::from_str(&text).expect("one JSON document");
    if let Err(errors) = validate(&doc) {
        panic!(
            "not a valid trace ({} problems):\n{}",
            errors.len(),
            errors[..errors.len().min(20)].join("\n")
        );
    }
    doc
}

// ---------------------------------------------------------------------
// The validator: the Trace Event Format, JSON Object Format.

/// Keys the format defines for the top-level object.
const TOP_LEVEL_KEYS: [&str; 6] =
    ["traceEvents", "displayTimeUnit", "systemTraceEvents", "otherData", "stackFrames", "samples"];

/// Keys the format defines for an event.
const EVENT_KEYS: [&str; 21] = [
    "name", "cat", "ph", "ts", "tts", "pid", "tid", "args", "dur", "tdur", "id", "id2", "scope", "s", "bp",
    "sf", "stack", "esf", "estack", "cname", "bind_id",
];

/// Every phase of the format.
const PHASES: [&str; 23] = [
    "B", "E", "X", "i", "I", "C", "b", "n", "e", "S", "T", "p", "F", "s", "t", "f", "P", "N", "O", "D", "M",
    "V", "R",
];

/// Metadata event names of the format.
const METADATA_NAMES: [&str; 5] =
    ["process_name", "process_labels", "process_sort_index", "thread_name", "thread_sort_index"];

fn is_uint32(v: &Value) -> bool {
    v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX))
}

fn is_timestamp(v: &Value) -> bool {
    v.as_f64().is_some_and(|t| t.is_finite() && t >= 0.0)
}

/// A complete event: (ts, dur, index in traceEvents).
type Complete = (f64, f64, usize);

/// Every problem of `doc` as a trace, or `Ok` if none.
fn validate(doc: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    let Some(top) = doc.as_object() else { return Err(vec!["the document is not an object".into()]) };
    for key in top.keys().filter(|k| !TOP_LEVEL_KEYS.contains(&k.as_str())) {
        errors.push(format!("unknown top-level key {key:?}"));
    }
    if let Some(unit) = top.get("displayTimeUnit")
        && unit != "ms"
        && unit != "ns"
    {
        errors.push(format!("displayTimeUnit {unit} is neither \"ms\" nor \"ns\""));
    }
    if top.get("otherData").is_some_and(|o| !o.is_object()) {
        errors.push("otherData is not an object".into());
    }
    let Some(events) = top.get("traceEvents").and_then(Value::as_array) else {
        errors.push("traceEvents is missing or not an array".into());
        return Err(errors);
    };
    // Per (pid, tid): complete events, for nesting; open B events; async.
    let mut complete: BTreeMap<(u64, u64), Vec<Complete>> = BTreeMap::new();
    let mut async_open: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        let mut error = |what: String| errors.push(format!("event {i}: {what}: {event}"));
        let Some(e) = event.as_object() else {
            error("not an object".into());
            continue;
        };
        for key in e.keys().filter(|k| !EVENT_KEYS.contains(&k.as_str())) {
            error(format!("unknown key {key:?}"));
        }
        let Some(ph) = e.get("ph").and_then(Value::as_str).filter(|p| PHASES.contains(p)) else {
            error("ph missing or not a phase of the format".into());
            continue;
        };
        if !e.get("name").is_some_and(Value::is_string) {
            error("name missing or not a string".into());
        }
        for key in ["cat", "id", "s"] {
            if e.get(key).is_some_and(|v| !(v.is_string() || key == "id" && v.is_u64())) {
                error(format!("{key} is not a string"));
            }
        }
        if e.get("args").is_some_and(|a| !a.is_object()) {
            error("args is not an object".into());
        }
        if !e.get("pid").is_some_and(is_uint32) {
            error("pid missing or not a 32-bit unsigned integer".into());
        }
        if e.get("tid").is_some_and(|t| !is_uint32(t)) {
            error("tid is not a 32-bit unsigned integer".into());
        }
        let args: Option<&Map<String, Value>> = e.get("args").and_then(Value::as_object);
        if ph == "M" {
            let name = e.get("name").and_then(Value::as_str).unwrap_or("");
            if !METADATA_NAMES.contains(&name) {
                error(format!("metadata event {name:?} is not one the format defines"));
            } else if name.ends_with("_name")
                && !args.is_some_and(|a| a.get("name").is_some_and(Value::is_string))
            {
                error("a *_name metadata event needs args.name, a string".into());
            } else if name.ends_with("_sort_index")
                && !args.is_some_and(|a| a.get("sort_index").is_some_and(Value::is_i64))
            {
                error("a *_sort_index metadata event needs args.sort_index, an integer".into());
            }
            if name.starts_with("thread_") && !e.contains_key("tid") {
                error("a thread metadata event needs a tid".into());
            }
            continue;
        }
        if !e.get("ts").is_some_and(is_timestamp) {
            error("ts missing or not a non-negative number of microseconds".into());
            continue;
        }
        let ts = e["ts"].as_f64().unwrap();
        let pid = e["pid"].as_u64().unwrap_or(0);
        let tid = e.get("tid").and_then(Value::as_u64).unwrap_or(pid);
        match ph {
            "X" => {
                if !e.get("dur").is_some_and(is_timestamp) {
                    error("a complete event needs dur, a non-negative number".into());
                } else {
                    complete.entry((pid, tid)).or_default().push((ts, e["dur"].as_f64().unwrap(), i));
                }
                if !e.contains_key("tid") {
                    error("a complete event needs a tid".into());
                }
            }
            "i" | "I" => {
                if let Some(s) = e.get("s").and_then(Value::as_str)
                    && !["g", "p", "t"].contains(&s)
                {
                    error(format!("instant scope {s:?} is not g, p or t"));
                }
            }
            "C" => match args {
                Some(a) if !a.is_empty() && a.values().all(Value::is_number) => {}
                _ => error("a counter needs args with numeric values only".into()),
            },
            "b" | "e" | "n" => {
                let (Some(cat), Some(id)) = (e.get("cat"), e.get("id")) else {
                    error("an async event needs cat and id".into());
                    continue;
                };
                let depth = async_open.entry((cat.to_string(), id.to_string())).or_default();
                *depth += match ph {
                    "b" => 1,
                    "e" => -1,
                    _ => 0,
                };
                if *depth < 0 {
                    error("async end without a begin".into());
                }
            }
            _ => {}
        }
    }
    // Complete events on one thread must nest: none may end inside another
    // that it started after.
    for ((pid, tid), mut slices) in complete {
        slices.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut stack: Vec<(f64, usize)> = Vec::new(); // (end, event)
        for (ts, dur, i) in slices {
            // Tolerance: a double holds ~0.25 us at today's epoch.
            while stack.last().is_some_and(|&(end, _)| end <= ts + 0.5) {
                stack.pop();
            }
            if let Some(&(end, outer)) = stack.last()
                && ts + dur > end + 0.5
            {
                errors.push(format!(
                    "pid {pid} tid {tid}: complete event {i} overlaps event {outer} without nesting in it"
                ));
            }
            stack.push((ts + dur, i));
        }
    }
    for ((cat, id), depth) in async_open {
        if depth != 0 {
            errors.push(format!("async {cat} {id}: {depth} begin(s) without an end"));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

#[test]
fn the_validator_refuses_what_the_format_does_not_allow() {
    let ok = serde_json::json!({"displayTimeUnit": "ns", "traceEvents": [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "t"}},
        {"ph": "X", "name": "a", "pid": 1, "tid": 2, "ts": 10.0, "dur": 5.0},
        {"ph": "X", "name": "b", "pid": 1, "tid": 2, "ts": 11.0, "dur": 2.0},
        {"ph": "C", "name": "c", "pid": 1, "ts": 10.0, "args": {"bytes": 3}},
    ]});
    assert_eq!(validate(&ok), Ok(()));
    for (bad, why) in [
        (r#"{"traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 2, "ts": 1}]}"#, "needs dur"),
        (r#"{"traceEvents": [{"ph": "Q", "name": "a", "pid": 1, "ts": 1}]}"#, "not a phase"),
        (r#"{"traceEvents": [{"ph": "i", "name": "a", "pid": 1, "ts": -1}]}"#, "non-negative"),
        (r#"{"traceEvents": [{"ph": "C", "name": "a", "pid": 1, "ts": 1, "args": {"v": "x"}}]}"#, "numeric"),
        (r#"{"traceEvents": [{"ph": "i", "name": "a", "pid": 1, "ts": 1, "s": "x"}]}"#, "scope"),
        (
            r#"{"traceEvents": [{"ph": "M", "name": "thread_name", "pid": 1, "args": {"name": "t"}}]}"#,
            "needs a tid",
        ),
        (r#"{"traceEvents": [{"ph": "M", "name": "colour", "pid": 1, "args": {}}]}"#, "defines"),
        (r#"{"traceEvents": [{"ph": "i", "name": "a", "pid": 1, "ts": 1, "extra": 1}]}"#, "unknown key"),
        (r#"{"traceEvents": [], "displayTimeUnit": "s"}"#, "displayTimeUnit"),
        (
            r#"{"traceEvents": [{"ph": "e", "name": "a", "cat": "c", "id": "1", "pid": 1, "ts": 1}]}"#,
            "without a begin",
        ),
        (
            r#"{"traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
                               {"ph": "X", "name": "b", "pid": 1, "tid": 1, "ts": 5, "dur": 10}]}"#,
            "without nesting",
        ),
    ] {
        let errors = validate(&serde_json::from_str(bad).unwrap()).expect_err(bad);
        assert!(errors.iter().any(|e| e.contains(why)), "{why}: {errors:?}");
    }
}

// ---------------------------------------------------------------------
// The timeline against the report.

fn events(doc: &Value) -> &[Value] {
    doc["traceEvents"].as_array().unwrap()
}

/// pid of the process named `name` by a process_name metadata event.
fn pid_named(doc: &Value, name: &str) -> u64 {
    events(doc)
        .iter()
        .find(|e| e["ph"] == "M" && e["name"] == "process_name" && e["args"]["name"] == name)
        .unwrap_or_else(|| panic!("no process named {name}"))["pid"]
        .as_u64()
        .unwrap()
}

/// Counter samples (ts, bytes) of track `kind` on `device`, in time order.
fn counter(doc: &Value, device: u64, kind: &str) -> Vec<(f64, u64)> {
    let pid = pid_named(doc, &format!("device {device}"));
    let mut samples: Vec<(f64, u64)> = events(doc)
        .iter()
        .filter(|e| e["ph"] == "C" && e["pid"] == pid && e["name"] == kind)
        .map(|e| (e["ts"].as_f64().unwrap(), e["args"]["bytes"].as_u64().unwrap()))
        .collect();
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    samples
}

fn slices<'a>(doc: &'a Value, cat: &str) -> Vec<&'a Value> {
    events(doc).iter().filter(|e| e["ph"] == "X" && e["cat"] == cat).collect()
}

fn end_of(e: &Value) -> f64 {
    e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap()
}

#[test]
fn perfetto_timeline_keeps_every_peak_lifetime_leak_and_phase_at_wall_clock_time() {
    let before_us = memtrack::clock::realtime_ns() as f64 / 1000.0;
    let (doc, report) = export("timeline");
    let after_us = memtrack::clock::realtime_ns() as f64 / 1000.0;

    // Every (device, kind) of the report: the counter's highest value is the
    // report's peak (the 8 KiB TRACE buffer freed at once included), its
    // last value the final usage. Track names are the kind, the argument
    // "bytes": Perfetto shows "DRAM bytes".
    let mut tracks = 0;
    for device in report["devices"].as_array().unwrap() {
        let id = device["device_id"].as_u64().unwrap();
        for (kind, stats) in device["kinds"].as_object().unwrap() {
            let samples = counter(&doc, id, kind);
            assert!(!samples.is_empty(), "no counter for device {id} {kind}");
            let high = samples.iter().map(|s| s.1).max().unwrap();
            assert_eq!(
                high,
                stats["peak_bytes"].as_u64().unwrap(),
                "peak of device {id} {kind}: {samples:?}"
            );
            assert_eq!(
                samples.last().unwrap().1,
                stats["live_bytes"].as_u64().unwrap(),
                "device {id} {kind}"
            );
            tracks += 1;
        }
    }
    assert!(tracks >= 4);
    assert_eq!(counter(&doc, 2, "TRACE").iter().map(|s| s.1).max(), Some(8192), "the short peak is there");
    let capacity = counter(&doc, 0, "DRAM capacity");
    assert!(capacity.len() >= 2 && capacity.iter().all(|s| s.1 == 1 << 30), "{capacity:?}");

    // Buffer lifetimes: few buffers, so every one is a slice. The three
    // never freed run to the end of the trace, named and marked as leaks;
    // the killed child's two end at its death.
    let freed = slices(&doc, "buffer");
    let leaked = slices(&doc, "buffer,leak");
    let allocs: u64 =
        report["processes"].as_array().unwrap().iter().map(|p| p["allocs"].as_u64().unwrap()).sum();
    assert_eq!((freed.len() + leaked.len()) as u64, allocs);
    assert_eq!(leaked.len(), 3);
    let trace_end = events(&doc)
        .iter()
        .filter(|e| e["ph"] != "M")
        .map(|e| if e["ph"] == "X" { end_of(e) } else { e["ts"].as_f64().unwrap() })
        .fold(0.0, f64::max);
    for leak in &leaked {
        assert!(leak["name"].as_str().unwrap().starts_with("leak: DRAM buffer "), "{leak}");
        assert_eq!(leak["args"]["leaked"], true);
        assert!((end_of(leak) - trace_end).abs() < 1.0, "a leak runs to the end: {leak}");
    }
    let leaked_ids: BTreeSet<u64> = leaked.iter().map(|l| l["args"]["buffer_id"].as_u64().unwrap()).collect();
    assert_eq!(leaked_ids, [7, 8, 9].into());
    let died: Vec<&&Value> = freed.iter().filter(|s| s["args"]["freed_by"] == "process died").collect();
    assert_eq!(died.len(), 2, "the killed child's buffers");
    let remaining = report["remaining"].as_array().unwrap();
    assert_eq!(remaining.len(), leaked.len() + died.len());
    // The TRACE buffer: a slice of (almost) no duration, 8 KiB.
    let trace_buffer = freed.iter().find(|s| s["args"]["kind"] == "TRACE").expect("the TRACE buffer");
    assert_eq!(trace_buffer["args"]["size"], 8192);
    // Lanes are named per kind.
    let thread_names: BTreeSet<&str> = events(&doc)
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    assert!(thread_names.contains("DRAM buffers") && thread_names.contains("L1 buffers"), "{thread_names:?}");
    assert!(thread_names.contains("phases"));

    // Phases: mark to mark, the last to the end of the trace.
    let mut phases = slices(&doc, "phase");
    phases.sort_by(|a, b| a["ts"].as_f64().unwrap().total_cmp(&b["ts"].as_f64().unwrap()));
    let labels: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(labels, ["load", "compute", "teardown"]);
    for pair in phases.windows(2) {
        assert!((end_of(pair[0]) - pair[1]["ts"].as_f64().unwrap()).abs() < 1.0, "{pair:?}");
    }
    assert!((end_of(phases[2]) - trace_end).abs() < 1.0);
    let marks = report["marks"].as_array().unwrap();
    assert_eq!(marks.len(), 3);

    // Wall-clock time: every timestamp lies within the test's run, and the
    // first phase starts where the report's first mark is, counted from
    // the recording's start (`started_unix_ns`).
    for e in events(&doc).iter().filter(|e| e["ph"] != "M") {
        let ts = e["ts"].as_f64().unwrap();
        assert!(ts >= before_us - 1.0 && ts <= after_us + 1.0, "{ts} not in [{before_us}, {after_us}]: {e}");
    }
    let started = report["started_unix_ns"].as_u64().unwrap();
    assert_eq!(doc["otherData"]["memtrack"]["recording_started_unix_ns"], started);
    let first_mark_us = (started + marks[0]["time_ns"].as_u64().unwrap()) as f64 / 1000.0;
    assert!((phases[0]["ts"].as_f64().unwrap() - first_mark_us).abs() < 1.0);
    assert!(doc["otherData"]["memtrack"]["buffer_slices"].as_str().unwrap().starts_with("all "));

    // The anomaly and the death as instants.
    let instants: Vec<&str> =
        events(&doc).iter().filter(|e| e["ph"] == "i").map(|e| e["name"].as_str().unwrap()).collect();
    assert!(instants.contains(&"unknown_free L1 buffer 999"), "{instants:?}");
    assert!(instants.iter().any(|n| n.starts_with("process ") && n.ends_with(" died")), "{instants:?}");
}

#[test]
fn perfetto_timeline_of_many_buffers_keeps_the_leaked_and_the_largest() {
    let file = TempFile::new("export-many");
    let out = record("many", file.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (doc, report) = (export_file(&file, &[]), report_json(file.path()));
    let freed = slices(&doc, "buffer");
    let leaked = slices(&doc, "buffer,leak");
    assert_eq!(leaked.len(), 5, "every buffer alive at the end");
    // The 200 largest freed buffers of device 0 DRAM: sizes MANY-199..=MANY.
    assert_eq!(freed.len(), 200);
    let sizes: BTreeSet<u64> = freed.iter().map(|s| s["args"]["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, (MANY - 199..=MANY).collect());
    let rule = doc["otherData"]["memtrack"]["buffer_slices"].as_str().unwrap();
    assert!(rule.contains("200 largest freed buffers of each device and kind"), "{rule}");
    assert_eq!(doc["otherData"]["memtrack"]["buffers"], MANY + 5);
    // The counter still has every peak: each buffer was freed at once, so
    // the highest value is the largest buffer.
    let dram = &report["devices"][0]["kinds"]["DRAM"];
    assert_eq!(counter(&doc, 0, "DRAM").iter().map(|s| s.1).max(), dram["peak_bytes"].as_u64());
    assert_eq!(dram["peak_bytes"], MANY);

    // Coarser buckets: fewer samples (at most three per bucket), the same
    // peak and the same final value.
    let coarse = export_file(&file, &["--bucket-us", "1000000"]);
    let fine = counter(&doc, 0, "DRAM");
    let samples = counter(&coarse, 0, "DRAM");
    assert!(samples.len() < fine.len(), "{} vs {}", samples.len(), fine.len());
    let span_s = (samples.last().unwrap().0 - samples[0].0) / 1e6;
    assert!(samples.len() as f64 <= 3.0 * (span_s.ceil() + 1.0), "{} samples over {span_s} s", samples.len());
    assert_eq!(samples.iter().map(|s| s.1).max(), Some(MANY));
    assert_eq!(samples.last().unwrap().1, fine.last().unwrap().1);
}

#[test]
fn perfetto_proto_decodes_with_perfettos_schema_and_holds_the_json_timeline() {
    let file = TempFile::new("export-proto");
    let out = record("timeline", file.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = export_file(&file, &[]);
    let proto = TempFile::new("export-proto-trace");
    let out = memtrack(&["export", file.str(), "--format", "perfetto-proto", "-o", proto.str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let decoded = decode_with_perfetto_schema(proto.path());
    let tracks = decoded["tracks"].as_object().unwrap();
    let decoded_events = decoded["events"].as_array().unwrap();
    assert!(decoded_events.iter().all(|e| e["sequence"] == 1));

    // The process (device) a track belongs to, by name.
    let process_of = |uuid: &str| -> String {
        let track = &tracks[uuid];
        let parent = track["parent"].as_str().map_or(uuid, |p| p);
        tracks[parent]["process_name"].as_str().unwrap_or("").to_owned()
    };
    // Counters: per (device, track name) the highest and the last value,
    // exactly as in the JSON form.
    let mut counters: BTreeMap<(String, String), (i64, i64, u64)> = BTreeMap::new();
    for e in decoded_events.iter().filter(|e| e["type"] == "TYPE_COUNTER") {
        let uuid = e["track"].as_str().unwrap();
        assert_eq!(tracks[uuid]["unit"], "UNIT_SIZE_BYTES");
        let key = (process_of(uuid), tracks[uuid]["name"].as_str().unwrap().to_owned());
        let (value, ts) = (e["value"].as_i64().unwrap(), e["ts"].as_u64().unwrap());
        let entry = counters.entry(key).or_insert((value, value, ts));
        entry.0 = entry.0.max(value);
        if ts >= entry.2 {
            (entry.1, entry.2) = (value, ts);
        }
    }
    let json_counters = events_of_json_counters(&json);
    assert_eq!(counters.len(), json_counters.len(), "{counters:?}\n{json_counters:?}");
    for ((device, name), (high, last, _)) in &counters {
        let samples = &json_counters[&(device.clone(), name.clone())];
        assert_eq!(*high as u64, samples.iter().map(|s| s.1).max().unwrap(), "{device} {name}");
        assert_eq!(*last as u64, samples.last().unwrap().1, "{device} {name}");
    }
    assert!(counters.contains_key(&("device 2".to_owned(), "TRACE bytes".to_owned())));
    assert_eq!(counters[&("device 2".to_owned(), "TRACE bytes".to_owned())].0, 8192);

    // Slices: a begin and an end each, the same names as the JSON slices,
    // leaks marked; times in nanoseconds of the same wall clock.
    let begins: Vec<&Value> = decoded_events.iter().filter(|e| e["type"] == "TYPE_SLICE_BEGIN").collect();
    let ends = decoded_events.iter().filter(|e| e["type"] == "TYPE_SLICE_END").count();
    assert_eq!(begins.len(), ends);
    let mut proto_names: Vec<String> =
        begins.iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect();
    let mut json_names: Vec<String> = events(&json)
        .iter()
        .filter(|e| e["ph"] == "X")
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    proto_names.sort();
    json_names.sort();
    assert_eq!(proto_names, json_names);
    let leaks: Vec<&&Value> =
        begins.iter().filter(|e| e["categories"] == serde_json::json!(["buffer", "leak"])).collect();
    assert_eq!(leaks.len(), 3);
    assert!(leaks.iter().all(|e| e["args"]["leaked"] == true));
    let lanes: BTreeSet<&str> =
        begins.iter().map(|e| tracks[e["track"].as_str().unwrap()]["name"].as_str().unwrap()).collect();
    assert!(lanes.contains("DRAM buffers") && lanes.contains("phases"), "{lanes:?}");
    let first_json = events(&json)
        .iter()
        .filter(|e| e["ph"] != "M")
        .map(|e| e["ts"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    let first_proto = decoded_events.iter().map(|e| e["ts"].as_u64().unwrap()).min().unwrap();
    assert!((first_proto as f64 / 1000.0 - first_json).abs() < 1.0, "{first_proto} ns vs {first_json} us");
    let instants: BTreeSet<&str> = decoded_events
        .iter()
        .filter(|e| e["type"] == "TYPE_INSTANT")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(instants.contains("unknown_free L1 buffer 999"), "{instants:?}");
}

/// The JSON form's counters: (device process name, "<name> bytes") ->
/// samples in time order.
fn events_of_json_counters(doc: &Value) -> BTreeMap<(String, String), Vec<(f64, u64)>> {
    let names: BTreeMap<u64, String> = events(doc)
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| (e["pid"].as_u64().unwrap(), e["args"]["name"].as_str().unwrap().to_owned()))
        .collect();
    let mut out: BTreeMap<(String, String), Vec<(f64, u64)>> = BTreeMap::new();
    for e in events(doc).iter().filter(|e| e["ph"] == "C") {
        let key =
            (names[&e["pid"].as_u64().unwrap()].clone(), format!("{} bytes", e["name"].as_str().unwrap()));
        out.entry(key).or_default().push((e["ts"].as_f64().unwrap(), e["args"]["bytes"].as_u64().unwrap()));
    }
    for samples in out.values_mut() {
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}
