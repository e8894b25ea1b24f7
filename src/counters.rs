//! The live-counter protocol: a ring-wide pool of cells, thread lanes, and
//! the capacity table. Like `ring`, it owns no memory: it works over cells
//! in the shared file, or on the heap under loom.
//!
//! **Cells.** A cell counts the live bytes and buffers of one key, (process
//! entry, thread lane, device, kind); it is found by open addressing with
//! linear probing from the key's home ([`home`]), at most
//! [`COUNTER_PROBE_LIMIT`] cells. Claiming a free cell is a CAS of its owner
//! word from 0 to `owner | INITIALISING`; the claimant then stores the key
//! and zero values and publishes `owner` with a Release store. A key may
//! end up with more than one cell (a cell on its probe path freed since):
//! readers sum every cell of a (process, device, kind), so that costs room,
//! never accuracy.
//!
//! **Lanes.** Each process entry has [`COUNTER_LANES`] lanes, a bit each in
//! `ProcessEntry::lanes`. A thread takes a free lane on its first hook
//! (Acquire CAS) and gives it back when it exits (Release CAS): a lane has
//! one writer at a time, so its cells are updated with a Relaxed load and
//! a Release store, no locked instruction, and the hand-over makes the
//! next holder see the counts of the previous one. Threads beyond the
//! lanes share [`SHARED_LANE`], whose cells take `fetch_add`.
//!
//! **Bounded.** Every CAS loop on a word other processes can write stops
//! after [`CAS_ATTEMPTS`]: another process cannot keep a hook spinning.
//!
//! **Reclaiming.** A process that takes an entry (a new generation) frees
//! the cells of the entry's earlier generations (CAS to 0), and those of
//! ended processes that sum to nothing (`Ring::register_process`). Readers never
//! trust a cell without checking, seqlock-style, that its owner word is the
//! same before and after they read the key and values, and ignore cells
//! whose generation is not their entry's current one.
//!
//! **Full = visible.** A key that finds no cell is the caller's to count as
//! untracked (per process, `ProcessEntry::untracked_*`); a capacity that
//! finds no entry is counted in `LossLine::untracked_capacities`.

use crate::format::{
    CELL_INITIALISING, COUNTER_CELL_SIZE, COUNTER_LANES, COUNTER_PROBE_LIMIT, CapacityEntry, CounterCell,
    capacity_key, cell_owner_parts, counter_key_parts, home,
};
use crate::sync::{AtomicU64, Ordering, fence, wait_hint};

/// How long a writer looks at a cell another thread of its own process is
/// initialising (it may be claiming it for the same key) before it probes
/// on (and may then claim a second cell for the key: harmless).
const INITIALISING_SPINS: u32 = 1 << 12;

/// The most CAS attempts a writer makes on one word other processes may
/// also write (a cell's owner word, a lane word) before it gives up: a
/// process rewriting the word without end (broken, or hostile) must not
/// keep a hook spinning. Giving up means "no cell here" (probe on, then
/// untracked), "no lane" (the shared lane) or "lane kept" (taken until the
/// entry is reused); honest contention (a few threads of one process)
/// never comes near it.
#[cfg(not(loom))]
pub(crate) const CAS_ATTEMPTS: u32 = 64;
/// Under loom, few enough for a model to reach the cap.
#[cfg(loom)]
pub(crate) const CAS_ATTEMPTS: u32 = 2;

/// Bits of `ProcessEntry::lanes` that are lanes.
const LANE_MASK: u32 = if COUNTER_LANES == 32 { u32::MAX } else { (1 << COUNTER_LANES) - 1 };

/// A cell as a reader found it: consistent (its owner did not change while
/// it was read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CellReading {
    /// Process-table entry of the owner.
    pub entry: usize,
    /// The owner's generation of that entry.
    pub generation: u32,
    /// `counter_key(device, kind, lane)`.
    pub key: u64,
    /// Live bytes.
    pub bytes: i64,
    /// Live buffers.
    pub buffers: i64,
}

