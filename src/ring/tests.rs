use super::testing::{HeapRing, payload};
use super::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64 as StdAtomicU64};

const ALICE: Owner = Owner { slot: 1, generation: 7 };
const BOB: Owner = Owner { slot: 2, generation: 1 };

fn never_dead(_: u64, _: Owner) -> bool {
    false
}

fn drain(view: RingView<'_>, cursor: &mut Cursor, out: &mut Vec<Record>) -> Taken {
    let taken = view.take(cursor, usize::MAX, out, never_dead);
    view.commit(cursor);
    taken
}

#[test]
fn state_word_round_trips() {
    for phase in [Phase::Empty, Phase::Claimed, Phase::Full] {
        let state = SlotState::new(u32::MAX, phase, Owner::new(1023, (1 << 20) - 1));
        assert_eq!(SlotState::decode(state.encode()), state);
    }
    assert_eq!(SlotState::decode(3).phase, Phase::Invalid);
    assert_eq!(Owner::new(5, 0x12345678).generation, 0x45678);
}

#[test]
fn records_come_out_in_ticket_order_with_their_payload() {
    let ring = HeapRing::new(8);
    let view = ring.view();
    let mut cursor = view.attach_consumer();
    let mut out = Vec::new();
    for round in 0..5u64 {
        for i in 0..6 {
            view.claim(ALICE).unwrap().publish(&payload(round * 100 + i));
        }
        let taken = drain(view, &mut cursor, &mut out);
        assert_eq!(taken, Taken { records: 6, lost: 0 });
    }
    let tickets: Vec<u64> = out.iter().map(|r| r.ticket).collect();
    assert_eq!(tickets, (0..30).collect::<Vec<_>>());
    assert_eq!(out[7].timestamp, 101);
    assert_eq!(out[7].payload(), payload(101));
    assert_eq!(view.progress().delivered, 30);
}

#[test]
fn a_full_ring_refuses_until_the_consumer_frees_a_slot() {
    let ring = HeapRing::new(4);
    let view = ring.view();
    let mut cursor = view.attach_consumer();
    for i in 0..4 {
        view.claim(ALICE).unwrap().publish(&payload(i));
    }
    assert!(view.claim(BOB).is_err());
    let mut out = Vec::new();
    assert_eq!(view.take(&mut cursor, 1, &mut out, never_dead).records, 1);
    view.commit(&mut cursor);
    assert_eq!(view.claim(BOB).unwrap().ticket(), 4);
}

#[test]
fn a_live_claim_blocks_the_consumer_and_a_dead_one_is_reclaimed_once() {
    let ring = HeapRing::new(4);
    let view = ring.view();
    let mut cursor = view.attach_consumer();
    let stuck = view.claim(ALICE).unwrap();
    assert_eq!(stuck.ticket(), 0);
    view.claim(BOB).unwrap().publish(&payload(1));
    let mut out = Vec::new();
    assert_eq!(view.take(&mut cursor, 8, &mut out, never_dead), Taken::default());
    drop(stuck); // Alice dies holding ticket 0.
    let mut asked = Vec::new();
    let is_dead = |_, o: Owner| {
        asked.push(o);
        o == ALICE
    };
    let taken = view.take(&mut cursor, 8, &mut out, is_dead);
    view.commit(&mut cursor);
    assert_eq!(taken, Taken { records: 1, lost: 1 });
    assert_eq!(asked, vec![ALICE]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].ticket, 1);
    let p = view.progress();
    assert_eq!((p.delivered, p.lost_writer_died, p.committed), (1, 1, 2));
    // The reclaimed slot is usable again in the next lap.
    for i in 0..4 {
        view.claim(BOB).unwrap().publish(&payload(i));
    }
    assert_eq!(drain(view, &mut cursor, &mut out).records, 4);
}

