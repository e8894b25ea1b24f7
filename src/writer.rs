//! The writer side: what a runtime hook calls.
//!
//! The hot path (`alloc`, `free`) is: a plain load and store on each of the
//! two words of this thread's live-counter cell (found through a per-thread
//! cache, see `counters`), then, in the thread's own sub-ring (see
//! `subrings`), one load and one plain store to claim the slot, one clock
//! read, seven word stores and a Release store to publish it. No locked
//! instruction, no line shared with another writer, no system call, no
//! allocation. A thread without a sub-ring writes the shared ring instead
//! (one CAS to claim a slot). Only a full ring, a thread's first event, a
//! (device, kind) new to the thread, or threads beyond the lanes leave the
//! hot path.
//!
//! **A full ring.** A thread whose sub-ring is full, while a consumer is
//! attached and not stalled, waits for it there (`Writer::wait_own`): it
//! sleeps on the sub-ring's futex until the consumer takes records from it
//! (ringing the consumer's doorbell first if it sleeps, see
//! `ring::doorbell`), then claims its next slot there, so its records stay
//! in its sub-ring, in order. With no consumer attached, or when the wait
//! gives up (see [`Writer::wait_for_space`] for when), it writes the shared
//! ring, which when full waits the same way, or drops and counts. A hook
//! inside a hook (a signal handler) never touches the thread's sub-ring:
//! it writes the shared ring.
//!
//! Every record is stamped *after* its slot is claimed: the consumer
//! merges the rings by timestamp and relies on a record's stamp being
//! later than the moment its slot was last seen free.

use std::time::{Duration, Instant};

use crate::buffer::MemtrackBuffer;
use crate::clock::ClockSource;
use crate::counters::{add_own, add_shared, take_lane};
use crate::error::{Error, ErrorKind};
use crate::format::{
    Event, FLAG_ALIAS, FLAG_MORE, LABEL_LEN, MAX_RESERVED_ID, MAX_TEXT_LEN, READER_LOCK_OFFSET, Record,
    SCOPE_NAME_LEN, SHARED_LANE, cell_owner, counter_key,
};
use crate::hook_thread::{HookThread, LaneLease, OwnSubRing, SubRingLease, cache_way, fork_count};
use crate::process::{Registration, own_name};
use crate::ring::{Claim, Full, Owner, RingView};
use crate::shm::Ring;
use crate::sync::{AtomicU32, AtomicU64, Ordering, PAYLOAD_WORDS, compiler_fence};

/// Default time a hook that found the ring full waits for an attached
/// consumer that makes *no progress* before it drops the record
/// (`MEMTRACK_WAIT_US` overrides it; 0 never waits). While the consumer
/// keeps taking records the hook keeps waiting, up to [`MAX_FULL_WAIT`].
/// 100 ms: waiting writers sleep, so a longer wait costs no CPU, and on a
/// 2-core machine shared with compiles (load 5–10) a reader often got no
/// CPU for tens of ms: `scripts/lossless.sh` (2–16 writer threads) lost
/// records in 10 of 12 runs with 3 ms, in 4 of 18 with 20 ms, in none of 20
/// with 200 ms (see docs/PERFORMANCE.md). A stopped reader costs the
/// workload about [`STALL_WAITS`] such waits, then nothing.
pub const DEFAULT_FULL_WAIT: Duration = Duration::from_millis(100);

/// The longest a hook waits for space in all, even while the consumer
/// makes progress: a bound for a writer that keeps losing the slots the
/// consumer frees to other writers. Never reached in the measurements of
/// docs/PERFORMANCE.md. A larger `MEMTRACK_WAIT_US` raises it to that.
pub const MAX_FULL_WAIT: Duration = Duration::from_millis(1000);

/// The longest one futex sleep lasts before the writer looks at the
/// consumer's progress itself: a consumer built before the wait line
/// existed makes progress but never wakes anyone.
const WAIT_SLICE: Duration = Duration::from_micros(500);

/// A process's writer on one ring. Share it between threads by reference.
///
/// A writer belongs to the process that attached it: a forked child should
/// attach its own (the C ABI does so at the child's first event). A child
/// that keeps using its parent's writer is still counted, as its parent:
/// its records carry the parent's pid and entry, and its live counts go to
/// the parent's shared-lane cells (`fetch_add`, never the plain stores of a
/// lane, which would race the parent's), so neither process's counts are
/// corrupted, but the parent's figures include the child's.
///
/// Its lines are its own (`align(128)`, as the file's lines): every hook of
/// every thread reads it, and an allocation beside it written by another
/// thread would cost each hook a cache-line transfer. The few fields
/// threads write ([`WrittenLine`]) have a line of their own too.
#[derive(Debug)]
#[repr(align(128))]
pub struct Writer {
    ring: Ring,
    registration: Registration,
    pid: u32,
    clock: ClockSource,
    full_wait: Duration,
    /// What threads write (on cold paths), away from what hooks read.
    written: WrittenLine,
    /// [`STALL_WAITS`] × `full_wait`, in ring-clock ticks.
    stall_ticks: u64,
    /// Unique in the process (never reused, unlike an address): which
    /// writer a thread's cached lane and cells are of.
    serial: u64,
    /// The owner word of this writer's counter cells.
    cell_owner: u64,
    /// [`fork_count`] at attach: a different count means this is a forked
    /// child using its parent's writer (see the type's docs).
    forks: u64,
    /// Whether threads take sub-rings (see `subrings::WRITES_BY_DEFAULT`).
    subring_writes: std::sync::atomic::AtomicBool,
}

