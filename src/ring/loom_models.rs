//! Loom models of the ring protocol: 2 writers and 1 consumer on rings of
//! 2–4 slots, every interleaving up to `LOOM_MAX_PREEMPTIONS`.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p memtrack --lib loom`

use super::testing::{HeapRing, payload};
use super::*;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::thread;

const A: Owner = Owner { slot: 0, generation: 1 };
const B: Owner = Owner { slot: 1, generation: 1 };

/// Pushes `values` as owner, dropping (and counting) on a full ring, as a
/// writer with no consumer attached does. Returns how many were dropped.
fn push_or_drop(view: RingView<'_>, owner: Owner, values: &[u64]) -> usize {
    let mut dropped = 0;
    for &v in values {
        match view.claim(owner) {
            Ok(claim) => claim.publish(&payload(v)),
            Err(Full) => {
                view.count_drop();
                dropped += 1;
            }
        }
    }
    dropped
}

/// Consumes until `writers_done` says both writers finished and a pass found
/// nothing more; `is_dead` answers for blocked claims.
fn consume_all(
    view: RingView<'_>,
    writers_done: &AtomicUsize,
    is_dead: impl Fn(u64, Owner) -> bool,
) -> Vec<Record> {
    let mut cursor = view.attach_consumer();
    let mut out = Vec::new();
    loop {
        let done = writers_done.load(Ordering::Acquire) == 2;
        let taken = view.take(&mut cursor, 8, &mut out, &is_dead);
        view.commit(&mut cursor);
        if done && taken == Taken::default() {
            return out;
        }
        thread::yield_now();
    }
}

/// Each writer's values arrive once, in ticket order and in its own order.
fn check_stream(out: &[Record], expected_total: usize) {
    assert_eq!(out.len(), expected_total);
    for pair in out.windows(2) {
        assert!(pair[0].ticket < pair[1].ticket, "ticket order");
    }
    for writer in [10, 20] {
        let mine: Vec<u64> = out.iter().map(|r| r.timestamp).filter(|v| v / 10 * 10 == writer).collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "writer order");
    }
}

#[test]
fn loom_every_record_delivered_once_in_ticket_order() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new(4));
        let done = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = [(A, [10, 11]), (B, [20, 21])]
            .into_iter()
            .map(|(owner, values)| {
                let (ring, done) = (ring.clone(), done.clone());
                thread::spawn(move || {
                    assert_eq!(push_or_drop(ring.view(), owner, &values), 0, "4 slots hold 4 records");
                    done.fetch_add(1, Ordering::Release);
                })
            })
            .collect();
        let out = consume_all(ring.view(), &done, |_, _| false);
        writers.into_iter().for_each(|w| w.join().unwrap());
        check_stream(&out, 4);
        assert_eq!(ring.view().progress().delivered, 4);
    });
}

#[test]
fn loom_full_ring_drops_are_counted_exactly() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new(2));
        let done = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = [(A, [10, 11]), (B, [20, 21])]
            .into_iter()
            .map(|(owner, values)| {
                let (ring, done) = (ring.clone(), done.clone());
                thread::spawn(move || {
                    let dropped = push_or_drop(ring.view(), owner, &values);
                    done.fetch_add(1, Ordering::Release);
                    dropped
                })
            })
            .collect();
        let out = consume_all(ring.view(), &done, |_, _| false);
        let dropped: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        check_stream(&out, 4 - dropped);
        let view = ring.view();
        assert_eq!(view.dropped() as usize, dropped);
        assert_eq!(view.progress().delivered as usize + dropped, 4, "attempted = delivered + dropped");
    });
}