/// Where the probe for `key` of process-table `entry` starts.
///
/// The entry is spread over every bit before it meets the key: `home` keeps
/// the product's bits 32.., which key bits 48.. never reach, so with the
/// entry in those bits (as before) every process's cell for one (device,
/// kind, lane) probed from one home and two processes hooking one device
/// wrote adjacent cells, often on one cache line. Two processes hooking at
/// once (`benches/same_device.c`, no reader, AMD EPYC, old and new library
/// side by side): 152–192 ns per event on one device against 51–53 on
/// devices 0 and 1; 51–53 on one device with this start. Any start
/// is valid: a cell is found by probing from it, and readers scan the pool.
#[inline]
fn cell_home(key: u64, entry: u64, len: usize) -> usize {
    home(key ^ entry.wrapping_mul(ENTRY_SPREAD), len)
}

/// An odd 64-bit constant (splitmix64's first multiplier) with bits spread
/// over the whole word.
const ENTRY_SPREAD: u64 = 0xbf58_476d_1ce4_e5b9;

/// Counter cells per 64-byte cache line (the pool starts on a line: its
/// offset is asserted in `format`). 64, not the 128 the file's padding
/// assumes (Intel's adjacent-line prefetcher pairs lines): a hot cell
/// alone on 128 bytes would leave the pool a quarter of its cells for
/// such placement, and the pairing costs far less than one shared line.
const CELLS_PER_LINE: usize = 64 / COUNTER_CELL_SIZE;

/// The lane byte of a counter key.
fn lane_of(key: u64) -> u8 {
    counter_key_parts(key).2
}

/// The counter pool: a power-of-two number of cells.
#[derive(Clone, Copy)]
pub(crate) struct Pool<'a> {
    cells: &'a [CounterCell],
}

impl<'a> Pool<'a> {
    pub(crate) fn new(cells: &'a [CounterCell]) -> Pool<'a> {
        debug_assert!(cells.len().is_power_of_two());
        Pool { cells }
    }

    /// The cell at `index` (from [`Pool::find_or_claim`]).
    #[inline(always)]
    pub(crate) fn cell(&self, index: usize) -> &'a CounterCell {
        &self.cells[index]
    }

