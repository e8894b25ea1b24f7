//! The reader's memory and numbers at the limits: `report` and `export`
//! hold about 100 bytes per remaining buffer (measured on the child
//! process, from the kernel's account of its peak resident memory), their
//! streamed output is what the whole-document code printed, and sizes of
//! 2^43, 2^63 and 2^64 − 1 bytes print as what they are in text, JSON and
//! CSV.

use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::{TempFile, memtrack_env};
use memtrack::ffi::*;
use serde_json::Value;

const ROLE: &str = "MEMTRACK_TEST_ROLE";

/// The "peak-rss" helper's `memtrack` arguments, tab-separated.
const ARGS: &str = "MEMTRACK_TEST_ARGS";

/// Remaining buffers of the "leaks" workload.
const LEAKS: u64 = 200_000;

/// Peak resident memory allowed per remaining buffer. The reader needs
/// about 100 (an 80-byte entry, its index, a reference to sort); before
/// it was bounded, `report` took 215, `export` 540 and `report --json`
/// 5 000.
const BYTES_PER_BUFFER: u64 = 160;

/// The sizes that wrapped: 2^43, 2^63, 2^64 − 1 bytes.
const HUGE: [u64; 3] = [1 << 43, 1 << 63, u64::MAX];

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    match role.as_str() {
        // LEAKS buffers on 8 devices, never freed; one freed first, so the
        // file is not all of one kind of record.
        "leaks" => {
            memtrack_alloc(0, MEMTRACK_KIND_L1, u64::MAX, 0, 64);
            memtrack_free(0, MEMTRACK_KIND_L1, u64::MAX, 0, 64);
            for id in 0..LEAKS {
                memtrack_alloc((id % 8) as u32, (id % 2) as u8, id, 0x1000 * id, 4096 + id % 7);
            }
        }
        // One buffer of each huge size on device 3, each of its own kind
        // (sums of them would not fit in 64 bits), and one freed.
        "huge" => {
            for (id, (kind, size)) in
                [MEMTRACK_KIND_DRAM, MEMTRACK_KIND_L1, MEMTRACK_KIND_TRACE].iter().zip(HUGE).enumerate()
            {
                memtrack_alloc(3, *kind, id as u64, 0x1000, size);
            }
            memtrack_alloc(4, MEMTRACK_KIND_DRAM, 9, 0, u64::MAX);
            memtrack_free(4, MEMTRACK_KIND_DRAM, 9, 0, u64::MAX);
        }
        "peak-rss" => print_peak_rss(),
        other => panic!("unknown helper role {other}"),
    }
    std::process::exit(0);
}

/// `memtrack record -o FILE -- helper ROLE`, which must succeed.
fn record(role: &str, file: &Path) {
    let exe = std::env::current_exe().unwrap();
    let mut args = vec!["record", "-o", file.to_str().unwrap(), "--", exe.to_str().unwrap()];
    args.extend(["--exact", "helper", "--nocapture", "--test-threads=1"]);
    let out = memtrack_env(&args, &[(ROLE, role)]);
    assert!(out.status.success(), "record failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `memtrack ARGS` with its output thrown away; returns its peak
/// resident memory in bytes. Measured by a helper process: Linux counts in
/// a child's peak the memory of the process that forked it (its copy of
/// the parent's address space, until it executes), so the test's own
/// memory must not be the parent.
fn peak_rss(args: &[&str]) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "helper", "--nocapture", "--test-threads=1"])
        .env(ROLE, "peak-rss")
        .env(ARGS, args.join("\t"))
        .stdin(Stdio::null())
        .output()
        .expect("run the helper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "helper: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    // libtest writes "test helper ... " before it, on the same line.
    let peak = stdout.split("peak_rss_bytes ").nth(1).and_then(|rest| rest.split_whitespace().next());
    peak.unwrap_or_else(|| panic!("no peak in {stdout}")).parse().unwrap()
}

/// The "peak-rss" helper: runs `memtrack` with the arguments in [`ARGS`]
/// and prints its peak resident memory (the kernel's `ru_maxrss` of this
/// one child).
#[allow(clippy::zombie_processes, reason = "waited for with wait4, which also gives its usage")]
fn print_peak_rss() {
    let args = std::env::var(ARGS).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(args.split('\t'))
        .env_remove("MEMTRACK_RING")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("run memtrack");
    let mut status = 0;
    // SAFETY: all-zero is a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child, not yet waited for; pointers to locals.
    let waited = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(waited, child.id() as i32);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "memtrack {args} failed: {status}");
    println!("peak_rss_bytes {}", usage.ru_maxrss as u64 * 1024);
}

