//! Hostile input to the reader binary: random and mutated record files fed
//! to `report` and `export`, a ring whose slots hold garbage recorded with
//! `record --ring`, and ring files that `status --ring` and `record --ring`
//! must refuse. The answer is always a result or one line on stderr naming
//! the file and the reason with exit status 1 — never a panic (status 101
//! in this debug build, whose overflow checks are on) or a signal.

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

mod common;

use common::{TempFile, memtrack};
use memtrack::format;
use memtrack::{MemtrackBuffer, Ring, RingOptions, Writer, ring_path};
use proptest::prelude::*;
use serde_json::Value;

fn check_outcome(out: &Output, file: &str, what: &str) -> bool {
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => true,
        Some(1) => {
            assert_eq!(stderr.trim_end().lines().count(), 1, "{what}: not one line: {stderr}");
            assert!(stderr.contains(file), "{what}: does not name the file: {stderr}");
            false
        }
        other => panic!("{what}: exit {other:?} (a panic or a signal): {stderr}"),
    }
}

// ------------------------------------------------------------ record files

const HEADER: usize = 256;
const BLOCK: usize = 64;

fn header(ticks_per_second: u64) -> Vec<u8> {
    let mut h = vec![0u8; HEADER];
    h[0..8].copy_from_slice(b"MTRECORD");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER as u32).to_le_bytes());
    h[16..20].copy_from_slice(&(BLOCK as u32).to_le_bytes());
    h[24..32].copy_from_slice(&ticks_per_second.to_le_bytes());
    h[64..72].copy_from_slice(&1024u64.to_le_bytes());
    h[128..136].copy_from_slice(b"/dev/shm");
    h
}

/// A block of `code` with random fields; `small` keeps ids and sizes in a
/// range where allocs and frees of the same buffers meet.
fn block(code: u8, words: [u64; 7], small: bool) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    for (i, w) in words.iter().enumerate() {
        let w = if small { w % 4 } else { *w };
        b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
    }
    if small {
        b[48..52].copy_from_slice(&((words[6] % 3) as u32).to_le_bytes()); // device
        b[52..56].copy_from_slice(&((words[5] % 2) as u32 + 100).to_le_bytes()); // pid
        b[59] = (words[4] % 9) as u8; // kind
        b[60] = (words[3] % 2) as u8; // flags
    }
    b[58] = code;
    b
}

fn block_code() -> impl Strategy<Value = u8> {
    // Only codes a file may hold: the damage test makes the others.
    prop_oneof![8 => 1u8..=6, 3 => 0x80u8..=0x83]
}

fn blocks() -> impl Strategy<Value = Vec<[u8; BLOCK]>> {
    proptest::collection::vec((block_code(), any::<[u64; 7]>(), any::<bool>()), 0..40)
        .prop_map(|v| v.into_iter().map(|(code, words, small)| block(code, words, small)).collect())
}

fn record_file(blocks: &[[u8; BLOCK]], ticks_per_second: u64, end: bool) -> Vec<u8> {
    let mut bytes = header(ticks_per_second);
    for b in blocks {
        bytes.extend_from_slice(b);
    }
    if end {
        let mut e = [0u8; BLOCK];
        e[58] = 0x8f;
        bytes.extend_from_slice(&e);
    }
    bytes
}

/// `report` (text and JSON) and `export` (CSV, Perfetto, Parquet) on `bytes`.
fn read_back(bytes: &[u8]) {
    let file = TempFile::new("mtr");
    std::fs::write(file.path(), bytes).unwrap();
    let json = memtrack(&["report", file.str(), "--json"]);
    if check_outcome(&json, file.str(), "report --json") {
        let doc: Value =
            serde_json::from_slice(&json.stdout).expect("report --json prints one JSON document");
        assert_eq!(doc["schema"], "memtrack.report/1");
    }
    check_outcome(&memtrack(&["report", file.str()]), file.str(), "report");
    check_outcome(&memtrack(&["export", file.str(), "--format", "csv"]), file.str(), "export csv");
    if cfg!(feature = "parquet") {
        let parquet = TempFile::new("parquet");
        let out = memtrack(&["export", file.str(), "--format", "parquet", "-o", parquet.str()]);
        if check_outcome(&out, file.str(), "export parquet") {
            assert!(std::fs::read(parquet.path()).unwrap().starts_with(b"PAR1"));
        }
    }
    let trace = TempFile::new("trace");
    let out = memtrack(&["export", file.str(), "--format", "perfetto", "-o", trace.str()]);
    if check_outcome(&out, file.str(), "export perfetto") {
        let doc: Value = serde_json::from_slice(&std::fs::read(trace.path()).unwrap()).expect("valid JSON");
        assert!(doc["traceEvents"].is_array());
    }
}