#[test]
fn caught_up_means_no_claimed_ticket_is_left() {
    let ring = HeapRing::new(4);
    let view = ring.view();
    let mut cursor = view.attach_consumer();
    let mut out = Vec::new();
    assert!(view.caught_up(&cursor));
    let claim = view.claim(ALICE).unwrap();
    assert!(!view.caught_up(&cursor), "a claimed, unpublished ticket is not taken");
    claim.publish(&payload(0));
    assert!(!view.caught_up(&cursor));
    drain(view, &mut cursor, &mut out);
    assert!(view.caught_up(&cursor));
    // Across a lap: the slot of the next ticket still holds the old lap's
    // freed state until a writer claims it.
    for i in 0..4 {
        view.claim(BOB).unwrap().publish(&payload(i));
    }
    drain(view, &mut cursor, &mut out);
    assert!(view.caught_up(&cursor));
    view.claim(BOB).unwrap().publish(&payload(9));
    assert!(!view.caught_up(&cursor));
}

#[test]
fn peek_reports_stamps_and_the_frontier_and_takes_nothing() {
    let ring = HeapRing::new(8);
    let view = ring.view();
    let mut cursor = view.attach_consumer();
    let mut stamps = Vec::new();
    assert_eq!(view.peek(cursor.progress().taken, 8, &mut stamps, never_dead), Frontier::Unclaimed);
    assert!(stamps.is_empty());
    for i in 0..3 {
        view.claim(ALICE).unwrap().publish(&payload(10 + i));
    }
    assert_eq!(view.peek(cursor.progress().taken, 8, &mut stamps, never_dead), Frontier::Unclaimed);
    assert_eq!(stamps, [Some(10), Some(11), Some(12)]);
    stamps.clear();
    assert_eq!(view.peek(cursor.progress().taken, 2, &mut stamps, never_dead), Frontier::Limit);
    assert_eq!(stamps, [Some(10), Some(11)]);
    // Nothing was taken: the progress did not move and a take finds all three.
    assert_eq!(view.progress(), Progress::default());
    let mut out = Vec::new();
    assert_eq!(drain(view, &mut cursor, &mut out).records, 3);
    // Across a lap, the frontier is the slot still holding last lap's state.
    for i in 0..8 {
        view.claim(BOB).unwrap().publish(&payload(20 + i));
    }
    stamps.clear();
    assert_eq!(view.peek(cursor.progress().taken, 100, &mut stamps, never_dead), Frontier::Unclaimed);
    assert_eq!(stamps.len(), 8);
    assert_eq!(stamps[7], Some(27));
}

#[test]
fn peek_and_take_agree_on_live_and_dead_claims() {
    let ring = HeapRing::new(8);
    let view = ring.view();
    let mut cursor = view.attach_consumer();
    view.claim(BOB).unwrap().publish(&payload(1));
    let dead = view.claim(ALICE).unwrap();
    view.claim(BOB).unwrap().publish(&payload(3));
    let live = view.claim(BOB).unwrap();
    view.claim(BOB).unwrap().publish(&payload(5));
    drop(dead); // Alice dies holding ticket 1.
    let mut stamps = Vec::new();
    assert_eq!(view.peek(cursor.progress().taken, 8, &mut stamps, never_dead), Frontier::Claimed);
    assert_eq!(stamps, [Some(1)], "a claim not found dead ends the run");
    stamps.clear();
    let mut asked = Vec::new();
    let is_dead = |t, o: Owner| {
        asked.push(t);
        o == ALICE
    };
    assert_eq!(view.peek(cursor.progress().taken, 8, &mut stamps, is_dead), Frontier::Claimed);
    assert_eq!(stamps, [Some(1), None, Some(3)], "the dead claim is lost; Bob's live one ends the run");
    assert_eq!(asked, [1, 3], "asked only about claims");
    // A take of exactly the peeked tickets, told they are dead, finds the same run.
    let mut out = Vec::new();
    assert_eq!(view.take(&mut cursor, stamps.len(), &mut out, |_, _| true), Taken { records: 2, lost: 1 });
    view.commit(&mut cursor);
    assert_eq!(out.iter().map(|r| r.timestamp).collect::<Vec<_>>(), [1, 3]);
    live.publish(&payload(4));
    stamps.clear();
    assert_eq!(view.peek(cursor.progress().taken, 8, &mut stamps, never_dead), Frontier::Unclaimed);
    assert_eq!(stamps, [Some(4), Some(5)]);
}

