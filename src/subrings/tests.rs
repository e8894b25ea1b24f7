//! The writer side of sub-rings with real threads and processes: who gets
//! a sub-ring, who falls back to the shared ring, hand-over at thread
//! exit, and reclaiming the leases of a SIGKILLed process. Until the
//! consumer merges the rings, these read every source directly, each with
//! `attach_consumer`/`take`/`commit` on its own `RingView`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::format::Event;
use crate::ring::RingView;
use crate::shm::{Ring, RingOptions, ring_path};
use crate::sync::Ordering;
use crate::{MemtrackBuffer, Record, Writer};

/// The environment variable that makes this test binary a helper process.
const ROLE: &str = "MEMTRACK_SUBRING_TEST_ROLE";

struct TempRing(PathBuf);

impl TempRing {
    fn new(name: &str) -> TempRing {
        let path = ring_path(&format!("test-subrings-{name}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempRing(path)
    }

    fn create(&self, subrings: u32, subring_capacity: u32) -> Ring {
        let options = RingOptions { capacity: 1 << 14, subrings, subring_capacity, ..RingOptions::default() };
        Ring::create(&self.0, options).unwrap()
    }
}

impl Drop for TempRing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A writer on its own attachment of the ring at `path`, with sub-ring
/// writes on.
fn writer(path: &Path) -> Writer {
    let writer = Writer::attach(Ring::open(path).unwrap()).unwrap();
    writer.use_subrings(true);
    writer
}

fn buffer(thread: u64, seq: u64) -> MemtrackBuffer {
    MemtrackBuffer { buffer_id: thread << 32 | seq, size: 64, device_id: thread as u32, ..Default::default() }
}

/// What one source held: its records in ticket order and the dead
/// writers' claims it counted lost.
#[derive(Debug, Default)]
struct Drained {
    records: Vec<Record>,
    lost: usize,
}

/// Takes everything `view` holds (from a reader's own attachment, so a
/// writer's liveness is read through locks it does not share).
fn drain(reader: &Ring, view: RingView<'_>) -> Drained {
    let mut cursor = view.attach_consumer();
    let mut drained = Drained::default();
    loop {
        let taken =
            view.take(&mut cursor, 1024, &mut drained.records, |_, owner| reader.is_owner_dead(owner));
        view.commit(&mut cursor);
        drained.lost += taken.lost;
        if taken.records + taken.lost == 0 {
            return drained;
        }
    }
}

/// Every sub-ring drained, by index.
fn drain_subrings(reader: &Ring) -> Vec<Drained> {
    (0..reader.subring_count()).map(|i| drain(reader, reader.subring_view(i))).collect()
}

/// The buffer events of `records` (start records left out).
fn buffer_ids(records: &[Record]) -> Vec<u64> {
    records.iter().filter(|r| r.event() == Some(Event::Alloc)).map(|r| r.buffer_id).collect()
}

fn assert_one_thread_in_order(records: &[Record]) {
    for pair in records.windows(2) {
        assert_eq!(pair[1].ticket, pair[0].ticket + 1, "no hole in a sub-ring");
        assert!(pair[0].timestamp <= pair[1].timestamp, "one thread's stamps never go back");
    }
}

/// More threads than cores and than sub-rings, all alive at once: as many
/// as there are sub-rings get one each (no sub-ring twice), the rest write
/// the shared ring; every record lands exactly once, a sub-ring holding
/// one thread's records in order, stamped in order.
#[test]
fn threads_beyond_the_sub_rings_fall_back_to_the_shared_ring() {
    let tmp = TempRing::new("many");
    drop(tmp.create(4, 256));
    let writer = writer(&tmp.0);
    let threads = 12;
    let per_thread = 200;
    let barrier = Barrier::new(threads);
    let held: Vec<Option<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads as u64)
            .map(|t| {
                let (writer, barrier) = (&writer, &barrier);
                s.spawn(move || {
                    writer.alloc(&buffer(t, 0));
                    barrier.wait(); // Every thread holds its sub-ring (or none) at once.
                    for seq in 1..per_thread {
                        writer.alloc(&buffer(t, seq));
                    }
                    writer.own_subring()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut subrings: Vec<usize> = held.iter().flatten().copied().collect();
    subrings.sort_unstable();
    assert_eq!(subrings, [0, 1, 2, 3], "each sub-ring held by one thread: {held:?}");

    let reader = Ring::open(&tmp.0).unwrap();
    let shared = drain(&reader, reader.view());
    let mut all = buffer_ids(&shared.records);
    for (i, drained) in drain_subrings(&reader).iter().enumerate() {
        let holder = held.iter().position(|h| *h == Some(i)).unwrap() as u64;
        let expected: Vec<u64> = (0..per_thread).map(|seq| holder << 32 | seq).collect();
        assert_eq!(buffer_ids(&drained.records), expected, "sub-ring {i}: its holder's records, in order");
        assert_one_thread_in_order(&drained.records);
        all.extend(buffer_ids(&drained.records));
    }
    all.sort_unstable();
    let mut expected: Vec<u64> =
        (0..threads as u64).flat_map(|t| (0..per_thread).map(move |seq| t << 32 | seq)).collect();
    expected.sort_unstable();
    assert_eq!(all, expected, "every record exactly once");
    assert_eq!(shared.records.iter().filter(|r| r.event() == Some(Event::ProcessStart)).count(), 1);
    for i in 0..4 {
        assert_eq!(reader.subring_header(i).lease.load(Ordering::Relaxed), 0, "given back at thread exit");
    }
}

/// A thread that exits gives its sub-ring back with its next ticket; the
/// next thread takes it and goes on there, while a thread that finds it
/// held writes the shared ring.
#[test]
fn an_exiting_thread_gives_its_sub_ring_back_and_the_next_goes_on_after_it() {
    let tmp = TempRing::new("handover");
    drop(tmp.create(1, 256));
    let writer = writer(&tmp.0);
    let write = |t: u64, n: u64| {
        for seq in 0..n {
            writer.alloc(&buffer(t, seq));
        }
        writer.own_subring()
    };
    std::thread::scope(|s| assert_eq!(s.spawn(|| write(1, 10)).join().unwrap(), Some(0)));
    let reader = Ring::open(&tmp.0).unwrap();
    let header = reader.subring_header(0);
    assert_eq!(header.lease.load(Ordering::Relaxed), 0, "given back");
    assert_eq!(header.control.tail.tail.load(Ordering::Relaxed), 10, "with the next ticket");
    let (started, done) = (Barrier::new(2), Barrier::new(2));
    std::thread::scope(|s| {
        let second = s.spawn(|| {
            let held = write(2, 10);
            started.wait();
            done.wait();
            held
        });
        started.wait();
        assert_eq!(s.spawn(|| write(3, 5)).join().unwrap(), None, "the one sub-ring is held");
        done.wait();
        assert_eq!(second.join().unwrap(), Some(0));
    });
    let drained = drain(&reader, reader.subring_view(0));
    assert_one_thread_in_order(&drained.records);
    let expected: Vec<u64> =
        (0..10).map(|seq| 1 << 32 | seq).chain((0..10).map(|seq| 2 << 32 | seq)).collect();
    assert_eq!(buffer_ids(&drained.records), expected);
    assert_eq!(drained.records.last().unwrap().ticket, 19);
    let shared = drain(&reader, reader.view());
    assert_eq!(buffer_ids(&shared.records), (0..5).map(|seq| 3 << 32 | seq).collect::<Vec<_>>());
}

/// A full sub-ring is never waited on: the record goes to the shared ring
/// (none dropped), and once the consumer frees slots the thread is back
/// in its sub-ring.
#[test]
fn a_full_sub_ring_sends_records_to_the_shared_ring_until_it_has_room() {
    let tmp = TempRing::new("full");
    drop(tmp.create(1, 256));
    let writer = writer(&tmp.0);
    let reader = Ring::open(&tmp.0).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for seq in 0..300 {
                writer.alloc(&buffer(1, seq));
            }
            let first = drain(&reader, reader.subring_view(0));
            assert_eq!(buffer_ids(&first.records), (0..256).map(|seq| 1 << 32 | seq).collect::<Vec<_>>());
            for seq in 300..310 {
                writer.alloc(&buffer(1, seq));
            }
        });
    });
    let second = drain(&reader, reader.subring_view(0));
    assert_eq!(buffer_ids(&second.records), (300..310).map(|seq| 1 << 32 | seq).collect::<Vec<_>>());
    assert_eq!(second.records[0].ticket, 256);
    let shared = drain(&reader, reader.view());
    assert_eq!(buffer_ids(&shared.records), (256..300).map(|seq| 1 << 32 | seq).collect::<Vec<_>>());
    assert_eq!(reader.view().dropped(), 0);
}

/// Helper processes: this test binary re-executed in a role.
#[test]
fn helper() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let path = PathBuf::from(std::env::var("MEMTRACK_RING").unwrap());
    match role.as_str() {
        // HELPER_THREADS threads write 50 records each in their sub-ring;
        // thread 0 then claims a slot it never publishes; all then park,
        // holding their sub-rings, until the process is killed.
        "hold-and-park" => {
            let writer = writer(&path);
            let threads = std::env::var("HELPER_THREADS").unwrap().parse::<usize>().unwrap();
            let ready = Barrier::new(threads + 1);
            std::thread::scope(|s| {
                for t in 0..threads as u64 {
                    let (writer, ready) = (&writer, &ready);
                    s.spawn(move || {
                        for seq in 0..50 {
                            writer.alloc(&buffer(t, seq));
                        }
                        assert!(writer.own_subring().is_some());
                        if t == 0 {
                            assert!(writer.claim_own_without_publishing());
                        }
                        ready.wait();
                        std::thread::sleep(Duration::from_secs(600));
                    });
                }
                ready.wait();
                std::fs::write(std::env::var("HELPER_READY").unwrap(), b"ready").unwrap();
            });
        }
        // One thread fills its sub-ring while a consumer is attached and
        // takes nothing, so it sleeps for space (MEMTRACK_WAIT_US at its 1 s most)
        // until the process is killed.
        "fill-and-wait" => {
            let writer = writer(&path);
            std::thread::scope(|s| {
                s.spawn(|| (0..1_000).for_each(|seq| writer.alloc(&buffer(0, seq))));
            });
            panic!("the writer never waited: it wrote 1000 records into a 256-slot sub-ring");
        }
        other => panic!("unknown role {other}"),
    }
}

