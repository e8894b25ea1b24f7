//! Attribution and the CI gate, as a user meets them: a C++ program
//! (`ffi_tests/scopes.cpp`, through the C ABI and the RAII guard of
//! memtrack.hpp) run under `memtrack record`, then `report --json` with
//! its filters, `check` and its exit codes, `record --check`, and `diff`.

#[path = "../../tests/common/cc.rs"]
mod cc;
mod common;

use std::process::{Command, Output};

use cc::{Build, Lang, Link, Program};
use common::{TempFile, memtrack};
use serde_json::Value;

fn scopes_program() -> Program {
    cc::build(&Build {
        name: "scopes",
        source: "scopes.cpp",
        lang: Lang::Cxx,
        link: Link::Shared,
        sanitize: true,
        defines: &[],
    })
}

/// `memtrack record [EXTRA] -o FILE -- scopes MODE`, with the program's
/// sanitizer settings.
fn record_with(mode: &str, file: &TempFile, extra: &[&str]) -> Output {
    let exe = scopes_program();
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