fn cases() -> u32 {
    let soak = std::env::var("MEMTRACK_SOAK").ok().and_then(|v| v.parse().ok()).unwrap_or(1u32).max(1);
    48 * soak
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    /// Well-formed files of random blocks: every field garbage or
    /// colliding (huge sizes, unknown kinds and devices, deaths and table
    /// entries of unknown processes, loss totals near u64::MAX).
    #[test]
    fn record_files_of_random_blocks_are_reported_or_refused(
        blocks in blocks(),
        ticks_per_second in prop_oneof![Just(1_000_000_000u64), Just(1), any::<u64>()],
        end in prop_oneof![9 => Just(true), 1 => Just(false)],
    ) {
        read_back(&record_file(&blocks, ticks_per_second, end));
    }

    /// Byte-level damage to a file: flipped bytes, cut short, extended.
    #[test]
    fn damaged_record_files_are_reported_or_refused(
        blocks in blocks(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in prop_oneof![4 => Just(None), 1 => any::<prop::sample::Index>().prop_map(Some)],
    ) {
        let mut bytes = record_file(&blocks, 1_000_000_000, true);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len() + 1));
        }
        read_back(&bytes);
    }
}

// --------------------------------------------------------------- garbage ring

/// The state word of a slot.
fn state_word(lap: u32, slot: u16, generation: u32, phase: u64) -> u64 {
    (lap as u64) << 32 | ((slot as u64) << 20 | generation as u64) << 2 | phase
}

fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    std::fs::OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, offset as u64).unwrap();
}

/// The first slot of a ring without sub-rings (the default pool): the
/// test below writes the shared ring's slots by hand around the writer's
/// records, so the writer must write the shared ring too.
const SLOTS_OFFSET: usize =
    format::slots_offset(format::DEFAULT_COUNTER_CELLS, 0, format::DEFAULT_SUBRING_CAPACITY);

