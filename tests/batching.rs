//! The consumer's batching policy (`memtrack::BatchPolicy`, issue 14):
//! readers that poll beside the writers take whole batches, yet a lone
//! record is still delivered once it has waited the latency bound, and a
//! writer killed between claim and publish still has its claim found and
//! reclaimed when fewer than a batch are ready behind it.
//!
//! No timed upper bound is asserted (a shared, noisy machine): the tests
//! sleep at least the bound and then require the record on the next look,
//! which the policy guarantees whatever the scheduler does.

mod common;
#[path = "common/reliability.rs"]
mod reliability;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use common::TempRing;
use memtrack::{Batch, BatchPolicy, Consumer, Event, MemtrackBuffer, Record, Ring, RingOptions, Writer};
use reliability::{helper_command, helper_role, kill};

/// 4096 slots: batches of 512 (capacity / 8).
const CAPACITY: u64 = 4096;

fn buffer(id: u64) -> MemtrackBuffer {
    MemtrackBuffer { buffer_id: id, size: 64, address: id << 12, ..Default::default() }
}

/// A ring of CAPACITY slots with the default sub-rings.
fn ring(tmp: &TempRing) -> Writer {
    ring_with(tmp, RingOptions { capacity: CAPACITY, ..RingOptions::default() })
}

/// A ring of CAPACITY slots without sub-rings: every record goes to the
/// shared ring, and the shared ring's batches are what is taken.
fn shared_ring_only(tmp: &TempRing) -> Writer {
    ring_with(tmp, RingOptions { capacity: CAPACITY, subrings: 0, ..RingOptions::default() })
}

fn ring_with(tmp: &TempRing, options: RingOptions) -> Writer {
    Writer::attach_named(Ring::create(tmp.path(), options).unwrap(), b"batching").unwrap()
}

/// `consumer.take_due`, committed, into `out`.
fn take_due(consumer: &mut Consumer, out: &mut Vec<Record>) -> Batch {
    let before = out.len();
    let batch = consumer.take_due(usize::MAX, out);
    consumer.commit();
    assert_eq!(out.len() - before, batch.records);
    batch
}

/// The helper processes' entry point; a no-op in a normal test run.
#[test]
fn helper() {
    let Some(role) = helper_role() else { return };
    match role.as_str() {
        // Three records, a claim it never publishes, then waits to be killed.
        "batching-park" => {
            let path = std::env::var("MEMTRACK_RING").unwrap();
            let writer = Writer::attach(Ring::open(Path::new(&path)).unwrap()).unwrap();
            for id in 1..=3 {
                writer.alloc(&buffer(id));
            }
            assert!(writer.claim_without_publishing());
            std::thread::sleep(Duration::from_secs(60));
        }
        // A reader whose batches never fill and whose bound never passes:
        // only the "writers wait, or the ring is half full" rule takes.
        "batching-reader" => {
            let path = std::env::var("MEMTRACK_RING").unwrap();
            let mut consumer = Consumer::attach(Path::new(&path)).unwrap();
            consumer.set_batch_policy(BatchPolicy { batch: 1 << 20, latency: Duration::from_secs(3600) });
            println!("HELPER ready");
            let mut buf = Vec::new();
            loop {
                let handled = consumer.drain_due(usize::MAX, &mut buf, |_| Ok::<(), ()>(())).unwrap();
                consumer.pause_if_idle(handled);
            }
        }
        other => panic!("unknown helper role {other}"),
    }
}

#[test]
fn the_default_batch_is_an_eighth_of_the_ring_up_to_4096() {
    assert_eq!(BatchPolicy::for_capacity(4096).batch, 512);
    assert_eq!(BatchPolicy::for_capacity(65536).batch, 4096);
    assert_eq!(BatchPolicy::for_capacity(1 << 24).batch, 4096);
    assert_eq!(BatchPolicy::for_capacity(16).batch, 2);
    let latency = BatchPolicy::for_capacity(65536).latency;
    assert!(latency >= Duration::from_millis(1) && latency <= Duration::from_millis(5), "{latency:?}");
}

