//! `memtrack bench` run as a user would, briefly: the floor rows are
//! measured in the same run, every row carries its ratio to the one-thread
//! floor, the rows and JSON keys that existed before keep their names, and
//! the hook with a reader attached in another process loses nothing.

mod common;

use common::memtrack;
use serde_json::Value;

#[test]
fn bench_json_has_the_floor_the_two_thread_rows_and_the_old_keys() {
    let out = memtrack(&["bench", "--events", "4000", "--rounds", "3", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(doc["schema"], "memtrack.bench/1");
    for key in ["threads", "events", "socket_events", "rounds"] {
        assert!(doc[key].is_u64(), "{key}: {doc}");
    }
    assert!(!doc["cpu_model"].as_str().unwrap().is_empty());
    assert!(["tsc", "monotonic"].contains(&doc["clock"].as_str().unwrap()));
    assert_eq!(doc["capacity"], 65536);

    let rows = doc["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "floor",
            "empty_call",
            "disabled",
            "enabled",
            "socket",
            "floor_2_threads",
            "enabled_2_threads",
            "enabled_2_processes"
        ]
    );
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap();
    let floor = doc["floor_ns_per_event"].as_f64().unwrap();
    assert!(floor > 0.0);
    assert_eq!(row("floor")["ns_per_event"].as_f64().unwrap(), floor);
    let floor_cpu = doc["floor_cpu_ns_per_event"].as_f64().unwrap();
    assert_eq!(row("floor")["cpu_ns_per_event"].as_f64().unwrap(), floor_cpu);
    for r in rows {
        for key in
            ["ns_per_event", "events_per_second", "ratio_to_floor", "cpu_ns_per_event", "ratio_to_floor_cpu"]
        {
            assert!(r[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {r}");
        }
        assert_eq!(r["rounds_ns_per_event"].as_array().unwrap().len(), 3, "{r}");
        let ratio = r["ratio_to_floor"].as_f64().unwrap();
        let ns = r["ns_per_event"].as_f64().unwrap();
        assert!((ratio * floor - ns).abs() <= 1e-9 * ns, "{r}");
        // The speed-up over the socket is given at the socket row's writer
        // count only (one thread in one process).
        let one_writer = r["threads"] == 1 && r["processes"] == 1;
        assert_eq!(r["speedup_vs_socket"].is_number(), one_writer, "{r}");
    }
    assert_eq!(row("floor_2_threads")["threads"], 2);
    assert_eq!(row("enabled_2_threads")["threads"], 2);
    assert_eq!(row("enabled_2_threads")["processes"], 1);
    // One thread in each of two processes, at once, on one ring.
    assert_eq!(row("enabled_2_processes")["threads"], 1);
    assert_eq!(row("enabled_2_processes")["processes"], 2);
    // 4000 events per thread fit in a 65536-slot ring: a reader attached
    // in another process, nothing may be dropped or lost.
    assert_eq!(row("enabled")["lost"], 0);
    assert_eq!(row("enabled_2_threads")["lost"], 0);
    assert_eq!(row("enabled_2_processes")["lost"], 0);
    assert_eq!(row("socket")["lost"], 0);
    assert!(row("floor")["lost"].is_null(), "the floor has no reader to lose records");
    // The reader's CPU per record: on the rows with a reader, null on the rest.
    for r in rows {
        let cost = &r["reader_cpu_ns_per_record"];
        if r["name"].as_str().unwrap().starts_with("enabled") {
            assert!(cost.as_f64().is_some_and(|v| v > 0.0), "{r}");
        } else {
            assert!(cost.is_null(), "{r}");
        }
    }
}

#[test]
fn bench_table_names_the_cpu_and_the_targets() {
    let out = memtrack(&["bench", "--events", "2000", "--rounds", "1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("cpu: ") && l.contains("clock: ")), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("floor: clock + 64-byte slot") && l.contains(" 1.00 ")),
        "{text}"
    );
    assert!(text.contains("(target 1.5x)") && text.contains("(target 2x)"), "{text}");
    let processes = text.lines().find(|l| l.starts_with("memtrack, reader attached, 2 processes")).unwrap();
    assert!(processes.split_whitespace().last().unwrap().parse::<f64>().is_ok(), "{processes}");
    assert!(text.contains("one thread in each of 2 processes on one ring and one device"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("row ") && l.contains("cpu ns")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("row ") && l.ends_with("reader ns/rec")), "{text}");
    let enabled = text.lines().find(|l| l.starts_with("memtrack, reader attached")).unwrap();
    let cost: f64 = enabled.split_whitespace().last().unwrap().parse().expect("a figure, not -");
    assert!(cost > 0.0, "{enabled}");
}

#[test]
fn bench_refuses_zero_threads_with_one_line() {
    let out = memtrack(&["bench", "--threads", "0"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--threads"), "{err}");
}
