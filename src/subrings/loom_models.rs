//! Loom models of a sub-ring's writer side: the one writer's plain-store
//! claim against the consumer's take, lease hand-over at thread exit, two
//! threads racing for one free lease, and the reclaim of a dead holder's
//! lease racing the consumer. Sub-rings of 2 slots; a payload write that is
//! not ordered after the consumer's read of the slot (or a slot written
//! twice) is a data race on the payload's `UnsafeCell`, which loom reports.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p memtrack --lib loom`

use super::{give_back, take_lease};
use crate::format::{Record, Slot, SubRingHeader, subring_lease};
use crate::ring::testing::{control, payload};
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
