//! `memtrack export --format parquet`, read back with the parquet crate's
//! own reader: recordings of a real writer (`ffi_tests/scopes.cpp`, C++
//! through the C ABI, under `memtrack record`), every column of every row
//! checked against `export --format csv` of the same file and against
//! `report --json` (processes, scopes, remaining buffers, marks); the
//! export's filters select the rows the CSV export selects; bad outputs.
#![cfg(feature = "parquet")]

#[path = "../../tests/common/cc.rs"]
mod cc;
mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::process::Command;

use common::{TempFile, memtrack, memtrack_env, report_json};
use memtrack::ffi::{MEMTRACK_KIND_DRAM, MEMTRACK_KIND_L1, memtrack_alloc, memtrack_free, memtrack_init};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use serde_json::Value;

const ROLE: &str = "MEMTRACK_TEST_ROLE";

/// Alloc/free pairs of the "many" helper: just more rows than one row
/// group (262 144).
const PAIRS: u64 = 132_000;

/// The helper process's entry point (a writer through the C ABI); a no-op
/// in a normal test run.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    assert_eq!(role, "many");
    // SAFETY: NULL: use $MEMTRACK_RING.
    assert_eq!(unsafe { memtrack_init(std::ptr::null()) }, 0);
    for id in 0..PAIRS {
        let (kind, size) =
            if id % 3 == 0 { (MEMTRACK_KIND_L1, 64 + id % 7) } else { (MEMTRACK_KIND_DRAM, 4096 * (id % 5)) };
        memtrack_alloc((id % 4) as u32, kind, id, 0x1000 + 64 * (id % 1000), size);
        memtrack_free((id % 4) as u32, kind, id, 0x1000 + 64 * (id % 1000), size);
    }
    std::process::exit(0);
}

/// `memtrack record -o FILE -- scopes MODE`.
fn record(mode: &str) -> TempFile {
    let exe = cc::scopes_program();
    let file = TempFile::new(&format!("parquet-{mode}"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memtrack"));
    cmd.args(["record", "-q", "-o", file.str(), "--"]).arg(&exe.path).arg(mode);
    cmd.env_remove("MEMTRACK_RING");
    for (k, v) in exe.command().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("run memtrack record");
    assert!(out.status.success(), "record failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    file
}

/// A parquet file read back: its rows (column name → value) and its
/// key-value metadata.
struct Table {
    columns: Vec<String>,
    rows: Vec<BTreeMap<String, Field>>,
    metadata: HashMap<String, String>,
}

impl Table {
    fn read(path: &std::path::Path) -> Table {
        let reader = SerializedFileReader::new(File::open(path).unwrap()).expect("a parquet file");
        let meta = reader.metadata().file_metadata();
        let columns = meta.schema_descr().columns().iter().map(|c| c.name().to_owned()).collect();
        let metadata = meta
            .key_value_metadata()
            .map(|kv| kv.iter().map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default())).collect())
            .unwrap_or_default();
        let rows = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| row.unwrap().get_column_iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .collect();
        Table { columns, rows, metadata }
    }

    fn json(&self, key: &str) -> Value {
        serde_json::from_str(&self.metadata[key]).unwrap_or_else(|e| panic!("{key}: {e}"))
    }
}

/// `memtrack export FILE --format parquet -o OUT FILTERS`, read back.
fn export(file: &TempFile, filters: &[&str]) -> Table {
    let out_file = TempFile::new("parquet-out");
    let mut args = vec!["export", file.str(), "--format", "parquet", "-o", out_file.str()];
    args.extend_from_slice(filters);
    let out = memtrack(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Table::read(out_file.path())
}

/// `memtrack export FILE --format csv FILTERS`: rows of column → text.
fn csv(file: &TempFile, filters: &[&str]) -> Vec<HashMap<String, String>> {
    let mut args = vec!["export", file.str(), "--format", "csv"];
    args.extend_from_slice(filters);
    let out = memtrack(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            // The label is last and the only field that may be quoted.
            let fields = line.splitn(header.len(), ',').map(|f| {
                f.strip_prefix('"')
                    .and_then(|f| f.strip_suffix('"'))
                    .map_or(f.to_owned(), |f| f.replace("\"\"", "\""))
            });
            header.iter().map(|h| h.to_string()).zip(fields).collect()
        })
        .collect()
}

fn text(field: &Field) -> Option<&str> {
    match field {
        Field::Str(s) => Some(s),
        Field::Null => None,
        other => panic!("not a string column: {other:?}"),
    }
}

fn unsigned(field: &Field) -> u64 {
    match *field {
        Field::ULong(v) => v,
        Field::UInt(v) => u64::from(v),
        Field::UShort(v) => u64::from(v),
        Field::UByte(v) => u64::from(v),
        ref other => panic!("not an unsigned column: {other:?}"),
    }
}

const COLUMNS: [&str; 15] = [
    "ticket",
    "time_ns",
    "event",
    "process",
    "pid",
    "process_slot",
    "device_id",
    "kind",
    "buffer_id",
    "parent_id",
    "address",
    "size",
    "flags",
    "scope",
    "label",
];

/// Every column of every row of `table` against the CSV export's row, and
/// the process column against the report's processes.
fn check_rows_against_csv(table: &Table, csv: &[HashMap<String, String>], report: &Value) {
    assert_eq!(table.columns, COLUMNS);
    assert_eq!(table.rows.len(), csv.len(), "one row per record");
    let pids: HashMap<&str, u64> = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["process"].as_str().unwrap(), p["pid"].as_u64().unwrap()))
        .collect();
    for (row, line) in table.rows.iter().zip(csv) {
        let number = |name: &str| unsigned(&row[name]).to_string();
        for name in ["ticket", "time_ns", "pid", "process_slot", "flags"] {
            assert_eq!(number(name), line[name], "{name} of {line:?}");
        }
        let event = text(&row["event"]).unwrap();
        assert_eq!(event, line["event"]);
        let label = text(&row["label"]);
        assert_eq!(label.unwrap_or(""), line["label"], "{line:?}");
        assert_eq!(label.is_some(), matches!(event, "mark" | "process_start" | "scope" | "text"), "{line:?}");
        let buffer_columns = ["device_id", "buffer_id", "parent_id", "address", "size"];
        if matches!(event, "alloc" | "free" | "capacity") {
            for name in buffer_columns {
                assert_eq!(number(name), line[name], "{name} of {line:?}");
            }
            assert_eq!(text(&row["kind"]), Some(line["kind"].as_str()));
        } else {
            for name in buffer_columns {
                assert_eq!(unsigned(&row[name]), 0, "{name} of {line:?}: no buffer");
            }
            assert_eq!(text(&row["kind"]), None, "{line:?}");
        }
        // The process the engine resolved, whose pid is the record's.
        match text(&row["process"]) {
            None => assert_eq!(event, "capacity", "{line:?}"),
            Some(key) => {
                assert_eq!(pids.get(key).map(u64::to_string).as_ref(), Some(&line["pid"]), "{line:?}")
            }
        }
        if event != "alloc" {
            assert_eq!(text(&row["scope"]), None, "{line:?}");
        }
    }
}

