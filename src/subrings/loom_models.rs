//! Loom models of a sub-ring's writer side: the one writer's plain-store
//! claim against the consumer's take, lease hand-over at thread exit, two
//! threads racing for one free lease, and the reclaim of a dead holder's
//! lease racing the consumer. Sub-rings of 2 slots (4 where no consumer
//! runs alongside); a payload write that is
//! not ordered after the consumer's read of the slot (or a slot written
//! twice) is a data race on the payload's `UnsafeCell`, which loom reports.
//!
//! The last four close gaps a review found (each was seen to fail with the
//! ordering or check it proves weakened; the test's doc says how):
//! stamps the consumer peeks and keeps across rounds while the writer laps,
//! a give-back whose lease was reclaimed meanwhile, a new holder's probe
//! from a hint laps behind, and the consumer's crash repair while the
//! sub-ring's holder writes.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p memtrack --lib loom`

use super::{give_back, take_lease};
use crate::format::{Record, Slot, SubRingHeader, subring_lease};
use crate::ring::testing::{control, payload, release_and_die};
use crate::ring::{Owner, RingView, Taken};
use crate::sync::Ordering;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::thread;

const A: Owner = Owner { slot: 0, generation: 1 };
const B: Owner = Owner { slot: 1, generation: 1 };

/// A sub-ring on the heap: its header (lease free, tail 0) and slots.
struct HeapSubRing {
    header: SubRingHeader,
    slots: Vec<Slot>,
}

impl HeapSubRing {
    fn new(capacity: usize) -> HeapSubRing {
        HeapSubRing {
            header: SubRingHeader { lease: crate::sync::AtomicU64::new(0), control: control() },
            slots: (0..capacity).map(|_| Slot::new()).collect(),
        }
    }

    fn view(&self) -> RingView<'_> {
        RingView::new(&self.header.control, &self.slots)
    }
}

/// Writes `value` as `owner` at `ticket` if the slot is free: whether it did.
fn write_own(view: RingView<'_>, owner: Owner, ticket: u64, value: u64) -> bool {
    match view.claim_own(owner, ticket) {
        Ok(claim) => {
            claim.publish(&payload(value));
            true
        }
        Err(_) => false, // Full: the writer would fall back to the shared ring.
    }
}

/// Consumes until `done` says the other threads finished and a pass finds
/// nothing more; returns the records and the dead claims counted lost.
fn consume_all(
    view: RingView<'_>,
    done: &AtomicUsize,
    threads: usize,
    is_dead: impl Fn(Owner) -> bool,
) -> (Vec<Record>, usize) {
    let mut cursor = view.attach_consumer();
    let (mut out, mut lost) = (Vec::new(), 0);
    loop {
        let finished = done.load(Ordering::Acquire) == threads;
        let taken = view.take(&mut cursor, 4, &mut out, |_, owner| is_dead(owner));
        view.commit(&mut cursor);
        lost += taken.lost;
        if finished && taken == Taken::default() {
            return (out, lost);
        }
        thread::yield_now();
    }
}

/// The one writer claims with a plain store after an Acquire load of the
/// slot's state, laps the consumer on a 2-slot ring (falling back when the
/// slot is not yet free) and dies holding a claim: every record is
/// delivered once, in ticket order, or fell back; the dead claim is lost
/// once and never blocks the consumer.
#[test]
fn loom_own_claims_against_take_with_a_writer_that_dies_mid_claim() {
    loom::model(|| {
        let ring = Arc::new(HeapSubRing::new(2));
        let done = Arc::new(AtomicUsize::new(0));
        let dead = Arc::new(AtomicBool::new(false));
        let writer = {
            let (ring, done, dead) = (ring.clone(), done.clone(), dead.clone());
            thread::spawn(move || {
                let view = ring.view();
                let mut ticket = 0;
                let mut fell_back = 0;
                for value in 1..=3 {
                    if write_own(view, A, ticket, value) {
                        ticket += 1;
                    } else {
                        fell_back += 1;
                    }
                }
                // Claims and dies before publishing.
                let claimed = view.claim_own(A, ticket).is_ok();
                dead.store(true, Ordering::Release);
                done.fetch_add(1, Ordering::Release);
                (ticket, fell_back, claimed)
            })
        };
        let (out, lost) =
            consume_all(ring.view(), &done, 1, |owner| owner == A && dead.load(Ordering::Acquire));
        let (published, fell_back, claimed) = writer.join().unwrap();
        assert_eq!(out.len() as u64, published);
        assert_eq!(out.len() + fell_back, 3, "attempted = delivered + fell back");
        for (i, record) in out.iter().enumerate() {
            assert_eq!(record.ticket, i as u64, "no hole, in order");
        }
        assert!(out.windows(2).all(|w| w[0].timestamp < w[1].timestamp), "the writer's order");
        // The consumer stops at the claim while its writer lives, and
        // counts it once it is dead (before the writer says it is done).
        assert_eq!(lost, claimed as usize);
        let progress = ring.view().progress();
        assert_eq!(progress.delivered + progress.lost_writer_died, progress.committed);
    });
}

