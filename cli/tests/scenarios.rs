//! What tt_metal does with device memory, on the model of
//! `ffi_tests/tt_model.hpp` running the tt_metal patch's own hook code
//! (`include/memtrack_tt_metal.hpp`): one scenario of
//! `ffi_tests/scenario.cpp` per fact of docs/tt-metal.md, each run as a
//! user would (`memtrack record -o FILE -- scenario NAME`) and asserted on
//! `memtrack report FILE --json` (schema memtrack.report/1).
//!
//! The scenario program is built with AddressSanitizer: a hook that reads a
//! device after it is gone (fact 3) fails the run.

#[path = "../../tests/common/cc.rs"]
mod cc;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;

use cc::{Build, Lang, Link, Program};
use serde_json::Value;

/// Bytes of each device buffer of a mesh buffer in the scenarios.
const LOCAL: i64 = 64 * 1024;

fn scenario_program() -> Program {
    cc::build(&Build {
        name: "scenario",
        source: "scenario.cpp",
        lang: Lang::Cxx,
        link: Link::Shared,
        sanitize: true,
        defines: &[],
    })
}

/// What `memtrack record -- scenario NAME` printed and what the report says.
struct Scenario {
    report: Value,
    /// The "NAME VALUE" lines the scenario printed.
    printed: HashMap<String, u64>,
}