#[test]
fn every_column_of_every_row_agrees_with_the_csv_export_and_the_report() {
    let file = record("leaky");
    let table = export(&file, &[]);
    let report = report_json(file.path());
    assert_eq!(table.rows.len() as u64, report["records"].as_u64().unwrap());
    check_rows_against_csv(&table, &csv(&file, &[]), &report);

    // The scope column: per scope path, the report's allocations and bytes
    // (no ALIAS buffers here: every ALLOC's size counts).
    let mut by_scope: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for row in table.rows.iter().filter(|r| text(&r["event"]) == Some("alloc")) {
        let scope = text(&row["scope"]).unwrap_or("").to_owned();
        let entry = by_scope.entry(scope).or_default();
        entry.0 += 1;
        entry.1 += unsigned(&row["size"]);
    }
    let expected: BTreeMap<String, (u64, u64)> = report["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let scope = s["scope"].as_str().unwrap().to_owned();
            (scope, (s["allocs"].as_u64().unwrap(), s["allocated_bytes"].as_u64().unwrap()))
        })
        .collect();
    assert_eq!(by_scope, expected);
    assert!(by_scope.contains_key(&"x".repeat(300)), "a long scope name arrives whole");
    // Each remaining buffer's last ALLOC row names its scope.
    for buffer in report["remaining"].as_array().unwrap() {
        let row = table
            .rows
            .iter()
            .rev()
            .find(|r| {
                text(&r["event"]) == Some("alloc")
                    && text(&r["process"]) == buffer["process"].as_str()
                    && text(&r["kind"]) == buffer["kind"].as_str()
                    && unsigned(&r["buffer_id"]) == buffer["buffer_id"].as_u64().unwrap()
            })
            .unwrap_or_else(|| panic!("no alloc row for {buffer}"));
        assert_eq!(text(&row["scope"]).unwrap_or(""), buffer["scope"].as_str().unwrap(), "{buffer}");
    }

    // The metadata: the report's processes and marks (the 300-byte label
    // whole) and what the recording is.
    assert_eq!(table.metadata["memtrack.schema"], "memtrack.parquet/1");
    assert_eq!(table.json("memtrack.processes"), report["processes"]);
    assert_eq!(table.json("memtrack.marks"), report["marks"]);
    assert_eq!(table.json("memtrack.marks")[0]["label"], format!("phase-{}", "m".repeat(294)));
    let recording = table.json("memtrack.recording");
    for key in ["file", "ring", "started_unix_ns", "finished", "duration_ns", "records", "lost"] {
        assert_eq!(recording[key], report[key], "{key}");
    }
}

