//! Real processes on one ring: writers through the C ABI in spawned helper
//! processes (this test binary, re-executed in a helper role), a writer
//! SIGKILLed between claim and publish, fork, and a corrupt ring.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempRing, drain_all};
use memtrack::ffi::*;
use memtrack::format::Event;
use memtrack::{Consumer, ProcessState, Record, Ring, RingOptions};

const ROLE: &str = "MEMTRACK_TEST_ROLE";

fn env_u64(name: &str) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    match role.as_str() {
        // T threads × E alloc/free events through the C ABI.
        "c-abi-writer" => {
            assert_eq!(memtrack_enabled(), 1, "MEMTRACK_RING is set");
            let (threads, events) = (env_u64("HELPER_THREADS"), env_u64("HELPER_EVENTS"));
            std::thread::scope(|s| {
                for t in 0..threads {
                    s.spawn(move || {
                        for i in 0..events / 2 {
                            let id = t << 32 | i;
                            memtrack_alloc(t as u32, MEMTRACK_KIND_L1, id, 0x1000, 64);
                            memtrack_free(t as u32, MEMTRACK_KIND_L1, id, 0x1000, 64);
                        }
                    });
                }
            });
            memtrack_shutdown();
            // Start and exit records, plus the events.
            println!("HELPER attempted {}", 2 + threads * (events / 2 * 2));
        }
        // Claims a slot and is killed before publishing it.
        "park" => {
            let path = std::env::var("MEMTRACK_RING").unwrap();
            let writer = memtrack::Writer::attach(Ring::open(std::path::Path::new(&path)).unwrap()).unwrap();
            writer.alloc(&memtrack::MemtrackBuffer { buffer_id: 7, size: 4096, ..Default::default() });
            assert!(writer.claim_without_publishing());
            println!("HELPER parked");
            std::thread::sleep(Duration::from_secs(60));
        }
        // Records around a fork(); the child records under its own pid.
        "fork" => {
            memtrack_alloc(0, MEMTRACK_KIND_DRAM, 1, 0, 100);
            // SAFETY: the child only calls memtrack and exits.
            let child = unsafe { libc::fork() };
            if child == 0 {
                memtrack_alloc(0, MEMTRACK_KIND_DRAM, 2, 0, 200);
                std::process::exit(0); // Runs the exit handler: shutdown.
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            memtrack_alloc(0, MEMTRACK_KIND_DRAM, 3, 0, 300);
            println!("HELPER child {child}");
        }
        // An unusable ring: the process carries on untracked.
        "corrupt" => {
            let path = std::ffi::CString::new(std::env::var("HELPER_PATH").unwrap()).unwrap();
            // SAFETY: a NUL-terminated string.
            let code = unsafe { memtrack_init(path.as_ptr()) };
            memtrack_alloc(0, 0, 1, 0, 1);
            // SAFETY: the other entry points, with NULL.
            unsafe {
                memtrack_mark(std::ptr::null());
                memtrack_alloc_buffer(std::ptr::null());
            }
            println!("HELPER code {code} enabled {}", memtrack_enabled());
        }
        // No MEMTRACK_RING: every hook is a no-op and nothing is created.
        "disabled" => {
            memtrack_alloc(0, 0, 1, 0, 1);
            memtrack_shutdown();
            memtrack_shutdown();
            memtrack_free(0, 0, 1, 0, 1);
            println!("HELPER enabled {}", memtrack_enabled());
        }
        other => panic!("unknown helper role {other}"),
    }
}

fn spawn(role: &str, ring: Option<&TempRing>, envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "helper", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env_remove("MEMTRACK_RING")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ring) = ring {
        cmd.env("MEMTRACK_RING", ring.path());
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn helper")
}

/// The helper's `HELPER ...` line and its stderr, after it exits.
fn finish(child: Child) -> (String, String) {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "helper failed: {stdout}\n{stderr}");
    // libtest prints "test helper ... " before our output on the same line.
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("HELPER ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no HELPER line: {stdout}"));
    (line.to_owned(), stderr)
}