/// A holder gives its lease back (tail, then a Release CAS to free) while
/// the next thread tries to take it (Acquire CAS): if it gets it, it goes
/// on at the tail the first stored, never writing the first's slot.
#[test]
fn loom_lease_hand_over_at_thread_exit() {
    loom::model(|| {
        let ring = Arc::new(HeapSubRing::new(2));
        let first = subring_lease(0, 1);
        assert!(take_lease(&ring.header, 0, first));
        let exiting = {
            let ring = ring.clone();
            thread::spawn(move || {
                let view = ring.view();
                let ticket = view.own_next_ticket().unwrap();
                assert!(write_own(view, A, ticket, 1));
                give_back(&ring.header, first, ticket + 1);
            })
        };
        let next = {
            let ring = ring.clone();
            thread::spawn(move || {
                if !take_lease(&ring.header, 0, subring_lease(1, 1)) {
                    return None; // Still held: this thread writes the shared ring.
                }
                let view = ring.view();
                let ticket = view.own_next_ticket().unwrap();
                assert!(write_own(view, B, ticket, 2));
                Some(ticket)
            })
        };
        exiting.join().unwrap();
        if let Some(ticket) = next.join().unwrap() {
            assert_eq!(ticket, 1, "the next holder goes on after the first");
            let mut out = Vec::new();
            let view = ring.view();
            let mut cursor = view.attach_consumer();
            view.take(&mut cursor, 4, &mut out, |_, _| false);
            assert_eq!(out.iter().map(|r| r.timestamp).collect::<Vec<_>>(), [1, 2]);
        }
    });
}

/// Two threads race for one free lease: exactly one gets it (and writes).
#[test]
fn loom_two_threads_race_for_one_free_lease() {
    loom::model(|| {
        let ring = Arc::new(HeapSubRing::new(2));
        let racers: Vec<_> = [(A, 1u64), (B, 2)]
            .into_iter()
            .map(|(owner, value)| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let lease = subring_lease(owner.slot as usize, owner.generation);
                    if !take_lease(&ring.header, 0, lease) {
                        return false;
                    }
                    let view = ring.view();
                    let ticket = view.own_next_ticket().unwrap();
                    assert!(write_own(view, owner, ticket, value), "a free sub-ring has room");
                    true
                })
            })
            .collect();
        let winners = racers.into_iter().map(|r| r.join().unwrap()).filter(|&won| won).count();
        assert_eq!(winners, 1);
    });
}