/// The fields of a [`Writer`] that its threads write: waits for space and
/// marks with long labels (cold paths, but any thread's write there would
/// take the line from every hooking thread if the hooks' fields shared it).
#[derive(Debug)]
#[repr(align(128))]
struct WrittenLine {
    /// The consumer's `taken` when a wait for space last timed out (or
    /// `u64::MAX`), and the ring-clock time of that first timeout: while
    /// `taken` has not moved for [`STALL_WAITS`] waits' time, the consumer
    /// is stalled.
    stall_taken: AtomicU64,
    stall_since: AtomicU64,
    /// Ids of this process's marks with long labels (0 unused).
    last_text_id: AtomicU32,
}

// What hooks read and what threads write are on different lines, and a
// `Box<Writer>` shares no line with another allocation.
const _: () = assert!(std::mem::align_of::<Writer>() == 128);
const _: () = assert!(std::mem::align_of::<WrittenLine>() == 128);
const _: () = assert!(std::mem::size_of::<WrittenLine>() == 128);

/// The last [`Writer::serial`] given out.
static LAST_SERIAL: AtomicU64 = AtomicU64::new(0);

/// How many waits' time a consumer may go without taking a record before
/// full-ring hooks stop waiting for it. Not one: a consumer starved of CPU
/// for a moment (more runnable threads than cores) would then cost every
/// record until its next take -- measured with a 3 ms wait, 545 000
/// dropped instead of 16 in `cargo bench --bench hook`; a stopped one
/// (Ctrl-Z on `memtrack watch`) costs the workload at most this many waits
/// (300 ms by default), then nothing.
const STALL_WAITS: u32 = 3;

impl Writer {
    /// Attaches this process to `ring` as a writer named after its comm.
    ///
    /// # Errors
    /// `ProcessTableFull` if every process-table entry is held by a live
    /// process; `Config` if `MEMTRACK_WAIT_US` is invalid.
    pub fn attach(ring: Ring) -> Result<Writer, Error> {
        Writer::attach_named(ring, &own_name())
    }

    /// As [`Writer::attach`], with the name to show for this process.
    ///
    /// # Errors
    /// As [`Writer::attach`].
    pub fn attach_named(ring: Ring, name: &[u8]) -> Result<Writer, Error> {
        let full_wait = full_wait_from_env(ring.path())?;
        let ring_calibration = ring.calibration();
        let clock = ring.clock_source();
        let registration = ring.register_process(name, clock.now())?;
        crate::hook_thread::count_forks();
        let writer = Writer {
            ring,
            registration,
            pid: std::process::id(),
            clock,
            full_wait,
            written: WrittenLine {
                stall_taken: AtomicU64::new(u64::MAX),
                stall_since: AtomicU64::new(0),
                last_text_id: AtomicU32::new(0),
            },
            stall_ticks: ticks_for(&ring_calibration, full_wait * STALL_WAITS),
            serial: LAST_SERIAL.fetch_add(1, Ordering::Relaxed) + 1,
            cell_owner: cell_owner(registration.index, registration.generation),
            forks: fork_count(),
            subring_writes: std::sync::atomic::AtomicBool::new(crate::subrings::WRITES_BY_DEFAULT),
        };
        let mut start = writer.record(Event::ProcessStart);
        start.set_label(name);
        writer.push(&start);
        Ok(writer)
    }

    /// The ring this writer writes to.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Records that `buffer` was allocated.
    #[inline(always)]
    pub fn alloc(&self, buffer: &MemtrackBuffer) {
        self.buffer_event(Event::Alloc, buffer);
    }

    /// Records that `buffer` was freed.
    #[inline(always)]
    pub fn free(&self, buffer: &MemtrackBuffer) {
        self.buffer_event(Event::Free, buffer);
    }

