//! Scale: 16 writer processes × 4 threads each on one ring, through the C
//! ABI, with one consumer: every attempted record is delivered or dropped
//! and counted (per process, exactly), each thread's records arrive in the
//! order it wrote them, and the writers' live counters end at zero.

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{TempRing, drain_all};
use memtrack::ffi::*;
use memtrack::{Consumer, Event, ProcessState, Record, Ring, RingOptions};
use reliability::{env_u64, helper_command, helper_role};

const PROCESSES: usize = 16;
const THREADS: u64 = 4;

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Some(role) = helper_role() else { return };
    assert_eq!(role, "scale-writer");
    let events = env_u64("HELPER_EVENTS", 2000);
    // Attach before the threads start (the race with the lazy attach is
    // lifecycle.rs's hooks_racing_the_first_attach_are_recorded_or_counted).
    // SAFETY: NULL: $MEMTRACK_RING.
    assert_eq!(unsafe { memtrack_init(std::ptr::null()) }, MEMTRACK_OK);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for i in 0..events / 2 {
                    // The thread in the device id, its sequence in the buffer id.
                    memtrack_alloc(t as u32, MEMTRACK_KIND_DRAM, i, 0, 64 + t);
                    memtrack_free(t as u32, MEMTRACK_KIND_DRAM, i, 0, 64 + t);
                }
            });
        }
    });
    memtrack_shutdown();
    println!("HELPER attempted {}", 2 + THREADS * (events / 2 * 2));
}

#[test]
fn sixteen_processes_of_four_threads_on_one_ring_account_exactly() {
    let tmp = TempRing::new("scale");
    Ring::create(tmp.path(), RingOptions { capacity: 1 << 14, ..RingOptions::default() }).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let events = 3000 * reliability::soak();
    // Spawned from another thread while this one drains: a consumer that
    // takes nothing for a while is a stalled one, and writers drop at once.
    let path = tmp.path().to_path_buf();
    let spawner = std::thread::spawn(move || -> Vec<Child> {
        (0..PROCESSES)
            .map(|_| {
                let mut cmd = helper_command("scale-writer");
                // A long full-ring wait: the consumer keeps up, so nearly all is delivered.
                cmd.env("MEMTRACK_RING", &path)
                    .env("HELPER_EVENTS", events.to_string())
                    .env("MEMTRACK_WAIT_US", "200000")
                    .stdout(Stdio::piped());
                cmd.spawn().unwrap()
            })
            .collect()
    });
    let mut records: Vec<Record> = Vec::new();
    while !spawner.is_finished() {
        records.extend(drain_all(&mut consumer));
        std::thread::sleep(Duration::from_micros(100));
    }
    let mut children = spawner.join().unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        let n = records.len();
        records.extend(drain_all(&mut consumer));
        if children.iter_mut().all(|c| c.try_wait().unwrap().is_some()) && consumer.caught_up() {
            records.extend(drain_all(&mut consumer));
            break;
        }
        assert!(Instant::now() < deadline, "did not finish");
        if records.len() == n {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let s = consumer.ring().snapshot();
    let mut attempted_total = 0;
    for child in children {
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let attempted: u64 = stdout
            .lines()
            .find_map(|l| l.split_once("HELPER attempted ").map(|(_, n)| n.trim().parse().unwrap()))
            .unwrap();
        attempted_total += attempted;
        let entry = s.processes.iter().find(|p| p.pid == pid).expect("in the table");
        assert_eq!(entry.state, ProcessState::Exited);
        let mine: Vec<&Record> = records.iter().filter(|r| r.pid == pid).collect();
        assert_eq!(
            mine.len() as u64 + entry.dropped,
            attempted,
            "pid {pid}: delivered + dropped = attempted"
        );
        // Each thread's events in order: allocs by increasing id, each
        // free after its alloc.
        let mut last: HashMap<u32, (u64, Event)> = HashMap::new();
        for r in mine.iter().filter(|r| matches!(r.event(), Some(Event::Alloc | Event::Free))) {
            let e = r.event().unwrap();
            if let Some(&(id, prev)) = last.get(&r.device_id) {
                let forward = (r.buffer_id, e == Event::Free) > (id, prev == Event::Free);
                assert!(
                    forward,
                    "pid {pid} thread {}: {:?} {} after {:?} {}",
                    r.device_id, e, r.buffer_id, prev, id
                );
            }
            assert_eq!(r.size, 64 + r.device_id as u64);
            last.insert(r.device_id, (r.buffer_id, e));
        }
    }
    assert_eq!(s.processes.len(), PROCESSES);
    assert_eq!(
        records.len() as u64 + s.dropped,
        attempted_total,
        "per ring: attempted = delivered + dropped"
    );
    assert_eq!(s.progress.delivered, records.len() as u64);
    assert_eq!(s.progress.lost_writer_died + s.progress.lost_reader_died, 0);
    assert!(records.windows(2).all(|w| w[0].ticket + 1 == w[1].ticket), "tickets dense and in order");
    assert!(s.counters.is_empty(), "every alloc freed: {:?}", s.counters);
    eprintln!(
        "{} records from {PROCESSES} processes × {THREADS} threads, {} dropped, in {:.1?}",
        records.len(),
        s.dropped,
        started.elapsed()
    );
}
