//! The remaining buffers in report order: largest first, ties in key
//! order (then in the engine's memory order, for two buffers of one key).
//!
//! A recording can leave 20 million of them, 1.6 GB of engine entries.
//! Sorting references to those entries made every comparison read two of
//! them at random (a cache and TLB miss each, ~25 comparisons per buffer):
//! most of the 44 s `report --json` took. [`remaining`] instead copies what
//! the order compares into a compact [`Ranked`] entry per buffer, in one
//! pass over the engine, and sorts those: 24 bytes each, compared without
//! leaving the array (about 1.2 s for 20 M). The only random reads left are
//! the output's, one per buffer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasherDefault;

use super::{Paths, ScopeHasher};
use crate::engine::{BufferKey, BufferPlace, Engine, LiveBuffer, ProcessId};
use crate::filter::Filter;

/// The remaining buffers a filter selects, largest first (ties in key
/// order), with their scope paths: 24 bytes per buffer, and each path once.
pub struct Remaining<'e> {
    engine: &'e Engine,
    /// In report order.
    order: Vec<Ranked>,
    paths: Paths,
}

impl<'e> Remaining<'e> {
    /// How many buffers.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The buffers with their scope paths, largest first.
    pub fn iter(&self) -> impl Iterator<Item = (&'e LiveBuffer, &str)> + '_ {
        let engine = self.engine;
        self.order.iter().map(move |r| {
            let b = engine.remaining_at(r.place);
            (b, self.paths.known((b.key.process, b.scope)))
        })
    }

    /// Keeps the first `n` buffers.
    pub fn truncate(&mut self, n: usize) {
        self.order.truncate(n);
    }
}

/// The (process, pid, device, kind) of a buffer key: the fields its order
/// compares before the buffer id.
type Cell = (ProcessId, u32, u32, u8);

fn cell(key: &BufferKey) -> Cell {
    (key.process, key.pid, key.device_id, key.kind)
}

/// One buffer as the sort sees it. The derived order is the report's:
/// `size` descending, then the key (`cell`, `buffer_id`), then `place`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ranked {
    size: Reverse<u64>,
    /// Rank of the buffer's [`Cell`] among those of the buffers ranked
    /// together ([`CellRanks`]): compares as the cell does.
    cell: u32,
    buffer_id: u64,
    /// Where the buffer is: the last tie-break, and the way back to it.
    place: BufferPlace,
}

// Three times a reference; the bound of tests/bounded.rs allows it.
const _: () = assert!(std::mem::size_of::<Ranked>() == 24);

/// Dense ranks of the cells met, in key order, for [`Ranked::cell`]: a
/// few thousand cells at most stand for millions of buffers.
#[derive(Default)]
struct CellRanks {
    /// Each cell met, numbered in order of first meeting.
    met: HashMap<Cell, u32, BuildHasherDefault<ScopeHasher>>,
}

impl CellRanks {
    /// The number of `cell` in order of first meeting; [`CellRanks::finish`]
    /// turns it into its rank.
    fn number(&mut self, cell: Cell) -> u32 {
        let next = u32::try_from(self.met.len()).expect("fewer than 2^32 cells");
        *self.met.entry(cell).or_insert(next)
    }

    /// Rewrites the numbers of `entries` ([`CellRanks::number`]) into the
    /// ranks of their cells.
    fn finish(self, entries: &mut [Ranked]) {
        let mut cells: Vec<(Cell, u32)> = self.met.into_iter().collect();
        cells.sort_unstable();
        let mut rank_of_number = vec![0u32; cells.len()];
        for (rank, &(_, number)) in cells.iter().enumerate() {
            rank_of_number[number as usize] = rank as u32;
        }
        for entry in entries {
            entry.cell = rank_of_number[entry.cell as usize];
        }
    }
}

/// The remaining buffers the filter selects, with their scope paths,
/// largest first (ties in key order, then in memory order).
pub fn remaining<'e>(engine: &'e Engine, filter: &Filter) -> Remaining<'e> {
    let mut paths = Paths::default();
    let mut cells = CellRanks::default();
    let mut order: Vec<Ranked> = engine
        .remaining_places()
        .filter(|(_, b)| {
            let path = paths.get(engine, (b.key.process, b.scope));
            filter.buffer(engine, &b.key, b.time_ns, path)
        })
        .map(|(place, b)| Ranked {
            size: Reverse(b.size),
            cell: cells.number(cell(&b.key)),
            buffer_id: b.key.buffer_id,
            place,
        })
        .collect();
    cells.finish(&mut order);
    order.sort_unstable();
    Remaining { engine, order, paths }
}