    /// This process's live (bytes, buffers) per (device, kind), from its
    /// own live counters (every lane's cells summed), nonzero ones only,
    /// in (device, kind) order. Counts that found the pool full are not in
    /// it: see [`Writer::untracked`].
    pub fn live(&self) -> Vec<((u32, u8), (i64, i64))> {
        let pool = self.ring.counters();
        let mut usage = std::collections::BTreeMap::<(u32, u8), (i64, i64)>::new();
        for reading in (0..pool.len()).filter_map(|i| pool.read(i)) {
            if (reading.entry, reading.generation) != (self.registration.index, self.registration.generation)
            {
                continue;
            }
            let (device, kind, _) = crate::format::counter_key_parts(reading.key);
            let sum = usage.entry((device, kind)).or_default();
            *sum = (sum.0.wrapping_add(reading.bytes), sum.1.wrapping_add(reading.buffers));
        }
        usage.into_iter().filter(|(_, v)| *v != (0, 0)).collect()
    }

    /// This process's (bytes, buffers, events) that found the counter
    /// pool full: counted here instead of per device and kind.
    pub fn untracked(&self) -> (i64, i64, u64) {
        let entry = self.ring.process_entry(self.registration.index);
        (
            entry.untracked_bytes.load(Ordering::Relaxed) as i64,
            entry.untracked_buffers.load(Ordering::Relaxed) as i64,
            entry.untracked_events.load(Ordering::Relaxed),
        )
    }

    /// Records that `buffer` was allocated under scope node `scope` of this
    /// process (0: none; see [`Writer::define_scope`]).
    #[inline]
    pub fn alloc_in_scope(&self, buffer: &MemtrackBuffer, scope: u32) {
        self.buffer_event_with(Event::Alloc, buffer, |_| scope);
    }

    /// As [`Writer::alloc_in_scope`], the scope read from this thread's
    /// hook state by `scope` (the C ABI's: one thread-local access for both).
    #[inline(always)]
    pub(crate) fn alloc_with_scope(&self, buffer: &MemtrackBuffer, scope: impl FnOnce(&HookThread) -> u32) {
        self.buffer_event_with(Event::Alloc, buffer, |t| t.map_or(0, scope));
    }

    /// Records a phase marker. The first [`LABEL_LEN`] bytes of `label`
    /// travel in the MARK record, the rest (up to [`MAX_TEXT_LEN`] in all)
    /// in TEXT records after it.
    pub fn mark(&self, label: &[u8]) {
        let label = &label[..label.len().min(MAX_TEXT_LEN)];
        let mut record = self.record(Event::Mark);
        record.set_label(label);
        if label.len() <= LABEL_LEN {
            return self.push(&record);
        }
        // Relaxed: only uniqueness matters; a wrapped id (after 16 million
        // long labels) may join text to the wrong mark, never corrupt.
        let id = self.written.last_text_id.fetch_add(1, Ordering::Relaxed) % MAX_RESERVED_ID + 1;
        record.set_scope(id);
        record.flags = FLAG_MORE;
        self.push(&record);
        self.push_text(Event::Mark, id, &label[LABEL_LEN..]);
    }

    /// Defines scope node `id` of this process: a child of node `parent`
    /// (0: top level) named `name` (cut to [`MAX_TEXT_LEN`] bytes). Ids are
    /// the caller's to choose (the C ABI interns them, one per node).
    pub fn define_scope(&self, id: u32, parent: u32, name: &[u8]) {
        let name = &name[..name.len().min(MAX_TEXT_LEN)];
        let mut record = self.record(Event::Scope);
        record.set_scope(id);
        record.set_scope_body(parent, name);
        if name.len() <= SCOPE_NAME_LEN {
            return self.push(&record);
        }
        record.flags = FLAG_MORE;
        self.push(&record);
        self.push_text(Event::Scope, id, &name[SCOPE_NAME_LEN..]);
    }

    /// The TEXT records that continue the text of record `id` of `event`.
    fn push_text(&self, event: Event, id: u32, rest: &[u8]) {
        for (n, chunk) in rest.chunks(LABEL_LEN).enumerate() {
            let mut text = self.record(Event::Text);
            text.kind = event as u8;
            text.set_scope(id);
            text.flags = (n + 1) as u8;
            text.set_label(chunk);
            self.push(&text);
        }
    }

    /// Records the total memory of (device, kind), for used/total views.
    pub fn set_capacity(&self, device_id: u32, kind: u8, bytes: u64) {
        if !self.ring.capacities().set(device_id, kind, bytes) {
            self.ring.header().control.loss.untracked_capacities.fetch_add(1, Ordering::Relaxed);
        }
        let mut record = self.record(Event::Capacity);
        (record.device_id, record.kind, record.size) = (device_id, kind, bytes);
        self.push(&record);
    }

    /// Marks this process exited in the table and writes its exit record.
    /// Events after this are still recorded; the C ABI stops them.
    pub fn shutdown(&self) {
        self.push(&self.record(Event::ProcessExit));
        self.ring.mark_exited(self.registration.index, self.clock.now());
    }

    #[inline(always)]
    fn buffer_event(&self, event: Event, b: &MemtrackBuffer) {
        self.buffer_event_with(event, b, |_| 0);
    }

