//! Process and library lifecycles around the C ABI: a library unloaded
//! with dlclose while the program runs on (its fork and exit handlers must
//! not point into unloaded code), fork without exec with the child killed
//! while the parent's threads write, threads that come and go mid-stream,
//! and `memtrack_shutdown` called twice while other threads are inside
//! hooks, with events after it.

#[path = "common/cc.rs"]
mod cc;
mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cc::{Build, Lang, Link};
use common::{TempRing, drain_all};
use memtrack::ffi::*;
use memtrack::{Consumer, Event, ProcessState, Record, Ring, RingOptions};
use reliability::{Rng, env_u64, helper_command, helper_role, iterations, kill};

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Some(role) = helper_role() else { return };
    match role.as_str() {
        // Two threads write; a forked child (no exec) writes until the test
        // kills it; then the threads stop and the parent shuts down.
        "fork-and-kill" => {
            let stop = AtomicBool::new(false);
            let attempted = [AtomicU64::new(0), AtomicU64::new(0)];
            memtrack_mark_str("parent");
            std::thread::scope(|s| {
                for (t, count) in attempted.iter().enumerate() {
                    let stop = &stop;
                    s.spawn(move || {
                        let mut i = 0;
                        while !stop.load(Ordering::Relaxed) {
                            memtrack_alloc(t as u32, MEMTRACK_KIND_DRAM, i, 0, 64);
                            memtrack_free(t as u32, MEMTRACK_KIND_DRAM, i, 0, 64);
                            i += 1;
                            count.store(2 * i, Ordering::Relaxed);
                        }
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
                // SAFETY: the child only calls memtrack hooks, prints and loops.
                let child = unsafe { libc::fork() };
                if child == 0 {
                    memtrack_alloc(9, MEMTRACK_KIND_L1, 1, 0, 4096);
                    println!("HELPER child {}", std::process::id());
                    for i in 2.. {
                        memtrack_alloc(9, MEMTRACK_KIND_L1, i, 0, 1);
                        memtrack_free(9, MEMTRACK_KIND_L1, i, 0, 1);
                    }
                }
                let mut status = 0;
                // SAFETY: our own child, killed by the test.
                unsafe { libc::waitpid(child, &mut status, 0) };
                assert!(libc::WIFSIGNALED(status));
                std::thread::sleep(Duration::from_millis(5));
                stop.store(true, Ordering::Relaxed);
            });
            memtrack_shutdown();
            let total: u64 = attempted.iter().map(|a| a.load(Ordering::Relaxed)).sum();
            // Start, mark, the threads' events, exit.
            println!("HELPER attempted {}", total + 3);
        }
        // Threads that start, write and exit while one long-lived thread
        // writes throughout.
        "thread-churn" => {
            let (waves, per_wave, events) = (env_u64("HELPER_WAVES", 20), 8u64, 200u64);
            std::thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..waves * events {
                        memtrack_alloc(0, MEMTRACK_KIND_L1, i, 0, 1);
                        memtrack_free(0, MEMTRACK_KIND_L1, i, 0, 1);
                    }
                });
                for wave in 0..waves {
                    std::thread::scope(|w| {
                        for t in 0..per_wave {
                            w.spawn(move || {
                                let device = (1 + wave * per_wave + t) as u32;
                                for i in 0..events {
                                    memtrack_alloc(device, MEMTRACK_KIND_DRAM, i, 0, 8);
                                    memtrack_free(device, MEMTRACK_KIND_DRAM, i, 0, 8);
                                }
                            });
                        }
                    });
                }
            });
            memtrack_shutdown();
            println!("HELPER attempted {}", 2 + waves * events * 2 + waves * per_wave * events * 2);
        }
        // Four threads in hooks while the main thread shuts down twice; the
        // threads go on calling hooks after the shutdown.
        "shutdown-race" => {
            let shut = AtomicBool::new(false);
            let after = AtomicU64::new(0);
            std::thread::scope(|s| {
                for t in 0..4u32 {
                    let (shut, after) = (&shut, &after);
                    s.spawn(move || {
                        let mut i = 0u64;
                        // Until well after the shutdown.
                        while after.load(Ordering::Relaxed) < 40_000 {
                            memtrack_alloc(t, MEMTRACK_KIND_DRAM, i, 0, 1);
                            if shut.load(Ordering::Relaxed) {
                                after.fetch_add(1, Ordering::Relaxed);
                            }
                            i += 1;
                        }
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
                memtrack_shutdown();
                shut.store(true, Ordering::Relaxed);
                memtrack_shutdown();
            });
            // After shutdown: every entry point is a no-op.
            memtrack_alloc(0, 0, 1, 0, 1);
            memtrack_mark_str("after");
            memtrack_set_capacity(0, 0, 1);
            assert_eq!(memtrack_enabled(), 0);
            // SAFETY: NULL: $MEMTRACK_RING.
            let code = unsafe { memtrack_init(std::ptr::null()) };
            println!("HELPER init-after {code}");
        }
        // Eight threads make their first hook call at once: one attaches
        // lazily, the others must wait for it (or count what they drop).
        "attach-race" => {
            let start = std::sync::Barrier::new(8);
            std::thread::scope(|s| {
                for t in 0..8u32 {
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        for i in 0..200 {
                            memtrack_alloc(t, MEMTRACK_KIND_DRAM, i, 0, 1);
                        }
                    });
                }
            });
            memtrack_shutdown();
            println!("HELPER attempted {}", 2 + 8 * 200);
        }
        other => panic!("unknown helper role {other}"),
    }
}

