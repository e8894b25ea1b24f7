use std::time::Instant;

use super::*;
use crate::consumer::Consumer;
use crate::format::SHARED_LANE;
use crate::shm::RingOptions;

fn fill(writer: &Writer, n: u64) {
    for id in 0..n {
        writer.alloc(&MemtrackBuffer { buffer_id: id, size: 1, ..Default::default() });
    }
}

/// The hot path packs the payload words itself: they must be exactly
/// what the `Record` the cold paths build gives (every field at its
/// place, the scope capped as `set_scope` caps it), for each event.
#[test]
fn the_packed_payload_is_the_records_payload() {
    let path = crate::ring_path(&format!("test-writer-payload-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let writer = Writer::attach(Ring::create(&path, RingOptions::default()).unwrap()).unwrap();
    let buffers = [
        MemtrackBuffer::default(),
        MemtrackBuffer {
            buffer_id: u64::MAX,
            parent_id: 0x0102_0304_0506_0708,
            address: 0xdead_beef_0000_1000,
            size: 1 << 40,
            device_id: u32::MAX,
            kind: 0xff,
            flags: 0xff,
            ..Default::default()
        },
        MemtrackBuffer {
            buffer_id: 7,
            address: 0x1000,
            size: 4096,
            device_id: 3,
            kind: 1,
            flags: 1,
            ..Default::default()
        },
    ];
    for b in &buffers {
        for event in [Event::Alloc, Event::Free] {
            for scope in [0, 1, 0x00ab_cdef, MAX_RESERVED_ID, MAX_RESERVED_ID + 1, u32::MAX] {
                assert_eq!(
                    writer.buffer_payload(event, b, scope),
                    writer.buffer_record(event, b, scope).payload(),
                    "{event:?} {b:?} scope {scope}"
                );
            }
        }
    }
    drop(writer);
    let _ = std::fs::remove_file(&path);
}

/// More threads than lanes at once: 16 get a lane of their own, the
/// rest share one; every count lands, and each lane is given back when
/// its thread exits, to be reused with its counts intact.
#[test]
fn threads_beyond_the_lanes_share_one_and_exiting_threads_give_theirs_back() {
    let path = crate::ring_path(&format!("test-writer-lanes-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let writer = Writer::attach(Ring::create(&path, RingOptions::default()).unwrap()).unwrap();
    let threads = crate::format::COUNTER_LANES as u64 + 4;
    let barrier = std::sync::Barrier::new(threads as usize);
    // Joined one by one: `join` waits for the thread's end, destructors
    // (the lane's release) included; the scope's own wait does not.
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (writer, barrier) = (&writer, &barrier);
                s.spawn(move || {
                    for i in 0..100 {
                        writer.alloc(&MemtrackBuffer {
                            buffer_id: t << 32 | i,
                            size: 3,
                            device_id: 7,
                            ..Default::default()
                        });
                        if i == 0 {
                            barrier.wait(); // Every thread holds its lane (or the shared one) at once.
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    });
    let lanes = &writer.ring().process_entry(writer.registration.index).lanes;
    assert_eq!(lanes.load(Ordering::Relaxed) as u32, 0, "every lane given back");
    let shared = (0..writer.ring().counters().len())
        .filter_map(|i| writer.ring().counters().read(i))
        .filter(|r| crate::format::counter_key_parts(r.key).2 == SHARED_LANE)
        .count();
    assert_eq!(shared, 1, "the threads beyond the lanes shared one cell");
    assert_eq!(writer.live(), [((7, 0), (threads as i64 * 300, threads as i64 * 100))]);
    // A new thread takes a returned lane and adds to its counts.
    std::thread::scope(|s| {
        s.spawn(|| {
            writer.free(&MemtrackBuffer { buffer_id: 0, size: 3, device_id: 7, ..Default::default() })
        });
    });
    assert_eq!(writer.live(), [((7, 0), (threads as i64 * 300 - 3, threads as i64 * 100 - 1))]);
    let _ = std::fs::remove_file(&path);
}

/// A process that allocates on one thread and frees on another ends
/// with two nonzero lane cells (+n, -n) whose sum is 0: once it has
/// ended, the next registration frees both (else, with 256 entries,
/// dead processes would pin lanes x (device, kind) cells each until
/// their entry is taken again, and fill the pool).
#[test]
fn a_dead_process_whose_lanes_sum_to_zero_keeps_no_cells() {
    let path = crate::ring_path(&format!("test-writer-dead-sum-zero-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let writer = Writer::attach(Ring::create(&path, RingOptions::default()).unwrap()).unwrap();
    let dead_entry = writer.registration.index;
    let buffer = MemtrackBuffer { buffer_id: 1, size: 4096, device_id: 3, ..Default::default() };
    // Two threads alive at once (two lanes): one allocates, the other frees.
    let (allocated, done) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        let threads = [
            s.spawn(|| {
                writer.alloc(&buffer);
                allocated.wait();
                done.wait();
            }),
            s.spawn(|| {
                allocated.wait();
                writer.free(&buffer);
                done.wait();
            }),
        ];
        // Joined, not left to the scope: `join` waits for the threads'
        // destructors too, whose lane leases keep the mapping -- and
        // with it the ring file's description and its lock -- alive.
        threads.into_iter().for_each(|t| t.join().unwrap());
    });
    assert_eq!(writer.live(), [], "nothing live");
    drop(writer); // Its lock is released: the process reads as died.
    let next = Writer::attach(Ring::open(&path).unwrap()).unwrap();
    assert_ne!(next.registration.index, dead_entry);
    let pool = next.ring().counters();
    let pinned: Vec<_> =
        (0..pool.len()).filter_map(|i| pool.read(i)).filter(|r| r.entry == dead_entry).collect();
    let _ = std::fs::remove_file(&path);
    assert_eq!(pinned, [], "cells of an ended process that count nothing in sum");
}

/// An allocation counted in one lane's cell and its free counted
/// untracked (the freeing thread's lane found the pool full, and the
/// process has no shared-lane cell for the key): the snapshot takes the
/// untracked deficit from the process's device figures, so the freed
/// bytes are neither shown held nor hidden by a clamp.
#[test]
fn a_free_counted_untracked_does_not_leave_its_bytes_held() {
    let path = crate::ring_path(&format!("test-writer-untracked-free-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let ring = Ring::create(&path, RingOptions { counter_cells: 128, ..RingOptions::default() }).unwrap();
    let writer = Writer::attach(ring).unwrap();
    let buffer = MemtrackBuffer { buffer_id: 1, size: 4096, device_id: 1000, ..Default::default() };
    let (allocated, filled, done) =
        (std::sync::Barrier::new(2), std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        s.spawn(|| {
            writer.alloc(&buffer); // lane 0's cell
            allocated.wait();
            done.wait();
        });
        s.spawn(|| {
            allocated.wait();
            // Lane 1 fills the pool with balanced pairs on other devices.
            for device in 0..256 {
                let b = MemtrackBuffer { buffer_id: 2, size: 1, device_id: device, ..Default::default() };
                writer.alloc(&b);
                writer.free(&b);
            }
            filled.wait();
        });
        filled.wait();
        // The main thread (lane 2) frees the buffer: no cell left for its key.
        writer.free(&buffer);
        done.wait();
    });
    // From another attachment: our own lock does not count as held.
    let snapshot = Ring::open(&path).unwrap().snapshot();
    let _ = std::fs::remove_file(&path);
    assert!(snapshot.is_running(writer.registration.index as u16));
    assert!(snapshot.untracked_usage().2 > 0, "the pool was full");
    let held = snapshot.device_usage().get(&(1000, 0)).copied().unwrap_or_default();
    let untracked = snapshot.untracked_usage().0;
    assert_eq!((held.0 + untracked, held.1), (0, 0), "the buffer was freed: {held:?} + {untracked}");
}

/// A forked child inherits the forking thread's lane lease; where its
/// pid equals its parent's (pid 1 in a container, the child in a new
/// PID namespace) only the fork count tells the lease is not its own:
/// giving it back must leave the parent's lane taken.
#[test]
fn a_lane_leased_before_a_fork_is_not_given_back_by_the_child() {
    let path = crate::ring_path(&format!("test-writer-fork-lease-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let writer = Writer::attach(Ring::create(&path, RingOptions::default()).unwrap()).unwrap();
    let Registration { index, generation, .. } = writer.registration;
    let lanes = &writer.ring().process_entry(index).lanes;
    let lane = take_lane(lanes, generation).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // The lease as the child sees it: same pid, one fork earlier.
            let inherited = LaneLease {
                word: writer.ring().lane_word(index),
                generation,
                lane,
                forks: fork_count().wrapping_sub(1),
            };
            crate::hook_thread::with(|t| t.unwrap().switch_writer(u64::MAX, || Some(inherited), || None));
            // Hooking for another writer (and exiting) gives back the lease.
            crate::hook_thread::with(|t| t.unwrap().switch_writer(u64::MAX - 1, || None, || None));
        });
    });
    let _ = std::fs::remove_file(&path);
    assert_ne!(lanes.load(Ordering::Relaxed) & 1 << lane, 0, "the parent's lane stays taken");
}

/// A forked child that keeps using its parent's writer counts through
/// the shared lane (atomic adds), never through the lane the forking
/// thread held in the parent (plain stores, which would race the
/// parent's thread on the same cell and lose counts); and writes the
/// shared ring, never the sub-ring the forking thread holds (nor gives
/// it back).
#[test]
fn a_forked_child_using_its_parents_writer_counts_in_the_shared_lane() {
    let path = crate::ring_path(&format!("test-writer-fork-child-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let writer = Writer::attach(Ring::create(&path, RingOptions::default()).unwrap()).unwrap();
    writer.use_subrings(true);
    let buffer = MemtrackBuffer { buffer_id: 1, size: 10, device_id: 5, ..Default::default() };
    let subring = std::thread::scope(|s| {
        s.spawn(|| {
            writer.alloc(&buffer); // This thread's lane and cached cell, and its sub-ring.
            let subring = writer.own_subring().expect("a sub-ring");
            // SAFETY: the child only hooks (no lock another thread of
            // the parent may hold is taken on that path) and `_exit`s.
            match unsafe { libc::fork() } {
                0 => {
                    writer.alloc(&MemtrackBuffer { buffer_id: 2, ..buffer });
                    // SAFETY: ends the child without running the test harness's exit.
                    unsafe { libc::_exit(0) }
                }
                child => {
                    let mut status = 0;
                    // SAFETY: waits for our own child.
                    assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
                    assert_eq!(status, 0);
                    let lease = writer.ring().subring_header(subring).lease.load(Ordering::Relaxed);
                    assert_ne!(lease, 0, "the child did not give the parent's sub-ring back");
                }
            }
            subring
        })
        .join()
        .unwrap()
    });
    let ring = writer.ring();
    let buffers_in = |view: crate::ring::RingView<'_>| {
        let (mut cursor, mut out) = (view.attach_consumer(), Vec::new());
        view.take(&mut cursor, 64, &mut out, |_, _| false);
        out.iter().filter(|r| r.event == Event::Alloc as u8).map(|r| r.buffer_id).collect::<Vec<_>>()
    };
    assert_eq!(buffers_in(ring.subring_view(subring)), [1], "the sub-ring holds the parent's record only");
    assert_eq!(buffers_in(ring.view()), [2], "the child wrote the shared ring");
    let pool = writer.ring().counters();
    let mut lanes: Vec<(u8, i64)> = (0..pool.len())
        .filter_map(|i| pool.read(i))
        .filter(|r| r.entry == writer.registration.index)
        .map(|r| (crate::format::counter_key_parts(r.key).2, r.bytes))
        .collect();
    lanes.sort();
    let _ = std::fs::remove_file(&path);
    assert_eq!(lanes, [(0, 10), (SHARED_LANE, 10)], "the parent's lane cell holds only its own count");
}

/// A thread whose lane finds no cell for (device, kind) counts in the
/// process's shared-lane cell of that key when there is one: the free
/// of a buffer allocated in another lane then nets out per device, and
/// nothing is untracked.
#[test]
fn a_lane_with_no_cell_counts_in_the_shared_lanes_cell_of_its_key() {
    let path = crate::ring_path(&format!("test-writer-shared-fallback-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let ring = Ring::create(&path, RingOptions { counter_cells: 128, ..RingOptions::default() }).unwrap();
    let writer = Writer::attach(ring).unwrap();
    let Registration { index, generation, .. } = writer.registration;
    let lanes = &writer.ring().process_entry(index).lanes;
    let buffer = MemtrackBuffer { buffer_id: 1, size: 4096, device_id: 1000, ..Default::default() };
    let on_a_new_thread = |f: &(dyn Fn() + Sync)| std::thread::scope(|s| s.spawn(f).join().unwrap());
    // A lane allocates (and gives the lane back: its cell stays); every
    // lane is then held, so the next thread uses the shared lane and
    // claims its cell.
    on_a_new_thread(&|| writer.alloc(&buffer));
    let held: Vec<u8> = std::iter::from_fn(|| take_lane(lanes, generation)).collect();
    assert_eq!(held.len(), crate::format::COUNTER_LANES as usize);
    on_a_new_thread(&|| {
        let other = MemtrackBuffer { buffer_id: 2, ..buffer };
        writer.alloc(&other);
        writer.free(&other);
    });
    // A lane with no cells yet (not the first, which allocated) frees.
    crate::counters::release_lane(lanes, generation, held[held.len() - 1]);
    on_a_new_thread(&|| {
        for device in 0..256 {
            let b = MemtrackBuffer { buffer_id: 3, size: 1, device_id: device, ..Default::default() };
            writer.alloc(&b);
            writer.free(&b);
        }
        writer.free(&buffer); // This lane has no cell for device 1000.
    });
    let _ = std::fs::remove_file(&path);
    let (bytes, buffers, events) = writer.untracked();
    assert!(events > 0, "the pool was full");
    assert_eq!((bytes, buffers), (0, 0), "the free was counted per device");
    assert_eq!(writer.live(), [], "nothing held on device 1000");
}

#[test]
fn a_full_ring_waits_for_a_slow_consumer_instead_of_dropping() {
    let path = crate::ring_path(&format!("test-writer-wait-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let writer =
        Writer::attach(Ring::create(&path, RingOptions { capacity: 16, ..RingOptions::default() }).unwrap())
            .unwrap();
    let mut consumer = Consumer::attach(&path).unwrap();
    // The consumer takes a few records at a time, with pauses far
    // shorter than the wait but long enough for the writer to sleep.
    let taken = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let (mut buf, mut taken) = (Vec::new(), 0);
            while taken < 1 + 200 {
                std::thread::sleep(Duration::from_micros(200));
                taken += consumer.take(4, &mut buf).records;
                consumer.commit();
            }
            taken
        });
        fill(&writer, 200); // 12 times the ring
        reader.join().unwrap()
    });
    assert_eq!(taken, 201);
    assert_eq!(writer.ring().snapshot().dropped, 0, "a live consumer costs no record");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_consumer_that_detaches_wakes_the_writers_waiting_for_it() {
    let path = crate::ring_path(&format!("test-writer-detach-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut writer =
        Writer::attach(Ring::create(&path, RingOptions { capacity: 16, ..RingOptions::default() }).unwrap())
            .unwrap();
    // The shared ring's full wait: no sub-ring to write instead.
    writer.use_subrings(false);
    writer.full_wait = Duration::from_secs(10);
    let consumer = Consumer::attach(&path).unwrap();
    fill(&writer, 15); // full
    let start = Instant::now();
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(consumer);
        });
        fill(&writer, 1);
    });
    // Woken by the detach, not by the end of its 10 s wait.
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert_eq!(writer.ring().snapshot().dropped, 1);
    let _ = std::fs::remove_file(&path);
}

/// A writer on a new ring of one 256-slot sub-ring and a 64-slot shared
/// ring, named after `tag`; the caller removes the file.
fn one_sub_ring_writer(tag: &str) -> (std::path::PathBuf, Writer) {
    let path = crate::ring_path(&format!("test-writer-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let options = RingOptions { capacity: 64, subrings: 1, subring_capacity: 256, ..RingOptions::default() };
    (path.clone(), Writer::attach(Ring::create(&path, options).unwrap()).unwrap())
}

/// A writer waiting on its full sub-ring (for up to 10 s without
/// progress) stops when the consumer detaches, and writes the shared
/// ring instead: the record is neither lost nor dropped.
#[test]
fn a_consumer_that_detaches_ends_a_wait_on_a_sub_ring() {
    let (path, mut writer) = one_sub_ring_writer("detach-subring");
    writer.full_wait = Duration::from_secs(10);
    let consumer = Consumer::attach(&path).unwrap();
    let ring = Ring::open(&path).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| fill(&writer, 256 + 1)); // The sub-ring holds 256: the last one waits.
        let waiters = &ring.subring_header(0).control.wait.waiters;
        while waiters.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(consumer);
    });
    let _ = std::fs::remove_file(&path);
    assert_eq!(ring.subring_view(0).waiting(), 256, "the sub-ring is full");
    assert_eq!(ring.view().waiting(), 2, "the process start and the record that waited");
    assert_eq!(ring.snapshot().dropped, 0);
}

/// A sub-ring the consumer takes nothing from (it stopped at a corrupt
/// slot there, say) while it takes from other rings: the stall clock,
/// over every ring, never stops the thread's waits, so without a rule
/// of the sub-ring's own the thread would wait out `full_wait` at every
/// hook, for good. One wait without progress there is enough: the
/// thread's next records spill into the shared ring at once (no wait:
/// no ring of the doorbell) until the consumer takes from its
/// sub-ring, and then they wait again.
#[test]
fn a_sub_ring_the_consumer_takes_nothing_from_is_waited_on_once() {
    let (path, mut writer) = one_sub_ring_writer("stuck-subring");
    writer.set_full_wait(Duration::from_millis(20));
    let consumer = Consumer::attach(&path).unwrap();
    let ring = Ring::open(&path).unwrap();
    // A consumer asleep: every wait for space rings the doorbell.
    ring.header().doorbell.sleeping.store(1, Ordering::Relaxed);
    fill(&writer, 256 + 1); // The sub-ring holds 256: the last one waited, in vain.
    let rings = ring.doorbell_rings();
    assert_ne!(rings, 0, "the first record past a full sub-ring waited");
    // The consumer makes progress, in the shared ring only.
    let (shared, mut out) = (ring.view(), Vec::new());
    let mut cursor = shared.attach_consumer();
    shared.take(&mut cursor, 1, &mut out, |_, _| false);
    fill(&writer, 3);
    assert_eq!(ring.doorbell_rings(), rings, "no wait on a sub-ring the consumer took nothing from");
    assert_eq!(ring.subring_view(0).waiting(), 256);
    assert_eq!(shared.waiting(), 2 - 1 + 3, "the start and the waited record, less the one taken, and 3");
    // It takes from the sub-ring: the thread's next full sub-ring waits again.
    let sub = ring.subring_view(0);
    let mut sub_cursor = sub.attach_consumer();
    sub.take(&mut sub_cursor, 1, &mut out, |_, _| false);
    fill(&writer, 2);
    assert_ne!(ring.doorbell_rings(), rings, "waits again once the consumer took from the sub-ring");
    drop(consumer);
    let _ = std::fs::remove_file(&path);
    assert_eq!(ring.snapshot().dropped, 0);
}

#[test]
fn a_stalled_consumer_costs_a_few_waits_not_one_per_hook() {
    let path = crate::ring_path(&format!("test-writer-stall-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut writer =
        Writer::attach(Ring::create(&path, RingOptions { capacity: 16, ..RingOptions::default() }).unwrap())
            .unwrap();
    // The shared ring's full wait: no sub-ring to write instead.
    writer.use_subrings(false);
    writer.full_wait = Duration::from_millis(20);
    writer.stall_ticks = ticks_for(&writer.ring().calibration(), writer.full_wait * STALL_WAITS);
    let mut consumer = Consumer::attach(&path).unwrap();
    fill(&writer, 15); // 16 slots with the start record: full

    let start = Instant::now();
    fill(&writer, 100);
    // Without the stall rule these would wait 100 × 20 ms; with it,
    // about STALL_WAITS of them wait, then the rest drop at once.
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(20 * STALL_WAITS as u64), "{took:?}");
    assert!(took < Duration::from_millis(20 * 50), "later hooks drop at once: {took:?}");
    assert_eq!(writer.ring().snapshot().dropped, 100);

    // Progress ends the stall: the next full hook waits again.
    let mut buf = Vec::new();
    assert_eq!(consumer.take(usize::MAX, &mut buf).records, 16);
    consumer.commit();
    fill(&writer, 16);
    let start = Instant::now();
    fill(&writer, 1);
    assert!(start.elapsed() >= Duration::from_millis(20), "progress ends the stall");
    drop(consumer);
    let _ = std::fs::remove_file(&path);
}