/// A dead holder left a published record and a claim; a thread of another
/// process takes its stale lease (CAS from the value seen) while the
/// consumer takes: the new holder goes on at ticket 2, after the dead
/// claim, whether or not the consumer freed slot 0 yet, and writes it only
/// once it is free; the dead claim is counted lost once.
#[test]
fn loom_reclaim_of_a_stale_lease_races_the_consumers_take() {
    loom::model(|| {
        let ring = Arc::new(HeapSubRing::new(2));
        let stale = subring_lease(0, 1);
        assert!(take_lease(&ring.header, 0, stale));
        {
            let view = ring.view();
            assert!(write_own(view, A, 0, 1));
            let _dead_claim = view.claim_own(A, 1).unwrap(); // Dropped: A died here.
        }
        let done = Arc::new(AtomicUsize::new(0));
        let reclaimer = {
            let (ring, done) = (ring.clone(), done.clone());
            thread::spawn(move || {
                assert!(take_lease(&ring.header, stale, subring_lease(1, 1)));
                let view = ring.view();
                let ticket = view.own_next_ticket().unwrap();
                let wrote = write_own(view, B, ticket, 3);
                done.fetch_add(1, Ordering::Release);
                (ticket, wrote)
            })
        };
        let (out, lost) = consume_all(ring.view(), &done, 1, |owner| owner == A);
        let (ticket, wrote) = reclaimer.join().unwrap();
        assert_eq!(ticket, 2, "after the dead claim");
        assert_eq!(lost, 1, "the dead claim, once");
        let values: Vec<(u64, u64)> = out.iter().map(|r| (r.ticket, r.timestamp)).collect();
        if wrote {
            assert_eq!(values, [(0, 1), (2, 3)]);
        } else {
            assert_eq!(values, [(0, 1)], "slot 0 not yet free: fell back");
        }
    });
}

/// Gap (a): the consumer peeks a sub-ring, keeps the stamps of what it
/// peeked, and takes them rounds later (`consumer::sources` keeps
/// `stamps[head..]` and reads the records with `read_published`, with no
/// second load of their state), while the sub-ring's one writer laps a
/// 2-slot ring. Here the consumer takes one kept record per round and
/// peeks on from the end of what it keeps: every record comes out once,
/// in the writer's order, with the stamp that was kept for it. What it
/// proves: a slot peeked Full stays Full, with the same payload, until the
/// consumer frees it. Seen to fail with `claim_own` also taking a slot
/// still Full from the lap before (a record lost), and with `look`'s
/// Acquire load weakened to Relaxed (loom: the payload read races the
/// writer's stores).
#[test]
fn loom_kept_stamps_stay_true_while_the_writer_laps() {
    loom::model(|| {
        let ring = Arc::new(HeapSubRing::new(2));
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (ring, done) = (ring.clone(), done.clone());
            thread::spawn(move || {
                let view = ring.view();
                let (mut ticket, mut written) = (0, Vec::new());
                for value in 1..=3 {
                    if write_own(view, A, ticket, value) {
                        ticket += 1;
                        written.push(value);
                    }
                }
                // Release: pairs with the consumer's Acquire load of `done`.
                done.store(true, Ordering::Release);
                written
            })
        };
        let view = ring.view();
        let mut cursor = view.attach_consumer();
        let (mut kept, mut out) = (Vec::<Option<u64>>::new(), Vec::new());
        loop {
            let finished = done.load(Ordering::Acquire);
            let start = cursor.progress().taken;
            let known = kept.len();
            view.peek(start + known as u64, 2 - known, &mut kept, |_, _| false);
            let took = match kept.first() {
                Some(&Some(stamp)) => {
                    let record = view.read_published(start, start);
                    assert_eq!(record.timestamp, stamp, "a kept stamp is its record's");
                    out.push(record);
                    view.release_taken(&mut cursor, 1, Taken { records: 1, lost: 0 });
                    kept.remove(0);
                    true
                }
                _ => false,
            };
            view.commit(&mut cursor);
            if finished && !took {
                break;
            }
            thread::yield_now();
        }
        let written = writer.join().unwrap();
        assert_eq!(out.iter().map(|r| r.timestamp).collect::<Vec<_>>(), written, "once each, in order");
        assert!(out.iter().enumerate().all(|(i, r)| r.ticket == i as u64), "dense tickets");
        assert_eq!(view.progress().delivered, written.len() as u64);
    });
}