    #[inline(always)]
    fn buffer_event_with(
        &self,
        event: Event,
        b: &MemtrackBuffer,
        scope: impl FnOnce(Option<&HookThread>) -> u32,
    ) {
        let bytes = if b.flags & FLAG_ALIAS != 0 { 0 } else { b.size as i64 };
        let (bytes, buffers) = if event == Event::Alloc { (bytes, 1) } else { (bytes.wrapping_neg(), -1) };
        // `hook_thread::with`, spelled out: its closure was compiled out of
        // line, with its captures on the stack.
        // SAFETY: `t` is used on this thread, within this call.
        match unsafe { crate::hook_thread::current() } {
            Some(t) if !t.in_hook.get() => {
                t.in_hook.set(true);
                // As in `with`: only the compiler could move these stores.
                compiler_fence(Ordering::SeqCst);
                self.buffer_event_in(Some(t), event, b, bytes, buffers, scope);
                compiler_fence(Ordering::SeqCst);
                t.in_hook.set(false);
            }
            // Torn down, or a hook inside a hook (see `with`).
            _ => self.buffer_event_in(None, event, b, bytes, buffers, scope),
        }
    }

    /// [`Writer::buffer_event_with`] for the thread state `t` (`None`: a
    /// thread being torn down, or a hook inside a hook).
    #[inline(always)]
    fn buffer_event_in(
        &self,
        t: Option<&HookThread>,
        event: Event,
        b: &MemtrackBuffer,
        bytes: i64,
        buffers: i64,
        scope: impl FnOnce(Option<&HookThread>) -> u32,
    ) {
        // The hot path: a thread already hooking for this writer (one
        // serial check for the counter, the scope and the sub-ring),
        // writing its own sub-ring. The payload goes from registers
        // straight to the slot: no 64-byte `Record` is built first.
        if let Some(t) = t
            && t.writer.get() == self.serial
        {
            self.count_current(t, b.device_id, b.kind, bytes, buffers);
            let scope = scope(Some(t));
            if let Some(claim) = self.claim_own(t) {
                let payload = self.buffer_payload(event, b, scope);
                return self.stamp_and_publish_words(claim, payload);
            }
            if t.subring.get().is_null() {
                self.count_down_to_retry(t);
            } else if let Some(claim) = self.wait_own(t) {
                let payload = self.buffer_payload(event, b, scope);
                return self.stamp_and_publish_words(claim, payload);
            }
            return self.push_shared(&self.buffer_record(event, b, scope));
        }
        // By value: a reference would make the hot path keep `b` in memory.
        self.buffer_event_cold(t, event, *b, bytes, buffers, scope);
    }

    /// A thread's first event for this writer (or one being torn down):
    /// adopt the writer, count, and write the record wherever it now goes.
    #[cold]
    #[inline(never)]
    fn buffer_event_cold(
        &self,
        thread: Option<&HookThread>,
        event: Event,
        b: MemtrackBuffer,
        bytes: i64,
        buffers: i64,
        scope: impl FnOnce(Option<&HookThread>) -> u32,
    ) {
        self.count_cold(thread, b.device_id, b.kind, bytes, buffers);
        let scope = scope(thread);
        self.push_from(thread, &self.buffer_record(event, &b, scope));
    }

    /// The record of `event` on `b` under scope node `scope` (0: none),
    /// not yet stamped.
    #[inline(always)]
    fn buffer_record(&self, event: Event, b: &MemtrackBuffer, scope: u32) -> Record {
        let mut record = Record {
            buffer_id: b.buffer_id,
            parent_id: b.parent_id,
            address: b.address,
            size: b.size,
            device_id: b.device_id,
            kind: b.kind,
            flags: b.flags,
            ..self.record(event)
        };
        if scope != 0 {
            record.set_scope(scope);
        }
        record
    }

    /// `buffer_record(event, b, scope).payload()`, its timestamp word 0,
    /// built in registers: each word from the fields it holds, placed as
    /// `Record`'s layout puts them (little-endian: asserted at build time,
    /// checked against `payload()` by a test).
    #[inline(always)]
    fn buffer_payload(&self, event: Event, b: &MemtrackBuffer, scope: u32) -> [u64; PAYLOAD_WORDS] {
        const _: () = assert!(cfg!(target_endian = "little"), "buffer_payload packs little-endian words");
        // Bytes 48..56: device_id, pid.
        let ids = u64::from(b.device_id) | u64::from(self.pid) << 32;
        // Bytes 56..64: process_slot (2), event, kind, flags, then the
        // scope id capped as `Record::set_scope` caps it (3).
        let codes = u64::from(self.registration.index as u16)
            | u64::from(event as u8) << 16
            | u64::from(b.kind) << 24
            | u64::from(b.flags) << 32
            | u64::from(scope.min(MAX_RESERVED_ID)) << 40;
        [0, b.buffer_id, b.parent_id, b.address, b.size, ids, codes]
    }

