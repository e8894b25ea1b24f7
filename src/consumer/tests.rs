//! The consumer over several rings of a real ring file: records written
//! straight into the shared ring and the sub-rings (the writer's sub-ring
//! path is the writer's tests' business), each stamped after its claim.

use super::*;
use crate::ring::{Owner, RingView};
use crate::shm::RingOptions;
use std::sync::atomic::{AtomicUsize, Ordering as StdOrdering};

/// A ring file with two sub-rings, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(tag: &str) -> (TempFile, Ring) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, StdOrdering::Relaxed);
        let path = crate::shm::ring_path(&format!("unit-consumer-{tag}-{}-{n}", std::process::id()));
        let options =
            RingOptions { capacity: 64, subrings: 2, subring_capacity: 256, ..RingOptions::default() };
        let ring = Ring::create(&path, options).unwrap();
        (TempFile(path), ring)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An owner no process holds: asked about, it is dead.
const NOBODY: Owner = Owner { slot: 1000, generation: 1 };
/// The owner of records that are published (never asked about).
const WRITER: Owner = Owner { slot: 3, generation: 1 };

/// Source 0 is the shared ring, `i + 1` sub-ring `i`.
fn source(ring: &Ring, s: usize) -> RingView<'_> {
    if s == 0 { ring.view() } else { ring.subring_view(s - 1) }
}

/// Writes record `id` into source `s`, stamped after its claim.
fn put(ring: &Ring, s: usize, id: u64) {
    let claim = source(ring, s).claim(WRITER).unwrap();
    let stamp = ring.clock_source().now();
    claim.publish(&[stamp, id, 0, 0, 0, 0, 0]);
}

/// Everything there is, once every record is older than the slack.
fn drain(consumer: &mut Consumer) -> Vec<Record> {
    std::thread::sleep(Duration::from_millis(1));
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    consumer
        .drain(usize::MAX, &mut buf, |r| {
            out.extend_from_slice(r);
            Ok::<(), ()>(())
        })
        .unwrap();
    out
}

/// Drains until `n` records came out, a liveness grace period apart (a
/// dead writer's claim is found once it blocked its ring that long), 100
/// tries at most: what came out.
fn drain_until(consumer: &mut Consumer, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    for _ in 0..100 {
        out.extend(drain(consumer));
        if out.len() >= n {
            break;
        }
        std::thread::sleep(LIVENESS_GRACE_FOR_TESTS);
    }
    out
}

fn ids(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.buffer_id).collect()
}

fn tickets(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.ticket).collect()
}

#[test]
fn records_of_every_ring_come_out_in_stamp_order_with_merged_tickets() {
    let (tmp, ring) = TempFile::new("merged");
    let mut consumer = Consumer::attach(&tmp.0).unwrap();
    // One buffer passed from thread to thread: each record written after
    // the one before it was complete, in three rings.
    let order = [1, 0, 2, 2, 1, 0, 0, 1, 2];
    for (id, &s) in order.iter().enumerate() {
        put(&ring, s, id as u64);
    }
    assert!(!consumer.caught_up());
    assert_eq!(consumer.claimed_end(), 9);
    let out = drain(&mut consumer);
    assert_eq!(ids(&out), (0..9).collect::<Vec<_>>());
    assert_eq!(tickets(&out), (0..9).collect::<Vec<_>>());
    let progress = consumer.progress();
    assert_eq!((progress.taken, progress.committed, progress.delivered), (9, 9, 9));
    assert_eq!(total_progress(&ring), progress, "the file says what the consumer says");
    assert!(consumer.caught_up());
    assert_eq!(consumer.claimed_end(), 9);
}

#[test]
fn a_ring_keeps_its_own_order_whatever_the_stamps() {
    let (tmp, ring) = TempFile::new("own-order");
    let mut consumer = Consumer::attach(&tmp.0).unwrap();
    // Claimed first, stamped last (a writer preempted between the two).
    let late = ring.view().claim(WRITER).unwrap();
    put(&ring, 0, 1);
    put(&ring, 1, 2);
    late.publish(&[ring.clock_source().now(), 0, 0, 0, 0, 0, 0]);
    let out = drain(&mut consumer);
    // 0 comes before 1 (its ring's order), and so before 2, which came
    // after 1 in time; 0's stamp is the latest of all.
    assert_eq!(ids(&out), [0, 1, 2]);
    assert_eq!(tickets(&out), [0, 1, 2]);
}

#[test]
fn a_take_of_fewer_than_there_are_is_a_prefix_of_the_merged_stream() {
    let (tmp, ring) = TempFile::new("prefix");
    let mut consumer = Consumer::attach(&tmp.0).unwrap();
    for (id, s) in [2, 1, 0, 2, 1].into_iter().enumerate() {
        put(&ring, s, id as u64);
    }
    std::thread::sleep(Duration::from_millis(1));
    let mut out = Vec::new();
    assert_eq!(consumer.take(2, &mut out), Batch { records: 2, lost: 0 });
    consumer.commit();
    assert_eq!(consumer.progress().committed, 2);
    out.extend(drain(&mut consumer));
    assert_eq!(ids(&out), [0, 1, 2, 3, 4]);
    assert_eq!(tickets(&out), [0, 1, 2, 3, 4]);
}