#[test]
fn loom_a_dead_writers_claim_is_reclaimed_only_once_it_is_dead() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new(2));
        let done = Arc::new(AtomicUsize::new(0));
        let a_dead = Arc::new(AtomicBool::new(false));
        let dying = {
            let (ring, done, a_dead) = (ring.clone(), done.clone(), a_dead.clone());
            thread::spawn(move || {
                // Claims and dies before publishing; the kernel then drops
                // its lock, which the consumer observes as death.
                let claimed = ring.view().claim(A).is_ok();
                a_dead.store(true, Ordering::Release);
                done.fetch_add(1, Ordering::Release);
                claimed
            })
        };
        let live = {
            let (ring, done) = (ring.clone(), done.clone());
            thread::spawn(move || {
                let dropped = push_or_drop(ring.view(), B, &[20]);
                done.fetch_add(1, Ordering::Release);
                dropped
            })
        };
        // B is alive throughout: its claim is always waited for.
        let out = consume_all(ring.view(), &done, |_, owner| owner == A && a_dead.load(Ordering::Acquire));
        let a_claimed = dying.join().unwrap();
        let b_dropped = live.join().unwrap();
        assert!(a_claimed, "a 2-slot ring has room for A's first claim");
        assert_eq!(out.len(), 1 - b_dropped);
        assert!(out.iter().all(|r| r.timestamp == 20));
        let p = ring.view().progress();
        assert_eq!(p.lost_writer_died, 1, "the dead claim is counted once");
        assert_eq!(p.delivered as usize + p.lost_writer_died as usize + b_dropped, 2);
    });
}

#[test]
fn loom_a_restarted_consumer_neither_repeats_nor_skips_uncounted() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new(4));
        let done = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = [(A, [10, 11]), (B, [20, 21])]
            .into_iter()
            .map(|(owner, values)| {
                let (ring, done) = (ring.clone(), done.clone());
                thread::spawn(move || {
                    let dropped = push_or_drop(ring.view(), owner, &values);
                    done.fetch_add(1, Ordering::Release);
                    dropped
                })
            })
            .collect();
        let view = ring.view();
        // The first consumer commits one batch, then dies holding another.
        let mut first = view.attach_consumer();
        let mut handed_on = Vec::new();
        view.take(&mut first, 1, &mut handed_on, |_, _| false);
        view.commit(&mut first);
        let mut died_with = Vec::new();
        let lost_with_it = view.take(&mut first, 1, &mut died_with, |_, _| false).records;
        // Its successor resumes after the batch it lost.
        let rest = consume_all(view, &done, |_, _| false);
        let dropped: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert_eq!(dropped, 0, "4 slots hold 4 records");
        let p = view.progress();
        assert_eq!(p.lost_reader_died as usize, lost_with_it);
        assert_eq!(handed_on.len() + rest.len() + lost_with_it, 4);
        let mut all: Vec<u64> = handed_on.iter().chain(&died_with).chain(&rest).map(|r| r.ticket).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4, "no ticket handed on twice");
        assert_eq!(p.delivered + p.lost_reader_died, 4);
    });
}

/// What the reader relies on to place a process's death after its last
/// record: once a writer has stopped, a consumer that is `caught_up` has
/// taken every record that writer published, whatever the other writer is
/// doing. (The reader learns of a death through the kernel's lock, a
/// stronger edge than the Release/Acquire flag used here.)
#[test]
fn loom_caught_up_after_a_writer_stops_means_its_records_were_taken() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new(4));
        let stopped = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let a = {
            let (ring, stopped, done) = (ring.clone(), stopped.clone(), done.clone());
            thread::spawn(move || {
                push_or_drop(ring.view(), A, &[10, 11]);
                stopped.store(true, Ordering::Release);
                done.fetch_add(1, Ordering::Release);
            })
        };
        let b = {
            let (ring, done) = (ring.clone(), done.clone());
            thread::spawn(move || {
                push_or_drop(ring.view(), B, &[20]);
                done.fetch_add(1, Ordering::Release);
            })
        };
        let view = ring.view();
        let mut cursor = view.attach_consumer();
        let mut out: Vec<Record> = Vec::new();
        let mut checked = false;
        loop {
            let all_done = done.load(Ordering::Acquire) == 2;
            if !checked && stopped.load(Ordering::Acquire) && view.caught_up(&cursor) {
                let mine = out.iter().filter(|r| r.timestamp / 10 == 1).count();
                assert_eq!(mine, 2, "a stopped writer's records are all taken once caught up");
                checked = true;
            }
            let taken = view.take(&mut cursor, 8, &mut out, |_, _| false);
            view.commit(&mut cursor);
            if all_done && taken == Taken::default() {
                break;
            }
            thread::yield_now();
        }
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(out.len(), 3);
    });
}

