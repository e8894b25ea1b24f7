//! The shared-memory file, format version 3: every offset, size, magic and
//! limit in one place. docs/FORMAT.md is the prose twin of this file.
//!
//! ```text
//! offset        size              what
//! 0             4096              Header: Identity, ClockCalibration, RingControl (shared ring)
//! 4096          256 × 128         process table (ProcessEntry)
//! 36864         4096 × 16         capacity table (CapacityEntry), open addressing on (device, kind)
//! 102400        cells × 32        counter pool (CounterCell), open addressing on
//!                                 (process entry, thread lane, device, kind); cells in Identity
//! S = 102400+32·cells
//!               subrings × 640    sub-ring headers (SubRingHeader: lease line, RingControl)
//! S+640·subrings
//!               subrings × subring_capacity × 64
//!                                 the sub-rings' slots, sub-ring i's at
//!                                 S + 640·subrings + i·subring_capacity·64
//! slots_offset  capacity × 64     the shared ring's slots; slots_offset is the end of the
//!                                 sub-ring region rounded up to 4096
//! ```
//!
//! Sub-rings (format 3, issue 14) are single-writer rings: one writer
//! thread at a time holds a sub-ring's lease and claims its slots with
//! plain stores; the consumer reads each like the shared ring and merges
//! them by timestamp. Zero sub-rings is legal: the file is then format 2's
//! with the two Identity fields set.
//!
//! Every shared field is an atomic, even those written once at creation: a
//! file another process can write is never read through a plain reference.
//! Alignment and padding are spelled out (`align(128)`), not taken from the
//! target's cache-line size, so the layout is the same on every architecture.

use crate::sync::{AtomicU32, AtomicU64, FutexWord, PAYLOAD_WORDS, PayloadCell};
use bytemuck::{Pod, Zeroable};

// Records are shared as native words and read back as bytes; the format
// says little-endian, so only build where the two agree.
#[cfg(not(target_endian = "little"))]
compile_error!("memtrack's shared-memory format is little-endian");

/// First eight bytes of a ring file (`"MEMTRACK"`, little-endian u64).
pub const MAGIC: u64 = u64::from_le_bytes(*b"MEMTRACK");
/// Version of this layout. Any change of an offset or meaning bumps it.
/// Version 1 had 64 process entries and dense 64 × 8 counter and capacity
/// tables; version 2 has 256 entries, a counter pool and a capacity table
/// for any device id and kind; version 3 adds the per-thread sub-rings.
pub const FORMAT_VERSION: u32 = 3;
/// Bytes per slot and per record.
pub const RECORD_SIZE: usize = 64;
/// Entries in the process table: writer processes attached at once.
pub const MAX_PROCESSES: usize = 256;

/// Bits of a claim owner (in a slot's state word) that hold the
/// process-table index: room for 1024 entries.
pub const OWNER_SLOT_BITS: u32 = 10;
/// Bits of a claim owner that hold the low bits of the entry's generation.
pub const OWNER_GENERATION_BITS: u32 = 20;

/// Smallest ring capacity, in records.
pub const MIN_CAPACITY: u64 = 16;
/// Largest ring capacity, in records (4 GiB of slots).
pub const MAX_CAPACITY: u64 = 1 << 26;
/// Default ring capacity: 65536 records (4 MiB of slots; with the default
/// counter pool and sub-rings a 20.6 MiB file), which fits the 64 MiB
/// /dev/shm that containers get by default three times over.
pub const DEFAULT_CAPACITY: u64 = 1 << 16;

/// Size reserved for the header.
pub const HEADER_REGION: usize = 4096;
/// Offset of the process table.
pub const PROCESS_TABLE_OFFSET: usize = HEADER_REGION;
/// Bytes per process-table entry.
pub const PROCESS_ENTRY_SIZE: usize = 128;
/// Offset of the capacity table.
pub const CAPACITY_TABLE_OFFSET: usize = PROCESS_TABLE_OFFSET + MAX_PROCESSES * PROCESS_ENTRY_SIZE;
/// Entries of the capacity table: (device, kind) pairs whose capacity a
/// ring can hold. More are counted in `LossLine::untracked_capacities`.
pub const CAPACITY_ENTRIES: usize = 4096;
/// Bytes per capacity-table entry.
pub const CAPACITY_ENTRY_SIZE: usize = 16;
/// Offset of the counter pool.
pub const COUNTERS_OFFSET: usize = CAPACITY_TABLE_OFFSET + CAPACITY_ENTRIES * CAPACITY_ENTRY_SIZE;
/// Bytes per counter cell.
pub const COUNTER_CELL_SIZE: usize = 32;
/// Default cells in the counter pool (512 KiB): with the default 16 lanes
/// a process uses one cell per (thread lane, device, kind) it touches, so
/// this holds e.g. 64 processes × 8 threads × 32 (device, kind) pairs.
pub const DEFAULT_COUNTER_CELLS: u32 = 1 << 14;
/// Fewest counter cells (keeps the slots page-aligned).
pub const MIN_COUNTER_CELLS: u32 = 128;
/// Most counter cells (128 MiB of pool).
pub const MAX_COUNTER_CELLS: u32 = 1 << 22;
/// Cells a writer probes from a key's home cell before it counts the key
/// as untracked: bounds the (cold) lookup of a key not yet in the pool.
pub const COUNTER_PROBE_LIMIT: usize = 256;
/// Thread lanes per process entry: up to this many threads of a process
/// update their own cells with plain (unlocked) stores; the rest share
/// [`SHARED_LANE`] and update it with `fetch_add`.
pub const COUNTER_LANES: u32 = 16;
/// The lane byte of the cells that threads beyond the lanes share.
pub const SHARED_LANE: u8 = 0xff;

