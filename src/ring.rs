//! The ring protocol: many writer threads in many processes, one consumer.
//!
//! The slots form a bounded MPSC queue after Dmitry Vyukov's bounded MPMC
//! queue (as in crossbeam's `ArrayQueue`): every slot has a state word that
//! says for which *lap* it is ready, so the ring needs no shared head/tail
//! comparison on the hot path. It differs from that queue in three ways,
//! each needed because writers are untrusted processes that may die:
//!
//! 1. **A claim names its owner.** A writer claims ticket `t` with one CAS
//!    on slot `t`'s state word, from `EMPTY(lap)` to `CLAIMED(lap, owner)`,
//!    where the owner is a process-table index and generation. A writer
//!    killed between claim and publish therefore leaves a slot whose owner
//!    the consumer can look up, find dead, and reclaim (counting it lost).
//!    (Perfetto's shared-ring v2 makes the same choice: every hand-off is
//!    one CAS on one state word.)
//! 2. **The tail is only a hint.** Because the claim is the slot CAS, the
//!    tail word is advanced with a plain store after it and may lag or even
//!    step back; writers probe forward from it past claimed slots. The hint
//!    is never ahead of the first unclaimed ticket, so tickets are claimed
//!    without holes and in an order consistent with happens-before: a
//!    record's ticket is larger than that of any record whose claim happened
//!    before it (so one buffer's events are delivered in order).
//! 3. **The consumer's progress is crash-atomic.** It is double-buffered in
//!    the header (see [`Progress`]); a consumer killed mid-batch costs the
//!    records it had taken but not handed on, and its successor counts them.
//!
//! State word layout (u64): `lap:32 | owner:30 | phase:2`, where the lap of
//! ticket `t` is `t >> log2(capacity)` (wrapping at 2^32 laps; only
//! neighbouring laps are ever compared) and owner is `slot:10 | generation:20`.
//!
//! Accounting invariant (checked by the loom models and the stress tests):
//! every attempted record is exactly one of delivered, dropped (counted by
//! its writer when the ring is full) or lost (a dead writer's claim, or a
//! dead consumer's untaken batch, counted by the consumer).
//!
//! **Waiting for space.** A writer that finds the ring full while a
//! consumer is attached may wait for it ([`RingView::wait_for_space`]), on
//! a futex in the shared file rather than spinning, so that it leaves the
//! CPU to the consumer. The handshake is Dekker's: the writer registers in
//! `waiters`, issues a SeqCst fence and looks for a slot (and for the
//! consumer) once more before it sleeps; the consumer frees slots, issues a
//! SeqCst fence and looks at `waiters` ([`RingView::wake_writers`]). The
//! fences guarantee that at least one side sees the other: either the
//! writer finds the freed slot, or the consumer finds the writer registered
//! and wakes it. The writer read the futex word *before* registering and the
//! consumer changes it before waking, so a wake-up that comes between the
//! writer's last look and its sleep makes the kernel refuse the sleep: no
//! wake-up is lost. With no writer registered, the consumer's cost is the
//! fence and one load per batch, and no system call; a writer that finds a
//! free slot never comes here. Every sleep has a timeout, because a consumer
//! killed or stopped wakes no one (see `writer` for the bounds).
//!
//! The same wait serves a sub-ring (format 3) whose one writer finds it
//! full: it registers on the sub-ring's own wait line and retries its own
//! claim (`claim_own` at its next ticket) instead of `claim`; whether a
//! consumer is attached is read from the shared ring's control (a
//! sub-ring's `reader_pid` is never set). Before it sleeps, a writer rings
//! the consumer's doorbell if the consumer sleeps ([`doorbell`]).
//!
//! This module owns no memory: it works over a [`RingControl`] and slots
//! that live in the shared file, or on the heap under loom.

use crate::format::{
    DoorbellLine, OWNER_GENERATION_BITS, OWNER_SLOT_BITS, ProgressCopy, ReaderLine, Record, RingControl, Slot,
};
use std::time::Duration;

use crate::sync::{Ordering, PAYLOAD_WORDS, compiler_fence, fence, prefetch, wait_hint};

const GENERATION_MASK: u32 = (1 << OWNER_GENERATION_BITS) - 1;

/// Who claimed a slot: a process-table entry and that entry's generation,
/// so that a new process in the same entry is not mistaken for the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Process-table index.
    pub slot: u16,
    /// Low 20 bits of the entry's generation.
    pub generation: u32,
}

impl Owner {
    /// The owner for table entry `slot` at `generation` (truncated to 20 bits).
    pub fn new(slot: u16, generation: u32) -> Owner {
        debug_assert!((slot as u32) < 1 << OWNER_SLOT_BITS);
        Owner { slot, generation: generation & GENERATION_MASK }
    }

    fn encode(self) -> u32 {
        (self.slot as u32) << OWNER_GENERATION_BITS | self.generation
    }