// ---- waiting for space: the futex handshake ------------------------------
//
// Loom's futex (`sync::FutexWord`) sleeps until woken and ignores timeouts,
// so a writer whose wake-up was lost sleeps for ever, and the model fails
// (the consumer spins for a record that never comes: "exceeded maximum
// number of branches"; seen by deleting the writer's SeqCst fence). These
// models prove the handshake needs no timeout to make progress. The timeouts are for consumers that die or stop, which wake no
// one; a writer's reaction to them is tested with real processes
// (`consumer_killed_or_stopped_costs_a_bounded_wait` in tests/ and
// `writer.rs`).

/// Pushes `values` as a writer with a consumer attached does: on a full
/// ring, waits for space while the consumer stays attached, else drops
/// and counts. Returns how many were dropped.
fn push_or_wait(view: RingView<'_>, owner: Owner, values: &[u64]) -> usize {
    push_or_wait_until(view, owner, values, std::time::Duration::MAX, |view| !view.consumer_attached())
}

/// As [`push_or_wait`], but each wait lasts at most `timeout`, and before
/// each the writer asks `give_up` (the consumer detached, or found dead).
fn push_or_wait_until(
    view: RingView<'_>,
    owner: Owner,
    values: &[u64],
    timeout: std::time::Duration,
    give_up: impl Fn(&RingView<'_>) -> bool,
) -> usize {
    let mut dropped = 0;
    for &v in values {
        let claim = loop {
            if let Ok(claim) = view.claim(owner) {
                break Some(claim);
            }
            if give_up(&view) {
                break None;
            }
            if let Ok(claim) = view.wait_for_space(view.consumer_lines(None), timeout, || view.claim(owner)) {
                break Some(claim);
            }
        };
        match claim {
            Some(claim) => claim.publish(&payload(v)),
            None => {
                view.count_drop();
                dropped += 1;
            }
        }
    }
    dropped
}

fn attach(ring: &HeapRing) {
    ring.control.reader.reader_pid.store(1, Ordering::Relaxed);
}

/// A consumer taking `n` records one at a time, committing each and
/// yielding between looks (so loom runs the writers meanwhile): their
/// timestamps, in the order taken.
fn take_one_at_a_time(view: RingView<'_>, n: usize) -> Vec<u64> {
    let mut cursor = view.attach_consumer();
    let mut out = Vec::new();
    while out.len() < n {
        view.take(&mut cursor, 1, &mut out, |_, _| false);
        view.commit(&mut cursor);
        thread::yield_now();
    }
    out.iter().map(|r| r.timestamp).collect()
}

/// No lost wake-up: a writer that outruns a live consumer (three records
/// through two slots) always gets its slot; none is dropped.
#[test]
fn loom_a_waiting_writer_is_always_woken() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new(2));
        attach(&ring);
        let writer = {
            let ring = ring.clone();
            thread::spawn(move || push_or_wait(ring.view(), A, &[10, 11, 12]))
        };
        assert_eq!(take_one_at_a_time(ring.view(), 3), [10, 11, 12]);
        assert_eq!(writer.join().unwrap(), 0, "a live consumer costs no record");
        assert_eq!(ring.control.wait.waiters.load(Ordering::Relaxed), 0);
    });
}

/// As above with two writers competing for the slots the consumer frees:
/// a writer that loses a slot to the other goes back to sleep and is
/// still woken. The ring starts full (one record of each writer, pushed
/// before the threads start) and each writer pushes one more, so both
/// wait from their first claim; the consumer's first take frees a single
/// slot, for which they race. (Both writers pushing two records into an
/// empty ring took minutes; this takes seconds, and still deadlocks within
/// a second when either SeqCst fence of the handshake is weakened to AcqRel.)
#[test]
fn loom_two_waiting_writers_are_always_woken() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new(2));
        attach(&ring);
        assert_eq!(push_or_drop(ring.view(), A, &[10]) + push_or_drop(ring.view(), B, &[20]), 0);
        let writers: Vec<_> = [(A, 11), (B, 21)]
            .into_iter()
            .map(|(owner, value)| {
                let ring = ring.clone();
                thread::spawn(move || push_or_wait(ring.view(), owner, &[value]))
            })
            .collect();
        let view = ring.view();
        let mut cursor = view.attach_consumer();
        let mut out = Vec::new();
        while out.len() < 3 {
            // One slot first, for which both writers race; then two.
            let max = if out.is_empty() { 1 } else { 2 };
            view.take(&mut cursor, max, &mut out, |_, _| false);
            view.commit(&mut cursor);
            thread::yield_now();
        }
        // The last record may sit in the ring only: take it after the joins.
        let dropped: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        view.take(&mut cursor, 2, &mut out, |_, _| false);
        view.commit(&mut cursor);
        assert_eq!(dropped, 0, "a live consumer costs no record");
        check_stream(&out, 4);
    });
}