#[test]
fn whole_batches_are_taken_at_once_and_the_rest_waits() {
    let tmp = TempRing::new("batching-whole");
    let writer = shared_ring_only(&tmp);
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let batch = consumer.batch_policy().batch;
    assert_eq!(batch, CAPACITY / 8);
    // Two whole batches and a few (the writer's start record is one of
    // them), all stamped longer ago than the merge's slack (10 µs), so the
    // watermark holds none back.
    for id in 1..2 * batch + 5 {
        writer.alloc(&buffer(id));
    }
    std::thread::sleep(Duration::from_millis(1));
    let mut out = Vec::new();
    // A whole batch is published: a take is due, and it takes every record
    // it found (it read up to the frontier to place the watermark).
    assert_eq!(take_due(&mut consumer, &mut out).records as u64, 2 * batch + 5);
    // Five more, fewer than a batch: this look only starts their clock.
    for id in 0..5 {
        writer.alloc(&buffer(id));
    }
    std::thread::sleep(Duration::from_millis(1));
    assert_eq!(take_due(&mut consumer, &mut out).records, 0);
    assert!(!consumer.caught_up());
    // Draining everything (the end of a recording) does not wait.
    assert_eq!(drain_all(&mut consumer, &mut out), 5);
    assert_every_ticket_once_in_order(&out, 2 * batch + 10);
    assert!(consumer.caught_up());
}

/// Drains everything left into `out` (as the end of a recording does,
/// not waiting for a batch): how many records.
fn drain_all(consumer: &mut Consumer, out: &mut Vec<Record>) -> usize {
    let mut buf = Vec::new();
    let drained = consumer.drain(usize::MAX, &mut buf, |r| {
        out.extend_from_slice(r);
        Ok::<(), ()>(())
    });
    drained.expect("nothing fails")
}

/// `out`'s tickets are `0..n`: in order, none twice, none missing.
fn assert_every_ticket_once_in_order(out: &[Record], n: u64) {
    let tickets: Vec<u64> = out.iter().map(|r| r.ticket).collect();
    assert_eq!(tickets, (0..n).collect::<Vec<_>>(), "in order, none twice, none missing");
}

/// Takes what is due until nothing is (as `Consumer::drain_due` does):
/// a merged round looks only so far into a busy sub-ring, so its whole
/// batches may take more than one round.
fn take_all_due(consumer: &mut Consumer, out: &mut Vec<Record>) -> usize {
    let mut records = 0;
    loop {
        match take_due(consumer, out).records {
            0 => return records,
            n => records += n,
        }
    }
}

/// The same with the default sub-rings: the writer's thread writes its
/// own sub-ring (8192 slots, batches of 1024), whose whole batches are
/// taken (with the shared ring's whole published run: the writer's start
/// record, written before its thread took a sub-ring) and whose rest
/// waits.
#[test]
fn a_sub_rings_whole_batches_are_taken_at_once_and_the_rest_waits() {
    let tmp = TempRing::new("batching-sub");
    let writer = ring(&tmp);
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let subring_capacity = u64::from(RingOptions::default().subring_capacity);
    assert!(RingOptions::default().subrings > 0, "sub-rings are on by default");
    let batch = BatchPolicy::for_capacity(subring_capacity).batch;
    assert_eq!(batch, 1024);
    // No latency bound to race: the last round of `take_all_due` already
    // sees the three left waiting, and a loaded machine can take the
    // default 2 ms between it and the take that must find nothing due.
    let policy = consumer.batch_policy();
    consumer.set_batch_policy(BatchPolicy { latency: Duration::from_secs(3600), ..policy });
    for id in 1..=2 * batch + 3 {
        writer.alloc(&buffer(id));
    }
    let snapshot = writer.ring().snapshot();
    let waiting: Vec<u64> = snapshot.subrings.iter().map(|s| s.waiting).filter(|&w| w > 0).collect();
    assert_eq!(waiting, [2 * batch + 3], "the thread wrote one sub-ring: {snapshot:?}");
    std::thread::sleep(Duration::from_millis(1));
    let mut out = Vec::new();
    assert_eq!(take_all_due(&mut consumer, &mut out) as u64, 1 + 2 * batch);
    // Three left and five more: fewer than a batch, nothing is due yet.
    for id in 0..5 {
        writer.alloc(&buffer(id));
    }
    std::thread::sleep(Duration::from_millis(1));
    assert_eq!(take_due(&mut consumer, &mut out).records, 0);
    assert!(!consumer.caught_up());
    assert_eq!(drain_all(&mut consumer, &mut out), 8);
    assert_every_ticket_once_in_order(&out, 2 * batch + 9);
    assert!(consumer.caught_up());
}