#[test]
fn a_restarted_consumer_resumes_every_ring_and_counts_what_its_predecessor_held() {
    let (tmp, ring) = TempFile::new("restart");
    let mut first = Consumer::attach(&tmp.0).unwrap();
    for (id, s) in [0, 1, 2, 1].into_iter().enumerate() {
        put(&ring, s, id as u64);
    }
    let committed = drain(&mut first);
    assert_eq!(tickets(&committed), [0, 1, 2, 3]);
    for (id, s) in [2, 0, 1].into_iter().enumerate() {
        put(&ring, s, 10 + id as u64);
    }
    std::thread::sleep(Duration::from_millis(1));
    let mut held = Vec::new();
    assert_eq!(first.take(usize::MAX, &mut held).records, 3);
    // Killed before it commits: its successor counts the three lost, once.
    drop(first);
    put(&ring, 2, 20);
    put(&ring, 0, 21);
    let mut second = Consumer::attach(&tmp.0).unwrap();
    assert_eq!(second.progress().lost_reader_died, 3);
    assert_eq!(second.progress().taken, 7);
    let out = drain(&mut second);
    assert_eq!(ids(&out), [20, 21]);
    assert_eq!(tickets(&out), [7, 8], "merged tickets go on from the sum of the rings' positions");
    let p = second.progress();
    assert_eq!(p.delivered + p.lost_reader_died + p.lost_writer_died, p.committed);
}

#[test]
fn a_dead_writers_claim_in_a_sub_ring_is_counted_lost_and_holds_nothing_back_for_long() {
    let (tmp, ring) = TempFile::new("dead-claim");
    let mut consumer = Consumer::attach(&tmp.0).unwrap();
    put(&ring, 1, 0);
    // A writer killed between its claim and its publish.
    drop(ring.subring_view(0).claim(NOBODY).unwrap());
    put(&ring, 1, 2);
    put(&ring, 2, 3);
    put(&ring, 0, 4);
    // Found dead once it blocked its ring for the grace period.
    let out = drain_until(&mut consumer, 4);
    assert_eq!(ids(&out), [0, 2, 3, 4]);
    assert_eq!(tickets(&out), [0, 2, 3, 4], "the lost claim took number 1, before its ring's next record");
    let p = consumer.progress();
    assert_eq!((p.delivered, p.lost_writer_died, p.committed), (4, 1, 5));
    assert!(consumer.caught_up());
}

#[test]
fn the_fenced_backlog_comes_out_before_anything_claimed_after_the_fence() {
    let (tmp, ring) = TempFile::new("fence");
    let mut consumer = Consumer::attach(&tmp.0).unwrap();
    // Before the fence: two claims in sub-ring A (source 1) that their
    // writer publishes late, so stamped late, and one shared-ring record.
    let a = [ring.subring_view(0).claim(WRITER).unwrap(), ring.subring_view(0).claim(WRITER).unwrap()];
    put(&ring, 0, 2);
    let backlog_end = consumer.fence_backlog();
    assert_eq!(backlog_end, 3, "the claimed ends, summed");
    // After the fence: sub-ring B (source 2) and the shared ring, stamped
    // before A's records.
    put(&ring, 2, 10);
    put(&ring, 0, 11);
    put(&ring, 2, 12);
    for (id, claim) in a.into_iter().enumerate() {
        claim.publish(&[ring.clock_source().now(), id as u64, 0, 0, 0, 0, 0]);
    }
    let out = drain(&mut consumer);
    // The fenced ones first, by stamp among themselves (2 was stamped
    // before A's records were), then the rest.
    assert_eq!(ids(&out[..3]), [2, 0, 1], "fenced first: {:?}", ids(&out));
    assert_eq!(ids(&out[3..]), [10, 11, 12], "after the fence, by stamp");
    let fenced: Vec<u64> = out.iter().filter(|r| r.ticket < backlog_end).map(|r| r.buffer_id).collect();
    assert_eq!(fenced.len(), 3);
    assert!(fenced.iter().all(|&id| id < 10), "merged tickets below the fence are the fenced records");
    assert_eq!(tickets(&out), [0, 1, 2, 3, 4, 5]);
    // The fence lifted: what comes next is merged by stamp as ever.
    put(&ring, 1, 20);
    put(&ring, 2, 21);
    assert_eq!(ids(&drain(&mut consumer)), [20, 21]);
}

#[test]
fn a_dead_claim_below_the_fence_counts_toward_it() {
    let (tmp, ring) = TempFile::new("fence-dead");
    let mut consumer = Consumer::attach(&tmp.0).unwrap();
    put(&ring, 1, 0);
    // A writer killed between its claim and its publish, below the fence.
    drop(ring.subring_view(0).claim(NOBODY).unwrap());
    let backlog_end = consumer.fence_backlog();
    assert_eq!(backlog_end, 2);
    put(&ring, 2, 10);
    let out = drain_until(&mut consumer, 2);
    assert_eq!(ids(&out), [0, 10]);
    assert_eq!(tickets(&out), [0, 2], "the dead claim took number 1, below the fence");
    assert_eq!(consumer.progress().lost_writer_died, 1);
}