    /// Number of cells.
    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }

    /// The cell of `key` that `owner` (a `cell_owner` word) holds, claiming
    /// a free one if it has none on the key's probe path; `None` when every
    /// cell probed belongs to someone else (the pool is full there).
    ///
    /// Where it claims: the first free cell on the probe path whose cache
    /// line holds no cell of another writer (see [`Pool::line_is_writers`]),
    /// so that two threads or processes adding at once do not write one
    /// line; only if the probe path has no such cell (a crowded pool), the
    /// first free cell, as if lines did not matter. The probe for an
    /// existing cell goes past the free cells the first pass passes over
    /// (they stay so for it, unless their line-mates change: then a key
    /// may get a second cell, which readers sum, as for a cell freed on
    /// its path).
    pub(crate) fn find_or_claim(&self, owner: u64, key: u64) -> Option<usize> {
        let entry = cell_owner_parts(owner).map_or(0, |(entry, _)| entry as u64);
        let len = self.cells.len();
        let start = cell_home(key, entry, len);
        for own_line in [true, false] {
            for step in 0..COUNTER_PROBE_LIMIT.min(len) {
                let index = (start + step) & (len - 1);
                let claimable = !own_line || self.line_is_writers(index, owner, key);
                if self.try_cell(index, owner, key, claimable) {
                    return Some(index);
                }
            }
        }
        None
    }

    /// Whether the other cells on cell `index`'s 64-byte line are free or
    /// this writer's own (`owner`'s, of `key`'s lane: one thread, or the
    /// threads sharing the shared lane): a cell claimed there puts no other
    /// writer's hot stores on its line. A cell being initialised, or of an
    /// ended process, counts as another writer's (unknown, or not worth a
    /// look at its lock on this path). A hint: the line-mates may change
    /// right after; the claim stays correct either way.
    fn line_is_writers(&self, index: usize, owner: u64, key: u64) -> bool {
        let first = index & !(CELLS_PER_LINE - 1);
        // `min`: a pool smaller than a line (loom's models) has no mates.
        let end = (first + CELLS_PER_LINE).min(self.cells.len());
        (first..end).filter(|&mate| mate != index).all(|mate| {
            let cell = &self.cells[mate];
            // Relaxed: a placement hint, nothing is read through it.
            match cell.owner.load(Ordering::Relaxed) {
                0 => true,
                seen if seen == owner => lane_of(cell.key.load(Ordering::Relaxed)) == lane_of(key),
                _ => false,
            }
        })
    }

    /// Whether cell `index` is (now) `owner`'s cell of `key`; a free cell
    /// is claimed for it only if `claimable`.
    fn try_cell(&self, index: usize, owner: u64, key: u64, claimable: bool) -> bool {
        let cell = &self.cells[index];
        let (mut spins, mut failed_claims) = (0, 0);
        loop {
            // Acquire: pairs with the Release store that publishes a claimed
            // cell below, so a cell seen as ours shows its key.
            let seen = cell.owner.load(Ordering::Acquire);
            if seen == owner {
                return cell.key.load(Ordering::Relaxed) == key;
            }
            if seen == owner | CELL_INITIALISING && spins < INITIALISING_SPINS {
                // Another thread of this process is claiming it, perhaps
                // for this very key: wait to see which, so that racing
                // threads end with one cell. (Bounded by the spins.)
                spins += 1;
                wait_hint();
                continue;
            }
            if seen != 0 || !claimable {
                return false; // Someone else's (or taking too long), or not to claim.
            }
            // Relaxed: nothing is read through the claim; the fence below
            // orders it before the key and value stores.
            if cell
                .owner
                .compare_exchange(0, owner | CELL_INITIALISING, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                // Claimed meanwhile: look at whose it is -- unless the cell
                // keeps being freed and claimed under us (another process
                // at it without end): then it is not ours.
                failed_claims += 1;
                if failed_claims == CAS_ATTEMPTS {
                    return false;
                }
                continue;
            }
            // Release fence: pairs with the Acquire fence in `read`. A
            // reader that sees one of the stores below also sees, when it
            // looks at the owner word again, this claim or later, and so
            // never takes our key or values for the previous owner's.
            fence(Ordering::Release);
            cell.key.store(key, Ordering::Relaxed);
            cell.bytes.store(0, Ordering::Relaxed);
            cell.buffers.store(0, Ordering::Relaxed);
            // Release: pairs with the Acquire loads of the owner word here
            // and in `read`: whoever sees the cell ready sees its key and
            // zeroed values.
            cell.owner.store(owner, Ordering::Release);
            return true;
        }
    }

    /// Frees every cell of process entry `entry` not of `generation`: what
    /// a new owner of the entry does before it counts anything.
    #[cfg(any(test, loom))]
    pub(crate) fn reclaim_entry(&self, entry: usize, generation: u32) -> usize {
        self.reclaim_where(|e, g, _| e == entry && g != generation)
    }

    /// Frees every cell whose (entry, generation, reading) `stale` says is
    /// stale (a reading is `None` while the cell is being initialised or
    /// changes under the reader). Returns how many it freed.
    pub(crate) fn reclaim_where(&self, stale: impl Fn(usize, u32, Option<&CellReading>) -> bool) -> usize {
        let mut freed = 0;
        for (index, cell) in self.cells.iter().enumerate() {
            let owner = cell.owner.load(Ordering::Relaxed);
            let Some((entry, generation)) = cell_owner_parts(owner) else { continue };
            let reading = self.read(index);
            let reading = reading.filter(|r| (r.entry, r.generation) == (entry, generation));
            // Relaxed CAS: only the owner word's own order matters (a
            // reader checks it before and after, a claimant CASes from 0);
            // CAS, not a store, so that a cell claimed since we looked is
            // left alone.
            if stale(entry, generation, reading.as_ref())
                && cell.owner.compare_exchange(owner, 0, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                freed += 1;
            }
        }
        freed
    }

    /// Cell `index`, if it is in use and did not change owner while read.
    pub(crate) fn read(&self, index: usize) -> Option<CellReading> {
        let cell = &self.cells[index];
        // Acquire: pairs with the Release store that published the cell.
        let before = cell.owner.load(Ordering::Acquire);
        let (entry, generation) = cell_owner_parts(before)?;
        if before & CELL_INITIALISING != 0 {
            return None;
        }
        let key = cell.key.load(Ordering::Relaxed);
        let bytes = cell.bytes.load(Ordering::Relaxed) as i64;
        let buffers = cell.buffers.load(Ordering::Relaxed) as i64;
        // Acquire fence: pairs with the Release fence after a claim (see
        // `try_cell`) and with the Release stores of `add_own` and
        // `add_shared` (whose thread may not be the claimant): if any load
        // above saw a later owner's store, the load below sees that
        // owner's claim, and we drop the reading.
        fence(Ordering::Acquire);
        let after = cell.owner.load(Ordering::Relaxed);
        (after == before).then_some(CellReading { entry, generation, key, bytes, buffers })
    }
}