/// The `n` first of [`remaining`] and how many it holds, without sorting
/// them all: what the text report shows of 20 M leaks is 20 lines.
pub fn largest_remaining<'e>(engine: &'e Engine, filter: &Filter, n: usize) -> (usize, Remaining<'e>) {
    /// A candidate, in the order of [`Ranked`] (its cell compared as
    /// itself: the heap holds few).
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Candidate(Reverse<u64>, BufferKey, BufferPlace);

    let mut paths = Paths::default();
    let (mut count, mut first) = (0, BinaryHeap::new());
    for (place, b) in engine.remaining_places() {
        let path = paths.get(engine, (b.key.process, b.scope));
        if !filter.buffer(engine, &b.key, b.time_ns, path) {
            continue;
        }
        count += 1;
        // A max-heap of the n first: its top is the last of them. Once it
        // is full, most buffers rank after that top and need no push.
        let candidate = Candidate(Reverse(b.size), b.key, place);
        if first.len() == n && first.peek().is_none_or(|last| candidate >= *last) {
            continue;
        }
        first.push(candidate);
        if first.len() > n {
            first.pop();
        }
    }
    let mut cells = CellRanks::default();
    let mut order: Vec<Ranked> = first
        .into_sorted_vec()
        .into_iter()
        .map(|Candidate(size, key, place)| Ranked {
            size,
            cell: cells.number(cell(&key)),
            buffer_id: key.buffer_id,
            place,
        })
        .collect();
    cells.finish(&mut order);
    debug_assert!(order.is_sorted(), "the heap's order is the entries'");
    (count, Remaining { engine, order, paths })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranked(size: u64, cell: u32, buffer_id: u64, place: u32) -> Ranked {
        Ranked { size: Reverse(size), cell, buffer_id, place: BufferPlace::for_tests(place) }
    }

    #[test]
    fn the_entry_order_is_size_descending_then_key_then_place() {
        let mut entries = [
            ranked(10, 1, 5, 0),
            ranked(20, 2, 9, 1),
            ranked(10, 0, 7, 2),
            ranked(10, 1, 3, 3),
            ranked(10, 1, 3, 4),
            ranked(u64::MAX, 9, 0, 5),
        ];
        entries.sort_unstable();
        let places: Vec<u32> = entries.iter().map(|e| e.place.for_tests_index()).collect();
        assert_eq!(places, [5, 1, 2, 3, 4, 0]);
    }

    #[test]
    fn cell_ranks_compare_as_the_cells_do() {
        let cells: [Cell; 5] = [
            (ProcessId(1), 7, 0, 1),
            (ProcessId(0), 9, 3, 0),
            (ProcessId(1), 7, 0, 0),
            (ProcessId(0), 9, 3, 0),
            (ProcessId(0), 2, 8, 5),
        ];
        let mut ranks = CellRanks::default();
        let mut entries: Vec<Ranked> =
            cells.iter().enumerate().map(|(i, &c)| ranked(1, ranks.number(c), 0, i as u32)).collect();
        ranks.finish(&mut entries);
        let got: Vec<u32> = entries.iter().map(|e| e.cell).collect();
        assert_eq!(got, [3, 1, 2, 1, 0]);
    }

    /// The order rule, stated on references as the sort before compact
    /// entries did it: size descending, then key, then address.
    fn reference_order(engine: &Engine) -> Vec<&LiveBuffer> {
        let mut all: Vec<&LiveBuffer> = engine.remaining_unordered().collect();
        all.sort_by_key(|b| (Reverse(b.size), b.key, std::ptr::from_ref(*b) as usize));
        all
    }

    #[test]
    fn remaining_and_largest_remaining_follow_the_order_rule() {
        use memtrack::Event::{Alloc, Free, ProcessStart};
        let mut s = crate::engine::testing::Stream::new(10);
        s.labelled(ProcessStart, 300, 2, "b");
        s.labelled(ProcessStart, 100, 1, "a");
        // Few sizes (ties everywhere), cells met out of key order, buffer
        // ids out of order, some freed (entries reused).
        for i in 0..600u64 {
            let pid = if i % 3 == 0 { 300 } else { 100 };
            let id = (i * 7919) % 1000;
            s.buffer(Alloc, pid, (i % 5) as u32, (i % 2) as u8, id, 4096 << (i % 3));
        }
        for i in (0..600u64).step_by(4) {
            let pid = if i % 3 == 0 { 300 } else { 100 };
            s.buffer(Free, pid, (i % 5) as u32, (i % 2) as u8, (i * 7919) % 1000, 0);
        }
        // Process 100 dies, then its entry's records go on: buffers of the
        // same keys as some it left, an exact tie broken by memory order.
        s.died(100);
        for i in 1..40u64 {
            let id = (i * 7919) % 1000;
            s.buffer(Alloc, 100, (i % 5) as u32, (i % 2) as u8, id, 4096 << (i % 3));
        }
        let engine = &s.engine;
        let reference = reference_order(engine);
        assert!(reference.windows(2).any(|w| w[0].key == w[1].key), "the stream holds exact ties");
        let want: Vec<*const LiveBuffer> = reference.iter().map(|&b| std::ptr::from_ref(b)).collect();
        let got: Vec<*const LiveBuffer> =
            remaining(engine, &Filter::default()).iter().map(|(b, _)| std::ptr::from_ref(b)).collect();
        assert!(want.len() > 400, "{} remaining", want.len());
        assert_eq!(got, want);
        for n in [0, 1, 7, 100, want.len(), want.len() + 5] {
            let (count, first) = largest_remaining(engine, &Filter::default(), n);
            let got: Vec<*const LiveBuffer> = first.iter().map(|(b, _)| std::ptr::from_ref(b)).collect();
            assert_eq!((count, got.as_slice()), (want.len(), &want[..n.min(want.len())]), "n = {n}");
        }
    }
}