/// Gap (b): a holder gives its lease back (tail store, then a CAS to free)
/// while a thread of another process reclaims it as stale (its process
/// detached), and a third thread looks for a free sub-ring: the give-back
/// may leave its tail store behind the reclaimer's (or after it: a stray
/// hint), yet whoever holds the lease next goes on at the first unclaimed
/// ticket. No ticket is claimed twice (loom: a race on the payload), none
/// is skipped (the consumer would stop at the hole), each holder's records
/// come out in its order. 4 slots, so no writer needs the consumer.
/// Seen to fail (loom: two writes of one payload) with the give-back's CAS
/// made a plain store of 0 (the third thread then writes beside the
/// reclaimer), and with `take_lease`'s Acquire weakened to Relaxed.
#[test]
fn loom_a_give_back_that_lost_its_lease_to_a_reclaimer_misleads_no_holder() {
    loom::model(|| {
        let ring = Arc::new(HeapSubRing::new(4));
        let first = subring_lease(0, 1);
        assert!(take_lease(&ring.header, 0, first));
        // Its holder wrote ticket 0; then its process detached (the thread
        // lives on and gives the lease back at its exit).
        assert!(write_own(ring.view(), A, 0, 1));
        let stray = {
            let ring = ring.clone();
            thread::spawn(move || give_back(&ring.header, first, 1))
        };
        // Takes the lease (stale, or free if the give-back won), writes
        // `values` and gives it back: the tickets it wrote, if it got it.
        let holder = |owner: Owner, stale: Option<u64>, values: &'static [u64]| {
            let ring = ring.clone();
            thread::spawn(move || {
                let lease = subring_lease(owner.slot as usize, owner.generation);
                let got = stale.is_some_and(|seen| take_lease(&ring.header, seen, lease))
                    || take_lease(&ring.header, 0, lease);
                if !got {
                    return None;
                }
                let view = ring.view();
                let start = view.own_next_ticket().unwrap();
                for (i, &value) in values.iter().enumerate() {
                    assert!(write_own(view, owner, start + i as u64, value), "4 slots hold 4 records");
                }
                give_back(&ring.header, lease, start + values.len() as u64);
                Some((start, values))
            })
        };
        let reclaimer = holder(B, Some(first), &[20, 21]);
        let third = holder(Owner { slot: 2, generation: 1 }, None, &[30]);
        stray.join().unwrap();
        let holders: Vec<_> = [reclaimer, third].into_iter().filter_map(|h| h.join().unwrap()).collect();
        let view = ring.view();
        let (mut cursor, mut out) = (view.attach_consumer(), Vec::new());
        view.take(&mut cursor, 4, &mut out, |_, _| false);
        let written: usize = holders.iter().map(|(_, values)| values.len()).sum();
        assert_eq!(out.len(), 1 + written, "every claimed ticket is taken: no hole, none twice");
        assert_eq!(out[0].timestamp, 1);
        for (start, values) in holders {
            let theirs: Vec<u64> = (0..values.len()).map(|i| out[start as usize + i].timestamp).collect();
            assert_eq!(theirs, values, "a holder goes on at the first unclaimed ticket");
        }
    });
}

/// Gap (c): a holder that died stored no tail, so the next holder's hint
/// lags laps behind (here 2 laps of a 2-slot ring: the hint says 0, the
/// next free ticket is 4) while the consumer takes, changing the slots
/// under the probe. `own_next_ticket` finds ticket 4 exactly: not one that
/// was claimed, and no free one skipped (a hole would stop the consumer
/// for good). Seen to fail with the probe's jump going one ticket too far
/// past a freed slot (`laps << shift` instead of `(laps - 1) << shift`).
#[test]
fn loom_a_new_holder_finds_its_ticket_from_a_hint_laps_behind() {
    loom::model(|| {
        let ring = Arc::new(HeapSubRing::new(2));
        let dead = subring_lease(0, 1);
        let view = ring.view();
        // The dead holder wrote tickets 0 to 3 (the consumer took 0 to 2
        // meanwhile) and never gave the lease back: the hint is still 0.
        assert!(take_lease(&ring.header, 0, dead));
        let mut cursor = view.attach_consumer();
        let mut out = Vec::new();
        for (ticket, value) in [(0, 1), (1, 2), (2, 3), (3, 4)] {
            if ticket == 2 {
                view.take(&mut cursor, 2, &mut out, |_, _| false);
            }
            assert!(write_own(view, A, ticket, value));
        }
        view.take(&mut cursor, 1, &mut out, |_, _| false);
        view.commit(&mut cursor);
        let done = Arc::new(AtomicUsize::new(0));
        let reclaimer = {
            let (ring, done) = (ring.clone(), done.clone());
            thread::spawn(move || {
                assert!(take_lease(&ring.header, dead, subring_lease(1, 1)));
                let view = ring.view();
                let start = view.own_next_ticket().unwrap();
                let mut ticket = start;
                for value in [5, 6] {
                    if write_own(view, B, ticket, value) {
                        ticket += 1;
                    }
                }
                done.fetch_add(1, Ordering::Release);
                (start, ticket)
            })
        };
        // The consumer goes on from what it committed.
        drop(cursor);
        let (rest, lost) = consume_all(view, &done, 1, |_| false);
        let (start, end) = reclaimer.join().unwrap();
        assert_eq!(start, 4, "the first unclaimed ticket");
        assert_eq!(lost, 0);
        let values: Vec<u64> = out.iter().chain(&rest).map(|r| r.timestamp).collect();
        let expected: Vec<u64> = (1..=4).chain(5..5 + end - start).collect();
        assert_eq!(values, expected, "every record once, in order");
    });
}