#[test]
fn peek_stops_at_a_corrupt_slot() {
    let ring = HeapRing::new(4);
    let view = ring.view();
    let cursor = view.attach_consumer();
    view.claim(ALICE).unwrap().publish(&payload(1));
    ring.slots[1].state.store(3, Ordering::Relaxed);
    let mut stamps = Vec::new();
    assert_eq!(view.peek(cursor.progress().taken, 4, &mut stamps, |_, _| true), Frontier::Corrupt);
    assert_eq!(stamps, [Some(1)]);
}

#[test]
fn claimed_end_is_the_first_unclaimed_ticket_even_when_full() {
    let ring = HeapRing::new(4);
    let view = ring.view();
    let mut cursor = view.attach_consumer();
    let mut out = Vec::new();
    assert_eq!(view.claimed_end(&cursor), 0);
    let claim = view.claim(ALICE).unwrap();
    assert_eq!(view.claimed_end(&cursor), 1, "claimed, not yet published");
    claim.publish(&payload(0));
    view.claim(BOB).unwrap().publish(&payload(1));
    assert_eq!(view.claimed_end(&cursor), 2);
    drain(view, &mut cursor, &mut out);
    assert_eq!(view.claimed_end(&cursor), 2);
    for i in 0..4 {
        view.claim(BOB).unwrap().publish(&payload(i));
    }
    assert_eq!(view.claimed_end(&cursor), 6, "a full ring: one lap ahead of the consumer");
}

#[test]
fn a_new_consumer_resumes_where_the_last_one_committed() {
    let ring = HeapRing::new(8);
    let view = ring.view();
    let mut out = Vec::new();
    let mut first = view.attach_consumer();
    for i in 0..5 {
        view.claim(ALICE).unwrap().publish(&payload(i));
    }
    drain(view, &mut first, &mut out);
    // The first consumer detaches: its cursor is simply never used again.
    for i in 5..9 {
        view.claim(ALICE).unwrap().publish(&payload(i));
    }
    let mut second = view.attach_consumer();
    drain(view, &mut second, &mut out);
    let tickets: Vec<u64> = out.iter().map(|r| r.ticket).collect();
    assert_eq!(tickets, (0..9).collect::<Vec<_>>());
    assert_eq!(view.progress().lost_reader_died, 0);
}

#[test]
fn a_consumer_killed_after_taking_costs_its_batch_and_no_more() {
    let ring = HeapRing::new(4);
    let view = ring.view();
    for i in 0..3 {
        view.claim(ALICE).unwrap().publish(&payload(i));
    }
    let mut doomed = view.attach_consumer();
    let mut out = Vec::new();
    assert_eq!(view.take(&mut doomed, 2, &mut out, never_dead).records, 2);
    // Killed before commit, and (simulated) before it freed ticket 1's slot.
    ring.slots[1].state.store(SlotState::new(0, Phase::Full, ALICE).encode(), Ordering::Relaxed);
    let mut next = view.attach_consumer();
    let p = next.progress();
    assert_eq!((p.taken, p.committed, p.lost_reader_died), (2, 2, 2));
    out.clear();
    assert_eq!(drain(view, &mut next, &mut out).records, 1);
    assert_eq!(out[0].ticket, 2);
    // Slot 1 was repaired: the ring takes a full lap again.
    for i in 0..4 {
        view.claim(ALICE).unwrap().publish(&payload(i));
    }
    let p = view.progress();
    assert_eq!(p.delivered + p.lost_reader_died + p.lost_writer_died, p.committed);
}

