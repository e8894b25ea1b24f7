//! The consumer of a format 3 ring, with real processes: writer threads in
//! a helper process each holding a sub-ring (some falling back to the
//! shared ring when theirs is full), handing buffers to one another through
//! memory, and a reader in another process. One buffer's ALLOC on one
//! thread and its FREE on another come out ALLOC first; merged tickets
//! increase; a reader SIGKILLed mid-stream is replaced with exact
//! accounting; an idle thread holding a sub-ring holds nothing back.
//!
//! No timed upper bound is asserted (a shared, noisy machine).

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::TempRing;
use memtrack::format::{DEFAULT_COUNTER_CELLS, subring_slots_offset};
use memtrack::{Consumer, Event, MemtrackBuffer, Record, Ring, RingOptions, Writer};
use reliability::{helper_command, helper_role, kill, wait_until};

/// Writer threads of the hand-over helper.
const THREADS: u64 = 3;
/// Buffers each of them allocates (and another one frees).
const BUFFERS_PER_THREAD: u64 = 20_000;
const SUBRINGS: u32 = 4;
/// Small sub-rings, so that busy threads also fall back to the shared ring.
const SUBRING_CAPACITY: u32 = 256;

fn options() -> RingOptions {
    RingOptions {
        capacity: 4096,
        subrings: SUBRINGS,
        subring_capacity: SUBRING_CAPACITY,
        ..RingOptions::default()
    }
}

fn buffer(id: u64) -> MemtrackBuffer {
    MemtrackBuffer { buffer_id: id, size: 64, address: id << 6, ..Default::default() }
}

fn writer_from_env() -> Writer {
    let path = std::env::var("MEMTRACK_RING").unwrap();
    let writer = Writer::attach(Ring::open(Path::new(&path)).unwrap()).unwrap();
    writer.use_subrings(true);
    writer
}

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Some(role) = helper_role() else { return };
    match role.as_str() {
        // THREADS threads; thread t allocates its buffers and hands each to
        // thread t + 1 through a channel (memory: a happens-before edge),
        // which frees it. Then a clean shutdown.
        "handover" => {
            let writer = writer_from_env();
            let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel::<u64>()).unzip();
            std::thread::scope(|s| {
                for (t, receiver) in receivers.into_iter().enumerate() {
                    let next = senders[(t + 1) % THREADS as usize].clone();
                    let writer = &writer;
                    s.spawn(move || {
                        let first = (t as u64 + 1) << 32;
                        let mut freed = 0;
                        for id in first..first + BUFFERS_PER_THREAD {
                            writer.alloc(&buffer(id));
                            next.send(id).unwrap();
                            while let Ok(handed) = receiver.try_recv() {
                                writer.free(&buffer(handed));
                                freed += 1;
                            }
                        }
                        drop(next);
                        while freed < BUFFERS_PER_THREAD {
                            let handed = receiver.recv().unwrap();
                            writer.free(&buffer(handed));
                            freed += 1;
                        }
                    });
                }
                drop(senders);
            });
            writer.shutdown();
        }
        // A consumer that takes and commits until it is killed.
        "reader" => {
            let path = std::env::var("MEMTRACK_RING").unwrap();
            let mut consumer = Consumer::attach(Path::new(&path)).unwrap();
            println!("HELPER ready");
            let mut buf = Vec::new();
            loop {
                let handled = consumer.drain_due(usize::MAX, &mut buf, |_| Ok::<(), ()>(())).unwrap();
                consumer.pause_if_idle(handled);
            }
        }
        // One thread writes once and then idles holding its sub-ring; then
        // another writes once. Waits to be killed.
        "idle" => {
            let writer = writer_from_env();
            std::thread::scope(|s| {
                let (wrote, written) = mpsc::channel();
                let writer = &writer;
                s.spawn(move || {
                    writer.alloc(&buffer(1));
                    wrote.send(()).unwrap();
                    std::thread::sleep(Duration::from_secs(60));
                });
                written.recv().unwrap();
                writer.alloc(&buffer(2));
                println!("HELPER ready");
                std::thread::sleep(Duration::from_secs(60));
            });
        }
        // One thread claims a slot of its sub-ring and never fills it; the
        // main thread writes once, shuts down and exits cleanly while that
        // thread still holds the claim.
        "exit-holding-claim" => {
            // Leaked: the claiming thread outlives every scope of main's.
            let shared: &'static Writer = Box::leak(Box::new(writer_from_env()));
            let (claimed, claim_held) = mpsc::channel();
            std::thread::spawn(move || {
                shared.alloc(&buffer(1));
                assert!(shared.claim_own_without_publishing(), "a sub-ring slot claimed");
                claimed.send(()).unwrap();
                std::thread::sleep(Duration::from_secs(60));
            });
            claim_held.recv().unwrap();
            shared.alloc(&buffer(2));
            shared.shutdown();
            std::process::exit(0);
        }
        other => panic!("unknown helper role {other}"),
    }
}