/// Gap (d): a consumer died inside its release of tickets 0 and 1 of a
/// sub-ring (a record, and a claim of the holder before, which died):
/// `taken` says 2, only slot 0 was freed. The sub-ring's current holder
/// goes on at ticket 2 and keeps writing while a new consumer attaches:
/// its repair counts both tickets lost by the dead consumer and frees the
/// dead claim's slot, never a slot the holder claimed or published for a
/// later lap; every record of the holder comes out once, in order, and
/// the accounts add up. Seen to fail (the holder's record at ticket 2
/// vanishes: the repair overwrote its slot) with the repair's lap check
/// removed (freeing every slot below `taken` that is not empty).
#[test]
fn loom_a_new_consumers_repair_spares_the_holder_writing_meanwhile() {
    loom::model(|| {
        let ring = Arc::new(HeapSubRing::new(2));
        let view = ring.view();
        // The holder before wrote ticket 0, claimed ticket 1 and died.
        assert!(write_own(view, A, 0, 1));
        let _dead_claim = view.claim_own(A, 1).unwrap();
        // The consumer before peeked both (a record, a dead claim), then
        // died after publishing `taken` = 2 and freeing slot 0 only.
        let died = view.attach_consumer();
        let mut stamps = Vec::new();
        view.peek(0, 2, &mut stamps, |_, owner| owner == A);
        assert_eq!(stamps, [Some(1), None]);
        release_and_die(view, &died, 2, 1);
        let done = Arc::new(AtomicUsize::new(0));
        let holder = {
            let (ring, done) = (ring.clone(), done.clone());
            thread::spawn(move || {
                let view = ring.view();
                let mut ticket = view.own_next_ticket().unwrap();
                assert_eq!(ticket, 2, "after the dead claim");
                let mut written = Vec::new();
                for value in [2, 3] {
                    // A free slot for the ticket, or (after a second look)
                    // the shared ring.
                    for _ in 0..2 {
                        if write_own(view, B, ticket, value) {
                            ticket += 1;
                            written.push(value);
                            break;
                        }
                        thread::yield_now();
                    }
                }
                done.fetch_add(1, Ordering::Release);
                written
            })
        };
        // The new consumer attaches at any moment: also after the holder's
        // first writes. (Without this yield loom's bounded search never ran
        // the holder's publish before the repair, and the mutation below
        // passed.)
        thread::yield_now();
        let (out, lost) = consume_all(view, &done, 1, |owner| owner == A);
        let written = holder.join().unwrap();
        assert_eq!(out.iter().map(|r| r.timestamp).collect::<Vec<_>>(), written);
        assert!(out.iter().enumerate().all(|(i, r)| r.ticket == 2 + i as u64), "dense, after the repair");
        assert_eq!(lost, 0, "the dead claim was the dead consumer's, counted by the repair");
        let progress = view.progress();
        assert_eq!(progress.lost_reader_died, 2);
        assert_eq!(progress.lost_writer_died, 0);
        assert_eq!(progress.delivered, written.len() as u64);
        assert_eq!(progress.committed, 2 + written.len() as u64);
    });
}