fn memtrack_mark_str(label: &str) {
    let label = std::ffi::CString::new(label).unwrap();
    // SAFETY: a NUL-terminated string.
    unsafe { memtrack_mark(label.as_ptr()) };
}

fn spawn(role: &str, ring: &TempRing, envs: &[(&str, String)]) -> Child {
    let mut cmd = helper_command(role);
    cmd.env("MEMTRACK_RING", ring.path()).stdout(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Drains until `child` has exited and the consumer caught up (bounded).
fn consume_until_exit(consumer: &mut Consumer, child: &mut Child, records: &mut Vec<Record>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        records.extend(drain_all(consumer));
        if child.try_wait().unwrap().is_some() && consumer.caught_up() {
            records.extend(drain_all(consumer));
            return;
        }
        assert!(Instant::now() < deadline, "the helper or the reader did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn helper_lines(child: &mut Child) -> Vec<String> {
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    out.lines().filter_map(|l| l.split_once("HELPER ").map(|(_, r)| r.to_owned())).collect()
}

#[test]
fn a_library_unloaded_with_dlclose_leaves_no_handler_behind() {
    let program = cc::build(&Build {
        name: "dlclose",
        source: "reliability/dlclose.c",
        lang: Lang::C,
        link: Link::None,
        sanitize: false,
        defines: &[],
    });
    let tmp = TempRing::new("dlclose");
    Ring::create(tmp.path(), RingOptions { capacity: 64, ..RingOptions::default() }).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let out = program
        .command()
        .arg(cc::lib_dir().join("libmemtrack.so"))
        .env("MEMTRACK_RING", tmp.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "crashed or failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", stdout.trim());
    assert!(stdout.starts_with("dlclose "));
    let records = drain_all(&mut consumer);
    let events: Vec<_> = records.iter().map(|r| r.event().unwrap()).collect();
    assert_eq!(
        events,
        [Event::ProcessStart, Event::Alloc, Event::Alloc, Event::Alloc, Event::Free, Event::ProcessExit],
        "the exit handler ran once, at dlclose or at exit"
    );
    let processes = consumer.ring().processes();
    assert_eq!(processes.len(), 1, "the forked child never attached");
    assert_eq!(processes[0].state, ProcessState::Exited);
}

#[test]
fn a_forked_child_killed_mid_stream_leaves_the_parent_exact() {
    let mut rng = Rng::from_env("fork_and_kill");
    for _ in 0..iterations(3) {
        let tmp = TempRing::new("fork-kill");
        Ring::create(tmp.path(), RingOptions { capacity: 4096, ..RingOptions::default() }).unwrap();
        let mut consumer = Consumer::attach(tmp.path()).unwrap();
        let mut parent = spawn("fork-and-kill", &tmp, &[]);
        let mut lines = BufReader::new(parent.stdout.take().unwrap()).lines();
        let child_pid: i32 = loop {
            let line = lines.next().expect("the child's line").unwrap();
            if let Some((_, pid)) = line.split_once("HELPER child ") {
                break pid.parse().unwrap();
            }
        };
        let mut records = Vec::new();
        let until = Instant::now() + Duration::from_micros(rng.below(20_000));
        while Instant::now() < until {
            records.extend(drain_all(&mut consumer));
        }
        // SAFETY: the child is alive until this kill (its parent waits for it).
        assert_eq!(unsafe { libc::kill(child_pid, libc::SIGKILL) }, 0);
        consume_until_exit(&mut consumer, &mut parent, &mut records);
        let attempted: u64 = lines
            .map_while(Result::ok)
            .find_map(|l| l.split_once("HELPER attempted ").map(|(_, n)| n.parse().unwrap()))
            .expect("the parent's count");
        assert!(parent.wait().unwrap().success());
        let s = consumer.ring().snapshot();
        let parent_pid = parent.id();
        let by = |pid: u32| records.iter().filter(|r| r.pid == pid).count() as u64;
        let parent_entry = s.processes.iter().find(|p| p.pid == parent_pid).unwrap();
        assert_eq!(parent_entry.state, ProcessState::Exited);
        assert_eq!(by(parent_pid) + parent_entry.dropped, attempted, "the parent's records, exactly");
        let child = s.processes.iter().find(|p| p.pid == child_pid as u32).expect("the child's own entry");
        assert_eq!(child.state, ProcessState::Died);
        assert_ne!(child.slot, parent_entry.slot);
        assert!(s.progress.lost_writer_died <= 1, "at most the child's one in-flight record");
        // Each of the parent's threads in order, alloc before free.
        let mut last: HashMap<u32, (u64, bool)> = HashMap::new();
        for r in records.iter().filter(|r| r.pid == parent_pid && r.event() == Some(Event::Alloc)) {
            if let Some((prev, _)) = last.insert(r.device_id, (r.buffer_id, true)) {
                assert!(prev < r.buffer_id);
            }
        }
        kill(&mut parent);
    }
}

#[test]
fn threads_exiting_mid_stream_lose_nothing() {
    let tmp = TempRing::new("churn");
    Ring::create(tmp.path(), RingOptions { capacity: 1 << 14, ..RingOptions::default() }).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let waves = 10 * reliability::soak();
    let mut child = spawn("thread-churn", &tmp, &[("HELPER_WAVES", waves.to_string())]);
    let mut records = Vec::new();
    consume_until_exit(&mut consumer, &mut child, &mut records);
    let attempted: u64 = helper_lines(&mut child)[0].strip_prefix("attempted ").unwrap().parse().unwrap();
    let s = consumer.ring().snapshot();
    assert_eq!(records.len() as u64 + s.dropped, attempted);
    assert_eq!(s.progress.lost_writer_died, 0);
    assert!(s.counters.is_empty(), "every alloc freed: {:?}", s.counters);
    assert_eq!(s.processes[0].state, ProcessState::Exited);
}

#[test]
fn shutdown_twice_while_threads_are_in_hooks_then_events_after_it() {
    let tmp = TempRing::new("shutdown");
    Ring::create(tmp.path(), RingOptions { capacity: 1 << 16, ..RingOptions::default() }).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    // Hooks wait for room rather than drop (the exit record included) when
    // this reader is off the CPU a while: the machine may be busy, and a
    // release build fills the ring in well under a millisecond.
    let mut child = spawn("shutdown-race", &tmp, &[("MEMTRACK_WAIT_US", "1000000".to_owned())]);
    let mut records = Vec::new();
    consume_until_exit(&mut consumer, &mut child, &mut records);
    assert!(child.wait().unwrap().success());
    assert_eq!(helper_lines(&mut child), [format!("init-after {MEMTRACK_ERR_SHUTDOWN}")]);
    let exits: Vec<usize> =
        (0..records.len()).filter(|&i| records[i].event() == Some(Event::ProcessExit)).collect();
    assert_eq!(exits.len(), 1, "one exit record for two shutdowns");
    // Hooks that had loaded the writer before the shutdown may land after
    // the exit record (one per thread at most); none started after it.
    let late = records[exits[0] + 1..].len();
    assert!(late <= 4, "{late} records after the exit record");
    assert!(!records.iter().any(|r| r.event() == Some(Event::Mark) || r.event() == Some(Event::Capacity)));
    let s = consumer.ring().snapshot();
    assert_eq!(s.processes[0].state, ProcessState::Exited);
    assert_eq!(s.dropped, 0);
}

/// Hooks on other threads while one thread does the first, lazy attach
/// wait for it (bounded) instead of returning untracked: every attempted
/// record is delivered or counted dropped.
#[test]
fn hooks_racing_the_first_attach_are_recorded_or_counted() {
    for _ in 0..iterations(5) {
        let tmp = TempRing::new("attach-race");
        Ring::create(tmp.path(), RingOptions { capacity: 1 << 14, ..RingOptions::default() }).unwrap();
        let mut consumer = Consumer::attach(tmp.path()).unwrap();
        let mut child = spawn("attach-race", &tmp, &[]);
        let mut records = Vec::new();
        consume_until_exit(&mut consumer, &mut child, &mut records);
        let attempted: u64 = helper_lines(&mut child)[0].strip_prefix("attempted ").unwrap().parse().unwrap();
        let s = consumer.ring().snapshot();
        assert_eq!(records.len() as u64 + s.dropped, attempted, "attempted = delivered + dropped");
    }
}