/// Adds to a cell of this thread's own lane: it has no other writer, so a
/// load and a store (plain moves, no `lock` prefix) suffice. Readers in
/// other processes see each word whole; a reading may catch the bytes
/// updated and the buffers not yet (each word is exact, the pair is as of
/// a moment apart).
///
/// Release stores (still plain moves on x86-64; `stlr` on AArch64): pair
/// with the Acquire fence in [`Pool::read`]. The thread adding need not be
/// the one that claimed the cell: it found the cell through an Acquire
/// load of its owner word, so the claim happens before this store, and a
/// reader whose load sees this store sees, through the fence, the claim
/// when it re-checks the owner word, and drops the reading. With Relaxed
/// stores nothing orders the claim before the reader's re-check, and the
/// reader could take this add for the previous owner's (the loom model
/// `loom_a_reader_never_mixes_a_reclaimed_cell_with_an_add_by_another_thread_of_the_new_owner`
/// finds that reading). The loads stay Relaxed: the lane's hand-over (see
/// [`take_lane`]) orders the previous holder's stores before them.
#[inline(always)]
pub(crate) fn add_own(cell: &CounterCell, bytes: i64, buffers: i64) {
    let b = cell.bytes.load(Ordering::Relaxed);
    cell.bytes.store(b.wrapping_add(bytes as u64), Ordering::Release);
    let n = cell.buffers.load(Ordering::Relaxed);
    cell.buffers.store(n.wrapping_add(buffers as u64), Ordering::Release);
}

/// Adds to a cell of the shared lane, which several threads update.
/// Release, as in [`add_own`] (and for the same reader); `lock xadd`
/// either way on x86-64.
#[inline]
pub(crate) fn add_shared(cell: &CounterCell, bytes: i64, buffers: i64) {
    cell.bytes.fetch_add(bytes as u64, Ordering::Release);
    cell.buffers.fetch_add(buffers as u64, Ordering::Release);
}

/// The lane word of a new owner of a process entry: no lane taken.
pub(crate) fn reset_lanes(lanes: &AtomicU64, generation: u32) {
    lanes.store((generation as u64) << 32, Ordering::Relaxed);
}

/// Takes a free lane of the entry owned at `generation`; `None` when all
/// are taken (the thread uses the shared lane) or the entry has moved on.
pub(crate) fn take_lane(lanes: &AtomicU64, generation: u32) -> Option<u8> {
    let mut word = lanes.load(Ordering::Relaxed);
    for _ in 0..CAS_ATTEMPTS {
        if (word >> 32) as u32 != generation {
            return None;
        }
        let free = !(word as u32) & LANE_MASK;
        if free == 0 {
            return None;
        }
        let lane = free.trailing_zeros();
        // Acquire: pairs with the Release CAS in `release_lane` of the
        // lane's previous holder, so its cell stores happen before ours.
        match lanes.compare_exchange(word, word | 1 << lane, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Some(lane as u8),
            Err(now) => word = now,
        }
    }
    None // The word keeps changing under us: the shared lane.
}

/// Gives `lane` back (at thread exit). A CAS rather than a store, since the
/// word holds every lane of the entry; a no-op if the entry has a new owner
/// since (the lane is not ours to give any more). After [`CAS_ATTEMPTS`]
/// the lane stays taken: lost to this process's later threads (they share
/// a lane instead), never given to two holders.
pub(crate) fn release_lane(lanes: &AtomicU64, generation: u32, lane: u8) {
    let bit = 1u64 << lane;
    let mut word = lanes.load(Ordering::Relaxed);
    for _ in 0..CAS_ATTEMPTS {
        if (word >> 32) as u32 != generation || word & bit == 0 {
            return;
        }
        // Release: pairs with the Acquire CAS in `take_lane` of the next
        // holder: our cell stores happen before its loads.
        match lanes.compare_exchange(word, word & !bit, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => word = now,
        }
    }
}