/// Most sub-rings a ring may have.
pub const MAX_SUBRINGS: u32 = 256;
/// Default sub-rings: writer threads that get one of their own at once.
pub const DEFAULT_SUBRINGS: u32 = 32;
/// Smallest sub-ring capacity, in records.
pub const MIN_SUBRING_CAPACITY: u32 = 256;
/// Largest sub-ring capacity, in records.
pub const MAX_SUBRING_CAPACITY: u32 = 1 << 16;
/// Default sub-ring capacity: 8192 records (512 KiB) each, 16 MiB for the
/// default 32 sub-rings. Chosen by measurement (docs/PERFORMANCE.md, "A
/// full sub-ring waits"): a full sub-ring makes its writer wait for the
/// reader, and a sleeping reader takes tens of µs to wake on a VM; 8192
/// slots (~100 µs of a writer flat out) absorb that, so one thread's hook
/// stayed at 1.2x the floor, where 2048 slots made it wait every lap (4x).
pub const DEFAULT_SUBRING_CAPACITY: u32 = 8192;
/// Bytes per sub-ring header ([`SubRingHeader`]).
pub const SUBRING_HEADER_SIZE: usize = 640;

/// Offset of the sub-ring region (its headers) of a ring whose pool has
/// `counter_cells` cells.
pub const fn subrings_offset(counter_cells: u32) -> usize {
    COUNTERS_OFFSET + counter_cells as usize * COUNTER_CELL_SIZE
}

/// Offset of sub-ring `i`'s header.
pub const fn subring_header_offset(counter_cells: u32, i: usize) -> usize {
    subrings_offset(counter_cells) + i * SUBRING_HEADER_SIZE
}

/// Offset of sub-ring `i`'s first slot, in a ring of `subrings` sub-rings
/// of `subring_capacity` slots each.
pub const fn subring_slots_offset(
    counter_cells: u32,
    subrings: u32,
    subring_capacity: u32,
    i: usize,
) -> usize {
    subrings_offset(counter_cells)
        + subrings as usize * SUBRING_HEADER_SIZE
        + i * subring_capacity as usize * RECORD_SIZE
}

/// Offset of the shared ring's first slot: past the sub-ring region,
/// rounded up to a page.
pub const fn slots_offset(counter_cells: u32, subrings: u32, subring_capacity: u32) -> usize {
    let end = subring_slots_offset(counter_cells, subrings, subring_capacity, subrings as usize);
    end.next_multiple_of(4096)
}

/// Offset of the shared ring's first slot in a ring with the default pool
/// and sub-rings, as tests that patch slots use it.
pub const SLOTS_OFFSET: usize =
    slots_offset(DEFAULT_COUNTER_CELLS, DEFAULT_SUBRINGS, DEFAULT_SUBRING_CAPACITY);

/// Length of a ring file holding `capacity` shared slots, `counter_cells`
/// cells and `subrings` sub-rings of `subring_capacity` slots.
pub const fn file_size(capacity: u64, counter_cells: u32, subrings: u32, subring_capacity: u32) -> u64 {
    slots_offset(counter_cells, subrings, subring_capacity) as u64 + capacity * RECORD_SIZE as u64
}

/// Length of a ring file holding `capacity` shared slots with the default
/// counter pool and sub-rings (what `RingOptions::default()` creates).
pub const fn default_file_size(capacity: u64) -> u64 {
    file_size(capacity, DEFAULT_COUNTER_CELLS, DEFAULT_SUBRINGS, DEFAULT_SUBRING_CAPACITY)
}

/// Byte offset (past any real data) of the OFD lock the one consumer holds.
pub const READER_LOCK_OFFSET: i64 = 1 << 40;
/// Byte offset of the OFD lock that process-table entry `i` holds at `+ i`.
pub const PROCESS_LOCK_BASE: i64 = READER_LOCK_OFFSET + 1;

/// `Identity::clock_source`: timestamps are `CLOCK_MONOTONIC` nanoseconds.
pub const CLOCK_MONOTONIC_NS: u32 = 0;
/// `Identity::clock_source`: timestamps are invariant-TSC ticks.
pub const CLOCK_TSC: u32 = 1;