    /// Adds (bytes, buffers) to the calling thread's cell of (device,
    /// kind), for a thread whose state is this writer's (the caller checked
    /// its serial): on the hot path, the cell cached in the thread's state,
    /// updated with plain stores (its lane has no other writer).
    #[inline(always)]
    fn count_current(&self, t: &HookThread, device: u32, kind: u8, bytes: i64, buffers: i64) {
        let (way, tag) = cache_way(device, kind);
        let (cached, cell) = t.cache[way].get();
        if cached == tag {
            // SAFETY: cached by this writer (its serial matches) from its
            // own pool, which lies in its mapping, alive while `self` is.
            let cell = unsafe { &*cell };
            if t.lane.get() == SHARED_LANE {
                add_shared(cell, bytes, buffers);
            } else {
                add_own(cell, bytes, buffers);
            }
            return;
        }
        self.count_cold(Some(t), device, kind, bytes, buffers);
    }

    /// A thread's first event for this writer, or a (device, kind) not in
    /// its cache: take a lane, find or claim the cell, cache it; with no
    /// cell to be had, count the event as untracked.
    #[cold]
    #[inline(never)]
    fn count_cold(&self, thread: Option<&HookThread>, device: u32, kind: u8, bytes: i64, buffers: i64) {
        let lane = match thread {
            Some(t) => {
                if t.writer.get() != self.serial {
                    self.adopt(t);
                }
                t.lane.get()
            }
            None => SHARED_LANE, // The thread is exiting: no state to keep.
        };
        let pool = self.ring.counters();
        match pool.find_or_claim(self.cell_owner, counter_key(device, kind, lane)) {
            Some(index) => {
                if let Some(t) = thread {
                    let (way, tag) = cache_way(device, kind);
                    t.cache[way].set((tag, std::ptr::from_ref(pool.cell(index))));
                }
                if lane == SHARED_LANE {
                    add_shared(pool.cell(index), bytes, buffers);
                } else {
                    add_own(pool.cell(index), bytes, buffers);
                }
            }
            None => {
                // No cell of our own lane: the process's shared-lane cell of
                // (device, kind), if it has or can claim one, keeps the count
                // exact per device (an atomic add: other threads share it).
                // Not cached: this thread's hot path uses plain stores.
                if lane != SHARED_LANE
                    && let Some(index) =
                        pool.find_or_claim(self.cell_owner, counter_key(device, kind, SHARED_LANE))
                {
                    return add_shared(pool.cell(index), bytes, buffers);
                }
                // Full pool: visible, never silent (status shows it).
                let entry = self.ring.process_entry(self.registration.index);
                entry.untracked_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                entry.untracked_buffers.fetch_add(buffers as u64, Ordering::Relaxed);
                entry.untracked_events.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Makes `thread` hook for this writer: a lane of its own if one is
    /// free, else the shared lane -- always the shared lane in a forked
    /// child using its parent's writer (a lane there would be taken from
    /// the parent's entry, and this process could not give it back).
    fn adopt(&self, thread: &HookThread) {
        let Registration { index, generation, .. } = self.registration;
        let forked = fork_count() != self.forks;
        thread.switch_writer(
            self.serial,
            || {
                if forked {
                    return None;
                }
                take_lane(&self.ring.process_entry(index).lanes, generation).map(|lane| LaneLease {
                    word: self.ring.lane_word(index),
                    generation,
                    lane,
                    forks: self.forks,
                })
            },
            || if forked { None } else { self.take_subring() },
        );
    }

    /// Whether threads that hook for this writer from now on take a
    /// sub-ring (those holding one keep it): on by default
    /// (`subrings::WRITES_BY_DEFAULT`); tests of the shared ring's own
    /// paths turn it off.
    #[doc(hidden)]
    pub fn use_subrings(&self, on: bool) {
        self.subring_writes.store(on, Ordering::Relaxed);
    }

    /// A sub-ring for the calling thread, if one is free (or stale) and
    /// sub-ring writes are on ([`Writer::use_subrings`]).
    /// Never in a forked child using its parent's writer: the lease would
    /// name the parent's entry, whose lock the child's death does not drop.
    fn take_subring(&self) -> Option<OwnSubRing> {
        if !self.subring_writes.load(Ordering::Relaxed) || fork_count() != self.forks {
            return None;
        }
        // Relaxed: only spreads threads' first CAS over the sub-rings.
        static NEXT_START: AtomicU64 = AtomicU64::new(0);
        let start = NEXT_START.fetch_add(1, Ordering::Relaxed) as usize;
        let leased = self.ring.lease_subring(self.registration, start)?;
        Some(OwnSubRing {
            lease: SubRingLease {
                header: self.ring.subring_word(leased.index),
                lease: leased.lease,
                forks: self.forks,
            },
            slots: self.ring.subring_slots(leased.index).as_ptr(),
            lap_shift: self.ring.subring_capacity().trailing_zeros(),
            next_ticket: leased.next_ticket,
        })
    }

    /// A record of `event` of this process, not yet stamped: `push`
    /// stamps it once its slot is claimed.
    #[inline(always)]
    fn record(&self, event: Event) -> Record {
        Record {
            pid: self.pid,
            process_slot: self.registration.index as u16,
            event: event as u8,
            ..Record::default()
        }
    }

    /// Writes `record` from the calling thread (the cold events: marks,
    /// scopes, capacities, process start and exit).
    fn push(&self, record: &Record) {
        crate::hook_thread::with(|t| self.push_from(t, record));
    }

    /// Writes `record` for `thread` (`None`: a thread being torn down, or
    /// a hook inside a hook): to its sub-ring if it holds one for this
    /// writer with a free slot (or one that frees while it waits, see
    /// [`Writer::wait_own`]), else to the shared ring.
    #[inline(always)]
    fn push_from(&self, thread: Option<&HookThread>, record: &Record) {
        if let Some(t) = thread
            && t.writer.get() == self.serial
        {
            if let Some(claim) = self.claim_own(t) {
                return self.stamp_and_publish(claim, record);
            }
            if t.subring.get().is_null() {
                self.count_down_to_retry(t);
            } else if let Some(claim) = self.wait_own(t) {
                return self.stamp_and_publish(claim, record);
            }
        }
        self.push_shared(record);
    }

    /// Claims the next slot of `thread`'s sub-ring: `None` if it has none
    /// or it is full (its consumer has not taken the record a lap before).
    #[inline(always)]
    fn claim_own(&self, thread: &HookThread) -> Option<Claim<'_>> {
        let view = self.own_view(thread)?;
        let ticket = thread.subring_ticket.get();
        let claim = view.claim_own(self.registration.owner, ticket).ok()?;
        // Before publishing: a signal handler that hooks on this thread
        // between here and the publish takes the next ticket, not ours.
        thread.subring_ticket.set(ticket.wrapping_add(1));
        Some(claim)
    }

    /// The protocol over `thread`'s sub-ring, `None` if it holds none. The
    /// caller checked that `thread` hooks for this writer (its serial).
    #[inline(always)]
    fn own_view(&self, thread: &HookThread) -> Option<RingView<'_>> {
        let header = thread.subring.get();
        if header.is_null() {
            return None;
        }
        let shift = thread.subring_shift.get();
        // SAFETY: the thread's sub-ring fields were set by this writer
        // (its serial matches, checked by the caller) from its own mapping,
        // which lives as long as `self`: `header` points at a sub-ring
        // header and `subring_slots` at its `1 << shift` slots, all atomics.
        Some(unsafe {
            RingView::with_shift(
                &(*header).control,
                std::slice::from_raw_parts(thread.subring_slots.get(), 1 << shift),
                shift,
            )
        })
    }

    /// `thread`'s sub-ring is full. With a consumer attached (the shared
    /// header says so) and not stalled, wait for it to take records there
    /// ([`Writer::wait_for_space`], claiming at the thread's next ticket);
    /// `None` when there is none, or the wait gives up: the caller then
    /// writes the shared ring, which itself waits or drops.
    ///
    /// Why wait rather than spill at once: a thread that spills makes the
    /// consumer merge two busy rings (peek, keys, merge: its slow path), so
    /// it falls further behind and the spill feeds itself (`memtrack bench`,
    /// 1 thread, 2048-slot sub-rings: 1.71 M of 2.07 M records spilled).
    /// Waiting keeps the thread's records in its sub-ring, in order, and
    /// the consumer on its fast path (`Sources::take_single`).
    ///
    /// Nor does it wait while the consumer has taken nothing from this
    /// sub-ring since the thread's last wait there gave up without it
    /// taking anything there (`HookThread::subring_stuck_at`): a consumer
    /// that takes from other rings and never from this one (stopped at a
    /// corrupt slot here) keeps the stall clock, which sums every ring,
    /// from ever stopping the waits, and the thread would otherwise wait
    /// out `full_wait` at every hook, for good.
    #[cold]
    #[inline(never)]
    fn wait_own(&self, thread: &HookThread) -> Option<Claim<'_>> {
        let view = self.own_view(thread)?;
        if self.full_wait.is_zero() || !self.ring.view().consumer_attached() || self.consumer_stalled() {
            return None;
        }
        let taken = view.progress().taken;
        if thread.subring_stuck_at.get() == taken {
            return None;
        }
        // No spin before sleeping: a bounded spin (2 or 8 µs of looks at
        // the slot) won nothing with one thread (the wait is rare with
        // 8192-slot sub-rings) and cost CPU with two threads beside the
        // reader on 2 cores, where the sleep hands the core to the reader
        // (docs/PERFORMANCE.md, "A full sub-ring waits").
        let claim = self.wait_for_space(view, || self.claim_own(thread).ok_or(Full));
        if claim.is_none() && view.progress().taken == taken {
            thread.subring_stuck_at.set(taken);
        }
        claim
    }