/// Waits for a helper's "HELPER ready" line (the test harness prints its
/// own lines before it).
fn wait_ready(child: &mut std::process::Child) {
    let mut lines = BufReader::new(child.stdout.as_mut().unwrap()).lines();
    while !lines.next().expect("a HELPER line").unwrap().contains("HELPER ready") {}
}

/// Records a writer of the hand-over helper attempts: its start record,
/// the allocations and frees, its exit record.
const HANDOVER_ATTEMPTS: u64 = 2 + 2 * THREADS * BUFFERS_PER_THREAD;

/// Whether a sub-ring's first slot holds a record or held one: a slot the
/// consumer freed holds a later lap's EMPTY state, never 0.
fn some_subring_was_used(path: &Path) -> bool {
    let file = std::fs::File::open(path).unwrap();
    (0..SUBRINGS as usize).any(|i| {
        let offset = subring_slots_offset(DEFAULT_COUNTER_CELLS, SUBRINGS, SUBRING_CAPACITY, i);
        let mut word = [0u8; 8];
        file.read_exact_at(&mut word, offset as u64).unwrap();
        u64::from_le_bytes(word) != 0
    })
}

/// Drains `consumer` beside `child` until it exited and nothing is left.
fn drain_beside(consumer: &mut Consumer, child: &mut std::process::Child, out: &mut Vec<Record>) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut buf = Vec::new();
    loop {
        let handled = consumer
            .drain_due(usize::MAX, &mut buf, |r| {
                out.extend_from_slice(r);
                Ok::<(), ()>(())
            })
            .unwrap();
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the writer did not end");
        consumer.pause_if_idle(handled);
    }
    // Then everything (a drain waits out the watermark itself): the writer
    // exited, so once every ring is taken up to its frontier, nothing is left.
    while !consumer.caught_up() {
        assert!(Instant::now() < deadline, "records left behind");
        consumer
            .drain(usize::MAX, &mut buf, |r| {
                out.extend_from_slice(r);
                Ok::<(), ()>(())
            })
            .unwrap();
    }
}

/// Checks what a reader delivered of the hand-over helper's records: each
/// buffer's FREE after its ALLOC (when both were delivered), none twice,
/// and tickets that increase. Returns the number of unknown frees.
fn check_handover(records: &[Record]) -> usize {
    assert!(records.windows(2).all(|w| w[0].ticket < w[1].ticket), "merged tickets increase");
    let mut state: HashMap<u64, Event> = HashMap::new();
    let mut unknown_frees = 0;
    for r in records {
        match r.event() {
            Some(Event::Alloc) => {
                let before = state.insert(r.buffer_id, Event::Alloc);
                assert!(before.is_none(), "buffer {:#x}: ALLOC after its {before:?}", r.buffer_id);
            }
            Some(Event::Free) => match state.insert(r.buffer_id, Event::Free) {
                Some(Event::Alloc) => {}
                Some(_) => panic!("buffer {:#x} freed twice", r.buffer_id),
                None => unknown_frees += 1,
            },
            _ => {}
        }
    }
    unknown_frees
}

#[test]
fn buffers_handed_between_threads_come_out_alloc_first_with_increasing_tickets() {
    handover(options());
}

/// The same with sub-rings larger than a merged round's look
/// (`sources::MERGED_LOOK`, 512 tickets): each round then sees only part
/// of each busy sub-ring, and bounds the others by the last stamp it saw.
#[test]
fn buffers_handed_between_threads_come_out_in_order_through_rounds_that_see_part_of_each_sub_ring() {
    handover(RingOptions { subring_capacity: 8192, ..options() });
}

fn handover(options: RingOptions) {
    let tmp = TempRing::new("subrings-handover");
    Ring::create(tmp.path(), options).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let mut child = helper_command("handover").env("MEMTRACK_RING", tmp.path()).spawn().unwrap();
    let mut records = Vec::new();
    drain_beside(&mut consumer, &mut child, &mut records);
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(child.wait().unwrap().success(), "{stderr}");
    assert!(some_subring_was_used(tmp.path()), "the writer threads used no sub-ring");
    let snapshot = consumer.ring().snapshot();
    let progress = consumer.progress();
    // Exact accounting, summed over the rings.
    assert_eq!(progress.delivered, records.len() as u64);
    assert_eq!(progress.delivered + snapshot.dropped + progress.lost_writer_died, HANDOVER_ATTEMPTS);
    assert_eq!(progress.lost_reader_died, 0);
    assert_eq!(
        records.iter().map(|r| r.ticket).collect::<Vec<_>>(),
        (0..records.len() as u64).collect::<Vec<_>>()
    );
    let unknown_frees = check_handover(&records);
    if snapshot.dropped == 0 {
        // Nothing dropped: every FREE's ALLOC came out before it, and
        // nothing is left allocated.
        assert_eq!(unknown_frees, 0);
        let allocs = records.iter().filter(|r| r.event() == Some(Event::Alloc)).count() as u64;
        assert_eq!(allocs, THREADS * BUFFERS_PER_THREAD);
    } else {
        eprintln!("{} records dropped (a starved reader): unknown frees not checked", snapshot.dropped);
    }
}

