//! A full sub-ring waits for the reader instead of spilling into the
//! shared ring (issue 14), and the reader's doorbell: with real ring files,
//! a writer thread and a reader thread.
//!
//! * With a reader attached, a thread that fills its sub-ring many times
//!   over writes nothing to the shared ring: its records all come out of
//!   its sub-ring, in order, none lost or dropped.
//! * With no reader attached, it spills into the shared ring as before.
//! * A reader asleep in a long idle pause (seconds) is rung by the writer
//!   that waits for it: nothing spills, and the doorbell counted the rings.
//!   Without the doorbell the writer would give up its wait after 100 ms
//!   without progress and write the shared ring.
//!
//! No timed upper bound is asserted (a shared, noisy machine).

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::TempRing;
use memtrack::{Consumer, Event, MemtrackBuffer, Record, Ring, RingOptions, Writer};

/// Small sub-rings, so the writer fills its own many times over.
const SUBRING_CAPACITY: u32 = 256;
/// Records the writer thread writes: 40 sub-rings' worth.
const RECORDS: u64 = 40 * SUBRING_CAPACITY as u64;
/// Offset of the shared ring's tail hint in the header (docs/FORMAT.md,
/// RingControl): with one writer on it, the tickets it claimed.
const SHARED_TAIL_OFFSET: u64 = 256;

fn options() -> RingOptions {
    RingOptions {
        capacity: 1 << 16,
        subrings: 2,
        subring_capacity: SUBRING_CAPACITY,
        ..RingOptions::default()
    }
}

fn buffer(id: u64) -> MemtrackBuffer {
    MemtrackBuffer { buffer_id: id, size: 64, address: id << 6, ..Default::default() }
}

/// Records claimed in the shared ring so far (only the writer's process
/// start record, written before its thread took a sub-ring, unless
/// something spilled).
fn shared_ring_claims(path: &Path) -> u64 {
    let mut word = [0; 8];
    std::fs::File::open(path).unwrap().read_exact_at(&mut word, SHARED_TAIL_OFFSET).unwrap();
    u64::from_le_bytes(word)
}

/// Offset of the doorbell's `sleeping` word (docs/FORMAT.md, DoorbellLine).
const DOORBELL_SLEEPING_OFFSET: u64 = 768;

/// Whether the consumer says it sleeps (or is about to) on its doorbell.
fn consumer_sleeping(path: &Path) -> bool {
    let mut word = [0; 4];
    std::fs::File::open(path).unwrap().read_exact_at(&mut word, DOORBELL_SLEEPING_OFFSET).unwrap();
    u32::from_le_bytes(word) != 0
}

/// Writes RECORDS allocations from a new thread (which takes a sub-ring).
fn write_from_a_thread(writer: &Writer) {
    std::thread::scope(|s| {
        s.spawn(|| (0..RECORDS).for_each(|id| writer.alloc(&buffer(id))));
    });
}

/// The buffer ids of the ALLOC records in `records`, in order.
fn allocs(records: &[Record]) -> Vec<u64> {
    records.iter().filter(|r| r.event == Event::Alloc as u8).map(|r| r.buffer_id).collect()
}

/// A reader thread that takes everything, pausing when idle as the CLI
/// readers do (`pause` fixed, or the computed pauses), until it has
/// `expected` ALLOC records.
fn read_until(consumer: &mut Consumer, expected: usize, pause: Option<Duration>) -> Vec<Record> {
    consumer.set_idle_pause(pause);
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    loop {
        let handled = consumer
            .drain(usize::MAX, &mut buf, |records| {
                out.extend_from_slice(records);
                Ok::<(), ()>(())
            })
            .unwrap();
        if allocs(&out).len() >= expected {
            return out;
        }
        consumer.pause_if_idle(handled);
    }
}

#[test]
fn a_full_sub_ring_with_a_reader_attached_waits_and_spills_nothing() {
    let tmp = TempRing::new("subring-wait");
    let writer = Writer::attach(Ring::create(tmp.path(), options()).unwrap()).unwrap();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let out = std::thread::scope(|s| {
        let reader = s.spawn(|| read_until(&mut consumer, RECORDS as usize, None));
        write_from_a_thread(&writer);
        reader.join().unwrap()
    });
    assert_eq!(allocs(&out), (0..RECORDS).collect::<Vec<_>>(), "every record, once, in order");
    assert_eq!(shared_ring_claims(tmp.path()), 1, "only the process start went to the shared ring");
    assert_eq!(writer.ring().snapshot().dropped, 0);
}

#[test]
fn a_full_sub_ring_with_no_reader_spills_into_the_shared_ring() {
    let tmp = TempRing::new("subring-spill");
    let writer = Writer::attach(Ring::create(tmp.path(), options()).unwrap()).unwrap();
    write_from_a_thread(&writer);
    // The sub-ring holds its first SUBRING_CAPACITY records; the rest
    // went to the shared ring, as before.
    let spilled = RECORDS - SUBRING_CAPACITY as u64;
    assert_eq!(shared_ring_claims(tmp.path()), 1 + spilled);
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let out = common::drain_all(&mut consumer);
    let mut ids = allocs(&out);
    ids.sort_unstable();
    assert_eq!(ids, (0..RECORDS).collect::<Vec<_>>(), "none lost");
    assert_eq!(writer.ring().snapshot().dropped, 0);
}

#[test]
fn a_reader_asleep_in_a_long_pause_is_rung_by_a_waiting_writer() {
    let tmp = TempRing::new("subring-doorbell");
    let writer = Writer::attach(Ring::create(tmp.path(), options()).unwrap()).unwrap();
    let rings_before = writer.ring().doorbell_rings();
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    // Every idle pause lasts 2 s: far beyond the writer's 100 ms wait
    // without progress, after which it would spill.
    let out = std::thread::scope(|s| {
        let reader = s.spawn(|| read_until(&mut consumer, RECORDS as usize, Some(Duration::from_secs(2))));
        // Only once the reader is in its first pause: a writer that fills
        // its sub-ring before then finds it awake (it sees the waiter and
        // takes at once), and nothing rings.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !consumer_sleeping(tmp.path()) {
            assert!(std::time::Instant::now() < deadline, "the reader never paused");
            std::thread::sleep(Duration::from_millis(1));
        }
        write_from_a_thread(&writer);
        reader.join().unwrap()
    });
    assert_eq!(allocs(&out), (0..RECORDS).collect::<Vec<_>>(), "every record, once, in order");
    assert_eq!(shared_ring_claims(tmp.path()), 1, "the writer never gave up waiting");
    assert_ne!(writer.ring().doorbell_rings(), rings_before, "the writer rang the doorbell");
    assert_eq!(writer.ring().snapshot().dropped, 0);
}