    /// Stamps `record` with the time now (after its claim) and publishes it.
    #[inline(always)]
    fn stamp_and_publish(&self, claim: Claim<'_>, record: &Record) {
        self.stamp_and_publish_words(claim, record.payload());
    }

    /// Stamps `payload` (its word 0, the record's timestamp) with the time
    /// now (after its claim) and publishes it.
    #[inline(always)]
    fn stamp_and_publish_words(&self, claim: Claim<'_>, mut payload: [u64; PAYLOAD_WORDS]) {
        payload[0] = self.clock.now(); // Word 1 of the record: its timestamp.
        claim.publish(&payload);
    }

    /// A thread without a sub-ring, on the shared ring: after
    /// `subrings::RETRY_HOOKS` of these, it looks for one again.
    #[inline(always)]
    fn count_down_to_retry(&self, thread: &HookThread) {
        let left = thread.subring_retry.get();
        if left > 1 {
            thread.subring_retry.set(left - 1);
        } else {
            self.retry_subring(thread);
        }
    }

    #[cold]
    #[inline(never)]
    fn retry_subring(&self, thread: &HookThread) {
        thread.retry_subring(|| self.take_subring());
    }

    /// Writes `record` to the shared ring.
    #[inline(always)]
    fn push_shared(&self, record: &Record) {
        match self.ring.view().claim(self.registration.owner) {
            Ok(claim) => self.stamp_and_publish(claim, record),
            Err(_) => self.push_full(record),
        }
    }