/// What a ring file is: written once by its creator before the file is
/// linked into place, validated by everyone who attaches.
#[repr(C, align(128))]
pub struct Identity {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// [`FORMAT_VERSION`].
    pub version: AtomicU32,
    /// [`RECORD_SIZE`].
    pub record_size: AtomicU32,
    /// Slots in the ring; a power of two.
    pub capacity: AtomicU64,
    /// Length of the file, `file_size(capacity)`.
    pub file_size: AtomicU64,
    /// [`MAX_PROCESSES`].
    pub max_processes: AtomicU32,
    /// Cells in the counter pool: a power of two in
    /// [`MIN_COUNTER_CELLS`]`..=`[`MAX_COUNTER_CELLS`], chosen at creation.
    pub counter_cells: AtomicU32,
    /// [`CAPACITY_ENTRIES`].
    pub capacity_entries: AtomicU32,
    /// [`CLOCK_TSC`] or [`CLOCK_MONOTONIC_NS`].
    pub clock_source: AtomicU32,
    /// Wall-clock time of creation, ns since the Unix epoch.
    pub created_unix_ns: AtomicU64,
    /// Pid of the creating process.
    pub creator_pid: AtomicU32,
    /// [`COUNTER_LANES`].
    pub counter_lanes: AtomicU32,
    /// Sub-rings: at most [`MAX_SUBRINGS`], chosen at creation (0: the
    /// shared ring only).
    pub subrings: AtomicU32,
    /// Slots per sub-ring: a power of two in
    /// [`MIN_SUBRING_CAPACITY`]`..=`[`MAX_SUBRING_CAPACITY`], chosen at
    /// creation (checked even with no sub-rings).
    pub subring_capacity: AtomicU32,
}

/// One (ticks, CLOCK_MONOTONIC ns) pair taken at creation and the tick rate
/// measured then. Readers refine the rate with a pair of their own.
#[repr(C, align(128))]
pub struct ClockCalibration {
    /// Clock ticks at the calibration instant.
    pub ticks: AtomicU64,
    /// `CLOCK_MONOTONIC` ns at the same instant.
    pub monotonic_ns: AtomicU64,
    /// Ticks per second measured at creation (1e9 for [`CLOCK_MONOTONIC_NS`]).
    pub ticks_per_second: AtomicU64,
}

/// The writers' hot line: where the next free ticket probably is.
#[repr(C, align(128))]
pub struct TailLine {
    /// A hint, never ahead of the first unclaimed ticket (see `ring`).
    pub tail: AtomicU64,
}

/// Records lost on the writer side; bumped only on the (cold) drop path.
#[repr(C, align(128))]
pub struct LossLine {
    /// Records dropped because the ring was full.
    pub dropped: AtomicU64,
    /// Processes that found the process table full and ran untracked.
    pub untracked_processes: AtomicU64,
    /// `memtrack_set_capacity` calls that found the capacity table full.
    pub untracked_capacities: AtomicU64,
}

/// One copy of the consumer's progress (see `ring::Progress`).
#[repr(C)]
pub struct ProgressCopy {
    /// Tickets below this were taken out of the ring by a consumer.
    pub taken: AtomicU64,
    /// Tickets below this were handed to the consumer's caller.
    pub committed: AtomicU64,
    /// Records delivered, in total.
    pub delivered: AtomicU64,
    /// Claims reclaimed from writers that died before publishing.
    pub lost_writer_died: AtomicU64,
    /// Records taken by a consumer that died before handing them on.
    pub lost_reader_died: AtomicU64,
}

/// The consumer's line: who it is and how far it got, double-buffered so a
/// consumer killed mid-update leaves the previous copy intact.
#[repr(C, align(128))]
pub struct ReaderLine {
    /// Pid of the attached consumer, 0 when none.
    pub reader_pid: AtomicU32,
    /// Inode of the consumer's PID namespace (low 32 bits), 0 when none
    /// or unknown: `reader_pid` means nothing in another namespace.
    pub reader_pid_ns: AtomicU32,
    /// Bumped once per progress update; `progress[epoch & 1]` is current.
    pub progress_epoch: AtomicU64,
    /// The two copies.
    pub progress: [ProgressCopy; 2],
}

/// Where writers that found the ring full sleep until the consumer frees
/// slots (see `ring`, "waiting for space").
///
/// Added after version 1 was released, in bytes that were zero and unused
/// there, so it needs no new version: a writer built before it never
/// registers (the consumer then never wakes anyone), and a consumer built
/// before it never wakes (the writer's sleep then ends at its timeout).
#[repr(C, align(128))]
pub struct WaitLine {
    /// Writers registered as about to sleep or sleeping on `wake`.
    pub waiters: AtomicU32,
    /// The futex word: bumped by the consumer before it wakes the sleepers.
    pub wake: FutexWord,
}