#[test]
fn a_ring_of_garbage_records_is_recorded_and_reported_without_trusting_it() {
    let name = format!("cli-hostile-garbage-{}", std::process::id());
    let ring = TempFile(ring_path(&name)); // removed however the test ends
    let path = ring.path().to_path_buf();
    let _ = std::fs::remove_file(&path);
    let writer = Writer::attach_named(
        Ring::create(&path, RingOptions { capacity: 64, subrings: 0, ..RingOptions::default() }).unwrap(),
        b"hostile",
    )
    .unwrap();
    // Garbage through the API: ids and kinds past every table, a size that
    // overflows any sum, every flag bit.
    let huge = MemtrackBuffer {
        buffer_id: 1,
        size: u64::MAX,
        device_id: u32::MAX,
        kind: 255,
        flags: 0xfe,
        ..Default::default()
    };
    writer.alloc(&huge);
    writer.alloc(&MemtrackBuffer { buffer_id: 2, ..huge });
    writer.free(&MemtrackBuffer { buffer_id: 3, size: 7, ..huge });
    writer.set_capacity(u32::MAX, 255, u64::MAX);
    // Garbage written into slots by hand, as published records: event codes
    // the ring never carries (0, 9, and the record file's own block codes,
    // end block included), a process slot outside the table, a pid nobody has.
    let owner = writer.owner();
    for (i, code) in [0u8, 9, 0x80, 0x81, 0x82, 0x83, 0x8f, 0xff].into_iter().enumerate() {
        let mut slot = [0xa5u8; 64];
        slot[0..8].copy_from_slice(&state_word(0, owner.slot, owner.generation, 2).to_le_bytes());
        slot[58] = code;
        patch(&path, SLOTS_OFFSET + (5 + i) * 64, &slot);
    }
    // And after them, a record of a process that never started.
    let mut slot = [0u8; 64];
    slot[0..8].copy_from_slice(&state_word(0, owner.slot, owner.generation, 2).to_le_bytes());
    slot[52..56].copy_from_slice(&4_000_000u32.to_le_bytes());
    slot[56..58].copy_from_slice(&1000u16.to_le_bytes());
    slot[58] = 2; // FREE
    slot[59] = 200;
    patch(&path, SLOTS_OFFSET + 13 * 64, &slot);
    // The tail hint past the hand-written slots, for the writer's next record.
    patch(&path, 256, &14u64.to_le_bytes());
    writer.mark(b"after the garbage");

    let file = TempFile::new("garbage");
    let out = memtrack(&["record", "--ring", &name, "-o", file.str(), "--duration", "0.3", "--quiet"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("unknown event code"), "the garbage is reported: {stderr}");
    let report = memtrack(&["report", file.str(), "--json"]);
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    let doc: Value = serde_json::from_slice(&report.stdout).unwrap();
    // start, 2 allocs, free, capacity, the stranger's free, the mark: the 8
    // records with codes the ring never carries are left out.
    assert_eq!(doc["records"], 7, "{doc}");
    let processes = doc["processes"].as_array().unwrap();
    // The writer, and the stranger its one record names (table entry 1000,
    // which no table has): no process forged from the garbage blocks.
    assert_eq!(processes.len(), 2, "no process forged from garbage blocks: {processes:?}");
    assert_eq!(processes[0]["name"], "hostile");
    assert_eq!((&processes[1]["process"], &processes[1]["pid"]), (&"1000.1".into(), &4_000_000.into()));
    assert_eq!(processes[1]["allocs"], 0);
    assert_eq!(doc["marks"][0]["label"], "after the garbage");
    assert_eq!(doc["anomalies"]["duplicate_allocs"], 0);
    assert_eq!(doc["anomalies"]["unknown_frees"], 2);
    assert_eq!(doc["devices"][0]["device_id"], u32::MAX);
    assert_eq!(doc["devices"][0]["kinds"]["KIND_255"]["allocs"], 2);
    assert_eq!(doc["lost_detail"]["reader_died"], 0, "no loss forged from a garbage block");
    drop(writer);
}

// ----------------------------------------------------------------- refusals

/// `status --ring` and `record --ring` on a broken ring file: exit 1, one
/// line naming the file and containing `reason`.
fn assert_refused(path: &Path, reason: &str) {
    let p = path.to_str().unwrap();
    let out_file = TempFile::new("refused");
    let runs = [
        ("status", memtrack(&["status", "--ring", p])),
        ("status --json", memtrack(&["status", "--ring", p, "--json"])),
        ("record", memtrack(&["record", "--ring", p, "-o", out_file.str(), "--duration", "0.1"])),
    ];
    for (what, out) in runs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what} on {reason}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{what} on {reason}: one line: {stderr}");
        assert!(stderr.contains(p), "{what} on {reason}: names the file: {stderr}");
        assert!(stderr.contains(reason), "{what}: says {reason:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{what}: nothing on stdout");
    }
    assert!(!out_file.path().exists(), "record leaves no record file behind a refusal");
}

#[test]
fn broken_and_untrusted_ring_files_are_refused_by_status_and_record() {
    let dir = TempFile::new("refusals");
    std::fs::create_dir_all(dir.path()).unwrap();
    let path = dir.path().join("ring");
    let make = || {
        let _ = std::fs::remove_file(&path);
        Ring::create(&path, RingOptions { capacity: 64, ..RingOptions::default() }).unwrap();
    };
    make();
    patch(&path, 0, b"NOTARING");
    assert_refused(&path, "bad magic");
    make();
    patch(&path, 8, &1u32.to_le_bytes());
    assert_refused(&path, "format version 1, this build reads version 3");
    make();
    patch(&path, 8, &2u32.to_le_bytes());
    assert_refused(&path, "format version 2, this build reads version 3");
    make();
    patch(&path, 16, &100u64.to_le_bytes());
    assert_refused(&path, "capacity 100 is not a power of two");
    make();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(format::default_file_size(64) - 64)
        .unwrap();
    assert_refused(&path, "file length");
    make();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    assert_refused(&path, "lets group or others write it");
    make();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o602)).unwrap();
    assert_refused(&path, "lets group or others write it");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root can hand the file to another user (nobody).
        make();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        assert_refused(&path, "owned by uid 65534");
    } else {
        eprintln!("not root: the other-owner case is covered by tests/ring_file.rs only as root");
    }
    let _ = std::fs::remove_file(&path);
    std::fs::remove_dir(dir.path()).unwrap();
}
