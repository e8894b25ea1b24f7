//! A filtered export names each process as the unfiltered recording does.
//!
//! `export --process`, `--device`, `--since-mark` drop the ALLOC and FREE
//! records they do not select before the export's own state engine sees
//! them. A record names its process by table entry and pid only; when the
//! one sign that an entry changed owner is such a record (an owner whose
//! PROCESS_START a full ring dropped), an engine that never sees it counts
//! one owner fewer, and every later owner of the entry gets another key
//! (generation) than `report` gives it. The recording is written by hand
//! (format version 1, as `hostile.rs` writes them): a real ring drops a
//! start record only when full, which no test can time.

mod common;

use std::collections::BTreeMap;

use common::{TempFile, memtrack, report_json};
use memtrack::Event;

/// A version-1 record file header: 1 GHz ticks.
fn header() -> Vec<u8> {
    let mut h = vec![0u8; 256];
    h[0..8].copy_from_slice(b"MTRECORD");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&256u32.to_le_bytes());
    h[16..20].copy_from_slice(&64u32.to_le_bytes());
    h[24..32].copy_from_slice(&1_000_000_000u64.to_le_bytes());
    h[64..72].copy_from_slice(&1024u64.to_le_bytes());
    h[128..136].copy_from_slice(b"/dev/shm");
    h
}

/// One record block of table entry 0 (`memtrack::Record`'s layout).
fn record(ticket: u64, event: Event, pid: u32, device_id: u32, buffer_id: u64, label: &str) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[0..8].copy_from_slice(&ticket.to_le_bytes());
    b[8..16].copy_from_slice(&(1000 + ticket * 1000).to_le_bytes());
    if label.is_empty() {
        b[16..24].copy_from_slice(&buffer_id.to_le_bytes());
        b[40..48].copy_from_slice(&4096u64.to_le_bytes());
        b[48..52].copy_from_slice(&device_id.to_le_bytes());
    } else {
        b[16..16 + label.len()].copy_from_slice(label.as_bytes());
    }
    b[52..56].copy_from_slice(&pid.to_le_bytes());
    b[58] = event as u8;
    b
}

/// Entry 0 has three owners: "a" (pid 100), one whose start record is
/// missing (pid 200, known only by its ALLOC on device 1), then "c" (pid
/// 300), who leaves a buffer on device 0.
fn three_owners_of_one_entry() -> TempFile {
    recording(
        "filter-identity",
        &[
            record(0, Event::ProcessStart, 100, 0, 0, "a"),
            record(1, Event::Alloc, 100, 0, 1, ""),
            record(2, Event::Alloc, 200, 1, 2, ""),
            record(3, Event::ProcessStart, 300, 0, 0, "c"),
            record(4, Event::Alloc, 300, 0, 3, ""),
        ],
    )
}

/// A finished recording of `records`: the header, the records, the end block.
fn recording(tag: &str, records: &[[u8; 64]]) -> TempFile {
    let mut bytes = header();
    for block in records {
        bytes.extend_from_slice(block);
    }
    let mut end = [0u8; 64];
    end[58] = 0x8f;
    bytes.extend_from_slice(&end);
    let file = TempFile::new(tag);
    std::fs::write(file.path(), bytes).unwrap();
    file
}

/// `export FILE --format csv ARGS`: per ALLOC row, buffer id -> process.
fn csv_allocs(file: &TempFile, args: &[&str]) -> BTreeMap<String, String> {
    let mut all = vec!["export", file.str(), "--format", "csv"];
    all.extend_from_slice(args);
    let out = memtrack(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (event, buffer, process) = (column("event"), column("buffer_id"), column("process"));
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[event] == "alloc")
        .map(|f| (f[buffer].to_owned(), f[process].to_owned()))
        .collect()
}

