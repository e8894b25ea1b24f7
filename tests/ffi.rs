//! The C ABI from real C and C++ programs (`ffi_tests/`), built with the
//! system compiler against `libmemtrack.so` and `libmemtrack.a`, with
//! `-Wall -Wextra -Werror -pedantic`, and again under ASan + UBSan. Each
//! program writes to a fresh ring while this test drains it with
//! [`Consumer`]; the assertions are on the exact records delivered.

#[path = "common/cc.rs"]
mod cc;
mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use cc::{Build, Lang, Link, Program};
use common::{TempRing, drain_all};
use memtrack::format::{FLAG_ALIAS, kind};
use memtrack::{Consumer, Event, ProcessState, Record, Ring, RingOptions, Snapshot};

const API: Build =
    Build { name: "api", source: "api.c", lang: Lang::C, link: Link::Shared, sanitize: false, defines: &[] };
const CONCURRENCY: Build = Build {
    name: "concurrency",
    source: "concurrency.cpp",
    lang: Lang::Cxx,
    link: Link::Shared,
    sanitize: false,
    defines: &[],
};
const ADAPTER: Build = Build {
    name: "adapter",
    source: "adapter.cpp",
    lang: Lang::Cxx,
    link: Link::Shared,
    sanitize: false,
    defines: &[],
};

fn variant(base: Build<'static>, name: &'static str, link: Link, sanitize: bool) -> Program {
    cc::build(&Build { name, link, sanitize, ..base })
}

/// What one run of programs on one ring left: every record in ticket
/// order, each program's output, and the ring's state afterwards.
struct Run {
    records: Vec<Record>,
    outputs: Vec<Output>,
    snapshot: Snapshot,
}