#[test]
fn report_and_export_hold_about_a_hundred_bytes_per_remaining_buffer() {
    let (small, large) = (TempFile::new("bounded-small"), TempFile::new("bounded-leaks"));
    record("huge", small.path());
    record("leaks", large.path());
    // Not parsed here: this process must stay small (see `peak_rss`).
    let out = memtrack_env(&["report", large.str()], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("\n{LEAKS} remaining buffers")),
        "the recording holds every leak:\n{text}"
    );
    // `--process` (both recordings' writer is process 0.1) selects every
    // buffer: the export's engine holds them all beside the filter's.
    let commands: [&[&str]; 4] = [
        &["report"],
        &["report", "--json"],
        &["export", "--format", "perfetto"],
        &["export", "--format", "perfetto", "--process", "0.1"],
    ];
    for command in commands {
        let run = |file: &TempFile| {
            let mut args = vec![command[0], file.str()];
            args.extend(&command[1..]);
            peak_rss(&args)
        };
        // The constant (the binary, its libraries, buffers) is what a
        // recording of four buffers needs.
        let (base, peak) = (run(&small), run(&large));
        let per_buffer = peak.saturating_sub(base) / LEAKS;
        eprintln!("memtrack {command:?}: {per_buffer} bytes per remaining buffer (peak {peak}, base {base})");
        assert!(
            per_buffer <= BYTES_PER_BUFFER,
            "memtrack {command:?}: {per_buffer} bytes per remaining buffer (peak {peak}, base {base})"
        );
    }
}

#[test]
fn huge_sizes_print_as_what_they_are_in_text_json_and_csv() {
    let file = TempFile::new("bounded-huge");
    record("huge", file.path());

    let report = common::report_json(file.path());
    let mut sizes: Vec<u64> =
        report["remaining"].as_array().unwrap().iter().map(|b| b["size"].as_u64().unwrap()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, HUGE);
    let device = report["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == 3).unwrap();
    for (kind, size) in ["DRAM", "L1", "TRACE"].iter().zip(HUGE) {
        assert_eq!(device["kinds"][kind]["peak_bytes"].as_u64(), Some(size), "{kind}");
    }
    let freed = report["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == 4).unwrap();
    assert_eq!(freed["kinds"]["DRAM"]["peak_bytes"].as_u64(), Some(u64::MAX));
    assert_eq!(freed["kinds"]["DRAM"]["live_bytes"].as_u64(), Some(0));

    let out = memtrack_env(&["report", file.str()], &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for printed in ["8.0 TiB", "8.0 EiB", "16.0 EiB"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(printed)),
            "no remaining buffer of {printed}:\n{text}"
        );
    }
    let peaks: Vec<&str> =
        text.lines().filter(|l| l.starts_with("     3  ") || l.starts_with("     4  ")).collect();
    assert_eq!(peaks.len(), 4, "{text}");
    for line in &peaks {
        let negative = line.split_whitespace().any(|word| word.len() > 1 && word.starts_with('-'));
        assert!(!negative, "a size printed negative: {line}");
    }
    assert!(peaks[3].contains("16.0 EiB"), "{}", peaks[3]);

    let out = memtrack_env(&["export", file.str(), "--format", "csv"], &[]);
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    let size_column = csv.lines().next().unwrap().split(',').position(|c| c == "size").unwrap();
    let mut sizes: Vec<u64> = csv
        .lines()
        .skip(1)
        .filter(|l| l.contains(",alloc,"))
        .map(|l| l.split(',').nth(size_column).unwrap().parse().unwrap())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1 << 43, 1 << 63, u64::MAX, u64::MAX]);
}

/// `report --json` of a version 1 recording with every kind of event
/// (tests/data/rich.c) is what the code before streaming printed
/// (tests/data/rich.report.json), byte for byte, but for the three sums
/// that code wrapped: two phase deltas (a 2^63- and a (2^64 − 1)-byte
/// change printed as negative numbers) and the cross-check's record bytes
/// of the 2^63-byte L1 cell (exact since the cross-check sums in i128: the
/// text report says 8.0 EiB there too).
#[test]
fn the_streamed_report_is_the_report_that_was_built_whole() {
    let before = std::fs::read_to_string("tests/data/rich.report.json").unwrap();
    let expected = before
        .replacen("\"delta_bytes\":-9223372036854775808", "\"delta_bytes\":9223372036854775808", 1)
        .replacen("\"delta_bytes\":-1,", "\"delta_bytes\":18446744073709551615,", 1)
        .replacen("\"reader_bytes\":-9223372036854775808", "\"reader_bytes\":9223372036854775808", 1);
    assert_eq!(
        before.matches("-9223372036854775808").count() + before.matches("\"delta_bytes\":-1,").count(),
        3,
        "the three wrapped sums are there to correct"
    );
    let out = memtrack_env(&["report", "tests/data/rich.mtr", "--json"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    let doc: Value = serde_json::from_str(&expected).unwrap();
    assert_eq!(doc["remaining"].as_array().unwrap().len(), 62, "the rows streamed are all there");
}