    fn decode(bits: u32) -> Owner {
        Owner { slot: (bits >> OWNER_GENERATION_BITS) as u16, generation: bits & GENERATION_MASK }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the ticket of this lap.
    Empty,
    /// A writer holds it and is filling the payload.
    Claimed,
    /// Published; waiting for the consumer.
    Full,
    /// Not a phase the protocol writes: the file is corrupt.
    Invalid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotState {
    lap: u32,
    owner: u32,
    phase: Phase,
}

impl SlotState {
    fn new(lap: u32, phase: Phase, owner: Owner) -> SlotState {
        SlotState { lap, owner: owner.encode(), phase }
    }

    fn empty(lap: u32) -> SlotState {
        SlotState { lap, owner: 0, phase: Phase::Empty }
    }

    fn encode(self) -> u64 {
        let phase = match self.phase {
            Phase::Empty => 0,
            Phase::Claimed => 1,
            Phase::Full => 2,
            Phase::Invalid => 3,
        };
        (self.lap as u64) << 32 | (self.owner as u64) << 2 | phase
    }

    fn decode(word: u64) -> SlotState {
        let phase = match word & 3 {
            0 => Phase::Empty,
            1 => Phase::Claimed,
            2 => Phase::Full,
            _ => Phase::Invalid,
        };
        SlotState { lap: (word >> 32) as u32, owner: (word as u32) >> 2, phase }
    }
}

/// How many slots ahead of the one it reads the consumer prefetches.
const PREFETCH_DISTANCE: u64 = 16;

/// The ring had no free slot for the next ticket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Full;

/// A slot a writer claimed and must publish.
///
/// Dropping a claim without publishing it models a writer that died: the
/// slot stays claimed until the consumer finds its owner dead.
#[must_use = "a claimed slot blocks the consumer until it is published"]
pub(crate) struct Claim<'a> {
    slot: &'a Slot,
    published: SlotState,
    ticket: u64,
}

impl Claim<'_> {
    /// The claimed ticket.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn ticket(&self) -> u64 {
        self.ticket
    }

    /// Fills the slot and hands it to the consumer.
    #[inline(always)]
    pub(crate) fn publish(self, payload: &[u64; PAYLOAD_WORDS]) {
        self.slot.payload.store(payload);
        // Release: orders the payload stores before the state; pairs with
        // the Acquire load in `RingView::take`.
        self.slot.state.store(self.published.encode(), Ordering::Release);
    }
}

/// The consumer's position and totals; see the module doc, point 3.
///
/// Invariant: `committed <= taken`, and every ticket below `committed` is
/// counted in exactly one of `delivered`, `lost_writer_died` and
/// `lost_reader_died`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Tickets below this were taken out of the ring.
    pub taken: u64,
    /// Tickets below this were handed on (or counted lost).
    pub committed: u64,
    /// Records handed on.
    pub delivered: u64,
    /// Claims reclaimed from writers that died before publishing.
    pub lost_writer_died: u64,
    /// Records a consumer took but died before handing on.
    pub lost_reader_died: u64,
}

/// What one `take` found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    /// Records appended to the output.
    pub records: usize,
    /// Dead writers' claims skipped (and counted at commit).
    pub lost: usize,
}

/// What one [`RingView::read_run`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Run {
    /// Tickets read: records and dead claims.
    pub tickets: u64,
    /// Of which records appended to the output, and dead claims.
    pub taken: Taken,
    /// Whether a record stamped after the limit ended the run.
    pub stamp_ended: bool,
}

/// One slot as the consumer finds it (`RingView::look`).
enum Seen<'a> {
    /// Empty, or not yet claimed for the ticket's lap: the frontier.
    Unclaimed,
    /// Claimed by this owner, not yet published.
    Claimed(Owner),
    /// Published: the payload is complete.
    Full(&'a Slot),
    /// A state the protocol never writes.
    Corrupt,
}

/// What ended a [`RingView::peek`]: the state of the first ticket it did
/// not report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Frontier {
    /// Not yet claimed for its lap: every later record of this ring will be
    /// claimed after the look.
    Unclaimed,
    /// Claimed by a writer not found dead: it is still filling the slot.
    Claimed,
    /// The peek stopped after `max` tickets without looking further.
    Limit,
    /// A state the protocol never writes (a corrupt file): the consumer
    /// stops there, as `take` does.
    Corrupt,
}

/// A consumer's private cursor: the progress it last published, and the
/// batch it has taken but not committed.
#[derive(Debug)]
pub(crate) struct Cursor {
    progress: Progress,
    pending: Taken,
}

impl Cursor {
    /// The progress as of the last update.
    pub(crate) fn progress(&self) -> Progress {
        self.progress
    }
}

/// The consumer's lines a writer waiting for space looks at, whichever
/// ring it waits in: the shared header's reader line (whether a consumer
/// is attached) and its doorbell (`None` under tests and models that have
/// no doorbell: the consumer then wakes at its own pace).
#[derive(Clone, Copy)]
pub(crate) struct ConsumerLines<'a> {
    reader: &'a ReaderLine,
    doorbell: Option<&'a DoorbellLine>,
}

impl ConsumerLines<'_> {
    fn attached(&self) -> bool {
        self.reader.reader_pid.load(Ordering::Relaxed) != 0
    }
}

/// The protocol, over a control block and slots it does not own.
#[derive(Clone, Copy)]
pub(crate) struct RingView<'a> {
    control: &'a RingControl,
    slots: &'a [Slot],
    lap_shift: u32,
}