/// A process SIGKILLed while its threads hold every sub-ring (one of them
/// between claim and publish): another process's threads reclaim the
/// stale leases and go on after the last claimed slot; the dead claim is
/// counted lost once, and nothing is written twice.
#[test]
fn a_killed_processs_sub_rings_are_reclaimed_by_another_processs_threads() {
    let tmp = TempRing::new("reclaim");
    drop(tmp.create(3, 256));
    let ready = PathBuf::from(format!("{}.ready", tmp.0.display()));
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "subrings::tests::helper", "--nocapture", "--test-threads=1"])
        .env(ROLE, "hold-and-park")
        .env("MEMTRACK_RING", &tmp.0)
        .env("HELPER_THREADS", "3")
        .env("HELPER_READY", &ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the helper ended early");
        assert!(Instant::now() < deadline, "the helper never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let reader = Ring::open(&tmp.0).unwrap();
    let dead: Vec<u64> = (0..3).map(|i| reader.subring_header(i).lease.load(Ordering::Relaxed)).collect();
    assert!(dead.iter().all(|&lease| lease != 0), "the helper holds every sub-ring: {dead:?}");
    let snapshot = reader.snapshot();
    assert_eq!(snapshot.subrings_in_use(), 3);
    let mut waiting: Vec<u64> = snapshot.subrings.iter().map(|s| s.waiting).collect();
    waiting.sort_unstable();
    assert_eq!(waiting, [50, 50, 51], "the parked claim is waiting too");
    // SAFETY: kill with the pid of a child we have not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    child.wait().unwrap();
    let _ = std::fs::remove_file(&ready);
    assert_eq!(reader.snapshot().subrings_in_use(), 0, "a dead holder's sub-rings are not in use");

    let writer = writer(&tmp.0);
    let barrier = Barrier::new(3);
    let held: Vec<Option<usize>> = std::thread::scope(|s| {
        let handles: Vec<_> = (10..13u64)
            .map(|t| {
                let (writer, barrier) = (&writer, &barrier);
                s.spawn(move || {
                    for seq in 0..20 {
                        writer.alloc(&buffer(t, seq));
                    }
                    barrier.wait();
                    writer.own_subring()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut subrings: Vec<usize> = held.iter().flatten().copied().collect();
    subrings.sort_unstable();
    assert_eq!(subrings, [0, 1, 2], "every stale sub-ring reclaimed: {held:?}");

    let mut lost = 0;
    for (i, drained) in drain_subrings(&reader).iter().enumerate() {
        let new_holder = 10 + held.iter().position(|h| *h == Some(i)).unwrap() as u64;
        let ids = buffer_ids(&drained.records);
        assert_eq!(ids.len(), 70, "sub-ring {i}: 50 of the dead process's, 20 of the new holder's");
        let old_holder = ids[0] >> 32;
        let expected: Vec<u64> = (0..50)
            .map(|seq| old_holder << 32 | seq)
            .chain((0..20).map(|seq| new_holder << 32 | seq))
            .collect();
        assert_eq!(ids, expected, "sub-ring {i}");
        let tickets: Vec<u64> = drained.records.iter().map(|r| r.ticket).collect();
        let skipped = drained.lost as u64;
        let expected_tickets: Vec<u64> = (0..50).chain(50 + skipped..70 + skipped).collect();
        assert_eq!(tickets, expected_tickets, "sub-ring {i}: the new holder goes on after the dead claim");
        lost += drained.lost;
    }
    assert_eq!(lost, 1, "the parked claim, counted once");
}

/// A writer SIGKILLed while it slept for space in its sub-ring leaves its
/// wait registration (`waiters` 1) behind; the thread that reclaims the
/// stale lease takes it back, so the consumer does not make a system call
/// (FUTEX_WAKE) for a dead sleeper every time it frees slots there.
#[test]
fn the_thread_that_reclaims_a_dead_holders_sub_ring_takes_back_its_wait_registration() {
    let tmp = TempRing::new("dead-waiter");
    drop(tmp.create(1, 256));
    let reader = Ring::open(&tmp.0).unwrap();
    let waiters = || reader.subring_header(0).control.wait.waiters.load(Ordering::Relaxed);
    // The sleeper re-registers every wait slice (500 µs); a kill that lands
    // between two slices leaves no registration: try again.
    let mut registered = false;
    for _attempt in 0..10 {
        let consumer = crate::Consumer::attach(&tmp.0).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "subrings::tests::helper", "--nocapture", "--test-threads=1"])
            .env(ROLE, "fill-and-wait")
            .env("MEMTRACK_RING", &tmp.0)
            .env("MEMTRACK_WAIT_US", "1000000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while waiters() == 0 {
            assert!(child.try_wait().unwrap().is_none(), "the helper ended early");
            assert!(Instant::now() < deadline, "the helper never waited");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(20)); // Asleep in the futex by now.
        // SAFETY: kill with the pid of a child we have not reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        child.wait().unwrap();
        drop(consumer);
        if waiters() == 1 {
            registered = true;
            break;
        }
    }
    assert!(registered, "no kill landed while the helper slept for space");

    let writer = writer(&tmp.0);
    std::thread::scope(|s| {
        s.spawn(|| {
            writer.alloc(&buffer(1, 0));
            assert_eq!(writer.own_subring(), Some(0), "the stale sub-ring is reclaimed");
        });
    });
    assert_eq!(waiters(), 0, "the dead sleeper's registration is taken back");
}

/// A thread that found every sub-ring held looks again after
/// `RETRY_HOOKS` of its hooks, and takes one that was given back since.
#[test]
fn a_thread_without_a_sub_ring_takes_one_given_back_later() {
    let tmp = TempRing::new("retry");
    drop(tmp.create(1, 256));
    let writer = writer(&tmp.0);
    let (held, looked, released) = (Barrier::new(2), Barrier::new(2), Barrier::new(2));
    let late = std::thread::scope(|s| {
        // Holds its sub-ring (does not exit) until the late thread has
        // looked for one.
        let first = s.spawn(|| {
            writer.alloc(&buffer(1, 0));
            held.wait();
            looked.wait();
        });
        let late = s.spawn(|| {
            held.wait();
            writer.alloc(&buffer(2, 0));
            let before = writer.own_subring();
            looked.wait();
            released.wait();
            for seq in 1..super::RETRY_HOOKS as u64 + 10 {
                writer.alloc(&buffer(2, seq));
            }
            (before, writer.own_subring())
        });
        // `join` returns once the first thread's destructors (the give-back)
        // have run.
        first.join().unwrap();
        released.wait();
        late.join().unwrap()
    });
    assert_eq!(late.0, None, "held by the first thread");
    assert_eq!(late.1, Some(0), "taken once given back");
    let reader = Ring::open(&tmp.0).unwrap();
    let drained = drain(&reader, reader.subring_view(0));
    let ids = buffer_ids(&drained.records);
    assert_eq!(ids[0], 1 << 32, "the first thread's record");
    assert_eq!(ids.last(), Some(&(2 << 32 | (super::RETRY_HOOKS as u64 + 9))));
}