#[test]
fn a_reader_killed_mid_stream_is_replaced_with_exact_accounting() {
    for (round, delay_ms) in [5u64, 40, 120].into_iter().enumerate() {
        let tmp = TempRing::new(&format!("subrings-restart-{round}"));
        Ring::create(tmp.path(), options()).unwrap();
        let mut reader =
            helper_command("reader").env("MEMTRACK_RING", tmp.path()).stdout(Stdio::piped()).spawn().unwrap();
        wait_ready(&mut reader);
        let mut writer = helper_command("handover").env("MEMTRACK_RING", tmp.path()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill(&mut reader);
        let mut consumer = Consumer::attach(tmp.path()).unwrap();
        let resumed = consumer.progress();
        assert_eq!(resumed.committed, resumed.taken, "the successor counts what its predecessor held");
        let mut records = Vec::new();
        drain_beside(&mut consumer, &mut writer, &mut records);
        assert!(wait_until(&mut writer, Instant::now(), "writer").success());
        // The successor's tickets go on from the sum of the rings' positions.
        assert!(records.first().is_none_or(|r| r.ticket >= resumed.taken));
        assert!(records.windows(2).all(|w| w[0].ticket < w[1].ticket), "merged tickets increase");
        let p = consumer.progress();
        let dropped = consumer.ring().snapshot().dropped;
        assert_eq!(p.committed, p.delivered + p.lost_writer_died + p.lost_reader_died);
        assert_eq!(
            p.delivered + p.lost_writer_died + p.lost_reader_died + dropped,
            HANDOVER_ATTEMPTS,
            "round {round}"
        );
        assert_eq!(p.delivered - resumed.delivered, records.len() as u64);
    }
}

#[test]
fn an_idle_thread_holding_a_sub_ring_holds_back_no_other_record() {
    let tmp = TempRing::new("subrings-idle");
    Ring::create(tmp.path(), options()).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let latency = consumer.batch_policy().latency;
    let mut child =
        helper_command("idle").env("MEMTRACK_RING", tmp.path()).stdout(Stdio::piped()).spawn().unwrap();
    wait_ready(&mut child);
    assert!(some_subring_was_used(tmp.path()), "the writer threads used no sub-ring");
    // A look starts the records' clock; the first look after the latency
    // bound takes them, whatever the idle thread's sub-ring says.
    let mut out = Vec::new();
    consumer.take_due(usize::MAX, &mut out);
    consumer.commit();
    std::thread::sleep(latency);
    consumer.take_due(usize::MAX, &mut out);
    consumer.commit();
    let ids: Vec<u64> = out.iter().filter(|r| r.event() == Some(Event::Alloc)).map(|r| r.buffer_id).collect();
    assert_eq!(ids, [1, 2], "{out:?}");
    kill(&mut child);
}

/// A process that exits cleanly while one of its threads holds a claim it
/// never filled: once the process is gone the claim is a dead writer's
/// (counted lost), and the records after it, its exit record included,
/// are delivered.
#[test]
fn a_claim_left_unfilled_by_a_process_that_exits_cleanly_is_lost_and_passed() {
    let tmp = TempRing::new("subrings-exit-claim");
    Ring::create(tmp.path(), options()).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let status = helper_command("exit-holding-claim").env("MEMTRACK_RING", tmp.path()).status().unwrap();
    assert!(status.success());
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !records.iter().any(|r: &Record| r.event() == Some(Event::ProcessExit)) {
        assert!(Instant::now() < deadline, "no exit record in 5 s: {records:?} {:?}", consumer.progress());
        consumer
            .drain(usize::MAX, &mut Vec::new(), |batch| {
                records.extend_from_slice(batch);
                Ok::<(), ()>(())
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let ids: Vec<u64> =
        records.iter().filter(|r| r.event() == Some(Event::Alloc)).map(|r| r.buffer_id).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(consumer.progress().lost_writer_died, 1, "the unfilled claim");
}