/// No wait on a consumer that is gone: a consumer that detaches at any
/// moment (its successor would count what it took) never leaves a writer
/// asleep, and every record is delivered or counted dropped.
#[test]
fn loom_no_writer_sleeps_on_a_detached_consumer() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new(2));
        attach(&ring);
        let writer = {
            let ring = ring.clone();
            thread::spawn(move || push_or_wait(ring.view(), A, &[10, 11, 12, 13]))
        };
        let view = ring.view();
        let mut cursor = view.attach_consumer();
        let mut out = Vec::new();
        view.take(&mut cursor, 2, &mut out, |_, _| false);
        view.commit(&mut cursor);
        // Detaching, as `Consumer::drop` does.
        ring.control.reader.reader_pid.store(0, Ordering::Relaxed);
        view.wake_writers();
        let dropped = writer.join().unwrap();
        // What is left in the ring, for the next consumer.
        let mut rest = Vec::new();
        view.take(&mut cursor, 4, &mut rest, |_, _| false);
        view.commit(&mut cursor);
        assert_eq!(out.len() + rest.len() + dropped, 4, "attempted = delivered + dropped");
        assert_eq!(view.dropped() as usize, dropped);
    });
}

/// No wait on a consumer that died: a killed consumer wakes no one and
/// leaves `reader_pid` set, so only the writer's timeout ends its sleep
/// (loom's futex ends a timed wait at any moment). After each sleep the
/// writer looks at the consumer's liveness (its lock, here a flag set at
/// death) and, finding it dead, drops and counts instead of waiting again.
#[test]
fn loom_a_writer_stops_waiting_for_a_consumer_that_died() {
    loom::model(|| {
        let ring = Arc::new(HeapRing::new(2));
        attach(&ring);
        let dead = Arc::new(AtomicBool::new(false));
        let writer = {
            let (ring, dead) = (ring.clone(), dead.clone());
            thread::spawn(move || {
                // The liveness check of `Writer::wait_for_space`, after every
                // timed sleep.
                let timeout = std::time::Duration::from_micros(500);
                push_or_wait_until(ring.view(), A, &[10, 11, 12, 13], timeout, |_| {
                    // Acquire: pairs with the Release store at the consumer's death.
                    dead.load(Ordering::Acquire)
                })
            })
        };
        // The consumer takes one record at most, then is killed: no
        // detach, no wake-up, `reader_pid` left behind.
        let view = ring.view();
        let mut cursor = view.attach_consumer();
        let mut out = Vec::new();
        view.take(&mut cursor, 1, &mut out, |_, _| false);
        view.commit(&mut cursor);
        dead.store(true, Ordering::Release);
        let dropped = writer.join().unwrap();
        // Its successor takes what is left.
        let mut next = view.attach_consumer();
        let mut rest = Vec::new();
        view.take(&mut next, 4, &mut rest, |_, _| false);
        view.commit(&mut next);
        assert_eq!(out.len() + rest.len() + dropped, 4, "attempted = delivered + dropped");
        assert!(dropped >= 1, "four records, two slots, one take at most: one is dropped");
        assert_eq!(view.dropped() as usize, dropped);
    });
}

// ---- the consumer's second look (consumer::merge) -------------------------