    /// The shared ring was full. With a consumer attached and not stalled,
    /// wait for it to free a slot (see [`Writer::wait_for_space`]); with
    /// none, or when the wait gives up, drop and count.
    #[cold]
    #[inline(never)]
    fn push_full(&self, record: &Record) {
        let view = self.ring.view();
        if view.consumer_attached()
            && !self.consumer_stalled()
            && let Some(claim) = self.wait_for_space(view, || view.claim(self.registration.owner))
        {
            return self.stamp_and_publish(claim, record);
        }
        view.count_drop();
        self.ring.process_entry(self.registration.index).dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits for a free slot in `view` (the shared ring, or the calling
    /// thread's sub-ring), taken with `claim` (`RingView::claim`, or
    /// `claim_own` at the thread's next ticket), asleep on the ring's futex
    /// (woken by the consumer after each batch it takes there; the
    /// consumer's doorbell is rung first if it sleeps), for as long as the
    /// consumer makes progress in `view`: gives up after `full_wait`
    /// without progress (a consumer stopped or starved of CPU), at once
    /// when the consumer is found detached or dead, and after
    /// [`MAX_FULL_WAIT`] in all (this writer kept losing the freed slots to
    /// others).
    fn wait_for_space<'w>(
        &'w self,
        view: RingView<'w>,
        mut claim: impl FnMut() -> Result<Claim<'w>, Full>,
    ) -> Option<Claim<'w>> {
        let shared = self.ring.view();
        let consumer = shared.consumer_lines(Some(&self.ring.header().doorbell));
        let started = Instant::now();
        let mut taken = view.progress().taken;
        let mut progressed = started;
        let limit = MAX_FULL_WAIT.max(self.full_wait);
        loop {
            let now = Instant::now();
            let budget =
                self.full_wait.saturating_sub(now - progressed).min(limit.saturating_sub(now - started));
            if budget.is_zero() {
                break;
            }
            if let Ok(claim) = view.wait_for_space(consumer, budget.min(WAIT_SLICE), &mut claim) {
                return Some(claim);
            }
            if !shared.consumer_attached() {
                return None; // Detached: it woke us on its way out.
            }
            let now_taken = view.progress().taken;
            if now_taken != taken {
                (taken, progressed) = (now_taken, Instant::now());
            } else if !self.ring.is_locked(READER_LOCK_OFFSET) {
                // A slice without progress: if the consumer is dead (the
                // kernel dropped its lock), say so, so that no writer waits
                // for it. One system call, and only on this slow path.
                let reader_pid = &self.ring.header().control.reader.reader_pid;
                let pid = reader_pid.load(Ordering::Relaxed);
                let _ = reader_pid.compare_exchange(pid, 0, Ordering::Relaxed, Ordering::Relaxed);
                return None;
            }
        }
        if progressed.elapsed() >= self.full_wait {
            // No progress for `full_wait`: start (or continue) the stall clock.
            let taken = self.consumer_taken();
            if self.written.stall_taken.swap(taken, Ordering::Relaxed) != taken {
                self.written.stall_since.store(self.clock.now(), Ordering::Relaxed);
            }
        }
        None
    }