/// Runs `commands` at once on a fresh ring, draining it while they run.
fn run_on_ring(tag: &str, commands: Vec<Command>) -> Run {
    let ring = TempRing::new(tag);
    Ring::create(ring.path(), RingOptions { capacity: 1 << 16, ..RingOptions::default() }).unwrap();
    let mut consumer = Consumer::attach(ring.path()).unwrap();
    let mut children: Vec<_> = commands
        .into_iter()
        .map(|mut cmd| {
            cmd.env("MEMTRACK_RING", ring.path()).stdout(Stdio::piped()).stderr(Stdio::piped());
            cmd.spawn().expect("spawn a test program")
        })
        .collect();
    let mut records = Vec::new();
    loop {
        records.extend(drain_all(&mut consumer));
        if children.iter_mut().all(|c| c.try_wait().unwrap().is_some()) {
            records.extend(drain_all(&mut consumer));
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    for out in &outputs {
        assert!(
            out.status.success(),
            "program failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let snapshot = consumer.ring().snapshot();
    assert_eq!(snapshot.dropped, 0, "a 65536-slot ring holds every record of these runs");
    assert_eq!(snapshot.progress.lost_writer_died, 0);
    assert_eq!(snapshot.progress.delivered, records.len() as u64);
    assert!(records.windows(2).all(|w| w[0].ticket + 1 == w[1].ticket), "tickets dense and ordered");
    Run { records, outputs, snapshot }
}

/// Runs one program without a ring; returns (stdout, stderr).
fn run_alone(mut cmd: Command) -> (String, String) {
    let out = cmd.output().expect("run a test program");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "program failed ({}):\n{stdout}{stderr}", out.status);
    (stdout, stderr)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
}

/// A record as one comparable line.
fn brief(r: &Record) -> String {
    let kind = kind::name(r.kind).unwrap_or("?");
    match r.event() {
        Some(Event::Alloc | Event::Free) => format!(
            "{} d{} {kind} #{} p{} @{:#x} {} f{}",
            r.event().unwrap().name(),
            r.device_id,
            r.buffer_id,
            r.parent_id,
            r.address,
            r.size,
            r.flags
        ),
        Some(Event::Mark) => format!("mark {}", String::from_utf8_lossy(r.label())),
        Some(Event::Text) => {
            format!("text of {} id{} #{} {}", r.kind, r.scope(), r.flags, String::from_utf8_lossy(r.label()))
        }
        Some(Event::Capacity) => format!("capacity d{} {kind} {}", r.device_id, r.size),
        Some(e) => e.name().to_owned(),
        None => format!("event {}", r.event),
    }
}

fn briefs(records: &[Record]) -> Vec<String> {
    records.iter().map(brief).collect()
}

/// Every record belongs to an exited process whose live counters are zero.
fn assert_all_exited_and_balanced(run: &Run) {
    assert!(
        run.snapshot.processes.iter().all(|p| p.state == ProcessState::Exited),
        "{:?}",
        run.snapshot.processes
    );
    assert!(run.snapshot.counters.is_empty(), "live counters left: {:?}", run.snapshot.counters);
}

// ---------------------------------------------------------------- C API

fn check_c_api(api: &Program) {
    // Tracking on: exactly this sequence, then nothing after shutdown.
    let mut cmd = api.command();
    cmd.arg("on");
    let run = run_on_ring("api", vec![cmd]);
    assert_eq!(stdout(&run.outputs[0]), "api on ok");
    assert_eq!(String::from_utf8_lossy(&run.outputs[0].stderr), "", "nothing on stderr");
    let expected = [
        "process_start",
        "capacity d3 DRAM 1073741824",
        "mark phase-1",
        "alloc d3 DRAM #1 p0 @0x1000 4096 f0",
        "alloc d3 L1 #103 p7 @0x20000 2048 f1",
        "free d3 L1 #103 p7 @0x20000 2048 f1",
        "free d3 DRAM #1 p0 @0x1000 4096 f0",
        // A label longer than a record's 36 bytes goes on in a TEXT record.
        "mark 0123456789abcdefghijklmnopqrstuvwxyz",
        "text of 3 id1 #1 -and-the-rest",
        "process_exit",
    ];
    assert_eq!(briefs(&run.records), expected);
    let pids: HashSet<u32> = run.records.iter().map(|r| r.pid).collect();
    assert_eq!(pids.len(), 1);
    assert_all_exited_and_balanced(&run);

    // MEMTRACK_RING unset: silent no-ops.
    let mut cmd = api.command();
    cmd.arg("off");
    let (out, err) = run_alone(cmd);
    assert_eq!(out.trim_end(), "api off ok");
    assert_eq!(err, "", "hooks off print nothing");

    // A corrupt ring: one line on stderr, the program carries on, the file
    // is left alone.
    let bad = TempRing::new("api-corrupt");
    let junk = vec![0x5Au8; 9000];
    std::fs::write(bad.path(), &junk).unwrap();
    let mut cmd = api.command();
    cmd.env("MEMTRACK_RING", bad.path()).arg("corrupt").arg(bad.path());
    let (out, err) = run_alone(cmd);
    assert_eq!(out.trim_end(), "api corrupt ok");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {err}");
    assert!(lines[0].contains(&bad.path().display().to_string()), "{err}");
    assert!(lines[0].contains("running untracked"), "{err}");
    assert_eq!(std::fs::read(bad.path()).unwrap(), junk, "a corrupt file is not touched");
}

#[test]
fn c_api_shared() {
    check_c_api(&variant(API, "api-shared", Link::Shared, false));
}

#[test]
fn c_api_static() {
    check_c_api(&variant(API, "api-static", Link::Static, false));
}

#[test]
fn c_api_sanitized() {
    check_c_api(&variant(API, "api-asan", Link::Shared, true));
}

// ---------------------------------------------------------- concurrency

/// Checks the records of one `concurrency threads N M BASE` process.
fn check_threads_process(records: &[&Record], n: u64, m: u64, base: u64) {
    let events = |e| records.iter().filter(|r| r.event() == Some(e)).count() as u64;
    assert_eq!(events(Event::ProcessStart), 1);
    assert_eq!(events(Event::ProcessExit), 1);
    assert_eq!(events(Event::Alloc), n * m);
    assert_eq!(events(Event::Free), n * m);
    assert_eq!(records.len() as u64, 2 + 2 * n * m);
    // Each buffer: allocated once, then freed once, on its thread's device.
    let mut live: HashSet<u64> = HashSet::new();
    let mut seen: HashSet<u64> = HashSet::new();
    for r in records.iter().filter(|r| matches!(r.event(), Some(Event::Alloc | Event::Free))) {
        let (t, i) = ((r.buffer_id - base) >> 32, (r.buffer_id - base) & 0xFFFF_FFFF);
        assert!(t < n && i < m, "unexpected buffer id {:#x}", r.buffer_id);
        assert_eq!((r.device_id as u64, r.kind, r.size), (t % 8, kind::L1, 64));
        if r.event() == Some(Event::Alloc) {
            assert!(seen.insert(r.buffer_id) && live.insert(r.buffer_id), "double alloc {:#x}", r.buffer_id);
        } else {
            assert!(live.remove(&r.buffer_id), "free before alloc {:#x}", r.buffer_id);
        }
    }
    assert!(live.is_empty());
    assert_eq!(seen.len() as u64, n * m);
}

fn threads_cmd(p: &Program, n: u64, m: u64, base: u64) -> Command {
    let mut cmd = p.command();
    cmd.args(["threads", &n.to_string(), &m.to_string(), &base.to_string()]);
    cmd
}

fn check_threads(p: &Program) {
    let (n, m) = (4, 5000);
    let run = run_on_ring("threads", vec![threads_cmd(p, n, m, 0)]);
    assert_eq!(stdout(&run.outputs[0]), "threads ok");
    check_threads_process(&run.records.iter().collect::<Vec<_>>(), n, m, 0);
    assert_all_exited_and_balanced(&run);
}

#[test]
fn cxx_threads_on_one_ring_shared() {
    check_threads(&variant(CONCURRENCY, "concurrency-shared", Link::Shared, false));
}

#[test]
fn cxx_threads_on_one_ring_static() {
    check_threads(&variant(CONCURRENCY, "concurrency-static", Link::Static, false));
}

#[test]
fn cxx_threads_on_one_ring_sanitized() {
    check_threads(&variant(CONCURRENCY, "concurrency-asan", Link::Static, true));
}

#[test]
fn two_processes_on_one_ring() {
    let p = variant(CONCURRENCY, "concurrency-shared", Link::Shared, false);
    let (n, m, second) = (2, 5000, 1u64 << 48);
    let run = run_on_ring("two-procs", vec![threads_cmd(&p, n, m, 0), threads_cmd(&p, n, m, second)]);
    let mut by_pid: HashMap<u32, Vec<&Record>> = HashMap::new();
    for r in &run.records {
        by_pid.entry(r.pid).or_default().push(r);
    }
    assert_eq!(by_pid.len(), 2, "two writer processes");
    for records in by_pid.values() {
        let base = records.iter().find(|r| r.event() == Some(Event::Alloc)).unwrap().buffer_id & second;
        check_threads_process(records, n, m, base);
    }
    assert_eq!(run.snapshot.processes.len(), 2);
    assert_all_exited_and_balanced(&run);
}

/// libmemtrack loaded with `dlopen` (as Python loads tt_metal): each
/// thread's hook state starts a 128-byte line, although glibc `malloc`s
/// the library's thread-local blocks (32 threads: past the arenas of a
/// small machine, blocks a few hundred bytes apart); and every hook is
/// recorded.
#[test]
fn a_dlopened_library_keeps_each_threads_hook_state_on_lines_of_its_own() {
    let p = cc::build(&Build {
        name: "dlopen_tls",
        source: "dlopen_tls.c",
        lang: Lang::C,
        link: Link::None,
        sanitize: false,
        defines: &[],
    });
    let threads = 32;
    let mut cmd = p.command();
    cmd.arg(cc::lib_dir().join("libmemtrack.so")).arg(threads.to_string());
    let run = run_on_ring("dlopen-tls", vec![cmd]);
    let out = stdout(&run.outputs[0]);
    assert!(
        out.contains(&format!("dlopen_tls: 0 of {threads} thread-local blocks not 128-byte aligned")),
        "{out}"
    );
    let allocs = run.records.iter().filter(|r| r.event() == Some(Event::Alloc)).count();
    let frees = run.records.iter().filter(|r| r.event() == Some(Event::Free)).count();
    assert_eq!((allocs, frees), (threads, threads));
    assert_all_exited_and_balanced(&run);
}

const SECOND_THREAD: u64 = 1 << 40;
const CHILD: u64 = 1 << 41;

fn check_fork(p: &Program) {
    let m = 1000u64;
    let mut cmd = p.command();
    cmd.args(["fork", &m.to_string()]);
    let run = run_on_ring("fork", vec![cmd]);
    let line = stdout(&run.outputs[0]);
    let child: u32 = line.strip_prefix("fork child ").expect("fork child PID").parse().unwrap();
    let parent = run.records[0].pid;
    assert_ne!(parent, child);
    let of = |pid| run.records.iter().filter(|r| r.pid == pid).collect::<Vec<_>>();
    let (in_parent, in_child) = (of(parent), of(child));
    assert_eq!(in_parent.len() + in_child.len(), run.records.len(), "no third pid");
    // Parent: start, M allocs, M pairs from the second thread, M frees, exit.
    assert_eq!(in_parent.len() as u64, 4 * m + 2);
    // Child: start, M pairs, exit -- every one of its buffers under its pid.
    assert_eq!(in_child.len() as u64, 2 * m + 2);
    // (Start records carry a label where buffer events carry buffer_id.)
    let buffers = |records: &[&Record]| -> Vec<u64> {
        records
            .iter()
            .filter(|r| matches!(r.event(), Some(Event::Alloc | Event::Free)))
            .map(|r| r.buffer_id)
            .collect()
    };
    let (parent_ids, child_ids) = (buffers(&in_parent), buffers(&in_child));
    assert!(child_ids.iter().all(|id| id & CHILD != 0), "the child's events carry the child's pid");
    assert_eq!(child_ids.len() as u64, 2 * m);
    assert!(parent_ids.iter().all(|id| id & CHILD == 0));
    assert_eq!(parent_ids.iter().filter(|&&id| id & SECOND_THREAD != 0).count() as u64, 2 * m);
    assert_ne!(in_parent[0].process_slot, in_child[0].process_slot, "the child has its own table entry");
    // The child wrote in the middle of the parent's run.
    let child_start = in_child[0].ticket;
    assert!(
        in_parent.first().unwrap().ticket < child_start && child_start < in_parent.last().unwrap().ticket
    );
    assert_eq!(run.snapshot.processes.len(), 2);
    assert_all_exited_and_balanced(&run);
}

#[test]
fn fork_mid_run_records_the_child_under_its_own_pid() {
    check_fork(&variant(CONCURRENCY, "concurrency-shared", Link::Shared, false));
}

#[test]
fn fork_mid_run_sanitized() {
    check_fork(&variant(CONCURRENCY, "concurrency-asan", Link::Static, true));
}

fn check_thread_exit(p: &Program) {
    let m = 2000u64;
    let mut cmd = p.command();
    cmd.args(["thread-exit", &m.to_string()]);
    let run = run_on_ring("thread-exit", vec![cmd]);
    assert_eq!(stdout(&run.outputs[0]), "thread-exit ok");
    assert_eq!(run.records.len() as u64, 4 * m + 2);
    let a_allocs: Vec<_> = run
        .records
        .iter()
        .filter(|r| r.event() == Some(Event::Alloc) && r.buffer_id & SECOND_THREAD == 0)
        .collect();
    assert_eq!(a_allocs.len() as u64, m);
    assert!(a_allocs.iter().all(|r| r.device_id == 3 && r.kind == kind::DRAM));
    let a_exit = a_allocs.last().unwrap().ticket;
    // B kept writing after A exited: its last quarter comes later.
    let b_after =
        run.records.iter().filter(|r| r.buffer_id & SECOND_THREAD != 0 && r.ticket > a_exit).count() as u64;
    assert!(b_after >= 2 * (m / 4), "{b_after} of B's records after A exited");
    // A's buffers were all freed, from another thread.
    let frees: HashSet<u64> = run
        .records
        .iter()
        .filter(|r| r.event() == Some(Event::Free) && r.buffer_id & SECOND_THREAD == 0)
        .map(|r| r.buffer_id)
        .collect();
    assert_eq!(frees, a_allocs.iter().map(|r| r.buffer_id).collect());
    assert_all_exited_and_balanced(&run);
}

#[test]
fn a_thread_exiting_mid_run_loses_nothing() {
    check_thread_exit(&variant(CONCURRENCY, "concurrency-shared", Link::Shared, false));
}

#[test]
fn a_thread_exiting_mid_run_sanitized() {
    check_thread_exit(&variant(CONCURRENCY, "concurrency-asan", Link::Static, true));
}

// -------------------------------------------------------------- adapter

/// The records adapter.cpp's hooks must produce, in order.
fn adapter_expected() -> Vec<String> {
    let mut v = vec![
        "process_start".to_owned(),
        "alloc d2 L1 #11 p0 @0x1000 256 f0".to_owned(),
        "alloc d1 DRAM #12 p500 @0x2000 4096 f0".to_owned(),
        // The mesh buffer: backing buffer (ALIAS) first, then 8 device
        // buffers whose parent is the backing buffer's id.
        format!("alloc d0 DRAM #20 p0 @0x40000 1024 f{FLAG_ALIAS}"),
    ];
    v.extend((0..8).map(|d| format!("alloc d{d} DRAM #{} p20 @0x40000 1024 f0", 21 + d)));
    v.push("mark mesh-live".to_owned());
    v.extend((0..8).map(|d| format!("free d{d} DRAM #{} p20 @0x40000 1024 f0", 21 + d)));
    v.push(format!("free d0 DRAM #20 p0 @0x40000 1024 f{FLAG_ALIAS}"));
    // A mesh buffer with its own unique_id and no backing buffer.
    v.extend(
        [
            "alloc d4 L1 #31 p900 @0x800 32 f0",
            "alloc d5 L1 #32 p900 @0x800 32 f0",
            "free d4 L1 #31 p900 @0x800 32 f0",
            "free d5 L1 #32 p900 @0x800 32 f0",
            // Circular buffers (the second globally allocated) and a kernel.
            "alloc d3 CB #192 p500 @0x10000 2048 f0",
            "alloc d3 CB #193 p500 @0x20000 512 f1",
            "alloc d3 KERNEL #77 p500 @0x8000 1024 f0",
            "free d3 KERNEL #77 p500 @0x8000 1024 f0",
            "free d3 CB #192 p500 @0x10000 2048 f0",
            "free d3 CB #193 p500 @0x20000 512 f1",
            "free d1 DRAM #12 p500 @0x2000 4096 f0",
            "free d2 L1 #11 p0 @0x1000 256 f0",
            "process_exit",
        ]
        .map(str::to_owned),
    );
    v
}

fn check_adapter(p: &Program) {
    let mut cmd = p.command();
    cmd.arg("on");
    let run = run_on_ring("adapter", vec![cmd]);
    assert_eq!(stdout(&run.outputs[0]), "adapter on ok");
    assert_eq!(briefs(&run.records), adapter_expected());
    assert_all_exited_and_balanced(&run);

    // Off: the program checks that no accessor of the mocks was called.
    let mut cmd = p.command();
    cmd.arg("off");
    let (out, err) = run_alone(cmd);
    assert_eq!(out.trim_end(), "adapter off ok");
    assert_eq!(err, "");
}

#[test]
fn adapter_reports_mock_tt_metal_objects_exactly() {
    check_adapter(&variant(ADAPTER, "adapter-shared", Link::Shared, false));
}

#[test]
fn adapter_sanitized() {
    check_adapter(&variant(ADAPTER, "adapter-asan", Link::Shared, true));
}

#[test]
fn adapter_compiles_out_with_memtrack_disable() {
    // Not linked with libmemtrack at all: it would not link if the
    // disabled hooks still referenced the C ABI.
    let p = cc::build(&Build {
        name: "adapter-disabled",
        defines: &["MEMTRACK_DISABLE"],
        link: Link::None,
        ..ADAPTER
    });
    let ring = TempRing::new("adapter-disabled");
    let mut cmd = p.command();
    cmd.env("MEMTRACK_RING", ring.path()).arg("off");
    let (out, err) = run_alone(cmd);
    assert_eq!(out.trim_end(), "adapter off ok");
    assert_eq!(err, "");
    assert!(!ring.path().exists(), "no ring created");
}

// ------------------------------------------------------ untracked usage

const UNTRACKED: Build = Build {
    name: "untracked",
    source: "untracked.c",
    lang: Lang::C,
    link: Link::Shared,
    sanitize: false,
    defines: &[],
};

/// `memtrack_untracked_usage` on a ring whose 128-cell pool the program
/// fills itself (200 devices, one buffer each): what the live counters
/// cannot hold is there, exactly (the program's CHECKs), and the figure is
/// zeros when tracking is off.
fn check_untracked_usage(p: &Program) {
    let ring = TempRing::new("untracked");
    let mut cmd = p.command();
    cmd.env("MEMTRACK_RING", ring.path()).env("MEMTRACK_COUNTER_CELLS", "128").args(["on", "200"]);
    let (out, err) = run_alone(cmd);
    assert_eq!(err, "", "nothing on stderr");
    // The program created the ring, with the pool it was told to.
    assert_eq!(Ring::open(ring.path()).unwrap().counter_cells(), 128);
    let untracked: u64 = out
        .strip_prefix("untracked on ok: ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {out}"));
    // At most 128 of the 200 devices found a cell.
    assert!(untracked >= 200 - 128, "{out}");

    let mut cmd = p.command();
    cmd.env_remove("MEMTRACK_COUNTER_CELLS").arg("off");
    let (out, err) = run_alone(cmd);
    assert_eq!((out.trim_end(), err.as_str()), ("untracked off ok", ""));
}

#[test]
fn untracked_usage_shared() {
    check_untracked_usage(&variant(UNTRACKED, "untracked-shared", Link::Shared, false));
}

#[test]
fn untracked_usage_sanitized() {
    check_untracked_usage(&variant(UNTRACKED, "untracked-asan", Link::Shared, true));
}

// --------------------------------------------------------------- header

/// memtrack.h must define only `MEMTRACK_`-prefixed names: it is included
/// into tt_metal, whose `BufferType::DRAM`, `L1`, ... a bare `#define DRAM 0`
/// breaks. build.rs feeds cbindgen only the files of the C ABI.
#[test]
fn memtrack_h_defines_only_prefixed_names() {
    let header = std::fs::read_to_string(cc::repo_root().join("include/memtrack.h")).unwrap();
    let bare: Vec<&str> = header
        .lines()
        .filter_map(|l| l.strip_prefix("#define "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !name.starts_with("MEMTRACK_"))
        .collect();
    assert!(bare.is_empty(), "unprefixed macros in memtrack.h: {bare:?}");
}