/// A record z of a sub-ring that happened before a record y of the shared
/// ring (z's writer published z, then told y's writer, which then wrote
/// y); the consumer looks at z's ticket (`first`), reads until it has y,
/// and looks at z's ticket again. Returns whether each look found it
/// unclaimed, and whether the consumer read y.
fn looks_around_a_read_record() -> (bool, bool, bool) {
    let subring = Arc::new(HeapRing::new(2));
    let shared = Arc::new(HeapRing::new(2));
    let told = Arc::new(AtomicBool::new(false));
    let a = {
        let (subring, told) = (subring.clone(), told.clone());
        thread::spawn(move || {
            // The sub-ring's one writer: claim_own, then publish.
            subring.view().claim_own(A, 0).expect("an empty slot").publish(&payload(10));
            // Release: pairs with B's Acquire (z happens before y).
            told.store(true, Ordering::Release);
        })
    };
    let b = {
        let (shared, told) = (shared.clone(), told.clone());
        thread::spawn(move || {
            // (A few tries, not a spin: loom explores every schedule.)
            for _ in 0..2 {
                if told.load(Ordering::Acquire) {
                    push_or_drop(shared.view(), B, &[20]);
                    return;
                }
                thread::yield_now();
            }
        })
    };
    let first = subring.view().unclaimed(0);
    let mut out = Vec::new();
    for _ in 0..2 {
        if shared.view().read_run(0, 1, u64::MAX, 0, &mut out, |_, _| false).taken.records == 1 {
            break;
        }
        thread::yield_now();
    }
    let second = subring.view().unclaimed(0);
    a.join().unwrap();
    b.join().unwrap();
    (first, second, out.len() == 1)
}

/// Once the consumer has read y, a look at z's ring finds z's ticket
/// claimed: what lets `consumer::sources` lift a ring's bound for a round
/// when its next ticket is still unclaimed after the round's last look
/// (no record claimed after that look can have happened before one read
/// before it).
#[test]
fn loom_a_record_that_happened_before_one_read_is_seen_by_the_second_look() {
    loom::model(|| {
        let (_, second, read_y) = looks_around_a_read_record();
        assert!(!(read_y && second), "y was read, but z's ticket looked unclaimed after it");
    });
}

/// The same look taken before y was read may find z's ticket unclaimed:
/// a bound lifted on that look would let y out before z.
#[test]
#[should_panic(expected = "the first look")]
fn loom_the_first_look_alone_may_miss_a_record_that_happened_before() {
    loom::model(|| {
        let (first, _, read_y) = looks_around_a_read_record();
        assert!(!(read_y && first), "the first look found z's ticket unclaimed, and y was read");
    });
}

// ---- a full sub-ring waits; the consumer's doorbell ----------------------

/// Pushes `values` into a sub-ring as its one writer does (claims at its
/// own next ticket, `claim_own`), waiting for space while `shared` (the
/// shared ring's control) says a consumer is attached; rings `doorbell`
/// before each sleep. Untimed sleeps: a lost wake-up deadlocks the model.
fn push_own_or_wait(
    sub: RingView<'_>,
    shared: RingView<'_>,
    doorbell: Option<&crate::format::DoorbellLine>,
    owner: Owner,
    values: &[u64],
) -> usize {
    let mut ticket = 0;
    let mut dropped = 0;
    for &v in values {
        let claim = loop {
            if let Ok(claim) = sub.claim_own(owner, ticket) {
                break Some(claim);
            }
            if !shared.consumer_attached() {
                break None;
            }
            let lines = shared.consumer_lines(doorbell);
            if let Ok(claim) =
                sub.wait_for_space(lines, std::time::Duration::MAX, || sub.claim_own(owner, ticket))
            {
                break Some(claim);
            }
        };
        match claim {
            Some(claim) => {
                // Only on success: a failed wait keeps the ticket.
                ticket += 1;
                claim.publish(&payload(v));
            }
            None => dropped += 1,
        }
    }
    dropped
}