#[test]
fn progress_survives_a_consumer_killed_mid_update() {
    let ring = HeapRing::new(4);
    let view = ring.view();
    let before = Progress { taken: 9, committed: 9, delivered: 9, ..Progress::default() };
    view.publish_progress(&before);
    // Killed after marking the update, halfway through the copy.
    let line = &ring.control.reader;
    let epoch = line.progress_epoch.load(Ordering::Relaxed);
    line.progress_epoch.store(epoch + 1, Ordering::Relaxed);
    line.progress[((epoch >> 1) + 1) as usize & 1].taken.store(1234, Ordering::Relaxed);
    assert_eq!(view.progress(), before);
    let after = Progress { taken: 10, committed: 10, delivered: 10, ..before };
    view.publish_progress(&after);
    assert_eq!(view.progress(), after);
}

#[test]
fn corrupt_state_words_never_make_writers_overwrite_or_the_consumer_read() {
    let ring = HeapRing::new(4);
    let view = ring.view();
    ring.slots[0].state.store(3, Ordering::Relaxed); // phase "invalid"
    assert!(view.claim(ALICE).is_err());
    let mut cursor = view.attach_consumer();
    let mut out = Vec::new();
    assert_eq!(view.take(&mut cursor, 8, &mut out, |_, _| true), Taken::default());
    ring.slots[0].state.store(5 << 32, Ordering::Relaxed); // laps ahead, empty
    // The writer skips a slot that claims to be laps ahead (past the ticket
    // it waits for, as every ticket below that one was claimed), finds slot
    // 1 behind that, which the protocol never leaves, and reports full.
    assert!(view.claim(ALICE).is_err());
    assert_eq!(ring.slots[0].state.load(Ordering::Relaxed), 5 << 32);
    assert_eq!(ring.slots[1].state.load(Ordering::Relaxed), 0);
    // All slots laps ahead: the writer catches up in a few probes, not
    // 2^31 laps of them, and claims where the slots wait.
    for slot in &ring.slots {
        slot.state.store((i32::MAX as u64) << 32, Ordering::Relaxed);
    }
    let claim = view.claim(ALICE).expect("claims at the slots' lap");
    assert_eq!(claim.ticket(), (i32::MAX as u64) << 2);
}

/// Writers and a consumer on real threads: every record arrives exactly
/// once, each writer's records in the order it wrote them, and
/// attempted = delivered + dropped.
#[test]
fn threads_stress_exact_accounting() {
    const WRITERS: u64 = 4;
    let per_writer: u64 = if cfg!(miri) { 50 } else { 100_000 };
    let ring = Arc::new(HeapRing::new(64));
    let done = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(StdAtomicU64::new(0));
    let consumer = {
        let (ring, done) = (ring.clone(), done.clone());
        std::thread::spawn(move || {
            let view = ring.view();
            let mut cursor = view.attach_consumer();
            let mut out = Vec::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                let taken = view.take(&mut cursor, 256, &mut out, never_dead);
                view.commit(&mut cursor);
                if finished && taken.records == 0 {
                    return out;
                }
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (ring, dropped) = (ring.clone(), dropped.clone());
            std::thread::spawn(move || {
                let view = ring.view();
                let owner = Owner::new(w as u16, 1);
                for seq in 0..per_writer {
                    // Writer id in the high bits, sequence in the low bits.
                    let mut spins = 0;
                    loop {
                        match view.claim(owner) {
                            Ok(claim) => break claim.publish(&payload(w << 32 | seq)),
                            Err(Full) if spins < 100 => {
                                spins += 1;
                                std::thread::yield_now();
                            }
                            Err(Full) => {
                                view.count_drop();
                                dropped.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let out = consumer.join().unwrap();
    let view = ring.view();
    let dropped = dropped.load(Ordering::Relaxed);
    assert_eq!(view.dropped(), dropped);
    assert_eq!(out.len() as u64 + dropped, WRITERS * per_writer);
    assert_eq!(view.progress().delivered, out.len() as u64);
    let mut seen = HashSet::new();
    let mut last = [None::<u64>; WRITERS as usize];
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.ticket, i as u64, "tickets are dense and in order");
        assert!(seen.insert(r.timestamp), "record delivered twice");
        let (w, seq) = ((r.timestamp >> 32) as usize, r.timestamp & 0xffff_ffff);
        assert!(last[w].is_none_or(|prev| prev < seq), "writer {w} reordered");
        last[w] = Some(seq);
    }
}