/// At least the consumer's grace before it asks whether a writer died.
const LIVENESS_GRACE_FOR_TESTS: Duration = Duration::from_millis(3);

/// A consumer that detaches wakes the writers sleeping for space in every
/// ring, sub-rings included (they then find it gone and write the shared
/// ring instead of waiting out their sleep): a writer registered in each
/// ring, each ring's futex word bumped by the drop.
#[test]
fn detaching_wakes_the_waiters_of_every_sub_ring() {
    let (_file, ring) = TempFile::new("detach-wakes");
    let consumer = Consumer::attach(ring.path()).unwrap();
    let rings = || (0..=ring.subring_count()).map(|s| &source(&ring, s).control_for_tests().wait);
    for wait in rings() {
        wait.waiters.fetch_add(1, Ordering::Relaxed); // as `RingView::wait_for_space` registers
    }
    let before: Vec<u32> = rings().map(|wait| wait.wake.load(Ordering::Relaxed)).collect();
    drop(consumer);
    let after: Vec<u32> = rings().map(|wait| wait.wake.load(Ordering::Relaxed)).collect();
    for (s, (before, after)) in before.iter().zip(&after).enumerate() {
        assert_ne!(before, after, "ring {s}'s waiters were woken");
    }
}

/// A writer killed while it slept for space (SIGKILL in its futex wait)
/// never takes back its registration: the ring's `waiters` stays 1 for
/// good (as it may in a hostile file). The idle consumer must still sleep
/// once it has taken everything from that ring: a take there can free
/// nothing more, and a consumer that stayed awake for that count would
/// poll without a pause, at full CPU, until the file is removed. While
/// the ring still holds records, it stays awake (a waiting writer wants a
/// take now).
#[test]
fn a_registration_left_by_a_killed_writer_does_not_keep_an_idle_consumer_awake() {
    let (_file, ring) = TempFile::new("leaked-waiter");
    let mut consumer = Consumer::attach(ring.path()).unwrap();
    for s in 0..=ring.subring_count() {
        // As `RingView::wait_for_space` registers, and never unregisters.
        source(&ring, s).control_for_tests().wait.waiters.fetch_add(1, Ordering::Relaxed);
    }
    put(&ring, 1, 7);
    let pause = Duration::from_millis(1);
    assert!(!consumer.idle_sleep(pause), "a record to take where a writer waits: awake");
    assert_eq!(ids(&drain(&mut consumer)), [7]);
    assert!(consumer.idle_sleep(pause), "every ring taken: it sleeps, whatever `waiters` says");
}

/// `drain_claimed` delivers every record claimed before it was called and
/// stops there, while records keep coming: here written between its takes
/// (by its own callback, so the test is deterministic), as a flat-out
/// writer refills the slots each take frees. `drain` chases them.
#[test]
fn drain_claimed_stops_at_what_was_claimed_before_it_while_records_keep_coming() {
    let (tmp, ring) = TempFile::new("drain-claimed");
    let mut consumer = Consumer::attach(&tmp.0).unwrap();
    let writer = crate::Writer::attach(ring).unwrap();
    let alloc = |id| writer.alloc(&crate::MemtrackBuffer { buffer_id: id, size: 64, ..Default::default() });
    let before = 200; // Less than the sub-ring (256): nothing waits or spills.
    for id in 0..before {
        alloc(id);
    }
    let mut next = before;
    let mut write_more = |calls: &mut u32| {
        // 50 more batches of 100, one after each take.
        if *calls < 50 {
            for _ in 0..100 {
                alloc(next);
                next += 1;
            }
        }
        *calls += 1;
    };
    let (mut calls, mut out, mut buf) = (0, Vec::new(), Vec::new());
    let handled = consumer
        .drain_claimed(&mut buf, |r| {
            out.extend_from_slice(r);
            write_more(&mut calls);
            Ok::<(), ()>(())
        })
        .unwrap();
    let ids: Vec<u64> =
        out.iter().filter(|r| r.event == crate::Event::Alloc as u8).map(|r| r.buffer_id).collect();
    assert_eq!(ids, (0..before).collect::<Vec<_>>(), "the backlog, in order, and nothing after it");
    assert_eq!((handled, calls), (out.len(), 1));
    // `drain` takes what the callback writes too, until the writing stops.
    let (mut calls, mut out) = (0, Vec::new());
    consumer
        .drain(usize::MAX, &mut buf, |r| {
            out.extend_from_slice(r);
            write_more(&mut calls);
            Ok::<(), ()>(())
        })
        .unwrap();
    assert!(calls > 1 && out.len() > 100, "drain chased {} records in {calls} takes", out.len());
}