impl<'a> RingView<'a> {
    /// A view of `slots.len()` slots (a power of two) controlled by `control`.
    #[cfg(test)]
    pub(crate) fn new(control: &'a RingControl, slots: &'a [Slot]) -> RingView<'a> {
        assert!(slots.len().is_power_of_two(), "ring capacity must be a power of two");
        RingView { control, slots, lap_shift: slots.len().trailing_zeros() }
    }

    /// As [`RingView::new`], with `lap_shift = log2(slots.len())` given.
    #[inline(always)]
    pub(crate) fn with_shift(control: &'a RingControl, slots: &'a [Slot], lap_shift: u32) -> RingView<'a> {
        debug_assert_eq!(slots.len(), 1 << lap_shift);
        RingView { control, slots, lap_shift }
    }

    fn capacity(&self) -> u64 {
        self.slots.len() as u64
    }

    fn lap(&self, ticket: u64) -> u32 {
        (ticket >> self.lap_shift) as u32
    }

    fn slot(&self, ticket: u64) -> &'a Slot {
        let index = (ticket & (self.capacity() - 1)) as usize;
        debug_assert!(index < self.slots.len());
        &self.slots[index]
    }

    // ---- writers -------------------------------------------------------

    /// Claims the next free ticket for `owner`, or reports the ring full.
    #[inline]
    pub(crate) fn claim(&self, owner: Owner) -> Result<Claim<'a>, Full> {
        // Acquire: pairs with the Release store of the hint below, so every
        // claim below the hint is visible and we never claim out of order.
        let mut ticket = self.control.tail.tail.load(Ordering::Acquire);
        // A claim needs a lap or two of probes at most, however stale its
        // hint (see "catch up" below); only a corrupt file needs more, and
        // a hook must not spin forever on one: give up as if full.
        let mut probes_left = 4 * self.capacity() + 1024;
        loop {
            if probes_left == 0 {
                return Err(Full);
            }
            probes_left -= 1;
            let slot = self.slot(ticket);
            let lap = self.lap(ticket);
            // Acquire: pairs with the consumer's Release store that frees the
            // slot (its payload reads happen before our writes) and with
            // other writers' claims (see the hint above).
            let current = slot.state.load(Ordering::Acquire);
            let state = SlotState::decode(current);
            match (state.lap.wrapping_sub(lap) as i32, state.phase) {
                (0, Phase::Empty) => {
                    // Try to take the ticket.
                    let claimed = SlotState::new(lap, Phase::Claimed, owner);
                    if slot
                        .state
                        .compare_exchange(current, claimed.encode(), Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        // Move the hint; racing writers may move it back a
                        // little, which only costs them a probe.
                        // Release: pairs with the Acquire load at the top.
                        self.control.tail.tail.store(ticket.wrapping_add(1), Ordering::Release);
                        let published = SlotState { phase: Phase::Full, ..claimed };
                        return Ok(Claim { slot, published, ticket });
                    }
                    // Lost the race for this ticket: look at it again.
                }
                // Another writer holds this ticket: try the next one.
                (0, Phase::Claimed | Phase::Full) => ticket = ticket.wrapping_add(1),
                // Last lap's record is still unread: the ring is full.
                (-1, Phase::Claimed | Phase::Full) => return Err(Full),
                // Our ticket is a lap or more behind; catch up. The slot's
                // previous ticket, `laps - 1` laps after ours, was claimed,
                // and so was every ticket below it (no holes): go past it in
                // one step, not one ticket at a time (a hint left far behind,
                // or a hostile file, would make that billions of probes).
                (laps, _) if laps > 0 => {
                    let hint = self.control.tail.tail.load(Ordering::Acquire);
                    let past = ticket.wrapping_add(((laps as u64) - 1) << self.lap_shift).wrapping_add(1);
                    ticket = hint.max(past);
                }
                // A state the protocol never writes here: never overwrite it.
                _ => return Err(Full),
            }
        }
    }

    // ---- the one writer of a sub-ring ----------------------------------

    /// Claims `ticket` for `owner` in a ring that only the calling thread
    /// writes (a sub-ring whose lease it holds, see `subrings`): one load
    /// and one plain store, no CAS and no shared line. `Full` if the slot
    /// is not yet free for `ticket`'s lap (the consumer has not taken the
    /// record a lap before) or holds anything else (a corrupt file): the
    /// caller keeps `ticket` for its next claim, and waits for space
    /// ([`RingView::wait_for_space`], claiming with this at the same
    /// ticket) or writes the shared ring; it never waits here.
    ///
    /// The caller stamps the record *after* this returns: the consumer's
    /// merge relies on a record's stamp being later than the moment its
    /// slot was seen empty (less a small slack for the store buffer).
    #[inline(always)]
    pub(crate) fn claim_own(&self, owner: Owner, ticket: u64) -> Result<Claim<'a>, Full> {
        let slot = self.slot(ticket);
        let lap = self.lap(ticket);
        // Acquire: pairs with the consumer's Release store that frees the
        // slot in `take` (or in `attach_consumer`'s repair): its payload
        // reads of the lap before happen before our stores.
        if slot.state.load(Ordering::Acquire) != SlotState::empty(lap).encode() {
            return Err(Full);
        }
        let claimed = SlotState::new(lap, Phase::Claimed, owner);
        // Relaxed, and a store, not a CAS: no other thread writes this
        // ring's slots while we hold its lease, and the consumer only
        // reads the owner of a claim (to repair it if we die).
        slot.state.store(claimed.encode(), Ordering::Relaxed);
        // Keeps the compiler from hoisting the caller's clock read above
        // the claim store (the CPU may still run it before the store
        // drains: the merge's slack covers that).
        compiler_fence(Ordering::SeqCst);
        Ok(Claim { slot, published: SlotState { phase: Phase::Full, ..claimed }, ticket })
    }

    /// Where a new holder of this ring's lease goes on: the first ticket
    /// at or after the tail hint whose slot is not yet claimed for its lap
    /// (the tail hint is the next ticket as the last holder stored it when
    /// it gave the lease back; a holder that died stored nothing, so the
    /// hint may lag, never lead). A ticket whose slot still holds the
    /// previous lap's record is the next one too (the ring is full there).
    /// `None` if the slots say nothing the protocol writes (a corrupt
    /// file): the caller must not write this ring.
    ///
    /// The caller holds the lease, taken with an Acquire CAS: the slot
    /// stores of the previous holder, which gave it back with a Release
    /// store (or died), are visible to the loads here.
    pub(crate) fn own_next_ticket(&self) -> Option<u64> {
        let mut ticket = self.control.tail.tail.load(Ordering::Relaxed);
        for _ in 0..2 * self.capacity() + 2 {
            let lap = self.lap(ticket);
            // Acquire: pairs with the consumer's Release store that freed
            // the slot, as in `claim_own`.
            let state = SlotState::decode(self.slot(ticket).state.load(Ordering::Acquire));
            match (state.lap.wrapping_sub(lap) as i32, state.phase) {
                (0, Phase::Empty) | (-1, Phase::Claimed | Phase::Full) => return Some(ticket),
                (0, Phase::Claimed | Phase::Full) => ticket = ticket.wrapping_add(1),
                // Taken and freed, perhaps reused laps later: go past the
                // slot's previous ticket in one step, as `claim` does.
                (laps, _) if laps > 0 => {
                    ticket = ticket.wrapping_add(((laps as u64) - 1) << self.lap_shift).wrapping_add(1)
                }
                _ => return None,
            }
        }
        None
    }

    /// Stores the next ticket of a lease's holder as the tail hint, for
    /// the next holder ([`RingView::own_next_ticket`]). Relaxed: the
    /// Release store that gives the lease back orders it.
    pub(crate) fn store_own_tail_of(control: &RingControl, next_ticket: u64) {
        control.tail.tail.store(next_ticket, Ordering::Relaxed);
    }

    /// Counts a record its writer gave up on because the ring was full.
    pub(crate) fn count_drop(&self) {
        self.control.loss.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Records dropped by writers so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.control.loss.dropped.load(Ordering::Relaxed)
    }

    // ---- waiting for space (module doc, "waiting for space") -----------

    /// The control block this view works on (for tests).
    #[cfg(test)]
    pub(crate) fn control_for_tests(&self) -> &'a RingControl {
        self.control
    }

    /// Whether a consumer says it is attached (asked of the shared ring: a
    /// sub-ring's `reader_pid` is never set). A consumer that died without
    /// detaching still says so; only its lock tells (see `writer`).
    pub(crate) fn consumer_attached(&self) -> bool {
        self.control.reader.reader_pid.load(Ordering::Relaxed) != 0
    }

    /// What a writer waiting for space in any ring looks at besides that
    /// ring, from this (the shared) ring's control: see [`ConsumerLines`].
    pub(crate) fn consumer_lines(&self, doorbell: Option<&'a DoorbellLine>) -> ConsumerLines<'a> {
        ConsumerLines { reader: &self.control.reader, doorbell }
    }

    /// One round of a writer's wait for space in this ring (the shared
    /// ring, or the sub-ring whose lease it holds): registers as a waiter,
    /// tries `claim` once more (`claim` on the shared ring, `claim_own` at
    /// the holder's next ticket on a sub-ring), and unless that found a
    /// slot or the consumer detached, rings the consumer's doorbell if it
    /// sleeps (`doorbell`) and sleeps until the consumer frees slots here
    /// or `timeout` passes; then tries `claim` once more. The caller
    /// decides how many rounds to wait.
    ///
    /// Whether a consumer is attached is read from `consumer` (the shared
    /// ring's control: a sub-ring's own `reader_pid` is never set).
    pub(crate) fn wait_for_space(
        &self,
        consumer: ConsumerLines<'_>,
        timeout: Duration,
        mut claim: impl FnMut() -> Result<Claim<'a>, Full>,
    ) -> Result<Claim<'a>, Full> {
        let wait = &self.control.wait;
        // Before registering: any wake-up meant for us changes it after
        // this, and the kernel then refuses to sleep on the old value.
        let seen = wait.wake.load(Ordering::Relaxed);
        // Release: pairs with the Acquire load in `wake_writers`, so that
        // our read of `seen` happens before the bump that wakes us.
        wait.waiters.fetch_add(1, Ordering::Release);
        // SeqCst fence: pairs with the one in `wake_writers` (either the
        // consumer sees our registration, or we see its freed slots and its
        // detaching in the looks below) and with the one in
        // `doorbell::sleep` (either the consumer sees our registration and
        // stays awake, or `doorbell::ring` below sees it asleep).
        fence(Ordering::SeqCst);
        let first = claim();
        if first.is_err() && consumer.attached() {
            if let Some(line) = consumer.doorbell {
                doorbell::ring(line);
            }
            wait.wake.wait(seen, timeout);
        }
        wait.waiters.fetch_sub(1, Ordering::Relaxed);
        first.or_else(|Full| claim())
    }

    /// Wakes the writers sleeping in [`RingView::wait_for_space`], if any:
    /// the consumer calls it after it freed slots or detached. Costs a
    /// fence and a load, and no system call, when no writer waits.
    pub(crate) fn wake_writers(&self) {
        let wait = &self.control.wait;
        // SeqCst fence: pairs with the one in `wait_for_space`; orders our
        // freeing stores (or detaching) before the load of `waiters`.
        fence(Ordering::SeqCst);
        // Acquire: pairs with the Release registration in `wait_for_space`.
        if wait.waiters.load(Ordering::Acquire) != 0 {
            // Relaxed: the futex compares the value itself; the bump only
            // has to come after the waiter's read of it, which the
            // Release/Acquire pair above guarantees.
            wait.wake.bump(Ordering::Relaxed);
            wait.wake.wake_all();
        }
    }

    // ---- the consumer's progress ---------------------------------------

    /// A consistent copy of the consumer's progress; safe to call from any
    /// process while a consumer updates it (a seqlock over two copies).
    pub(crate) fn progress(&self) -> Progress {
        let line = &self.control.reader;
        loop {
            // Acquire: pairs with the Release store that completed the
            // update of the copy we are about to read (`publish_progress`).
            let epoch = line.progress_epoch.load(Ordering::Acquire);
            // An odd epoch means copy `epoch/2 + 1` is being written; copy
            // `epoch/2` is the last complete one either way.
            let stable = (epoch >> 1) as usize & 1;
            let progress = read_copy(&line.progress[stable]);
            // Acquire fence: our reads above happen before the check below.
            fence(Ordering::Acquire);
            let now = line.progress_epoch.load(Ordering::Relaxed);
            // The copy is rewritten only by the update that starts at
            // epoch (epoch/2 + 1)*2 + 1.
            // (As `now <= (epoch | 1) + 1`, without overflowing on a
            // corrupt epoch near u64::MAX, which would never match.)
            if now.wrapping_sub(epoch) <= 2 - (epoch & 1) {
                return progress;
            }
            wait_hint();
        }
    }

    /// Replaces the progress. Only the one attached consumer calls this.
    fn publish_progress(&self, progress: &Progress) {
        let line = &self.control.reader;
        let epoch = line.progress_epoch.load(Ordering::Relaxed);
        let next = (epoch >> 1) + 1;
        // Odd: "writing copy next & 1". A consumer killed from here on
        // leaves copy (next - 1) & 1, the last complete one, in force.
        line.progress_epoch.store(next.wrapping_mul(2).wrapping_sub(1), Ordering::Relaxed);
        // Release fence: the odd epoch is visible before any of the copy's
        // stores; pairs with the Acquire fence in `progress`.
        fence(Ordering::Release);
        write_copy(&line.progress[next as usize & 1], progress);
        // Release: pairs with the Acquire load in `progress`.
        line.progress_epoch.store(next.wrapping_mul(2), Ordering::Release);
    }

    // ---- the consumer --------------------------------------------------

    /// Starts a consumer where the previous one stopped. Only one consumer
    /// may be attached at a time; the caller guarantees it (an OFD lock).
    ///
    /// Records the previous consumer took but did not commit are counted in
    /// `lost_reader_died`, and the slots it took but did not free are freed.
    pub(crate) fn attach_consumer(&self) -> Cursor {
        let mut progress = self.progress();
        if progress.committed != progress.taken {
            // Wrapping, here and below: the counts come from a file that
            // anyone with write access may have filled with garbage.
            progress.lost_reader_died =
                progress.lost_reader_died.wrapping_add(progress.taken.wrapping_sub(progress.committed));
            progress.committed = progress.taken;
            self.publish_progress(&progress);
        }
        // Free what a consumer killed between publishing `taken` and
        // freeing its slots left behind: tickets below `taken` whose slot
        // still holds their own lap.
        let first = progress.taken.saturating_sub(self.capacity());
        for ticket in first..progress.taken {
            let lap = self.lap(ticket);
            let state = SlotState::decode(self.slot(ticket).state.load(Ordering::Acquire));
            if state.lap == lap && state.phase != Phase::Empty {
                // Release: pairs with the writers' Acquire load in `claim`.
                self.slot(ticket)
                    .state
                    .store(SlotState::empty(lap.wrapping_add(1)).encode(), Ordering::Release);
            }
        }
        // Writers may have slept on a consumer that died: they would wake at
        // their timeout, but they need not wait that long.
        self.wake_writers();
        Cursor { progress, pending: Taken::default() }
    }

    /// Takes up to `max` records in ticket order into `out`, and frees their
    /// slots. A slot claimed by a writer that `is_dead` says is dead is
    /// skipped and counted lost; one claimed by a live writer ends the batch
    /// (the consumer waits for it). `is_dead(ticket, owner)` is asked only
    /// about the claim the consumer is blocked on.
    ///
    /// Must be followed by [`RingView::commit`] once the caller has handed
    /// the records on; a consumer that dies in between loses the batch, and
    /// the next one counts it.
    ///
    /// (The consumer itself takes with [`RingView::read_run`] or
    /// peeks then [`RingView::read_published`]; this plain form is the one
    /// the ring's unit tests and loom models drive.)
    #[cfg(test)]
    pub(crate) fn take(
        &self,
        cursor: &mut Cursor,
        max: usize,
        out: &mut Vec<Record>,
        is_dead: impl FnMut(u64, Owner) -> bool,
    ) -> Taken {
        let start = cursor.progress.taken;
        let run = self.read_run(start, max, u64::MAX, start, out, is_dead);
        self.release_taken(cursor, run.tickets, run.taken);
        run.taken
    }

    /// The consumer's take, reading half: from ticket `start` (the cursor's
    /// next ticket, or past tickets already read and not yet released),
    /// reads as [`RingView::take`] does up to `max` tickets, but stops before
    /// the first published record stamped after `stamp_limit`
    /// ([`Run::stamp_ended`]), and numbers the records from `first_number`
    /// on (the ticket after `k` read tickets, records or lost claims, gets
    /// `first_number + k`): the take from the one ring that has records
    /// when the others are idle (`consumer::sources`), straight into the
    /// output in merged tickets, with no peek before it. It appends the
    /// records to `out` and frees nothing,
    /// so the caller may still decide to hand on only a prefix of them
    /// (the slots of the rest stay as they are, to be read again). The
    /// caller ends the take with [`RingView::release_taken`] of the
    /// tickets it keeps.
    pub(crate) fn read_run(
        &self,
        start: u64,
        max: usize,
        stamp_limit: u64,
        first_number: u64,
        out: &mut Vec<Record>,
        mut is_dead: impl FnMut(u64, Owner) -> bool,
    ) -> Run {
        let mut ticket = start;
        let mut taken = Taken::default();
        let mut stamp_ended = false;
        let number = |ticket: u64| first_number.wrapping_add(ticket.wrapping_sub(start));
        while ticket.wrapping_sub(start) < max as u64 {
            // The writers' slots are in their caches: keep several misses
            // in flight (a consumer on another core otherwise falls behind
            // a writer running flat out).
            prefetch(self.slot(ticket.wrapping_add(PREFETCH_DISTANCE)));
            match self.look(ticket) {
                Seen::Full(slot) => {
                    let payload = slot.payload.load();
                    // The payload's first word is the record's stamp.
                    if payload[0] > stamp_limit {
                        stamp_ended = true;
                        break;
                    }
                    out.push(Record::from_payload(number(ticket), payload));
                    taken.records += 1;
                }
                Seen::Claimed(owner) if is_dead(ticket, owner) => {
                    // The writer may have published between our load and
                    // its death: look once more before counting it lost
                    // (`look`'s Acquire pairs with `Claim::publish`).
                    match self.look(ticket) {
                        Seen::Full(slot) if slot.payload.first_word() > stamp_limit => {
                            stamp_ended = true;
                            break;
                        }
                        Seen::Full(slot) => {
                            out.push(Record::from_payload(number(ticket), slot.payload.load()));
                            taken.records += 1;
                        }
                        _ => taken.lost += 1,
                    }
                }
                // The frontier, a live writer's claim (wait for it), or a
                // corrupt slot (stop here rather than guess).
                _ => break,
            }
            ticket = ticket.wrapping_add(1);
        }
        Run { tickets: ticket.wrapping_sub(start), taken, stamp_ended }
    }

    /// The record published at `ticket`, numbered `number`, read without
    /// loading the slot's state again: for the consumer, which found the
    /// slot Full in an earlier [`RingView::peek`] and has not taken it
    /// since. That look is enough: a Full slot stays Full until the one
    /// consumer frees it (writers claim only a slot Empty for their lap; a
    /// reclaimer of a dead sub-ring lease probes past claimed slots and
    /// writes none of them), so the payload is the one the peek saw, and
    /// the peek's Acquire load (same thread, before this in program order)
    /// already pairs with the writer's Release in `Claim::publish`.
    #[inline(always)]
    pub(crate) fn read_published(&self, ticket: u64, number: u64) -> Record {
        let slot = self.slot(ticket);
        prefetch(self.slot(ticket.wrapping_add(PREFETCH_DISTANCE)));
        Record::from_payload(number, slot.payload.load())
    }

    /// Ends a take of the `n` tickets from the cursor's next one, whose
    /// records (and lost claims, `taken`) the caller has copied out:
    /// publishes the new `taken` position, frees the slots and wakes
    /// writers waiting for space. The caller must have found every one of
    /// those tickets Full or claimed by a dead writer (`take`, `peek`).
    pub(crate) fn release_taken(&self, cursor: &mut Cursor, n: u64, taken: Taken) {
        if n == 0 {
            return;
        }
        let start = cursor.progress.taken;
        let end = start.wrapping_add(n);
        cursor.progress.taken = end;
        self.publish_progress(&cursor.progress);
        for t in (0..n).map(|i| start.wrapping_add(i)) {
            let next_lap = SlotState::empty(self.lap(t).wrapping_add(1));
            // Release: our payload reads happen before the next writer's
            // stores; pairs with the Acquire load in `claim`.
            self.slot(t).state.store(next_lap.encode(), Ordering::Release);
        }
        self.wake_writers();
        cursor.pending.records += taken.records;
        cursor.pending.lost += taken.lost;
    }

    /// What the consumer finds at `ticket`: the one reading of a slot's
    /// state that [`RingView::take`] and [`RingView::peek`] share, so that
    /// both always agree on where a batch ends.
    #[inline(always)]
    fn look(&self, ticket: u64) -> Seen<'a> {
        let slot = self.slot(ticket);
        // Acquire: pairs with the Release store in `Claim::publish`, so the
        // payload of a Full slot is complete.
        let state = SlotState::decode(slot.state.load(Ordering::Acquire));
        if state.lap != self.lap(ticket) {
            return Seen::Unclaimed; // Not yet claimed for this lap.
        }
        match state.phase {
            Phase::Empty => Seen::Unclaimed,
            Phase::Claimed => Seen::Claimed(Owner::decode(state.owner)),
            Phase::Full => Seen::Full(slot),
            Phase::Invalid => Seen::Corrupt,
        }
    }

    /// Looks at up to `max` tickets from `start` (the consumer's next
    /// ticket, or past tickets it already looked at) without taking
    /// anything (no store: any process may call it, and the slots stay the
    /// writers'): appends, per ticket, `Some(timestamp)` for a published
    /// record or `None` for a claim of a writer `is_dead` says died (a
    /// record [`RingView::take`] will count lost), and says what ended the
    /// look. `is_dead` is asked as `take` asks it (only about a claim that
    /// would end the run), so a `take` of the tickets peeked here finds the
    /// same run, as long as it treats the `None`s as dead: a Full slot stays
    /// Full and a dead writer's claim stays claimed until the consumer frees
    /// them (so a consumer may keep what it peeked and look further on
    /// from there next time).
    ///
    /// The consumer's merge of several rings (`consumer::merge`) orders
    /// records by these timestamps before it takes them.
    pub(crate) fn peek(
        &self,
        start: u64,
        max: usize,
        stamps: &mut Vec<Option<u64>>,
        mut is_dead: impl FnMut(u64, Owner) -> bool,
    ) -> Frontier {
        let mut ticket = start;
        while ticket.wrapping_sub(start) < max as u64 {
            prefetch(self.slot(ticket.wrapping_add(PREFETCH_DISTANCE)));
            match self.look(ticket) {
                Seen::Full(slot) => stamps.push(Some(slot.payload.first_word())),
                // As in `take`: published between the look and the death?
                Seen::Claimed(owner) if is_dead(ticket, owner) => match self.look(ticket) {
                    Seen::Full(slot) => stamps.push(Some(slot.payload.first_word())),
                    _ => stamps.push(None),
                },
                Seen::Claimed(_) => return Frontier::Claimed,
                Seen::Unclaimed => return Frontier::Unclaimed,
                Seen::Corrupt => return Frontier::Corrupt,
            }
            ticket = ticket.wrapping_add(1);
        }
        Frontier::Limit
    }

    /// Whether `ticket`'s record is published for its lap: one load of its
    /// slot's state, for the consumer's batching policy (`consumer::batching`),
    /// which decides only *when* to call [`RingView::take`]; `take` reads
    /// every state again, so nothing relies on this answer being current.
    pub(crate) fn published(&self, ticket: u64) -> bool {
        // Acquire: pairs with the Release store in `Claim::publish` (only for
        // the answer's freshness; see above).
        let state = SlotState::decode(self.slot(ticket).state.load(Ordering::Acquire));
        state.lap == self.lap(ticket) && state.phase == Phase::Full
    }

    /// Whether `ticket` is claimed for its lap (published or not): one load,
    /// for the batching policy, as [`RingView::published`].
    pub(crate) fn claimed(&self, ticket: u64) -> bool {
        // Acquire: pairs with the writers' claim CAS (AcqRel), as in `caught_up`.
        let state = SlotState::decode(self.slot(ticket).state.load(Ordering::Acquire));
        state.lap == self.lap(ticket) && state.phase != Phase::Empty
    }

    /// Whether a writer sleeps in [`RingView::wait_for_space`] now: a hint
    /// for the batching policy (the wake-up itself is `wake_writers`' job,
    /// after every take, and needs no help from this).
    pub(crate) fn writers_waiting(&self) -> bool {
        self.control.wait.waiters.load(Ordering::Relaxed) != 0
    }

    /// Whether a writer waits for space in this ring and a take by the
    /// consumer at `cursor` could free a slot for it: the consumer's
    /// question before it sleeps (`doorbell::sleep`, after its SeqCst
    /// fence).
    ///
    /// Not `waiters` alone: a writer killed while it slept for space never
    /// takes its registration back, nor does a hostile file, and a count
    /// that stays above 0 would keep an idle consumer from ever sleeping
    /// (polling at full CPU until the file goes). A ring the consumer has
    /// taken everything from needs no take for its waiters: a writer
    /// registered before the consumer freed its last slots was woken then
    /// (`wake_writers`), and one registered after finds those slots in its
    /// own look (the fences of `wait_for_space` and `wake_writers`). In a
    /// sub-ring the check is exact: the Acquire below makes every claim of
    /// the one writer before its registration visible to `caught_up`. In
    /// the shared ring, claims of other writers that the waiter saw only
    /// after its registration may not be visible yet; the consumer may then
    /// sleep unrung, and the waiter rings at its next registration, one
    /// wait slice later (`writer::WAIT_SLICE`), or the pause ends first.
    pub(crate) fn writer_waits_on(&self, cursor: &Cursor) -> bool {
        // Acquire: pairs with the Release registration in `wait_for_space`
        // (the waiter's claims before it are visible to `caught_up`).
        self.control.wait.waiters.load(Ordering::Acquire) != 0 && !self.caught_up(cursor)
    }

    /// Whether the consumer has taken every ticket claimed so far: the slot
    /// of its next ticket is not yet claimed for that lap. Tickets are
    /// claimed without holes, so a process that stopped writing before this
    /// returns true has no record left in the ring.
    pub(crate) fn caught_up(&self, cursor: &Cursor) -> bool {
        self.unclaimed(cursor.progress.taken)
    }

    /// Whether `ticket` is not yet claimed for its lap: one load. Tickets
    /// are claimed in order, so no later ticket is claimed either. The
    /// consumer's merge looks again this way at where each ring's look
    /// ended, after its last look at any ring (`consumer::merge`, "The
    /// second look"): a ring still unclaimed there holds no record that
    /// happened before any record the consumer has seen since.
    pub(crate) fn unclaimed(&self, ticket: u64) -> bool {
        // Acquire: pairs with the writers' claim CAS (AcqRel) and, in a
        // sub-ring, with `Claim::publish`'s Release (a claim store that is
        // not yet visible is of a record not yet complete); a claim that
        // happened before the call is seen.
        let state = SlotState::decode(self.slot(ticket).state.load(Ordering::Acquire));
        state.lap != self.lap(ticket) || state.phase == Phase::Empty
    }

    /// The first ticket at or after the consumer's next one that no writer
    /// has claimed yet: tickets below it were claimed before this call
    /// (claims have no holes). At most one lap is probed.
    pub(crate) fn claimed_end(&self, cursor: &Cursor) -> u64 {
        self.claimed_end_from(cursor.progress.taken)
    }

    /// Records claimed but not yet taken by a consumer, as far as one
    /// probe of at most a lap sees: for `memtrack status`, from any process.
    pub(crate) fn waiting(&self) -> u64 {
        let taken = self.progress().taken;
        self.claimed_end_from(taken).wrapping_sub(taken)
    }

    /// Where this ring's consumer stops for good, if it does: the first
    /// ticket from its next one whose slot holds a state the protocol never
    /// writes (a damaged file), reached through tickets claimed for their
    /// lap (published or claimed): what [`RingView::take`] and
    /// [`RingView::peek`] reach and never pass (both read slots through
    /// `look`, as this does). With it, how many tickets are claimed behind
    /// it, as far as one lap shows: records the consumer will not deliver.
    /// For `memtrack status`, from any process: no store.
    pub(crate) fn corrupt_stop(&self) -> Option<(u64, u64)> {
        let mut ticket = self.progress().taken;
        for _ in 0..self.capacity() {
            match self.look(ticket) {
                Seen::Corrupt => {
                    // `claimed_end_from` counts the corrupt slot itself as
                    // claimed (its lap matches, its phase is not Empty).
                    let behind = self.claimed_end_from(ticket).wrapping_sub(ticket).saturating_sub(1);
                    return Some((ticket, behind));
                }
                Seen::Unclaimed => return None,
                Seen::Full(_) | Seen::Claimed(_) => ticket = ticket.wrapping_add(1),
            }
        }
        None
    }

    fn claimed_end_from(&self, taken: u64) -> u64 {
        let mut ticket = taken;
        for _ in 0..self.capacity() {
            // Acquire: pairs with the writers' claim CAS (AcqRel), as in
            // `caught_up`.
            let state = SlotState::decode(self.slot(ticket).state.load(Ordering::Acquire));
            if state.lap != self.lap(ticket) || state.phase == Phase::Empty {
                break;
            }
            ticket = ticket.wrapping_add(1);
        }
        ticket
    }

    /// Declares the last batch handed on.
    pub(crate) fn commit(&self, cursor: &mut Cursor) {
        let Taken { records, lost } = std::mem::take(&mut cursor.pending);
        let progress = &mut cursor.progress;
        if progress.committed == progress.taken {
            return;
        }
        progress.committed = progress.taken;
        progress.delivered = progress.delivered.wrapping_add(records as u64);
        progress.lost_writer_died = progress.lost_writer_died.wrapping_add(lost as u64);
        self.publish_progress(progress);
    }
}

fn read_copy(copy: &ProgressCopy) -> Progress {
    Progress {
        taken: copy.taken.load(Ordering::Relaxed),
        committed: copy.committed.load(Ordering::Relaxed),
        delivered: copy.delivered.load(Ordering::Relaxed),
        lost_writer_died: copy.lost_writer_died.load(Ordering::Relaxed),
        lost_reader_died: copy.lost_reader_died.load(Ordering::Relaxed),
    }
}

fn write_copy(copy: &ProgressCopy, p: &Progress) {
    copy.taken.store(p.taken, Ordering::Relaxed);
    copy.committed.store(p.committed, Ordering::Relaxed);
    copy.delivered.store(p.delivered, Ordering::Relaxed);
    copy.lost_writer_died.store(p.lost_writer_died, Ordering::Relaxed);
    copy.lost_reader_died.store(p.lost_reader_died, Ordering::Relaxed);
}

pub(crate) mod doorbell;

#[cfg(test)]
pub(crate) mod testing;

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, loom))]
mod loom_models;