fn run(name: &str) -> Scenario {
    let exe = scenario_program();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scenarios");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("scenario-{name}.mtr"));
    let _ = std::fs::remove_file(&file);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_memtrack"));
    cmd.args(["record", "-q", "-o"])
        .arg(&file)
        .arg("--")
        .arg(&exe.path)
        .arg(name)
        .env_remove("MEMTRACK_RING");
    // The sanitizer settings the program needs, through memtrack record.
    for (k, v) in exe.command().get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("run memtrack record");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "memtrack record -- scenario {name} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut printed = HashMap::new();
    for line in stdout.lines() {
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("unexpected output {line:?}"));
        assert!(printed.insert(key.to_owned(), value.parse().unwrap()).is_none(), "{key} printed twice");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .arg("report")
        .arg(&file)
        .arg("--json")
        .output()
        .expect("run memtrack report");
    assert!(out.status.success(), "memtrack report: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("report --json is JSON");
    // Every scenario: one complete, lossless run of one process.
    assert_eq!(report["schema"], "memtrack.report/1");
    assert_eq!(report["lost"], 0, "{}", report["lost_detail"]);
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(processes[0]["state"], "exited");
    Scenario { report, printed }
}

impl Scenario {
    fn printed(&self, name: &str) -> u64 {
        *self
            .printed
            .get(name)
            .unwrap_or_else(|| panic!("the scenario printed no {name:?}: {:?}", self.printed))
    }

    fn anomalies(&self) -> (u64, u64, u64) {
        let a = &self.report["anomalies"];
        let n = |k: &str| a[k].as_u64().unwrap();
        (n("unknown_frees"), n("duplicate_allocs"), n("size_mismatches"))
    }

    fn remaining(&self) -> &[Value] {
        self.report["remaining"].as_array().unwrap()
    }

    /// Usage at the mark `label`: (device, kind) -> (live bytes, live buffers).
    fn usage_at(&self, label: &str) -> BTreeMap<(u64, String), (i64, i64)> {
        let marks = self.report["marks"].as_array().unwrap();
        let mark = marks.iter().find(|m| m["label"] == label).unwrap_or_else(|| panic!("no mark {label}"));
        mark["usage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| (key(u), (i(&u["live_bytes"]), i(&u["live_buffers"]))))
            .collect()
    }

    /// (device, kind) -> its statistics, for the kinds that saw records
    /// (a capacity alone lists a kind too).
    fn stats(&self) -> BTreeMap<(u64, String), Stats> {
        let mut out = BTreeMap::new();
        for (k, s) in self.kinds() {
            if i(&s["allocs"]) == 0 && i(&s["frees"]) == 0 {
                continue;
            }
            let stats = Stats {
                allocs: i(&s["allocs"]),
                frees: i(&s["frees"]),
                live_bytes: i(&s["live_bytes"]),
                live_buffers: i(&s["live_buffers"]),
                peak_bytes: i(&s["peak_bytes"]),
            };
            out.insert(k, stats);
        }
        out
    }

    /// (device, kind) -> capacity_bytes, where one was set.
    fn capacities(&self) -> BTreeMap<(u64, String), i64> {
        self.kinds().filter_map(|(k, s)| s.get("capacity_bytes").map(|c| (k, i(c)))).collect()
    }

    fn kinds(&self) -> impl Iterator<Item = ((u64, String), &Value)> {
        self.report["devices"].as_array().unwrap().iter().flat_map(|device| {
            let id = device["device_id"].as_u64().unwrap();
            device["kinds"].as_object().unwrap().iter().map(move |(kind, s)| ((id, kind.clone()), s))
        })
    }

    /// The clean end every scenario must reach: nothing remains, no
    /// anomaly, every kind balanced, nothing live at the mark "end".
    fn assert_balanced(&self) {
        assert!(self.remaining().is_empty(), "{:?}", self.remaining());
        assert_eq!(self.anomalies(), (0, 0, 0), "{}", self.report["anomalies"]);
        for (k, s) in self.stats() {
            assert_eq!((s.allocs, s.live_bytes, s.live_buffers), (s.frees, 0, 0), "{k:?}: {s:?}");
        }
        assert_eq!(self.usage_at("end"), BTreeMap::new());
        assert_eq!(self.report["processes"][0]["remaining_buffers"], 0);
    }
}

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

fn key(v: &Value) -> (u64, String) {
    (v["device_id"].as_u64().unwrap(), v["kind"].as_str().unwrap().to_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stats {
    allocs: i64,
    frees: i64,
    live_bytes: i64,
    live_buffers: i64,
    peak_bytes: i64,
}

fn balanced(n: i64, peak: i64) -> Stats {
    Stats { allocs: n, frees: n, live_bytes: 0, live_buffers: 0, peak_bytes: peak }
}

fn k(device: u64, kind: &str) -> (u64, String) {
    (device, kind.to_owned())
}

/// One mesh buffer of `bytes` per chip live on chips `chips`, reference chip
/// first: every chip shows its share once; the reference chip also holds
/// the ALIAS backing buffer, which counts as a buffer, not as bytes.
fn one_mesh_buffer(
    chips: std::ops::Range<u64>,
    kind: &str,
    bytes: i64,
) -> BTreeMap<(u64, String), (i64, i64)> {
    let reference = chips.start;
    chips.map(|d| (k(d, kind), (bytes, if d == reference { 2 } else { 1 }))).collect()
}

#[test]
fn mesh_buffers_balance_9_allocs_9_frees_each_chip_counting_its_share_once() {
    let s = run("mesh");
    // Per mesh buffer: the backing buffer (ALIAS, reference chip 0) and 8
    // device buffers; on chip 0 also the 4000-byte buffer (4096 reserved)
    // and pool buffers on chips 0, 1 (L1) and 2 (DRAM).
    let mut expected: BTreeMap<_, _> = (0..8).map(|d| (k(d, "DRAM"), balanced(2, LOCAL))).collect();
    expected.insert(k(0, "DRAM"), balanced(2 * 2 + 1, LOCAL));
    expected.insert(k(2, "DRAM"), balanced(2 + 1, LOCAL));
    expected.insert(k(0, "L1"), balanced(1, 2048));
    expected.insert(k(1, "L1"), balanced(1, 2048));
    assert_eq!(s.stats(), expected);
    s.assert_balanced();
    for label in ["mesh-0-live", "mesh-1-live"] {
        assert_eq!(s.usage_at(label), one_mesh_buffer(0..8, "DRAM", LOCAL), "usage at {label}");
    }
    // Fact 12: the bytes are what the allocator reserves (aligned pages).
    assert_eq!(s.usage_at("plain-live"), [(k(0, "DRAM"), (4096, 1))].into());
    let pool: BTreeMap<_, _> =
        [(k(0, "L1"), (2048, 1)), (k(1, "L1"), (2048, 1)), (k(2, "DRAM"), (8192, 1))].into();
    assert_eq!(s.usage_at("program-live"), pool);
    // Each chip's allocator reported its capacity, over all banks.
    let capacities = s.capacities();
    for d in 0..8 {
        assert_eq!(capacities[&k(d, "DRAM")], 12 << 30);
        assert_eq!(capacities[&k(d, "L1")], 64 << 20);
        assert_eq!(capacities[&k(d, "L1_SMALL")], 64 * (32 << 10));
    }
    assert_eq!(capacities.len(), 24, "{capacities:?}");
    assert_ne!(s.printed("mesh 0"), s.printed("mesh 1"));
}

#[test]
fn fact_1_zero_byte_buffers_report_nothing() {
    let s = run("zero-size");
    // Only the 4 KiB buffer: no record for the 0-byte buffer nor for the
    // 0-byte mesh buffer, whose free would otherwise be unknown.
    assert_eq!(s.stats(), [(k(0, "DRAM"), balanced(1, 4096))].into());
    assert_eq!(s.usage_at("live"), [(k(0, "DRAM"), (4096, 1))].into());
    s.assert_balanced();
}

#[test]
fn fact_2_intercepted_allocations_report_nothing() {
    let s = run("intercepted");
    // The capture intercepted them: address 0, no allocator memory.
    assert_eq!(s.printed("captured-address"), 0);
    assert_eq!(s.printed("captured-mesh-address"), 0);
    assert_eq!(s.printed("allocator-live"), 0);
    // Only the buffer allocated before the capture, whose free inside it
    // is reported (the buffer is deallocated either way).
    assert_eq!(s.stats(), [(k(0, "DRAM"), balanced(1, 4096))].into());
    assert_eq!(s.usage_at("captured-live"), [(k(0, "DRAM"), (4096, 1))].into());
    s.assert_balanced();
}

#[test]
fn fact_3_frees_after_the_device_is_gone_come_from_what_was_reported() {
    // Under AddressSanitizer: the MeshDevice object is freed before its
    // mesh buffer is deallocated, the chips are closed before a buffer and
    // a program on them go. A hook reading a device there fails the run.
    let s = run("device-gone");
    let mut expected: BTreeMap<_, _> = (0..8).map(|d| (k(d, "DRAM"), balanced(1, LOCAL))).collect();
    expected.insert(k(0, "DRAM"), balanced(2, LOCAL));
    for d in 0..8 {
        expected.insert(k(d, "CB"), balanced(1, 4096 * 2));
    }
    expected.insert(k(3, "L1"), balanced(1, 4096));
    assert_eq!(s.stats(), expected);
    s.assert_balanced();
    let mut live = one_mesh_buffer(0..8, "DRAM", LOCAL);
    live.extend((0..8).map(|d| (k(d, "CB"), (8192, 1))));
    live.insert(k(3, "L1"), (4096, 1));
    assert_eq!(s.usage_at("live"), live);
}

#[test]
fn fact_4_per_core_mesh_buffers_are_freed_by_tt_metal_and_reported_once() {
    let s = run("per-core");
    // The model's allocators freed all 8 device buffers: reporting did not
    // turn their deallocate() into a mark.
    assert_eq!(s.printed("allocator-live-before"), 8);
    assert_eq!(s.printed("allocator-live-after"), 0);
    // Each chip's own buffer, no backing buffer, no parent.
    let expected: BTreeMap<_, _> = (0..8).map(|d| (k(d, "L1"), balanced(1, 16 * 1024))).collect();
    assert_eq!(s.stats(), expected);
    let live: BTreeMap<_, _> = (0..8).map(|d| (k(d, "L1"), (16 * 1024, 1))).collect();
    assert_eq!(s.usage_at("per-core-live"), live);
    s.assert_balanced();
}

#[test]
fn fact_5_views_and_buffers_at_an_address_are_not_counted_again() {
    let s = run("views");
    // 10 slow-dispatch reads (80 views), two Buffer views, an external mesh
    // buffer at the owner's address (9 Buffers), a Buffer at an address:
    // none of them is a record. The owners: one mesh buffer, one L1 buffer.
    let mut expected: BTreeMap<_, _> = (0..8).map(|d| (k(d, "DRAM"), balanced(1, LOCAL))).collect();
    expected.insert(k(0, "DRAM"), balanced(2, LOCAL));
    expected.insert(k(0, "L1"), balanced(1, 8192));
    assert_eq!(s.stats(), expected);
    let mut live = one_mesh_buffer(0..8, "DRAM", LOCAL);
    live.insert(k(0, "L1"), (8192, 1));
    assert_eq!(s.usage_at("views-live"), live);
    assert_eq!(s.usage_at("owners-live"), live);
    s.assert_balanced();
}

#[test]
fn fact_6_devices_are_chips_not_mesh_ids() {
    let s = run("chip-ids");
    // Mesh ids 1 and 2 are also chip ids: the backing buffers belong on the
    // reference chips 4 and 6, and chips 1 and 2 hold nothing.
    assert_eq!((s.printed("mesh-id-upper"), s.printed("mesh-id-right")), (1, 2));
    let share = 32 * 1024;
    let expected: BTreeMap<_, _> = [
        (k(4, "DRAM"), balanced(2, share)),
        (k(5, "DRAM"), balanced(1, share)),
        (k(6, "DRAM"), balanced(3, 2 * share)),
        (k(7, "DRAM"), balanced(2, 2 * share)),
    ]
    .into();
    assert_eq!(s.stats(), expected);
    let live: BTreeMap<_, _> = [
        (k(4, "DRAM"), (share, 2)),
        (k(5, "DRAM"), (share, 1)),
        (k(6, "DRAM"), (2 * share, 3)),
        (k(7, "DRAM"), (2 * share, 2)),
    ]
    .into();
    assert_eq!(s.usage_at("live"), live);
    s.assert_balanced();
}

#[test]
fn fact_7_circular_buffers_are_placed_per_chip_once_addressed() {
    // address() throws before a circular buffer is placed: reporting it
    // earlier would abort the scenario.
    let s = run("cb-placement");
    // Per chip: 4096 B on 4 cores + 2048 B on 2 cores; the globally
    // allocated one (8192 B on 4 cores, inside an L1 Buffer) is ALIAS.
    let local = 4096 * 4 + 2048 * 2;
    let cb_live = |chips: std::ops::Range<u64>| -> BTreeMap<_, _> {
        let mut m: BTreeMap<_, _> = chips.map(|d| (k(d, "CB"), (local, 3))).collect();
        m.insert(k(0, "L1"), (8192, 1));
        m
    };
    // The new layout on chips 0..3, then the cached one on new chips 4..7,
    // the globally allocated circular buffer included; a third call with
    // nothing new reports nothing.
    assert_eq!(s.usage_at("left-live"), cb_live(0..4));
    assert_eq!(s.usage_at("all-live"), cb_live(0..8));
    let mut expected: BTreeMap<_, _> = (0..8).map(|d| (k(d, "CB"), balanced(3, local))).collect();
    expected.insert(k(0, "L1"), balanced(1, 8192));
    assert_eq!(s.stats(), expected);
    s.assert_balanced();
}

#[test]
fn fact_8_a_moved_or_resized_circular_buffer_frees_what_was_reported() {
    let s = run("cb-replacement");
    // Placed: 4096 B x 4 cores + 2048 B x 2 cores. Resized to 8192 B, the
    // first grows and the second moves: each is freed as reported (old
    // size, old address) and placed again, on each of the 8 chips.
    let placed = 4096 * 4 + 2048 * 2;
    let replaced = 8192 * 4 + 2048 * 2;
    let at = |bytes: i64| -> BTreeMap<_, _> { (0..8).map(|d| (k(d, "CB"), (bytes, 2))).collect() };
    assert_eq!(s.usage_at("placed"), at(placed));
    assert_eq!(s.usage_at("replaced"), at(replaced));
    let expected: BTreeMap<_, _> = (0..8).map(|d| (k(d, "CB"), balanced(4, replaced))).collect();
    assert_eq!(s.stats(), expected);
    // No size mismatch, no unknown free, no duplicate allocation.
    s.assert_balanced();
}

#[test]
fn fact_9_kernel_binaries_are_counted_once_as_the_dram_buffer_they_live_in() {
    let s = run("kernel-binaries");
    // The workload's DRAM kernel-binary MeshBuffer (the largest program's
    // 5 pages) is the only memory: no KERNEL records, no view of it, and the
    // L1 kernel-config ring is outside every allocator.
    assert_eq!(s.printed("kernel-config-ring"), 8 * 2048);
    let bytes = 5 * 2048;
    let mut expected: BTreeMap<_, _> = (0..8).map(|d| (k(d, "DRAM"), balanced(1, bytes))).collect();
    expected.insert(k(0, "DRAM"), balanced(2, bytes));
    assert_eq!(s.stats(), expected);
    assert_eq!(s.usage_at("binaries-live"), one_mesh_buffer(0..8, "DRAM", bytes));
    s.assert_balanced();
}
