//! The buffer-lifecycle scenarios of `ffi_tests/scenario.cpp` (a C++ model
//! of tt_metal's Buffer, MeshBuffer and Program, hooked up through
//! `include/memtrack.hpp`), each run as a user would:
//! `memtrack record -o FILE -- scenario N`, then asserted on
//! `memtrack report FILE --json` (schema memtrack.report/1).

#[path = "../../tests/common/cc.rs"]
mod cc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
        sanitize: false,
        defines: &[],
    })
}

/// What `memtrack record -- scenario N` printed and what the report says.
struct Scenario {
    report: Value,
    /// The ids the scenario printed: "mesh 0" -> id, "tensor" -> id, ...
    ids: HashMap<String, Vec<u64>>,
}

fn run(n: u32) -> Scenario {
    let exe = scenario_program();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scenarios");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("scenario-{n}.mtr"));
    let _ = std::fs::remove_file(&file);
    let out = Command::new(env!("CARGO_BIN_EXE_memtrack"))
        .args(["record", "-q", "-o"])
        .arg(&file)
        .arg("--")
        .arg(&exe.path)
        .arg(n.to_string())
        .env_remove("MEMTRACK_RING")
        .output()
        .expect("run memtrack record");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "memtrack record -- scenario {n} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ids: HashMap<String, Vec<u64>> = HashMap::new();
    for line in stdout.lines() {
        let (name, id) = line.rsplit_once(' ').unwrap_or_else(|| panic!("unexpected output {line:?}"));
        ids.entry(name.to_owned()).or_default().push(id.parse().unwrap());
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
    assert!(report["records"].as_u64().unwrap() > 0);
    let processes = report["processes"].as_array().unwrap();
    assert_eq!(processes.len(), 1, "{processes:?}");
    assert_eq!(processes[0]["state"], "exited");
    Scenario { report, ids }
}

impl Scenario {
    fn id(&self, name: &str) -> u64 {
        match self.ids.get(name).map(Vec::as_slice) {
            Some([id]) => *id,
            other => panic!("expected one {name:?} line, got {other:?}"),
        }
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

    /// (device, kind) -> its statistics.
    fn stats(&self) -> BTreeMap<(u64, String), Stats> {
        let mut out = BTreeMap::new();
        for device in self.report["devices"].as_array().unwrap() {
            let id = device["device_id"].as_u64().unwrap();
            for (kind, s) in device["kinds"].as_object().unwrap() {
                let stats = Stats {
                    allocs: i(&s["allocs"]),
                    frees: i(&s["frees"]),
                    live_bytes: i(&s["live_bytes"]),
                    live_buffers: i(&s["live_buffers"]),
                    peak_bytes: i(&s["peak_bytes"]),
                };
                out.insert((id, kind.clone()), stats);
            }
        }
        out
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

fn dram(device: u64) -> (u64, String) {
    (device, "DRAM".to_owned())
}

/// The statistics of the common workload of scenarios 1-4 when every
/// buffer is freed: two mesh buffers (on device 0 the ALIAS backing buffer
/// and a device buffer, on devices 1-7 a device buffer), a 4 KiB buffer on
/// device 0, and the program's pool (L1 on devices 0 and 1, DRAM on 2).
fn balanced_workload() -> BTreeMap<(u64, String), Stats> {
    let balanced =
        |n: i64, peak: i64| Stats { allocs: n, frees: n, live_bytes: 0, live_buffers: 0, peak_bytes: peak };
    let mut expected: BTreeMap<_, _> = (0..8).map(|d| (dram(d), balanced(2, LOCAL))).collect();
    expected.insert(dram(0), balanced(2 * 2 + 1, LOCAL));
    expected.insert(dram(2), balanced(2 + 1, LOCAL));
    expected.insert((0, "L1".to_owned()), balanced(1, 2048));
    expected.insert((1, "L1".to_owned()), balanced(1, 2048));
    expected
}

/// At each `mesh-K-live` mark, one mesh buffer is live: every device shows
/// the device-local size once; device 0 holds two buffers (the backing
/// buffer is ALIAS, so its bytes are not counted twice).
fn assert_one_mesh_buffer_live_at_marks(s: &Scenario) {
    let expected: BTreeMap<_, _> = (0..8).map(|d| (dram(d), (LOCAL, if d == 0 { 2 } else { 1 }))).collect();
    for label in ["mesh-0-live", "mesh-1-live"] {
        assert_eq!(s.usage_at(label), expected, "usage at {label}");
    }
}

#[test]
fn scenario_1_the_fix_balances_every_mesh_buffer() {
    let s = run(1);
    // 9 allocs and 9 frees per mesh buffer (2 on device 0, 1 on each of
    // devices 1-7), balanced everywhere.
    assert_eq!(s.stats(), balanced_workload());
    assert!(s.remaining().is_empty(), "{:?}", s.remaining());
    assert_eq!(s.anomalies(), (0, 0, 0));
    assert_one_mesh_buffer_live_at_marks(&s);
    let pool: BTreeMap<_, _> =
        [((0, "L1".to_owned()), (2048, 1)), ((1, "L1".to_owned()), (2048, 1)), (dram(2), (8192, 1))].into();
    assert_eq!(s.usage_at("program-live"), pool);
    assert_eq!(s.usage_at("end"), BTreeMap::new());
    assert_eq!(s.report["processes"][0]["remaining_buffers"], 0);
}

#[test]
fn scenario_2_owns_data_only_leaves_the_8_device_buffers_of_each_mesh_buffer() {
    let s = run(2);
    let meshes = [s.id("mesh 0"), s.id("mesh 1")];
    // Exactly the 8 device buffers of each mesh buffer remain, each on its
    // device, under its mesh buffer.
    let remaining: BTreeSet<(u64, u64)> = s
        .remaining()
        .iter()
        .map(|b| {
            assert_eq!((b["kind"].as_str(), i(&b["size"]), i(&b["flags"])), (Some("DRAM"), LOCAL, 0), "{b}");
            (b["device_id"].as_u64().unwrap(), b["parent_id"].as_u64().unwrap())
        })
        .collect();
    let expected: BTreeSet<(u64, u64)> = meshes.iter().flat_map(|&m| (0..8).map(move |d| (d, m))).collect();
    assert_eq!(s.remaining().len(), 16);
    assert_eq!(remaining, expected);
    // The backing buffers (owns_data_) were freed; the device buffers' frees
    // are missing on every device.
    let mut stats = balanced_workload();
    for d in 0..8 {
        let st = stats.get_mut(&dram(d)).unwrap();
        (st.frees, st.live_bytes, st.live_buffers) = (st.allocs - 2, 2 * LOCAL, 2);
        st.peak_bytes = 2 * LOCAL
            + if d == 0 {
                4096
            } else if d == 2 {
                8192
            } else {
                0
            };
    }
    assert_eq!(s.stats(), stats);
    assert_eq!(s.anomalies(), (0, 0, 0));
    assert_eq!(s.report["processes"][0]["remaining_buffers"], 16);
    assert_eq!(i(&s.report["processes"][0]["remaining_bytes"]), 16 * LOCAL);
}

#[test]
fn scenario_3_without_the_guard_the_second_free_is_one_unknown_free() {
    let s = run(3);
    assert_eq!(s.anomalies(), (1, 0, 0));
    let details = s.report["anomalies"]["details"].as_array().expect("anomaly details");
    assert_eq!(details.len(), 1);
    assert_eq!(details[0]["type"], "unknown_free");
    assert_eq!(details[0]["buffer_id"], s.id("tensor"));
    assert_eq!(key(&details[0]), dram(0));
    // The first free balanced the buffer; everything else is as with the fix.
    assert_eq!(s.stats(), balanced_workload());
    assert!(s.remaining().is_empty(), "{:?}", s.remaining());
    assert_one_mesh_buffer_live_at_marks(&s);
}

#[test]
fn scenario_4_an_unreleased_pool_remains_under_its_program() {
    let s = run(4);
    let program = s.id("program");
    let remaining: BTreeSet<(u64, String, i64)> = s
        .remaining()
        .iter()
        .map(|b| {
            assert_eq!(b["parent_id"], program, "grouped under the program: {b}");
            let (device, kind) = key(b);
            (device, kind, i(&b["size"]))
        })
        .collect();
    let pool: BTreeSet<(u64, String, i64)> =
        [(0, "L1".to_owned(), 2048), (1, "L1".to_owned(), 2048), (2, "DRAM".to_owned(), 8192)].into();
    assert_eq!(s.remaining().len(), 3);
    assert_eq!(remaining, pool);
    let mut stats = balanced_workload();
    for (k, bytes) in [((0, "L1".to_owned()), 2048), ((1, "L1".to_owned()), 2048), (dram(2), 8192)] {
        let st = stats.get_mut(&k).unwrap();
        (st.frees, st.live_bytes, st.live_buffers) = (st.frees - 1, bytes, 1);
    }
    assert_eq!(s.stats(), stats);
    assert_eq!(s.anomalies(), (0, 0, 0));
    assert_one_mesh_buffer_live_at_marks(&s);
    assert_eq!(s.report["processes"][0]["remaining_buffers"], 3);
}

#[test]
fn scenario_5_circular_buffers_and_kernels_of_each_program_balance_on_every_device() {
    let s = run(5);
    let programs = &s.ids["program"];
    assert_eq!(programs.len(), 2);
    assert_ne!(programs[0], programs[1]);
    // Per device: 2 programs x 3 circular buffers (7 KiB), 2 x 1 kernel.
    let cb = 2 * (4096 + 2048 + 1024);
    let mut expected = BTreeMap::new();
    let mut live = BTreeMap::new();
    for d in 0..8 {
        expected.insert(
            (d, "CB".to_owned()),
            Stats { allocs: 6, frees: 6, live_bytes: 0, live_buffers: 0, peak_bytes: cb },
        );
        expected.insert(
            (d, "KERNEL".to_owned()),
            Stats { allocs: 2, frees: 2, live_bytes: 0, live_buffers: 0, peak_bytes: 2048 },
        );
        live.insert((d, "CB".to_owned()), (cb, 6));
        live.insert((d, "KERNEL".to_owned()), (2048, 2));
    }
    assert_eq!(s.stats(), expected);
    assert_eq!(s.usage_at("programs-live"), live);
    assert_eq!(s.usage_at("end"), BTreeMap::new());
    assert!(s.remaining().is_empty(), "{:?}", s.remaining());
    assert_eq!(s.anomalies(), (0, 0, 0));
}