/// The Perfetto JSON export's process names (`process_name` metadata).
fn perfetto_process_names(file: &TempFile, args: &[&str]) -> Vec<String> {
    let out = TempFile::new("filter-identity-trace");
    let mut all = vec!["export", file.str(), "--format", "perfetto", "-o", out.str()];
    all.extend_from_slice(args);
    let run = memtrack(&all);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| e["args"]["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn filtered_exports_name_processes_as_the_report_does() {
    let file = three_owners_of_one_entry();
    let report = report_json(&file);
    let key_of_pid = |pid: u64| -> String {
        let p = report["processes"].as_array().unwrap().iter().find(|p| p["pid"] == pid).unwrap();
        p["process"].as_str().unwrap().to_owned()
    };
    let (a, b, c) = (key_of_pid(100), key_of_pid(200), key_of_pid(300));
    assert_eq!([a.as_str(), b.as_str(), c.as_str()], ["0.1", "0.2", "0.3"], "three owners of entry 0");

    let all = csv_allocs(&file, &[]);
    let want: BTreeMap<String, String> =
        [("1", &a), ("2", &b), ("3", &c)].iter().map(|(id, k)| (id.to_string(), k.to_string())).collect();
    assert_eq!(all, want, "unfiltered");
    // Filters that leave out pid 200's ALLOC, the one sign of its owner.
    for filter in [&["--process", c.as_str()][..], &["--device", "0"], &["--process", "300"]] {
        let got = csv_allocs(&file, filter);
        assert_eq!(got.get("3"), Some(&c), "export --format csv {filter:?}: {got:?}");
        let names = perfetto_process_names(&file, filter);
        let of_c: Vec<&String> = names.iter().filter(|n| n.contains("pid 300")).collect();
        assert_eq!(
            of_c,
            [&format!("c pid 300 (process {c})")],
            "export --format perfetto {filter:?}: {names:?}"
        );
    }
}

/// Entry 0's owner "a" (pid 100) marks a phase and allocates on device 0;
/// then pid 200, with no start record, allocates on device 1: "a" died
/// then, though nothing of it says so.
fn an_owner_replaced_by_a_left_out_record() -> TempFile {
    recording(
        "filter-identity-death",
        &[
            record(0, Event::ProcessStart, 100, 0, 0, "a"),
            record(1, Event::Mark, 100, 0, 0, "p"),
            record(2, Event::Alloc, 100, 0, 1, ""),
            record(3, Event::Alloc, 200, 1, 2, ""),
            record(9, Event::Alloc, 200, 1, 3, ""),
        ],
    )
}

/// The Perfetto JSON export's phases and freed buffers' slices, and
/// device 0's usage samples: (name, start, duration or bytes, freed_by).
fn perfetto_slices_and_device_0(file: &TempFile, args: &[&str]) -> Vec<(String, f64, f64, String)> {
    let out = TempFile::new("filter-identity-death-trace");
    let mut all = vec!["export", file.str(), "--format", "perfetto", "-o", out.str()];
    all.extend_from_slice(args);
    let run = memtrack(&all);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path()).unwrap()).unwrap();
    let events = doc["traceEvents"].as_array().unwrap();
    let device_0 = events
        .iter()
        .find(|e| e["name"] == "process_name" && e["args"]["name"] == "device 0")
        .map(|e| e["pid"].clone())
        .unwrap();
    events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] != "buffer,leak" || e["ph"] == "C" && e["pid"] == device_0)
        .map(|e| {
            let (value, freed_by) = match e["ph"].as_str() {
                Some("X") => (e["dur"].as_f64().unwrap(), e["args"]["freed_by"].to_string()),
                _ => (e["args"]["bytes"].as_f64().unwrap(), String::new()),
            };
            (e["name"].as_str().unwrap().to_owned(), e["ts"].as_f64().unwrap(), value, freed_by)
        })
        .collect()
}

#[test]
fn a_death_found_through_a_left_out_record_ends_the_kept_buffers_and_phases_as_unfiltered() {
    let file = an_owner_replaced_by_a_left_out_record();
    let all = perfetto_slices_and_device_0(&file, &[]);
    assert!(
        all.iter().any(|(name, _, _, by)| name.contains("buffer 1") && by.contains("process died")),
        "{all:?}"
    );
    // Device 0 only: pid 200's records are left out, and with them the
    // one sign that "a" died.
    let filtered = perfetto_slices_and_device_0(&file, &["--device", "0"]);
    assert_eq!(filtered, all);
}