/// The part of the header the ring protocol works on.
#[repr(C)]
pub struct RingControl {
    /// Writers' tail hint.
    pub tail: TailLine,
    /// Writer-side loss counters.
    pub loss: LossLine,
    /// Consumer identity and progress.
    pub reader: ReaderLine,
    /// Writers waiting for space, and their futex.
    pub wait: WaitLine,
}

/// `SubRingHeader::lease` bit: the word names a holder. With it, the
/// word is [`cell_owner`]`(entry, generation) | SUBRING_LEASED`.
pub const SUBRING_LEASED: u64 = 1;

/// The lease word of a sub-ring held by a thread of process entry `entry`
/// at `generation`: never 0 (0 is free).
pub const fn subring_lease(entry: usize, generation: u32) -> u64 {
    cell_owner(entry, generation) | SUBRING_LEASED
}

/// (entry, generation) of a lease word, `None` when free or not a lease.
pub const fn subring_lease_parts(lease: u64) -> Option<(usize, u32)> {
    if lease & SUBRING_LEASED == 0 { None } else { cell_owner_parts(lease) }
}

/// One sub-ring's control block: who holds it, and its ring state.
///
/// The lease has its own line (taken and given back on cold paths only);
/// the `RingControl` is that of a ring with one writer: `tail.tail` is the
/// next ticket, stored by the holder when it gives the lease back (a hint
/// the next holder probes forward from); `reader` is the consumer's
/// progress as for the shared ring; `wait` is where its writer sleeps
/// when the sub-ring is full and a consumer is attached (the shared
/// header's `reader_pid` says so: this `reader_pid` stays 0); `loss` is
/// unused (a sub-ring never drops: a writer that gives up its wait writes
/// the shared ring, which counts any drop).
#[repr(C, align(128))]
pub struct SubRingHeader {
    /// 0: free; else [`subring_lease`]`(entry, generation)` of the holder.
    pub lease: AtomicU64,
    /// The sub-ring's ring state.
    pub control: RingControl,
}

/// The consumer's doorbell: where an idle consumer sleeps, so that a
/// writer about to sleep for space (in any ring: the shared ring or its
/// own sub-ring) wakes it instead of waiting out its idle pause (see
/// `ring::doorbell`).
///
/// Added in format 3, in header bytes that were zero and unused, like
/// [`WaitLine`], so it needs no new version: a consumer built before it
/// never says it sleeps (writers then never ring), and a writer built
/// before it never rings (the consumer then wakes at the end of its pause,
/// as it did).
#[repr(C, align(128))]
pub struct DoorbellLine {
    /// 1 while the consumer is about to sleep or sleeping on `bell`, else 0.
    pub sleeping: AtomicU32,
    /// The futex word the consumer sleeps on: bumped by each writer that
    /// rings, so it also counts the rings (wrapping).
    pub bell: FutexWord,
}

/// The header at offset 0.
#[repr(C)]
pub struct Header {
    /// What the file is.
    pub identity: Identity,
    /// How to turn timestamps into nanoseconds.
    pub clock: ClockCalibration,
    /// Ring protocol state.
    pub control: RingControl,
    /// Where the idle consumer sleeps (see [`DoorbellLine`]).
    pub doorbell: DoorbellLine,
}

/// `ProcessEntry::state`: never used.
pub const PROCESS_FREE: u32 = 0;
/// `ProcessEntry::state`: attached (alive unless its lock is free).
pub const PROCESS_ACTIVE: u32 = 1;
/// `ProcessEntry::state`: called `memtrack_shutdown` or exited normally.
pub const PROCESS_EXITED: u32 = 2;

/// Bytes of a process name kept in the table.
pub const PROCESS_NAME_LEN: usize = 32;

/// One writer process. Owned by whoever holds the OFD lock at
/// `PROCESS_LOCK_BASE + index`; the kernel drops that lock when the process
/// dies, which is how readers tell dead from alive without trusting pids.
#[repr(C, align(128))]
pub struct ProcessEntry {
    /// `PROCESS_FREE`, `PROCESS_ACTIVE` or `PROCESS_EXITED`.
    pub state: AtomicU32,
    /// Bumped by every new owner; low 20 bits are part of a claim's owner.
    pub generation: AtomicU32,
    /// Process id, in the process's own PID namespace.
    pub pid: AtomicU32,
    /// Inode of the process's PID namespace (low 32 bits; 0: unknown, as
    /// from writers that left this reserved): which namespace `pid` is of.
    pub pid_ns: AtomicU32,
    /// Start time from /proc/PID/stat (clock ticks since boot): with the
    /// pid and its namespace, a name for the process that survives pid
    /// reuse.
    pub start_time: AtomicU64,
    /// Ring clock when the process attached.
    pub attach_ticks: AtomicU64,
    /// Ring clock when it exited cleanly, else 0.
    pub exit_ticks: AtomicU64,
    /// Records this process dropped because the ring was full.
    pub dropped: AtomicU64,
    /// Process name (comm), NUL-padded, little-endian bytes.
    pub name: [AtomicU64; PROCESS_NAME_LEN / 8],
    /// The thread lanes of this owner: `generation:32 | bitmap:32`, a bit
    /// per lane a thread holds (see `counters`). Set to (generation, 0) by
    /// each new owner, so a lane is never released into another owner's map.
    pub lanes: AtomicU64,
    /// Live bytes whose counter found no cell (pool full), as i64.
    pub untracked_bytes: AtomicU64,
    /// Live buffers whose counter found no cell, as i64.
    pub untracked_buffers: AtomicU64,
    /// Events whose counter found no cell.
    pub untracked_events: AtomicU64,
}

