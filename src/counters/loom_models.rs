//! Loom models of the live-counter protocol: lane hand-over, racing cell
//! claims, and readers racing a reclaim.
//!
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p memtrack --lib loom`

use super::*;
use crate::format::{COUNTER_LANES, SHARED_LANE, cell_owner, counter_key};
use loom::sync::Arc;
use loom::thread;

fn cells(n: usize) -> Arc<Vec<CounterCell>> {
    Arc::new((0..n).map(|_| CounterCell::new()).collect())
}

/// One thread's use of a lane: take it (waiting while the other thread
/// holds it), count one buffer in its cell, give it back.
fn count_in_the_only_lane(cells: &[CounterCell], lanes: &AtomicU64) {
    let lane = loop {
        match take_lane(lanes, 1) {
            Some(lane) => break lane,
            None => thread::yield_now(),
        }
    };
    let pool = Pool::new(cells);
    let cell = pool.find_or_claim(cell_owner(0, 1), counter_key(0, 0, lane)).expect("a free cell");
    add_own(pool.cell(cell), 100, 1);
    release_lane(lanes, 1, lane);
}

/// Two threads take turns on one lane (the other lanes held elsewhere):
/// the second sees the first one's counts through the lane hand-over, so
/// no update is lost although the cell takes plain stores.
#[test]
fn loom_a_lane_handed_over_keeps_every_count() {
    loom::model(|| {
        let cells = cells(2);
        let lanes = Arc::new(AtomicU64::new(0));
        reset_lanes(&lanes, 1);
        // Only lane 0 is free: both threads must use it in turn.
        lanes.fetch_or(((1u64 << COUNTER_LANES) - 1) & !1, Ordering::Relaxed);
        let other = {
            let (cells, lanes) = (cells.clone(), lanes.clone());
            thread::spawn(move || count_in_the_only_lane(&cells, &lanes))
        };
        count_in_the_only_lane(&cells, &lanes);
        other.join().unwrap();
        let pool = Pool::new(&cells);
        let readings: Vec<_> = (0..pool.len()).filter_map(|i| pool.read(i)).collect();
        assert_eq!(readings.len(), 1, "one lane, one key: one cell");
        assert_eq!((readings[0].bytes, readings[0].buffers), (200, 2), "no update lost");
    });
}

/// Two threads of one process claim the cell of the same key at once (the
/// shared lane): one cell results, and it holds both updates.
#[test]
fn loom_two_threads_claiming_one_key_end_with_one_cell() {
    loom::model(|| {
        let cells = cells(2);
        let owner = cell_owner(3, 1);
        let key = counter_key(100, 9, SHARED_LANE);
        let count = move |cells: &[CounterCell]| {
            let pool = Pool::new(cells);
            let cell = pool.find_or_claim(owner, key).expect("a free cell");
            add_shared(pool.cell(cell), 1 << 40, 1);
        };
        let other = {
            let cells = cells.clone();
            thread::spawn(move || count(&cells))
        };
        count(&cells);
        other.join().unwrap();
        let pool = Pool::new(&cells);
        let readings: Vec<_> = (0..pool.len()).filter_map(|i| pool.read(i)).collect();
        assert_eq!(readings.len(), 1, "one cell for the key: {readings:?}");
        assert_eq!((readings[0].key, readings[0].bytes, readings[0].buffers), (key, 2 << 40, 2));
    });
}

/// Two processes claim cells at once in a pool of one line (the line
/// placement's first pass finds no line of its own for the second, or for
/// either, as they race): each still gets a cell of its own, finds it
/// again, and counts there, whatever the interleaving.
#[test]
fn loom_two_writers_racing_for_one_line_each_get_a_cell() {
    loom::model(|| {
        let cells = cells(2);
        let count = move |cells: &[CounterCell], entry: usize| {
            let pool = Pool::new(cells);
            let (owner, key) = (cell_owner(entry, 1), counter_key(0, 0, 0));
            let cell = pool.find_or_claim(owner, key).expect("a free cell");
            add_own(pool.cell(cell), 10 + entry as i64, 1);
            assert_eq!(pool.find_or_claim(owner, key), Some(cell), "found again");
        };
        let other = {
            let cells = cells.clone();
            thread::spawn(move || count(&cells, 1))
        };
        count(&cells, 0);
        other.join().unwrap();
        let pool = Pool::new(&cells);
        let mut readings: Vec<_> =
            (0..pool.len()).filter_map(|i| pool.read(i)).map(|r| (r.entry, r.bytes)).collect();
        readings.sort_unstable();
        assert_eq!(readings, [(0, 10), (1, 11)]);
    });
}

/// The reclaim models' key of the old owner (generation 1) and of the new
/// one (generation 2), both in entry 0.
const OLD_KEY: u64 = counter_key(1, 1, 0);
const NEW_KEY: u64 = counter_key(2, 2, 0);

/// One cell counting (5, 1) for entry 0's old owner under `OLD_KEY`, and a
/// reader thread that reads it once, as the new owner (adding (7, 1) under
/// `NEW_KEY`) takes it over: its reading is all the old owner's, all the
/// new owner's, or nothing, never a mix.
fn old_owner_cell_and_a_reader() -> (Arc<Vec<CounterCell>>, thread::JoinHandle<()>) {
    let cells = cells(1);
    {
        let pool = Pool::new(&cells);
        let cell = pool.find_or_claim(cell_owner(0, 1), OLD_KEY).unwrap();
        add_own(pool.cell(cell), 5, 1);
    }
    let reader = {
        let cells = cells.clone();
        thread::spawn(move || {
            if let Some(r) = Pool::new(&cells).read(0) {
                let seen = (r.generation, r.key, r.bytes, r.buffers);
                let old_reading = seen == (1, OLD_KEY, 5, 1);
                let new_reading = r.generation == 2
                    && r.key == NEW_KEY
                    && [(0, 0), (7, 0), (0, 1), (7, 1)].contains(&(r.bytes, r.buffers));
                assert!(old_reading || new_reading, "a mixed reading: {r:?}");
            }
        })
    };
    (cells, reader)
}

/// A new owner of entry 0 reclaims the old owner's cell and claims it for
/// a key of its own while a reader reads it: the reader gets the old
/// owner's key and values, or the new owner's, or nothing, never a mix
/// (the new owner's values under the old owner, or the reverse).
#[test]
fn loom_a_reader_never_mixes_a_reclaimed_cell_with_its_new_owner() {
    loom::model(|| {
        let (cells, reader) = old_owner_cell_and_a_reader();
        let new = cell_owner(0, 2);
        let new_key = NEW_KEY;
        let pool = Pool::new(&cells);
        assert_eq!(pool.reclaim_entry(0, 2), 1);
        let cell = pool.find_or_claim(new, new_key).expect("the freed cell");
        add_own(pool.cell(cell), 7, 1);
        reader.join().unwrap();
    });
}

/// As above, but the add is made by a *second* thread of the new owner,
/// which found the cell through its owner word (as `find_or_claim` does,
/// or a thread's cache filled that way): the reader's re-check of the
/// owner word must still catch a reading that saw that thread's add.
#[test]
fn loom_a_reader_never_mixes_a_reclaimed_cell_with_an_add_by_another_thread_of_the_new_owner() {
    loom::model(|| {
        let (cells, reader) = old_owner_cell_and_a_reader();
        let new = cell_owner(0, 2);
        let new_key = NEW_KEY;
        let adder = {
            let cells = cells.clone();
            thread::spawn(move || {
                let pool = Pool::new(&cells);
                // Wait for the claiming thread to publish the cell, then add
                // through it as a lane holder does (plain load and store).
                while pool.cell(0).owner.load(Ordering::Acquire) != new {
                    thread::yield_now();
                }
                assert_eq!(pool.cell(0).key.load(Ordering::Relaxed), new_key);
                add_own(pool.cell(0), 7, 1);
            })
        };
        let pool = Pool::new(&cells);
        assert_eq!(pool.reclaim_entry(0, 2), 1);
        pool.find_or_claim(new, new_key).expect("the freed cell");
        adder.join().unwrap();
        reader.join().unwrap();
    });
}

/// Another process rewrites an entry's lane word while a thread takes a
/// lane: the thread gives up after `CAS_ATTEMPTS` and uses the shared lane
/// (some interleaving reaches that, so the loop is bounded), and never
/// leaves a lane half-taken: `Some(lane)` always has its bit set, `None`
/// sets none.
#[test]
fn loom_a_lane_word_rewritten_without_end_gives_the_shared_lane() {
    use std::sync::atomic::{AtomicBool, Ordering as StdOrdering};
    static GAVE_UP: AtomicBool = AtomicBool::new(false);
    loom::model(|| {
        let lanes = Arc::new(AtomicU64::new(0));
        reset_lanes(&lanes, 1);
        // Every lane held but the last; the hostile writer flips a bit of
        // the word that is no lane, so the free lane stays free throughout.
        lanes.fetch_or(((1u64 << COUNTER_LANES) - 1) >> 1, Ordering::Relaxed);
        let hostile = {
            let lanes = lanes.clone();
            thread::spawn(move || {
                for _ in 0..CAS_ATTEMPTS + 1 {
                    lanes.fetch_xor(1 << 31, Ordering::Relaxed);
                    thread::yield_now(); // Not a preemption: within loom's bound.
                }
            })
        };
        let taken = take_lane(&lanes, 1);
        hostile.join().unwrap();
        let last = COUNTER_LANES as u8 - 1;
        let bit = lanes.load(Ordering::Relaxed) & 1 << last != 0;
        match taken {
            Some(lane) => assert!(lane == last && bit, "{lane}"),
            None => {
                assert!(!bit, "given up, yet the lane is taken");
                GAVE_UP.store(true, StdOrdering::Relaxed);
            }
        }
    });
    assert!(GAVE_UP.load(StdOrdering::Relaxed), "no interleaving reached the cap");
}