/// (a) A writer whose sub-ring is full waits on the sub-ring's wait line
/// (the consumer being attached says the *shared* header) and is always
/// woken by the consumer's takes there: it never sleeps with a slot free
/// and no wake-up coming, and its records come out once, in order.
/// Checked to fail: with the SeqCst fence in `RingView::wait_for_space`
/// weakened to AcqRel, the writer sleeps for ever and loom stops the model
/// ("exceeded maximum number of branches": the consumer spins for a record
/// that never comes).
#[test]
fn loom_a_writer_waiting_on_a_full_subring_is_always_woken() {
    loom::model(|| {
        let shared = Arc::new(HeapRing::new(2));
        attach(&shared);
        let sub = Arc::new(HeapRing::new(2));
        let writer = {
            let (shared, sub) = (shared.clone(), sub.clone());
            thread::spawn(move || push_own_or_wait(sub.view(), shared.view(), None, A, &[10, 11, 12]))
        };
        assert_eq!(take_one_at_a_time(sub.view(), 3), [10, 11, 12]);
        assert_eq!(writer.join().unwrap(), 0, "a live consumer costs no record");
        assert_eq!(sub.control.wait.waiters.load(Ordering::Relaxed), 0);
        assert_eq!(shared.view().claimed_end(&shared.view().attach_consumer()), 0, "nothing spilled");
    });
}

/// (a') A thread that took a dead holder's sub-ring clears the wait
/// registration the holder left (`subrings::clear_dead_holders_wait`), then
/// waits there itself: the clear never costs it its wake-up, and the count
/// ends at 0 (without the clear it ends at 1: the FUTEX_WAKE per release
/// the clear is for).
#[test]
fn loom_clearing_a_dead_holders_registration_loses_no_wake_up() {
    loom::model(|| {
        let shared = Arc::new(HeapRing::new(2));
        attach(&shared);
        let sub = Arc::new(HeapRing::new(2));
        // Left by a holder killed asleep for space.
        sub.control.wait.waiters.store(1, Ordering::Relaxed);
        let writer = {
            let (shared, sub) = (shared.clone(), sub.clone());
            thread::spawn(move || {
                crate::subrings::clear_dead_holders_wait(&sub.control.wait);
                push_own_or_wait(sub.view(), shared.view(), None, A, &[10, 11, 12])
            })
        };
        assert_eq!(take_one_at_a_time(sub.view(), 3), [10, 11, 12]);
        assert_eq!(writer.join().unwrap(), 0, "a live consumer costs no record");
        assert_eq!(sub.control.wait.waiters.load(Ordering::Relaxed), 0);
    });
}

/// (b) The doorbell: a consumer going to sleep (untimed) and a writer
/// registering to wait in its full sub-ring: either the consumer sees the
/// registration and stays awake, or the writer sees it asleep and rings;
/// never both asleep. Checked to fail: with the SeqCst fence in
/// `doorbell::sleep` weakened to AcqRel (or removed), loom finds the
/// deadlock (both asleep).
#[test]
fn loom_a_sleeping_consumer_is_rung_or_sees_the_waiter() {
    loom::model(|| {
        let shared = Arc::new(HeapRing::new(2));
        attach(&shared);
        let sub = Arc::new(HeapRing::new(1));
        let bell = Arc::new(super::testing::doorbell());
        // The sub-ring is full: the writer's next record waits.
        assert_eq!(push_own_or_wait(sub.view(), shared.view(), None, A, &[10]), 0);
        let writer = {
            let (shared, sub, bell) = (shared.clone(), sub.clone(), bell.clone());
            thread::spawn(move || {
                // Its next ticket is 1 (the first record took 0).
                let (view, lines) = (sub.view(), shared.view().consumer_lines(Some(&bell)));
                loop {
                    if let Ok(claim) =
                        view.wait_for_space(lines, std::time::Duration::MAX, || view.claim_own(A, 1))
                    {
                        break claim.publish(&payload(11));
                    }
                }
            })
        };
        let view = sub.view();
        let mut cursor = view.attach_consumer();
        let shared_cursor = shared.view().attach_consumer();
        // The consumer's idle pause, untimed: only a ring ends it. (It
        // stays awake for a waiter only where it has records to take:
        // here record 10 fills the sub-ring.)
        let writer_waits = || shared.view().writer_waits_on(&shared_cursor) || view.writer_waits_on(&cursor);
        super::doorbell::sleep(&bell, writer_waits, std::time::Duration::MAX);
        let mut out = Vec::new();
        while out.len() < 2 {
            view.take(&mut cursor, 1, &mut out, |_, _| false);
            view.commit(&mut cursor);
            thread::yield_now();
        }
        writer.join().unwrap();
        let values: Vec<u64> = out.iter().map(|r| r.timestamp).collect();
        assert_eq!(values, [10, 11]);
    });
}