    /// Whether the consumer has taken nothing, in any ring, for
    /// [`STALL_WAITS`] waits' time since a wait timed out.
    ///
    /// The stall clock is the consumer's, not a ring's: it compares the
    /// sum of every ring's `taken` ([`Writer::consumer_taken`]), never one
    /// ring's with another's (a wait on a sub-ring and one on the shared
    /// ring feed the same clock). A consumer taking from any ring is not
    /// stalled; one that takes from none is stalled for every thread,
    /// whichever ring it waits in, so a stopped consumer costs the
    /// workload [`STALL_WAITS`] waits in all, as before sub-rings.
    ///
    /// Cheap unless the clock runs: no ring is read while no wait has
    /// timed out since the consumer last made progress, nor before the
    /// stall time has passed. Relaxed throughout: a heuristic that decides
    /// only whether to wait; a stale pair of values costs at most one wait
    /// more or less.
    fn consumer_stalled(&self) -> bool {
        let stalled_at = self.written.stall_taken.load(Ordering::Relaxed);
        if stalled_at == u64::MAX
            || self.clock.now().wrapping_sub(self.written.stall_since.load(Ordering::Relaxed))
                < self.stall_ticks
        {
            return false;
        }
        if self.consumer_taken() == stalled_at {
            return true;
        }
        // It took records since: stop the clock (until a wait times out).
        let _ = self.written.stall_taken.compare_exchange(
            stalled_at,
            u64::MAX,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        false
    }

    /// Records the consumer has taken from every ring: one progress read
    /// per ring (the stall clock's cold path only).
    fn consumer_taken(&self) -> u64 {
        crate::consumer::total_progress(&self.ring).taken
    }

    /// Claims a slot and never publishes it: what a writer killed between
    /// claim and publish leaves behind. For crash tests only.
    #[doc(hidden)]
    pub fn claim_without_publishing(&self) -> bool {
        self.ring.view().claim(self.registration.owner).map(drop).is_ok()
    }

    /// As [`Writer::claim_without_publishing`], in the calling thread's
    /// sub-ring (taking one first, as a hook would): false if it has none
    /// or it is full. For crash tests only.
    #[doc(hidden)]
    pub fn claim_own_without_publishing(&self) -> bool {
        crate::hook_thread::with(|t| {
            let Some(t) = t else { return false };
            if t.writer.get() != self.serial {
                self.adopt(t);
            }
            self.claim_own(t).map(drop).is_some()
        })
    }

    /// Which sub-ring the calling thread writes for this writer, if any
    /// (for tests: a thread takes one at its first buffer event).
    #[doc(hidden)]
    pub fn own_subring(&self) -> Option<usize> {
        crate::hook_thread::with(|t| {
            let t = t.filter(|t| t.writer.get() == self.serial)?;
            let header = t.subring.get();
            (0..self.ring.subring_count()).find(|&i| std::ptr::eq(self.ring.subring_header(i), header))
        })
    }

    /// Replaces the wait for space that `MEMTRACK_WAIT_US` set (0: never
    /// wait: a full sub-ring spills into the shared ring at once, a full
    /// shared ring drops). For benches and tests whose consumer drains
    /// only between rounds.
    #[doc(hidden)]
    pub fn set_full_wait(&mut self, wait: Duration) {
        self.full_wait = wait;
        self.stall_ticks = ticks_for(&self.ring.calibration(), wait * STALL_WAITS);
    }

    /// The owner this writer's claims carry.
    pub fn owner(&self) -> Owner {
        self.registration.owner
    }
}

/// `duration` in ticks of the ring clock.
fn ticks_for(calibration: &crate::clock::Calibration, duration: Duration) -> u64 {
    (duration.as_nanos() * calibration.ticks_per_second as u128 / 1_000_000_000).min(u64::MAX as u128) as u64
}

fn full_wait_from_env(path: &std::path::Path) -> Result<Duration, Error> {
    let Some(value) = std::env::var_os("MEMTRACK_WAIT_US") else { return Ok(DEFAULT_FULL_WAIT) };
    let text = value.to_string_lossy();
    match text.trim().parse::<u64>() {
        Ok(us) if us <= 1_000_000 => Ok(Duration::from_micros(us)),
        _ => Err(Error::new(
            path,
            ErrorKind::Config(format!(
                "MEMTRACK_WAIT_US={text:?} is not a number of microseconds up to 1000000"
            )),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::Consumer;
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
        assert_eq!(
            buffers_in(ring.subring_view(subring)),
            [1],
            "the sub-ring holds the parent's record only"
        );
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
        let writer = Writer::attach(
            Ring::create(&path, RingOptions { capacity: 16, ..RingOptions::default() }).unwrap(),
        )
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
        let mut writer = Writer::attach(
            Ring::create(&path, RingOptions { capacity: 16, ..RingOptions::default() }).unwrap(),
        )
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
        let options =
            RingOptions { capacity: 64, subrings: 1, subring_capacity: 256, ..RingOptions::default() };
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
        let mut writer = Writer::attach(
            Ring::create(&path, RingOptions { capacity: 16, ..RingOptions::default() }).unwrap(),
        )
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
}