/// Drains into `out` until every child has exited, then once more.
fn consume_while_running(consumer: &mut Consumer, children: &mut [Child], out: &mut Vec<Record>) {
    loop {
        out.extend(drain_all(consumer));
        if children.iter_mut().all(|c| c.try_wait().unwrap().is_some()) {
            out.extend(drain_all(consumer));
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn writer_processes_account_for_every_record() {
    let tmp = TempRing::new("procs");
    Ring::create(tmp.path(), RingOptions { capacity: 1024, ..RingOptions::default() }).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let envs = [("HELPER_THREADS", "2".to_owned()), ("HELPER_EVENTS", "20000".to_owned())];
    let mut children: Vec<Child> = (0..4).map(|_| spawn("c-abi-writer", Some(&tmp), &envs)).collect();
    let mut records = Vec::new();
    consume_while_running(&mut consumer, &mut children, &mut records);
    let attempted: u64 = children
        .into_iter()
        .map(|c| finish(c).0.strip_prefix("attempted ").unwrap().parse::<u64>().unwrap())
        .sum();
    let snapshot = consumer.ring().snapshot();
    assert_eq!(snapshot.progress.lost_writer_died, 0);
    assert_eq!(records.len() as u64 + snapshot.dropped, attempted, "attempted = delivered + dropped");
    assert_eq!(snapshot.progress.delivered, records.len() as u64);
    assert!(records.windows(2).all(|w| w[0].ticket + 1 == w[1].ticket), "tickets dense and ordered");
    // Each buffer's alloc comes before its free.
    let mut state: HashMap<(u32, u64), bool> = HashMap::new();
    for r in &records {
        match r.event() {
            Some(Event::Alloc) => assert!(state.insert((r.pid, r.buffer_id), true).is_none()),
            Some(Event::Free) => {
                let was = state.remove(&(r.pid, r.buffer_id));
                assert!(was.is_some() || snapshot.dropped > 0, "free before alloc");
            }
            _ => {}
        }
    }
    assert_eq!(snapshot.processes.len(), 4);
    assert!(snapshot.processes.iter().all(|p| p.state == ProcessState::Exited));
    // Every alloc was freed: the writers' live counters are back to zero.
    assert!(snapshot.counters.is_empty(), "{:?}", snapshot.counters);
}

#[test]
fn a_writer_killed_between_claim_and_publish_is_reclaimed_and_counted() {
    let tmp = TempRing::new("kill");
    Ring::create(tmp.path(), RingOptions { capacity: 64, ..RingOptions::default() }).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let mut child = spawn("park", Some(&tmp), &[]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().contains("HELPER parked")));
    // Alive: the consumer waits at the claimed slot.
    let before = drain_all(&mut consumer);
    std::thread::sleep(Duration::from_millis(10));
    let mut records = drain_all(&mut consumer);
    assert_eq!(consumer.progress().lost_writer_died, 0, "a live writer's claim is waited for");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // A live writer elsewhere keeps writing behind the dead claim.
    let writer = memtrack::Writer::attach(Ring::open(tmp.path()).unwrap()).unwrap();
    writer.mark(b"after");
    let deadline = Instant::now() + Duration::from_secs(5);
    while consumer.progress().lost_writer_died == 0 && Instant::now() < deadline {
        records.extend(drain_all(&mut consumer));
        std::thread::sleep(Duration::from_millis(1));
    }
    records.extend(drain_all(&mut consumer));
    let all: Vec<_> = before.iter().chain(&records).collect();
    assert_eq!(consumer.progress().lost_writer_died, 1);
    assert!(all.iter().any(|r| r.event() == Some(Event::Alloc) && r.buffer_id == 7));
    assert!(all.iter().any(|r| r.event() == Some(Event::Mark) && r.label() == b"after"));
    let p = consumer.progress();
    assert_eq!(p.delivered + p.lost_writer_died, p.committed, "every ticket accounted for");
    let states: Vec<_> = consumer.ring().processes().iter().map(|p| p.state).collect();
    assert!(states.contains(&ProcessState::Died), "{states:?}");
}

#[test]
fn a_forked_child_records_under_its_own_pid_and_entry() {
    let tmp = TempRing::new("fork");
    Ring::create(tmp.path(), RingOptions { capacity: 64, ..RingOptions::default() }).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let mut children = vec![spawn("fork", Some(&tmp), &[])];
    let mut records = Vec::new();
    consume_while_running(&mut consumer, &mut children, &mut records);
    let parent = children.pop().unwrap();
    let parent_pid = parent.id();
    let (line, _) = finish(parent);
    let child_pid: u32 = line.strip_prefix("child ").unwrap().parse().unwrap();
    let allocs: HashMap<u64, &Record> =
        records.iter().filter(|r| r.event() == Some(Event::Alloc)).map(|r| (r.buffer_id, r)).collect();
    assert_eq!(allocs.len(), 3);
    assert_eq!(allocs[&1].pid, parent_pid);
    assert_eq!(allocs[&2].pid, child_pid);
    assert_eq!(allocs[&3].pid, parent_pid);
    assert_ne!(allocs[&2].process_slot, allocs[&1].process_slot);
    let processes = consumer.ring().processes();
    let child = processes.iter().find(|p| p.pid == child_pid).expect("child in the table");
    assert_eq!(child.state, ProcessState::Exited, "the child's exit handler ran");
    let parent = processes.iter().find(|p| p.pid == parent_pid).unwrap();
    assert_eq!(parent.state, ProcessState::Exited);
}

#[test]
fn an_unusable_ring_leaves_the_process_running_untracked() {
    let tmp = TempRing::new("corrupt");
    std::fs::write(tmp.path(), vec![0xAB; 8192]).unwrap();
    let (line, stderr) = finish(spawn("corrupt", None, &[("HELPER_PATH", tmp.path().display().to_string())]));
    assert_eq!(line, format!("code {MEMTRACK_ERR_CORRUPT} enabled 0"));
    let complaints: Vec<_> = stderr.lines().filter(|l| l.contains("memtrack")).collect();
    assert_eq!(complaints.len(), 1, "one line: {stderr}");
    assert!(complaints[0].contains(&tmp.path().display().to_string()));
    assert!(complaints[0].contains("running untracked"));
}

#[test]
fn without_memtrack_ring_hooks_do_nothing() {
    let (line, stderr) = finish(spawn("disabled", None, &[]));
    assert_eq!(line, "enabled 0");
    assert!(!stderr.contains("memtrack:"), "{stderr}");
}

#[test]
fn strerror_describes_every_code() {
    for code in [MEMTRACK_OK, MEMTRACK_ERR_INVALID, MEMTRACK_ERR_CORRUPT, MEMTRACK_ERR_INTERNAL, 12345] {
        // SAFETY: strerror returns a static NUL-terminated string.
        let text = unsafe { std::ffi::CStr::from_ptr(memtrack_strerror(code)) };
        assert!(!text.is_empty());
    }
}

/// Processes that attach and exit all at once, many times: every one stays
/// in the table as exited while it has never-used entries (a registrant's
/// look at the table can be older than a process that registered and
/// exited meanwhile; that entry is not taken from the record of the
/// exited one, `Ring::register_process`).
#[test]
fn processes_that_exit_at_once_all_stay_in_the_table() {
    const PROCESSES: usize = 24;
    for round in 0..300 {
        let tmp = TempRing::new("exit-at-once");
        Ring::create(tmp.path(), RingOptions::default()).unwrap();
        let children: Vec<Child> = (0..PROCESSES)
            .map(|_| {
                spawn(
                    "c-abi-writer",
                    Some(&tmp),
                    &[("HELPER_THREADS", "0".into()), ("HELPER_EVENTS", "0".into())],
                )
            })
            .collect();
        let pids: Vec<u32> = children.iter().map(Child::id).collect();
        for child in children {
            finish(child);
        }
        let snapshot = Ring::open(tmp.path()).unwrap().snapshot();
        for pid in pids {
            let entry = snapshot.processes.iter().find(|p| p.pid == pid);
            assert_eq!(entry.map(|p| p.state), Some(ProcessState::Exited), "round {round}: pid {pid}");
        }
    }
}