/// One cell of the counter pool: the live usage of one (process entry,
/// thread lane, device, kind), kept by the writers (protocol in
/// `counters`). Bytes and buffers have a word each, so neither wraps for
/// any real size.
#[repr(C)]
pub struct CounterCell {
    /// Who owns the cell: 0 free, else [`cell_owner`]`(entry, generation)`,
    /// with [`CELL_INITIALISING`] set while its owner writes the key.
    pub(crate) owner: AtomicU64,
    /// [`counter_key`]`(device, kind, lane)`.
    pub(crate) key: AtomicU64,
    /// Live bytes (i64), ALIAS buffers excluded.
    pub(crate) bytes: AtomicU64,
    /// Live buffers (i64), ALIAS buffers included.
    pub(crate) buffers: AtomicU64,
}

impl CounterCell {
    /// A free cell (all zero, as in a new file).
    pub fn new() -> Self {
        Self {
            owner: AtomicU64::new(0),
            key: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            buffers: AtomicU64::new(0),
        }
    }
}

#[cfg(not(loom))]
impl Default for CounterCell {
    fn default() -> Self {
        Self::new()
    }
}

/// `CounterCell::owner` bit: the owner is writing the key; not yet valid.
pub const CELL_INITIALISING: u64 = 1;

/// The owner word of cells of process entry `entry` at `generation`:
/// `generation:32 | (entry + 1):31 | initialising:1`, never 0.
pub const fn cell_owner(entry: usize, generation: u32) -> u64 {
    (generation as u64) << 32 | ((entry as u64 + 1) << 1)
}

/// (entry, generation) of a cell's owner word, `None` when free.
pub const fn cell_owner_parts(owner: u64) -> Option<(usize, u32)> {
    let entry = ((owner & 0xffff_ffff) >> 1) as usize;
    if entry == 0 { None } else { Some((entry - 1, (owner >> 32) as u32)) }
}

/// The key word of a cell: `device:32 | kind:8 | lane:8`.
pub const fn counter_key(device: u32, kind: u8, lane: u8) -> u64 {
    (device as u64) << 16 | (kind as u64) << 8 | lane as u64
}

/// (device, kind, lane) of a key word.
pub const fn counter_key_parts(key: u64) -> (u32, u8, u8) {
    ((key >> 16) as u32, (key >> 8) as u8, key as u8)
}

/// One entry of the capacity table: which (device, kind), and its bytes.
#[repr(C)]
pub struct CapacityEntry {
    /// 0 free, else [`capacity_key`]; set once, by CAS.
    pub(crate) key: AtomicU64,
    /// Total bytes of (device, kind), the last value set.
    pub(crate) bytes: AtomicU64,
}

/// The key word of (device, kind) in the capacity table, never 0.
pub const fn capacity_key(device: u32, kind: u8) -> u64 {
    1 << 40 | (device as u64) << 8 | kind as u64
}

/// (device, kind) of a capacity key word.
pub const fn capacity_key_parts(key: u64) -> (u32, u8) {
    ((key >> 8) as u32, key as u8)
}

/// Home position of a key in an open-addressing table of `len` (a power
/// of two) entries: a multiplicative (Fibonacci) hash's top bits.
#[inline(always)]
pub const fn home(key: u64, len: usize) -> usize {
    let hash = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((hash >> 32) as usize) & (len - 1)
}

/// One ring slot: the state word the protocol hands over, and the payload.
#[repr(C, align(64))]
pub struct Slot {
    /// `ring::SlotState`, encoded.
    pub(crate) state: AtomicU64,
    /// Record words 1..8 (everything but the ticket).
    pub(crate) payload: PayloadCell,
}

#[cfg(all(test, not(loom)))]
impl Slot {
    /// An empty slot waiting for lap 0 (all-zero bytes, as in a new file).
    pub(crate) const fn new() -> Self {
        Self { state: AtomicU64::new(0), payload: PayloadCell::new() }
    }
}

#[cfg(loom)]
impl Slot {
    pub(crate) fn new() -> Self {
        Self { state: AtomicU64::new(0), payload: PayloadCell::new() }
    }
}

