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

mod counting;
mod full_ring;

use std::time::Duration;

use crate::buffer::MemtrackBuffer;
use crate::clock::ClockSource;
use crate::counters::take_lane;
use crate::error::Error;
use crate::format::{
    Event, FLAG_ALIAS, FLAG_MORE, LABEL_LEN, MAX_RESERVED_ID, MAX_TEXT_LEN, Record, SCOPE_NAME_LEN,
    cell_owner,
};
use crate::hook_thread::{HookThread, LaneLease, OwnSubRing, SubRingLease, fork_count};
use crate::process::{Registration, own_name};
use crate::ring::{Claim, Owner, RingView};
use crate::shm::Ring;
use crate::sync::{AtomicU32, AtomicU64, Ordering, PAYLOAD_WORDS, compiler_fence};
pub use full_ring::DEFAULT_FULL_WAIT;
use full_ring::{STALL_WAITS, full_wait_from_env, ticks_for};

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

#[cfg(test)]
mod tests;