#[test]
fn each_process_of_a_fork_has_its_own_rows() {
    let file = record("fork");
    let table = export(&file, &[]);
    let report = report_json(file.path());
    check_rows_against_csv(&table, &csv(&file, &[]), &report);
    let allocs: Vec<(u64, &str, &str)> = table
        .rows
        .iter()
        .filter(|r| text(&r["event"]) == Some("alloc"))
        .map(|r| (unsigned(&r["buffer_id"]), text(&r["process"]).unwrap(), text(&r["scope"]).unwrap()))
        .collect();
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 2, "{processes:?}");
    let (parent, child) =
        (processes[0]["process"].as_str().unwrap(), processes[1]["process"].as_str().unwrap());
    assert_ne!(parent, child);
    assert_eq!(allocs, [(10, parent, "outer/inner"), (20, child, "outer/inner")]);
}

#[test]
fn filters_select_the_rows_the_csv_export_selects() {
    let file = record("leaky");
    let report = report_json(file.path());
    let label = format!("phase-{}", "m".repeat(294));
    let filters: [&[&str]; 6] = [
        &["--kind", "L1"],
        &["--scope", "test_a"],
        &["--since-mark", &label],
        &["--top", "2"],
        &["--process", "0.1"],
        &["--device", "1"],
    ];
    let all = export(&file, &[]).rows.len();
    for filter in filters {
        let table = export(&file, filter);
        let rows = csv(&file, filter);
        check_rows_against_csv(&table, &rows, &report);
        assert!(
            table.rows.len() < all || filter[0] == "--process",
            "{filter:?} selects: {}",
            table.rows.len()
        );
    }
    // --scope test_a: the ALLOCs of test_a and test_a/matmul and the FREE
    // of the one freed, nothing of worker/test_a.
    let table = export(&file, &["--scope", "test_a"]);
    let buffers: Vec<(&str, u64)> = table
        .rows
        .iter()
        .filter(|r| matches!(text(&r["event"]), Some("alloc" | "free")))
        .map(|r| (text(&r["event"]).unwrap(), unsigned(&r["buffer_id"])))
        .collect();
    assert_eq!(buffers, [("alloc", 2), ("alloc", 3), ("alloc", 4), ("free", 3)]);
}

#[test]
fn a_recording_larger_than_a_row_group_reads_back_whole() {
    let file = TempFile::new("parquet-many");
    let exe = std::env::current_exe().unwrap();
    let args =
        ["record", "-q", "-o", file.str(), "--", exe.to_str().unwrap(), "--exact", "helper", "--nocapture"];
    let out = memtrack_env(&args, &[(ROLE, "many")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report = report_json(file.path());
    assert_eq!(report["lost"], 0, "the recorder kept up");
    let out_file = TempFile::new("parquet-many-out");
    let out = memtrack(&["export", file.str(), "--format", "parquet", "-o", out_file.str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reader = SerializedFileReader::new(File::open(out_file.path()).unwrap()).unwrap();
    let groups = reader.metadata().num_row_groups();
    assert!(groups >= 2, "{groups} row groups: the test must span more than one");
    let table = Table::read(out_file.path());
    assert_eq!(table.rows.len() as u64, 2 * PAIRS + 2, "process start and exit, every pair");
    check_rows_against_csv(&table, &csv(&file, &[]), &report);
}

#[test]
fn standard_output_gets_the_same_file_and_bad_outputs_are_refused() {
    let file = record("clean");
    let to_file = TempFile::new("parquet-file");
    let out = memtrack(&["export", file.str(), "--format", "parquet", "-o", to_file.str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = memtrack(&["export", file.str(), "--format", "parquet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, std::fs::read(to_file.path()).unwrap(), "stdout and -o write the same bytes");
    assert!(out.stdout.starts_with(b"PAR1") && out.stdout.ends_with(b"PAR1"));

    // A full disk: one line naming the output and the reason.
    let out = memtrack(&["export", file.str(), "--format", "parquet", "-o", "/dev/full"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("/dev/full") && stderr.contains("No space left on device"), "{stderr}");

    // A file that is not a recording: one line naming it, no output left.
    let bogus = TempFile::new("parquet-bogus");
    std::fs::write(bogus.path(), b"not a recording").unwrap();
    let out_file = TempFile::new("parquet-never");
    let out = memtrack(&["export", bogus.str(), "--format", "parquet", "-o", out_file.str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(bogus.str()), "{stderr}");
    assert!(!out_file.path().exists(), "nothing written");
}