/// What a record says happened.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A buffer was allocated.
    Alloc = 1,
    /// A buffer was freed.
    Free = 2,
    /// A phase marker; the label is in the record.
    Mark = 3,
    /// `size` is the total memory of (device, kind).
    Capacity = 4,
    /// A process attached; the label is its name.
    ProcessStart = 5,
    /// A process shut down cleanly.
    ProcessExit = 6,
    /// A scope node of this process is defined: its id, parent and name
    /// (see [`Record::scope`], [`Record::scope_parent`]). Written once per
    /// process and node, before any ALLOC attributed to it.
    Scope = 7,
    /// More text of the record before it of this thread, a `Scope` or
    /// `Mark` with [`FLAG_MORE`]: `kind` is that record's event code,
    /// `reserved` its id, `flags` the chunk's number (1, 2, ...), and the
    /// label bytes the text.
    Text = 8,
}

impl Event {
    /// The event with code `code`, if it is one.
    pub fn from_code(code: u8) -> Option<Event> {
        Some(match code {
            1 => Event::Alloc,
            2 => Event::Free,
            3 => Event::Mark,
            4 => Event::Capacity,
            5 => Event::ProcessStart,
            6 => Event::ProcessExit,
            7 => Event::Scope,
            8 => Event::Text,
            _ => return None,
        })
    }

    /// Lower-case name for text output.
    pub fn name(self) -> &'static str {
        match self {
            Event::Alloc => "alloc",
            Event::Free => "free",
            Event::Mark => "mark",
            Event::Capacity => "capacity",
            Event::ProcessStart => "process_start",
            Event::ProcessExit => "process_exit",
            Event::Scope => "scope",
            Event::Text => "text",
        }
    }
}

/// Kinds of memory; 0..=4 equal tt_metal's `BufferType`.
pub mod kind {
    /// Device DRAM.
    pub const DRAM: u8 = 0;
    /// Core-local L1.
    pub const L1: u8 = 1;
    /// Host memory mapped for the device.
    pub const SYSTEM_MEMORY: u8 = 2;
    /// The small L1 region.
    pub const L1_SMALL: u8 = 3;
    /// Trace buffers.
    pub const TRACE: u8 = 4;
    /// Circular buffers of a program.
    pub const CB: u8 = 5;
    /// Kernel binaries.
    pub const KERNEL: u8 = 6;

    /// The name used in reports, JSON and the CLI, or `None` if unknown.
    pub fn name(kind: u8) -> Option<&'static str> {
        NAMES.get(kind as usize).copied()
    }

    /// The kind called `name` (as returned by [`name`]).
    pub fn from_name(name: &str) -> Option<u8> {
        NAMES.iter().position(|n| *n == name).map(|i| i as u8)
    }

    const NAMES: [&str; 7] = ["DRAM", "L1", "SYSTEM_MEMORY", "L1_SMALL", "TRACE", "CB", "KERNEL"];
}

/// `Record::flags`: the buffer's bytes are already counted by other live
/// buffers (a mesh buffer's backing buffer, a buffer at a preallocated
/// address). Its lifecycle is tracked; its bytes are not counted.
pub const FLAG_ALIAS: u8 = 1;

/// `Record::flags` of a MARK or SCOPE record: its text goes on in TEXT
/// records (format 1 readers ignore the flag and show the first part).
pub const FLAG_MORE: u8 = 2;

/// Bytes of label a MARK or PROCESS_START record carries.
pub const LABEL_LEN: usize = 36;
const LABEL_OFFSET: usize = 16;
/// Bytes of name the SCOPE record itself carries (after the parent id).
pub const SCOPE_NAME_LEN: usize = LABEL_LEN - 4;
/// The longest text (mark label, scope name) the writer sends, in bytes:
/// the first record's part and up to 28 TEXT records.
pub const MAX_TEXT_LEN: usize = 1024;
/// Largest id the 24-bit `reserved` field holds (scope nodes, texts).
pub const MAX_RESERVED_ID: u32 = (1 << 24) - 1;

/// One event, as delivered to consumers and stored in record files.
///
/// In the ring, word 0 (the ticket) is implied by the slot's position and
/// the other seven words are the slot's payload. For `Mark` and
/// `ProcessStart` the bytes from `buffer_id` to `device_id` (36 bytes) hold
/// a NUL-padded label instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Record {
    /// Position in the ring's total order.
    pub ticket: u64,
    /// Ring clock ticks (see `ClockCalibration`).
    pub timestamp: u64,
    /// Identity of the buffer object (tt_metal: `Buffer::unique_id()`).
    pub buffer_id: u64,
    /// Owner: mesh buffer of a device buffer, program of a circular buffer.
    pub parent_id: u64,
    /// Device address.
    pub address: u64,
    /// Bytes.
    pub size: u64,
    /// Device id.
    pub device_id: u32,
    /// Writer's process id.
    pub pid: u32,
    /// Writer's process-table index.
    pub process_slot: u16,
    /// `Event` code.
    pub event: u8,
    /// Kind code (see [`kind`]).
    pub kind: u8,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Reserved, 0.
    pub reserved: [u8; 3],
}

impl Record {
    /// The event, if the code is known.
    pub fn event(&self) -> Option<Event> {
        Event::from_code(self.event)
    }

