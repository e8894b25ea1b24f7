//! Attribution and the CI gate, as a user meets them: a C++ program
//! (`ffi_tests/scopes.cpp`, through the C ABI and the RAII guard of
//! memtrack.hpp) run under `memtrack record`, then `report --json` with
//! its filters, `check` and its exit codes, `record --check`, and `diff`.

#[path = "../../tests/common/cc.rs"]
mod cc;
mod common;

use std::process::{Command, Output};

use common::{TempFile, memtrack};
use serde_json::Value;

/// `memtrack record [EXTRA] -o FILE -- scopes MODE`, with the program's
/// sanitizer settings.
fn record_with(mode: &str, file: &TempFile, extra: &[&str]) -> Output {
    let exe = cc::scopes_program();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memtrack"));
    cmd.args(["record", "-q"]).args(extra).arg("-o").arg(file.path()).arg("--").arg(&exe.path).arg(mode);
    cmd.env_remove("MEMTRACK_RING");
    for (k, v) in exe.command().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.output().expect("run memtrack record")
}

fn record(mode: &str) -> TempFile {
    let file = TempFile::new(&format!("scopes-{mode}"));
    let out = record_with(mode, &file, &[]);
    assert!(
        out.status.success(),
        "record failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    file
}

fn report(file: &TempFile, filters: &[&str]) -> Value {
    let mut args = vec!["report", file.str(), "--json"];
    args.extend_from_slice(filters);
    let out = memtrack(&args);
    assert!(out.status.success(), "report failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn long_name() -> String {
    "x".repeat(300)
}

/// (scope, kind, size) of each remaining buffer, in report order.
fn remaining(report: &Value) -> Vec<(String, String, u64)> {
    report["remaining"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["scope"].as_str().unwrap().to_owned(),
                b["kind"].as_str().unwrap().to_owned(),
                b["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn each_leak_names_the_scope_it_was_allocated_in_largest_first() {
    let file = record("leaky");
    let report = report(&file, &[]);
    assert_eq!(report["schema"], "memtrack.report/1");
    assert_eq!(report["lost"], 0);
    let expected: Vec<(String, String, u64)> = vec![
        ("worker/test_a".into(), "DRAM".into(), 2000),
        ("test_a".into(), "DRAM".into(), 1000),
        ("test_a/matmul".into(), "L1".into(), 300),
        ("".into(), "DRAM".into(), 100),
        (long_name(), "DRAM".into(), 7),
    ];
    assert_eq!(remaining(&report), expected);
    // The 300-byte mark label arrives whole.
    let marks = report["marks"].as_array().unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0]["label"], format!("phase-{}", "m".repeat(294)));
}

#[test]
fn scopes_count_allocations_frees_and_what_remains() {
    let file = record("leaky");
    let report = report(&file, &[]);
    let scopes = report["scopes"].as_array().unwrap();
    let row = |name: &str| {
        scopes
            .iter()
            .find(|s| s["scope"] == name)
            .unwrap_or_else(|| panic!("no scope {name:?} in {scopes:?}"))
    };
    let fields = |name: &str| {
        let s = row(name);
        ["allocs", "frees", "allocated_bytes", "remaining_buffers", "remaining_bytes"]
            .map(|k| s[k].as_u64().unwrap())
    };
    assert_eq!(fields("test_b/add"), [1000, 1000, 64_000, 0, 0]);
    assert_eq!(fields("test_a/matmul"), [2, 1, 5300, 1, 300]);
    assert_eq!(fields("test_a"), [1, 0, 1000, 1, 1000]);
    assert_eq!(fields("worker/test_a"), [1, 0, 2000, 1, 2000]);
    assert_eq!(fields(""), [1, 0, 100, 1, 100]);
    assert_eq!(fields(&long_name()), [1, 0, 7, 1, 7]);
    assert_eq!(fields("mm"), [1, 1, 64, 0, 0]);
    // Scopes with no allocation of their own (test_b, worker) are not rows.
    assert_eq!(scopes.len(), 7, "{scopes:?}");
}

#[test]
fn the_peak_of_each_kind_says_which_scopes_filled_it() {
    let file = record("leaky");
    let report = report(&file, &[]);
    let kinds = &report["devices"][0]["kinds"];
    let peak = |kind: &str| -> Vec<(String, u64)> {
        kinds[kind]["peak_scopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["scope"].as_str().unwrap().to_owned(), s["bytes"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(kinds["L1"]["peak_bytes"], 5300);
    assert_eq!(peak("L1"), vec![("test_a/matmul".to_owned(), 5300)]);
    assert_eq!(kinds["DRAM"]["peak_bytes"], 3107);
    assert_eq!(
        peak("DRAM"),
        vec![
            ("worker/test_a".to_owned(), 2000),
            ("test_a".to_owned(), 1000),
            ("".to_owned(), 100),
            (long_name(), 7)
        ]
    );
}

#[test]
fn each_scope_is_defined_once_per_process_however_often_it_is_entered() {
    let file = record("leaky");
    let out = memtrack(&["export", file.str(), "--format", "csv"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let csv = String::from_utf8_lossy(&out.stdout);
    let scope_records = csv.lines().filter(|l| l.split(',').nth(2) == Some("scope")).count();
    // test_a, test_a/matmul, test_b, test_b/add, <long>, worker,
    // worker/test_a, mm: 1000 entries of test_b/add are one record.
    assert_eq!(scope_records, 8, "{csv}");
}

#[test]
fn report_filters_select_by_device_kind_process_scope_mark_and_top() {
    let file = record("leaky");
    let scopes_of = |r: &Value| remaining(r).into_iter().map(|(s, _, _)| s).collect::<Vec<_>>();
    let l1 = report(&file, &["--kind", "L1"]);
    assert_eq!(remaining(&l1), vec![("test_a/matmul".to_owned(), "L1".to_owned(), 300)]);
    assert!(l1["devices"][0]["kinds"].get("DRAM").is_none(), "{}", l1["devices"]);
    // A scope takes itself and the scopes inside it, not "worker/test_a".
    assert_eq!(scopes_of(&report(&file, &["--scope", "test_a"])), ["test_a", "test_a/matmul"]);
    assert_eq!(scopes_of(&report(&file, &["--scope", ""])), [""]);
    // The mark comes after the long-named buffer, before the worker's.
    let label = format!("phase-{}", "m".repeat(294));
    assert_eq!(scopes_of(&report(&file, &["--since-mark", &label])), ["worker/test_a"]);
    assert_eq!(scopes_of(&report(&file, &["--top", "2"])), ["worker/test_a", "test_a"]);
    assert_eq!(report(&file, &["--top", "2"])["scopes"].as_array().unwrap().len(), 2);
    assert_eq!(remaining(&report(&file, &["--device", "1"])), vec![]);
    assert_eq!(remaining(&report(&file, &["--process", "0.1"])).len(), 5);
    assert_eq!(remaining(&report(&file, &["--process", "9.9"])).len(), 0);
    // A mark the recording lacks is an error naming the file.
    let out = memtrack(&["report", file.str(), "--since-mark", "no such mark"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(file.str()) && stderr.contains("no such mark"), "{stderr}");
    // It lists the marks the recording has (labels cut to 40 characters).
    assert!(stderr.contains(&format!("(marks: \"phase-{}…\")", "m".repeat(34))), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn text_report_names_scopes_and_both_sizes_of_a_mismatch() {
    let file = record("leaky");
    let out = memtrack(&["report", file.str()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("scope worker/test_a"), "{text}");
    assert!(text.contains("allocated 64 B freed 32 B"), "{text}");
    assert!(text.contains("device 0 L1 peak 5.2 KiB"), "{text}");
    assert!(text.contains("test_a/matmul 5.2 KiB"), "{text}");
}

fn check(file: &TempFile, options: &[&str]) -> (Option<i32>, Vec<String>) {
    let mut args = vec!["check", file.str()];
    args.extend_from_slice(options);
    let out = memtrack(&args);
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    (out.status.code(), lines)
}

#[test]
fn check_passes_a_clean_run_and_fails_a_leaky_one_with_a_line_per_violation() {
    let clean = record("clean");
    assert_eq!(check(&clean, &[]), (Some(0), vec![]));
    let leaky = record("leaky");
    let (code, lines) = check(&leaky, &[]);
    assert_eq!(code, Some(1));
    // Five leaks, largest first, and the size mismatch.
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(
        lines[0].starts_with("remaining: 2.0 KiB DRAM") && lines[0].contains("\"worker/test_a\""),
        "{lines:?}"
    );
    assert!(
        lines[5].starts_with("anomaly: size_mismatch") && lines[5].contains("allocated 64 bytes, freed 32")
    );

    // Relaxed to what this run does: clean.
    let relaxed = ["--max-remaining", "5", "--max-remaining-bytes", "3407", "--allow-anomalies"];
    assert_eq!(check(&leaky, &relaxed), (Some(0), vec![]));
    // One buffer or byte fewer allowed: one line each.
    let (code, lines) =
        check(&leaky, &["--max-remaining", "4", "--max-remaining-bytes", "3406", "--allow-anomalies"]);
    assert_eq!(code, Some(1));
    assert_eq!(lines.len(), 2, "{lines:?}");
    // Ignoring DRAM leaves the L1 leak and the L1 anomaly; ignoring both kinds, nothing.
    assert_eq!(check(&leaky, &["--ignore-kind", "DRAM"]).1.len(), 2);
    assert_eq!(check(&leaky, &["--ignore-kind", "DRAM", "--ignore-kind", "l1"]), (Some(0), vec![]));
    // Peak limits, for any device or one.
    let (code, lines) = check(&clean, &["--max-peak", "*:L1=5000", "--max-peak", "0:DRAM=1MiB"]);
    assert_eq!(code, Some(1));
    assert_eq!(lines, ["peak: device 0 L1 reached 5.2 KiB (5300 bytes), more than 5000"]);
    assert_eq!(check(&clean, &["--max-peak", "*:L1=5300", "--max-peak", "1:L1=1"]).0, Some(0));
    // JSON.
    let out = memtrack(&["check", leaky.str(), "--json", "--allow-anomalies"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "memtrack.check/1");
    assert_eq!(doc["passed"], false);
    assert_eq!(doc["violations"].as_array().unwrap().len(), 5);
    assert_eq!(doc["violations"][0]["rule"], "remaining");
}

#[test]
fn check_usage_errors_exit_2() {
    let clean = record("clean");
    for bad in [
        &["--max-peak", "0:DRAM"][..],
        &["--max-peak", "0:NOPE=1"],
        &["--max-remaining-bytes", "lots"],
        &["--bogus"],
    ] {
        assert_eq!(check(&clean, bad).0, Some(2), "{bad:?}");
    }
    assert_eq!(memtrack(&["check", "/nonexistent/run.mtr"]).status.code(), Some(2));
    // A file that is not a recording.
    let junk = TempFile::new("junk");
    std::fs::write(junk.path(), b"not a recording").unwrap();
    let out = memtrack(&["check", junk.str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(junk.str()));
}

#[test]
fn record_check_gives_the_commands_failure_else_the_verdict() {
    let file = TempFile::new("record-check");
    let out = record_with("leaky", &file, &["--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("remaining:")).count(),
        5
    );
    let out = record_with("leaky", &file, &["--check", "--max-remaining", "5", "--allow-anomalies"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = record_with("clean", &file, &["--check"]);
    assert_eq!(out.status.code(), Some(0));
    // The command's failure wins over a clean check: the program fails its
    // own usage check (status 2) before allocating anything.
    let out = record_with("neither", &file, &["--check"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    // Check options without --check are a usage error.
    let out = record_with("clean", &file, &["--allow-loss"]);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn diff_puts_two_runs_side_by_side() {
    let (clean, leaky) = (record("clean"), record("leaky"));
    let out = memtrack(&["diff", clean.str(), leaky.str(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["schema"], "memtrack.diff/1");
    let dram = doc["devices"].as_array().unwrap().iter().find(|d| d["kind"] == "DRAM").unwrap();
    assert_eq!(dram["peak_bytes"], serde_json::json!({"a": 3107, "b": 3107, "delta": 0}));
    assert_eq!(dram["remaining_bytes"], serde_json::json!({"a": 0, "b": 3107, "delta": 3107}));
    assert_eq!(dram["remaining_buffers"]["delta"], 4);
    let scopes = doc["scopes"].as_array().unwrap();
    assert_eq!(scopes[0]["scope"], "worker/test_a");
    assert_eq!(scopes[0]["remaining_bytes"]["delta"], 2000);
    assert_eq!(scopes[0]["allocated_bytes"]["delta"], 0);
    // Reversed, the deltas change sign.
    let out = memtrack(&["diff", leaky.str(), clean.str(), "--json"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["scopes"][0]["remaining_bytes"]["delta"], -2000);
    let text = memtrack(&["diff", clean.str(), leaky.str()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("+2.0 KiB  worker/test_a"));
}

#[test]
fn a_forked_child_attributes_to_the_scopes_it_inherited_under_its_own_ids() {
    let file = record("fork");
    let report = report(&file, &[]);
    let rows: Vec<(String, String, u64)> = report["remaining"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["process"].as_str().unwrap().to_owned(),
                b["scope"].as_str().unwrap().to_owned(),
                b["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].1.as_str(), rows[0].2), ("outer/inner", 20), "the child's buffer: {rows:?}");
    assert_eq!((rows[1].1.as_str(), rows[1].2), ("outer/inner", 10), "the parent's buffer: {rows:?}");
    assert_ne!(rows[0].0, rows[1].0, "two processes: {rows:?}");
    // One row for the path, whichever process used it.
    let scopes = report["scopes"].as_array().unwrap();
    assert_eq!(scopes.len(), 1, "{scopes:?}");
    assert_eq!(scopes[0]["allocs"], 2);
}

#[test]
fn lost_records_fail_the_check_unless_allowed() {
    // A ring of 64 slots, no sub-rings and no reader: of 100 allocations,
    // those past the ring's end are dropped (and counted) at once.
    let path = memtrack::ring_path(&format!("cli-check-loss-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let options = memtrack::RingOptions { capacity: 64, subrings: 0, ..memtrack::RingOptions::default() };
    let writer = memtrack::Writer::attach(memtrack::Ring::create(&path, options).unwrap()).unwrap();
    let _ring = TempFile(path.clone());
    for buffer_id in 0..100 {
        writer.alloc(&common::l1_buffer(buffer_id));
    }
    let file = TempFile::new("check-loss");
    let ring = path.to_str().unwrap();
    let out = memtrack(&["record", "--ring", ring, "-o", file.str(), "--duration", "0.3", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(report(&file, &[])["lost"].as_u64().unwrap() > 0);
    // The buffers remaining are not the question here.
    let (code, lines) = check(&file, &["--max-remaining", "1000", "--allow-anomalies"]);
    assert_eq!(code, Some(1));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("lost: "), "{lines:?}");
    let relaxed = ["--max-remaining", "1000", "--allow-anomalies", "--allow-loss"];
    assert_eq!(check(&file, &relaxed), (Some(0), vec![]));
    drop(writer);
}

/// (event, buffer id) of the buffer rows of `memtrack export --format csv`.
fn exported(file: &TempFile, filters: &[&str]) -> Vec<(String, u64)> {
    exported_sizes(file, filters).into_iter().map(|(event, id, _)| (event, id)).collect()
}

#[test]
fn export_takes_the_same_filters() {
    let file = record("leaky");
    let rows = |list: &[(&str, u64)]| list.iter().map(|(e, id)| (e.to_string(), *id)).collect::<Vec<_>>();
    assert_eq!(exported(&file, &[]).len(), 2 * 1000 + 7 + 2);
    // A scope: its allocations and the frees of its buffers, wherever freed.
    assert_eq!(
        exported(&file, &["--scope", "test_a"]),
        rows(&[("alloc", 2), ("alloc", 3), ("alloc", 4), ("free", 3)])
    );
    let label = format!("phase-{}", "m".repeat(294));
    assert_eq!(exported(&file, &["--since-mark", &label]), rows(&[("alloc", 6), ("alloc", 7), ("free", 7)]));
    assert_eq!(exported(&file, &["--top", "1", "--kind", "DRAM"]), rows(&[("alloc", 6)]));
    assert_eq!(exported(&file, &["--kind", "L1"]).len(), 5);
    assert_eq!(exported(&file, &["--device", "3"]), vec![]);
    assert_eq!(exported(&file, &["--process", "7.7"]), vec![]);
    assert_eq!(exported(&file, &["--process", "0.1", "--kind", "L1"]).len(), 5);
    // The timeline formats filter too.
    let out = memtrack(&["export", file.str(), "--format", "perfetto", "--scope", "test_a"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _: Value = serde_json::from_slice(&out.stdout).expect("a JSON trace");
    let out = memtrack(&["export", file.str(), "--format", "csv", "--since-mark", "nope"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn tt_metal_ops_open_scopes_with_names_cut_to_255_bytes() {
    let file = record("ops");
    let report = report(&file, &[]);
    let expected = format!("ttnn::add/{}", "o".repeat(255));
    assert_eq!(remaining(&report), vec![(expected, "DRAM".to_owned(), 30)]);
}

/// (event, buffer id, size) of the ALLOC and FREE rows `export --format
/// csv FILTERS` writes.
fn exported_sizes(file: &TempFile, filters: &[&str]) -> Vec<(String, u64, u64)> {
    let mut args = vec!["export", file.str(), "--format", "csv"];
    args.extend_from_slice(filters);
    let out = memtrack(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[2] == "alloc" || f[2] == "free")
        .map(|f| (f[2].to_owned(), f[7].parse().unwrap(), f[10].parse().unwrap()))
        .collect()
}

#[test]
fn export_top_n_is_n_lifetimes_when_buffer_ids_are_reused() {
    // Ids 1 and 3 were freed and allocated again before their last,
    // remaining, lifetime: `--top` exports that one, not the earlier ones.
    let file = record("reuse");
    let alloc = |id: u64, size: u64| ("alloc".to_owned(), id, size);
    assert_eq!(exported_sizes(&file, &[]).len(), 3 * 2 + 1 + 1 + 2 * 2 + 1);
    assert_eq!(exported_sizes(&file, &["--top", "1"]), vec![alloc(1, 4000)]);
    assert_eq!(exported_sizes(&file, &["--top", "2"]), vec![alloc(1, 4000), alloc(2, 500)]);
    assert_eq!(exported_sizes(&file, &["--top", "3"]), vec![alloc(1, 4000), alloc(2, 500), alloc(3, 200)]);
    // The report's --top agrees.
    let sizes = |r: &Value| remaining(r).into_iter().map(|(_, _, size)| size).collect::<Vec<_>>();
    assert_eq!(sizes(&report(&file, &["--top", "2"])), [4000, 500]);
}

/// `memtrack ARGS`: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = memtrack(args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_filter_that_matches_nothing_says_so_in_one_line_and_succeeds() {
    let file = record("leaky");
    let f = file.str();
    // (filter, what its line must name besides the flag, the value and the file)
    let cases: [(&[&str], &str); 5] = [
        (&["--process", "9.9"], "processes: 0.1"),
        (&["--scope", "no_such_scope"], "test_a/matmul"),
        (&["--device", "7"], "devices: 0"),
        (&["--kind", "TRACE"], "DRAM"),
        (&["--device", "0", "--kind", "CB"], "L1"),
    ];
    for (filter, listed) in cases {
        for command in [&["report", f][..], &["report", f, "--json"], &["export", f, "--format", "csv"]] {
            let args = [command, filter].concat();
            let (code, _, stderr) = run(&args);
            assert_eq!(code, Some(0), "{args:?}: {stderr}");
            let lines: Vec<&str> = stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
            let line = lines[0];
            let value = filter[filter.len() - 1];
            assert!(line.starts_with("memtrack: "), "{args:?}: {line}");
            assert!(line.contains(filter[filter.len() - 2]) && line.contains(value), "{args:?}: {line}");
            assert!(line.contains(f) && line.contains("matches no"), "{args:?}: {line}");
            assert!(line.contains(listed), "{args:?}: {line}");
        }
    }
    // A filter that matches something says nothing.
    for filter in [&["--process", "0.1"][..], &["--scope", "test_a"], &["--device", "0"], &["--kind", "L1"]] {
        let (code, _, stderr) = run(&[&["report", f, "--json"][..], filter].concat());
        assert_eq!((code, stderr.as_str()), (Some(0), ""), "{filter:?}");
    }
    // The CI gate: a peak limit on a device and kind the recording has
    // no record of limits nothing; it says so, and the verdict is the
    // recording's.
    let clean = record("clean");
    let (code, stdout, stderr) = run(&["check", clean.str(), "--max-peak", "5:DRAM=1KiB"]);
    assert_eq!((code, stdout.as_str()), (Some(0), ""), "{stderr}");
    assert!(
        stderr.contains("--max-peak 5:DRAM ")
            && stderr.contains("matches no")
            && stderr.contains(clean.str())
            && stderr.lines().count() == 1,
        "{stderr}"
    );
    let (code, _, stderr) = run(&["check", clean.str(), "--max-peak", "*:DRAM=1MiB"]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
}

#[test]
fn report_html_refuses_the_filters_it_would_ignore() {
    // The page shows the whole recording; a filter given with it was
    // silently dropped before.
    let file = record("leaky");
    let page = TempFile::new("filtered-page");
    for filter in [&["--kind", "L1"][..], &["--process", "0.1"], &["--scope", "test_a"], &["--top", "1"]] {
        let args = [&["report", file.str(), "--html", page.str()][..], filter].concat();
        let (code, _, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--html") && stderr.contains(filter[0]), "{stderr}");
        assert!(!page.path().exists(), "{args:?} wrote the page");
    }
    let (code, _, stderr) = run(&["report", file.str(), "--html", page.str()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(page.path().exists());
}

#[test]
fn export_writes_no_binary_format_to_a_terminal() {
    // `script` gives the command a terminal for its standard output.
    let file = record("leaky");
    let on_terminal = |format: &str| {
        let command = format!("{} export {} --format {format}", env!("CARGO_BIN_EXE_memtrack"), file.str());
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run script");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    for format in ["parquet", "perfetto-proto"] {
        let (code, text) = on_terminal(format);
        assert_eq!(code, Some(1), "{format}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{format}: {text}");
        assert!(text.contains(format) && text.contains("terminal") && text.contains(file.str()), "{text}");
        assert!(!text.contains("PAR1"), "{text}");
    }
    // Text formats still go to the terminal, and binary ones to a pipe.
    let (code, text) = on_terminal("csv");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("ticket,"), "{text}");
    let (code, stdout, _) = run(&["export", file.str(), "--format", "parquet"]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("PAR1"));
}