#[test]
fn a_lone_record_is_delivered_once_it_waited_the_bound() {
    let tmp = TempRing::new("batching-lone");
    let writer = ring(&tmp);
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let latency = consumer.batch_policy().latency;
    let mut out = Vec::new();
    // The writer's start record: alone, far fewer than a batch.
    let first_look = Instant::now();
    assert_eq!(take_due(&mut consumer, &mut out).records, 0, "taken before it waited");
    std::thread::sleep(latency);
    assert_eq!(take_due(&mut consumer, &mut out).records, 1, "not taken after waiting {latency:?}");
    assert!(first_look.elapsed() >= latency);
    // And the next lone record, the same way.
    writer.alloc(&buffer(7));
    assert_eq!(take_due(&mut consumer, &mut out).records, 0);
    std::thread::sleep(latency);
    assert_eq!(take_due(&mut consumer, &mut out).records, 1);
    assert_eq!(out.last().unwrap().buffer_id, 7);
    assert!(consumer.caught_up());
    assert_eq!(consumer.progress().delivered, 2);
}

#[test]
fn without_batching_every_record_is_taken_at_once() {
    let tmp = TempRing::new("batching-eager");
    let _writer = ring(&tmp);
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    consumer.set_batch_policy(BatchPolicy::eager());
    assert_eq!(take_due(&mut consumer, &mut Vec::new()).records, 1);
}

/// Lossless: a writer that finds the ring full and waits for space is
/// served at once by a batching reader in another process, without waiting
/// for a batch or the latency bound (here neither would ever come). No
/// sub-rings: a writer never waits on one (a full sub-ring sends it to the
/// shared ring), and up to a sub-ring's batch could stay there untaken.
#[test]
fn writers_waiting_for_space_are_served_without_waiting_for_a_batch() {
    let tmp = TempRing::new("batching-waiters");
    let writer = Writer::attach(
        Ring::create(tmp.path(), RingOptions { capacity: 64, subrings: 0, ..RingOptions::default() })
            .unwrap(),
    )
    .unwrap();
    let mut reader = helper_command("batching-reader")
        .env("MEMTRACK_RING", tmp.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(reader.stdout.as_mut().unwrap()).lines();
    while !lines.next().expect("a HELPER line").unwrap().contains("HELPER ready") {}
    let records = 5000;
    for id in 1..=records {
        writer.alloc(&buffer(id));
    }
    // The last records (fewer than half a ring) may stay: nothing is due.
    let snapshot = writer.ring().snapshot();
    kill(&mut reader);
    assert_eq!(snapshot.dropped, 0, "a writer waited in vain: {snapshot:?}");
    assert!(snapshot.progress.taken + 64 > records, "{snapshot:?}");
}

/// A writer process killed between claim and publish, with fewer records
/// than a batch around its claim: the consumer must still deliver the
/// records before it, find the claim's owner dead, count it lost, and
/// deliver what other writers wrote after it.
#[test]
fn a_dead_writers_claim_is_reclaimed_with_fewer_than_a_batch_ready() {
    let tmp = TempRing::new("batching-dead");
    let writer = ring(&tmp);
    let mut consumer = Consumer::attach(tmp.path()).unwrap();
    let mut parked = helper_command("batching-park").env("MEMTRACK_RING", tmp.path()).spawn().unwrap();
    // Our start record (ticket 0), the helper's and its three records, its
    // parked claim (ticket 5).
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.claimed_end() < 6 {
        assert!(Instant::now() < deadline, "the helper did not park a claim");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Behind the parked claim, from a live writer.
    writer.alloc(&buffer(100));
    kill(&mut parked);

    let (mut out, mut lost) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < 6 || lost == 0 {
        assert!(Instant::now() < deadline, "not reclaimed: {} records, {lost} lost", out.len());
        lost += take_due(&mut consumer, &mut out).lost;
        std::thread::sleep(Duration::from_millis(1));
    }
    // Ours (start), the helper's start and three records, its lost claim, ours.
    assert_eq!(lost, 1);
    let events: Vec<_> = out.iter().map(|r| (r.event(), r.buffer_id)).collect();
    let start = |r: &(Option<Event>, u64)| r.0 == Some(Event::ProcessStart);
    assert!(events[..2].iter().all(start), "{events:?}");
    let allocs: Vec<_> = events[2..].iter().map(|&(event, id)| (event.unwrap(), id)).collect();
    assert_eq!(allocs, [(Event::Alloc, 1), (Event::Alloc, 2), (Event::Alloc, 3), (Event::Alloc, 100)]);
    let progress = consumer.progress();
    assert_eq!((progress.delivered, progress.lost_writer_died), (6, 1));
    assert!(consumer.caught_up());
}