    /// The label of a `Mark` or `ProcessStart` record, up to its first NUL.
    pub fn label(&self) -> &[u8] {
        let bytes = &bytemuck::bytes_of(self)[LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(LABEL_LEN);
        &bytes[..end]
    }

    /// Stores `label`, truncated to [`LABEL_LEN`] bytes, over the label bytes.
    pub fn set_label(&mut self, label: &[u8]) {
        let bytes = &mut bytemuck::bytes_of_mut(self)[LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN];
        let n = label.len().min(LABEL_LEN);
        bytes[..n].copy_from_slice(&label[..n]);
        bytes[n..].fill(0);
    }

    /// The label bytes in full, NUL padding included.
    pub fn label_bytes(&self) -> &[u8] {
        &bytemuck::bytes_of(self)[LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN]
    }

    /// The 24-bit id in `reserved`: an ALLOC's scope node (0 = none), a
    /// SCOPE's own node, a MARK's or TEXT's text id.
    pub fn scope(&self) -> u32 {
        u32::from_le_bytes([self.reserved[0], self.reserved[1], self.reserved[2], 0])
    }

    /// Stores `id` (at most [`MAX_RESERVED_ID`]) in `reserved`.
    pub fn set_scope(&mut self, id: u32) {
        let b = id.min(MAX_RESERVED_ID).to_le_bytes();
        self.reserved = [b[0], b[1], b[2]];
    }

    /// A SCOPE record's parent node (0: a top-level scope).
    pub fn scope_parent(&self) -> u32 {
        let b = self.label_bytes();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// A SCOPE record's first part of the name, up to its first NUL.
    pub fn scope_name(&self) -> &[u8] {
        let bytes = &self.label_bytes()[4..];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        &bytes[..end]
    }

    /// Makes this a SCOPE record's body: `parent`, then `name` cut to
    /// [`SCOPE_NAME_LEN`] bytes.
    pub fn set_scope_body(&mut self, parent: u32, name: &[u8]) {
        let bytes = &mut bytemuck::bytes_of_mut(self)[LABEL_OFFSET..LABEL_OFFSET + LABEL_LEN];
        bytes[..4].copy_from_slice(&parent.to_le_bytes());
        let n = name.len().min(SCOPE_NAME_LEN);
        bytes[4..4 + n].copy_from_slice(&name[..n]);
        bytes[4 + n..].fill(0);
    }

    /// Whether the ALIAS flag is set.
    pub fn is_alias(&self) -> bool {
        self.flags & FLAG_ALIAS != 0
    }

    /// The seven payload words a slot carries.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn payload(&self) -> [u64; PAYLOAD_WORDS] {
        let words: [u64; 8] = bytemuck::cast(*self);
        std::array::from_fn(|i| words[i + 1])
    }

    /// The record in slot `ticket` with payload `payload`.
    pub(crate) fn from_payload(ticket: u64, payload: [u64; PAYLOAD_WORDS]) -> Record {
        let mut words = [0u64; 8];
        words[0] = ticket;
        words[1..].copy_from_slice(&payload);
        bytemuck::cast(words)
    }
}

// The layout is the contract: these fail the build if a field moves.
#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Record>() == RECORD_SIZE);
    assert!(offset_of!(Record, device_id) == 48);
    assert!(offset_of!(Record, process_slot) == 56);
    assert!(offset_of!(Record, event) == 58);
    assert!(LABEL_OFFSET + LABEL_LEN == offset_of!(Record, pid));
    assert!(offset_of!(Record, reserved) == 61);
    assert!(size_of::<Slot>() == RECORD_SIZE);
    assert!(offset_of!(Slot, payload) == 8);
    assert!(size_of::<Identity>() == 128);
    assert!(offset_of!(Identity, capacity) == 16);
    assert!(offset_of!(Identity, clock_source) == 44);
    assert!(offset_of!(Identity, creator_pid) == 56);
    assert!(offset_of!(Identity, counter_cells) == 36);
    assert!(offset_of!(Identity, capacity_entries) == 40);
    assert!(offset_of!(Identity, counter_lanes) == 60);
    assert!(offset_of!(Identity, subrings) == 64);
    assert!(offset_of!(Identity, subring_capacity) == 68);
    assert!(size_of::<SubRingHeader>() == SUBRING_HEADER_SIZE);
    assert!(offset_of!(SubRingHeader, control) == 128);
    assert!(std::mem::align_of::<SubRingHeader>() == 128);
    assert!(offset_of!(LossLine, untracked_capacities) == 16);
    assert!(size_of::<ClockCalibration>() == 128);
    assert!(size_of::<ProgressCopy>() == 40);
    assert!(offset_of!(ReaderLine, progress) == 16);
    assert!(size_of::<RingControl>() == 512);
    assert!(size_of::<WaitLine>() == 128);
    assert!(offset_of!(RingControl, wait) == 384);
    assert!(offset_of!(Header, control) + offset_of!(RingControl, wait) == 640);
    assert!(offset_of!(WaitLine, wake) == 4);
    assert!(offset_of!(Header, clock) == 128);
    assert!(offset_of!(Header, control) == 256);
    assert!(offset_of!(RingControl, loss) == 128);
    assert!(offset_of!(RingControl, reader) == 256);
    assert!(size_of::<Header>() <= HEADER_REGION);
    assert!(offset_of!(Header, doorbell) == 768);
    assert!(size_of::<DoorbellLine>() == 128);
    assert!(offset_of!(DoorbellLine, bell) == 4);
    assert!(size_of::<Header>() == 896);
    assert!(size_of::<ProcessEntry>() == PROCESS_ENTRY_SIZE);
    assert!(offset_of!(ProcessEntry, dropped) == 40);
    assert!(offset_of!(ProcessEntry, name) == 48);
    assert!(offset_of!(ProcessEntry, lanes) == 80);
    assert!(offset_of!(ProcessEntry, untracked_bytes) == 88);
    assert!(offset_of!(ProcessEntry, untracked_buffers) == 96);
    assert!(offset_of!(ProcessEntry, untracked_events) == 104);
    assert!(size_of::<CounterCell>() == COUNTER_CELL_SIZE);
    assert!(offset_of!(CounterCell, key) == 8);
    assert!(offset_of!(CounterCell, bytes) == 16);
    assert!(offset_of!(CounterCell, buffers) == 24);
    assert!(size_of::<CapacityEntry>() == CAPACITY_ENTRY_SIZE);
    assert!(CAPACITY_TABLE_OFFSET == 36864);
    assert!(COUNTERS_OFFSET == 102400);
    assert!(subrings_offset(DEFAULT_COUNTER_CELLS) == 626688);
    assert!(subrings_offset(MIN_COUNTER_CELLS).is_multiple_of(128));
    assert!(slots_offset(DEFAULT_COUNTER_CELLS, 0, MIN_SUBRING_CAPACITY) == 626688);
    assert!(slots_offset(DEFAULT_COUNTER_CELLS, DEFAULT_SUBRINGS, DEFAULT_SUBRING_CAPACITY) == 17424384);
    assert!(default_file_size(DEFAULT_CAPACITY) == 21618688);
    assert!(slots_offset(MIN_COUNTER_CELLS, 1, MIN_SUBRING_CAPACITY).is_multiple_of(4096));
    assert!(subring_slots_offset(MIN_COUNTER_CELLS, 3, MIN_SUBRING_CAPACITY, 0).is_multiple_of(128));
    assert!(COUNTERS_OFFSET.is_multiple_of(4096));
    assert!(MAX_PROCESSES <= 1 << OWNER_SLOT_BITS);
    assert!(COUNTER_LANES <= 32 && (COUNTER_LANES as u8) < SHARED_LANE);
    assert!(CAPACITY_ENTRIES.is_power_of_two());
};

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn scope_ids_live_in_the_reserved_bytes_and_leave_every_other_field_alone() {
        let mut r = Record { buffer_id: 7, size: 9, flags: 1, kind: 3, ..Record::default() };
        r.set_scope(0x00ab_cdef);
        assert_eq!(r.scope(), 0x00ab_cdef);
        assert_eq!(r.reserved, [0xef, 0xcd, 0xab]);
        assert_eq!((r.buffer_id, r.size, r.flags, r.kind), (7, 9, 1, 3));
        r.set_scope(u32::MAX);
        assert_eq!(r.scope(), MAX_RESERVED_ID, "clamped to 24 bits");
        let mut s = Record::default();
        s.set_scope_body(42, b"a name longer than the thirty-two bytes a record holds");
        assert_eq!(s.scope_parent(), 42);
        assert_eq!(s.scope_name(), b"a name longer than the thirty-tw");
        assert_eq!(s.pid, 0, "the body stays within the label bytes");
    }

    #[test]
    fn keys_and_owner_words_round_trip_for_any_device_and_kind() {
        for (device, kind, lane) in [(0, 0, 0), (u32::MAX, u8::MAX, SHARED_LANE), (100, 9, 15)] {
            assert_eq!(counter_key_parts(counter_key(device, kind, lane)), (device, kind, lane));
            assert_eq!(capacity_key_parts(capacity_key(device, kind)), (device, kind));
            assert_ne!(capacity_key(device, kind), 0);
        }
        for (entry, generation) in [(0, 0), (MAX_PROCESSES - 1, u32::MAX), (1023, 7)] {
            let owner = cell_owner(entry, generation);
            assert_ne!(owner, 0);
            assert_eq!(owner & CELL_INITIALISING, 0);
            assert_eq!(cell_owner_parts(owner), Some((entry, generation)));
            assert_eq!(cell_owner_parts(owner | CELL_INITIALISING), Some((entry, generation)));
        }
        assert_eq!(cell_owner_parts(0), None);
    }
}