/// The capacity table: (device, kind) → bytes, by open addressing.
#[derive(Clone, Copy)]
pub(crate) struct CapacityTable<'a> {
    entries: &'a [CapacityEntry],
}

impl<'a> CapacityTable<'a> {
    pub(crate) fn new(entries: &'a [CapacityEntry]) -> CapacityTable<'a> {
        debug_assert!(entries.len().is_power_of_two());
        CapacityTable { entries }
    }

    /// Sets the capacity of (device, kind); `false` if the table is full.
    pub(crate) fn set(&self, device: u32, kind: u8, bytes: u64) -> bool {
        let key = capacity_key(device, kind);
        let len = self.entries.len();
        let start = home(key, len);
        for step in 0..len {
            let entry = &self.entries[(start + step) & (len - 1)];
            let seen = match entry.key.compare_exchange(0, key, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => key,
                Err(seen) => seen,
            };
            if seen == key {
                // Relaxed: a capacity is one word, read on its own.
                entry.bytes.store(bytes, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Every (key, bytes) set, in table order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.entries.iter().filter_map(|e| {
            let key = e.key.load(Ordering::Relaxed);
            (key != 0).then(|| (key, e.bytes.load(Ordering::Relaxed)))
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::format::{CapacityEntry, DEFAULT_COUNTER_CELLS, cell_owner, counter_key};

    fn pool(n: usize) -> Vec<CounterCell> {
        (0..n).map(|_| CounterCell::new()).collect()
    }

    #[test]
    fn a_key_finds_its_cell_again_and_other_owners_never_share_it() {
        let cells = pool(128);
        let pool = Pool::new(&cells);
        let (a, b) = (cell_owner(3, 1), cell_owner(4, 1));
        let key = counter_key(100, 9, 0);
        let i = pool.find_or_claim(a, key).unwrap();
        assert_eq!(pool.find_or_claim(a, key), Some(i));
        let j = pool.find_or_claim(b, key).unwrap();
        assert_ne!(i, j);
        add_own(pool.cell(i), 1 << 62, 1);
        add_shared(pool.cell(j), -5, -1);
        let r = pool.read(i).unwrap();
        assert_eq!((r.entry, r.generation, r.key, r.bytes, r.buffers), (3, 1, key, 1 << 62, 1));
        assert_eq!(pool.read(j).unwrap().bytes, -5);
    }

    #[test]
    fn processes_hooking_one_device_write_cells_on_different_cache_lines() {
        // Two processes' cells of one (device, kind, lane) on one line cost
        // each hook a cache-line transfer when both hook that device (their
        // probes once started at one home: adjacent cells, often one line).
        let cells = pool(DEFAULT_COUNTER_CELLS as usize);
        let pool = Pool::new(&cells);
        let per_line = 64 / std::mem::size_of::<CounterCell>();
        for key in [counter_key(0, 0, 0), counter_key(0, 1, 0), counter_key(7, 0, 3), counter_key(31, 4, 15)]
        {
            let mut lines: Vec<usize> = (0..8)
                .map(|entry| pool.find_or_claim(cell_owner(entry, 1), key).unwrap() / per_line)
                .collect();
            lines.sort_unstable();
            lines.dedup();
            assert_eq!(lines.len(), 8, "key {key:#x}: 8 processes' cells on {} lines", lines.len());
        }
    }

    /// (entry, lane) of each cell in use, by 64-byte line: the writers
    /// of each line (a lane has one writer thread).
    fn writers_by_line(pool: &Pool<'_>) -> Vec<Vec<(usize, u8)>> {
        let mut lines = vec![Vec::new(); pool.len() / CELLS_PER_LINE];
        for index in 0..pool.len() {
            if let Some(r) = pool.read(index) {
                lines[index / CELLS_PER_LINE].push((r.entry, lane_of(r.key)));
            }
        }
        for writers in &mut lines {
            writers.sort_unstable();
            writers.dedup();
        }
        lines
    }

    #[test]
    fn threads_of_many_processes_write_cells_on_lines_of_their_own_while_the_pool_has_room() {
        // 32 processes x 16 lanes x 4 (device, kind) pairs: 2048 cells in
        // the default pool (1/8 of it). Placed by their homes alone, two of
        // them would share a line by chance in ~250 lines (2048^2 / 2 /
        // 8192): each such pair costs both threads a cache-line transfer
        // per event when both count at once.
        let cells = pool(DEFAULT_COUNTER_CELLS as usize);
        let pool = Pool::new(&cells);
        for entry in 0..32 {
            let owner = cell_owner(entry, 1);
            for lane in 0..COUNTER_LANES as u8 {
                for (device, kind) in [(0, 0), (0, 1), (entry as u32 % 8, 3), (7, 5)] {
                    let index = pool.find_or_claim(owner, counter_key(device, kind, lane)).unwrap();
                    add_own(pool.cell(index), 1, 1);
                    let again = pool.find_or_claim(owner, counter_key(device, kind, lane));
                    assert_eq!(
                        again,
                        Some(index),
                        "a key finds the cell it claimed, past the free cells it passed"
                    );
                }
            }
        }
        let shared: Vec<_> = writers_by_line(&pool).into_iter().filter(|w| w.len() > 1).collect();
        assert!(
            shared.is_empty(),
            "{} lines with several writers: {:?}",
            shared.len(),
            &shared[..shared.len().min(4)]
        );
    }

    #[test]
    fn a_crowded_pool_still_gives_every_key_a_cell_sharing_lines() {
        // 128 cells, 128 writers of one key each: no line of its own is
        // left for half of them, and none may go untracked for that.
        let cells = pool(128);
        let pool = Pool::new(&cells);
        let claimed: Vec<usize> = (0..128)
            .map(|entry| pool.find_or_claim(cell_owner(entry, 1), counter_key(0, 0, 0)).unwrap())
            .collect();
        let mut unique = claimed.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 128, "every cell used once");
        for (entry, &index) in claimed.iter().enumerate() {
            assert_eq!(pool.find_or_claim(cell_owner(entry, 1), counter_key(0, 0, 0)), Some(index));
        }
    }

    #[test]
    fn a_full_pool_says_so_and_reclaiming_frees_only_old_generations() {
        let cells = pool(128);
        let pool = Pool::new(&cells);
        let old = cell_owner(7, 1);
        for device in 0..128 {
            assert!(pool.find_or_claim(old, counter_key(device, 0, 0)).is_some());
        }
        assert_eq!(pool.find_or_claim(cell_owner(8, 1), counter_key(0, 0, 0)), None, "full");
        let other = cell_owner(7, 2);
        assert_eq!(pool.reclaim_entry(7, 2), 128);
        assert!(pool.find_or_claim(other, counter_key(0, 0, 0)).is_some());
        assert_eq!(pool.reclaim_entry(7, 2), 0, "the current generation's cells stay");
    }

    #[test]
    fn lanes_are_taken_once_and_released_only_into_their_own_generation() {
        let lanes = AtomicU64::new(0);
        reset_lanes(&lanes, 5);
        let taken: Vec<u8> = (0..COUNTER_LANES).map(|_| take_lane(&lanes, 5).unwrap()).collect();
        assert_eq!(taken, (0..COUNTER_LANES as u8).collect::<Vec<_>>());
        assert_eq!(take_lane(&lanes, 5), None, "all taken: the shared lane");
        release_lane(&lanes, 5, 3);
        assert_eq!(take_lane(&lanes, 5), Some(3));
        assert_eq!(take_lane(&lanes, 4), None, "an old generation takes nothing");
        reset_lanes(&lanes, 6);
        release_lane(&lanes, 5, 0);
        assert_eq!(lanes.load(Ordering::Relaxed), 6 << 32, "an old holder frees nothing of the new owner's");
    }

    #[test]
    fn capacities_hold_any_device_and_kind_until_the_table_is_full() {
        let entries: Vec<CapacityEntry> =
            (0..4).map(|_| CapacityEntry { key: AtomicU64::new(0), bytes: AtomicU64::new(0) }).collect();
        let table = CapacityTable::new(&entries);
        assert!(table.set(u32::MAX, 255, 32 << 30));
        assert!(table.set(u32::MAX, 255, 16 << 30), "a second set overwrites");
        for device in 0..3 {
            assert!(table.set(device, 9, 1));
        }
        assert!(!table.set(77, 0, 1), "full");
        assert_eq!(table.entries().count(), 4);
        assert!(table.entries().any(|e| e == (capacity_key(u32::MAX, 255), 16 << 30)));
    }
}

#[cfg(all(test, loom))]
mod loom_models;
